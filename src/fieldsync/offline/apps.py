"""Apps, their views, and the profile generated from an app ("new profile with current app
data").

An app (``appmodule``) lists the tables it uses (``tablenames``) and its views (saved
queries, through the ``appmodule_savedquery`` relationship), and carries its offline
settings: can be used offline, its one profile (a profile may serve several apps),
offline-first or classic, the profile mode (default: everyone who can use the app;
restricted: the profile's members), and whether users may change the sync frequency or sync
on Wi-Fi only.

:func:`generate_profile` proposes a draft profile from the app, to review before publishing:

- each offline-enabled table the app uses (listed, or returned by one of its views) gets a
  download filter for its ownership: user or team → the rows the user or their teams own;
  business → the user's business unit's rows; organization → all rows; none → related rows;
- each offline-enabled table reached only through a lookup of a view (a lookup column the
  view shows, or a link-entity it joins) gets "related rows only" with those relationships.

fieldsync picks owned rows for user-or-team tables where the canvas preview downloads every
row the user may read: it is what the seeds advise ("My active accounts" rather than "All
accounts"), and the maker widens it when they review the draft.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa

from fieldsync.offline.access import APP, find_app
from fieldsync.offline.profiles import as_id, join_list, split_list, write_draft
from fieldsync.offline.snapshot import Distribution
from fieldsync.offline.validation import ItemDraft, ProfileDraft
from fieldsync.query.ast import Link
from fieldsync.query.fetchxml import parse_fetchxml
from fieldsync.records.service import SYSTEM, Records
from fieldsync.schema.model import ColumnType, Ownership, Schema, Table
from fieldsync.security.model import SecurityContext
from fieldsync.store.store import Store
from fieldsync.types import RecordId, Row

VIEW = "savedquery"
APP_VIEWS = "appmodule_savedquery"


def create_view(
    records: Records,
    name: str,
    table: str,
    fetchxml: str,
    *,
    description: str | None = None,
    view_id: RecordId | None = None,
    caller: SecurityContext = SYSTEM,
    conn: sa.Connection | None = None,
) -> RecordId:
    """A saved query (view) of ``table``; the FetchXML must parse and query that table."""
    values: dict[str, Any] = {"name": name, "returnedtypecode": table, "fetchxml": fetchxml}
    if description:
        values["description"] = description
    if view_id is not None:
        values["savedqueryid"] = view_id
    return records.create(VIEW, values, caller=caller, conn=conn)


def create_app(
    records: Records,
    name: str,
    uniquename: str,
    *,
    tables: Iterable[str] = (),
    views: Iterable[RecordId] = (),
    profile: RecordId | None = None,
    can_be_used_offline: bool = False,
    classic: bool = False,
    restricted: bool = False,
    allow_sync_frequency: bool = False,
    allow_wifi_only: bool = False,
    app_id: RecordId | None = None,
    caller: SecurityContext = SYSTEM,
) -> RecordId:
    """An app with its tables, views and offline settings."""
    values: dict[str, Any] = {
        "name": name,
        "uniquename": uniquename,
        "tablenames": join_list(tables),
        "mobileofflineprofileid": profile,
        "canbeusedoffline": can_be_used_offline,
        "offlinemode": 1 if classic else 0,
        "offlineprofilemode": 1 if restricted else 0,
        "allowsyncfrequency": allow_sync_frequency,
        "allowwifionly": allow_wifi_only,
    }
    if app_id is not None:
        values["appmoduleid"] = app_id
    view_ids = list(views)

    def work(conn: sa.Connection) -> RecordId:
        app = records.create(APP, values, caller=caller, conn=conn)
        for view in view_ids:
            records.associate(APP_VIEWS, app, view, caller=caller, conn=conn)
        return app

    return records.store.transact(work)


def app_views(
    records: Records,
    app: RecordId | str,
    *,
    caller: SecurityContext = SYSTEM,
    conn: sa.Connection | None = None,
) -> list[Row]:
    """The views an app lists, by name."""
    store = records.store
    link = store.sql_table("appmoduleview")
    with _reading(store, conn) as c:
        row = find_app(c, store, app)
        records.retrieve(APP, row["appmoduleid"], columns=["name"], caller=caller, conn=c)
        ids = list(
            c.execute(
                sa.select(link.c.savedqueryid).where(link.c.appmoduleid == row["appmoduleid"])
            ).scalars()
        )
        views = [
            v
            for v in records.retrieve_multiple(VIEW, order_by="name", caller=caller, conn=c)
            if v["savedqueryid"] in ids
        ]
    return views


def default_item(table: Table) -> ItemDraft:
    """The download filter proposed for a table the app uses."""
    if table.ownership is Ownership.USER:
        return ItemDraft(table.name, Distribution.OTHER, owned_by_me=True, owned_by_my_teams=True)
    if table.ownership is Ownership.BUSINESS:
        return ItemDraft(table.name, Distribution.OTHER, owned_by_my_business_unit=True)
    if table.ownership is Ownership.ORGANIZATION:
        return ItemDraft(table.name, Distribution.ALL)
    return ItemDraft(table.name, Distribution.RELATED)


def proposed_profile(
    schema: Schema, name: str, tables: Sequence[str], views: Sequence[Row]
) -> ProfileDraft:
    """The draft :func:`generate_profile` writes (pure)."""
    used = list(dict.fromkeys([*tables, *(v["returnedtypecode"] for v in views)]))
    items: dict[str, ItemDraft] = {}
    for t in used:
        if t in schema and schema.table(t).offline:
            items[t] = default_item(schema.table(t))
    related: dict[str, list[str]] = {}
    for view in views:
        query = parse_fetchxml(view["fetchxml"], schema)
        if query.table not in items:
            continue
        table = schema.table(query.table)
        columns = query.columns if query.columns is not None else tuple(table.columns)
        for col in columns:
            c = table.column(col)
            if c is None or c.type is not ColumnType.LOOKUP or c.system:
                continue
            for target in c.targets:
                related.setdefault(target, []).append(f"{target}_{table.name}_{c.name}")
        for link in query.links:
            _link_relationships(schema, table, link, related)
    for target, names in related.items():
        if target in items or target not in schema or not schema.table(target).offline:
            continue
        rels = tuple(sorted(n for n in dict.fromkeys(names) if n in schema.relationships))
        if rels:
            items[target] = ItemDraft(target, Distribution.RELATED, relationships=rels)
    return ProfileDraft(
        name=name,
        description="Generated from the app's tables and views: review the filters.",
        items=tuple(items[t] for t in sorted(items)),
    )


def _link_relationships(
    schema: Schema, table: Table, link: Link, related: dict[str, list[str]]
) -> None:
    to = table.column(link.to_column)
    if to is not None and to.type is ColumnType.LOOKUP and link.table in to.targets:
        related.setdefault(link.table, []).append(f"{link.table}_{table.name}_{to.name}")
    if link.table in schema:
        other = schema.table(link.table)
        back = other.column(link.from_column)
        if back is not None and back.type is ColumnType.LOOKUP and table.name in back.targets:
            related.setdefault(link.table, []).append(f"{table.name}_{other.name}_{back.name}")


def generate_profile(
    records: Records,
    app: RecordId | str,
    *,
    name: str | None = None,
    caller: SecurityContext = SYSTEM,
) -> RecordId:
    """Create a draft profile from the app's tables and views and make it the app's profile
    ("new profile with current app data"). The draft is not published: review it first."""
    store = records.store

    def work(conn: sa.Connection) -> RecordId:
        row = find_app(conn, store, app)
        app_id = row["appmoduleid"]
        records.retrieve(APP, app_id, columns=["name"], caller=caller, conn=conn)
        views = app_views(records, app_id, caller=caller, conn=conn)
        draft = proposed_profile(
            store.schema,
            name or f"{row['name']} (generated)",
            split_list(row["tablenames"]),
            views,
        )
        profile = write_draft(records, conn, draft, caller=caller)
        records.update(APP, app_id, {"mobileofflineprofileid": profile}, caller=caller, conn=conn)
        return profile

    return store.transact(work)


def set_app_profile(
    records: Records,
    app: RecordId | str,
    profile: RecordId | str | None,
    *,
    caller: SecurityContext = SYSTEM,
) -> None:
    def work(conn: sa.Connection) -> None:
        row = find_app(conn, records.store, app)
        value = None if profile is None else as_id(profile)
        records.update(
            APP, row["appmoduleid"], {"mobileofflineprofileid": value}, caller=caller, conn=conn
        )

    records.store.transact(work)


@contextmanager
def _reading(store: Store, conn: sa.Connection | None) -> Iterator[sa.Connection]:
    if conn is not None:
        yield conn
        return
    with store.read() as c:
        yield c
