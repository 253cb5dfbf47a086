"""Attacks on sessions and privileges, over HTTP, on both backends (issue 16, items 7-9):

- two portal pages loading at once with an expired access token must not sign the user out
  (the just-rotated refresh token has a grace period), and a replay after it still revokes;
- Append is checked against the row that gets the lookup, at its depth, and Append To
  against the row it points at, on every path that sets a lookup or links two rows;
- a create, an upsert or a sync create with the id of a row the caller cannot read answers
  exactly as an update of that row does (404), never "already exists".
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from conftest import FAST_HASHING
from fieldsync.config import Settings
from fieldsync.platform import Platform, build
from fieldsync.security.roles import BASIC_USER, SYSTEM_ADMINISTRATOR
from fieldsync.server.app import create_app
from fieldsync.store.catalog import fs_session
from fieldsync.store.store import Store
from fieldsync.sync.upload import ERROR_TYPE_EXISTS
from fieldsync.types import EntityRef
from sync_world import World

API = "/api/data/v9.2/"
PASSWORD = "correct horse battery"
COOKIE = "fieldsync_portal"


# -- item 7: concurrent refreshes -------------------------------------------------------------

ACCESS_SECONDS = 2  # a second was too short for two page loads on a loaded machine
# long enough that a loaded test machine's scheduling cannot push the second server's refresh
# past it; the tests sleep through it once
GRACE_SECONDS = 5


@pytest.fixture
def servers(store: Store, database_url: str) -> Iterator[tuple[Platform, Platform]]:
    """Two servers on one database (as two processes would be), with access tokens that
    expire after a second and a refresh grace period of a few seconds."""
    settings = replace(
        FAST_HASHING, access_token_seconds=ACCESS_SECONDS, refresh_grace_seconds=GRACE_SECONDS
    )
    first = build(store, auth_settings=settings)
    first.org.user("ann", password=PASSWORD, roles=[first.org.role_id(BASIC_USER)])
    other = Store.open(database_url)
    try:
        yield first, build(other, auth_settings=settings)
    finally:
        other.close()


def client_of(platform: Platform) -> httpx.AsyncClient:
    app = create_app(Settings(), platform=platform)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


async def portal_sign_in(client: httpx.AsyncClient) -> str:
    page = await client.get("/portal/sign-in")
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found
    r = await client.post(
        "/portal/sign-in", data={"csrf": found.group(1), "username": "ann", "password": PASSWORD}
    )
    assert r.status_code == 303, r.text
    cookie = r.cookies.get(COOKIE)
    assert cookie
    client.cookies.clear()
    return cookie


async def load(client: httpx.AsyncClient, cookie: str) -> tuple[int, str]:
    """A portal page with the cookie; the status and the cookie the answer leaves."""
    r = await client.get("/portal/profiles", headers={"Cookie": f"{COOKIE}={cookie}"})
    fresh = r.cookies.get(COOKIE)
    client.cookies.clear()
    return r.status_code, fresh if fresh is not None else cookie


def refreshed(platform: Platform) -> list[tuple[int, bool]]:
    """Each session's generation (how many tokens it issued) and whether it is revoked."""
    with platform.store.read() as conn:
        rows = conn.execute(sa.select(fs_session.c.generation, fs_session.c.revokedon)).all()
    return [(r.generation, r.revokedon is not None) for r in rows]


@pytest.mark.anyio
async def test_concurrent_portal_pages_with_an_expired_token_keep_the_user_signed_in(
    servers: tuple[Platform, Platform],
) -> None:
    one, two = servers
    async with client_of(one) as a, client_of(two) as b:
        cookie = await portal_sign_in(a)
        assert (await load(a, cookie))[0] == 200
        time.sleep(ACCESS_SECONDS + 1.1)  # the access token in the cookie has expired
        # two pages at once, on two servers, with the same cookie: both refresh
        (status_a, cookie_a), (status_b, cookie_b) = await asyncio.gather(
            load(a, cookie), load(b, cookie)
        )
        assert (status_a, status_b) == (200, 200)
        assert cookie_a != cookie
        assert cookie_b != cookie
        # one rotation, not revoked: both answers carry the same successor
        assert refreshed(one) == [(2, False)]
        # whichever cookie the browser keeps, the user stays signed in, now and after the
        # next expiry (its refresh token is the live one)
        for kept in (cookie_a, cookie_b):
            assert (await load(a, kept))[0] == 200
        time.sleep(ACCESS_SECONDS + 1.1)
        status, later = await load(b, cookie_b)
        assert status == 200
        assert (await load(a, later))[0] == 200
        assert refreshed(one) == [(3, False)]


