"""Input limits, attacked over HTTP on both backends: bodies past their route's limit (sent
with a Content-Length and chunked) get a 413 before they are held; JSON nested too deep, a
``$filter`` or FetchXML with too many conditions get a 400 that names the limit; a sync change
nested too deep is a sync error of its own; an API token's lifetime is read the same from
JSON and from a form. Last, the gigabyte body of issue 16 against a real ``fieldsync serve``
process, with its memory measured."""

from __future__ import annotations

import base64
import datetime as dt
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import sqlalchemy as sa

from fieldsync.config import Settings
from fieldsync.errors import BadRequest, QueryError
from fieldsync.limits import MAX_CONDITIONS, MAX_FILTER_LENGTH, MAX_JSON_DEPTH, parse_json
from fieldsync.platform import Platform
from fieldsync.query.fetchxml import parse_fetchxml
from fieldsync.query.odata import parse_filter
from fieldsync.security.roles import SYSTEM_ADMINISTRATOR
from fieldsync.server.app import create_app
from fieldsync.types import EntityRef
from sync_world import PASSWORD, World

pytestmark = pytest.mark.anyio

API = "/api/data/v9.2/"
KB, MB = 1024, 1024 * 1024
# small limits keep the bodies small; that they are honoured is part of the test
SMALL = {
    "max_request_mb": 1,
    "max_batch_mb": 2,
    "max_chunk_mb": 1,
    "max_file_mb": 2,
    "max_form_kb": 8,
}


@pytest.fixture
def world(platform: Platform, tmp_path: Path) -> Iterator[World]:
    w = World(platform, tmp_path)
    org = platform.org
    w.users["admin"] = org.user(
        "admin", password=PASSWORD, roles=[org.role_id(SYSTEM_ADMINISTRATOR)]
    )
    try:
        yield w
    finally:
        w.bridge.close()
        w.bridge.loop.close()


class Client:
    """The app with small body limits, over in-process HTTP, signed in as a user."""

    def __init__(self, world: World, http: httpx.AsyncClient) -> None:
        self.world = world
        self.http = http

    async def sign_in(self, user: str) -> dict[str, str]:
        r = await self.http.post("/auth/token", data={"username": user, "password": PASSWORD})
        assert r.status_code == 200, r.text
        return {"Authorization": f"Bearer {r.json()['access_token']}"}


@pytest.fixture
async def client(world: World, tmp_path: Path) -> AsyncIterator[Client]:
    app = create_app(Settings(data_dir=str(tmp_path / "small"), **SMALL), platform=world.platform)
    app.state.sync = world.sync
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="https://test") as http:
        yield Client(world, http)


def deep(levels: int) -> str:
    return "[" * levels + "]" * levels


def nested(key: str, levels: int = 1000) -> str:
    return '{"' + key + '": ' + deep(levels) + "}"


def upload_body(device: str, *changes: str) -> str:
    return (
        '{"device": "'
        + device
        + '", "app": "fieldservice", "changes": ['
        + ", ".join(changes)
        + "]}"
    )


async def pieces(data: bytes, size: int = 64 * KB) -> AsyncIterator[bytes]:
    """``data`` as a chunked body: httpx sends no Content-Length for a generator."""
    for start in range(0, len(data), size):
        yield data[start : start + size]


def assert_413(r: httpx.Response, setting: str | None = None) -> None:
    assert r.status_code == 413, r.text[:300]
    assert r.headers.get("connection") == "close"  # the rest of the body is not drained
    error = r.json()["error"]
    assert set(error) == {"code", "message"}
    if setting is not None:
        assert setting in error["message"]


def padded_json(data: dict[str, Any], size: int) -> bytes:
    """``data`` as JSON of exactly ``size`` bytes (padded with spaces: still valid)."""
    raw = orjson.dumps(data)
    assert len(raw) <= size
    return raw + b" " * (size - len(raw))


# -- item 4: bodies past their limit -------------------------------------------------------


async def test_a_web_api_body_stops_at_its_limit(client: Client, world: World) -> None:
    admin = await client.sign_in("admin")
    rid = world.platform.records.create("account", {"name": "Before"})
    url = API + f"accounts({rid})"
    json_type = {**admin, "Content-Type": "application/json"}
    at_limit = padded_json({"name": "At the limit"}, 1 * MB)
    r = await client.http.patch(url, content=at_limit, headers=json_type)
    assert r.status_code == 204, r.text
    over = padded_json({"name": "Over"}, 1 * MB + 1)
    for body in (over, pieces(over)):  # with a Content-Length, then chunked
        r = await client.http.patch(url, content=body, headers=json_type)
        assert_413(r, "FIELDSYNC_MAX_REQUEST_MB")
    assert world.platform.records.retrieve("account", rid)["name"] == "At the limit"


