"""The ``fieldsync`` command: thin commands over the public APIs."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import click

from fieldsync import __version__
from fieldsync.config import Settings
from fieldsync.errors import FieldsyncError

if TYPE_CHECKING:
    from fieldsync.platform import Platform

F = TypeVar("F", bound=Callable[..., Any])


def database_options(fn: F) -> F:
    fn = click.option(
        "--data-dir",
        envvar="FIELDSYNC_DATA_DIR",
        default=None,
        help="Where the embedded SQLite database lives (default ~/.local/share/fieldsync).",
    )(fn)
    fn = click.option(
        "--database",
        "database_url",
        envvar="FIELDSYNC_DATABASE_URL",
        default=None,
        help="Database URL: sqlite:///path or postgresql://user@host/db.",
    )(fn)
    return fn


def _settings(**overrides: Any) -> Settings:
    return Settings.from_env(**overrides)


def _open_store(settings: Settings) -> Any:
    from fieldsync.store.store import Store

    return Store.open(settings.database)


@contextmanager
def _platform(data_dir: str | None, database_url: str | None) -> Iterator[Platform]:
    from fieldsync.platform import open_platform

    settings = _settings(data_dir=data_dir, database_url=database_url)
    p = open_platform(settings.database)
    try:
        yield p
    finally:
        p.close()


class _Group(click.Group):
    """Turns fieldsync errors into one clear line and exit status 2."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except FieldsyncError as exc:
            click.echo(f"error: {exc.message}", err=True)
            sys.exit(2)


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="fieldsync")
def main() -> None:
    """fieldsync: an offline-first data platform modelled on Dataverse mobile offline."""


@main.command()
@database_options
@click.option("--host", envvar="FIELDSYNC_HOST", default=None, help="Address to listen on.")
@click.option("--port", envvar="FIELDSYNC_PORT", type=int, default=None, help="Port to listen on.")
@click.option(
    "--plugin",
    "plugins",
    multiple=True,
    help="A plugin module to load (repeatable); adds to FIELDSYNC_PLUGINS.",
)
@click.option(
    "--log-level",
    envvar="FIELDSYNC_LOG_LEVEL",
    default=None,
    type=click.Choice(["debug", "info", "warning", "error"]),
    help="Log level.",
)
@click.option("--ssl-certfile", default=None, help="Serve HTTPS with this certificate (PEM).")
@click.option("--ssl-keyfile", default=None, help="The private key of --ssl-certfile (PEM).")
def serve(
    data_dir: str | None,
    database_url: str | None,
    host: str | None,
    port: int | None,
    plugins: tuple[str, ...],
    log_level: str | None,
    ssl_certfile: str | None,
    ssl_keyfile: str | None,
) -> None:
    """Run the server (upgrades the database schema first)."""
    import uvicorn

    from fieldsync.server.app import create_app

    settings = _settings(
        data_dir=data_dir, database_url=database_url, host=host, port=port, log_level=log_level
    )
    if plugins:
        settings = Settings(**{**settings.__dict__, "plugins": settings.plugins + plugins})
    logging.basicConfig(level=settings.log_level.upper())
    app = create_app(settings)
    if bool(ssl_certfile) != bool(ssl_keyfile):
        raise click.UsageError("--ssl-certfile and --ssl-keyfile go together")
    scheme = "https" if ssl_certfile else "http"
    if settings.metrics_bind:
        from fieldsync.server.metrics import serve_metrics

        where = serve_metrics(app.state.metrics, settings.metrics_bind)
        click.echo(f"metrics at http://{where}/metrics")
    click.echo(
        f"fieldsync {__version__} on {settings.database} at "
        f"{scheme}://{settings.host}:{settings.port}"
    )
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        ssl_certfile=ssl_certfile,
        ssl_keyfile=ssl_keyfile,
    )


@main.command("dev-cert")
@click.option(
    "--dir",
    "folder",
    required=True,
    type=click.Path(file_okay=False),
    help="Where to write ca.pem, cert.pem and key.pem.",
)
@click.option(
    "--name",
    "names",
    multiple=True,
    help="A host name or IP address the certificate covers (repeatable; "
    "default localhost, 127.0.0.1 and ::1).",
)
@click.option("--days", type=int, default=825, show_default=True, help="How long it lasts.")
def dev_cert(folder: str, names: tuple[str, ...], days: int) -> None:
    """Make a local certificate authority and a server certificate for development HTTPS."""
    from pathlib import Path

    from fieldsync.devcert import DEFAULT_NAMES, instructions, make_dev_certificate

    made = make_dev_certificate(Path(folder), names or DEFAULT_NAMES, days)
    click.echo(instructions(made))


@main.command()
@database_options
def upgrade(data_dir: str | None, database_url: str | None) -> None:
    """Upgrade the database schema to this version; safe to repeat and on existing data."""
    from fieldsync.store.store import Store

    settings = _settings(data_dir=data_dir, database_url=database_url)
    store = Store.open(settings.database, upgrade=False)
    try:
        steps = store.upgrade()
    finally:
        store.close()
    if steps:
        for step in steps:
            click.echo(f"applied: {step}")
    else:
        click.echo("the database is up to date")


@main.command()
@database_options
def demo(data_dir: str | None, database_url: str | None) -> None:
    """Seed the demo field-service organisation (idempotent) and print how to sign in."""
    from fieldsync.demo import seed_demo

    with _platform(data_dir, database_url) as p:
        report = seed_demo(p)
    click.echo(report)


@main.command()
@database_options
def tables(data_dir: str | None, database_url: str | None) -> None:
    """List the tables: logical name, entity set, ownership, offline flag."""
    settings = _settings(data_dir=data_dir, database_url=database_url)
    store = _open_store(settings)
    try:
        for t in sorted(store.schema.tables.values(), key=lambda t: t.name):
            click.echo(
                f"{t.name:24} {t.entity_set_name:26} {t.ownership.value:13} "
                f"{'offline' if t.offline else '-'}"
            )
    finally:
        store.close()


from fieldsync.cli_org import register as _register_org  # noqa: E402

_register_org(main, _platform, database_options)
from fieldsync.cli_profile import register as _register_profile  # noqa: E402

_register_profile(main, _platform, database_options)

from fieldsync.cli_device import register as _register_device  # noqa: E402

_register_device(main, _platform, database_options)
from fieldsync.fieldapp.command import command as _field_app  # noqa: E402

main.add_command(_field_app)

if __name__ == "__main__":  # pragma: no cover
    main()