@pytest.mark.anyio
async def test_a_refresh_token_replayed_after_the_grace_period_revokes_the_session(
    servers: tuple[Platform, Platform],
) -> None:
    one, two = servers
    async with client_of(one) as a, client_of(two) as b:
        for client in (a, b):  # both servers warm before the grace period starts
            assert (await client.get("/health")).status_code == 200
        r = await a.post("/auth/token", data={"username": "ann", "password": PASSWORD})
        first = r.json()
        r = await a.post(
            "/auth/token",
            data={"grant_type": "refresh_token", "refresh_token": first["refresh_token"]},
        )
        second = r.json()
        # within the grace period, on the other server: the same successor
        r = await b.post(
            "/auth/token",
            data={"grant_type": "refresh_token", "refresh_token": first["refresh_token"]},
        )
        assert r.status_code == 200, r.text
        assert r.json()["refresh_token"] == second["refresh_token"]
        assert r.json()["access_token"] != second["access_token"]
        time.sleep(GRACE_SECONDS + 0.5)
        r = await b.post(
            "/auth/token",
            data={"grant_type": "refresh_token", "refresh_token": first["refresh_token"]},
        )
        assert r.status_code == 401
        assert "already used" in r.json()["error"]["message"]
        # the whole session is gone: its live refresh token and its access tokens
        r = await a.post(
            "/auth/token",
            data={"grant_type": "refresh_token", "refresh_token": second["refresh_token"]},
        )
        assert r.status_code == 401
        bearer = {"Authorization": f"Bearer {second['access_token']}"}
        assert (await a.get("/auth/whoami", headers=bearer)).status_code == 401
    assert refreshed(one) == [(2, True)]


@pytest.mark.anyio
async def test_a_portal_cookie_replayed_after_the_grace_period_signs_out(
    servers: tuple[Platform, Platform],
) -> None:
    one, _ = servers
    async with client_of(one) as a:
        cookie = await portal_sign_in(a)
        time.sleep(ACCESS_SECONDS + 1.1)
        status, fresh = await load(a, cookie)
        assert status == 200
        time.sleep(GRACE_SECONDS + 0.5)
        # a stolen copy of the old cookie, after the grace period: theft, the session ends
        r = await a.get("/portal/profiles", headers={"Cookie": f"{COOKIE}={cookie}"})
        a.cookies.clear()
        assert r.status_code == 303
        assert "/portal/sign-in" in r.headers["location"]
        r = await a.get("/portal/profiles", headers={"Cookie": f"{COOKIE}={fresh}"})
        a.cookies.clear()
        assert r.status_code == 303  # the fresh cookie belonged to the revoked session


# -- items 8 and 9 over the Web API -----------------------------------------------------------

M2M = "new_workorder_contact"


class Org:
    """Bob (Basic User) owns a work order and a contact; Dee is a dispatcher: work orders
    read, created and written across the organisation, but Append on her own rows only, and
    Append To on her own contacts only; Carl (Basic User) reads only his own rows."""

    def __init__(self, platform: Platform, api: httpx.AsyncClient) -> None:
        self.platform = platform
        self.api = api
        org = platform.org
        basic = org.role_id(BASIC_USER)
        dispatcher = org.role(
            "Dispatcher",
            privileges={
                "workorder": {
                    "create": "organization",
                    "read": "organization",
                    "write": "organization",
                    "append": "user",
                    "appendto": "organization",
                },
                "account": {"read": "organization", "appendto": "organization"},
                "contact": {"read": "organization", "append": "user", "appendto": "user"},
            },
        )
        org.user("admin", roles=[org.role_id(SYSTEM_ADMINISTRATOR)])
        self.bob = org.user("bob", roles=[basic])
        self.dee = org.user("dee", roles=[dispatcher, basic])
        self.carl = org.user("carl", roles=[basic])
        r = platform.records
        self.account = r.create("account", {"name": "Contoso", "ownerid": self.owner(self.bob)})
        self.bob_contact = r.create("contact", {"lastname": "Bob", "ownerid": self.owner(self.bob)})
        self.dee_contact = r.create("contact", {"lastname": "Dee", "ownerid": self.owner(self.dee)})
        self.carl_account = r.create(
            "account", {"name": "Carl's", "ownerid": self.owner(self.carl)}
        )
        self.bob_order = self.order("Bob's", self.bob)
        self.dee_order = self.order("Dee's", self.dee)
        self.carl_order = self.order("Carl's", self.carl)
        self.tokens = {
            name: platform.auth.create_api_token(org.user_id(name), "t")[1]
            for name in ("admin", "bob", "dee", "carl")
        }

    @staticmethod
    def owner(user: uuid.UUID) -> EntityRef:
        return EntityRef("systemuser", user)

    def order(self, name: str, user: uuid.UUID) -> uuid.UUID:
        return self.platform.records.create(
            "workorder",
            {"name": name, "serviceaccountid": self.account, "ownerid": self.owner(user)},
        )

    def as_(self, user: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[user]}"}

    def row(self, rid: uuid.UUID) -> dict[str, Any]:
        return self.platform.records.retrieve("workorder", rid)


