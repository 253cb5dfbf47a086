"""Filter trees evaluated on one row in Python, with the SQL compiler's semantics: SQL's
three-valued logic (a comparison with a null is unknown, ``None``; ``NOT unknown`` is
unknown; a row matches only when the result is ``True``), case-insensitive strings,
Dataverse LIKE patterns, and link filters over the related rows a callback supplies."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from fieldsync.errors import QueryError
from fieldsync.query.ast import (
    And,
    ColumnCompare,
    Condition,
    Const,
    Link,
    LinkFilter,
    LinkType,
    Node,
    Not,
    Op,
    Or,
    Shared,
)
from fieldsync.query.like import compiled
from fieldsync.query.operators import SPEC

SharedCheck = Callable[[Shared, Mapping[str, Any]], bool]
Related = Callable[[Link, Mapping[str, Any]], Iterable[Mapping[str, Any]]]
Row = Mapping[str, Any]


def matches(
    node: Node, row: Row, *, shared: SharedCheck | None = None, related: Related | None = None
) -> bool:
    return evaluate(node, row, shared=shared, related=related) is True


def evaluate(
    node: Node, row: Row, *, shared: SharedCheck | None = None, related: Related | None = None
) -> bool | None:
    def walk(n: Node, r: Row) -> bool | None:
        if isinstance(n, Const):
            return n.value
        if isinstance(n, And):
            result: bool | None = True
            for item in n.items:
                got = walk(item, r)
                if got is False:
                    return False
                if got is None:
                    result = None
            return result
        if isinstance(n, Or):
            result = False
            for item in n.items:
                got = walk(item, r)
                if got is True:
                    return True
                if got is None:
                    result = None
            return result
        if isinstance(n, Not):
            got = walk(n.item, r)
            return None if got is None else not got
        if isinstance(n, Shared):
            if shared is None:
                raise ValueError("this filter tests sharing: pass a share check")
            return shared(n, r)
        if isinstance(n, ColumnCompare):
            return _compare(n.op, r.get(n.column), r.get(n.other))
        if isinstance(n, LinkFilter):
            if related is None:
                raise ValueError("this filter follows a link: pass the related rows")
            return _link(n.link, related(n.link, r), walk)
        return condition(n, r.get(n.column))

    return walk(node, row)


def _link(link: Link, rows: Iterable[Row], walk: Callable[[Node, Row], bool | None]) -> bool:
    found = list(rows)
    passing = [True if link.filter is None else walk(link.filter, r) is True for r in found]
    kind = link.type
    if kind in (LinkType.ANY, LinkType.INNER, LinkType.OUTER):
        return any(passing)
    if kind is LinkType.NOT_ANY:
        return not any(passing)
    if kind is LinkType.ALL:
        return bool(found) and all(passing)
    return not all(passing)  # not all: some related row fails


def _fold(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


def _compare(op: Op, left: Any, right: Any) -> bool | None:
    if left is None or right is None:
        return None
    compare = SPEC[op].compare
    if compare is None:
        raise QueryError(f"columns compare with eq, ne, gt, ge, lt, le; not {op}")
    return bool(compare(_fold(left), _fold(right)))


def condition(n: Condition, value: Any) -> bool | None:
    op, v = n.op, n.value
    if op is Op.NULL:
        return value is None
    if op is Op.NOT_NULL:
        return value is not None
    if value is None:
        return None
    spec = SPEC[op]
    if spec.compare is not None:
        return _compare(op, value, v)
    if op in (Op.IN, Op.NOT_IN):
        hit = _fold(value) in {_fold(x) for x in v}
        return hit if op is Op.IN else not hit
    if spec.like is not None:
        pattern = spec.like.format(str(v).lower())
        hit = compiled(pattern).fullmatch(str(value).lower()) is not None
        return not hit if spec.negated else hit
    if op in (Op.CONTAIN_VALUES, Op.NOT_CONTAIN_VALUES):
        held = set(value)
        hit = any(int(x) in held for x in v)
        return hit if op is Op.CONTAIN_VALUES else not hit
    raise QueryError(f"the {op.value} operator must be bound to a user and a time first")
