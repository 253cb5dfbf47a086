"""Filter nodes evaluated on one row in Python, with SQL's three-valued logic: a comparison
with a null is unknown (``None``), ``NOT unknown`` is unknown, and a row matches only when
the result is ``True``."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from fieldsync.query.ast import And, Condition, Const, Node, Not, Op, Or, Shared

SharedCheck = Callable[[Shared, Mapping[str, Any]], bool]


def matches(node: Node, row: Mapping[str, Any], *, shared: SharedCheck | None = None) -> bool:
    return evaluate(node, row, shared=shared) is True


def evaluate(
    node: Node, row: Mapping[str, Any], *, shared: SharedCheck | None = None
) -> bool | None:
    if isinstance(node, Const):
        return node.value
    if isinstance(node, And):
        result: bool | None = True
        for item in node.items:
            r = evaluate(item, row, shared=shared)
            if r is False:
                return False
            if r is None:
                result = None
        return result
    if isinstance(node, Or):
        result = False
        for item in node.items:
            r = evaluate(item, row, shared=shared)
            if r is True:
                return True
            if r is None:
                result = None
        return result
    if isinstance(node, Not):
        r = evaluate(node.item, row, shared=shared)
        return None if r is None else not r
    if isinstance(node, Shared):
        if shared is None:
            raise ValueError("this filter tests sharing: pass a share check")
        return shared(node, row)
    return _condition(node, row.get(node.column))


def _like(pattern: str) -> re.Pattern[str]:
    out = []
    for ch in pattern:
        out.append(".*" if ch == "%" else "." if ch == "_" else re.escape(ch))
    return re.compile("".join(out), re.DOTALL)


def _condition(n: Condition, value: Any) -> bool | None:
    op, v = n.op, n.value
    if op is Op.NULL:
        return value is None
    if op is Op.NOT_NULL:
        return value is not None
    if value is None:
        return None
    if op is Op.EQ:
        return bool(value == v)
    if op is Op.NE:
        return bool(value != v)
    if op is Op.GT:
        return bool(value > v)
    if op is Op.GE:
        return bool(value >= v)
    if op is Op.LT:
        return bool(value < v)
    if op is Op.LE:
        return bool(value <= v)
    if op is Op.IN:
        return value in v
    if op is Op.NOT_IN:
        return value not in v
    if op in (Op.LIKE, Op.NOT_LIKE):
        hit = _like(v).fullmatch(value) is not None
        return hit if op is Op.LIKE else not hit
    if op in (Op.BEGINS_WITH, Op.NOT_BEGIN_WITH):
        hit = str(value).startswith(v)
        return hit if op is Op.BEGINS_WITH else not hit
    if op in (Op.ENDS_WITH, Op.NOT_END_WITH):
        hit = str(value).endswith(v)
        return hit if op is Op.ENDS_WITH else not hit
    raise AssertionError(f"no evaluation for {op}")  # pragma: no cover
