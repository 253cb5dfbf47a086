"""The download side of sync: one page of one table's changes for one device.

Two phases per table, both driven by the cursor (:mod:`fieldsync.sync.cursor`):

- **snapshot**: the whole scope, streamed in primary-key order (keyset paging, so no page
  needs the scope in memory and a broken stream resumes after the last key it committed).
  The first page of a snapshot says ``rescope``: the device marks every row it receives and,
  when the page that says ``complete`` arrives, drops the rows of that table it did not
  receive. Initial sync is a snapshot onto an empty table.
- **delta**: the changes after the cursor's version, read from the change log for the
  tables that can move this table's rows in or out (the table itself, record shares, and the
  tables its relationships reach). The changed rows, and the rows related to them through the
  profile's relationships, are the *candidates*; one query decides which candidates are in
  scope now. Those travel as upserts, the others as removes (a device drops a remove for a
  row it does not hold). Cost: O(changes + their related rows), nothing in the scope's size.

- **diff** (``diff``; ``diff-in``, then ``diff-out``): the profile was republished and the
  table's filter changed (its item hash), nothing else: the rows in the new scope but not the
  old one stream as upserts, and the ids in the old scope but not the new one as removes (both
  computed now, in primary-key order, as the user; in one pass over the table, a row's two
  memberships read side by side, when both filters are predicates of the row alone, else in
  two phases), and the delta resumes from the cursor's version under the new version. The
  rows staying are not sent again; a row that changed since the cursor is a candidate of that
  delta, so what the device held is corrected either way. Cost: O(rows moving), plus one pass
  over the table (or the two scope queries).

A change to the user's security context (roles, teams, business unit, manager hierarchy), a
republish that the diff cannot answer (another column set, a filter that reads the clock, an
old version this server cannot rebuild) or a change to the item of a table whose cursor is not
in delta re-scopes the table; so does a cursor older than the pruned change log, and, on every
sync, a filter that reads the clock.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from fieldsync.query.ast import And, ColumnCompare, Condition, Node, Op, Query, is_in
from fieldsync.query.evaluate import matches
from fieldsync.records.service import Records
from fieldsync.schema.model import ColumnType
from fieldsync.security.model import SecurityContext
from fieldsync.security.predicate import readable
from fieldsync.store.changes import Change, read_changes, watermark
from fieldsync.store.sqltypes import UTCDateTime
from fieldsync.sync.cursor import BadCursor, Cursor
from fieldsync.sync.protocol import SQLITE_PAIR_TEXT, DownloadPage, inventory_checksum_texts
from fieldsync.sync.scope import SCOPE_COLUMNS, SHARE_TABLE, Edge, ScopePlan, TablePlan, walk

CHUNK = 500  # ids per IN list
PROPAGATING = frozenset({"create", "delete", "assign", "share", "associate", "disassociate"})


@dataclass
class TablePage:
    table: str
    columns: tuple[str, ...]
    upserts: list[list[Any]] = field(default_factory=list)
    removes: list[str] = field(default_factory=list)
    cursor: str = ""
    rescope: bool = False  # a re-scope starts with this page: mark what arrives from here
    complete: bool = False  # the re-scope ends with this page: drop every unmarked row
    more: bool = False
    after: int | None = None  # a delta page: the version the device had (not on the wire)
    follows: bool = False  # the page ended a phase and the next one can follow at once

    def merged(self, later: TablePage, pk: int) -> TablePage:
        """This page and the ``later`` one of the same table as one page: what a device
        holds after applying it is what it would hold after applying the two in turn. An id
        in both keeps only the later page's word, so the page holds each id once (a device
        may apply a page's upserts and removes in either order)."""
        later_ids = {str(row[pk]) for row in later.upserts}
        later_ids.update(later.removes)
        afters = [a for a in (self.after, later.after) if a is not None]
        return replace(
            later,
            upserts=[r for r in self.upserts if str(r[pk]) not in later_ids] + later.upserts,
            removes=[i for i in self.removes if i not in later_ids] + later.removes,
            rescope=self.rescope,
            complete=self.complete or later.complete,
            after=min(afters) if afters else None,
        )

    def to_json(self) -> DownloadPage:
        return {
            "table": self.table,
            "columns": list(self.columns),
            "upserts": self.upserts,
            "removes": self.removes,
            "cursor": self.cursor,
            "rescope": self.rescope,
            "complete": self.complete,
            "more": self.more,
        }