async def test_a_batch_stops_at_the_batch_limit(client: Client, world: World) -> None:
    admin = await client.sign_in("admin")
    boundary = "batch_limit"
    head = (
        f"--{boundary}\r\nContent-Type: application/http\r\n"
        "Content-Transfer-Encoding: binary\r\n\r\n"
        "POST https://test/api/data/v9.2/accounts HTTP/1.1\r\n"
        "Content-Type: application/json\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    headers = {**admin, "Content-Type": f"multipart/mixed; boundary={boundary}"}

    def batch(size: int) -> bytes:
        return head + padded_json({"name": "Batched"}, size - len(head) - len(tail)) + tail

    # past the JSON limit, within the batch limit: a $batch has a limit of its own
    r = await client.http.post(API + "$batch", content=batch(1 * MB + 100), headers=headers)
    assert r.status_code == 200, r.text[:300]
    assert "HTTP/1.1 204" in r.text
    over = batch(2 * MB + 1)
    for body in (over, pieces(over)):
        r = await client.http.post(API + "$batch", content=body, headers=headers)
        assert_413(r, "FIELDSYNC_MAX_BATCH_MB")
    query = "accounts?$select=name&$filter=name eq 'Batched'"
    r = await client.http.get(API + query, headers=admin)
    assert len(r.json()["value"]) == 1


async def test_file_bodies_stop_at_the_file_and_chunk_limits(client: Client, world: World) -> None:
    admin = await client.sign_in("admin")
    records = world.platform.records
    account = records.create("account", {"name": "Contoso"})
    wo = records.create("workorder", {"name": "Pump", "serviceaccountid": account})
    url = API + f"workorders({wo})/servicereport"
    octets = {**admin, "Content-Type": "application/pdf", "x-ms-file-name": "r.pdf"}
    over_file = b"%" * (2 * MB + 1)
    for body in (over_file, pieces(over_file)):
        r = await client.http.patch(url, content=body, headers=octets)
        assert_413(r)
    assert world.platform.records.retrieve("workorder", wo)["servicereport"] is None

    # one chunk of a chunked upload: the chunk limit, on the Web API and on sync
    r = await client.http.patch(
        url + "?x-ms-file-name=r.pdf",
        headers={**octets, "x-ms-transfer-mode": "chunked"},
    )
    assert r.status_code == 200, r.text
    location = r.headers["Location"]
    over_chunk = b"%" * (1 * MB + 1)
    ranged = {**octets, "Content-Range": f"bytes 0-{len(over_chunk) - 1}/{len(over_chunk)}"}
    for chunked in (False, True):
        body = pieces(over_chunk) if chunked else over_chunk
        r = await client.http.patch(location, content=body, headers=ranged)
        assert_413(r, "FIELDSYNC_MAX_CHUNK_MB")
        body = pieces(over_chunk) if chunked else over_chunk
        r = await client.http.put(
            f"/sync/v1/files/uploads/{uuid.uuid4()}", content=body, headers=ranged
        )
        assert_413(r, "FIELDSYNC_MAX_CHUNK_MB")


async def test_sync_and_admin_bodies_stop_at_the_request_limit(
    client: Client, world: World
) -> None:
    tech = await client.sign_in("tech1")
    version = world.platform.store.current_version
    with world.platform.store.read() as conn:
        before = version(conn)
    change = {
        "id": str(uuid.uuid4()),
        "record": str(uuid.uuid4()),
        "table": "workorder",
        "operation": "create",
        "values": {"name": "Too big"},
    }
    body = {"device": "device-limit-1", "app": "fieldservice", "changes": [change]}
    over = padded_json(body, 1 * MB + 1)
    for chunked in (False, True):
        r = await client.http.post(
            "/sync/v1/upload", content=pieces(over) if chunked else over, headers=tech
        )
        assert_413(r, "FIELDSYNC_MAX_REQUEST_MB")
        r = await client.http.put(
            f"/admin/teams/{uuid.uuid4()}/group-members",
            content=pieces(over) if chunked else over,
            headers=tech,
        )
        assert_413(r, "FIELDSYNC_MAX_REQUEST_MB")
    with world.platform.store.read() as conn:
        assert version(conn) == before


async def test_sign_in_and_portal_forms_stop_at_the_form_limit(client: Client) -> None:
    over = b"username=admin&password=" + b"x" * (8 * KB)
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    for chunked in (False, True):
        r = await client.http.post(
            "/auth/token", content=pieces(over, 1024) if chunked else over, headers=form
        )
        assert_413(r, "FIELDSYNC_MAX_FORM_KB")
        # the portal answers with its own error page
        r = await client.http.post(
            "/portal/sign-in", content=pieces(over, 1024) if chunked else over, headers=form
        )
        assert r.status_code == 413
        assert r.headers["content-type"].startswith("text/html")
        assert r.headers["connection"] == "close"
        assert "FIELDSYNC_MAX_FORM_KB" in r.text
        assert r.headers["X-Content-Type-Options"] == "nosniff"


# -- item 6: deep or huge input ------------------------------------------------------------


def test_the_json_parser_measures_depth_without_recursing() -> None:
    assert parse_json(deep(MAX_JSON_DEPTH)) == parse_json(deep(MAX_JSON_DEPTH), max_depth=None)
    assert parse_json('{"a": ' * MAX_JSON_DEPTH + "1" + "}" * MAX_JSON_DEPTH)
    for text in (deep(MAX_JSON_DEPTH + 1), deep(1000), deep(100_000)):
        with pytest.raises(BadRequest, match="levels deep"):
            parse_json(text)
    # many brackets side by side are shallow
    wide = "[" + ",".join(["[]"] * 10_000) + "]"
    assert len(parse_json(wide)) == 10_000


async def test_deep_json_is_a_400_that_names_the_limit(client: Client, world: World) -> None:
    admin = await client.sign_in("admin")
    json_type = {"Content-Type": "application/json"}
    attacks = [
        ("POST", API + "accounts", nested("name"), admin),
        ("POST", "/auth/token", nested("username"), {}),  # without signing in
        ("POST", "/auth/api-tokens", nested("name"), admin),
        ("POST", "/auth/revoke", nested("token"), {}),
        ("POST", "/sync/v1/handshake", nested("device"), admin),
        ("POST", "/sync/v1/files/grants", nested("files"), admin),
    ]
    for method, url, body, headers in attacks:
        r = await client.http.request(method, url, content=body, headers={**headers, **json_type})
        assert r.status_code == 400, (url, r.text[:200])
        assert f"more than {MAX_JSON_DEPTH} levels deep" in r.json()["error"]["message"], url
    skiptoken = base64.urlsafe_b64encode(deep(5000).encode()).decode()
    r = await client.http.get(API + f"accounts?$skiptoken={skiptoken}", headers=admin)
    assert r.status_code == 400, r.text[:200]
    r = await client.http.get(API + "accounts?$select=name", headers=admin)
    assert r.json()["value"] == []


async def test_a_sync_change_nested_too_deep_is_refused_alone(client: Client, world: World) -> None:
    tech = await client.sign_in("tech1")
    device = "device-deep-1"
    r = await client.http.post(
        "/sync/v1/handshake", json={"device": device, "app": "fieldservice"}, headers=tech
    )
    assert r.status_code == 200, r.text
    bad, good = str(uuid.uuid4()), str(uuid.uuid4())
    good_row = str(uuid.uuid4())
    account = world.platform.records.create(
        "account", {"name": "Contoso", "ownerid": EntityRef("systemuser", world.users["tech1"])}
    )

    other_row = str(uuid.uuid4())

    def change(cid: str, record: str, value: str, operation: str = "create") -> str:
        return (
            f'{{"id": "{cid}", "record": "{record}", "table": "workorder", '
            f'"operation": "{operation}", "values": {{"name": {value}, '
            f'"serviceaccountid": "{account}"}}}}'
        )

    body = upload_body(
        device,
        change(bad, str(uuid.uuid4()), deep(600)),
        change(good, good_row, '"Pump"'),  # creates that follow one another: one batched write
        change(str(uuid.uuid4()), other_row, '"Valve"'),
    )
    json_type = {**tech, "Content-Type": "application/json"}
    for _ in range(2):  # a retry gets the same answers: the outbox moves on
        r = await client.http.post("/sync/v1/upload", content=body, headers=json_type)
        assert r.status_code == 200, r.text[:300]
        first, *rest = r.json()["results"]
        assert first["status"] == "rejected"
        assert f"more than {MAX_JSON_DEPTH} levels deep" in first["error"]["message"]
        assert [c["status"] for c in rest] == ["applied", "applied"]
    # an update nested too deep, then one that is fine: it is not batched with the next
    bad_update = str(uuid.uuid4())
    body = upload_body(
        device,
        change(bad_update, good_row, deep(100), "update"),
        change(str(uuid.uuid4()), other_row, '"Valve 2"', "update"),
    )
    r = await client.http.post("/sync/v1/upload", content=body, headers=json_type)
    assert [c["status"] for c in r.json()["results"]] == ["rejected", "applied"]
    records = world.platform.records
    assert records.retrieve("workorder", uuid.UUID(good_row))["name"] == "Pump"
    assert records.retrieve("workorder", uuid.UUID(other_row))["name"] == "Valve 2"
    store = world.platform.store
    errors = store.sql_table("syncerror")
    with store.read() as conn:
        refused = conn.execute(
            sa.select(errors.c.clientchangeid, errors.c.errormessage).where(
                errors.c.deviceid == device
            )
        ).all()
    # once each, though the first was sent twice
    assert sorted(str(r.clientchangeid) for r in refused) == sorted([bad, bad_update])
    assert "levels deep" in refused[0].errormessage

    # past the JSON parser's own ceiling the body cannot be read at all: a 400, not a 500
    body = upload_body(device, change(str(uuid.uuid4()), str(uuid.uuid4()), deep(5000)))
    r = await client.http.post("/sync/v1/upload", content=body, headers=json_type)
    assert r.status_code == 400, r.text[:300]
    assert "levels deep" in r.json()["error"]["message"]


def terms(n: int) -> str:
    return " or ".join(f"name eq 'a{i}'" for i in range(n))


def fetch(n: int) -> str:
    conditions = "<condition attribute='name' operator='null'/>" * n
    return (
        "<fetch><entity name='account'><attribute name='name'/>"
        f"<filter type='or'>{conditions}</filter></entity></fetch>"
    )


async def test_huge_queries_are_a_400_that_names_the_limit(client: Client, world: World) -> None:
    admin = await client.sign_in("admin")
    world.platform.records.create("account", {"name": "a7"})
    # Dataverse's allowance works on both backends
    r = await client.http.get(API + "accounts", params={"$filter": terms(500)}, headers=admin)
    assert r.status_code == 200, r.text[:300]
    assert [a["name"] for a in r.json()["value"]] == ["a7"]
    r = await client.http.get(API + "accounts", params={"fetchXml": fetch(500)}, headers=admin)
    assert r.status_code == 200, r.text[:300]

    r = await client.http.get(API + "accounts", params={"$filter": terms(1000)}, headers=admin)
    assert r.status_code == 400
    assert f"more than {MAX_CONDITIONS} conditions" in r.json()["error"]["message"]
    r = await client.http.get(API + "accounts", params={"fetchXml": fetch(1000)}, headers=admin)
    assert r.status_code == 400
    assert f"more than {MAX_CONDITIONS} conditions" in r.json()["error"]["message"]
    long = "name eq '" + "x" * MAX_FILTER_LENGTH + "'"
    r = await client.http.get(API + "accounts", params={"$filter": long}, headers=admin)
    assert r.status_code == 400
    assert f"longer than {MAX_FILTER_LENGTH} characters" in r.json()["error"]["message"]
    # nested parentheses and nots stay within the parser's nesting limit
    nested = "(" * 1000 + "name eq 'a'" + ")" * 1000
    r = await client.http.get(API + "accounts", params={"$filter": nested}, headers=admin)
    assert r.status_code == 400


def test_every_caller_of_the_query_parsers_gets_the_limits(platform: Platform) -> None:
    """Offline profile filters, views and device queries parse with the same functions."""
    schema = platform.store.schema
    account = schema.table("account")
    with pytest.raises(QueryError, match=f"more than {MAX_CONDITIONS} conditions"):
        parse_filter(terms(MAX_CONDITIONS + 1), account, schema)
    parse_filter(terms(MAX_CONDITIONS), account, schema)
    with pytest.raises(QueryError, match=f"more than {MAX_CONDITIONS} conditions"):
        parse_fetchxml(fetch(MAX_CONDITIONS + 1), schema)
    parse_fetchxml(fetch(MAX_CONDITIONS), schema)


# -- item 3: one parser for the sign-in endpoints' bodies ------------------------------------


async def test_an_api_token_lasts_the_days_asked_for_in_json_or_a_form(
    client: Client, world: World
) -> None:
    tech = await client.sign_in("tech1")
    auth = world.platform.auth
    user = world.users["tech1"]
    r = await client.http.post("/auth/api-tokens", json={"name": "json", "days": 1}, headers=tech)
    assert r.status_code == 201, r.text
    r = await client.http.post("/auth/api-tokens", data={"name": "form", "days": "2"}, headers=tech)
    assert r.status_code == 201, r.text
    r = await client.http.post("/auth/api-tokens", json={"name": "forever"}, headers=tech)
    assert r.status_code == 201, r.text
    now = dt.datetime.now(dt.UTC)
    lasting = {}
    for t in auth.list_api_tokens(user):
        expires = t["expireson"]
        if expires is not None and expires.tzinfo is None:
            expires = expires.replace(tzinfo=dt.UTC)
        lasting[t["name"]] = None if expires is None else expires - now
    assert dt.timedelta(hours=23) < lasting["json"] <= dt.timedelta(days=1)  # type: ignore[operator]
    assert dt.timedelta(hours=47) < lasting["form"] <= dt.timedelta(days=2)  # type: ignore[operator]
    assert lasting["forever"] is None

    refused: list[tuple[str, dict[str, Any]]] = [
        ("json", {"name": "x", "days": -5}),
        ("json", {"name": "x", "days": 0}),
        ("json", {"name": "x", "days": 3651}),
        ("json", {"name": "x", "days": 1.5}),
        ("json", {"name": "x", "days": True}),
        ("json", {"name": "x", "days": "soon"}),
        ("json", {"name": "x", "days": [1]}),
        ("json", {"name": 7, "days": 1}),
        ("form", {"name": "x", "days": "-5"}),
        ("form", {"name": "x", "days": "3651"}),
        ("form", {"name": "x", "days": "1.5"}),
        ("form", {"name": "x", "days": "99999999999999999999"}),
    ]
    for kind, body in refused:
        if kind == "json":
            r = await client.http.post("/auth/api-tokens", json=body, headers=tech)
        else:
            r = await client.http.post("/auth/api-tokens", data=body, headers=tech)
        assert r.status_code == 400, (kind, body, r.text)
        message = r.json()["error"]["message"]
        assert ("1 to 3650" in message) or ("'name'" in message), message
    assert len(auth.list_api_tokens(user)) == 3


async def test_sign_in_reads_json_and_forms_alike(client: Client) -> None:
    for send in ("json", "data"):
        r = await client.http.post(
            "/auth/token", **{send: {"username": "tech1", "password": PASSWORD}}
        )
        assert r.status_code == 200, r.text
        refresh = r.json()["refresh_token"]
        r = await client.http.post(
            "/auth/token", **{send: {"grant_type": "refresh_token", "refresh_token": refresh}}
        )
        assert r.status_code == 200, r.text
        r = await client.http.post("/auth/revoke", **{send: {"token": r.json()["refresh_token"]}})
        assert r.status_code == 200, r.text
    for body in (
        {"username": ["tech1"], "password": PASSWORD},
        {"username": "tech1", "password": {"p": PASSWORD}},
        {"grant_type": 1},
    ):
        r = await client.http.post("/auth/token", json=body)
        assert r.status_code == 400, r.text
        assert "must be a string" in r.json()["error"]["message"]
    r = await client.http.post("/auth/token", json=["tech1", PASSWORD])
    assert r.status_code == 400


# -- item 4 on a real server process: a gigabyte body does not grow it -----------------------

GiB = 1024 * MB


def _memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (the peak) of a process, in bytes."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) * 1024
    return out


class _Serve:
    """``fieldsync serve`` in a child process on a loopback port."""

    def __init__(self, database: str, data_dir: Path) -> None:
        import os
        import socket
        import subprocess
        import sys
        import time

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        args = [sys.executable, "-m", "fieldsync.cli", "serve", "--database", database]
        args += ["--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning"]
        env = {**os.environ, "FIELDSYNC_DATA_DIR": str(data_dir)}
        self.proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.stop()
                    raise RuntimeError("the server did not start") from None
                time.sleep(0.1)

    def stop(self) -> None:
        import subprocess

        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def _send(
    port: int, method: str, path: str, headers: dict[str, str], total: int, pid: int
) -> tuple[int, bytes, int, int]:
    """Send ``total`` bytes as a chunked body (or, with a Content-Length in ``headers``, as
    a plain one) while reading the answer. Returns the status, the answer's body, the bytes
    sent before the server closed the connection, and the server's largest RSS seen."""
    import socket
    import threading

    sock = socket.create_connection(("127.0.0.1", port))
    sock.settimeout(60)
    chunked = "Content-Length" not in headers
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    head += "Transfer-Encoding: chunked\r\n\r\n" if chunked else "\r\n"
    sock.sendall(head.encode())
    answer = bytearray()
    closed = threading.Event()

    def read() -> None:
        while True:
            try:
                data = sock.recv(65536)
            except OSError:
                break
            if not data:
                break
            answer.extend(data)
        closed.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    piece = b"x" * MB
    frame = (b"%x\r\n" % len(piece) + piece + b"\r\n") if chunked else piece
    sent, peak = 0, _memory(pid)["VmRSS"]
    try:
        while sent < total and not closed.is_set():
            sock.sendall(frame)
            sent += len(piece)
            if sent % (8 * MB) == 0:
                peak = max(peak, _memory(pid)["VmRSS"])
        if chunked and sent >= total:
            sock.sendall(b"0\r\n\r\n")
    except OSError:
        pass  # the server closed the connection: it stopped reading
    reader.join(60)
    sock.close()
    peak = max(peak, _memory(pid)["VmRSS"])
    status_line, _, rest = bytes(answer).partition(b"\r\n")
    status = int(status_line.split()[1]) if status_line else 0
    return status, rest.partition(b"\r\n\r\n")[2], sent, peak


def test_a_gigabyte_body_does_not_grow_a_real_server(tmp_path: Path) -> None:
    """The attack of issue 16: 1 GiB sent to the Web API and to $batch, chunked and with a
    Content-Length, against ``fieldsync serve`` on SQLite: each is a 413 after at most the
    limit (16 MB by default), and the server grows by less than 50 MB."""
    from conftest import FAST_HASHING
    from fieldsync.platform import build
    from fieldsync.store.store import Store

    database = f"sqlite:///{tmp_path / 'fieldsync.db'}"
    p = build(Store.open(database), auth_settings=FAST_HASHING)
    try:
        org = p.org
        admin = org.user("admin", roles=[org.role_id(SYSTEM_ADMINISTRATOR)])
        _, token = p.auth.create_api_token(admin, "attack")
        rid = p.records.create("account", {"name": "Target"})
    finally:
        p.close()
    server = _Serve(database, tmp_path / "data")
    try:
        auth = {"Authorization": f"Bearer {token}"}
        base = f"http://127.0.0.1:{server.port}"
        with httpx.Client(base_url=base, headers=auth, timeout=30) as http:
            for n in range(3):  # warm up: the first requests load what they need
                r = http.patch(API + f"accounts({rid})", json={"name": f"Warm {n}"})
                assert r.status_code == 204, r.text
                assert http.get(API + "accounts?$select=name").status_code == 200
        before = _memory(server.proc.pid)
        attacks = [
            ("PATCH", API + f"accounts({rid})", {"Content-Type": "application/json"}),
            ("POST", API + "$batch", {"Content-Type": "multipart/mixed; boundary=b"}),
            (
                "PATCH",
                API + f"accounts({rid})",
                {"Content-Type": "application/json", "Content-Length": str(GiB)},
            ),
        ]
        for method, path, headers in attacks:
            status, body, sent, peak = _send(
                server.port, method, path, {**auth, **headers}, GiB, server.proc.pid
            )
            grown = (peak - before["VmRSS"]) / MB
            print(f"{method} {path}: 413 after {sent / MB:.0f} MB sent; RSS +{grown:.1f} MB")
            assert status == 413, body[:300]
            assert orjson.loads(body)["error"]["message"]
            assert sent < GiB / 4  # the server stopped reading, and closed the connection
            assert peak - before["VmRSS"] < 50 * MB, (path, peak - before["VmRSS"])
        after = _memory(server.proc.pid)
        assert after["VmRSS"] - before["VmRSS"] < 50 * MB
        assert after["VmHWM"] - max(before["VmHWM"], before["VmRSS"]) < 50 * MB
        with httpx.Client(base_url=base, headers=auth, timeout=30) as http:
            r = http.get(API + f"accounts({rid})?$select=name")
            assert r.json()["name"] == "Warm 2"  # nothing changed; the server still serves
    finally:
        server.stop()
