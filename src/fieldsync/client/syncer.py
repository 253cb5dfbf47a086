"""Sync on the device: handshake, files up, the outbox up (in order, each change once), every
table's pages down, files down, the inventory (:mod:`~fieldsync.client.inventory`; a table the
server re-scopes is downloaded again at once); the purge when access is gone and the wipe an
administrator asked for, each acknowledged with a receipt.

The bodies are the types of :mod:`fieldsync.sync.protocol`; ``docs/protocol.md`` tells the
protocol whole.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import orjson

from fieldsync import __version__
from fieldsync.client.files import DeviceFiles, FileReport
from fieldsync.client.inventory import Follower, Inventory
from fieldsync.client.outbox import Outbox
from fieldsync.client.replica import Replica, chunks, insert, marks
from fieldsync.client.session import Session
from fieldsync.client.status import Monitor
from fieldsync.client.transport import AccessRemoved, DeviceError, Offline, ServerError
from fieldsync.errors import BadRequest
from fieldsync.sync.merge import settle
from fieldsync.sync.protocol import (
    WIPE_CODE,
    BackfillAnswer,
    BackfillRequest,
    ChangeAnswer,
    ClientChange,
    DownloadAnswer,
    DownloadPage,
    DownloadRequest,
    HandshakeAnswer,
    HandshakeRequest,
    HandshakeResult,
    UploadAnswer,
    UploadRequest,
)

log = logging.getLogger(__name__)

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
    wiped: bool = False  # an administrator asked: every row, the outbox and the files went
    files: FileReport | None = None  # blobs fetched after the rows (``sync(files=True)``)
    inventory: dict[str, str] = field(default_factory=dict)  # the server's verdict per table
    backfilled: dict[str, int] = field(default_factory=dict)  # rows given new columns


def wipe_asked(exc: ServerError) -> bool:
    """The answer means an administrator asked to wipe this device."""
    return exc.code == WIPE_CODE


def access_gone(exc: ServerError) -> bool:
    """The answer means the user may no longer take the app offline: purge."""
    return not wipe_asked(exc) and (isinstance(exc, AccessRemoved) or exc.status in (403, 404))


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
        self.inventory = Inventory(replica, session)

    def handshake(self) -> HandshakeAnswer:
        """Register with the server; adopt the published profile (a new version re-scopes
        the tables that changed). The etag of the handshake held goes along: when nothing
        changed, the server says so in a few bytes and there is nothing to adopt."""
        request: HandshakeRequest = {
            "device": self.session.device_id,
            "app": self.session.app,
            "sdk": __version__,
            "pending": self.outbox.pending_changes(),
        }
        held = self.replica.handshake
        if held and held.get("etag"):
            request["etag"] = held["etag"]
        self.inventory.flush()  # a receipt the server has not had yet
        try:
            answer: HandshakeResult = self.session.call("POST", "/sync/v1/handshake", request)
        except ServerError as exc:
            if wipe_asked(exc):
                self.wipe()
            elif access_gone(exc):
                self.purge(exc)
            raise
        if "unchanged" in answer:
            if held is not None and answer["etag"] == held.get("etag"):
                return self.session.handshake
            # an answer to another etag than the one sent: ask again for the whole answer
            request.pop("etag", None)
            answer = self.session.call("POST", "/sync/v1/handshake", request)
            if "unchanged" in answer:
                raise DeviceError("the server answered 'unchanged' to a handshake without etag")
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
                    report.purged = access_gone(exc)
                    report.wiped = wipe_asked(exc)
                    raise
                try:
                    self.session.online(self.files.upload_pending)
                    self.upload(report)
                    self.files.sweep()
                    self.backfill(report, page_size)
                    wanted = list(answer["order"]) if tables is None else list(tables)
                    self.download(wanted, report, progress, page_size)
                    self.check(wanted, report, progress, page_size)
                except ServerError as exc:
                    if wipe_asked(exc):  # asked while this sync ran
                        self.wipe()
                        report.wiped = True
                    raise
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
        # the answers change rows without moving their table's cursor: the inventory's kept
        # counts of those tables are computed afresh
        self.inventory.forget({e["tablename"] for e in rows if e["changeid"] in by_id})
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
                    later = self.replica.pending_ids(conn, table)
                    if entry["recordid"] in later:
                        self.replica.overlay_pending(conn, table, later, {entry["recordid"]})
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
        follower = Follower(self.replica)  # the inventory's kept values follow the pages
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
                        texts = follower.before(page)
                        self.replica.apply_page(page, now)
                        follower.after(page, texts)
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
        follower.save()
        report.downloaded = counts

    # -- replica migrations ------------------------------------------------------------------

    def backfill(self, report: SyncReport, page_size: int) -> None:
        """Fill the columns the tables gained (a column added to the table or to the
        profile's selection) before the download: ids and those columns only, page by page,
        each page committed with the job's progress (a broken backfill resumes)."""
        for name, job in self.replica.backfills().items():
            after = job.get("after")
            while True:
                request: BackfillRequest = {
                    "device": self.session.device_id,
                    "app": self.session.app,
                    "table": name,
                    "columns": list(job["columns"]),
                    "after": after,
                    "limit": page_size,
                }
                try:
                    answer: BackfillAnswer = self.session.call("POST", "/sync/v1/backfill", request)
                except ServerError as exc:
                    if exc.status != 400:
                        raise
                    # the profile changed again since the handshake: the next one decides
                    log.warning("backfill of %s refused: %s", name, exc)
                    self.replica.drop_backfill(name)
                    break
                report.bytes += self.session.http().last_size
                filled = self.replica.apply_backfill(answer)
                report.backfilled[name] = report.backfilled.get(name, 0) + filled
                if not answer["more"]:
                    break
                after = answer["after"]

    # -- inventory --------------------------------------------------------------------------

    def check(
        self,
        tables: list[str],
        report: SyncReport,
        progress: Callable[[Progress], None] | None,
        page_size: int,
    ) -> None:
        """Report the inventory of the tables just downloaded; download again at once the
        tables the server re-scopes (their counts went wrong)."""
        try:
            answer = self.inventory.report(tables)
        except ServerError as exc:
            if wipe_asked(exc):
                raise
            # the rows are in; a server that cannot take the report does not fail the sync
            log.warning("the server did not take the inventory: %s", exc)
            return
        if answer is None:
            return
        report.inventory = {v["table"]: v["status"] for v in answer["tables"]}
        if answer["rescope"]:
            before = dict(report.downloaded)
            self.download(list(answer["rescope"]), report, progress, page_size)
            for name, rows in before.items():
                report.downloaded[name] = report.downloaded.get(name, 0) + rows

    # -- access gone ------------------------------------------------------------------------

    def purge(self, exc: ServerError) -> None:
        """Access is gone: pending changes become sync errors, the profile's data goes, and
        a receipt says how much (once: a device that holds nothing sends none)."""
        now = dt.datetime.now(dt.UTC).isoformat()
        held = self.replica.handshake is not None
        counts = self.inventory.counts()
        with self.replica.write() as conn:
            entries = conn.execute("SELECT * FROM _fs_outbox ORDER BY seq").fetchall()
            for entry in entries:
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
        self.inventory.forget()
        removed = self.files.sweep()
        self.monitor.notify()
        if held:
            self.inventory.receipt(
                "purge", counts, outbox=len(entries), files=removed, reason=exc.message
            )

    def wipe(self) -> None:
        """An administrator asked: every row, the outbox (pending changes are not sent), the
        sync errors and the files go; a receipt says how much."""
        counts = self.inventory.counts()
        with self.replica.write() as conn:
            outbox = int(conn.execute("SELECT count(*) FROM _fs_outbox").fetchone()[0])
            conn.execute("DELETE FROM _fs_outbox")
            conn.execute("DELETE FROM _fs_error")
            self.replica.delete_state(conn, "acked")
        self.replica.purge()
        self.inventory.forget()
        removed = self.files.sweep()
        self.monitor.notify()
        self.inventory.receipt(
            "wipe", counts, outbox=outbox, files=removed, reason="asked by an administrator"
        )

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