def wire(value: Any) -> Any:
    """A stored value as it travels (orjson writes ids and dates itself)."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    return value


ID_TYPES = (ColumnType.LOOKUP, ColumnType.UNIQUEIDENTIFIER, ColumnType.FILE, ColumnType.IMAGE)


def _dashed(value: Any) -> Any:
    """An id as SQLite stores it (32 hex digits) in its dashed form; anything else as is."""
    if type(value) is str and len(value) == 32:
        return f"{value[:8]}-{value[8:12]}-{value[12:16]}-{value[16:20]}-{value[20:]}"
    return value


def _iso_moment(value: Any) -> Any:
    """A time as SQLite stores it ("YYYY-MM-DD HH:MM:SS.ffffff", UTC) in the form orjson
    gives a UTC datetime ("YYYY-MM-DDTHH:MM:SS[.ffffff]+00:00"); anything else as is."""
    if type(value) is str and len(value) == 26 and value[10] == " " and value[19] == ".":
        if value.endswith("000000"):
            return f"{value[:10]}T{value[11:19]}+00:00"
        return f"{value[:10]}T{value[11:]}+00:00"
    if type(value) is str:  # another stored form: parse it as the column type would
        moment = dt.datetime.fromisoformat(value)
        return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment
    return value


def _converters(tp: TablePlan, text: bool) -> list[tuple[int, Callable[[Any], Any]]]:
    """The columns whose values change on the way to the wire, with what changes them;
    ``text``: ids and times arrive as SQLite stores them (else as UUID and datetime objects,
    which orjson writes itself)."""
    out: list[tuple[int, Callable[[Any], Any]]] = []
    for i, name in enumerate(tp.columns):
        col = tp.table.column(name)
        kind = None if col is None else col.type
        if kind in (ColumnType.DECIMAL, ColumnType.MONEY, ColumnType.MULTICHOICE):
            out.append((i, wire))
        elif text and (name == tp.table.primary_id or kind in ID_TYPES):
            out.append((i, _dashed))
        elif text and kind is ColumnType.DATETIME:
            out.append((i, _iso_moment))
    return out


def _wire_rows(tp: TablePlan, result: Iterable[Any], text: bool = True) -> list[list[Any]]:
    """Rows as they travel: orjson writes ids, dates and numbers itself; decimals go as
    strings and multi-choice values as lists; on SQLite, ids and times arrive as the text
    SQLite stores (see :meth:`Downloader._statement`) and leave in their wire form. Works a
    column at a time: one ``map`` per column that changes, the rest untouched."""
    rows = result if isinstance(result, list) else list(result)
    if not rows:
        return []
    convert = _converters(tp, text)
    if not convert:
        return [list(r) for r in rows]
    columns = list(zip(*rows, strict=True))
    for i, fn in convert:
        columns[i] = tuple(map(fn, columns[i]))
    return list(map(list, zip(*columns, strict=True)))


class Downloader:
    """Pages of one device's download, for one user on one published profile."""

    def __init__(
        self,
        records: Records,
        plan: ScopePlan,
        ctx: SecurityContext,
        *,
        device: str,
        fingerprint: str,
        secret: bytes,
        now: dt.datetime | None = None,
        registration: str = "",
        earlier: Callable[[int], ScopePlan | None] | None = None,
        heals: Mapping[str, int] | None = None,
    ) -> None:
        self.records = records
        self.store = records.store
        self.plan = plan
        self.earlier = earlier  # an earlier published version's plan, when it can be rebuilt
        self.ctx = ctx
        self.device = device
        self.fingerprint = fingerprint
        self.secret = secret
        self.now = now
        self.registration = registration
        self._text = self.store.dialect == "sqlite"  # see _statement
        self.heals = dict(heals or {})  # targeted re-scopes per table (inventory mismatches)
        self._mark: int | None = None  # the change log's watermark, once read

    # -- public ---------------------------------------------------------------------------

    def page(self, conn: sa.Connection, table: str, token: str | None, limit: int) -> TablePage:
        tp = self.plan.plan(table)
        cursor = None if token is None else self.decode(table, token)
        if cursor is not None and self._stale(conn, tp, cursor):
            same = self._same_rows(tp, cursor)
            if same is not None:
                # only the travelling columns changed: the delta goes on, and the device
                # backfills the columns it gained (/sync/v1/backfill)
                cursor = same
            else:
                diff = self._diff_start(conn, tp, cursor)
                if diff is not None:
                    return self._diff(conn, tp, diff, limit)
        if cursor is None or self._stale(conn, tp, cursor):
            cursor = Cursor(
                table=table,
                user=str(self.ctx.user_id),
                device=self.device,
                phase="snapshot",
                fingerprint=self.fingerprint,
                item=tp.item_hash,
                head=self.store.current_version(conn),
                registration=self.registration,
                profile=str(self.plan.profile.profile_id),
                pversion=self.plan.profile.version,
                heal=self.heals.get(table, 0),
            )
            page = self._snapshot(conn, tp, cursor, limit)
            page.rescope = True
            return page
        if cursor.phase == "snapshot":
            return self._snapshot(conn, tp, cursor, limit)
        if cursor.phase in ("diff", "diff-in", "diff-out"):
            return self._diff(conn, tp, cursor, limit)
        return self._delta(conn, tp, cursor, limit)

    def decode(self, table: str, token: object) -> Cursor:
        """A cursor this server issued for this user, device and table (a forged one is
        refused and written to the audit log)."""
        try:
            cursor = Cursor.decode(token, self.secret)
            if (
                cursor.table != table
                or cursor.user != str(self.ctx.user_id)
                or cursor.device != self.device
            ):
                raise BadCursor(f"the download cursor for {table!r} belongs to another sync")
        except BadCursor as exc:
            self.store.audit.cursor_forged(self.ctx.user_id, self.device, exc.message)
            raise
        return cursor

    def settled(self, conn: sa.Connection, table: str, token: object) -> Cursor | None:
        """The table's cursor when the device must hold exactly the table's scope of now: a
        delta cursor that is not stale, with no change since it that could move a row in or
        out. ``None`` otherwise (the device is behind: there is nothing to compare yet)."""
        tp = self.plan.plan(table)
        if token is None:
            return None
        cursor = self.decode(table, token)
        if cursor.phase != "delta" or self._stale(conn, tp, cursor):
            return None
        # every committed change counts here, above the horizon too: the scope counted
        # against the device's rows is the scope of now
        if read_changes(conn, cursor.version, tables=tp.watched, limit=1, bounded=False).changes:
            return None
        return cursor

    def inventory(self, conn: sa.Connection, table: str) -> tuple[int, str]:
        """The row count and checksum (:mod:`fieldsync.sync.inventory`) of the table's scope,
        from the same statement the snapshot streams, counted in the database."""
        from fieldsync.sync.inventory import format_checksum, pg_hash_sum

        tp = self.plan.plan(table)
        pk = tp.table.primary_id
        query = Query(table=table, columns=(pk, "versionnumber"), filter=self.plan.node(table))
        stmt = self.records.query_statement(query, caller=self.ctx, now=self.now, conn=conn)
        stmt = stmt.order_by(None)
        if self.store.dialect == "postgresql":
            sub = stmt.subquery()
            count, total = conn.execute(
                sa.select(sa.func.count(), pg_hash_sum(sub.c[pk], sub.c.versionnumber))
            ).one()
            return int(count), format_checksum(int(total))
        # SQLite: ids as stored (32 hex digits), the pair's text made by SQLite, one hash
        # per row left to Python (no UUID objects made only to print them)
        sub = stmt.subquery("pairs")
        text: sa.ColumnClause[str] = sa.literal_column(
            SQLITE_PAIR_TEXT.format(id=f'pairs."{pk}"', version='pairs."versionnumber"')
        )
        texts = conn.execute(sa.select(text).select_from(sub)).scalars().all()
        return inventory_checksum_texts(texts)

    # -- phases ---------------------------------------------------------------------------

    def _stale(self, conn: sa.Connection, tp: TablePlan, cursor: Cursor) -> bool:
        if (
            cursor.fingerprint != self.fingerprint
            or cursor.item != tp.item_hash
            or cursor.registration != self.registration
            or cursor.heal != self.heals.get(tp.table.name, 0)
        ):
            return True
        if cursor.phase == "delta":
            return tp.timed or cursor.version < self._watermark(conn)
        return False

    def _watermark(self, conn: sa.Connection) -> int:
        """The change log's pruning watermark, read once per request (one transaction: a
        prune that commits meanwhile makes the delta's read answer 410, as before)."""
        if self._mark is None:
            self._mark = watermark(conn)
        return self._mark

    def _rescope(self, conn: sa.Connection, tp: TablePlan, cursor: Cursor, limit: int) -> TablePage:
        """Stream the table's whole scope again from this cursor; the device marks what
        arrives and drops the rest when the stream completes."""
        restart = replace(
            cursor,
            phase="snapshot",
            head=self.store.current_version(conn),
            key=None,
            version=0,
            old=0,
        )
        page = self._snapshot(conn, tp, restart, limit)
        page.rescope = True
        return page

    def _same_rows(self, tp: TablePlan, cursor: Cursor) -> Cursor | None:
        """A delta cursor for the republished profile when the republish changed only the
        table's travelling columns (the same scope: the same filter node, its relationships'
        included); ``None`` otherwise."""
        profile = self.plan.profile
        if (
            cursor.phase != "delta"
            or self.earlier is None
            or cursor.fingerprint != self.fingerprint
            or cursor.registration != self.registration
            or cursor.heal != self.heals.get(tp.table.name, 0)
            or cursor.item == tp.item_hash
            or cursor.profile != str(profile.profile_id)
            or not 0 < cursor.pversion != profile.version
            or tp.timed
        ):
            return None
        before = self.earlier(cursor.pversion)
        old = before.tables.get(tp.table.name) if before is not None else None
        if (
            before is None
            or old is None
            or old.item_hash != cursor.item
            or old.columns == tp.columns
            or before.node(tp.table.name) != self.plan.node(tp.table.name)
        ):
            return None
        return replace(cursor, item=tp.item_hash, pversion=profile.version)

    def backfill(
        self, conn: sa.Connection, table: str, columns: Sequence[str], after: str | None, limit: int
    ) -> dict[str, Any]:
        """Some travelling columns of the rows in the table's scope, in primary-key order
        after ``after``: what a device that gained those columns fills them with (cost: rows
        times columns, not whole rows)."""
        tp = self.plan.plan(table)
        pk = tp.table.primary_id
        narrow = replace(tp, columns=(pk, *columns))
        start: Node = (
            Condition(pk, Op.NOT_NULL) if after is None else Condition(pk, Op.GT, uuid.UUID(after))
        )
        node = And((self.plan.node(table), start))
        rows = _wire_rows(
            narrow, conn.execute(self._statement(conn, narrow, node, limit + 1)), self._text
        )
        more = len(rows) > limit
        rows = rows[:limit]
        return {
            "table": table,
            "columns": list(narrow.columns),
            "rows": rows,
            "after": str(rows[-1][0]) if rows else after,
            "more": more,
        }

    def _diff_start(self, conn: sa.Connection, tp: TablePlan, cursor: Cursor) -> Cursor | None:
        """A diff cursor when only the table's filter changed by a republish and the earlier
        version can be rebuilt; ``None`` means re-scope."""
        profile = self.plan.profile
        if (
            cursor.phase != "delta"
            or self.earlier is None
            or cursor.fingerprint != self.fingerprint
            or cursor.registration != self.registration
            or cursor.heal != self.heals.get(tp.table.name, 0)
            or cursor.item == tp.item_hash
            or cursor.profile != str(profile.profile_id)
            or not 0 < cursor.pversion != profile.version
            or tp.timed
            or cursor.version < self._watermark(conn)
        ):
            return None
        before = self.earlier(cursor.pversion)
        old = before.tables.get(tp.table.name) if before is not None else None
        if old is None or old.item_hash != cursor.item or old.columns != tp.columns or old.timed:
            return None
        return replace(
            cursor,
            phase="diff",
            item=tp.item_hash,
            key=None,
            old=cursor.pversion,
            pversion=profile.version,
        )

    def _diff(self, conn: sa.Connection, tp: TablePlan, cursor: Cursor, limit: int) -> TablePage:
        before = self.earlier(cursor.old) if self.earlier is not None else None
        if before is None or tp.table.name not in before.tables:
            # the earlier version is gone (another process, a restart): re-scope instead
            return self._rescope(conn, tp, cursor, limit)
        if cursor.phase == "diff":
            both = self._diff_both(conn, tp, before, cursor, limit)
            if both is not None:
                return both
            # the filters cannot be read side by side: rows entering after the key, then
            # every id leaving (a remove sent twice is harmless)
            cursor = replace(cursor, phase="diff-in")
        pk = tp.table.primary_id
        after: Node = (
            Condition(pk, Op.NOT_NULL)
            if cursor.key is None
            else Condition(pk, Op.GT, uuid.UUID(cursor.key))
        )
        page = TablePage(tp.table.name, tp.columns)
        if cursor.phase == "diff-in":
            # rows of the new scope that the old one did not hold
            stmt = self._statement(conn, tp, And((self.plan.node(tp.table.name), after)), limit + 1)
            stmt = stmt.where(stmt.selected_columns[pk].not_in(self._ids(conn, before, tp)))
            rows = _wire_rows(tp, conn.execute(stmt).fetchmany(limit + 1), self._text)
            index = tp.columns.index(pk)
            if len(rows) > limit:
                page.upserts = rows[:limit]
                nxt = replace(cursor, key=str(rows[limit - 1][index]))
            else:
                page.upserts = rows
                nxt = replace(cursor, phase="diff-out", key=None)
                page.follows = True
        else:
            # ids of the old scope that the new one does not hold
            old_ids = self._ids(conn, before, tp, after).subquery()
            stmt = (
                sa.select(old_ids.c[0])
                .where(old_ids.c[0].not_in(self._ids(conn, self.plan, tp)))
                .order_by(old_ids.c[0])
                .limit(limit + 1)
            )
            gone = [str(r[0]) for r in conn.execute(stmt)]
            if len(gone) > limit:
                page.removes = gone[:limit]
                nxt = replace(cursor, key=page.removes[-1])
            else:
                page.removes = gone
                nxt = replace(cursor, phase="delta", key=None, old=0)
                page.follows = True
        page.cursor = nxt.encode(self.secret)
        page.more = True  # then the changes since the cursor's version, under the new version
        page.after = cursor.version
        return page

    def _diff_both(
        self, conn: sa.Connection, tp: TablePlan, before: ScopePlan, cursor: Cursor, limit: int
    ) -> TablePage | None:
        """The rows entering the scope and the ids leaving it, after the cursor's key, in one
        pass over the table: each row's membership of the old and of the new scope is its
        filter read as a predicate of the row (the same statement as the user, guard and all,
        that the scope queries run), and a row travels when the two differ (a filter that is
        null counts as false). ``None`` when a filter needs more than the table's own row (a
        join of its own): then the two phases run apart."""
        table = self.store.sql_table(tp.table.name)
        wheres = []
        for plan in (self.plan, before):
            ids = self._ids(conn, plan, tp)
            froms = ids.get_final_froms()
            if len(froms) != 1 or froms[0] is not table or ids.whereclause is None:
                return None
            wheres.append(ids.whereclause)
        now, was = wheres
        pk = tp.table.primary_id
        after: Node = (
            Condition(pk, Op.NOT_NULL)
            if cursor.key is None
            else Condition(pk, Op.GT, uuid.UUID(cursor.key))
        )
        stmt = self._statement(conn, tp, after, limit + 1)
        entering = sa.and_(now, sa.not_(sa.func.coalesce(was, sa.false())))
        leaving = sa.and_(was, sa.not_(sa.func.coalesce(now, sa.false())))
        stmt = stmt.where(sa.or_(entering, leaving)).add_columns(
            sa.case((entering, 1), else_=0).label("fs_entering")
        )
        found = conn.execute(stmt).fetchall()
        more = len(found) > limit
        found = found[:limit]
        flags = [r[-1] for r in found]
        rows = _wire_rows(tp, [tuple(r)[:-1] for r in found], self._text)
        index = tp.columns.index(pk)
        page = TablePage(tp.table.name, tp.columns)
        page.upserts = [row for row, flag in zip(rows, flags, strict=True) if flag]
        page.removes = [str(row[index]) for row, flag in zip(rows, flags, strict=True) if not flag]
        if more:
            nxt = replace(cursor, key=str(rows[-1][index]))
        else:
            nxt = replace(cursor, phase="delta", key=None, old=0)
            page.follows = True
        page.cursor = nxt.encode(self.secret)
        page.more = True  # then the changes since the cursor's version, under the new version
        page.after = cursor.version
        return page

    def _ids(
        self, conn: sa.Connection, plan: ScopePlan, tp: TablePlan, extra: Node | None = None
    ) -> sa.Select[Any]:
        """The ids in ``plan``'s scope of the table, as the user (for IN and NOT IN)."""
        pk = tp.table.primary_id
        node = plan.node(tp.table.name)
        query = Query(
            table=tp.table.name,
            columns=(pk,),
            filter=node if extra is None else And((node, extra)),
        )
        stmt = self.records.query_statement(query, caller=self.ctx, now=self.now, conn=conn)
        return stmt.order_by(None).correlate(None)

    def _statement(
        self, conn: sa.Connection, tp: TablePlan, node: Node, top: int | None
    ) -> sa.Select[Any]:
        query = Query(table=tp.table.name, columns=tp.columns, filter=node, top=top)
        stmt = self.records.query_statement(query, caller=self.ctx, now=self.now, conn=conn)
        if self.store.dialect == "sqlite":
            # ids and times come back as SQLite stores them (32 hex digits, UTC text) and
            # take their wire form in _wire_rows: much cheaper than making UUID and datetime
            # objects only to print them again
            stmt = stmt.with_only_columns(
                *(
                    sa.type_coerce(c, sa.String).label(c.name)
                    if isinstance(c.type, (sa.Uuid, UTCDateTime))
                    else c
                    for c in stmt.selected_columns
                ),
                maintain_column_froms=True,
            )
        return stmt

    def _select(self, conn: sa.Connection, tp: TablePlan, extra: Node, top: int | None) -> Any:
        node = And((self.plan.node(tp.table.name), extra))
        return conn.execute(self._statement(conn, tp, node, top))

    def _snapshot(
        self, conn: sa.Connection, tp: TablePlan, cursor: Cursor, limit: int
    ) -> TablePage:
        pk = tp.table.primary_id
        after: Node = (
            Condition(pk, Op.NOT_NULL)
            if cursor.key is None
            else Condition(pk, Op.GT, uuid.UUID(cursor.key))
        )
        result = self._select(conn, tp, after, limit + 1)
        rows = _wire_rows(tp, result.fetchmany(limit + 1), self._text)
        page = TablePage(tp.table.name, tp.columns)
        index = tp.columns.index(pk)
        if len(rows) > limit:
            rows = rows[:limit]
            nxt = replace(cursor, key=str(rows[-1][index]))
        else:
            nxt = replace(cursor, phase="delta", version=cursor.head, key=None, head=0)
            page.complete = True
            page.follows = True
        page.upserts = rows
        page.cursor = nxt.encode(self.secret)
        page.more = True  # after a snapshot's last page, the changes made while it streamed
        return page

    def _delta(self, conn: sa.Connection, tp: TablePlan, cursor: Cursor, limit: int) -> TablePage:
        changes = read_changes(conn, cursor.version, tables=tp.watched, limit=limit)
        linked = set(tp.linked)
        for dep in tp.depends_on:
            linked |= self.plan.tables[dep].linked
        if any(c.table in linked for c in changes.changes):
            # a custom filter reads this table through a link: re-scope rather than trace
            return self._rescope(conn, tp, cursor, limit)
        page = TablePage(tp.table.name, tp.columns, after=cursor.version)
        tracer = _Candidates(self, conn, changes.changes)
        candidates = tracer.affected(tp.table.name)
        pk = tp.table.primary_id
        index = tp.columns.index(pk)
        found: set[uuid.UUID] = set()
        ordered = sorted(candidates)
        for start in range(0, len(ordered), CHUNK):
            chunk = ordered[start : start + CHUNK]
            rows = self._select(conn, tp, is_in(pk, chunk), None)
            for row in _wire_rows(tp, rows, self._text):
                found.add(uuid.UUID(str(row[index])))
                page.upserts.append(row)
        gone = [i for i in ordered if i not in found]
        page.removes = [str(i) for i in self._held(conn, tp, gone, tracer)]
        page.cursor = replace(cursor, version=changes.cursor).encode(self.secret)
        page.more = changes.more
        return page

    def _held(
        self, conn: sa.Connection, tp: TablePlan, gone: list[uuid.UUID], tracer: _Candidates
    ) -> list[uuid.UUID]:
        """Of the candidates out of scope, the ones the device may hold: rows the user may
        read now, or could read before their change (an old owner, a share to the user or
        their teams). Ids of rows the user never could read do not leave the server."""
        if not gone:
            return []
        pk = tp.table.primary_id
        readable_now: set[uuid.UUID] = set()
        for start in range(0, len(gone), CHUNK):
            chunk = gone[start : start + CHUNK]
            query = Query(table=tp.table.name, columns=(pk,), filter=is_in(pk, chunk))
            stmt = self.records.query_statement(query, caller=self.ctx, now=self.now, conn=conn)
            readable_now.update(conn.execute(stmt).scalars())
        before: set[uuid.UUID] = set()
        rule = readable(self.ctx, tp.table)
        principals = {str(p) for p in self.ctx.principals}
        for change in tracer.by_table.get(tp.table.name, ()):
            if change.record_id in readable_now or change.record_id not in gone:
                continue
            if change.operation == "share":
                if str((change.old or {}).get("principalid")) in principals:
                    before.add(change.record_id)
            elif change.old and matches(rule, _typed(change.old), shared=lambda *_: False):
                before.add(change.record_id)
        return [i for i in gone if i in readable_now or i in before]


