"""Administering the organisation: business units, users, teams, roles, shares and the
hierarchy settings, by name, through the records service (so every change is authorised,
validated by the organisation rules, versioned and visible to sync)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import sqlalchemy as sa

from fieldsync.errors import BadRequest, NotFound
from fieldsync.identity.auth import Authenticator
from fieldsync.records.service import SYSTEM, Records
from fieldsync.schema.builtin import ORGANIZATION_ID, ROOT_BUSINESS_UNIT_ID
from fieldsync.security.model import Depth, Privilege, SecurityContext
from fieldsync.security.roles import PREDEFINED_ROLES
from fieldsync.types import EntityRef, RecordId

TEAM_TYPES = {"owner": 0, "access": 1, "group": 2, "securitygroup": 2, "officegroup": 3}
MEMBERSHIP = "teammembership_association"
USER_ROLES = "systemuserroles_association"
TEAM_ROLES = "teamroles_association"


class Organisation:
    """The organisation's administration API.

    >>> org = Organisation(records, auth)                                  # doctest: +SKIP
    >>> north = org.business_unit("North")                                 # doctest: +SKIP
    >>> ann = org.user("ann", business_unit=north, password="s3cret-pass") # doctest: +SKIP
    >>> org.assign_role(EntityRef("systemuser", ann), org.role_id("Basic User"))  # doctest: +SKIP
    """

    def __init__(self, records: Records, auth: Authenticator | None = None) -> None:
        self.records = records
        self.store = records.store
        self.auth = auth

    # -- finding by name ------------------------------------------------------------------

    def _find(self, table: str, column: str, value: str, what: str) -> RecordId:
        sql = self.store.sql_table(table)
        pk = sql.c[f"{table}id"]
        with self.store.read() as conn:
            ids = list(
                conn.execute(
                    sa.select(pk).where(sa.func.lower(sql.c[column]) == value.strip().lower())
                ).scalars()
            )
        if not ids:
            raise NotFound(f"no {what} named {value!r}")
        if len(ids) > 1:
            raise BadRequest(f"{len(ids)} {what}s are named {value!r}; use an id")
        found: RecordId = ids[0]
        return found

    def user_id(self, username: str) -> RecordId:
        return self._find("systemuser", "domainname", username, "user")

    def team_id(self, name: str) -> RecordId:
        return self._find("team", "name", name, "team")

    def unit_id(self, name: str) -> RecordId:
        return self._find("businessunit", "name", name, "business unit")

    def role_id(self, name: str) -> RecordId:
        return self._find("role", "name", name, "role")

    # -- business units, users, teams -----------------------------------------------------

    def business_unit(
        self, name: str, parent: RecordId | None = None, *, caller: SecurityContext = SYSTEM
    ) -> RecordId:
        return self.records.create(
            "businessunit",
            {"name": name, "parentbusinessunitid": parent or ROOT_BUSINESS_UNIT_ID},
            caller=caller,
        )

    def user(
        self,
        username: str,
        *,
        business_unit: RecordId | None = None,
        manager: RecordId | None = None,
        firstname: str | None = None,
        lastname: str | None = None,
        email: str | None = None,
        title: str | None = None,
        password: str | None = None,
        roles: Iterable[RecordId] = (),
        caller: SecurityContext = SYSTEM,
    ) -> RecordId:
        values: dict[str, Any] = {
            "domainname": username,
            "businessunitid": business_unit or ROOT_BUSINESS_UNIT_ID,
            "isdisabled": False,
        }
        optional = {
            "parentsystemuserid": manager,
            "firstname": firstname,
            "lastname": lastname,
            "internalemailaddress": email,
            "title": title,
        }
        values.update({k: v for k, v in optional.items() if v is not None})
        role_ids = list(roles)
        hashed = None
        if password is not None:
            if self.auth is None:
                raise BadRequest("passwords need the authenticator")
            hashed = self.auth.hash_password(password)  # slow on purpose: before the lock
        auth = self.auth

        def work(conn: sa.Connection) -> RecordId:
            user = self.records.create("systemuser", values, caller=caller, conn=conn)
            for role in role_ids:
                self.records.associate(USER_ROLES, user, role, caller=caller, conn=conn)
            if hashed is not None and auth is not None:
                auth.set_password_hash(user, hashed, conn=conn)
            return user

        return self.store.transact(work)

    def set_manager(
        self, user: RecordId, manager: RecordId | None, *, caller: SecurityContext = SYSTEM
    ) -> None:
        self.records.update("systemuser", user, {"parentsystemuserid": manager}, caller=caller)

    def move_user(
        self, user: RecordId, unit: RecordId, *, caller: SecurityContext = SYSTEM
    ) -> None:
        """Move a user to another business unit; the rows they own move with them."""
        self.records.update("systemuser", user, {"businessunitid": unit}, caller=caller)

    def set_user_enabled(
        self, user: RecordId, enabled: bool, *, caller: SecurityContext = SYSTEM
    ) -> None:
        """A disabled user is refused at once, whatever token they hold."""
        self.records.update("systemuser", user, {"isdisabled": not enabled}, caller=caller)
        if not enabled and self.auth is not None:
            self.auth.sign_out_everywhere(user)

    def team(
        self,
        name: str,
        business_unit: RecordId | None = None,
        *,
        kind: str = "owner",
        members: Iterable[RecordId] = (),
        group_id: str | None = None,
        caller: SecurityContext = SYSTEM,
    ) -> RecordId:
        if kind not in TEAM_TYPES:
            raise BadRequest(f"unknown team type {kind!r}: use owner, access or group")
        values: dict[str, Any] = {
            "name": name,
            "teamtype": TEAM_TYPES[kind],
            "businessunitid": business_unit or ROOT_BUSINESS_UNIT_ID,
            "isdisabled": False,
        }
        if group_id is not None:
            values["azureactivedirectoryobjectid"] = group_id
        member_ids = list(members)

        def work(conn: sa.Connection) -> RecordId:
            team = self.records.create("team", values, caller=caller, conn=conn)
            for member in member_ids:
                self.records.associate(MEMBERSHIP, member, team, caller=caller, conn=conn)
            return team

        return self.store.transact(work)

    def set_team_enabled(
        self, team: RecordId, enabled: bool, *, caller: SecurityContext = SYSTEM
    ) -> None:
        self.records.update("team", team, {"isdisabled": not enabled}, caller=caller)

    def members(self, team: RecordId) -> set[RecordId]:
        with self.store.read() as conn:
            return self._members(conn, team)

    def team_members(self, teams: Iterable[RecordId]) -> dict[RecordId, list[RecordId]]:
        """The members of each of ``teams`` (teams without members left out)."""
        wanted = list(teams)
        found: dict[RecordId, list[RecordId]] = {}
        if not wanted:
            return found
        tm = self.store.sql_table("teammembership")
        with self.store.read() as conn:
            for team, user in conn.execute(
                sa.select(tm.c.teamid, tm.c.systemuserid).where(tm.c.teamid.in_(wanted))
            ):
                found.setdefault(team, []).append(user)
        return found

    def _members(self, conn: sa.Connection, team: RecordId) -> set[RecordId]:
        tm = self.store.sql_table("teammembership")
        return set(conn.execute(sa.select(tm.c.systemuserid).where(tm.c.teamid == team)).scalars())

    def add_members(
        self, team: RecordId, users: Iterable[RecordId], *, caller: SecurityContext = SYSTEM
    ) -> int:
        wanted = list(users)

        def work(conn: sa.Connection) -> int:
            current = self._members(conn, team)
            added = 0
            for user in wanted:
                if user not in current:
                    self.records.associate(MEMBERSHIP, user, team, caller=caller, conn=conn)
                    current.add(user)
                    added += 1
            return added

        return self.store.transact(work)

    def remove_members(
        self, team: RecordId, users: Iterable[RecordId], *, caller: SecurityContext = SYSTEM
    ) -> int:
        unwanted = list(users)

        def work(conn: sa.Connection) -> int:
            current = self._members(conn, team)
            removed = 0
            for user in unwanted:
                if user in current:
                    self.records.disassociate(MEMBERSHIP, user, team, caller=caller, conn=conn)
                    current.discard(user)
                    removed += 1
            return removed

        return self.store.transact(work)

    def refresh_group(
        self, team: RecordId, usernames: Iterable[str], *, caller: SecurityContext = SYSTEM
    ) -> tuple[int, int]:
        """Make a group team's members exactly the named users (the external group's
        members, from a file or an API call). Unknown user names are an error and change
        nothing. Returns (added, removed)."""
        row = self.records.retrieve("team", team, columns=["teamtype"], caller=caller)
        if row["teamtype"] not in (2, 3):
            raise BadRequest("only group teams take their members from an external group")
        wanted = {self.user_id(name) for name in usernames if name.strip()}

        def work(conn: sa.Connection) -> tuple[int, int]:
            current = self._members(conn, team)
            for user in sorted(wanted - current):
                self.records.associate(MEMBERSHIP, user, team, caller=caller, conn=conn)
            for user in sorted(current - wanted):
                self.records.disassociate(MEMBERSHIP, user, team, caller=caller, conn=conn)
            return len(wanted - current), len(current - wanted)

        return self.store.transact(work)

    # -- roles ----------------------------------------------------------------------------

    def role(
        self,
        name: str,
        *,
        business_unit: RecordId | None = None,
        privileges: Mapping[str, Mapping[Privilege | str, Depth | str | int]] | None = None,
        administrator: bool = False,
        description: str | None = None,
        managed: bool = False,
        caller: SecurityContext = SYSTEM,
    ) -> RecordId:
        values: dict[str, Any] = {
            "name": name,
            "businessunitid": business_unit or ROOT_BUSINESS_UNIT_ID,
            "isadministrator": administrator,
            "ismanaged": managed,
        }
        if description:
            values["description"] = description

        def work(conn: sa.Connection) -> RecordId:
            role = self.records.create("role", values, caller=caller, conn=conn)
            for table, privs in (privileges or {}).items():
                for privilege, depth in privs.items():
                    self._set_privilege(conn, role, table, privilege, depth, caller)
            return role

        return self.store.transact(work)

    def set_privilege(
        self,
        role: RecordId,
        table: str,
        privilege: Privilege | str,
        depth: Depth | str | int,
        *,
        caller: SecurityContext = SYSTEM,
    ) -> None:
        self.store.transact(
            lambda conn: self._set_privilege(conn, role, table, privilege, depth, caller)
        )

    def _set_privilege(
        self,
        conn: sa.Connection,
        role: RecordId,
        table: str,
        privilege: Privilege | str,
        depth: Depth | str | int,
        caller: SecurityContext,
    ) -> None:
        try:
            p = privilege if isinstance(privilege, Privilege) else Privilege.parse(privilege)
            d = depth if isinstance(depth, Depth) else Depth.parse(depth)
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        self.store.schema.table(table)
        existing = self.records.retrieve_multiple(
            "roleprivilege",
            where={"roleid": role, "tablename": table, "privilege": int(p)},
            columns=["depth"],
            caller=caller,
            conn=conn,
        )
        if existing:
            if existing[0]["depth"] != int(d):
                self.records.update(
                    "roleprivilege",
                    existing[0]["roleprivilegeid"],
                    {"depth": int(d)},
                    caller=caller,
                    conn=conn,
                )
        else:
            self.records.create(
                "roleprivilege",
                {"roleid": role, "tablename": table, "privilege": int(p), "depth": int(d)},
                caller=caller,
                conn=conn,
            )

    def assign_role(
        self, principal: EntityRef, role: RecordId, *, caller: SecurityContext = SYSTEM
    ) -> None:
        relationship = USER_ROLES if principal.table == "systemuser" else TEAM_ROLES
        if principal.table not in ("systemuser", "team"):
            raise BadRequest("roles are assigned to users and teams")
        self.records.associate(relationship, principal.id, role, caller=caller)

    def remove_role(
        self, principal: EntityRef, role: RecordId, *, caller: SecurityContext = SYSTEM
    ) -> None:
        relationship = USER_ROLES if principal.table == "systemuser" else TEAM_ROLES
        self.records.disassociate(relationship, principal.id, role, caller=caller)

    def ensure_predefined_roles(self) -> list[str]:
        """Create the predefined roles and add any privilege they lack (for tables created
        since); never lowers what an administrator changed. Returns what it did."""
        role_sql = self.store.sql_table("role")
        rp = self.store.sql_table("roleprivilege")

        def work(conn: sa.Connection) -> list[str]:
            done: list[str] = []
            for spec in PREDEFINED_ROLES:
                role = conn.execute(
                    sa.select(role_sql.c.roleid).where(
                        role_sql.c.name == spec.name, role_sql.c.ismanaged.is_(True)
                    )
                ).scalar()
                if role is None:
                    role = self.records.create(
                        "role",
                        {
                            "name": spec.name,
                            "businessunitid": ROOT_BUSINESS_UNIT_ID,
                            "isadministrator": spec.administrator,
                            "ismanaged": True,
                            "description": spec.description,
                        },
                        conn=conn,
                    )
                    done.append(f"create role {spec.name}")
                have = {
                    (t, p)
                    for t, p in conn.execute(
                        sa.select(rp.c.tablename, rp.c.privilege).where(rp.c.roleid == role)
                    )
                }
                rows = [
                    {"roleid": role, "tablename": table, "privilege": int(p), "depth": int(d)}
                    for table, privs in spec.privileges.items()
                    if table in self.store.schema
                    for p, d in privs.items()
                    if (table, int(p)) not in have
                ]
                if rows:
                    self.records.create_many("roleprivilege", rows, conn=conn)
                    done.append(f"grant {len(rows)} privileges to {spec.name}")
            return done

        return self.store.transact(work)

    # -- hierarchy ------------------------------------------------------------------------

    def set_hierarchy(
        self,
        *,
        enabled: bool,
        depth: int | None = None,
        managers_write: bool | None = None,
        caller: SecurityContext = SYSTEM,
    ) -> None:
        values: dict[str, Any] = {"hierarchysecurity": enabled}
        if depth is not None:
            values["hierarchydepth"] = depth
        if managers_write is not None:
            values["hierarchymanagerwrite"] = managers_write
        self.records.update("organization", ORGANIZATION_ID, values, caller=caller)
