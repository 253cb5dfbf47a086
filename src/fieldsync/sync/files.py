"""Which files a device may download: grants.

A device names the file ids its rows hold; the server answers, for each id that a row the
user can read holds in a file or image column that the user's profile selects, the file's
facts (name, type, size, sha256, thumbnail) and a *ticket*: a signed, short-lived
``(user, app, file, expiry)`` that every blob read must present with the user's bearer token.
The grant runs the read check once per batch of ids (one query per table and its selected
columns); every blob read runs it again for its one file, so a user who lost the row (or the
app) since the grant is refused at once, not when the ticket expires. A ticket expires after
:data:`TICKET_SECONDS` and the device asks again.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import time
import uuid
from typing import Any

import sqlalchemy as sa

from fieldsync.errors import BadRequest, Forbidden, NotFound
from fieldsync.files.batch import MAX_FILES, READ_BUDGET, read_batch
from fieldsync.files.service import FILE_TYPES, FileInfo, Files
from fieldsync.query.ast import Or, is_in
from fieldsync.schema.model import Schema
from fieldsync.security.model import SecurityContext
from fieldsync.sync.service import SyncService

TICKET_SECONDS = 600
MAX_GRANT = 500


def _sign(secret: bytes, user: uuid.UUID, app: str, file_id: uuid.UUID, expires: int) -> str:
    """``<expiry>.<app, base64url>.<mac>``: the app names the profile that access is
    checked against again at every read."""
    label = base64.urlsafe_b64encode(app.encode()).decode().rstrip("=")
    body = f"{user.hex}.{file_id.hex}.{expires}.{label}".encode()
    mac = hmac.new(secret, b"file-ticket:" + body, hashlib.sha256).digest()[:18]
    return f"{expires}.{label}.{base64.urlsafe_b64encode(mac).decode()}"


def _ticket_app(ticket: str) -> str | None:
    parts = ticket.split(".")
    if len(parts) != 3:
        return None
    label = parts[1]
    try:
        return base64.urlsafe_b64decode(label + "=" * (-len(label) % 4)).decode()
    except ValueError:
        return None


def rejected_files(schema: Schema, changes: object, results: object) -> list[uuid.UUID]:
    """The file ids that rejected changes of an upload batch carried in file or image
    columns: uploaded for a change that will not be applied, so candidates for removal."""
    if not isinstance(changes, list) or not isinstance(results, list):
        return []
    rejected = {r.get("id") for r in results if isinstance(r, dict) and r["status"] != "applied"}
    out: list[uuid.UUID] = []
    for change in changes:
        if not isinstance(change, dict) or str(change.get("id")) not in rejected:
            continue
        table = schema.tables.get(str(change.get("table")))
        values = change.get("values")
        if table is None or not isinstance(values, dict):
            continue
        for name, value in values.items():
            col = table.column(name)
            if col is not None and col.type in FILE_TYPES and isinstance(value, str):
                with contextlib.suppress(ValueError):
                    out.append(uuid.UUID(value))
    return out


class FileGrants:
    def __init__(self, sync: SyncService, files: Files) -> None:
        self.sync = sync
        self.files = files

    def grant(
        self,
        ctx: SecurityContext,
        *,
        device: object,
        app: object,
        files: object,
        now: float | None = None,
    ) -> dict[str, Any]:
        device_id, app_name = self.sync.checked_device(device), self.sync.checked_app(app)
        if not isinstance(files, list) or len(files) > MAX_GRANT:
            raise BadRequest(f"'files' is a list of at most {MAX_GRANT} file ids")
        try:
            ids = list(dict.fromkeys(uuid.UUID(str(f)) for f in files))
        except ValueError:
            raise BadRequest("'files' holds file ids (GUIDs)") from None
        with self.sync.store.read() as conn:
            self.sync.owned_device(conn, ctx, device_id)
            allowed = self.readable(conn, ctx, app_name, ids)
            infos = self.files.infos(conn, [i for i in ids if i in allowed])
        moment = int(time.time() if now is None else now)
        expires = moment + TICKET_SECONDS
        secret = self.sync.secret
        infos = self.files.thumbnails.ensure_all(infos)  # facts are whole: never "not yet"
        return {
            "files": [
                {**info.to_json(), "ticket": _sign(secret, ctx.user_id, app_name, fid, expires)}
                for fid, info in infos.items()
            ],
            "missing": [str(i) for i in ids if i not in infos],
            "expires": expires,
        }

    def read(
        self, ctx: SecurityContext, *, device: object, app: object, files: object
    ) -> tuple[dict[str, Any], list[bytes]]:
        """The bytes of many small files (or thumbnails) in one answer, for a device whose
        user can read a row of the app's profile holding each (the grant's check, made here
        for the whole batch: no ticket is needed)."""
        device_id, app_name = self.sync.checked_device(device), self.sync.checked_app(app)
        if not isinstance(files, list) or len(files) > MAX_FILES:
            raise BadRequest(f"'files' is a list of at most {MAX_FILES} files to read")
        wanted: list[tuple[uuid.UUID, bool]] = []
        for item in files:
            size = item.get("size", "full") if isinstance(item, dict) else None
            if size not in ("full", "thumbnail"):
                raise BadRequest('each file to read is {"id": <file id>, "size": full|thumbnail}')
            try:
                wanted.append((uuid.UUID(str(item.get("id"))), size == "thumbnail"))
            except ValueError:
                raise BadRequest("'id' is a file id (a GUID)") from None
        with self.sync.store.read() as conn:
            self.sync.owned_device(conn, ctx, device_id)
            allowed = self.readable(conn, ctx, app_name, list(dict.fromkeys(f for f, _ in wanted)))
        return read_batch(self.files, allowed, wanted, READ_BUDGET)

    def readable(
        self, conn: sa.Connection, ctx: SecurityContext, app: str, ids: list[uuid.UUID]
    ) -> set[uuid.UUID]:
        """Which of ``ids`` a row the user can read holds in a file or image column that the
        profile of ``app`` selects: one query per profile table with such columns."""
        access = self.sync.access(conn, ctx, app)
        plan = self.sync.plan(access.profile)
        allowed: set[uuid.UUID] = set()
        for name in plan.order:
            tp = plan.tables[name]
            selected = set(tp.item.file_columns) | set(tp.item.image_columns)
            columns = [
                c
                for c in tp.columns
                if c in selected and (col := tp.table.column(c)) and col.type in FILE_TYPES
            ]
            left = [i for i in ids if i not in allowed]
            if not columns or not left:
                continue
            node = Or(tuple(is_in(c, left) for c in columns))
            rows = self.sync.records.retrieve_multiple(
                name, columns=columns, filter=node, caller=ctx, conn=conn
            )
            allowed |= {r[c] for r in rows for c in columns if r.get(c) in left}
        return allowed

    def check(self, ctx: SecurityContext, file_id: uuid.UUID, ticket: object) -> FileInfo:
        """The file a ticket opens, for the ticket's user, until it expires, and only while
        the user can still read a row of the ticket's app that holds it."""
        if not isinstance(ticket, str) or "." not in ticket:
            raise Forbidden("a file download needs the ticket of a grant (POST /files/grants)")
        raw, _, _ = ticket.partition(".")
        app = _ticket_app(ticket)
        try:
            expires = int(raw)
        except ValueError:
            self.sync.store.audit.ticket_forged(ctx.user_id, file_id, "not a ticket")
            raise Forbidden("the file ticket is not valid") from None
        if app is None:  # forged, or issued before tickets named their app
            self.sync.store.audit.ticket_forged(ctx.user_id, file_id, "not a ticket")
            raise Forbidden("the file ticket is not valid: ask for a new grant")
        expected = _sign(self.sync.secret, ctx.user_id, app, file_id, expires)
        if not hmac.compare_digest(expected, ticket):
            reason = "the file ticket is not valid for this user and file"
            self.sync.store.audit.ticket_forged(ctx.user_id, file_id, reason)
            raise Forbidden(reason)
        if expires < time.time():
            raise Forbidden("the file ticket has expired: ask for a new grant")
        with self.sync.store.read() as conn:
            try:
                still = file_id in self.readable(conn, ctx, app, [file_id])
            except (Forbidden, NotFound):
                still = False  # the app is no longer the user's to take offline
            if not still:
                raise Forbidden(
                    "the file ticket no longer opens this file: no row you can read holds it"
                )
            info = self.files.info(file_id, conn)
        if info is None:
            raise NotFound(f"file {file_id} no longer exists")
        return info
