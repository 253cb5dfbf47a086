"""Thumbnails made after an image's upload, off the upload's request.

An image that arrives in a batch (:mod:`fieldsync.files.batch`) is checked to be an image
(:func:`fieldsync.files.images.check_image`, its header) and stored with ``isimage`` set and
no thumbnail yet. Its thumbnail is then made by whichever comes first:

- the **worker**: a thread of the server process, woken when a batch commits, that makes
  the thumbnails still due (oldest first) and stops when none is left; or
- a **read** that needs it: a grant listing the file's facts, a thumbnail download, the Web
  API's image read. The reader makes it then and there, so nobody is ever told "not yet".

Both are safe to run in any number of server processes at once: a thumbnail is named by its
digest (two processes write the same blob), and the row is set only where it is still
empty (``UPDATE … WHERE thumbnail IS NULL``), so the first one wins and the others read
what it wrote. Nothing is kept in memory: an image whose process died before its thumbnail
was made is still due in the database, and the next worker or read makes it. Bytes that
turn out not to decode as an image lose ``isimage`` (no thumbnail, and the file can no longer
be put in an image column); the thumbnail blob written before a crash or a lost race is
collected with the other unreferenced blobs.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from typing import TYPE_CHECKING

import sqlalchemy as sa

from fieldsync.errors import BadRequest
from fieldsync.files.images import thumbnail
from fieldsync.store.catalog import fs_file

if TYPE_CHECKING:
    import uuid

    from fieldsync.files.service import FileInfo, Files

log = logging.getLogger(__name__)

BATCH = 32  # thumbnails the worker takes per round


class Thumbnails:
    def __init__(self, files: Files) -> None:
        self.files = files
        self._lock = threading.Lock()
        self._running = False
        self._again = False

    # -- on demand ----------------------------------------------------------------------

    def ensure(self, info: FileInfo) -> FileInfo:
        """``info`` with its thumbnail, made now if it is an image whose thumbnail is due."""
        if not info.due:
            return info
        self.make(info.file_id, info.sha256)
        found = self.files.info(info.file_id)
        return info if found is None else found

    def ensure_all(self, infos: dict[uuid.UUID, FileInfo]) -> dict[uuid.UUID, FileInfo]:
        due = [i for i in infos.values() if i.due]
        if not due:
            return infos
        for info in due:
            self.make(info.file_id, info.sha256)
        with self.files.store.read() as conn:
            return {**infos, **self.files.infos(conn, [i.file_id for i in due])}

    def make(self, file_id: uuid.UUID, digest: str) -> bool:
        """Make one image's thumbnail and set it on its row if still empty; False when the
        bytes are not an image (the row then says so)."""
        try:
            small = thumbnail(b"".join(self.files.blobs.read(digest)))
        except BadRequest as exc:
            log.warning("file %s is not an image after all: %s", file_id, exc.message)
            self._settle(file_id, None)
            return False
        self.files.blobs.put(hashlib.sha256(small).hexdigest(), small)
        self._settle(file_id, small)
        return True

    def _settle(self, file_id: uuid.UUID, small: bytes | None) -> None:
        if small is None:
            values: dict[str, object] = {"isimage": False}
        else:
            digest = hashlib.sha256(small).hexdigest()
            values = {"thumbnail": digest, "thumbnailsize": len(small)}

        def work(conn: sa.Connection) -> None:
            self.files.exclusive(conn)
            if small is not None and self.files.blobs.size(str(values["thumbnail"])) is None:
                # collected between the write and this lock (it was some other file's too)
                self.files.blobs.put(str(values["thumbnail"]), small)
            conn.execute(
                fs_file.update()
                .where(fs_file.c.fileid == file_id, fs_file.c.thumbnail.is_(None))
                .values(**values)
            )

        self.files.store.transact(work)

    # -- the worker ---------------------------------------------------------------------

    def due(self, limit: int = BATCH) -> list[tuple[uuid.UUID, str]]:
        with self.files.store.read() as conn:
            rows = conn.execute(
                sa.select(fs_file.c.fileid, fs_file.c.sha256)
                .where(fs_file.c.isimage.is_(True), fs_file.c.thumbnail.is_(None))
                .order_by(fs_file.c.createdon)
                .limit(limit)
            )
            return [(r.fileid, r.sha256) for r in rows]

    def drain(self) -> int:
        """Make every thumbnail that is due; returns how many were made."""
        made = 0
        tried: set[uuid.UUID] = set()
        while True:
            todo = [(f, d) for f, d in self.due(BATCH + len(tried)) if f not in tried]
            if not todo:
                return made
            for file_id, digest in todo:
                if self.files.store.closed:
                    return made
                tried.add(file_id)
                try:
                    made += self.make(file_id, digest)
                except Exception:  # a missing blob, the store away: left due, tried later
                    log.exception("the thumbnail of file %s was not made", file_id)

    def wake(self) -> None:
        """Start the worker thread, or tell the running one to look again."""
        with self._lock:
            self._again = True
            if self._running:
                return
            self._running = True
            self._again = False
        threading.Thread(target=self._run, name="fieldsync-thumbnails", daemon=True).start()

    def _run(self) -> None:
        while True:
            try:
                if not self.files.store.closed:
                    self.drain()
            except Exception:
                log.exception("making thumbnails failed; the next upload or read makes them")
            with self._lock:
                if not self._again or self.files.store.closed:
                    self._running = False
                    return
                self._again = False
