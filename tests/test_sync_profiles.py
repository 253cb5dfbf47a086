"""Sync with real offline profiles and apps: publish, republish, restricted profiles, group
membership, disabled users and the app's views."""

from __future__ import annotations

from pathlib import Path

import pytest

from fieldsync.client import ServerError
from fieldsync.offline.access import find_app
from fieldsync.offline.apps import APP_VIEWS, create_view
from fieldsync.platform import Platform
from fieldsync.sync.service import SyncService
from sync_world import World, replica
from test_sync import seed

PROFILE = """\
name: Field Service
tables:
  workorder: {filter: other, owned_by: [me], sync_interval: 15}
  account: {filter: related, relationships: [account_workorder_serviceaccountid], sync_interval: 60}
  contact: {filter: related, relationships: [account_contact_parentcustomerid]}
apps:
  - uniquename: fieldservice
    name: Field Service
    can_be_used_offline: true
    mode: offline-first
    profile_mode: default
    allow_sync_frequency: true
"""

URGENT = (
    '<fetch><entity name="workorder"><attribute name="name"/>'
    '<filter><condition attribute="priority" operator="eq" value="1"/></filter>'
    "</entity></fetch>"
)


@pytest.fixture
def world(platform: Platform, tmp_path: Path) -> World:
    world = World(platform, tmp_path)
    world.sync = SyncService(platform.records)  # the real offline access, not the test one
    world.app.state.sync = world.sync
    platform.offline.import_yaml(PROFILE)
    world.profile = platform.offline.publish("Field Service")
    return world


def test_a_published_profile_syncs_and_republishing_rescopes(world: World) -> None:
    ids = seed(world)
    platform = world.platform
    with platform.store.read() as conn:
        app = find_app(conn, platform.store, "fieldservice")["appmoduleid"]
    view = create_view(platform.records, "My urgent work orders", "workorder", URGENT)
    platform.records.associate(APP_VIEWS, app, view)
    device = world.device("tech1")
    device.sync()
    assert replica(device) == world.scope("tech1")
    assert device.handshake_data["app"]["allow_sync_frequency"] is True
    assert device.query(view="My urgent work orders") == []
    device.update("workorder", ids["wo1"], {"priority": 1})
    assert [r["name"] for r in device.query(view="My urgent work orders")] == ["Pump"]
    # the maker edits the draft: devices keep the published version until the next publish
    yaml = PROFILE.replace("filter: other, owned_by: [me]", "filter: all")
    platform.offline.import_yaml(yaml)
    device.sync()
    assert set(replica(device)["workorder"]) == {str(ids["wo1"])}
    world.profile = platform.offline.publish("Field Service")
    report = device.sync()
    # only the filter changed: the rows moving in travel, the rest stay (no re-scope)
    assert report.rescoped == []
    assert report.downloaded == {"workorder": 1, "account": 1, "contact": 0}
    assert set(replica(device)["workorder"]) == {str(ids["wo1"]), str(ids["wo2"])}
    assert replica(device) == world.scope("tech1")


def test_restricted_profiles_follow_membership_and_group_teams(world: World) -> None:
    seed(world)
    platform = world.platform
    device = world.device("tech1")
    device.sync()
    platform.offline.import_yaml(
        PROFILE.replace("profile_mode: default", "profile_mode: restricted")
    )
    with pytest.raises(ServerError, match="only for selected users"):
        device.sync()
    assert device.replica.sql == {}  # purged
    # a team of tech1's is added: membership counts at once, no republish
    platform.offline.add_members("Field Service", teams=[world.team])
    device.sync()
    assert replica(device) == world.scope("tech1")
    # tech1 leaves the team: the profile's data leaves the device
    platform.org.remove_members(world.team, [world.users["tech1"]])
    with pytest.raises(ServerError):
        device.sync()
    assert device.replica.sql == {}


def test_a_disabled_user_loses_the_data(world: World) -> None:
    seed(world)
    device = world.device("tech2")
    device.sync()
    assert replica(device)["workorder"]
    world.platform.org.set_user_enabled(world.users["tech2"], False)
    with pytest.raises(ServerError, match="disabled"):
        device.sync()
    assert device.replica.sql == {}


def test_an_app_no_longer_offline_purges(world: World) -> None:
    seed(world)
    device = world.device("tech1")
    device.sync()
    world.platform.offline.import_yaml(
        PROFILE.replace("can_be_used_offline: true", "can_be_used_offline: false")
    )
    with pytest.raises(ServerError, match="not enabled for offline"):
        device.sync()
    assert device.replica.sql == {}


def test_a_classic_app_reads_from_the_server_when_it_answers(world: World) -> None:
    ids = seed(world)
    world.platform.offline.import_yaml(PROFILE.replace("mode: offline-first", "mode: classic"))
    device = world.device("tech1")
    device.sync()
    assert device.classic
    world.platform.records.update("workorder", ids["wo1"], {"name": "Changed on the server"})
    online = {r["workorderid"]: r for r in device.query("workorder")}
    # read from the server: the change not yet synced, and every row the user may read there
    assert online[str(ids["wo1"])]["name"] == "Changed on the server"
    assert online[str(ids["wo1"])]["serviceaccountid"] == str(ids["acc1"])
    assert str(ids["wo2"]) in online
    world.down = True
    [offline] = device.query("workorder")
    assert offline["name"] == "Pump"  # the replica, while the server cannot be reached
    world.down = False
    device.sync()
    assert device.query("workorder", filter="name eq 'Changed on the server'")[0]["name"] == (
        "Changed on the server"
    )
