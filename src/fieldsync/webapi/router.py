"""The Web API's HTTP shell: authenticate, limit the rate, turn the HTTP request into an
:class:`ODataRequest`, route it by its resource path, render the :class:`ODataResponse`.

Routing (``handle``) is shared with ``$batch`` parts, so a part runs exactly the code a
plain request runs."""

from __future__ import annotations

from typing import ClassVar

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from fieldsync.errors import (
    BadRequest,
    FieldsyncError,
    MethodNotAllowed,
    NotFound,
)
from fieldsync.http.bodies import read_body
from fieldsync.http.principal import authenticate
from fieldsync.http.responses import JSON
from fieldsync.http.throttle import Throttle
from fieldsync.schema.builtin import ORGANIZATION_ID
from fieldsync.schema.model import Table
from fieldsync.security.model import SecurityContext
from fieldsync.webapi import (
    audit,
    batch,
    csdl,
    files,
    links,
    messages,
    metadata,
    metadatachanges,
    navigation,
    reading,
    relationships,
    sqlquery,
    writing,
)
from fieldsync.webapi.message import Call, ODataRequest, ODataResponse
from fieldsync.webapi.protocol import API_PREFIX, Segment, parse_path

router = APIRouter(tags=["web api"])
ACTIONS = "Microsoft.Dynamics.CRM."


class NotImplementedHere(FieldsyncError):
    """A part of the Dataverse Web API that fieldsync does not serve (yet)."""

    status: ClassVar[int] = 501
    code: ClassVar[str] = "0x8004800d"


def _table(call: Call, segment: Segment) -> Table:
    try:
        return call.platform.store.schema.by_entity_set(segment.name)
    except NotFound:
        raise NotFound(
            f"Resource not found for the segment '{segment.name}'", code="0x80060888"
        ) from None


