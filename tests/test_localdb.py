"""The device's SQLite without SQLAlchemy (fieldsync.client.localdb, localquery) against the
server's SQLite store, which the replica used to be built with:

- every built-in table's DDL declares the same columns, types, keys and indexes;
- every column type stores a value exactly as the store's SQLAlchemy types bind it, and reads
  back what they read (so a replica written by an earlier SDK reads the same);
- every FetchXML and OData query of the corpora, compiled for the device, returns the same
  rows in the same order as the server's compiler on the same SQLite database (the demo).
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st

from fieldsync.client.localdb import Database, codec, create_table, sql_columns
from fieldsync.client.localquery import compile_local
from fieldsync.client.replica import encode
from fieldsync.demo import seed_demo
from fieldsync.errors import FieldsyncError
from fieldsync.platform import Platform
from fieldsync.query.ast import Query
from fieldsync.query.bind import UserBinding, bind
from fieldsync.query.compile import compile_query
from fieldsync.query.fetchxml import parse_fetchxml
from fieldsync.query.odata import parse_query_options
from fieldsync.schema.builtin import builtin_tables
from fieldsync.schema.model import Column, ColumnType, Table
from fieldsync.store.ddl import build_sql_table, sql_type
from test_fetchxml import CORPUS as FETCHXML_CORPUS
from test_odata import CORPUS as ODATA_CORPUS
from test_query_corpus import FETCHXML_VALUES, FIXED_DATE, NOW, ODATA_VALUES, adapt

T = ColumnType
SQLITE = sa.create_engine("sqlite://").dialect


def _shape(conn: Any, table: str) -> tuple[Any, Any]:
    columns = [tuple(r)[1:6] for r in conn.execute(f'PRAGMA table_info("{table}")')]
    indexes = sorted(
        (r[1], tuple(c[2] for c in conn.execute(f'PRAGMA index_info("{r[1]}")')), r[2])
        for r in conn.execute(f'PRAGMA index_list("{table}")')
    )
    return columns, indexes


@pytest.mark.parametrize("table", builtin_tables(), ids=lambda t: t.name)
def test_the_ddl_is_the_stores(table: Table) -> None:
    engine = sa.create_engine("sqlite://")
    with engine.begin() as conn:
        build_sql_table(table, sa.MetaData()).create(conn)
        theirs = _shape(conn.connection.driver_connection, table.name)
    mine = sqlite3.connect(":memory:")
    for statement in create_table(table):
        mine.execute(statement)
    ours = _shape(mine, table.name)
    assert ours[0] == theirs[0]
    # the store names its unique constraints' indexes sqlite_autoindex_…, as do we
    assert ours[1] == theirs[1]


def _values(col: Column) -> st.SearchStrategy[Any]:
    t = col.type
    if t in (T.STRING, T.MEMO):
        return st.text(max_size=20)
    if t in (T.INTEGER, T.CHOICE):
        return st.integers(-(2**31), 2**31 - 1)
    if t is T.BIGINT:
        return st.integers(-(2**63), 2**63 - 1)
    if t in (T.DECIMAL, T.MONEY):
        places = col.precision or 0
        return st.decimals(min_value=-(10**11), max_value=10**11, places=places, allow_nan=False)
    if t is T.FLOAT:
        return st.floats(-1e11, 1e11, allow_nan=False)
    if t is T.BOOLEAN:
        return st.booleans()
    if t is T.DATETIME:
        return st.datetimes(min_value=dt.datetime(1753, 1, 1), timezones=st.just(dt.UTC)).map(
            lambda m: m.astimezone(dt.UTC)
        )
    if t is T.DATE:
        return st.dates(min_value=dt.date(1753, 1, 1))
    if t is T.MULTICHOICE:
        return st.lists(st.integers(1, 1000), min_size=1, max_size=4).map(tuple)
    return st.uuids()


COLUMNS = {
    (col.type, col.precision if col.type in (T.DECIMAL, T.MONEY) else None): col
    for table in builtin_tables()
    for col in table.columns.values()
}
WIRE = {T.DATETIME, T.DATE, T.DECIMAL, T.MONEY, T.LOOKUP, T.UNIQUEIDENTIFIER, T.FILE, T.IMAGE}


@pytest.mark.parametrize("col", list(COLUMNS.values()), ids=lambda c: f"{c.type}-{c.name}")
@settings(deadline=None, max_examples=60)
@given(data=st.data())
def test_values_are_stored_as_the_store_stores_them(col: Column, data: st.DataObject) -> None:
    value = data.draw(_values(col))
    kind = sql_type(col)
    bind = kind._cached_bind_processor(SQLITE) or (lambda v: v)
    result = kind._cached_result_processor(SQLITE, None) or (lambda v: v)
    stored = bind(list(value) if col.type is T.MULTICHOICE else value)
    c = codec(col)
    assert c.store(value) == stored
    if col.type in WIRE:  # the wire form (a string) stores the same
        assert c.store(encode(value)) == stored
    back = result(stored)
    mine = c.load(stored)
    if col.type is T.MULTICHOICE:
        assert list(mine) == back
    else:
        assert mine == back
        assert type(mine) is type(back)


def test_polymorphic_lookups_have_their_type_column() -> None:
    account = next(t for t in builtin_tables() if t.name == "workorder")
    assert list(sql_columns(account)) == [c.name for c in build_sql_table(account, sa.MetaData()).c]


def _binding(platform: Platform) -> UserBinding:
    user = platform.org.user_id("lena")
    return UserBinding(user_id=user, business_unit_id=uuid.uuid4(), teams=frozenset())


def _same(platform: Platform, path: Path, query: Query) -> int:
    """The rows both compilers return (-1: both refuse the query)."""
    schema = platform.store.schema
    t = schema.table(query.table)
    if query.filter is not None:
        aliases = {link.alias or link.table: link.table for link in query.links}
        query = Query(
            **{
                **{f: getattr(query, f) for f in query.__dataclass_fields__},
                "filter": bind(
                    query.filter,
                    t,
                    user=_binding(platform),
                    now=NOW,
                    tables=schema.table,
                    aliases=aliases,
                ),
            }
        )
    store = platform.store

    def server() -> list[dict[str, Any]]:
        stmt = compile_query(
            query, resolve=lambda n: (schema.table(n), store.sql_table(n)), dialect="sqlite"
        )
        with store.read() as conn:
            return [
                {str(k): encode(v) for k, v in r.items()} for r in conn.execute(stmt).mappings()
            ]

    def device() -> list[dict[str, Any]]:
        compiled = compile_local(query, schema.table)
        with Database(path).transaction(write=False) as conn:
            rows = compiled.rows(conn.execute(compiled.sql, compiled.params))
        return [{k: encode(v) for k, v in r.items()} for r in rows]

    try:
        expected = server()
    except FieldsyncError as exc:
        with pytest.raises(type(exc)):
            device()
        return -1
    assert device() == expected
    return len(expected)


@pytest.fixture
def demo(platform: Platform) -> tuple[Platform, Path]:
    seed_demo(platform, today=FIXED_DATE)
    database = platform.store.engine.url.database
    assert database is not None
    return platform, Path(database)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_query_corpora_answer_the_same_on_the_device(demo: tuple[Platform, Path]) -> None:
    platform, path = demo
    schema = platform.store.schema
    problems = []
    found: list[int] = []
    for name, text in FETCHXML_CORPUS.items():
        try:
            found.append(
                _same(platform, path, parse_fetchxml(adapt(text, FETCHXML_VALUES), schema))
            )
        except AssertionError as exc:
            problems.append(f"{name}: {str(exc)[:300]}")
    for name, (table, params) in ODATA_CORPUS.items():
        adapted = {k: adapt(v, ODATA_VALUES) for k, v in params.items()}
        options = parse_query_options(adapted, schema.table(table), schema)
        try:
            found.append(_same(platform, path, options.query))
        except AssertionError as exc:
            problems.append(f"{name}: {str(exc)[:300]}")
    assert problems == []
    # most queries find rows, few are refused by both (not a comparison of empty answers)
    assert sum(n > 0 for n in found) * 2 >= len(found), found
    assert found.count(-1) * 10 <= len(found), found


def test_a_decimal_past_seven_places_is_offset_text() -> None:
    col = Column("rate", T.DECIMAL, precision=10)
    c = codec(col)
    assert c.sql_type == "VARCHAR(24)"
    assert c.load(c.store(Decimal("-1.5"))) == Decimal("-1.5000000000")
