"""Filter trees and queries -> SQLAlchemy (bound parameters only; SQLite and PostgreSQL).

Semantics, the same as the Python evaluator's:

- strings compare case-insensitively (``lower()`` on both sides; SQLite's ``lower`` is
  replaced by a Unicode-aware one when fieldsync connects);
- LIKE patterns are Dataverse's (``%`` ``_`` ``[abc]`` ``[^abc]``): a plain SQL LIKE when
  they have no character classes, a regular expression otherwise;
- ``contain-values`` on a multi-choice column matches rows holding any of the values;
- a link filter (any, not any, all, not all) is an EXISTS on the related table, compiled as
  a set lookup (``parent.to IN (SELECT related.from …)``), and the related rows it looks at
  pass the caller's read filter (``guard``) too, so a filter can never reveal rows the
  caller may not read.

Filters must be bound (``bind.py``) first: user and date operators are not compiled.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, cast

import sqlalchemy as sa

from fieldsync import tracing
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
    Order,
    Query,
    Shared,
)
from fieldsync.query.like import parse_like
from fieldsync.query.operators import COMPARISONS, SPEC
from fieldsync.schema.model import Ownership, Table

SHARE_TABLE = "principalobjectaccess"

Resolve = Callable[[str], tuple[Table, sa.Table]]
Guard = Callable[[Table], Node]

COMPARE: dict[Op, Callable[[Any, Any], Any]] = {
    s.op: s.compare for s in SPEC.values() if s.compare is not None
}
LIKE_OPS = {s.op: (s.like, s.negated) for s in SPEC.values() if s.like is not None}


def is_text(col: sa.ColumnElement[Any]) -> bool:
    return isinstance(col.type, sa.String)


class FilterCompiler:
    """Compiles filter nodes against one FROM (a table or an alias) and the aliases of the
    tables joined to it."""

    def __init__(
        self,
        *,
        dialect: str,
        shares: sa.Table | None = None,
        resolve: Resolve | None = None,
        guard: Guard | None = None,
    ) -> None:
        self.dialect = dialect
        self.shares = shares
        self.resolve = resolve
        self.guard = guard

    def compile(
        self,
        node: Node,
        frm: sa.FromClause,
        table: Table,
        aliases: Mapping[str, sa.FromClause] | None = None,
        scope: frozenset[str] | None = None,
    ) -> sa.ColumnElement[bool]:
        """``scope`` names the tables already in the enclosing FROMs: a link filter on one of
        them needs an alias, any other table is used as it is (cheaper to build)."""
        aliases = aliases or {}
        visible = (scope or frozenset()) | {str(getattr(frm, "name", table.name))}

        def column(name: str, entity: str | None) -> sa.ColumnElement[Any]:
            source = frm
            if entity is not None:
                if entity not in aliases:
                    raise QueryError(f"unknown entity alias {entity!r}")
                source = aliases[entity]
            if name not in source.c:
                raise QueryError(f"unknown column {name!r}")
            return cast(sa.ColumnElement[Any], source.c[name])

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
                return self._shared(n, frm, table)
            if isinstance(n, ColumnCompare):
                left, right = column(n.column, n.entity), column(n.other, n.entity)
                if n.op not in COMPARISONS:
                    raise QueryError(f"columns compare with eq, ne, gt, ge, lt, le; not {n.op}")
                if is_text(left) and is_text(right):
                    left, right = sa.func.lower(left), sa.func.lower(right)
                return cast(sa.ColumnElement[bool], COMPARE[n.op](left, right))
            if isinstance(n, LinkFilter):
                return self._link_filter(n.link, frm, visible)
            return self.condition(n, column(n.column, n.entity))

        return walk(node)

    def condition(self, n: Condition, col: sa.ColumnElement[Any]) -> sa.ColumnElement[bool]:
        op, v = n.op, n.value
        text = is_text(col)
        if op in COMPARE:
            if text and isinstance(v, str):
                return cast(sa.ColumnElement[bool], COMPARE[op](sa.func.lower(col), v.lower()))
            return cast(sa.ColumnElement[bool], COMPARE[op](col, v))
        if op in (Op.IN, Op.NOT_IN):
            values = tuple(v)
            if text:
                lowered = sa.func.lower(col)
                values = tuple(x.lower() if isinstance(x, str) else x for x in values)
                return lowered.in_(values) if op is Op.IN else lowered.not_in(values)
            return col.in_(values) if op is Op.IN else col.not_in(values)
        if op is Op.NULL:
            return col.is_(None)
        if op is Op.NOT_NULL:
            return col.is_not(None)
        if op in LIKE_OPS:
            if not text:
                raise QueryError(f"{op.value} applies to text columns only")
            shape, negated = LIKE_OPS[op]
            match = self._like(sa.func.lower(col), shape.format(str(v).lower()))
            return sa.not_(match) if negated else match
        if op in (Op.CONTAIN_VALUES, Op.NOT_CONTAIN_VALUES):
            raw = sa.type_coerce(col, sa.Text())
            hit = sa.or_(*(raw.like(f"%,{int(x)},%") for x in v)) if v else sa.false()
            return hit if op is Op.CONTAIN_VALUES else sa.not_(hit)
        raise QueryError(f"the {op.value} operator must be bound to a user and a time first")

    def _like(self, col: sa.ColumnElement[Any], pattern: str) -> sa.ColumnElement[bool]:
        parsed = parse_like(pattern)
        if parsed.like is not None:
            return col.like(parsed.like, escape="\\")
        if self.dialect == "postgresql":
            return cast(sa.ColumnElement[bool], col.op("~")(parsed.regex))
        return cast(sa.ColumnElement[bool], col.op("REGEXP")(parsed.regex))

    def _shared(self, n: Shared, frm: sa.FromClause, table: Table) -> sa.ColumnElement[bool]:
        """A set lookup, not a correlated EXISTS: ``pk IN (SELECT objectid …)`` on SQLite and
        ``pk = ANY(ARRAY(SELECT objectid …))`` on PostgreSQL, which both planners cost and
        index well inside an OR."""
        if self.shares is None:
            raise ValueError("this filter tests sharing: pass the share table")
        s = self.shares
        shared = sa.select(s.c.objectid).where(
            s.c.objecttypecode == n.table,
            s.c.principalid.in_(n.principals),
            s.c.accessrightsmask.op("&")(n.mask) != 0,
        )
        key = frm.c[table.primary_id]
        if self.dialect == "postgresql":
            found: sa.ColumnElement[bool] = key == sa.any_(sa.func.array(shared.scalar_subquery()))
            return found
        return key.in_(shared)

    def _link_filter(
        self, link: Link, parent: sa.FromClause, scope: frozenset[str]
    ) -> sa.ColumnElement[bool]:
        if self.resolve is None:
            raise QueryError("link filters need the schema to compile")
        table, sql = self.resolve(link.table)
        related: sa.FromClause = sql.alias() if sql.name in scope or link.links else sql
        inner_scope = scope | {sql.name}
        if link.from_column not in related.c or link.to_column not in parent.c:
            raise QueryError(
                f"link to {link.table}: unknown column {link.from_column!r} or {link.to_column!r}"
            )
        key, target = related.c[link.from_column], parent.c[link.to_column]
        joined: list[sa.ColumnElement[bool]] = [key.is_not(None)]
        if self.guard is not None:
            joined.append(self.compile(self.guard(table), related, table, scope=inner_scope))
        inner_aliases: dict[str, sa.FromClause] = {}
        frm: sa.FromClause = related
        for nested in link.links:
            frm, more = self._join(frm, related, nested, inner_aliases)
            joined.extend(more)
        passes = (
            None
            if link.filter is None
            else self.compile(link.filter, related, table, inner_aliases, inner_scope)
        )

        def exists(*extra: sa.ColumnElement[bool]) -> sa.ColumnElement[bool]:
            """``EXISTS (… WHERE related.from = parent.to …)`` as a set lookup: the related
            rows' keys are selected once, not probed once per parent row (SQLite then drives
            from the parent's index on the lookup; PostgreSQL makes it the same semi-join,
            or a hashed subplan inside an OR). Neither side is ever NULL in the test, so it
            is true or false, never unknown, as EXISTS is (and stays so under NOT)."""
            keys = sa.select(key).select_from(frm).where(*joined, *extra).correlate(None)
            # not ``= ANY(ARRAY(…))`` as for shares: a link may select many keys, and
            # PostgreSQL hashes an IN's subquery but tests an array element by element
            return sa.and_(target.is_not(None), target.in_(keys))

        fails = None if passes is None else sa.not_(sa.case((passes, sa.true()), else_=sa.false()))
        kind = link.type
        if kind in (LinkType.ANY, LinkType.INNER, LinkType.OUTER):
            return exists() if passes is None else exists(passes)
        if kind is LinkType.NOT_ANY:
            return sa.not_(exists() if passes is None else exists(passes))
        if kind is LinkType.ALL:
            return exists() if fails is None else sa.and_(exists(), sa.not_(exists(fails)))
        return sa.false() if fails is None else exists(fails)  # not all

    def _join(
        self,
        frm: sa.FromClause,
        parent: sa.FromClause,
        link: Link,
        aliases: dict[str, sa.FromClause],
    ) -> tuple[sa.FromClause, list[sa.ColumnElement[bool]]]:
        """Join ``link`` (and its own links) to ``frm``; returns the new FROM and conditions
        that belong in a WHERE (none: everything goes into the ON clauses)."""
        if self.resolve is None:
            raise QueryError("links need the schema to compile")
        table, sql = self.resolve(link.table)
        name = link.alias or link.table
        if name in aliases:
            raise QueryError(f"the alias {name!r} is used twice")
        related = sql.alias(name)
        aliases[name] = related
        if link.from_column not in related.c or link.to_column not in parent.c:
            raise QueryError(
                f"link to {link.table}: unknown column {link.from_column!r} or {link.to_column!r}"
            )
        on = [related.c[link.from_column] == parent.c[link.to_column]]
        if self.guard is not None:
            on.append(self.compile(self.guard(table), related, table))
        if link.filter is not None:
            on.append(self.compile(link.filter, related, table, aliases))
        joined: sa.FromClause = frm.join(related, sa.and_(*on), isouter=link.type is LinkType.OUTER)
        for nested in link.links:
            joined, _ = self._join(joined, related, nested, aliases)
        return joined, []


def compile_filter(
    node: Node,
    table: sa.Table,
    *,
    primary_key: str,
    shares: sa.Table | None = None,
    dialect: str = "sqlite",
    definition: Table | None = None,
    resolve: Resolve | None = None,
    guard: Guard | None = None,
) -> sa.ColumnElement[bool]:
    """Compile one filter against one table (the common case: security predicates and
    offline filters)."""
    if definition is None:
        definition = Table(
            name=table.name,
            entity_set_name=table.name,
            display_name=table.name,
            primary_id=primary_key,
            primary_name="",
            ownership=Ownership.NONE,
        )
    compiler = FilterCompiler(dialect=dialect, shares=shares, resolve=resolve, guard=guard)
    return compiler.compile(node, table, definition)


@tracing.traced("query.compile")
def compile_query(
    query: Query,
    *,
    resolve: Resolve,
    dialect: str,
    shares: sa.Table | None = None,
    guard: Guard | None = None,
) -> sa.Select[Any]:
    """A whole query as one SELECT: the root table's columns (and each link's as
    ``alias.column``), joins, the filter, the order (the primary id last, so paging is
    stable), top or paging, distinct. ``guard`` gives each table's read filter: it applies to
    the root and inside every join and link filter."""
    table, sql = resolve(query.table)
    compiler = FilterCompiler(dialect=dialect, shares=shares, resolve=resolve, guard=guard)
    aliases: dict[str, sa.FromClause] = {}
    frm: sa.FromClause = sql
    for link in query.links:
        frm, _ = compiler._join(frm, sql, link, aliases)
    names = list(query.columns) if query.columns is not None else [c.name for c in sql.c]
    for name in names:
        if name not in sql.c:
            raise QueryError(f"{query.table} has no column {name!r}")
    # every row carries its id, and the id ends the order so paging is stable; a distinct
    # query returns distinct values instead, so it gets neither
    if table.primary_id not in names and not query.distinct:
        names.insert(0, table.primary_id)
    selected: list[Any] = [sql.c[n] for n in names]
    orders: list[Any] = []

    def order_by(order: Order, default: sa.FromClause, label: str) -> None:
        source = default if order.entity is None else aliases.get(order.entity)
        if source is None or order.column not in source.c:
            raise QueryError(f"cannot order by {order.entity or label}.{order.column}")
        col = source.c[order.column]
        # nulls sort lowest, as in Dataverse (SQL Server), on both backends
        orders.append(col.desc().nulls_last() if order.descending else col.asc().nulls_first())
        if query.distinct and not any(col is c for c in selected):
            selected.append(col)  # DISTINCT can only order by what it selects

    def link_columns(link: Link) -> None:
        alias = aliases[link.alias or link.table]
        wanted = [c.name for c in alias.c] if link.columns is None else list(link.columns)
        for name in wanted:
            if name not in alias.c:
                raise QueryError(f"{link.table} has no column {name!r}")
            selected.append(alias.c[name].label(f"{link.alias or link.table}.{name}"))
        for nested in link.links:
            link_columns(nested)

    for link in query.links:
        link_columns(link)
    for order in query.orders:
        order_by(order, sql, query.table)

    def link_orders(link: Link) -> None:
        alias = aliases[link.alias or link.table]
        for order in link.orders:
            order_by(order, alias, link.alias or link.table)
        for nested in link.links:
            link_orders(nested)

    for link in query.links:
        link_orders(link)
    if not query.distinct:
        orders.append(sql.c[table.primary_id].asc())
    stmt = sa.select(*selected).select_from(frm)
    conditions: list[sa.ColumnElement[bool]] = []
    if guard is not None:
        conditions.append(compiler.compile(guard(table), sql, table))
    if query.filter is not None:
        conditions.append(compiler.compile(query.filter, sql, table, aliases))
    if conditions:
        stmt = stmt.where(*conditions)
    if orders:
        stmt = stmt.order_by(*orders)
    if query.distinct:
        stmt = stmt.distinct()
    if query.page_size is not None:
        stmt = stmt.limit(query.page_size).offset(((query.page or 1) - 1) * query.page_size)
    elif query.top is not None:
        stmt = stmt.limit(query.top)
    return stmt
