"""The sync protocol under bad input and attacks: malformed, truncated, oversized, replayed
and out-of-order messages, other users' records, apps a user does not have. Never a 500,
always a clear error, nothing half-applied."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fieldsync.platform import Platform
from fieldsync.types import EntityRef
from sync_world import World, replica
from test_sync import seed

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
change = st.fixed_dictionaries(
    {},
    optional={
        "id": st.one_of(st.uuids().map(str), json_values),
        "table": st.sampled_from(["workorder", "account", "nosuch", "systemuser", ""])
        | json_values,
        "operation": st.sampled_from(["create", "update", "delete", "merge"]) | json_values,
        "record": st.one_of(st.uuids().map(str), json_values),
        "values": st.dictionaries(
            st.sampled_from(["name", "priority", "ownerid", "bogus", "serviceaccountid"]),
            json_values,
            max_size=3,
        )
        | json_values,
        "base_version": st.integers(-5, 10**12) | json_values,
    },
)


@pytest.fixture
def world(platform: Platform, tmp_path: Path) -> World:
    return World(platform, tmp_path)


def _client(world: World) -> httpx.Client:
    return httpx.Client(transport=world.transport(), base_url="http://testserver")


def _state(world: World) -> int:
    with world.platform.store.read() as conn:
        return world.platform.store.current_version(conn)


def test_random_messages_get_clear_errors(world: World) -> None:
    seed(world)
    device = world.device("tech1")
    token = device.http().tokens["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    client = _client(world)

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(
        path=st.sampled_from(["/sync/v1/handshake", "/sync/v1/download", "/sync/v1/upload"]),
        body=st.one_of(
            json_values,
            st.fixed_dictionaries(
                {
                    "device": st.sampled_from([device.device_id, "x", "y" * 70]) | json_values,
                    "app": st.sampled_from(["fieldservice", ""]) | json_values,
                },
                optional={
                    "cursors": st.dictionaries(
                        st.sampled_from(["workorder", "account", "nosuch"]),
                        st.none() | st.text(max_size=30) | json_values,
                    )
                    | json_values,
                    "limit": st.integers(-3, 10**6) | json_values,
                    "changes": st.lists(change, max_size=3) | json_values,
                    "acknowledged": st.lists(st.uuids().map(str) | json_values, max_size=3)
                    | json_values,
                },
            ),
        ),
        cut=st.integers(0, 4),
    )
    def check(path: str, body: Any, cut: int) -> None:
        raw = json.dumps(body).encode()
        if cut:
            raw = raw[: len(raw) * cut // 5]  # truncated messages
        response = client.post(path, content=raw, headers=headers)
        assert response.status_code < 500, response.text
        if response.status_code >= 400:
            error = response.json()["error"]
            assert error["code"]
            assert error["message"]

    check()


def test_oversized_and_replayed_messages(world: World) -> None:
    seed(world)
    device = world.device("tech1")
    device.sync()
    headers = {"Authorization": f"Bearer {device.http().tokens['access_token']}"}
    client = _client(world)
    before = _state(world)
    big = b'{"device": "' + b"d" * (17 * 1024 * 1024) + b'"}'
    response = client.post("/sync/v1/upload", content=big, headers=headers)
    assert response.status_code == 413
    assert _state(world) == before
    # a batch sent twice (a replay) is answered from the record of the first, applied once
    rid = str(uuid.uuid4())
    batch = {
        "device": device.device_id,
        "app": "fieldservice",
        "changes": [
            {
                "id": str(uuid.uuid4()),
                "table": "account",
                "operation": "create",
                "record": rid,
                "values": {"name": "Replayed"},
            }
        ],
    }
    first = client.post("/sync/v1/upload", json=batch, headers=headers).json()
    second = client.post("/sync/v1/upload", json=batch, headers=headers).json()
    assert first == second
    assert first["results"][0]["status"] == "applied"
    assert len(world.platform.records.retrieve_multiple("account", where={"name": "Replayed"})) == 1
    # an old cursor replayed (out of order) is harmless: the answer is the current truth
    old = device.replica.cursors(["workorder"])["workorder"]
    device.sync()
    answer = client.post(
        "/sync/v1/download",
        json={"device": device.device_id, "app": "fieldservice", "cursors": {"workorder": old}},
        headers=headers,
    )
    assert answer.status_code == 200
    assert replica(device) == world.scope("tech1")


def test_attacks_on_other_users_rows_are_refused_and_recorded(world: World) -> None:
    ids = seed(world)
    tech3 = world.users["tech3"]  # another business unit: tech1 cannot read or write its rows
    r = world.platform.records
    foreign = r.create(
        "workorder",
        {
            "name": "Theirs",
            "serviceaccountid": ids["acc1"],
            "ownerid": EntityRef("systemuser", tech3),
        },
    )
    device = world.device("tech1")
    device.sync()
    headers = {"Authorization": f"Bearer {device.http().tokens['access_token']}"}
    client = _client(world)
    attempts = [
        ("update", str(foreign), {"name": "Mine now"}),
        ("delete", str(foreign), {}),
        ("update", str(ids["wo1"]), {"name": "x'); DROP TABLE workorder; --"}),
        ("update", str(ids["wo1"]), {"ownerid": str(tech3), "owneridtype": "systemuser"}),
        ("create", str(uuid.uuid4()), {"name": "sys", "bogus'--": 1}),
        ("update", str(world.users["tech2"]), {"fullname": "pwned"}),
    ]
    body = {
        "device": device.device_id,
        "app": "fieldservice",
        "changes": [
            {
                "id": str(uuid.uuid4()),
                "table": "workorder" if i < 5 else "systemuser",
                "operation": op,
                "record": rec,
                "values": values,
            }
            for i, (op, rec, values) in enumerate(attempts)
        ],
    }
    answer = client.post("/sync/v1/upload", json=body, headers=headers)
    assert answer.status_code == 200
    results = answer.json()["results"]
    statuses = [res["status"] for res in results]
    # the SQL-looking name is only a string: it is stored as it is; everything else is refused
    assert statuses == ["rejected", "rejected", "applied", "applied", "rejected", "rejected"]
    assert results[0]["row"] is None  # nothing of a row the user may not read comes back
    assert r.retrieve("workorder", foreign)["name"] == "Theirs"
    assert r.retrieve("workorder", ids["wo1"])["name"] == "x'); DROP TABLE workorder; --"
    # reassigning to a user in another business unit is allowed by the role (user-level
    # assign of an own row), and the row then leaves tech1's scope
    device.sync()
    assert str(ids["wo1"]) not in replica(device)["workorder"]
    errors = world.sync.errors(world.ctx("tech1"))
    assert len(errors) == 4
    # another app, and another user's device
    refused = client.post(
        "/sync/v1/handshake",
        json={"device": device.device_id, "app": "not-mine"},
        headers=headers,
    )
    assert refused.status_code in (403, 404)
    other = world.device("tech2")
    stolen = client.post(
        "/sync/v1/download",
        json={"device": other.device_id, "app": "fieldservice", "cursors": {"workorder": None}},
        headers=headers,
    )
    assert stolen.status_code == 403
    forged = client.post(
        "/sync/v1/download",
        json={"device": device.device_id, "app": "x"},
        headers={"Authorization": "Bearer " + "eyJhbGciOiJub25lIn0.e30."},
    )
    assert forged.status_code == 401