def _typed(values: Mapping[str, Any]) -> dict[str, Any]:
    """Old values from the change log (JSON) with ids as UUIDs again, for the evaluator."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, Mapping) and "id" in value:
            value = value["id"]
        if isinstance(value, str) and len(value) == 36:
            with contextlib.suppress(ValueError):
                value = uuid.UUID(value)
        out[key] = value
    return out


class _Candidates:
    """Rows of a table whose scope membership may have changed with a batch of changes."""

    def __init__(self, dl: Downloader, conn: sa.Connection, changes: Sequence[Change]):
        self.dl = dl
        self.conn = conn
        self.by_table: dict[str, list[Change]] = defaultdict(list)
        for change in changes:
            self.by_table[change.table].append(change)
        for share in self.by_table.pop(SHARE_TABLE, []):
            target = self._share_target(share)
            if target is not None:
                self.by_table[target[0]].append(
                    replace(
                        share,
                        table=target[0],
                        record_id=target[1],
                        operation="share",
                        old={"principalid": target[2]},
                    )
                )
        self.memo: dict[str, set[uuid.UUID]] = {}

    def _share_target(self, change: Change) -> tuple[str, uuid.UUID, str] | None:
        """The shared row's table and id, and whom it was shared with."""
        if change.old and "objectid" in change.old:
            return (
                str(change.old["objecttypecode"]),
                uuid.UUID(str(change.old["objectid"])),
                str(change.old.get("principalid")),
            )
        sql = self.dl.store.sql_table(SHARE_TABLE)
        row = self.conn.execute(
            sa.select(sql.c.objecttypecode, sql.c.objectid, sql.c.principalid).where(
                sql.c.principalobjectaccessid == change.record_id
            )
        ).first()
        return None if row is None else (row[0], row[1], str(row[2]))

    def affected(self, table: str) -> set[uuid.UUID]:
        """The table's own changed rows, and rows related to changes upstream."""
        if table in self.memo:
            return self.memo[table]
        tp = self.dl.plan.tables[table]
        ids = {c.record_id for c in self.by_table.get(table, ())}
        for edge in tp.edges:
            ids |= self._through(edge)
        self.memo[table] = ids
        return ids

    def _moved(self, table: str) -> tuple[set[uuid.UUID], list[Change]]:
        """Rows of an upstream table whose own membership may have changed."""
        tp = self.dl.plan.tables[table]
        relevant = _relevant_columns(tp)
        direct = [
            c
            for c in self.by_table.get(table, ())
            if c.operation in PROPAGATING or c.changed is None or relevant & set(c.changed)
        ]
        ids = {c.record_id for c in direct}
        for edge in tp.edges:
            ids |= self._through(edge)
        return ids, direct

    def _through(self, edge: Edge) -> set[uuid.UUID]:
        moved, direct = self._moved(edge.other)
        out: set[uuid.UUID] = set()
        store = self.dl.store
        if edge.kind == "lookup":
            sql = store.sql_table(edge.table)
            pk = sql.c[self.dl.plan.tables[edge.table].table.primary_id]
            for chunk in _chunks(moved):
                out.update(
                    self.conn.execute(sa.select(pk).where(sql.c[edge.column].in_(chunk))).scalars()
                )
        elif edge.kind == "reverse":
            sql = store.sql_table(edge.other)
            pk = sql.c[self.dl.plan.tables[edge.other].table.primary_id]
            for chunk in _chunks(moved):
                out.update(
                    v
                    for v in self.conn.execute(
                        sa.select(sql.c[edge.column]).where(pk.in_(chunk))
                    ).scalars()
                    if v is not None
                )
            out.update(_old_values(direct, edge.column))
        else:
            sql = store.sql_table(edge.intersect)
            for chunk in _chunks(moved):
                out.update(
                    self.conn.execute(
                        sa.select(sql.c[edge.column]).where(sql.c[edge.other_column].in_(chunk))
                    ).scalars()
                )
            links = self.by_table.get(edge.intersect, ())
            pk = sql.c[store.schema.table(edge.intersect).primary_id]
            for chunk in _chunks({c.record_id for c in links}):
                out.update(
                    self.conn.execute(sa.select(sql.c[edge.column]).where(pk.in_(chunk))).scalars()
                )
            out.update(_old_values(links, edge.column))
        return out


def _relevant_columns(tp: TablePlan) -> set[str]:
    cols = set(SCOPE_COLUMNS)
    cols.update(c.name for c in tp.table.lookups())
    for n in walk(tp.filter):
        if isinstance(n, (Condition, ColumnCompare)) and n.entity is None:
            cols.add(n.column)
            if isinstance(n, ColumnCompare):
                cols.add(n.other)
    return cols


def _old_values(changes: Iterable[Change], column: str) -> set[uuid.UUID]:
    out: set[uuid.UUID] = set()
    for c in changes:
        value = (c.old or {}).get(column)
        if isinstance(value, Mapping):
            value = value.get("id")
        if value:
            out.add(uuid.UUID(str(value)))
    return out


def _chunks(ids: Iterable[uuid.UUID]) -> Iterable[list[uuid.UUID]]:
    ordered = sorted(ids)
    for start in range(0, len(ordered), CHUNK):
        yield ordered[start : start + CHUNK]
