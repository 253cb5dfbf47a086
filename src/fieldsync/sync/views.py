"""What a device without a Python query compiler needs in the handshake: the replica's SQLite
layout and the app's views compiled to SQLite SQL.

The FetchXML/OData compiler exists once, here in Python. A browser device builds its replica
from :func:`replica_layout` (the same tables, types and indexes as the Python device's
replica, :func:`fieldsync.store.ddl.build_sql_table` on SQLite, with a codec per column that
tells how a wire value is stored) and runs each view as :func:`compile_view` wrote it:

- the SQL is the view's query against the replica's tables (no read guard: the replica holds
  only rows the user may read), with its order, the primary id last;
- ``params`` are bound by the server already in their stored form: the user's id, teams,
  business unit, hierarchy and language (the user operators), and every constant;
- ``times`` are the parameters the date operators (``today``, ``last-x-days``, …) need: the
  device computes them from its own clock at each run (``{op, value, edge, date}``: the start
  or end of :func:`fieldsync.query.bind.date_range`, as a date on date-only columns);
- ``:search`` (null, or a lower-case LIKE pattern over the view's text columns), ``:limit``
  and ``:offset`` are the device's; ``top`` is the view's own cap;
- ``indexes`` are the ``CREATE INDEX IF NOT EXISTS`` statements that let SQLite walk the view
  in its order (the filter's equalities first, then the order, the primary id last) and stop
  after the page, instead of sorting the whole table: the device builds them once its first
  download is in (as the Python device builds its lookup indexes at the end), next to the
  layout's ``indexes`` (the primary name, then the id: the plain list and lookup pickers).

A view the device cannot run (a link to a table that does not travel, a query the compiler
refuses) carries ``error`` instead of SQL, and the device says so rather than guess.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.dialects import sqlite
from sqlalchemy.schema import CreateIndex, CreateTable

from fieldsync.errors import FieldsyncError
from fieldsync.query.ast import (
    And,
    Condition,
    Link,
    LinkFilter,
    Node,
    Not,
    Op,
    Or,
    Query,
    all_of,
)
from fieldsync.query.bind import UserBinding, bind, date_range
from fieldsync.query.compile import compile_query
from fieldsync.query.fetchxml import parse_fetchxml
from fieldsync.query.operators import DATE_OPS
from fieldsync.schema.model import ColumnType, Schema, Table
from fieldsync.store.ddl import build_sql_table
from fieldsync.store.sqltypes import MAX_SCALED_PLACES, ExactDecimal, MultiChoice, UTCDateTime
from fieldsync.sync.protocol import CompiledView, TableLayout, ViewInfo

DIALECT = sqlite.dialect(paramstyle="named")
STATIC_DATE_OPS = frozenset({Op.ON, Op.ON_OR_BEFORE, Op.ON_OR_AFTER})
_EPOCH = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)


# -- the replica's layout --------------------------------------------------------------------


def column_codec(column: sa.Column[Any]) -> str | None:
    """How a wire value of this SQL column is stored on SQLite (``None``: as it travels)."""
    kind = column.type
    if isinstance(kind, sa.Uuid):
        return "uuid"  # 32 lower-case hex digits
    if isinstance(kind, UTCDateTime):
        return "datetime"  # "YYYY-MM-DD HH:MM:SS.ffffff", UTC
    if isinstance(kind, ExactDecimal):
        if kind.scale <= MAX_SCALED_PLACES:
            return f"decimal:{kind.scale}"  # an integer: the value times 10^scale
        return f"decimaltext:{kind.scale}"  # zero-padded digits of (value + 10^12) * 10^scale
    if isinstance(kind, MultiChoice):
        return "multichoice"  # ",1,3," (sorted, distinct; empty is null)
    if isinstance(kind, sa.Boolean):
        return "bool"  # 0 or 1
    return None


def replica_layout(schema: Schema, tables: list[str]) -> dict[str, TableLayout]:
    """Per profile table: the SQLite statements that create it and its indexes, and the codec
    of each column that is not stored as it travels."""
    out: dict[str, TableLayout] = {}
    for name in tables:
        sql = build_sql_table(schema.table(name), sa.MetaData())
        ddl = [str(CreateTable(sql).compile(dialect=DIALECT)).strip()]
        ddl.extend(
            str(CreateIndex(index).compile(dialect=DIALECT)).strip()
            for index in sorted(sql.indexes, key=lambda i: str(i.name))
        )
        codecs = {str(c.name): codec for c in sql.columns if (codec := column_codec(c)) is not None}
        out[name] = {"ddl": ddl, "codecs": codecs, "indexes": _name_indexes(schema.table(name))}
    return out


def _name_indexes(table: Table) -> list[str]:
    """The index behind a table's plain list (by primary name, then id) and its lookup picker."""
    if not table.primary_name or table.primary_name == table.primary_id:
        return []
    return [_index_sql(table.name, [(table.primary_name, False), (table.primary_id, False)])]


