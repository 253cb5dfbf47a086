"""The portal's "Why is this row (not) on this device" page and the profile editor's
Preview, over HTTP: CSRF-protected, the same answers as the sync service and the preview,
and the same rules (only administrators ask about other users and about rows the asker may
not read; previewing needs Write on the profile)."""

from __future__ import annotations

import html
import re
import uuid
from collections.abc import Iterator

import httpx
import pytest

from fieldsync.config import Settings
from fieldsync.offline.access import APP
from fieldsync.offline.profiles import load_draft
from fieldsync.platform import Platform
from fieldsync.security.context import load_context
from fieldsync.server.app import create_app
from fieldsync.sync.preview import preview_profile
from fieldsync.sync.service import SyncService
from fieldsync.types import EntityRef
from portal_world import PASSWORD, PortalOrg, csrf_of, make_org, sign_in
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


def offline_app(platform: Platform, org: PortalOrg) -> uuid.UUID:
    """The org's app offline, with its generated profile published."""
    profile = platform.offline.generate_profile(org.app)
    platform.records.update(
        APP, org.app, {"canbeusedoffline": True, "mobileofflineprofileid": profile}
    )
    platform.offline.publish(profile)
    return profile


def elsewhere(platform: Platform) -> uuid.UUID:
    """A work order in another business unit, owned by a user there: lena cannot read it."""
    unit = platform.org.business_unit("North")
    owner = platform.org.user("nora", business_unit=unit, password=PASSWORD)
    mine = EntityRef("systemuser", owner)
    account = platform.records.create("account", {"name": "Fabrikam", "ownerid": mine})
    return platform.records.create(
        "workorder", {"name": "Far away", "serviceaccountid": account, "ownerid": mine}
    )


def text_of(page: str) -> str:
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page)))


def test_explain_answers_as_the_sync_service_and_keeps_its_rules(
    client: httpx.Client, platform: Platform, org: PortalOrg
) -> None:
    offline_app(platform, org)
    hidden = elsewhere(platform)
    sign_in(client, "lena")
    form = client.get(
        "/portal/explain",
        params={"app": "fieldservice", "table": "workorder", "id": str(org.workorder)},
    )
    assert form.status_code == 200
    assert '<label for="x-id">Row id</label>' in form.text
    assert f'value="{org.workorder}"' in form.text
    assert 'id="x-user"' not in form.text  # no choice of user for a non-administrator
    assert "In scope" not in form.text  # a link only fills the form in
    csrf = csrf_of(form.text)
    fields = {"app": "fieldservice", "table": "workorder", "id": str(org.workorder)}

    forged = client.post("/portal/explain", data={**fields, "csrf": "guess"})
    assert forged.status_code == 403
    assert "did not come from the portal" in forged.text

    mine = client.post("/portal/explain", data={**fields, "csrf": csrf})
    assert mine.status_code == 200
    expected = SyncService(platform.records).explain(
        load_context(platform.store, org.lena),
        app="fieldservice",
        table="workorder",
        record_id=str(org.workorder),
    )
    assert expected["in_scope"] is True
    page = text_of(mine.text)
    assert "In scope: the row is on the device" in page
    for step in expected["steps"]:
        assert step["detail"] in page
    assert page.count("Holds (") == sum(s["ok"] for s in expected["steps"])

    # another user's device: administrators only; a row lena cannot read: not found
    other = client.post("/portal/explain", data={**fields, "user": str(org.maker), "csrf": csrf})
    assert other.status_code == 403
    assert "only administrators" in other.text
    unreadable = client.post("/portal/explain", data={**fields, "id": str(hidden), "csrf": csrf})
    assert unreadable.status_code == 404
    assert f"no workorder row {hidden} that you can read" in unreadable.text
    assert "Not in scope" not in unreadable.text
    bad = client.post("/portal/explain", data={**fields, "id": "not-a-guid", "csrf": csrf})
    assert bad.status_code == 400
    assert 'role="alert"' in bad.text
    # the session survives every refusal
    assert client.get("/portal/explain").status_code == 200

    # an administrator asks about lena's device, and hears about the row she cannot read
    client.post("/portal/sign-out", data={"csrf": csrf})
    sign_in(client, "maker")
    form = client.get("/portal/explain", params={"app": "fieldservice", "user": str(org.lena)})
    assert 'id="x-user"' in form.text
    assert f'<option value="{org.lena}" selected>lena</option>' in form.text
    answer = client.post(
        "/portal/explain",
        data={**fields, "id": str(hidden), "user": str(org.lena), "csrf": csrf_of(form.text)},
    )
    assert answer.status_code == 200
    page = text_of(answer.text)
    assert "Not in scope: the row is not on the device" in page
    assert "User lena" in page
    assert "Readable no" in page


