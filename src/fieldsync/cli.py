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
@click.option(
    "--traces",
    is_flag=True,
    default=None,
    help="Send OpenTelemetry traces (the otel extra; OTEL_* variables say where).",
)
def serve(
    data_dir: str | None,
    database_url: str | None,
    host: str | None,
    port: int | None,
    plugins: tuple[str, ...],
    log_level: str | None,
    ssl_certfile: str | None,
    ssl_keyfile: str | None,
    traces: bool | None,
) -> None:
    """Run the server (upgrades the database schema first)."""
    import uvicorn

    from fieldsync.server.app import create_app

    settings = _settings(
        data_dir=data_dir,
        database_url=database_url,
        host=host,
        port=port,
        log_level=log_level,
        traces=traces or None,
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


@main.command()
@click.option("--since", help="Only rows from this moment (ISO 8601, UTC unless given).")
@click.option("--event", help="Only this event (signin.refused…), or a prefix ending in '.'.")
@click.option("--user", help="Only this user: a user name or id.")
@click.option("--limit", type=click.IntRange(1, 1_000_000), default=1000, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines.")
@database_options
def audit(
    since: str | None,
    event: str | None,
    user: str | None,
    limit: int,
    as_json: bool,
    data_dir: str | None,
    database_url: str | None,
) -> None:
    """The security audit log, newest first: refused sign-ins and writes, forged cursors and
    tickets, device takeover attempts, revoked tokens, role and membership changes."""
    import datetime as dt
    import json

    start = None
    if since:
        try:
            start = dt.datetime.fromisoformat(since)
        except ValueError:
            raise click.BadParameter(
                f"{since!r} is not a date and time", param_hint="--since"
            ) from None
        if start.tzinfo is None:
            start = start.replace(tzinfo=dt.UTC)
    store = _open_store(_settings(data_dir=data_dir, database_url=database_url))
    try:
        rows = store.audit.read(since=start, event=event, user=user, limit=limit)
    finally:
        store.close()
    for r in rows:
        if as_json:
            out = {k: (str(v) if k == "userid" and v is not None else v) for k, v in r.items()}
            out["createdon"] = r["createdon"].isoformat()
            click.echo(json.dumps(out, default=str))
            continue
        who = r["username"] or (str(r["userid"]) if r["userid"] else "-")
        detail = (
            r["detail"]
            if isinstance(r["detail"], str) or r["detail"] is None
            else (json.dumps(r["detail"], default=str))
        )
        click.echo(
            f"{r['createdon']:%Y-%m-%d %H:%M:%S}  {r['event']:28} {r['outcome']:10} "
            f"{who:20} {r['address'] or '-':15} {r['target'] or '-'}  {detail or ''}".rstrip()
        )


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
