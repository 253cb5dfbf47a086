"""The predefined security roles and their privileges.

System Administrator reaches everything, on every table, including tables created later.
The others list their privileges per table; a table named here that does not exist yet is
picked up by the upgrade that creates it. Makers, customizers and administrators create,
read, write, delete and share mobile offline profiles, apps and views, and read who holds a
profile (only administrators change that); basic users read profiles, apps and views.

Some privileges every user holds whatever their roles (:data:`INHERENT_PRIVILEGES`): a user
reads the sync errors they own, the changes their own devices sent that the server rejected.
A role may reach further (a manager reading their business unit's sync errors), never less.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from fieldsync.security.model import Depth, Privilege

P = Privilege
D = Depth

RECORD = (P.CREATE, P.READ, P.WRITE, P.DELETE, P.APPEND, P.APPEND_TO, P.ASSIGN, P.SHARE)
MAKER = (P.CREATE, P.READ, P.WRITE, P.DELETE, P.SHARE, P.APPEND, P.APPEND_TO)
BUSINESS_TABLES = ("account", "contact", "workorder")
ORGANISATION_TABLES = ("businessunit", "systemuser", "team", "organization")
SYNC_ERRORS = ("syncerror",)
PROFILE_TABLES = (
    "mobileofflineprofile",
    "mobileofflineprofileitem",
    "mobileofflineprofileitemassociation",
)
APP_TABLES = ("appmodule", "savedquery")
MEMBERSHIP_TABLES = ("usermobileofflineprofilemembership", "teammobileofflineprofilemembership")


# held by every user on top of their roles' privileges: their own sync errors (syncerror is
# user-owned, and a rejected change's error is owned by the user whose device sent it)
INHERENT_PRIVILEGES: Mapping[str, Mapping[Privilege, Depth]] = {"syncerror": {P.READ: D.USER}}


@dataclass(frozen=True)
class RoleSpec:
    name: str
    description: str
    administrator: bool = False
    privileges: Mapping[str, Mapping[Privilege, Depth]] = field(default_factory=dict)


def _grant(
    tables: tuple[str, ...], privileges: tuple[Privilege, ...], depth: Depth
) -> dict[str, dict[Privilege, Depth]]:
    return {t: dict.fromkeys(privileges, depth) for t in tables}


def _merge(*parts: dict[str, dict[Privilege, Depth]]) -> dict[str, dict[Privilege, Depth]]:
    out: dict[str, dict[Privilege, Depth]] = {}
    for part in parts:
        for table, privs in part.items():
            mine = out.setdefault(table, {})
            for p, d in privs.items():
                mine[p] = max(mine.get(p, D.NONE), d)
    return out


SYSTEM_ADMINISTRATOR = "System Administrator"
SYSTEM_CUSTOMIZER = "System Customizer"
ENVIRONMENT_MAKER = "Environment Maker"
BASIC_USER = "Basic User"

PREDEFINED_ROLES: tuple[RoleSpec, ...] = (
    RoleSpec(
        SYSTEM_ADMINISTRATOR,
        "Full access to every table and every row, including tables created later.",
        administrator=True,
    ),
    RoleSpec(
        SYSTEM_CUSTOMIZER,
        "Customises the environment; sees the data they own.",
        privileges=_merge(
            _grant(PROFILE_TABLES + APP_TABLES, MAKER, D.ORGANIZATION),
            _grant(MEMBERSHIP_TABLES, (P.READ,), D.ORGANIZATION),
            _grant(ORGANISATION_TABLES, (P.READ,), D.ORGANIZATION),
            _grant(BUSINESS_TABLES, RECORD, D.USER),
        ),
    ),
    RoleSpec(
        ENVIRONMENT_MAKER,
        "Builds apps and offline profiles.",
        privileges=_merge(
            _grant(PROFILE_TABLES + APP_TABLES, MAKER, D.ORGANIZATION),
            _grant(MEMBERSHIP_TABLES, (P.READ,), D.ORGANIZATION),
            _grant(ORGANISATION_TABLES, (P.READ,), D.ORGANIZATION),
        ),
    ),
    RoleSpec(
        BASIC_USER,
        "Works with the rows they own and uses offline apps.",
        privileges=_merge(
            _grant(BUSINESS_TABLES, RECORD, D.USER),
            _grant(ORGANISATION_TABLES, (P.READ,), D.ORGANIZATION),
            _grant(PROFILE_TABLES + APP_TABLES, (P.READ,), D.ORGANIZATION),
            _grant(SYNC_ERRORS, (P.READ, P.WRITE, P.DELETE), D.USER),
        ),
    ),
)
