"""The device SDK: a local SQLite replica of an offline profile, an outbox, and sync."""

from fieldsync.client.device import Device
from fieldsync.client.files import FileReport
from fieldsync.client.status import NetworkProvider, Status
from fieldsync.client.syncer import Progress, SyncReport
from fieldsync.client.transport import (
    AccessRemoved,
    DeviceError,
    Offline,
    ServerError,
    SignInRequired,
    StorageFull,
)

__all__ = [
    "AccessRemoved",
    "Device",
    "DeviceError",
    "FileReport",
    "NetworkProvider",
    "Offline",
    "Progress",
    "ServerError",
    "SignInRequired",
    "Status",
    "StorageFull",
    "SyncReport",
]
