"""Small files in batches: many uploads in one request, many reads in one answer.

A batch body (and a batch answer) is one line of JSON, a newline, then the bytes of every
file back to back in the order the JSON lists them, each exactly its ``size``:

    {"files": [{"file": …, "table": …, "column": …, "name": …, "size": 3, "sha256": …}, …]}\\n
    <3 bytes of the first file><bytes of the second>…

**Upload** (:func:`store_batch`): every file is checked as a chunked upload's last chunk
checks it (the caller's privilege on the table, the column's type and size limit, the
sha256 computed here against the one declared, an image column's bytes an image), its
bytes are written once per digest, and every accepted file's row is inserted in one
transaction. Each file has its answer: ``stored`` (with its facts), ``refused`` (for good:
the device drops it) or ``retry`` (its bytes arrived damaged: send it again); one file's
refusal does not keep the others from being stored.
An image's thumbnail is made later (:mod:`fieldsync.files.thumbnails`): its facts say
``thumbnail: null`` until then.

**Read** (:func:`read_batch`): the file ids are checked as a grant checks them (a row the
user can read holds each in a file or image column the profile selects), and the answer
carries the bytes of those that pass: their full bytes or an image's thumbnail.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
import sqlalchemy as sa

from fieldsync.errors import BadRequest, FieldsyncError, Forbidden
from fieldsync.files.blobs import check_digest
from fieldsync.files.images import check_image
from fieldsync.files.service import FileInfo, clean_mimetype, clean_name
from fieldsync.schema.model import ColumnType
from fieldsync.security.model import Privilege, SecurityContext
from fieldsync.security.predicate import has_privilege
from fieldsync.store.catalog import fs_file, fs_upload
from fieldsync.store.store import utcnow

if TYPE_CHECKING:
    from fieldsync.files.service import Files

MAX_FILES = 500  # files in one batch, either way
MAX_FILE_BYTES = 4 * 2**20  # a file larger than this goes in chunks, not in a batch
READ_BUDGET = 8 * 2**20  # the bytes of one batch read's answer, at most
MEDIA_TYPE = "application/x-fieldsync-files"  # a batch body, and a batch read's answer


def split(body: bytes) -> tuple[list[Any], memoryview]:
    """The JSON list of files and the bytes after it; a 400 for anything else."""
    head, newline, _ = body[: 1 << 20].partition(b"\n")
    if not newline:
        raise BadRequest("a file batch starts with one line of JSON, then the files' bytes")
    try:
        manifest = orjson.loads(head)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"the first line of a file batch is not JSON: {exc}") from None
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, list) or len(files) > MAX_FILES:
        raise BadRequest(f"a file batch lists 'files': at most {MAX_FILES}")
    return files, memoryview(body)[len(head) + 1 :]


def frame(manifest: dict[str, Any], pieces: list[bytes]) -> Iterator[bytes]:
    yield orjson.dumps(manifest) + b"\n"
    yield from pieces


@dataclass
class _Entry:
    index: int
    file_id: uuid.UUID
    table: str
    column: str
    name: str
    mimetype: str
    data: memoryview
    sha256: str
    image: bool


class _Damaged(BadRequest):
    """Bytes that do not match their declared digest: damaged on the way, worth sending again."""


def _refused(file: object, exc: FieldsyncError) -> dict[str, Any]:
    return {
        "id": str(file),
        "status": "retry" if isinstance(exc, _Damaged) else "refused",
        "error": {"status": exc.status, "code": exc.code, "message": exc.message},
    }


def store_batch(
    files: Files, ctx: SecurityContext, listed: list[Any], data: memoryview
) -> dict[str, Any]:
    """Store the files of a batch; one answer per file, in the order listed."""
    files.maybe_collect()
    sizes = []
    for item in listed:
        size = item.get("size") if isinstance(item, dict) else None
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise BadRequest("every file of a batch says its 'size' in bytes")
        sizes.append(size)
    if sum(sizes) != len(data):
        raise BadRequest(
            f"the files of the batch have {sum(sizes)} bytes between them, the body {len(data)}"
        )
    answers: list[dict[str, Any] | None] = [None] * len(listed)
    accepted: list[_Entry] = []
    allowed: dict[str, bool] = {}
    seen: set[uuid.UUID] = set()
    at = 0
    for index, (item, size) in enumerate(zip(listed, sizes, strict=True)):
        piece, at = data[at : at + size], at + size
        try:
            entry = _check(files, ctx, index, item, piece, allowed)
            if entry.file_id in seen:
                raise BadRequest(f"file id {entry.file_id} is listed twice")
            seen.add(entry.file_id)
            accepted.append(entry)
        except FieldsyncError as exc:
            answers[index] = _refused(item.get("file"), exc)

    def work(conn: sa.Connection) -> list[uuid.UUID]:
        files.exclusive(conn)  # no blob written here is collected before its row exists
        ids = [e.file_id for e in accepted]
        done: dict[uuid.UUID, Any] = {}
        busy: dict[uuid.UUID, Any] = {}
        for start in range(0, len(ids), 500):
            part = ids[start : start + 500]
            done.update(
                (r.fileid, r)
                for r in conn.execute(sa.select(fs_file).where(fs_file.c.fileid.in_(part)))
            )
            busy.update(
                (r.fileid, r)
                for r in conn.execute(sa.select(fs_upload).where(fs_upload.c.fileid.in_(part)))
            )
        rows: list[dict[str, Any]] = []
        resumed: list[uuid.UUID] = []
        writes: dict[str, memoryview] = {}
        now = utcnow()
        for e in accepted:
            found = done.get(e.file_id)
            if found is not None:  # a retry after a lost answer, or someone else's id
                if found.createdby == ctx.user_id and found.sha256 == e.sha256:
                    answers[e.index] = _stored(FileInfo.of(found))
                else:
                    answers[e.index] = _refused(
                        e.file_id, BadRequest(f"file id {e.file_id} is already taken")
                    )
                continue
            begun = busy.get(e.file_id)
            if begun is not None:
                same = (begun.sha256, begun.size, begun.tablename, begun.columnname)
                if begun.userid != ctx.user_id or same != (
                    e.sha256,
                    len(e.data),
                    e.table,
                    e.column,
                ):
                    answers[e.index] = _refused(
                        e.file_id, BadRequest(f"file id {e.file_id} is already being uploaded")
                    )
                    continue
                resumed.append(begun.uploadid)  # begun in chunks, finished here
            writes[e.sha256] = e.data
            info = FileInfo(e.file_id, e.name, e.mimetype, len(e.data), e.sha256, image=e.image)
            rows.append(
                {
                    "fileid": e.file_id,
                    "name": e.name,
                    "mimetype": e.mimetype,
                    "size": len(e.data),
                    "sha256": e.sha256,
                    "thumbnail": None,
                    "thumbnailsize": None,
                    "isimage": e.image,
                    "createdby": ctx.user_id,
                    "createdon": now,
                }
            )
            answers[e.index] = _stored(info)
        if writes:  # several at once: an S3 bucket takes each in its own request
            with ThreadPoolExecutor(min(8, len(writes))) as pool:
                list(pool.map(lambda w: files.blobs.put(w[0], bytes(w[1])), writes.items()))
        if rows:
            conn.execute(fs_file.insert(), rows)
        if resumed:
            conn.execute(fs_upload.delete().where(fs_upload.c.uploadid.in_(resumed)))
        return resumed

    if accepted:
        resumed = files.store.transact(work)
        for upload in resumed:
            files.blobs.discard(upload)
        if any(e.image for e in accepted):
            files.thumbnails.wake()
    return {"files": answers}


def _stored(info: FileInfo) -> dict[str, Any]:
    return {"id": str(info.file_id), "status": "stored", "file": info.to_json()}


def _check(
    files: Files,
    ctx: SecurityContext,
    index: int,
    item: Any,
    data: memoryview,
    allowed: dict[str, bool],
) -> _Entry:
    if not isinstance(item, dict):
        raise BadRequest("each file of a batch is an object")
    for key in ("table", "column"):
        if not isinstance(item.get(key), str):
            raise BadRequest(f"'{key}' names the {key} the file is for")
    t, col = files.column(item["table"], item["column"])
    if t.name not in allowed:
        allowed[t.name] = has_privilege(ctx, t, Privilege.CREATE) or has_privilege(
            ctx, t, Privilege.WRITE
        )
    if not allowed[t.name]:
        raise Forbidden(f"you may not create or change {t.name} rows, so not attach files")
    try:
        file_id = uuid.UUID(str(item.get("file")))
    except ValueError:
        raise BadRequest("'file' is the file id (a GUID) the device chose") from None
    name, mimetype = clean_name(item.get("name")), clean_mimetype(item.get("mimetype"))
    try:
        declared = check_digest(str(item.get("sha256")).lower())
    except ValueError as exc:
        raise BadRequest(f"'sha256' is the file's digest: {exc}") from None
    files.check_size(t, col, len(data))
    if len(data) > MAX_FILE_BYTES:
        raise BadRequest(f"a file of a batch has at most {MAX_FILE_BYTES} bytes: send it in chunks")
    digest = hashlib.sha256(data).hexdigest()
    if digest != declared:
        raise _Damaged(
            f"the file's bytes have sha256 {digest}, not the {declared} declared: send it again"
        )
    image = col.type is ColumnType.IMAGE
    if image:
        check_image(bytes(data))
    return _Entry(index, file_id, t.name, col.name, name, mimetype, data, digest, image)


def read_batch(
    files: Files, allowed: set[uuid.UUID], wanted: list[tuple[uuid.UUID, bool]], budget: int
) -> tuple[dict[str, Any], list[bytes]]:
    """The answer to a batch read of ``wanted`` (file id, thumbnail?) of which ``allowed``
    passed the access check: each file's bytes, up to ``budget`` bytes in all (the rest are
    answered ``later``: ask again)."""
    with files.store.read() as conn:
        infos = files.infos(conn, [f for f, _ in wanted if f in allowed])
    infos = files.thumbnails.ensure_all(infos)
    listed: list[dict[str, Any]] = []
    pieces: list[bytes] = []
    used = 0
    for file_id, thumb in wanted:
        kind = "thumbnail" if thumb else "full"
        info = infos.get(file_id)
        if info is None or (thumb and info.thumbnail is None):
            listed.append({"id": str(file_id), "size": kind, "status": "missing"})
            continue
        digest, size = info.digest(thumb)
        if size > MAX_FILE_BYTES or (pieces and used + size > budget):
            listed.append({"id": str(file_id), "size": kind, "status": "later"})
            continue
        blob = b"".join(files.blobs.read(digest))
        if len(blob) != size:  # the blob store lost it: say so, never send wrong bytes
            listed.append({"id": str(file_id), "size": kind, "status": "missing"})
            continue
        used += size
        pieces.append(blob)
        listed.append(
            {"id": str(file_id), "size": kind, "status": "sent", "sha256": digest, "length": size}
        )
    return {"files": listed}, pieces
