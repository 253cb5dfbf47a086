"""Files and images: content-addressed blobs, uploads and downloads that break and resume,
verification, authorization, scope and orphans; on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from PIL import Image

import fieldsync.client.files as device_files
import s3_server
from fieldsync.client import Offline
from fieldsync.errors import BadRequest, PayloadTooLarge, PluginError
from fieldsync.files.blobs import BlobStore, LocalBlobs, S3Blobs, open_blobs
from fieldsync.files.service import FileLimits, Files
from fieldsync.offline.snapshot import Distribution, ItemSnapshot
from fieldsync.platform import Platform
from fieldsync.records.plugins import PluginContext
from fieldsync.store.catalog import fs_file, fs_upload
from fieldsync.types import EntityRef
from sync_world import World, field_profile

CHUNK = 64 * 1024


@pytest.fixture(scope="session")
def s3() -> Iterator[s3_server.S3Server]:
    """An S3-compatible server (``rclone serve s3``) for the session, on a free port."""
    problem = s3_server.problem()
    if problem is not None:
        if s3_server.REQUIRED:
            pytest.fail(f"{problem} (FIELDSYNC_REQUIRE_S3=1)")
        pytest.skip(problem)
    with s3_server.S3Server.start() as server:
        yield server


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def blob_store(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> BlobStore:
    """The blob store of the server: the data directory's, or a bucket of its own on the S3
    server, opened from settings (``s3://bucket/prefix``, the endpoint, credentials from the
    environment) as ``fieldsync serve`` opens it."""
    if request.param == "local":
        return open_blobs("", data_dir=str(tmp_path / "server"))
    server: s3_server.S3Server = request.getfixturevalue("s3")
    for name, value in server.environment().items():
        monkeypatch.setenv(name, value)
    found = open_blobs(f"s3://{server.bucket()}/files", data_dir="", endpoint=server.endpoint)
    assert isinstance(found, S3Blobs)
    return found


@pytest.fixture
def world(
    platform: Platform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, blob_store: BlobStore
) -> World:
    w = World(platform, tmp_path)
    w.app.state.files.blobs = blob_store
    w.profile = field_profile(
        workorder=ItemSnapshot(
            "workorder",
            Distribution.OTHER,
            owned_by_me=True,
            file_columns=("servicereport",),
            image_columns=("sitephoto",),
        )
    )
    files: Files = w.app.state.files
    files.limits = FileLimits(chunk_bytes=CHUNK)  # small chunks keep the tests small
    monkeypatch.setattr(device_files, "SMALL", CHUNK)  # larger files go in chunks
    return w


def work_orders(world: World, n: int = 2, owner: str = "tech1") -> list[uuid.UUID]:
    r = world.platform.records
    acc = r.create("account", {"name": "Contoso"})
    user = EntityRef("systemuser", world.users[owner])
    return [
        r.create("workorder", {"name": f"Job {i}", "serviceaccountid": acc, "ownerid": user})
        for i in range(n)
    ]


def png(seed: int = 1, size: int = 300) -> bytes:
    image = Image.new("RGB", (size, size), (seed * 40 % 256, 90, 160))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def blobs(world: World) -> set[str]:
    return {d for d, _ in world.app.state.files.blobs.blobs()}


def file_rows(world: World) -> dict[uuid.UUID, Any]:
    with world.platform.store.read() as conn:
        return {r.fileid: r for r in conn.execute(sa.select(fs_file))}


class Faulty(httpx.BaseTransport):
    """The world's transport, with faults: a file download cut after ``cut_after`` bytes
    (once), or the network down from the ``down_at``-th chunk upload on."""

    def __init__(self, world: World) -> None:
        self.inner = world.transport()
        self.cut_after: int | None = None
        self.down_at: int | None = None
        self.puts = 0
        self.seen: list[httpx.Request] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        if request.method == "PUT" and "/files/uploads/" in request.url.path:
            self.puts += 1
            if self.down_at is not None and self.puts >= self.down_at:
                raise httpx.ConnectError("the network is down", request=request)
        response = self.inner.handle_request(request)
        if self.cut_after is not None and request.method == "GET" and "/files/" in str(request.url):
            keep, self.cut_after = response.content[: self.cut_after], None
            return httpx.Response(response.status_code, headers=response.headers, stream=_Cut(keep))
        return response


class _Cut(httpx.SyncByteStream):
    def __init__(self, data: bytes) -> None:
        self.data = data

    def __iter__(self) -> Iterator[bytes]:
        yield self.data
        raise httpx.ReadError("connection reset mid-file")


def faulty_device(world: World, user: str, name: str) -> tuple[Any, Faulty]:
    from fieldsync.client import Device
    from sync_world import PASSWORD

    faults = Faulty(world)
    device = Device.login(
        world.tmp / name,
        server="http://testserver",
        username=user,
        password=PASSWORD,
        app="fieldservice",
        transport=faults,
    )
    return device, faults


def test_files_travel_both_ways_and_two_rows_share_one_blob(world: World) -> None:
    wo1, wo2 = work_orders(world)
    report_bytes = os.urandom(150_000)
    photo = png()
    tech1 = world.device("tech1")
    tech1.sync()
    f1 = tech1.attach("workorder", wo1, "servicereport", report_bytes, "report.pdf")
    f2 = tech1.attach("workorder", wo2, "servicereport", report_bytes, "copy.pdf")
    tech1.attach("workorder", wo1, "sitephoto", photo, "site.png")
    tech1.sync()
    assert tech1.pending_changes() == 0
    server = world.platform.records
    assert server.retrieve("workorder", wo1)["servicereport"] == f1
    assert server.retrieve("workorder", wo2)["servicereport"] == f2
    rows = file_rows(world)
    assert rows[f1].sha256 == rows[f2].sha256 == hashlib.sha256(report_bytes).hexdigest()
    # one blob for the shared report, the photo and its thumbnail
    assert len(blobs(world)) == 3
    # a second device of the same user fetches each digest once, verified
    other = world.device("tech1", "tech1-tablet")
    report = other.sync()
    assert report.files is not None
    assert (report.files.downloaded, report.files.failed) == (3, 0)
    path = other.file_path("workorder", wo2, "servicereport")
    assert path is not None
    assert path.read_bytes() == report_bytes
    assert other.file_path("workorder", wo1, "sitephoto").read_bytes() == photo  # type: ignore[union-attr]
    thumb = other.file_path("workorder", wo1, "sitephoto", thumbnail=True)
    assert thumb is not None
    with Image.open(thumb) as small:
        assert max(small.size) <= 144
    again = other.sync()
    assert again.files is not None
    assert again.files.downloaded == 0


def test_a_broken_download_resumes_mid_file(world: World) -> None:
    [wo] = work_orders(world, 1)
    data = os.urandom(3 * CHUNK + 1000)
    writer = world.device("tech1")
    writer.sync()
    writer.attach("workorder", wo, "servicereport", data, "big.bin")
    writer.sync()
    reader, faults = faulty_device(world, "tech1", "reader")
    faults.cut_after = CHUNK // 2 + 7  # inside the first range
    with pytest.raises(Offline):
        reader.sync()
    assert reader.file_path("workorder", wo, "servicereport") is None
    faults.seen.clear()
    reader.fetch_files()
    ranges = [r.headers.get("range") for r in faults.seen if r.method == "GET"]
    assert ranges == [f"bytes={CHUNK // 2 + 7}-{len(data) - 1}"]  # the rest, in one read
    assert reader.file_path("workorder", wo, "servicereport").read_bytes() == data  # type: ignore[union-attr]


def test_a_broken_upload_resumes_where_the_server_stopped(world: World) -> None:
    [wo] = work_orders(world, 1)
    data = os.urandom(3 * CHUNK + 5)
    device, faults = faulty_device(world, "tech1", "uploader")
    device.sync()
    fid = device.attach("workorder", wo, "servicereport", data, "log.txt")
    faults.down_at = 2  # the first chunk arrives, the second does not
    with pytest.raises(Offline):
        device.sync()
    with world.platform.store.read() as conn:
        [upload] = conn.execute(sa.select(fs_upload)).all()
    assert (upload.fileid, upload.received) == (fid, CHUNK)
    assert world.platform.records.retrieve("workorder", wo)["servicereport"] is None
    faults.down_at = None
    faults.seen.clear()
    device.sync()
    sent = [r.headers["content-range"] for r in faults.seen if r.method == "PUT"]
    assert sent[0] == f"bytes {CHUNK}-{2 * CHUNK - 1}/{len(data)}"
    assert world.platform.records.retrieve("workorder", wo)["servicereport"] == fid
    assert file_rows(world)[fid].sha256 == hashlib.sha256(data).hexdigest()


def test_an_upload_whose_server_died_after_the_last_chunk_finishes_on_resume(
    world: World,
) -> None:
    """The server stored the last chunk and its offset, then died before making the file:
    the device's next sync (which begins the same upload again) finishes it, once."""
    [wo] = work_orders(world, 1)
    data = os.urandom(2 * CHUNK + 5)
    device, faults = faulty_device(world, "tech1", "uploader")
    device.sync()
    fid = device.attach("workorder", wo, "servicereport", data, "log.txt")
    faults.down_at = 2  # the first chunk arrives, then the network goes
    with pytest.raises(Offline):
        device.sync()
    files: Files = world.app.state.files
    with world.platform.store.write() as conn:
        [upload] = conn.execute(sa.select(fs_upload)).all()
        # what a crash right after the last chunk's offset was committed leaves behind
        files.blobs.stage(upload.uploadid, CHUNK, data[CHUNK:])
        conn.execute(
            fs_upload.update()
            .where(fs_upload.c.uploadid == upload.uploadid)
            .values(received=len(data))
        )
    faults.down_at = None
    faults.seen.clear()
    report = device.sync()
    assert (report.rejected, device.errors()) == (0, [])
    assert [r.method for r in faults.seen if "/files/uploads" in r.url.path] == ["POST"]
    assert world.platform.records.retrieve("workorder", wo)["servicereport"] == fid
    assert file_rows(world)[fid].sha256 == hashlib.sha256(data).hexdigest()
    with world.platform.store.read() as conn:
        assert conn.execute(sa.select(fs_upload)).all() == []
    [info] = [files.info(fid)]
    assert info is not None
    assert b"".join(files.read(info)) == data
    # asked again (a lost answer), the same upload is complete, still once
    again = _client(world, "tech1").post(
        "/sync/v1/files/uploads",
        json={
            "file": str(fid),
            "table": "workorder",
            "column": "servicereport",
            "name": "log.txt",
            "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
        },
    )
    assert again.json()["complete"] is True
    assert len(file_rows(world)) == 1


