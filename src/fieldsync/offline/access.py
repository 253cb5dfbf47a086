"""Who takes which app offline, with which published profile.

:func:`offline_access` is the one question sync asks at every handshake. An app is found by
id or unique name, and the answer is the app's offline settings with the latest published
version of its profile, or an error that says why not:

- the app does not exist, or the user may not read apps: :class:`NotFound` (404);
- the app is not enabled for offline, has no profile, its profile is not published, the user
  lacks Read on ``mobileofflineprofile``, or the app is restricted to selected users and the
  user is neither a member of the profile nor in a member team:
  :class:`OfflineNotAvailable` (403).

Team membership is read live at every call, so a change to a group team's members takes
effect at the next sync, without removing and adding the team again (Dataverse needs that).
Adding and removing members needs administrator rights (the membership tables grant writes
to no predefined role but System Administrator).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from fieldsync.errors import BadRequest, NotFound, OfflineNotAvailable
from fieldsync.offline.profiles import PROFILE, as_id, published_profile
from fieldsync.offline.rules import TEAM_MEMBERSHIP, USER_MEMBERSHIP
from fieldsync.offline.snapshot import AppOfflineSettings, OfflineAccess, OfflineMode
from fieldsync.records.service import SYSTEM, Records
from fieldsync.security.model import Privilege, SecurityContext
from fieldsync.security.predicate import has_privilege
from fieldsync.store.store import Store
from fieldsync.types import RecordId, Row, as_uuid

APP = "appmodule"
DEFAULT_MODE, RESTRICTED_MODE = 0, 1


def find_app(conn: sa.Connection, store: Store, app: uuid.UUID | str) -> Row:
    """An app row by id or unique name (as the platform; callers authorize)."""
    sql = store.sql_table(APP)
    if isinstance(app, uuid.UUID):
        where = sql.c.appmoduleid == app
    else:
        try:
            where = sql.c.appmoduleid == as_uuid(app)
        except ValueError:
            where = sa.func.lower(sql.c.uniquename) == app.strip().lower()
    row = conn.execute(sa.select(sql).where(where)).first()
    if row is None:
        raise NotFound(f"no app {str(app)!r}")
    return dict(row._mapping)


def app_settings(row: Row) -> AppOfflineSettings:
    return AppOfflineSettings(
        app_id=row["appmoduleid"],
        name=row["name"],
        can_be_used_offline=bool(row["canbeusedoffline"]),
        mode=OfflineMode(row["offlinemode"] or 0),
        allow_sync_frequency=bool(row["allowsyncfrequency"]),
        allow_wifi_only=bool(row["allowwifionly"]),
    )


def offline_access(
    store: Store, conn: sa.Connection, ctx: SecurityContext, app: uuid.UUID | str
) -> OfflineAccess:
    """The app's offline settings and published profile for ``ctx``'s user, or a clear
    error saying why the user cannot take the app offline."""
    if not has_privilege(ctx, store.schema.table(APP), Privilege.READ):
        raise NotFound(f"no app {str(app)!r} that you can use")
    row = find_app(conn, store, app)
    name = row["name"]
    if not row["canbeusedoffline"]:
        raise OfflineNotAvailable(f"app {name!r} is not enabled for offline use")
    profile_id = row["mobileofflineprofileid"]
    if profile_id is None:
        raise OfflineNotAvailable(f"app {name!r} has no offline profile")
    if not has_privilege(ctx, store.schema.table(PROFILE), Privilege.READ):
        raise OfflineNotAvailable(
            f"using app {name!r} offline needs Read on mobile offline profiles "
            "(mobileofflineprofile); the Basic User role grants it"
        )
    profile = published_profile(conn, profile_id)
    if profile is None:
        raise OfflineNotAvailable(f"the offline profile of app {name!r} has not been published")
    if row["offlineprofilemode"] == RESTRICTED_MODE and not is_member(
        store, conn, ctx.user_id, profile_id
    ):
        raise OfflineNotAvailable(
            f"app {name!r} is offline only for selected users, and {ctx.username or ctx.user_id} "
            f"is not one of them (add the user, or a team of theirs, to profile {profile.name!r})"
        )
    return OfflineAccess(app=app_settings(row), profile=profile)


def is_member(store: Store, conn: sa.Connection, user: RecordId, profile: RecordId) -> bool:
    """Whether the user holds the profile directly or through an enabled team they are in
    now (read live: group team changes count at once)."""
    um = store.sql_table(USER_MEMBERSHIP)
    if conn.execute(
        sa.select(um.c.systemuserid).where(
            um.c.systemuserid == user, um.c.mobileofflineprofileid == profile, um.c.statecode == 0
        )
    ).first():
        return True
    tm, m, team = (
        store.sql_table(TEAM_MEMBERSHIP),
        store.sql_table("teammembership"),
        store.sql_table("team"),
    )
    return (
        conn.execute(
            sa.select(tm.c.teamid)
            .join(m, m.c.teamid == tm.c.teamid)
            .join(team, team.c.teamid == tm.c.teamid)
            .where(
                m.c.systemuserid == user,
                tm.c.mobileofflineprofileid == profile,
                tm.c.statecode == 0,
                sa.or_(team.c.isdisabled.is_(None), team.c.isdisabled.is_(False)),
            )
            .limit(1)
        ).first()
        is not None
    )


@dataclass(frozen=True)
class ProfileMembers:
    """Who holds a profile: users added one by one, teams, and every user it reaches (the
    users added plus the current members of the teams)."""

    users: tuple[RecordId, ...]
    teams: tuple[RecordId, ...]
    effective_users: tuple[RecordId, ...]


def profile_members(
    records: Records,
    profile_id: RecordId | str,
    *,
    caller: SecurityContext = SYSTEM,
    conn: sa.Connection | None = None,
) -> ProfileMembers:
    """The members of a profile, read as ``caller`` (makers, customizers and
    administrators may read them)."""
    pid = as_id(profile_id)
    records.retrieve(PROFILE, pid, columns=["name"], caller=caller, conn=conn)
    users = [
        r["systemuserid"]
        for r in records.retrieve_multiple(
            USER_MEMBERSHIP, where={"mobileofflineprofileid": pid}, caller=caller, conn=conn
        )
    ]
    teams = [
        r["teamid"]
        for r in records.retrieve_multiple(
            TEAM_MEMBERSHIP, where={"mobileofflineprofileid": pid}, caller=caller, conn=conn
        )
    ]
    reached = set(users)
    if teams:
        m = records.store.sql_table("teammembership")
        stmt = sa.select(m.c.systemuserid).where(m.c.teamid.in_(teams))
        if conn is None:
            with records.store.read() as c:
                reached.update(c.execute(stmt).scalars())
        else:
            reached.update(conn.execute(stmt).scalars())
    return ProfileMembers(
        tuple(sorted(users, key=str)),
        tuple(sorted(teams, key=str)),
        tuple(sorted(reached, key=str)),
    )


def add_members(
    records: Records,
    profile_id: RecordId | str,
    *,
    users: list[RecordId] | tuple[RecordId, ...] = (),
    teams: list[RecordId] | tuple[RecordId, ...] = (),
    caller: SecurityContext = SYSTEM,
) -> int:
    """Give the profile to users and teams (those who hold it already are skipped); returns
    how many were added. Needs administrator rights; no republish is needed."""
    pid = as_id(profile_id)

    def work(conn: sa.Connection) -> int:
        added = 0
        records.retrieve(PROFILE, pid, columns=["name"], caller=caller, conn=conn)
        current = profile_members(records, pid, caller=SYSTEM, conn=conn)
        for table, column, ids, have in (
            (USER_MEMBERSHIP, "systemuserid", users, current.users),
            (TEAM_MEMBERSHIP, "teamid", teams, current.teams),
        ):
            for rid in dict.fromkeys(ids):
                if rid not in have:
                    values: dict[str, Any] = {column: rid, "mobileofflineprofileid": pid}
                    records.create(table, values, caller=caller, conn=conn)
                    added += 1
        return added

    return records.store.transact(work)


def remove_members(
    records: Records,
    profile_id: RecordId | str,
    *,
    users: list[RecordId] | tuple[RecordId, ...] = (),
    teams: list[RecordId] | tuple[RecordId, ...] = (),
    caller: SecurityContext = SYSTEM,
) -> int:
    """Take the profile from users and teams; returns how many were removed."""
    pid = as_id(profile_id)

    def work(conn: sa.Connection) -> int:
        removed = 0
        for table, column, ids in (
            (USER_MEMBERSHIP, "systemuserid", users),
            (TEAM_MEMBERSHIP, "teamid", teams),
        ):
            for rid in ids:
                rows = records.retrieve_multiple(
                    table,
                    where={column: rid, "mobileofflineprofileid": pid},
                    caller=caller,
                    conn=conn,
                )
                if not rows:
                    raise BadRequest(f"{column} {rid} does not hold this profile")
                for row in rows:
                    records.delete(table, row[f"{table}id"], caller=caller, conn=conn)
                    removed += 1
        return removed

    return records.store.transact(work)
