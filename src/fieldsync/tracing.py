"""OpenTelemetry traces, when asked for: ``fieldsync serve --traces`` or ``FIELDSYNC_TRACES=1``
(with the ``otel`` extra installed: ``pip install 'fieldsync[otel]'``).

One request's trace::

    POST /sync/v1/download          server span: route template, status, the caller's user id
      sync.download                 the app, each table's name and row count
        scope.compile               a published profile becomes a scope plan (cache misses)
        query.compile               a query (a scope page) becomes one SELECT
        store.transaction           read or write, commit or rollback
          SELECT                    each SQL statement: its kind and the database, nothing else

No span carries a parameter value, a statement's text, a query string or a body: a trace never
holds row data. A ``traceparent`` header on the request is continued.

Off (the default) a span costs one test of a global: :func:`span` answers a shared object that
does nothing, the SQL and transaction hooks are not installed, and this module imports nothing
of OpenTelemetry. On, spans go to the OTLP/HTTP exporter, configured by the standard ``OTEL_*``
variables (``OTEL_EXPORTER_OTLP_ENDPOINT``, ``OTEL_SERVICE_NAME``, ``OTEL_TRACES_SAMPLER``, …),
or to the exporter given to :func:`start`. The provider is fieldsync's own, not the process's
global one.
"""

from __future__ import annotations

import functools
import importlib
import os
import weakref
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from typing import Any, ParamSpec, TypeVar

from fieldsync import __version__
from fieldsync.errors import ConfigurationError

P = ParamSpec("P")
R = TypeVar("R")

# the first word of a statement names its kind; anything else is reported as OTHER
STATEMENT_KINDS = frozenset(
    {
        "SELECT",
        "INSERT",
        "UPDATE",
        "DELETE",
        "WITH",
        "BEGIN",
        "COMMIT",
        "ROLLBACK",
        "SAVEPOINT",
        "RELEASE",
        "CREATE",
        "ALTER",
        "DROP",
        "PRAGMA",
        "SET",
        "LISTEN",
        "NOTIFY",
        "ANALYZE",
        "EXPLAIN",
        "VACUUM",
        "COPY",
        "LOCK",
        "TRUNCATE",
    }
)
_SPANS = "fieldsync.spans"  # conn.info: the open statement spans of a connection
_TRANSACTION = "fieldsync.transaction"  # conn.info: the open transaction span


class _Off:
    """The span of tracing turned off: takes every call and does nothing."""

    __slots__ = ()

    def __enter__(self) -> _Off:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def set_attribute(self, key: str, value: Any) -> None:
        return None


OFF = _Off()
_tracer: Any = None
_provider: Any = None
_instrumented: weakref.WeakSet[Any] = weakref.WeakSet()  # engines hooked (once each)


def enabled() -> bool:
    return _tracer is not None


def span(name: str, attributes: Mapping[str, Any] | None = None) -> AbstractContextManager[Any]:
    """A child of the current span for the ``with`` block (nothing when tracing is off)."""
    if _tracer is None:
        return OFF
    return _tracer.start_as_current_span(name, attributes=attributes)  # type: ignore[no-any-return]