def _client(world: World, user: str) -> httpx.Client:
    _, secret = world.platform.auth.create_api_token(world.users[user], "files")
    return httpx.Client(
        transport=world.transport(),
        base_url="http://testserver",
        headers={"Authorization": f"Bearer {secret}"},
    )


def _digest(data: bytes) -> str:
    return f"sha-256=:{base64.b64encode(hashlib.sha256(data).digest()).decode()}:"


def test_corrupted_chunks_and_files_are_rejected_and_change_nothing(world: World) -> None:
    http = _client(world, "tech1")
    data = os.urandom(CHUNK + 10)
    begin = {
        "table": "workorder",
        "column": "servicereport",
        "name": "x.bin",
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    state = http.post("/sync/v1/files/uploads", json=begin).json()
    url = f"/sync/v1/files/uploads/{state['upload']}"
    chunk = data[:CHUNK]
    bad = http.put(
        url,
        content=b"X" + chunk[1:],
        headers={
            "Content-Range": f"bytes 0-{CHUNK - 1}/{len(data)}",
            "Content-Digest": _digest(chunk),
        },
    )
    assert bad.status_code == 400
    assert "Content-Digest" in bad.json()["error"]["message"]
    assert http.get(url).json()["received"] == 0
    # a chunk that skips ahead is refused with where to go on
    ahead = http.put(url, content=b"abc", headers={"Content-Range": f"bytes 5-7/{len(data)}"})
    assert ahead.status_code == 416
    assert "from 0" in ahead.json()["error"]["message"]
    # bytes that each match their chunk but not the file's declared sha256
    wrong = {**begin, "sha256": hashlib.sha256(b"something else").hexdigest()}
    state = http.post("/sync/v1/files/uploads", json=wrong).json()
    url = f"/sync/v1/files/uploads/{state['upload']}"
    ok = http.put(url, content=chunk, headers={"Content-Range": f"bytes 0-{CHUNK - 1}/{len(data)}"})
    assert ok.status_code == 200
    last = http.put(
        url,
        content=data[CHUNK:],
        headers={"Content-Range": f"bytes {CHUNK}-{len(data) - 1}/{len(data)}"},
    )
    assert last.status_code == 400
    assert "declared" in last.json()["error"]["message"]
    assert file_rows(world) == {}
    assert blobs(world) == set()
    # past the column's limit: a clear 413 before any byte moves
    huge = http.post("/sync/v1/files/uploads", json={**begin, "size": 33 * 2**20})
    assert huge.status_code == 413
    assert "at most 32.0 MB" in huge.json()["error"]["message"]
    # an image column takes images only
    not_image = b"plain text"
    state = http.post(
        "/sync/v1/files/uploads",
        json={**begin, "column": "sitephoto", "size": len(not_image), "sha256": None},
    ).json()
    r = http.put(
        f"/sync/v1/files/uploads/{state['upload']}",
        content=not_image,
        headers={"Content-Range": f"bytes 0-{len(not_image) - 1}/{len(not_image)}"},
    )
    assert r.status_code == 400
    assert file_rows(world) == {}


def test_a_blob_that_leaves_the_scope_leaves_the_device(world: World) -> None:
    wo1, wo2 = work_orders(world)
    device = world.device("tech1")
    device.sync()
    device.attach("workorder", wo1, "servicereport", b"report one", "a.txt")
    device.attach("workorder", wo2, "servicereport", b"report two", "b.txt")
    device.sync()
    p1 = device.file_path("workorder", wo1, "servicereport")
    p2 = device.file_path("workorder", wo2, "servicereport")
    assert p1 is not None
    assert p2 is not None
    r = world.platform.records
    r.assign("workorder", wo1, EntityRef("systemuser", world.users["tech2"]))  # row leaves
    r.update("workorder", wo2, {"servicereport": None})  # column cleared
    report = device.sync()
    assert report.files is not None
    assert report.files.removed == 2
    assert not p1.exists()
    assert not p2.exists()
    assert [p for p in (device.directory / "files" / "blobs").rglob("*") if p.is_file()] == []


def test_a_rejected_change_with_a_new_file_leaves_no_orphan(world: World) -> None:
    [wo] = work_orders(world, 1)

    @world.platform.plugins.on("workorder", "update", "pre-validation")
    def no_reports(ctx: PluginContext) -> None:
        if ctx.target.get("servicereport") is not None:
            raise PluginError("reports need a supervisor", code="REPORT")

    device = world.device("tech1")
    device.sync()
    fid = device.attach("workorder", wo, "servicereport", b"rejected bytes", "r.txt")
    local = device.file_path("workorder", wo, "servicereport")
    assert local is not None
    report = device.sync()
    assert report.rejected == 1
    [error] = device.errors()
    assert error["code"] == "REPORT"
    assert device.get("workorder", wo)["servicereport"] is None  # type: ignore[index]
    assert not local.exists()
    assert fid not in file_rows(world)
    assert blobs(world) == set()


def test_blob_reads_need_a_row_the_user_can_read(world: World) -> None:
    [wo] = work_orders(world, 1)
    device = world.device("tech1")
    device.sync()
    fid = device.attach("workorder", wo, "servicereport", b"private", "p.txt")
    device.sync()
    mine = _client(world, "tech1")
    grant = mine.post(
        "/sync/v1/files/grants",
        json={"device": device.device_id, "app": "fieldservice", "files": [str(fid)]},
    ).json()
    [facts] = grant["files"]
    ok = mine.get(f"/sync/v1/files/{fid}", params={"ticket": facts["ticket"]})
    assert ok.content == b"private"
    part = mine.get(
        f"/sync/v1/files/{fid}", params={"ticket": facts["ticket"]}, headers={"Range": "bytes=2-4"}
    )
    assert (part.status_code, part.content) == (206, b"iva")
    bad_range = mine.get(
        f"/sync/v1/files/{fid}", params={"ticket": facts["ticket"]}, headers={"Range": "bytes=50-"}
    )
    assert bad_range.status_code == 416
    assert mine.get(f"/sync/v1/files/{fid}").status_code == 403  # no ticket, no bytes
    # tech3 (another business unit) cannot read the row: no grant, the ticket is useless
    other = world.device("tech3")
    theirs = _client(world, "tech3")
    denied = theirs.post(
        "/sync/v1/files/grants",
        json={"device": other.device_id, "app": "fieldservice", "files": [str(fid)]},
    ).json()
    assert (denied["files"], denied["missing"]) == ([], [str(fid)])
    stolen = theirs.get(f"/sync/v1/files/{fid}", params={"ticket": facts["ticket"]})
    assert stolen.status_code == 403
    web = theirs.get(f"/api/data/v9.2/workorders({wo})/servicereport/$value")
    assert web.status_code == 404


def test_the_web_api_file_endpoints_share_the_store(world: World) -> None:
    [wo] = work_orders(world, 1)
    http = _client(world, "tech1")
    base = f"/api/data/v9.2/workorders({wo})"
    small = b"hello world 123456"
    r = http.patch(
        f"{base}/servicereport",
        content=small,
        headers={"Content-Type": "text/plain", "x-ms-file-name": "a.txt", "If-None-Match": "null"},
    )
    assert r.status_code == 204, r.text
    again = http.patch(
        f"{base}/servicereport",
        content=small,
        headers={"x-ms-file-name": "a.txt", "If-None-Match": "null"},
    )
    assert again.status_code == 412
    # the SDK's chunked protocol replaces it
    data = os.urandom(CHUNK + 100)
    init = http.patch(
        f"{base}/servicereport?x-ms-file-name=b.bin",
        headers={"x-ms-transfer-mode": "chunked", "If-Match": "*"},
    )
    assert init.status_code == 200
    location = init.headers["location"]
    assert location.startswith("http://testserver/api/data/v9.2/")
    step = int(init.headers["x-ms-chunk-size"])
    statuses = []
    for at in range(0, len(data), step):
        piece = data[at : at + step]
        statuses.append(
            http.patch(
                location,
                content=piece,
                headers={"Content-Range": f"bytes {at}-{at + len(piece) - 1}/{len(data)}"},
            ).status_code
        )
    assert statuses == [206, 204]
    got = http.get(f"{base}/servicereport/$value")
    assert (got.content, got.headers["x-ms-file-name"]) == (data, "b.bin")
    ranged = http.get(f"{base}/servicereport/$value", headers={"Range": "bytes=0-9"})
    assert (ranged.status_code, ranged.content) == (206, data[:10])
    assert len(file_rows(world)) == 1  # the replaced file went
    # the device sees the same file
    device = world.device("tech1")
    device.sync()
    assert device.file_path("workorder", wo, "servicereport").read_bytes() == data  # type: ignore[union-attr]
    # an image: thumbnail by default, the full image with size=full
    photo = png(3)
    assert (
        http.patch(
            f"{base}/sitephoto", content=photo, headers={"x-ms-file-name": "p.png"}
        ).status_code
        == 204
    )
    thumb = http.get(f"{base}/sitephoto/$value")
    assert thumb.headers["content-type"] == "image/jpeg"
    with Image.open(io.BytesIO(thumb.content)) as small:
        assert max(small.size) <= 144
    assert http.get(f"{base}/sitephoto/$value?size=full").content == photo
    assert http.delete(f"{base}/servicereport").status_code == 204
    assert http.get(f"{base}/servicereport/$value").status_code == 404
    assert world.platform.records.retrieve("workorder", wo)["servicereport"] is None


def test_attach_checks_the_column_and_its_limit_on_the_device(world: World) -> None:
    [wo] = work_orders(world, 1)
    device = world.device("tech1")
    device.sync()
    with pytest.raises(PayloadTooLarge):
        device.attach("workorder", wo, "sitephoto", b"x" * (10 * 2**20 + 1), "big.png")
    with pytest.raises(Exception, match="not a file or image column"):
        device.attach("workorder", wo, "name", b"x", "a.txt")
    assert device.pending_changes() == 0


def test_collection_removes_old_orphans_only(world: World) -> None:
    import datetime as dt

    [wo] = work_orders(world, 1)
    device = world.device("tech1")
    device.sync()
    kept = device.attach("workorder", wo, "servicereport", b"kept", "k.txt")
    device.sync()
    http = _client(world, "tech1")
    stray = b"never referenced"
    begin = {"table": "workorder", "column": "servicereport", "name": "s.txt", "size": len(stray)}
    state = http.post("/sync/v1/files/uploads", json=begin).json()
    done = http.put(
        f"/sync/v1/files/uploads/{state['upload']}",
        content=stray,
        headers={"Content-Range": f"bytes 0-{len(stray) - 1}/{len(stray)}"},
    ).json()
    orphan = uuid.UUID(done["file"]["id"])
    files: Files = world.app.state.files
    assert files.collect()["files"] == 0  # young: an upload may be about to use it
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=2)
    result = files.collect(later)
    rows = file_rows(world)
    assert orphan not in rows
    assert kept in rows
    assert result["files"] == 1


