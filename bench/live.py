"""Live streams on one server process: how many it holds, what each costs in memory, and how
soon a committed change reaches the devices it concerns.

    python bench/live.py                                   # 2,000 then 10,000 streams
    python bench/live.py --devices 500,2000 --rounds 5     # quicker
    python bench/live.py --baseline-src /path/to/other/src # and another tree's server, A/B

For each stream count, in the same run and on the same PostgreSQL database, a fresh
``fieldsync serve`` process is started and:

- its resident memory is read once it has served one stream (imports, plans, pools warm),
  then again with every stream connected: the difference divided by the streams is the
  memory per connection;
- ``--rounds`` times, one transaction updates one account of each of ``--changes`` users
  picked at random; the change-to-device latency is from that transaction's commit to each
  stream of those users receiving its ``changes`` event (p50, p99, and any stream that heard
  nothing within ``--timeout`` seconds: *missed*). A notice on a stream of a user whose rows
  did not change counts as *stray* (each user owns only their own accounts);
- the server's CPU seconds per second over the rounds.

The devices are one asyncio process of raw sockets (an ``asyncio.Protocol`` per stream, no HTTP
client library): 10,000 httpx streams would make the load generator the bottleneck on a small
machine. Users get API tokens (no password hashing), ``--users`` of them, each with
``devices / users`` streams; they name no device (these devices never handshake). The limit on
open files is raised for this process and its server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from load import APP, PROFILE, cpu_seconds, percentile, rss_mb
from scratch import ScratchDatabases, postgres_problem
from sync import PATH, Server, free_port


def seed(url: str, users: int) -> list[tuple[str, str, str]]:
    """``users`` technicians with one account each: (user id, API token, account id)."""
    from fieldsync.platform import build
    from fieldsync.security.roles import BASIC_USER
    from fieldsync.store.store import Store
    from fieldsync.types import EntityRef

    p = build(Store.open(url))
    try:
        org = p.org
        role = org.role(
            "Technician",
            privileges={"account": {"read": "user", "create": "user", "write": "user"}},
        )
        basic = org.role_id(BASIC_USER)
        out = []
        for i in range(users):
            uid = org.user(f"live{i:05d}", roles=[basic, role])
            _, token = p.auth.create_api_token(uid, "bench")
            (account,) = p.records.create_many(
                "account",
                [{"name": f"live{i:05d} account", "ownerid": EntityRef("systemuser", uid)}],
            )
            out.append((str(uid), token, str(account)))
        p.offline.import_yaml(PROFILE)
        p.offline.publish("Mine")
        return out
    finally:
        p.close()


class Stream(asyncio.Protocol):
    """One device's live stream; counts ``ready`` and ``changes`` events as they arrive."""

    __slots__ = ("bench", "closed", "ready", "tail", "transport", "user")

    def __init__(self, bench: Bench, user: int) -> None:
        self.bench = bench
        self.user = user
        self.tail = b""
        self.ready = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self.bench.requests[self.user])

    def data_received(self, data: bytes) -> None:
        text = self.tail + data
        self.tail = text[-13:]  # shorter than a marker: none is counted twice
        if not self.ready.done():
            if b"event: ready" in text:
                self.ready.set_result(True)
            elif text.startswith(b"HTTP/1.1 ") and not text.startswith(b"HTTP/1.1 200"):
                self.ready.set_exception(RuntimeError(text[:200].decode(errors="replace")))
        for _ in range(text.count(b"event: changes")):
            self.bench.notice(self.user)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("closed before ready"))


class Bench:
    def __init__(self, port: int, users: list[tuple[str, str, str]]) -> None:
        self.port = port
        self.requests = [
            (
                f"GET /sync/v1/live?app={APP} HTTP/1.1\r\n"
                f"Host: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
                "Accept: text/event-stream\r\n\r\n"
            ).encode()
            for _, token, _ in users
        ]
        self.pending: set[int] = set()  # the users changed in this round
        self.arrivals: list[float] = []  # when their streams heard of it
        self.committed_at: float | None = None
        self.waiting = 0  # streams still to hear of this round
        self.per_user: dict[int, int] = {}
        self.stray = 0
        self.done = asyncio.Event()

    def notice(self, user: int) -> None:
        if user not in self.pending:
            self.stray += 1
            return
        self.arrivals.append(time.monotonic())
        self.waiting -= 1
        if self.waiting <= 0:
            self.done.set()

    def on_commit(self) -> None:  # the store's commit hook, in the writing thread
        if self.committed_at is None:
            self.committed_at = time.monotonic()

    async def connect(self, user: int) -> Stream:
        loop = asyncio.get_running_loop()
        _, stream = await loop.create_connection(lambda: Stream(self, user), "127.0.0.1", self.port)
        await stream.ready
        return stream


def open_records(url: str) -> Any:
    from fieldsync.platform import build
    from fieldsync.store.store import Store

    return build(Store.open(url))


def start(url: str, src: str | None) -> Server:
    """``fieldsync serve`` on this tree's code, or on the code in ``src`` (a baseline)."""
    if src is None:
        return Server(url)
    server = Server.__new__(Server)
    server.port, server.scheme = free_port(), "http"
    args = [sys.executable, "-m", "fieldsync.cli", "serve", "--database", url]
    args += ["--host", "127.0.0.1", "--port", str(server.port), "--log-level", "warning"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join((src, PATH.split(os.pathsep)[-1]))}
    server.proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while True:
        try:
            with socket.create_connection(("127.0.0.1", server.port), timeout=0.2):
                return server
        except OSError:
            if time.monotonic() > deadline or server.proc.poll() is not None:
                raise RuntimeError("the server did not start") from None
            time.sleep(0.1)


