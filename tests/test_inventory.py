"""Device inventory, purge receipts and remote wipe: ``/sync/v1/inventory``,
``/sync/v1/receipt``, ``/admin/devices`` and ``fieldsync device-report``.

Devices sync over HTTP (the in-process bridge) on SQLite and PostgreSQL. The property test draws
organisations and profiles and checks that the inventory the server expects of every user's
device (row count and checksum) is the oracle scope's, computed from scratch by plain queries.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings

from fieldsync.client import Device
from fieldsync.client.transport import ServerError
from fieldsync.platform import Platform
from fieldsync.security.roles import SYSTEM_ADMINISTRATOR
from fieldsync.store.catalog import fs_device
from fieldsync.sync.download import Downloader
from fieldsync.sync.inventory import EMPTY, checksum, row_hash
from fieldsync.sync.service import fingerprint
from sync_world import PASSWORD, AsgiBridge, World, field_profile
from test_explain import organisations
from test_sync import seed

TABLES = ("workorder", "account", "contact")


@pytest.fixture
def world(platform: Platform, tmp_path: Path) -> World:
    return World(platform, tmp_path)


def held(device: Device) -> dict[str, dict[str, Any]]:
    """What the device holds of each table, as it reports it: rows, checksum, cursor."""
    order = device.handshake_data["order"]
    cursors = device.replica.cursors(order)
    out: dict[str, dict[str, Any]] = {}
    with device.replica.read() as conn:
        for name in order:
            t, _ = device.replica.table(name)
            pairs = conn.execute(f'SELECT "{t.primary_id}", versionnumber FROM "{name}"')
            rows, check = checksum(pairs)
            out[name] = {"rows": rows, "checksum": check, "cursor": cursors[name]}
    return out


def call(device: Device, method: str, path: str, body: Any = None) -> Any:
    return device._session.call(method, path, body)


def report(device: Device, tables: dict[str, dict[str, Any]]) -> dict[str, Any]:
    answer: dict[str, Any] = call(
        device,
        "POST",
        "/sync/v1/inventory",
        {"device": device.device_id, "app": device.app, "tables": tables},
    )
    return answer


def statuses(answer: dict[str, Any]) -> dict[str, str]:
    return {t["table"]: t["status"] for t in answer["tables"]}


@pytest.fixture
def admin(world: World) -> Any:
    org = world.platform.org
    org.user("boss", password=PASSWORD, roles=[org.role_id(SYSTEM_ADMINISTRATOR)])
    bridge = AsgiBridge(world.app)
    client = httpx.Client(transport=bridge, base_url="http://testserver")
    got = client.post(
        "/auth/token", data={"grant_type": "password", "username": "boss", "password": PASSWORD}
    )
    client.headers["Authorization"] = f"Bearer {got.json()['access_token']}"
    try:
        yield client
    finally:
        client.close()
        bridge.close()
        bridge.loop.close()


# -- the checksum ------------------------------------------------------------------------------


def test_the_checksum_is_a_sum_of_row_hashes_mod_2_64() -> None:
    rid = uuid.UUID("00000000-0000-4000-8000-000000000001")
    # the test vector of docs/protocol.md
    assert row_hash(rid, 7) == row_hash(str(rid), 7) == 0x45E031F23D2BDC01
    two = uuid.UUID("00000000-0000-4000-8000-000000000002")
    assert checksum([(rid, 7), (two, 12)]) == (2, "01dae0ba746d08fa")
    assert checksum([]) == (0, EMPTY)
    one = checksum([(rid, 7)])
    assert one == (1, f"{row_hash(rid, 7):016x}")
    other = uuid.uuid4()
    both = checksum([(rid, 7), (other, 9)])
    assert both == checksum([(other, 9), (rid, 7)])  # order does not matter
    assert both[1] == f"{(row_hash(rid, 7) + row_hash(other, 9)) % (1 << 64):016x}"
    assert checksum([(rid, 8)]) != one  # a newer version is another checksum


# -- over HTTP -------------------------------------------------------------------------------


def test_a_synced_device_matches_and_a_changed_one_is_behind(world: World) -> None:
    ids = seed(world)
    device = world.device("tech1")
    device.sync()
    answer = report(device, held(device))
    assert statuses(answer) == dict.fromkeys(TABLES, "match")
    assert answer["rescope"] == []
    assert {t["table"]: t["expected_rows"] for t in answer["tables"]} == {
        "workorder": 1,
        "account": 1,
        "contact": 1,
    }
    # the same report at the same cursor stays a match (verified there), even with changes
    # since that the device has not downloaded
    world.platform.records.update("account", ids["acc1"], {"name": "Contoso Ltd"})
    assert statuses(report(device, held(device))) == dict.fromkeys(TABLES, "match")
    # another report at that cursor: changes since could move rows, nothing is compared
    with device.replica.write() as conn:
        conn.execute('UPDATE "account" SET versionnumber = versionnumber + 1000')
    later = statuses(report(device, held(device)))
    assert later["account"] == "behind"
    assert later["workorder"] == "match"
    device.sync()
    assert statuses(report(device, held(device))) == dict.fromkeys(TABLES, "match")
    with world.platform.store.read() as conn:
        row = conn.execute(sa.select(fs_device).where(fs_device.c.deviceid == device.device_id))
        assert row.one().inventorystatus == "match"


def test_a_mismatch_is_recorded_audited_and_healed_by_rescoping_that_table_only(
    world: World, admin: httpx.Client
) -> None:
    ids = seed(world)
    device = world.device("tech1")
    device.sync()
    # the device lost a row (a bug, a restored backup): its inventory says so
    with device.replica.write() as conn:
        conn.execute('DELETE FROM "account" WHERE accountid = ?', (ids["acc1"].hex,))
    answer = report(device, held(device))
    assert statuses(answer) == {"workorder": "match", "account": "mismatch", "contact": "match"}
    assert answer["rescope"] == ["account"]
    mismatch = next(t for t in answer["tables"] if t["table"] == "account")
    assert (mismatch["rows"], mismatch["expected_rows"]) == (0, 1)
    # the audit of the device, and the administrators' view
    events = world.platform.store.audit.read(event="device.inventory_mismatch")
    assert events
    assert events[0]["target"] == f"device {device.device_id}"
    assert events[0]["detail"]["table"] == "account"
    one = admin.get(f"/admin/devices/{device.device_id}").json()
    assert one["inventory"] == "mismatch"
    tables = {t["table"]: t for t in one["tables"]}
    assert tables["account"]["status"] == "mismatch"
    assert tables["account"]["rescoped"] == 1
    # the next sync re-scopes the account table, nothing else, and the row is back
    synced = device.sync()
    assert synced.rescoped == ["account"]
    assert device.get("account", ids["acc1"]) is not None
    assert statuses(report(device, held(device))) == dict.fromkeys(TABLES, "match")
    # an extra row the device should not hold, and a stale version, are mismatches too
    with device.replica.write() as conn:
        conn.execute(
            'UPDATE "account" SET versionnumber = 1 WHERE accountid = ?', (ids["acc1"].hex,)
        )
    assert statuses(report(device, held(device)))["account"] == "mismatch"


def test_bad_reports_change_nothing(world: World) -> None:
    seed(world)
    device = world.device("tech1")
    device.sync()
    good = held(device)

    def recorded() -> Any:
        with world.platform.store.read() as conn:
            return conn.execute(
                sa.select(fs_device.c.inventoryon).where(fs_device.c.deviceid == device.device_id)
            ).scalar_one()

    before = recorded()
    assert before is not None  # the sync reported
    for bad in (
        {},
        {"workorder": {"rows": -1, "checksum": EMPTY, "cursor": None}},
        {"workorder": {"rows": 1, "checksum": "XYZ", "cursor": None}},
        {"workorder": {"rows": True, "checksum": EMPTY, "cursor": None}},
        {"systemuser": {"rows": 0, "checksum": EMPTY, "cursor": None}},
        {"workorder": {**good["workorder"], "cursor": good["account"]["cursor"]}},
        {"workorder": {**good["workorder"], "cursor": "forged.cursor"}},
    ):
        with pytest.raises(ServerError) as caught:
            report(device, bad)
        assert caught.value.status == 400, bad
    assert recorded() == before
    other = world.device("tech2")
    other.sync()
    with pytest.raises(ServerError) as caught:
        call(
            other,
            "POST",
            "/sync/v1/inventory",
            {"device": device.device_id, "app": "fieldservice", "tables": good},
        )
    assert caught.value.status == 403


def test_remote_wipe_refuses_every_call_until_the_wipe_receipt(
    world: World, admin: httpx.Client
) -> None:
    seed(world)
    device = world.device("tech1")
    device.sync()
    tech = world.device("tech2")
    tech.sync()
    with pytest.raises(ServerError) as caught:  # a technician may not wipe
        call(tech, "POST", f"/admin/devices/{device.device_id}/wipe")
    assert caught.value.status == 403
    assert admin.post("/admin/devices/nosuchdevice/wipe").status_code == 404
    answer = admin.post(f"/admin/devices/{device.device_id}/wipe")
    assert answer.status_code == 200, answer.text
    body = {"device": device.device_id, "app": "fieldservice"}
    for path, extra in (
        ("/sync/v1/handshake", {}),
        ("/sync/v1/download", {"cursors": {"workorder": None}}),
        ("/sync/v1/upload", {"changes": []}),
    ):
        with pytest.raises(ServerError) as caught:
            call(device, "POST", path, {**body, **extra})
        assert (caught.value.status, caught.value.code) == (403, "0x80040F01"), path
    # a purge receipt does not close a wipe; the wipe receipt does
    with pytest.raises(ServerError):
        call(device, "POST", "/sync/v1/receipt", {**body, "kind": "purge", "tables": {}})
    receipt = call(
        device,
        "POST",
        "/sync/v1/receipt",
        {**body, "kind": "wipe", "tables": {"workorder": 1, "account": 1}, "outbox": 2},
    )
    assert uuid.UUID(receipt["receipt"])
    one = admin.get(f"/admin/devices/{device.device_id}").json()
    assert one["wipe_pending"] is False
    assert one["wiped_on"]
    assert one["receipts"][0]["kind"] == "wipe"
    assert one["receipts"][0]["counts"] == {
        "tables": {"workorder": 1, "account": 1},
        "outbox": 2,
        "files": 0,
    }
    # the wipe is over: the device may sync again (the user still has access)
    call(device, "POST", "/sync/v1/handshake", body)
    with pytest.raises(ServerError) as caught:
        call(device, "POST", "/sync/v1/receipt", {**body, "kind": "wipe", "tables": {}})
    assert caught.value.status == 400
    events = [e["event"] for e in world.platform.store.audit.read(event="device.")]
    assert "device.wipe_requested" in events
    assert "device.wiped" in events


def test_devices_still_holding_data_after_access_ended_until_their_receipt(
    world: World, admin: httpx.Client
) -> None:
    seed(world)
    one, two = world.device("tech1"), world.device("tech2")
    one.sync()
    two.sync()
    assert admin.get("/admin/devices", params={"stranded": "true"}).json()["value"] == []
    lost = world.users["tech1"]
    world.allowed = lambda ctx: ctx.user_id != lost
    stranded = admin.get("/admin/devices", params={"stranded": "true"}).json()["value"]
    assert [d["device"] for d in stranded] == [one.device_id]
    assert "may not take this app offline" in stranded[0]["lost"]
    # the device learns at its next sync, removes the data and says how much
    with pytest.raises(ServerError):
        one.sync()
    assert one.replica.handshake is None
    listed = admin.get(f"/admin/devices/{one.device_id}").json()
    assert listed["receipts"][0]["kind"] == "purge"
    assert listed["receipts"][0]["counts"]["tables"] == {
        "workorder": 1,
        "account": 1,
        "contact": 1,
    }
    # a second refused sync holds nothing and sends no second receipt
    with pytest.raises(ServerError):
        one.sync()
    assert len(admin.get(f"/admin/devices/{one.device_id}").json()["receipts"]) == 1
    assert admin.get("/admin/devices", params={"stranded": "true"}).json()["value"] == []
    # only administrators list other users' devices
    with pytest.raises(ServerError) as caught:
        call(two, "GET", "/admin/devices?stranded=true")
    assert caught.value.status == 403
    mine = call(two, "GET", "/admin/devices")["value"]
    assert [d["device"] for d in mine] == [two.device_id]


def test_the_device_reports_after_each_sync_and_heals_in_the_same_sync(world: World) -> None:
    ids = seed(world)
    device = world.device("tech1")
    first = device.sync()
    assert first.inventory == dict.fromkeys(TABLES, "match")
    # nothing moved: the device reads no rows to report, the server counts nothing again
    assert device.sync().inventory == dict.fromkeys(TABLES, "match")
    with device.replica.write() as conn:
        conn.execute('DELETE FROM "contact" WHERE contactid = ?', (ids["con1"].hex,))
    device._syncer.inventory.forget(["contact"])  # what a device that lost rows computes
    healed = device.sync()
    assert healed.inventory["contact"] == "mismatch"
    assert healed.rescoped == ["contact"]
    assert device.get("contact", ids["con1"]) is not None
    assert device.sync().inventory == dict.fromkeys(TABLES, "match")
    # a table with a change in the outbox is not reported
    device.update("workorder", ids["wo1"], {"name": "Pump, urgent"})
    world.down = True
    with pytest.raises(Exception):  # noqa: B017, PT011 - offline
        device.sync()
    world.down = False
    tables = device._syncer.inventory.held(TABLES)
    assert "workorder" not in tables
    assert set(tables) == {"account", "contact"}


def test_a_wiped_device_removes_everything_and_sends_its_receipt(
    world: World, admin: httpx.Client
) -> None:
    ids = seed(world)
    device = world.device("tech1")
    device.sync()
    device.update("workorder", ids["wo1"], {"name": "Never sent"})
    assert admin.post(f"/admin/devices/{device.device_id}/wipe").status_code == 200
    with pytest.raises(ServerError) as caught:
        device.sync()
    assert caught.value.code == "0x80040F01"
    assert device.pending_changes() == 0
    assert device.replica.handshake is None
    assert device.replica.sql == {}
    # the change was not uploaded
    assert world.platform.records.retrieve("workorder", ids["wo1"])["name"] == "Pump"
    one = admin.get(f"/admin/devices/{device.device_id}").json()
    assert one["wipe_pending"] is False
    assert one["receipts"][0]["kind"] == "wipe"
    assert one["receipts"][0]["counts"]["outbox"] == 1
    assert one["receipts"][0]["counts"]["tables"] == {"workorder": 1, "account": 1, "contact": 1}
    # the wipe is over: the user (who still has access) syncs again from nothing
    again = device.sync()
    assert again.downloaded["workorder"] == 1


def test_the_upgrade_adds_the_device_columns_to_an_older_database(platform: Platform) -> None:
    store = platform.store
    columns = ("inventoryon", "inventorystatus", "receipton", "wiperequestedon")
    with store.write() as conn:
        for column in (*columns, "wiperequestedby", "wipedon"):
            conn.exec_driver_sql(f"ALTER TABLE fs_device DROP COLUMN {column}")
        conn.exec_driver_sql("DELETE FROM fs_migration WHERE name = '0005_device_inventory'")
    assert store.upgrade() == ["0005_device_inventory"]
    assert store.upgrade() == []
    with store.read() as conn:
        have = {c["name"] for c in sa.inspect(conn).get_columns("fs_device")}
    assert set(columns) <= have


# -- the property: the server's expected inventory is the oracle scope's -------------------


def test_the_expected_inventory_is_the_oracle_scopes(world: World) -> None:
    """For random organisations and profiles, every user's expected inventory of every
    profile table (from the download's scope statement, counted in the database: an SQL
    aggregate on PostgreSQL, streamed on SQLite) equals the count and checksum of the oracle
    scope's rows."""
    from fieldsync.security.model import Privilege
    from fieldsync.types import EntityRef

    versions = iter(range(10, 10_000))
    r = world.platform.records

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
        plan = world.sync.plan(world.profile)
        for user in ("tech1", "tech2", "tech3"):
            oracle = world.scope(user)
            ctx = world.ctx(user)
            dl = Downloader(
                world.platform.records,
                plan,
                ctx,
                device="propertydevice",
                fingerprint=fingerprint(ctx),
                secret=world.sync.secret,
            )
            with world.platform.store.read() as conn:
                for table in TABLES:
                    expected = dl.inventory(conn, table)
                    rows = oracle[table]
                    assert expected == checksum(
                        (rid, row["versionnumber"]) for rid, row in rows.items()
                    ), (user, table)

    check()


