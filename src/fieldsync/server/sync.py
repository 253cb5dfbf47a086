"""The sync protocol over HTTP, under ``/sync/v1``: handshake, download, upload, inventory,
receipt, explain, errors.

Every endpoint authenticates the bearer token and works as its user; bodies are JSON objects
of bounded size and depth (see :mod:`fieldsync.sync.service` for what each one answers).
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from functools import partial
from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from fieldsync import tracing
from fieldsync.errors import BadRequest, Forbidden
from fieldsync.http.bodies import read_json_object
from fieldsync.http.principal import Principal
from fieldsync.http.responses import JSON
from fieldsync.platform import Platform
from fieldsync.security.context import load_context
from fieldsync.server import tracing as traced
from fieldsync.server.metrics import Metrics
from fieldsync.sync.apps import offline_apps
from fieldsync.sync.files import rejected_files
from fieldsync.sync.service import SyncService
from fieldsync.types import as_uuid

router = APIRouter(prefix="/sync/v1", tags=["sync"])


def service(request: Request) -> SyncService:
    found: SyncService = request.app.state.sync
    return found


def _metrics(request: Request) -> Metrics:
    found: Metrics = request.app.state.metrics
    return found


async def _body(request: Request) -> dict[str, Any]:
    return await read_json_object(request, "a sync request")


@router.post("/handshake")
async def handshake(request: Request, ctx: Principal) -> JSON:
    """Register the device for an app: answers the app's offline settings, the published
    profile with its tables and columns, and who the user is (or, when the device sent the
    etag of the answer it would get, that nothing changed)."""
    body = await _body(request)
    answer = await run_in_threadpool(
        service(request).handshake,
        ctx,
        device=body.get("device"),
        app=body.get("app"),
        sdk=body.get("sdk"),
        pending=body.get("pending"),
        etag=body.get("etag"),
    )
    return JSON(answer)


@router.get("/apps")
async def apps(request: Request, ctx: Principal) -> JSON:
    """The apps the caller can take offline (enabled for offline, a published profile the
    caller may sync), and who the caller is: what a device offers after sign-in."""
    platform = request.app.state.platform
    return JSON(await run_in_threadpool(offline_apps, platform.store, ctx))


@router.post("/download")
async def download(request: Request, ctx: Principal) -> JSON:
    """One page per table named in ``cursors`` (``null`` starts the table from scratch)."""
    started = time.perf_counter()
    body = await _body(request)
    metrics = _metrics(request)
    with tracing.span("sync.download") as span:
        answer = await run_in_threadpool(
            partial(service(request).download, lag=metrics.lag.observe),
            ctx,
            device=body.get("device"),
            app=body.get("app"),
            cursors=body.get("cursors"),
            limit=body.get("limit", 1000),
        )
        traced.downloaded(span, body.get("app"), answer)
    response = JSON(answer)
    metrics.download(answer, len(response.body), time.perf_counter() - started)
    return response


@router.post("/upload")
async def upload(request: Request, ctx: Principal) -> JSON:
    """Apply a batch of the device's outbox, in order, at most once per client change id."""
    started = time.perf_counter()
    # a change's values are held to the depth limit one change at a time: a change nested
    # too deep becomes a sync error of its own, and the rest of the batch applies
    body = await read_json_object(request, "a sync request", max_depth=None)
    with tracing.span("sync.upload") as span:
        answer = await run_in_threadpool(
            service(request).upload,
            ctx,
            device=body.get("device"),
            app=body.get("app"),
            changes=body.get("changes"),
            acknowledged=body.get("acknowledged"),
        )
        traced.uploaded(span, body.get("app"), body.get("changes"), answer)
    # a rejected change's new file is referenced by nothing: it goes now (fieldsync.files)
    orphans = rejected_files(
        request.app.state.platform.store.schema, body.get("changes"), answer["results"]
    )
    if orphans:
        await run_in_threadpool(request.app.state.files.discard, orphans, owner=ctx.user_id)
    size = int(request.headers.get("content-length") or 0)
    _metrics(request).upload(answer, size, time.perf_counter() - started)
    return JSON(answer)


@router.post("/backfill")
async def backfill(request: Request, ctx: Principal) -> JSON:
    """Ids and some travelling columns of the rows in a table's scope, a page at a time: what
    a device fills columns it gained with."""
    body = await _body(request)
    answer = await run_in_threadpool(
        service(request).backfill,
        ctx,
        device=body.get("device"),
        app=body.get("app"),
        table=body.get("table"),
        columns=body.get("columns"),
        after=body.get("after"),
        limit=body.get("limit", 1000),
    )
    return JSON(answer)


@router.post("/inventory")
async def inventory(request: Request, ctx: Principal) -> JSON:
    """What the device holds per table (rows, checksum, cursor), compared with its scope;
    a mismatched table is re-scoped (listed in ``rescope``)."""
    body = await _body(request)
    answer = await run_in_threadpool(
        service(request).inventory,
        ctx,
        device=body.get("device"),
        app=body.get("app"),
        tables=body.get("tables"),
    )
    return JSON(answer)


@router.post("/receipt")
async def receipt(request: Request, ctx: Principal) -> JSON:
    """The device removed data (``purge``: access ended; ``wipe``: an administrator asked)
    and says how much."""
    body = await _body(request)
    answer = await run_in_threadpool(
        service(request).receipt,
        ctx,
        device=body.get("device"),
        app=body.get("app"),
        kind=body.get("kind"),
        tables=body.get("tables"),
        outbox=body.get("outbox", 0),
        files=body.get("files", 0),
        reason=body.get("reason"),
    )
    return JSON(answer)


def _user_id(platform: Platform, user: str) -> uuid.UUID:
    """A user named by id or by user name."""
    try:
        return as_uuid(user)
    except ValueError:
        return platform.org.user_id(user)


@router.get("/explain")
async def explain(
    request: Request,
    ctx: Principal,
    app: str = "",
    table: str = "",
    id: str = "",
    user: str | None = None,
) -> JSON:
    """Why a row is (or is not) on the caller's device for an app, step by step;
    administrators add ``user`` (an id or a user name) to ask about someone else's."""

    def run() -> dict[str, Any]:
        platform = request.app.state.platform
        target = None if user is None else load_context(platform.store, _user_id(platform, user))
        return service(request).explain(ctx, app=app, table=table, record_id=id, user=target)

    if user is not None and not ctx.administrator:
        raise Forbidden("only administrators explain another user's device")
    return JSON(await run_in_threadpool(run))


@router.get("/errors")
async def errors(request: Request, ctx: Principal, since: str | None = None) -> JSON:
    """The user's sync errors, newest first; ``since`` (ISO 8601) keeps the newer ones."""
    moment = None
    if since is not None:
        try:
            moment = dt.datetime.fromisoformat(since)
        except ValueError:
            raise BadRequest(f"'since' must be an ISO 8601 time, not {since!r}") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=dt.UTC)
    rows = await run_in_threadpool(service(request).errors, ctx, since=moment)
    return JSON({"value": rows})
