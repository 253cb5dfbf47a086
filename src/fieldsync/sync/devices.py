"""The device registry: which devices sync, for whom, with which app and profile version,
when they last synced and how many changes they had pending.

A device id belongs to the user who registered it (the first handshake naming it). Every
request that names a device resolves it through :func:`caller_device`, which refuses (403) a
device registered to another user, whoever the caller is: a handshake cannot take a device
over, and no other user's device can download, upload or ask for file grants.

Administrators see and purge every device; other users see and purge their own. Purging
removes the registration: the device's next sync registers it again, and since every
download cursor carries the registration it was issued to, the device then downloads its
whole scope again (its pending changes still upload first, once: applied changes are kept
per user, device and change id).
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

import sqlalchemy as sa

from fieldsync.errors import Forbidden, NotFound
from fieldsync.security.model import SecurityContext
from fieldsync.store.audit import AuditLog
from fieldsync.store.catalog import fs_device
from fieldsync.store.store import Store


@dataclass(frozen=True)
class DeviceInfo:
    device_id: str
    user_id: uuid.UUID
    username: str | None
    app: str
    profile_id: uuid.UUID | None
    profile_version: int | None
    sdk_version: str | None
    registered_on: dt.datetime
    last_sync_on: dt.datetime | None
    pending_changes: int | None


NOT_YOURS = "this device id is registered to another user: sign in with a device id of your own"


@dataclass(frozen=True)
class Registration:
    """The caller's registration of a device."""

    device_id: str
    registered_on: dt.datetime

    @property
    def stamp(self) -> str:
        """What download cursors carry: a cursor of an earlier registration starts over."""
        return self.registered_on.isoformat()


def caller_device(
    conn: sa.Connection,
    caller: SecurityContext,
    device_id: str,
    *,
    audit: AuditLog | None = None,
) -> Registration | None:
    """The caller's registration of ``device_id``: None when no one registered it; refused
    (Forbidden, the same answer on every endpoint, written to ``audit`` as a takeover
    attempt) when another user did."""
    row = conn.execute(
        sa.select(fs_device.c.userid, fs_device.c.registeredon).where(
            fs_device.c.deviceid == device_id
        )
    ).first()
    if row is None:
        return None
    if row.userid != caller.user_id:
        if audit is not None:
            audit.device_takeover(
                caller.user_id, device_id, owner=row.userid, username=caller.username
            )
        raise Forbidden(NOT_YOURS)
    return Registration(device_id, row.registeredon)


def list_devices(store: Store, caller: SecurityContext) -> list[DeviceInfo]:
    """The devices the caller may see, most recently synced first."""
    user = store.sql_table("systemuser")
    stmt = (
        sa.select(fs_device, user.c.domainname)
        .join(user, user.c.systemuserid == fs_device.c.userid, isouter=True)
        .order_by(fs_device.c.lastsyncon.desc(), fs_device.c.deviceid)
    )
    if not caller.unrestricted:
        stmt = stmt.where(fs_device.c.userid == caller.user_id)
    with store.read() as conn:
        rows = conn.execute(stmt).all()
    return [
        DeviceInfo(
            device_id=r.deviceid,
            user_id=r.userid,
            username=r.domainname,
            app=r.app,
            profile_id=r.profileid,
            profile_version=r.profileversion,
            sdk_version=r.sdkversion,
            registered_on=r.registeredon,
            last_sync_on=r.lastsyncon,
            pending_changes=r.pendingchanges,
        )
        for r in rows
    ]


def purge_device(store: Store, caller: SecurityContext, device_id: str) -> None:
    """Remove a device's registration, so that its next sync starts over."""
    where = fs_device.c.deviceid == device_id
    if not caller.unrestricted:
        where = sa.and_(where, fs_device.c.userid == caller.user_id)

    def work(conn: sa.Connection) -> None:
        if conn.execute(fs_device.delete().where(where)).rowcount == 0:
            raise NotFound(f"no device {device_id!r} that you can see")

    store.transact(work)
