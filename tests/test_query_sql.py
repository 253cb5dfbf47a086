"""Dataverse SQL -> the query tree: the subset served, translated exactly; everything else
refused with a 400 naming it; a fuzz test that nothing but ``QueryError`` comes out; and,
on SQLite and PostgreSQL, property tests that a SQL query finds the same rows as the
equivalent OData ``$filter`` or FetchXML, as SYSTEM and as a user who reads only their own
rows (joins included)."""

from __future__ import annotations

import contextlib
import uuid
from dataclasses import dataclass
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fieldsync.errors import QueryError
from fieldsync.platform import Platform
from fieldsync.query.ast import (
    And,
    ColumnCompare,
    Condition,
    Link,
    LinkType,
    Not,
    Op,
    Or,
    Order,
    Query,
)
from fieldsync.query.fetchxml import parse_fetchxml
from fieldsync.query.odata import parse_query_options
from fieldsync.query.sql import MAX_CHARS, Output, SqlError, parse_sql
from fieldsync.records.service import SYSTEM
from fieldsync.schema.builtin import builtin_relationships, builtin_tables
from fieldsync.schema.model import Schema
from fieldsync.security.context import load_context
from fieldsync.security.model import SecurityContext
from fieldsync.security.roles import BASIC_USER

SCHEMA = Schema(builtin_tables(), builtin_relationships())
GUID = "e062b974-7f8d-dc11-9048-0003ff27ac3b"


def sql(text: str) -> Query:
    return parse_sql(text, SCHEMA).query


# -- the subset ------------------------------------------------------------------------------


def test_columns_top_order_and_where() -> None:
    q = sql(
        "SELECT TOP 10 name, numberofemployees FROM account "
        "WHERE numberofemployees >= 5 AND name LIKE 'A%' ORDER BY name DESC, revenue"
    )
    assert q == Query(
        "account",
        columns=("name", "numberofemployees"),
        filter=And(
            (
                Condition("numberofemployees", Op.GE, 5),
                Condition("name", Op.LIKE, "A%"),
            )
        ),
        orders=(Order("name", True), Order("revenue")),
        top=10,
    )


@pytest.mark.parametrize(
    ("where", "node"),
    [
        ("numberofemployees = 3", Condition("numberofemployees", Op.EQ, 3)),
        ("numberofemployees != 3", Condition("numberofemployees", Op.NE, 3)),
        ("numberofemployees <> 3", Condition("numberofemployees", Op.NE, 3)),
        ("revenue < -3", Condition("revenue", Op.LT, Decimal(-3))),
        ("3 < numberofemployees", Condition("numberofemployees", Op.GT, 3)),
        ("revenue <= 10.5", Condition("revenue", Op.LE, Decimal("10.50"))),
        ("name = N'Ünï'", Condition("name", Op.EQ, "Ünï")),
        ("name NOT LIKE '[a-c]%'", Condition("name", Op.NOT_LIKE, "[a-c]%")),
        ("numberofemployees IN (1, 2, 2)", Condition("numberofemployees", Op.IN, (1, 2))),
        ("numberofemployees NOT IN (1)", Condition("numberofemployees", Op.NOT_IN, (1,))),
        ("telephone1 IS NULL", Condition("telephone1", Op.NULL)),
        ("telephone1 IS NOT NULL", Condition("telephone1", Op.NOT_NULL)),
        ("creditonhold = 1", Condition("creditonhold", Op.EQ, True)),
        ("creditonhold = 'false'", Condition("creditonhold", Op.EQ, False)),
        ("statecode = 0", Condition("statecode", Op.EQ, 0)),
        (
            "primarycontactid = '" + GUID + "'",
            Condition("primarycontactid", Op.EQ, uuid.UUID(GUID)),
        ),
        (
            "_primarycontactid_value = '" + GUID + "'",
            Condition("primarycontactid", Op.EQ, uuid.UUID(GUID)),
        ),
        ("name = telephone1", ColumnCompare("name", Op.EQ, "telephone1")),
        (
            "numberofemployees BETWEEN 1 AND 5",
            And(
                (Condition("numberofemployees", Op.GE, 1), Condition("numberofemployees", Op.LE, 5))
            ),
        ),
        (
            "NOT (name = 'a' OR (name = 'b'))",
            Not(Or((Condition("name", Op.EQ, "a"), Condition("name", Op.EQ, "b")))),
        ),
        ("ACCOUNT.Name = 'a'", Condition("name", Op.EQ, "a")),
    ],
)
def test_conditions(where: str, node: object) -> None:
    assert sql(f"SELECT name FROM account WHERE {where}").filter == node


