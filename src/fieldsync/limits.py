"""Limits on the shape of input, declared once: how deep JSON may nest, how many conditions
a query may have, how long a ``$filter`` may be. Input past a limit is refused with a 400
that names the limit, before anything works on it (a recursive step on input nested a
thousand levels deep would otherwise end in a ``RecursionError``, and a query of a thousand
conditions in a database error).

The sizes of request bodies are settings (:mod:`fieldsync.config`), enforced as the body
arrives (:mod:`fieldsync.http.bodies`).
"""

from __future__ import annotations

from typing import Any, Final

import orjson

from fieldsync.errors import BadRequest

MAX_JSON_DEPTH: Final = 64  # objects and arrays inside one another, in any JSON body
MAX_CONDITIONS: Final = 500  # conditions in one query (Dataverse: 500 in an offline filter)
MAX_FILTER_LENGTH: Final = 32_768  # characters of one $filter


_CONTAINERS: Final = frozenset((dict, list))


def json_depth_over(value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether ``value`` (parsed JSON: dicts, lists, scalars) nests objects and arrays more
    than ``limit`` deep. Iterative, level by level: no recursion, whatever the input; a node
    whose children are all scalars (most rows) is passed over at C speed."""
    level = [value] if type(value) in _CONTAINERS else []
    depth = 0
    while level:
        depth += 1
        if depth > limit:
            return True
        deeper: list[Any] = []
        for node in level:
            children = node.values() if type(node) is dict else node
            if not _CONTAINERS.isdisjoint(map(type, children)):
                deeper.extend(c for c in children if type(c) in _CONTAINERS)
        level = deeper
    return False


def too_deep(what: str, limit: int = MAX_JSON_DEPTH) -> BadRequest:
    return BadRequest(f"{what} nests objects and arrays more than {limit} levels deep")


def parse_json(
    data: bytes | str, what: str = "the request body", *, max_depth: int | None = MAX_JSON_DEPTH
) -> Any:
    """JSON text as Python values, refused with a 400 when it is not JSON or nests deeper
    than ``max_depth`` (None: only the parser's own ceiling of 1024 levels, for a caller
    that checks the parts itself, as a sync upload checks each change).

    Cheap on the hot path: a body with fewer brackets than the limit cannot be too deep, and
    is not walked."""
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        if "depth" in str(exc) or "recursion" in str(exc).lower():
            raise too_deep(what, max_depth or 1024) from None
        raise BadRequest(f"{what} is not valid JSON: {exc}") from None
    if max_depth is not None and isinstance(value, (dict, list)):
        if isinstance(data, str):
            opens = data.count("{") + data.count("[")
        else:
            opens = data.count(b"{") + data.count(b"[")
        if opens > max_depth and json_depth_over(value, max_depth):
            raise too_deep(what, max_depth)
    return value
