"""Live sync under load: many devices on one and on two ``fieldsync serve`` processes sharing
one PostgreSQL database, in the same run.

    python bench/load.py                               # 2,000 devices, 20 s per configuration
    python bench/load.py --devices 300 --seconds 5     # quicker

One asyncio process simulates the devices with raw HTTP (httpx), not with the device SDK, so
the client side stays cheap. Users are field technicians who read and edit their own accounts
(a profile of "my accounts"); each user has ``devices / users`` devices, all holding a live
stream, two of them also syncing: an *editor* that uploads edits and an *observer* that
downloads the tables a notice names. Devices are spread round-robin over the processes (the
load balancer's job). For each configuration it prints:

- connected devices (streams that said ``ready``) and how long connecting took;
- edits/s and syncs/s during the window (syncs: the observers' downloads on notice);
- change-to-device latency p50/p99: from sending an edit to each of the user's devices
  receiving the notice, and to the observer having downloaded the edited row;
- a closed-loop throughput: ``--workers`` devices syncing back to back (no-change delta
  downloads) for ``--burst`` seconds, in syncs/s;
- each server process's CPU seconds per second of the window and its resident memory.

Everything runs on loopback; counts and times are bounded by the options.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import resource
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

from scratch import ScratchDatabases, postgres_problem
from sync import Server

PASSWORD = "load-password-1"
APP = "mine"
PROFILE = """\
name: Mine
tables:
  account: {filter: other, owned_by: [me]}
apps:
  - {uniquename: mine, name: Mine, can_be_used_offline: true, mode: offline-first}
