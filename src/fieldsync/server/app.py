"""The HTTP server: ``create_app(settings)`` assembles routes, middleware and error handling.

Every error leaves as ``{"error": {"code", "message"}}`` with a 4xx status; an unexpected
exception is logged and answered with a 500 in the same shape.
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any

import sqlalchemy as sa
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from fieldsync import __version__, tracing
from fieldsync.config import Settings
from fieldsync.errors import (
    FieldsyncError,
    Forbidden,
    ServiceUnavailable,
    TooManyRequests,
    Unauthorized,
)
from fieldsync.files.blobs import open_blobs
from fieldsync.files.service import FileLimits, Files
from fieldsync.http.bodies import BodyLimit, BodyLimits
from fieldsync.http.principal import Principal
from fieldsync.http.responses import JSON, HeaderCase
from fieldsync.http.throttle import Limits, Throttle
from fieldsync.identity.auth import AuthSettings
from fieldsync.platform import Platform, open_platform
from fieldsync.portal.router import refusal as portal_refusal
from fieldsync.portal.router import router as portal_router
from fieldsync.server import admin as admin_routes
from fieldsync.server import auth as auth_routes
from fieldsync.server import files as files_routes
from fieldsync.server import live as live_routes
from fieldsync.server import sync as sync_routes
from fieldsync.server.metrics import Metrics, MetricsMiddleware
from fieldsync.server.tracing import TracingMiddleware
from fieldsync.store.audit import AuditLimits, client_address
from fieldsync.sync.service import SyncService
from fieldsync.webapi import files as webapi_files
from fieldsync.webapi.router import router as webapi_router
from fieldsync.webapp.router import router as webapp_router

log = logging.getLogger(__name__)

HTTP_CODES = {
    400: "0x80040203",
    401: "0x8004AD03",
    403: "0x80040220",
    404: "0x80060888",
    405: "0x80060888",
    406: "0x80060888",
    413: "0x80040203",
    415: "0x80040203",
    422: "0x80040203",
}


def error_response(status: int, code: str, message: str, **headers: str) -> JSON:
    return JSON(
        {"error": {"code": code, "message": message}}, status_code=status, headers=headers or None
    )


def _connection_lost(exc: sa.exc.DBAPIError) -> bool:
    text = str(exc.orig).lower()
    return any(
        words in text
        for words in (
            "terminating connection",
            "server closed the connection",
            "connection refused",
            "connection is closed",
            "the database system is shutting down",
            "the database system is starting up",
            "consuming input failed",
            "connection failed",
        )
    )


class ClientAddress:
    """Puts the client's address where the audit log finds it, for the whole request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        token = client_address.set(str(client[0])[:64] if client else "")
        try:
            await self.app(scope, receive, send)
        finally:
            client_address.reset(token)


def auth_settings(settings: Settings) -> AuthSettings:
    return AuthSettings(
        secret_key=settings.secret_key,
        access_token_seconds=settings.access_token_seconds,
        refresh_token_days=settings.refresh_token_days,
        refresh_grace_seconds=settings.refresh_grace_seconds,
        max_failures=settings.signin_max_failures,
        failure_window_seconds=settings.signin_window_seconds,
    )


