"""OpenTelemetry traces: a sync is one trace from the request to each SQL statement, a
``traceparent`` is continued, no span holds row data, and tracing off costs nothing."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from fieldsync import tracing
from fieldsync.config import Settings
from fieldsync.errors import ConfigurationError
from fieldsync.platform import Platform
from fieldsync.server.tracing import TracingMiddleware
from sync_world import AsgiBridge, World
from test_sync import seed

SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    tracing.start(exporter=exporter)
    try:
        yield exporter
    finally:
        tracing.stop()


def _ancestors(span: ReadableSpan, by_id: dict[int, ReadableSpan]) -> list[ReadableSpan]:
    out = []
    while span.parent is not None and span.parent.span_id in by_id:
        span = by_id[span.parent.span_id]
        out.append(span)
    return out


def _children(parent: ReadableSpan, spans: tuple[ReadableSpan, ...]) -> list[ReadableSpan]:
    return [
        s
        for s in spans
        if s.parent is not None
        and parent.context is not None
        and s.parent.span_id == parent.context.span_id
    ]


def test_a_sync_is_one_trace_from_request_to_sql(
    spans: InMemorySpanExporter, platform: Platform, tmp_path: Path
) -> None:
    world = World(platform, tmp_path)
    ids = seed(world)
    device = world.device("tech1")
    first = device.sync()
    first_spans = spans.get_finished_spans()
    device.update("workorder", str(ids["wo1"]), {"name": "Pump, serviced"})
    assert device.sync().uploaded == 1
    done = spans.get_finished_spans()
    by_id = {s.context.span_id: s for s in done if s.context is not None}

    downloads = [s for s in done if s.name == "POST /sync/v1/download"]
    assert downloads
    server = downloads[0]
    attrs = dict(server.attributes or {})
    assert server.kind is SpanKind.SERVER
    assert attrs["http.route"] == "/sync/v1/download"
    assert attrs["http.request.method"] == "POST"
    assert attrs["http.response.status_code"] == 200
    assert attrs["enduser.id"] == str(world.users["tech1"])

    # request -> sync.download (tables and rows) -> store transaction -> SQL statements
    (download,) = [s for s in _children(server, done) if s.name == "sync.download"]
    moved = dict(download.attributes or {})
    assert moved["fieldsync.app"] == "fieldservice"
    tables = list(moved["fieldsync.tables"])  # type: ignore[arg-type]
    rows = list(moved["fieldsync.rows"])  # type: ignore[arg-type]
    assert len(tables) == len(rows) > 0
    assert moved["fieldsync.rows.total"] == sum(rows)
    every = [s for s in first_spans if s.name == "sync.download"]
    total = sum(int(s.attributes["fieldsync.rows.total"]) for s in every if s.attributes)
    assert total == sum(first.downloaded.values()) > 0
    transactions = [s for s in _children(download, done) if s.name == "store.transaction"]
    assert transactions
    assert {dict(t.attributes or {})["fieldsync.transaction"] for t in transactions} == {"read"}
    statements = [s for t in transactions for s in _children(t, done)]
    assert any(s.name == "SELECT" and s.kind is SpanKind.CLIENT for s in statements)
    assert all(
        dict(s.attributes or {})["db.system.name"] == world.platform.store.dialect
        for s in statements
    )
    # the scope's SELECT is compiled in the download; the profile's plan once per process
    compiled = [s for s in done if s.name == "query.compile"]
    assert any(download in _ancestors(s, by_id) for s in compiled)
    (plan,) = [s for s in done if s.name == "scope.compile"]
    assert any(a.kind is SpanKind.SERVER for a in _ancestors(plan, by_id))
    # one trace per request
    assert {s.context.trace_id for s in _ancestors(statements[0], by_id)} == {
        server.context.trace_id
    }

    # the upload: request -> sync.upload -> a write transaction that commits an UPDATE
    (upload,) = [
        s
        for server_up in done
        if server_up.name == "POST /sync/v1/upload"
        for s in _children(server_up, done)
        if s.name == "sync.upload" and dict(s.attributes or {})["fieldsync.rows.total"] == 1
    ]
    up = dict(upload.attributes or {})
    assert up["fieldsync.tables"] == ("workorder",)
    assert up["fieldsync.rows.total"] == 1
    assert up["fieldsync.rejected"] == 0
    writes = [
        s
        for s in _children(upload, done)
        if s.name == "store.transaction"
        and dict(s.attributes or {})["fieldsync.transaction"] == "write"
    ]
    assert [dict(w.attributes or {})["fieldsync.outcome"] for w in writes] == ["commit"]
    assert "UPDATE" in {s.name for s in _children(writes[0], done)}

    # no span holds a value of a row, a statement's text or a parameter
    values = " ".join(str(v) for s in done for v in (s.attributes or {}).values())
    for secret in ("Contoso", "Fabrikam", "Pump", "Valve", "Ada", "serviced"):
        assert secret not in values
    keys = {k for s in done for k in (s.attributes or {})}
    assert not {k for k in keys if "statement" in k or "query.text" in k or "param" in k}


def test_an_incoming_traceparent_is_continued(
    spans: InMemorySpanExporter, platform: Platform, tmp_path: Path
) -> None:
    world = World(platform, tmp_path)
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    bridge = AsgiBridge(world.app)
    try:
        with httpx.Client(transport=bridge, base_url="http://testserver") as client:
            answer = client.get("/health", headers={"traceparent": f"00-{trace_id}-{parent_id}-01"})
            assert answer.status_code == 200
            missing = client.get("/no/such/page")
            assert missing.status_code == 404
    finally:
        bridge.close()
        bridge.loop.close()
    done = spans.get_finished_spans()
    (health,) = [s for s in done if s.name == "GET /health"]
    assert health.context is not None
    assert health.parent is not None
    assert health.context.trace_id == int(trace_id, 16)
    assert health.parent.span_id == int(parent_id, 16)
    assert health.parent.is_remote
    assert any(s.name == "SELECT" for s in done if s.context.trace_id == int(trace_id, 16))
    # a path no route answers: the method alone names it (no path with ids in a name)
    (unmatched,) = [
        s for s in done if dict(s.attributes or {}).get("http.response.status_code") == 404
    ]
    assert unmatched.name == "GET"
    assert unmatched.context.trace_id != int(trace_id, 16)


def test_tracing_off_hooks_nothing(platform: Platform, tmp_path: Path) -> None:
    assert not tracing.enabled()
    world = World(platform, tmp_path)
    assert not any(m.cls is TracingMiddleware for m in world.app.user_middleware)
    with tracing.span("anything") as span:
        assert span is tracing.OFF
        span.set_attribute("ignored", 1)
    seed(world)
    assert world.device("tech1").sync().downloaded


def _run(script: str, tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), str(tmp_path)],
        check=True,
        env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"},
        timeout=120,
    )


def test_tracing_off_imports_nothing_of_opentelemetry(tmp_path: Path) -> None:
    _run(
        """
        import sys
        import fieldsync.tracing, fieldsync.query.compile, fieldsync.sync.scope
        import fieldsync.store.store, fieldsync.records.service, fieldsync.sync.service
        found = sorted(m for m in sys.modules if m.startswith("opentelemetry"))
        assert not found, found

        # FastAPI brings the OpenTelemetry API; never the SDK, nor a span, unless asked
        from starlette.testclient import TestClient
        from fieldsync.config import Settings
        from fieldsync.server.app import create_app

        app = create_app(Settings(data_dir=sys.argv[1]))
        with TestClient(app) as client:
            assert client.get("/health").status_code == 200
        found = sorted(m for m in sys.modules if m.startswith("opentelemetry.sdk"))
        assert not found, found
        """,
        tmp_path,
    )


def test_tracing_off_makes_no_span_even_with_a_global_provider(tmp_path: Path) -> None:
    # FastAPI's own telemetry would trace into a process-wide provider: it stays off
    _run(
        """
        import sys
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
            InMemorySpanExporter,
        )
        from starlette.testclient import TestClient
        from fieldsync.config import Settings
        from fieldsync.server.app import create_app

        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        app = create_app(Settings(data_dir=sys.argv[1]))
        with TestClient(app) as client:
            assert client.get("/health").status_code == 200
            assert client.post("/auth/token", data={}).status_code == 400
        assert exporter.get_finished_spans() == (), exporter.get_finished_spans()
        """,
        tmp_path,
    )


def test_traces_setting_and_a_missing_sdk(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings.from_env({"FIELDSYNC_TRACES": "yes"}).traces is True
    assert Settings.from_env({"FIELDSYNC_TRACES": "0"}).traces is False
    assert Settings.from_env({}).traces is False
    with pytest.raises(ConfigurationError, match="FIELDSYNC_TRACES must be"):
        Settings.from_env({"FIELDSYNC_TRACES": "maybe"})

    real = tracing.importlib.import_module

    def without_sdk(name: str, *args: Any) -> Any:
        if name.startswith("opentelemetry.sdk"):
            raise ImportError(name)
        return real(name, *args)

    monkeypatch.setattr(tracing.importlib, "import_module", without_sdk)
    with pytest.raises(ConfigurationError, match="'otel' extra"):
        tracing.start()
    assert not tracing.enabled()
