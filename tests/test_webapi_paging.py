"""Keyset paging of the Web API's collections (``webapi.paging``): every row exactly once, in
order, with ``$orderby`` on columns full of ties and nulls, while rows are inserted between
pages; ``$top`` across pages; tokens that are not this listing's are a clear 400."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from fieldsync.config import Settings
from fieldsync.platform import Platform
from fieldsync.security.roles import SYSTEM_ADMINISTRATOR
from fieldsync.server.app import create_app

API = "/api/data/v9.2/"
pytestmark = pytest.mark.anyio
ROWS = 47


@pytest.fixture
async def api(platform: Platform) -> AsyncIterator[httpx.AsyncClient]:
    org = platform.org
    org.user("admin", roles=[org.role_id(SYSTEM_ADMINISTRATOR)])
    _, secret = platform.auth.create_api_token(org.user_id("admin"), "t")
    # ties and nulls: 5 names, employees 0..3 or missing, cities with gaps
    platform.records.create_many(
        "account",
        [
            {
                "name": f"N{i % 5}",
                "numberofemployees": None if i % 7 == 0 else i % 4,
                "address1_city": None if i % 3 == 0 else f"C{i % 2}",
            }
            for i in range(ROWS)
        ],
    )
    app = create_app(Settings(), platform=platform)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="https://test",
        headers={"Authorization": f"Bearer {secret}"},
    ) as c:
        yield c


async def pages(
    api: httpx.AsyncClient, query: str, size: int, between: Any = None
) -> tuple[list[dict[str, Any]], int]:
    """Every row of the listing, following next links; ``between(n)`` runs after page n."""
    url: str | None = API + "accounts?" + query
    rows: list[dict[str, Any]] = []
    n = 0
    while url:
        r = await api.get(url, headers={"Prefer": f"odata.maxpagesize={size}"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert len(body["value"]) <= size
        rows += body["value"]
        url = body.get("@odata.nextLink")
        n += 1
        if between is not None and url:
            await between(n)
    return rows, n


def expected_order(rows: list[dict[str, Any]], orders: list[tuple[str, bool]]) -> list[str]:
    """The order the server promises: nulls lowest, ties broken by the id; stable sorts from
    the last key to the first."""
    out = sorted(rows, key=lambda r: r["accountid"])
    for name, descending in reversed(orders):
        out.sort(key=lambda r: (r[name] is not None, r[name] or 0), reverse=descending)
    return [r["accountid"] for r in out]


ORDERINGS = [
    [],
    [("name", False)],
    [("numberofemployees", True)],
    [("address1_city", False), ("numberofemployees", True)],
    [("numberofemployees", False), ("name", True), ("address1_city", True)],
]


@pytest.mark.parametrize("orders", ORDERINGS, ids=lambda o: ",".join(map(str, o)) or "none")
@pytest.mark.parametrize("size", [1, 4, 10])
async def test_every_row_once_in_order(
    api: httpx.AsyncClient, orders: list[tuple[str, bool]], size: int
) -> None:
    select = "$select=name,numberofemployees,address1_city"
    orderby = ",".join(f"{c} {'desc' if d else 'asc'}" for c, d in orders)
    rows, n = await pages(api, select + (f"&$orderby={orderby}" if orderby else ""), size)
    ids = [r["accountid"] for r in rows]
    assert len(ids) == ROWS == len(set(ids))
    assert n == -(-ROWS // size)
    assert ids == expected_order(rows, orders)


async def test_rows_inserted_between_pages_repeat_nothing(
    api: httpx.AsyncClient, platform: Platform
) -> None:
    before = {
        str(r["accountid"])
        for r in platform.records.retrieve_multiple("account", columns=["accountid"])
    }
    added: list[str] = []

    async def insert(n: int) -> None:
        # new rows land before and after the cursor, with the same sort values as old ones
        for name in ("N0", "N4", "A", "Z"):
            r = await api.post(API + "accounts", json={"name": name})
            assert r.status_code == 204
            added.append(r.headers["OData-EntityId"].rsplit("(", 1)[1].rstrip(")"))

    rows, _ = await pages(api, "$select=name&$orderby=name", 6, between=insert)
    ids = [r["accountid"] for r in rows]
    assert len(ids) == len(set(ids))  # no row twice
    assert before <= set(ids)  # no row that was there all along skipped
    assert set(ids) <= before | set(added)
    names = [r["name"] for r in rows]
    assert names == sorted(names)


async def test_top_holds_across_pages(api: httpx.AsyncClient) -> None:
    rows, n = await pages(api, "$select=name&$orderby=name desc&$top=11&$count=true", 4)
    assert len(rows) == 11
    assert n == 3
    assert [r["name"] for r in rows] == sorted((r["name"] for r in rows), reverse=True)


async def test_a_page_deep_in_the_listing_is_a_range_not_a_skip(
    api: httpx.AsyncClient, platform: Platform
) -> None:
    statements: list[str] = []
    engine = platform.store.engine

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    r = await api.get(API + "accounts?$select=name", headers={"Prefer": "odata.maxpagesize=5"})
    link = r.json()["@odata.nextLink"]
    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        r = await api.get(link, headers={"Prefer": "odata.maxpagesize=5"})
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)
    assert r.status_code == 200
    assert len(r.json()["value"]) == 5
    [read] = [s for s in statements if "LIMIT" in s.upper()]
    assert "account.accountid >" in read  # starts after the last id sent, skips nothing


def token(data: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


async def test_tokens_not_issued_for_the_listing_are_refused(api: httpx.AsyncClient) -> None:
    r = await api.get(
        API + "accounts?$select=name&$orderby=name", headers={"Prefer": "odata.maxpagesize=3"}
    )
    link = r.json()["@odata.nextLink"]
    good = link.split("$skiptoken=")[1]
    r = await api.get(API + f"accounts?$select=name&$orderby=name&$skiptoken={good}")
    assert r.status_code == 200
    # another $orderby, another table
    r = await api.get(API + f"accounts?$select=name&$orderby=name desc&$skiptoken={good}")
    assert r.status_code == 400
    assert "another listing" in r.json()["error"]["message"]
    r = await api.get(API + f"contacts?$skiptoken={good}")
    assert r.status_code == 400
    ids = "0" * 32
    name, employees = "account,name", "account,numberofemployees"
    for orderby, bad in [
        ("name", "garbage!"),
        ("name", "zz"),
        ("name", token([1, 2])),
        ("name", token({"s": name, "k": ["N1"], "n": 3})),  # key too short
        ("name", token({"s": name, "k": [1, ["u", ids]], "n": 3})),  # a number for a name
        ("name", token({"s": name, "k": ["N1", ["u", "xyz"]], "n": 3})),  # not an id
        ("name", token({"s": name, "k": ["N1", ["u", 5]], "n": 3})),
        ("name", token({"s": name, "k": ["N1", None], "n": 3})),  # no id
        ("name", token({"s": name, "k": ["N1", ["u", ids]], "n": -1})),
        ("name", token({"s": name, "k": ["N1", ["u", ids]], "n": True})),
        ("name", token({"s": name, "k": ["N1", ["u", ids]], "n": 3, "x": 1})),
        ("numberofemployees", token({"s": employees, "k": ["3", ["u", ids]], "n": 3})),
        ("numberofemployees", token({"s": employees, "k": [2**70, ["u", ids]], "n": 3})),
        ("numberofemployees", "A" * 10000),
    ]:
        r = await api.get(API + f"accounts?$select=name&$orderby={orderby}&$skiptoken={bad}")
        assert r.status_code == 400, (bad, r.text)
        assert "$skiptoken" in r.json()["error"]["message"]
