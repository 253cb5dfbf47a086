"""Publish preview: what a draft would put on each device, before it is published."""

from __future__ import annotations

from pathlib import Path

import httpx
import orjson
import pytest
from click.testing import CliRunner

from fieldsync.cli import main
from fieldsync.errors import ProfileInvalid
from fieldsync.platform import Platform
from fieldsync.security.roles import SYSTEM_ADMINISTRATOR
from fieldsync.sync.preview import preview_profile
from fieldsync.sync.service import SyncService
from sync_world import PASSWORD, AsgiBridge, World, replica
from test_sync import seed
from test_sync_profiles import PROFILE

ALL_ORDERS = PROFILE.replace("{filter: other, owned_by: [me], sync_interval: 15}", "{filter: all}")


@pytest.fixture
def world(platform: Platform, tmp_path: Path) -> World:
    world = World(platform, tmp_path)
    world.sync = SyncService(platform.records)
    world.app.state.sync = world.sync
    platform.offline.import_yaml(PROFILE)
    world.profile = platform.offline.publish("Field Service")
    return world


def tables(preview: dict[str, object], user: str) -> dict[str, dict[str, object]]:
    users = preview["users"]
    assert isinstance(users, list)
    found = next(u for u in users if u["username"] == user)
    return {t["table"]: t for t in found["tables"]}


def test_an_unchanged_draft_previews_what_devices_hold(world: World) -> None:
    seed(world)
    p = world.platform
    pid = p.offline.profile_id("Field Service")
    preview = preview_profile(p.records, pid).to_json()
    assert preview["published_version"] == 1
    assert preview["audience"] == "everyone who may use an app of the profile"
    assert preview["holders"] >= 3
    assert preview["sampled"] is False
    assert preview["warnings"] == []
    for user in ("tech1", "tech2", "tech3"):
        device = world.device(user)
        device.sync()
        held = replica(device)
        for table, t in tables(preview, user).items():
            assert t["rows"] == t["published_rows"] == len(held[table]), (user, table)
            assert (t["moving_in"], t["moving_out"], t["changed"]) == (0, 0, False)
            assert t["bytes"] > 0 or t["rows"] == 0


def test_a_changed_filter_counts_rows_moving_in_and_out(world: World) -> None:
    seed(world)
    p = world.platform
    pid = p.offline.profile_id("Field Service")
    p.offline.import_yaml(ALL_ORDERS)
    preview = preview_profile(p.records, pid, users=[world.users["tech1"]]).to_json()
    assert preview["audience"] == "the users asked for"
    t = tables(preview, "tech1")
    # every readable work order instead of tech1's own: Valve moves in, and its account
    assert t["workorder"] == {
        "table": "workorder",
        "rows": 2,
        "published_rows": 1,
        "moving_in": 1,
        "moving_out": 0,
        "bytes": t["workorder"]["bytes"],
        "file_bytes": 0,
        "changed": True,
    }
    assert (t["account"]["rows"], t["account"]["moving_in"], t["account"]["changed"]) == (
        2,
        1,
        True,
    )
    # publishing it puts exactly the previewed rows on the device
    p.offline.publish("Field Service")
    device = world.device("tech1")
    device.sync()
    held = replica(device)
    assert {name: len(rows) for name, rows in held.items()} == {
        name: row["rows"] for name, row in t.items()
    }
    # nothing published yet the other way round: back to "my rows" moves the same row out
    p.offline.import_yaml(PROFILE)
    back = tables(preview_profile(p.records, pid, users=[world.users["tech1"]]).to_json(), "tech1")
    assert (back["workorder"]["moving_in"], back["workorder"]["moving_out"]) == (0, 1)


def test_an_invalid_draft_is_refused_with_its_problems(world: World) -> None:
    p = world.platform
    bad = PROFILE.replace("sync_interval: 15", "sync_interval: 2")
    with pytest.raises(ProfileInvalid):
        p.offline.import_yaml(bad)  # the rules run on every save, and again at preview
    pid = p.offline.profile_id("Field Service")
    assert preview_profile(p.records, pid).to_json()["profile"] == "Field Service"


def test_preview_as_a_bound_action_and_from_the_shell(world: World) -> None:
    seed(world)
    org = world.platform.org
    org.user("boss", password=PASSWORD, roles=[org.role_id(SYSTEM_ADMINISTRATOR)])
    pid = world.platform.offline.profile_id("Field Service")
    world.platform.offline.import_yaml(ALL_ORDERS)
    url = (
        f"/api/data/v9.2/mobileofflineprofiles({pid})"
        "/Microsoft.Dynamics.CRM.PreviewMobileOfflineProfile"
    )
    bridge = AsgiBridge(world.app)
    try:
        with httpx.Client(transport=bridge, base_url="http://testserver") as client:

            def token(user: str) -> dict[str, str]:
                got = client.post(
                    "/auth/token",
                    data={"grant_type": "password", "username": user, "password": PASSWORD},
                )
                return {"Authorization": f"Bearer {got.json()['access_token']}"}

            boss, tech = token("boss"), token("tech1")
            body = {"Users": [str(world.users["tech1"])]}
            answer = client.post(url, json=body, headers=boss)
            assert answer.status_code == 200, answer.text
            assert tables(answer.json(), "tech1")["workorder"]["moving_in"] == 1
            assert client.post(url, json=body, headers=tech).status_code == 403
            for bad in ({"Users": "x"}, {"Sample": 0}, {"Other": 1}, {"Users": ["nope"]}):
                refused = client.post(url, json=bad, headers=boss)
                assert refused.status_code == 400, (bad, refused.text)
            assert client.get(url, headers=boss).status_code == 405
    finally:
        bridge.close()
        bridge.loop.close()
    # nothing was published by previewing
    assert world.platform.offline.published_profile("Field Service").version == 1  # type: ignore[union-attr]
    if world.platform.store.dialect != "sqlite":
        return
    db = str(world.platform.store.engine.url)
    result = CliRunner().invoke(
        main, ["profile", "preview", "Field Service", "--user", "tech1", "--json", "--database", db]
    )
    assert result.exit_code == 0, result.output
    assert tables(orjson.loads(result.output), "tech1")["workorder"]["rows"] == 2
    text = CliRunner().invoke(main, ["profile", "preview", "Field Service", "--database", db])
    assert text.exit_code == 0, text.output
    assert "draft against version 1" in text.output