def test_joins_on_lookups_in_both_directions_nested() -> None:
    parsed = parse_sql(
        "SELECT a.name, c.fullname AS contact, u.fullname FROM account AS a "
        "LEFT OUTER JOIN contact c ON a.primarycontactid = c.contactid "
        "INNER JOIN systemuser u ON u.systemuserid = c.ownerid "
        "WHERE c.lastname = 'Ng' ORDER BY contact, u.fullname DESC",
        SCHEMA,
    )
    user = Link("systemuser", "systemuserid", "ownerid", "u", LinkType.INNER, ("fullname",))
    contact = Link(
        "contact",
        "contactid",
        "primarycontactid",
        "c",
        LinkType.OUTER,
        ("fullname",),
        None,
        (user,),
    )
    assert parsed.query == Query(
        "account",
        columns=("name",),
        filter=Condition("lastname", Op.EQ, "Ng", "c"),
        links=(contact,),
        orders=(Order("fullname", False, "c"), Order("fullname", True, "u")),
    )
    assert parsed.outputs == (
        Output("name", "name"),
        Output("contact", "fullname", "c", aliased=True),
        Output("u.fullname", "fullname", "u"),
    )
    one_to_many = sql(
        "SELECT name FROM account a JOIN contact c ON c.parentcustomerid = a.accountid"
    )
    assert one_to_many.links == (Link("contact", "parentcustomerid", "accountid", "c"),)


def test_count_and_distinct() -> None:
    parsed = parse_sql("SELECT COUNT(*) AS n FROM account WHERE name LIKE 'a%'", SCHEMA)
    assert parsed.count == "n"
    assert parsed.query.columns == ("accountid",)
    assert parse_sql("SELECT COUNT(*) FROM account", SCHEMA).count == "count"
    counted = parse_sql("SELECT COUNT(telephone1) FROM account", SCHEMA)
    assert counted.query.filter == Condition("telephone1", Op.NOT_NULL)
    assert sql("SELECT DISTINCT name FROM account").distinct


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("SELECT * FROM account", "SELECT *"),
        ("SELECT a.* FROM account a", "SELECT *"),
        ("SELECT name FROM account GROUP BY name", "GROUP BY"),
        ("SELECT name FROM account ORDER BY name OFFSET 1 ROWS FETCH NEXT 2 ROWS ONLY", "OFFSET"),
        ("SELECT name FROM account UNION SELECT fullname FROM contact", "UNION"),
        ("DELETE FROM account", "read-only"),
        ("UPDATE account SET name = 'x'", "read-only"),
        ("INSERT INTO account (name) VALUES ('x')", "read-only"),
        ("DROP TABLE account", "read-only"),
        ("SELECT name FROM account; DELETE FROM account", "exactly one"),
        ("SELECT UPPER(name) FROM account", "UPPER"),
        ("SELECT SUM(revenue) FROM account", "SUM"),
        ("SELECT name, COUNT(*) FROM account", "GROUP BY"),
        ("SELECT COUNT(DISTINCT name) FROM account", "COUNT(DISTINCT"),
        ("SELECT name FROM account WHERE name IN (SELECT fullname FROM contact)", "subqueries"),
        ("SELECT name FROM (SELECT name FROM account) x", "subqueries"),
        ("WITH x AS (SELECT name FROM account) SELECT name FROM x", "WITH"),
        ("SELECT name FROM account a CROSS JOIN contact c", "CROSS JOIN"),
        (
            "SELECT name FROM account a RIGHT JOIN contact c ON a.primarycontactid = c.contactid",
            "RIGHT",
        ),
        (
            "SELECT name FROM account a FULL JOIN contact c ON a.primarycontactid = c.contactid",
            "FULL",
        ),
        ("SELECT name FROM account a JOIN contact c ON a.name = c.fullname", "lookup"),
        ("SELECT name FROM account a JOIN contact c ON 1 = 1", "column = column"),
        ("SELECT name FROM account WHERE name = NULL", "IS NULL"),
        ("SELECT name FROM account WHERE numberofemployees = 'many'", "whole number"),
        ("SELECT name FROM account WHERE name = 5", "quoted text"),
        ("SELECT name FROM account WHERE name = numberofemployees", "cannot compare"),
        ("SELECT name FROM account WHERE creditonhold < 1", "cannot be used"),
        ("SELECT name FROM account WHERE statecode BETWEEN 0 AND 1", "cannot be used"),
        ("SELECT name FROM account WHERE revenue < createdon", "cannot compare"),
        ("SELECT name FROM account WHERE CASE WHEN 1 = 1 THEN 1 END = 1", "CASE"),
        ("SELECT name FROM account ORDER BY 1", "position"),
        ("SELECT name FROM nope", "no table"),
        ("SELECT nope FROM account", "no column"),
        ("SELECT x.name FROM account", "not a table or alias"),
        ("SELECT name FROM account WHERE name LIKE 'a!%' ESCAPE '!'", "ESCAPE"),
        ("SELECT name FROM account WHERE numberofemployees LIKE '1%'", "text columns"),
        ("SELECT name AS n, telephone1 AS n FROM account", "same name"),
        (
            "SELECT COUNT(*) FROM account a JOIN account a ON a.parentaccountid = a.accountid",
            "twice",
        ),
        ("SELECT name FROM other.account", "dbo"),
        ("", "empty"),
        ("SELECT", "FROM"),
        ("SELECT name FROM account WHERE (", "cannot be parsed"),
    ],
)
def test_outside_the_subset_is_refused_by_name(text: str, named: str) -> None:
    with pytest.raises(SqlError) as caught:
        parse_sql(text, SCHEMA)
    assert named.lower() in caught.value.message.lower()
    assert caught.value.status == 400


