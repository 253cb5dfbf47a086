"""Incremental republish: a filter changed by a republish moves only the difference."""

from __future__ import annotations

from pathlib import Path

import pytest

from fieldsync.offline.snapshot import Distribution, ItemSnapshot
from fieldsync.platform import Platform
from fieldsync.sync.service import SyncService
from sync_world import World, field_profile, replica
from test_sync import seed

EVERY_ORDER = ItemSnapshot("workorder", Distribution.ALL)


@pytest.fixture
def world(platform: Platform, tmp_path: Path) -> World:
    return World(platform, tmp_path)


def test_a_changed_filter_sends_only_the_rows_moving(world: World) -> None:
    ids = seed(world)
    device = world.device("tech1")
    first = device.sync()
    assert first.downloaded == {"workorder": 1, "account": 1, "contact": 1}
    # every readable work order: Valve and its account move in, nothing else is sent again
    world.profile = field_profile(2, workorder=EVERY_ORDER)
    report = device.sync()
    assert report.rescoped == []
    assert report.downloaded == {"workorder": 1, "account": 1, "contact": 0}
    assert replica(device) == world.scope("tech1")
    assert str(ids["wo2"]) in replica(device)["workorder"]
    # a row that changed between the syncs still arrives, through the delta that follows
    world.platform.records.update("workorder", ids["wo1"], {"name": "Pump (moved)"})
    world.profile = field_profile(3)
    back = device.sync()
    assert back.rescoped == []
    assert back.downloaded["workorder"] == 1  # the changed row, not the whole scope
    assert replica(device) == world.scope("tech1")
    assert replica(device)["workorder"][str(ids["wo1"])]["name"] == "Pump (moved)"


def test_a_server_that_cannot_rebuild_the_old_version_rescopes(world: World) -> None:
    seed(world)
    device = world.device("tech1")
    device.sync()
    world.profile = field_profile(2, workorder=EVERY_ORDER)
    # a fresh process: the earlier version lived in memory only (the test's profiles)
    world.sync = SyncService(world.platform.records, access=world._access)
    world.app.state.sync = world.sync
    report = device.sync()
    assert sorted(report.rescoped) == ["account", "contact", "workorder"]
    assert replica(device) == world.scope("tech1")
