"""``GET {set}?sql=…`` in process, on SQLite and PostgreSQL: the answer's shape, paging with
``Prefer: odata.maxpagesize`` and ``TOP``, ``COUNT``, joins, ``$batch`` parts, a 400 naming what
is outside the subset (nothing changes), and a Basic User's SQL never returning a row they
cannot read, joined rows included."""

from __future__ import annotations

from collections.abc import AsyncIterator
from urllib.parse import quote

import httpx
import pytest

from fieldsync.config import Settings
from fieldsync.platform import Platform
from fieldsync.security.roles import BASIC_USER, SYSTEM_ADMINISTRATOR
from fieldsync.server.app import create_app

API = "/api/data/v9.2/"
pytestmark = pytest.mark.anyio


def url(text: str, entity_set: str = "accounts") -> str:
    return f"{API}{entity_set}?sql={quote(text, safe='')}"


@pytest.fixture
async def api(platform: Platform) -> AsyncIterator[httpx.AsyncClient]:
    org = platform.org
    org.user("admin", roles=[org.role_id(SYSTEM_ADMINISTRATOR)])
    _, secret = platform.auth.create_api_token(org.user_id("admin"), "t")
    app = create_app(Settings(), platform=platform)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="https://test",
        headers={"Authorization": f"Bearer {secret}"},
    ) as c:
        yield c


async def create(api: httpx.AsyncClient, entity_set: str, body: dict[str, object], **h: str) -> str:
    r = await api.post(API + entity_set, json=body, headers=h)
    assert r.status_code == 204, r.text
    return r.headers["OData-EntityId"].rsplit("(", 1)[1].rstrip(")")


async def test_columns_aliases_joins_and_count(api: httpx.AsyncClient) -> None:
    ng = await create(api, "contacts", {"firstname": "Ana", "lastname": "Ng"})
    for i in range(5):
        body: dict[str, object] = {"name": f"Acc {i}", "numberofemployees": i}
        if i % 2 == 0:
            body["primarycontactid@odata.bind"] = f"/contacts({ng})"
        await create(api, "accounts", body)
    r = await api.get(
        url(
            "SELECT TOP 2 a.name AS title, numberofemployees, c.lastname, a.primarycontactid "
            "FROM account a JOIN contact c ON a.primarycontactid = c.contactid "
            "WHERE a.numberofemployees IN (0, 2, 4) AND c.lastname LIKE 'n%' "
            "ORDER BY a.numberofemployees DESC"
        )
    )
    assert r.status_code == 200, r.text
    rows = r.json()["value"]
    assert [x["title"] for x in rows] == ["Acc 4", "Acc 2"]
    first = rows[0]
    assert first["title@OData.Community.Display.V1.AttributeName"] == "name"
    assert first["numberofemployees"] == 4
    assert first["c.lastname"] == "Ng"
    assert first["_primarycontactid_value"] == ng
    assert "accountid" in first
    assert "@odata.etag" in first
    r = await api.get(url("SELECT COUNT(*) AS n FROM account WHERE numberofemployees >= 1"))
    assert r.json()["value"] == [{"n": 4}]
    r = await api.get(
        url(
            "SELECT DISTINCT c.lastname FROM account a "
            "JOIN contact c ON c.contactid = a.primarycontactid"
        )
    )
    assert [x["c.lastname"] for x in r.json()["value"]] == ["Ng"]
    r = await api.get(
        url(
            "SELECT fullname FROM contact c "
            "LEFT JOIN account a ON a.primarycontactid = c.contactid",
            "contacts",
        )
    )
    assert len(r.json()["value"]) == 3  # one contact, three accounts point at it


async def test_pages_follow_next_links_and_top_caps_the_total(api: httpx.AsyncClient) -> None:
    for i in range(7):
        await create(api, "accounts", {"name": f"P{i}"})
    seen: list[str] = []
    link: str | None = url("SELECT name FROM account ORDER BY name")
    while link:
        r = await api.get(link, headers={"Prefer": "odata.maxpagesize=3"})
        assert r.status_code == 200, r.text
        assert r.headers["Preference-Applied"] == "odata.maxpagesize=3"
        seen += [x["name"] for x in r.json()["value"]]
        link = r.json().get("@odata.nextLink")
    assert seen == [f"P{i}" for i in range(7)]
    r = await api.get(
        url("SELECT TOP 4 name FROM account ORDER BY name DESC"),
        headers={"Prefer": "odata.maxpagesize=3"},
    )
    page = r.json()
    assert [x["name"] for x in page["value"]] == ["P6", "P5", "P4"]
    r = await api.get(page["@odata.nextLink"])
    assert [x["name"] for x in r.json()["value"]] == ["P3"]
    assert "@odata.nextLink" not in r.json()


