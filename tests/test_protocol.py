"""The wire types of fieldsync.sync.protocol describe what really travels: every sync body a
device sends and the server answers, recorded end to end, has exactly the keys of its type
(all required keys, no others), recursively."""

from __future__ import annotations

import types
import typing
from pathlib import Path
from typing import Any, Literal, NotRequired, Union, get_args, get_origin, get_type_hints

import httpx
import orjson
import pytest

from fieldsync.client import Device
from fieldsync.platform import Platform
from fieldsync.sync import protocol as p
from fieldsync.types import EntityRef
from sync_world import PASSWORD, World

REQUESTS = {
    "/sync/v1/handshake": (p.HandshakeRequest, p.HandshakeResult),
    "/sync/v1/download": (p.DownloadRequest, p.DownloadAnswer),
    "/sync/v1/upload": (p.UploadRequest, p.UploadAnswer),
    "/sync/v1/inventory": (p.InventoryRequest, p.InventoryAnswer),
    "/sync/v1/receipt": (p.ReceiptRequest, p.ReceiptAnswer),
    "/sync/v1/backfill": (p.BackfillRequest, p.BackfillAnswer),
}


def conforms(kind: Any, value: Any, where: str = "$") -> list[str]:
    """Where ``value`` differs from the type ``kind`` (an empty list: it conforms)."""
    if kind is Any:
        return []
    origin = get_origin(kind)
    if origin is NotRequired:
        return conforms(get_args(kind)[0], value, where)
    if typing.is_typeddict(kind):
        if not isinstance(value, dict):
            return [f"{where}: {type(value).__name__}, not an object"]
        hints = get_type_hints(kind, include_extras=True)
        problems = [f"{where}.{k}: missing" for k in kind.__required_keys__ if k not in value]
        problems += [f"{where}.{k}: not in {kind.__name__}" for k in value if k not in hints]
        for k, v in value.items():
            if k in hints:
                problems += conforms(hints[k], v, f"{where}.{k}")
        return problems
    if origin in (Union, types.UnionType):
        options = [conforms(a, value, where) for a in get_args(kind)]
        return [] if any(not o for o in options) else min(options, key=len)
    if origin is Literal:
        return [] if value in get_args(kind) else [f"{where}: {value!r} not in {get_args(kind)}"]
    if origin is list:
        if not isinstance(value, list):
            return [f"{where}: not a list"]
        (item,) = get_args(kind)
        return [e for i, v in enumerate(value) for e in conforms(item, v, f"{where}[{i}]")]
    if origin is dict:
        if not isinstance(value, dict):
            return [f"{where}: not an object"]
        _, item = get_args(kind)
        return [e for k, v in value.items() for e in conforms(item, v, f"{where}.{k}")]
    if kind is type(None):
        return [] if value is None else [f"{where}: not null"]
    if kind is bool:
        return [] if isinstance(value, bool) else [f"{where}: not a boolean"]
    if kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        return [] if ok else [f"{where}: not an integer"]
    if isinstance(kind, type):
        return [] if isinstance(value, kind) else [f"{where}: not {kind.__name__}"]
    raise AssertionError(f"no check for {kind!r}")  # pragma: no cover