def test_a_blob_store_keeps_its_contract(blob_store: BlobStore) -> None:
    """Both stores (the data directory, and a bucket on a real S3 server) behave alike: whole
    and ranged reads, staging that resumes and rewinds, commits kept once, deletes, listing."""
    import time

    data = os.urandom(3 * 1024 * 1024 + 17)  # several read pieces, past boto3's part size
    digest = hashlib.sha256(data).hexdigest()
    assert blob_store.size(digest) is None
    upload = uuid.uuid4()
    step = 1024 * 1024
    for at in range(0, len(data), step):
        blob_store.stage(upload, at, data[at : at + step])
    # a chunk sent again from an earlier offset drops what followed it
    blob_store.stage(upload, step, b"rewound")
    assert b"".join(blob_store.staged(upload, step + 7)) == data[:step] + b"rewound"
    for at in range(step, len(data), step):
        blob_store.stage(upload, at, data[at : at + step])
    assert b"".join(blob_store.staged(upload, len(data))) == data
    assert b"".join(blob_store.staged(upload, 10)) == data[:10]
    blob_store.commit(upload, digest)
    assert list(blob_store.staged(upload, len(data))) == []  # the staging area is empty
    assert blob_store.size(digest) == len(data)
    assert b"".join(blob_store.read(digest)) == data
    assert b"".join(blob_store.read(digest, 5, 9)) == data[5:9]
    assert b"".join(blob_store.read(digest, len(data) - 3)) == data[-3:]
    assert b"".join(blob_store.read(digest, 7, 7)) == b""
    # the same bytes again: kept once. The directory store refreshes the blob's time; an
    # S3 self-copy refreshes it on AWS, not on every S3-compatible server, which is why
    # collection does not rely on it (a commit and its file row share the files lock)
    [(_, first)] = [(d, t) for d, t in blob_store.blobs() if d == digest]
    time.sleep(1.1)
    again = uuid.uuid4()
    blob_store.stage(again, 0, data)
    blob_store.commit(again, digest)
    [(_, second)] = [(d, t) for d, t in blob_store.blobs() if d == digest]
    assert second > first if isinstance(blob_store, LocalBlobs) else second >= first
    assert b"".join(blob_store.read(digest)) == data
    # small content, and the empty file
    empty = hashlib.sha256(b"").hexdigest()
    blob_store.put(empty, b"")
    assert blob_store.size(empty) == 0
    assert b"".join(blob_store.read(empty)) == b""
    assert {d for d, _ in blob_store.blobs()} == {digest, empty}
    blob_store.discard(uuid.uuid4())  # nothing staged: nothing happens
    blob_store.delete(digest)
    blob_store.delete(digest)  # deleting twice is fine
    assert blob_store.size(digest) is None
    assert {d for d, _ in blob_store.blobs()} == {empty}
    with pytest.raises(ValueError, match="sha256"):
        blob_store.size("../../etc/passwd")
    assert isinstance(blob_store, (LocalBlobs, S3Blobs))