def create_app(settings: Settings, *, platform: Platform | None = None) -> FastAPI:
    """Build the application: the platform (given, in tests, or opened from the settings),
    the routes, and one rendering of every error."""
    if platform is None:
        platform = open_platform(
            settings.database,
            plugin_modules=settings.plugins,
            auth_settings=auth_settings(settings),
        )
    store = platform.store
    store.audit.configure(
        AuditLimits(
            rows=settings.audit_rows,
            days=settings.audit_days,
            per_minute=settings.audit_per_minute,
        )
    )
    if settings.traces and not tracing.enabled():
        tracing.start()
    # FastAPI's own telemetry stays off: its spans and logs would record request values
    # (validation failures quote their input); fieldsync's request span names no values
    app = FastAPI(
        title="fieldsync",
        version=__version__,
        default_response_class=JSON,
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.add_middleware(ClientAddress)
    app.state.settings = settings
    app.state.platform = platform
    app.include_router(auth_routes.router)
    app.include_router(admin_routes.router)
    app.state.sync = SyncService(platform.records)
    app.include_router(sync_routes.router)
    app.state.live = live_routes.hub(store, settings)
    app.include_router(live_routes.router)
    app.state.files = Files(
        platform.records,
        open_blobs(
            settings.files_url, data_dir=settings.data_dir, endpoint=settings.files_s3_endpoint
        ),
        FileLimits(
            max_bytes=settings.max_file_mb * 2**20,
            max_chunk_bytes=settings.max_chunk_mb * 2**20,
            orphan_seconds=settings.files_orphan_hours * 3600,
            chunk_bytes=max(1, settings.files_chunk_kb) * 1024,
        ),
    )
    app.include_router(files_routes.router)
    app.state.throttle = Throttle(Limits.from_settings(settings), store)
    app.include_router(webapi_router)
    app.include_router(portal_router)
    app.include_router(webapp_router)
    app.state.metrics = metrics = Metrics()
    metrics.watch(live=lambda: app.state.live.connected, store=store)

    @app.get("/metrics", include_in_schema=False)
    def scrape(ctx: Principal) -> Response:
        """Prometheus text format, for administrators (or serve it on its own address:
        ``FIELDSYNC_METRICS_BIND``)."""
        if not ctx.administrator:
            raise Forbidden("metrics are for administrators")
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    app.add_middleware(HeaderCase)

    def is_file(method: str, path: str) -> bool:
        try:
            return webapi_files.claims(store.schema, method, path) is not None
        except FieldsyncError:
            return False

    def refuse(scope: MutableMapping[str, Any], exc: FieldsyncError) -> Response:
        path = scope["path"]
        if path == "/portal" or path.startswith("/portal/"):
            return portal_refusal(Request(scope), exc.status, exc.message)
        return error_response(exc.status, exc.code, exc.message)

    app.add_middleware(
        BodyLimit, limits=BodyLimits.from_settings(settings), is_file=is_file, render=refuse
    )
    # outermost: every answer is counted, refusals of oversized bodies included
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    if tracing.enabled():
        # around everything: the request's span is the parent of all it does
        app.add_middleware(TracingMiddleware)
        tracing.instrument(store.engine)

    @app.exception_handler(FieldsyncError)
    async def on_fieldsync_error(_: Request, exc: FieldsyncError) -> JSON:
        headers = {}
        if isinstance(exc, (TooManyRequests, ServiceUnavailable)):
            headers["Retry-After"] = str(exc.retry_after)
        if isinstance(exc, TooManyRequests):
            headers.update(exc.headers)
        if isinstance(exc, Unauthorized):
            headers["WWW-Authenticate"] = 'Bearer realm="fieldsync"'

        if isinstance(exc, ServiceUnavailable):
            log.warning("service unavailable: %s", exc.message)
        elif exc.status >= 500:
            log.error("server error: %s", exc.message)
        return error_response(exc.status, exc.code, exc.message, **headers)

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(_: Request, exc: StarletteHTTPException) -> JSON:
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        if exc.status_code == 404 and message == "Not Found":
            message = "no such resource"
        return error_response(
            exc.status_code,
            HTTP_CODES.get(exc.status_code, "0x80040203"),
            message,
            **(exc.headers or {}),
        )

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(_: Request, exc: RequestValidationError) -> JSON:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', 'invalid')}"
            for e in exc.errors()
        )
        return error_response(400, "0x80040203", f"invalid request: {problems}")

    @app.exception_handler(sa.exc.OperationalError)
    @app.exception_handler(sa.exc.InterfaceError)
    async def on_database_down(_: Request, exc: sa.exc.DBAPIError) -> JSON:
        # the database went away (a restart, a failover): nothing was committed, and the
        # pool reconnects on the next request; tell the client to come back
        if exc.connection_invalidated or _connection_lost(exc):
            log.warning("the database is unavailable: %s", exc.orig)
            down = ServiceUnavailable("the database is unavailable; try again")
            return error_response(
                down.status, down.code, down.message, **{"Retry-After": str(down.retry_after)}
            )
        log.exception("unexpected database error")
        return error_response(500, "0x80040216", "an unexpected error occurred")

    @app.exception_handler(Exception)
    async def on_unexpected(_: Request, exc: Exception) -> JSON:
        log.exception("unexpected error")
        return error_response(500, "0x80040216", "an unexpected error occurred")

    @app.get("/health")
    def health() -> JSON:
        try:
            with store.read() as conn:
                conn.execute(sa.text("SELECT 1"))
        except sa.exc.SQLAlchemyError:
            log.exception("health check failed")
            return error_response(503, "0x80040216", "the database cannot be reached")
        return JSON({"status": "ok", "version": __version__, "database": store.dialect})

    return app