@pytest.fixture
async def world(platform: Platform) -> AsyncIterator[Org]:
    platform.store.create_many_to_many(
        M2M, "workorder", "contact", intersect="new_workordercontact"
    )
    app = create_app(Settings(), platform=platform)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="https://test"
    ) as api:
        yield Org(platform, api)


def refused(r: httpx.Response, status: int, words: str = "") -> None:
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) >= {"code", "message"}
    assert words in error["message"]


def intersect_rows(world: Org) -> set[tuple[uuid.UUID, uuid.UUID]]:
    rows = world.platform.records.retrieve_multiple("new_workordercontact")
    return {(r["workorderid"], r["contactid"]) for r in rows}


@pytest.mark.anyio
async def test_append_is_checked_against_the_row_that_gets_the_lookup(world: Org) -> None:
    api, dee = world.api, world.as_("dee")
    contact = f"/contacts({world.dee_contact})"
    before = world.row(world.bob_order)

    # update: Write reaches Bob's row, Append does not
    r = await api.patch(
        API + f"workorders({world.bob_order})",
        json={"primarycontactid@odata.bind": contact},
        headers=dee,
    )
    refused(r, 403, "append")
    r = await api.post(
        API + "workorders/Microsoft.Dynamics.CRM.UpdateMultiple",
        json={
            "Targets": [
                {"workorderid": str(world.bob_order), "primarycontactid@odata.bind": contact}
            ]
        },
        headers=dee,
    )
    refused(r, 403, "append")
    # single-valued $ref
    r = await api.put(
        API + f"workorders({world.bob_order})/primarycontactid/$ref",
        json={"@odata.id": contact},
        headers=dee,
    )
    refused(r, 403, "append")
    # other columns of Bob's row she may write
    r = await api.patch(API + f"workorders({world.bob_order})", json={"name": "x"}, headers=dee)
    assert r.status_code == 204, r.text
    after = world.row(world.bob_order)
    assert after["primarycontactid"] is None
    assert before["primarycontactid"] is None

    # her own row takes the same lookup, by every path
    r = await api.patch(
        API + f"workorders({world.dee_order})",
        json={"primarycontactid@odata.bind": contact},
        headers=dee,
    )
    assert r.status_code == 204, r.text
    r = await api.delete(API + f"workorders({world.dee_order})/primarycontactid/$ref", headers=dee)
    assert r.status_code == 204, r.text
    assert world.row(world.dee_order)["primarycontactid"] is None
    r = await api.put(
        API + f"workorders({world.dee_order})/primarycontactid/$ref",
        json={"@odata.id": contact},
        headers=dee,
    )
    assert r.status_code == 204, r.text
    assert world.row(world.dee_order)["primarycontactid"] == world.dee_contact


