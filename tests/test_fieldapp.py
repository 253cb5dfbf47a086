"""The field app driven by Textual's pilot against a real server (SQLite and PostgreSQL): first
sync, a view, an offline edit that waits and then lands, a rejected change, bad input."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import Button, DataTable, Input, OptionList, ProgressBar, Select, Static

from fieldsync.client import Device
from fieldsync.demo_offline import VIEWS
from fieldsync.errors import PluginError
from fieldsync.fieldapp.app import ACCESS_REMOVED, FieldApp, HomeScreen, StatusBar
from fieldsync.fieldapp.screens import (
    FirstSyncScreen,
    LookupPicker,
    MultiChoice,
    RecordForm,
    SettingsScreen,
    SyncErrorsScreen,
)
from fieldsync.offline.access import find_app
from fieldsync.offline.apps import APP_VIEWS, create_view
from fieldsync.platform import Platform
from fieldsync.records.plugins import PluginContext
from fieldsync.sync.service import SyncService
from sync_world import World
from test_sync import seed
from test_sync_profiles import PROFILE

ACTIVE = next(fetchxml for name, _, fetchxml in VIEWS if name == "My active work orders")


@pytest.fixture
def world(platform: Platform, tmp_path: Path) -> World:
    """The real offline access: a published profile, an app with the view of the demo."""
    world = World(platform, tmp_path)
    world.sync = SyncService(platform.records)
    world.app.state.sync = world.sync
    platform.offline.import_yaml(PROFILE)
    world.profile = platform.offline.publish("Field Service")
    with platform.store.read() as conn:
        app = find_app(conn, platform.store, "fieldservice")["appmoduleid"]
    view = create_view(platform.records, "My active work orders", "workorder", ACTIVE)
    platform.records.associate(APP_VIEWS, app, view)
    return world


def drive(device: Device, scenario: Callable[[FieldApp, Pilot[None]], Awaitable[None]]) -> None:
    async def run() -> None:
        app = FieldApp(device, auto_sync=False)
        async with app.run_test(size=(140, 40)) as pilot:
            await scenario(app, pilot)

    asyncio.run(run())


async def settle(app: FieldApp, pilot: Pilot[None]) -> None:
    """Let running syncs finish and their callbacks reach the screen."""
    await app.workers.wait_for_complete()
    await pilot.pause()


def status_line(app: FieldApp) -> str:
    return str(app.screen.query_one(StatusBar).render())


def rows(screen: Any) -> list[list[str]]:
    grid = screen.query_one("#rows", DataTable)
    return [[str(c) for c in grid.get_row_at(i)] for i in range(grid.row_count)]


def test_offline_edit_waits_then_syncs(world: World) -> None:
    ids = seed(world)
    r = world.platform.records
    device = world.device("tech1")

    async def scenario(app: FieldApp, pilot: Pilot[None]) -> None:
        # the first sync: a progress bar per table, with rows and bytes
        await settle(app, pilot)
        first = app.screen
        assert isinstance(first, FirstSyncScreen)
        assert first.done
        assert first.counts["workorder"][0] == 1
        assert first.counts["workorder"][1] > 0
        assert first.query_one("#bar-workorder", ProgressBar).percentage == 1.0
        assert "Online · synced" in status_line(app)
        await pilot.press("enter")
        home = app.screen
        assert isinstance(home, HomeScreen)
        # the view lists the user's active work order, its account by name
        lists = home.query_one("#lists", OptionList)
        assert [str(lists.get_option_at_index(i).prompt) for i in range(lists.option_count)] == [
            "My active work orders"
        ]
        labels = [str(c.label) for c in home.query_one("#rows", DataTable).columns.values()]
        assert labels == [
            " ",
            "Work Order Number",
            "Scheduled Start",
            "Service Account",
            "Primary Contact",
        ]
        assert rows(home) == [["", "Pump", "", "Contoso", ""]]
        # the network goes: open the row, rename it, save
        world.down = True
        home.query_one("#rows", DataTable).focus()
        await pilot.press("enter")
        form = app.screen
        assert isinstance(form, RecordForm)
        await pilot.pause()
        # the first field has the focus; chosen options carry a mark, not only a colour
        assert app.focused is form.query_one("#f-name", Input)
        kinds = form.query_one("#f-incidenttypes", MultiChoice)
        prompts = [str(kinds.get_option_at_index(i).prompt) for i in range(kinds.option_count)]
        assert prompts[0] == "  Inspection"
        kinds.select(1)
        await pilot.pause()
        assert str(kinds.get_option_at_index(0).prompt) == "✓ Inspection"
        kinds.deselect(1)
        await pilot.pause()
        form.query_one("#f-name", Input).value = "Pump (checked)"
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert isinstance(app.screen, HomeScreen)
        assert rows(home) == [["↑", "Pump (checked)", "", "Contoso", ""]]
        assert "1 pending" in status_line(app)
        # a new work order, offline, its account picked from the rows on the device
        await pilot.press("n")
        form = app.screen
        assert isinstance(form, RecordForm)
        form.query_one("#f-name", Input).value = "Leak"
        form.query_one("#f-serviceaccountid", Button).press()
        await pilot.pause()
        picker = app.screen
        assert isinstance(picker, LookupPicker)
        await pilot.press(*"conto")
        options = picker.query_one("#lookup-options", OptionList)
        assert [
            str(options.get_option_at_index(i).prompt) for i in range(options.option_count)
        ] == ["Contoso"]
        await pilot.press("enter")
        await pilot.pause()
        assert str(form.query_one("#f-serviceaccountid", Button).label) == "Contoso"
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert sorted(rows(home)) == [
            ["↑", "Leak", "", "Contoso", ""],
            ["↑", "Pump (checked)", "", "Contoso", ""],
        ]
        # sync now while offline: the changes wait, the indicator says so
        await pilot.press("s")
        await settle(app, pilot)
        assert "Offline · changes waiting" in status_line(app)
        assert device.pending_changes() == 2
        assert "2 pending" in status_line(app)
        assert r.retrieve("workorder", ids["wo1"])["name"] == "Pump"
        # the server is back: sync now applies it
        world.down = False
        await pilot.press("s")
        await settle(app, pilot)
        assert r.retrieve("workorder", ids["wo1"])["name"] == "Pump (checked)"
        assert "Online · synced" in status_line(app)
        assert sorted(rows(home)) == [
            ["", "Leak", "", "Contoso", ""],
            ["", "Pump (checked)", "", "Contoso", ""],
        ]
        [new] = r.retrieve_multiple("workorder", where={"name": "Leak"})
        assert new["serviceaccountid"] == ids["acc1"]
        assert device.pending_changes() == 0

    drive(device, scenario)


def test_a_rejected_change_shows_as_a_sync_error_with_the_value_reverted(world: World) -> None:
    ids = seed(world)
    r = world.platform.records
    r.update("workorder", ids["wo1"], {"priority": 2})

    @world.platform.plugins.on("workorder", "update", "pre-validation")
    def no_urgent(ctx: PluginContext) -> None:
        if ctx.target.get("priority") == 4:
            raise PluginError("urgent work orders need a supervisor", code="URGENT")

    device = world.device("tech1")
    device.sync()

    async def scenario(app: FieldApp, pilot: Pilot[None]) -> None:
        home = app.screen
        assert isinstance(home, HomeScreen)
        home.query_one("#rows", DataTable).focus()
        await pilot.press("enter")
        form = app.screen
        assert isinstance(form, RecordForm)
        # bad input: a clear message, nothing changed
        form.query_one("#f-estimatedduration", Input).value = "ninety"
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert app.screen is form
        error = str(form.query_one("#form-error", Static).render())
        assert "Estimated Duration (min): enter a whole number" in error
        assert device.pending_changes() == 0
        # a change the server's plugin rejects
        form.query_one("#f-estimatedduration", Input).value = ""
        form.query_one("#f-priority", Select).value = 4
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert device.get("workorder", ids["wo1"])["priority"] == 4
        assert rows(home)[0][0] == "↑"
        await pilot.press("s")
        await settle(app, pilot)
        assert device.get("workorder", ids["wo1"])["priority"] == 2
        assert "sync error" in status_line(app)
        assert rows(home)[0][0] == "!"
        await pilot.press("e")
        await pilot.pause()
        errors = app.screen
        assert isinstance(errors, SyncErrorsScreen)
        grid = errors.query_one("#errors", DataTable)
        [row] = [[str(c) for c in grid.get_row_at(i)] for i in range(grid.row_count)]
        assert row[2] == "Pump"
        assert "urgent work orders need a supervisor (URGENT)" in row[4]
        assert row[5] == "Priority: Urgent"
        assert row[6] == "Priority: Normal"
        await pilot.press("escape")
        # the sync settings the app allows: frequency (here none), not Wi-Fi only
        assert app.allows_automatic_sync()
        await pilot.press("t")
        await pilot.pause()
        settings = app.screen
        assert isinstance(settings, SettingsScreen)
        assert settings.query_one("#wifi-only").disabled
        settings.query_one("#frequency", Select).value = 0
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert device.settings()["frequency"] == 0
        assert device.due_tables() == []
        assert not app.allows_automatic_sync()
        # delete offline: asked first, then gone from the list and waiting to upload
        assert isinstance(app.screen, HomeScreen)
        home.query_one("#rows", DataTable).focus()
        await pilot.press("enter")
        await pilot.press("ctrl+d")
        await pilot.press("y")
        await pilot.pause()
        assert isinstance(app.screen, HomeScreen)
        assert rows(home) == []
        assert [c["operation"] for c in device.outbox()] == ["delete"]

    drive(device, scenario)


def test_without_views_a_list_per_table_and_leaving_when_access_is_removed(
    platform: Platform, tmp_path: Path
) -> None:
    world = World(platform, tmp_path)  # an app without views
    ids = seed(world)
    device = world.device("tech1")
    device.sync()

    async def scenario(app: FieldApp, pilot: Pilot[None]) -> None:
        home = app.screen
        assert isinstance(home, HomeScreen)  # synced before: no first sync
        lists = home.query_one("#lists", OptionList)
        names = [str(lists.get_option_at_index(i).prompt) for i in range(lists.option_count)]
        assert names == ["Work Order", "Account", "Contact"]
        assert [r[1] for r in rows(home)] == ["Pump"]
        lists.highlighted = 1
        await pilot.pause()
        assert [r[1] for r in rows(home)] == ["Contoso"]
        device.update("workorder", ids["wo1"], {"priority": 3})
        world.allowed = lambda ctx: False
        await pilot.press("s")
        await settle(app, pilot)
        assert app.return_code == ACCESS_REMOVED

    drive(device, scenario)
    assert device.replica.sql == {}
    assert [e["operation"] for e in device.errors()] == ["update"]