def test_cli_device_report_and_wipe(world: World) -> None:
    import orjson
    from click.testing import CliRunner

    from fieldsync.cli import main

    if world.platform.store.dialect != "sqlite":
        pytest.skip("the CLI opens the database from its own settings: SQLite file here")
    ids = seed(world)
    device = world.device("tech1")
    device.sync()
    with device.replica.write() as conn:
        conn.execute('DELETE FROM "workorder" WHERE workorderid = ?', (ids["wo1"].hex,))
    report(device, held(device))
    url = str(world.platform.store.engine.url)
    runner = CliRunner()
    listed = runner.invoke(main, ["device-report", "--database", url, "--json", "--mismatch"])
    assert listed.exit_code == 1, listed.output  # a mismatch is listed
    rows = orjson.loads(listed.output)
    assert [r["device"] for r in rows] == [device.device_id]
    one = runner.invoke(main, ["device-report", "--database", url, "--device", device.device_id])
    assert "workorder" in one.output
    assert "mismatch" in one.output
    assert "re-scoped 1x" in one.output
    wiped = runner.invoke(main, ["device-wipe", device.device_id, "--database", url])
    assert wiped.exit_code == 0, wiped.output
    after = runner.invoke(main, ["device-report", "--database", url])
    assert "WIPE PENDING" in after.output
    missing = runner.invoke(main, ["device-wipe", "nosuchdevice", "--database", url])
    assert missing.exit_code == 2
    assert "no device" in missing.output


