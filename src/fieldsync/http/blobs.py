"""File bytes over HTTP: ``Range`` requests, ``Content-Range`` chunks, ``Content-Digest``
(RFC 9530) and the response that streams a file (or its thumbnail), whole or one range."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator

from fastapi import Request
from starlette.responses import Response, StreamingResponse

from fieldsync.errors import BadRequest, RangeNotSatisfiable
from fieldsync.files.service import FileInfo, Files

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+)$")


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``Range: bytes=s-e`` (one range) as ``[start, end)``; None for the whole content."""
    if header is None:
        return None
    m = _RANGE.match(header.strip())
    if m is None or (not m.group(1) and not m.group(2)):
        raise RangeNotSatisfiable(f"one byte range, as 'bytes=start-end', not {header[:60]!r}")
    first, last = m.group(1), m.group(2)
    if not first:  # the last n bytes
        start, end = max(0, size - int(last)), size
    else:
        start = int(first)
        end = size if not last else min(size, int(last) + 1)
    if start >= size or end <= start:
        raise RangeNotSatisfiable(f"the range {header[:60]!r} is outside the {size} bytes")
    return start, end


def parse_content_range(header: str | None, length: int) -> tuple[int, int]:
    """``Content-Range: bytes s-e/total`` of a chunk of ``length`` bytes: (start, total)."""
    m = _CONTENT_RANGE.match((header or "").strip())
    if m is None:
        raise BadRequest("a chunk says where it goes: 'Content-Range: bytes start-end/total'")
    start, end, total = (int(g) for g in m.groups())
    if end < start or end - start + 1 != length or end >= total:
        raise BadRequest(f"the Content-Range {header!r} does not match a {length}-byte chunk")
    return start, total


def range_start(header: str | None) -> int | None:
    """Where a chunk says it starts (``Content-Range``), before its bytes are read; None
    when the header is not one (:func:`parse_content_range` then says what is wrong)."""
    m = _CONTENT_RANGE.match((header or "").strip())
    return None if m is None else int(m.group(1))


def parse_digest(header: str | None) -> bytes | None:
    """``Content-Digest: sha-256=:<base64>:`` (RFC 9530); None when not sent."""
    if not header:
        return None
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name.strip().lower() == "sha-256":
            try:
                raw = base64.b64decode(value.strip().strip(":"), validate=True)
            except ValueError:
                raise BadRequest("the Content-Digest is not base64") from None
            if len(raw) != 32:
                raise BadRequest("a sha-256 Content-Digest has 32 bytes")
            return raw
    raise BadRequest("the Content-Digest must carry sha-256")


def blob_response(
    service: Files, info: FileInfo, request: Request, *, thumb: bool = False, **headers: str
) -> Response:
    """The bytes of a file (or its thumbnail), whole or one range, with their digest."""
    digest, size = info.digest(thumb)
    span = parse_range(request.headers.get("range"), size)
    start, end = span or (0, size)
    out = {
        "Accept-Ranges": "bytes",
        "ETag": f'"{digest}"',
        "Repr-Digest": f"sha-256=:{base64.b64encode(bytes.fromhex(digest)).decode()}:",
        "Content-Length": str(end - start),
        **headers,
    }
    if span is not None:
        out["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    pieces: Iterator[bytes] = service.read(info, thumb=thumb, start=start, end=end)
    media = "image/jpeg" if thumb else info.mimetype
    return StreamingResponse(
        pieces, status_code=206 if span else 200, headers=out, media_type=media
    )
