"""Mobile offline profiles as rows: reading a draft, writing one, publishing it.

A profile is a ``mobileofflineprofile`` row with one ``mobileofflineprofileitem`` per table
and one ``mobileofflineprofileitemassociation`` per relationship an item follows. Those rows
are the draft: makers change them through the records service (so every change is
authorized, validated by :mod:`fieldsync.offline.rules`, versioned and logged). Publishing
freezes the draft into a :class:`~fieldsync.offline.snapshot.PublishedProfile` with the next
version number, stored once in ``fs_published_profile`` and never changed; devices only ever
see published versions.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Protocol

import sqlalchemy as sa

from fieldsync.errors import BadRequest, NotFound, ProfileInvalid, RecordNotFound
from fieldsync.offline.snapshot import Distribution, PublishedProfile
from fieldsync.offline.validation import ItemDraft, ProfileDraft, problems, snapshot
from fieldsync.records.service import SYSTEM, Records
from fieldsync.security.model import SecurityContext
from fieldsync.store.catalog import fs_published_profile
from fieldsync.store.store import Store, utcnow
from fieldsync.types import RecordId, Row, as_uuid

PROFILE = "mobileofflineprofile"
ITEM = "mobileofflineprofileitem"
ASSOCIATION = "mobileofflineprofileitemassociation"
PUBLISH_COLUMNS = frozenset({"isvalidated", "publishedon", "componentstate", "publishedversion"})
PUBLISHED, UNPUBLISHED = 0, 1


class Tables(Protocol):
    """Where the SQL tables come from: the store, or a running operation's records."""

    def sql_table(self, name: str) -> sa.Table: ...


_publishing: ContextVar[bool] = ContextVar("fieldsync_offline_publishing", default=False)


@contextmanager
def publishing() -> Iterator[None]:
    """While publishing, the publish state columns of a profile may be written."""
    token = _publishing.set(True)
    try:
        yield
    finally:
        _publishing.reset(token)


def is_publishing() -> bool:
    return _publishing.get()


def split_list(text: str | None) -> tuple[str, ...]:
    """``"a, b,c"`` → ``("a", "b", "c")``: how column lists are stored."""
    return tuple(dict.fromkeys(p.strip() for p in (text or "").split(",") if p.strip()))


def join_list(names: Iterable[str]) -> str | None:
    joined = ",".join(dict.fromkeys(n.strip() for n in names if n.strip()))
    return joined or None


def as_id(value: RecordId | str) -> RecordId:
    try:
        return as_uuid(value)
    except ValueError:
        raise BadRequest(f"{value!r} is not an id") from None


def item_from_row(row: Mapping[str, Any], relationships: Iterable[str]) -> ItemDraft:
    return ItemDraft(
        table=str(row["selectedentitytypecode"]),
        distribution=Distribution(row["recorddistributioncriteria"] or 0),
        owned_by_me=bool(row["recordsownedbyme"]),
        owned_by_my_teams=bool(row["recordsownedbymyteam"]),
        owned_by_my_business_unit=bool(row["recordsownedbymybusinessunit"]),
        custom_filter=row["profileitementityfilter"] or None,
        relationships=tuple(sorted(relationships)),
        columns=split_list(row["selectedcolumns"]),
        file_columns=split_list(row["selectedfilecolumns"]),
        image_columns=split_list(row["selectedimagecolumns"]),
        sync_interval_minutes=int(row["syncintervalinminutes"] or 15),
    )


def item_values(item: ItemDraft) -> dict[str, Any]:
    """The item row's columns for a draft item (the profile lookup aside)."""
    return {
        "selectedentitytypecode": item.table,
        "recorddistributioncriteria": int(item.distribution),
        "recordsownedbyme": item.owned_by_me,
        "recordsownedbymyteam": item.owned_by_my_teams,
        "recordsownedbymybusinessunit": item.owned_by_my_business_unit,
        "profileitementityfilter": item.custom_filter,
        "syncintervalinminutes": item.sync_interval_minutes,
        "selectedcolumns": join_list(item.columns),
        "selectedfilecolumns": join_list(item.file_columns),
        "selectedimagecolumns": join_list(item.image_columns),
    }


