"""Who may put a file in a row, and who may read it: the attack of issue 16 (a technician
writes another user's file id into her own row, then reads the bytes) through every write
shape, over HTTP, on SQLite and PostgreSQL; the flows that must keep working; and tickets
re-checked at download."""

from __future__ import annotations

import hashlib
import io
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from PIL import Image

from fieldsync.errors import RecordNotFound
from fieldsync.offline.snapshot import Distribution, ItemSnapshot
from fieldsync.platform import Platform
from fieldsync.schema.model import Column, ColumnType, define_table
from fieldsync.store.catalog import fs_file, fs_migration
from fieldsync.types import EntityRef
from sync_world import World, field_profile

API = "/api/data/v9.2/"


@pytest.fixture
def world(platform: Platform, tmp_path: Path) -> World:
    w = World(platform, tmp_path)
    w.profile = field_profile(
        workorder=ItemSnapshot(
            "workorder",
            Distribution.OTHER,
            owned_by_me=True,
            file_columns=("servicereport",),
            image_columns=("sitephoto",),
        )
    )
    return w


def client(world: World, user: str) -> httpx.Client:
    _, secret = world.platform.auth.create_api_token(world.users[user], "files")
    return httpx.Client(
        transport=world.transport(),
        base_url="http://testserver",
        headers={"Authorization": f"Bearer {secret}"},
    )


def png(seed: int = 1) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (200, 200), (seed * 40 % 256, 90, 160)).save(out, "PNG")
    return out.getvalue()


