"""Files over the sync protocol, under ``/sync/v1/files`` (ranges, chunk digests and blob
responses are :mod:`fieldsync.http.blobs`, shared with the Web API's file endpoints).

    POST /sync/v1/files/grants            {device, app, files: [ids]} → facts and tickets
    GET  /sync/v1/files/{id}?ticket=…     the bytes (``&size=thumbnail``); ``Range`` honoured
    POST /sync/v1/files/uploads           {file, table, column, name, mimetype, size, sha256}
    GET  /sync/v1/files/uploads/{upload}  where an upload stands (``received``)
    PUT  /sync/v1/files/uploads/{upload}  one chunk: ``Content-Range: bytes s-e/total`` and
                                          ``Content-Digest: sha-256=:<base64>:``
    POST /sync/v1/files/batch             many small files in one body (a JSON line, bytes)
    POST /sync/v1/files/read              {device, app, files: [{id, size}]} → a JSON line,
                                          then the bytes of those the user may read

Every endpoint authenticates the bearer token; reads need a ticket of the same user.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from fieldsync.errors import BadRequest, NotFound
from fieldsync.files.batch import MEDIA_TYPE, frame, split, store_batch
from fieldsync.files.service import Files
from fieldsync.http.blobs import blob_response, parse_content_range, parse_digest, range_start
from fieldsync.http.bodies import read_body, read_json_object
from fieldsync.http.principal import Principal
from fieldsync.http.responses import JSON
from fieldsync.sync.files import FileGrants
from fieldsync.types import as_uuid

router = APIRouter(prefix="/sync/v1/files", tags=["sync"])


def files(request: Request) -> Files:
    found: Files = request.app.state.files
    return found


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
    span = request.headers.get("content-range")
    digest = parse_digest(request.headers.get("content-digest"))
    at = range_start(span)
    hashed = None if at is None else service.chunk_hash(upload, at)
    pieces: list[bytes] = []
    async for piece in request.stream():  # held to FIELDSYNC_MAX_CHUNK_MB
        if hashed is not None:
            hashed.update(piece)  # hashed while the rest arrives
        pieces.append(piece)
    data = b"".join(pieces)
    start, total = parse_content_range(span, len(data))
    answer = await run_in_threadpool(
        lambda: service.append(
            ctx, upload, start=start, data=data, total=total, digest=digest, hashed=hashed
        )
    )
    return JSON(answer)


@router.post("/batch")
async def upload_batch(request: Request, ctx: Principal) -> JSON:
    listed, data = split(await read_body(request))
    service = files(request)
    return JSON(await run_in_threadpool(store_batch, service, ctx, listed, data))


@router.post("/read")
async def read_files(request: Request, ctx: Principal) -> Response:
    body = await _json(request)
    grants = FileGrants(request.app.state.sync, files(request))
    manifest, pieces = await run_in_threadpool(
        lambda: grants.read(
            ctx, device=body.get("device"), app=body.get("app"), files=body.get("files")
        )
    )
    return Response(b"".join(frame(manifest, pieces)), media_type=MEDIA_TYPE)


@router.get("/{file_id}")
async def download(
    request: Request, ctx: Principal, file_id: str, ticket: str = "", size: str = "full"
) -> Response:
    try:
        fid = as_uuid(file_id)
    except ValueError:
        raise NotFound("no such file") from None
    if size not in ("full", "thumbnail"):
        raise BadRequest("'size' is full or thumbnail")
    grants = FileGrants(request.app.state.sync, files(request))
    info = await run_in_threadpool(grants.check, ctx, fid, ticket)
    if size == "thumbnail" and info.due:
        info = await run_in_threadpool(files(request).with_thumbnail, info)
    return blob_response(files(request), info, request, thumb=size == "thumbnail")
