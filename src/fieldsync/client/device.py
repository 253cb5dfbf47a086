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
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlencode

import httpx
import orjson
import sqlalchemy as sa

from fieldsync import __version__
from fieldsync.client.files import DeviceFiles, FileReport
from fieldsync.client.replica import (
    Replica,
    encode,
    error_table,
    outbox_table,
)
from fieldsync.client.transport import (
    AccessRemoved,
    BytesTransport,
    DeviceError,
    Offline,
    ServerError,
    SignInRequired,
)
from fieldsync.errors import BadRequest, MissingRequired, RecordNotFound
from fieldsync.query.ast import Query
from fieldsync.query.bind import UserBinding, bind
from fieldsync.query.compile import compile_query
from fieldsync.query.fetchxml import parse_fetchxml
from fieldsync.query.odata import parse_filter
from fieldsync.schema.model import ColumnType, Table
from fieldsync.schema.values import make_coercer

log = logging.getLogger(__name__)

UPLOAD_BATCH = 200
PAGE_SIZE = 2000
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


@dataclass
class Progress:
    table: str
    rows: int
    bytes: int
    done: bool = False


@dataclass
class SyncReport:
    uploaded: int = 0
    rejected: int = 0
    downloaded: dict[str, int] = field(default_factory=dict)
    bytes: int = 0
    rescoped: list[str] = field(default_factory=list)
    purged: bool = False
    files: FileReport | None = None  # blobs fetched after the rows (``sync(files=True)``)


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
        self.network = network or AssumeWifi()
        self._http_transport = transport
        self._lock = threading.RLock()
        self._observers: list[Callable[[Status], None]] = []
        link = self.replica.get_state("link") or {}
        self._connected = bool(link.get("connected", False))
        self._syncing = False
        self._last_error: str | None = link.get("error")
        self._transport: BytesTransport | None = None
        self.files = DeviceFiles(self)

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
        with device.replica.write() as conn:
            device.replica.set_state(conn, "server", server.rstrip("/"))
            device.replica.set_state(conn, "app", app)
            if device.replica.get_state("device", conn) is None:
                device.replica.set_state(conn, "device", uuid.uuid4().hex)
        device._http().sign_in(username, password)
        device.handshake()
        return device

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
        self.replica.close()

    @property
    def device_id(self) -> str:
        return str(self.replica.get_state("device"))

    @property
    def app(self) -> str:
        return str(self.replica.get_state("app"))

    @property
    def handshake_data(self) -> dict[str, Any]:
        data = self.replica.handshake
        if not data:
            raise DeviceError("this device is not set up: log in first")
        found: dict[str, Any] = data
        return found

    def _http(self) -> BytesTransport:
        if self._transport is None:
            server = self.replica.get_state("server")
            if not server:
                raise DeviceError("this device is not set up: log in first")

            def keep(tokens: dict[str, str]) -> None:
                with self.replica.write() as conn:
                    self.replica.set_state(conn, "tokens", tokens)

            self._transport = BytesTransport(
                server,
                tokens=self.replica.get_state("tokens"),
                on_tokens=keep,
                transport=self._http_transport,
            )
        return self._transport

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        try:
            result = self._http().call(method, path, body)
        except Offline as exc:
            self._link(False, str(exc))
            self._notify()
            raise
        self._link(True, self._last_error)
        return result

    def _online(self, action: Callable[[BytesTransport], Any]) -> Any:
        """Run a file transfer, remembering whether the server answered (as ``_call``)."""
        try:
            result = action(self._http())
        except Offline as exc:
            self._link(False, str(exc))
            self._notify()
            raise
        self._link(True, self._last_error)
        return result

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
            fid = self.files.attach(table, record_id, column, data, name, mimetype)
        return fid

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
            report: FileReport = self._online(lambda http: self.files.fetch(http, progress))
        return report

    def _link(self, connected: bool, error: str | None) -> None:
        """Remember whether the server answered, and the last sync failure, across runs."""
        if (connected, error) == (self._connected, self._last_error):
            return
        self._connected, self._last_error = connected, error
        with self.replica.write() as conn:
            self.replica.set_state(conn, "link", {"connected": connected, "error": error})

    def handshake(self) -> dict[str, Any]:
        """Register with the server; adopt the published profile (a new version re-scopes
        the tables that changed)."""
        try:
            answer = self._call(
                "POST",
                "/sync/v1/handshake",
                {
                    "device": self.device_id,
                    "app": self.app,
                    "sdk": __version__,
                    "pending": self.pending_changes(),
                },
            )
        except ServerError as exc:
            if isinstance(exc, AccessRemoved) or exc.status in (403, 404):
                self._purge(exc)
            raise
        self.replica.adopt(answer)
        return dict(answer)

    # -- settings -------------------------------------------------------------------------------

    def settings(self) -> dict[str, Any]:
        """The user's sync settings: ``frequency`` minutes (``None``: the profile's intervals,
        ``0``: no automatic sync) and ``wifi_only``, where the app allows them."""
        found = self.replica.get_state("settings") or {}
        return {
            "frequency": found.get("frequency"),
            "wifi_only": found.get("wifi_only", False),
            "live": found.get("live", False),
        }

    def set_settings(
        self,
        *,
        frequency: int | str | None = "keep",
        wifi_only: bool | None = None,
        live: bool | None = None,
    ) -> dict[str, Any]:
        app = self.handshake_data["app"]
        current = self.settings()
        if frequency != "keep":
            if not app.get("allow_sync_frequency"):
                raise BadRequest("this app does not let users adjust the sync frequency")
            if frequency is not None and (not isinstance(frequency, int) or frequency < 0):
                raise BadRequest("the sync frequency is a number of minutes (0: no automatic sync)")
            current["frequency"] = frequency
        if wifi_only is not None:
            if not app.get("allow_wifi_only"):
                raise BadRequest("this app does not let users sync on Wi-Fi only")
            current["wifi_only"] = bool(wifi_only)
        if live is not None:
            current["live"] = bool(live)  # run_scheduler holds a live stream (live.py)
        with self.replica.write() as conn:
            self.replica.set_state(conn, "settings", current)
        return current

    # -- local data -----------------------------------------------------------------------------

    def _user(self) -> dict[str, Any]:
        found: dict[str, Any] = self.handshake_data["user"]
        return found

    def _coerce(self, table: Table, values: Mapping[str, Any]) -> dict[str, Any]:
        """Validate local values as the server would (types, lengths, options) and return
        them as wire values."""
        out: dict[str, Any] = {}
        for name, value in values.items():
            col = table.column(name)
            if col is None:
                if name.endswith("type") and table.column(name[:-4]) is not None:
                    out[name] = value
                    continue
                from fieldsync.errors import UnknownColumn

                raise UnknownColumn(table.name, name, "no such column")
            if col.system and name not in ("ownerid", "statecode", "statuscode"):
                from fieldsync.errors import ReadOnlyColumn

                raise ReadOnlyColumn(table.name, name, "is set by the server")
            if value is None:
                out[name] = None
                continue
            coerced = make_coercer(table, col)(value)
            if col.type is ColumnType.LOOKUP:
                rid, target = coerced
                out[name] = str(rid)
                if col.polymorphic:
                    out[col.type_column] = target
            else:
                out[name] = encode(coerced)
        return out

    def create(self, table: str, values: Mapping[str, Any]) -> uuid.UUID:
        """Create a row offline; the id is made here and kept by the server."""
        t, sql = self.replica.table(table)
        given = dict(values)
        rid = _rid(given.pop(t.primary_id)) if t.primary_id in given else uuid.uuid4()
        wire = self._coerce(t, given)
        for col in t.columns.values():
            if col.required and not col.system and wire.get(col.name) is None:
                raise MissingRequired(table, col.name, "is required")
        wire[t.primary_id] = str(rid)
        user = self._user()
        now = dt.datetime.now(dt.UTC)
        local = dict(wire)
        if t.owned and "ownerid" not in local:
            local["ownerid"], local["owneridtype"] = user["id"], "systemuser"
        if t.has_business_unit and "owningbusinessunit" in sql.c:
            local.setdefault("owningbusinessunit", user["business_unit"])
        for name, default in (("statecode", 0), ("statuscode", 1)):
            if name in sql.c:
                local.setdefault(name, default)
        for name in ("createdon", "modifiedon"):
            if name in sql.c:
                local[name] = now.isoformat()
        for name in ("createdby", "modifiedby"):
            if name in sql.c:
                local[name] = user["id"]
        with self.replica.write() as conn:
            conn.execute(sql.insert().values(**self.replica.decode_values(t, local)))
            self._enqueue(conn, table, "create", rid, wire, None)
        self._notify()
        return rid

    def update(self, table: str, record_id: uuid.UUID | str, values: Mapping[str, Any]) -> None:
        t, sql = self.replica.table(table)
        rid = _rid(record_id)
        wire = self._coerce(t, values)
        wire.pop(t.primary_id, None)
        if not wire:
            return
        pk = sql.c[t.primary_id]
        with self.replica.write() as conn:
            row = conn.execute(sa.select(sql.c.versionnumber).where(pk == rid)).first()
            if row is None:
                raise RecordNotFound(table, rid)
            local = self.replica.decode_values(t, wire)
            if "modifiedon" in sql.c:
                local["modifiedon"] = dt.datetime.now(dt.UTC)
            conn.execute(sql.update().where(pk == rid).values(**local))
            self._enqueue(conn, table, "update", rid, wire, row[0])
        self._notify()

    def delete(self, table: str, record_id: uuid.UUID | str) -> None:
        t, sql = self.replica.table(table)
        rid = _rid(record_id)
        pk = sql.c[t.primary_id]
        with self.replica.write() as conn:
            row = conn.execute(sa.select(sql.c.versionnumber).where(pk == rid)).first()
            if row is None:
                raise RecordNotFound(table, rid)
            conn.execute(sql.delete().where(pk == rid))
            self._enqueue(conn, table, "delete", rid, {}, row[0])
        self._notify()

    def _enqueue(
        self,
        conn: sa.Connection,
        table: str,
        operation: str,
        rid: uuid.UUID,
        values: dict[str, Any],
        base: int | None,
    ) -> None:
        """Add a change to the outbox, folding it into an earlier change of the same row that
        has not been sent yet when that keeps parents before children."""
        ob = outbox_table
        unsent = conn.execute(
            sa.select(ob.c.seq, ob.c.operation, ob.c.changes)
            .where(ob.c.tablename == table, ob.c.recordid == str(rid), ob.c.sent == 0)
            .order_by(ob.c.seq.desc())
            .limit(1)
        ).first()
        sent_before = conn.execute(
            sa.select(sa.func.count())
            .select_from(ob)
            .where(ob.c.tablename == table, ob.c.recordid == str(rid), ob.c.sent == 1)
        ).scalar_one()
        if unsent is not None:
            seq, op, changes = unsent
            if operation == "delete":
                conn.execute(
                    ob.delete().where(
                        ob.c.tablename == table, ob.c.recordid == str(rid), ob.c.sent == 0
                    )
                )
                if op == "create" and not sent_before:
                    return  # never reached the server: nothing to delete there
            elif self._can_fold(conn, seq, values):
                merged = {**orjson.loads(changes), **values}
                conn.execute(
                    ob.update().where(ob.c.seq == seq).values(changes=orjson.dumps(merged).decode())
                )
                return
        conn.execute(
            ob.insert().values(
                changeid=str(uuid.uuid4()),
                tablename=table,
                operation=operation,
                recordid=str(rid),
                changes=orjson.dumps(values).decode(),
                baseversion=base,
                sent=0,
            )
        )

    def _can_fold(self, conn: sa.Connection, seq: int, values: Mapping[str, Any]) -> bool:
        """Folding into change ``seq`` is safe unless a value points at a row created later."""
        refs = [v for v in values.values() if isinstance(v, str) and len(v) == 36]
        if not refs:
            return True
        later = conn.execute(
            sa.select(sa.func.count())
            .select_from(outbox_table)
            .where(
                outbox_table.c.operation == "create",
                outbox_table.c.recordid.in_(refs),
                outbox_table.c.seq > seq,
            )
        ).scalar_one()
        return int(later) == 0

    def get(self, table: str, record_id: uuid.UUID | str) -> dict[str, Any] | None:
        t, sql = self.replica.table(table)
        with self.replica.read() as conn:
            row = (
                conn.execute(sa.select(sql).where(sql.c[t.primary_id] == _rid(record_id)))
                .mappings()
                .first()
            )
        return None if row is None else {str(k): encode(v) for k, v in row.items()}

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
        schema = self.replica.schema
        if view is not None:
            views = {v["name"]: v for v in self.handshake_data.get("views", [])}
            if view not in views:
                raise BadRequest(f"the app has no view named {view!r}")
            fetchxml = views[view]["fetchxml"]
        if self.classic and self.network.connected():
            name = parse_fetchxml(fetchxml, schema).table if fetchxml is not None else table
            if name is not None:
                with contextlib.suppress(Offline):
                    return self._query_online(name, fetchxml, filter, top)
        if fetchxml is not None:
            q = parse_fetchxml(fetchxml, schema)
        elif table is not None:
            t, _ = self.replica.table(table)
            q = Query(table=table, filter=None if not filter else parse_filter(filter, t, schema))
        else:
            raise BadRequest("name a table, a view or a FetchXML query")
        if top is not None:
            q = replace(q, top=top)
        t, _ = self.replica.table(q.table)
        user = self._user()
        binding = UserBinding(
            user_id=uuid.UUID(user["id"]),
            business_unit_id=uuid.UUID(user["business_unit"]),
            teams=frozenset(uuid.UUID(x) for x in user["teams"]),
            language=int(user.get("language", 1033)),
        )
        if q.filter is not None:
            q = replace(
                q,
                filter=bind(
                    q.filter,
                    t,
                    user=binding,
                    now=dt.datetime.now(dt.UTC),
                    tables=schema.table,
                    aliases={link.alias or link.table: link.table for link in q.links},
                ),
            )
        stmt = compile_query(q, resolve=self.replica.table, dialect="sqlite")
        with self.replica.read() as conn:
            return [
                {str(k): encode(v) for k, v in r.items()} for r in conn.execute(stmt).mappings()
            ]

    @property
    def classic(self) -> bool:
        """The app is in classic offline mode: reads go to the server when it answers."""
        data = self.replica.handshake or {}
        return int((data.get("app") or {}).get("mode", 0)) == 1

    def _query_online(
        self, table: str, fetchxml: str | None, filter: str | None, top: int | None
    ) -> list[dict[str, Any]]:
        """The query through the server's Web API, rows shaped as the replica's."""
        t, _ = self.replica.table(table)
        params: dict[str, str] = {}
        if fetchxml is not None:
            params["fetchXml"] = fetchxml
        else:
            if filter:
                params["$filter"] = filter
            if top is not None:
                params["$top"] = str(top)
        path = f"/api/data/v9.2/{t.entity_set_name}"
        if params:
            path += "?" + urlencode(params)
        answer = self._call("GET", path)
        columns = self.handshake_data["columns"][table]
        rows = []
        for raw in answer.get("value", []):
            row: dict[str, Any] = {}
            for key, value in raw.items():
                if "@" in key:
                    continue
                if key.startswith("_") and key.endswith("_value"):
                    key = key[1:-6]
                row[key] = value
            rows.append({c: row.get(c) for c in columns})
        return rows

    # -- status -------------------------------------------------------------------------------

    def observe(self, callback: Callable[[Status], None]) -> Callable[[], None]:
        """Call ``callback`` with the new status after every change; returns an unsubscribe."""
        self._observers.append(callback)
        return lambda: self._observers.remove(callback)

    def _notify(self) -> None:
        if not self._observers:
            return
        status = self.status
        for callback in list(self._observers):
            try:
                callback(status)
            except Exception:  # an observer's bug must not break a write
                log.exception("status observer failed")

    def pending_changes(self) -> int:
        with self.replica.read() as conn:
            return int(
                conn.execute(sa.select(sa.func.count()).select_from(outbox_table)).scalar_one()
            )

    def outbox(self) -> list[dict[str, Any]]:
        with self.replica.read() as conn:
            rows = conn.execute(sa.select(outbox_table).order_by(outbox_table.c.seq)).mappings()
            return [
                {**_plain(r), "changes": orjson.loads(r["changes"]), "sent": bool(r["sent"])}
                for r in rows
            ]

    def errors(self) -> list[dict[str, Any]]:
        """The changes the server rejected, newest first, with the values they were reverted to."""
        with self.replica.read() as conn:
            rows = conn.execute(sa.select(error_table).order_by(error_table.c.seq.desc()))
            return [
                {
                    **_plain(r),
                    "sent": orjson.loads(r["sent"]),
                    "reverted": None if r["reverted"] is None else orjson.loads(r["reverted"]),
                }
                for r in rows.mappings()
            ]

    def clear_errors(self) -> None:
        with self.replica.write() as conn:
            conn.execute(error_table.delete())
        self._notify()

    @property
    def status(self) -> Status:
        pending = self.pending_changes()
        with self.replica.read() as conn:
            errors = int(
                conn.execute(sa.select(sa.func.count()).select_from(error_table)).scalar_one()
            )
        connected = self._connected and self.network.connected()
        failed = self._last_error is not None
        if connected:
            if self._syncing:
                state = "ConnectedRefresh"
            elif failed:
                state = "ConnectedError"
            elif pending:
                state = "ConnectedPendingUpsync"
            elif errors:
                state = "ConnectedWithWarning"
            else:
                state = "Connected"
        elif failed and errors:
            state = "NotConnectedSyncError"
        elif pending:
            state = "NotConnectedPendingUpsync"
        elif errors:
            state = "NotConnectedWithWarning"
        else:
            state = "NotConnected"
        handshake = self.replica.handshake or {}
        return Status(
            connected=connected,
            metered=connected and not self.network.wifi(),
            sync_state=state,
            syncing=self._syncing,
            pending_changes=pending,
            sync_errors=errors,
            last_sync=self.replica.last_syncs(),
            last_error=self._last_error,
            profile_version=(handshake.get("profile") or {}).get("version"),
        )

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
        report = SyncReport()
        with self._lock:
            self._syncing = True
            self._notify()
            try:
                try:
                    answer = self.handshake()
                except ServerError as exc:
                    if isinstance(exc, AccessRemoved) or exc.status in (403, 404):
                        report.purged = True
                    raise
                self._online(self.files.upload_pending)
                self._upload(report)
                self.files.sweep()
                wanted = list(answer["order"]) if tables is None else list(tables)
                self._download(wanted, report, progress, page_size)
                if files:
                    report.files = self._online(self.files.fetch)
                self._link(True, None)
            except Offline:
                raise
            except (DeviceError, BadRequest) as exc:
                self._link(self._connected, str(exc))
                raise
            finally:
                self._syncing = False
                self._notify()
        return report

    def _upload(self, report: SyncReport) -> None:
        while True:
            with self.replica.write() as conn:
                stmt = sa.select(outbox_table).order_by(outbox_table.c.seq).limit(UPLOAD_BATCH)
                rows: list[Mapping[str, Any]] = [dict(r) for r in conn.execute(stmt).mappings()]
                acked: list[str] = self.replica.get_state("acked", conn) or []
                if not rows and not acked:
                    return
                conn.execute(
                    outbox_table.update()
                    .where(outbox_table.c.seq.in_([r["seq"] for r in rows]))
                    .values(sent=1)
                )
            changes = [
                {
                    "id": r["changeid"],
                    "table": r["tablename"],
                    "operation": r["operation"],
                    "record": r["recordid"],
                    "values": orjson.loads(r["changes"]),
                    "base_version": r["baseversion"],
                }
                for r in rows
            ]
            answer = self._call(
                "POST",
                "/sync/v1/upload",
                {
                    "device": self.device_id,
                    "app": self.app,
                    "changes": changes,
                    "acknowledged": acked,
                },
            )
            self._settle(rows, answer["results"], report, acked)

    def _settle(
        self,
        rows: Sequence[Mapping[str, Any]],
        results: Sequence[Mapping[str, Any]],
        report: SyncReport,
        acked: Sequence[str] = (),
    ) -> None:
        """Apply the server's answers: drop applied changes, revert rejected ones; the
        server may forget the answers this device stored (sent with the next upload)."""
        by_id = {r["id"]: r for r in results}
        now = dt.datetime.now(dt.UTC).isoformat()
        with self.replica.write() as conn:
            self.replica.set_state(
                conn, "acked", [e["changeid"] for e in rows if e["changeid"] in by_id]
            )
            del acked
            for entry in rows:
                result = by_id.get(entry["changeid"])
                if result is None:
                    continue
                conn.execute(outbox_table.delete().where(outbox_table.c.seq == entry["seq"]))
                table = entry["tablename"]
                if table not in self.replica.sql:
                    continue
                t, sql = self.replica.table(table)
                pk = sql.c[t.primary_id]
                rid = uuid.UUID(entry["recordid"])
                if result["status"] == "applied":
                    report.uploaded += 1
                    if result.get("version") is not None:
                        conn.execute(
                            sql.update().where(pk == rid).values(versionnumber=result["version"])
                        )
                    continue
                report.rejected += 1
                server_row = result.get("row")
                if server_row is None:
                    conn.execute(sql.delete().where(pk == rid))
                    conn.execute(
                        outbox_table.delete().where(
                            outbox_table.c.tablename == table,
                            outbox_table.c.recordid == entry["recordid"],
                            outbox_table.c.operation != "create",
                        )
                    )
                else:
                    values = self.replica.decode_values(t, server_row)
                    exists = conn.execute(sa.select(pk).where(pk == rid)).first()
                    if exists is None:
                        conn.execute(sql.insert().values(**values))
                    else:
                        conn.execute(sql.update().where(pk == rid).values(**values))
                    later = self.replica._pending(conn, table)
                    if entry["recordid"] in later:
                        self.replica._overlay(conn, table, later, {entry["recordid"]})
                error = result["error"]
                conn.execute(
                    error_table.insert().values(
                        changeid=entry["changeid"],
                        tablename=table,
                        operation=entry["operation"],
                        recordid=entry["recordid"],
                        code=str(error["code"]),
                        message=str(error["message"]),
                        errortype=int(error.get("type", 3)),
                        sent=entry["changes"],
                        reverted=None if server_row is None else orjson.dumps(server_row).decode(),
                        occurredon=now,
                    )
                )

    def _download(
        self,
        tables: list[str],
        report: SyncReport,
        progress: Callable[[Progress], None] | None,
        page_size: int,
    ) -> None:
        """Download pages until every table is current. The next request goes out while the
        current pages are written (the server's next page is computed meanwhile); each page
        is committed with its cursor, so stopping anywhere resumes from the last page."""
        cursors = self.replica.cursors(tables)
        counts = dict.fromkeys(tables, 0)
        sizes = dict.fromkeys(tables, 0)

        def fetch(active: list[str], positions: dict[str, str | None]) -> tuple[Any, int]:
            answer = self._call(
                "POST",
                "/sync/v1/download",
                {
                    "device": self.device_id,
                    "app": self.app,
                    "cursors": {t: positions[t] for t in active},
                    "limit": page_size,
                },
            )
            return answer, self._http().last_size

        active = list(tables)
        pending: Future[tuple[Any, int]] | None = None
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="fieldsync-fetch") as pool:
            answer, size = fetch(active, cursors)
            while True:
                following = dict(cursors)
                still: list[str] = []
                for page in answer["pages"]:
                    following[page["table"]] = page["cursor"]
                    if page["more"]:
                        still.append(page["table"])
                returned = {p["table"] for p in answer["pages"]}
                still.extend(t for t in active if t not in returned)
                active = still if (answer["more"] or still) and answer["pages"] else []
                if active:
                    pending = pool.submit(fetch, list(active), following)
                report.bytes += size
                shares = _byte_shares(answer["pages"], size)
                now = dt.datetime.now(dt.UTC).isoformat()
                try:
                    for page, share in zip(answer["pages"], shares, strict=True):
                        name = page["table"]
                        self.replica.apply_page(page, now)
                        cursors[name] = page["cursor"]
                        counts[name] += len(page["upserts"])
                        sizes[name] += share
                        if page["rescope"] and name not in report.rescoped:
                            report.rescoped.append(name)
                        if progress is not None:
                            progress(Progress(name, counts[name], sizes[name], not page["more"]))
                except BaseException:
                    if pending is not None:
                        pending.cancel()
                    raise
                if pending is None:
                    break
                answer, size = pending.result()
                pending = None
        report.downloaded = counts

    def _purge(self, exc: ServerError) -> None:
        """Access is gone: pending changes become sync errors, the profile's data goes."""
        now = dt.datetime.now(dt.UTC).isoformat()
        with self.replica.write() as conn:
            for entry in conn.execute(sa.select(outbox_table)).mappings().all():
                conn.execute(
                    error_table.insert().values(
                        changeid=entry["changeid"],
                        tablename=entry["tablename"],
                        operation=entry["operation"],
                        recordid=entry["recordid"],
                        code=exc.code,
                        message=f"not uploaded: {exc.message}",
                        errortype=3,
                        sent=entry["changes"],
                        reverted=None,
                        occurredon=now,
                    )
                )
            conn.execute(outbox_table.delete())
        self.replica.purge()
        self.files.sweep()
        self._notify()

    def sign_out(self) -> None:
        """Revoke the session and remove every row from this device; the next sign-in
        registers a new device id (a device id belongs to the user who registered it)."""
        try:
            tokens = self.replica.get_state("tokens") or {}
            if tokens.get("refresh_token"):
                self._http()._send(
                    "POST", "/auth/revoke", {"token": tokens["refresh_token"]}, auth=False
                )
        except (Offline, ServerError):
            pass
        self.replica.purge()
        with self.replica.write() as conn:
            conn.execute(outbox_table.delete())
            self.replica.delete_state(conn, "tokens")
            self.replica.delete_state(conn, "device")
        self.files.sweep()
        self._notify()

    # -- scheduler ------------------------------------------------------------------------------

    def due_tables(self, now: dt.datetime | None = None) -> list[str]:
        """Tables whose sync interval has passed (the profile's, or the user's frequency when
        the app allows it; frequency 0 means no automatic sync). Wi-Fi only holds everything
        back on a metered network."""
        now = now or dt.datetime.now(dt.UTC)
        handshake = self.replica.handshake
        if not handshake or not self.may_sync_automatically():
            return []
        settings = self.settings()
        app = handshake["app"]
        frequency = settings["frequency"] if app.get("allow_sync_frequency") else None
        last = self.replica.last_syncs()
        due: list[str] = []
        for item in handshake["profile"]["items"]:
            minutes = frequency or item.get("sync_interval_minutes", 15)
            when = last.get(item["table"])
            if when is None or now - dt.datetime.fromisoformat(when) >= dt.timedelta(
                minutes=minutes
            ):
                due.append(item["table"])
        return [t for t in handshake["order"] if t in due]

    def may_sync_automatically(self) -> bool:
        """Whether automatic sync may run now: a network, not a metered one when the user
        chose Wi-Fi only (and the app allows that choice), and a frequency other than "no
        automatic sync" (when the app lets users choose). Sync on demand is always allowed."""
        handshake = self.replica.handshake
        if not handshake or not self.network.connected():
            return False
        settings = self.settings()
        app = handshake["app"]
        if app.get("allow_wifi_only") and settings["wifi_only"] and not self.network.wifi():
            return False
        return not (app.get("allow_sync_frequency") and settings["frequency"] == 0)

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
        from fieldsync.client.live import LiveSync

        LiveSync(self, **options).run(stop)


def _rid(value: object) -> uuid.UUID:
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise BadRequest(f"{value!r} is not a record id (a GUID)") from None


def _byte_shares(pages: list[dict[str, Any]], size: int) -> list[int]:
    """Split one response's size between the pages it carried, by the values each page
    holds (upserted cells and removed ids), so a table of wide rows is not credited with
    the bytes of a table of narrow ones."""
    weights = [
        sum(len(row) for row in page["upserts"]) + len(page["removes"]) + 1 for page in pages
    ]
    total = sum(weights)
    return [size * w // total for w in weights]


def _plain(row: Mapping[Any, Any]) -> dict[str, Any]:
    """A replica row as a dict keyed by plain ``str``: SQLAlchemy's column names are a ``str``
    subclass, which JSON encoders such as orjson refuse as keys."""
    return {str(k): v for k, v in row.items()}
