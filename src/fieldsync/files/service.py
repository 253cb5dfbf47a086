"""Files and images behind file and image columns: uploads (chunked, resumable, verified),
reads, and the collection of what nothing references any more.

A row's file or image column holds a *file id*; ``fs_file`` maps it to a name, a MIME type,
a size and the sha256 of its bytes (an image also to its thumbnail's). Bytes live once per
digest in the blob store (:mod:`fieldsync.files.blobs`), however many files share them.

An upload is a session (``fs_upload``): begun with the target table and column (their size
limit and type apply), then chunks at increasing offsets, each checked against its digest
when one is sent; a chunk that does not start where the last ended is refused with 416 and
the current offset, so a broken upload resumes from there. The last chunk verifies the
whole file against the sha256 declared at the start (a device always declares it), makes
an image's thumbnail, and creates the file row. A Web API upload names its row and column
and writes the new file id to it as the caller, in the same transaction.

Who may read a file is decided by the rows that reference it: the Web API reads the row
(:meth:`Files.for_column`), sync checks the rows of the user's profile
(:mod:`fieldsync.sync.files`). A digest alone never opens anything.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from fieldsync.errors import (
    BadRequest,
    FieldsyncError,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    RangeNotSatisfiable,
    ServiceUnavailable,
)
from fieldsync.files.blobs import BlobStore, check_digest
from fieldsync.files.images import thumbnail
from fieldsync.files.thumbnails import Thumbnails
from fieldsync.records.service import Records
from fieldsync.schema.model import Column, ColumnType, Table
from fieldsync.security.model import Privilege, SecurityContext
from fieldsync.security.predicate import has_privilege
from fieldsync.store.catalog import fs_file, fs_upload
from fieldsync.store.store import utcnow
from fieldsync.types import RecordId

log = logging.getLogger(__name__)

MiB = 1024 * 1024
FILES_LOCK = 0x66696C6573  # PostgreSQL advisory lock: completing an upload vs. collecting
FILE_TYPES = (ColumnType.FILE, ColumnType.IMAGE)
UNKNOWN = -1  # the size of an upload that has not said it yet


@dataclass(frozen=True)
class FileLimits:
    max_bytes: int = 128 * MiB
    chunk_bytes: int = 4 * MiB  # the chunk size a client is told to send
    max_chunk_bytes: int = 16 * MiB  # the largest chunk accepted (FIELDSYNC_MAX_CHUNK_MB)
    orphan_seconds: int = 24 * 3600  # an unreferenced file or upload lives this long


@dataclass
class _Running:
    """The sha256 of an upload's first ``offset`` bytes, as this process stored them; good
    while the upload's ``stamp`` is still the one its last chunk set."""

    stamp: str
    offset: int
    hash: Any


class ChunkHash:
    """A chunk's sha256, computed as its bytes arrive, and (when this process holds the
    hash of the upload's bytes before the chunk) the whole file's so far."""

    def __init__(self, running: _Running | None, start: int) -> None:
        self.chunk = hashlib.sha256()
        usable = running is not None and running.offset == start
        self.whole = running.hash.copy() if usable and running is not None else None
        self.prior = running.stamp if usable and running is not None else None

    def update(self, piece: bytes) -> None:
        self.chunk.update(piece)
        if self.whole is not None:
            self.whole.update(piece)