def test_explain_is_linked_from_devices_profiles_and_members(
    client: httpx.Client, platform: Platform, org: PortalOrg
) -> None:
    profile = offline_app(platform, org)
    platform.offline.add_members(profile, users=[org.lena])
    lena = load_context(platform.store, org.lena)
    SyncService(platform.records).handshake(lena, device="lena-phone-01", app="fieldservice")
    sign_in(client, "maker")
    page = client.get(f"/portal/profiles/{profile}").text
    assert 'href="/portal/explain?app=fieldservice"' in page
    link = f'href="/portal/explain?app=fieldservice&amp;user={org.lena}"'
    assert link in page  # from the user, in the profile's members
    devices = client.get("/portal/devices").text
    assert link in devices
    assert 'Why is a row (not) here<span class="visually-hidden"> on lena-phone-01</span>?' in (
        devices
    )
    # the link fills the form in
    form = client.get(f"/portal/explain?app=fieldservice&user={org.lena}").text
    assert '<option value="fieldservice" selected>Field Service</option>' in form


def test_preview_shows_the_draft_next_to_the_published_version(
    client: httpx.Client, platform: Platform, org: PortalOrg
) -> None:
    profile = offline_app(platform, org)
    platform.offline.add_members(profile, users=[org.lena])
    # the draft drops the accounts
    platform.offline.remove_draft_item(profile, "account")
    sign_in(client, "maker")
    editor = client.get(f"/portal/profiles/{profile}")
    assert '<button type="submit">Preview</button>' in editor.text
    assert '<label for="preview-user">Preview for</label>' in editor.text
    csrf = csrf_of(editor.text)

    forged = client.post(f"/portal/profiles/{profile}/preview", data={"csrf": "guess"})
    assert forged.status_code == 403

    answer = client.post(
        f"/portal/profiles/{profile}/preview", data={"csrf": csrf, "user": str(org.lena)}
    )
    assert answer.status_code == 200, answer.text
    expected = preview_profile(platform.records, profile, users=[org.lena]).to_json()
    (lena,) = expected["users"]
    section = answer.text[answer.text.index(f'id="user-{org.lena}"') :]
    for table in lena["tables"]:
        row = section[section.index(f'<th scope="row">{table["table"]}</th>') :]
        cells = re.findall(r'<td class="num">([^<]*)</td>', row)[:4]
        published = table["published_rows"]
        assert cells == [
            str(table["rows"]),
            "not in it" if published is None else str(published),
            str(table["moving_in"]),
            str(table["moving_out"]),
        ]
    accounts = next(t for t in lena["tables"] if t["table"] == "account")
    assert accounts["rows"] == 0
    assert accounts["moving_out"] == accounts["published_rows"] == 1
    assert "published version 1" in answer.text
    # nothing changed
    assert platform.offline.published_profile(profile).version == 1  # type: ignore[union-attr]

    everyone = client.post(f"/portal/profiles/{profile}/preview", data={"csrf": csrf})
    assert everyone.status_code == 200
    assert f'id="user-{org.lena}"' in everyone.text
    bad = client.post(f"/portal/profiles/{profile}/preview", data={"csrf": csrf, "sample": "lots"})
    assert bad.status_code == 400
    assert "sample" in bad.text


def test_preview_needs_write_on_the_profile_and_a_valid_draft(
    client: httpx.Client, platform: Platform, org: PortalOrg
) -> None:
    profile = offline_app(platform, org)
    sign_in(client, "lena")
    page = client.get(f"/portal/profiles/{profile}")
    assert "/preview" not in page.text
    refused = client.post(f"/portal/profiles/{profile}/preview", data={"csrf": csrf_of(page.text)})
    assert refused.status_code == 403
    assert "Write" in refused.text

    # a draft that cannot be published shows its problems instead of numbers
    with platform.store.read() as conn:
        before = load_draft(conn, platform.store, profile)
    platform.offline.change_draft(
        profile, lambda d: d.__class__(name=d.name, description=d.description, items=())
    )
    client.post("/portal/sign-out", data={"csrf": csrf_of(page.text)})
    sign_in(client, "maker")
    csrf = csrf_of(client.get(f"/portal/profiles/{profile}").text)
    invalid = client.post(f"/portal/profiles/{profile}/preview", data={"csrf": csrf})
    assert invalid.status_code == 400
    assert 'id="preview-problems"' in invalid.text
    assert before.items  # the published version was not touched
    assert platform.offline.published_profile(profile).items  # type: ignore[union-attr]
