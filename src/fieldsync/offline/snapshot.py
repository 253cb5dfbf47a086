"""A published offline profile: the immutable snapshot that devices sync against.

Publishing a profile (``fieldsync.offline``) freezes its draft items into a
:class:`PublishedProfile` with a new version number. Sync reads only these snapshots, never
the drafts, so a maker can edit a draft while devices keep using the last published version.
The snapshot serialises to JSON (``to_json`` / ``from_json``) for storage and for the sync
handshake.
"""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from dataclasses import dataclass, field
from typing import Any


class Distribution(enum.IntEnum):
    """``recorddistributioncriteria``: which rows of a table an item downloads."""

    RELATED = 0  # related rows only (through the item's relationships)
    ALL = 1  # all rows (the user may read)
    OTHER = 2  # rows owned by the user / the user's teams / the user's business unit
    CUSTOM = 3  # a custom FetchXML filter


@dataclass(frozen=True)
class RelationshipRef:
    """A relationship an item follows: rows of the item's table linked through
    ``relationship`` (a schema relationship name) to rows in scope of ``related_table``."""

    relationship: str
    related_table: str

    def to_json(self) -> dict[str, Any]:
        return {"relationship": self.relationship, "related_table": self.related_table}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RelationshipRef:
        return cls(str(data["relationship"]), str(data["related_table"]))


@dataclass(frozen=True)
class ItemSnapshot:
    """One table of a published profile."""

    table: str
    distribution: Distribution
    owned_by_me: bool = False
    owned_by_my_teams: bool = False
    owned_by_my_business_unit: bool = False
    custom_filter: str | None = None  # FetchXML, when distribution is CUSTOM
    relationships: tuple[RelationshipRef, ...] = ()
    file_columns: tuple[str, ...] = ()  # all of the table's file columns, or none
    image_columns: tuple[str, ...] = ()  # chosen one by one
    sync_interval_minutes: int = 15
    columns: tuple[str, ...] = ()  # the columns taken offline; empty: every column

    def to_json(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "distribution": int(self.distribution),
            "owned_by_me": self.owned_by_me,
            "owned_by_my_teams": self.owned_by_my_teams,
            "owned_by_my_business_unit": self.owned_by_my_business_unit,
            "custom_filter": self.custom_filter,
            "relationships": [r.to_json() for r in self.relationships],
            "file_columns": list(self.file_columns),
            "image_columns": list(self.image_columns),
            "sync_interval_minutes": self.sync_interval_minutes,
            "columns": list(self.columns),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ItemSnapshot:
        return cls(
            table=str(data["table"]),
            distribution=Distribution(int(data["distribution"])),
            owned_by_me=bool(data.get("owned_by_me", False)),
            owned_by_my_teams=bool(data.get("owned_by_my_teams", False)),
            owned_by_my_business_unit=bool(data.get("owned_by_my_business_unit", False)),
            custom_filter=data.get("custom_filter"),
            relationships=tuple(RelationshipRef.from_json(r) for r in data["relationships"]),
            file_columns=tuple(data.get("file_columns", ())),
            image_columns=tuple(data.get("image_columns", ())),
            sync_interval_minutes=int(data.get("sync_interval_minutes", 15)),
            columns=tuple(data.get("columns", ())),
        )


@dataclass(frozen=True)
class PublishedProfile:
    """A profile as published: id, version (1, 2, … per profile) and its items."""

    profile_id: uuid.UUID
    name: str
    version: int
    published_on: dt.datetime
    items: tuple[ItemSnapshot, ...] = field(default=())

    def item(self, table: str) -> ItemSnapshot | None:
        return next((i for i in self.items if i.table == table), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "profile_id": str(self.profile_id),
            "name": self.name,
            "version": self.version,
            "published_on": self.published_on.isoformat(),
            "items": [i.to_json() for i in self.items],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PublishedProfile:
        return cls(
            profile_id=uuid.UUID(str(data["profile_id"])),
            name=str(data["name"]),
            version=int(data["version"]),
            published_on=dt.datetime.fromisoformat(str(data["published_on"])),
            items=tuple(ItemSnapshot.from_json(i) for i in data["items"]),
        )


class OfflineMode(enum.IntEnum):
    OFFLINE_FIRST = 0
    CLASSIC = 1


@dataclass(frozen=True)
class AppOfflineSettings:
    """What a device needs to know of its app: the offline switches the maker set."""

    app_id: uuid.UUID
    name: str
    can_be_used_offline: bool
    mode: OfflineMode = OfflineMode.OFFLINE_FIRST
    allow_sync_frequency: bool = False
    allow_wifi_only: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "app_id": str(self.app_id),
            "name": self.name,
            "can_be_used_offline": self.can_be_used_offline,
            "mode": int(self.mode),
            "allow_sync_frequency": self.allow_sync_frequency,
            "allow_wifi_only": self.allow_wifi_only,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AppOfflineSettings:
        return cls(
            app_id=uuid.UUID(str(data["app_id"])),
            name=str(data["name"]),
            can_be_used_offline=bool(data["can_be_used_offline"]),
            mode=OfflineMode(int(data.get("mode", 0))),
            allow_sync_frequency=bool(data.get("allow_sync_frequency", False)),
            allow_wifi_only=bool(data.get("allow_wifi_only", False)),
        )


@dataclass(frozen=True)
class OfflineAccess:
    """The answer to "may this user take this app offline, and with which data?"."""

    app: AppOfflineSettings
    profile: PublishedProfile