def traced(name: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate a function to run in a span of its own when tracing is on."""

    def wrap(fn: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(fn)
        def run(*args: P.args, **kwargs: P.kwargs) -> R:
            if _tracer is None:
                return fn(*args, **kwargs)
            with _tracer.start_as_current_span(name):
                return fn(*args, **kwargs)

        return run

    return wrap


def annotate(attributes: Mapping[str, Any]) -> None:
    """Add ``attributes`` to the current span (in an endpoint: the request's)."""
    if _tracer is None:
        return
    from opentelemetry import trace

    trace.get_current_span().set_attributes(attributes)


def start(*, exporter: Any = None) -> None:
    """Turn tracing on for this process: spans to ``exporter`` as they end (tests), or, by
    default, in batches to the OTLP/HTTP exporter the ``OTEL_*`` variables configure."""
    global _tracer, _provider
    # the SDK and the exporter come with the otel extra (the API alone comes with FastAPI)
    try:
        sdk = importlib.import_module("opentelemetry.sdk.trace")
        export = importlib.import_module("opentelemetry.sdk.trace.export")
        resources = importlib.import_module("opentelemetry.sdk.resources")
    except ImportError:
        raise ConfigurationError(
            "traces need the OpenTelemetry SDK: install fieldsync with its 'otel' extra"
        ) from None
    if exporter is None:
        try:
            otlp = importlib.import_module("opentelemetry.exporter.otlp.proto.http.trace_exporter")
        except ImportError:
            raise ConfigurationError(
                "traces need the OTLP/HTTP exporter: install fieldsync with its 'otel' extra"
            ) from None
        processor: Any = export.BatchSpanProcessor(otlp.OTLPSpanExporter())
    else:
        processor = export.SimpleSpanProcessor(exporter)
    # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win; "fieldsync" when neither names it
    named = os.environ.get("OTEL_SERVICE_NAME") or "service.name=" in os.environ.get(
        "OTEL_RESOURCE_ATTRIBUTES", ""
    )
    resource = resources.Resource.create({} if named else {"service.name": "fieldsync"})
    stop()
    provider = sdk.TracerProvider(resource=resource)  # the sampler: OTEL_TRACES_SAMPLER (_ARG)
    provider.add_span_processor(processor)
    _provider = provider
    _tracer = provider.get_tracer("fieldsync", __version__)


def stop() -> None:
    """Turn tracing off, sending what is buffered first."""
    global _tracer, _provider
    provider, _tracer, _provider = _provider, None, None
    if provider is not None:
        provider.shutdown()


# -- the server's request span ---------------------------------------------------------------


class RequestSpan:
    """The server span of one HTTP request; told the route and status once answered."""

    def __init__(self, span: Any) -> None:
        self.span = span

    def answered(self, method: str, route: str | None, status: int) -> None:
        from opentelemetry.trace import Status, StatusCode

        s = self.span
        s.set_attribute("http.response.status_code", status)
        if route is not None:
            s.set_attribute("http.route", route)
            s.update_name(f"{method} {route}")
        if status >= 500:
            s.set_status(Status(StatusCode.ERROR))


@contextmanager
def request_span(method: str, headers: Mapping[str, str]) -> Iterator[RequestSpan]:
    """A server span, current for the request, continuing the trace of its ``traceparent``
    (``headers`` holds the propagation headers only; the propagators: ``OTEL_PROPAGATORS``)."""
    from opentelemetry import propagate
    from opentelemetry.trace import SpanKind

    parent = propagate.extract(headers)
    with _tracer.start_as_current_span(
        method,
        context=parent,
        kind=SpanKind.SERVER,
        attributes={"http.request.method": method},
    ) as s:
        yield RequestSpan(s)


# -- SQL statements and transactions ---------------------------------------------------------


def instrument(engine: Any) -> None:
    """A span per transaction and per SQL statement on ``engine`` (a SQLAlchemy engine), when
    tracing is on; nothing is hooked when it is off."""
    if _tracer is None or engine in _instrumented:
        return
    _instrumented.add(engine)
    from sqlalchemy import event

    system = str(engine.dialect.name)

    def begin(conn: Any) -> None:
        _begin(system, conn)

    def commit(conn: Any) -> None:
        _end("commit", conn)

    def rollback(conn: Any) -> None:
        _end("rollback", conn)

    def before(
        conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool
    ) -> None:
        _before(system, conn, statement, parameters, executemany)

    def after(
        conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool
    ) -> None:
        spans = conn.info.get(_SPANS)
        if spans:
            spans.pop().end()

    event.listen(engine, "begin", begin)
    event.listen(engine, "commit", commit)
    event.listen(engine, "rollback", rollback)
    event.listen(engine, "before_cursor_execute", before)
    event.listen(engine, "after_cursor_execute", after)
    event.listen(engine, "handle_error", _failed)


def _begin(system: str, conn: Any) -> None:
    if _tracer is None:
        return
    # the store's write option (fieldsync.store.engine.WRITE_OPTION; this module imports no
    # layer of fieldsync, so that every layer may import it)
    write = bool(conn.get_execution_options().get("fieldsync_write"))
    conn.info[_TRANSACTION] = _tracer.start_span(
        "store.transaction",
        attributes={
            "db.system.name": system,
            "fieldsync.transaction": "write" if write else "read",
        },
    )


def _end(outcome: str, conn: Any) -> None:
    s = conn.info.pop(_TRANSACTION, None)
    if s is not None:
        s.set_attribute("fieldsync.outcome", outcome)
        s.end()


def _before(system: str, conn: Any, statement: str, parameters: Any, executemany: bool) -> None:
    if _tracer is None:
        return
    from opentelemetry import trace
    from opentelemetry.trace import SpanKind

    words = statement.split(None, 1)
    kind = words[0].upper() if words else ""
    kind = kind if kind in STATEMENT_KINDS else "OTHER"
    attributes: dict[str, Any] = {"db.system.name": system, "db.operation.name": kind}
    if executemany:
        attributes["db.operation.batch.size"] = len(parameters)
    transaction = conn.info.get(_TRANSACTION)
    parent = trace.set_span_in_context(transaction) if transaction is not None else None
    s = _tracer.start_span(kind, context=parent, kind=SpanKind.CLIENT, attributes=attributes)
    conn.info.setdefault(_SPANS, []).append(s)


def _failed(context: Any) -> None:
    conn = context.connection
    spans = conn.info.get(_SPANS) if conn is not None else None
    if spans:
        from opentelemetry.trace import Status, StatusCode

        s = spans.pop()
        # the exception's type only: its message may quote the statement's values
        s.set_status(Status(StatusCode.ERROR, type(context.original_exception).__name__))
        s.end()
