"""The Web API's file and image columns, as Dataverse serves them (and as the Microsoft SDK's
``files.upload`` speaks them), on the same store as sync:

    PATCH  {set}(<id>)/<column>                    the whole file in the body
                                                   (``x-ms-file-name``; ``If-None-Match: null``
                                                   only when the column is empty)
    PATCH  {set}(<id>)/<column>?x-ms-file-name=…   with ``x-ms-transfer-mode: chunked``: starts
                                                   an upload; answers an absolute ``Location``
                                                   and ``x-ms-chunk-size``
    PATCH  <Location>                              one chunk (``Content-Range``): 206, then 204
    GET    {set}(<id>)/<column>[/$value]           the bytes (``Range`` honoured); an image
                                                   column answers its thumbnail unless
                                                   ``?size=full``
    DELETE {set}(<id>)/<column>                    empties the column

The row is read and written as the caller, so the usual privileges decide.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, quote

from fastapi import Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from fieldsync.errors import BadRequest, MethodNotAllowed, PreconditionFailed
from fieldsync.files.service import FILE_TYPES, Files
from fieldsync.http.blobs import blob_response, parse_content_range, parse_digest
from fieldsync.http.bodies import read_body
from fieldsync.schema.model import Column, ColumnType, Schema, Table
from fieldsync.security.model import SecurityContext
from fieldsync.webapi.protocol import parse_path

SLICE = 4 * 1024 * 1024


@dataclass(frozen=True)
class FileTarget:
    table: Table
    record_id: uuid.UUID
    column: Column
    value: bool  # the path ends with /$value


def claims(schema: Schema, method: str, path: str) -> FileTarget | None:
    """The row and file column a request addresses, when it is one of the file endpoints."""
    try:
        segments = parse_path(path)
    except BadRequest:
        return None
    if len(segments) not in (2, 3) or segments[0].key is None:
        return None
    value = len(segments) == 3
    if value and (segments[2].name != "$value" or segments[2].key is not None):
        return None
    if segments[1].key is not None or not isinstance(segments[0].key.value, uuid.UUID):
        return None
    table = next((t for t in schema.tables.values() if t.entity_set_name == segments[0].name), None)
    col = None if table is None else table.column(segments[1].name)
    if table is None or col is None or col.type not in FILE_TYPES:
        return None
    if method not in (("GET",) if value else ("GET", "PATCH", "DELETE")):
        raise MethodNotAllowed(
            f"{segments[1].name}: GET reads a file (…/$value too); PATCH and DELETE change it"
        )
    return FileTarget(table, segments[0].key.value, col, value)


async def serve(request: Request, ctx: SecurityContext, target: FileTarget, root: str) -> Response:
    files: Files = request.app.state.files
    t, col, rid = target.table, target.column, target.record_id
    if request.method == "GET":
        info = await run_in_threadpool(files.for_column, ctx, t.name, rid, col.name)
        full = request.query_params.get("size", "").lower() == "full"
        thumb = col.type is ColumnType.IMAGE and not full
        if thumb and info.due:
            info = await run_in_threadpool(files.with_thumbnail, info)
        return blob_response(
            files,
            info,
            request,
            thumb=thumb,
            **{
                "x-ms-file-name": quote(info.name),
                "x-ms-file-size": str(info.digest(thumb)[1]),
                "OData-Version": "4.0",
            },
        )
    if request.method == "DELETE":
        await run_in_threadpool(files.clear, ctx, t.name, rid, col.name)
        return Response(status_code=204, headers={"OData-Version": "4.0"})
    query = parse_qs(request.url.query)
    token = (query.get("sessiontoken") or [""])[0]
    if token:  # one chunk of an upload begun here
        data = await read_body(request)  # held to FIELDSYNC_MAX_CHUNK_MB
        start, total = parse_content_range(request.headers.get("content-range"), len(data))
        digest = parse_digest(request.headers.get("content-digest"))
        answer = await run_in_threadpool(
            lambda: files.append(ctx, token, start=start, data=data, total=total, digest=digest)
        )
        return Response(status_code=204 if answer["complete"] else 206)
    name = (query.get("x-ms-file-name") or [request.headers.get("x-ms-file-name", "")])[0]
    mimetype = request.headers.get("content-type")
    if request.headers.get("x-ms-transfer-mode", "").lower() == "chunked":
        await _precondition(request, files, ctx, target)
        state = await run_in_threadpool(
            lambda: files.begin(
                ctx,
                table=t.name,
                column=col.name,
                name=name,
                mimetype=None if mimetype == "application/json" else mimetype,
                size=None,
                record_id=rid,
            )
        )
        location = f"{root}/{t.entity_set_name}({rid})/{col.name}?sessiontoken={state['upload']}"
        return Response(
            status_code=200,
            headers={"Location": location, "x-ms-chunk-size": str(state["chunk_size"])},
        )
    await _precondition(request, files, ctx, target)
    declared = request.headers.get("content-length", "")
    if not declared.isdigit():
        data = await read_body(request, files.limit(col))
        declared, stream = str(len(data)), _once(data)
    else:
        stream = request.stream()
    state = await run_in_threadpool(
        lambda: files.begin(
            ctx,
            table=t.name,
            column=col.name,
            name=name,
            mimetype=mimetype,
            size=int(declared),
            record_id=rid,
        )
    )
    at, buffer, upload = 0, b"", state.get("upload")
    async for piece in stream:  # in slices of the chunk size: the file is never held whole
        buffer += piece
        if len(buffer) > int(declared) - at:
            raise BadRequest("the body is longer than its Content-Length")
        while len(buffer) >= SLICE or (buffer and at + len(buffer) == int(declared)):
            part, buffer = buffer[:SLICE], buffer[SLICE:]
            state = await run_in_threadpool(_append, files, ctx, upload, at, part)
            at += len(part)
    if not state["complete"]:
        raise BadRequest(f"the body ended after {at} of the {declared} bytes it declared")
    return Response(status_code=204, headers={"OData-Version": "4.0"})


def _append(
    files: Files, ctx: SecurityContext, upload: object, at: int, data: bytes
) -> dict[str, Any]:
    return files.append(ctx, upload, start=at, data=data)


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def _precondition(
    request: Request, files: Files, ctx: SecurityContext, target: FileTarget
) -> None:
    """Read the row as the caller (404 when they may not); ``If-None-Match: null`` (or
    ``*``) asks that the column be empty."""
    row = await run_in_threadpool(
        lambda: files.records.retrieve(
            target.table.name, target.record_id, columns=[target.column.name], caller=ctx
        )
    )
    if request.headers.get("if-none-match", "").strip() in ("null", "*") and row.get(
        target.column.name
    ):
        raise PreconditionFailed(f"{target.table.name}.{target.column.name} already has a file")
