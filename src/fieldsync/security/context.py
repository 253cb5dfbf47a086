"""Loading a user's security context from the database: a handful of small queries (the
user, their teams, the roles of both, the business unit tree, the manager hierarchy below
them, the tables shared with them), and :class:`ContextCache`, which keeps loaded contexts
for as long as the change log says that nothing they are made of has changed."""

from __future__ import annotations

import threading
from collections import OrderedDict, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from fieldsync.errors import Unauthorized
from fieldsync.query.bind import UserBinding
from fieldsync.schema.builtin import ORGANIZATION_ID, SYSTEM_USER_ID
from fieldsync.security.model import (
    SYSTEM_CONTEXT,
    Depth,
    Grant,
    HierarchySettings,
    Privilege,
    SecurityContext,
)
from fieldsync.security.roles import INHERENT_PRIVILEGES
from fieldsync.store.catalog import fs_change, fs_meta
from fieldsync.store.changes import WATERMARK
from fieldsync.store.store import Store
from fieldsync.types import RecordId

HIERARCHY_LIMIT = 100  # levels the hierarchy operators follow
OWNING_TEAM_TYPES = (0, 2, 3)  # owner, security group, office group: these own rows and hold roles


def unit_tree(conn: sa.Connection, store: Store) -> dict[RecordId, frozenset[RecordId]]:
    """Every business unit mapped to itself and all the units below it."""
    bu = store.sql_table("businessunit")
    children: dict[RecordId, list[RecordId]] = defaultdict(list)
    units = []
    for uid, parent in conn.execute(sa.select(bu.c.businessunitid, bu.c.parentbusinessunitid)):
        units.append(uid)
        if parent is not None:
            children[parent].append(uid)
    tree: dict[RecordId, frozenset[RecordId]] = {}

    def below(unit: RecordId, seen: frozenset[RecordId]) -> frozenset[RecordId]:
        if unit in tree:
            return tree[unit]
        out = {unit}
        for child in children.get(unit, ()):
            if child not in seen:  # a cycle cannot be stored, but never loop on one
                out |= below(child, seen | {unit})
        tree[unit] = frozenset(out)
        return tree[unit]

    for unit in units:
        below(unit, frozenset())
    return tree


def reports_below(
    conn: sa.Connection, store: Store, user_id: RecordId, depth: int
) -> tuple[frozenset[RecordId], ...]:
    """Users below ``user_id`` in the manager hierarchy, level by level, at most ``depth``."""
    su = store.sql_table("systemuser")
    levels: list[frozenset[RecordId]] = []
    seen = {user_id}
    frontier = [user_id]
    for _ in range(depth):
        if not frontier:
            break
        found = (
            set(
                conn.execute(
                    sa.select(su.c.systemuserid).where(su.c.parentsystemuserid.in_(frontier))
                ).scalars()
            )
            - seen
        )
        if not found:
            break
        levels.append(frozenset(found))
        seen |= found
        frontier = sorted(found)
    return tuple(levels)


def load_context(
    store: Store, user_id: RecordId, conn: sa.Connection | None = None
) -> SecurityContext:
    """The security context of an enabled user; a disabled or unknown user is refused."""
    if user_id == SYSTEM_USER_ID:
        return SYSTEM_CONTEXT
    if conn is None:
        with store.read() as c:
            return _load(store, c, user_id)
    return _load(store, conn, user_id)


