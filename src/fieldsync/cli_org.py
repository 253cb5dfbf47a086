"""``fieldsync bu|user|team|role|hierarchy …``: administering the organisation from the shell.

These commands act with full rights: whoever can reach the database administers it."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import sqlalchemy as sa

from fieldsync.errors import BadRequest
from fieldsync.types import EntityRef

if TYPE_CHECKING:
    from fieldsync.platform import Platform

Opener = Callable[[str | None, str | None], AbstractContextManager["Platform"]]


def _read_password(password: str | None, from_stdin: bool) -> str | None:
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    return password


def register(main: click.Group, opener: Opener, database_options: Callable[[Any], Any]) -> None:
    """Add the organisation commands to ``main``."""

    @main.group()
    def bu() -> None:
        """Business units."""

    @bu.command("create")
    @click.argument("name")
    @click.option("--parent", help="Parent business unit (default: the root).")
    @database_options
    def bu_create(
        name: str, parent: str | None, data_dir: str | None, database_url: str | None
    ) -> None:
        """Create a business unit."""
        with opener(data_dir, database_url) as p:
            unit = p.org.business_unit(name, p.org.unit_id(parent) if parent else None)
        click.echo(str(unit))

    @bu.command("list")
    @database_options
    def bu_list(data_dir: str | None, database_url: str | None) -> None:
        """List business units with their parents."""
        with opener(data_dir, database_url) as p:
            rows = p.records.retrieve_multiple("businessunit", order_by="name")
            names = {r["businessunitid"]: r["name"] for r in rows}
            for r in rows:
                parent = names.get(r["parentbusinessunitid"], "-")
                click.echo(f"{r['name']:30} parent: {parent}")

    @main.group()
    def user() -> None:
        """Users: create, passwords, managers, business units, enable/disable, tokens."""

    @user.command("create")
    @click.argument("username")
    @click.option("--business-unit", "unit", help="Business unit (default: the root).")
    @click.option("--manager", help="User name of the manager.")
    @click.option("--first-name")
    @click.option("--last-name")
    @click.option("--email")
    @click.option("--title")
    @click.option("--password", help="Initial password (or --password-stdin).")
    @click.option("--password-stdin", is_flag=True, help="Read the password from stdin.")
    @click.option("--role", "roles", multiple=True, help="A role to give (repeatable).")
    @database_options
    def user_create(
        username: str,
        unit: str | None,
        manager: str | None,
        first_name: str | None,
        last_name: str | None,
        email: str | None,
        title: str | None,
        password: str | None,
        password_stdin: bool,
        roles: tuple[str, ...],
        data_dir: str | None,
        database_url: str | None,
    ) -> None:
        """Create a user."""
        secret = _read_password(password, password_stdin)
        with opener(data_dir, database_url) as p:
            o = p.org
            uid = o.user(
                username,
                business_unit=o.unit_id(unit) if unit else None,
                manager=o.user_id(manager) if manager else None,
                firstname=first_name,
                lastname=last_name,
                email=email,
                title=title,
                password=secret,
                roles=[o.role_id(r) for r in roles],
            )
        click.echo(str(uid))

    @user.command("list")
    @database_options
    def user_list(data_dir: str | None, database_url: str | None) -> None:
        """List users: name, business unit, manager, status."""
        with opener(data_dir, database_url) as p:
            units = {
                r["businessunitid"]: r["name"] for r in p.records.retrieve_multiple("businessunit")
            }
            users = p.records.retrieve_multiple("systemuser", order_by="domainname")
            names = {u["systemuserid"]: u["domainname"] for u in users}
            for u in users:
                state = "disabled" if u["isdisabled"] else "enabled"
                manager = names.get(u["parentsystemuserid"], "-")
                click.echo(
                    f"{u['domainname']:16} {units.get(u['businessunitid'], '?'):24} "
                    f"manager: {manager:12} {state}"
                )

    @user.command("set-password")
    @click.argument("username")
    @click.option("--password", help="The new password (or --password-stdin).")
    @click.option("--password-stdin", is_flag=True, help="Read the password from stdin.")
    @database_options
    def user_set_password(
        username: str,
        password: str | None,
        password_stdin: bool,
        data_dir: str | None,
        database_url: str | None,
    ) -> None:
        """Set a user's password."""
        secret = _read_password(password, password_stdin)
        if secret is None:
            raise BadRequest("give --password or --password-stdin")
        with opener(data_dir, database_url) as p:
            p.auth.set_password(p.org.user_id(username), secret)
        click.echo("password set")

    @user.command("disable")
    @click.argument("username")
    @database_options
    def user_disable(username: str, data_dir: str | None, database_url: str | None) -> None:
        """Disable a user: refused at once, tokens included."""
        with opener(data_dir, database_url) as p:
            p.org.set_user_enabled(p.org.user_id(username), False)
        click.echo(f"{username} disabled")

    @user.command("enable")
    @click.argument("username")
    @database_options
    def user_enable(username: str, data_dir: str | None, database_url: str | None) -> None:
        """Enable a disabled user."""
        with opener(data_dir, database_url) as p:
            p.org.set_user_enabled(p.org.user_id(username), True)
        click.echo(f"{username} enabled")

    @user.command("move")
    @click.argument("username")
    @click.argument("business_unit")
    @database_options
    def user_move(
        username: str, business_unit: str, data_dir: str | None, database_url: str | None
    ) -> None:
        """Move a user (and the rows they own) to another business unit."""
        with opener(data_dir, database_url) as p:
            p.org.move_user(p.org.user_id(username), p.org.unit_id(business_unit))
        click.echo(f"{username} moved to {business_unit}")

    @user.command("manager")
    @click.argument("username")
    @click.argument("manager", required=False)
    @database_options
    def user_manager(
        username: str, manager: str | None, data_dir: str | None, database_url: str | None
    ) -> None:
        """Set (or, without MANAGER, clear) a user's manager."""
        with opener(data_dir, database_url) as p:
            p.org.set_manager(p.org.user_id(username), p.org.user_id(manager) if manager else None)
        click.echo(f"{username}: manager {manager or 'cleared'}")

    @user.command("token")
    @click.argument("username")
    @click.option("--name", default="cli", show_default=True, help="A name for the token.")
    @click.option("--days", type=int, default=None, help="Lifetime in days (default: none).")
    @database_options
    def user_token(
        username: str, name: str, days: int | None, data_dir: str | None, database_url: str | None
    ) -> None:
        """Create a long-lived API token for scripting; the token is the last line printed."""
        with opener(data_dir, database_url) as p:
            _, token = p.auth.create_api_token(p.org.user_id(username), name, days=days)
        click.echo(f"API token for {username} (send as 'Authorization: Bearer <token>'):")
        click.echo(token)

    @main.group()
    def team() -> None:
        """Teams and their members."""

    @team.command("create")
    @click.argument("name")
    @click.option("--business-unit", "unit", help="Business unit (default: the root).")
    @click.option(
        "--type",
        "kind",
        type=click.Choice(["owner", "access", "group"]),
        default="owner",
        show_default=True,
    )
    @click.option("--group-id", help="The external group's id (group teams).")
    @click.option("--member", "members", multiple=True, help="A member's user name.")
    @database_options
    def team_create(
        name: str,
        unit: str | None,
        kind: str,
        group_id: str | None,
        members: tuple[str, ...],
        data_dir: str | None,
        database_url: str | None,
    ) -> None:
        """Create a team."""
        with opener(data_dir, database_url) as p:
            o = p.org
            tid = o.team(
                name,
                o.unit_id(unit) if unit else None,
                kind=kind,
                members=[o.user_id(m) for m in members],
                group_id=group_id,
            )
        click.echo(str(tid))

    @team.command("list")
    @database_options
    def team_list(data_dir: str | None, database_url: str | None) -> None:
        """List teams with their type and members."""
        kinds = {0: "owner", 1: "access", 2: "group", 3: "group"}
        with opener(data_dir, database_url) as p:
            names = {
                u["systemuserid"]: u["domainname"]
                for u in p.records.retrieve_multiple("systemuser")
            }
            for t in p.records.retrieve_multiple("team", order_by="name"):
                members = sorted(names.get(m, "?") for m in p.org.members(t["teamid"]))
                state = " (disabled)" if t["isdisabled"] else ""
                click.echo(
                    f"{t['name']:28} {kinds.get(t['teamtype'], '?'):6}{state} "
                    f"members: {', '.join(members) or '-'}"
                )

    @team.command("add-member")
    @click.argument("team_name")
    @click.argument("usernames", nargs=-1, required=True)
    @database_options
    def team_add(
        team_name: str, usernames: tuple[str, ...], data_dir: str | None, database_url: str | None
    ) -> None:
        """Add users to a team."""
        with opener(data_dir, database_url) as p:
            n = p.org.add_members(p.org.team_id(team_name), [p.org.user_id(u) for u in usernames])
        click.echo(f"{n} added")

    @team.command("remove-member")
    @click.argument("team_name")
    @click.argument("usernames", nargs=-1, required=True)
    @database_options
    def team_remove(
        team_name: str, usernames: tuple[str, ...], data_dir: str | None, database_url: str | None
    ) -> None:
        """Remove users from a team."""
        with opener(data_dir, database_url) as p:
            n = p.org.remove_members(
                p.org.team_id(team_name), [p.org.user_id(u) for u in usernames]
            )
        click.echo(f"{n} removed")

    @team.command("refresh-group")
    @click.argument("team_name")
    @click.option(
        "--file",
        "path",
        required=True,
        help="The group's members: a JSON list of user names, or one per line ('-' reads stdin).",
    )
    @database_options
    def team_refresh(
        team_name: str, path: str, data_dir: str | None, database_url: str | None
    ) -> None:
        """Make a group team's members exactly those of its external group."""
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
        stripped = text.strip()
        if stripped.startswith("["):
            try:
                names = json.loads(stripped)
            except json.JSONDecodeError as exc:
                raise BadRequest(f"{path}: not a JSON list of user names ({exc})") from None
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise BadRequest(f"{path}: not a JSON list of user names")
        else:
            names = [
                line.strip()
                for line in text.splitlines()
                if line.strip() and not line.startswith("#")
            ]
        with opener(data_dir, database_url) as p:
            added, removed = p.org.refresh_group(p.org.team_id(team_name), names)
        click.echo(f"{added} added, {removed} removed")

    @team.command("disable")
    @click.argument("team_name")
    @database_options
    def team_disable(team_name: str, data_dir: str | None, database_url: str | None) -> None:
        """Disable a team: its roles, rows and shares stop counting for its members."""
        with opener(data_dir, database_url) as p:
            p.org.set_team_enabled(p.org.team_id(team_name), False)
        click.echo(f"{team_name} disabled")

    @team.command("enable")
    @click.argument("team_name")
    @database_options
    def team_enable(team_name: str, data_dir: str | None, database_url: str | None) -> None:
        """Enable a disabled team."""
        with opener(data_dir, database_url) as p:
            p.org.set_team_enabled(p.org.team_id(team_name), True)
        click.echo(f"{team_name} enabled")

    @main.group()
    def role() -> None:
        """Security roles, their privileges and who holds them."""

    @role.command("create")
    @click.argument("name")
    @click.option("--business-unit", "unit", help="Business unit (default: the root).")
    @click.option("--administrator", is_flag=True, help="Full access to everything.")
    @click.option("--description")
    @database_options
    def role_create(
        name: str,
        unit: str | None,
        administrator: bool,
        description: str | None,
        data_dir: str | None,
        database_url: str | None,
    ) -> None:
        """Create a role (then give it privileges with 'role set')."""
        with opener(data_dir, database_url) as p:
            rid = p.org.role(
                name,
                business_unit=p.org.unit_id(unit) if unit else None,
                administrator=administrator,
                description=description,
            )
        click.echo(str(rid))

    @role.command("set")
    @click.argument("role_name")
    @click.argument("table")
    @click.argument("privilege")
    @click.argument("depth")
    @database_options
    def role_set(
        role_name: str,
        table: str,
        privilege: str,
        depth: str,
        data_dir: str | None,
        database_url: str | None,
    ) -> None:
        """Set PRIVILEGE (create, read, write, delete, append, appendto, assign, share) on
        TABLE to DEPTH (none, user, businessunit, parentchild, organization)."""
        with opener(data_dir, database_url) as p:
            p.org.set_privilege(p.org.role_id(role_name), table, privilege, depth)
        click.echo(f"{role_name}: {privilege} on {table} at {depth}")

    def _principal(p: Platform, user_name: str | None, team_name: str | None) -> EntityRef:
        if bool(user_name) == bool(team_name):
            raise BadRequest("name exactly one of --user or --team")
        if user_name:
            return EntityRef("systemuser", p.org.user_id(user_name))
        assert team_name is not None
        return EntityRef("team", p.org.team_id(team_name))

    @role.command("assign")
    @click.argument("role_name")
    @click.option("--user", "user_name")
    @click.option("--team", "team_name")
    @database_options
    def role_assign(
        role_name: str,
        user_name: str | None,
        team_name: str | None,
        data_dir: str | None,
        database_url: str | None,
    ) -> None:
        """Give a role to a user or a team."""
        with opener(data_dir, database_url) as p:
            p.org.assign_role(_principal(p, user_name, team_name), p.org.role_id(role_name))
        click.echo(f"{role_name} assigned")

    @role.command("remove")
    @click.argument("role_name")
    @click.option("--user", "user_name")
    @click.option("--team", "team_name")
    @database_options
    def role_remove(
        role_name: str,
        user_name: str | None,
        team_name: str | None,
        data_dir: str | None,
        database_url: str | None,
    ) -> None:
        """Take a role away from a user or a team."""
        with opener(data_dir, database_url) as p:
            p.org.remove_role(_principal(p, user_name, team_name), p.org.role_id(role_name))
        click.echo(f"{role_name} removed")

    @role.command("list")
    @database_options
    def role_list(data_dir: str | None, database_url: str | None) -> None:
        """List roles with their privileges."""
        depth_names = {0: "none", 1: "user", 2: "businessunit", 3: "parentchild", 4: "organization"}
        privilege_names = {
            1: "create",
            2: "read",
            4: "write",
            8: "delete",
            16: "append",
            32: "appendto",
            64: "assign",
            128: "share",
        }
        with opener(data_dir, database_url) as p:
            rp = p.store.sql_table("roleprivilege")
            for r in p.records.retrieve_multiple("role", order_by="name"):
                flag = " (full access)" if r["isadministrator"] else ""
                click.echo(f"{r['name']}{flag}")
                with p.store.read() as conn:
                    rows = conn.execute(
                        sa.select(rp.c.tablename, rp.c.privilege, rp.c.depth)
                        .where(rp.c.roleid == r["roleid"])
                        .order_by(rp.c.tablename, rp.c.privilege)
                    ).all()
                for table, privilege, depth in rows:
                    click.echo(f"  {table:36} {privilege_names[privilege]:9} {depth_names[depth]}")

    @main.command()
    @click.option(
        "--enable/--disable", "enabled", required=True, help="Turn hierarchy security on or off."
    )
    @click.option("--depth", type=int, help="How many levels below a manager reach (1-100).")
    @click.option(
        "--managers-write/--no-managers-write",
        default=None,
        help="Whether direct managers may change their reports' rows.",
    )
    @database_options
    def hierarchy(
        enabled: bool,
        depth: int | None,
        managers_write: bool | None,
        data_dir: str | None,
        database_url: str | None,
    ) -> None:
        """Manager hierarchy security: managers read (and may write) their reports' rows."""
        with opener(data_dir, database_url) as p:
            p.org.set_hierarchy(enabled=enabled, depth=depth, managers_write=managers_write)
        click.echo(f"hierarchy security {'on' if enabled else 'off'}")
