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

import collections
import datetime as dt
import random
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import orjson
import sqlalchemy as sa

from fieldsync.errors import Unauthorized
from fieldsync.offline.access import APP, RESTRICTED_MODE, profile_members
from fieldsync.offline.profiles import PROFILE, check, load_draft, published_profile
from fieldsync.offline.snapshot import PublishedProfile
from fieldsync.offline.validation import snapshot
from fieldsync.query.ast import Node, Query
from fieldsync.query.bind import UserBinding
from fieldsync.records.service import Records
from fieldsync.schema.model import ColumnType
from fieldsync.security.context import ContextCache, load_contexts, user_binding, user_bindings
from fieldsync.security.model import Privilege, SecurityContext
from fieldsync.security.predicate import has_privilege
from fieldsync.store.catalog import fs_file
from fieldsync.store.store import Store
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
    contexts: ContextCache | None = None,
) -> Preview:
    """Preview the draft of ``profile_id`` for ``users`` (default: the users who would hold
    it, or a random ``sample`` of them). Refuses an invalid draft with its problems, as
    publishing would. ``contexts``: the platform's security context cache, to reuse (and
    keep) the contexts it loads."""
    store = records.store
    moment = now or dt.datetime.now(dt.UTC)
    with store.read() as conn:
        draft = load_draft(conn, store, profile_id)
        check(draft, store, publishing=True)
        published = published_profile(conn, profile_id)
        version = (published.version + 1) if published else 1
        proposed = snapshot(draft, store.schema, profile_id, version, moment)
        if users is None:
            audience, chosen, loaded = _holders(records, conn, profile_id, contexts)
        else:
            audience, chosen = "the users asked for", list(dict.fromkeys(users))
            loaded = _contexts(store, conn, chosen, contexts)
            for uid in chosen:
                if uid not in loaded:
                    raise Unauthorized(f"the user {uid} is disabled or does not exist")
        total = len(chosen)
        if users is None and len(chosen) > sample:
            chosen = random.Random(seed).sample(sorted(chosen, key=str), sample)
        missing = [uid for uid in chosen if uid not in loaded]
        if missing:
            loaded.update(_contexts(store, conn, missing, contexts))
            chosen = [uid for uid in chosen if uid in loaded]
        counter = _Counter(records, conn, proposed, published, moment)
        previews = counter.users([loaded[uid] for uid in chosen])
    return Preview(
        profile=draft.name,
        published_version=published.version if published else None,
        audience=audience,
        holders=total,
        users=previews,
    )


def _contexts(
    store: Store, conn: sa.Connection, users: list[RecordId], cache: ContextCache | None
) -> dict[RecordId, SecurityContext]:
    """The security contexts of the enabled users among ``users``, loaded together."""
    if cache is not None and cache.store is store:
        return cache.get_many(users, conn)
    return load_contexts(store, users, conn)


def _holders(
    records: Records,
    conn: sa.Connection,
    profile_id: RecordId,
    cache: ContextCache | None = None,
) -> tuple[str, list[RecordId], dict[RecordId, SecurityContext]]:
    """Who would hold the profile: the enabled users among the selected users and teams'
    members when every app using it is restricted; every enabled user who may use an app
    otherwise (with the security contexts loaded to decide)."""
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
        return "no offline app uses this profile", [], {}
    if all(m == RESTRICTED_MODE for m in modes):
        members = profile_members(records, profile_id, conn=conn).effective_users
        return "the profile's selected users and teams", _enabled(store, conn, members), {}
    users = store.sql_table("systemuser")
    everyone = list(
        conn.execute(
            sa.select(users.c.systemuserid).where(
                sa.or_(users.c.isdisabled.is_(None), users.c.isdisabled.is_(False))
            )
        ).scalars()
    )
    loaded = _contexts(store, conn, everyone, cache)
    app_table, profile_table = store.schema.table(APP), store.schema.table(PROFILE)
    holders = [
        uid
        for uid in everyone
        if (ctx := loaded.get(uid)) is not None
        and not ctx.is_system
        and has_privilege(ctx, app_table, Privilege.READ)
        and has_privilege(ctx, profile_table, Privilege.READ)
    ]
    return "everyone who may use an app of the profile", holders, loaded


def _enabled(store: Store, conn: sa.Connection, members: Iterable[RecordId]) -> list[RecordId]:
    """The enabled users among ``members``, in their order."""
    users = store.sql_table("systemuser")
    wanted = list(members)
    disabled: set[RecordId] = set()
    found: set[RecordId] = set()
    for first in range(0, len(wanted), 500):
        for uid, off in conn.execute(
            sa.select(users.c.systemuserid, users.c.isdisabled).where(
                users.c.systemuserid.in_(wanted[first : first + 500])
            )
        ):
            found.add(uid)
            if off:
                disabled.add(uid)
    return [u for u in wanted if u in found and u not in disabled]


