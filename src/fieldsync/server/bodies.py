"""Request bodies read with a size limit: refused with a 413 as soon as they pass it, before
they are held whole."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import Request

from fieldsync.errors import BadRequest, PayloadTooLarge


async def read_body(request: Request, limit: int, what: str = "a request") -> bytes:
    declared = request.headers.get("content-length")
    too_big = PayloadTooLarge(f"{what} carries at most {_size(limit)}")
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


async def read_json_object(request: Request, limit: int, what: str = "a request") -> dict[str, Any]:
    """The body as a JSON object (an empty body is ``{}``)."""
    try:
        data = orjson.loads(await read_body(request, limit, what) or b"{}")
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"the request body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadRequest("the request body must be a JSON object")
    return data


def _size(limit: int) -> str:
    return f"{limit // 2**20} MB" if limit % 2**20 == 0 else f"{limit} bytes"
