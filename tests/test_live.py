"""Live sync: the notice filter, the change stream over real HTTP (the in-process notifier on
SQLite, LISTEN/NOTIFY on PostgreSQL), and the device's live loop with its backoff."""

from __future__ import annotations

import contextlib
import itertools
import queue
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from fieldsync.client import Device
from fieldsync.client.live import LiveSync, backoff, events
from fieldsync.platform import Platform
from fieldsync.security.context import load_context
from fieldsync.security.model import Privilege
from fieldsync.security.roles import BASIC_USER
from fieldsync.server.live import LiveHub, _interest
from fieldsync.store.notify import ALL_TABLES, Touch, TouchBatch
from fieldsync.types import EntityRef
from sync_world import PASSWORD, World, serving


@pytest.fixture
def world(platform: Platform, tmp_path: Path) -> World:
    return World(platform, tmp_path)


def token(url: str, user: str) -> str:
    answer = httpx.post(f"{url}/auth/token", data={"username": user, "password": PASSWORD})
    answer.raise_for_status()
    return str(answer.json()["access_token"])


class Listener:
    """A raw live stream in a thread: events arrive on a queue with their arrival time."""

    def __init__(self, url: str, access: str, app: str = "fieldservice") -> None:
        self.events: queue.Queue[tuple[str, list[str], float]] = queue.Queue()
        self.client = httpx.Client(base_url=url, timeout=httpx.Timeout(10.0, read=30.0))
        self.headers = {"Authorization": f"Bearer {access}"}
        self.app = app
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            with self.client.stream(
                "GET", "/sync/v1/live", params={"app": self.app}, headers=self.headers
            ) as response:
                for name, data in events(response.iter_lines()):
                    if name:
                        tables = orjson.loads(data).get("tables", []) if data else []
                        self.events.put((name, tables, time.monotonic()))
        except httpx.HTTPError:
            pass

    def next(self, timeout: float = 5.0) -> tuple[str, list[str], float]:
        return self.events.get(timeout=timeout)

    def close(self) -> None:
        self.client.close()


@pytest.fixture
def served(world: World) -> Iterator[str]:
    world.app.state.live.keepalive = 0.2
    with serving(world) as url:
        yield url


