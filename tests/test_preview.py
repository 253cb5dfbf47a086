"""Publish preview: what a draft would put on each device, before it is published."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fieldsync.cli import main
from fieldsync.errors import ProfileInvalid, Unauthorized
from fieldsync.platform import Platform
from fieldsync.security.context import load_contexts, user_binding
from fieldsync.security.model import Privilege
from fieldsync.security.roles import BASIC_USER, SYSTEM_ADMINISTRATOR
from fieldsync.sync.preview import _Counter, _relabel, preview_profile
from fieldsync.sync.service import SyncService
from fieldsync.types import EntityRef
from sync_world import PASSWORD, AsgiBridge, World, field_profile, replica
from test_sync import seed
from test_sync_profiles import PROFILE
from test_sync_stateful import profiles

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


def test_a_restricted_profile_previews_its_enabled_members(world: World) -> None:
    seed(world)
    p = world.platform
    pid = p.offline.profile_id("Field Service")
    p.offline.import_yaml(ALL_ORDERS.replace("profile_mode: default", "profile_mode: restricted"))
    p.offline.add_members("Field Service", users=[world.users["tech2"], world.users["tech3"]])
    p.offline.add_members("Field Service", teams=[world.team])  # tech1
    p.org.set_user_enabled(world.users["tech3"], False)
    preview = preview_profile(p.records, pid, contexts=p.contexts).to_json()
    assert preview["audience"] == "the profile's selected users and teams"
    assert sorted(u["username"] for u in preview["users"]) == ["tech1", "tech2"]
    assert preview["holders"] == 2
    assert p.contexts.loads == 2  # only the users previewed, loaded together and kept
    # a sample of one, from the cache this time
    one = preview_profile(p.records, pid, sample=1, contexts=p.contexts).to_json()
    assert (one["holders"], one["previewed"], one["sampled"]) == (2, 1, True)
    assert p.contexts.loads == 2
    full = {u["username"]: u for u in preview["users"]}
    assert one["users"] == [full[one["users"][0]["username"]]]
    with pytest.raises(Unauthorized):  # asked for by name: refused, as signing in would be
        preview_profile(p.records, pid, users=[world.users["tech3"]])


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


# -- the property: every count is the size of an oracle scope -----------------------------

OWNERS = ("tech1", "tech2", "tech3", "tech4", "crew")


@st.composite
def organisations(draw: Any) -> dict[str, Any]:
    return {
        "published": draw(st.sampled_from(profiles())),
        "draft": draw(st.sampled_from(profiles())),
        "accounts": draw(st.lists(st.sampled_from(OWNERS), min_size=1, max_size=4)),
        "orders": draw(
            st.lists(
                st.tuples(st.sampled_from(OWNERS), st.integers(0, 3), st.sampled_from([1, 2, 3])),
                max_size=6,
            )
        ),
        "contacts": draw(
            st.lists(st.tuples(st.sampled_from(OWNERS), st.integers(0, 3)), max_size=3)
        ),
        "share": draw(st.sampled_from([None, "tech2", "tech4"])),
    }


def test_the_counts_are_the_sizes_of_the_oracle_scopes(world: World) -> None:
    """Each user's rows per table under the draft and the published version, and the rows
    moving in and out, equal what the oracle scope (plain queries, filters evaluated in
    Python) holds; tech2 and tech4 have the same roles, unit and teams, so they share one
    counting statement, and what it counts for each equals their own statement's counts."""
    p = world.platform
    r = p.records
    org = p.org
    world.users["tech4"] = org.user(
        "tech4", business_unit=world.unit, roles=[org.role_id(BASIC_USER), world.technician]
    )
    versions = iter(range(10, 10_000))
    names = ("tech1", "tech2", "tech3", "tech4")

    def owner(name: str) -> EntityRef:
        if name == "crew":
            return EntityRef("team", world.team)
        return EntityRef("systemuser", world.users[name])

    @settings(
        max_examples=8,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        phases=[p for p in settings.default.phases if p.name not in ("explain", "shrink")],
    )
    @given(organisations())
    def check(o: dict[str, Any]) -> None:
        for table in ("contact", "workorder", "account"):
            pk = p.store.schema.table(table).primary_id
            for row in r.retrieve_multiple(table, columns=[pk]):
                r.delete(table, row[pk])
        accounts = [r.create("account", {"name": "A", "ownerid": owner(x)}) for x in o["accounts"]]
        orders = [
            r.create(
                "workorder",
                {
                    "name": "W",
                    "priority": priority,
                    "serviceaccountid": accounts[i % len(accounts)],
                    "ownerid": owner(x),
                },
            )
            for x, i, priority in o["orders"]
        ]
        for x, i in o["contacts"]:
            r.create(
                "contact",
                {
                    "lastname": "C",
                    "parentcustomerid": EntityRef("account", accounts[i % len(accounts)]),
                    "ownerid": owner(x),
                },
            )
        if o["share"] and orders:
            target = EntityRef("systemuser", world.users[o["share"]])
            r.share("workorder", orders[-1], target, [Privilege.READ])
        try:
            compare(o, shared=bool(o["share"] and orders))
        finally:
            if o["share"] and orders:
                r.share("workorder", orders[-1], target, 0)

    def compare(o: dict[str, Any], *, shared: bool) -> None:
        published = field_profile(next(versions), **o["published"])
        draft = field_profile(next(versions), **o["draft"])
        expected: dict[str, dict[str, tuple[set[str], set[str]]]] = {}
        for name in names:
            world.profile = published
            before = world.scope(name)
            world.profile = draft
            after = world.scope(name)
            expected[name] = {
                t: (set(after.get(t, {})), set(before.get(t, {}))) for t in {*after, *before}
            }
        moment = dt.datetime.now(dt.UTC)
        with p.store.read() as conn:
            contexts = load_contexts(p.store, [world.users[n] for n in names], conn)
            counter = _Counter(r, conn, draft, published, moment)
            previews = counter.users(list(contexts.values()))
            # a statement built for a stand-in, run for a user, counts what theirs would
            for ctx in contexts.values():
                binding = user_binding(p.store, conn, ctx)
                own = counter._shape(ctx, binding, shared=False)
                common = counter._shape(*_relabel(ctx, binding, counter.sentinel))
                assert common.shared
                assert (
                    conn.execute(own.statement).one()
                    == conn.execute(common.statement, common.params(ctx.user_id)).one()
                )
        # tech2 and tech4 share one statement (tech1 is in a team, tech3 in the South unit),
        # unless a share sets them apart
        assert len(counter.shapes) == (0 if shared else 1)
        for preview in previews:
            for t in preview.tables:
                after, before = expected[preview.username][t.table]
                assert t.rows == len(after), (preview.username, t)
                assert t.published_rows == len(before), (preview.username, t)
                if t.changed:
                    assert (t.moving_in, t.moving_out) == (len(after - before), len(before - after))
                else:
                    assert after == before
                    assert (t.moving_in, t.moving_out) == (0, 0)

    check()
