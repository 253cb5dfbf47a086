"""The offline API in one object (``platform.offline``): profiles, publish, members, apps,
views, the generated profile and profile files."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import sqlalchemy as sa

from fieldsync.errors import NotFound
from fieldsync.offline import access, apps, profiles, tables, yaml_io
from fieldsync.offline.access import ProfileMembers
from fieldsync.offline.profiles import ITEM, PROFILE
from fieldsync.offline.snapshot import OfflineAccess, PublishedProfile
from fieldsync.offline.validation import ProfileDraft
from fieldsync.records.service import SYSTEM, Records
from fieldsync.schema.model import Table
from fieldsync.security.model import SecurityContext
from fieldsync.types import RecordId


class Offline:
    """>>> platform.offline.publish(profile_id, caller=maker)   # doctest: +SKIP"""

    def __init__(self, records: Records) -> None:
        self.records = records
        self.store = records.store

    def profile_id(self, ref: RecordId | str) -> RecordId:
        """A profile by id or name."""
        with self.store.read() as conn:
            return profiles.find_profile(conn, self.store, ref)

    def publish(
        self, profile: RecordId | str, *, caller: SecurityContext = SYSTEM
    ) -> PublishedProfile:
        return profiles.publish(self.records, self.profile_id(profile), caller=caller)

    def published_profile(
        self, profile: RecordId | str, version: int | None = None
    ) -> PublishedProfile | None:
        return profiles.published_profile(self.store, self.profile_id(profile), version)

    def access(
        self, ctx: SecurityContext, app: uuid.UUID | str, conn: sa.Connection | None = None
    ) -> OfflineAccess:
        if conn is not None:
            return access.offline_access(self.store, conn, ctx, app)
        with self.store.read() as c:
            return access.offline_access(self.store, c, ctx, app)

    def draft(self, profile: RecordId, *, caller: SecurityContext = SYSTEM) -> ProfileDraft:
        """The profile's draft as stored, once ``caller`` may read the profile."""
        self.records.retrieve(PROFILE, profile, columns=["name"], caller=caller)
        with self.store.read() as conn:
            return profiles.load_draft(conn, self.store, profile)

    def draft_item_ids(self, profile: RecordId) -> dict[str, RecordId]:
        """The ids of the draft's items by table (callers authorize reading the profile)."""
        with self.store.read() as conn:
            return {
                i["selectedentitytypecode"]: i[f"{ITEM}id"]
                for i, _ in profiles.load_items(conn, self.store, profile)
            }

    def change_draft(
        self,
        profile: RecordId,
        change: Callable[[ProfileDraft], ProfileDraft],
        *,
        caller: SecurityContext = SYSTEM,
    ) -> None:
        """Write ``change(draft)`` as the draft, as ``caller``, in one transaction (the
        draft is read inside it, so concurrent edits do not overwrite each other's)."""
        self.records.retrieve(PROFILE, profile, columns=["name"], caller=caller)
        self.store.transact(
            lambda conn: profiles.write_draft(
                self.records,
                conn,
                change(profiles.load_draft(conn, self.store, profile)),
                profile_id=profile,
                caller=caller,
            )
        )

    def remove_draft_item(
        self, profile: RecordId, table: str, *, caller: SecurityContext = SYSTEM
    ) -> None:
        """Remove ``table``'s item from the draft, as ``caller``."""
        self.records.retrieve(PROFILE, profile, columns=["name"], caller=caller)

        def work(conn: sa.Connection) -> None:
            ids = {
                i["selectedentitytypecode"]: i[f"{ITEM}id"]
                for i, _ in profiles.load_items(conn, self.store, profile)
            }
            if table not in ids:
                raise NotFound(f"table {table!r} is not in this profile")
            self.records.delete(ITEM, ids[table], caller=caller, conn=conn)

        self.store.transact(work)

    def members(
        self, profile: RecordId | str, *, caller: SecurityContext = SYSTEM
    ) -> ProfileMembers:
        return access.profile_members(self.records, self.profile_id(profile), caller=caller)

    def add_members(
        self,
        profile: RecordId | str,
        *,
        users: tuple[RecordId, ...] | list[RecordId] = (),
        teams: tuple[RecordId, ...] | list[RecordId] = (),
        caller: SecurityContext = SYSTEM,
    ) -> int:
        return access.add_members(
            self.records, self.profile_id(profile), users=users, teams=teams, caller=caller
        )

    def remove_members(
        self,
        profile: RecordId | str,
        *,
        users: tuple[RecordId, ...] | list[RecordId] = (),
        teams: tuple[RecordId, ...] | list[RecordId] = (),
        caller: SecurityContext = SYSTEM,
    ) -> int:
        return access.remove_members(
            self.records, self.profile_id(profile), users=users, teams=teams, caller=caller
        )

    def generate_profile(
        self, app: RecordId | str, *, caller: SecurityContext = SYSTEM
    ) -> RecordId:
        return apps.generate_profile(self.records, app, caller=caller)

    def export_yaml(self, profile: RecordId | str, *, caller: SecurityContext = SYSTEM) -> str:
        return yaml_io.export_profile(self.records, self.profile_id(profile), caller=caller)

    def import_yaml(self, text: str, *, caller: SecurityContext = SYSTEM) -> RecordId:
        return yaml_io.import_profile(self.records, text, caller=caller)

    def validate_yaml(self, text: str) -> None:
        yaml_io.validate_profile(self.store.schema, text)

    def set_table_offline(
        self, table: str, offline: bool, *, caller: SecurityContext = SYSTEM
    ) -> Table:
        return tables.set_table_offline(self.store, table, offline, caller=caller)
