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

**Remote wipe.** An administrator marks a device for wipe (:func:`request_wipe`). Its next
contact on any sync endpoint is refused with :class:`WipeRequested` (403, code
``0x80040F01``): the device removes every row, its outbox, cursors and files, then posts a
``wipe`` receipt with what it removed (:meth:`fieldsync.sync.service.SyncService.receipt`),
which closes the request. Until then the device can do nothing else: its pending changes are
not uploaded (a lost or stolen device's changes are not trusted).

**Receipts.** A device whose access ended (the handshake refused it) removes the profile's
data and posts a ``purge`` receipt with the counts. A device "still holds data" for a user or
app that lost access when it synced after its last receipt (:meth:`SyncService.stranded`).
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

import sqlalchemy as sa

from fieldsync.errors import BadRequest, Forbidden, NotFound
from fieldsync.security.model import SecurityContext
from fieldsync.store.audit import AuditLog
from fieldsync.store.catalog import fs_device, fs_device_inventory
from fieldsync.store.store import Store, utcnow

WIPE_REQUESTED_EVENT = "device.wipe_requested"
WIPED_EVENT = "device.wiped"
PURGED_EVENT = "device.purged"


class WipeRequested(Forbidden):
    """An administrator asked to wipe this device: remove everything, then send a receipt."""

    code = "0x80040F01"


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
    inventory_on: dt.datetime | None = None
    inventory_status: str | None = None  # match, mismatch, unchecked (None: never reported)
    receipt_on: dt.datetime | None = None
    wipe_requested_on: dt.datetime | None = None
    wiped_on: dt.datetime | None = None

    @property
    def wipe_pending(self) -> bool:
        return wipe_pending(self.wipe_requested_on, self.wiped_on)

    def to_json(self) -> dict[str, object]:
        def moment(value: dt.datetime | None) -> str | None:
            return None if value is None else value.isoformat()

        return {
            "device": self.device_id,
            "user": str(self.user_id),
            "username": self.username,
            "app": self.app,
            "profile": None if self.profile_id is None else str(self.profile_id),
            "profile_version": self.profile_version,
            "sdk": self.sdk_version,
            "registered_on": moment(self.registered_on),
            "last_sync_on": moment(self.last_sync_on),
            "pending_changes": self.pending_changes,
            "inventory_on": moment(self.inventory_on),
            "inventory": self.inventory_status,
            "receipt_on": moment(self.receipt_on),
            "wipe_requested_on": moment(self.wipe_requested_on),
            "wiped_on": moment(self.wiped_on),
            "wipe_pending": self.wipe_pending,
        }


def wipe_pending(requested: dt.datetime | None, wiped: dt.datetime | None) -> bool:
    return requested is not None and (wiped is None or wiped < requested)


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
    wiping: bool = False,
) -> Registration | None:
    """The caller's registration of ``device_id``: None when no one registered it; refused
    (Forbidden, the same answer on every endpoint, written to ``audit`` as a takeover
    attempt) when another user did; refused with :class:`WipeRequested` while a remote wipe
    is pending (unless ``wiping``: the wipe receipt itself)."""
    row = conn.execute(
        sa.select(
            fs_device.c.userid,
            fs_device.c.registeredon,
            fs_device.c.wiperequestedon,
            fs_device.c.wipedon,
        ).where(fs_device.c.deviceid == device_id)
    ).first()
    if row is None:
        return None
    if row.userid != caller.user_id:
        if audit is not None:
            audit.device_takeover(
                caller.user_id, device_id, owner=row.userid, username=caller.username
            )
        raise Forbidden(NOT_YOURS)
    if not wiping and wipe_pending(row.wiperequestedon, row.wipedon):
        raise WipeRequested(
            "an administrator asked to wipe this device: remove every row, the outbox and "
            "the files, then send a wipe receipt"
        )
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
            inventory_on=r.inventoryon,
            inventory_status=r.inventorystatus,
            receipt_on=r.receipton,
            wipe_requested_on=r.wiperequestedon,
            wiped_on=r.wipedon,
        )
        for r in rows
    ]


def request_wipe(store: Store, caller: SecurityContext, device_id: str) -> None:
    """Mark a device for remote wipe (administrators only): its next contact wipes it."""
    if not caller.unrestricted:
        raise Forbidden("only administrators wipe a device")

    def work(conn: sa.Connection) -> uuid.UUID:
        row = conn.execute(
            sa.select(fs_device.c.userid).where(fs_device.c.deviceid == device_id)
        ).first()
        if row is None:
            raise NotFound(f"no device {device_id!r}")
        conn.execute(
            fs_device.update()
            .where(fs_device.c.deviceid == device_id)
            .values(wiperequestedon=utcnow(), wiperequestedby=caller.user_id)
        )
        owner: uuid.UUID = row.userid
        return owner

    owner = store.transact(work)
    store.audit.record(
        WIPE_REQUESTED_EVENT,
        outcome="done",
        user=caller.user_id,
        username=caller.username or None,
        target=f"device {device_id}",
        detail={"owner": str(owner)},
    )


def purge_device(store: Store, caller: SecurityContext, device_id: str) -> None:
    """Remove a device's registration, so that its next sync starts over."""
    where = fs_device.c.deviceid == device_id
    if not caller.unrestricted:
        where = sa.and_(where, fs_device.c.userid == caller.user_id)

    def work(conn: sa.Connection) -> None:
        found = conn.execute(
            sa.select(fs_device.c.wiperequestedon, fs_device.c.wipedon).where(where)
        ).first()
        if found is None:
            raise NotFound(f"no device {device_id!r} that you can see")
        if wipe_pending(found.wiperequestedon, found.wipedon):
            raise BadRequest(
                f"device {device_id!r} has a remote wipe pending: purging its registration "
                "would let it sync again unwiped"
            )
        conn.execute(fs_device.delete().where(where))
        conn.execute(
            fs_device_inventory.delete().where(fs_device_inventory.c.deviceid == device_id)
        )

    store.transact(work)
