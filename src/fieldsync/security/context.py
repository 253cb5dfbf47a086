"""Loading a user's security context from the database: a handful of small queries (the
user, their teams, the roles of both, the business unit tree, the manager hierarchy below
them, the tables shared with them), and :class:`ContextCache`, which keeps loaded contexts
for as long as the change log says that nothing they are made of has changed."""

from __future__ import annotations

import threading
from collections import OrderedDict, defaultdict
from collections.abc import Iterable, Iterator, Sequence
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
    return reports_below_many(conn, store, [user_id], depth)[user_id]


def reports_below_many(
    conn: sa.Connection, store: Store, user_ids: Iterable[RecordId], depth: int
) -> dict[RecordId, tuple[frozenset[RecordId], ...]]:
    """:func:`reports_below` of many users at once: one query per level for all of them."""
    su = store.sql_table("systemuser")
    levels: dict[RecordId, list[frozenset[RecordId]]] = {u: [] for u in user_ids}
    seen = {u: {u} for u in levels}
    frontiers = {u: {u} for u in levels}
    for _ in range(depth):
        wanted = set().union(*frontiers.values())
        if not wanted:
            break
        children: dict[RecordId, set[RecordId]] = defaultdict(set)
        for part in _chunks(wanted):
            for child, parent in conn.execute(
                sa.select(su.c.systemuserid, su.c.parentsystemuserid).where(
                    su.c.parentsystemuserid.in_(part)
                )
            ):
                children[parent].add(child)
        for user, frontier in list(frontiers.items()):
            found = set().union(*(children.get(p, ()) for p in frontier)) - seen[user]
            if not found:
                del frontiers[user]
                continue
            levels[user].append(frozenset(found))
            seen[user] |= found
            frontiers[user] = found
    return {u: tuple(found) for u, found in levels.items()}


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


def load_contexts(
    store: Store, user_ids: Iterable[RecordId], conn: sa.Connection
) -> dict[RecordId, SecurityContext]:
    """The security contexts of the enabled users among ``user_ids``, loaded together: the
    same handful of queries as one user's, each for all of them (disabled and unknown users
    are left out)."""
    wanted = list(dict.fromkeys(user_ids))
    out = {u: SYSTEM_CONTEXT for u in wanted if u == SYSTEM_USER_ID}
    out.update(_load_many(store, conn, [u for u in wanted if u != SYSTEM_USER_ID]))
    return out


def _load(store: Store, conn: sa.Connection, user_id: RecordId) -> SecurityContext:
    found = _load_many(store, conn, [user_id]).get(user_id)
    if found is None:
        raise Unauthorized("the user is disabled or does not exist")
    return found


CHUNK = 500  # ids per IN list when loading many contexts


def _chunks(ids: Iterable[RecordId]) -> Iterator[list[RecordId]]:
    ordered = sorted(ids)
    for first in range(0, len(ordered), CHUNK):
        yield ordered[first : first + CHUNK]


