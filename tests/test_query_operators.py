"""The operator table (``fieldsync.query.operators``): every operator is in it once, and an
operator means the same from FetchXML and from OData — the same columns accept it, and, on
SQLite and PostgreSQL, it finds the same rows over random data."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fieldsync.errors import QueryError
from fieldsync.query.ast import Node, Op
from fieldsync.query.bind import UserBinding, bind
from fieldsync.query.fetchxml import parse_fetchxml
from fieldsync.query.odata import parse_filter
from fieldsync.query.operators import (
    BY_FETCHXML,
    BY_ODATA_FUNCTION,
    DATE_OPS,
    FETCHXML_ALIASES,
    FETCHXML_UNSUPPORTED,
    ODATA_ALIASES,
    ODATA_UNSUPPORTED,
    OFFLINE_OPS,
    SPEC,
    SPECS,
    USER_OPS,
    Values,
    allows,
    family,
    same_family,
)
from fieldsync.records.service import Records
from fieldsync.schema.builtin import builtin_relationships, builtin_tables
from fieldsync.schema.model import Column, ColumnType, Option, Schema, Table, define_table
from fieldsync.store.store import Store

T = ColumnType
FN = "Microsoft.Dynamics.CRM."
NOW = dt.datetime(2026, 3, 18, 15, 30, tzinfo=dt.UTC)  # a Wednesday
USER = uuid.UUID(int=101)
TEAM = uuid.UUID(int=202)
OTHER = uuid.UUID(int=303)
BU = uuid.UUID(int=404)
BINDING = UserBinding(
    user_id=USER,
    business_unit_id=BU,
    teams=frozenset({TEAM}),
    hierarchy=frozenset({OTHER}),
    language=1033,
)
OPTIONS = tuple(Option(v, f"o{v}") for v in range(1, 6))

# one column of each type that takes a condition; the name is the type's
COLUMNS = {
    T.STRING: Column("s", T.STRING, max_length=20),
    T.MEMO: Column("m", T.MEMO),
    T.INTEGER: Column("i", T.INTEGER),
    T.BIGINT: Column("big", T.BIGINT),
    T.DECIMAL: Column("d", T.DECIMAL, precision=2),
    T.MONEY: Column("mo", T.MONEY),
    T.FLOAT: Column("f", T.FLOAT, precision=2),
    T.BOOLEAN: Column("flag", T.BOOLEAN),
    T.DATETIME: Column("t", T.DATETIME),
    T.DATE: Column("day", T.DATE),
    T.CHOICE: Column("ch", T.CHOICE, options=OPTIONS),
    T.MULTICHOICE: Column("mc", T.MULTICHOICE, options=OPTIONS),
    T.UNIQUEIDENTIFIER: Column("u", T.UNIQUEIDENTIFIER),
}
TABLE = define_table("new_ops", ownership="organization", columns=list(COLUMNS.values()))
SCHEMA = Schema((*builtin_tables(), TABLE), builtin_relationships())


# -- the table itself --------------------------------------------------------------------------


def test_every_operator_is_in_the_table_once() -> None:
    assert [s.op for s in SPECS] == list(dict.fromkeys(s.op for s in SPECS))
    assert set(SPEC) == set(Op)
    assert {op.value: op for op in Op} == BY_FETCHXML
    for s in SPECS:
        assert s.types, s.op
        assert (s.binds is not None) == (s.op in USER_OPS)
        assert (s.relative is not None) == (s.op in DATE_OPS)
    # the names of one language never collide with its aliases or its refused names
    assert not set(FETCHXML_ALIASES) & (set(BY_FETCHXML) | FETCHXML_UNSUPPORTED)
    assert not set(ODATA_ALIASES) & (set(BY_ODATA_FUNCTION) | ODATA_UNSUPPORTED)
    assert not set(BY_ODATA_FUNCTION) & ODATA_UNSUPPORTED


def test_offline_filters_take_comparisons_patterns_lists_nulls_and_user_operators() -> None:
    assert (
        {Op.EQ, Op.NE, Op.GT, Op.GE, Op.LT, Op.LE, Op.IN, Op.NOT_IN, Op.NULL, Op.NOT_NULL}
        | {Op.LIKE, Op.NOT_LIKE, Op.BEGINS_WITH, Op.NOT_BEGIN_WITH}
        | {Op.ENDS_WITH, Op.NOT_END_WITH}
        | USER_OPS
    ) == OFFLINE_OPS


def test_one_column_family_map() -> None:
    assert same_family(T.STRING, T.MEMO)
    assert same_family(T.INTEGER, T.MONEY)
    assert same_family(T.LOOKUP, T.UNIQUEIDENTIFIER)
    assert not same_family(T.CHOICE, T.INTEGER)
    assert not same_family(T.DATE, T.DATETIME)
    assert not same_family(T.MULTICHOICE, T.MULTICHOICE)
    assert family(T.FILE) is None
    assert family(T.IMAGE) is None


# -- one operator, written in both languages ---------------------------------------------------

Pair = tuple[str, str]  # (FetchXML <condition> element, OData $filter)
TEXTS = st.sampled_from(["a", "b", "ab", "Ab", "ba", "é", "x"])
INTS = st.integers(-2, 3)
DECIMALS = st.sampled_from(["-1.5", "0", "1.25", "2"])
FLOATS = st.sampled_from(["-2.5", "0", "1.25", "3"])
MOMENTS = [NOW + dt.timedelta(hours=h) for h in (-800, -50, -30, -3, 0, 2, 30, 100, 900)]
DAYS = [NOW.date() + dt.timedelta(days=d) for d in (-40, -2, -1, 0, 1, 3, 40)]
IDS = [USER, TEAM, OTHER, BU, uuid.UUID(int=505)]

# a literal of each column type: (FetchXML text, OData literal)
LITERALS: dict[ColumnType, st.SearchStrategy[Pair]] = {
    T.STRING: TEXTS.map(lambda v: (v, f"'{v}'")),
    T.MEMO: TEXTS.map(lambda v: (v, f"'{v}'")),
    T.INTEGER: INTS.map(lambda v: (str(v), str(v))),
    T.BIGINT: INTS.map(lambda v: (str(v * 2**33), str(v * 2**33))),
    T.DECIMAL: DECIMALS.map(lambda v: (v, v)),
    T.MONEY: DECIMALS.map(lambda v: (v, v)),
    T.FLOAT: FLOATS.map(lambda v: (v, v)),
    T.BOOLEAN: st.booleans().map(lambda v: (str(v).lower(), str(v).lower())),
    T.DATETIME: st.sampled_from(MOMENTS).map(
        lambda v: (v.isoformat(), v.isoformat().replace("+00:00", "Z"))
    ),
    T.DATE: st.sampled_from(DAYS).map(lambda v: (v.isoformat(), v.isoformat())),
    T.CHOICE: st.integers(1, 5).map(lambda v: (str(v), str(v))),
    T.UNIQUEIDENTIFIER: st.sampled_from(IDS).map(lambda v: (str(v), str(v))),
}
# row values of each column
ROW_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "s": TEXTS,
    "m": TEXTS,
    "i": INTS,
    "big": INTS.map(lambda v: v * 2**33),
    "d": DECIMALS,
    "mo": DECIMALS,
    "f": FLOATS.map(float),
    "flag": st.booleans(),
    "t": st.sampled_from(MOMENTS),
    "day": st.sampled_from(DAYS),
    "ch": st.integers(1, 5),
    "mc": st.lists(st.integers(1, 5), max_size=3, unique=True).map(sorted),
    "u": st.sampled_from(IDS),
}


def fx(col: str, op: str, value: str | None = None, values: list[str] | None = None) -> str:
    attr = "" if value is None else f" value='{value}'"
    body = "".join(f"<value>{v}</value>" for v in values or [])
    return f"<condition attribute='{col}' operator='{op}'{attr}>{body}</condition>"


def crm(name: str, col: str, **params: str) -> str:
    more = "".join(f",{k}={v}" for k, v in params.items())
    return f"{FN}{name}(PropertyName='{col}'{more})"


def _types(op: Op) -> list[ColumnType]:
    return [t for t in COLUMNS if allows(op, t)]


def _spelled(op: Op) -> Callable[[ColumnType], st.SearchStrategy[Pair]]:
    """How ``op`` is written in both languages, on a column of a given type."""
    s = SPEC[op]
    odata_name = (s.odata or "").removeprefix(FN)

    def on(t: ColumnType) -> st.SearchStrategy[Pair]:
        col = COLUMNS[t].name
        if s.compare is not None:
            return LITERALS[t].map(lambda v: (fx(col, op.value, v[0]), f"{col} {op.value} {v[1]}"))
        if op in (Op.NULL, Op.NOT_NULL):
            return st.just((fx(col, op.value), f"{col} {s.odata}"))
        if s.values is Values.LIST:
            return st.lists(LITERALS[t], min_size=1, max_size=3).map(
                lambda vs: (
                    fx(col, op.value, values=[v[0] for v in vs]),
                    crm(odata_name, col, PropertyValues=f"[{','.join(v[1] for v in vs)}]"),
                )
            )
        if s.like is not None:
            function = {"{}": "contains", "{}%": "startswith", "%{}": "endswith"}[s.like]
            shape = "%{}%" if function == "contains" else "{}"

            def like(v: str) -> Pair:
                odata = f"{function}({col},'{v}')"
                return fx(col, op.value, shape.format(v)), f"not {odata}" if s.negated else odata

            return TEXTS.map(like)
        if s.values is Values.CHOICES:
            return st.lists(st.integers(1, 5), min_size=1, max_size=3).map(
                lambda vs: (
                    fx(col, op.value, values=[str(v) for v in vs]),
                    crm(odata_name, col, PropertyValues=f"[{','.join(map(str, vs))}]"),
                )
            )
        if s.values is Values.NONE:
            return st.just((fx(col, op.value), crm(odata_name, col)))
        if s.values in (Values.DAYS, Values.HOURS):
            return st.integers(1, 40).map(
                lambda n: (fx(col, op.value, str(n)), crm(odata_name, col, PropertyValue=str(n)))
            )
        assert s.values is Values.DAY
        return st.sampled_from(DAYS).map(
            lambda d: (
                fx(col, op.value, d.isoformat()),
                crm(odata_name, col, PropertyValue=f"'{d.isoformat()}'"),
            )
        )

    return on


CONDITIONS: st.SearchStrategy[Pair] = st.sampled_from(list(Op)).flatmap(
    lambda op: st.sampled_from(_types(op)).flatmap(_spelled(op))
)


def fetchxml_filter(condition: str, schema: Schema = SCHEMA) -> Node:
    text = f"<fetch><entity name='new_ops'><filter>{condition}</filter></entity></fetch>"
    node = parse_fetchxml(text, schema).filter
    assert node is not None
    return node


def odata_filter(text: str, schema: Schema = SCHEMA) -> Node:
    return parse_filter(text, schema.table("new_ops"), schema)


EACH_OP = pytest.mark.parametrize("op", list(Op), ids=lambda op: op.value)
FEW = settings(max_examples=10, deadline=None)


@EACH_OP
@FEW
@given(data=st.data())
def test_every_operator_can_be_written_in_both_languages(op: Op, data: st.DataObject) -> None:
    assert _types(op), op
    for t in _types(op):
        fetch, odata = data.draw(_spelled(op)(t))
        fetchxml_filter(fetch)
        odata_filter(odata)


@EACH_OP
@FEW
@given(data=st.data())
def test_both_languages_accept_an_operator_on_the_same_column_types(
    op: Op, data: st.DataObject
) -> None:
    """Where the table says no, FetchXML and OData both refuse (a QueryError, a 400)."""
    for t, column in COLUMNS.items():
        if allows(op, t):
            continue
        template = _types(op)[0]
        fetch, odata = data.draw(_spelled(op)(template))
        other = COLUMNS[template].name
        with pytest.raises(QueryError):
            fetchxml_filter(fetch.replace(f"'{other}'", f"'{column.name}'", 1))
        odata = odata.replace(f"'{other}'", f"'{column.name}'", 1)
        if odata.startswith(f"{other} "):
            odata = column.name + odata[len(other) :]
        odata = odata.replace(f"({other},", f"({column.name},")
        with pytest.raises(QueryError):
            odata_filter(odata)


def test_column_comparisons_follow_the_family_map() -> None:
    for a in COLUMNS.values():
        for b in COLUMNS.values():
            fetch = f"<condition attribute='{a.name}' operator='eq' valueof='{b.name}'/>"
            odata = f"{a.name} eq {b.name}"
            if allows(Op.EQ, a.type) and same_family(a.type, b.type):
                assert fetchxml_filter(fetch) == odata_filter(odata)
            else:
                with pytest.raises(QueryError):
                    fetchxml_filter(fetch)
                with pytest.raises(QueryError):
                    odata_filter(odata)


@pytest.fixture
def world(store: Store, records: Records) -> tuple[Store, Records]:
    store.create_table(TABLE)
    return store, records


ROWS = st.lists(
    st.fixed_dictionaries({}, optional={k: st.none() | v for k, v in ROW_VALUES.items()}),
    min_size=1,
    max_size=10,
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(rows=ROWS, pairs=st.lists(CONDITIONS, min_size=4, max_size=16))
def test_an_operator_finds_the_same_rows_from_fetchxml_and_odata(
    world: tuple[Store, Records], rows: list[dict[str, Any]], pairs: list[Pair]
) -> None:
    store, records = world
    with store.write() as conn:
        conn.execute(store.sql_table("new_ops").delete())
    records.create_many("new_ops", [{"name": f"r{n}", **r} for n, r in enumerate(rows)])
    schema = store.schema
    table: Table = schema.table("new_ops")

    def found(node: Node) -> set[Any]:
        bound = bind(node, table, user=BINDING, now=NOW, tables=schema.table)
        return {r["new_opsid"] for r in records.retrieve_multiple("new_ops", filter=bound)}

    for fetch, odata in pairs:
        by_fetchxml = found(fetchxml_filter(fetch, schema))
        by_odata = found(odata_filter(odata, schema))
        assert by_fetchxml == by_odata, (store.dialect, fetch, odata)
