"""``fieldsync app --dir PATH``: the field app on a device directory made by ``device login``."""

from __future__ import annotations

import sys
from pathlib import Path

import click


@click.command("app")
@click.option(
    "--dir",
    "directory",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="The device directory (made by 'fieldsync device login').",
)
@click.option(
    "--no-auto-sync",
    is_flag=True,
    help="Sync only when asked ('s'), whatever the sync settings say.",
)
def command(directory: Path, no_auto_sync: bool) -> None:
    """The field app: the app's views, record forms, sync status, sync now, sync errors."""
    from fieldsync.client import Device, DeviceError
    from fieldsync.fieldapp.app import FieldApp

    if not (directory / "replica.db").exists():
        raise click.UsageError(f"{directory} is not a device directory: run 'device login'")
    device = Device(directory)
    try:
        try:
            name = device.handshake_data["app"]["name"]
        except DeviceError as exc:
            raise click.UsageError(f"{exc} ('fieldsync device login --dir {directory}')") from None
        app = FieldApp(device, auto_sync=not no_auto_sync)
        app.run()
        if app.return_code:
            sys.exit(app.return_code)
        status = device.status
        click.echo(
            f"{name}: {status.sync_state}, {status.pending_changes} change(s) waiting to "
            f"upload, {status.sync_errors} sync error(s)"
        )
    finally:
        device.close()
