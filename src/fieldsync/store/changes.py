"""Reading and pruning the change log: what sync's delta download stands on.

A reader asks for the changes after its cursor (a version); it gets them in version order,
a page at a time, and the next cursor. It gets only changes at or below the *horizon*
(:mod:`fieldsync.store.versions`), below which every version is committed or rolled back for
good, so a cursor never passes a version that commits later (on PostgreSQL writers take
versions from a sequence and may commit out of version order).

The log is pruned from the oldest end, keeping a watermark (``fs_meta.changes_retained_after``).
A cursor older than the watermark can no longer be served incrementally: reading from it
raises :class:`ChangesExpired`, and the device must download its scope again (DESIGN.md's
"must-refetch" answer) rather than guess.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from fieldsync.errors import BadRequest, FieldsyncError
from fieldsync.store.catalog import fs_change, fs_meta
from fieldsync.store.versions import horizon
from fieldsync.types import RecordId, Version

WATERMARK = "changes_retained_after"
UNBOUNDED = 2**62  # the upper bound of an unbounded read
MAX_PAGE = 10_000


class ChangesExpired(FieldsyncError):
    """The cursor is older than the oldest change the server still keeps."""

    status = 410
    code = "0x80060401"

    def __init__(self, cursor: Version, watermark: Version) -> None:
        super().__init__(
            f"changes after version {cursor} are no longer kept (the log starts after "
            f"{watermark}); download the data again"
        )
        self.cursor = cursor
        self.watermark = watermark


@dataclass(frozen=True, slots=True)
class Change:
    version: Version
    table: str
    record_id: RecordId
    operation: str
    changed: tuple[str, ...] | None
    old: dict[str, Any] | None
    user_id: RecordId | None
    changed_on: dt.datetime


@dataclass(frozen=True, slots=True)
class ChangePage:
    changes: tuple[Change, ...]
    cursor: Version  # where the next read starts: the last version seen, or the input
    more: bool


_WATERMARK = sa.select(fs_meta.c.value).where(fs_meta.c.key == WATERMARK)  # built once


def watermark(conn: sa.Connection) -> Version:
    value = conn.execute(_WATERMARK).scalar()
    return int(value or 0)


# built once, with parameters: making a statement of the log's columns (and its cache key)
# anew for every read cost more than running it
_CHANGES = (
    sa.select(fs_change)
    .where(
        fs_change.c.version > sa.bindparam("after"),
        fs_change.c.version <= sa.bindparam("upto"),
    )
    .order_by(fs_change.c.version)
    .limit(sa.bindparam("limit"))
)
_CHANGES_OF = (
    sa.select(fs_change)
    .where(
        fs_change.c.version > sa.bindparam("after"),
        fs_change.c.version <= sa.bindparam("upto"),
        fs_change.c.tablename.in_(sa.bindparam("tables", expanding=True)),
    )
    .order_by(fs_change.c.version)
    .limit(sa.bindparam("limit"))
)


def read_changes(
    conn: sa.Connection,
    after: Version,
    *,
    tables: Iterable[str] | None = None,
    limit: int = 1000,
    bounded: bool = True,
) -> ChangePage:
    """The changes after version ``after`` (optionally only of ``tables``), oldest first,
    at most ``limit`` of them, none above the horizon. ``bounded=False`` reads every
    committed change: only for a question the horizon would answer wrongly ("has anything
    changed since?"), never to move a cursor."""
    if isinstance(after, bool) or not isinstance(after, int) or after < 0:
        raise BadRequest("a cursor is a version: a whole number, 0 or more")
    if not 1 <= limit <= MAX_PAGE:
        raise BadRequest(f"a page holds 1 to {MAX_PAGE} changes")
    mark = watermark(conn)
    if after < mark:
        raise ChangesExpired(after, mark)
    upto = UNBOUNDED
    if bounded:
        # its own statement, before the read: the read's snapshot then holds every version
        # at or below it that committed
        upto = horizon(conn)
        if upto <= after:
            return ChangePage((), after, False)
    wanted: Sequence[str] | None = None if tables is None else sorted(set(tables))
    params: dict[str, Any] = {"after": after, "upto": upto, "limit": limit + 1}
    if wanted is None:
        stmt = _CHANGES
    elif not wanted:
        return ChangePage((), after, False)
    else:
        stmt, params["tables"] = _CHANGES_OF, wanted
    rows = conn.execute(stmt, params).all()
    more = len(rows) > limit
    rows = rows[:limit]
    changes = tuple(
        Change(
            version=r.version,
            table=r.tablename,
            record_id=r.recordid,
            operation=r.operation,
            changed=None if r.changed is None else tuple(r.changed),
            old=r.old,
            user_id=r.userid,
            changed_on=r.changedon,
        )
        for r in rows
    )
    cursor = changes[-1].version if changes else after
    return ChangePage(changes, cursor, more)


def prune_changes(conn: sa.Connection, *, before: Version) -> int:
    """Drop the changes at or below version ``before`` (at most up to the horizon: a change
    still in flight is never left below the watermark) and raise the watermark to it.
    Returns how many were dropped. The watermark never goes down."""
    before = min(before, horizon(conn))
    mark = watermark(conn)
    if before <= mark:
        return 0
    removed = conn.execute(fs_change.delete().where(fs_change.c.version <= before)).rowcount
    updated = conn.execute(
        fs_meta.update().where(fs_meta.c.key == WATERMARK).values(value=str(before))
    ).rowcount
    if not updated:
        conn.execute(fs_meta.insert().values(key=WATERMARK, value=str(before)))
    return int(removed or 0)


def prune_older_than(conn: sa.Connection, *, age: dt.timedelta, now: dt.datetime) -> int:
    """Drop the changes made before ``now - age`` (tombstones included)."""
    cutoff = conn.execute(
        sa.select(sa.func.max(fs_change.c.version)).where(fs_change.c.changedon < now - age)
    ).scalar()
    return 0 if cutoff is None else prune_changes(conn, before=int(cutoff))