async def measure(
    url: str,
    users: list[tuple[str, str, str]],
    devices: int,
    args: argparse.Namespace,
    p: Any,
    src: str | None,
) -> dict[str, Any]:
    server = start(url, src)
    try:
        bench = Bench(server.port, users)
        first = await bench.connect(0)  # warm: imports, the plan, the listener, pools
        await asyncio.sleep(1.0)
        base_rss = rss_mb(server.proc.pid)
        started = time.monotonic()
        sem = asyncio.Semaphore(args.concurrency)
        streams: list[Stream] = [first]
        streams_of: dict[int, int] = {0: 1}
        failures: list[str] = []

        async def one(i: int) -> None:
            user = i % len(users)
            async with sem:
                try:
                    streams.append(await bench.connect(user))
                    streams_of[user] = streams_of.get(user, 0) + 1
                except (OSError, RuntimeError) as exc:
                    failures.append(str(exc)[:200])

        await asyncio.gather(*(one(i) for i in range(1, devices)))
        connect_s = time.monotonic() - started
        await asyncio.sleep(2.0)
        rss = rss_mb(server.proc.pid)
        connected = sum(1 for s in streams if not s.closed)

        cpu_before = cpu_seconds(server.proc.pid)
        window = time.monotonic()
        missed = 0
        latencies: list[float] = []
        p.store.committed.append(bench.on_commit)
        for _ in range(args.rounds):
            picked = random.sample(range(len(users)), min(args.changes, len(users)))
            bench.done.clear()
            bench.waiting = sum(streams_of.get(u, 0) for u in picked)
            now = time.monotonic()
            bench.pending = set(picked)
            bench.arrivals, bench.committed_at = [], None
            changes = [(users[u][2], {"description": f"round at {now}"}) for u in picked]
            await asyncio.to_thread(p.records.update_many, "account", changes)
            try:
                await asyncio.wait_for(bench.done.wait(), args.timeout)
            except TimeoutError:
                missed += bench.waiting
            bench.pending = set()
            assert bench.committed_at is not None
            latencies.extend(max(0.0, a - bench.committed_at) for a in bench.arrivals)
            await asyncio.sleep(args.pause)
        p.store.committed.remove(bench.on_commit)
        cpu = (cpu_seconds(server.proc.pid) - cpu_before) / (time.monotonic() - window)
        for s in streams:
            if s.transport is not None:
                s.transport.close()
        await asyncio.sleep(1.0)
        return {
            "code": src or "this tree",
            "devices": devices,
            "connected": connected,
            "failed": len(failures),
            "first_failure": failures[0] if failures else None,
            "connect_s": round(connect_s, 1),
            "rss_base_mb": round(base_rss, 1),
            "rss_mb": round(rss, 1),
            "kb_per_stream": round((rss - base_rss) * 1024 / max(1, connected - 1), 1),
            "changes_per_round": args.changes,
            "rounds": args.rounds,
            "p50_ms": round(percentile(latencies, 0.5) * 1000, 1),
            "p99_ms": round(percentile(latencies, 0.99) * 1000, 1),
            "max_ms": round(max(latencies, default=float("nan")) * 1000, 1),
            "samples": len(latencies),
            "missed": missed,
            "stray": bench.stray,
            "server_cpu_per_s": round(cpu, 2),
        }
    finally:
        server.proc.terminate()
        try:
            server.proc.wait(30)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait(30)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", default="2000,10000", help="stream counts, in one run")
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--changes", type=int, default=50, help="users changed per commit")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--pause", type=float, default=0.5, help="seconds between rounds")
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=200, help="connects in flight")
    parser.add_argument(
        "--pg", default=os.environ.get("PGURL", "postgresql://postgres@127.0.0.1:5432/postgres")
    )
    parser.add_argument(
        "--baseline-src",
        default=None,
        help="also measure a server running the code in this src directory, in the same run",
    )
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    counts = [int(c) for c in args.devices.split(",")]
    if not all(1 <= c <= 20_000 for c in counts) or not 1 <= args.users <= 20_000:
        parser.error("1 <= devices <= 20000 and 1 <= users <= 20000")
    problem = postgres_problem(args.pg)
    if problem:
        print(f"skipped: {problem}")
        return {"skipped": problem}
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # inherited by the server
    want = max(counts) + 1000
    if hard != resource.RLIM_INFINITY and hard < want:
        parser.error(f"the open-files hard limit {hard} is below {want}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), hard))
    load = os.getloadavg()
    print(f"load average at start: {load[0]:.2f} (2 cores are busy above 2)")
    results: list[dict[str, Any]] = []
    with ScratchDatabases.postgres(args.pg) as scratch:
        url = scratch.url("live")
        started = time.monotonic()
        users = seed(url, args.users)
        print(f"seeded {args.users} users in {time.monotonic() - started:.1f}s")
        p = open_records(url)
        try:
            for count in counts:
                for src in [args.baseline_src, None] if args.baseline_src else [None]:
                    result = asyncio.run(measure(url, users, count, args, p, src))
                    results.append(result)
                    print(json.dumps(result), flush=True)
        finally:
            p.close()
    report = {"load_average_start": load, "results": results}
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