def test_an_oversized_or_deeply_nested_query_is_refused() -> None:
    with pytest.raises(SqlError, match="longer than"):
        parse_sql("SELECT name FROM account WHERE " + "name = 'x' OR " * MAX_CHARS, SCHEMA)
    deep = "SELECT name FROM account WHERE " + "(" * 3000 + "name = 'x'" + ")" * 3000
    with pytest.raises(QueryError):
        parse_sql(deep, SCHEMA)
    for levels in (30, 60):
        nested = "SELECT name FROM account WHERE " + "NOT (" * levels + "name = 'x'" + ")" * levels
        with pytest.raises(SqlError, match="nested"):
            parse_sql(nested.replace("NOT (", "((((") if levels == 30 else nested, SCHEMA)
    flat = " OR ".join(f"numberofemployees = {i}" for i in range(500))
    assert parse_sql(f"SELECT name FROM account WHERE {flat}", SCHEMA).query.filter is not None
    with pytest.raises(SqlError, match="more than 500 conditions"):
        parse_sql(f"SELECT name FROM account WHERE {flat} OR name = 'x'", SCHEMA)
    with pytest.raises(SqlError, match="TOP is at most 5000"):
        parse_sql("SELECT TOP 5001 name FROM account", SCHEMA)
    joins = " ".join(
        f"JOIN account a{i} ON a{i}.parentaccountid = a{i - 1}.accountid" for i in range(1, 17)
    )
    with pytest.raises(SqlError, match="more than 15 joins"):
        parse_sql(f"SELECT a0.name FROM account a0 {joins}", SCHEMA)


PIECES = [
    "SELECT ", "TOP 3 ", "DISTINCT ", "name", ", ", "a.name", " AS x", "COUNT(*)", " FROM ",
    "account", " a", " JOIN contact c ON ", "a.primarycontactid = c.contactid", " WHERE ",
    "name = 'x'", " AND ", " OR ", "NOT ", "(", ")", "numberofemployees IN (1,2)", " IS NULL",
    " LIKE 'a%'", " ORDER BY ", " DESC", ";", "'", "[", "]", "--", "/*", "*", "N'é'", "-1", "1e9",
    " GROUP BY name", " BETWEEN 1 AND 2", "@p", "?", "$1", "0x1F", "\x00",
]  # fmt: skip
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.lists(st.sampled_from(PIECES), max_size=30))
def test_fuzz_only_query_errors(pieces: list[str]) -> None:
    with contextlib.suppress(QueryError):
        parse_sql("".join(pieces), SCHEMA)


@FUZZ
@given(st.text(max_size=120))
def test_fuzz_random_text(text: str) -> None:
    with contextlib.suppress(QueryError):
        parse_sql("SELECT name FROM account WHERE " + text, SCHEMA)


# -- the same rows as OData and FetchXML, on both backends -----------------------------------


@dataclass
class World:
    platform: Platform
    clerk: SecurityContext


NAMES = [
    "Anchor",
    "apex",
    "Birch",
    "bolt",
    "Cedar",
    "Ünïcode",
    "Dune",
    "apex two",
    "50% off",
    "[x]",
]
LASTNAMES = ["Ng", "Okafor", "ng", "Smith"]


