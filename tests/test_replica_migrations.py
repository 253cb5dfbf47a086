"""Replica migrations: a column added to a table or to a profile's selection reaches the device
without its rows being downloaded again (the device alters its table and backfills only that
column); a column removed is dropped or cleared; an incompatible type change re-downloads that
table only. The outbox survives every migration; a pending change to a column that went
becomes a sync error. Over HTTP on SQLite and PostgreSQL."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from fieldsync.offline.snapshot import Distribution, ItemSnapshot
from fieldsync.platform import Platform
from fieldsync.schema.model import Column, ColumnType
from sync_world import World, field_profile, replica
from test_sync import seed


@pytest.fixture
def world(platform: Platform, tmp_path: Path) -> World:
    return World(platform, tmp_path)


def orders(*columns: str) -> ItemSnapshot:
    return ItemSnapshot("workorder", Distribution.OTHER, owned_by_me=True, columns=columns)


def test_a_column_added_to_the_table_is_backfilled_not_downloaded_again(world: World) -> None:
    ids = seed(world)
    device = world.device("tech1")
    device.sync()
    store, r = world.platform.store, world.platform.records
    store.add_column("account", Column("new_region", ColumnType.STRING, max_length=40))
    r.update("account", ids["acc1"], {"new_region": "North"})
    report = device.sync()
    assert report.rescoped == []
    assert report.backfilled == {"account": 1}
    assert device.get("account", ids["acc1"])["new_region"] == "North"
    assert replica(device) == world.scope("tech1")
    # the next sync has nothing left to fill
    assert device.sync().backfilled == {}


def test_a_column_added_to_the_profiles_selection_is_backfilled(world: World) -> None:
    ids = seed(world)
    r = world.platform.records
    r.update("workorder", ids["wo1"], {"priority": 2})
    world.profile = field_profile(1, workorder=orders("name"))
    device = world.device("tech1")
    device.sync()
    assert device.get("workorder", ids["wo1"])["priority"] is None
    world.profile = field_profile(2, workorder=orders("name", "priority"))
    report = device.sync()
    assert report.rescoped == []
    assert report.backfilled == {"workorder": 1}
    assert report.downloaded["workorder"] == 0  # no row came down again
    assert device.get("workorder", ids["wo1"])["priority"] == 2
    assert replica(device) == world.scope("tech1")


def test_a_removed_column_goes_and_a_pending_change_to_it_becomes_a_sync_error(
    world: World,
) -> None:
    ids = seed(world)
    world.profile = field_profile(1, workorder=orders("name", "priority"))
    device = world.device("tech1")
    device.sync()
    # offline: one change to both columns
    device.update("workorder", ids["wo1"], {"name": "Pump, urgent", "priority": 1})
    world.profile = field_profile(2, workorder=orders("name"))
    report = device.sync()
    assert report.rescoped == []
    errors = device.errors()
    assert [e["code"] for e in errors] == ["0x80060888"]
    assert "priority" in errors[0]["message"]
    server = world.platform.records.retrieve("workorder", ids["wo1"])
    assert server["name"] == "Pump, urgent"  # the rest of the change went up
    assert server["priority"] != 1
    assert device.get("workorder", ids["wo1"])["priority"] is None
    assert device.pending_changes() == 0
    assert replica(device) == world.scope("tech1")


def test_an_incompatible_type_change_rebuilds_that_table_only_and_the_outbox_survives(
    world: World,
) -> None:
    ids = seed(world)
    device = world.device("tech1")
    device.sync()
    device.update("workorder", ids["wo1"], {"name": "Pump, urgent"})
    handshake = copy.deepcopy(device.handshake_data)
    account = next(t for t in handshake["tables"] if t["name"] == "account")
    column = next(c for c in account["columns"] if c["name"] == "telephone1")
    column["type"] = "integer"
    column.pop("max_length", None)
    assert device.replica.adopt(handshake) == ["account"]
    assert device.query("account") == []  # rebuilt: it downloads again
    assert len(device.query("contact")) == 1  # the other tables are untouched
    assert device.pending_changes() == 1
    # compatible changes (a limit, a label) migrate in place
    again = copy.deepcopy(handshake)
    contact = next(t for t in again["tables"] if t["name"] == "contact")
    contact["columns"][1]["display_name"] = "Renamed"
    assert device.replica.adopt(again) == []
    assert len(device.query("contact")) == 1


def test_a_dropped_column_is_dropped_from_the_replica(world: World) -> None:
    ids = seed(world)
    store = world.platform.store
    store.add_column(
        "account", Column("new_site", ColumnType.LOOKUP, targets=("contact",), display_name="Site")
    )
    device = world.device("tech1")
    device.sync()
    assert "new_site" in device.replica.sql["account"]
    rel = next(
        r.name
        for r in store.schema.relationships.values()
        if r.referencing_table == "account" and r.referencing_column == "new_site"
    )
    store.delete_relationship(rel)
    report = device.sync()
    assert report.rescoped == []
    assert "new_site" not in device.replica.sql["account"]
    assert device.get("account", ids["acc1"]) is not None
    assert replica(device) == world.scope("tech1")