def _load_many(
    store: Store, conn: sa.Connection, user_ids: list[RecordId]
) -> dict[RecordId, SecurityContext]:
    if not user_ids:
        return {}
    su = store.sql_table("systemuser")
    users = {}
    for part in _chunks(user_ids):
        for user in conn.execute(
            sa.select(
                su.c.systemuserid,
                su.c.businessunitid,
                su.c.isdisabled,
                su.c.domainname,
                su.c.uilanguageid,
            ).where(su.c.systemuserid.in_(part))
        ):
            if not user.isdisabled:
                users[user.systemuserid] = user
    if not users:
        return {}

    team = store.sql_table("team")
    tm = store.sql_table("teammembership")
    teams: dict[RecordId, list[Any]] = defaultdict(list)
    for part in _chunks(users):
        for t in conn.execute(
            sa.select(tm.c.systemuserid, team.c.teamid, team.c.teamtype, team.c.businessunitid)
            .join(tm, tm.c.teamid == team.c.teamid)
            .where(
                tm.c.systemuserid.in_(part),
                sa.or_(team.c.isdisabled.is_(None), team.c.isdisabled.is_(False)),
            )
        ):
            teams[t.systemuserid].append(t)
    owner_teams = {
        u: {t.teamid: t.businessunitid for t in found if t.teamtype in OWNING_TEAM_TYPES}
        for u, found in teams.items()
    }

    # each role of each user, with the principals it is measured from
    anchors: dict[RecordId, dict[RecordId, list[tuple[RecordId, RecordId]]]] = {
        u: defaultdict(list) for u in users
    }
    sur = store.sql_table("systemuserroles")
    for part in _chunks(users):
        for user_id, role_id in conn.execute(
            sa.select(sur.c.systemuserid, sur.c.roleid).where(sur.c.systemuserid.in_(part))
        ):
            anchors[user_id][role_id].append((user_id, users[user_id].businessunitid))
    all_owner_teams = {t: bu for found in owner_teams.values() for t, bu in found.items()}
    if all_owner_teams:
        tr = store.sql_table("teamroles")
        team_roles: dict[RecordId, list[RecordId]] = defaultdict(list)
        for part in _chunks(all_owner_teams):
            for team_id, role_id in conn.execute(
                sa.select(tr.c.teamid, tr.c.roleid).where(tr.c.teamid.in_(part))
            ):
                team_roles[team_id].append(role_id)
        for user_id, found in owner_teams.items():
            for team_id in sorted(found):
                for role_id in team_roles.get(team_id, ()):
                    anchors[user_id][role_id].append((team_id, all_owner_teams[team_id]))

    # the active roles among them, which of those make an administrator, their privileges
    role_ids = set().union(*(a.keys() for a in anchors.values()))
    active: set[RecordId] = set()
    administrators: set[RecordId] = set()
    privileges: dict[RecordId, list[tuple[str, Privilege, Depth]]] = defaultdict(list)
    if role_ids:
        role = store.sql_table("role")
        rp = store.sql_table("roleprivilege")
        for part in _chunks(role_ids):
            for role_id, admin in conn.execute(
                sa.select(role.c.roleid, role.c.isadministrator).where(
                    role.c.roleid.in_(part), role.c.statecode == 0
                )
            ):
                active.add(role_id)
                if admin is True:
                    administrators.add(role_id)
        for part in _chunks(active):
            for role_id, table, privilege, depth in conn.execute(
                sa.select(rp.c.roleid, rp.c.tablename, rp.c.privilege, rp.c.depth).where(
                    rp.c.roleid.in_(part), rp.c.depth > 0
                )
            ):
                privileges[role_id].append((table, Privilege(privilege), Depth(depth)))

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
    reports = (
        reports_below_many(conn, store, users, hierarchy.depth)
        if hierarchy.enabled
        else dict.fromkeys(users, ())
    )

    # the tables shared with each user or one of their teams
    poa = store.sql_table("principalobjectaccess")
    member_of = {u: frozenset(t.teamid for t in teams.get(u, ())) for u in users}
    principals = {u: {u, *member_of[u]} for u in users}
    shared_with: dict[RecordId, set[str]] = defaultdict(set)
    for part in _chunks(set().union(*principals.values())):
        for principal, table in conn.execute(
            sa.select(poa.c.principalid, poa.c.objecttypecode)
            .distinct()
            .where(poa.c.principalid.in_(part))
        ):
            shared_with[principal].add(table)

    tree = unit_tree(conn, store)
    out = {}
    for user_id, user in users.items():
        grants: dict[tuple[str, Privilege], list[Grant]] = defaultdict(list)
        for role_id, where in anchors[user_id].items():
            if role_id not in active:
                continue
            for table, privilege, depth in privileges.get(role_id, ()):
                for owner, unit in where:
                    grants[(table, privilege)].append(Grant(depth, owner, unit))
        for table, inherent in INHERENT_PRIVILEGES.items():
            for privilege, depth in inherent.items():
                grants[(table, privilege)].append(Grant(depth, user_id, user.businessunitid))
        own = owner_teams.get(user_id, {})
        out[user_id] = SecurityContext(
            user_id=user_id,
            business_unit_id=user.businessunitid,
            teams=member_of[user_id],
            owner_teams=frozenset(own),
            grants={k: _dedupe(v) for k, v in grants.items()},
            unit_tree=tree,
            reports=reports[user_id],
            hierarchy=hierarchy,
            shared_tables=frozenset().union(*(shared_with.get(p, ()) for p in principals[user_id])),
            language=int(user.uilanguageid or 1033),
            administrator=bool(administrators & set(anchors[user_id])),
            username=user.domainname,
        )
    return out


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
    stamp, so the next request of every process loads afresh. A context is kept only when
    its stamp is at or below the version horizon (:mod:`fieldsync.store.versions`) known
    before the stamp was read: every smaller version was then committed or rolled back for
    good, so no change still in flight can commit later *below* the stamp and leave it
    unchanged (on PostgreSQL writers may commit out of version order). Otherwise the context
    is loaded and used, not kept. A pruned log can only move the stamp (never hide a change
    behind an equal one): the entry is then reloaded once, which is safe.
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

    def _stamp(self, conn: sa.Connection, given: Stamp | None = None) -> tuple[Stamp, bool]:
        """The stamp (``given``: already read in ``conn``), and whether a context loaded after
        it may be kept: nothing can still commit below it (it is at or below a horizon
        computed before it was read)."""
        clock = self.store.clock
        known = clock.known  # a horizon computed before this stamp is read
        stamp = context_stamp(conn) if given is None else given
        if not clock.sequenced or stamp[0] <= known:
            return stamp, True  # the counter hands versions out in commit order
        # a change newer than the horizon known: read the horizon now (for the next requests
        # too), then the stamp again (in that order), so the stamp kept is one nothing can
        # commit below; a stamp given was read before, and is not kept
        known = self.store.current_version(conn)
        if given is not None:
            return stamp, False
        stamp = context_stamp(conn)
        return stamp, stamp[0] <= known

    def _get(self, user_id: RecordId, conn: sa.Connection, stamp: Stamp | None) -> SecurityContext:
        stamp, final = self._stamp(conn, stamp)
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
            if not final:
                pass  # a change below the stamp may still commit: use it, do not keep it
            elif held is None or held.stamp[0] <= stamp[0]:  # never replace a newer load
                self._entries[user_id] = _Entry(stamp, ctx)
                self._entries.move_to_end(user_id)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)
        return ctx

    def get_many(
        self, user_ids: Iterable[RecordId], conn: sa.Connection
    ) -> dict[RecordId, SecurityContext]:
        """The contexts of the enabled users among ``user_ids`` (disabled and unknown users
        are left out): the held ones still current, the others loaded together
        (:func:`load_contexts`) and kept. One stamp read for all of them."""
        stamp, final = self._stamp(conn)
        out: dict[RecordId, SecurityContext] = {}
        missing = []
        with self._lock:
            for user_id in dict.fromkeys(user_ids):
                found = self._entries.get(user_id)
                if user_id == SYSTEM_USER_ID:
                    out[user_id] = SYSTEM_CONTEXT
                elif found is not None and found.stamp == stamp:
                    self._entries.move_to_end(user_id)
                    self.hits += 1
                    out[user_id] = found.context
                else:
                    missing.append(user_id)
        loaded = _load_many(self.store, conn, missing)
        with self._lock:
            self.loads += len(loaded)
            for user_id, ctx in loaded.items():
                held = self._entries.get(user_id)
                if final and (held is None or held.stamp[0] <= stamp[0]):
                    self._entries[user_id] = _Entry(stamp, ctx)
                    self._entries.move_to_end(user_id)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)
        out.update(loaded)
        return out

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