def upload(http: httpx.Client, column: str, data: bytes) -> uuid.UUID:
    """A finished upload of the caller's, attached to no row yet."""
    begin = {
        "table": "workorder",
        "column": column,
        "name": "f.png" if column == "sitephoto" else "f.bin",
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    state = http.post("/sync/v1/files/uploads", json=begin).json()
    done = http.put(
        f"/sync/v1/files/uploads/{state['upload']}",
        content=data,
        headers={"Content-Range": f"bytes 0-{len(data) - 1}/{len(data)}"},
    ).json()
    assert done["complete"], done
    return uuid.UUID(done["file"]["id"])


class Org:
    """tech1 (North) is the attacker; tech2 shares her business unit (she reads his rows);
    tech3 (South) is out of her reach."""

    def __init__(self, world: World) -> None:
        self.world = world
        r = world.platform.records
        tech1 = EntityRef("systemuser", world.users["tech1"])
        self.account = r.create("account", {"name": "Contoso", "ownerid": tech1})
        self.orders = {
            user: r.create(
                "workorder",
                {
                    "name": f"{user}'s job",
                    "serviceaccountid": self.account,
                    "ownerid": EntityRef("systemuser", world.users[user]),
                },
            )
            for user in ("tech1", "tech2", "tech3")
        }
        self.http = {user: client(world, user) for user in ("tech1", "tech2", "tech3")}

    def attached(self, user: str, column: str, data: bytes) -> uuid.UUID:
        """A file ``user`` uploaded and put in their own work order."""
        fid = upload(self.http[user], column, data)
        r = self.http[user].patch(API + f"workorders({self.orders[user]})", json={column: str(fid)})
        assert r.status_code == 204, r.text
        return fid

    def held(self, user: str, column: str) -> Any:
        return self.world.platform.records.retrieve("workorder", self.orders[user])[column]


def _json(r: httpx.Response) -> tuple[int, str]:
    return r.status_code, r.json()["error"]["message"]


def write_patch(org: Org, column: str, fid: str) -> tuple[int, str]:
    r = org.http["tech1"].patch(API + f"workorders({org.orders['tech1']})", json={column: fid})
    return _json(r)


def write_create(org: Org, column: str, fid: str) -> tuple[int, str]:
    body = {
        "name": "new",
        "serviceaccountid@odata.bind": f"/accounts({org.account})",
        column: fid,
    }
    return _json(org.http["tech1"].post(API + "workorders", json=body))


def write_upsert_multiple(org: Org, column: str, fid: str) -> tuple[int, str]:
    targets = [
        {"workorderid": str(org.orders["tech1"]), column: fid},
        {
            "workorderid": str(uuid.uuid4()),
            "name": "upserted",
            "serviceaccountid@odata.bind": f"/accounts({org.account})",
            column: fid,
        },
    ]
    r = org.http["tech1"].post(
        API + "workorders/Microsoft.Dynamics.CRM.UpsertMultiple", json={"Targets": targets}
    )
    return _json(r)


def write_create_multiple(org: Org, column: str, fid: str) -> tuple[int, str]:
    target = {
        "name": "many",
        "serviceaccountid@odata.bind": f"/accounts({org.account})",
        column: fid,
    }
    r = org.http["tech1"].post(
        API + "workorders/Microsoft.Dynamics.CRM.CreateMultiple", json={"Targets": [target]}
    )
    return _json(r)


def write_update_multiple(org: Org, column: str, fid: str) -> tuple[int, str]:
    target = {"workorderid": str(org.orders["tech1"]), column: fid}
    r = org.http["tech1"].post(
        API + "workorders/Microsoft.Dynamics.CRM.UpdateMultiple", json={"Targets": [target]}
    )
    return _json(r)


def write_batch(org: Org, column: str, fid: str) -> tuple[int, str]:
    boundary, changeset = "batch_f", "changeset_f"
    part = (
        f"--{changeset}\r\nContent-Type: application/http\r\n"
        "Content-Transfer-Encoding: binary\r\nContent-ID: {n}\r\n\r\n"
        "{method} https://test/api/data/v9.2/{path} HTTP/1.1\r\n"
        "Content-Type: application/json\r\n\r\n{body}\r\n"
    )
    body = (
        f"--{boundary}\r\nContent-Type: multipart/mixed; boundary={changeset}\r\n\r\n"
        + part.format(
            n=1,
            method="PATCH",
            path=f"workorders({org.orders['tech1']})",
            body='{"instructions": "changed"}',
        )
        + part.format(
            n=2,
            method="PATCH",
            path=f"workorders({org.orders['tech1']})",
            body=f'{{"{column}": "{fid}"}}',
        )
        + f"--{changeset}--\r\n--{boundary}--\r\n"
    )
    r = org.http["tech1"].post(
        API + "$batch",
        content=body.encode(),
        headers={"Content-Type": f'multipart/mixed; boundary="{boundary}"'},
    )
    assert r.status_code == 200, r.text
    assert "HTTP/1.1 204" not in r.text  # the change set is all or nothing
    status = int(r.text.split("HTTP/1.1 ", 1)[1][:3])
    message = r.text.split('"message":"', 1)[1].split('"', 1)[0]
    return status, message


def _sync(org: Org, user: str, changes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    http = org.http[user]
    device = f"{user}-attack-device"
    hs = http.post("/sync/v1/handshake", json={"device": device, "app": "fieldservice"})
    assert hs.status_code == 200, hs.text
    r = http.post(
        "/sync/v1/upload", json={"device": device, "app": "fieldservice", "changes": changes}
    )
    assert r.status_code == 200, r.text
    results: list[dict[str, Any]] = r.json()["results"]
    return results


def write_sync_update(org: Org, column: str, fid: str) -> tuple[int, str]:
    change = {
        "id": str(uuid.uuid4()),
        "table": "workorder",
        "operation": "update",
        "record": str(org.orders["tech1"]),
        "values": {"instructions": "from the device", column: fid},
    }
    ok = {**change, "id": str(uuid.uuid4()), "values": {"instructions": "fine"}}
    [first, result, last] = _sync(org, "tech1", [ok, change, ok | {"id": str(uuid.uuid4())}])
    # one bad change is one sync error: the others of the batch apply
    assert (first["status"], last["status"]) == ("applied", "applied")
    assert result["status"] == "rejected"
    assert result["row"][column] is None  # the device is told to revert
    assert _sync_errors(org, change["id"]) == 1
    return 400, result["error"]["message"]


def write_sync_create(org: Org, column: str, fid: str) -> tuple[int, str]:
    record = str(uuid.uuid4())
    change = {
        "id": str(uuid.uuid4()),
        "table": "workorder",
        "operation": "create",
        "record": record,
        "values": {"name": "synced", "serviceaccountid": str(org.account), column: fid},
    }
    [result] = _sync(org, "tech1", [change])
    assert result["status"] == "rejected"
    assert _sync_errors(org, change["id"]) == 1
    with pytest.raises(RecordNotFound):
        org.world.platform.records.retrieve("workorder", record)
    return 400, result["error"]["message"]


def _sync_errors(org: Org, change_id: str) -> int:
    rows = org.world.platform.records.retrieve_multiple(
        "syncerror", where={"clientchangeid": uuid.UUID(change_id)}
    )
    return len(rows)


WRITES: dict[str, Callable[[Org, str, str], tuple[int, str]]] = {
    "patch": write_patch,
    "create": write_create,
    "create-multiple": write_create_multiple,
    "update-multiple": write_update_multiple,
    "upsert-multiple": write_upsert_multiple,
    "batch-change-set": write_batch,
    "sync-update": write_sync_update,
    "sync-create": write_sync_create,
}


@pytest.mark.parametrize("shape", list(WRITES))
@pytest.mark.parametrize("column", ["servicereport", "sitephoto"])
def test_a_foreign_file_id_is_refused_like_a_missing_one(
    world: World, shape: str, column: str
) -> None:
    org = Org(world)
    data = png(3) if column == "sitephoto" else b"tech3's private report"
    theirs = org.attached("tech3", column, data)  # in a row tech1 cannot read
    loose = upload(org.http["tech2"], column, png(4) if column == "sitephoto" else b"tech2's")
    missing = uuid.uuid4()
    write = WRITES[shape]
    answers = {fid: write(org, column, str(fid)) for fid in (theirs, loose, missing)}
    statuses = {status for status, _ in answers.values()}
    assert statuses == {400}, answers
    # the same words, whether the file exists or not: no existence oracle
    assert {m.replace(str(fid), "<id>") for fid, (_, m) in answers.items()} == {
        f"workorder.{column}: file <id> does not exist"
    }
    assert org.held("tech1", column) is None
    with world.platform.store.read() as conn:
        attached = conn.execute(
            sa.select(fs_file.c.attachedon).where(fs_file.c.fileid == loose)
        ).scalar_one()
    assert attached is None  # a refused write attaches nothing
    # and nothing opens the bytes for tech1
    value = org.http["tech1"].get(API + f"workorders({org.orders['tech1']})/{column}/$value")
    assert value.status_code == 404
    org.http["tech1"].post(
        "/sync/v1/handshake", json={"device": "tech1-phone", "app": "fieldservice"}
    )
    grant = (
        org.http["tech1"]
        .post(
            "/sync/v1/files/grants",
            json={
                "device": "tech1-phone",
                "app": "fieldservice",
                "files": [str(theirs), str(loose)],
            },
        )
        .json()
    )
    assert grant["files"] == []


def test_own_uploads_and_readable_references_still_work(world: World) -> None:
    org = Org(world)
    tech1, tech2 = org.http["tech1"], org.http["tech2"]
    # a fresh upload of her own: once
    wo1 = org.orders["tech1"]
    mine = upload(tech1, "servicereport", b"my report")
    r = tech1.patch(API + f"workorders({wo1})", json={"servicereport": str(mine)})
    assert r.status_code == 204, r.text
    assert org.held("tech1", "servicereport") == mine
    # a file column is no navigation property: it cannot be bound
    r = tech1.patch(
        API + f"workorders({wo1})", json={"servicereport@odata.bind": f"/workorders({wo1})"}
    )
    assert r.status_code == 400
    # keeping the value is always fine
    assert (
        tech1.patch(API + f"workorders({wo1})", json={"servicereport": str(mine)}).status_code
        == 204
    )
    # a file tech2 put in a row tech1 reads may be copied into her row (same column type)
    his = org.attached("tech2", "servicereport", b"tech2's report")
    r = tech1.patch(API + f"workorders({wo1})", json={"servicereport": str(his)})
    assert r.status_code == 204, r.text
    got = tech1.get(API + f"workorders({wo1})/servicereport/$value")
    assert got.content == b"tech2's report"
    # …but not into an image column: a file is not an image
    status, message = _json(tech1.patch(API + f"workorders({wo1})", json={"sitephoto": str(his)}))
    assert (status, message) == (400, f"workorder.sitephoto: file {his} does not exist")
    # an image from a readable row goes into an image column
    photo = org.attached("tech2", "sitephoto", png(5))
    r = tech1.patch(API + f"workorders({wo1})", json={"sitephoto": str(photo)})
    assert r.status_code == 204, r.text
    # her own fresh upload of a non-image cannot become an image
    text = upload(tech1, "servicereport", b"not a picture")
    status, message = _json(tech1.patch(API + f"workorders({wo1})", json={"sitephoto": str(text)}))
    assert (status, message) == (400, f"workorder.sitephoto: file {text} is not an image")
    # once attached, a file is shared by reading rows, not by having uploaded it: when no
    # readable row holds it any more, not even its uploader may put it back
    assert tech1.patch(API + f"workorders({wo1})", json={"servicereport": None}).status_code == 204
    status, _ = _json(tech1.patch(API + f"workorders({wo1})", json={"servicereport": str(mine)}))
    assert status == 400
    # tech2 may copy the file tech1's row holds (he reads it); tech3 (South) may not
    held = org.held("tech1", "sitephoto")
    r = tech2.patch(API + f"workorders({org.orders['tech2']})", json={"sitephoto": str(held)})
    assert r.status_code == 204, r.text
    status, _ = _json(
        org.http["tech3"].patch(
            API + f"workorders({org.orders['tech3']})", json={"sitephoto": str(held)}
        )
    )
    assert status == 400


def test_a_device_attaches_its_own_files_and_copies_readable_ones(world: World) -> None:
    org = Org(world)
    device = world.device("tech1")
    device.sync()
    wo1 = org.orders["tech1"]
    fid = device.attach("workorder", wo1, "servicereport", b"from the field", "f.txt")
    device.sync()
    assert org.held("tech1", "servicereport") == fid
    # the same file in a second row of hers, through the device's outbox
    second = world.platform.records.create(
        "workorder",
        {
            "name": "second",
            "serviceaccountid": org.account,
            "ownerid": EntityRef("systemuser", world.users["tech1"]),
        },
    )
    device.sync()
    device.update("workorder", second, {"servicereport": str(fid)})
    report = device.sync()
    assert report.rejected == 0
    assert world.platform.records.retrieve("workorder", second)["servicereport"] == fid


def test_a_ticket_stops_opening_a_file_when_its_row_leaves_the_user(world: World) -> None:
    org = Org(world)
    fid = org.attached("tech1", "servicereport", b"soon not hers")
    tech1 = org.http["tech1"]
    tech1.post("/sync/v1/handshake", json={"device": "tech1-phone", "app": "fieldservice"})
    [facts] = tech1.post(
        "/sync/v1/files/grants",
        json={"device": "tech1-phone", "app": "fieldservice", "files": [str(fid)]},
    ).json()["files"]
    url = f"/sync/v1/files/{fid}"
    assert tech1.get(url, params={"ticket": facts["ticket"]}).content == b"soon not hers"
    # the row goes to tech3, in another business unit: the ticket is refused at once
    world.platform.records.assign(
        "workorder", org.orders["tech1"], EntityRef("systemuser", world.users["tech3"])
    )
    r = tech1.get(url, params={"ticket": facts["ticket"]})
    assert r.status_code == 403
    assert "no row you can read holds it" in r.json()["error"]["message"]
    # and a tampered app in the ticket does not get round the signature
    expires, _, mac = facts["ticket"].split(".")
    r = tech1.get(url, params={"ticket": f"{expires}.b3RoZXI.{mac}"})
    assert r.status_code == 403
    # access lost to the app itself: refused too
    world.platform.records.assign(
        "workorder", org.orders["tech1"], EntityRef("systemuser", world.users["tech1"])
    )
    assert tech1.get(url, params={"ticket": facts["ticket"]}).status_code == 200
    world.allowed = lambda ctx: ctx.user_id != world.users["tech1"]
    assert tech1.get(url, params={"ticket": facts["ticket"]}).status_code == 403


def test_a_device_that_loses_a_row_mid_download_goes_on(world: World) -> None:
    org = Org(world)
    wo1 = org.orders["tech1"]
    org.attached("tech1", "servicereport", b"granted, then gone")
    keep = org.attached("tech2", "servicereport", b"tech2 keeps this")
    second = world.platform.records.create(
        "workorder",
        {
            "name": "second",
            "serviceaccountid": org.account,
            "ownerid": EntityRef("systemuser", world.users["tech1"]),
            "servicereport": keep,
        },
    )
    inner = world.transport()
    records = world.platform.records

    class LoseAfterGrant(httpx.BaseTransport):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            response = inner.handle_request(request)
            if request.url.path.endswith("/files/grants"):
                records.assign("workorder", wo1, EntityRef("systemuser", world.users["tech3"]))
            return response

    from fieldsync.client import Device
    from sync_world import PASSWORD

    device = Device.login(
        world.tmp / "losing",
        server="http://testserver",
        username="tech1",
        password=PASSWORD,
        app="fieldservice",
        transport=LoseAfterGrant(),
    )
    report = device.sync()
    assert report.files is not None
    assert (report.files.downloaded, report.files.failed) == (1, 0)
    path = device.file_path("workorder", second, "servicereport")
    assert path is not None
    assert path.read_bytes() == b"tech2 keeps this"


def test_the_upgrade_marks_held_files_attached_and_indexes_file_columns(world: World) -> None:
    org = Org(world)
    held = org.attached("tech1", "servicereport", b"held")
    loose = upload(org.http["tech1"], "servicereport", b"loose")
    store = world.platform.store
    with store.write() as conn:  # as a database made before the migration
        conn.execute(fs_file.update().values(attachedon=None))
        conn.execute(fs_migration.delete().where(fs_migration.c.name == "0004_file_references"))
        conn.exec_driver_sql("DROP INDEX ix_workorder_servicereport")
    assert "0004_file_references" in store.upgrade()
    with store.read() as conn:
        attached = dict(conn.execute(sa.select(fs_file.c.fileid, fs_file.c.attachedon)).all())
        indexes = {i["name"] for i in sa.inspect(conn).get_indexes("workorder")}
    assert attached[held] is not None
    assert attached[loose] is None
    assert {"ix_workorder_servicereport", "ix_workorder_sitephoto"} <= indexes


def test_file_columns_of_custom_tables_are_indexed_and_still_drop(platform: Platform) -> None:
    store = platform.store
    store.create_table(
        define_table("new_doc", columns=[Column("new_scan", ColumnType.FILE, display_name="Scan")])
    )
    store.add_column("new_doc", Column("new_photo", ColumnType.IMAGE, display_name="Photo"))

    def indexes() -> set[str]:
        with store.read() as conn:
            return {str(i["name"]) for i in sa.inspect(conn).get_indexes("new_doc")}

    assert {"ix_new_doc_new_scan", "ix_new_doc_new_photo"} <= indexes()
    store.drop_column("new_doc", "new_scan")
    store.drop_column("new_doc", "new_photo")
    assert not {"ix_new_doc_new_scan", "ix_new_doc_new_photo"} & indexes()
    assert {"new_scan", "new_photo"}.isdisjoint(store.schema.table("new_doc").columns)
