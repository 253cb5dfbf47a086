"""JSON responses rendered with orjson (ids, dates and decimals included)."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import JSONResponse


def _default(value: Any) -> Any:
    from decimal import Decimal

    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


class JSON(JSONResponse):
    media_type = "application/json; charset=utf-8"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, default=_default, option=orjson.OPT_NON_STR_KEYS)