@pytest.mark.anyio
async def test_append_on_create_is_checked_against_the_new_row(world: Org) -> None:
    api, dee = world.api, world.as_("dee")
    body = {
        "name": "For Bob",
        "serviceaccountid@odata.bind": f"/accounts({world.account})",
        "ownerid@odata.bind": f"/systemusers({world.bob})",
    }
    r = await api.post(API + "workorders", json=body, headers=dee)
    refused(r, 403, "append")
    r = await api.post(
        API + "workorders/Microsoft.Dynamics.CRM.CreateMultiple",
        json={"Targets": [body]},
        headers=dee,
    )
    refused(r, 403, "append")
    rid = str(uuid.uuid4())
    r = await api.patch(API + f"workorders({rid})", json=body, headers=dee)
    refused(r, 403, "append")
    names = {w["name"] for w in world.platform.records.retrieve_multiple("workorder")}
    assert "For Bob" not in names
    # Create at organisation depth alone is enough without a lookup... but a work order
    # needs its account; for herself it works
    body.pop("ownerid@odata.bind")
    r = await api.post(API + "workorders", json=body, headers=dee)
    assert r.status_code == 204, r.text


@pytest.mark.anyio
async def test_append_to_is_checked_against_the_row_pointed_at(world: Org) -> None:
    api, dee = world.api, world.as_("dee")
    r = await api.patch(
        API + f"workorders({world.dee_order})",
        json={"primarycontactid@odata.bind": f"/contacts({world.bob_contact})"},
        headers=dee,
    )
    refused(r, 403, "append to")
    r = await api.put(
        API + f"workorders({world.dee_order})/primarycontactid/$ref",
        json={"@odata.id": f"/contacts({world.bob_contact})"},
        headers=dee,
    )
    refused(r, 403, "append to")
    assert world.row(world.dee_order)["primarycontactid"] is None


@pytest.mark.anyio
async def test_many_to_many_links_need_append_and_append_to_on_both_rows(world: Org) -> None:
    api, dee = world.api, world.as_("dee")
    nav = M2M

    async def link(order: uuid.UUID, contact: uuid.UUID) -> httpx.Response:
        return await api.post(
            API + f"workorders({order})/{nav}/$ref",
            json={"@odata.id": f"/contacts({contact})"},
            headers=dee,
        )

    refused(await link(world.bob_order, world.dee_contact), 403, "append")
    refused(await link(world.dee_order, world.bob_contact), 403, "append")
    # from the other side too
    r = await api.post(
        API + f"contacts({world.bob_contact})/{nav}/$ref",
        json={"@odata.id": f"/workorders({world.dee_order})"},
        headers=dee,
    )
    refused(r, 403, "append")
    # on create
    r = await api.post(
        API + "workorders",
        json={
            "name": "Linked",
            "serviceaccountid@odata.bind": f"/accounts({world.account})",
            f"{nav}@odata.bind": [f"/contacts({world.bob_contact})"],
        },
        headers=dee,
    )
    refused(r, 403, "append")
    assert intersect_rows(world) == set()
    # her own rows link
    r = await link(world.dee_order, world.dee_contact)
    assert r.status_code == 204, r.text
    assert intersect_rows(world) == {(world.dee_order, world.dee_contact)}
    # unlinking is checked as linking is
    world.platform.records.associate(M2M, world.bob_order, world.dee_contact)
    r = await api.delete(
        API + f"workorders({world.bob_order})/{nav}({world.dee_contact})/$ref", headers=dee
    )
    refused(r, 403, "append")
    r = await api.delete(
        API + f"workorders({world.dee_order})/{nav}({world.dee_contact})/$ref", headers=dee
    )
    assert r.status_code == 204, r.text
    assert intersect_rows(world) == {(world.bob_order, world.dee_contact)}


@pytest.mark.anyio
async def test_a_change_set_binding_a_lookup_without_append_changes_nothing(world: Org) -> None:
    boundary, changeset = "batch_a", "changeset_b"

    def part(n: int, line: str, body: str) -> str:
        return (
            f"--{changeset}\r\nContent-Type: application/http\r\n"
            f"Content-Transfer-Encoding: binary\r\nContent-ID: {n}\r\n\r\n"
            f"{line} HTTP/1.1\r\nContent-Type: application/json\r\n\r\n{body}\r\n"
        )

    body = (
        f"--{boundary}\r\nContent-Type: multipart/mixed; boundary={changeset}\r\n\r\n"
        + part(1, f"PATCH https://test{API}workorders({world.dee_order})", '{"name": "first"}')
        + part(
            2,
            f"PATCH https://test{API}workorders({world.bob_order})",
            f'{{"primarycontactid@odata.bind": "/contacts({world.dee_contact})"}}',
        )
        + f"--{changeset}--\r\n--{boundary}--\r\n"
    )
    r = await world.api.post(
        API + "$batch",
        content=body.encode(),
        headers={
            **world.as_("dee"),
            "Content-Type": f'multipart/mixed; boundary="{boundary}"',
        },
    )
    assert r.status_code == 200, r.text
    assert "HTTP/1.1 403" in r.text
    assert world.row(world.dee_order)["name"] == "Dee's"
    assert world.row(world.bob_order)["primarycontactid"] is None


