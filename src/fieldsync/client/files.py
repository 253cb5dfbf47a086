"""Files and images on the device: blobs named by their sha256 in ``files/blobs``, the facts
of each file id in ``_fs_file``, and the uploads still to do in ``_fs_file_upload``.

- **Attach** (offline): the bytes are copied into the blob directory, the file id goes into
  the row through an ordinary update (so it travels in the outbox), and an upload is queued.
- **Upload** (before the outbox): each queued file is sent in chunks with their digest; a
  chunk the server did not get is sent again from the offset it reports; the server checks
  the whole file against its sha256. The row change that references the file goes after.
- **Fetch** (after the rows): the file ids that the rows hold in the profile's file and image
  columns are granted by the server (facts and a ticket each); every blob not yet here is
  downloaded once per digest, in ranges, into ``files/partial`` (a broken download resumes
  from the bytes already there), verified, then moved into place.
- **Sweep**: a file id that no row and no pending change references any more goes, and so do
  blobs no remaining file uses (a row left the scope, a column was cleared, a change with a
  new file was rejected).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import mimetypes
import os
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from fieldsync.client.localdb import quote
from fieldsync.client.outbox import Outbox
from fieldsync.client.reads import Reader
from fieldsync.client.replica import Connection, Replica, chunks, insert, marks
from fieldsync.client.session import Session
from fieldsync.client.transport import BytesTransport, DeviceError, ServerError
from fieldsync.errors import BadRequest, PayloadTooLarge, RecordNotFound
from fieldsync.schema.model import ColumnType

log = logging.getLogger(__name__)

GRANT_BATCH = 500
SMALL = 1024 * 1024  # a file this small travels in a batch with others, both ways
BATCH_BYTES = 4 * 1024 * 1024  # the bytes of one batch, at most
BATCH_FILES = 500
BATCH_TYPE = "application/x-fieldsync-files"
FILE_TYPES = (ColumnType.FILE, ColumnType.IMAGE)

TABLES = (
    """CREATE TABLE IF NOT EXISTS _fs_file (
        fileid VARCHAR(36) NOT NULL, sha256 VARCHAR(64) NOT NULL, name VARCHAR(255) NOT NULL,
        mimetype VARCHAR(255) NOT NULL, size BIGINT NOT NULL, thumbnail VARCHAR(64),
        thumbnailsize BIGINT, PRIMARY KEY (fileid))""",
    """CREATE TABLE IF NOT EXISTS _fs_file_upload (
        fileid VARCHAR(36) NOT NULL, tablename VARCHAR(64) NOT NULL,
        columnname VARCHAR(64) NOT NULL, PRIMARY KEY (fileid))""",
)


@dataclass
class FileReport:
    downloaded: int = 0  # blobs fetched
    bytes: int = 0
    removed: int = 0  # blobs swept
    failed: int = 0  # blobs that did not verify (fetched again next time)


class DeviceFiles:
    def __init__(
        self, root: Path, replica: Replica, session: Session, outbox: Outbox, reader: Reader
    ) -> None:
        self.replica = replica
        self.session = session
        self.outbox = outbox
        self.reader = reader
        self.root = root
        self.batches = True  # False once a server without the batch endpoints said so
        with self.replica.write() as conn:
            for statement in TABLES:
                conn.execute(statement)

    # -- paths ---------------------------------------------------------------------------

    def blob(self, digest: str) -> Path:
        return self.root / "blobs" / digest[:2] / digest

    def _partial(self, digest: str) -> Path:
        return self.root / "partial" / digest

    def _have(self, digest: str, size: int | None) -> bool:
        """Whether a blob is here whole (a torn one has the wrong size)."""
        try:
            return self.blob(digest).stat().st_size == int(size or 0)
        except FileNotFoundError:
            return False

    # -- which files the replica references -----------------------------------------------

    def _columns(self, types: tuple[ColumnType, ...] = FILE_TYPES) -> Iterator[tuple[str, str]]:
        for name, columns in self.replica.columns.items():
            t = self.replica.schema.table(name)
            for c in columns:
                col = t.column(c)
                if col is not None and col.type in types:
                    yield name, c

    def _in_rows(self, conn: Connection, types: tuple[ColumnType, ...] = FILE_TYPES) -> set[str]:
        found: set[str] = set()
        for table, column in self._columns(types):
            c = quote(column)
            rows = conn.execute(f"SELECT {c} FROM {quote(table)} WHERE {c} IS NOT NULL")
            found |= {str(uuid.UUID(v)) for (v,) in rows}
        return found

    def _in_outbox(self, conn: Connection, known: set[str]) -> set[str]:
        found: set[str] = set()
        for (raw,) in conn.execute("SELECT changes FROM _fs_outbox"):
            values = orjson.loads(raw)
            found |= {v for v in values.values() if isinstance(v, str) and v in known}
        return found

    # -- attach and read ------------------------------------------------------------------

    def attach(
        self,
        table: str,
        record_id: uuid.UUID | str,
        column: str,
        data: bytes | str | os.PathLike[str],
        name: str | None = None,
        mimetype: str | None = None,
    ) -> uuid.UUID:
        t, _ = self.replica.table(table)
        col = t.column(column)
        if col is None or col.type not in FILE_TYPES:
            raise BadRequest(f"{table}.{column} is not a file or image column")
        if column not in self.replica.columns.get(table, ()):
            raise BadRequest(f"the offline profile does not take {table}.{column} offline")
        rid = uuid.UUID(str(record_id))
        with self.replica.read() as conn:
            if not self.replica.exists(conn, table, rid):
                raise RecordNotFound(table, rid)
        if name is None:
            name = "file" if isinstance(data, bytes) else Path(data).name
        mimetype = mimetype or mimetypes.guess_type(name)[0] or "application/octet-stream"
        limit = (col.max_size_kb or 0) * 1024
        digest, size = self._take(data, limit, f"{table}.{column}")
        fid = uuid.uuid4()
        with self.replica.write() as conn:
            insert(
                conn,
                "_fs_file",
                {
                    "fileid": str(fid),
                    "sha256": digest,
                    "name": name,
                    "mimetype": mimetype,
                    "size": size,
                },
            )
            insert(
                conn,
                "_fs_file_upload",
                {"fileid": str(fid), "tablename": table, "columnname": column},
            )
        self.outbox.update(table, rid, {column: str(fid)})
        return fid

    def _take(
        self, data: bytes | str | os.PathLike[str], limit: int, where: str
    ) -> tuple[str, int]:
        """Copy bytes into the blob directory; their digest and size."""
        tmp = self.root / "tmp" / uuid.uuid4().hex
        tmp.parent.mkdir(parents=True, exist_ok=True)
        h, size = hashlib.sha256(), 0
        try:
            with tmp.open("wb") as out:
                if isinstance(data, bytes):
                    h.update(data)
                    out.write(data)
                    size = len(data)
                else:
                    with Path(data).open("rb") as src:
                        while piece := src.read(1024 * 1024):
                            h.update(piece)
                            out.write(piece)
                            size += len(piece)
                            if limit and size > limit:
                                break
                out.flush()
                os.fsync(out.fileno())
            if limit and size > limit:
                raise PayloadTooLarge(f"{where} takes files of at most {limit // 1024} KB")
            digest = h.hexdigest()
            target = self.blob(digest)
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.exists():
                tmp.unlink()
            else:
                os.replace(tmp, target)
            return digest, size
        finally:
            tmp.unlink(missing_ok=True)

    def info(self, table: str, record_id: uuid.UUID | str, column: str) -> dict[str, Any] | None:
        row = self.reader.get(table, record_id)
        if row is None:
            raise RecordNotFound(table, uuid.UUID(str(record_id)))
        value = row.get(column)
        if value is None:
            return None
        with self.replica.read() as conn:
            found = conn.execute(
                "SELECT * FROM _fs_file WHERE fileid = ?", (str(value),)
            ).fetchone()
        if found is None:
            return {"id": str(value), "available": False}
        return {
            "id": found["fileid"],
            "name": found["name"],
            "mimetype": found["mimetype"],
            "size": found["size"],
            "sha256": found["sha256"],
            "available": self._have(found["sha256"], found["size"]),
            "thumbnail": found["thumbnail"] is not None
            and self._have(found["thumbnail"], found["thumbnailsize"]),
        }

    def path(
        self, table: str, record_id: uuid.UUID | str, column: str, *, thumbnail: bool = False
    ) -> Path | None:
        """Where a row's file (or an image's thumbnail) is on this device; None when the
        column is empty or the bytes have not arrived yet."""
        info = self.info(table, record_id, column)
        if info is None or not info.get("available"):
            return None
        digest = info["sha256"]
        if thumbnail:
            with self.replica.read() as conn:
                found = conn.execute(
                    "SELECT thumbnail FROM _fs_file WHERE fileid = ?", (info["id"],)
                ).fetchone()
            digest = None if found is None else found[0]
            if digest is None:
                return None
        path = self.blob(digest)
        return path if path.exists() else None

    # -- upload -------------------------------------------------------------------------

    def upload_pending(self, http: BytesTransport) -> int:
        """Send every queued file (small ones in batches, large ones in chunks); returns how
        many finished."""
        with self.replica.read() as conn:
            queued = conn.execute(
                "SELECT u.fileid, u.tablename, u.columnname, f.sha256, f.name, f.mimetype, "
                "f.size FROM _fs_file_upload AS u JOIN _fs_file AS f ON f.fileid = u.fileid "
                "ORDER BY u.fileid"
            ).fetchall()
        done = 0
        small = [q for q in queued if int(q["size"]) <= SMALL]
        one_by_one = [q for q in queued if int(q["size"]) > SMALL]
        if small and self.batches:
            try:
                done += self._upload_batches(http, small)
            except ServerError as exc:
                if exc.status not in (404, 405, 413):
                    raise
                # a server from before batches, or one that takes smaller bodies: one by one
                self.batches = exc.status == 413
                one_by_one += small
        else:
            one_by_one += small
        for q in one_by_one:
            try:
                answer = self._upload_one(http, q)
            except ServerError as exc:
                if exc.status in (401, 403) and "ticket" not in exc.message:
                    raise
                # refused for good (too large, not an image, …): the change that references
                # it is rejected by the server and becomes a sync error
                log.warning("file %s was refused: %s", q["fileid"], exc.message)
                self._settle([], [q["fileid"]])
                continue
            self._settle([(q["fileid"], answer["file"])], [])
            done += 1
        return done

    def _settle(self, stored: list[tuple[str, dict[str, Any]]], dropped: list[str]) -> None:
        """Take uploaded files (with the facts the server answered) and refused ones off the
        queue, in one transaction."""
        if not stored and not dropped:
            return
        with self.replica.write() as conn:
            for fid, info in stored:
                thumb = info.get("thumbnail") or {}
                conn.execute(
                    "UPDATE _fs_file SET thumbnail = ?, thumbnailsize = ? WHERE fileid = ?",
                    (thumb.get("sha256"), thumb.get("size"), fid),
                )
            gone = [fid for fid, _ in stored] + dropped
            for part in chunks(gone):
                conn.execute(f"DELETE FROM _fs_file_upload WHERE fileid IN ({marks(part)})", part)

    def _upload_batches(self, http: BytesTransport, queued: list[Any]) -> int:
        """Send small files many to a request (``POST /sync/v1/files/batch``)."""
        done = 0
        for group in _groups(queued, lambda q: int(q["size"])):
            listed: list[dict[str, Any]] = []
            pieces: list[bytes] = []
            sent: list[Any] = []
            dropped: list[str] = []
            for q in group:
                data = self._read_blob(q["sha256"], int(q["size"]))
                if data is None:  # the local copy is gone or damaged: it cannot be sent
                    log.warning("file %s is damaged on this device: not uploaded", q["fileid"])
                    dropped.append(q["fileid"])
                    continue
                listed.append(
                    {
                        "file": q["fileid"],
                        "table": q["tablename"],
                        "column": q["columnname"],
                        "name": q["name"],
                        "mimetype": q["mimetype"],
                        "size": q["size"],
                        "sha256": q["sha256"],
                    }
                )
                pieces.append(data)
                sent.append(q)
            stored: list[tuple[str, dict[str, Any]]] = []
            if listed:
                body = b"".join([orjson.dumps({"files": listed}), b"\n", *pieces])
                answer = http.send_bytes(
                    "POST", "/sync/v1/files/batch", body, {"Content-Type": BATCH_TYPE}
                )
                for q, result in zip(sent, answer["files"], strict=True):
                    if result["status"] == "stored":
                        stored.append((q["fileid"], result["file"]))
                    elif result["status"] == "refused":  # for good, as in upload_pending
                        log.warning(
                            "file %s was refused: %s", q["fileid"], result["error"]["message"]
                        )
                        dropped.append(q["fileid"])
                    # "retry": damaged on the way, sent again at the next sync
            self._settle(stored, dropped)
            done += len(stored)
        return done

    def _read_blob(self, digest: str, size: int) -> bytes | None:
        """A local blob's bytes if they are whole (their size and sha256), else None."""
        try:
            data = self.blob(digest).read_bytes()
        except FileNotFoundError:
            return None
        if len(data) != size or hashlib.sha256(data).hexdigest() != digest:
            return None
        return data

    def _upload_one(self, http: BytesTransport, q: Any) -> dict[str, Any]:
        state: dict[str, Any] = http.call(
            "POST",
            "/sync/v1/files/uploads",
            {
                "file": q["fileid"],
                "table": q["tablename"],
                "column": q["columnname"],
                "name": q["name"],
                "mimetype": q["mimetype"],
                "size": q["size"],
                "sha256": q["sha256"],
            },
        )
        path = self.blob(q["sha256"])
        size = int(q["size"])
        fd = os.open(path, os.O_RDONLY)

        def prepare(at: int, length: int) -> tuple[int, bytes, bytes]:
            piece = os.pread(fd, min(length, size - at), at)
            return at, piece, hashlib.sha256(piece).digest()

        # the next chunk is read and hashed while the server takes this one
        with ThreadPoolExecutor(1) as pool:
            try:
                ahead: Future[tuple[int, bytes, bytes]] | None = None
                while not state["complete"]:
                    at, length = int(state["received"]), int(state["chunk_size"])
                    ready = ahead.result() if ahead is not None else None
                    if ready is None or ready[0] != at or len(ready[1]) > length:
                        ready = prepare(at, length)
                    _, piece, digest = ready
                    done = at + len(piece)
                    ahead = pool.submit(prepare, done, length) if done < size else None
                    headers = {
                        "Content-Type": "application/octet-stream",
                        "Content-Range": f"bytes {at}-{done - 1}/{size}",
                        "Content-Digest": f"sha-256=:{base64.b64encode(digest).decode()}:",
                    }
                    upload = state["upload"]
                    try:
                        state = http.send_bytes(
                            "PUT", f"/sync/v1/files/uploads/{upload}", piece, headers
                        )
                    except ServerError as exc:
                        if exc.status != 416:
                            raise
                        state = http.call("GET", f"/sync/v1/files/uploads/{upload}")
                if ahead is not None:
                    ahead.result()  # not left reading a closed file
            finally:
                if ahead is not None:
                    ahead.cancel()
                    with contextlib.suppress(Exception):
                        ahead.result()
                os.close(fd)
        return state

    # -- fetch --------------------------------------------------------------------------

    def fetch(
        self, http: BytesTransport, progress: Callable[[int, int], None] | None = None
    ) -> FileReport:
        report = FileReport()
        with self.replica.read() as conn:
            wanted = self._in_rows(conn)
            known = {r["fileid"]: r for r in conn.execute("SELECT * FROM _fs_file")}
            queued = {r[0] for r in conn.execute("SELECT fileid FROM _fs_file_upload")}
            images = self._in_rows(conn, (ColumnType.IMAGE,))

        def missing(row: Any) -> bool:
            if not self._have(row["sha256"], row["size"]):
                return True
            if row["thumbnail"] is None:  # an image's thumbnail may be made after its upload
                return row["fileid"] in images
            return not self._have(row["thumbnail"], row["thumbnailsize"])

        ask = sorted(f for f in wanted if f not in queued and (f not in known or missing(known[f])))
        tickets: dict[str, str] = {}
        for start in range(0, len(ask), GRANT_BATCH):
            tickets.update(self._grant(http, ask[start : start + GRANT_BATCH]))
        with self.replica.read() as conn:
            rows = {r["fileid"]: r for r in conn.execute("SELECT * FROM _fs_file")}
        jobs: dict[str, tuple[str, str, int]] = {}  # digest -> (file id, size kind, bytes)
        for fid in tickets:
            row = rows[fid]
            if not self._have(row["sha256"], row["size"]):
                jobs.setdefault(row["sha256"], (fid, "full", int(row["size"])))
            thumb = row["thumbnail"]
            if thumb is not None and not self._have(thumb, row["thumbnailsize"]):
                jobs.setdefault(thumb, (fid, "thumbnail", int(row["thumbnailsize"] or 0)))
        if self.batches:
            small = {d: j for d, j in jobs.items() if j[2] <= SMALL}
            try:
                self._fetch_batches(http, small, report, progress, len(jobs))
                jobs = {d: j for d, j in jobs.items() if d not in small}
            except ServerError as exc:
                if exc.status not in (404, 405):
                    raise
                self.batches = False  # a server from before batches: one file at a time
        for digest, (fid, kind, size) in jobs.items():
            try:
                got = self._download(http, fid, tickets, kind, digest, size)
            except _Corrupt:
                report.failed += 1
                continue
            except _Gone:  # access went between the grant and the download
                continue
            report.downloaded += 1
            report.bytes += got
            if progress is not None:
                progress(report.downloaded, report.downloaded + len(jobs))
        report.removed = self.sweep()
        return report

    def _fetch_batches(
        self,
        http: BytesTransport,
        jobs: dict[str, tuple[str, str, int]],
        report: FileReport,
        progress: Callable[[int, int], None] | None,
        total: int,
    ) -> None:
        """Fetch small blobs many to a request (``POST /sync/v1/files/read``); each is
        checked against its sha256 before it is kept. Blobs a crash may have left torn are
        found by their size and fetched again, so they are not synced to disk one by one."""
        left = list(jobs.items())
        while left:
            group = next(iter(_groups(left, lambda job: job[1][2])))
            ask = [{"id": fid, "size": kind} for _, (fid, kind, _) in group]
            _, raw = http.exchange_bytes(
                "/sync/v1/files/read",
                orjson.dumps(
                    {"device": self.session.device_id, "app": self.session.app, "files": ask}
                ),
                {"Content-Type": "application/json", "Accept": BATCH_TYPE},
            )
            head, _, body = raw.partition(b"\n")
            answer = orjson.loads(head)
            later = []
            at = 0
            for (digest, job), item in zip(group, answer["files"], strict=True):
                if item["status"] == "later":
                    later.append((digest, job))
                    continue
                if item["status"] != "sent":  # no row the user can read holds it any more
                    continue
                data = body[at : at + int(item["length"])]
                at += int(item["length"])
                if hashlib.sha256(data).hexdigest() != digest:
                    log.warning("file %s did not match its sha256: fetched again next time", job[0])
                    report.failed += 1
                    continue
                self._keep(digest, data)
                report.downloaded += 1
                report.bytes += len(data)
                if progress is not None:
                    progress(report.downloaded, total)
            left = left[len(group) :] + later
            if len(later) == len(group):  # pragma: no cover - the server sent nothing
                raise DeviceError("the server answered no file of a batch read")

    def _keep(self, digest: str, data: bytes) -> None:
        target = self.blob(digest)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{digest}.{uuid.uuid4().hex}")
        tmp.write_bytes(data)
        os.replace(tmp, target)

    def _grant(self, http: BytesTransport, ids: list[str]) -> dict[str, str]:
        answer = http.call(
            "POST",
            "/sync/v1/files/grants",
            {"device": self.session.device_id, "app": self.session.app, "files": ids},
        )
        tickets: dict[str, str] = {}
        with self.replica.write() as conn:
            for f in answer["files"]:
                thumb = f.get("thumbnail") or {}
                conn.execute(
                    "INSERT INTO _fs_file (fileid, sha256, name, mimetype, size, thumbnail, "
                    "thumbnailsize) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (fileid) DO UPDATE "
                    "SET sha256 = excluded.sha256, name = excluded.name, "
                    "mimetype = excluded.mimetype, size = excluded.size, "
                    "thumbnail = excluded.thumbnail, thumbnailsize = excluded.thumbnailsize",
                    (
                        f["id"],
                        f["sha256"],
                        f["name"],
                        f["mimetype"],
                        f["size"],
                        thumb.get("sha256"),
                        thumb.get("size"),
                    ),
                )
                tickets[f["id"]] = f["ticket"]
        return tickets

    def _download(
        self,
        http: BytesTransport,
        fid: str,
        tickets: dict[str, str],
        kind: str,
        digest: str,
        size: int,
    ) -> int:
        part = self._partial(digest)
        part.parent.mkdir(parents=True, exist_ok=True)
        have = part.stat().st_size if part.exists() else 0
        if have > size:
            part.unlink()
            have = 0
        h = hashlib.sha256()
        if have:  # resumed: the bytes already here count in the digest
            with part.open("rb") as f:
                while piece := f.read(1024 * 1024):
                    h.update(piece)
        fetched = 0
        renewed = False
        with part.open("ab") as out:

            def sink(piece: bytes) -> None:
                nonlocal fetched
                out.write(piece)
                h.update(piece)
                fetched += len(piece)

            while have < size:
                try:  # the rest in one ranged read; a broken one resumes from what arrived
                    http.fetch(
                        f"/sync/v1/files/{fid}",
                        params={"ticket": tickets[fid], "size": kind},
                        headers={"Range": f"bytes={have}-{size - 1}"},
                        sink=sink,
                    )
                except ServerError as exc:
                    if exc.status == 403 and not renewed:  # the ticket expired: ask again
                        again = self._grant(http, [fid])
                        if fid not in again:  # no row the user can read holds it any more
                            raise _Gone(fid) from None
                        tickets.update(again)
                        renewed = True
                        continue
                    raise
                finally:
                    out.flush()
                if out.tell() == have:
                    raise DeviceError(f"the server sent no byte of file {fid} from {have}")
                have = out.tell()
            os.fsync(out.fileno())
        if h.hexdigest() != digest:
            part.unlink()
            log.warning("file %s did not match its sha256: fetched again next time", fid)
            raise _Corrupt(digest)
        target = self.blob(digest)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(part, target)
        return fetched

    # -- sweep --------------------------------------------------------------------------

    def sweep(self) -> int:
        """Forget file ids nothing references and delete the blobs no file uses; returns
        the number of blobs removed."""
        with self.replica.write() as conn:
            known = {r[0] for r in conn.execute("SELECT fileid FROM _fs_file")}
            keep = self._in_rows(conn) | self._in_outbox(conn, known)
            for part in chunks(sorted(known - keep)):
                conn.execute(f"DELETE FROM _fs_file WHERE fileid IN ({marks(part)})", part)
                conn.execute(f"DELETE FROM _fs_file_upload WHERE fileid IN ({marks(part)})", part)
            used: set[str] = set()
            for sha, thumb in conn.execute("SELECT sha256, thumbnail FROM _fs_file"):
                used |= {d for d in (sha, thumb) if d}
        removed = 0
        for folder in ("blobs", "partial"):
            base = self.root / folder
            if not base.exists():
                continue
            paths = base.rglob("*")
            for path in paths:
                if path.is_file() and path.name not in used:
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()
                        removed += folder == "blobs"
        return removed


class _Corrupt(DeviceError):
    pass


class _Gone(DeviceError):
    """The server no longer grants a file (the row left the user's reach)."""


def _groups(items: list[Any], size: Callable[[Any], int]) -> Iterator[list[Any]]:
    """``items`` in runs of at most BATCH_FILES items and BATCH_BYTES bytes (one item at
    least)."""
    group: list[Any] = []
    used = 0
    for item in items:
        if group and (len(group) >= BATCH_FILES or used + size(item) > BATCH_BYTES):
            yield group
            group, used = [], 0
        group.append(item)
        used += size(item)
    if group:
        yield group