def test_backoff_doubles_to_the_cap_with_jitter() -> None:
    low = [backoff(n, base=0.5, cap=8.0, rand=lambda: 0.0) for n in range(7)]
    high = [backoff(n, base=0.5, cap=8.0, rand=lambda: 1.0) for n in range(7)]
    assert low == [0.25, 0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert high == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert backoff(10_000, base=0.5, cap=60.0, rand=lambda: 1.0) == 60.0


def test_events_parse_names_data_and_keepalives() -> None:
    lines = ["retry: 5000", "event: ready", 'data: {"tables": []}', "", ": keep-alive", ""]
    lines += ["data: a", "data: b", ""]
    assert list(events(lines)) == [("ready", '{"tables": []}'), ("", ""), ("message", "a\nb")]


def test_notice_names_watching_tables_for_rows_the_user_may_read(world: World) -> None:
    ctx = world.ctx("tech1")
    with world.platform.store.read() as conn:
        access = world.sync.access(conn, ctx, "fieldservice")
    interest = _interest(world.sync, ctx, "fieldservice")
    assert interest.tables == {"workorder", "account", "contact"}
    north = {"ownerid": world.users["tech2"], "owningbusinessunit": world.unit}
    south = {"ownerid": world.users["tech3"], "owningbusinessunit": world.other_unit}
    # a work order tech1 may read moves work orders, their accounts and those contacts
    assert interest.notice([Touch("workorder", (north,))]) == {"workorder", "account", "contact"}
    assert interest.notice([Touch("contact", (north,))]) == {"contact"}
    # a row of another business unit, before and after: tech1 reads neither
    assert interest.notice([Touch("workorder", (south,))]) == frozenset()
    # moved out of tech1's unit: tech1 could read it before, so it must hear
    assert interest.notice([Touch("workorder", (south, north))]) == {
        "workorder",
        "account",
        "contact",
    }
    # unknown audience, or a table outside the profile that a scope watches: tell
    assert interest.notice([Touch("workorder", known=False)]) == {"workorder", "account", "contact"}
    assert "principalobjectaccess" in interest.targets
    assert interest.notice([Touch("principalobjectaccess")]) >= {"workorder"}
    assert interest.notice([Touch("systemuser", (north,))]) == frozenset()
    assert access.profile.name == "Field service"


def test_sqlite_changes_reach_a_stream_at_once_and_only_the_readers(
    world: World, served: str
) -> None:
    r = world.platform.records
    tech1 = Listener(served, token(served, "tech1"))
    tech3 = Listener(served, token(served, "tech3"))
    try:
        assert tech1.next()[:2] == ("ready", ["account", "contact", "workorder"])
        assert tech3.next()[0] == "ready"
        start = time.monotonic()
        r.create(
            "account", {"name": "North", "ownerid": EntityRef("systemuser", world.users["tech2"])}
        )
        name, tables, at = tech1.next()
        while name != "changes":
            name, tables, at = tech1.next()
        assert tables == ["account", "contact"]  # work orders do not depend on accounts
        assert at - start < 1.0
        # tech3 (the other unit) heard keep-alives only, never that North's account changed
        heard = []
        with contextlib.suppress(queue.Empty):
            while len(heard) < 50:
                heard.append(tech3.next(timeout=0.6)[0])
        assert "" not in heard  # keep-alives are comments, not events
        assert heard == []
    finally:
        tech1.close()
        tech3.close()


def test_the_stream_authenticates_and_checks_the_app(world: World, served: str) -> None:
    no_token = httpx.get(f"{served}/sync/v1/live", params={"app": "fieldservice"})
    assert no_token.status_code == 401
    headers = {"Authorization": f"Bearer {token(served, 'tech1')}"}
    no_app = httpx.get(f"{served}/sync/v1/live", headers=headers)
    assert no_app.status_code == 400
    world.allowed = lambda ctx: False
    refused = httpx.get(f"{served}/sync/v1/live", params={"app": "fieldservice"}, headers=headers)
    assert refused.status_code == 403
    assert "offline" in refused.json()["error"]["message"]


def test_the_stream_checks_the_device_it_names(world: World, served: str) -> None:
    mine, theirs = world.device("tech1"), world.device("tech2")
    mine.close()
    theirs.close()
    headers = {"Authorization": f"Bearer {token(served, 'tech1')}"}

    def status(device: str) -> int:
        params = {"app": "fieldservice", "device": device}
        with httpx.stream(
            "GET", f"{served}/sync/v1/live", params=params, headers=headers, timeout=10.0
        ) as response:
            if response.status_code == 200:
                assert next(events(response.iter_lines()))[0] == "ready"
            return response.status_code

    assert status("no!") == 400
    assert status(theirs.device_id) == 403  # another user's device
    assert status(uuid.uuid4().hex) == 403  # never registered: handshake first
    assert status(mine.device_id) == 200


def test_the_stream_ends_with_bye_and_keeps_alive(world: World) -> None:
    hub: LiveHub = world.app.state.live
    hub.keepalive, hub.max_seconds = 0.1, 0.5
    with serving(world) as url:
        headers = {"Authorization": f"Bearer {token(url, 'tech1')}"}
        with httpx.stream(
            "GET", f"{url}/sync/v1/live", params={"app": "fieldservice"}, headers=headers
        ) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            seen = [name for name, _ in events(response.iter_lines())]
    assert seen[0] == "ready"
    assert "" in seen  # keep-alives
    assert seen[-1] == "bye"
    assert hub.connected == 0


@contextlib.contextmanager
def serve_on(world: World, port: int) -> Iterator[None]:
    """The world's server on a given loopback port (``serving`` picks its own)."""
    import uvicorn

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    server = uvicorn.Server(uvicorn.Config(world.app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.01)
    try:
        yield
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_device_live_reconnects_with_backoff_then_syncs_on_notice(
    world: World, tmp_path: Path
) -> None:
    world.app.state.live.keepalive = 0.2
    account = world.platform.records.create("account", {"name": "Contoso"})
    world.device("tech1").close()  # signed in and registered through the in-process bridge
    # the same device, now talking HTTP to a port where nothing listens yet
    port = free_port()
    device = Device(tmp_path / "tech1")
    with device.replica.write() as conn:
        device.replica.set_state(conn, "server", f"http://127.0.0.1:{port}")
    rand = itertools.cycle([0.0]).__next__
    live = LiveSync(device, base=0.05, cap=0.4, rand=rand, read_timeout=5.0)
    stop = threading.Event()
    thread = threading.Thread(target=live.run, args=(stop,), daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while len(live.delays) < 5:
            assert time.monotonic() < deadline, live.delays
            time.sleep(0.02)
        assert live.delays[:5] == [0.025, 0.05, 0.1, 0.2, 0.2]
        assert live.connects == 0
        with serve_on(world, port):
            deadline = time.monotonic() + 10
            while live.connects == 0:
                assert time.monotonic() < deadline, "the device did not reconnect"
                time.sleep(0.02)
            wo = world.platform.records.create(
                "workorder",
                {
                    "name": "Live",
                    "serviceaccountid": account,
                    "ownerid": EntityRef("systemuser", world.users["tech1"]),
                },
            )
            start = time.monotonic()
            while device.get("workorder", wo) is None:
                assert time.monotonic() - start < 2.0, "the change did not reach the device"
                time.sleep(0.02)
            assert time.monotonic() - start < 1.0
    finally:
        stop.set()
        thread.join(10)
        device.close()


def test_the_hub_tells_exactly_the_groups_a_brute_force_check_tells(world: World) -> None:
    """Many streams over many users: the fan-out's index finds every group that may read a
    change and checks few others; each stream hears what its interest's own check says."""
    org, r = world.platform.org, world.platform.records
    basic = org.role_id(BASIC_USER)
    own = org.role(
        "Own work",
        privileges={
            t: {"read": "user", "write": "user"} for t in ("account", "contact", "workorder")
        },
    )
    users = dict(world.users)
    units = {"tech1": world.unit, "tech2": world.unit, "tech3": world.other_unit}
    for i in range(12):
        units[f"own{i}"] = unit = world.unit if i % 2 else world.other_unit
        users[f"own{i}"] = org.user(f"own{i}", business_unit=unit, roles=[basic, own])
    shared = r.create(
        "account", {"name": "Shared", "ownerid": EntityRef("systemuser", users["own0"])}
    )
    r.share("account", shared, EntityRef("systemuser", users["own1"]), [Privilege.READ])
    hub = LiveHub(world.platform.store)
    subs: dict[str, list[Any]] = {}
    interests = {}
    for name, uid in users.items():
        ctx = load_context(world.platform.store, uid)
        interests[name] = interest = _interest(world.sync, ctx, "fieldservice")
        subs[name] = [hub.subscribe(interest) for _ in range(3)]
    assert hub.connected == 3 * len(users)
    assert hub.tables["account"].open  # own1's shares cannot be told by owner: always checked

    def image(owner: str) -> dict[str, Any]:
        return {"ownerid": users[owner], "owningbusinessunit": units[owner]}

    stranger = {"ownerid": uuid.uuid4(), "owningbusinessunit": uuid.uuid4()}
    cases = [
        [Touch("account", (image("own4"),))],
        [Touch("workorder", (image("own3"), image("own0")))],  # moved between owners
        [Touch("contact", (stranger,))],
        [Touch("contact", ({"ownerid": users["own5"]},))],  # no business unit in the image
        [Touch("account", known=False)],
        [Touch("principalobjectaccess")],
        [Touch("systemuser", (image("own4"),))],
        [Touch("account", (stranger,)), Touch("workorder", (image("tech3"),))],
        [Touch(ALL_TABLES, known=False)],
    ]
    for touches in cases:
        for group in subs.values():
            for sub in group:
                sub.pending = None
        hub.checks = 0
        hub.fan_out(TouchBatch(1, tuple(touches)))
        for name, group in subs.items():
            expected = interests[name].notice(touches)
            for sub in group:
                assert (sub.pending or set()) == expected, (name, touches)
        if touches == [Touch("account", (image("own4"),))]:
            # own4 by owner, North's business-unit readers, own1 for its share: not everyone
            assert hub.checks < len(users) - 4
    for group in subs.values():
        for sub in group:
            hub.unsubscribe(sub)
    assert hub.connected == 0
    assert not hub.groups
    assert not hub.tables
