"""The field web app in a real browser: Debian's chromium, driven by Playwright, against a real
server on loopback (SQLite and PostgreSQL). A technician signs in and syncs; the network goes;
the app opens from its service worker and keeps working; the changes land once when the network
returns; rejected changes, reassignments and lost access show as they should; a first sync cut
off by closing the browser resumes. Every screen is saved at phone size (``FIELDSYNC_SCREENSHOTS``
names the directory; by default the test's tmp dir ``artifacts/``)."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import threading
from pathlib import Path
from typing import Any

import pytest

from fieldsync.errors import PluginError
from fieldsync.offline.access import find_app
from fieldsync.offline.apps import APP_VIEWS, create_view
from fieldsync.platform import Platform
from fieldsync.records.plugins import PluginContext
from fieldsync.sync.service import SyncService
from fieldsync.types import EntityRef
from fieldsync.webapp.router import STATIC
from sync_world import PASSWORD, World, serving

CHROMIUM = "/usr/bin/chromium"
PHONE = {"width": 390, "height": 844}
PROFILE = """\
name: Field Service
tables:
  workorder:
    {filter: other, owned_by: [me], sync_interval: 15, images: [sitephoto], files: [servicereport]}
  account: {filter: related, relationships: [account_workorder_serviceaccountid], sync_interval: 60}
  contact: {filter: related, relationships: [account_contact_parentcustomerid]}
apps:
  - uniquename: fieldservice
    name: Field Service
    can_be_used_offline: true
    mode: offline-first
    profile_mode: PROFILE_MODE
    allow_sync_frequency: true
    allow_wifi_only: true
"""
ACTIVE = (
    '<fetch><entity name="workorder"><attribute name="name"/><attribute name="priority"/>'
    '<attribute name="serviceaccountid"/><order attribute="name"/>'
    '<filter><condition attribute="statecode" operator="eq" value="0"/></filter>'
    "</entity></fetch>"
)


def photo() -> bytes:
    """A small PNG, what a camera would hand the page."""
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 120, 40)).save(out, format="PNG")
    return out.getvalue()


@pytest.fixture
def chromium() -> str:
    if not os.path.exists(CHROMIUM):
        if os.environ.get("FIELDSYNC_REQUIRE_BROWSER"):
            pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium")
        pytest.skip(f"{CHROMIUM} is missing (apt-get install -y chromium; .ci/run installs it)")
    if not (STATIC / "index.html").is_file():
        pytest.fail("the field app is not built: run `make web`")
    return CHROMIUM


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    path = Path(os.environ.get("FIELDSYNC_SCREENSHOTS") or tmp_path / "artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


def make_world(platform: Platform, tmp_path: Path, *, restricted: bool = False) -> World:
    world = World(platform, tmp_path)
    world.sync = SyncService(platform.records)  # the real offline access
    world.app.state.sync = world.sync
    platform.offline.import_yaml(
        PROFILE.replace("PROFILE_MODE", "restricted" if restricted else "default")
    )
    world.profile = platform.offline.publish("Field Service")
    with platform.store.read() as conn:
        app = find_app(conn, platform.store, "fieldservice")["appmoduleid"]
    view = create_view(platform.records, "My active work orders", "workorder", ACTIVE)
    platform.records.associate(APP_VIEWS, app, view)
    return world


def seed(world: World) -> dict[str, Any]:
    r = world.platform.records
    tech1, tech2 = world.users["tech1"], world.users["tech2"]
    acc1 = r.create("account", {"name": "Contoso", "ownerid": EntityRef("systemuser", tech2)})
    acc2 = r.create("account", {"name": "Fabrikam", "ownerid": EntityRef("systemuser", tech2)})
    con1 = r.create(
        "contact",
        {
            "lastname": "Ada",
            "parentcustomerid": EntityRef("account", acc1),
            "ownerid": EntityRef("systemuser", tech2),
        },
    )
    mine = EntityRef("systemuser", tech1)
    wo = {
        name: r.create(
            "workorder",
            {"name": name, "serviceaccountid": acc1, "priority": 2, "ownerid": mine},
        )
        for name in ("Pump", "Boiler", "Chiller", "Heat exchanger")
    }
    wo2 = r.create(
        "workorder",
        {"name": "Valve", "serviceaccountid": acc2, "ownerid": EntityRef("systemuser", tech2)},
    )
    return {"acc1": acc1, "acc2": acc2, "con1": con1, "wo": wo, "valve": wo2}


def norm(value: Any) -> Any:
    """One spelling per value, for comparing the browser's replica with the oracle."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, list):
        return sorted(norm(v) for v in value)
    if isinstance(value, str):
        if re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d(:\d\d(\.\d+)?)?(Z|[+-]\d\d:\d\d)?", value):
            moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=dt.UTC)
            return moment.timestamp()
        if re.fullmatch(r"-?\d+(\.\d+)?", value):
            return float(value)
    return value


