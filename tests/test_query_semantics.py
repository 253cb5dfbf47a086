"""SQL on SQLite, SQL on PostgreSQL and the Python evaluator agree on every row, for random
filter trees over every column type, link filters of the four kinds, column comparisons, and
user and date operators bound to a caller and a moment."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fieldsync.query.ast import (
    And,
    ColumnCompare,
    Condition,
    Link,
    LinkFilter,
    LinkType,
    Node,
    Not,
    Op,
    Or,
)
from fieldsync.query.bind import UserBinding, bind, date_range
from fieldsync.query.evaluate import matches
from fieldsync.query.like import parse_like
from fieldsync.records.service import Records
from fieldsync.schema.model import Column, ColumnType, Option, define_table
from fieldsync.store.store import Store

T = ColumnType
NOW = dt.datetime(2026, 3, 18, 15, 30, tzinfo=dt.UTC)  # a Wednesday
USER = uuid.UUID(int=101)
TEAM = uuid.UUID(int=202)
OTHER = uuid.UUID(int=303)
OPTIONS = tuple(Option(v, f"o{v}") for v in range(1, 6))
BINDING = UserBinding(
    user_id=USER,
    business_unit_id=uuid.UUID(int=1),
    teams=frozenset({TEAM}),
    hierarchy=frozenset({OTHER}),
)
TEXT = st.text(alphabet="aAbBéÉ%_[] z", max_size=5)
PATTERN = st.text(alphabet="aAbé%_[]^z", max_size=5)
IDS = st.sampled_from([USER, TEAM, OTHER, uuid.UUID(int=404)])
DATETIMES = st.sampled_from(
    [NOW + dt.timedelta(hours=h) for h in (-800, -50, -30, -20, -3, 0, 2, 20, 30, 100, 900)]
)
DATES = st.sampled_from([NOW.date() + dt.timedelta(days=d) for d in (-40, -2, -1, 0, 1, 3, 40)])

VALUES: dict[str, st.SearchStrategy[Any]] = {
    "s": TEXT,
    "m": TEXT,
    "i": st.integers(-5, 5),
    "big": st.integers(-(2**40), 2**40),
    "d": st.decimals(-100, 100, places=2),
    "f": st.sampled_from([-2.5, 0.0, 1.25, 3.0]),
    "flag": st.booleans(),
    "t": DATETIMES,
    "day": DATES,
    "ch": st.integers(1, 5),
    "mc": st.lists(st.integers(1, 5), max_size=3, unique=True).map(sorted),
    "u": IDS,
    "owner": IDS,
}
COMPARABLE = ("s", "m", "i", "big", "d", "f", "t", "day", "ch")
PAIRS = [("i", "big"), ("s", "m"), ("i", "ch"), ("t", "t"), ("day", "day")]


def _table_columns() -> list[Column]:
    return [
        Column("s", T.STRING, max_length=20),
        Column("m", T.MEMO),
        Column("i", T.INTEGER),
        Column("big", T.BIGINT),
        Column("d", T.DECIMAL, precision=2),
        Column("f", T.FLOAT, precision=2),
        Column("flag", T.BOOLEAN),
        Column("t", T.DATETIME),
        Column("day", T.DATE),
        Column("ch", T.CHOICE, options=OPTIONS),
        Column("mc", T.MULTICHOICE, options=OPTIONS),
        Column("u", T.UNIQUEIDENTIFIER),
        Column("owner", T.UNIQUEIDENTIFIER),
    ]


@pytest.fixture
def world(store: Store, records: Records) -> tuple[Store, Records]:
    store.create_table(define_table("new_q", ownership="organization", columns=_table_columns()))
    store.create_table(
        define_table(
            "new_qchild",
            ownership="organization",
            columns=[
                Column("parent", T.LOOKUP, targets=("new_q",)),
                Column("n", T.INTEGER),
                Column("s", T.STRING, max_length=20),
            ],
        )
    )
    return store, records


def conditions(column: str) -> st.SearchStrategy[Node]:
    value = VALUES[column]
    options: list[st.SearchStrategy[Node]] = [
        st.sampled_from([Op.NULL, Op.NOT_NULL]).map(lambda op: Condition(column, op)),
    ]
    if column in COMPARABLE or column in ("u", "owner", "flag"):
        ops = [Op.EQ, Op.NE] + ([Op.GT, Op.GE, Op.LT, Op.LE] if column in COMPARABLE else [])
        options.append(st.builds(Condition, st.just(column), st.sampled_from(ops), value))
    if column not in ("flag", "mc"):
        options.append(
            st.builds(
                Condition,
                st.just(column),
                st.sampled_from([Op.IN, Op.NOT_IN]),
                st.lists(value, min_size=1, max_size=3).map(tuple),
            )
        )
    if column in ("s", "m"):
        like_ops = [
            Op.LIKE,
            Op.NOT_LIKE,
            Op.BEGINS_WITH,
            Op.NOT_BEGIN_WITH,
            Op.ENDS_WITH,
            Op.NOT_END_WITH,
        ]
        options.append(st.builds(Condition, st.just(column), st.sampled_from(like_ops), PATTERN))
    if column == "mc":
        options.append(
            st.builds(
                Condition,
                st.just(column),
                st.sampled_from([Op.CONTAIN_VALUES, Op.NOT_CONTAIN_VALUES]),
                st.lists(st.integers(1, 5), min_size=1, max_size=3).map(tuple),
            )
        )
    if column in ("t", "day"):
        options.append(
            st.builds(
                Condition,
                st.just(column),
                st.sampled_from(
                    [Op.TODAY, Op.YESTERDAY, Op.TOMORROW, Op.THIS_WEEK, Op.THIS_MONTH, Op.THIS_YEAR]
                ),
            )
        )
        options.append(
            st.builds(
                Condition,
                st.just(column),
                st.sampled_from(
                    [
                        Op.LAST_X_DAYS,
                        Op.NEXT_X_DAYS,
                        Op.LAST_X_HOURS,
                        Op.NEXT_X_HOURS,
                        Op.OLDER_X_DAYS,
                    ]
                ),
                st.integers(0, 40),
            )
        )
        options.append(
            st.builds(
                Condition,
                st.just(column),
                st.sampled_from([Op.ON, Op.ON_OR_BEFORE, Op.ON_OR_AFTER]),
                DATES,
            )
        )
    if column == "owner":
        options.append(
            st.builds(
                Condition,
                st.just(column),
                st.sampled_from(
                    [
                        Op.EQ_USERID,
                        Op.NE_USERID,
                        Op.EQ_USERTEAMS,
                        Op.EQ_USERORUSERTEAMS,
                        Op.EQ_USERORUSERHIERARCHY,
                        Op.EQ_USERORUSERHIERARCHYANDTEAMS,
                    ]
                ),
            )
        )
    return st.one_of(options)


LEAVES = st.one_of(
    st.sampled_from(sorted(VALUES)).flatmap(conditions),
    st.builds(
        lambda pair, op: ColumnCompare(pair[0], op, pair[1]),
        st.sampled_from(PAIRS),
        st.sampled_from([Op.EQ, Op.NE, Op.GT, Op.GE, Op.LT, Op.LE]),
    ),
)
CHILD_LEAVES = st.one_of(
    st.builds(
        Condition, st.just("n"), st.sampled_from([Op.EQ, Op.GT, Op.LT, Op.NE]), st.integers(0, 3)
    ),
    st.builds(Condition, st.just("s"), st.sampled_from([Op.EQ, Op.LIKE]), TEXT),
    st.builds(Condition, st.sampled_from(["n", "s"]), st.sampled_from([Op.NULL, Op.NOT_NULL])),
)


def trees(leaves: st.SearchStrategy[Node]) -> st.SearchStrategy[Node]:
    return st.recursive(
        leaves,
        lambda inner: st.one_of(
            st.lists(inner, min_size=1, max_size=3).map(lambda xs: And(tuple(xs))),
            st.lists(inner, min_size=1, max_size=3).map(lambda xs: Or(tuple(xs))),
            inner.map(Not),
        ),
        max_leaves=6,
    )


LINKS = st.builds(
    lambda kind, f: LinkFilter(Link("new_qchild", "parent", "new_qid", type=kind, filter=f)),
    st.sampled_from([LinkType.ANY, LinkType.NOT_ANY, LinkType.ALL, LinkType.NOT_ALL]),
    st.none() | trees(CHILD_LEAVES),
)
FILTERS = trees(st.one_of(LEAVES, LINKS))

ROWS = st.lists(
    st.fixed_dictionaries({}, optional={k: st.none() | v for k, v in VALUES.items()}),
    min_size=1,
    max_size=12,
)
CHILDREN = st.lists(
    st.tuples(
        st.integers(0, 11),
        st.fixed_dictionaries(
            {}, optional={"n": st.none() | st.integers(0, 3), "s": st.none() | TEXT}
        ),
    ),
    max_size=12,
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(rows=ROWS, children=CHILDREN, filters=st.lists(FILTERS, min_size=1, max_size=8))
def test_sql_and_python_agree(
    world: tuple[Store, Records],
    rows: list[dict[str, Any]],
    children: list[tuple[int, dict[str, Any]]],
    filters: list[Node],
) -> None:
    store, records = world
    with store.write() as conn:
        conn.execute(store.sql_table("new_qchild").delete())
        conn.execute(store.sql_table("new_q").delete())
    ids = records.create_many("new_q", [{"name": f"r{n}", **r} for n, r in enumerate(rows)])
    kids = [
        {"name": "c", "parent": ids[parent], **values}
        for parent, values in children
        if parent < len(ids)
    ]
    records.create_many("new_qchild", kids)
    stored = {r["new_qid"]: r for r in records.retrieve_multiple("new_q")}
    by_parent: dict[Any, list[dict[str, Any]]] = {}
    for kid in records.retrieve_multiple("new_qchild"):
        by_parent.setdefault(kid["parent"], []).append(kid)

    def related(link: Link, row: dict[str, Any]) -> list[dict[str, Any]]:
        return by_parent.get(row[link.to_column], [])

    table = store.schema.table("new_q")
    for node in filters:
        bound = bind(node, table, user=BINDING, now=NOW, tables=store.schema.table)
        in_sql = {r["new_qid"] for r in records.retrieve_multiple("new_q", filter=bound)}
        in_python = {
            rid
            for rid, row in stored.items()
            if matches(bound, row, related=related)  # type: ignore[arg-type]
        }
        assert in_sql == in_python, (store.dialect, node, bound)


def test_strings_compare_case_insensitively(world: tuple[Store, Records]) -> None:
    _, records = world
    records.create_many("new_q", [{"name": "a", "s": "Éte"}, {"name": "b", "s": "ete"}])
    node = Condition("s", Op.EQ, "éTE")
    assert [r["name"] for r in records.retrieve_multiple("new_q", filter=node)] == ["a"]
    like = Condition("s", Op.LIKE, "%T[eé]")
    assert {r["name"] for r in records.retrieve_multiple("new_q", filter=like)} == {"a", "b"}


def test_link_filters_see_only_readable_related_rows(
    world: tuple[Store, Records],
) -> None:
    """A link filter never reveals related rows the caller may not read."""
    from fieldsync.platform import build
    from fieldsync.security.context import load_context

    store, records = world
    platform = build(store)
    org = platform.org
    reader = org.role("Q Reader", privileges={"new_q": {"read": "organization"}})
    ann = org.user("ann", roles=[reader])
    parent = records.create("new_q", {"name": "p"})
    records.create("new_qchild", {"name": "secret", "parent": parent, "n": 1})
    any_child = LinkFilter(Link("new_qchild", "parent", "new_qid", type=LinkType.ANY))
    ctx = load_context(store, ann)
    assert records.retrieve_multiple("new_q", filter=any_child) != []
    # ann cannot read new_qchild at all: for her, the parent has no related rows
    assert platform.records.retrieve_multiple("new_q", filter=any_child, caller=ctx) == []


@pytest.mark.parametrize(
    ("op", "value", "start", "end"),
    [
        (Op.TODAY, None, "2026-03-18T00:00", "2026-03-19T00:00"),
        (Op.YESTERDAY, None, "2026-03-17T00:00", "2026-03-18T00:00"),
        (Op.TOMORROW, None, "2026-03-19T00:00", "2026-03-20T00:00"),
        (Op.THIS_WEEK, None, "2026-03-15T00:00", "2026-03-22T00:00"),
        (Op.THIS_MONTH, None, "2026-03-01T00:00", "2026-04-01T00:00"),
        (Op.THIS_YEAR, None, "2026-01-01T00:00", "2027-01-01T00:00"),
        (Op.NEXT_X_DAYS, 2, "2026-03-18T15:30", "2026-03-21T00:00"),
        (Op.LAST_X_HOURS, 3, "2026-03-18T12:30", None),
        (Op.OLDER_X_DAYS, 10, None, "2026-03-08T15:30"),
        (Op.ON, dt.date(2026, 2, 28), "2026-02-28T00:00", "2026-03-01T00:00"),
        (Op.ON_OR_AFTER, dt.date(2026, 2, 28), "2026-02-28T00:00", None),
    ],
)
def test_date_ranges(op: Op, value: object, start: str | None, end: str | None) -> None:
    got_start, got_end = date_range(op, value, NOW)

    def parse(text: str | None) -> dt.datetime | None:
        return None if text is None else dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)

    assert got_start == parse(start)
    if op is not Op.LAST_X_HOURS:
        assert got_end == parse(end)


@pytest.mark.parametrize(
    ("pattern", "like", "hits", "misses"),
    [
        ("ab%", "ab%", ["ab", "abc"], ["a", "xab"]),
        ("a_c", "a_c", ["abc"], ["ac", "abbc"]),
        ("[%]off", "\\%off", ["%off"], ["xoff"]),
        ("a[bc]d", None, ["abd", "acd"], ["aed"]),
        ("a[^bc]d", None, ["aed"], ["abd"]),
        ("a[b-d]", None, ["ac"], ["ae"]),
        ("[", "[", ["["], ["a"]),
    ],
)
def test_like_patterns(pattern: str, like: str | None, hits: list[str], misses: list[str]) -> None:
    from fieldsync.query.like import compiled

    assert parse_like(pattern).like == like
    for text in hits:
        assert compiled(pattern).fullmatch(text), text
    for text in misses:
        assert not compiled(pattern).fullmatch(text), text


def test_decimal_filters_compare_numbers(world: tuple[Store, Records]) -> None:
    store, records = world
    records.create_many(
        "new_q",
        [
            {"name": n, "d": Decimal(v)}
            for n, v in [("neg", "-10.5"), ("small", "2.25"), ("big", "99.99")]
        ],
    )
    node = Condition("d", Op.GT, Decimal("2.24"))
    got = {r["name"] for r in records.retrieve_multiple("new_q", filter=node)}
    assert got == {"small", "big"}
    with store.read() as conn:
        assert (
            conn.execute(sa.select(sa.func.count()).select_from(store.sql_table("new_q"))).scalar()
            == 3
        )