def load_items(
    conn: sa.Connection, store: Tables, profile_id: RecordId
) -> list[tuple[Row, list[Row]]]:
    """The item rows of a profile with their association rows, by table name."""
    it, assoc = store.sql_table(ITEM), store.sql_table(ASSOCIATION)
    items = [
        dict(r)
        for r in conn.execute(
            sa.select(it)
            .where(it.c.regardingobjectid == profile_id)
            .order_by(it.c.selectedentitytypecode, it.c.mobileofflineprofileitemid)
        ).mappings()
    ]
    links: dict[RecordId, list[Row]] = {i["mobileofflineprofileitemid"]: [] for i in items}
    if items:
        for r in conn.execute(
            sa.select(assoc)
            .where(assoc.c.mobileofflineprofileitemid.in_(list(links)))
            .order_by(assoc.c.selectedrelationshipsschema)
        ).mappings():
            links[r["mobileofflineprofileitemid"]].append(dict(r))
    return [(i, links[i["mobileofflineprofileitemid"]]) for i in items]


def load_profile_row(conn: sa.Connection, store: Tables, profile_id: RecordId) -> Row:
    sql = store.sql_table(PROFILE)
    row = conn.execute(sa.select(sql).where(sql.c.mobileofflineprofileid == profile_id)).first()
    if row is None:
        raise RecordNotFound(PROFILE, profile_id)
    return dict(row._mapping)


def load_draft(conn: sa.Connection, store: Tables, profile_id: RecordId) -> ProfileDraft:
    """The draft of a profile as stored (read as the platform: callers authorize first)."""
    row = load_profile_row(conn, store, profile_id)
    items = tuple(
        item_from_row(item, (a["selectedrelationshipsschema"] for a in links))
        for item, links in load_items(conn, store, profile_id)
    )
    return ProfileDraft(name=row["name"], description=row["description"] or "", items=items)


def profile_id_by_name(conn: sa.Connection, store: Tables, name: str) -> RecordId:
    sql = store.sql_table(PROFILE)
    ids = list(
        conn.execute(
            sa.select(sql.c.mobileofflineprofileid).where(
                sa.func.lower(sql.c.name) == name.strip().lower()
            )
        ).scalars()
    )
    if not ids:
        raise NotFound(f"no offline profile named {name!r}")
    if len(ids) > 1:
        raise BadRequest(f"{len(ids)} profiles are named {name!r}; use an id")
    found: RecordId = ids[0]
    return found


def find_profile(conn: sa.Connection, store: Tables, ref: RecordId | str) -> RecordId:
    """A profile by id or by name."""
    if isinstance(ref, uuid.UUID):
        return ref
    try:
        return as_uuid(ref)
    except ValueError:
        return profile_id_by_name(conn, store, ref)


def write_draft(
    records: Records,
    conn: sa.Connection,
    draft: ProfileDraft,
    *,
    profile_id: RecordId | None = None,
    caller: SecurityContext = SYSTEM,
) -> RecordId:
    """Make the stored draft of ``profile_id`` equal ``draft`` (creating the profile when it
    does not exist), changing only what differs. Items are removed first and relationships
    added last, so every intermediate state passes the save rules the final one passes."""
    store = records.store
    sql = store.sql_table(PROFILE)
    exists = profile_id is not None and (
        conn.execute(
            sa.select(sql.c.mobileofflineprofileid).where(
                sql.c.mobileofflineprofileid == profile_id
            )
        ).first()
        is not None
    )
    head: dict[str, Any] = {"name": draft.name, "description": draft.description or None}
    if not exists:
        new = {**head, **({"mobileofflineprofileid": profile_id} if profile_id else {})}
        profile_id = records.create(PROFILE, new, caller=caller, conn=conn)
    else:
        assert profile_id is not None
        current = load_profile_row(conn, store, profile_id)
        changed = {k: v for k, v in head.items() if current[k] != v}
        if changed:
            records.update(PROFILE, profile_id, changed, caller=caller, conn=conn)
    wanted = {i.table: i for i in draft.items}
    existing = {
        item["selectedentitytypecode"]: (item, links)
        for item, links in load_items(conn, store, profile_id)
    }
    # 1. relationships no longer wanted, 2. items no longer wanted
    for table, (_, links) in existing.items():
        keep = set(wanted[table].relationships) if table in wanted else set()
        for link in links:
            if link["selectedrelationshipsschema"] not in keep:
                records.delete(ASSOCIATION, link[f"{ASSOCIATION}id"], caller=caller, conn=conn)
    for table, (old, _) in existing.items():
        if table not in wanted:
            records.delete(ITEM, old[f"{ITEM}id"], caller=caller, conn=conn)
    # 3. items changed or new, 4. relationships new
    item_ids: dict[str, RecordId] = {}
    for table, want in wanted.items():
        values = item_values(want)
        if table in existing:
            row = existing[table][0]
            changed = {k: v for k, v in values.items() if row[k] != v}
            changed.pop("selectedentitytypecode", None)
            if changed:
                records.update(ITEM, row[f"{ITEM}id"], changed, caller=caller, conn=conn)
            item_ids[table] = row[f"{ITEM}id"]
        else:
            item_ids[table] = records.create(
                ITEM, {**values, "regardingobjectid": profile_id}, caller=caller, conn=conn
            )
    for table, want in wanted.items():
        have = {link["selectedrelationshipsschema"] for link in existing.get(table, ({}, []))[1]}
        for name in want.relationships:
            if name not in have:
                records.create(
                    ASSOCIATION,
                    {
                        "mobileofflineprofileitemid": item_ids[table],
                        "selectedrelationshipsschema": name,
                    },
                    caller=caller,
                    conn=conn,
                )
    return profile_id