def browser_replica(page: Any, scope: dict[str, dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """The browser's replica in the oracle's shape: every row of each profile table."""
    out: dict[str, Any] = {}
    for table, rows in scope.items():
        columns = sorted({c for row in rows.values() for c in row})
        got = page.evaluate(
            """async ([table]) => {
                const device = window.fieldsync.device;
                const t = (await device.tables()).find((x) => x.name === table);
                const { rows } = await device.query(table, { limit: 1000000 });
                return { primary: t.primaryId, rows };
            }""",
            [table],
        )
        out[table] = {
            str(r[got["primary"]]): {c: norm(r.get(c)) for c in columns} for r in got["rows"]
        }
    return out


def normal_scope(scope: dict[str, dict[str, dict[str, Any]]]) -> dict[str, Any]:
    return {
        table: {rid: {c: norm(v) for c, v in row.items()} for rid, row in rows.items()}
        for table, rows in scope.items()
    }


class Browser:
    """One chromium with a phone-sized context; screenshots by name."""

    def __init__(self, pw: Any, chromium: str, shots: Path, user_data: Path | None = None):
        self.shots = shots
        options = {"viewport": PHONE, "device_scale_factor": 2, "is_mobile": True}
        if user_data is None:
            self.browser = pw.chromium.launch(executable_path=chromium)
            self.context = self.browser.new_context(**options)
        else:
            self.browser = None
            self.context = pw.chromium.launch_persistent_context(
                str(user_data), executable_path=chromium, **options
            )
        self.page = self.context.pages[0] if self.context.pages else self.context.new_page()
        self.errors: list[str] = []
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

    def shot(self, name: str) -> None:
        self.page.screenshot(path=str(self.shots / f"{name}.png"))

    def close(self) -> None:
        with contextlib.suppress(Exception):  # the page may be gone already
            self.shot("last-seen")  # where a failed test stopped
        self.context.close()
        if self.browser is not None:
            self.browser.close()


def sign_in(page: Any, url: str, user: str) -> None:
    from playwright.sync_api import expect

    page.goto(f"{url}/app")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    expect(page.get_by_label("Server")).to_have_value(url)
    page.get_by_label("User name").fill(user)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()


def status(page: Any) -> Any:
    return page.locator("#status-text")


def test_a_technician_works_offline_in_the_browser(
    chromium: str, platform: Platform, tmp_path: Path, shots: Path
) -> None:
    from playwright.sync_api import expect, sync_playwright

    world = make_world(platform, tmp_path)
    ids = seed(world)
    r = platform.records

    @platform.plugins.on("workorder", "update", "pre-validation")
    def no_urgent(ctx: PluginContext) -> None:
        if ctx.target.get("priority") == 4:
            raise PluginError("urgent work orders need a supervisor", code="URGENT")

    with serving(world) as url, sync_playwright() as pw:
        b = Browser(pw, chromium, shots)
        page = b.page
        try:
            # 1. sign in; the first sync shows each table's rows and bytes
            page.goto(f"{url}/app")
            expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
            b.shot("01-sign-in")
            # keyboard order: server, user name, password, the button
            page.get_by_label("Server").focus()
            for label in ("User name", "Password"):
                page.keyboard.press("Tab")
                expect(page.get_by_label(label)).to_be_focused()
            page.keyboard.press("Tab")
            expect(page.get_by_role("button", name="Sign in")).to_be_focused()
            sign_in(page, url, "tech1")
            expect(page.locator("#first-sync-message")).to_contain_text("Ready.", timeout=30_000)
            expect(page.locator(".progress-list li")).to_have_count(3)
            expect(page.locator(".progress-list")).to_contain_text("4 rows")
            b.shot("02-first-sync")
            page.get_by_role("button", name="Start working").click()
            expect(page.get_by_role("heading", name="My active work orders")).to_be_visible()
            expect(page.locator("#rows li")).to_have_count(4)
            expect(status(page)).to_contain_text("Online · synced")
            b.shot("03-list")
            page.set_viewport_size({"width": 820, "height": 1180})  # a tablet: two columns
            b.shot("03-list-tablet")
            page.set_viewport_size(PHONE)
            # the replica is the oracle's scope
            scope = world.scope("tech1")
            assert browser_replica(page, scope) == normal_scope(scope)

            # search
            page.get_by_label("Search").fill("boil")
            expect(page.locator("#rows li")).to_have_count(1)
            b.shot("04-search")
            page.get_by_label("Search").fill("")
            expect(page.locator("#rows li")).to_have_count(4)

            # 2. the network goes; the app opens from the service worker with its data
            page.evaluate("navigator.serviceWorker.ready")
            if not page.evaluate("Boolean(navigator.serviceWorker.controller)"):
                page.reload()
                expect(page.locator("#rows li")).to_have_count(4)
            b.context.set_offline(True)
            page.reload()
            expect(page.locator("#rows li")).to_have_count(4, timeout=15_000)
            expect(status(page)).to_contain_text("Offline")

            # edit a field (the instructions)
            page.get_by_role("link", name=re.compile("^Pump")).click()
            expect(page.get_by_role("heading", name="Work Order: Pump")).to_be_visible()
            b.shot("05-form")
            page.get_by_label("Instructions").fill("Bring the long ladder")
            page.get_by_label("Estimated Duration (min)").fill("lots")
            page.get_by_role("button", name="Save").click()
            # bad input is named at the field and nothing changes
            expect(page.locator("#e-estimatedduration")).to_contain_text("whole number")
            expect(page.get_by_label("Estimated Duration (min)")).to_have_attribute(
                "aria-invalid", "true"
            )
            b.shot("06-bad-input")
            assert "pending" not in (status(page).text_content() or "")
            page.get_by_label("Estimated Duration (min)").fill("")
            page.get_by_role("button", name="Save").click()
            expect(status(page)).to_contain_text("Offline · changes waiting")
            expect(status(page)).to_contain_text("1 pending")

            # create a work order with a photo, its account picked from the replica
            page.get_by_role("link", name="Lists").click()
            page.get_by_role("link", name="New Work Order").click()
            page.get_by_label("Work Order Number *").fill("Cooling tower")
            lookup = page.get_by_role("combobox", name="Service Account *")
            lookup.fill("cont")
            page.get_by_role("option", name="Contoso").click()
            expect(lookup).to_have_value("Contoso")
            page.get_by_label("Site Photo").set_input_files(
                [{"name": "site.png", "mimeType": "image/png", "buffer": photo()}]
            )
            b.shot("07-new-with-photo")
            page.get_by_role("button", name="Save").click()
            expect(page.get_by_role("heading", name="Work Order: Cooling tower")).to_be_visible()
            # the photo opens from the device (offline)
            page.get_by_role("button", name="Open photo").click()
            expect(page.get_by_role("img", name=re.compile("Site Photo"))).to_be_visible()
            b.shot("08-created")

            # delete one
            page.get_by_role("link", name="Lists").click()
            page.get_by_role("link", name=re.compile("^Chiller")).click()
            page.get_by_role("button", name="Delete").click()
            b.shot("09-delete")
            page.get_by_role("dialog").get_by_role("button", name="Delete").click()
            expect(page.locator("#rows li")).to_have_count(4)  # 4 - Chiller + Cooling tower
            expect(status(page)).to_contain_text("Offline · changes waiting")
            expect(status(page)).to_contain_text("3 pending")
            b.shot("10-changes-waiting")

            # meanwhile an administrator changes another column of the edited row
            r.update("workorder", ids["wo"]["Pump"], {"priority": 3})

            # 3. the network returns: each change uploads once, the other column survives
            b.context.set_offline(False)
            page.get_by_role("button", name="Sync now").click()
            expect(status(page)).to_contain_text("Online · synced", timeout=30_000)
            pump = r.retrieve("workorder", ids["wo"]["Pump"])
            assert pump["instructions"] == "Bring the long ladder"
            assert pump["priority"] == 3
            made = r.retrieve_multiple(
                "workorder", where={"name": "Cooling tower"}, columns=["sitephoto"]
            )
            assert len(made) == 1
            assert made[0]["sitephoto"]
            assert not r.retrieve_multiple("workorder", where={"name": "Chiller"})
            again = page.evaluate("window.fieldsync.device.sync({ reason: 'test' })")
            assert again["uploaded"] == 0
            assert browser_replica(page, world.scope("tech1")) == normal_scope(world.scope("tech1"))

            # 4. a change the server refuses is reverted and listed under sync errors
            page.get_by_role("link", name=re.compile("^Boiler")).click()
            page.get_by_label("Priority").select_option(label="Urgent")
            page.get_by_role("button", name="Save").click()
            page.get_by_role("button", name="Sync now").click()
            expect(status(page)).to_contain_text("sync error", timeout=30_000)
            page.get_by_role("link", name=re.compile("Sync errors")).click()
            error = page.locator(".sync-error")
            expect(error).to_contain_text("urgent work orders need a supervisor")
            expect(error.locator("tbody tr")).to_contain_text(["Priority"])
            b.shot("11-sync-errors")
            assert r.retrieve("workorder", ids["wo"]["Boiler"])["priority"] == 2
            page.get_by_role("link", name="Lists").click()  # reverted in the list
            expect(page.get_by_role("link", name=re.compile("^Boiler"))).to_contain_text("Normal")

            # settings
            page.get_by_role("link", name="Settings").click()
            expect(page.get_by_label("Sync frequency")).to_be_visible()
            b.shot("12-settings")

            # 5. a work order reassigned away leaves after the next (live-triggered) sync
            page.get_by_role("link", name="Lists").click()
            expect(page.get_by_role("link", name=re.compile("^Heat exchanger"))).to_be_visible()
            r.update(
                "workorder",
                ids["wo"]["Heat exchanger"],
                {"ownerid": EntityRef("systemuser", world.users["tech2"])},
            )
            expect(page.get_by_role("link", name=re.compile("^Heat exchanger"))).to_have_count(
                0, timeout=30_000
            )

            # sign-out wipes the replica
            page.get_by_role("link", name="Settings").click()
            page.once("dialog", lambda d: d.accept())
            page.get_by_role("button", name="Sign out").click()
            expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
            assert page.evaluate("window.fieldsync.device.session()") is None
            assert b.errors == []
        finally:
            b.close()


def test_a_user_removed_from_a_restricted_profile_loses_the_data(
    chromium: str, platform: Platform, tmp_path: Path, shots: Path
) -> None:
    from playwright.sync_api import expect, sync_playwright

    world = make_world(platform, tmp_path, restricted=True)
    seed(world)
    platform.offline.add_members("Field Service", teams=[world.team])
    with serving(world) as url, sync_playwright() as pw:
        b = Browser(pw, chromium, shots)
        page = b.page
        try:
            sign_in(page, url, "tech1")
            expect(page.locator("#first-sync-message")).to_contain_text("Ready.", timeout=30_000)
            page.get_by_role("button", name="Start working").click()
            expect(page.locator("#rows li")).to_have_count(4)
            platform.org.remove_members(world.team, [world.users["tech1"]])
            page.get_by_role("button", name="Sync now").click()
            expect(page.locator("#access-removed")).to_contain_text(
                "removed from this device", timeout=30_000
            )
            expect(page.locator("#rows li")).to_have_count(0)
            gone = "window.fieldsync.device.tables().then((t) => t.length, () => 0)"
            assert page.evaluate(gone) == 0
            b.shot("13-access-removed")
        finally:
            b.close()


def test_a_first_sync_cut_off_by_closing_the_browser_resumes(
    chromium: str, platform: Platform, tmp_path: Path, shots: Path
) -> None:
    from playwright.sync_api import expect, sync_playwright

    world = make_world(platform, tmp_path)
    acc = seed(world)["acc1"]
    r = platform.records
    mine = EntityRef("systemuser", world.users["tech1"])
    for start in range(0, 2400, 400):
        rows = [
            {"name": f"Job {n:05}", "serviceaccountid": acc, "ownerid": mine}
            for n in range(start, start + 400)
        ]
        r.create_many("workorder", rows)
    user_data = tmp_path / "profile"
    with serving(world) as url, sync_playwright() as pw:
        b = Browser(pw, chromium, shots, user_data=user_data)
        cut = threading.Event()

        def second_page_never_arrives(route: Any) -> None:
            cursors = (route.request.post_data_json or {}).get("cursors") or {}
            if any(v is not None for v in cursors.values()):  # the first page is stored
                cut.set()
                route.abort("internetdisconnected")
            else:
                route.continue_()

        b.context.route("**/sync/v1/download", second_page_never_arrives)
        sign_in(b.page, url, "tech1")
        for _ in range(1500):
            if cut.is_set():
                break
            b.page.wait_for_timeout(20)
        assert cut.is_set(), "the first sync never asked for a second page"
        b.close()  # the browser goes away in the middle of the first sync

        downloads: list[dict[str, Any]] = []
        b = Browser(pw, chromium, shots, user_data=user_data)
        b.context.on(
            "request",
            lambda r: (
                downloads.append(r.post_data_json or {})
                if r.url.endswith("/sync/v1/download")
                else None
            ),
        )
        try:
            page = b.page
            page.goto(f"{url}/app")
            for _ in range(600):  # the app's sync on opening takes up the work orders
                if any("workorder" in d["cursors"] for d in downloads):
                    break
                page.wait_for_timeout(100)
            expect(status(page)).to_contain_text("Online · synced", timeout=60_000)
            expect(page.get_by_role("button", name="Sync now")).to_be_enabled()
            # the download went on from the stored cursor, not from the start
            asked = [d["cursors"]["workorder"] for d in downloads if "workorder" in d["cursors"]]
            assert asked, "the work orders' download did not go on"
            assert None not in asked, "the work orders' download started again from scratch"
            scope = world.scope("tech1")
            assert browser_replica(page, scope) == normal_scope(scope)
        finally:
            b.close()