@dataclass(frozen=True)
class FileInfo:
    file_id: uuid.UUID
    name: str
    mimetype: str
    size: int
    sha256: str
    thumbnail: str | None = None
    thumbnail_size: int | None = None
    image: bool = False  # checked to be an image when it arrived

    @classmethod
    def of(cls, row: Any) -> FileInfo:
        return cls(
            row.fileid,
            row.name,
            row.mimetype,
            int(row.size),
            row.sha256,
            row.thumbnail,
            None if row.thumbnailsize is None else int(row.thumbnailsize),
            bool(row.isimage) or row.thumbnail is not None,
        )

    @property
    def due(self) -> bool:
        """An image whose thumbnail is still to be made."""
        return self.image and self.thumbnail is None

    def digest(self, thumb: bool = False) -> tuple[str, int]:
        if thumb:
            if self.due:
                raise ServiceUnavailable(
                    f"the thumbnail of image {self.file_id} is not made yet: ask again shortly",
                    retry_after=5,
                )
            if self.thumbnail is None or self.thumbnail_size is None:
                raise NotFound(f"file {self.file_id} has no thumbnail: it is not an image")
            return self.thumbnail, self.thumbnail_size
        return self.sha256, self.size

    def to_json(self) -> dict[str, Any]:
        return {
            "id": str(self.file_id),
            "name": self.name,
            "mimetype": self.mimetype,
            "size": self.size,
            "sha256": self.sha256,
            "thumbnail": None
            if self.thumbnail is None
            else {"sha256": self.thumbnail, "size": self.thumbnail_size},
        }


def clean_name(name: object) -> str:
    if not isinstance(name, str) or not name.strip():
        raise BadRequest("a file needs a name (1 to 255 characters)")
    base = name.replace("\\", "/").rsplit("/", 1)[-1].strip()
    if not base or len(base) > 255 or any(ord(c) < 32 for c in base):
        raise BadRequest("a file name has 1 to 255 characters and no control characters")
    return base


def clean_mimetype(value: object) -> str:
    if value is None or value == "":
        return "application/octet-stream"
    if not isinstance(value, str) or len(value) > 255 or "/" not in value:
        raise BadRequest(f"{str(value)[:80]!r} is not a MIME type (such as image/png)")
    return value.split(";")[0].strip().lower()