@pytest.mark.parametrize(
    ("text", "entity_set", "named"),
    [
        ("SELECT * FROM account", "accounts", "SELECT *"),
        ("DELETE FROM account", "accounts", "read-only"),
        ("SELECT name FROM account GROUP BY name", "accounts", "GROUP BY"),
        ("SELECT fullname FROM contact", "accounts", "was sent to"),
        ("SELECT name FROM account WHERE name = 'x'; DROP TABLE account", "accounts", "one SELECT"),
        ("SELECT name FROM account WHERE (((", "accounts", "cannot be parsed"),
    ],
)
async def test_outside_the_subset_answers_400_and_changes_nothing(
    api: httpx.AsyncClient, text: str, entity_set: str, named: str
) -> None:
    await create(api, "accounts", {"name": "kept"})
    r = await api.get(url(text, entity_set))
    assert r.status_code == 400, r.text
    assert named.lower() in r.json()["error"]["message"].lower()
    r = await api.get(url("SELECT name FROM account"))
    assert [x["name"] for x in r.json()["value"]] == ["kept"]
    r = await api.get(url("SELECT name FROM account") + "&$filter=name eq 'kept'")
    assert r.status_code == 400


async def test_sql_in_a_batch_part(api: httpx.AsyncClient) -> None:
    await create(api, "accounts", {"name": "in batch"})
    body = (
        "--batch_1\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n"
        f"GET https://test{url('SELECT name FROM account')} HTTP/1.1\r\n\r\n\r\n--batch_1--\r\n"
    )
    r = await api.post(
        API + "$batch",
        content=body,
        headers={"Content-Type": "multipart/mixed; boundary=batch_1"},
    )
    assert r.status_code == 200, r.text
    assert "HTTP/1.1 200" in r.text
    assert "in batch" in r.text


async def test_a_basic_users_sql_never_returns_rows_they_cannot_read(
    api: httpx.AsyncClient, platform: Platform
) -> None:
    org = platform.org
    org.user("clerk", roles=[org.role_id(BASIC_USER)])
    _, secret = platform.auth.create_api_token(org.user_id("clerk"), "t")
    clerk = {"Authorization": f"Bearer {secret}"}
    admins = await create(api, "contacts", {"lastname": "Secret"})
    mine = await create(api, "contacts", {"lastname": "Mine"}, **clerk)
    await create(
        api, "accounts", {"name": "admin's", "primarycontactid@odata.bind": f"/contacts({mine})"}
    )
    await create(  # the clerk's row, pointing at a contact the clerk may not read
        api,
        "accounts",
        {
            "name": "clerk 1",
            "primarycontactid@odata.bind": f"/contacts({admins})",
            "ownerid@odata.bind": f"/systemusers({org.user_id('clerk')})",
        },
    )
    await create(
        api,
        "accounts",
        {"name": "clerk 2", "primarycontactid@odata.bind": f"/contacts({mine})"},
        **clerk,
    )

    async def names(text: str, entity_set: str = "accounts") -> list[dict[str, object]]:
        r = await api.get(url(text, entity_set), headers=clerk)
        assert r.status_code == 200, r.text
        return list(r.json()["value"])

    rows = await names("SELECT name FROM account ORDER BY name")
    assert [x["name"] for x in rows] == ["clerk 1", "clerk 2"]
    inner = await names(
        "SELECT a.name, c.lastname FROM account a "
        "JOIN contact c ON a.primarycontactid = c.contactid"
    )
    assert [(x["name"], x["c.lastname"]) for x in inner] == [("clerk 2", "Mine")]
    outer = await names(
        "SELECT a.name, c.lastname FROM account a LEFT JOIN contact c "
        "ON a.primarycontactid = c.contactid ORDER BY a.name"
    )
    assert [(x["name"], x["c.lastname"]) for x in outer] == [("clerk 1", None), ("clerk 2", "Mine")]
    reverse = await names(
        "SELECT c.lastname, a.name FROM contact c "
        "JOIN account a ON a.primarycontactid = c.contactid",
        "contacts",
    )
    assert [(x["lastname"], x["a.name"]) for x in reverse] == [("Mine", "clerk 2")]
    hidden = await names("SELECT COUNT(*) FROM contact WHERE lastname = 'Secret'", "contacts")
    assert hidden == [{"count": 0}]
    by_join = await names(
        "SELECT COUNT(*) FROM account a JOIN contact c ON a.primarycontactid = c.contactid "
        "WHERE c.lastname = 'Secret'"
    )
    assert by_join == [{"count": 0}]
