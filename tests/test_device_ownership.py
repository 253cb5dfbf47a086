"""A device id belongs to the user who registered it, and every user reads their own sync
errors: the attacks of issue 16 (items 2 and 10) over HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from fieldsync.client import Device, DeviceError
from fieldsync.demo import DEMO_ROLES, FIELD_TECHNICIAN
from fieldsync.errors import Forbidden
from fieldsync.platform import Platform
from fieldsync.security.roles import SYSTEM_ADMINISTRATOR
from fieldsync.store.catalog import fs_device, fs_migration, fs_sync_applied
from fieldsync.store.store import Store
from fieldsync.sync.devices import NOT_YOURS, purge_device
from portal_world import sign_in
from sync_world import PASSWORD, World
from test_sync import seed

API = "/api/data/v9.2"


@pytest.fixture
def world(platform: Platform, tmp_path: Path) -> World:
    found = World(platform, tmp_path)
    org = platform.org
    # the demo's technicians: their role only, no Basic User (no privilege on syncerror)
    demo = org.role("Demo Field Technician", privileges=DEMO_ROLES[FIELD_TECHNICIAN])
    for name in ("lena", "tom"):
        found.users[name] = org.user(
            name, business_unit=found.unit, password=PASSWORD, roles=[demo]
        )
    found.users["admin"] = org.user(
        "admin", password=PASSWORD, roles=[org.role_id(SYSTEM_ADMINISTRATOR)]
    )
    # reads every sync error of the business unit through a role
    lead = org.role("Crew Lead", privileges={"syncerror": {"read": "businessunit"}})
    found.users["lead"] = org.user(
        "lead", business_unit=found.unit, password=PASSWORD, roles=[lead]
    )
    return found


def client(world: World, user: str | None = None) -> httpx.Client:
    c = httpx.Client(transport=world.transport(), base_url="http://testserver")
    if user is not None:
        answer = c.post("/auth/token", data={"username": user, "password": PASSWORD})
        assert answer.status_code == 200, answer.text
        c.headers["Authorization"] = f"Bearer {answer.json()['access_token']}"
    return c


def refused(response: httpx.Response, status: int = 403) -> str:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) >= {"code", "message"}
    message: str = error["message"]
    return message


def registration(world: World, device: str) -> Any:
    with world.platform.store.read() as conn:
        return conn.execute(sa.select(fs_device).where(fs_device.c.deviceid == device)).first()


def applied(world: World) -> list[Any]:
    with world.platform.store.read() as conn:
        return sorted(conn.execute(sa.select(fs_sync_applied)).all(), key=lambda r: str(r.changeid))


def version(world: World) -> int:
    with world.platform.store.read() as conn:
        return world.platform.store.current_version(conn)


def update(change: uuid.UUID, record: Any, **values: Any) -> dict[str, Any]:
    return {
        "id": str(change),
        "table": "workorder",
        "operation": "update",
        "record": str(record),
        "values": values,
    }


# -- item 2: a device id belongs to the user who registered it ----------------------------------


def test_a_handshake_cannot_take_over_another_users_device(world: World) -> None:
    ids = seed(world)
    victim = client(world, "tech1")
    mine = {"device": "victim-device-1", "app": "fieldservice"}
    assert victim.post("/sync/v1/handshake", json=mine).status_code == 200
    change = update(uuid.uuid4(), ids["wo1"], name="Pump, checked")
    first = victim.post("/sync/v1/upload", json={**mine, "changes": [change]})
    assert first.json()["results"][0]["status"] == "applied", first.text
    before, answers, at = registration(world, "victim-device-1"), applied(world), version(world)
    assert before.userid == world.users["tech1"]
    assert len(answers) == 1
    attacker = client(world, "tech3")
    message = refused(attacker.post("/sync/v1/handshake", json=mine))
    assert message == NOT_YOURS
    # the replay of the victim's change id on their device is refused too
    assert refused(attacker.post("/sync/v1/upload", json={**mine, "changes": [change]})) == (
        NOT_YOURS
    )
    # nothing changed: the registration, the stored answer, the data
    assert registration(world, "victim-device-1") == before
    assert applied(world) == answers
    assert version(world) == at
    # and the owner is not locked out: a retry is answered from the record, syncs go on
    again = victim.post("/sync/v1/upload", json={**mine, "changes": [change]})
    assert again.json() == first.json()
    down = victim.post("/sync/v1/download", json={**mine, "cursors": {"workorder": None}})
    assert down.status_code == 200, down.text
    assert victim.post("/sync/v1/handshake", json=mine).status_code == 200
    assert registration(world, "victim-device-1").registeredon == before.registeredon


def test_no_endpoint_takes_another_users_device(world: World) -> None:
    seed(world)
    victim = world.device("tech1")
    victim.sync()
    before, answers, at = registration(world, victim.device_id), applied(world), version(world)
    attacker = client(world, "tech2")  # same business unit: reads the victim's rows
    device = {"device": victim.device_id, "app": "fieldservice"}
    change = update(uuid.uuid4(), uuid.uuid4(), name="x")
    attempts = [
        ("/sync/v1/handshake", device),
        ("/sync/v1/download", {**device, "cursors": {"workorder": None}}),
        ("/sync/v1/upload", {**device, "changes": [change]}),
        ("/sync/v1/files/grants", {**device, "files": [str(uuid.uuid4())]}),
        ("/sync/v1/files/read", {**device, "files": [{"id": str(uuid.uuid4())}]}),
    ]
    for path, body in attempts:
        assert refused(attacker.post(path, json=body)) == NOT_YOURS, path
    # an administrator is no exception: a device is one user's
    admin = client(world, "admin")
    assert refused(admin.post("/sync/v1/handshake", json=device)) == NOT_YOURS
    assert registration(world, victim.device_id) == before
    assert applied(world) == answers
    assert version(world) == at
    # an id no one registered is the caller's own once they register it
    mine = {"device": "attacker-device-1", "app": "fieldservice"}
    assert attacker.post("/sync/v1/handshake", json=mine).status_code == 200
    assert registration(world, "attacker-device-1").userid == world.users["tech2"]


def test_replaying_a_change_id_never_returns_another_users_answer(world: World) -> None:
    ids = seed(world)
    # tech1's device creates a work order; tech3 (another business unit) cannot read it
    victim = client(world, "tech1")
    body = {"device": "victim-device-2", "app": "fieldservice"}
    assert victim.post("/sync/v1/handshake", json=body).status_code == 200
    change_id, created = uuid.uuid4(), uuid.uuid4()
    create = {
        "id": str(change_id),
        "table": "workorder",
        "operation": "create",
        "record": str(created),
        "values": {"name": "Secret", "serviceaccountid": str(ids["acc1"])},
    }
    first = victim.post("/sync/v1/upload", json={**body, "changes": [create]})
    assert first.json()["results"][0]["status"] == "applied", first.text
    assert [r.userid for r in applied(world)] == [world.users["tech1"]]
    # the device is purged; tech3 then registers the freed id and replays the change id
    purge_device(world.platform.store, world.ctx("tech1"), "victim-device-2")
    attacker = client(world, "tech3")
    assert attacker.post("/sync/v1/handshake", json=body).status_code == 200
    for replay in (create, update(change_id, created, name="Mine now")):
        answer = attacker.post("/sync/v1/upload", json={**body, "changes": [replay]})
        assert answer.status_code == 200, answer.text
        [result] = answer.json()["results"]
        # tech3's own change, refused for tech3: not tech1's stored answer, and no row
        assert result["status"] == "rejected", result
        assert result["row"] is None
        assert "Secret" not in answer.text
        attacker.post(
            "/sync/v1/upload", json={**body, "changes": [], "acknowledged": [str(change_id)]}
        )
    assert world.platform.records.retrieve("workorder", created)["name"] == "Secret"
    # acknowledging the id removed the attacker's records only
    assert [r.userid for r in applied(world)] == [world.users["tech1"]]


def test_the_store_rekeys_applied_changes_of_older_databases(store: Store) -> None:
    """Migration 0004: fs_sync_applied keyed by (device, change) becomes (user, device,
    change), keeping its rows."""
    row = {
        "deviceid": "device-0001",
        "changeid": uuid.uuid4(),
        "userid": uuid.uuid4(),
        "result": {"status": "applied"},
        "appliedon": dt_now(),
    }
    old = sa.MetaData()
    legacy = sa.Table(
        "fs_sync_applied",
        old,
        sa.Column("deviceid", sa.String(64), primary_key=True),
        sa.Column("changeid", sa.Uuid, primary_key=True),
        sa.Column("userid", sa.Uuid, nullable=False),
        sa.Column("result", fs_sync_applied.c.result.type, nullable=False),
        sa.Column("appliedon", fs_sync_applied.c.appliedon.type, nullable=False),
    )
    with store.write() as conn:
        fs_sync_applied.drop(conn)
        legacy.create(conn)
        conn.execute(legacy.insert().values(**row))
        conn.execute(fs_migration.delete().where(fs_migration.c.name.like("0004%")))
    assert "0004_sync_applied_by_user" in store.upgrade()
    with store.read() as conn:
        key = sa.inspect(conn).get_pk_constraint("fs_sync_applied")["constrained_columns"]
        assert key == ["userid", "deviceid", "changeid"]
        [kept] = conn.execute(sa.select(fs_sync_applied)).mappings().all()
    assert dict(kept) == row
    # the same change id of another user on the same device id is a row of its own now
    with store.write() as conn:
        conn.execute(fs_sync_applied.insert().values(**{**row, "userid": uuid.uuid4()}))
    assert store.upgrade() == []


def dt_now() -> Any:
    import datetime as dt

    return dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


# -- item 10: every user reads their own sync errors ------------------------------------------


def rejected_change(world: World, user: str) -> str:
    """A change the user's device sends that the server rejects; returns the sync error's id."""
    c = client(world, user)
    body = {"device": f"{user}-device-01", "app": "fieldservice"}
    assert c.post("/sync/v1/handshake", json=body).status_code == 200
    change = update(uuid.uuid4(), uuid.uuid4(), name="nowhere")
    answer = c.post("/sync/v1/upload", json={**body, "changes": [change]})
    assert answer.json()["results"][0]["status"] == "rejected", answer.text
    [row] = world.platform.records.retrieve_multiple(
        "syncerror", where={"clientchangeid": uuid.UUID(change["id"])}
    )
    return str(row["syncerrorid"])


def test_technicians_read_their_own_sync_errors_and_no_one_elses(world: World) -> None:
    seed(world)
    lena, tom = rejected_change(world, "lena"), rejected_change(world, "tom")
    theirs = rejected_change(world, "tech3")  # another business unit
    for user, own, other in (("lena", lena, tom), ("tom", tom, lena)):
        c = client(world, user)
        # the sync protocol
        answer = c.get("/sync/v1/errors")
        assert answer.status_code == 200, answer.text
        assert [e["syncerrorid"] for e in answer.json()["value"]] == [own]
        # the Web API
        listed = c.get(f"{API}/syncerrors")
        assert listed.status_code == 200, listed.text
        assert [e["syncerrorid"] for e in listed.json()["value"]] == [own]
        assert c.get(f"{API}/syncerrors({own})").status_code == 200
        refused(c.get(f"{API}/syncerrors({other})"), 404)
        # the portal
        portal = client(world)
        sign_in(portal, user)
        page = portal.get("/portal/sync-errors")
        assert page.status_code == 200, page.text
        assert own in page.text
        assert other not in page.text
        assert theirs not in page.text
        assert portal.get(f"/portal/sync-errors/{own}").status_code == 200
        assert portal.get(f"/portal/sync-errors/{other}").status_code == 404
        # reading is all the floor gives: no writing or deleting another's or one's own
        refused(c.patch(f"{API}/syncerrors({own})", json={"description": "x"}))
        refused(c.delete(f"{API}/syncerrors({own})"))


def test_a_role_reaches_further_than_ones_own(world: World) -> None:
    seed(world)
    lena, tom = rejected_change(world, "lena"), rejected_change(world, "tom")
    theirs = rejected_change(world, "tech3")
    lead = client(world, "lead")
    listed = {e["syncerrorid"] for e in lead.get(f"{API}/syncerrors").json()["value"]}
    assert listed == {lena, tom}
    # the sync protocol answers the caller's own only, whatever they may read
    assert lead.get("/sync/v1/errors").json()["value"] == []
    admin = client(world, "admin")
    everyone = {e["syncerrorid"] for e in admin.get(f"{API}/syncerrors").json()["value"]}
    assert everyone == {lena, tom, theirs}


def test_a_device_directory_changes_hands_by_signing_out(world: World) -> None:
    seed(world)
    first = world.device("tech1", "shared")
    first.sync()
    old_id = first.device_id
    first.close()
    with pytest.raises(DeviceError, match="signed in as tech1: sign out first"):
        world.device("tech2", "shared")
    again = Device(world.tmp / "shared", transport=world.transport())
    assert again.device_id == old_id  # the refused sign-in changed nothing
    again.sign_out()
    again.close()
    second = world.device("tech2", "shared")
    assert second.device_id != old_id
    second.sync()
    assert registration(world, second.device_id).userid == world.users["tech2"]
    assert registration(world, old_id).userid == world.users["tech1"]


def test_two_users_registering_one_new_id_at_once(world: World) -> None:
    """One of them owns it; the other is refused, never a server error."""
    contexts = [world.ctx("tech1"), world.ctx("tech2")]

    def register(ctx: Any, device: str, barrier: threading.Barrier, out: list[str]) -> None:
        barrier.wait()
        try:
            world.sync.handshake(ctx, device=device, app="fieldservice")
            out.append("registered")
        except Forbidden as exc:
            out.append("refused" if str(exc) == NOT_YOURS else str(exc))

    for round_ in range(6):
        device, barrier, outcomes = f"contested-{round_:04d}", threading.Barrier(2), []
        threads = [
            threading.Thread(target=register, args=(c, device, barrier, outcomes)) for c in contexts
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert sorted(outcomes) == ["refused", "registered"]
        assert registration(world, device).userid in {c.user_id for c in contexts}