def _index_sql(table: str, columns: Sequence[tuple[str, bool]]) -> str:
    """``CREATE INDEX IF NOT EXISTS`` over ``(column, descending)`` pairs, named after them
    (``ixv_<table>_<digest>``: the same columns give the same index, whichever view asks)."""
    quote = DIALECT.identifier_preparer.quote
    key = ",".join(f"{c}{' DESC' if d else ''}" for c, d in columns)
    digest = hashlib.sha1(f"{table}({key})".encode()).hexdigest()[:12]
    parts = ", ".join(f"{quote(c)}{' DESC' if d else ''}" for c, d in columns)
    name = quote(f"ixv_{table}_{digest}")
    return f"CREATE INDEX IF NOT EXISTS {name} ON {quote(table)} ({parts})"


def _view_indexes(query: Query, table: Table, sql: sa.Table) -> list[str]:
    """The index that serves ``query`` in its order with an early stop: the columns the
    top-level filter pins with ``eq`` (a range scan on them), then the order's columns with
    their direction (SQLite's ASC puts nulls first and DESC last, as the compiled order does),
    the primary id last. None when the order reads a linked table (the join orders it)."""
    if any(link_has_orders(link) for link in query.links):
        return []
    if any(o.entity is not None or o.column not in sql.c for o in query.orders):
        return []
    ordered = [(o.column, o.descending) for o in query.orders]
    taken = {c for c, _ in ordered}
    pinned: list[str] = []
    items: tuple[Node, ...] = ()
    if isinstance(query.filter, And):
        items = query.filter.items
    elif query.filter is not None:
        items = (query.filter,)
    for item in items:
        if (
            isinstance(item, Condition)
            and item.op is Op.EQ
            and item.entity is None
            and item.value is not None
            and not isinstance(item.value, _Moment)
            and item.column in sql.c
            and item.column not in taken
            and item.column not in pinned
        ):
            pinned.append(item.column)
    columns = [(c, False) for c in sorted(pinned)] + ordered
    if table.primary_id not in taken:
        columns.append((table.primary_id, False))
    if len(columns) == 1 and columns[0][0] == table.primary_id:
        return []  # the primary key already walks the table in this order
    return [_index_sql(table.name, columns)]


def link_has_orders(link: Link) -> bool:
    return bool(link.orders) or any(link_has_orders(nested) for nested in link.links)


# -- views -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Moment:
    """A date operator's edge, left as a parameter the device computes from its clock."""

    op: str
    value: Any
    edge: str  # "start" or "end"
    date: bool  # the column holds dates: the edge is a date


def _defer_times(
    node: Node, table: Table, tables: Mapping[str, Table], aliases: Mapping[str, str]
) -> Node:
    """``node`` with each clock-reading date operator replaced by a range on :class:`_Moment`
    values (the same half-open range :func:`fieldsync.query.bind.bind` makes)."""

    def walk(n: Node, current: Table) -> Node:
        if isinstance(n, And):
            return And(tuple(walk(i, current) for i in n.items))
        if isinstance(n, Or):
            return Or(tuple(walk(i, current) for i in n.items))
        if isinstance(n, Not):
            return Not(walk(n.item, current))
        if isinstance(n, LinkFilter):
            inner = tables.get(n.link.table, current)
            f = None if n.link.filter is None else walk(n.link.filter, inner)
            return LinkFilter(replace(n.link, filter=f))
        if isinstance(n, Condition) and n.op in DATE_OPS and n.op not in STATIC_DATE_OPS:
            target = current if n.entity is None else tables.get(aliases.get(n.entity, ""), current)
            col = target.column(n.column)
            is_date = col is not None and col.type is ColumnType.DATE
            start, end = date_range(n.op, n.value, _EPOCH)  # validates the value; shape only
            parts: list[Node] = []
            if start is not None:
                parts.append(
                    Condition(
                        n.column, Op.GE, _Moment(n.op.value, n.value, "start", is_date), n.entity
                    )
                )
            if end is not None:
                parts.append(
                    Condition(
                        n.column, Op.LT, _Moment(n.op.value, n.value, "end", is_date), n.entity
                    )
                )
            return all_of(parts)
        return n

    return walk(node, table)


