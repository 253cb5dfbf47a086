"""JSON responses rendered with orjson (ids, dates and decimals included), and response
header names spelled as Dataverse spells them."""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Final

import orjson
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def json_bytes(content: Any) -> bytes:
    """The one JSON rendering of every answer (``$batch`` parts included): ids, dates and
    decimals as text, and keys that are ``str`` subclasses (SQLAlchemy's column names).
    Keys that are plain ``str`` take orjson's faster path; others are written on a second
    attempt (the first gives up at the first such key)."""
    try:
        return orjson.dumps(content, default=_default)
    except orjson.JSONEncodeError:
        return orjson.dumps(content, default=_default, option=orjson.OPT_NON_STR_KEYS)


class JSON(JSONResponse):
    media_type = "application/json; charset=utf-8"

    def render(self, content: Any) -> bytes:
        return json_bytes(content)


# Starlette lower-cases header names, and HTTP/1.1 sends them as the application gives them;
# some Dataverse clients look these up case-sensitively (the async SDK reads OData-EntityId).
DATAVERSE_CASE: Final = {
    name.lower().encode("latin-1"): name.encode("latin-1")
    for name in (
        "OData-EntityId",
        "OData-Version",
        "Preference-Applied",
        "ETag",
        "Location",
        "Retry-After",
    )
}


class HeaderCase:
    """ASGI middleware: the response headers of :data:`DATAVERSE_CASE` leave in that case."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def spell(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    (DATAVERSE_CASE.get(bytes(name).lower(), name), value)
                    for name, value in message.get("headers", ())
                ]
            await send(message)

        await self.app(scope, receive, spell)