def test_the_portal_devices_page_shows_verdicts_receipts_and_wipes(
    world: World, admin: httpx.Client
) -> None:
    from portal_world import csrf_of, sign_in

    ids = seed(world)
    device, other = world.device("tech1"), world.device("tech2")
    device.sync()
    other.sync()
    with device.replica.write() as conn:
        conn.execute('DELETE FROM "account" WHERE accountid = ?', (ids["acc1"].hex,))
    report(device, held(device))
    lost = world.users["tech2"]
    world.allowed = lambda ctx: ctx.user_id != lost
    bridge = AsgiBridge(world.app)
    try:
        with httpx.Client(transport=bridge, base_url="http://testserver") as client:
            sign_in(client, "boss")
            page = client.get("/portal/devices").text
            assert "<strong>mismatch</strong>" in page
            assert "Still holding data after access ended" in page
            assert "may not take this app offline" in page  # tech2's device
            detail = client.get(f"/portal/devices/{device.device_id}").text
            assert '<th scope="row">account</th>' in detail
            assert "<strong>mismatch</strong>" in detail
            assert client.get("/portal/devices/nosuchdevice").status_code == 404
            # a wipe needs the form's CSRF token
            url = f"/portal/devices/{device.device_id}/wipe"
            assert client.post(url, data={}).status_code in (400, 403)
            done = client.post(url, data={"csrf": csrf_of(page)})
            assert done.status_code == 303
            assert "<strong>wipe pending</strong>" in client.get("/portal/devices").text
            # a technician sees only their device, with no wipe button and no stranded list
            client.cookies.clear()
            sign_in(client, "tech1")
            mine = client.get("/portal/devices").text
            assert device.device_id in mine
            assert other.device_id not in mine
            assert "Still holding data" not in mine
            assert "/wipe" not in mine
            refused = client.post(
                f"/portal/devices/{other.device_id}/wipe", data={"csrf": csrf_of(mine)}
            )
            assert refused.status_code == 403
    finally:
        bridge.close()
        bridge.loop.close()