class Files:
    def __init__(self, records: Records, blobs: BlobStore, limits: FileLimits | None = None):
        self.records = records
        self.store = records.store
        self.blobs = blobs
        self.limits = limits or FileLimits()
        self._collected = time.monotonic()
        self._lock = threading.Lock()
        self.thumbnails = Thumbnails(self)
        self._running: dict[uuid.UUID, _Running] = {}  # uploads whose chunks came here

    # -- columns and limits -------------------------------------------------------------

    def column(self, table: str, column: str) -> tuple[Table, Column]:
        t = self.store.schema.table(table)
        col = t.column(column)
        if col is None or col.type not in FILE_TYPES:
            raise BadRequest(f"{table}.{column} is not a file or image column")
        return t, col

    def limit(self, col: Column) -> int:
        if col.max_size_kb:
            return min(self.limits.max_bytes, col.max_size_kb * 1024)
        return self.limits.max_bytes

    def exclusive(self, conn: sa.Connection) -> None:
        """Completing an upload vs. collecting: one at a time (SQLite has one writer)."""
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": FILES_LOCK})

    # -- uploads ------------------------------------------------------------------------

    def begin(
        self,
        ctx: SecurityContext,
        *,
        table: str,
        column: str,
        name: object,
        mimetype: object = None,
        size: object,
        sha256: object = None,
        file_id: object = None,
        record_id: RecordId | None = None,
    ) -> dict[str, Any]:
        """Start (or, for a file id already begun by the same user, resume) an upload."""
        t, col = self.column(table, column)
        fname, mime = clean_name(name), clean_mimetype(mimetype)
        if size is None and record_id is not None:
            size = UNKNOWN  # a Web API chunked upload: the first chunk's Content-Range tells
        elif isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise BadRequest("'size' is the file's size in bytes")
        self.check_size(t, col, size)
        digest = None
        if sha256 is not None:
            try:
                digest = check_digest(str(sha256).lower())
            except ValueError as exc:
                raise BadRequest(str(exc)) from None
        if record_id is None and not (
            has_privilege(ctx, t, Privilege.CREATE) or has_privilege(ctx, t, Privilege.WRITE)
        ):
            raise Forbidden(f"you may not create or change {t.name} rows, so not attach files")
        try:
            fid = uuid.uuid4() if file_id is None else uuid.UUID(str(file_id))
        except ValueError:
            raise BadRequest("'file' is a file id (a GUID)") from None
        self.maybe_collect()

        def open_upload(conn: sa.Connection) -> tuple[dict[str, Any] | None, Any]:
            done = conn.execute(sa.select(fs_file).where(fs_file.c.fileid == fid)).first()
            if done is not None:
                if done.createdby == ctx.user_id and digest == done.sha256:
                    return {"complete": True, "file": FileInfo.of(done).to_json()}, None
                raise BadRequest(f"file id {fid} is already taken")
            found = conn.execute(sa.select(fs_upload).where(fs_upload.c.fileid == fid)).first()
            if found is not None:
                same = (found.sha256, found.size, found.tablename, found.columnname)
                if found.userid == ctx.user_id and same == (digest, size, t.name, col.name):
                    return None, found  # resumed: finished below if every byte arrived
                raise BadRequest(f"file id {fid} is already being uploaded")
            values = {
                "uploadid": uuid.uuid4(),
                "fileid": fid,
                "userid": ctx.user_id,
                "tablename": t.name,
                "columnname": col.name,
                "recordid": record_id,
                "name": fname,
                "mimetype": mime,
                "size": size,
                "sha256": digest,
                "received": 0,
                "createdon": utcnow(),
            }
            conn.execute(fs_upload.insert().values(**values))
            row = conn.execute(
                sa.select(fs_upload).where(fs_upload.c.uploadid == values["uploadid"])
            ).one()
            return None, row

        answer, row = self.store.transact(open_upload)
        if answer is not None:
            return answer
        if size == 0:
            return self.append(ctx, row.uploadid, start=0, data=b"")
        return self._resume(ctx, row)

    def _resume(self, ctx: SecurityContext, row: Any) -> dict[str, Any]:
        """Where an upload stands; one that has every byte but no file yet (the last chunk's
        request, or its server process, died after the offset was stored) is finished now."""
        if row.size != UNKNOWN and int(row.received) == int(row.size) > 0:
            return self._finish(ctx, row)
        return self._state(row)

    def check_size(self, t: Table, col: Column, size: int) -> None:
        limit = self.limit(col)
        if size > limit:
            raise PayloadTooLarge(
                f"{t.name}.{col.name} takes files of at most {_human(limit)}; "
                f"this one has {_human(size)}"
            )

    def _state(self, row: Any) -> dict[str, Any]:
        return {
            "complete": False,
            "upload": str(row.uploadid),
            "file": str(row.fileid),
            "received": int(row.received),
            "size": int(row.size),
            "chunk_size": self.limits.chunk_bytes,
        }

    def _upload(self, conn: sa.Connection, ctx: SecurityContext, upload: object) -> Any:
        try:
            uid = uuid.UUID(str(upload))
        except ValueError:
            raise NotFound("no such upload") from None
        row = conn.execute(sa.select(fs_upload).where(fs_upload.c.uploadid == uid)).first()
        if row is None or row.userid != ctx.user_id:
            raise NotFound(f"no upload {uid} of yours is in progress (finished, or expired)")
        return row

    def status(self, ctx: SecurityContext, upload: object) -> dict[str, Any]:
        with self.store.read() as conn:
            row = self._upload(conn, ctx, upload)
        return self._resume(ctx, row)

    def chunk_hash(self, upload: object, start: int) -> ChunkHash:
        """What to feed a chunk's bytes to as they arrive (see :meth:`append`)."""
        try:
            uid = uuid.UUID(str(upload))
        except ValueError:
            return ChunkHash(None, start)
        with self._lock:
            return ChunkHash(self._running.get(uid), start)

    def append(
        self,
        ctx: SecurityContext,
        upload: object,
        *,
        start: int,
        data: bytes,
        total: int | None = None,
        digest: bytes | None = None,
        hashed: ChunkHash | None = None,
    ) -> dict[str, Any]:
        """Add one chunk. Returns the upload's state, or ``{"complete": True, "file": …}``
        after the last chunk. ``hashed`` has seen the chunk's bytes as they arrived (from
        :meth:`chunk_hash`): then they are not hashed again, and when every chunk of the
        upload came to this process the last one needs no second reading of the file."""
        with self.store.read() as conn:
            row = self._upload(conn, ctx, upload)
        size, received = int(row.size), int(row.received)
        if size == UNKNOWN:
            if total is None:
                raise BadRequest("the first chunk says the file's size (Content-Range)")
            t, col = self.column(row.tablename, row.columnname)
            self.check_size(t, col, total)

            def set_size(conn: sa.Connection) -> None:
                conn.execute(
                    fs_upload.update()
                    .where(fs_upload.c.uploadid == row.uploadid, fs_upload.c.size == UNKNOWN)
                    .values(size=total)
                )

            self.store.transact(set_size)
            with self.store.read() as conn:
                row = self._upload(conn, ctx, upload)
            size = int(row.size)
        if total is not None and total != size:
            raise BadRequest(f"the upload has {size} bytes, not {total}")
        if hashed is None:
            hashed = ChunkHash(None, start)
            hashed.update(data)
        if digest is not None and hashed.chunk.digest() != digest:
            raise BadRequest("the chunk does not match its Content-Digest: it was not stored")
        if start != received or start + len(data) > size:
            raise RangeNotSatisfiable(
                f"the upload has {received} of {size} bytes: send the bytes from {received}"
            )
        if not data and size:
            raise BadRequest("an empty chunk")
        most = max(self.limits.chunk_bytes, self.limits.max_chunk_bytes)
        if len(data) > most:
            raise PayloadTooLarge(f"a chunk carries at most {_human(most)}")
        stamp = uuid.uuid4().hex

        def advance(conn: sa.Connection) -> tuple[bool, str | None]:
            # the bytes are staged under the upload row's lock (SQLite: the one writer), so
            # the staged bytes are always those of the chunks whose offsets were stored
            found = conn.execute(
                sa.select(fs_upload.c.received, fs_upload.c.stamp)
                .where(fs_upload.c.uploadid == row.uploadid)
                .with_for_update()
            ).first()
            if found is None or int(found.received) != start:
                return False, None
            self.blobs.stage(row.uploadid, start, data)
            conn.execute(
                fs_upload.update()
                .where(fs_upload.c.uploadid == row.uploadid)
                .values(received=start + len(data), stamp=stamp)
            )
            return True, found.stamp

        moved, before = self.store.transact(advance)
        if not moved:
            raise RangeNotSatisfiable(
                "another chunk was written at this offset: ask where to go on"
            )
        self._remember(row.uploadid, hashed, start, before, stamp, start + len(data))
        if start + len(data) < size:
            return {**self._state(row), "received": start + len(data)}
        return self._finish(ctx, row, stamp)

    def _remember(
        self,
        upload: uuid.UUID,
        hashed: ChunkHash,
        start: int,
        before: str | None,
        stamp: str,
        offset: int,
    ) -> None:
        """Keep the whole file's hash so far when this process saw every byte before."""
        with self._lock:
            if start == 0:
                whole = hashed.chunk.copy()
            elif hashed.whole is not None and before is not None and hashed.prior == before:
                whole = hashed.whole
            else:
                self._running.pop(upload, None)
                return
            self._running[upload] = _Running(stamp, offset, whole)
            while len(self._running) > 256:  # abandoned uploads: forget the oldest
                del self._running[next(iter(self._running))]

    def _finish(self, ctx: SecurityContext, row: Any, stamp: str | None = None) -> dict[str, Any]:
        """Verify the staged bytes, make an image's thumbnail, and create the file. The
        staged bytes are read and hashed unless this process hashed every chunk as it
        arrived (``stamp``: the one the last chunk set, still the upload's)."""
        _, col = self.column(row.tablename, row.columnname)
        image = col.type is ColumnType.IMAGE
        with self._lock:
            running = self._running.pop(row.uploadid, None)
        pieces: list[bytes] = []
        if (
            running is not None
            and stamp is not None
            and running.stamp == stamp
            and running.offset == int(row.size)
        ):
            digest = running.hash.hexdigest()
            seen = self.blobs.staged_size(row.uploadid)
            if image and seen == row.size:
                pieces = list(self.blobs.staged(row.uploadid, int(row.size)))
        else:
            h = hashlib.sha256()
            seen = 0
            for piece in self.blobs.staged(row.uploadid, int(row.size)):
                h.update(piece)
                seen += len(piece)
                if image:
                    pieces.append(piece)
            digest = h.hexdigest()
        if seen != row.size:
            finished = self._made(row)
            if finished is not None:  # another request finished it meanwhile
                return finished

            def reset(conn: sa.Connection) -> None:
                conn.execute(
                    fs_upload.update()
                    .where(fs_upload.c.uploadid == row.uploadid)
                    .values(received=0, stamp=uuid.uuid4().hex)
                )

            self.store.transact(reset)
            raise RangeNotSatisfiable("the staged bytes were lost: send the file from the start")
        try:
            if row.sha256 is not None and digest != row.sha256:
                raise BadRequest(
                    f"the file's bytes have sha256 {digest}, not the {row.sha256} declared: "
                    "upload it again"
                )
            thumb: tuple[str, int] | None = None
            if col.type is ColumnType.IMAGE:
                small = thumbnail(b"".join(pieces))
                thumb = (hashlib.sha256(small).hexdigest(), len(small))
                self.blobs.put(thumb[0], small)

            def finish(conn: sa.Connection) -> tuple[FileInfo | None, Any]:
                self.exclusive(conn)
                if self.info(row.fileid, conn) is not None:
                    return None, None  # another request finished it meanwhile
                self.blobs.commit(row.uploadid, digest)
                info = FileInfo(
                    row.fileid,
                    row.name,
                    row.mimetype,
                    int(row.size),
                    digest,
                    None if thumb is None else thumb[0],
                    None if thumb is None else thumb[1],
                    image=thumb is not None,
                )
                conn.execute(
                    fs_file.insert().values(
                        fileid=info.file_id,
                        name=info.name,
                        mimetype=info.mimetype,
                        size=info.size,
                        sha256=info.sha256,
                        thumbnail=info.thumbnail,
                        thumbnailsize=info.thumbnail_size,
                        isimage=info.image,
                        createdby=ctx.user_id,
                        createdon=utcnow(),
                    )
                )
                conn.execute(fs_upload.delete().where(fs_upload.c.uploadid == row.uploadid))
                replaced: Any = None
                if row.recordid is not None:
                    current = self.records.retrieve(
                        row.tablename, row.recordid, columns=[row.columnname], caller=ctx, conn=conn
                    )
                    replaced = current.get(row.columnname)
                    self.records.update(
                        row.tablename,
                        row.recordid,
                        {row.columnname: info.file_id},
                        caller=ctx,
                        conn=conn,
                    )
                return info, replaced

            info, replaced = self.store.transact(finish)
        except FieldsyncError:
            self._drop(row.uploadid)
            raise
        if info is None:
            finished = self._made(row)
            assert finished is not None
            return finished
        if replaced is not None and replaced != info.file_id:
            self.discard([replaced])
        return {"complete": True, "file": info.to_json()}

    def _made(self, row: Any, conn: sa.Connection | None = None) -> dict[str, Any] | None:
        """The answer of an upload whose file exists already (finished by a concurrent
        request of the same user), or None."""
        done = self.info(row.fileid, conn)
        if done is None:
            return None
        return {"complete": True, "file": done.to_json()}

    def _drop(self, upload: uuid.UUID) -> None:
        def work(conn: sa.Connection) -> None:
            conn.execute(fs_upload.delete().where(fs_upload.c.uploadid == upload))

        self.store.transact(work)
        self.blobs.discard(upload)

    # -- reading ------------------------------------------------------------------------

    def info(self, file_id: uuid.UUID, conn: sa.Connection | None = None) -> FileInfo | None:
        def fetch(c: sa.Connection) -> FileInfo | None:
            row = c.execute(sa.select(fs_file).where(fs_file.c.fileid == file_id)).first()
            return None if row is None else FileInfo.of(row)

        if conn is not None:
            return fetch(conn)
        with self.store.read() as c:
            return fetch(c)

    def infos(self, conn: sa.Connection, ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, FileInfo]:
        wanted = list(dict.fromkeys(ids))
        out: dict[uuid.UUID, FileInfo] = {}
        for start in range(0, len(wanted), 500):
            rows = conn.execute(
                sa.select(fs_file).where(fs_file.c.fileid.in_(wanted[start : start + 500]))
            )
            out.update((r.fileid, FileInfo.of(r)) for r in rows)
        return out

    def with_thumbnail(self, info: FileInfo) -> FileInfo:
        """``info`` with its thumbnail, made now if it was still to be made."""
        return self.thumbnails.ensure(info)

    def read(
        self, info: FileInfo, *, thumb: bool = False, start: int = 0, end: int | None = None
    ) -> Iterator[bytes]:
        digest, _ = info.digest(thumb)
        return self.blobs.read(digest, start, end)

    def for_column(
        self, ctx: SecurityContext, table: str, record_id: RecordId, column: str
    ) -> FileInfo:
        """The file in a row's column, if the caller may read the row."""
        t, col = self.column(table, column)
        row = self.records.retrieve(t.name, record_id, columns=[col.name], caller=ctx)
        value = row.get(col.name)
        info = None if value is None else self.info(value)
        if info is None:
            raise NotFound(f"{t.name} {record_id} has no {col.name}", code="0x80060891")
        return info

    def clear(self, ctx: SecurityContext, table: str, record_id: RecordId, column: str) -> None:
        """Empty a row's file or image column as the caller; the file goes if nothing else
        references it."""
        t, col = self.column(table, column)
        row = self.records.retrieve(t.name, record_id, columns=[col.name], caller=ctx)
        old = row.get(col.name)
        if old is None:
            raise NotFound(f"{t.name} {record_id} has no {col.name}", code="0x80060891")
        self.records.update(t.name, record_id, {col.name: None}, caller=ctx)
        self.discard([old])

    # -- collection ---------------------------------------------------------------------

    def referenced(self, conn: sa.Connection, ids: Iterable[uuid.UUID] | None = None) -> set[Any]:
        """The file ids some row's file or image column holds (of ``ids``, when given)."""
        wanted = None if ids is None else list(ids)
        found: set[Any] = set()
        for t in self.store.schema.tables.values():
            for col in t.columns.values():
                if col.type not in FILE_TYPES:
                    continue
                c = self.store.sql_table(t.name).c[col.name]
                if wanted is None:
                    found |= set(conn.execute(sa.select(c).where(c.is_not(None))).scalars())
                    continue
                for start in range(0, len(wanted), 500):
                    found |= set(
                        conn.execute(sa.select(c).where(c.in_(wanted[start : start + 500])))
                        .scalars()
                        .all()
                    )
        return found

    def discard(self, ids: Iterable[Any], *, owner: RecordId | None = None) -> int:
        """Remove the files of ``ids`` that no row references (uploaded by ``owner``, when
        given), and their bytes when no other file shares them: a rejected change's new
        file, a replaced file."""
        wanted = [uuid.UUID(str(i)) for i in ids if i is not None]
        if not wanted:
            return 0

        def work(conn: sa.Connection) -> int:
            self.exclusive(conn)
            candidates = wanted
            if owner is not None:
                candidates = list(
                    conn.execute(
                        sa.select(fs_file.c.fileid).where(
                            fs_file.c.fileid.in_(wanted), fs_file.c.createdby == owner
                        )
                    ).scalars()
                )
            orphans = [i for i in candidates if i not in self.referenced(conn, candidates)]
            return self._remove(conn, orphans)

        return self.store.transact(work)

    def _remove(self, conn: sa.Connection, ids: list[uuid.UUID]) -> int:
        digests: set[str] = set()
        for start in range(0, len(ids), 500):
            part = ids[start : start + 500]
            for row in conn.execute(
                sa.select(fs_file.c.sha256, fs_file.c.thumbnail).where(fs_file.c.fileid.in_(part))
            ):
                digests |= {d for d in row if d}
            conn.execute(fs_file.delete().where(fs_file.c.fileid.in_(part)))
        for digest in digests - self._digests_in_use(conn, digests):
            self.blobs.delete(digest)
        return len(ids)

    def _digests_in_use(self, conn: sa.Connection, digests: Iterable[str]) -> set[str]:
        wanted = list(digests)
        if not wanted:
            return set()
        used = set(
            conn.execute(sa.select(fs_file.c.sha256).where(fs_file.c.sha256.in_(wanted))).scalars()
        )
        used |= set(
            conn.execute(
                sa.select(fs_file.c.thumbnail).where(fs_file.c.thumbnail.in_(wanted))
            ).scalars()
        )
        used |= set(
            conn.execute(sa.select(fs_upload.c.sha256).where(fs_upload.c.sha256.in_(wanted)))
            .scalars()
            .all()
        )
        return {d for d in used if d}

    def maybe_collect(self) -> None:
        """Collect at most once an hour per process (any process may: it is idempotent)."""
        with self._lock:
            if time.monotonic() - self._collected < 3600:
                return
            self._collected = time.monotonic()
        try:
            self.collect()
        except Exception:  # collection must never break an upload
            log.exception("collecting unreferenced files failed")
        self.thumbnails.wake()  # any left due by a server process that stopped

    def collect(self, now: dt.datetime | None = None) -> dict[str, int]:
        """Remove uploads abandoned for longer than the grace period, files no row has
        referenced for that long, and blobs that no file uses."""
        now = now or utcnow()
        cutoff = now - dt.timedelta(seconds=self.limits.orphan_seconds)

        def work(conn: sa.Connection) -> dict[str, int]:
            self.exclusive(conn)
            stale = list(
                conn.execute(
                    sa.select(fs_upload.c.uploadid).where(fs_upload.c.createdon < cutoff)
                ).scalars()
            )
            for upload in stale:
                conn.execute(fs_upload.delete().where(fs_upload.c.uploadid == upload))
                self.blobs.discard(upload)
            old = set(
                conn.execute(sa.select(fs_file.c.fileid).where(fs_file.c.createdon < cutoff))
                .scalars()
                .all()
            )
            orphans = sorted(old - self.referenced(conn), key=str)
            files = self._remove(conn, orphans)
            blobs = 0
            limit = cutoff.timestamp()
            candidates = [d for d, when in self.blobs.blobs() if when < limit]
            for start in range(0, len(candidates), 500):
                part = candidates[start : start + 500]
                for digest in set(part) - self._digests_in_use(conn, part):
                    self.blobs.delete(digest)
                    blobs += 1
            return {"uploads": len(stale), "files": files, "blobs": blobs}

        return self.store.transact(work)


def _human(size: int) -> str:
    if size >= MiB:
        return f"{size / MiB:.1f} MB"
    if size >= 1024:
        return f"{size / 1024:.1f} KB"
    return f"{size} bytes"
