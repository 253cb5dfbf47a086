"""The offline tables' rules, run as plugins on every write whatever its path (the service
API, the CLI, the Web API, the portal):

- a profile's publish state (validated, published on, component state, published version)
  is set by publishing only;
- an item's profile and table never change; defaults fill the download filter and the sync
  interval; names are filled in;
- every save of an item or relationship is checked against the profile rules
  (:mod:`fieldsync.offline.validation`): problems of the saved item, and of the profile as a
  whole, refuse the save and roll it back. Problems that other items got from outside the
  profile (a table no longer offline, a column removed) do not block unrelated saves; publish
  reports them;
- deleting a profile deletes its items, relationships, memberships and published versions;
  deleting an item deletes its relationships and the relationships that lead to its table;
  deleting a team removes its memberships;
- a user or team holds a profile once; app unique names are unique; an app's tables exist;
  a view's FetchXML parses and queries the view's table.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from fieldsync.errors import PluginError, ProfileInvalid, QueryError
from fieldsync.offline.profiles import (
    ASSOCIATION,
    ITEM,
    PROFILE,
    PUBLISH_COLUMNS,
    UNPUBLISHED,
    is_publishing,
    join_list,
    load_draft,
    split_list,
)
from fieldsync.offline.validation import DEFAULT_SYNC_INTERVAL, problems, related_table
from fieldsync.query.fetchxml import parse_fetchxml
from fieldsync.records.plugins import PluginContext, PluginRegistry
from fieldsync.store.catalog import fs_published_profile
from fieldsync.types import RecordId

USER_MEMBERSHIP = "usermobileofflineprofilemembership"
TEAM_MEMBERSHIP = "teammobileofflineprofilemembership"
UNIQUE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,99}$")
GRAPH_FIELDS = frozenset({"cycle", "relationship_count"})


def _error(message: str) -> PluginError:
    return PluginError(message, code="0x80040203")


def _id(value: Any) -> Any:
    return value[0] if isinstance(value, tuple) else value


def _merged(ctx: PluginContext) -> dict[str, Any]:
    return {**(ctx.pre_image or {}), **{k: _id(v) for k, v in ctx.target.items()}}


# -- profiles -------------------------------------------------------------------------------


def profile_state(ctx: PluginContext) -> None:
    touched = PUBLISH_COLUMNS.intersection(ctx.target)
    if touched and not is_publishing():
        raise _error(
            f"{', '.join(sorted(touched))}: set by publishing the profile, not written directly"
        )
    if ctx.pre_image is None:
        ctx.target.setdefault("componentstate", UNPUBLISHED)
        ctx.target.setdefault("isvalidated", False)
        ctx.target.setdefault("publishedversion", 0)


def profile_saved(ctx: PluginContext) -> None:
    if "name" in ctx.target or "description" in ctx.target:
        _check_profile(ctx, ctx.record_id, None)


def profile_deleting(ctx: PluginContext) -> None:
    for table, column in (
        (ITEM, "regardingobjectid"),
        (USER_MEMBERSHIP, "mobileofflineprofileid"),
        (TEAM_MEMBERSHIP, "mobileofflineprofileid"),
    ):
        sql = ctx.records.store_table(table)
        pk = sql.c[f"{table}id"]
        for rid in (
            ctx.records.conn.execute(sa.select(pk).where(sql.c[column] == ctx.record_id))
            .scalars()
            .all()
        ):
            ctx.records.trusted().delete(table, rid)


def profile_deleted(ctx: PluginContext) -> None:
    ctx.records.conn.execute(
        fs_published_profile.delete().where(fs_published_profile.c.profileid == ctx.record_id)
    )


# -- items and relationships ------------------------------------------------------------------


def item_defaults(ctx: PluginContext) -> None:
    target = ctx.target
    if ctx.pre_image is not None:
        for column in ("regardingobjectid", "selectedentitytypecode"):
            if column in target and _id(target[column]) != ctx.pre_image.get(column):
                raise _error(f"{ITEM}.{column}: an item's profile and table cannot change")
    else:
        target.setdefault("recorddistributioncriteria", 0)
        target.setdefault("syncintervalinminutes", DEFAULT_SYNC_INTERVAL)
        if not target.get("name"):
            target["name"] = str(target.get("selectedentitytypecode", ""))[:255]
    for column in ("selectedcolumns", "selectedfilecolumns", "selectedimagecolumns"):
        if column in target:
            target[column] = join_list(split_list(target[column]))
    flags = ("recordsownedbyme", "recordsownedbymyteam", "recordsownedbymybusinessunit")
    for column in flags:
        if column in target and target[column] is None:
            target[column] = False


def item_saved(ctx: PluginContext) -> None:
    row = ctx.post_image if ctx.post_image is not None else ctx.pre_image
    assert row is not None
    _check_profile(ctx, row["regardingobjectid"], row["selectedentitytypecode"])


def item_deleting(ctx: PluginContext) -> None:
    """An item takes its own relationships along, and the other items' relationships that
    lead to its table (removing a table from a profile removes the links to it)."""
    assert ctx.pre_image is not None
    gone = ctx.pre_image["selectedentitytypecode"]
    items, links = ctx.records.store_table(ITEM), ctx.records.store_table(ASSOCIATION)
    others = ctx.records.conn.execute(
        sa.select(
            links.c[f"{ASSOCIATION}id"],
            links.c.selectedrelationshipsschema,
            items.c.selectedentitytypecode,
        )
        .join(items, items.c[f"{ITEM}id"] == links.c.mobileofflineprofileitemid)
        .where(
            items.c.regardingobjectid == ctx.pre_image["regardingobjectid"],
            items.c[f"{ITEM}id"] != ctx.record_id,
        )
    ).all()
    for link_id, name, table in others:
        rel = ctx.records.schema.relationships.get(name)
        if rel is not None and related_table(rel, table) == gone:
            ctx.records.trusted().delete(ASSOCIATION, link_id)
    sql = ctx.records.store_table(ASSOCIATION)
    for rid in (
        ctx.records.conn.execute(
            sa.select(sql.c[f"{ASSOCIATION}id"]).where(
                sql.c.mobileofflineprofileitemid == ctx.record_id
            )
        )
        .scalars()
        .all()
    ):
        ctx.records.trusted().delete(ASSOCIATION, rid)


def association_defaults(ctx: PluginContext) -> None:
    merged = _merged(ctx)
    name = merged.get("selectedrelationshipsschema")
    rel = ctx.records.schema.relationships.get(str(name))
    item = _item(ctx, merged.get("mobileofflineprofileitemid"))
    if ctx.pre_image is None or "selectedrelationshipsschema" in ctx.target:
        if not ctx.target.get("name"):
            ctx.target["name"] = str(name)[:255]
        if rel is not None and item is not None and not ctx.target.get("relationshipdisplayname"):
            other = related_table(rel, item["selectedentitytypecode"])
            ctx.target["relationshipdisplayname"] = f"{other or '?'} | {rel.referencing_column}"[
                :255
            ]


def association_saved(ctx: PluginContext) -> None:
    row = ctx.post_image if ctx.post_image is not None else ctx.pre_image
    assert row is not None
    item = _item(ctx, row["mobileofflineprofileitemid"])
    if item is not None:
        _check_profile(ctx, item["regardingobjectid"], item["selectedentitytypecode"])


def _item(ctx: PluginContext, item_id: RecordId | None) -> dict[str, Any] | None:
    if item_id is None:
        return None
    sql = ctx.records.store_table(ITEM)
    row = ctx.records.conn.execute(sa.select(sql).where(sql.c[f"{ITEM}id"] == item_id)).first()
    return None if row is None else dict(row._mapping)


def _check_profile(ctx: PluginContext, profile_id: RecordId, table: str | None) -> None:
    """Refuse the save if it leaves a problem on the saved item or the profile as a whole."""
    sql = ctx.records.store_table(PROFILE)
    if (
        ctx.records.conn.execute(
            sa.select(sql.c.mobileofflineprofileid).where(
                sql.c.mobileofflineprofileid == profile_id
            )
        ).first()
        is None
    ):
        return  # the profile is being deleted
    draft = load_draft(ctx.records.conn, _StoreView(ctx.records), profile_id)
    found = [
        p
        for p in problems(draft, ctx.records.schema)
        if p.table is None or p.field in GRAPH_FIELDS or (table is not None and p.table == table)
    ]
    if found:
        messages = tuple(p.message for p in found)
        raise ProfileInvalid(messages[0] if len(messages) == 1 else "; ".join(messages), messages)


class _StoreView:
    """What :func:`load_draft` needs of a store, from inside a running operation."""

    def __init__(self, records: Any) -> None:
        self._records = records

    def sql_table(self, name: str) -> sa.Table:
        table: sa.Table = self._records.store_table(name)
        return table


# -- memberships ------------------------------------------------------------------------------


def _membership(column: str, table: str) -> Callable[[PluginContext], None]:
    def membership_rules(ctx: PluginContext) -> None:
        merged = _merged(ctx)
        sql = ctx.records.store_table(table)
        clash = ctx.records.conn.execute(
            sa.select(sql.c[f"{table}id"]).where(
                sql.c[column] == merged.get(column),
                sql.c.mobileofflineprofileid == merged.get("mobileofflineprofileid"),
                sql.c[f"{table}id"] != ctx.record_id,
            )
        ).first()
        if clash is not None:
            raise _error(
                f"{table}: this {'user' if column == 'systemuserid' else 'team'} already holds "
                "the profile"
            )
        if ctx.pre_image is None and not ctx.target.get("name"):
            ctx.target["name"] = f"{merged.get(column)} / {merged.get('mobileofflineprofileid')}"

    return membership_rules


def team_deleting(ctx: PluginContext) -> None:
    sql = ctx.records.store_table(TEAM_MEMBERSHIP)
    for rid in (
        ctx.records.conn.execute(
            sa.select(sql.c[f"{TEAM_MEMBERSHIP}id"]).where(sql.c.teamid == ctx.record_id)
        )
        .scalars()
        .all()
    ):
        ctx.records.trusted().delete(TEAM_MEMBERSHIP, rid)


# -- apps and views ---------------------------------------------------------------------------


def app_rules(ctx: PluginContext) -> None:
    target = ctx.target
    if ctx.pre_image is None:
        for column, default in (
            ("canbeusedoffline", False),
            ("offlinemode", 0),
            ("offlineprofilemode", 0),
            ("allowsyncfrequency", False),
            ("allowwifionly", False),
        ):
            if target.get(column) is None:
                target[column] = default
    if "uniquename" in target:
        name = str(target["uniquename"]).strip()
        if not UNIQUE_NAME.match(name):
            raise _error(
                f"appmodule.uniquename: {name!r} is not valid: use letters, digits and "
                "underscores, starting with a letter"
            )
        sql = ctx.records.store_table("appmodule")
        clash = ctx.records.conn.execute(
            sa.select(sql.c.appmoduleid).where(
                sa.func.lower(sql.c.uniquename) == name.lower(), sql.c.appmoduleid != ctx.record_id
            )
        ).first()
        if clash is not None:
            raise _error(f"appmodule.uniquename: an app named {name!r} exists already")
        target["uniquename"] = name
    if "tablenames" in target:
        names = split_list(target["tablenames"])
        unknown = [n for n in names if n not in ctx.records.schema]
        if unknown:
            raise _error(f"appmodule.tablenames: no such table: {', '.join(unknown)}")
        target["tablenames"] = join_list(names)


def view_rules(ctx: PluginContext) -> None:
    if "fetchxml" not in ctx.target and "returnedtypecode" not in ctx.target:
        return
    merged = _merged(ctx)
    table = str(merged.get("returnedtypecode"))
    if table not in ctx.records.schema:
        raise _error(f"savedquery.returnedtypecode: no such table {table!r}")
    try:
        query = parse_fetchxml(str(merged.get("fetchxml") or ""), ctx.records.schema)
    except QueryError as exc:
        raise _error(f"savedquery.fetchxml: {exc.message}") from None
    if query.table != table:
        raise _error(
            f"savedquery.fetchxml: the view returns {table!r} rows but queries {query.table!r}"
        )


RULES: list[tuple[str, str, str, Callable[[PluginContext], None]]] = [
    (PROFILE, "create", "pre-operation", profile_state),
    (PROFILE, "update", "pre-operation", profile_state),
    (PROFILE, "update", "post-operation", profile_saved),
    (PROFILE, "delete", "pre-operation", profile_deleting),
    (PROFILE, "delete", "post-operation", profile_deleted),
    (ITEM, "create", "pre-operation", item_defaults),
    (ITEM, "update", "pre-operation", item_defaults),
    (ITEM, "create", "post-operation", item_saved),
    (ITEM, "update", "post-operation", item_saved),
    (ITEM, "delete", "pre-operation", item_deleting),
    (ITEM, "delete", "post-operation", item_saved),
    (ASSOCIATION, "create", "pre-operation", association_defaults),
    (ASSOCIATION, "update", "pre-operation", association_defaults),
    (ASSOCIATION, "create", "post-operation", association_saved),
    (ASSOCIATION, "update", "post-operation", association_saved),
    (ASSOCIATION, "delete", "post-operation", association_saved),
    (USER_MEMBERSHIP, "create", "pre-operation", _membership("systemuserid", USER_MEMBERSHIP)),
    (USER_MEMBERSHIP, "update", "pre-operation", _membership("systemuserid", USER_MEMBERSHIP)),
    (TEAM_MEMBERSHIP, "create", "pre-operation", _membership("teamid", TEAM_MEMBERSHIP)),
    (TEAM_MEMBERSHIP, "update", "pre-operation", _membership("teamid", TEAM_MEMBERSHIP)),
    ("team", "delete", "pre-operation", team_deleting),
    ("appmodule", "create", "pre-operation", app_rules),
    ("appmodule", "update", "pre-operation", app_rules),
    ("savedquery", "create", "pre-operation", view_rules),
    ("savedquery", "update", "pre-operation", view_rules),
]


def register(plugins: PluginRegistry) -> None:
    for table, message, stage, rule in RULES:
        plugins.register(
            table, message, stage, rule, order=-900, name=f"fieldsync.offline.{rule.__name__}"
        )
