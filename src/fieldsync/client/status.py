"""The device's status as an app shows it: connected or not, metered, the sync state (the
Dataverse mobile names), pending changes and sync errors; and the observers told of every
change of it."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from fieldsync.client.outbox import Outbox
from fieldsync.client.replica import Replica
from fieldsync.client.session import Session

log = logging.getLogger(__name__)

SYNC_STATES = (
    "Connected",
    "ConnectedWithWarning",
    "ConnectedPendingUpsync",
    "ConnectedError",
    "ConnectedRefresh",
    "NotConnected",
    "NotConnectedWithWarning",
    "NotConnectedPendingUpsync",
    "NotConnectedSyncError",
)


class NetworkProvider(Protocol):
    """Tells the scheduler about the network: connected at all, and whether it is Wi-Fi
    (anything else counts as metered)."""

    def connected(self) -> bool: ...

    def wifi(self) -> bool: ...


class AssumeWifi:
    """The default provider: a laptop or tablet on an unmetered network."""

    def connected(self) -> bool:
        return True

    def wifi(self) -> bool:
        return True


@dataclass(frozen=True)
class Status:
    connected: bool
    metered: bool
    sync_state: str
    syncing: bool
    pending_changes: int
    sync_errors: int
    last_sync: Mapping[str, str | None]
    last_error: str | None
    profile_version: int | None

    def to_json(self) -> dict[str, Any]:
        return {
            "connected": self.connected,
            "metered": self.metered,
            "sync_state": self.sync_state,
            "syncing": self.syncing,
            "pending_changes": self.pending_changes,
            "sync_errors": self.sync_errors,
            "last_sync": dict(self.last_sync),
            "last_error": self.last_error,
            "profile_version": self.profile_version,
        }


def sync_state(*, connected: bool, syncing: bool, failed: bool, pending: int, errors: int) -> str:
    """The Dataverse mobile sync state of these facts."""
    if connected:
        if syncing:
            return "ConnectedRefresh"
        if failed:
            return "ConnectedError"
        if pending:
            return "ConnectedPendingUpsync"
        if errors:
            return "ConnectedWithWarning"
        return "Connected"
    if failed and errors:
        return "NotConnectedSyncError"
    if pending:
        return "NotConnectedPendingUpsync"
    if errors:
        return "NotConnectedWithWarning"
    return "NotConnected"


class Monitor:
    """Computes the status and tells the observers; ``syncing`` is set by the syncer."""

    def __init__(
        self, replica: Replica, network: NetworkProvider, session: Session, outbox: Outbox
    ) -> None:
        self.replica = replica
        self.network = network
        self.session = session
        self.outbox = outbox
        self.syncing = False
        self._observers: list[Callable[[Status], None]] = []

    def observe(self, callback: Callable[[Status], None]) -> Callable[[], None]:
        self._observers.append(callback)
        return lambda: self._observers.remove(callback)

    def notify(self) -> None:
        if not self._observers:
            return
        status = self.status()
        for callback in list(self._observers):
            try:
                callback(status)
            except Exception:  # an observer's bug must not break a write
                log.exception("status observer failed")

    def status(self) -> Status:
        pending = self.outbox.pending_changes()
        errors = self.outbox.error_count()
        connected = self.session.connected and self.network.connected()
        handshake = self.replica.handshake or {}
        return Status(
            connected=connected,
            metered=connected and not self.network.wifi(),
            sync_state=sync_state(
                connected=connected,
                syncing=self.syncing,
                failed=self.session.last_error is not None,
                pending=pending,
                errors=errors,
            ),
            syncing=self.syncing,
            pending_changes=pending,
            sync_errors=errors,
            last_sync=self.replica.last_syncs(),
            last_error=self.session.last_error,
            profile_version=(handshake.get("profile") or {}).get("version"),
        )
