"""Small files in batches (``POST /sync/v1/files/batch`` and ``/sync/v1/files/read``) and
thumbnails made after the upload: the same checks as one file at a time, every file
answered on its own, nothing visible before its batch commits, and a thumbnail asked for
before the worker made it made on demand."""

from __future__ import annotations

import hashlib
import io
import os
import time
import uuid
from typing import Any

import httpx
import orjson
import pytest
import sqlalchemy as sa
from PIL import Image

from fieldsync.client import Device
from fieldsync.files.batch import MEDIA_TYPE
from fieldsync.files.service import Files
from fieldsync.store.catalog import fs_file, fs_migration
from fieldsync.sync.files import _sign
from sync_world import PASSWORD, World
from test_files import _client, blobs, file_rows, png, work_orders
from test_files import blob_store as blob_store  # the fixtures, as test_files has them
from test_files import s3 as s3
from test_files import world as world


def batch(files: list[tuple[dict[str, Any], bytes]]) -> bytes:
    listed = [meta for meta, _ in files]
    return b"".join([orjson.dumps({"files": listed}), b"\n", *(data for _, data in files)])


def entry(data: bytes, column: str = "sitephoto", **extra: Any) -> dict[str, Any]:
    return {
        "file": str(uuid.uuid4()),
        "table": "workorder",
        "column": column,
        "name": "photo.png",
        "mimetype": "image/png",
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        **extra,
    }


def _device(world: World, user: str, transport: httpx.BaseTransport, name: str = "") -> Device:
    return Device.login(
        world.tmp / (name or user),
        server="http://testserver",
        username=user,
        password=PASSWORD,
        app="fieldservice",
        transport=transport,
    )


def post_batch(http: httpx.Client, body: bytes) -> httpx.Response:
    return http.post("/sync/v1/files/batch", content=body, headers={"Content-Type": MEDIA_TYPE})


def files_of(world: World) -> Files:
    found: Files = world.app.state.files
    return found


def test_a_batch_stores_each_file_on_its_own_merits(world: World) -> None:
    http = _client(world, "tech1")
    good, other = png(1), png(2)
    text = b"not an image at all"
    damaged = entry(good)
    report = os.urandom(5000)
    body = batch(
        [
            (entry(good), good),
            (entry(text), text),  # refused for good: an image column takes images
            ({**damaged, "sha256": hashlib.sha256(b"x").hexdigest()}, good),  # send again
            (entry(report, "servicereport", name="r.bin"), report),
            (entry(other, size=len(other)), other),
        ]
    )
    answer = post_batch(http, body)
    assert answer.status_code == 200
    results = answer.json()["files"]
    assert [r["status"] for r in results] == ["stored", "refused", "retry", "stored", "stored"]
    assert results[1]["error"]["status"] == 400
    assert "image" in results[1]["error"]["message"]
    assert "sha256" in results[2]["error"]["message"]
    stored = [uuid.UUID(r["id"]) for r in results if r["status"] == "stored"]
    rows = file_rows(world)
    assert set(rows) == set(stored)
    assert rows[stored[1]].sha256 == hashlib.sha256(report).hexdigest()
    assert results[3]["file"]["thumbnail"] is None  # a file column's file has none
    # the same batch again (its answer was lost): the same answers, nothing stored twice
    again = post_batch(http, body).json()["files"]
    assert [r["status"] for r in again] == ["stored", "refused", "retry", "stored", "stored"]
    assert set(file_rows(world)) == set(stored)


def test_a_broken_batch_changes_nothing(world: World) -> None:
    http = _client(world, "tech1")
    data = png(3)
    whole = batch([(entry(data), data)])
    for body, words in [
        (whole[:-1], "bytes between them"),  # a byte short
        (whole + b"!", "bytes between them"),
        (b"no json here", "one line of JSON"),
        (b"[1, 2]\n", "'files'"),
        (b"{not json\n", "not JSON"),
        (batch([({**entry(data), "size": -1}, b"")]), "'size'"),
    ]:
        r = post_batch(http, body)
        assert r.status_code == 400, words
        assert words in r.json()["error"]["message"]
    assert file_rows(world) == {}
    assert blobs(world) == set()
    too_many = batch([(entry(b"", "servicereport"), b"")] * 501)
    assert post_batch(http, too_many).status_code == 400
    no_token = httpx.Client(transport=world.transport(), base_url="http://testserver")
    assert post_batch(no_token, whole).status_code == 401
    assert file_rows(world) == {}


