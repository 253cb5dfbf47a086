"""``$batch``: a multipart/mixed body of requests and change sets.

Each request outside a change set runs on its own; a change set runs in one transaction and
is all or nothing (its first error rolls it back and is its only response). ``$<n>`` names
the row an earlier request of the same change set created (``Content-ID: <n>``), as a URL and
in ``@odata.bind`` values. Processing stops at the first failure unless the request says
``Prefer: odata.continue-on-error``. Inner request lines are taken as the client sends them:
the method ends at the first space, the HTTP version starts at the last, and the URL in
between may be absolute, rooted (``/api/data/v9.2/…``), relative, or start with ``$<n>``.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus

import sqlalchemy as sa

from fieldsync.errors import BadRequest, FieldsyncError, ServiceUnavailable, TooManyRequests
from fieldsync.webapi.message import Call, ODataRequest, ODataResponse
from fieldsync.webapi.protocol import API_PREFIX

MAX_REQUESTS = 1000
Handler = Callable[[Call, ODataRequest], ODataResponse]
_BOUNDARY = re.compile(r'boundary="?([^";,\s]+)"?', re.IGNORECASE)


@dataclass
class Part:
    headers: dict[str, str]
    method: str = ""
    url: str = ""
    inner_headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    changeset: list[Part] | None = None

    @property
    def content_id(self) -> str | None:
        return self.headers.get("content-id")


def boundary_of(content_type: str) -> str:
    m = _BOUNDARY.search(content_type)
    if not content_type.lower().startswith("multipart/mixed") or m is None:
        raise BadRequest("a $batch body must be multipart/mixed with a boundary")
    return m.group(1)


def _headers(block: bytes) -> dict[str, str]:
    out = {}
    for line in block.decode("utf-8", "replace").splitlines():
        name, sep, value = line.partition(":")
        if sep:
            out[name.strip().lower()] = value.strip()
    return out


def _split_head(raw: bytes) -> tuple[bytes, bytes]:
    for sep in (b"\r\n\r\n", b"\n\n"):
        if sep in raw:
            head, body = raw.split(sep, 1)
            return head, body
    return raw, b""


def split_parts(body: bytes, boundary: str) -> list[bytes]:
    delimiter = b"--" + boundary.encode()
    chunks = body.split(delimiter)
    if len(chunks) < 2:
        raise BadRequest("the $batch body has no parts for its boundary")
    parts = []
    for chunk in chunks[1:]:
        if chunk.startswith(b"--"):
            break
        parts.append(chunk.removeprefix(b"\r\n").removeprefix(b"\n"))
    else:
        raise BadRequest("the $batch body does not end with its closing boundary")
    return parts


def parse_part(raw: bytes, *, nested: bool) -> Part:
    head, rest = _split_head(raw)
    headers = _headers(head)
    kind = headers.get("content-type", "").lower()
    if kind.startswith("multipart/mixed"):
        if nested:
            raise BadRequest("a change set cannot hold another change set")
        inner = [parse_part(p, nested=True) for p in split_parts(rest, boundary_of(kind))]
        return Part(headers, changeset=inner)
    if not kind.startswith("application/http"):
        raise BadRequest("each $batch part must be application/http or a change set")
    request_head, body = _split_head(rest)
    lines = request_head.decode("utf-8", "replace").splitlines()
    if not lines or not lines[0].strip():
        raise BadRequest("a $batch part has no request line")
    line = lines[0].strip()
    first, last = line.find(" "), line.rfind(" ")
    if first < 0 or last <= first or not line[last + 1 :].upper().startswith("HTTP/"):
        raise BadRequest(f"bad request line in $batch: {line[:80]!r}")
    for end in (b"\r\n", b"\n"):
        body = body.removesuffix(end)
    return Part(
        headers,
        method=line[:first].upper(),
        url=line[first + 1 : last].strip(),
        inner_headers=_headers("\n".join(lines[1:]).encode()),
        body=body,
    )


def parse(content_type: str, body: bytes, most: int = MAX_REQUESTS) -> list[Part]:
    parts = [parse_part(p, nested=False) for p in split_parts(body, boundary_of(content_type))]
    count = sum(len(p.changeset) if p.changeset is not None else 1 for p in parts)
    if count > most:
        raise BadRequest(f"a $batch holds at most {most} requests, not {count}")
    ids = [q.content_id for p in parts for q in (p.changeset or [p]) if q.content_id]
    if len(ids) != len(set(ids)):
        raise BadRequest("Content-ID values must be unique within a $batch")
    return parts


def _inner_request(outer: ODataRequest, part: Part, call: Call) -> ODataRequest:
    url = part.url
    m = re.match(r"\$(\d+)(.*)", url)
    if m:
        if m.group(1) not in call.content_ids:
            raise BadRequest(f"${m.group(1)} names no earlier request of this change set")
        url = call.content_ids[m.group(1)] + m.group(2)
    if API_PREFIX in url:
        url = url.split(API_PREFIX, 1)[1]
    path, _, query = url.partition("?")
    return ODataRequest(
        method=part.method,
        path=path.lstrip("/"),
        query=query,
        headers=part.inner_headers,
        body=part.body,
        root=outer.root,
    )


def _error(exc: FieldsyncError) -> ODataResponse:
    headers = {}
    if isinstance(exc, (ServiceUnavailable, TooManyRequests)):
        headers["Retry-After"] = str(exc.retry_after)
    return ODataResponse(exc.status, exc.to_json(), headers)


def run(
    call: Call, outer: ODataRequest, handle: Handler, most: int = MAX_REQUESTS
) -> tuple[bytes, str]:
    """Run the batch (at most ``most`` operations, change set members included); returns the
    multipart body and its content type."""
    parts = parse(outer.header("content-type") or "", outer.body, most)
    keep_going = "odata.continue-on-error" in outer.prefer
    boundary = f"batchresponse_{uuid.uuid4()}"
    out: list[str] = []
    for part in parts:
        if part.changeset is None:
            try:
                response = handle(call, _inner_request(outer, part, call))
            except FieldsyncError as exc:
                response = _error(exc)
            out.append(_http_part(boundary, response, part.content_id))
            failed = response.status >= 400
        else:
            text, failed = _changeset(call, outer, part.changeset, boundary, handle)
            out.append(text)
        if failed and not keep_going:
            break
    out.append(f"--{boundary}--\r\n")
    return "".join(out).encode(), f"multipart/mixed; boundary={boundary}"


def _changeset(
    call: Call, outer: ODataRequest, requests: list[Part], boundary: str, handle: Handler
) -> tuple[str, bool]:
    inner_boundary = f"changesetresponse_{uuid.uuid4()}"

    def work(conn: sa.Connection) -> list[tuple[Part, ODataResponse]]:
        # the whole change set is one unit of work: after a deadlock it runs again from
        # its first request, with fresh Content-ID references
        responses: list[tuple[Part, ODataResponse]] = []
        scoped = Call(call.platform, call.caller, conn, {})
        for part in requests:
            if part.method == "GET":
                raise BadRequest("a change set holds only POST, PATCH, PUT and DELETE requests")
            response = handle(scoped, _inner_request(outer, part, scoped))
            if response.status >= 400:  # pragma: no cover - handlers raise instead
                raise BadRequest("a request of the change set failed")
            responses.append((part, response))
            location = response.headers.get("OData-EntityId")
            if part.content_id and location:
                scoped.content_ids[part.content_id] = location
        return responses

    try:
        responses = call.platform.store.transact(work, concurrent=True)
    except FieldsyncError as exc:
        return _http_part(boundary, _error(exc), None), True
    body = "".join(_http_part(inner_boundary, r, p.content_id) for p, r in responses)
    text = (
        f"--{boundary}\r\nContent-Type: multipart/mixed; boundary={inner_boundary}\r\n\r\n"
        f"{body}--{inner_boundary}--\r\n"
    )
    return text, False


def _http_part(boundary: str, response: ODataResponse, content_id: str | None) -> str:
    lines = [f"--{boundary}", "Content-Type: application/http", "Content-Transfer-Encoding: binary"]
    if content_id:
        lines.append(f"Content-ID: {content_id}")
    try:
        reason = HTTPStatus(response.status).phrase
    except ValueError:
        reason = ""
    lines += ["", f"HTTP/1.1 {response.status} {reason}"]
    payload = response.payload()
    for name, value in response.headers.items():
        lines.append(f"{name}: {value}")
    if payload is not None:
        lines.append(f"Content-Type: {response.content_type}")
        lines += ["", payload.decode("utf-8", "replace")]
    else:
        lines.append("")
    return "\r\n".join(lines) + "\r\n"