def test_chunks_taken_by_several_server_processes_are_verified_whole(world: World) -> None:
    """Each process keeps the hash of the chunks it took only while no other chunk was stored
    since (the upload's stamp): an upload whose chunks went to two processes is read again
    and hashed at the end, one whose chunks all came to one process is not."""
    here: Files = world.app.state.files
    there = Files(here.records, here.blobs, here.limits)  # another server process
    ctx = world.ctx("tech1")
    data = os.urandom(3 * CHUNK + 17)
    reads: list[uuid.UUID] = []
    kind = type(here.blobs)
    staged, commit = kind.staged, kind.commit
    committing = [False]

    def counting(self: Any, upload: uuid.UUID, length: int) -> Iterator[bytes]:
        if not committing[0]:  # S3 streams the staged parts into the blob: not a check
            reads.append(upload)
        return staged(self, upload, length)

    def commits(self: Any, upload: uuid.UUID, digest: str) -> None:
        committing[0] = True
        try:
            commit(self, upload, digest)
        finally:
            committing[0] = False

    def upload(processes: list[Files], payload: bytes, declared: bytes) -> dict[str, Any]:
        state = here.begin(
            ctx,
            table="workorder",
            column="servicereport",
            name="a.bin",
            size=len(payload),
            sha256=hashlib.sha256(declared).hexdigest(),
            file_id=uuid.uuid4(),
        )
        for i, start in enumerate(range(0, len(payload), CHUNK)):
            piece = payload[start : start + CHUNK]
            service = processes[i % len(processes)]
            hashed = service.chunk_hash(state["upload"], start)
            hashed.update(piece)
            state = service.append(ctx, state["upload"], start=start, data=piece, hashed=hashed)
        return state

    kind.staged, kind.commit = counting, commits  # type: ignore[method-assign]
    try:
        done = upload([here], data, data)
        assert done["file"]["sha256"] == hashlib.sha256(data).hexdigest()
        assert reads == []  # every chunk came here: no second reading
        done = upload([here, there], data[::-1], data[::-1])
        assert done["file"]["sha256"] == hashlib.sha256(data[::-1]).hexdigest()
        assert len(reads) == 1  # read and hashed again at the end
        # bytes that match each chunk but not the declared file are refused either way
        with pytest.raises(BadRequest, match="declared"):
            upload([here], data[1:] + b"!", data)
        with pytest.raises(BadRequest, match="declared"):
            upload([there, here], data[1:] + b"?", data)
    finally:
        kind.staged, kind.commit = staged, commit  # type: ignore[method-assign]
    assert len(file_rows(world)) == 2
    assert blobs(world) == {hashlib.sha256(d).hexdigest() for d in (data, data[::-1])}