@pytest.fixture
def world(platform: Platform) -> World:
    """Accounts and contacts, some owned by a Basic User (who reads only their own rows)."""
    org = platform.org
    org.user("clerk", roles=[org.role_id(BASIC_USER)])
    clerk = load_context(platform.store, org.user_id("clerk"))
    records = platform.records
    contacts = []
    for i, last in enumerate(LASTNAMES):
        owner = clerk if i % 2 else SYSTEM
        contacts.append(records.create("contact", {"lastname": last}, caller=owner))
    for i, name in enumerate(NAMES):
        values = {
            "name": name,
            "numberofemployees": None if i % 4 == 3 else i % 5,
            "revenue": None if i % 3 == 2 else Decimal(i * 10),
            "telephone1": None if i % 2 else f"0{i}",
            "creditonhold": i % 3 == 0,
            "primarycontactid": None if i % 5 == 4 else contacts[i % len(contacts)],
        }
        records.create("account", values, caller=clerk if i % 3 == 1 else SYSTEM)
    return World(platform, clerk)


INT_OPS = [("=", "eq"), ("<>", "ne"), ("<", "lt"), (">", "gt"), ("<=", "le"), (">=", "ge")]
ints = st.integers(0, 5)


def leaf() -> st.SearchStrategy[tuple[str, str]]:
    compare = st.tuples(
        st.sampled_from(["numberofemployees", "revenue"]), st.sampled_from(INT_OPS), ints
    ).map(lambda t: (f"{t[0]} {t[1][0]} {t[2]}", f"{t[0]} {t[1][1]} {t[2]}"))
    text = st.tuples(st.sampled_from(["=", "<>"]), st.sampled_from([*NAMES, "APEX", "zz"])).map(
        lambda t: (
            f"name {t[0]} '{t[1]}'",
            f"name {'eq' if t[0] == '=' else 'ne'} '{t[1]}'",
        )
    )
    like = st.tuples(st.sampled_from(["a", "ap", "B", "5", "Ü"]), st.booleans()).map(
        lambda t: (
            f"name LIKE '{t[0]}%'" if t[1] else f"name LIKE '%{t[0]}%'",
            f"startswith(name,'{t[0]}')" if t[1] else f"contains(name,'{t[0]}')",
        )
    )
    inlist = st.lists(ints, min_size=1, max_size=3).map(
        lambda vs: (
            f"numberofemployees IN ({', '.join(map(str, vs))})",
            "(" + " or ".join(f"numberofemployees eq {v}" for v in vs) + ")",
        )
    )
    nulls = st.tuples(
        st.sampled_from(["telephone1", "numberofemployees", "revenue", "primarycontactid"]),
        st.booleans(),
    ).map(
        lambda t: (
            f"{t[0]} IS {'' if t[1] else 'NOT '}NULL",
            f"{'_primarycontactid_value' if t[0] == 'primarycontactid' else t[0]} "
            f"{'eq' if t[1] else 'ne'} null",
        )
    )
    flag = st.booleans().map(
        lambda b: (f"creditonhold = {int(b)}", f"creditonhold eq {str(b).lower()}")
    )
    return st.one_of(compare, text, like, inlist, nulls, flag)


filters = st.recursive(
    leaf(),
    lambda inner: st.one_of(
        st.tuples(inner, inner, st.sampled_from(["AND", "OR"])).map(
            lambda t: (f"({t[0][0]} {t[2]} {t[1][0]})", f"({t[0][1]} {t[2].lower()} {t[1][1]})")
        ),
        inner.map(lambda t: (f"NOT ({t[0]})", f"not ({t[1]})")),
    ),
    max_leaves=6,
)
PROPERTY = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def ids(world: World, query: Query, caller: SecurityContext) -> list[object]:
    rows = world.platform.records.query(query, caller=caller)
    return sorted(str(r["accountid"]) for r in rows)


@PROPERTY
@given(filters, st.booleans())
def test_sql_finds_the_rows_odata_finds(
    world: World, pair: tuple[str, str], as_clerk: bool
) -> None:
    where, odata = pair
    schema = world.platform.store.schema
    caller = world.clerk if as_clerk else SYSTEM
    by_sql = parse_sql(f"SELECT name FROM account WHERE {where}", schema).query
    table = schema.table("account")
    by_odata = parse_query_options({"$select": "name", "$filter": odata}, table, schema).query
    assert ids(world, by_sql, caller) == ids(world, by_odata, caller)