# -- item 9: no "already exists" for rows the caller cannot read ------------------------------


@pytest.mark.anyio
async def test_creating_over_an_unreadable_row_answers_as_missing(world: Org) -> None:
    api, carl = world.api, world.as_("carl")
    hidden = world.bob_order
    body = {"name": "Mine now", "serviceaccountid@odata.bind": f"/accounts({world.carl_account})"}
    # the reference answer: an update of the row by its id
    r = await api.patch(API + f"workorders({hidden})", json=body, headers=carl)
    refused(r, 404)
    expected = (r.status_code, r.json()["error"]["code"], r.json()["error"]["message"])

    attempts = {
        "alternate key": api.patch(
            API + f"workorders(workorderid={hidden})", json=body, headers=carl
        ),
        "post with the id": api.post(
            API + "workorders", json={**body, "workorderid": str(hidden)}, headers=carl
        ),
        "create multiple": api.post(
            API + "workorders/Microsoft.Dynamics.CRM.CreateMultiple",
            json={"Targets": [{**body, "workorderid": str(hidden)}]},
            headers=carl,
        ),
        "upsert multiple by id": api.post(
            API + "workorders/Microsoft.Dynamics.CRM.UpsertMultiple",
            json={"Targets": [{**body, "workorderid": str(hidden)}]},
            headers=carl,
        ),
        "upsert multiple by key": api.post(
            API + "workorders/Microsoft.Dynamics.CRM.UpsertMultiple",
            json={"Targets": [{**body, "@odata.id": f"workorders(workorderid={hidden})"}]},
            headers=carl,
        ),
        "if-none-match": api.patch(
            API + f"workorders({hidden})", json=body, headers={**carl, "If-None-Match": "*"}
        ),
    }
    for what, attempt in attempts.items():
        r = await attempt
        got = (r.status_code, r.json()["error"]["code"], r.json()["error"]["message"])
        assert got == expected, what
        assert "exist" not in r.json()["error"]["message"].replace("does not exist", ""), what
    row = world.row(hidden)
    assert row["name"] == "Bob's"
    assert row["ownerid"] == world.bob

    # a fresh id is created, by each path
    for path, payload in (
        (f"workorders(workorderid={uuid.uuid4()})", body),
        ("workorders", {**body, "workorderid": str(uuid.uuid4())}),
    ):
        r = await (api.patch if "(" in path else api.post)(API + path, json=payload, headers=carl)
        assert r.status_code == 204, r.text
    # a row the caller can read is "already exists", as before
    r = await api.post(
        API + "workorders", json={**body, "workorderid": str(world.carl_order)}, headers=carl
    )
    refused(r, 412, "already exists")


# -- sync uploads ----------------------------------------------------------------------------


@pytest.fixture
def sync_world(platform: Platform, tmp_path: Path) -> World:
    return World(platform, tmp_path)


