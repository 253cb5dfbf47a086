"""The wire types of the sync protocol, ``/sync/v1``: what a device sends and what the server
answers, as typed JSON objects (``docs/protocol.md`` tells the whole protocol in prose).

The server builds these bodies and the devices read them; both name the keys through these
types, so a key that changes on one side shows on the other (mypy). The types describe JSON
as it travels: ids are GUID strings, times ISO 8601 strings, decimals strings, multi-choice
values lists. Nothing here imports the server: the device SDK (``fieldsync.client``), which
may import nothing else of ``fieldsync.sync``, uses this module and :mod:`fieldsync.sync.merge`.

A new protocol version is a new path prefix (``/sync/v2``); within one version the server only
adds keys, never removes or re-types one, and a device ignores keys it does not know.
"""

# (no postponed annotations here: TypedDict reads NotRequired at run time)
import hashlib
import uuid
from typing import Any, Literal, NotRequired, TypeAlias, TypedDict

PROTOCOL_VERSION = 1
"""The version of the protocol the server speaks (``protocol`` in the handshake answer)."""

PREFIX = f"/sync/v{PROTOCOL_VERSION}"

Operation: TypeAlias = Literal["create", "update", "delete"]
OPERATIONS: tuple[Operation, ...] = ("create", "update", "delete")

# -- errors ----------------------------------------------------------------------------------


class ErrorDetail(TypedDict):
    code: str  # the Dataverse error code, e.g. "0x80040217"
    message: str


class ErrorBody(TypedDict):
    """The body of every 4xx and 5xx answer."""

    error: ErrorDetail


# -- sign-in (``/auth``) ---------------------------------------------------------------------


class TokenAnswer(TypedDict):
    """``POST /auth/token`` (password or refresh_token grant)."""

    access_token: str
    token_type: str  # "Bearer"
    expires_in: int  # seconds
    refresh_token: str


# -- handshake -------------------------------------------------------------------------------


class HandshakeRequest(TypedDict):
    device: str  # 8 to 64 letters, digits, "-" or "_"; made by the device, kept for good
    app: str  # the app's unique name or id
    sdk: NotRequired[str | None]  # the device software's version (bookkeeping)
    pending: NotRequired[int | None]  # changes waiting in the device's outbox (bookkeeping)
    etag: NotRequired[str | None]  # the etag of the handshake answer the device holds


class UserInfo(TypedDict):
    id: str
    name: str
    fullname: str | None
    business_unit: str
    teams: list[str]
    language: int


class CompiledView(TypedDict):
    """A view compiled to SQLite SQL for the replica (fieldsync.sync.views)."""

    sql: str  # named parameters: the ones below, and :search, :limit, :offset
    params: dict[str, Any]  # bound by the server, in their stored form
    times: dict[str, dict[str, Any]]  # {op, value, edge, date}: computed by the device
    columns: list[str]  # the columns the rows carry
    search: list[str]  # the text columns :search looks in
    top: int | None  # the view's own cap
    indexes: NotRequired[list[str]]  # CREATE INDEX IF NOT EXISTS: the view in its order


class ViewInfo(TypedDict):
    name: str
    table: str
    fetchxml: str
    id: NotRequired[str]  # the saved view's id
    default: NotRequired[bool]  # the table's default view
    sqlite: NotRequired[CompiledView]  # the view for a device without a query compiler
    error: NotRequired[str]  # why the view cannot run on the device (instead of sqlite)


class TableLayout(TypedDict):
    """A profile table as the replica lays it out on SQLite (fieldsync.sync.views)."""

    ddl: list[str]  # CREATE TABLE, then CREATE INDEX statements
    codecs: dict[str, str]  # per column not stored as it travels: uuid, datetime, bool, …
    indexes: NotRequired[list[str]]  # built after the first download: the primary name's order