class Recorder(httpx.BaseTransport):
    def __init__(self, inner: httpx.BaseTransport) -> None:
        self.inner = inner
        self.seen: list[tuple[str, int, Any, Any]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        sent = request.read()
        response = self.inner.handle_request(request)
        body = response.read()
        if request.url.path.startswith("/sync/v1/"):
            self.seen.append(
                (
                    request.url.path,
                    response.status_code,
                    orjson.loads(sent) if sent else None,
                    orjson.loads(body) if body else None,
                )
            )
        return response


@pytest.fixture
def world(platform: Platform, tmp_path: Path) -> World:
    return World(platform, tmp_path)


def test_the_types_describe_every_body_of_a_sync(world: World, tmp_path: Path) -> None:
    r = world.platform.records
    owner = EntityRef("systemuser", world.users["tech1"])
    acc = r.create("account", {"name": "Contoso", "ownerid": owner})
    wo = r.create("workorder", {"name": "Pump", "serviceaccountid": acc, "ownerid": owner})
    world.sync.set_server_wins(["workorder"])
    recorder = Recorder(world.transport())
    device = Device.login(
        tmp_path / "device",
        server="http://testserver",
        username="tech1",
        password=PASSWORD,
        app="fieldservice",
        transport=recorder,
    )
    device.sync(page_size=1)  # several pages
    r.update("workorder", wo, {"name": "Server"})
    device.update("workorder", wo, {"name": "Device"})  # a conflict: rejected, with the row
    device.create("workorder", {"name": "New", "serviceaccountid": str(acc)})  # applied
    device.sync()
    device.sync()  # the acknowledgements go with this one
    # an error answer
    with pytest.raises(Exception, match="page size"):
        device.http().call(
            "POST",
            "/sync/v1/download",
            {"device": device.device_id, "app": "x", "limit": 0, "cursors": {}},
        )

    paths = [path for path, *_ in recorder.seen]
    assert {
        "/sync/v1/handshake",
        "/sync/v1/download",
        "/sync/v1/upload",
        "/sync/v1/inventory",
    } <= set(paths)
    statuses = set()
    for path, status, sent, answer in recorder.seen:
        if status >= 400:
            assert conforms(p.ErrorBody, answer) == [], path
            continue
        request_type, answer_type = REQUESTS[path]
        assert conforms(request_type, sent) == [], path
        assert conforms(answer_type, answer) == [], path
        if path == "/sync/v1/upload":
            statuses |= {a["status"] for a in answer["results"]}
        if path == "/sync/v1/handshake":
            assert answer["protocol"] == p.PROTOCOL_VERSION
    assert statuses == {"applied", "rejected"}
    assert any(s >= 400 for _, s, _, _ in recorder.seen)
    uploads = [sent for path, _, sent, _ in recorder.seen if path == "/sync/v1/upload"]
    assert any(u.get("acknowledged") for u in uploads)


def test_the_checker_finds_what_differs() -> None:
    good: p.ChangeApplied = {"id": "a", "record": "b", "status": "applied", "version": 3}
    assert conforms(p.ChangeApplied, good) == []
    assert conforms(p.ChangeApplied, {**good, "extra": 1}) == ["$.extra: not in ChangeApplied"]
    assert conforms(p.ChangeApplied, {**good, "version": "3"}) != []
    missing = {k: v for k, v in good.items() if k != "record"}
    assert conforms(p.ChangeApplied, missing) == ["$.record: missing"]
    assert conforms(p.UploadAnswer, {"results": [{**good, "status": "done"}]}) != []
    assert conforms(p.DownloadRequest, {"device": "d", "app": "a", "cursors": {"t": None}}) == []


class FileRecorder(httpx.BaseTransport):
    """The file calls of a sync, with the JSON of each body (a batch's first line)."""

    def __init__(self, inner: httpx.BaseTransport) -> None:
        self.inner = inner
        self.seen: list[tuple[str, str, int, Any, Any]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        sent = request.read()
        response = self.inner.handle_request(request)
        body = response.read()
        path = request.url.path
        if path.startswith("/sync/v1/files/"):
            kind = path.removeprefix("/sync/v1/files/").split("/")[0]
            if request.method == "PUT" or path == "/sync/v1/files/batch":
                sent = sent.partition(b"\n")[0] if path.endswith("/batch") else b""
            if path == "/sync/v1/files/read" or request.method == "GET":
                body = body.partition(b"\n")[0] if path.endswith("/read") else b""
            self.seen.append(
                (
                    request.method,
                    kind,
                    response.status_code,
                    orjson.loads(sent) if sent else None,
                    orjson.loads(body) if body else None,
                )
            )
        return response


FILE_CALLS = {
    ("POST", "uploads"): (p.UploadBegin, p.UploadProgress),
    ("PUT", "uploads"): (None, p.UploadProgress),
    ("POST", "batch"): (p.FileBatch, p.FileBatchAnswer),
    ("POST", "grants"): (p.GrantRequest, p.GrantAnswer),
    ("POST", "read"): (p.FileReadRequest, p.FileReadAnswer),
}


def test_the_types_describe_every_file_call(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import io

    from PIL import Image

    import fieldsync.client.files as device_files
    from fieldsync.files.batch import MEDIA_TYPE

    assert p.FILE_BATCH_TYPE == MEDIA_TYPE == device_files.BATCH_TYPE
    monkeypatch.setattr(device_files, "SMALL", 64 * 1024)  # larger files go in chunks
    world.app.state.files.limits = world.app.state.files.limits.__class__(chunk_bytes=64 * 1024)
    world.profile = file_profile()
    r = world.platform.records
    owner = EntityRef("systemuser", world.users["tech1"])
    acc = r.create("account", {"name": "Contoso", "ownerid": owner})
    orders = [
        r.create("workorder", {"name": f"Job {i}", "serviceaccountid": acc, "ownerid": owner})
        for i in range(3)
    ]
    recorder = FileRecorder(world.transport())
    device = Device.login(
        tmp_path / "device",
        server="http://testserver",
        username="tech1",
        password=PASSWORD,
        app="fieldservice",
        transport=recorder,
    )
    device.sync()
    out = io.BytesIO()
    Image.new("RGB", (50, 50), (10, 20, 30)).save(out, "PNG")
    device.attach("workorder", orders[0], "sitephoto", out.getvalue(), "p.png")
    device.attach("workorder", orders[1], "servicereport", b"small report", "r.txt")
    device.attach("workorder", orders[2], "servicereport", b"x" * (200 * 1024), "big.bin")
    device.sync()
    other = Device.login(
        tmp_path / "other",
        server="http://testserver",
        username="tech1",
        password=PASSWORD,
        app="fieldservice",
        transport=recorder,
    )
    other.sync()
    kinds = set()
    for method, kind, status, sent, answer in recorder.seen:
        assert status < 400, (method, kind, answer)
        if method == "GET":
            continue
        kinds.add((method, kind))
        request_type, answer_type = FILE_CALLS[(method, kind)]
        if request_type is not None:
            assert conforms(request_type, sent) == [], (method, kind)
        assert conforms(answer_type, answer) == [], (method, kind)
    assert kinds == set(FILE_CALLS)


def file_profile() -> Any:
    from fieldsync.offline.snapshot import Distribution, ItemSnapshot
    from sync_world import field_profile

    return field_profile(
        workorder=ItemSnapshot(
            "workorder",
            Distribution.OTHER,
            owned_by_me=True,
            file_columns=("servicereport",),
            image_columns=("sitephoto",),
        )
    )