# One user's counts, as indexes into the values of their counting statement: per table of
# the draft (table, rows, published rows, moving in, moving out, changed, file sums), and per
# table only the published version holds (table, its rows).
_Row = tuple[str, int, int | None, int | None, int | None, bool, tuple[int, ...]]


@dataclass
class _Shape:
    """One counting statement, shared by every user whose security context and binding are
    the same but for the user's own id: built for a stand-in id (``sentinel``), run for each
    of them with the parameters that hold the stand-in set to the user's id."""

    statement: sa.Select[Any]
    rows: list[_Row]
    gone: list[tuple[str, int]]
    sentinel: RecordId
    slots: dict[str, Any]  # the parameters holding the sentinel, as compiled
    shared: bool  # False: the sentinel is not only in parameters, build for each user

    def params(self, user: RecordId) -> dict[str, Any]:
        def swap(value: Any) -> Any:
            if isinstance(value, (list, tuple)):
                return [user if v == self.sentinel else v for v in value]
            return user

        return {name: swap(value) for name, value in self.slots.items()}


class _Counter:
    """Counts what each user would hold under the draft and under the published version.

    Each user's counts are one statement (every table's counts, the rows moving in and out,
    the file sizes: scalar subqueries of one SELECT), made of the statements the download
    runs (:meth:`Records.query_statement` over the plan's node). Users whose security
    contexts differ only in their own id share one statement, parameters aside.

    Why a shared statement counts exactly what the user's own would: building a statement
    reads the user's id only to compare it for equality with other ids and to place it in
    the parameters (the read guard's ``ownerid`` lists, the bound ``eq-userid`` conditions,
    the share principals); nothing orders or hashes it into the shape of the SQL except the
    order of values in an IN list or of the branches of an OR. So the statement built for a
    stand-in id that appears nowhere else, with that id's parameters set to the user's id,
    is the user's own statement up to those orders. The stand-in is checked to appear in
    parameters only (never in the SQL text, never inside another value); when it does, the
    shape is built for each user instead.
    """

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
        self.sentinel: RecordId = uuid.uuid4()
        self.shapes: dict[Any, _Shape] = {}
        self._trees: dict[int, tuple[Any, frozenset[Any]]] = {}

    def users(self, contexts: list[SecurityContext]) -> list[UserPreview]:
        """Every user's preview. A user alone in their shape gets their own statement (no
        stand-in to check); the others share their shape's."""
        bindings = user_bindings(self.records.store, self.conn, contexts)
        keys = [self._key(ctx, bindings[ctx.user_id]) for ctx in contexts]
        sizes = collections.Counter(keys)
        return [
            self.user(ctx, bindings[ctx.user_id], key if sizes[key] > 1 else None)
            for ctx, key in zip(contexts, keys, strict=True)
        ]

    def user(
        self, ctx: SecurityContext, binding: UserBinding | None = None, key: Any = None
    ) -> UserPreview:
        """One user's preview, in one round trip whatever the number of tables: with the
        statement of the shape ``key`` (see :meth:`_key`), or their own (no key)."""
        if binding is None:
            binding = user_binding(self.records.store, self.conn, ctx)
        shape = None if key is None else self.shapes.get(key)
        if key is not None and shape is None:
            shape = self.shapes[key] = self._shape(*_relabel(ctx, binding, self.sentinel))
        if shape is not None and shape.shared:
            row = self.conn.execute(shape.statement, shape.params(ctx.user_id)).one()
        else:
            shape = self._shape(ctx, binding, shared=False)
            row = self.conn.execute(shape.statement).one()
        return self._preview(ctx, shape, [int(v) for v in row])

    def _key(self, ctx: SecurityContext, binding: UserBinding) -> Any:
        """What a user's statements are made of, but for the user's own id."""
        tree = self._trees.get(id(ctx.unit_tree))
        if tree is None or tree[0] is not ctx.unit_tree:
            tree = self._trees[id(ctx.unit_tree)] = (
                ctx.unit_tree,
                frozenset(ctx.unit_tree.items()),
            )
        me = ctx.user_id
        grants = frozenset(
            (k, frozenset((g.depth, g.owner != me and g.owner, g.business_unit) for g in v))
            for k, v in ctx.grants.items()
        )
        return (
            ctx.business_unit_id,
            ctx.teams,
            ctx.owner_teams,
            grants,
            tree[1],
            ctx.reports,
            ctx.hierarchy,
            ctx.shared_tables,
            ctx.language,
            ctx.is_system,
            ctx.administrator,
            binding.business_unit_id,
            binding.teams,
            binding.hierarchy,
            binding.hierarchy_teams,
            binding.language,
        )

    def _ids(
        self, plan: ScopePlan, table: str, ctx: SecurityContext, binding: UserBinding
    ) -> sa.Select[Any]:
        t = plan.plan(table).table
        node: Node = plan.node(table)
        query = Query(table=table, columns=(t.primary_id,), filter=node)
        stmt = self.records.query_statement(
            query, caller=ctx, now=self.now, conn=self.conn, binding=binding
        )
        # counted and compared as sets (SQLite refuses an ORDER BY inside EXCEPT)
        return stmt.order_by(None)

    def _shape(self, ctx: SecurityContext, binding: UserBinding, *, shared: bool = True) -> _Shape:
        """The counting statement of ``ctx``; ``shared``: to be run for other users too (its
        parameters holding the sentinel are found)."""
        scalars: list[Any] = []

        def count(stmt: Any) -> int:
            scalars.append(sa.select(sa.func.count()).select_from(stmt.subquery()))
            return len(scalars) - 1

        rows: list[_Row] = []
        for table in self.draft.order:
            tp = self.draft.plan(table)
            mine = self._ids(self.draft, table, ctx, binding)
            at = count(mine)
            files = tuple(self._file_sums(table, mine, scalars))
            before = self.current.tables.get(table) if self.current else None
            if before is None:
                rows.append((table, at, None, None, None, True, files))
            elif before.item_hash == tp.item_hash:
                rows.append((table, at, None, None, None, False, files))
            else:
                assert self.current is not None
                theirs = self._ids(self.current, table, ctx, binding)
                old = count(theirs)
                moving_in = count(sa.except_(mine, theirs))
                moving_out = count(sa.except_(theirs, mine))
                rows.append((table, at, old, moving_in, moving_out, True, files))
        gone: list[tuple[str, int]] = []
        if self.current:
            for table in self.current.order:
                if table not in self.draft.tables:
                    gone.append((table, count(self._ids(self.current, table, ctx, binding))))
        statement = sa.select(*(s.scalar_subquery().label(f"c{i}") for i, s in enumerate(scalars)))
        if not scalars:  # no table in either version: a row of nothing
            statement = sa.select(sa.literal(0).label("none"))
        slots, shared = self._slots(statement) if shared else ({}, False)
        return _Shape(statement, rows, gone, self.sentinel, slots, shared)

    def _slots(self, statement: sa.Select[Any]) -> tuple[dict[str, Any], bool]:
        """The parameters of ``statement`` that hold the sentinel, and whether it is only
        there (a whole parameter, or whole items of an IN list)."""
        s = self.sentinel
        texts = (str(s), s.hex)
        compiled = statement.compile(dialect=self.conn.dialect)
        if any(t in compiled.string for t in texts):
            return {}, False
        slots: dict[str, Any] = {}
        for name, value in (compiled.construct_params() or {}).items():
            items = list(value) if isinstance(value, (list, tuple)) else [value]
            if any(v == s for v in items):
                slots[name] = value
            if any(v != s and any(t in str(v) for t in texts) for v in items):
                return {}, False
        return slots, True

    def _preview(self, ctx: SecurityContext, shape: _Shape, values: list[int]) -> UserPreview:
        out = UserPreview(str(ctx.user_id), ctx.username)
        for table, rows, old_at, in_at, out_at, changed, files in shape.rows:
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
                    file_bytes=sum(values[i] for i in files),
                    changed=changed,
                )
            )
        for table, index in shape.gone:
            old_rows = values[index]
            out.tables.append(TablePreview(table, 0, old_rows, 0, old_rows, 0, 0, True))
        out.warnings = _warnings(out)
        return out

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

    def _file_sums(self, table: str, ids: sa.Select[Any], scalars: list[Any]) -> list[int]:
        """Sizes of the files and images the draft selects on the rows ``ids``, one summing
        statement per column added to ``scalars``; their indexes."""
        tp = self.draft.plan(table)
        t = tp.table
        chosen = [
            c
            for c in tp.columns
            if (col := t.column(c)) is not None and col.type in (ColumnType.FILE, ColumnType.IMAGE)
        ]
        sql = self.records.store.sql_table(table)
        inner = ids.subquery()
        out = []
        for name in chosen:
            files = sa.select(sql.c[name]).where(sql.c[t.primary_id].in_(sa.select(inner.c[0])))
            scalars.append(
                sa.select(sa.func.coalesce(sa.func.sum(fs_file.c.size), 0)).where(
                    fs_file.c.fileid.in_(files)
                )
            )
            out.append(len(scalars) - 1)
        return out


def _relabel(
    ctx: SecurityContext, binding: UserBinding, user: RecordId
) -> tuple[SecurityContext, UserBinding]:
    """``ctx`` and ``binding`` with the user's own id replaced by ``user``."""
    me = ctx.user_id
    grants = {
        k: tuple(replace(g, owner=user) if g.owner == me else g for g in v)
        for k, v in ctx.grants.items()
    }
    return replace(ctx, user_id=user, grants=grants), replace(binding, user_id=user)


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
