"""``fieldsync device …``: the device SDK from the command line, for scripts and operations.

Every command works on a device directory (``--dir``) made by ``device login``; every command
takes ``--json`` for machine-readable output. Local commands (query, create, update, delete,
status, errors) work without a network; ``sync`` needs the server.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import click
import orjson

from fieldsync.errors import FieldsyncError

DIR = click.option(
    "--dir",
    "directory",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="The device directory (replica, outbox, tokens).",
)
AS_JSON = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


def _out(value: Any, as_json: bool, text: str | None = None) -> None:
    if as_json:
        click.echo(orjson.dumps(value, option=orjson.OPT_INDENT_2, default=str).decode())
    else:
        click.echo(text if text is not None else orjson.dumps(value, default=str).decode())


@contextmanager
def _device(directory: Path) -> Iterator[Any]:
    from fieldsync.client import Device

    if not (directory / "replica.db").exists():
        raise click.UsageError(f"{directory} is not a device directory: run 'device login'")
    device = Device(directory)
    try:
        yield device
    finally:
        device.close()


def _values(text: str) -> dict[str, Any]:
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="--values") from None
    if not isinstance(data, dict):
        raise click.BadParameter("a JSON object of column values", param_hint="--values")
    return data


def register(
    main: click.Group,
    platform: Callable[[str | None, str | None], AbstractContextManager[Any]],
    database_options: Callable[[Callable[..., Any]], Callable[..., Any]],
) -> None:
    from fieldsync.client import DeviceError

    @main.command("sync-policy")
    @database_options
    @click.option("--server-wins", "server_wins", multiple=True, help="A table (repeatable).")
    @click.option("--last-write-wins", is_flag=True, help="No table keeps the server's value.")
    def sync_policy(
        data_dir: str | None,
        database_url: str | None,
        server_wins: tuple[str, ...],
        last_write_wins: bool,
    ) -> None:
        """Tables where an offline change to a column the server changed since is rejected
        (a conflict) instead of winning."""
        from fieldsync.sync.service import SyncService

        with platform(data_dir, database_url) as p:
            sync = SyncService(p.records)
            if server_wins or last_write_wins:
                sync.set_server_wins([] if last_write_wins else list(server_wins))
            with p.store.read() as conn:
                tables = sorted(sync.server_wins(conn))
        click.echo("server wins: " + (", ".join(tables) if tables else "no table"))

    @main.command("device-report")
    @click.option("--device", "device_id", help="One device: its tables and receipts.")
    @click.option("--mismatch", is_flag=True, help="Only devices whose inventory differed.")
    @click.option(
        "--stranded",
        is_flag=True,
        help="Only devices still holding data for a user or app that lost access.",
    )
    @AS_JSON
    @database_options
    def device_report(
        device_id: str | None,
        mismatch: bool,
        stranded: bool,
        as_json: bool,
        data_dir: str | None,
        database_url: str | None,
    ) -> None:
        """The registered devices with their last inventory verdict (match, mismatch), their
        last purge or wipe receipt and any pending remote wipe; exits 1 when a listed device
        has a mismatch or still holds data after access ended."""
        from fieldsync.records.pipeline import SYSTEM
        from fieldsync.sync.devices import list_devices
        from fieldsync.sync.inventory import device_inventory
        from fieldsync.sync.service import SyncService

        with platform(data_dir, database_url) as p:
            sync = SyncService(p.records)
            if stranded:
                rows = sync.stranded(SYSTEM)
            else:
                rows = [d.to_json() for d in list_devices(p.store, SYSTEM)]
            if mismatch:
                rows = [r for r in rows if r["inventory"] == "mismatch"]
            if device_id is not None:
                rows = [r for r in rows if r["device"] == device_id]
                if not rows:
                    raise click.ClickException(f"no device {device_id!r}")
                with p.store.read() as conn:
                    rows[0]["tables"] = device_inventory(conn, device_id)
                rows[0]["receipts"] = sync.receipts(device_id)
        if as_json:
            _out(rows, True)
        else:
            for r in rows:
                wipe = "  WIPE PENDING" if r["wipe_pending"] else ""
                lost = f"  STILL HOLDS DATA ({r['lost']})" if "lost" in r else ""
                click.echo(
                    f"{r['device']:24} {r['username'] or r['user']:16} {r['app']:20} "
                    f"synced {r['last_sync_on'] or '-':32} inventory "
                    f"{r['inventory'] or '-':9} receipt {r['receipt_on'] or '-'}{wipe}{lost}"
                )
                for t in r.get("tables", []):
                    click.echo(
                        f"  {t['table']:24} {t['status']:9} rows {t['rows']:>9} expected "
                        f"{t['expected_rows'] if t['expected_rows'] is not None else '-':>9} "
                        f"re-scoped {t['rescoped']}x  ({t['reported_on']})"
                    )
                for rc in r.get("receipts", []):
                    removed = sum(rc["counts"]["tables"].values())
                    click.echo(
                        f"  receipt {rc['kind']:5} {rc['received_on']}: {removed} rows, "
                        f"{rc['counts']['outbox']} pending changes, {rc['counts']['files']} files"
                    )
        if any(r["inventory"] == "mismatch" or "lost" in r for r in rows):
            sys.exit(1)

    @main.command("device-wipe")
    @click.argument("device_id", metavar="DEVICE")
    @database_options
    def device_wipe(device_id: str, data_dir: str | None, database_url: str | None) -> None:
        """Mark a device for remote wipe: its next contact removes every row, its outbox and
        files, and sends a receipt ('device-report --device DEVICE' shows it)."""
        from fieldsync.records.pipeline import SYSTEM
        from fieldsync.sync.devices import request_wipe

        with platform(data_dir, database_url) as p:
            request_wipe(p.store, SYSTEM, device_id)
        click.echo(f"device {device_id}: wipe pending until its next contact")

    class DeviceGroup(click.Group):
        def invoke(self, ctx: click.Context) -> Any:
            try:
                return super().invoke(ctx)
            except (DeviceError, FieldsyncError) as exc:
                click.echo(f"error: {exc}", err=True)
                sys.exit(2)

    @main.group(cls=DeviceGroup)
    def device() -> None:
        """A field device: sign in, sync, and work on the local replica."""

    @device.command()
    @click.option("--server", required=True, help="The server's URL, e.g. http://localhost:8000.")
    @click.option("--user", "username", required=True, help="User name.")
    @click.option("--password", prompt=True, hide_input=True, help="Password (prompted).")
    @click.option("--app", required=True, help="The app to take offline (unique name or id).")
    @DIR
    @AS_JSON
    def login(
        server: str, username: str, password: str, app: str, directory: Path, as_json: bool
    ) -> None:
        """Sign in and register this device for an app (no data moves until 'sync')."""
        from fieldsync.client import Device

        d = Device.login(directory, server=server, username=username, password=password, app=app)
        try:
            data = d.handshake_data
            summary = {
                "device": d.device_id,
                "user": data["user"]["name"],
                "app": data["app"]["name"],
                "profile": data["profile"]["name"],
                "profile_version": data["profile"]["version"],
                "tables": data["order"],
            }
        finally:
            d.close()
        _out(
            summary,
            as_json,
            f"signed in as {summary['user']}; {summary['app']} uses profile "
            f"{summary['profile']} v{summary['profile_version']} "
            f"({', '.join(summary['tables'])}); run 'fieldsync device sync --dir {directory}'",
        )

    @device.command()
    @DIR
    @click.option("--table", "tables", multiple=True, help="Sync only this table (repeatable).")
    @AS_JSON
    def sync(directory: Path, tables: tuple[str, ...], as_json: bool) -> None:
        """Upload the outbox and download every table's changes."""
        from fieldsync.client import Progress

        def show(p: Progress) -> None:
            if not as_json and p.done:
                click.echo(f"  {p.table}: {p.rows} rows, {p.bytes} bytes", err=True)

        with _device(directory) as d:
            report = d.sync(tables or None, progress=show)
            value = {
                "uploaded": report.uploaded,
                "rejected": report.rejected,
                "downloaded": report.downloaded,
                "bytes": report.bytes,
                "rescoped": report.rescoped,
                "status": d.status.to_json(),
            }
        _out(
            value,
            as_json,
            f"uploaded {report.uploaded}, rejected {report.rejected}, downloaded "
            f"{sum(report.downloaded.values())} rows; {value['status']['sync_state']}",
        )

    @device.command()
    @DIR
    @AS_JSON
    def status(directory: Path, as_json: bool) -> None:
        """Connection and sync state, pending changes, sync errors, last sync per table."""
        with _device(directory) as d:
            value = d.status.to_json()
        lines = [
            f"state: {value['sync_state']}",
            f"pending changes: {value['pending_changes']}",
            f"sync errors: {value['sync_errors']}",
            f"profile version: {value['profile_version']}",
            *(f"last sync of {t}: {when}" for t, when in sorted(value["last_sync"].items())),
        ]
        _out(value, as_json, "\n".join(lines))

    @device.command()
    @DIR
    @click.option("--table", default=None, help="The table (with --filter or alone).")
    @click.option("--fetchxml", default=None, help="A FetchXML query.")
    @click.option("--view", default=None, help="One of the app's views, by name.")
    @click.option("--filter", "odata", default=None, help="An OData $filter on --table.")
    @click.option("--top", type=int, default=None, help="At most this many rows.")
    @AS_JSON
    def query(
        directory: Path,
        table: str | None,
        fetchxml: str | None,
        view: str | None,
        odata: str | None,
        top: int | None,
        as_json: bool,
    ) -> None:
        """Query the replica (works offline)."""
        with _device(directory) as d:
            rows = d.query(table, fetchxml=fetchxml, view=view, filter=odata, top=top)
        if as_json:
            _out(rows, True)
        else:
            for row in rows:
                click.echo(orjson.dumps(row, default=str).decode())

    @device.command()
    @DIR
    @AS_JSON
    def errors(directory: Path, as_json: bool) -> None:
        """The changes the server rejected, with the values they were reverted to."""
        with _device(directory) as d:
            rows = d.errors()
        if as_json:
            _out(rows, True)
            return
        if not rows:
            click.echo("no sync errors")
        for e in rows:
            click.echo(
                f"{e['occurredon']} {e['operation']} {e['tablename']} {e['recordid']}: "
                f"{e['message']} ({e['code']})"
            )

    @device.command()
    @DIR
    @click.option("--table", required=True)
    @click.option("--values", "values_text", required=True, help="JSON object of column values.")
    @AS_JSON
    def create(directory: Path, table: str, values_text: str, as_json: bool) -> None:
        """Create a row offline (uploaded at the next sync)."""
        with _device(directory) as d:
            rid = d.create(table, _values(values_text))
        _out({"id": str(rid)}, as_json, str(rid))

    @device.command()
    @DIR
    @click.option("--table", required=True)
    @click.option("--id", "record_id", required=True)
    @click.option("--values", "values_text", required=True, help="JSON object of column values.")
    @AS_JSON
    def update(
        directory: Path, table: str, record_id: str, values_text: str, as_json: bool
    ) -> None:
        """Change columns of a row offline."""
        with _device(directory) as d:
            d.update(table, record_id, _values(values_text))
        _out({"id": record_id, "updated": True}, as_json, "updated")

    @device.command()
    @DIR
    @click.option("--table", required=True)
    @click.option("--id", "record_id", required=True)
    @AS_JSON
    def delete(directory: Path, table: str, record_id: str, as_json: bool) -> None:
        """Delete a row offline."""
        with _device(directory) as d:
            d.delete(table, record_id)
        _out({"id": record_id, "deleted": True}, as_json, "deleted")