class HandshakeAnswer(TypedDict):
    protocol: int  # PROTOCOL_VERSION
    server: str  # the server's software version
    user: UserInfo
    app: dict[str, Any]  # the app's offline settings (fieldsync.offline.apps)
    profile: dict[str, Any]  # the published profile: id, name, version, items
    tables: list[dict[str, Any]]  # each table's definition (fieldsync.schema.model.Table)
    columns: dict[str, list[str]]  # per table, the columns that travel, in page order
    order: list[str]  # the tables, parents before children: download in this order
    views: list[ViewInfo]
    sqlite: NotRequired[dict[str, TableLayout]]  # the replica's SQLite layout, per table
    etag: NotRequired[str]  # the hash of this answer (all of it but server_time)
    server_time: str


class HandshakeUnchanged(TypedDict):
    """The answer to a handshake that sent the ``etag`` of the answer it would get: the
    device goes on with the handshake it holds."""

    protocol: int
    server: str
    unchanged: Literal[True]
    etag: str
    server_time: str


HandshakeResult: TypeAlias = HandshakeAnswer | HandshakeUnchanged


# -- download --------------------------------------------------------------------------------


class DownloadRequest(TypedDict):
    device: str
    app: str
    cursors: dict[str, str | None]  # per table, the last page's cursor (null: from scratch)
    limit: NotRequired[int]  # rows per answer, all tables together (1 to 5000; 1000)


class DownloadPage(TypedDict):
    table: str
    columns: list[str]
    upserts: list[list[Any]]  # whole rows, in ``columns`` order
    removes: list[str]  # ids of rows that left the device's scope (or were deleted)
    cursor: str  # opaque and signed: send it back as is
    rescope: bool  # a re-scope starts with this page: mark the rows that arrive from here
    complete: bool  # the re-scope ends with this page: drop every row not marked
    more: bool  # the table has more pages now


class ProfileRef(TypedDict):
    id: str
    version: int


class DownloadAnswer(TypedDict):
    profile: ProfileRef
    pages: list[DownloadPage]
    more: bool  # some table has more, or was not served in this answer


# -- upload ----------------------------------------------------------------------------------


class ClientChange(TypedDict):
    """One change of the device's outbox."""

    id: str  # the client change id: a GUID the device made, the same on every retry
    table: str
    operation: Operation
    record: str  # the row's id (the device makes the ids of the rows it creates)
    values: dict[str, Any]  # the changed columns only ({} for a delete)
    base_version: int | None  # the row's version the device last saw (null: a create)


class UploadRequest(TypedDict):
    device: str
    app: str
    changes: list[ClientChange]  # at most 500, applied in order
    acknowledged: NotRequired[list[str]]  # change ids whose answers the device has stored


class SyncErrorInfo(TypedDict):
    code: str
    message: str
    type: int  # 0 conflict, 1 not found, 2 exists already, 3 other (ERROR_TYPES)


class ChangeApplied(TypedDict):
    id: str
    record: str
    status: Literal["applied"]
    version: int | None  # the row's version after the change (null: a delete)


class ChangeRejected(TypedDict):
    id: str
    record: str
    status: Literal["rejected"]
    error: SyncErrorInfo
    row: dict[str, Any] | None  # the server's row to revert to (null: drop the row)


ChangeAnswer: TypeAlias = ChangeApplied | ChangeRejected


class UploadAnswer(TypedDict):
    results: list[ChangeAnswer]  # one per change, in the order sent


ERROR_TYPE_CONFLICT, ERROR_TYPE_NOT_FOUND, ERROR_TYPE_EXISTS, ERROR_TYPE_OTHER = 0, 1, 2, 3
ERROR_TYPES = {
    ERROR_TYPE_CONFLICT: "conflict",
    ERROR_TYPE_NOT_FOUND: "not found",
    ERROR_TYPE_EXISTS: "exists already",
    ERROR_TYPE_OTHER: "other",
}


# -- files -----------------------------------------------------------------------------------


class ThumbnailInfo(TypedDict):
    sha256: str
    size: int


class FileFacts(TypedDict):
    id: str
    name: str
    mimetype: str
    size: int
    sha256: str
    thumbnail: ThumbnailInfo | None  # images only


