"""Filter nodes -> SQLAlchemy expressions (bound parameters only; SQLite and PostgreSQL)."""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any, cast

import sqlalchemy as sa

from fieldsync.query.ast import And, Condition, Const, Node, Not, Op, Or, Shared

SHARE_TABLE = "principalobjectaccess"


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def compile_filter(
    node: Node,
    table: sa.Table,
    *,
    primary_key: str,
    shares: sa.Table | None = None,
    dialect: str = "sqlite",
) -> sa.ColumnElement[bool]:
    """Compile ``node`` against ``table``; ``shares`` is the share table, needed only when
    the node tests sharing.

    Sharing compiles to a set lookup, not a correlated EXISTS: ``pk IN (SELECT objectid …)``
    on SQLite and ``pk = ANY(ARRAY(SELECT objectid …))`` on PostgreSQL, which both planners
    cost and index well inside an OR (a correlated EXISTS there scans the whole table)."""

    def walk(n: Node) -> sa.ColumnElement[bool]:
        if isinstance(n, Const):
            return sa.true() if n.value else sa.false()
        if isinstance(n, And):
            return sa.and_(*(walk(i) for i in n.items))
        if isinstance(n, Or):
            return sa.or_(*(walk(i) for i in n.items))
        if isinstance(n, Not):
            return sa.not_(walk(n.item))
        if isinstance(n, Shared):
            if shares is None:
                raise ValueError("this filter tests sharing: pass the share table")
            shared = sa.select(shares.c.objectid).where(
                shares.c.objecttypecode == n.table,
                shares.c.principalid.in_(n.principals),
                shares.c.accessrightsmask.op("&")(n.mask) != 0,
            )
            key = table.c[primary_key]
            if dialect == "postgresql":
                return key == sa.any_(sa.func.array(shared.scalar_subquery()))
            return key.in_(shared)
        return condition(n, table.c[n.column])

    return walk(node)


COMPARISONS: dict[Op, Callable[[Any, Any], Any]] = {
    Op.EQ: operator.eq,
    Op.NE: operator.ne,
    Op.GT: operator.gt,
    Op.GE: operator.ge,
    Op.LT: operator.lt,
    Op.LE: operator.le,
}


def condition(n: Condition, col: sa.ColumnElement[Any]) -> sa.ColumnElement[bool]:
    op, v = n.op, n.value
    compare = COMPARISONS.get(op)
    if compare is not None:
        return cast(sa.ColumnElement[bool], compare(col, v))
    if op is Op.IN:
        return col.in_(tuple(v))
    if op is Op.NOT_IN:
        return col.not_in(tuple(v))
    if op is Op.NULL:
        return col.is_(None)
    if op is Op.NOT_NULL:
        return col.is_not(None)
    if op is Op.LIKE:
        return col.like(v)
    if op is Op.NOT_LIKE:
        return col.not_like(v)
    if op is Op.BEGINS_WITH:
        return col.like(_escape_like(v) + "%", escape="\\")
    if op is Op.NOT_BEGIN_WITH:
        return col.not_like(_escape_like(v) + "%", escape="\\")
    if op is Op.ENDS_WITH:
        return col.like("%" + _escape_like(v), escape="\\")
    if op is Op.NOT_END_WITH:
        return col.not_like("%" + _escape_like(v), escape="\\")
    raise AssertionError(f"no SQL for {op}")  # pragma: no cover
