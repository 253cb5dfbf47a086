"""Files over the sync protocol, under ``/sync/v1/files``, and the HTTP pieces the Web API's
file endpoints share (ranges, chunk digests, blob responses).

    POST /sync/v1/files/grants            {device, app, files: [ids]} → facts and tickets
    GET  /sync/v1/files/{id}?ticket=…     the bytes (``&size=thumbnail``); ``Range`` honoured
    POST /sync/v1/files/uploads           {file, table, column, name, mimetype, size, sha256}
    GET  /sync/v1/files/uploads/{upload}  where an upload stands (``received``)
    PUT  /sync/v1/files/uploads/{upload}  one chunk: ``Content-Range: bytes s-e/total`` and
                                          ``Content-Digest: sha-256=:<base64>:``

Every endpoint authenticates the bearer token; reads need a ticket of the same user.
"""

from __future__ import annotations

import base64
import re
import uuid
from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response, StreamingResponse

from fieldsync.errors import BadRequest, NotFound, RangeNotSatisfiable
from fieldsync.files.service import FileInfo, Files
from fieldsync.server.auth import Principal
from fieldsync.server.bodies import read_body, read_json_object
from fieldsync.server.responses import JSON
from fieldsync.sync.files import FileGrants

router = APIRouter(prefix="/sync/v1/files", tags=["sync"])
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+)$")


def files(request: Request) -> Files:
    found: Files = request.app.state.files
    return found


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``Range: bytes=s-e`` (one range) as ``[start, end)``; None for the whole content."""
    if header is None:
        return None
    m = _RANGE.match(header.strip())
    if m is None or (not m.group(1) and not m.group(2)):
        raise RangeNotSatisfiable(f"one byte range, as 'bytes=start-end', not {header[:60]!r}")
    first, last = m.group(1), m.group(2)
    if not first:  # the last n bytes
        start, end = max(0, size - int(last)), size
    else:
        start = int(first)
        end = size if not last else min(size, int(last) + 1)
    if start >= size or end <= start:
        raise RangeNotSatisfiable(f"the range {header[:60]!r} is outside the {size} bytes")
    return start, end


def parse_content_range(header: str | None, length: int) -> tuple[int, int]:
    """``Content-Range: bytes s-e/total`` of a chunk of ``length`` bytes: (start, total)."""
    m = _CONTENT_RANGE.match((header or "").strip())
    if m is None:
        raise BadRequest("a chunk says where it goes: 'Content-Range: bytes start-end/total'")
    start, end, total = (int(g) for g in m.groups())
    if end < start or end - start + 1 != length or end >= total:
        raise BadRequest(f"the Content-Range {header!r} does not match a {length}-byte chunk")
    return start, total


def parse_digest(header: str | None) -> bytes | None:
    """``Content-Digest: sha-256=:<base64>:`` (RFC 9530); None when not sent."""
    if not header:
        return None
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name.strip().lower() == "sha-256":
            try:
                raw = base64.b64decode(value.strip().strip(":"), validate=True)
            except ValueError:
                raise BadRequest("the Content-Digest is not base64") from None
            if len(raw) != 32:
                raise BadRequest("a sha-256 Content-Digest has 32 bytes")
            return raw
    raise BadRequest("the Content-Digest must carry sha-256")


def blob_response(
    service: Files, info: FileInfo, request: Request, *, thumb: bool = False, **headers: str
) -> Response:
    """The bytes of a file (or its thumbnail), whole or one range, with their digest."""
    digest, size = info.digest(thumb)
    span = parse_range(request.headers.get("range"), size)
    start, end = span or (0, size)
    out = {
        "Accept-Ranges": "bytes",
        "ETag": f'"{digest}"',
        "Repr-Digest": f"sha-256=:{base64.b64encode(bytes.fromhex(digest)).decode()}:",
        "Content-Length": str(end - start),
        **headers,
    }
    if span is not None:
        out["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    pieces: Iterator[bytes] = service.read(info, thumb=thumb, start=start, end=end)
    media = "image/jpeg" if thumb else info.mimetype
    return StreamingResponse(
        pieces, status_code=206 if span else 200, headers=out, media_type=media
    )


async def _json(request: Request) -> dict[str, Any]:
    return await read_json_object(request)


@router.post("/grants")
async def grants(request: Request, ctx: Principal) -> JSON:
    body = await _json(request)
    grants = FileGrants(request.app.state.sync, files(request))
    answer = await run_in_threadpool(
        grants.grant, ctx, device=body.get("device"), app=body.get("app"), files=body.get("files")
    )
    return JSON(answer)


@router.post("/uploads")
async def begin(request: Request, ctx: Principal) -> JSON:
    body = await _json(request)
    for key in ("table", "column"):
        if not isinstance(body.get(key), str):
            raise BadRequest(f"'{key}' names the {key} the file is for")
    answer = await run_in_threadpool(
        lambda: files(request).begin(
            ctx,
            table=body["table"],
            column=body["column"],
            name=body.get("name"),
            mimetype=body.get("mimetype"),
            size=body.get("size"),
            sha256=body.get("sha256"),
            file_id=body.get("file"),
        )
    )
    return JSON(answer)


@router.get("/uploads/{upload}")
async def upload_status(request: Request, ctx: Principal, upload: str) -> JSON:
    return JSON(await run_in_threadpool(files(request).status, ctx, upload))


@router.put("/uploads/{upload}")
async def upload_chunk(request: Request, ctx: Principal, upload: str) -> JSON:
    service = files(request)
    data = await read_body(request)  # held to FIELDSYNC_MAX_CHUNK_MB
    start, total = parse_content_range(request.headers.get("content-range"), len(data))
    digest = parse_digest(request.headers.get("content-digest"))
    answer = await run_in_threadpool(
        lambda: service.append(ctx, upload, start=start, data=data, total=total, digest=digest)
    )
    return JSON(answer)


@router.get("/{file_id}")
async def download(
    request: Request, ctx: Principal, file_id: str, ticket: str = "", size: str = "full"
) -> Response:
    try:
        fid = uuid.UUID(file_id)
    except ValueError:
        raise NotFound("no such file") from None
    if size not in ("full", "thumbnail"):
        raise BadRequest("'size' is full or thumbnail")
    grants = FileGrants(request.app.state.sync, files(request))
    info = await run_in_threadpool(grants.check, ctx, fid, ticket)
    return blob_response(files(request), info, request, thumb=size == "thumbnail")