CONTACT_LEAVES = st.one_of(
    st.sampled_from([*LASTNAMES, "none"]).map(
        lambda n: (
            f"c.lastname = '{n}'",
            f"<condition attribute='lastname' operator='eq' value='{n}'/>",
        )
    ),
    st.booleans().map(
        lambda b: (
            f"c.lastname {'<>' if b else '='} 'Smith'",
            f"<condition attribute='lastname' operator='{'ne' if b else 'eq'}' value='Smith'/>",
        )
    ),
)


@PROPERTY
@given(
    st.sampled_from([("JOIN", "inner"), ("INNER JOIN", "inner"), ("LEFT JOIN", "outer")]),
    CONTACT_LEAVES,
    st.sampled_from(INT_OPS),
    ints,
    st.booleans(),
)
def test_sql_joins_find_the_rows_fetchxml_finds(
    world: World,
    join: tuple[str, str],
    contact: tuple[str, str],
    op: tuple[str, str],
    number: int,
    as_clerk: bool,
) -> None:
    """The joined table's read filter applies on both sides: an inner join never reaches a
    contact the caller may not read, an outer one shows it as no contact."""
    schema = world.platform.store.schema
    caller = world.clerk if as_clerk else SYSTEM
    text = (
        f"SELECT a.name, c.lastname FROM account a {join[0]} contact c "
        f"ON a.primarycontactid = c.contactid WHERE a.numberofemployees {op[0]} {number}"
    )
    xml = (
        "<fetch><entity name='account'><attribute name='name'/>"
        f"<filter><condition attribute='numberofemployees' operator='{op[1]}' value='{number}'/>"
        "</filter>"
        f"<link-entity name='contact' from='contactid' to='primarycontactid' alias='c' "
        f"link-type='{join[1]}'><attribute name='lastname'/></link-entity></entity></fetch>"
    )
    by_sql = parse_sql(text, schema).query
    by_fetch = parse_fetchxml(xml, schema)
    records = world.platform.records
    got = records.query(by_sql, caller=caller)
    assert sorted((str(r["accountid"]), r["c.lastname"]) for r in got) == sorted(
        (str(r["accountid"]), r["c.lastname"]) for r in records.query(by_fetch, caller=caller)
    )
    # a condition on the joined table: SQL's WHERE equals FetchXML's link-entity filter
    if join[1] == "inner":
        where = (
            "SELECT a.name FROM account a JOIN contact c ON a.primarycontactid = c.contactid "
            f"WHERE {contact[0]}"
        )
        linked = (
            "<fetch><entity name='account'><attribute name='name'/>"
            "<link-entity name='contact' from='contactid' to='primarycontactid' alias='c'>"
            f"<filter>{contact[1]}</filter></link-entity></entity></fetch>"
        )
        assert ids(world, parse_sql(where, schema).query, caller) == ids(
            world, parse_fetchxml(linked, schema), caller
        )
    if as_clerk:
        readable = {
            str(r["contactid"])
            for r in records.query(Query("contact", ("contactid",)), caller=caller)
        }
        rows = records.query(
            parse_sql(
                "SELECT a.name, c.contactid FROM account a JOIN contact c "
                "ON a.primarycontactid = c.contactid",
                schema,
            ).query,
            caller=caller,
        )
        assert {str(r["c.contactid"]) for r in rows} <= readable


LITERALS = ["1", "-1", "1.5", "'abc'", "''", "'2024-01-01'", "'2024-01-01T10:00:00Z'", f"'{GUID}'"]
LITERALS += ["TRUE", "N'x'", "99999999999999999999", "1e5", "'1'", "0", "NULL"]


@PROPERTY
@given(
    st.sampled_from(["account", "contact"]),
    st.data(),
    st.sampled_from(["=", "<", ">=", "<>", "LIKE", "IN", "BETWEEN", "IS NOT"]),
    st.sampled_from(LITERALS),
)
def test_any_column_operator_and_literal_is_rows_or_a_400(
    world: World, table: str, data: st.DataObject, op: str, literal: str
) -> None:
    """Whatever the column's type: the query runs on the database, or is refused with a
    ``QueryError`` (400); never another error (a 500)."""
    schema = world.platform.store.schema
    t = schema.table(table)
    column = data.draw(st.sampled_from(sorted(t.columns)))
    if op == "IN":
        where = f"{column} IN ({literal}, {literal})"
    elif op == "BETWEEN":
        where = f"{column} BETWEEN {literal} AND {literal}"
    else:
        where = f"{column} {op} {literal}"
    text = f"SELECT {t.primary_id} FROM {table} WHERE {where} ORDER BY {column}"
    with contextlib.suppress(QueryError):
        world.platform.records.query(parse_sql(text, schema).query, caller=world.clerk)
