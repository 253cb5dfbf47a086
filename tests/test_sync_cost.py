"""What a sync costs when little or nothing changed: the conditional handshake (the device's
etag; an unchanged answer in a few bytes), the registration written only when it changes, a
republish's diff and the delta after it in one download request, an inventory not sent again
once the server matched it. Each saving keeps what the sync must see: a revoked role, a team
change, a republished profile, changed views, access removed."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import sqlalchemy as sa

from fieldsync.client import Device
from fieldsync.demo import seed_demo
from fieldsync.errors import BadRequest
from fieldsync.offline.access import find_app
from fieldsync.offline.apps import APP_VIEWS, create_view
from fieldsync.offline.snapshot import Distribution, ItemSnapshot
from fieldsync.platform import Platform
from fieldsync.security.context import load_context
from fieldsync.store.catalog import fs_device
from fieldsync.sync.download import TablePage
from fieldsync.sync.service import SyncService
from fieldsync.types import EntityRef
from sync_world import PASSWORD, World, field_profile, replica
from test_sync import seed

EVERY_ORDER = ItemSnapshot("workorder", Distribution.ALL)


@pytest.fixture
def world(platform: Platform, tmp_path: Path) -> World:
    return World(platform, tmp_path)


class Recorder(httpx.BaseTransport):
    """The sync requests a device makes, with their answers."""

    def __init__(self, inner: httpx.BaseTransport) -> None:
        self.inner = inner
        self.seen: list[tuple[str, Any, Any]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        sent = request.read()
        response = self.inner.handle_request(request)
        body = response.read()
        if request.url.path.startswith("/sync/v1/"):
            self.seen.append(
                (
                    request.url.path,
                    orjson.loads(sent) if sent else None,
                    orjson.loads(body) if body else None,
                )
            )
        return response

    def paths(self) -> list[str]:
        return [path.removeprefix("/sync/v1/") for path, _, _ in self.seen]

    def handshakes(self) -> list[Any]:
        return [answer for path, _, answer in self.seen if path.endswith("/handshake")]


def recorded(world: World, user: str = "tech1") -> tuple[Device, Recorder]:
    recorder = Recorder(world.transport())
    device = Device.login(
        world.tmp / user,
        server="http://testserver",
        username=user,
        password=PASSWORD,
        app="fieldservice",
        transport=recorder,
    )
    return device, recorder


def test_a_sync_that_changes_nothing_is_a_short_handshake_and_one_download(
    world: World,
) -> None:
    ids = seed(world)
    device, rec = recorded(world)
    device.sync()
    first = rec.handshakes()[0]
    assert "etag" in first
    assert "unchanged" not in first
    rec.seen.clear()
    report = device.sync()
    assert rec.paths() == ["handshake", "download"]  # the inventory matched before: not sent
    (answer,) = rec.handshakes()
    assert answer["unchanged"] is True
    assert answer["etag"] == first["etag"]
    assert set(answer) == {"protocol", "server", "unchanged", "etag", "server_time"}
    assert report.inventory == dict.fromkeys(["workorder", "account", "contact"], "match")
    assert device.replica.handshake is not None
    assert device.replica.handshake["etag"] == first["etag"]
    # a change on the server still arrives, and the inventory of the moved table is sent
    world.platform.records.update("workorder", ids["wo1"], {"name": "Pump, moved"})
    rec.seen.clear()
    moved = device.sync()
    assert rec.paths() == ["handshake", "download", "inventory"]
    assert replica(device)["workorder"][str(ids["wo1"])]["name"] == "Pump, moved"
    assert replica(device) == world.scope("tech1")
    assert moved.inventory == dict.fromkeys(["workorder", "account", "contact"], "match")


def test_the_kept_inventory_follows_the_pages_as_the_rows_would_give_it(world: World) -> None:
    ids = seed(world)
    r = world.platform.records
    device, _ = recorded(world)
    device.sync()
    tables = ["workorder", "account", "contact"]
    r.update("workorder", ids["wo1"], {"name": "Pump, moved"})
    r.update("workorder", ids["wo2"], {"ownerid": EntityRef("systemuser", world.users["tech1"])})
    r.delete("contact", ids["con1"])
    device.update("account", ids["acc1"], {"name": "Contoso (device)"})  # settled: recounted
    report = device.sync()
    assert report.inventory == dict.fromkeys(tables, "match")
    inventory = device._syncer.inventory
    followed = inventory.held(tables)  # the values kept as the pages went by
    inventory.forget()
    counted = inventory.held(tables)  # from the rows
    assert followed == counted
    assert counted["workorder"]["rows"] == 2
    assert counted["contact"]["rows"] == 0


def test_a_revoked_role_is_seen_at_the_next_sync(world: World) -> None:
    ids = seed(world)
    device, rec = recorded(world)
    device.sync()
    assert str(ids["acc1"]) in replica(device)["account"]  # read through the role
    world.platform.org.remove_role(EntityRef("systemuser", world.users["tech1"]), world.technician)
    rec.seen.clear()
    report = device.sync()
    # nothing the handshake tells changed; the download re-scopes every table as the user
    # is now, and the rows the user may no longer read leave the device
    assert sorted(report.rescoped) == ["account", "contact", "workorder"]
    assert replica(device) == world.scope("tech1")
    assert str(ids["acc1"]) not in replica(device)["account"]


def test_a_team_change_changes_the_handshake(world: World) -> None:
    seed(world)
    device, rec = recorded(world)
    device.sync()
    before = rec.handshakes()[0]["etag"]
    crew = world.platform.org.team("Night crew", world.unit, members=[world.users["tech1"]])
    rec.seen.clear()
    device.sync()
    (answer,) = rec.handshakes()
    assert "unchanged" not in answer
    assert answer["etag"] != before
    assert str(crew) in answer["user"]["teams"]
    assert str(crew) in device.handshake_data["user"]["teams"]
    assert replica(device) == world.scope("tech1")


def test_a_republished_profile_is_adopted_and_its_diff_costs_one_download(
    world: World,
) -> None:
    ids = seed(world)
    device, rec = recorded(world)
    device.sync()
    world.profile = field_profile(2, workorder=EVERY_ORDER)
    rec.seen.clear()
    report = device.sync()
    (answer,) = rec.handshakes()
    assert "unchanged" not in answer
    assert answer["profile"]["version"] == 2
    assert device.replica.handshake is not None
    assert device.replica.handshake["profile"]["version"] == 2
    # the rows entering, the ids leaving and the delta after them: one request, one page
    # per table, no re-scope
    assert rec.paths().count("download") == 1
    assert report.rescoped == []
    assert str(ids["wo2"]) in replica(device)["workorder"]
    assert replica(device) == world.scope("tech1")
    # and back: the rows leave in one request as well
    world.profile = field_profile(3)
    rec.seen.clear()
    device.sync()
    assert rec.paths().count("download") == 1
    assert replica(device) == world.scope("tech1")


def test_access_removed_is_seen_although_the_device_sent_its_etag(world: World) -> None:
    seed(world)
    device, rec = recorded(world)
    device.sync()
    device.sync()
    assert rec.handshakes()[-1]["unchanged"] is True
    world.allowed = lambda ctx: False
    with pytest.raises(Exception, match="may not take this app offline"):
        device.sync()
    assert device.replica.sql == {}
    assert device.replica.handshake is None


def test_an_etag_is_checked_and_a_stale_one_gets_the_whole_answer(world: World) -> None:
    seed(world)
    ctx = world.ctx("tech1")
    full = world.sync.handshake(ctx, device="cost-device-1", app="fieldservice")
    assert "etag" in full
    stale = world.sync.handshake(ctx, device="cost-device-1", app="fieldservice", etag="0" * 32)
    assert "unchanged" not in stale
    assert stale.get("etag") == full.get("etag")
    same = world.sync.handshake(
        ctx, device="cost-device-1", app="fieldservice", etag=full.get("etag")
    )
    assert same.get("unchanged") is True
    for bad in ("NOT-AN-ETAG", 12, "a" * 65):
        with pytest.raises(BadRequest, match="etag"):
            world.sync.handshake(ctx, device="cost-device-1", app="fieldservice", etag=bad)


def _registration(world: World, device: str) -> Any:
    with world.platform.store.read() as conn:
        return conn.execute(sa.select(fs_device).where(fs_device.c.deviceid == device)).one()


def test_the_registration_is_written_only_when_something_changed(world: World) -> None:
    seed(world)
    ctx = world.ctx("tech1")
    sync = world.sync
    sync.handshake(ctx, device="cost-device-2", app="fieldservice", sdk="1.0", pending=0)
    first = _registration(world, "cost-device-2")
    sync.handshake(ctx, device="cost-device-2", app="fieldservice", sdk="1.0", pending=0)
    assert _registration(world, "cost-device-2").lastsyncon == first.lastsyncon
    # what the device says changed: written at once
    sync.handshake(ctx, device="cost-device-2", app="fieldservice", sdk="1.0", pending=4)
    assert _registration(world, "cost-device-2").pendingchanges == 4
    # a new profile version: written
    world.profile = field_profile(2, workorder=EVERY_ORDER)
    sync.handshake(ctx, device="cost-device-2", app="fieldservice", sdk="1.0", pending=4)
    assert _registration(world, "cost-device-2").profileversion == 2
    # a last sync older than the refresh interval: written again
    old = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    with world.platform.store.write() as conn:
        conn.execute(
            fs_device.update().where(fs_device.c.deviceid == "cost-device-2").values(lastsyncon=old)
        )
    sync.handshake(ctx, device="cost-device-2", app="fieldservice", sdk="1.0", pending=4)
    assert _registration(world, "cost-device-2").lastsyncon > old + dt.timedelta(minutes=4)
    # a receipt after the last sync: the next sync shows the device synced after it
    sync.receipt(ctx, device="cost-device-2", app="fieldservice", kind="purge", tables={})
    received = _registration(world, "cost-device-2").receipton
    sync.handshake(ctx, device="cost-device-2", app="fieldservice", sdk="1.0", pending=4)
    assert _registration(world, "cost-device-2").lastsyncon > received


def test_merged_pages_hold_each_id_once_with_the_later_word() -> None:
    a, b, c, d = (str(uuid.UUID(int=i)) for i in range(1, 5))
    first = TablePage("t", ("tid", "name"), upserts=[[a, "a1"], [b, "b1"]], removes=[c, d])
    first.after = 7
    later = TablePage("t", ("tid", "name"), upserts=[[c, "c2"]], removes=[a], more=True)
    later.after = 9
    merged = first.merged(later, 0)
    assert merged.upserts == [[b, "b1"], [c, "c2"]]
    assert merged.removes == [d, a]
    assert merged.more is True
    assert merged.after == 7


# -- views: the demo organisation's apps ------------------------------------------------------


@pytest.fixture
def demo(platform: Platform) -> Platform:
    seed_demo(platform, today=dt.date(2026, 12, 7))
    return platform


def test_changed_views_change_the_handshake(demo: Platform) -> None:
    sync = SyncService(demo.records)
    ctx = load_context(demo.store, demo.org.user_id("lena"))
    first = sync.handshake(ctx, device="cost-views-1", app="fieldservice")
    etag = first.get("etag")
    again = sync.handshake(ctx, device="cost-views-1", app="fieldservice", etag=etag)
    assert again.get("unchanged") is True
    # a view added to the app
    fetchxml = (
        '<fetch><entity name="workorder"><all-attributes />'
        '<filter><condition attribute="priority" operator="eq" value="1" /></filter>'
        "</entity></fetch>"
    )
    with demo.store.read() as conn:
        app_id = find_app(conn, demo.store, "fieldservice")["appmoduleid"]
    view = create_view(demo.records, "Urgent orders", "workorder", fetchxml)
    demo.records.associate(APP_VIEWS, app_id, view)
    added = sync.handshake(ctx, device="cost-views-1", app="fieldservice", etag=etag)
    assert "unchanged" not in added
    assert "Urgent orders" in [v["name"] for v in added.get("views", [])]
    # a view's query edited
    edited = fetchxml.replace('value="1"', 'value="2"')
    demo.records.update("savedquery", view, {"fetchxml": edited})
    changed = sync.handshake(ctx, device="cost-views-1", app="fieldservice", etag=added.get("etag"))
    assert "unchanged" not in changed
    (mine,) = [v for v in changed.get("views", []) if v["name"] == "Urgent orders"]
    assert 'value="2"' in mine["fetchxml"]


def test_a_diff_in_small_pages_moves_rows_both_ways(world: World) -> None:
    ids = seed(world)
    r = world.platform.records
    tech1, tech2 = world.users["tech1"], world.users["tech2"]
    for i in range(4):
        owner = EntityRef("systemuser", tech1 if i % 2 else tech2)
        r.create(
            "workorder", {"name": f"Extra {i}", "serviceaccountid": ids["acc1"], "ownerid": owner}
        )
    device, rec = recorded(world)
    device.sync(page_size=1)
    world.profile = field_profile(2, workorder=EVERY_ORDER)  # tech2's orders enter
    report = device.sync(page_size=1)
    assert report.rescoped == []
    assert replica(device) == world.scope("tech1")
    world.profile = field_profile(3)  # and leave again, a page at a time
    rec.seen.clear()
    report = device.sync(page_size=1)
    assert report.rescoped == []
    assert rec.paths().count("download") > 2
    assert replica(device) == world.scope("tech1")
    assert str(ids["wo2"]) not in replica(device)["workorder"]
