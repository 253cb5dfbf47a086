"""Rules of the organisation, run as plugins on every write whatever its path (the service
API, the Web API, sync): no cycles in the business unit tree or the manager hierarchy, unique
user names, one privilege row per role, table and privilege, roles only on teams that can
hold them, and a user or team that changes business unit takes its rows along."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from fieldsync.errors import BadRequest, PluginError
from fieldsync.records.plugins import PluginContext, PluginRegistry
from fieldsync.schema.builtin import ROOT_BUSINESS_UNIT_ID
from fieldsync.types import RecordId

ACCESS_TEAM = 1


def _rule_error(message: str) -> PluginError:
    return PluginError(message, code="0x80040203")


def _walk_up(
    ctx: PluginContext, table: str, parent_column: str, start: RecordId | None
) -> list[RecordId]:
    """``start`` and every ancestor of it through ``parent_column``."""
    chain: list[RecordId] = []
    current = start
    pk = f"{table}id"
    sql = ctx.records.store_table(table)
    while current is not None and current not in chain:
        chain.append(current)
        current = ctx.records.conn.execute(
            sa.select(sql.c[parent_column]).where(sql.c[pk] == current)
        ).scalar()
    return chain


def _lookup(ctx: PluginContext, column: str) -> Any:
    value = ctx.target.get(column)
    return value[0] if isinstance(value, tuple) else value


def business_unit_tree(ctx: PluginContext) -> None:
    if "parentbusinessunitid" not in ctx.target:
        if ctx.pre_image is None:
            ctx.target["parentbusinessunitid"] = ROOT_BUSINESS_UNIT_ID
        return
    parent = _lookup(ctx, "parentbusinessunitid")
    if parent is None:
        if ctx.record_id != ROOT_BUSINESS_UNIT_ID:
            raise _rule_error("a business unit needs a parent; only the root has none")
        return
    if ctx.record_id == ROOT_BUSINESS_UNIT_ID:
        raise _rule_error("the root business unit cannot have a parent")
    if ctx.record_id in _walk_up(ctx, "businessunit", "parentbusinessunitid", parent):
        raise _rule_error("a business unit cannot be placed below itself")


def user_rules(ctx: PluginContext) -> None:
    target = ctx.target
    if "domainname" in target:
        name = str(target["domainname"]).strip().lower()
        if not name or any(c.isspace() for c in name):
            raise _rule_error("a user name cannot be empty or contain spaces")
        target["domainname"] = name
        sql = ctx.records.store_table("systemuser")
        clash = ctx.records.conn.execute(
            sa.select(sql.c.systemuserid).where(
                sa.func.lower(sql.c.domainname) == name, sql.c.systemuserid != ctx.record_id
            )
        ).first()
        if clash is not None:
            raise _rule_error(f"the user name {name!r} is taken")
    if ctx.pre_image is None and not target.get("fullname"):
        parts = [target.get("firstname"), target.get("lastname")]
        target["fullname"] = " ".join(p for p in parts if p) or target.get("domainname")
    if "parentsystemuserid" in target:
        manager = _lookup(ctx, "parentsystemuserid")
        if manager is not None and ctx.record_id in _walk_up(
            ctx, "systemuser", "parentsystemuserid", manager
        ):
            raise _rule_error("a user cannot manage themselves, directly or through others")


def team_rules(ctx: PluginContext) -> None:
    if ctx.pre_image is None and ctx.target.get("teamtype") is None:
        ctx.target["teamtype"] = 0
    changed = ctx.pre_image is not None and "teamtype" in ctx.target
    if changed and ctx.target["teamtype"] != (ctx.pre_image or {}).get("teamtype"):
        raise _rule_error("a team's type cannot change")


def follow_business_unit(ctx: PluginContext) -> None:
    """A user or team that moves to another business unit takes the rows it owns along."""
    if ctx.pre_image is None or ctx.post_image is None:
        return
    new, old = ctx.post_image.get("businessunitid"), ctx.pre_image.get("businessunitid")
    if new is not None and new != old:
        ctx.records.move_owned_rows(ctx.record_id, new)


def role_privilege_rules(ctx: PluginContext) -> None:
    merged = {**(ctx.pre_image or {}), **ctx.target}
    table = merged.get("tablename")
    if table is not None and table not in ctx.records.schema:
        raise _rule_error(f"roleprivilege: table {table!r} does not exist")
    role = merged.get("roleid")
    role_id = role[0] if isinstance(role, tuple) else role
    sql = ctx.records.store_table("roleprivilege")
    clash = ctx.records.conn.execute(
        sa.select(sql.c.roleprivilegeid).where(
            sql.c.roleid == role_id,
            sql.c.tablename == table,
            sql.c.privilege == merged.get("privilege"),
            sql.c.roleprivilegeid != ctx.record_id,
        )
    ).first()
    if clash is not None:
        raise _rule_error(
            f"the role already has a {table} privilege row for this privilege; change its depth"
        )
    if ctx.pre_image is None and not ctx.target.get("name"):
        ctx.target["name"] = f"{table} {merged.get('privilege')}"


def managed_roles(ctx: PluginContext) -> None:
    if ctx.pre_image is not None and ctx.pre_image.get("ismanaged"):
        raise BadRequest(f"{ctx.pre_image.get('name')} is a predefined role and cannot be deleted")


def roles_on_teams(ctx: PluginContext) -> None:
    sql = ctx.records.store_table("team")
    kind = ctx.records.conn.execute(
        sa.select(sql.c.teamtype).where(sql.c.teamid == ctx.target["teamid"])
    ).scalar()
    if kind == ACCESS_TEAM:
        raise _rule_error("access teams cannot hold security roles; share rows with them instead")


RULES: list[tuple[str, str, str, Callable[[PluginContext], None]]] = [
    ("businessunit", "create", "pre-operation", business_unit_tree),
    ("businessunit", "update", "pre-operation", business_unit_tree),
    ("systemuser", "create", "pre-operation", user_rules),
    ("systemuser", "update", "pre-operation", user_rules),
    ("systemuser", "update", "post-operation", follow_business_unit),
    ("team", "create", "pre-operation", team_rules),
    ("team", "update", "pre-operation", team_rules),
    ("team", "update", "post-operation", follow_business_unit),
    ("roleprivilege", "create", "pre-operation", role_privilege_rules),
    ("roleprivilege", "update", "pre-operation", role_privilege_rules),
    ("role", "delete", "pre-operation", managed_roles),
    ("teamroles", "associate", "pre-operation", roles_on_teams),
]


def register(plugins: PluginRegistry) -> None:
    for table, message, stage, rule in RULES:
        plugins.register(
            table, message, stage, rule, order=-1000, name=f"fieldsync.{rule.__name__}"
        )
