"""Why a row is (not) on a device: ``/sync/v1/explain`` and ``fieldsync scope explain``.

The property test draws organisations (who owns which rows, team members, shares) and
profiles, and checks for every user and every row of every profile table that the verdict
equals membership in the oracle scope, computed from scratch by plain queries."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fieldsync.cli import main
from fieldsync.errors import Forbidden, NotFound
from fieldsync.platform import Platform
from fieldsync.records.pipeline import SYSTEM
from fieldsync.security.model import Privilege
from fieldsync.security.roles import SYSTEM_ADMINISTRATOR
from fieldsync.types import EntityRef
from sync_world import PASSWORD, AsgiBridge, World, field_profile
from test_sync import seed
from test_sync_stateful import profiles

TABLES = ("workorder", "account", "contact")


@pytest.fixture
def world(platform: Platform, tmp_path: Path) -> World:
    return World(platform, tmp_path)


def test_own_row_in_scope_by_owner_and_related_account(world: World) -> None:
    ids = seed(world)
    ctx = world.ctx("tech1")
    mine = world.sync.explain(ctx, app="fieldservice", table="workorder", record_id=ids["wo1"])
    assert mine["in_scope"] is True
    assert mine["profile"] == {"name": "Field service", "version": 1}
    readable, filtered = mine["steps"][:2]
    assert readable == {
        "check": "readable",
        "ok": True,
        "detail": (
            "readable through the business unit (business unit depth), "
            "the user's own rows (user depth)"
        ),
        "paths": ["businessunit", "owner"],
    }
    assert filtered["check"] == "filter"
    assert filtered["ok"] is True
    # the account comes in through the work order: the chain names the row that brings it
    account = world.sync.explain(ctx, app="fieldservice", table="account", record_id=ids["acc1"])
    assert account["in_scope"] is True
    assert account["readable"] is True
    related = [s for s in account["steps"] if s["check"] == "related"]
    assert related == [
        {
            "check": "related",
            "ok": True,
            "detail": f"related to workorder rows in scope through serviceaccountid: {ids['wo1']}",
            "relationship": "serviceaccountid",
            "other": "workorder",
            "kind": "reverse",
            "rows": [str(ids["wo1"])],
        }
    ]
    # tech2's work order: readable (same business unit) but not matched
    other = world.sync.explain(ctx, app="fieldservice", table="workorder", record_id=ids["wo2"])
    assert other["in_scope"] is False
    assert other["readable"] is True
    assert other["matched"] is False


def test_a_custom_filter_shows_each_condition_with_the_rows_value(world: World) -> None:
    custom = next(p for p in profiles() if p["workorder"].custom_filter)
    world.profile = field_profile(version=2, **custom)
    r = world.platform.records
    acc = r.create(
        "account", {"name": "A", "ownerid": EntityRef("systemuser", world.users["tech2"])}
    )
    wo = r.create(
        "workorder",
        {
            "name": "Urgent",
            "priority": 1,
            "serviceaccountid": acc,
            "ownerid": EntityRef("systemuser", world.users["tech2"]),
        },
    )
    answer = world.sync.explain(
        world.ctx("tech1"), app="fieldservice", table="workorder", record_id=wo
    )
    assert answer["in_scope"] is True
    conditions = [s for s in answer["steps"] if s["check"] == "condition"]
    assert [(c["attribute"], c["operator"], c["ok"]) for c in conditions] == [
        ("ownerid", "eq-userid", False),
        ("priority", "eq", True),
    ]
    assert conditions[1]["row_value"] == 1


def test_unreadable_rows_are_explained_only_to_administrators(world: World) -> None:
    r = world.platform.records
    south = EntityRef("systemuser", world.users["tech3"])
    acc = r.create("account", {"name": "South", "ownerid": south})
    theirs = r.create("workorder", {"name": "South", "serviceaccountid": acc, "ownerid": south})
    tech1 = world.ctx("tech1")
    for row in (theirs, uuid.uuid4()):  # unreadable and missing: one answer
        with pytest.raises(NotFound, match="that you can read"):
            world.sync.explain(tech1, app="fieldservice", table="workorder", record_id=row)
    with pytest.raises(Forbidden):
        world.sync.explain(
            tech1, app="fieldservice", table="workorder", record_id=theirs, user=world.ctx("tech2")
        )
    answer = world.sync.explain(
        SYSTEM, app="fieldservice", table="workorder", record_id=theirs, user=tech1
    )
    assert answer["in_scope"] is False
    assert answer["readable"] is False
    assert answer["user"] == str(world.users["tech1"])


def test_explain_over_http(world: World) -> None:
    ids = seed(world)
    org = world.platform.org
    org.user("boss", password=PASSWORD, roles=[org.role_id(SYSTEM_ADMINISTRATOR)])
    bridge = AsgiBridge(world.app)
    try:
        with httpx.Client(transport=bridge, base_url="http://testserver") as client:

            def token(user: str) -> dict[str, str]:
                got = client.post(
                    "/auth/token",
                    data={"grant_type": "password", "username": user, "password": PASSWORD},
                )
                return {"Authorization": f"Bearer {got.json()['access_token']}"}

            tech, boss = token("tech1"), token("boss")
            url = "/sync/v1/explain"
            query = {"app": "fieldservice", "table": "workorder", "id": str(ids["wo1"])}
            assert client.get(url, params=query).status_code == 401
            answer = client.get(url, params=query, headers=tech)
            assert answer.status_code == 200, answer.text
            assert answer.json()["in_scope"] is True
            other = {**query, "user": "tech2"}
            refused = client.get(url, params=other, headers=tech)
            assert refused.status_code == 403
            as_admin = client.get(url, params=other, headers=boss)
            assert as_admin.status_code == 200
            assert as_admin.json()["in_scope"] is False
            assert as_admin.json()["user"] == str(world.users["tech2"])
            for bad, status in (
                ({**query, "id": "nope"}, 400),
                ({**query, "table": "systemuser"}, 400),
                ({**query, "app": "nothing"}, 404),
            ):
                answer = client.get(url, params=bad, headers=tech)
                assert answer.status_code == status, (bad, answer.text)
                assert set(answer.json()["error"]) == {"code", "message"}
    finally:
        bridge.close()
        bridge.loop.close()


def test_cli_scope_explain(platform: Platform, tmp_path: Path) -> None:
    """The demo organisation on a SQLite file, asked from the shell."""
    from fieldsync.demo import seed_demo

    if platform.store.dialect != "sqlite":
        pytest.skip("the CLI opens the database from its own settings: SQLite file here")
    seed_demo(platform)
    url = str(platform.store.engine.url)
    lena = platform.org.user_id("lena")
    mine = next(
        r["workorderid"]
        for r in platform.records.retrieve_multiple("workorder")
        if r["ownerid"] == lena
    )
    runner = CliRunner()
    args = ["--user", "lena", "--app", "fieldservice", "--table", "workorder", "--id", str(mine)]
    result = runner.invoke(main, ["scope", "explain", *args, "--database", url, "--json"])
    assert result.exit_code == 0, result.output
    answer = orjson.loads(result.output)
    assert answer["in_scope"] is True
    text = runner.invoke(main, ["scope", "explain", *args, "--database", url])
    assert text.exit_code == 0
    assert "IN SCOPE for lena" in text.output


# -- the property: the verdict is membership in the oracle scope --------------------------

OWNERS = ("tech1", "tech2", "tech3", "crew")


@st.composite
def organisations(draw: Any) -> dict[str, Any]:
    return {
        "profile": draw(st.sampled_from(profiles())),
        "accounts": draw(st.lists(st.sampled_from(OWNERS), min_size=1, max_size=4)),
        "orders": draw(
            st.lists(
                st.tuples(st.sampled_from(OWNERS), st.integers(0, 3), st.sampled_from([1, 2, 3])),
                max_size=5,
            )
        ),
        "contacts": draw(
            st.lists(st.tuples(st.sampled_from(OWNERS), st.integers(0, 3)), max_size=3)
        ),
        "share": draw(st.booleans()),
    }


def test_the_verdict_is_membership_in_the_oracle_scope(world: World) -> None:
    versions = iter(range(10, 10_000))
    r = world.platform.records

    def owner(name: str) -> EntityRef:
        if name == "crew":
            return EntityRef("team", world.team)
        return EntityRef("systemuser", world.users[name])

    @settings(
        max_examples=6,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        phases=[p for p in settings.default.phases if p.name not in ("explain", "shrink")],
    )
    @given(organisations())
    def check(org: dict[str, Any]) -> None:
        world.profile = field_profile(next(versions), **org["profile"])
        accounts = [
            r.create("account", {"name": "A", "ownerid": owner(o)}) for o in org["accounts"]
        ]
        orders = [
            r.create(
                "workorder",
                {
                    "name": "W",
                    "priority": priority,
                    "serviceaccountid": accounts[i % len(accounts)],
                    "ownerid": owner(o),
                },
            )
            for o, i, priority in org["orders"]
        ]
        for o, i in org["contacts"]:
            r.create(
                "contact",
                {
                    "lastname": "C",
                    "parentcustomerid": EntityRef("account", accounts[i % len(accounts)]),
                    "ownerid": owner(o),
                },
            )
        if org["share"] and orders:
            r.share(
                "workorder",
                orders[0],
                EntityRef("systemuser", world.users["tech3"]),
                [Privilege.READ],
            )
        for user in ("tech1", "tech2", "tech3"):
            oracle = world.scope(user)
            ctx = world.ctx(user)
            for table in TABLES:
                pk = world.platform.store.schema.table(table).primary_id
                for row in r.retrieve_multiple(table, columns=[pk]):
                    verdict = world.sync.explain(
                        SYSTEM, app="fieldservice", table=table, record_id=row[pk], user=ctx
                    )
                    expected = str(row[pk]) in oracle[table]
                    assert verdict["in_scope"] is expected, (user, table, verdict)
                    if verdict["in_scope"]:
                        assert verdict["readable"], verdict
                        assert verdict["matched"], verdict

    check()
