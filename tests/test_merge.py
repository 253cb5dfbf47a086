"""The conflict decision (fieldsync.sync.merge) as pure functions: examples and properties."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fieldsync.platform import Platform
from fieldsync.records.plugins import Conflict
from fieldsync.sync.merge import (
    LAST_WRITE_WINS,
    Policy,
    ServerRow,
    decide,
    needs_history,
    needs_row,
    settle,
)
from fieldsync.sync.protocol import ChangeApplied, ChangeRejected
from fieldsync.types import EntityRef
from sync_world import World

COLUMNS = ["name", "city", "phone", "priority", "ownerid", "statecode"]
columns = st.frozensets(st.sampled_from(COLUMNS))
values = st.dictionaries(
    st.sampled_from(COLUMNS), st.one_of(st.none(), st.integers(), st.text(max_size=5))
)
bases = st.one_of(st.none(), st.integers(min_value=0, max_value=10**6))
SERVER = {"name": "server", "city": "Oslo", "phone": None, "priority": 2}


def keep_server(server: Mapping[str, Any], clash: list[str]) -> Mapping[str, Any]:
    """A resolver: the server's value for the clashing columns, the device's otherwise."""
    return {c: server.get(c) for c in clash}


def test_last_write_wins_writes_the_device_columns_over_any_history() -> None:
    out = decide(LAST_WRITE_WINS, ServerRow(frozenset({"name"})), {"name": "device"}, 3)
    assert out.write == {"name": "device"}
    assert not out.rejected
    assert out.clash == ()


def test_server_wins_rejects_a_column_the_server_changed_since() -> None:
    out = decide(
        Policy(server_wins=True), ServerRow(frozenset({"name", "phone"})), {"name": "d"}, 7
    )
    assert out.rejected
    assert out.write is None
    assert out.clash == ("name",)
    assert out.reason == (
        "name changed on the server since version 7, and this table keeps the server's value"
    )


def test_server_wins_writes_when_the_server_changed_other_columns() -> None:
    out = decide(Policy(server_wins=True), ServerRow(frozenset({"phone"})), {"name": "d"}, 7)
    assert out.write == {"name": "d"}


def test_a_resolver_decides_the_clash_and_sees_the_server_row() -> None:
    seen: list[tuple[dict[str, Any], list[str]]] = []

    def resolver(server: Mapping[str, Any], clash: list[str]) -> Mapping[str, Any]:
        seen.append((dict(server), clash))
        return {"city": "Bergen"}

    policy = Policy(server_wins=True, resolver=resolver)  # a resolver comes first
    out = decide(policy, ServerRow(frozenset({"city", "name"}), SERVER), {"city": "x"}, 1)
    assert out.write == {"city": "Bergen"}
    assert out.resolved
    assert out.clash == ("city",)
    assert seen == [(SERVER, ["city"])]


def test_a_resolver_without_the_server_row_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="current row"):
        decide(Policy(resolver=keep_server), ServerRow(frozenset({"city"})), {"city": "x"}, 1)


def test_the_resolver_may_write_nothing() -> None:
    policy = Policy(resolver=lambda server, clash: {})
    out = decide(policy, ServerRow(frozenset({"city"}), SERVER), {"city": "x"}, 1)
    assert out.write == {}
    assert not out.rejected


def test_policy_names() -> None:
    assert LAST_WRITE_WINS.name == "last-write-wins"
    assert LAST_WRITE_WINS.last_write_wins
    assert Policy(server_wins=True).name == "server-wins"
    assert Policy(resolver=keep_server).name == "resolver"
    assert not Policy(resolver=keep_server).last_write_wins


@settings(deadline=None)  # a loaded machine is slow, not wrong
@given(changed=columns, change=values, base=bases, server_wins=st.booleans())
def test_properties_without_a_resolver(
    changed: frozenset[str], change: dict[str, Any], base: int | None, server_wins: bool
) -> None:
    policy = Policy(server_wins=server_wins)
    out = decide(policy, ServerRow(changed), change, base)
    clash = changed & set(change)
    if server_wins and base is not None and clash:
        # rejected exactly when a sent column changed on the server since the base version
        assert out.rejected
        assert out.clash == tuple(sorted(clash))
        assert out.reason is not None
        assert all(c in out.reason for c in clash)
    else:
        # otherwise the device's columns are written as sent, and nothing else
        assert out.write == change
        assert not out.resolved
    assert needs_history(policy, change, base) == (
        server_wins and base is not None and bool(change)
    )


@settings(deadline=None)  # a loaded machine is slow, not wrong
@given(changed=columns, change=values, base=bases)
def test_properties_with_a_resolver(
    changed: frozenset[str], change: dict[str, Any], base: int | None
) -> None:
    calls: list[list[str]] = []

    def resolver(server: Mapping[str, Any], clash: list[str]) -> Mapping[str, Any]:
        calls.append(clash)
        return keep_server(server, clash)

    policy = Policy(resolver=resolver)
    row = SERVER if needs_row(policy, changed, change) else None
    out = decide(policy, ServerRow(changed, row), change, base)
    clash = sorted(changed & set(change))
    if base is not None and clash:
        # the resolver runs once, on the clashing columns, and its answer is written
        assert calls == [clash]
        assert out.resolved
        assert out.write == {c: SERVER.get(c) for c in clash}
    else:
        assert calls == []
        assert out.write == change
    assert not out.rejected


@settings(deadline=None)  # a loaded machine is slow, not wrong
@given(change=values, base=bases, server_wins=st.booleans())
def test_no_history_never_conflicts(
    change: dict[str, Any], base: int | None, server_wins: bool
) -> None:
    policy = Policy(server_wins=server_wins, resolver=keep_server)
    out = decide(policy, ServerRow(frozenset(), SERVER), change, base)
    assert out.write == change
    assert out.clash == ()


@settings(deadline=None)  # a loaded machine is slow, not wrong
@given(version=st.one_of(st.none(), st.integers(min_value=1)))
def test_an_applied_change_keeps_the_row_at_its_new_version(version: int | None) -> None:
    answer: ChangeApplied = {"id": "c", "record": "r", "status": "applied", "version": version}
    step = settle(answer)
    assert (step.kind, step.version, step.row, step.error) == ("keep", version, None, None)


@settings(deadline=None)  # a loaded machine is slow, not wrong
@given(
    row=st.one_of(st.none(), st.dictionaries(st.sampled_from(COLUMNS), st.integers())),
    kind=st.integers(min_value=0, max_value=3),
)
def test_a_rejected_change_reverts_to_the_server_row_or_drops_it(
    row: dict[str, Any] | None, kind: int
) -> None:
    error = {"code": "0x80040265", "message": "no", "type": kind}
    answer: ChangeRejected = {
        "id": "c",
        "record": "r",
        "status": "rejected",
        "error": {"code": "0x80040265", "message": "no", "type": kind},
        "row": row,
    }
    step = settle(answer)
    assert step.error == error
    if row is None:
        assert step.kind == "drop"
        assert step.row is None
    else:
        assert step.kind == "revert"
        assert step.row == row


# -- through the server: the upload goes through the decision ---------------------------------


@pytest.fixture
def world(platform: Platform, tmp_path: Path) -> World:
    return World(platform, tmp_path)


def _work_order(world: World) -> uuid.UUID:
    r = world.platform.records
    owner = EntityRef("systemuser", world.users["tech1"])
    acc = r.create("account", {"name": "Contoso", "ownerid": owner})
    return r.create(
        "workorder", {"name": "Pump", "serviceaccountid": acc, "priority": 1, "ownerid": owner}
    )


def _server_row(world: World, wo: uuid.UUID) -> dict[str, Any]:
    return world.platform.records.retrieve("workorder", wo)


def test_last_write_wins_by_default(world: World) -> None:
    wo = _work_order(world)
    device = world.device("tech1")
    device.sync()
    world.platform.records.update("workorder", wo, {"name": "Server", "priority": 3})
    device.update("workorder", wo, {"name": "Device"})
    report = device.sync()
    assert (report.uploaded, report.rejected) == (1, 0)
    row = _server_row(world, wo)
    assert (row["name"], row["priority"]) == ("Device", 3)  # the other column survives
    assert device.get("workorder", wo)["name"] == "Device"


def test_server_wins_rejects_and_reverts_only_a_clashing_column(world: World) -> None:
    wo = _work_order(world)
    world.sync.set_server_wins(["workorder"])
    device = world.device("tech1")
    device.sync()
    world.platform.records.update("workorder", wo, {"name": "Server"})
    device.update("workorder", wo, {"name": "Device"})
    report = device.sync()
    assert (report.uploaded, report.rejected) == (0, 1)
    assert _server_row(world, wo)["name"] == "Server"
    assert device.get("workorder", wo)["name"] == "Server"  # reverted to the server's row
    [error] = device.errors()
    assert error["errortype"] == 0  # a conflict
    assert "name changed on the server since version" in error["message"]
    # a column the server did not change since goes through
    device.update("workorder", wo, {"priority": 4})
    report = device.sync()
    assert (report.uploaded, report.rejected) == (1, 0)
    assert _server_row(world, wo)["priority"] == 4


def test_a_resolver_decides_what_is_written(world: World) -> None:
    wo = _work_order(world)
    world.sync.set_server_wins(["workorder"])  # the resolver comes first
    seen: list[tuple[str, list[str], dict[str, Any]]] = []

    @world.platform.records.plugins.resolve_conflicts("workorder")
    def both(conflict: Conflict) -> dict[str, Any]:
        seen.append((conflict.server["name"], conflict.columns, dict(conflict.device)))
        return {"name": f"{conflict.server['name']} / {conflict.device['name']}"}

    device = world.device("tech1")
    device.sync()
    device.update("workorder", wo, {"priority": 2})  # no clash: the resolver is not asked
    device.sync()
    assert seen == []
    world.platform.records.update("workorder", wo, {"name": "Server"})
    device.update("workorder", wo, {"name": "Device"})
    report = device.sync()
    assert (report.uploaded, report.rejected) == (1, 0)
    assert seen == [("Server", ["name"], {"name": "Device"})]
    assert _server_row(world, wo)["name"] == "Server / Device"
    assert device.get("workorder", wo)["name"] == "Server / Device"