def upload(world: World, user: str, changes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    device = world.device(user)
    device.sync()
    headers = {"Authorization": f"Bearer {device.http().tokens['access_token']}"}
    client = httpx.Client(transport=world.transport(), base_url="http://testserver")
    r = client.post(
        "/sync/v1/upload",
        json={"device": device.device_id, "app": "fieldservice", "changes": changes},
        headers=headers,
    )
    assert r.status_code == 200, r.text
    results: list[dict[str, Any]] = r.json()["results"]
    return results


def change(operation: str, record: uuid.UUID, values: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "table": "workorder",
        "operation": operation,
        "record": str(record),
        "values": values,
        "base_version": None,
    }


def test_a_sync_create_over_an_unreadable_row_reveals_nothing(sync_world: World) -> None:
    world = sync_world
    r = world.platform.records
    tech1 = world.users["tech1"]
    account = r.create("account", {"name": "North", "ownerid": EntityRef("systemuser", tech1)})
    hidden = r.create(
        "workorder",
        {"name": "North's", "serviceaccountid": account, "ownerid": EntityRef("systemuser", tech1)},
    )
    south = r.create(
        "account",
        {"name": "South", "ownerid": EntityRef("systemuser", world.users["tech3"])},
    )
    # tech3 (another business unit) cannot read tech1's work order
    fresh = uuid.uuid4()
    values = {"name": "Mine", "serviceaccountid": str(south)}
    [clash, ok] = upload(
        world, "tech3", [change("create", hidden, values), change("create", fresh, values)]
    )
    assert clash["status"] == "rejected"
    assert clash["row"] is None
    assert clash["error"]["type"] != ERROR_TYPE_EXISTS
    assert "already" not in clash["error"]["message"]
    assert ok["status"] == "applied"
    assert r.retrieve("workorder", hidden)["name"] == "North's"


def test_a_sync_upload_checks_append_per_row(sync_world: World) -> None:
    world = sync_world
    org = world.platform.org
    dispatcher = org.role(
        "Dispatcher",
        privileges={
            "workorder": {
                "create": "organization",
                "read": "organization",
                "write": "organization",
                "append": "user",
                "appendto": "organization",
            },
            "account": {"read": "organization", "appendto": "organization"},
            "contact": {"read": "organization", "appendto": "organization"},
        },
    )
    org.user("dee", business_unit=world.unit, password=PASSWORD, roles=[dispatcher])
    r = world.platform.records
    tech1 = world.users["tech1"]
    account = r.create("account", {"name": "North", "ownerid": EntityRef("systemuser", tech1)})
    contact = r.create("contact", {"lastname": "Ng", "ownerid": EntityRef("systemuser", tech1)})
    theirs = r.create(
        "workorder",
        {"name": "Tech1's", "serviceaccountid": account, "ownerid": EntityRef("systemuser", tech1)},
    )
    mine = uuid.uuid4()
    results = upload(
        world,
        "dee",
        [
            change("update", theirs, {"primarycontactid": str(contact)}),
            change(
                "create",
                uuid.uuid4(),
                {
                    "name": "For tech1",
                    "serviceaccountid": str(account),
                    "ownerid": str(tech1),
                    "owneridtype": "systemuser",
                },
            ),
            change("update", theirs, {"name": "Renamed"}),
            change("create", mine, {"name": "Mine", "serviceaccountid": str(account)}),
        ],
    )
    assert [x["status"] for x in results] == ["rejected", "rejected", "applied", "applied"]
    assert all("append" in x["error"]["message"] for x in results[:2])
    row = r.retrieve("workorder", theirs)
    assert row["primarycontactid"] is None
    assert row["name"] == "Renamed"
    assert r.retrieve("workorder", mine)["primarycontactid"] is None


def test_a_session_from_before_the_upgrade_refreshes_and_gets_the_grace_period(
    platform: Platform,
) -> None:
    """A database made before the grace period: its sessions hold random refresh tokens and
    no seed. The upgrade adds the columns; the old token rotates into a derived one."""
    import hashlib

    platform.org.user("ann", password=PASSWORD, roles=[platform.org.role_id(BASIC_USER)])
    pair = platform.auth.sign_in("ann", PASSWORD)
    session = pair.refresh_token.split(".")[1]
    legacy = f"fsr.{session}.{uuid.uuid4().hex}"
    store = platform.store
    with store.write() as conn:
        conn.execute(
            fs_session.update().values(
                refreshhash=hashlib.sha256(legacy.encode()).hexdigest(), seed=None
            )
        )
        for column in ("seed", "previoushash", "rotatedon"):
            conn.exec_driver_sql(f"ALTER TABLE fs_session DROP COLUMN {column}")
        conn.exec_driver_sql("DELETE FROM fs_migration WHERE name = '0004_refresh_grace'")
    assert store.upgrade() == ["0004_refresh_grace"]
    assert store.upgrade() == []
    fresh = platform.auth.refresh(legacy)
    assert platform.auth.refresh(legacy).refresh_token == fresh.refresh_token  # the grace
    newer = platform.auth.refresh(fresh.refresh_token)
    assert platform.auth.authenticate(newer.access_token) == pair.user_id