def test_a_batch_checks_privileges_limits_and_file_ids(world: World) -> None:
    data = png(4)
    # tech1 may neither create nor change business units: no file for their columns
    world.platform.store.add_column("businessunit", _image_column())
    http = _client(world, "tech1")
    mine = entry(data)
    results = post_batch(
        http,
        batch(
            [
                ({**entry(data), "table": "businessunit", "column": "logo"}, data),
                ({**entry(data), "column": "name"}, data),  # not a file column
                ({**entry(data), "file": "not-a-guid"}, data),
                (mine, data),
                (mine, data),  # the same id twice
            ]
        ),
    ).json()["files"]
    assert [r["status"] for r in results] == ["refused"] * 3 + ["stored", "refused"]
    assert results[0]["error"]["status"] == 403
    # another user's file id is taken, whoever asks
    theirs = post_batch(_client(world, "tech2"), batch([(mine, data)])).json()["files"]
    assert theirs[0]["status"] == "refused"
    assert "taken" in theirs[0]["error"]["message"]
    big = os.urandom(40 * 1024)
    files_of(world).limits = files_of(world).limits.__class__(max_bytes=32 * 1024)
    over = post_batch(http, batch([(entry(big, "servicereport"), big)])).json()["files"]
    assert over[0]["error"]["status"] == 413


def _image_column() -> Any:
    from fieldsync.schema.model import Column, ColumnType

    return Column("logo", ColumnType.IMAGE)


def test_a_device_sends_small_files_in_batches_and_fetches_them_in_batches(
    world: World,
) -> None:
    orders = work_orders(world, 6)
    seen: list[httpx.Request] = []
    inner = world.transport()

    class Watch(httpx.BaseTransport):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            seen.append(request)
            return inner.handle_request(request)

    tech1 = _device(world, "tech1", Watch())
    tech1.sync()
    photos = {wo: png(i + 10) for i, wo in enumerate(orders)}
    for wo, photo in photos.items():
        tech1.attach("workorder", wo, "sitephoto", photo, "p.png")
    tech1.sync()
    assert tech1.pending_changes() == 0
    posts = [r.url.path for r in seen if r.url.path.startswith("/sync/v1/files")]
    assert posts.count("/sync/v1/files/batch") == 1
    assert "/sync/v1/files/uploads" not in posts
    for wo in orders:
        assert world.platform.records.retrieve("workorder", wo)["sitephoto"] is not None
    files_of(world).thumbnails.drain()
    rows = file_rows(world)
    assert all(r.isimage and r.thumbnail for r in rows.values())
    # another device fetches every photo and thumbnail in one read (and no GET per file)
    tablet = world.device("tech1", "tablet")
    report = tablet.sync()
    assert report.files is not None
    assert (report.files.downloaded, report.files.failed) == (12, 0)
    for wo, photo in photos.items():
        assert tablet.file_path("workorder", wo, "sitephoto").read_bytes() == photo  # type: ignore[union-attr]
        thumb = tablet.file_path("workorder", wo, "sitephoto", thumbnail=True)
        assert thumb is not None
        with Image.open(thumb) as small:
            assert max(small.size) <= 144
    # the uploader learned the thumbnails made after its upload from the grant of the same
    # sync, and fetched them
    assert all(tech1.file_path("workorder", wo, "sitephoto", thumbnail=True) for wo in orders)
    later = tech1.sync()
    assert later.files is not None
    assert later.files.downloaded == 0


