"""The Web API's HTTP shell: authenticate, limit the rate, turn the HTTP request into an
:class:`ODataRequest`, route it by its resource path (the route table of
``fieldsync.webapi.routes``), render the :class:`ODataResponse`.

Routing (``handle``) is shared with ``$batch`` parts, so a part runs exactly the code a
plain request runs."""

from __future__ import annotations

import sqlalchemy as sa
from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from fieldsync import tracing
from fieldsync.errors import FieldsyncError, MethodNotAllowed
from fieldsync.http.bodies import read_body
from fieldsync.http.principal import authenticate, bearer_token, caller
from fieldsync.http.responses import JSON
from fieldsync.http.throttle import Throttle
from fieldsync.security.model import SecurityContext
from fieldsync.webapi import batch, files
from fieldsync.webapi.message import Call, ODataRequest, ODataResponse
from fieldsync.webapi.protocol import API_PREFIX, parse_path
from fieldsync.webapi.routes import route_for

router = APIRouter(tags=["web api"])


def handle(call: Call, req: ODataRequest) -> ODataResponse:
    """Serve one request by the route table (``fieldsync.webapi.routes``)."""
    segments = parse_path(req.path)
    return route_for(segments).serve(call, req, segments)


def _root(request: Request) -> str:
    return f"{request.url.scheme}://{request.url.netloc}{API_PREFIX}"


def _render(response: ODataResponse) -> Response:
    headers = {"OData-Version": "4.0", **response.headers}
    payload = response.payload()
    if payload is None:
        return Response(status_code=response.status, headers=headers)
    media = response.media_type or JSON.media_type
    return Response(payload, status_code=response.status, headers=headers, media_type=media)


@router.api_route(API_PREFIX + "/{path:path}", methods=["GET", "POST", "PATCH", "PUT", "DELETE"])
async def web_api(request: Request, path: str) -> Response:
    rest = request.scope["path"].removeprefix(API_PREFIX)
    try:
        target = files.claims(request.app.state.platform.store.schema, request.method, rest)
    except FieldsyncError as exc:  # a file column's path with another method: refused once
        return await _file(request, None, exc)  # the caller is known
    if target is not None:  # file and image columns stream; they never load into memory
        return await _file(request, target, None)
    body = await read_body(request)  # held to its limit (fieldsync.http.bodies)
    # the rest in one worker thread: the caller, the limits, the work, the JSON
    return await run_in_threadpool(_serve, request, body)


async def _file(
    request: Request, target: files.FileTarget | None, refusal: FieldsyncError | None
) -> Response:
    ctx = await run_in_threadpool(authenticate, request)
    throttle: Throttle = request.app.state.throttle  # service protection limits
    ticket = throttle.admit(ctx.user_id)
    try:
        if refusal is not None:
            raise refusal
        assert target is not None
        response = await files.serve(request, ctx, target, _root(request))
    finally:
        throttle.finish(ticket)
    response.headers.update(ticket.headers)
    return response


def _serve(request: Request, body: bytes) -> Response:
    p = request.app.state.platform
    token = bearer_token(request)
    if request.method == "GET":  # reads in the transaction that authenticated the caller
        with p.store.read() as conn:
            return _answer(request, body, caller(p, token, conn), conn)
    return _answer(request, body, caller(p, token), None)


def _answer(
    request: Request, body: bytes, ctx: SecurityContext, reader: sa.Connection | None
) -> Response:
    request.state.principal = ctx
    tracing.annotate({"enduser.id": str(ctx.user_id)})
    throttle: Throttle = request.app.state.throttle  # service protection limits
    ticket = throttle.admit(ctx.user_id)
    try:
        req = ODataRequest(
            method=request.method,
            path=request.scope["path"].removeprefix(API_PREFIX),
            query=request.url.query,
            headers={k.lower(): v for k, v in request.headers.items()},
            body=body,
            root=_root(request),
        )
        call = Call(request.app.state.platform, ctx, reader=reader)
        if req.path.strip("/") == "$batch":
            if req.method != "POST":
                raise MethodNotAllowed("$batch takes POST")
            most = request.app.state.settings.webapi_max_batch_operations
            payload, content_type = batch.run(call, req, handle, most)
            response = Response(payload, status_code=200, media_type=content_type)
        else:
            response = _render(handle(call, req))
    finally:
        throttle.finish(ticket)
    response.headers.update(ticket.headers)
    return response
