"""Request bodies, read with a size limit and parsed by one parser.

**Sizes.** :class:`BodyLimit` is an ASGI middleware around the whole application: it decides
each request's limit from its route (:meth:`BodyLimits.route`: a Web API or sync body, a
``$batch``, a file chunk, a whole file, a portal form or a sign-in body; the sizes are
settings, ``FIELDSYNC_MAX_*``), answers 413 at once to a ``Content-Length`` past it, before a
byte is read, and stops a body sent without one (chunked) as soon as it passes the limit:
the endpoint's read fails with a 413, rendered as the endpoint renders errors (JSON for the
APIs, an HTML page for the portal). A 413 closes the connection, so the rest of the body is
not drained. No endpoint can read past its limit, whichever way it reads.

**Parsing.** :func:`read_json` parses JSON bodies with the depth limit of
:mod:`fieldsync.limits`; :func:`read_fields` reads the small bodies of the sign-in endpoints,
form-encoded or JSON, into :class:`Fields`, which validate a value the same way whichever
encoding carried it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from fastapi import Request
from starlette.responses import Response

from fieldsync.config import Settings
from fieldsync.errors import BadRequest, FieldsyncError, PayloadTooLarge
from fieldsync.limits import MAX_JSON_DEPTH, parse_json

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MiB = 2**20
API_PREFIX = "/api/data/v9.2"


@dataclass(frozen=True)
class BodyLimits:
    """The largest body of each kind of request, in bytes."""

    request: int = 16 * MiB  # Web API, sync, administration: JSON
    batch: int = 16 * MiB  # a Web API $batch
    chunk: int = 16 * MiB  # one chunk of a chunked file upload
    file: int = 128 * MiB  # a whole file in one Web API PATCH (streamed, never held whole)
    form: int = 256 * 1024  # a portal form, a sign-in body

    @classmethod
    def from_settings(cls, settings: Settings) -> BodyLimits:
        return cls(
            request=settings.max_request_mb * MiB,
            batch=settings.max_batch_mb * MiB,
            chunk=settings.max_chunk_mb * MiB,
            file=settings.max_file_mb * MiB,
            form=settings.max_form_kb * 1024,
        )

    def route(
        self, method: str, path: str, query: str, is_file: Callable[[str, str], bool]
    ) -> tuple[int, str]:
        """The limit of a request and the setting that declares it. ``is_file(method,
        path)`` says whether a Web API path is one of a file column's endpoints."""
        if path.startswith(("/portal/", "/auth/")) or path == "/portal":
            return self.form, "FIELDSYNC_MAX_FORM_KB"
        if path.startswith(API_PREFIX + "/"):
            rest = path[len(API_PREFIX) :]
            if rest.rstrip("/") == "/$batch":
                return self.batch, "FIELDSYNC_MAX_BATCH_MB"
            if method == "PATCH" and is_file(method, rest):
                if "sessiontoken=" in query:
                    return self.chunk, "FIELDSYNC_MAX_CHUNK_MB"
                return self.file, "FIELDSYNC_MAX_FILE_MB"
        if method == "PUT" and path.startswith("/sync/v1/files/uploads/"):
            return self.chunk, "FIELDSYNC_MAX_CHUNK_MB"
        return self.request, "FIELDSYNC_MAX_REQUEST_MB"


def too_large(limit: int, setting: str) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"the request body is larger than the {size_text(limit)} this endpoint accepts ({setting})"
    )


class BodyLimit:
    """The ASGI middleware that holds every request body to its route's limit."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        limits: BodyLimits,
        is_file: Callable[[str, str], bool],
        render: Callable[[Scope, FieldsyncError], Response],
    ) -> None:
        self.app = app
        self.limits = limits
        self.is_file = is_file
        self.render = render

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, setting = self.limits.route(
            scope["method"],
            scope["path"],
            scope.get("query_string", b"").decode("latin-1"),
            self.is_file,
        )
        declared = next(
            (v for k, v in scope.get("headers", ()) if k.lower() == b"content-length"), None
        )
        if declared is not None and declared.strip().isdigit() and int(declared) > limit:
            response = self.render(scope, too_large(limit, setting))
            response.headers["Connection"] = "close"
            await response(scope, receive, send)
            return
        received = 0
        tripped = False

        async def limited() -> Message:
            nonlocal received, tripped
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    tripped = True
                    raise too_large(limit, setting)
            return message

        async def closing(message: Message) -> None:
            if tripped and message["type"] == "http.response.start":
                headers = [
                    (k, v) for k, v in message.get("headers", ()) if k.lower() != b"connection"
                ]
                message = {**message, "headers": [*headers, (b"connection", b"close")]}
            await send(message)

        await self.app(scope, limited, closing)


async def read_body(request: Request, limit: int | None = None, what: str = "a request") -> bytes:
    """The whole body. The middleware holds it to its route's limit; ``limit`` is a tighter
    one of the caller's (a file column's maximum size)."""
    if limit is None:
        return await request.body()
    too_big = PayloadTooLarge(f"{what} carries at most {size_text(limit)}")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise too_big
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_big
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json(
    request: Request, what: str = "the request body", *, max_depth: int | None = MAX_JSON_DEPTH
) -> Any:
    """The body as JSON, no deeper than ``max_depth`` (see :func:`fieldsync.limits.parse_json`)."""
    return parse_json(await read_body(request), what, max_depth=max_depth)


async def read_json_object(
    request: Request, what: str = "the request body", *, max_depth: int | None = MAX_JSON_DEPTH
) -> dict[str, Any]:
    """The body as a JSON object (an empty body is ``{}``)."""
    body = await read_body(request)
    data = parse_json(body, what, max_depth=max_depth) if body.strip() else {}
    if not isinstance(data, dict):
        raise BadRequest(f"{what} must be a JSON object")
    return data


class Fields:
    """The named values of a small body, form-encoded or JSON, checked one way."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        self.values = values

    def text(self, name: str, default: str = "") -> str:
        value = self.values.get(name)
        if value is None:
            return default
        if not isinstance(value, str):
            raise BadRequest(f"'{name}' must be a string")
        return value

    def integer(self, name: str, low: int, high: int) -> int | None:
        """A whole number from ``low`` to ``high``; None when not given."""
        value = self.values.get(name)
        if value is None or value == "":
            return None
        wrong = BadRequest(f"'{name}' must be a whole number from {low} to {high}")
        if isinstance(value, str):
            text = value.strip()
            if not text.lstrip("-").isdigit() or len(text) > 12:
                raise wrong
            value = int(text)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise wrong
        return value


async def read_fields(request: Request) -> Fields:
    """A sign-in endpoint's body: JSON (an object) when it says so, otherwise form data."""
    body = await read_body(request)
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "application/json" or kind.endswith("+json"):
        data = parse_json(body, "the request body") if body.strip() else {}
        if not isinstance(data, dict):
            raise BadRequest("the request body must be a JSON object")
        return Fields(data)
    try:
        text = body.decode("utf-8")
        parsed = parse_qs(text, keep_blank_values=True)
    except (UnicodeDecodeError, ValueError):
        raise BadRequest("the request body is neither form data nor JSON") from None
    return Fields({k: v[0] for k, v in parsed.items()})


def size_text(limit: int) -> str:
    if limit % MiB == 0:
        return f"{limit // MiB} MB"
    if limit % 1024 == 0:
        return f"{limit // 1024} KB"
    return f"{limit} bytes"
