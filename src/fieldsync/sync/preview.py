"""What publishing a profile's draft would do, before it is published.

Per user who would hold the profile: rows (and estimated bytes) per table under the draft next
to the published version, how many rows would move onto and off the device, and warnings
against Dataverse's guidance. Everything is a counting query over the same scope SQL the
download runs (:func:`fieldsync.sync.scope.build_plan` and the records service's read guard):
no row is materialised except a small sample per table to estimate row sizes. A table whose
effective filter is unchanged (the same item hash: its item and everything it depends on) is
counted once, and nothing moves there.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass, field
from typing import Any

import orjson
import sqlalchemy as sa

from fieldsync.errors import FieldsyncError
from fieldsync.offline.access import APP, RESTRICTED_MODE, profile_members
from fieldsync.offline.profiles import PROFILE, check, load_draft, published_profile
from fieldsync.offline.snapshot import PublishedProfile
from fieldsync.offline.validation import snapshot
from fieldsync.query.ast import Node, Query
from fieldsync.query.bind import UserBinding
from fieldsync.records.service import Records
from fieldsync.schema.model import ColumnType
from fieldsync.security.context import load_context, user_binding
from fieldsync.security.model import Privilege, SecurityContext
from fieldsync.security.predicate import has_privilege
from fieldsync.store.catalog import fs_file
from fieldsync.sync.scope import ScopePlan, build_plan
from fieldsync.types import RecordId

# Dataverse's guidance for mobile offline (see the product documents)
ROWS_PER_USER = 200_000
BYTES_PER_USER = 1 << 30
ROWS_HARD_LIMIT = 3_000_000
FILE_BYTES_PER_USER = 4 << 30
SAMPLE_USERS = 100  # users previewed when more would hold the profile
SAMPLE_ROWS = 50  # rows read per table to estimate a row's size on the wire


@dataclass
class TablePreview:
    table: str
    rows: int  # under the draft
    published_rows: int | None  # under the published version (None: not in it)
    moving_in: int
    moving_out: int
    bytes: int  # estimated wire size of the rows under the draft
    file_bytes: int  # file and image columns the draft selects
    changed: bool  # the table's effective filter differs from the published version's

    def to_json(self) -> dict[str, Any]:
        return self.__dict__.copy()


@dataclass
class UserPreview:
    user: str
    username: str
    tables: list[TablePreview] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return sum(t.rows for t in self.tables)

    @property
    def bytes(self) -> int:
        return sum(t.bytes for t in self.tables)

    @property
    def file_bytes(self) -> int:
        return sum(t.file_bytes for t in self.tables)

    def to_json(self) -> dict[str, Any]:
        return {
            "user": self.user,
            "username": self.username,
            "rows": self.rows,
            "bytes": self.bytes,
            "file_bytes": self.file_bytes,
            "moving_in": sum(t.moving_in for t in self.tables),
            "moving_out": sum(t.moving_out for t in self.tables),
            "tables": [t.to_json() for t in self.tables],
            "warnings": self.warnings,
        }


@dataclass
class Preview:
    profile: str
    published_version: int | None
    audience: str  # who would hold it: selected users, everyone with the app, …
    holders: int  # how many users would hold it
    users: list[UserPreview]

    @property
    def sampled(self) -> bool:
        return self.holders > len(self.users)

    def to_json(self) -> dict[str, Any]:
        return {
            "profile": self.profile,
            "published_version": self.published_version,
            "audience": self.audience,
            "holders": self.holders,
            "previewed": len(self.users),
            "sampled": self.sampled,
            "warnings": sorted({w for u in self.users for w in u.warnings}),
            "users": [u.to_json() for u in self.users],
        }


def preview_profile(
    records: Records,
    profile_id: RecordId,
    *,
    users: list[RecordId] | None = None,
    sample: int = SAMPLE_USERS,
    now: dt.datetime | None = None,
    seed: int = 0,
) -> Preview:
    """Preview the draft of ``profile_id`` for ``users`` (default: the users who would hold
    it, or a random ``sample`` of them). Refuses an invalid draft with its problems, as
    publishing would."""
    store = records.store
    moment = now or dt.datetime.now(dt.UTC)
    with store.read() as conn:
        draft = load_draft(conn, store, profile_id)
        check(draft, store, publishing=True)
        published = published_profile(conn, profile_id)
        version = (published.version + 1) if published else 1
        proposed = snapshot(draft, store.schema, profile_id, version, moment)
        contexts: dict[Any, SecurityContext] = {}
        audience, holders = _holders(records, conn, profile_id, contexts)
        chosen = users if users is not None else holders
        total = len(chosen)
        if users is None and len(chosen) > sample:
            chosen = random.Random(seed).sample(sorted(chosen, key=str), sample)
        counter = _Counter(records, conn, proposed, published, moment)
        previews = [
            counter.user(contexts.get(uid) or load_context(store, uid, conn)) for uid in chosen
        ]
    return Preview(
        profile=draft.name,
        published_version=published.version if published else None,
        audience=audience if users is None else "the users asked for",
        holders=total,
        users=previews,
    )


def _holders(
    records: Records,
    conn: sa.Connection,
    profile_id: RecordId,
    contexts: dict[Any, SecurityContext] | None = None,
) -> tuple[str, list[Any]]:
    """Who would hold the profile: the selected users and teams' members when every app using
    it is restricted; every enabled user who may use an app otherwise (their security
    contexts, loaded to decide, are kept in ``contexts``)."""
    store = records.store
    apps = store.sql_table(APP)
    modes = list(
        conn.execute(
            sa.select(apps.c.offlineprofilemode).where(
                apps.c.mobileofflineprofileid == profile_id, apps.c.canbeusedoffline.is_(True)
            )
        ).scalars()
    )
    if not modes:
        return "no offline app uses this profile", []
    if all(m == RESTRICTED_MODE for m in modes):
        members = profile_members(records, profile_id, conn=conn).effective_users
        return "the profile's selected users and teams", [
            u for u in members if _enabled(store, conn, u)
        ]
    users = store.sql_table("systemuser")
    everyone = conn.execute(
        sa.select(users.c.systemuserid).where(
            sa.or_(users.c.isdisabled.is_(None), users.c.isdisabled.is_(False))
        )
    ).scalars()
    holders = []
    app_table, profile_table = store.schema.table(APP), store.schema.table(PROFILE)
    for uid in everyone:
        try:
            ctx = load_context(store, uid, conn)
        except FieldsyncError:  # a user who cannot sign in holds nothing
            continue
        if ctx.is_system:
            continue
        if has_privilege(ctx, app_table, Privilege.READ) and has_privilege(
            ctx, profile_table, Privilege.READ
        ):
            holders.append(uid)
            if contexts is not None:
                contexts[uid] = ctx
    return "everyone who may use an app of the profile", holders


def _enabled(store: Any, conn: sa.Connection, user: RecordId) -> bool:
    users = store.sql_table("systemuser")
    disabled = conn.execute(
        sa.select(users.c.isdisabled).where(users.c.systemuserid == user)
    ).scalar()
    return not disabled


class _Counter:
    def __init__(
        self,
        records: Records,
        conn: sa.Connection,
        proposed: PublishedProfile,
        published: PublishedProfile | None,
        now: dt.datetime,
    ) -> None:
        schema = records.store.schema
        self.records, self.conn, self.now = records, conn, now
        self.draft = build_plan(proposed, schema)
        self.current: ScopePlan | None = build_plan(published, schema) if published else None
        self.widths: dict[str, float] = {}
        self.binding: UserBinding | None = None  # the user's, for every query of theirs

    def _ids(self, plan: ScopePlan, table: str, ctx: SecurityContext) -> sa.Select[Any]:
        t = plan.plan(table).table
        node: Node = plan.node(table)
        query = Query(table=table, columns=(t.primary_id,), filter=node)
        if self.binding is None or self.binding.user_id != ctx.user_id:
            self.binding = user_binding(self.records.store, self.conn, ctx)
        stmt = self.records.query_statement(
            query, caller=ctx, now=self.now, conn=self.conn, binding=self.binding
        )
        # counted and compared as sets (SQLite refuses an ORDER BY inside EXCEPT)
        return stmt.order_by(None)

    def _count(self, stmt: Any) -> int:
        sub = stmt.subquery()
        return int(self.conn.execute(sa.select(sa.func.count()).select_from(sub)).scalar_one())

    def user(self, ctx: SecurityContext) -> UserPreview:
        """One user's preview. Every count of every table is a scalar subquery of one
        statement: one round trip per user, whatever the number of tables (the counting
        itself is index work; the round trips were most of the cost)."""
        out = UserPreview(str(ctx.user_id), ctx.username)
        counts: list[Any] = []

        def count(stmt: Any) -> int:
            counts.append(stmt)
            return len(counts) - 1

        plans: list[tuple[str, int, int | None, int | None, int | None, bool, Any]] = []
        for table in self.draft.order:
            tp = self.draft.plan(table)
            mine = self._ids(self.draft, table, ctx)
            rows = count(mine)
            before = self.current.tables.get(table) if self.current else None
            if before is None:
                plans.append((table, rows, None, None, None, True, mine))
            elif before.item_hash == tp.item_hash:
                plans.append((table, rows, None, None, None, False, mine))
            else:
                assert self.current is not None
                theirs = self._ids(self.current, table, ctx)
                old = count(theirs)
                moving_in = count(sa.except_(mine, theirs))
                moving_out = count(sa.except_(theirs, mine))
                plans.append((table, rows, old, moving_in, moving_out, True, mine))
        gone: list[tuple[str, int]] = []
        if self.current:
            for table in self.current.order:
                if table not in self.draft.tables:
                    gone.append((table, count(self._ids(self.current, table, ctx))))
        values = self._counts(counts)
        for table, rows, old_at, in_at, out_at, changed, mine in plans:
            n = values[rows]
            if old_at is None:
                published = None if changed else n
                came, went = (n, 0) if changed else (0, 0)
            else:
                assert in_at is not None
                assert out_at is not None
                published, came, went = values[old_at], values[in_at], values[out_at]
            out.tables.append(
                TablePreview(
                    table=table,
                    rows=n,
                    published_rows=published,
                    moving_in=came,
                    moving_out=went,
                    bytes=int(n * self._width(table)),
                    file_bytes=self._file_bytes(table, mine),
                    changed=changed,
                )
            )
        for table, index in gone:
            old_rows = values[index]
            out.tables.append(TablePreview(table, 0, old_rows, 0, old_rows, 0, 0, True))
        out.warnings = _warnings(out)
        return out

    def _counts(self, statements: list[Any]) -> list[int]:
        """The row counts of ``statements``, in one query."""
        if not statements:
            return []
        columns = [
            sa.select(sa.func.count()).select_from(stmt.subquery()).scalar_subquery().label(f"c{i}")
            for i, stmt in enumerate(statements)
        ]
        row = self.conn.execute(sa.select(*columns)).one()
        return [int(v) for v in row]

    def _width(self, table: str) -> float:
        """The average size of one row of the table on the wire (travelling columns), from a
        small sample."""
        if table not in self.widths:
            tp = self.draft.plan(table)
            sql = self.records.store.sql_table(table)
            rows = self.conn.execute(
                sa.select(*(sql.c[c] for c in tp.columns)).limit(SAMPLE_ROWS)
            ).all()
            sizes = [len(orjson.dumps(list(r), default=str)) for r in rows]
            self.widths[table] = sum(sizes) / len(sizes) if sizes else 0.0
        return self.widths[table]

    def _file_bytes(self, table: str, ids: sa.Select[Any]) -> int:
        tp = self.draft.plan(table)
        t = tp.table
        chosen = [
            c
            for c in tp.columns
            if (col := t.column(c)) is not None and col.type in (ColumnType.FILE, ColumnType.IMAGE)
        ]
        if not chosen:
            return 0
        sql = self.records.store.sql_table(table)
        inner = ids.subquery()
        total = 0
        for name in chosen:
            files = sa.select(sql.c[name]).where(sql.c[t.primary_id].in_(sa.select(inner.c[0])))
            total += int(
                self.conn.execute(
                    sa.select(sa.func.coalesce(sa.func.sum(fs_file.c.size), 0)).where(
                        fs_file.c.fileid.in_(files)
                    )
                ).scalar_one()
            )
        return total


def _warnings(user: UserPreview) -> list[str]:
    out = []
    who = user.username or user.user
    if user.rows > ROWS_HARD_LIMIT:
        out.append(f"{who}: {user.rows:,} rows, past the hard limit of {ROWS_HARD_LIMIT:,}")
    elif user.rows > ROWS_PER_USER:
        out.append(f"{who}: {user.rows:,} rows, more than the {ROWS_PER_USER:,} advised")
    if user.bytes > BYTES_PER_USER:
        out.append(f"{who}: about {user.bytes / 2**30:.1f} GB of rows, more than the 1 GB advised")
    if user.file_bytes > FILE_BYTES_PER_USER:
        out.append(f"{who}: {user.file_bytes / 2**30:.1f} GB of files and images, more than 4 GB")
    return out
