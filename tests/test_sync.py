"""Sync end to end: a server (SQLite and PostgreSQL) and devices over the protocol."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from fieldsync.client import Offline
from fieldsync.client.localdb import lookup_indexes
from fieldsync.errors import FieldsyncError, PluginError
from fieldsync.platform import Platform
from fieldsync.records.plugins import PluginContext
from fieldsync.types import EntityRef
from sync_world import World, replica


@pytest.fixture
def world(platform: Platform, tmp_path: Path) -> World:
    return World(platform, tmp_path)


def seed(world: World) -> dict[str, Any]:
    r = world.platform.records
    tech1, tech2 = world.users["tech1"], world.users["tech2"]
    acc1 = r.create("account", {"name": "Contoso", "ownerid": EntityRef("systemuser", tech2)})
    acc2 = r.create("account", {"name": "Fabrikam", "ownerid": EntityRef("systemuser", tech2)})
    con1 = r.create(
        "contact",
        {
            "lastname": "Ada",
            "parentcustomerid": EntityRef("account", acc1),
            "ownerid": EntityRef("systemuser", tech2),
        },
    )
    wo1 = r.create(
        "workorder",
        {"name": "Pump", "serviceaccountid": acc1, "ownerid": EntityRef("systemuser", tech1)},
    )
    wo2 = r.create(
        "workorder",
        {"name": "Valve", "serviceaccountid": acc2, "ownerid": EntityRef("systemuser", tech2)},
    )
    return {"acc1": acc1, "acc2": acc2, "con1": con1, "wo1": wo1, "wo2": wo2}


def converged(world: World, device: Any, user: str) -> None:
    assert replica(device) == world.scope(user)


def test_initial_sync_downloads_exactly_the_scope(world: World) -> None:
    ids = seed(world)
    world.platform.org.set_hierarchy(enabled=False) if hasattr(
        world.platform.org, "set_hierarchy"
    ) else None
    device = world.device("tech1")
    report = device.sync()
    assert report.downloaded["workorder"] == 1
    got = replica(device)
    assert set(got["workorder"]) == {str(ids["wo1"])}
    assert set(got["account"]) == {str(ids["acc1"])}
    assert set(got["contact"]) == {str(ids["con1"])}
    converged(world, device, "tech1")
    assert device.status.sync_state == "Connected"


def test_move_out_and_move_in_follow_reassignment_and_relationships(world: World) -> None:
    ids = seed(world)
    r = world.platform.records
    device = world.device("tech1")
    device.sync()
    # the work order goes to tech2: it, its account and the account's contact leave
    r.assign("workorder", ids["wo1"], EntityRef("systemuser", world.users["tech2"]))
    # the other work order comes to tech1: it and its account arrive
    r.assign("workorder", ids["wo2"], EntityRef("systemuser", world.users["tech1"]))
    report = device.sync()
    assert not report.rescoped
    got = replica(device)
    assert set(got["workorder"]) == {str(ids["wo2"])}
    assert set(got["account"]) == {str(ids["acc2"])}
    assert got["contact"] == {}
    converged(world, device, "tech1")
    # a contact moves to the account in scope, then a deleted row leaves
    r.update("contact", ids["con1"], {"parentcustomerid": EntityRef("account", ids["acc2"])})
    device.sync()
    assert set(replica(device)["contact"]) == {str(ids["con1"])}
    r.delete("contact", ids["con1"])
    device.sync()
    converged(world, device, "tech1")


def test_local_edits_upload_and_merge_per_column(world: World) -> None:
    ids = seed(world)
    r = world.platform.records
    device = world.device("tech1")
    device.sync()
    world.down = True
    device.update("workorder", ids["wo1"], {"priority": 1})
    new = device.create("workorder", {"name": "New job", "serviceaccountid": str(ids["acc1"])})
    with pytest.raises(Offline):
        device.sync()
    assert device.status.sync_state == "NotConnectedPendingUpsync"
    assert device.pending_changes() == 2
    # meanwhile another column changes on the server
    r.update("workorder", ids["wo1"], {"estimatedduration": 90})
    world.down = False
    report = device.sync()
    assert report.uploaded == 2
    assert report.rejected == 0
    row = r.retrieve("workorder", ids["wo1"])
    assert row["priority"] == 1
    assert row["estimatedduration"] == 90
    assert r.retrieve("workorder", new)["name"] == "New job"
    assert device.pending_changes() == 0
    converged(world, device, "tech1")


def test_a_rejected_change_is_reverted_and_becomes_a_sync_error(world: World) -> None:
    ids = seed(world)

    @world.platform.plugins.on("workorder", "update", "pre-validation")
    def no_urgent(ctx: PluginContext) -> None:
        if ctx.target.get("priority") == 1:
            raise PluginError("urgent work orders need a supervisor", code="URGENT")

    device = world.device("tech1")
    device.sync()
    before = device.get("workorder", ids["wo1"])
    device.update("workorder", ids["wo1"], {"priority": 1, "name": "Renamed"})
    report = device.sync()
    assert report.rejected == 1
    assert device.get("workorder", ids["wo1"]) == before
    [error] = device.errors()
    assert error["code"] == "URGENT"
    assert error["sent"]["priority"] == 1
    assert device.status.sync_state == "ConnectedWithWarning"
    server = world.sync.errors(world.ctx("tech1"))
    assert [e["errorcode"] for e in server] == ["URGENT"]
    assert server[0]["regardingobjectid"] == str(ids["wo1"])
    converged(world, device, "tech1")


def test_a_retried_upload_is_applied_once(world: World) -> None:
    seed(world)
    device = world.device("tech1")
    device.sync()
    rid = device.create("account", {"name": "Once"})
    changes = device.outbox()
    body = {
        "device": device.device_id,
        "app": "fieldservice",
        "changes": [
            {
                "id": c["changeid"],
                "table": c["tablename"],
                "operation": c["operation"],
                "record": c["recordid"],
                "values": c["changes"],
                "base_version": c["baseversion"],
            }
            for c in changes
        ],
    }
    ctx = world.ctx("tech1")
    first = world.sync.upload(
        ctx, device=device.device_id, app="fieldservice", changes=body["changes"]
    )
    again = world.sync.upload(
        ctx, device=device.device_id, app="fieldservice", changes=body["changes"]
    )
    assert first == again
    assert first["results"][0]["status"] == "applied"
    device.sync()  # the device's own retry of the same change
    rows = world.platform.records.retrieve_multiple("account", where={"name": "Once"})
    assert len(rows) == 1
    assert rows[0]["accountid"] == rid
    assert device.pending_changes() == 0


def test_access_removed_purges_the_device(world: World) -> None:
    seed(world)
    device = world.device("tech1")
    device.sync()
    device.update("workorder", device.query("workorder")[0]["workorderid"], {"priority": 2})
    world.allowed = lambda ctx: False
    with pytest.raises(Exception, match="may not take this app offline"):
        device.sync()
    assert device.replica.sql == {}
    assert device.pending_changes() == 0
    assert len(device.errors()) == 1


def test_a_poison_change_becomes_a_sync_error_and_the_rest_go_through(world: World) -> None:
    ids = seed(world)
    device = world.device("tech1")
    device.sync()
    # a create with the id of a row that exists (tech2's, out of this device's scope)
    account = str(ids["acc1"])
    device.create(
        "workorder", {"workorderid": str(ids["wo2"]), "name": "Clash", "serviceaccountid": account}
    )
    device.update("workorder", ids["wo1"], {"name": "Still applied"})
    ok = device.create("workorder", {"name": "Also applied", "serviceaccountid": account})
    with pytest.raises(FieldsyncError, match="serviceaccountid: is required"):
        device.create("workorder", {"name": "No account"})
    report = device.sync()
    assert report.rejected == 1
    assert report.uploaded == 2
    [error] = device.errors()
    assert error["recordid"] == str(ids["wo2"])
    assert device.get("workorder", ids["wo2"]) is None  # the rejected create is gone
    records = world.platform.records
    assert records.retrieve("workorder", ids["wo2"])["name"] == "Valve"
    assert records.retrieve("workorder", ids["wo1"])["name"] == "Still applied"
    assert records.retrieve("workorder", ok)["name"] == "Also applied"
    assert replica(device) == world.scope("tech1")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"device": "short", "app": "fieldservice", "changes": []}, "'device'"),
        ({"device": "d" * 10, "app": "", "changes": []}, "'app'"),
        ({"device": "d" * 10, "app": "fieldservice", "changes": {}}, "list of changes"),
        ({"device": "d" * 10, "app": "fieldservice", "changes": [1]}, "JSON object"),
        (
            {"device": "d" * 10, "app": "fieldservice", "changes": [{"id": "x", "record": "y"}]},
            "GUIDs",
        ),
        (
            {
                "device": "d" * 10,
                "app": "fieldservice",
                "changes": [
                    {
                        "id": str(uuid.uuid4()),
                        "record": str(uuid.uuid4()),
                        "table": "account",
                        "operation": "merge",
                    }
                ],
            },
            "'operation'",
        ),
    ],
)
def test_bad_uploads_are_refused_clearly(world: World, body: dict[str, Any], message: str) -> None:
    device = world.device("tech1")
    headers = {"Authorization": f"Bearer {device._http().tokens['access_token']}"}
    client = httpx.Client(transport=world.transport(), base_url="http://testserver")
    before = world.platform.store.current_version
    with world.platform.store.read() as conn:
        version = before(conn)
    response = client.post("/sync/v1/upload", json=body, headers=headers)
    assert response.status_code == 400, response.text
    assert message in response.json()["error"]["message"]
    with world.platform.store.read() as conn:
        assert before(conn) == version


def test_cursors_cannot_be_forged_or_borrowed(world: World) -> None:
    seed(world)
    one, two = world.device("tech1"), world.device("tech2")
    one.sync()
    token = one.replica.cursors(["workorder"])["workorder"]
    assert token is not None
    ctx = world.ctx("tech2")
    with pytest.raises(FieldsyncError, match="belongs to another sync"):
        world.sync.download(
            ctx, device=two.device_id, app="fieldservice", cursors={"workorder": token}
        )
    forged = token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB")
    with pytest.raises(FieldsyncError, match="not one this server issued"):
        world.sync.download(
            world.ctx("tech1"),
            device=one.device_id,
            app="fieldservice",
            cursors={"workorder": forged},
        )
    with pytest.raises(FieldsyncError, match="registered to another user"):
        world.sync.download(
            ctx, device=one.device_id, app="fieldservice", cursors={"workorder": None}
        )


def test_ids_of_rows_never_readable_do_not_leave_the_server(world: World) -> None:
    ids = seed(world)
    device = world.device("tech1")
    device.sync()
    r = world.platform.records
    tech3 = EntityRef("systemuser", world.users["tech3"])  # another business unit
    theirs = r.create(
        "workorder", {"name": "Theirs", "serviceaccountid": ids["acc1"], "ownerid": tech3}
    )
    r.update("workorder", theirs, {"name": "Still theirs"})
    r.assign("workorder", ids["wo1"], tech3)  # tech1's own row goes to tech3
    cursors = device.replica.cursors(["workorder"])
    answer = world.sync.download(
        world.ctx("tech1"), device=device.device_id, app="fieldservice", cursors=cursors
    )
    [page] = answer["pages"]
    assert page["removes"] == [str(ids["wo1"])]  # it was readable before: it must go
    assert str(theirs) not in page["removes"]
    r.delete("workorder", theirs)
    device.sync()
    assert replica(device) == world.scope("tech1")


def test_automatic_sync_follows_the_users_settings(world: World) -> None:
    import datetime as dt

    class Network:
        up, wifi_now = True, True

        def connected(self) -> bool:
            return self.up

        def wifi(self) -> bool:
            return self.wifi_now

    seed(world)
    device = world.device("tech1")
    network = Network()
    device.network = network
    device.sync()
    assert device.due_tables() == []  # just synced
    later = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=16)
    assert device.due_tables(later) == ["workorder", "account", "contact"]
    assert device.may_sync_automatically()
    device.set_settings(frequency=0)  # no automatic sync: nothing is due, pending waits
    assert device.due_tables(later) == []
    assert not device.may_sync_automatically()
    device.set_settings(frequency=None)
    network.up = False
    assert not device.may_sync_automatically()
    network.up, network.wifi_now = True, False
    assert device.may_sync_automatically()  # the app does not offer Wi-Fi only
    with pytest.raises(FieldsyncError, match="Wi-Fi only"):
        device.set_settings(wifi_only=True)


@pytest.mark.parametrize("page_size", [1, 1000])
def test_an_initial_sync_leaves_the_replicas_indexes_in_place(world: World, page_size: int) -> None:
    """Indexes of a table that arrives whole are built by its last page, over one page or
    many; every table of the replica ends with all of them."""
    seed(world)
    device = world.device("tech1")
    device.sync(page_size=page_size)
    replica_ = device.replica
    with replica_.read() as conn:
        found = {
            row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")
        }
    for name in replica_.sql:
        wanted = {index for index, _ in lookup_indexes(replica_.schema.table(name))}
        assert wanted, name
        assert wanted <= found, (name, wanted - found)
    converged(world, device, "tech1")