def handle(call: Call, req: ODataRequest) -> ODataResponse:
    segments = parse_path(req.path)
    method = req.method
    if not segments:
        if method != "GET":
            raise MethodNotAllowed(f"{method} is not allowed on the service root")
        sets = sorted(t.entity_set_name for t in call.platform.store.schema.tables.values())
        body = {"value": [{"name": s, "kind": "EntitySet", "url": s} for s in sets]}
        return ODataResponse(200, {"@odata.context": f"{req.root}/$metadata", **body})
    head = segments[0]
    name = head.name
    if name in ("WhoAmI", f"{ACTIONS}WhoAmI") and len(segments) == 1:
        if method != "GET":
            raise MethodNotAllowed("WhoAmI is a function: use GET")
        return ODataResponse(
            200,
            {
                "@odata.context": f"{req.root}/$metadata#{ACTIONS}WhoAmIResponse",
                "BusinessUnitId": str(call.caller.business_unit_id),
                "UserId": str(call.caller.user_id),
                "OrganizationId": str(ORGANIZATION_ID),
            },
        )
    if name == "$metadata":
        if method != "GET" or len(segments) != 1:
            raise MethodNotAllowed("$metadata is read with GET")
        return ODataResponse(
            200, csdl.document(call.platform.store.schema), media_type=csdl.MEDIA_TYPE
        )
    if name == "$batch":
        raise BadRequest("$batch cannot be nested")
    if name == "EntityDefinitions":
        if call.conn is not None and method != "GET":
            raise BadRequest("table and column changes cannot be part of a change set")
        if method == "GET":
            return metadata.get(call, req, segments)
        if method == "POST":
            return metadata.post(call, req, segments)
        if method == "PUT":
            return metadata.update_attribute(call, req, segments)
        if method == "DELETE":
            return metadata.delete(call, req, segments)
        raise MethodNotAllowed(f"{method} is not allowed on EntityDefinitions")
    if name in ("CreateEntities", f"{ACTIONS}CreateEntities") and len(segments) == 1:
        if call.conn is not None:
            raise BadRequest("table and column changes cannot be part of a change set")
        _post_only(method, name)
        return metadata.create_entities(call, req)
    if name in ("BulkDelete", f"{ACTIONS}BulkDelete") and len(segments) == 1:
        _post_only(method, name)
        return writing.bulk_delete(call, req)
    if name == "RelationshipDefinitions":
        if call.conn is not None and method != "GET":
            raise BadRequest("relationship changes cannot be part of a change set")
        if method == "GET":
            return relationships.get(call, req, segments)
        if method == "POST" and len(segments) == 1 and head.key is None:
            return relationships.create(call, req)
        if method == "DELETE" and head.key is not None:
            return relationships.delete(call, req, segments)
        raise MethodNotAllowed(f"{method} is not allowed here on RelationshipDefinitions")
    if name in ("RetrieveMetadataChanges", f"{ACTIONS}RetrieveMetadataChanges"):
        if method != "GET":
            raise MethodNotAllowed("RetrieveMetadataChanges is a function: use GET")
        return metadatachanges.retrieve(call, req, head)
    if name in messages.SETS and len(segments) == 1:
        if method != "GET":
            raise MethodNotAllowed(f"{name} is read-only")
        return messages.get(call, req, name, head.key)
    if name == "GlobalOptionSetDefinitions":
        raise NotImplementedHere(f"{name} is not supported yet")
    if name == audit.ENTITY_SET:
        return audit.get(call, req, segments)
    table = _table(call, head)
    if len(segments) == 1 and head.key is None:
        if method == "GET":
            if "sql" in req.params:
                return sqlquery.sql_query(call, req, table)
            return reading.list_entities(call, req, table)
        if method == "POST":
            return writing.create(call, req, table)
        raise MethodNotAllowed(f"{method} is not allowed on an entity set")
    if len(segments) == 2 and head.key is None and segments[1] == Segment("$count"):
        if method != "GET":
            raise MethodNotAllowed("$count is read with GET")
        return reading.count(call, req, table)
    if len(segments) == 2 and head.key is None and segments[1].name.startswith(ACTIONS):
        action = segments[1].name.removeprefix(ACTIONS)
        _post_only(method, action)
        if action == "CreateMultiple":
            return writing.create_multiple(call, req, table)
        if action == "UpdateMultiple":
            return writing.update_multiple(call, req, table)
        if action == "UpsertMultiple":
            return writing.upsert_multiple(call, req, table)
        raise NotImplementedHere(f"the action {action} is not supported")
    if head.key is None or (head.key.pairs is None and head.key.value is None):
        raise BadRequest(f"{req.path[:80]!r}: name one row, {table.entity_set_name}(<id>)")
    if len(segments) == 2 and segments[1].name == ACTIONS + links.PUBLISH_PROFILE:
        _post_only(method, links.PUBLISH_PROFILE)
        return links.publish_profile(call, req, table, head.key)
    if len(segments) == 2 and segments[1].name == ACTIONS + links.PREVIEW_PROFILE:
        _post_only(method, links.PREVIEW_PROFILE)
        return links.preview_profile_action(call, req, table, head.key)
    if len(segments) > 1:
        return navigation.handle(call, req, table, head.key, segments[1:])
    if method == "GET":
        return reading.get_entity(call, req, table, head.key)
    if method == "PATCH":
        return writing.patch(call, req, table, head.key)
    if method == "DELETE":
        return writing.delete(call, req, table, head.key)
    raise MethodNotAllowed(f"{method} is not allowed on a row; use GET, PATCH or DELETE")


def _post_only(method: str, name: str) -> None:
    if method != "POST":
        raise MethodNotAllowed(f"{name} is an action: use POST")


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
    ctx = await run_in_threadpool(authenticate, request)
    throttle: Throttle = request.app.state.throttle  # service protection limits
    ticket = throttle.admit(ctx.user_id)
    try:
        response = await _serve(request, ctx)
    finally:
        throttle.finish(ticket)
    response.headers.update(ticket.headers)
    return response


async def _serve(request: Request, ctx: SecurityContext) -> Response:
    path = request.scope["path"].removeprefix(API_PREFIX)
    target = files.claims(request.app.state.platform.store.schema, request.method, path)
    if target is not None:  # file and image columns stream; they never load into memory
        return await files.serve(request, ctx, target, _root(request))
    body = await read_body(request)  # held to its limit (fieldsync.http.bodies)
    req = ODataRequest(
        method=request.method,
        path=request.scope["path"].removeprefix(API_PREFIX),
        query=request.url.query,
        headers={k.lower(): v for k, v in request.headers.items()},
        body=body,
        root=_root(request),
    )
    call = Call(request.app.state.platform, ctx)
    if req.path.strip("/") == "$batch":
        if req.method != "POST":
            raise MethodNotAllowed("$batch takes POST")
        most = request.app.state.settings.webapi_max_batch_operations
        payload, content_type = await run_in_threadpool(batch.run, call, req, handle, most)
        return Response(payload, status_code=200, media_type=content_type)
    response = await run_in_threadpool(handle, call, req)
    return _render(response)
