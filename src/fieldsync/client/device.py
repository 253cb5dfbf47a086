"""The device SDK: a local replica that works without a network, and sync.

    device = Device.login("/data/tech1", server="https://fs.example.com",
                          username="tech1", password="…", app="fieldservice")
    device.sync()                                   # deltas down, outbox up
    wo = device.create("workorder", {"title": "Replace pump", "accountid": acc})
    device.update("workorder", wo, {"priority": 1})  # works offline
    device.query("workorder", view="My active work orders")
    device.status.sync_state                        # "ConnectedPendingUpsync", …

Everything reads from the replica (offline-first) unless the app says *classic* and the
server is reachable. Writes go to the replica and the outbox in one transaction. ``sync()``
uploads the outbox (in order, each change once) and downloads each table's changes; a
change the server rejects is reverted to the server's row and listed in :meth:`errors`.

:class:`Device` is the facade over its parts: the session with the server
(:mod:`~fieldsync.client.session`, :mod:`~fieldsync.client.transport`), the local writes and
the outbox (:mod:`~fieldsync.client.outbox`), reads (:mod:`~fieldsync.client.reads`), sync
(:mod:`~fieldsync.client.syncer`), files (:mod:`~fieldsync.client.files`), the schedule
(:mod:`~fieldsync.client.schedule`), live sync (:mod:`~fieldsync.client.live`) and the status
(:mod:`~fieldsync.client.status`).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, cast

import httpx

from fieldsync.client.files import DeviceFiles, FileReport
from fieldsync.client.live import LiveSync
from fieldsync.client.outbox import Outbox
from fieldsync.client.reads import Reader
from fieldsync.client.replica import Replica
from fieldsync.client.schedule import Schedule
from fieldsync.client.session import Session
from fieldsync.client.status import (
    SYNC_STATES,
    AssumeWifi,
    Monitor,
    NetworkProvider,
    Status,
)
from fieldsync.client.syncer import PAGE_SIZE, UPLOAD_BATCH, Progress, Syncer, SyncReport
from fieldsync.client.transport import (
    BytesTransport,
    DeviceError,
    Offline,
    ServerError,
    SignInRequired,
)
from fieldsync.sync.protocol import UserInfo

__all__ = ["PAGE_SIZE", "SYNC_STATES", "UPLOAD_BATCH", "Device", "Progress", "SyncReport"]

log = logging.getLogger(__name__)


class Device:
    """One device: its directory holds the replica, the outbox, the tokens and settings."""

    def __init__(
        self,
        directory: str | Path,
        *,
        transport: httpx.BaseTransport | None = None,
        network: NetworkProvider | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.replica = Replica(self.directory)
        self._network: NetworkProvider = network or AssumeWifi()
        self._lock = threading.RLock()
        self._session = Session(self.replica, transport=transport, notify=self._notify)
        self._outbox = Outbox(self.replica, self._session, self._notify)
        self._reader = Reader(self.replica, self._session, lambda: self.network.connected())
        self._monitor = Monitor(self.replica, self.network, self._session, self._outbox)
        self.files = DeviceFiles(
            self.directory / "files", self.replica, self._session, self._outbox, self._reader
        )
        self._syncer = Syncer(
            self.replica, self._session, self._outbox, self.files, self._monitor, self._lock
        )
        self._schedule = Schedule(self.replica, self.network)

    @property
    def network(self) -> NetworkProvider:
        return self._network

    @network.setter
    def network(self, provider: NetworkProvider) -> None:
        self._network = self._monitor.network = self._schedule.network = provider

    # -- set-up -------------------------------------------------------------------------------

    @classmethod
    def login(
        cls,
        directory: str | Path,
        *,
        server: str,
        username: str,
        password: str,
        app: str,
        transport: httpx.BaseTransport | None = None,
        network: NetworkProvider | None = None,
    ) -> Device:
        """Sign in, register the device for ``app`` and keep everything in ``directory``.

        A directory holds one user's device: another user signs in there only after
        :meth:`sign_out` (the server refuses a device id registered to another user)."""
        device = cls(directory, transport=transport, network=network)
        previous = (device.replica.handshake or {}).get("user", {}).get("name")
        if previous and str(previous).casefold() != username.casefold():
            device.close()
            raise DeviceError(
                f"this device is signed in as {previous}: sign out first (its rows and "
                "unsent changes go), then sign in as another user"
            )
        device._session.set_up(server, app, uuid.uuid4().hex)
        device.http().sign_in(username, password)
        device.handshake()
        return device

    def close(self) -> None:
        self._session.close()
        self.replica.close()

    @property
    def device_id(self) -> str:
        return self._session.device_id

    @property
    def app(self) -> str:
        return self._session.app

    @property
    def handshake_data(self) -> dict[str, Any]:
        return cast(dict[str, Any], self._session.handshake)

    def http(self) -> BytesTransport:
        return self._session.http()

    def _user(self) -> UserInfo:
        return self._session.user()

    def handshake(self) -> dict[str, Any]:
        """Register with the server; adopt the published profile (a new version re-scopes
        the tables that changed)."""
        return dict(self._syncer.handshake())

    # -- files and images ---------------------------------------------------------------

    def attach(
        self,
        table: str,
        record_id: uuid.UUID | str,
        column: str,
        data: bytes | str | Path,
        name: str | None = None,
        mimetype: str | None = None,
    ) -> uuid.UUID:
        """Put a file (bytes or a path) into a row's file or image column, offline; it
        uploads with the next sync, before the change that references it. Returns its id."""
        with self._lock:
            return self.files.attach(table, record_id, column, data, name, mimetype)

    def file_path(
        self, table: str, record_id: uuid.UUID | str, column: str, *, thumbnail: bool = False
    ) -> Path | None:
        """The local copy of a row's file (or an image's thumbnail); None while it has not
        been fetched, or when the column is empty."""
        return self.files.path(table, record_id, column, thumbnail=thumbnail)

    def file_info(
        self, table: str, record_id: uuid.UUID | str, column: str
    ) -> dict[str, Any] | None:
        return self.files.info(table, record_id, column)

    def fetch_files(self, progress: Callable[[int, int], None] | None = None) -> FileReport:
        """Download the blobs of the rows' selected file and image columns that are not here
        yet (resuming partial ones), and remove the ones no row references any more."""
        with self._lock:
            return self._session.online(lambda http: self.files.fetch(http, progress))

    # -- settings -------------------------------------------------------------------------------

    def settings(self) -> dict[str, Any]:
        """The user's sync settings: ``frequency`` minutes (``None``: the profile's intervals,
        ``0``: no automatic sync) and ``wifi_only``, where the app allows them."""
        return self._schedule.settings()

    def set_settings(
        self,
        *,
        frequency: int | str | None = "keep",
        wifi_only: bool | None = None,
        live: bool | None = None,
    ) -> dict[str, Any]:
        return self._schedule.set_settings(
            self._session.handshake["app"], frequency=frequency, wifi_only=wifi_only, live=live
        )

    # -- local data -----------------------------------------------------------------------------

    def create(self, table: str, values: Mapping[str, Any]) -> uuid.UUID:
        """Create a row offline; the id is made here and kept by the server."""
        return self._outbox.create(table, values)

    def update(self, table: str, record_id: uuid.UUID | str, values: Mapping[str, Any]) -> None:
        self._outbox.update(table, record_id, values)

    def delete(self, table: str, record_id: uuid.UUID | str) -> None:
        self._outbox.delete(table, record_id)

    def get(self, table: str, record_id: uuid.UUID | str) -> dict[str, Any] | None:
        return self._reader.get(table, record_id)

    def query(
        self,
        table: str | None = None,
        *,
        fetchxml: str | None = None,
        view: str | None = None,
        filter: str | None = None,
        top: int | None = None,
    ) -> list[dict[str, Any]]:
        """Rows of a FetchXML query, one of the app's views by name, or an OData ``$filter``
        on ``table``: from the replica (offline-first apps), or from the server when the app
        is *classic* and the server answers (from the replica when it does not)."""
        return self._reader.query(table, fetchxml=fetchxml, view=view, filter=filter, top=top)

    @property
    def classic(self) -> bool:
        """The app is in classic offline mode: reads go to the server when it answers."""
        return self._reader.classic

    # -- status -------------------------------------------------------------------------------

    def observe(self, callback: Callable[[Status], None]) -> Callable[[], None]:
        """Call ``callback`` with the new status after every change; returns an unsubscribe."""
        return self._monitor.observe(callback)

    def _notify(self) -> None:
        # called by the parts, the first time while they are being made
        monitor: Monitor | None = getattr(self, "_monitor", None)
        if monitor is not None:
            monitor.notify()

    def pending_changes(self) -> int:
        return self._outbox.pending_changes()

    def outbox(self) -> list[dict[str, Any]]:
        return self._outbox.entries()

    def errors(self) -> list[dict[str, Any]]:
        """The changes the server rejected, newest first, with the values they were reverted to."""
        return self._outbox.errors()

    def clear_errors(self) -> None:
        self._outbox.clear_errors()

    @property
    def status(self) -> Status:
        return self._monitor.status()

    # -- sync ---------------------------------------------------------------------------------

    def sync(
        self,
        tables: Iterable[str] | None = None,
        *,
        progress: Callable[[Progress], None] | None = None,
        page_size: int = PAGE_SIZE,
        files: bool = True,
    ) -> SyncReport:
        """Handshake, upload files then the outbox, download every table (or ``tables``),
        then fetch the files the rows reference (unless ``files=False``)."""
        return self._syncer.sync(tables, progress=progress, page_size=page_size, files=files)

    def sign_out(self) -> None:
        """Revoke the session and remove every row from this device; the next sign-in
        registers a new device id (a device id belongs to the user who registered it)."""
        self._syncer.sign_out()

    # -- scheduler ------------------------------------------------------------------------------

    def due_tables(self, now: dt.datetime | None = None) -> list[str]:
        """Tables whose sync interval has passed (the profile's, or the user's frequency when
        the app allows it; frequency 0 means no automatic sync). Wi-Fi only holds everything
        back on a metered network."""
        return self._schedule.due_tables(now)

    def may_sync_automatically(self) -> bool:
        """Whether automatic sync may run now: a network, not a metered one when the user
        chose Wi-Fi only (and the app allows that choice), and a frequency other than "no
        automatic sync" (when the app lets users choose). Sync on demand is always allowed."""
        return self._schedule.may_sync_automatically()

    def run_scheduler(self, stop: threading.Event, *, tick: float = 30.0) -> None:
        """Sync due tables until ``stop`` is set; failures wait for the next tick. With the
        ``live`` setting on, hold the server's change stream instead (:meth:`live`)."""
        if self.settings()["live"]:
            self.live(stop)
            return
        while not stop.is_set():
            due = self.due_tables()
            if due or (self.pending_changes() and self.may_sync_automatically()):
                try:
                    self.sync(due or [])
                except (Offline, ServerError, SignInRequired) as exc:
                    log.info("scheduled sync failed: %s", exc)
            stop.wait(tick)

    def live(self, stop: threading.Event, **options: Any) -> None:
        """Sync as soon as the server announces changes, until ``stop`` is set; reconnects
        with backoff and jitter, and keeps the profile's intervals as the floor. Options go
        to :class:`fieldsync.client.live.LiveSync`."""
        LiveSync(self, **options).run(stop)
