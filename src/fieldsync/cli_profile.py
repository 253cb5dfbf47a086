"""``fieldsync profile …``: mobile offline profiles as code, from the shell.

These commands act with full rights, like the other administration commands."""

from __future__ import annotations

import sys
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import sqlalchemy as sa

from fieldsync.errors import BadRequest
from fieldsync.types import as_uuid

if TYPE_CHECKING:
    from fieldsync.platform import Platform

Opener = Callable[[str | None, str | None], AbstractContextManager["Platform"]]


def _read(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BadRequest(f"cannot read {path}: {exc}") from None


def register(main: click.Group, opener: Opener, database_options: Callable[[Any], Any]) -> None:
    """Add the profile commands to ``main``."""

    @main.group()
    def profile() -> None:
        """Mobile offline profiles: export, import, validate, publish, members."""

    @profile.command("list")
    @database_options
    def profile_list(data_dir: str | None, database_url: str | None) -> None:
        """List profiles: name, tables, published version, the apps using them."""
        with opener(data_dir, database_url) as p:
            store = p.store
            prof, item, app = (
                store.sql_table("mobileofflineprofile"),
                store.sql_table("mobileofflineprofileitem"),
                store.sql_table("appmodule"),
            )
            with store.read() as conn:
                rows = conn.execute(sa.select(prof).order_by(prof.c.name)).all()
                for r in rows:
                    tables = conn.execute(
                        sa.select(item.c.selectedentitytypecode)
                        .where(item.c.regardingobjectid == r.mobileofflineprofileid)
                        .order_by(item.c.selectedentitytypecode)
                    ).scalars()
                    apps = conn.execute(
                        sa.select(app.c.uniquename).where(
                            app.c.mobileofflineprofileid == r.mobileofflineprofileid
                        )
                    ).scalars()
                    version = r.publishedversion or 0
                    click.echo(
                        f"{r.name:30} {'v' + str(version) if version else 'unpublished':12} "
                        f"tables: {', '.join(tables) or '-'}  apps: {', '.join(apps) or '-'}  "
                        f"id: {r.mobileofflineprofileid}"
                    )

    @profile.command("export")
    @click.argument("profile_ref", metavar="PROFILE")
    @click.option("--output", "-o", default="-", help="File to write (default: stdout).")
    @database_options
    def profile_export(
        profile_ref: str, output: str, data_dir: str | None, database_url: str | None
    ) -> None:
        """Write a profile (by name or id) and its apps' offline settings as YAML."""
        with opener(data_dir, database_url) as p:
            text = p.offline.export_yaml(profile_ref)
        if output == "-":
            click.echo(text, nl=False)
        else:
            Path(output).write_text(text, encoding="utf-8")

    @profile.command("import")
    @click.argument("path", metavar="FILE")
    @database_options
    def profile_import(path: str, data_dir: str | None, database_url: str | None) -> None:
        """Create or update a profile from a YAML file (- reads stdin); all or nothing."""
        text = _read(path)
        with opener(data_dir, database_url) as p:
            profile_id = p.offline.import_yaml(text)
        click.echo(str(profile_id))

    @profile.command("validate")
    @click.argument("path", metavar="FILE")
    @database_options
    def profile_validate(path: str, data_dir: str | None, database_url: str | None) -> None:
        """Check a YAML profile file against the database's tables; change nothing."""
        text = _read(path)
        with opener(data_dir, database_url) as p:
            p.offline.validate_yaml(text)
        click.echo(f"{path}: valid")

    @profile.command("publish")
    @click.argument("profile_ref", metavar="PROFILE")
    @database_options
    def profile_publish(profile_ref: str, data_dir: str | None, database_url: str | None) -> None:
        """Validate a profile's draft and publish it as the next version."""
        with opener(data_dir, database_url) as p:
            published = p.offline.publish(profile_ref)
        click.echo(f"published {published.name!r} version {published.version}")

    @profile.command("preview")
    @click.argument("profile_ref", metavar="PROFILE")
    @click.option("--user", "usernames", multiple=True, help="Preview for this user (repeat).")
    @click.option(
        "--sample", default=100, show_default=True, help="Users previewed when more hold it."
    )
    @click.option("--json", "as_json", is_flag=True, help="Print the preview as JSON.")
    @database_options
    def profile_preview(
        profile_ref: str,
        usernames: tuple[str, ...],
        sample: int,
        as_json: bool,
        data_dir: str | None,
        database_url: str | None,
    ) -> None:
        """What publishing the draft would do: per user, rows and estimated bytes per table
        next to the published version, rows moving in and out, and Dataverse's limits."""
        import orjson

        from fieldsync.sync.preview import preview_profile

        if sample < 1:
            raise click.BadParameter("at least 1", param_hint="--sample")
        with opener(data_dir, database_url) as p:
            users = [p.org.user_id(u) for u in usernames] or None
            result = preview_profile(
                p.records,
                p.offline.profile_id(profile_ref),
                users=users,
                sample=sample,
                contexts=p.contexts,
            ).to_json()
        if as_json:
            click.echo(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
            return
        version = result["published_version"]
        click.echo(
            f"{result['profile']}: draft against "
            f"{'version ' + str(version) if version else 'nothing published'}; "
            f"{result['audience']}: {result['holders']} users"
            + (f", {result['previewed']} previewed" if result["sampled"] else "")
        )
        for user in result["users"]:
            click.echo(
                f"  {user['username'] or user['user']}: {user['rows']:,} rows "
                f"(~{user['bytes'] / 2**20:.1f} MB), +{user['moving_in']:,} "
                f"-{user['moving_out']:,}"
            )
            for t in user["tables"]:
                before = "-" if t["published_rows"] is None else f"{t['published_rows']:,}"
                click.echo(
                    f"    {t['table']:28} {t['rows']:>9,} (now {before}) "
                    f"+{t['moving_in']:,} -{t['moving_out']:,}"
                    + ("" if t["changed"] else "  unchanged")
                )
        for warning in result["warnings"]:
            click.echo(f"warning: {warning}")

    @profile.command("generate")
    @click.argument("app")
    @database_options
    def profile_generate(app: str, data_dir: str | None, database_url: str | None) -> None:
        """Make a draft profile from an app's tables and views, and give it to the app."""
        with opener(data_dir, database_url) as p:
            profile_id = p.offline.generate_profile(app)
        click.echo(str(profile_id))

    def _members(
        p: Platform, users: tuple[str, ...], teams: tuple[str, ...]
    ) -> tuple[list[Any], list[Any]]:
        return [p.org.user_id(u) for u in users], [p.org.team_id(t) for t in teams]

    @profile.command("add-member")
    @click.argument("profile_ref", metavar="PROFILE")
    @click.option("--user", "users", multiple=True, help="A user name (repeatable).")
    @click.option("--team", "teams", multiple=True, help="A team name (repeatable).")
    @database_options
    def profile_add_member(
        profile_ref: str,
        users: tuple[str, ...],
        teams: tuple[str, ...],
        data_dir: str | None,
        database_url: str | None,
    ) -> None:
        """Give a profile to users and teams (for apps restricted to selected users)."""
        with opener(data_dir, database_url) as p:
            u, t = _members(p, users, teams)
            added = p.offline.add_members(profile_ref, users=u, teams=t)
        click.echo(f"added {added}")

    @profile.command("remove-member")
    @click.argument("profile_ref", metavar="PROFILE")
    @click.option("--user", "users", multiple=True, help="A user name (repeatable).")
    @click.option("--team", "teams", multiple=True, help="A team name (repeatable).")
    @database_options
    def profile_remove_member(
        profile_ref: str,
        users: tuple[str, ...],
        teams: tuple[str, ...],
        data_dir: str | None,
        database_url: str | None,
    ) -> None:
        """Take a profile from users and teams."""
        with opener(data_dir, database_url) as p:
            u, t = _members(p, users, teams)
            removed = p.offline.remove_members(profile_ref, users=u, teams=t)
        click.echo(f"removed {removed}")

    @main.group()
    def scope() -> None:
        """What a user's device holds, and why."""

    @scope.command("explain")
    @click.option("--user", "username", required=True, help="The user (name or id).")
    @click.option("--app", required=True, help="The app (unique name or id).")
    @click.option("--table", required=True, help="The table of the row.")
    @click.option("--id", "record_id", required=True, help="The row's id.")
    @click.option("--json", "as_json", is_flag=True, help="Print the answer as JSON.")
    @database_options
    def scope_explain(
        username: str,
        app: str,
        table: str,
        record_id: str,
        as_json: bool,
        data_dir: str | None,
        database_url: str | None,
    ) -> None:
        """Why a row is (or is not) on the user's device for the app's published profile:
        readable or not and by which path, matched by the download filter or brought in by
        a relationship. Exits 1 when the row is not in scope."""

        import orjson

        from fieldsync.security.context import load_context
        from fieldsync.sync.service import SyncService

        with opener(data_dir, database_url) as p:
            try:
                user_id = as_uuid(username)
            except ValueError:
                user_id = p.org.user_id(username)
            target = load_context(p.store, user_id)
            from fieldsync.records.pipeline import SYSTEM

            answer = SyncService(p.records).explain(
                SYSTEM, app=app, table=table, record_id=record_id, user=target
            )
        if as_json:
            click.echo(orjson.dumps(answer, option=orjson.OPT_INDENT_2).decode())
        else:
            verdict = "IN SCOPE" if answer["in_scope"] else "NOT IN SCOPE"
            click.echo(
                f"{answer['table']} {answer['id']}: {verdict} for {username} on "
                f"{answer['app']} (profile {answer['profile']['name']} "
                f"v{answer['profile']['version']})"
            )
            for step in answer["steps"]:
                mark = "yes" if step["ok"] else "no "
                click.echo(f"  [{mark}] {step['check']}: {step['detail']}")
        if not answer["in_scope"]:
            sys.exit(1)