def _load(store: Store, conn: sa.Connection, user_id: RecordId) -> SecurityContext:
    su = store.sql_table("systemuser")
    user = conn.execute(
        sa.select(su.c.businessunitid, su.c.isdisabled, su.c.domainname, su.c.uilanguageid).where(
            su.c.systemuserid == user_id
        )
    ).first()
    if user is None or user.isdisabled:
        raise Unauthorized("the user is disabled or does not exist")

    team = store.sql_table("team")
    tm = store.sql_table("teammembership")
    teams = conn.execute(
        sa.select(team.c.teamid, team.c.teamtype, team.c.businessunitid)
        .join(tm, tm.c.teamid == team.c.teamid)
        .where(
            tm.c.systemuserid == user_id,
            sa.or_(team.c.isdisabled.is_(None), team.c.isdisabled.is_(False)),
        )
    ).all()
    owner_teams = {t.teamid: t.businessunitid for t in teams if t.teamtype in OWNING_TEAM_TYPES}

    anchors: dict[RecordId, list[tuple[RecordId, RecordId]]] = defaultdict(list)
    sur = store.sql_table("systemuserroles")
    for role_id in conn.execute(
        sa.select(sur.c.roleid).where(sur.c.systemuserid == user_id)
    ).scalars():
        anchors[role_id].append((user_id, user.businessunitid))
    if owner_teams:
        tr = store.sql_table("teamroles")
        for team_id, role_id in conn.execute(
            sa.select(tr.c.teamid, tr.c.roleid).where(tr.c.teamid.in_(sorted(owner_teams)))
        ):
            anchors[role_id].append((team_id, owner_teams[team_id]))

    administrator = False
    grants: dict[tuple[str, Privilege], list[Grant]] = defaultdict(list)
    if anchors:
        role = store.sql_table("role")
        rp = store.sql_table("roleprivilege")
        role_ids = sorted(anchors)
        administrator = bool(
            conn.execute(
                sa.select(sa.func.count()).where(
                    role.c.roleid.in_(role_ids),
                    role.c.isadministrator.is_(True),
                    role.c.statecode == 0,
                )
            ).scalar()
        )
        active = set(
            conn.execute(
                sa.select(role.c.roleid).where(role.c.roleid.in_(role_ids), role.c.statecode == 0)
            ).scalars()
        )
        for role_id, table, privilege, depth in conn.execute(
            sa.select(rp.c.roleid, rp.c.tablename, rp.c.privilege, rp.c.depth).where(
                rp.c.roleid.in_(sorted(active)), rp.c.depth > 0
            )
        ):
            for owner, unit in anchors[role_id]:
                grants[(table, Privilege(privilege))].append(Grant(Depth(depth), owner, unit))

    for table, privileges in INHERENT_PRIVILEGES.items():
        for privilege, depth in privileges.items():
            grants[(table, privilege)].append(Grant(depth, user_id, user.businessunitid))

    org = store.sql_table("organization")
    settings = conn.execute(
        sa.select(org.c.hierarchysecurity, org.c.hierarchydepth, org.c.hierarchymanagerwrite).where(
            org.c.organizationid == ORGANIZATION_ID
        )
    ).first()
    hierarchy = HierarchySettings(
        enabled=bool(settings and settings.hierarchysecurity),
        depth=int((settings and settings.hierarchydepth) or 3),
        managers_write=bool(settings is None or settings.hierarchymanagerwrite is not False),
    )
    reports = reports_below(conn, store, user_id, hierarchy.depth) if hierarchy.enabled else ()

    all_teams = frozenset(t.teamid for t in teams)
    poa = store.sql_table("principalobjectaccess")
    shared = frozenset(
        conn.execute(
            sa.select(poa.c.objecttypecode)
            .distinct()
            .where(poa.c.principalid.in_([user_id, *sorted(all_teams)]))
        ).scalars()
    )
    return SecurityContext(
        user_id=user_id,
        business_unit_id=user.businessunitid,
        teams=all_teams,
        owner_teams=frozenset(owner_teams),
        grants={k: _dedupe(v) for k, v in grants.items()},
        unit_tree=unit_tree(conn, store),
        reports=reports,
        hierarchy=hierarchy,
        shared_tables=shared,
        language=int(user.uilanguageid or 1033),
        administrator=administrator,
        username=user.domainname,
    )


# Every table a context (and so its fingerprint) is made of. Each write to one of them is a
# row of the change log, in the same transaction: the newest version among them moves with
# every change a context could see, in every process sharing the database.
CONTEXT_TABLES = (
    "systemuser",
    "businessunit",
    "team",
    "teammembership",
    "role",
    "roleprivilege",
    "systemuserroles",
    "teamroles",
    "organization",
    "principalobjectaccess",
)


Stamp = tuple[int, str]


def _stamp_columns() -> tuple[sa.Label[Any], ...]:
    newest = [
        sa.select(sa.func.max(fs_change.c.version))
        .where(fs_change.c.tablename == name)
        .scalar_subquery()
        .label(f"stamp_{name}")
        for name in CONTEXT_TABLES
    ]
    pruned = sa.select(fs_meta.c.value).where(fs_meta.c.key == WATERMARK).scalar_subquery()
    return (*newest, pruned.label("stamp_pruned"))


# The stamp's columns, for a statement that reads them beside something else (the bearer
# token a request is authenticated by: one statement for both); :func:`stamp_of` reads them.
STAMP_COLUMNS = _stamp_columns()
# built once: making the statement (and its cache key) anew cost more than running it
STAMP = sa.select(*STAMP_COLUMNS)


def stamp_of(values: Sequence[Any]) -> Stamp:
    """The stamp in the values of :data:`STAMP_COLUMNS` (in their order)."""
    *row, mark = values
    return max((v for v in row if v is not None), default=0), str(mark or "")


