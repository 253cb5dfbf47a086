"""The HTTP server: ``create_app(settings)`` assembles routes, middleware and error handling.

Every error leaves as ``{"error": {"code", "message"}}`` with a 4xx status; an unexpected
exception is logged and answered with a 500 in the same shape.
"""

from __future__ import annotations

import logging

import sqlalchemy as sa
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from fieldsync import __version__
from fieldsync.config import Settings
from fieldsync.errors import FieldsyncError, TooManyRequests, Unauthorized
from fieldsync.files.blobs import open_blobs
from fieldsync.files.service import FileLimits, Files
from fieldsync.identity.auth import AuthSettings
from fieldsync.platform import Platform, open_platform
from fieldsync.portal.router import router as portal_router
from fieldsync.server import admin as admin_routes
from fieldsync.server import auth as auth_routes
from fieldsync.server import files as files_routes
from fieldsync.server import live as live_routes
from fieldsync.server import sync as sync_routes
from fieldsync.server.responses import JSON
from fieldsync.sync.service import SyncService
from fieldsync.webapi.router import router as webapi_router

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


def auth_settings(settings: Settings) -> AuthSettings:
    return AuthSettings(
        secret_key=settings.secret_key,
        access_token_seconds=settings.access_token_seconds,
        refresh_token_days=settings.refresh_token_days,
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
    app = FastAPI(title="fieldsync", version=__version__, default_response_class=JSON)
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
            orphan_seconds=settings.files_orphan_hours * 3600,
            chunk_bytes=max(1, settings.files_chunk_kb) * 1024,
        ),
    )
    app.include_router(files_routes.router)
    app.include_router(webapi_router)
    app.include_router(portal_router)

    @app.exception_handler(FieldsyncError)
    async def on_fieldsync_error(_: Request, exc: FieldsyncError) -> JSON:
        headers = {}
        if isinstance(exc, TooManyRequests):
            headers["Retry-After"] = str(exc.retry_after)
        if isinstance(exc, Unauthorized):
            headers["WWW-Authenticate"] = 'Bearer realm="fieldsync"'

        if exc.status >= 500:
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
            return error_response(
                503, "0x80040216", "the database is unavailable; try again", **{"Retry-After": "1"}
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
