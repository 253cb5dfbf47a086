"""Prometheus metrics: ``GET /metrics`` for administrators, or on a bind address of its own.

Every server process keeps its own registry (``Metrics``), so each process is one scrape
target, as Prometheus expects; nothing here is shared state between processes.

What is measured, and where:

- requests by route template, method and status, with a latency histogram: an ASGI
  middleware around the whole application (``MetricsMiddleware``); the live stream's route is
  counted but kept out of the latency histogram (a stream lasts minutes by design);
- sync downloads and uploads (rows, bytes, duration), rejections by code and the change-log
  lag of each device that downloads: the sync endpoints report them (``fieldsync.server.sync``);
- live connections and the database pool's use: read when scraped.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    start_http_server,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fieldsync.errors import ConfigurationError

if TYPE_CHECKING:
    from fieldsync.store.store import Store

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
LAG_BUCKETS = (0, 1, 10, 100, 1_000, 10_000, 100_000, 1_000_000, 10_000_000)
STREAMING_ROUTES = frozenset({"/sync/v1/live"})


class Metrics:
    """The metrics of one server process."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "fieldsync_http_requests",
            "HTTP requests answered, by route template, method and status",
            ("route", "method", "status"),
            registry=r,
        )
        self.latency = Histogram(
            "fieldsync_http_request_duration_seconds",
            "time to answer an HTTP request (live streams excluded), by route template",
            ("route", "method"),
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.sync_rows = Counter(
            "fieldsync_sync_rows",
            "rows moved by sync: downloaded upserts and removes, uploaded changes",
            ("direction",),
            registry=r,
        )
        self.sync_bytes = Counter(
            "fieldsync_sync_bytes",
            "bytes of sync answers sent (download) and of sync requests read (upload)",
            ("direction",),
            registry=r,
        )
        self.sync_duration = Histogram(
            "fieldsync_sync_duration_seconds",
            "time to answer one download page or one upload batch",
            ("direction",),
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.rejections = Counter(
            "fieldsync_sync_rejections",
            "uploaded changes the server rejected (each became a sync error), by error code",
            ("code",),
            registry=r,
        )
        self.lag = Histogram(
            "fieldsync_sync_device_lag_versions",
            "at each download, the newest change-log version minus the version the device "
            "had acknowledged (how far behind devices are)",
            buckets=LAG_BUCKETS,
            registry=r,
        )
        self.live = Gauge("fieldsync_live_connections", "open live sync streams (SSE)", registry=r)
        self.pool = Gauge(
            "fieldsync_db_pool_connections",
            "database connections of this process's pool, by state",
            ("state",),
            registry=r,
        )

    def watch(self, *, live: Callable[[], int], store: Store) -> None:
        """Read the live streams and the pool when scraped (nothing to keep up to date)."""
        self.live.set_function(lambda: float(live()))
        pool: Any = store.engine.pool
        for state, read in (
            ("in_use", "checkedout"),
            ("idle", "checkedin"),
            ("size", "size"),
        ):
            method = getattr(pool, read, None)
            if callable(method):
                self.pool.labels(state).set_function(_reader(method))

    def download(self, answer: Mapping[str, Any], size: int, seconds: float) -> None:
        rows = sum(len(p["upserts"]) + len(p["removes"]) for p in answer["pages"])
        self.sync_rows.labels("download").inc(rows)
        self.sync_bytes.labels("download").inc(size)
        self.sync_duration.labels("download").observe(seconds)

    def upload(self, answer: Mapping[str, Any], size: int, seconds: float) -> None:
        results = answer["results"]
        self.sync_rows.labels("upload").inc(len(results))
        self.sync_bytes.labels("upload").inc(size)
        self.sync_duration.labels("upload").observe(seconds)
        for result in results:
            error = result.get("error") if isinstance(result, Mapping) else None
            if isinstance(error, Mapping):
                self.rejections.labels(str(error.get("code", "unknown"))).inc()

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def serve_metrics(metrics: Metrics, bind: str) -> str:
    """Serve ``metrics`` on ``host:port`` (no token: bind it to a private address)."""
    host, sep, port = bind.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigurationError(f"FIELDSYNC_METRICS_BIND is host:port, not {bind!r}")
    start_http_server(int(port), addr=host or "127.0.0.1", registry=metrics.registry)
    return f"{host or '127.0.0.1'}:{port}"


def _reader(method: Callable[[], int]) -> Callable[[], float]:
    return lambda: float(method())


class MetricsMiddleware:
    """Counts every request by the template of the route that answered it (a bounded set of
    labels: a path with ids in it never becomes a label)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = scope.get("route")
            template = str(getattr(route, "path", "unmatched"))
            method = str(scope.get("method", ""))
            self.metrics.requests.labels(template, method, str(status)).inc()
            if template not in STREAMING_ROUTES:
                self.metrics.latency.labels(template, method).observe(time.perf_counter() - started)