def context_stamp(conn: sa.Connection) -> Stamp:
    """The newest version the change log holds for any table a context is made of (one
    index lookup per table, on the log's ``(tablename, version)`` index), with the log's
    pruning watermark: pruning moves the stamp too, so an emptied log never brings back a
    stamp that an older context was stored under."""
    return stamp_of(conn.execute(STAMP).one())


class ContextCache:
    """Security contexts of one store, reused while the change log shows no change to what
    they are made of.

    Each entry keeps the stamp (:func:`context_stamp`) read *before* its context was loaded.
    A lookup reads the stamp again, in the caller's transaction, and reuses the entry only
    when it is the same: any committed write to a role, a privilege, a team or its members,
    a business unit, a user, the organisation's hierarchy settings or a share moves the
    stamp, so the next request of every process loads afresh. Versions are handed out in
    commit order (see ``docs/architecture.md``), so a stamp read after a commit is never
    older than that commit's version. A pruned log can only move the stamp (never hide a
    change behind an equal one): the entry is then reloaded once, which is safe.
    """

    def __init__(self, store: Store, size: int = 4096) -> None:
        self.store = store
        self.size = size
        self._entries: OrderedDict[RecordId, _Entry] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.loads = 0

    def get(
        self, user_id: RecordId, conn: sa.Connection | None = None, stamp: Stamp | None = None
    ) -> SecurityContext:
        """The context of an enabled user, as :func:`load_context` would load it now.
        ``stamp``: the stamp already read in ``conn`` (by a statement that also read
        :data:`STAMP_COLUMNS`)."""
        if user_id == SYSTEM_USER_ID:
            return SYSTEM_CONTEXT
        if conn is None:
            with self.store.read() as c:
                return self._get(user_id, c, None)
        return self._get(user_id, conn, stamp)

    def _get(self, user_id: RecordId, conn: sa.Connection, stamp: Stamp | None) -> SecurityContext:
        if stamp is None:
            stamp = context_stamp(conn)
        with self._lock:
            found = self._entries.get(user_id)
            if found is not None and found.stamp == stamp:
                self._entries.move_to_end(user_id)
                self.hits += 1
                return found.context
        ctx = _load(self.store, conn, user_id)  # a disabled user raises: nothing is kept
        with self._lock:
            self.loads += 1
            held = self._entries.get(user_id)
            if held is None or held.stamp[0] <= stamp[0]:  # never replace a newer load
                self._entries[user_id] = _Entry(stamp, ctx)
                self._entries.move_to_end(user_id)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)
        return ctx

    def binding(self, ctx: SecurityContext, conn: sa.Connection) -> UserBinding:
        """:func:`user_binding` of a context this cache handed out, kept beside it: the
        manager hierarchy and team memberships it reads are tables of the stamp, so it holds
        exactly as long as the context does. ``conn`` is a transaction begun after the
        context's stamp was read (the request's), so the binding is never older than it."""
        with self._lock:
            found = self._entries.get(ctx.user_id)
            if found is not None and found.context is ctx and found.binding is not None:
                return found.binding
        bound = user_binding(self.store, conn, ctx)
        with self._lock:
            found = self._entries.get(ctx.user_id)
            if found is not None and found.context is ctx:
                found.binding = bound
        return bound

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


@dataclass(slots=True)
class _Entry:
    stamp: Stamp
    context: SecurityContext
    binding: UserBinding | None = None


def _dedupe(grants: Iterable[Grant]) -> tuple[Grant, ...]:
    return tuple(dict.fromkeys(sorted(grants, key=lambda g: (-g.depth, str(g.owner)))))


def user_binding(store: Store, conn: sa.Connection, ctx: SecurityContext) -> UserBinding:
    """What the query language's user operators need: the caller, their teams, everyone
    below them in the manager hierarchy (every level, whatever hierarchy security says) and
    those users' teams."""
    below = frozenset().union(*reports_below(conn, store, ctx.user_id, HIERARCHY_LIMIT))
    teams_below: frozenset[RecordId] = frozenset()
    if below:
        tm = store.sql_table("teammembership")
        teams_below = frozenset(
            conn.execute(
                sa.select(tm.c.teamid).where(tm.c.systemuserid.in_(sorted(below)))
            ).scalars()
        )
    return UserBinding(
        user_id=ctx.user_id,
        business_unit_id=ctx.business_unit_id,
        teams=ctx.teams,
        hierarchy=below,
        hierarchy_teams=teams_below,
        language=ctx.language,
    )
