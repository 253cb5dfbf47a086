"""Whole queries: joins, link columns, orders, paging, and the caller's read filter on every
table a query touches."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

import pytest

from fieldsync.errors import Forbidden, QueryError
from fieldsync.platform import Platform
from fieldsync.query.ast import (
    Condition,
    Link,
    LinkFilter,
    LinkType,
    Node,
    Not,
    Op,
    Or,
    Order,
    Query,
)
from fieldsync.security.context import load_context
from fieldsync.security.roles import BASIC_USER
from fieldsync.types import EntityRef


@pytest.fixture
def data(platform: Platform) -> dict[str, object]:
    r = platform.records
    alice = r.create("contact", {"lastname": "Alice"})
    bob = r.create("contact", {"lastname": "Bob"})
    a1 = r.create("account", {"name": "A1", "primarycontactid": alice, "numberofemployees": 5})
    a2 = r.create("account", {"name": "A2", "primarycontactid": bob, "numberofemployees": 50})
    a3 = r.create("account", {"name": "A3", "numberofemployees": 500})
    r.create("workorder", {"name": "W1", "serviceaccountid": a1, "priority": 4})
    r.create("workorder", {"name": "W2", "serviceaccountid": a1, "priority": 1})
    r.create("workorder", {"name": "W3", "serviceaccountid": a2, "priority": 1})
    return {"a1": a1, "a2": a2, "a3": a3, "alice": alice, "bob": bob}


def names(rows: list[dict[str, object]]) -> list[object]:
    return [row["name"] for row in rows]


def test_filter_order_top_and_paging(platform: Platform, data: dict[str, object]) -> None:
    r = platform.records
    q = Query("account", columns=("name",), orders=(Order("numberofemployees", True),))
    assert names(r.query(q)) == ["A3", "A2", "A1"]
    assert names(r.query(Query("account", columns=("name",), top=2, orders=(Order("name"),)))) == [
        "A1",
        "A2",
    ]
    page2 = Query("account", columns=("name",), orders=(Order("name"),), page=2, page_size=2)
    assert names(r.query(page2)) == ["A3"]
    big = Query("account", filter=Condition("numberofemployees", Op.GE, 50))
    assert sorted(names(r.query(big))) == ["A2", "A3"]


def test_inner_and_outer_links_bring_columns(platform: Platform, data: dict[str, object]) -> None:
    r = platform.records
    link = Link("contact", "contactid", "primarycontactid", alias="pc", columns=("lastname",))
    inner = r.query(Query("account", columns=("name",), links=(link,), orders=(Order("name"),)))
    assert [(x["name"], x["pc.lastname"]) for x in inner] == [("A1", "Alice"), ("A2", "Bob")]
    outer = Link(
        "contact",
        "contactid",
        "primarycontactid",
        alias="pc",
        type=LinkType.OUTER,
        columns=("lastname",),
    )
    rows = r.query(Query("account", columns=("name",), links=(outer,), orders=(Order("name"),)))
    assert [(x["name"], x["pc.lastname"]) for x in rows] == [
        ("A1", "Alice"),
        ("A2", "Bob"),
        ("A3", None),
    ]
    on_alias = Query(
        "account",
        columns=("name",),
        links=(outer,),
        filter=Condition("lastname", Op.EQ, "bob", entity="pc"),
    )
    assert names(r.query(on_alias)) == ["A2"]


def test_link_filters_in_queries(platform: Platform, data: dict[str, object]) -> None:
    r = platform.records

    def accounts(kind: LinkType, urgent_only: bool) -> list[object]:
        f = Condition("priority", Op.EQ, 4) if urgent_only else None
        link = Link("workorder", "serviceaccountid", "accountid", type=kind, filter=f)
        return sorted(names(r.query(Query("account", filter=LinkFilter(link)))))

    assert accounts(LinkType.ANY, True) == ["A1"]
    assert accounts(LinkType.NOT_ANY, True) == ["A2", "A3"]
    assert accounts(LinkType.ALL, True) == []
    assert accounts(LinkType.NOT_ALL, True) == ["A1", "A2"]
    assert accounts(LinkType.ANY, False) == ["A1", "A2"]
    assert accounts(LinkType.NOT_ANY, False) == ["A3"]


def test_link_filters_are_set_lookups_and_null_keys_stay_false(
    platform: Platform, data: dict[str, object]
) -> None:
    """A link filter selects the related keys once (``IN (SELECT …)``, no correlated EXISTS
    per row) and keeps EXISTS's two values: a NULL lookup on either side is never unknown,
    so NOT of it holds."""
    r = platform.records
    # Alice and Bob have no parent customer: related rows whose key is NULL, which must not
    # make NOT IN unknown for every account
    r.create("contact", {"lastname": "Carol", "parentcustomerid": EntityRef("account", data["a1"])})

    def accounts(node: Node) -> list[object]:
        return sorted(names(r.query(Query("account", filter=node))))

    parent = Link("contact", "parentcustomerid", "accountid")
    assert accounts(LinkFilter(parent)) == ["A1"]
    assert accounts(Not(LinkFilter(parent))) == ["A2", "A3"]
    assert accounts(LinkFilter(replace(parent, type=LinkType.NOT_ANY))) == ["A2", "A3"]
    # A3 has no primary contact: the link is false for it, and its negation true
    alice = Link(
        "contact", "contactid", "primarycontactid", filter=Condition("lastname", Op.EQ, "alice")
    )
    assert accounts(LinkFilter(alice)) == ["A1"]
    assert accounts(Not(LinkFilter(alice))) == ["A2", "A3"]
    assert accounts(Or((Not(LinkFilter(alice)), Condition("name", Op.EQ, "A1")))) == [
        "A1",
        "A2",
        "A3",
    ]
    with platform.store.read() as conn:
        sql = str(r.query_statement(Query("account", filter=LinkFilter(parent)), conn=conn))
    assert "EXISTS" not in sql.upper()
    assert "IN (SELECT contact.parentcustomerid" in sql


def test_joins_never_reveal_unreadable_rows(platform: Platform, data: dict[str, object]) -> None:
    org, r = platform.org, platform.records
    ann = org.user("ann", roles=[org.role_id(BASIC_USER)])
    ctx = load_context(platform.store, ann)
    mine = r.create(
        "account",
        {
            "name": "mine",
            "primarycontactid": data["alice"],
            "ownerid": EntityRef("systemuser", ann),
        },
    )
    outer = Link(
        "contact",
        "contactid",
        "primarycontactid",
        alias="pc",
        type=LinkType.OUTER,
        columns=("lastname",),
    )
    rows = r.query(Query("account", columns=("name",), links=(outer,)), caller=ctx)
    # ann reads her own account, but the contact (owned by SYSTEM) is not hers to read
    assert [(x["accountid"], x["pc.lastname"]) for x in rows] == [(mine, None)]
    nobody = org.user("nobody")
    with pytest.raises(Forbidden):
        r.query(Query("account"), caller=load_context(platform.store, nobody))


def test_user_and_date_operators_bind_to_the_caller(platform: Platform) -> None:
    org, r = platform.org, platform.records
    basic = org.role_id(BASIC_USER)
    boss = org.user("boss", roles=[basic])
    report = org.user("report", roles=[basic], manager=boss)
    team = org.team("crew", members=[boss])
    r.create("account", {"name": "boss's", "ownerid": EntityRef("systemuser", boss)})
    r.create("account", {"name": "report's", "ownerid": EntityRef("systemuser", report)})
    r.create("account", {"name": "crew's", "ownerid": EntityRef("team", team)})
    r.create("account", {"name": "system's"})
    ctx = load_context(platform.store, boss)

    def owned(op: Op) -> list[object]:
        return sorted(names(r.query(Query("account", filter=Condition("ownerid", op)))))

    assert (
        platform.records.query(
            Query("account", filter=Condition("ownerid", Op.EQ_USERID)), caller=ctx
        )[0]["name"]
        == "boss's"
    )
    by = {
        op: sorted(names(r.query(Query("account", filter=Condition("ownerid", op)), caller=ctx)))
        for op in (Op.EQ_USERTEAMS, Op.EQ_USERORUSERTEAMS, Op.EQ_USERORUSERHIERARCHY)
    }
    assert by[Op.EQ_USERTEAMS] == ["crew's"]
    assert by[Op.EQ_USERORUSERTEAMS] == ["boss's", "crew's"]
    # the hierarchy operator follows the manager chain, but the read filter still applies:
    # boss reads their own and their team's rows only (hierarchy security is off)
    assert by[Op.EQ_USERORUSERHIERARCHY] == ["boss's"]
    org.set_hierarchy(enabled=True)
    ctx = load_context(platform.store, boss)
    hierarchy = Query("account", filter=Condition("ownerid", Op.EQ_USERORUSERHIERARCHY))
    assert sorted(names(r.query(hierarchy, caller=ctx))) == ["boss's", "report's"]
    today = r.query(
        Query("account", filter=Condition("createdon", Op.TODAY)), now=dt.datetime.now(dt.UTC)
    )
    assert len(today) == 4
    assert owned(Op.EQ_USERID) == ["system's"]


def test_bad_queries_are_query_errors(platform: Platform) -> None:
    r = platform.records
    with pytest.raises(QueryError, match="no column"):
        r.query(Query("account", columns=("nope",)))
    with pytest.raises(QueryError, match="unknown column"):
        r.query(Query("account", filter=Condition("nope", Op.EQ, 1)))
    with pytest.raises(QueryError, match="order by"):
        r.query(Query("account", orders=(Order("nope"),)))
    with pytest.raises(QueryError, match="alias"):
        r.query(Query("account", filter=Condition("name", Op.EQ, "x", entity="ghost")))


def test_nulls_sort_lowest_on_both_backends(platform: Platform, data: dict[str, object]) -> None:
    r = platform.records
    r.create("account", {"name": "A0"})  # numberofemployees is null
    up = r.query(Query("account", columns=("name",), orders=(Order("numberofemployees"),)))
    assert names(up)[0] == "A0"
    down = r.query(Query("account", columns=("name",), orders=(Order("numberofemployees", True),)))
    assert names(down)[-1] == "A0"


def test_distinct_orders_by_unselected_columns(platform: Platform, data: dict[str, object]) -> None:
    r = platform.records
    r.create("account", {"name": "A1", "numberofemployees": 7})  # a second A1
    q = Query("account", columns=("name",), orders=(Order("name"),), distinct=True)
    assert names(r.query(q)) == ["A1", "A2", "A3"]
    by_size = Query(
        "account", columns=("name",), orders=(Order("numberofemployees"),), distinct=True
    )
    assert [x["name"] for x in r.query(by_size)] == ["A1", "A1", "A2", "A3"]


def test_link_orders_apply(platform: Platform, data: dict[str, object]) -> None:
    r = platform.records
    link = Link(
        "account",
        "accountid",
        "serviceaccountid",
        alias="site",
        columns=("name",),
        orders=(Order("numberofemployees", True),),
    )
    rows = r.query(Query("workorder", columns=("name",), links=(link,)))
    assert [x["site.name"] for x in rows] == ["A2", "A1", "A1"]
