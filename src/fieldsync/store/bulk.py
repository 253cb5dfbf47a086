"""Many rows through one statement, with the columns' SQL types applied in a tight loop.

SQLAlchemy's ``conn.execute(stmt, rows)`` builds every row's parameters through the compiled
statement's machinery: a few microseconds a row before the database sees it. Batches of
hundreds of rows (an upload, a change log) spend more time there than in SQLite itself. Here
the statement is compiled once per (table, columns), each column's bind processor is looked
up once, and a value repeated from the row before (the same ``now``, the same user) is
converted once. What reaches the driver is exactly what ``conn.execute`` would send.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

KEY = "_fs_key"  # the bind name of the row's key in update_many's rows

# SQL, the rows' keys and the bind names in order, their processors, positional or not
_Compiled = tuple[
    str, tuple[str, ...], tuple[str, ...], tuple[Callable[[Any], Any] | None, ...], bool
]
_cache: dict[tuple[Any, ...], _Compiled | None] = {}
_unnest_cache: dict[
    tuple[Any, ...], tuple[str, tuple[Callable[[Any], Any] | None, ...]] | None
] = {}
_CACHE_LIMIT = 512
UNNEST_FROM = 20  # rows from which one UPDATE ... FROM unnest beats executemany


def insert_many(conn: sa.Connection, table: sa.Table, rows: Sequence[dict[str, Any]]) -> None:
    """``INSERT`` every row (all with the same keys)."""
    if not rows:
        return
    names = tuple(rows[0])
    compiled = _compile(conn.dialect, ("insert", table, names), lambda: table.insert(), names)
    if compiled is None:
        conn.execute(table.insert(), list(rows))
        return
    _run(conn, compiled, rows)


def update_many(
    conn: sa.Connection, table: sa.Table, key: str, rows: Sequence[dict[str, Any]]
) -> None:
    """``UPDATE table SET ... WHERE key = row[KEY]`` for every row (all with the same keys,
    each key once). On PostgreSQL, many rows are one statement that joins the table to
    the rows' values as arrays (``unnest``): one statement for the server to plan and run
    instead of one per row."""
    if not rows:
        return
    names = tuple(rows[0])
    if conn.dialect.name == "postgresql" and len(rows) >= UNNEST_FROM:
        plan = _unnest_plan(conn.dialect, table, key, names)
        if plan is not None:
            sql, processors = plan
            columns: list[list[Any]] = [[] for _ in names]
            for row in rows:
                for i, name in enumerate(names):
                    value = row[name]
                    process = processors[i]
                    columns[i].append(value if value is None or process is None else process(value))
            conn.exec_driver_sql(sql, {f"p{i}": column for i, column in enumerate(columns)})
            return

    def build() -> sa.Update:
        return table.update().where(table.c[key] == sa.bindparam(KEY, type_=table.c[key].type))

    sets = tuple(n for n in names if n != KEY)
    compiled = _compile(conn.dialect, ("update", table, key, names), build, sets)
    if compiled is None:
        conn.execute(build(), list(rows))
        return
    _run(conn, compiled, rows)


def _unnest_plan(
    dialect: Dialect, table: sa.Table, key: str, names: tuple[str, ...]
) -> tuple[str, tuple[Callable[[Any], Any] | None, ...]] | None:
    """``UPDATE ... FROM unnest(arrays)`` for PostgreSQL, and each column's processor; None
    when a column cannot travel as an array (an array column itself)."""
    cache_key = (dialect.name, table, key, names)
    if cache_key in _unnest_cache:
        return _unnest_cache[cache_key]
    quote = dialect.identifier_preparer.quote
    target = dialect.identifier_preparer.format_table(table)
    found: tuple[str, tuple[Callable[[Any], Any] | None, ...]] | None = None
    columns = [table.c[key if n == KEY else n] for n in names]
    if not any(isinstance(c.type, sa.ARRAY) for c in columns):
        types = [c.type.compile(dialect=dialect) for c in columns]
        arrays = ", ".join(f"CAST(%(p{i})s AS {t}[])" for i, t in enumerate(types))
        alias = ", ".join(quote(n) for n in names)
        sets = ", ".join(f"{quote(n)} = _fs_v.{quote(n)}" for n in names if n != KEY)
        sql = (
            f"UPDATE {target} SET {sets} FROM unnest({arrays}) AS _fs_v({alias}) "
            f"WHERE {target}.{quote(key)} = _fs_v.{quote(KEY)}"
        )
        processors = []
        for c in columns:
            process = c.type.dialect_impl(dialect).bind_processor(dialect)
            processors.append(process if callable(process) else None)
        found = (sql, tuple(processors))
    if len(_unnest_cache) >= _CACHE_LIMIT:
        _unnest_cache.clear()
    _unnest_cache[cache_key] = found
    return found


def _compile(
    dialect: Dialect,
    cache_key: tuple[Any, ...],
    build: Callable[[], sa.Insert | sa.Update],
    names: tuple[str, ...],
) -> _Compiled | None:
    """The statement's SQL, its bind names in order and their processors; None when the
    compiled statement binds more than the rows give (a Python-side column default)."""
    full_key = (dialect.name, dialect.paramstyle, *cache_key)
    if full_key in _cache:
        return _cache[full_key]
    compiled = build().compile(dialect=dialect, column_keys=list(names))
    binds = tuple(compiled.positiontup or compiled.binds)
    wanted = set(names) | {KEY}
    found: _Compiled | None = None
    processors = [compiled._bind_processors.get(b) for b in binds]
    if all(compiled.binds[b].key in wanted for b in binds) and all(
        p is None or callable(p) for p in processors
    ):
        found = (
            compiled.string,
            tuple(compiled.binds[b].key for b in binds),
            binds,
            tuple(p if callable(p) else None for p in processors),
            compiled.positional,
        )
    if len(_cache) >= _CACHE_LIMIT:
        _cache.clear()
    _cache[full_key] = found
    return found


def _run(conn: sa.Connection, compiled: _Compiled, rows: Sequence[dict[str, Any]]) -> None:
    sql, names, binds, processors, positional = compiled
    width = len(names)
    last: list[Any] = [object()] * width
    done: list[Any] = [None] * width
    params: list[Any] = []
    for row in rows:
        out: list[Any] = []
        for i in range(width):
            value = row[names[i]]
            if value is None:
                out.append(None)
                continue
            process = processors[i]
            if process is None:
                out.append(value)
            elif value is last[i]:
                out.append(done[i])
            else:
                last[i] = value
                done[i] = converted = process(value)
                out.append(converted)
        params.append(tuple(out) if positional else dict(zip(binds, out, strict=True)))
    conn.exec_driver_sql(sql, params)