def test_a_thumbnail_asked_for_before_it_is_made_is_made_then(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = files_of(world)
    monkeypatch.setattr(files.thumbnails, "wake", lambda: None)  # as if the worker died
    [wo1, wo2, wo3] = work_orders(world, 3)
    tech1 = world.device("tech1")
    tech1.sync()
    f1 = tech1.attach("workorder", wo1, "sitephoto", png(21), "a.png")
    f2 = tech1.attach("workorder", wo2, "sitephoto", png(22), "b.png")
    f3 = tech1.attach("workorder", wo3, "sitephoto", png(23), "c.png")
    tech1.sync(files=False)  # uploads, fetches nothing (whose grant would make them)
    rows = file_rows(world)
    assert [rows[f].thumbnail for f in (f1, f2, f3)] == [None, None, None]
    assert all(rows[f].isimage for f in (f1, f2, f3))
    http = _client(world, "tech1")
    # a thumbnail download makes it
    grant = http.post(
        "/sync/v1/files/grants",
        json={"device": tech1.device_id, "app": "fieldservice", "files": [str(f1)]},
    ).json()
    [facts] = grant["files"]
    assert facts["thumbnail"] is not None  # the grant made it: facts are never "not yet"
    thumb = http.get(
        f"/sync/v1/files/{f2}",
        params={"ticket": _ticket(world, "tech1", f2), "size": "thumbnail"},
    )
    assert thumb.status_code == 200
    assert thumb.headers["content-type"] == "image/jpeg"
    assert file_rows(world)[f2].thumbnail == hashlib.sha256(thumb.content).hexdigest()
    # the Web API's image read makes it too
    web = http.get(f"/api/data/v9.2/workorders({wo3})/sitephoto/$value")
    assert web.status_code == 200
    assert file_rows(world)[f3].thumbnail == hashlib.sha256(web.content).hexdigest()
    assert files.thumbnails.drain() == 0  # nothing left due


def _ticket(world: World, user: str, fid: uuid.UUID) -> str:
    """A ticket for ``fid`` signed as a grant signs it, without the grant making its
    thumbnail (as a grant made before the thumbnail was due would have)."""
    expires = int(time.time()) + 60
    return _sign(world.app.state.sync.secret, world.users[user], "fieldservice", fid, expires)


def test_an_image_that_does_not_decode_loses_its_image_mark(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = files_of(world)
    monkeypatch.setattr(files.thumbnails, "wake", lambda: None)  # the row change goes first
    [wo] = work_orders(world, 1)
    out = io.BytesIO()
    Image.frombytes("RGB", (200, 200), os.urandom(200 * 200 * 3)).save(out, "JPEG")
    broken = out.getvalue()[:4000]  # a JPEG's header, then a tenth of its picture
    tech1 = world.device("tech1")
    tech1.sync()
    fid = tech1.attach("workorder", wo, "sitephoto", broken, "broken.jpg")
    tech1.sync(files=False)
    assert world.platform.records.retrieve("workorder", wo)["sitephoto"] == fid
    assert files.thumbnails.drain() == 0
    row = file_rows(world)[fid]
    assert (row.isimage, row.thumbnail) == (False, None)
    web = _client(world, "tech1").get(f"/api/data/v9.2/workorders({wo})/sitephoto/$value")
    assert web.status_code == 404
    # the grant says so too: no thumbnail
    grant = _client(world, "tech1").post(
        "/sync/v1/files/grants",
        json={"device": tech1.device_id, "app": "fieldservice", "files": [str(fid)]},
    )
    assert grant.json()["files"][0]["thumbnail"] is None


def test_a_batch_read_gives_only_files_the_user_can_read(world: World) -> None:
    [wo] = work_orders(world, 1)
    tech1 = world.device("tech1")
    tech1.sync()
    fid = tech1.attach("workorder", wo, "servicereport", b"private bytes", "p.txt")
    tech1.sync()
    ask = {"device": tech1.device_id, "app": "fieldservice", "files": [{"id": str(fid)}]}
    mine = _client(world, "tech1").post("/sync/v1/files/read", json=ask)
    assert mine.status_code == 200
    head, _, body = mine.content.partition(b"\n")
    [item] = orjson.loads(head)["files"]
    assert (item["status"], body) == ("sent", b"private bytes")
    # tech3 cannot read the row: with its own device, the file is missing; with tech1's, 403
    tech3 = world.device("tech3")
    theirs = _client(world, "tech3")
    denied = theirs.post("/sync/v1/files/read", json={**ask, "device": tech3.device_id})
    head, _, body = denied.content.partition(b"\n")
    assert orjson.loads(head)["files"][0]["status"] == "missing"
    assert body == b""
    assert theirs.post("/sync/v1/files/read", json=ask).status_code in (403, 404)
    bad = _client(world, "tech1").post(
        "/sync/v1/files/read", json={**ask, "files": [{"id": str(fid), "size": "huge"}]}
    )
    assert bad.status_code == 400


def test_a_device_falls_back_to_one_file_at_a_time_on_an_older_server(world: World) -> None:
    [wo] = work_orders(world, 1)
    inner = world.transport()

    class Older(httpx.BaseTransport):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            if request.url.path in ("/sync/v1/files/batch", "/sync/v1/files/read"):
                return httpx.Response(405, json={"error": {"code": "x", "message": "no"}})
            return inner.handle_request(request)

    device = _device(world, "tech1", Older(), "old")
    device.sync()
    photo = png(31)
    fid = device.attach("workorder", wo, "sitephoto", photo, "p.png")
    device.sync()
    assert world.platform.records.retrieve("workorder", wo)["sitephoto"] == fid
    assert file_rows(world)[fid].thumbnail is not None  # made at the upload's last chunk
    other = _device(world, "tech1", Older(), "old2")
    report = other.sync()
    assert report.files is not None
    assert report.files.downloaded == 2
    assert other.file_path("workorder", wo, "sitephoto").read_bytes() == photo  # type: ignore[union-attr]


def test_the_upgrade_marks_images_of_databases_made_before(world: World) -> None:
    [wo] = work_orders(world, 1)
    tech1 = world.device("tech1")
    tech1.sync()
    photo = tech1.attach("workorder", wo, "sitephoto", png(41), "p.png")
    tech1.sync()
    store = world.platform.store
    with store.write() as conn:  # as a database made before the migration
        conn.execute(fs_file.update().values(isimage=None))
        conn.execute(fs_migration.delete().where(fs_migration.c.name == "0006_file_batches"))
    assert "0006_file_batches" in store.upgrade()
    with store.read() as conn:
        marks = dict(conn.execute(sa.select(fs_file.c.fileid, fs_file.c.isimage)).all())
        indexes = {i["name"] for i in sa.inspect(conn).get_indexes("fs_file")}
    assert marks == {photo: True}
    assert "ix_fs_file_thumbnail_due" in indexes