def check(draft: ProfileDraft, store: Store, *, publishing: bool = False) -> None:
    """Raise :class:`ProfileInvalid` listing every problem of ``draft``."""
    found = problems(draft, store.schema, publishing=publishing)
    if found:
        messages = tuple(p.message for p in found)
        text = (
            messages[0]
            if len(messages) == 1
            else f"{len(messages)} problems: " + "; ".join(messages)
        )
        raise ProfileInvalid(text, messages)


def publish(
    records: Records,
    profile_id: RecordId | str,
    *,
    caller: SecurityContext = SYSTEM,
    conn: sa.Connection | None = None,
) -> PublishedProfile:
    """Validate the draft and freeze it as the next published version (1, 2, …).

    The caller needs Write on the profile. Nothing changes when the draft is invalid."""
    pid = as_id(profile_id)
    store = records.store

    def work(c: sa.Connection) -> PublishedProfile:
        records.retrieve(PROFILE, pid, columns=["name"], caller=caller, conn=c)
        now = utcnow()
        with publishing():
            # the update takes the row lock first, so concurrent publishes queue up
            records.update(
                PROFILE,
                pid,
                {"isvalidated": True, "publishedon": now, "componentstate": PUBLISHED},
                caller=caller,
                conn=c,
            )
        draft = load_draft(c, store, pid)
        check(draft, store, publishing=True)
        version = (
            int(
                c.execute(
                    sa.select(
                        sa.func.coalesce(sa.func.max(fs_published_profile.c.version), 0)
                    ).where(fs_published_profile.c.profileid == pid)
                ).scalar_one()
            )
            + 1
        )
        published = snapshot(draft, store.schema, pid, version, now)
        c.execute(
            fs_published_profile.insert().values(
                profileid=pid,
                version=version,
                publishedon=now,
                publishedby=caller.user_id,
                snapshot=published.to_json(),
            )
        )
        with publishing():
            records.update(PROFILE, pid, {"publishedversion": version}, caller=caller, conn=c)
        return published

    return work(conn) if conn is not None else store.transact(work)


# A published version never changes: its parsed snapshot is kept (by id and version) so that
# each sync request reads one small row and parses nothing.
_PUBLISHED: dict[tuple[uuid.UUID, int], PublishedProfile] = {}
_PUBLISHED_LOCK = threading.Lock()
_PUBLISHED_MAX = 256


def published_profile(
    source: Store | sa.Connection, profile_id: RecordId | str, version: int | None = None
) -> PublishedProfile | None:
    """The latest published version of a profile (or ``version``), ``None`` if unpublished."""
    pid = as_id(profile_id)
    where = [fs_published_profile.c.profileid == pid]
    if version is not None:
        where.append(fs_published_profile.c.version == version)
    latest = (
        sa.select(fs_published_profile.c.version)
        .where(*where)
        .order_by(fs_published_profile.c.version.desc())
        .limit(1)
    )

    def read(conn: sa.Connection) -> PublishedProfile | None:
        found = conn.execute(latest).scalar()
        if found is None:
            return None
        key = (pid, int(found))
        with _PUBLISHED_LOCK:
            kept = _PUBLISHED.get(key)
        if kept is not None:
            return kept
        data = conn.execute(
            sa.select(fs_published_profile.c.snapshot).where(
                fs_published_profile.c.profileid == pid,
                fs_published_profile.c.version == found,
            )
        ).scalar()
        if data is None:
            return None
        parsed = PublishedProfile.from_json(data)
        if parsed.version == found:
            with _PUBLISHED_LOCK:
                if len(_PUBLISHED) >= _PUBLISHED_MAX:
                    _PUBLISHED.pop(next(iter(_PUBLISHED)))
                _PUBLISHED[key] = parsed
        return parsed

    if isinstance(source, Store):
        with source.read() as conn:
            return read(conn)
    return read(source)
