"""Batched upload equals applying the changes one at a time.

The server applies runs of an upload as batched writes and, when a change of a run is refused,
splits the run around it. Whatever the mix (accepted, refused by a plugin or by validation,
forbidden, missing rows, existing ids, server-wins conflicts, retried change ids, the same
row twice), the answers, the rows, the sync errors and the change log must be exactly what
applying every change on its own gives. The oracle is the uploader with every run cut to
one change (each in its own savepoint, as uploads were applied before batching).
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fieldsync.errors import PluginError
from fieldsync.offline.snapshot import Distribution, ItemSnapshot
from fieldsync.platform import Platform
from fieldsync.records.plugins import PluginContext
from fieldsync.store.audit import WRITE_REFUSED
from fieldsync.store.catalog import fs_change, fs_sync_applied
from fieldsync.sync.upload import ClientChange, Uploader
from fieldsync.types import EntityRef
from sync_world import World, field_profile

DEVICE = "batch-device"


class OneAtATime(Uploader):
    """The oracle: every change applied alone."""

    def _runs(self, changes: list[ClientChange]) -> list[list[ClientChange]]:
        return [[c] for c in changes]


class Rollback(Exception):
    pass


@pytest.fixture
def world(platform: Platform, tmp_path: Path) -> World:
    w = World(platform, tmp_path)
    plugins = platform.records.plugins

    @plugins.on("account", "update", "pre-operation")
    def refuse_phone(ctx: PluginContext) -> None:
        phone = ctx.target.get("telephone1")
        if phone == "REJECT":
            raise PluginError("this phone number is refused")
        if phone == "SIDE":  # a plugin write that a later refusal must take back
            side = uuid.uuid5(uuid.NAMESPACE_URL, str(ctx.record_id))
            ctx.records.create("account", {"accountid": side, "name": "side"})
            ctx.target["emailaddress1"] = "plugin@example.com"

    @plugins.on("account", "create", "pre-validation")
    def refuse_name(ctx: PluginContext) -> None:
        if ctx.target.get("name") == "BAD":
            raise PluginError("this name is refused")

    return w


def rows_of(world: World) -> dict[str, list[uuid.UUID]]:
    """Accounts owned by tech1 (writable), by tech2 (readable only), by tech3 (hidden)."""
    r = world.platform.records
    out: dict[str, list[uuid.UUID]] = {}
    for user, count in (("tech1", 4), ("tech2", 1), ("tech3", 1)):
        owner = EntityRef("systemuser", world.users[user])
        out[user] = r.create_many(
            "account",
            [{"name": f"{user} {i}", "ownerid": owner} for i in range(count)],
        )
    return out


UPDATES = st.sampled_from(
    [
        {"telephone1": "1"},
        {"telephone1": "2"},
        {"telephone1": "REJECT"},
        {"telephone1": "SIDE"},
        {"name": None},  # required
        {"nosuchcolumn": 1},
        {"numberofemployees": "many"},  # wrong type
        {"name": "renamed", "telephone1": "3"},
    ]
)


@st.composite
def uploads(draw: st.DrawFn, ids: dict[str, list[uuid.UUID]]) -> dict[str, Any]:
    existing = [*ids["tech1"], *ids["tech1"], *ids["tech2"], *ids["tech3"]]
    fresh = [uuid.UUID(int=i + 1) for i in range(4)]
    change = st.one_of(
        st.builds(
            lambda rid, values, base: ("update", rid, values, base),
            st.sampled_from([*existing, fresh[0]]),
            UPDATES,
            st.sampled_from([None, 0, "current"]),
        ),
        st.builds(
            lambda rid, name: ("create", rid, {"name": name}, None),
            st.sampled_from([*fresh, ids["tech1"][0], ids["tech3"][0]]),
            st.sampled_from(["new", "BAD", None]),
        ),
        st.builds(
            lambda rid: ("delete", rid, {}, None),
            st.sampled_from(existing),
        ),
    )
    return {
        "first": draw(st.lists(change, max_size=4)),
        "second": draw(st.lists(change, min_size=1, max_size=12)),
        "retries": draw(st.lists(st.integers(0, 3), max_size=3, unique=True)),
        "server_wins": draw(st.booleans()),
    }


def wire(changes: list[tuple[str, uuid.UUID, dict[str, Any], Any]], version: int) -> list[Any]:
    return [
        ClientChange(
            uuid.uuid4(),
            "account",
            op,
            rid,
            values,
            version if base == "current" else base,
        )
        for op, rid, values, base in changes
    ]


def snapshot(world: World, conn: sa.Connection) -> dict[str, Any]:
    store = world.platform.store
    account = store.sql_table("account")
    rows = sorted(
        (
            str(r.accountid),
            r.name,
            r.telephone1,
            r.emailaddress1,
            r.numberofemployees,
            str(r.ownerid),
        )
        for r in conn.execute(sa.select(account))
    )
    errors = store.sql_table("syncerror")
    sync_errors = sorted(
        (str(r.clientchangeid), r.errorcode, r.errortype, r.action)
        for r in conn.execute(sa.select(errors))
    )
    log = sorted(
        (str(r.recordid), r.operation, tuple(r.changed or ()))
        for r in conn.execute(sa.select(fs_change).where(fs_change.c.tablename == "account"))
    )
    kept = sorted(
        (str(r.changeid), r.result["status"]) for r in conn.execute(sa.select(fs_sync_applied))
    )
    return {"rows": rows, "errors": sync_errors, "log": log, "kept": kept}


MOMENTS = ("versionnumber", "createdon", "modifiedon")


def normal(answers: list[Any]) -> list[Any]:
    """Answers without version numbers (a batch takes its versions in one block) and times."""
    out = []
    for a in answers:
        a = dict(a)
        if a["status"] == "applied":
            a["version"] = a["version"] is not None
        elif a["row"] is not None:
            a["row"] = {k: v for k, v in a["row"].items() if k not in MOMENTS}
        out.append(a)
    return out


def test_a_batched_upload_answers_and_writes_what_one_at_a_time_does(world: World) -> None:
    ids = rows_of(world)
    store = world.platform.store
    plan = world.sync.plan(field_profile(account=ItemSnapshot("account", Distribution.ALL)))
    ctx = world.ctx("tech1")

    @settings(
        max_examples=30,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(upload=uploads(ids))
    def check(upload: dict[str, Any]) -> None:
        wins = frozenset({"account"}) if upload["server_wins"] else frozenset()
        results: dict[str, Any] = {}
        try:
            with store.write() as conn:
                version = store.current_version(conn)
                first = wire(upload["first"], version)
                Uploader(world.platform.records, plan, ctx, device=DEVICE).apply(conn, first)
                second = wire(upload["second"], version)
                for i in upload["retries"]:  # a retry of a change of the first upload
                    if i < len(first) and first[i].change_id not in {c.change_id for c in second}:
                        second.insert(i, first[i])
                for name, kind in (("batched", Uploader), ("alone", OneAtATime)):
                    savepoint = conn.begin_nested()
                    up = kind(world.platform.records, plan, ctx, device=DEVICE, server_wins=wins)
                    answers = up.apply(conn, second)
                    results[name] = (normal(answers), snapshot(world, conn))
                    savepoint.rollback()
                raise Rollback
        except Rollback:
            pass
        batched, alone = results["batched"], results["alone"]
        assert batched[0] == alone[0]
        assert batched[1] == alone[1]

    check()


def test_a_refused_change_in_a_long_run_costs_a_few_batches(world: World) -> None:
    """One refused change among many: the run is split around it, not applied change by
    change (each change alone would cost a savepoint and a write of its own)."""
    ids = rows_of(world)
    owner = EntityRef("systemuser", world.users["tech1"])
    many = world.platform.records.create_many(
        "account", [{"name": f"n{i}", "ownerid": owner} for i in range(40)]
    )
    plan = world.sync.plan(field_profile(account=ItemSnapshot("account", Distribution.ALL)))
    changes = [
        ClientChange(uuid.uuid4(), "account", "update", rid, {"telephone1": str(i)}, None)
        for i, rid in enumerate(many)
    ]
    changes[17] = ClientChange(
        uuid.uuid4(), "account", "update", many[17], {"telephone1": "REJECT"}, None
    )
    changes[30] = ClientChange(
        uuid.uuid4(), "account", "update", ids["tech2"][0], {"telephone1": "x"}, None
    )
    up = Uploader(world.platform.records, plan, world.ctx("tech1"), device=DEVICE)
    tries: list[int] = []
    alone: list[int] = []
    apply_run, apply_one = up._apply_run, up._apply_one

    def counted_run(conn: sa.Connection, run: list[ClientChange]) -> Any:
        tries.append(len(run))
        return apply_run(conn, run)

    def counted_one(conn: sa.Connection, change: ClientChange) -> Any:
        alone.append(1)
        return apply_one(conn, change)

    up._apply_run = counted_run  # type: ignore[method-assign]
    up._apply_one = counted_one  # type: ignore[method-assign]
    with world.platform.store.write() as conn:
        answers = up.apply(conn, changes)
    statuses = [a["status"] for a in answers]
    assert statuses.count("rejected") == 2
    assert statuses[17] == statuses[30] == "rejected"
    assert answers[17]["error"]["message"] == "this phone number is refused"
    assert len(tries) <= 5
    assert len(alone) == 2
    phones = {
        r["accountid"]: r["telephone1"]
        for r in world.platform.records.retrieve_multiple("account", columns=["telephone1"])
    }
    assert phones[many[16]] == "16"
    assert phones[many[17]] is None
    assert phones[many[39]] == "39"


def test_a_forbidden_change_in_a_run_is_audited_once(world: World) -> None:
    """The batch that tried it rolled back and its refusal is not counted: the change alone
    is refused once, and audited once."""
    ids = rows_of(world)
    plan = world.sync.plan(field_profile(account=ItemSnapshot("account", Distribution.ALL)))
    store = world.platform.store
    before = len(store.audit.read(event=WRITE_REFUSED))
    changes = [
        ClientChange(uuid.uuid4(), "account", "update", rid, {"telephone1": "5"}, None)
        for rid in [*ids["tech1"][:2], ids["tech2"][0], *ids["tech1"][2:]]
    ]
    up = Uploader(world.platform.records, plan, world.ctx("tech1"), device=DEVICE)
    with store.write() as conn:
        answers = up.apply(conn, changes)
    assert [a["status"] for a in answers] == ["applied"] * 2 + ["rejected"] + ["applied"] * 2
    refused = store.audit.read(event=WRITE_REFUSED)
    assert len(refused) == before + 1
    assert str(ids["tech2"][0]) in refused[-1]["detail"]
