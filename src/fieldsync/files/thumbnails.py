"""Thumbnails made after an image's upload, off the upload's request.

An image that arrives in a batch (:mod:`fieldsync.files.batch`) is checked to be an image
(:func:`fieldsync.files.images.check_image`, its header) and stored with ``isimage`` set and
no thumbnail yet. Its thumbnail is then made by whichever comes first:

- the **worker**: a thread of the server process, woken when a batch commits, that makes
  the thumbnails still due (oldest first) and stops when none is left; or
- a **read** that needs it: a grant listing the file's facts, a thumbnail download, the Web
  API's image read. The reader makes it then and there, so nobody is told "not yet" (unless
  the image's bytes cannot be read at that moment: then a thumbnail download is a 503 with
  ``Retry-After``, and a grant lists no thumbnail yet).

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
        return self.ensure_all({info.file_id: info})[info.file_id]

    def ensure_all(self, infos: dict[uuid.UUID, FileInfo]) -> dict[uuid.UUID, FileInfo]:
        """``infos`` with the thumbnails that were due made now (those that could not be
        made for want of their bytes stay due: a read of one answers "not yet")."""
        due = [(i.file_id, i.sha256) for i in infos.values() if i.due]
        if not due:
            return infos
        self.make(due)
        with self.files.store.read() as conn:
            return {**infos, **self.files.infos(conn, [f for f, _ in due])}

    def make(self, images: list[tuple[uuid.UUID, str]]) -> int:
        """Make the thumbnails of ``images`` (file id, digest) and set each on its row if
        still empty, in one transaction; returns how many were made. Bytes that are not an
        image after all lose ``isimage``."""
        made: dict[uuid.UUID, bytes | None] = {}
        for file_id, digest in images:
            try:
                small = thumbnail(b"".join(self.files.blobs.read(digest)))
            except BadRequest as exc:
                log.warning("file %s is not an image after all: %s", file_id, exc.message)
                made[file_id] = None
                continue
            except Exception:  # its bytes are away (the blob store): left due, tried later
                log.exception("the thumbnail of file %s was not made", file_id)
                continue
            self.files.blobs.put(hashlib.sha256(small).hexdigest(), small)
            made[file_id] = small
        if not made:
            return 0

        def work(conn: sa.Connection) -> None:
            self.files.exclusive(conn)
            for file_id, small in made.items():
                if small is None:
                    values: dict[str, object] = {"isimage": False}
                else:
                    digest = hashlib.sha256(small).hexdigest()
                    if self.files.blobs.size(digest) is None:
                        # collected between its write and this lock (another file's too)
                        self.files.blobs.put(digest, small)
                    values = {"thumbnail": digest, "thumbnailsize": len(small)}
                conn.execute(
                    fs_file.update()
                    .where(fs_file.c.fileid == file_id, fs_file.c.thumbnail.is_(None))
                    .values(**values)
                )

        self.files.store.transact(work)
        return sum(small is not None for small in made.values())

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
        while not self.files.store.closed:
            todo = [(f, d) for f, d in self.due(BATCH + len(tried)) if f not in tried][:BATCH]
            if not todo:
                break
            tried.update(f for f, _ in todo)
            made += self.make(todo)
        return made

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