def _aliases(links: tuple[Link, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for link in links:
        out[link.alias or link.table] = link.table
        out.update(_aliases(link.links))
    return out


def _text_columns(query: Query, table: Table, sql: sa.Table) -> list[str]:
    names = list(query.columns) if query.columns is not None else [c.name for c in sql.columns]
    found = [str(n) for n in names if n in sql.c and isinstance(sql.c[n].type, sa.String)]
    if table.primary_name and table.primary_name not in found and table.primary_name in sql.c:
        found.insert(0, table.primary_name)
    return found


def compile_view(
    fetchxml: str, schema: Schema, tables: list[str], user: UserBinding
) -> CompiledView:
    """One view as SQLite SQL for the replica (see the module's docstring for the shape)."""
    travelling = set(tables)
    md = sa.MetaData()
    built: dict[str, sa.Table] = {}

    def resolve(name: str) -> tuple[Table, sa.Table]:
        if name not in travelling:
            raise _NotOnDevice(name)
        if name not in built:
            built[name] = build_sql_table(schema.table(name), md)
        return schema.table(name), built[name]

    query = parse_fetchxml(fetchxml, schema)
    table, sql = resolve(query.table)
    aliases = _aliases(query.links)
    for name in aliases.values():
        resolve(name)
    top = query.top if query.page_size is None else query.page_size
    query = replace(query, top=None, page=None, page_size=None, count=False)
    if query.filter is not None:
        known = {n: schema.table(n) for n in travelling}
        deferred = _defer_times(query.filter, table, known, aliases)
        query = replace(
            query,
            filter=bind(
                deferred,
                table,
                user=user,
                now=_EPOCH,
                tables=resolve_table(resolve),
                aliases=aliases,
            ),
        )
    stmt = compile_query(query, resolve=resolve, dialect="sqlite")
    indexes = _view_indexes(query, table, sql)
    searched = _text_columns(query, table, sql)
    search = sa.bindparam("search", None, type_=sa.String())
    if searched:
        stmt = stmt.where(
            sa.or_(
                search.is_(None),
                *(sa.func.lower(sql.c[n]).like(search, escape="\\") for n in searched),
            )
        )
    stmt = stmt.limit(sa.bindparam("limit", -1, type_=sa.Integer())).offset(
        sa.bindparam("offset", 0, type_=sa.Integer())
    )
    compiled = stmt.compile(dialect=DIALECT, compile_kwargs={"render_postcompile": True})
    processors = compiled._bind_processors
    params: dict[str, Any] = {}
    times: dict[str, Any] = {}
    for key, value in compiled.construct_params().items():
        if key in ("search", "limit", "offset"):
            continue
        if isinstance(value, _Moment):
            times[key] = {
                "op": value.op,
                "value": value.value,
                "edge": value.edge,
                "date": value.date,
            }
            continue
        process: Any = processors.get(key)
        stored = process(value) if process is not None and value is not None else value
        params[key] = _jsonable(stored)
    columns = [str(c.name) for c in stmt.selected_columns]
    return {
        "sql": str(compiled),
        "params": params,
        "times": times,
        "columns": columns,
        "search": searched,
        "top": top,
        "indexes": indexes,
    }


def resolve_table(resolve: Callable[[str], tuple[Table, sa.Table]]) -> Callable[[str], Table]:
    def find(name: str) -> Table:
        table, _ = resolve(name)
        return table

    return find


class _NotOnDevice(Exception):
    def __init__(self, table: str) -> None:
        super().__init__(table)
        self.table = table


def compile_views(
    views: Sequence[Mapping[str, Any]], schema: Schema, tables: list[str], user: UserBinding
) -> list[ViewInfo]:
    """The handshake's views, each with ``sqlite`` (what :func:`compile_view` answers) or
    ``error`` (why this view cannot run on the device)."""
    out: list[ViewInfo] = []
    for view in views:
        entry = cast(ViewInfo, dict(view))
        try:
            entry["sqlite"] = compile_view(str(view["fetchxml"]), schema, tables, user)
        except _NotOnDevice as exc:
            entry["error"] = f"the view reads table {exc.table!r}, which is not on the device"
        except FieldsyncError as exc:
            entry["error"] = str(exc)
        out.append(entry)
    return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, uuid.UUID):
        return value.hex
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    return value
