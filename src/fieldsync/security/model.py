"""The security vocabulary: privileges, depths, access rights, and the security context of
one user (everything the predicates need, loaded once per request)."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

from fieldsync.schema.builtin import ROOT_BUSINESS_UNIT_ID, SYSTEM_USER_ID
from fieldsync.types import RecordId


class Privilege(enum.IntEnum):
    """Dataverse's record privileges; the value is also the share right bit."""

    CREATE = 1
    READ = 2
    WRITE = 4
    DELETE = 8
    APPEND = 16
    APPEND_TO = 32
    ASSIGN = 64
    SHARE = 128

    @classmethod
    def parse(cls, name: str) -> Privilege:
        key = name.strip().lower().replace("-", "").replace("_", "").replace(" ", "")
        for p in cls:
            if p.name.lower().replace("_", "") == key:
                return p
        raise ValueError(
            f"unknown privilege {name!r}: use one of "
            + ", ".join(p.name.lower().replace("_", "") for p in cls)
        )


class Depth(enum.IntEnum):
    """How far a privilege reaches (Dataverse's access levels)."""

    NONE = 0
    USER = 1  # Basic
    BUSINESS_UNIT = 2  # Local
    PARENT_CHILD = 3  # Deep
    ORGANIZATION = 4  # Global

    @classmethod
    def parse(cls, name: str | int) -> Depth:
        if isinstance(name, int):
            return cls(name)
        aliases = {
            "none": 0,
            "user": 1,
            "basic": 1,
            "businessunit": 2,
            "bu": 2,
            "local": 2,
            "parentchild": 3,
            "deep": 3,
            "organization": 4,
            "organisation": 4,
            "org": 4,
            "global": 4,
        }
        key = name.strip().lower().replace("-", "").replace("_", "").replace(" ", "")
        if key not in aliases:
            raise ValueError(
                f"unknown depth {name!r}: use none, user, businessunit, parentchild or organization"
            )
        return cls(aliases[key])


ALL_RIGHTS = sum(int(p) for p in Privilege)


@dataclass(frozen=True, slots=True)
class Grant:
    """A privilege at a depth, anchored at the user itself or at one of the user's teams
    (a team's roles reach from the team: its own rows, its business unit, …)."""

    depth: Depth
    owner: RecordId  # the user or the team the depth is measured from
    business_unit: RecordId  # that principal's business unit


@dataclass(frozen=True)
class HierarchySettings:
    enabled: bool = False
    depth: int = 3
    managers_write: bool = True


@dataclass(frozen=True)
class SecurityContext:
    """Who is calling, and everything their access depends on.

    ``grants`` maps (table, privilege) to the grants from the user's roles and from the roles
    of the teams they belong to. ``unit_tree`` maps every business unit to itself and all the
    units below it. ``reports`` lists the users below this one in the manager hierarchy, by
    level (level 1: direct reports)."""

    user_id: RecordId
    business_unit_id: RecordId
    teams: frozenset[RecordId] = frozenset()
    owner_teams: frozenset[RecordId] = frozenset()
    grants: Mapping[tuple[str, Privilege], tuple[Grant, ...]] = field(default_factory=dict)
    unit_tree: Mapping[RecordId, frozenset[RecordId]] = field(default_factory=dict)
    reports: tuple[frozenset[RecordId], ...] = ()
    hierarchy: HierarchySettings = HierarchySettings()
    shared_tables: frozenset[str] = frozenset()
    language: int = 1033
    is_system: bool = False
    administrator: bool = False
    username: str = ""

    @property
    def principals(self) -> tuple[RecordId, ...]:
        """The user and every team the user belongs to (share targets)."""
        return (self.user_id, *sorted(self.teams))

    def grants_for(self, table: str, privilege: Privilege) -> tuple[Grant, ...]:
        return self.grants.get((table, privilege), ())

    @property
    def unrestricted(self) -> bool:
        """SYSTEM and System Administrators reach every row of every table."""
        return self.is_system or self.administrator

    def max_depth(self, table: str, privilege: Privilege) -> Depth:
        if self.unrestricted:
            return Depth.ORGANIZATION
        grants = self.grants_for(table, privilege)
        return max((g.depth for g in grants), default=Depth.NONE)

    def subtree(self, unit: RecordId) -> frozenset[RecordId]:
        return self.unit_tree.get(unit, frozenset({unit}))


SYSTEM_CONTEXT = SecurityContext(
    user_id=SYSTEM_USER_ID,
    business_unit_id=ROOT_BUSINESS_UNIT_ID,
    is_system=True,
    username="system",
)
