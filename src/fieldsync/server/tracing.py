"""The server span of every HTTP request, when traces are on (:mod:`fieldsync.tracing`).

Named by the route template that answered (``POST /sync/v1/download``, never a path with ids
in it), with the status and, once authenticated, the caller's user id; a ``traceparent`` on
the request is continued. Neither the query string nor any header but the trace context's is
recorded.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fieldsync import tracing

PROPAGATION = frozenset({b"traceparent", b"tracestate", b"baggage"})


class TracingMiddleware:
    """Outermost: the request span encloses everything the request does."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not tracing.enabled():
            await self.app(scope, receive, send)
            return
        method = str(scope.get("method", ""))
        headers = {
            key.decode("latin-1"): value.decode("latin-1")
            for key, value in scope.get("headers", ())
            if key in PROPAGATION
        }
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        with tracing.request_span(method, headers) as span:
            try:
                await self.app(scope, receive, sending)
            finally:
                route = getattr(scope.get("route"), "path", None)
                span.answered(method, str(route) if route is not None else None, status)


def downloaded(span: Any, app: Any, answer: Mapping[str, Any]) -> None:
    """A download span's attributes (once answered: the app's name was checked): the app,
    each table's name and how many rows it moved."""
    if not tracing.enabled():
        return
    pages = answer["pages"]
    span.set_attribute("fieldsync.app", str(app))
    span.set_attribute("fieldsync.tables", [str(p["table"]) for p in pages])
    span.set_attribute("fieldsync.rows", [len(p["upserts"]) for p in pages])
    span.set_attribute("fieldsync.removes", [len(p["removes"]) for p in pages])
    span.set_attribute("fieldsync.rows.total", sum(len(p["upserts"]) for p in pages))


def uploaded(span: Any, app: Any, changes: Any, answer: Mapping[str, Any]) -> None:
    """An upload span's attributes (once answered): the app, the changes per table and how
    many were rejected."""
    if not tracing.enabled():
        return
    span.set_attribute("fieldsync.app", str(app))
    per_table: Counter[str] = Counter(
        str(c.get("table")) for c in changes if isinstance(c, Mapping)
    )
    results = answer["results"]
    span.set_attribute("fieldsync.tables", list(per_table))
    span.set_attribute("fieldsync.rows", list(per_table.values()))
    span.set_attribute("fieldsync.rows.total", len(results))
    span.set_attribute(
        "fieldsync.rejected",
        sum(1 for r in results if isinstance(r, Mapping) and r.get("error") is not None),
    )