def _dedupe(grants: list[Grant]) -> tuple[Grant, ...]:
    if len(grants) == 1:  # most (table, privilege) pairs: nothing to sort
        return (grants[0],)
    return tuple(dict.fromkeys(sorted(grants, key=lambda g: (-g.depth, str(g.owner)))))


def user_binding(store: Store, conn: sa.Connection, ctx: SecurityContext) -> UserBinding:
    """What the query language's user operators need: the caller, their teams, everyone
    below them in the manager hierarchy (every level, whatever hierarchy security says) and
    those users' teams."""
    return user_bindings(store, conn, [ctx])[ctx.user_id]


def user_bindings(
    store: Store, conn: sa.Connection, contexts: Iterable[SecurityContext]
) -> dict[RecordId, UserBinding]:
    """:func:`user_binding` of many users at once (a query per level of the hierarchy and
    one for the teams, for all of them)."""
    chosen = {ctx.user_id: ctx for ctx in contexts}
    reports = reports_below_many(conn, store, chosen, HIERARCHY_LIMIT)
    below = {u: frozenset().union(*levels) for u, levels in reports.items()}
    teams_of: dict[RecordId, set[RecordId]] = defaultdict(set)
    everyone = set().union(*below.values())
    if everyone:
        tm = store.sql_table("teammembership")
        for part in _chunks(everyone):
            for user, team in conn.execute(
                sa.select(tm.c.systemuserid, tm.c.teamid).where(tm.c.systemuserid.in_(part))
            ):
                teams_of[user].add(team)
    return {
        u: UserBinding(
            user_id=u,
            business_unit_id=ctx.business_unit_id,
            teams=ctx.teams,
            hierarchy=below[u],
            hierarchy_teams=frozenset().union(*(teams_of.get(x, ()) for x in below[u])),
            language=ctx.language,
        )
        for u, ctx in chosen.items()
    }
