"""The maker portal in a real browser: Debian's chromium, driven by Playwright, walks the
set-up the seeds describe, from a table enabled for offline to a sync error a device caused.
Each page is saved as a screenshot (``FIELDSYNC_SCREENSHOTS`` names another directory)."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from fieldsync.client import Device
from fieldsync.config import Settings
from fieldsync.errors import PluginError
from fieldsync.platform import Platform, build
from fieldsync.records.plugins import PluginContext
from fieldsync.server.app import create_app
from fieldsync.store.store import Store
from portal_world import PASSWORD, make_org

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture
def chromium() -> str:
    if not os.path.exists(CHROMIUM):
        if os.environ.get("FIELDSYNC_REQUIRE_BROWSER"):
            pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium")
        pytest.skip(f"{CHROMIUM} is missing (apt-get install -y chromium; .ci/run installs it)")
    return CHROMIUM


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Platform, str]]:
    """A platform on SQLite served by uvicorn on a loopback port."""
    import socket
    import time

    import uvicorn

    platform = build(Store.open(f"sqlite:///{tmp_path / 'portal.db'}"))
    app = create_app(Settings(), platform=platform)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.01)
    try:
        yield platform, f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
        platform.close()


def test_a_maker_sets_up_offline_in_the_browser(
    chromium: str, served: tuple[Platform, str], tmp_path: Path
) -> None:
    from playwright.sync_api import expect, sync_playwright

    platform, url = served
    org = make_org(platform)

    @platform.plugins.on("workorder", "update", "pre-validation")
    def no_urgent(ctx: PluginContext) -> None:
        if ctx.target.get("priority") == 1:
            raise PluginError("urgent work orders need a supervisor", code="URGENT")

    shots = Path(os.environ.get("FIELDSYNC_SCREENSHOTS") or tmp_path / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium)
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        page.on("dialog", lambda dialog: dialog.accept())

        def shot(name: str) -> None:
            page.screenshot(path=str(shots / f"{name}.png"), full_page=True)

        # sign in
        page.goto(f"{url}/portal/tables")
        expect(page).to_have_url(f"{url}/portal/sign-in?next=/portal/tables")
        page.get_by_label("User name").fill("maker")
        page.get_by_label("Password").fill(PASSWORD)
        shot("sign-in")
        page.get_by_role("button", name="Sign in").click()

        # 1. a table: "can be taken offline"
        row = page.locator("#table-sitevisit")
        expect(row.get_by_label("Can be taken offline")).not_to_be_checked()
        row.get_by_label("Can be taken offline").check()
        expect(page.get_by_role("status")).to_have_text("Saved.")
        expect(
            page.locator("#table-sitevisit").get_by_label("Can be taken offline")
        ).to_be_checked()
        assert platform.store.schema.table("sitevisit").offline
        shot("tables")

        # 2. an app: can be used offline; 3. a new profile with the current app data
        page.get_by_role("link", name="Apps").click()
        page.get_by_role("link", name="Field Service").click()
        page.get_by_label("Can be used offline").check()
        page.get_by_label("Allow users to adjust sync frequency").check()
        page.get_by_role("button", name="Save").click()
        expect(page.get_by_role("status")).to_have_text("Saved.")
        shot("app")
        page.get_by_role("button", name="New profile with current app data").click()
        expect(page.get_by_role("heading", level=1)).to_have_text("Field Service (generated)")
        for table in ("account", "sitevisit", "workorder"):
            expect(page.locator(f"#item-{table}")).to_be_visible()

        # 4. the work orders' filter becomes a custom FetchXML filter
        item = page.locator("#item-workorder")
        expect(item.get_by_label("Custom filter (FetchXML on workorder)")).to_be_hidden()
        item.get_by_label("Custom filter (FetchXML)", exact=True).check()
        item.get_by_label("Custom filter (FetchXML on workorder)").fill(
            '<fetch><entity name="workorder"><filter>'
            '<condition attribute="ownerid" operator="eq-useroruserteams"/>'
            "</filter></entity></fetch>"
        )
        item.get_by_role("button", name="Save workorder").click()
        expect(page.get_by_role("status")).to_have_text("Saved.")
        item = page.locator("#item-workorder")
        expect(item.get_by_label("Custom filter (FetchXML)", exact=True)).to_be_checked()

        # 5. site visits follow their work orders
        item = page.locator("#item-sitevisit")
        item.get_by_label("Work Order | Field name: workorderid").check()
        item.get_by_role("button", name="Save sitevisit").click()
        expect(page.get_by_role("status")).to_have_text("Saved.")
        expect(
            page.locator("#item-sitevisit").get_by_label("Work Order | Field name: workorderid")
        ).to_be_checked()

        # 6. a relationship to a table missing from the profile is refused, inline
        item = page.locator("#item-account")
        item.get_by_label("Contact | Field name: parentcustomerid").check()
        item.get_by_role("button", name="Save account").click()
        alert = page.locator("#refused-account")
        expect(alert).to_contain_text("leads to table 'contact', which is not in the profile")
        expect(page.locator("#p-account-relationships")).to_contain_text("add that table first")
        shot("profile-refused")

        # 7. fixed: add the contacts, then the relationship saves
        page.get_by_label("Table (only tables that can be taken offline)").select_option("contact")
        page.get_by_role("button", name="Add table").click()
        expect(page.get_by_role("status")).to_have_text("Added.")
        item = page.locator("#item-account")
        item.get_by_label("Contact | Field name: parentcustomerid").check()
        item.get_by_role("button", name="Save account").click()
        expect(page.get_by_role("status")).to_have_text("Saved.")
        expect(page.locator(".error")).to_have_count(0)

        # 8. preview, then publish
        page.get_by_label("Preview for").select_option(label="lena")
        page.get_by_role("button", name="Preview").click()
        expect(page.get_by_role("heading", level=1)).to_have_text(
            "Preview of Field Service (generated)"
        )
        lena_preview = page.get_by_role("region", name="lena")
        expect(lena_preview.get_by_role("row", name="workorder")).to_contain_text("not in it")
        expect(page.get_by_role("region", name="Warnings")).to_contain_text("None")
        shot("profile-preview")
        page.get_by_role("link", name="Back to the profile").click()
        page.get_by_role("button", name="Publish").click()
        expect(page.get_by_role("status")).to_contain_text("Published")
        expect(page.locator(".state")).to_contain_text("Published version 1")

        # 9. a team gets offline access
        page.get_by_label("Add team").select_option(label="Crew")
        page.get_by_role("button", name="Add team").click()
        members = page.locator("#members")
        expect(members).to_contain_text("Crew")
        expect(members).to_contain_text("lena")
        page.locator("#item-account").scroll_into_view_if_needed()
        shot("profile")
        page.set_viewport_size({"width": 390, "height": 844})
        shot("profile-phone")
        page.set_viewport_size({"width": 1100, "height": 900})

        # 10. a device syncs, and a change it makes is rejected
        device = Device.login(
            tmp_path / "lena-phone",
            server=url,
            username="lena",
            password=PASSWORD,
            app="fieldservice",
        )
        try:
            device.sync()
            device.update("workorder", org.workorder, {"priority": 1})
            assert device.sync().rejected == 1
            page.get_by_role("link", name="Sync Errors").click()
            page.get_by_label("User").select_option(label="lena")
            page.get_by_label("Table").select_option("workorder")
            page.get_by_role("button", name="Filter").click()
            rows = page.locator("tbody tr")
            expect(rows).to_have_count(1)
            expect(rows).to_contain_text("urgent work orders need a supervisor")
            shot("sync-errors")
            rows.get_by_role("link").click()
            expect(page.locator("pre.json")).to_contain_text('"priority": 1')
            expect(page.locator(".facts")).to_contain_text("URGENT")
            shot("sync-error")

            # the device list, why a row is on the device, and a purge that makes the
            # device start over
            page.get_by_role("link", name="Devices").click()
            row = page.locator("tbody tr")
            expect(row).to_contain_text(device.device_id)
            expect(row).to_contain_text("v1")
            shot("devices")
            row.get_by_role("link", name="Why is a row (not) here").click()
            expect(page.get_by_label("App")).to_have_value("fieldservice")
            expect(page.get_by_label("User")).to_have_value(str(org.lena))
            page.get_by_label("Table").select_option("workorder")
            page.get_by_label("Row id").fill(str(org.workorder))
            page.get_by_role("button", name="Explain").click()
            explanation = page.get_by_role("region", name="In scope: the row is on the device")
            expect(explanation).to_contain_text("readable through")
            expect(explanation.get_by_role("listitem").first).to_contain_text("Holds")
            shot("explain")
            page.get_by_role("link", name="Devices").click()
            row = page.locator("tbody tr")
            row.get_by_role("button", name="Purge").click()
            expect(page.get_by_role("status")).to_contain_text("Device purged")
            expect(page.locator("tbody tr")).to_contain_text("No devices yet.")
            report = device.sync()
            assert set(report.rescoped) == {"account", "contact", "sitevisit", "workorder"}
        finally:
            device.close()
        browser.close()
    assert {p.name for p in shots.iterdir()} >= {
        "sign-in.png",
        "tables.png",
        "app.png",
        "profile.png",
        "profile-refused.png",
        "sync-errors.png",
        "sync-error.png",
        "devices.png",
        "profile-preview.png",
        "explain.png",
    }