class GrantRequest(TypedDict):
    device: str
    app: str
    files: list[str]  # at most 500 file ids


class GrantedFile(FileFacts):
    ticket: str  # present with the bearer token on every read of the file


class GrantAnswer(TypedDict):
    files: list[GrantedFile]
    missing: list[str]  # ids no readable row of the profile holds
    expires: int  # when the tickets expire (Unix seconds)


class UploadBegin(TypedDict):
    file: NotRequired[str]  # the file id the device made (and put in the row)
    table: str
    column: str
    name: str
    mimetype: str
    size: int
    sha256: str  # hex digest of the whole file


class UploadState(TypedDict):
    complete: Literal[False]
    upload: str
    file: str
    received: int  # bytes the server holds: the next chunk starts here
    size: int
    chunk_size: int  # the largest chunk the server takes


class UploadDone(TypedDict):
    complete: Literal[True]
    file: FileFacts


UploadProgress: TypeAlias = UploadState | UploadDone


# Small files in batches (``POST /sync/v1/files/batch`` and ``POST /sync/v1/files/read``): the
# body of a batch upload, and the answer of a batch read, is a FileBatch (or FileReadAnswer)
# on one line of JSON, a newline, then the bytes of the files it lists, back to back.

FILE_BATCH_TYPE = "application/x-fieldsync-files"


class FileBatchItem(TypedDict):
    file: str  # the file id the device made (and put in the row)
    table: str
    column: str
    name: str
    mimetype: str
    size: int  # its bytes follow those of the files listed before it
    sha256: str


class FileBatch(TypedDict):
    files: list[FileBatchItem]  # at most 500


class FileStored(TypedDict):
    id: str
    status: Literal["stored"]
    file: FileFacts  # an image's thumbnail is null until it is made (a grant then lists it)


class FileBatchError(TypedDict):
    status: int  # the HTTP status the file would have had alone (400, 403, 413)
    code: str
    message: str


class FileRefused(TypedDict):
    id: str
    status: Literal["refused", "retry"]  # refused: for good; retry: arrived damaged, send again
    error: FileBatchError


class FileBatchAnswer(TypedDict):
    files: list[FileStored | FileRefused]  # one per file, in the order sent


class FileToRead(TypedDict):
    id: str
    size: NotRequired[Literal["full", "thumbnail"]]  # full when not given


class FileReadRequest(TypedDict):
    device: str
    app: str
    files: list[FileToRead]  # at most 500


class FileSent(TypedDict):
    id: str
    size: Literal["full", "thumbnail"]
    status: Literal["sent"]
    sha256: str
    length: int  # its bytes follow those of the files sent before it


class FileNotSent(TypedDict):
    id: str
    size: Literal["full", "thumbnail"]
    status: Literal["missing", "later"]  # missing: not the user's to read; later: ask again


class FileReadAnswer(TypedDict):
    files: list[FileSent | FileNotSent]  # one per file asked for, in the order asked


# -- live stream -----------------------------------------------------------------------------


class LiveReady(TypedDict):
    """``event: ready``: the subscription is in place; sync every table now."""

    tables: list[str]
    keepalive: float  # seconds between keep-alive comments


class LiveChanges(TypedDict):
    """``event: changes``: these tables changed; sync them."""

    tables: list[str]


LIVE_EVENTS = ("ready", "changes", "bye")


# -- inventory, receipts, remote wipe --------------------------------------------------------

WIPE_CODE = "0x80040F01"
"""The error code (with 403) of every sync call naming a device an administrator asked to wipe:
remove every row, the outbox and the files, then send a ``wipe`` receipt."""

CHECKSUM_EMPTY = "0" * 16


def _id_text(record_id: object) -> str:
    """An id as the checksum hashes it: lowercase, hyphenated (36 characters)."""
    if isinstance(record_id, uuid.UUID):
        return str(record_id)
    text = str(record_id)
    if len(text) == 32:  # SQLite's storage form: 32 hex digits
        text = text.lower()
        return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"
    return str(uuid.UUID(text))


