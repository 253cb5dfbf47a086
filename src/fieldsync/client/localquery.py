"""Queries on the replica: a bound query tree (:mod:`fieldsync.query.ast`) as one SQLite
SELECT with bound parameters, with the semantics of the server's compiler
(:mod:`fieldsync.query.compile`) and of the Python evaluator:

- text compares case-insensitively (``lower()`` on both sides, Unicode-aware on the device);
- LIKE patterns are Dataverse's: a plain LIKE without character classes, REGEXP with them;
- ``contain-values`` on a multi-choice column matches rows holding any of the values;
- a link filter (any, not any, all, not all) is an EXISTS on the related table; a link of
  the query joins (inner or outer) and adds the related columns as ``alias.column``;
- the order puts nulls lowest, and the primary id last (stable paging).

Values are bound in each column's storage (:mod:`fieldsync.client.localdb`). User and date
operators must be bound first (:func:`fieldsync.query.bind.bind`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fieldsync.client.localdb import Codec, quote, sql_columns
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
from fieldsync.query.operators import COMPARISONS
from fieldsync.schema.model import Table

Resolve = Callable[[str], Table]

SYMBOL = {Op.EQ: "=", Op.NE: "!=", Op.GT: ">", Op.GE: ">=", Op.LT: "<", Op.LE: "<="}
LIKE_OPS = {
    Op.LIKE: ("{}", False),
    Op.NOT_LIKE: ("{}", True),
    Op.BEGINS_WITH: ("{}%", False),
    Op.NOT_BEGIN_WITH: ("{}%", True),
    Op.ENDS_WITH: ("%{}", False),
    Op.NOT_END_WITH: ("%{}", True),
}


@dataclass
class Source:
    """A table in a FROM, under an alias."""

    alias: str
    table: Table
    columns: dict[str, Codec]

    def column(self, name: str) -> tuple[str, Codec]:
        found = self.columns.get(name)
        if found is None:
            raise QueryError(f"unknown column {name!r}")
        return f"{self.alias}.{quote(name)}", found


@dataclass
class Compiled:
    sql: str
    params: dict[str, Any]
    labels: list[str]  # the key of each selected column in a result row
    codecs: list[Codec]  # and how to read it

    def rows(self, cursor: Any) -> list[dict[str, Any]]:
        out = []
        pairs = list(zip(self.labels, self.codecs, strict=True))
        for raw in cursor:
            out.append({label: c.from_sql(v) for (label, c), v in zip(pairs, raw, strict=True)})
        return out


@dataclass
class _Compiler:
    resolve: Resolve
    params: dict[str, Any] = field(default_factory=dict)
    count: int = 0

    def source(self, name: str) -> Source:
        table = self.resolve(name)
        self.count += 1
        return Source(f"t{self.count}", table, sql_columns(table))

    def bind(self, value: Any) -> str:
        """A named parameter (a fragment may appear twice in the text, as in ``all``)."""
        name = f"p{len(self.params)}"
        self.params[name] = value
        return f":{name}"

    # -- filters ----------------------------------------------------------------------------

    def filter(self, node: Node, src: Source, aliases: Mapping[str, Source]) -> str:
        def column(name: str, entity: str | None) -> tuple[str, Codec]:
            if entity is None:
                return src.column(name)
            if entity not in aliases:
                raise QueryError(f"unknown entity alias {entity!r}")
            return aliases[entity].column(name)

        def walk(n: Node) -> str:
            if isinstance(n, Const):
                return "1" if n.value else "0"
            if isinstance(n, And):
                return "(" + " AND ".join(walk(i) for i in n.items) + ")" if n.items else "1"
            if isinstance(n, Or):
                return "(" + " OR ".join(walk(i) for i in n.items) + ")" if n.items else "0"
            if isinstance(n, Not):
                return f"(NOT {walk(n.item)})"
            if isinstance(n, Shared):
                raise QueryError("the replica holds no record shares")
            if isinstance(n, ColumnCompare):
                (left, lc), (right, rc) = column(n.column, n.entity), column(n.other, n.entity)
                if n.op not in COMPARISONS:
                    raise QueryError(f"columns compare with eq, ne, gt, ge, lt, le; not {n.op}")
                if lc.text and rc.text:
                    left, right = f"lower({left})", f"lower({right})"
                return f"({left} {SYMBOL[n.op]} {right})"
            if isinstance(n, LinkFilter):
                return self.link_filter(n.link, src)
            return self.condition(n, *column(n.column, n.entity))

        return walk(node)

    def condition(self, n: Condition, col: str, c: Codec) -> str:
        op, v = n.op, n.value
        if op in SYMBOL:
            if c.text and isinstance(v, str):
                return f"(lower({col}) {SYMBOL[op]} {self.bind(v.lower())})"
            if v is None:  # as the server's compiler: eq null is "is null", ne "is not"
                word = {Op.EQ: "IS NULL", Op.NE: "IS NOT NULL"}.get(op)
                return f"({col} {word})" if word else "NULL"
            return f"({col} {SYMBOL[op]} {self.bind(c.store(v))})"
        if op in (Op.IN, Op.NOT_IN):
            values = list(v)
            if not values:
                return "0" if op is Op.IN else "1"
            if c.text:
                target = f"lower({col})"
                marks = [self.bind(x.lower() if isinstance(x, str) else x) for x in values]
            else:
                target = col
                marks = [self.bind(None if x is None else c.store(x)) for x in values]
            word = "IN" if op is Op.IN else "NOT IN"
            return f"({target} {word} ({', '.join(marks)}))"
        if op is Op.NULL:
            return f"({col} IS NULL)"
        if op is Op.NOT_NULL:
            return f"({col} IS NOT NULL)"
        if op in LIKE_OPS:
            if not c.text:
                raise QueryError(f"{op.value} applies to text columns only")
            shape, negated = LIKE_OPS[op]
            parsed = parse_like(shape.format(str(v).lower()))
            if parsed.like is not None:
                match = f"(lower({col}) LIKE {self.bind(parsed.like)} ESCAPE '\\')"
            else:
                match = f"(lower({col}) REGEXP {self.bind(parsed.regex)})"
            return f"(NOT {match})" if negated else match
        if op in (Op.CONTAIN_VALUES, Op.NOT_CONTAIN_VALUES):
            hits = [f"({col} LIKE {self.bind(f'%,{int(x)},%')})" for x in v]
            hit = "(" + " OR ".join(hits) + ")" if hits else "0"
            return hit if op is Op.CONTAIN_VALUES else f"(NOT {hit})"
        raise QueryError(f"the {op.value} operator must be bound to a user and a time first")

    def link_filter(self, link: Link, parent: Source) -> str:
        related = self.source(link.table)
        if link.from_column not in related.columns or link.to_column not in parent.columns:
            raise QueryError(
                f"link to {link.table}: unknown column {link.from_column!r} or {link.to_column!r}"
            )
        joined = [f"{related.column(link.from_column)[0]} = {parent.column(link.to_column)[0]}"]
        frm = f"{quote(related.table.name)} AS {related.alias}"
        inner: dict[str, Source] = {}
        for nested in link.links:
            frm = self.join(frm, related, nested, inner)
        passes = None if link.filter is None else self.filter(link.filter, related, inner)

        def exists(*extra: str) -> str:
            where = " AND ".join([*joined, *extra])
            return f"EXISTS (SELECT 1 FROM {frm} WHERE {where})"

        fails = None if passes is None else f"(NOT (CASE WHEN {passes} THEN 1 ELSE 0 END))"
        kind = link.type
        if kind in (LinkType.ANY, LinkType.INNER, LinkType.OUTER):
            return exists() if passes is None else exists(passes)
        if kind is LinkType.NOT_ANY:
            return f"(NOT {exists() if passes is None else exists(passes)})"
        if kind is LinkType.ALL:
            return exists() if fails is None else f"({exists()} AND NOT {exists(fails)})"
        return "0" if fails is None else exists(fails)  # not all

    def join(self, frm: str, parent: Source, link: Link, aliases: dict[str, Source]) -> str:
        name = link.alias or link.table
        if name in aliases:
            raise QueryError(f"the alias {name!r} is used twice")
        related = self.source(link.table)
        aliases[name] = related
        if link.from_column not in related.columns or link.to_column not in parent.columns:
            raise QueryError(
                f"link to {link.table}: unknown column {link.from_column!r} or {link.to_column!r}"
            )
        on = [f"{related.column(link.from_column)[0]} = {parent.column(link.to_column)[0]}"]
        if link.filter is not None:
            on.append(self.filter(link.filter, related, aliases))
        kind = "LEFT OUTER JOIN" if link.type is LinkType.OUTER else "JOIN"
        out = f"{frm} {kind} {quote(related.table.name)} AS {related.alias} ON {' AND '.join(on)}"
        for nested in link.links:
            out = self.join(out, related, nested, aliases)
        return out


def compile_local(query: Query, resolve: Resolve) -> Compiled:
    """A whole query as one SELECT: the root table's columns (and each link's as
    ``alias.column``), joins, the filter, the order, top or paging, distinct."""
    c = _Compiler(resolve)
    root = c.source(query.table)
    table = root.table
    aliases: dict[str, Source] = {}
    frm = f"{quote(table.name)} AS {root.alias}"
    for link in query.links:
        frm = c.join(frm, root, link, aliases)
    names = list(query.columns) if query.columns is not None else list(root.columns)
    for name in names:
        if name not in root.columns:
            raise QueryError(f"{query.table} has no column {name!r}")
    # every row carries its id, and the id ends the order so paging is stable; a distinct
    # query returns distinct values instead, so it gets neither
    if table.primary_id not in names and not query.distinct:
        names.insert(0, table.primary_id)
    selected: list[tuple[str, str, Codec]] = []  # (expression, label, codec)
    for name in names:
        expr, codec_ = root.column(name)
        selected.append((expr, name, codec_))
    orders: list[str] = []

    def order_by(order: Order, default: Source, label: str) -> None:
        source = default if order.entity is None else aliases.get(order.entity)
        if source is None or order.column not in source.columns:
            raise QueryError(f"cannot order by {order.entity or label}.{order.column}")
        expr, codec_ = source.column(order.column)
        # nulls sort lowest, as in Dataverse (SQL Server)
        orders.append(f"{expr} DESC NULLS LAST" if order.descending else f"{expr} ASC NULLS FIRST")
        if query.distinct and not any(e == expr for e, _, _ in selected):
            selected.append((expr, order.column, codec_))

    def link_columns(link: Link) -> None:
        name = link.alias or link.table
        src = aliases[name]
        wanted = list(src.columns) if link.columns is None else list(link.columns)
        for col in wanted:
            if col not in src.columns:
                raise QueryError(f"{link.table} has no column {col!r}")
            expr, codec_ = src.column(col)
            selected.append((expr, f"{name}.{col}", codec_))
        for nested in link.links:
            link_columns(nested)

    for link in query.links:
        link_columns(link)
    for order in query.orders:
        order_by(order, root, query.table)

    def link_orders(link: Link) -> None:
        src = aliases[link.alias or link.table]
        for order in link.orders:
            order_by(order, src, link.alias or link.table)
        for nested in link.links:
            link_orders(nested)

    for link in query.links:
        link_orders(link)
    if not query.distinct:
        orders.append(f"{root.column(table.primary_id)[0]} ASC")
    where = None if query.filter is None else c.filter(query.filter, root, aliases)
    head = "SELECT DISTINCT" if query.distinct else "SELECT"
    sql = f"{head} {', '.join(e for e, _, _ in selected)} FROM {frm}"
    if where is not None:
        sql += f" WHERE {where}"
    if orders:
        sql += " ORDER BY " + ", ".join(orders)
    if query.page_size is not None:
        limit = c.bind(query.page_size)
        sql += f" LIMIT {limit} OFFSET {c.bind(((query.page or 1) - 1) * query.page_size)}"
    elif query.top is not None:
        sql += f" LIMIT {c.bind(query.top)}"
    return Compiled(
        sql,
        c.params,
        [label for _, label, _ in selected],
        [codec_ for _, _, codec_ in selected],
    )