"""


def seed(url: str, users: int, accounts: int) -> list[str]:
    """``users`` technicians with ``accounts`` accounts each; returns their user names."""
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
        names = [f"tech{i:04d}" for i in range(users)]
        for name in names:
            uid = org.user(name, password=PASSWORD, roles=[basic, role])
            p.records.create_many(
                "account",
                [
                    {"name": f"{name} account {j}", "ownerid": EntityRef("systemuser", uid)}
                    for j in range(accounts)
                ],
            )
        p.offline.import_yaml(PROFILE)
        p.offline.publish("Mine")
        return names
    finally:
        p.close()


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@dataclass
class SyncDevice:
    """A device that syncs: registered, with a cursor for the accounts table."""

    user: str
    server: str
    token: str
    device: str = field(default_factory=lambda: uuid.uuid4().hex)
    cursor: str | None = None
    base: dict[str, int] = field(default_factory=dict)  # account id -> version

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def handshake(self, client: httpx.AsyncClient) -> None:
        body = {"device": self.device, "app": APP}
        r = await client.post(f"{self.server}/sync/v1/handshake", json=body, headers=self.headers())
        r.raise_for_status()

    async def download(self, client: httpx.AsyncClient) -> list[list[Any]]:
        rows: list[list[Any]] = []
        while True:
            body = {"device": self.device, "app": APP, "cursors": {"account": self.cursor}}
            r = await client.post(
                f"{self.server}/sync/v1/download", json=body, headers=self.headers()
            )
            r.raise_for_status()
            answer = orjson.loads(r.content)
            for page in answer["pages"]:
                self.cursor = page["cursor"]
                columns = page["columns"]
                for row in page["upserts"]:
                    rows.append(row)
                    record = dict(zip(columns, row, strict=True))
                    self.base[record["accountid"]] = record["versionnumber"]
            if not answer["more"]:
                return rows


class Run:
    """One configuration: the servers, the streams, the measurements."""

    def __init__(self, servers: list[Server], names: list[str], tokens: dict[str, str]) -> None:
        self.servers = servers
        self.names = names
        self.tokens = tokens
        self.connected = 0
        self.notices: list[float] = []
        self.to_row: list[float] = []
        self.edits: dict[str, float] = {}  # the edited name -> when the edit was sent
        self.sent: dict[str, list[float]] = {n: [] for n in names}  # per user, edits sent
        self.syncs = 0
        self.measuring = False
        self.observers: dict[str, SyncDevice] = {}

    async def stream(
        self, client: httpx.AsyncClient, user: str, server: str, observer: SyncDevice | None
    ) -> None:
        headers = {"Authorization": f"Bearer {self.tokens[user]}"}
        seen = 0
        try:
            async with client.stream(
                "GET", f"{server}/sync/v1/live", params={"app": APP}, headers=headers
            ) as response:
                response.raise_for_status()
                name = ""
                async for line in response.aiter_lines():
                    if line.startswith("event: "):
                        name = line[7:]
                        if name == "ready":
                            self.connected += 1
                    elif line.startswith("data: ") and name == "changes":
                        now = time.monotonic()
                        sent = self.sent[user]
                        if self.measuring:
                            self.notices.extend(now - t for t in sent[seen:])
                        seen = len(sent)
                        if observer is not None:
                            await self.on_notice(client, observer)
        except (httpx.HTTPError, asyncio.CancelledError):
            return

    async def on_notice(self, client: httpx.AsyncClient, observer: SyncDevice) -> None:
        rows = await observer.download(client)
        self.syncs += 1
        arrived = time.monotonic()
        for row in rows:
            for value in row:
                if isinstance(value, str) and value in self.edits:
                    sent = self.edits.pop(value)
                    if self.measuring:
                        self.to_row.append(arrived - sent)

    async def edit(self, client: httpx.AsyncClient, editor: SyncDevice) -> None:
        account, base = random.choice(list(editor.base.items()))
        name = f"{editor.user} edit {uuid.uuid4().hex[:8]}"
        change = {
            "id": str(uuid.uuid4()),
            "table": "account",
            "record": account,
            "operation": "update",
            "values": {"name": name},
            "base_version": base,
        }
        self.edits[name] = time.monotonic()
        self.sent[editor.user].append(self.edits[name])
        r = await client.post(
            f"{editor.server}/sync/v1/upload",
            json={"device": editor.device, "app": APP, "changes": [change]},
            headers=editor.headers(),
        )
        r.raise_for_status()
        result = orjson.loads(r.content)["results"][0]
        if result.get("version"):
            editor.base[account] = result["version"]


async def run_config(
    servers: list[Server], names: list[str], tokens: dict[str, str], args: argparse.Namespace
) -> dict[str, Any]:
    urls = [s.url for s in servers]
    run = Run(servers, names, tokens)
    limits = httpx.Limits(max_connections=args.devices + 500, max_keepalive_connections=500)
    timeout = httpx.Timeout(30.0, read=None)
    async with httpx.AsyncClient(limits=limits, timeout=timeout) as client:
        # the syncing devices: an editor and an observer per user, on different processes
        editors: list[SyncDevice] = []
        for i, user in enumerate(names):
            editor = SyncDevice(user, urls[i % len(urls)], tokens[user])
            observer = SyncDevice(user, urls[(i + 1) % len(urls)], tokens[user])
            run.observers[user] = observer
            editors.append(editor)
        sem = asyncio.Semaphore(32)

        async def prepare(d: SyncDevice) -> None:
            async with sem:
                await d.handshake(client)
                await d.download(client)

        await asyncio.gather(*(prepare(d) for d in [*editors, *run.observers.values()]))

        # the streams: every user's devices, round-robin over the processes
        start = time.monotonic()
        tasks = []
        for i in range(args.devices):
            user = names[i % len(names)]
            observer = run.observers[user] if i < len(names) else None
            url = observer.server if observer is not None else urls[i % len(urls)]
            tasks.append(asyncio.create_task(run.stream(client, user, url, observer)))
            if i % 100 == 99:
                await asyncio.sleep(0.05)
        while run.connected < args.devices and time.monotonic() - start < args.connect_timeout:
            await asyncio.sleep(0.1)
        connect_s = time.monotonic() - start
        await asyncio.sleep(1.0)

        # the window: edits at a steady rate
        pids = [s.proc.pid for s in servers]
        cpu_before = [cpu_seconds(p) for p in pids]
        run.measuring = True
        window = time.monotonic()
        sent = 0
        pending: set[asyncio.Task[None]] = set()
        while time.monotonic() - window < args.seconds:
            editor = editors[sent % len(editors)]
            task = asyncio.create_task(run.edit(client, editor))
            pending.add(task)
            task.add_done_callback(pending.discard)
            sent += 1
            await asyncio.sleep(max(0.0, window + sent / args.edits - time.monotonic()))
        edits_per_s = sent / (time.monotonic() - window)
        await asyncio.sleep(2.0)  # the last notices
        elapsed = time.monotonic() - window
        run.measuring = False
        cpu = [(cpu_seconds(p) - b) / elapsed for p, b in zip(pids, cpu_before, strict=True)]
        memory = [rss_mb(p) for p in pids]

        # closed-loop throughput: workers syncing back to back
        workers = list(itertools.islice(itertools.cycle(editors), args.workers))
        done = 0
        stop_at = time.monotonic() + args.burst

        async def worker(d: SyncDevice) -> None:
            nonlocal done
            while time.monotonic() < stop_at:
                await d.download(client)
                done += 1

        burst_start = time.monotonic()
        await asyncio.gather(*(worker(d) for d in workers))
        burst = done / (time.monotonic() - burst_start)

        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return {
        "processes": len(servers),
        "devices": args.devices,
        "connected": run.connected,
        "connect_s": round(connect_s, 1),
        "edits_per_s": round(edits_per_s, 1),
        "syncs_per_s": round(run.syncs / elapsed, 1),
        "notice_p50_ms": round(percentile(run.notices, 0.5) * 1000, 1),
        "notice_p99_ms": round(percentile(run.notices, 0.99) * 1000, 1),
        "notice_samples": len(run.notices),
        "row_p50_ms": round(percentile(run.to_row, 0.5) * 1000, 1),
        "row_p99_ms": round(percentile(run.to_row, 0.99) * 1000, 1),
        "row_samples": len(run.to_row),
        "burst_syncs_per_s": round(burst, 1),
        "server_cpu_per_s": [round(c, 2) for c in cpu],
        "server_rss_mb": [round(m) for m in memory],
    }


async def sign_in(url: str, names: list[str]) -> dict[str, str]:
    async with httpx.AsyncClient(timeout=60.0) as client:
        sem = asyncio.Semaphore(4)

        async def one(name: str) -> tuple[str, str]:
            async with sem:
                r = await client.post(
                    f"{url}/auth/token", data={"username": name, "password": PASSWORD}
                )
                r.raise_for_status()
                return name, str(r.json()["access_token"])

        return dict(await asyncio.gather(*(one(n) for n in names)))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=2000)
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--accounts", type=int, default=5, help="accounts per user")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured window")
    parser.add_argument("--edits", type=float, default=5.0, help="edits per second")
    parser.add_argument("--workers", type=int, default=16, help="closed-loop syncing devices")
    parser.add_argument("--burst", type=float, default=8.0, help="closed-loop seconds")
    parser.add_argument("--connect-timeout", type=float, default=120.0)
    parser.add_argument("--processes", default="1,2", help="configurations to run")
    parser.add_argument(
        "--pg", default=os.environ.get("PGURL", "postgresql://postgres@127.0.0.1:5432/postgres")
    )
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    if not 1 <= args.devices <= 10_000 or not 1 <= args.users <= args.devices:
        parser.error("1 <= users <= devices <= 10000")
    if not 0 < args.seconds <= 600 or not 0 < args.edits <= 1000:
        parser.error("0 < seconds <= 600 and 0 < edits <= 1000")
    problem = postgres_problem(args.pg)
    if problem:
        print(f"skipped: {problem}")
        return {"skipped": problem}
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(
        resource.RLIMIT_NOFILE, (min(hard, max(soft, args.devices * 2 + 1000)), hard)
    )
    load = os.getloadavg()
    print(f"load average at start: {load[0]:.2f} (2 cores are busy above 2)")
    results: list[dict[str, Any]] = []
    with ScratchDatabases.postgres(args.pg) as scratch:
        url = scratch.url("load")
        started = time.monotonic()
        names = seed(url, args.users, args.accounts)
        print(f"seeded {args.users} users in {time.monotonic() - started:.1f}s")
        tokens: dict[str, str] = {}
        for count in (int(c) for c in args.processes.split(",")):
            servers = [Server(url) for _ in range(count)]
            try:
                if not tokens:
                    tokens = asyncio.run(sign_in(servers[0].url, names))
                result = asyncio.run(run_config(servers, names, tokens, args))
            finally:
                for s in servers:
                    s.stop()
            results.append(result)
            print(json.dumps(result))
    report = {"load_average_start": load, "results": results}
    if len(results) == 2 and results[0]["burst_syncs_per_s"]:
        gain = results[1]["burst_syncs_per_s"] / results[0]["burst_syncs_per_s"]
        report["throughput_gain"] = round(gain, 2)
        print(f"closed-loop sync throughput, two processes / one: {gain:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
