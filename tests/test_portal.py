"""The maker portal in process: sign-in, sessions and CSRF, read-only pages for a basic user,
refusals that change nothing, and the table setting it writes."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from fieldsync.config import Settings
from fieldsync.errors import SchemaError
from fieldsync.offline.profiles import load_draft
from fieldsync.platform import Platform
from fieldsync.server.app import create_app
from fieldsync.store.store import Store
from portal_world import PortalOrg, csrf_of, make_org, sign_in
from sync_world import AsgiBridge


@pytest.fixture
def org(platform: Platform) -> PortalOrg:
    return make_org(platform)


@pytest.fixture
def client(platform: Platform, org: PortalOrg) -> Iterator[httpx.Client]:
    bridge = AsgiBridge(create_app(Settings(), platform=platform))
    try:
        with httpx.Client(transport=bridge, base_url="http://testserver") as c:
            yield c
    finally:
        bridge.close()
        bridge.loop.close()


def test_pages_need_a_session_and_forms_their_csrf_token(
    client: httpx.Client, platform: Platform
) -> None:
    answer = client.get("/portal/profiles?x=1")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/portal/sign-in?next=/portal/profiles%3Fx%3D1"
    page = client.get("/portal/sign-in")
    assert "SameSite=strict" in page.headers["set-cookie"]
    assert "HttpOnly" in page.headers["set-cookie"]
    assert "default-src 'self'" in page.headers["content-security-policy"]
    wrong = client.post(
        "/portal/sign-in",
        data={"csrf": csrf_of(page.text), "username": "maker", "password": "not the password"},
    )
    assert wrong.status_code == 401
    assert "text/html" in wrong.headers["content-type"]
    no_token = client.post("/portal/sign-in", data={"username": "maker", "password": "x"})
    assert no_token.status_code == 403
    assert "did not come from the portal" in no_token.text
    sign_in(client, "maker")
    assert client.get("/portal/tables").status_code == 200
    forged = client.post("/portal/tables/sitevisit", data={"offline": "on", "csrf": "guess"})
    assert forged.status_code == 403
    assert not platform.store.schema.table("sitevisit").offline
    missing = client.get("/portal/profiles/00000000-0000-4000-8000-000000000999")
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("text/html")
    # signing out ends the API session behind the cookie
    out = client.post("/portal/sign-out", data={"csrf": csrf_of(client.get("/portal/tables").text)})
    assert out.status_code == 303
    assert client.get("/portal/tables").status_code == 303


def test_a_basic_user_sees_profiles_read_only_and_cannot_change_them(
    client: httpx.Client, platform: Platform, org: PortalOrg
) -> None:
    profile = platform.offline.generate_profile(org.app)
    sign_in(client, "lena")
    page = client.get(f"/portal/profiles/{profile}")
    assert page.status_code == 200
    assert "Read only:" in page.text
    assert '<fieldset class="bare" disabled>' in page.text
    assert "/publish" not in page.text
    assert "Save workorder" not in page.text
    csrf = csrf_of(page.text)
    with platform.store.read() as conn:
        before = load_draft(conn, platform.store, profile)
    refused = client.post(
        f"/portal/profiles/{profile}/tables/workorder",
        data={"csrf": csrf, "filter": "1", "sync_interval": "15"},
    )
    assert refused.status_code == 403
    published = client.post(f"/portal/profiles/{profile}/publish", data={"csrf": csrf})
    assert published.status_code == 403
    table = client.post("/portal/tables/sitevisit", data={"csrf": csrf, "offline": "on"})
    assert table.status_code == 403
    assert "System Administrator" in table.text
    with platform.store.read() as conn:
        assert load_draft(conn, platform.store, profile) == before
    assert platform.offline.published_profile(profile) is None
    assert not platform.store.schema.table("sitevisit").offline


def test_a_maker_gets_bad_input_back_with_a_clear_message(
    client: httpx.Client, platform: Platform, org: PortalOrg
) -> None:
    profile = platform.offline.generate_profile(org.app)
    sign_in(client, "maker")
    csrf = csrf_of(client.get(f"/portal/profiles/{profile}").text)
    with platform.store.read() as conn:
        before = load_draft(conn, platform.store, profile)
    answer = client.post(
        f"/portal/profiles/{profile}/tables/workorder",
        data={
            "csrf": csrf,
            "filter": "3",
            "custom_filter": "<fetch><entity name='workorder'>",
            "sync_interval": "15",
        },
    )
    assert answer.status_code == 400
    assert "custom filter" in answer.text
    assert 'id="refused-workorder"' in answer.text
    interval = client.post(
        f"/portal/profiles/{profile}/tables/workorder",
        data={"csrf": csrf, "filter": "1", "sync_interval": "2"},
    )
    assert interval.status_code == 400
    assert "5 to 1440 minutes" in interval.text
    with platform.store.read() as conn:
        assert load_draft(conn, platform.store, profile) == before


def test_a_tables_offline_setting_is_kept(store: Store, database_url: str) -> None:
    assert store.schema.table("account").offline
    store.set_table_offline("account", False)
    assert not store.schema.table("account").offline
    again = Store.open(database_url)
    try:
        assert not again.schema.table("account").offline
    finally:
        again.close()
    with pytest.raises(SchemaError, match="intersect"):
        store.set_table_offline("teammembership", True)
