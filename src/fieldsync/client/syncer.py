"""Sync on the device: handshake, files up, the outbox up (in order, each change once), every
table's pages down, files down; and the purge when access is gone.

The bodies are the types of :mod:`fieldsync.sync.protocol`; ``docs/protocol.md`` tells the
protocol whole.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import orjson

from fieldsync import __version__
from fieldsync.client.files import DeviceFiles, FileReport
from fieldsync.client.outbox import Outbox
from fieldsync.client.replica import Replica, chunks, insert, marks
from fieldsync.client.session import Session
from fieldsync.client.status import Monitor
from fieldsync.client.transport import AccessRemoved, DeviceError, Offline, ServerError
from fieldsync.errors import BadRequest
from fieldsync.sync.merge import settle
from fieldsync.sync.protocol import (
    ChangeAnswer,
    ClientChange,
    DownloadAnswer,
    DownloadPage,
    DownloadRequest,
    HandshakeAnswer,
    HandshakeRequest,
    UploadAnswer,
    UploadRequest,
)

UPLOAD_BATCH = 200
PAGE_SIZE = 2000


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


def access_gone(exc: ServerError) -> bool:
    """The answer means the user may no longer take the app offline: purge."""
    return isinstance(exc, AccessRemoved) or exc.status in (403, 404)


class Syncer:
    def __init__(
        self,
        replica: Replica,
        session: Session,
        outbox: Outbox,
        files: DeviceFiles,
        monitor: Monitor,
        lock: threading.RLock,
    ) -> None:
        self.replica = replica
        self.session = session
        self.outbox = outbox
        self.files = files
        self.monitor = monitor
        self.lock = lock

    def handshake(self) -> HandshakeAnswer:
        """Register with the server; adopt the published profile (a new version re-scopes
        the tables that changed)."""
        request: HandshakeRequest = {
            "device": self.session.device_id,
            "app": self.session.app,
            "sdk": __version__,
            "pending": self.outbox.pending_changes(),
        }
        try:
            answer: HandshakeAnswer = self.session.call("POST", "/sync/v1/handshake", request)
        except ServerError as exc:
            if access_gone(exc):
                self.purge(exc)
            raise
        self.replica.adopt(answer)
        return answer

    def sync(
        self,
        tables: Iterable[str] | None,
        *,
        progress: Callable[[Progress], None] | None,
        page_size: int,
        files: bool,
    ) -> SyncReport:
        report = SyncReport()
        with self.lock:
            self.monitor.syncing = True
            self.monitor.notify()
            try:
                try:
                    answer = self.handshake()
                except ServerError as exc:
                    if access_gone(exc):
                        report.purged = True
                    raise
                self.session.online(self.files.upload_pending)
                self.upload(report)
                self.files.sweep()
                wanted = list(answer["order"]) if tables is None else list(tables)
                self.download(wanted, report, progress, page_size)
                if files:
                    report.files = self.session.online(self.files.fetch)
                self.session.link(True, None)
            except Offline:
                raise
            except (DeviceError, BadRequest) as exc:
                self.session.link(self.session.connected, str(exc))
                raise
            finally:
                self.monitor.syncing = False
                self.monitor.notify()
        return report

    # -- up ---------------------------------------------------------------------------------

    def upload(self, report: SyncReport) -> None:
        while True:
            with self.replica.write() as conn:
                rows: list[Mapping[str, Any]] = [
                    dict(r)
                    for r in conn.execute(
                        "SELECT * FROM _fs_outbox ORDER BY seq LIMIT ?", (UPLOAD_BATCH,)
                    )
                ]
                acked: list[str] = self.replica.get_state("acked", conn) or []
                if not rows and not acked:
                    return
                for part in chunks([r["seq"] for r in rows]):
                    conn.execute(
                        f"UPDATE _fs_outbox SET sent = 1 WHERE seq IN ({marks(part)})", part
                    )
            changes: list[ClientChange] = [
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
            request: UploadRequest = {
                "device": self.session.device_id,
                "app": self.session.app,
                "changes": changes,
                "acknowledged": acked,
            }
            answer: UploadAnswer = self.session.call("POST", "/sync/v1/upload", request)
            self.settle(rows, answer["results"], report)

    def settle(
        self,
        rows: Sequence[Mapping[str, Any]],
        results: Sequence[ChangeAnswer],
        report: SyncReport,
    ) -> None:
        """Apply the server's answers: drop applied changes, revert rejected ones; the
        server may forget the answers this device stored (sent with the next upload)."""
        by_id = {r["id"]: r for r in results}
        now = dt.datetime.now(dt.UTC).isoformat()
        with self.replica.write() as conn:
            self.replica.set_state(
                conn, "acked", [e["changeid"] for e in rows if e["changeid"] in by_id]
            )
            for entry in rows:
                result = by_id.get(entry["changeid"])
                if result is None:
                    continue
                conn.execute("DELETE FROM _fs_outbox WHERE seq = ?", (entry["seq"],))
                table = entry["tablename"]
                if table not in self.replica.sql:
                    continue
                rid = uuid.UUID(entry["recordid"])
                step = settle(result)
                if step.kind == "keep":
                    report.uploaded += 1
                    if step.version is not None:
                        self.replica.update_row(conn, table, rid, {"versionnumber": step.version})
                    continue
                report.rejected += 1
                if step.kind == "drop":
                    self.replica.delete_rows(conn, table, [rid])
                    conn.execute(
                        "DELETE FROM _fs_outbox WHERE tablename = ? AND recordid = ? "
                        "AND operation != 'create'",
                        (table, entry["recordid"]),
                    )
                else:
                    assert step.row is not None
                    values = self.replica.stored(table, step.row)
                    if self.replica.exists(conn, table, rid):
                        self.replica.update_row(conn, table, rid, values)
                    else:
                        insert(conn, table, values)
                    later = self.replica._pending(conn, table)
                    if entry["recordid"] in later:
                        self.replica._overlay(conn, table, later, {entry["recordid"]})
                assert step.error is not None
                insert(
                    conn,
                    "_fs_error",
                    {
                        "changeid": entry["changeid"],
                        "tablename": table,
                        "operation": entry["operation"],
                        "recordid": entry["recordid"],
                        "code": str(step.error["code"]),
                        "message": str(step.error["message"]),
                        "errortype": int(step.error.get("type", 3)),
                        "sent": entry["changes"],
                        "reverted": None if step.row is None else orjson.dumps(step.row).decode(),
                        "occurredon": now,
                    },
                )

    # -- down -------------------------------------------------------------------------------

    def download(
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
            request: DownloadRequest = {
                "device": self.session.device_id,
                "app": self.session.app,
                "cursors": {t: positions[t] for t in active},
                "limit": page_size,
            }
            answer: DownloadAnswer = self.session.call("POST", "/sync/v1/download", request)
            return answer, self.session.http().last_size

        active = list(tables)
        pending: Future[tuple[DownloadAnswer, int]] | None = None
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
                shares = byte_shares(answer["pages"], size)
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

    # -- access gone ------------------------------------------------------------------------

    def purge(self, exc: ServerError) -> None:
        """Access is gone: pending changes become sync errors, the profile's data goes."""
        now = dt.datetime.now(dt.UTC).isoformat()
        with self.replica.write() as conn:
            for entry in conn.execute("SELECT * FROM _fs_outbox ORDER BY seq").fetchall():
                insert(
                    conn,
                    "_fs_error",
                    {
                        "changeid": entry["changeid"],
                        "tablename": entry["tablename"],
                        "operation": entry["operation"],
                        "recordid": entry["recordid"],
                        "code": exc.code,
                        "message": f"not uploaded: {exc.message}",
                        "errortype": 3,
                        "sent": entry["changes"],
                        "reverted": None,
                        "occurredon": now,
                    },
                )
            conn.execute("DELETE FROM _fs_outbox")
        self.replica.purge()
        self.files.sweep()
        self.monitor.notify()

    def sign_out(self) -> None:
        """Revoke the session and remove every row from this device."""
        with contextlib.suppress(Offline, ServerError):
            self.session.revoke()
        self.replica.purge()
        with self.replica.write() as conn:
            conn.execute("DELETE FROM _fs_outbox")
            self.replica.delete_state(conn, "tokens")
            self.replica.delete_state(conn, "device")
        self.files.sweep()
        self.monitor.notify()


def byte_shares(pages: Sequence[DownloadPage], size: int) -> list[int]:
    """Split one response's size between the pages it carried, by the values each page
    holds (upserted cells and removed ids), so a table of wide rows is not credited with
    the bytes of a table of narrow ones."""
    weights = [
        sum(len(row) for row in page["upserts"]) + len(page["removes"]) + 1 for page in pages
    ]
    total = sum(weights)
    return [size * w // total for w in weights]