def row_hash(record_id: object, version: int | None) -> int:
    """One row's 64-bit hash: the first 8 bytes, big-endian, of SHA-256 over the UTF-8 text
    ``"<id>:<version>"`` (the id lowercase with dashes; the version in decimal, 0 when none)."""
    text = f"{_id_text(record_id)}:{int(version or 0)}".encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "big")


def format_checksum(total: int) -> str:
    return f"{total % (1 << 64):016x}"


def inventory_checksum(pairs: Any) -> tuple[int, str]:
    """The row count and checksum of ``(id, version)`` pairs: the sum of their hashes mod
    2**64, as 16 lowercase hex digits (any order gives the same)."""
    sha, ident, from_bytes = hashlib.sha256, _id_text, int.from_bytes
    count = total = 0
    for rid, version in pairs:
        count += 1
        digest = sha(f"{ident(rid)}:{int(version or 0)}".encode()).digest()
        total += from_bytes(digest[:8], "big")
    return count, format_checksum(total)


def inventory_checksum_texts(texts: Any) -> tuple[int, str]:
    """:func:`inventory_checksum` of rows already written as ``"<id>:<version>"`` (the id
    hyphenated, any case): what a store that formats the pairs itself (in SQL) hands over,
    leaving one hash per row to Python."""
    sha, from_bytes = hashlib.sha256, int.from_bytes
    count = total = 0
    for text in texts:
        count += 1
        total += from_bytes(sha(text.lower().encode()).digest()[:8], "big")
    return count, format_checksum(total)


SQLITE_PAIR_TEXT = (
    "substr({id}, 1, 8) || '-' || substr({id}, 9, 4) || '-' || substr({id}, 13, 4) || '-' || "
    "substr({id}, 17, 4) || '-' || substr({id}, 21, 12) || ':' || coalesce({version}, 0)"
)
"""SQLite's text of a row's ``"<id>:<version>"`` pair from an id stored as 32 hex digits."""


class TableInventory(TypedDict):
    rows: int  # rows the device holds of the table
    checksum: str  # inventory_checksum of their (id, versionnumber) pairs
    cursor: str | None  # the table's download cursor, as the last page gave it


class InventoryRequest(TypedDict):
    device: str
    app: str
    tables: dict[str, TableInventory]  # tables with changes in the outbox are left out


InventoryStatus: TypeAlias = Literal["match", "mismatch", "behind", "clock"]


class InventoryVerdict(TypedDict):
    table: str
    status: InventoryStatus
    rows: int  # as the device reported
    expected_rows: NotRequired[int]  # what its scope holds (when compared)


class InventoryAnswer(TypedDict):
    tables: list[InventoryVerdict]
    rescope: list[str]  # mismatched tables: download them again (their cursors are stale)


ReceiptKind: TypeAlias = Literal["purge", "wipe"]


class ReceiptRequest(TypedDict):
    device: str
    app: str
    kind: ReceiptKind  # purge: access ended; wipe: an administrator asked
    tables: dict[str, int]  # rows removed per table
    outbox: NotRequired[int]  # changes discarded
    files: NotRequired[int]  # files removed
    reason: NotRequired[str | None]


class ReceiptAnswer(TypedDict):
    receipt: str  # its id
    received_on: str


# -- backfill (replica migrations) -------------------------------------------------------------


class BackfillRequest(TypedDict):
    device: str
    app: str
    table: str
    columns: list[str]  # travelling columns the device's table gained (not the id)
    after: NotRequired[str | None]  # the last id of the previous page (null: from the start)
    limit: NotRequired[int]  # rows per page (1 to 5000; 1000)


class BackfillAnswer(TypedDict):
    table: str
    columns: list[str]  # the id, then the columns asked for
    rows: list[list[Any]]  # rows in scope, in primary-key order, in ``columns`` order
    after: str | None  # send it back for the next page
    more: bool
