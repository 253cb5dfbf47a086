"""Sync throughput and cost, against this machine's raw pipeline limit measured in the same run.

    python bench/sync.py                   # 100k and 1M rows, SQLite and PostgreSQL
    python bench/sync.py --big 0 --no-pg   # quicker: 100k rows on SQLite only

For each server backend, a real ``fieldsync serve`` process on a loopback port serves a scratch
database seeded with accounts; a device (the SDK, in a child process so its peak memory is its
own) signs in and syncs. Printed:

- initial sync rows/s for the 100k and 1M-row scopes, and the ratio to the raw end-to-end
  limit of ``../shared/bench/limits.py`` (run first, same machine, same run);
- the device's peak memory (max RSS) during each initial sync;
- a no-change sync with 1k and with 100k rows in scope (median of repeats), and their ratio;
- a sync of 100 server changes inside the 100k scope;
- upload throughput (changes/s) through a server plugin.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from scratch import ScratchDatabases

ROOT = Path(__file__).resolve().parents[1]
LIMITS = ROOT.parent / "shared" / "bench" / "limits.py"
# the server and device processes run this tree's code (not whatever the venv installed)
CODE = os.pathsep.join([str(ROOT / "src"), str(ROOT / "bench")])
PASSWORD = "bench-password-1"
PROFILES = """\
name: Bench {name}
tables:
  account: {filter}
apps:
  - {{uniquename: {app}, name: Bench {name}, can_be_used_offline: true, mode: offline-first}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def seed(url: str, rows: int, owned: int) -> None:
    """A technician who reads every account; ``rows`` accounts, ``owned`` of them theirs; two
    published profiles: every account (app ``all``) and the technician's own (app ``mine``)."""
    from fieldsync.platform import build
    from fieldsync.security.roles import BASIC_USER
    from fieldsync.store.store import Store

    p = build(Store.open(url))
    try:
        org = p.org
        role = org.role("Bench reader", privileges={"account": {"read": "organization"}})
        tech = org.user("tech", password=PASSWORD, roles=[org.role_id(BASIC_USER), role])
        other = org.user("other")
        add_accounts(p, 0, rows, lambda i: tech if i < owned else other)
        for app, name, flt in (
            ("all", "All", "{filter: all}"),
            ("mine", "Mine", "{filter: other, owned_by: [me]}"),
        ):
            p.offline.import_yaml(PROFILES.format(name=name, app=app, filter=flt))
            p.offline.publish(f"Bench {name}")
    finally:
        p.close()


def add_accounts(p: Any, start: int, stop: int, owner: Any) -> None:
    """Accounts ``start`` … ``stop - 1``, owned by ``owner(i)``, in batches."""
    from fieldsync.types import EntityRef

    for first in range(start, stop, 10000):
        p.records.create_many(
            "account",
            [
                {
                    "name": f"Account {i:07d}",
                    "accountnumber": f"A{i:07d}",
                    "telephone1": "+1 555 0100",
                    "emailaddress1": f"a{i}@example.com",
                    "address1_city": "Springfield",
                    "numberofemployees": i % 500,
                    "description": "A customer of the bench. " * 6,
                    "ownerid": EntityRef("systemuser", owner(i)),
                }
                for i in range(first, min(stop, first + 10000))
            ],
        )


class Server:
    """``fieldsync serve`` in a child process on a loopback port."""

    def __init__(self, url: str, plugin: str | None = None, tls: Any = None) -> None:
        self.port = free_port()
        self.scheme = "https" if tls is not None else "http"
        args = [sys.executable, "-m", "fieldsync.cli", "serve", "--database", url]
        args += ["--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning"]
        if plugin:
            args += ["--plugin", plugin]
        if tls is not None:
            args += ["--ssl-certfile", str(tls.cert), "--ssl-keyfile", str(tls.key)]
        env = {**os.environ, "PYTHONPATH": CODE}
        self.proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("the server did not start") from None
                time.sleep(0.1)

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


def child_initial_sync(server: str, app: str, directory: str) -> None:
    """Run in a child process: log in, sync once, print rows, seconds and peak RSS."""
    from fieldsync.client import Device

    device = Device.login(directory, server=server, username="tech", password=PASSWORD, app=app)
    start = time.perf_counter()
    report = device.sync(page_size=5000)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"rows": sum(report.downloaded.values()), "seconds": seconds, "mb": peak}))


def initial_sync(server: Server, app: str, directory: Path) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", server.url, app, str(directory)],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": CODE},
    )
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def no_change(device: Any, repeat: int = 15) -> float:
    device.sync()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        device.sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run_backend(name: str, url: str, rows: int, big: int, results: dict[str, Any]) -> None:
    from fieldsync.client import Device
    from fieldsync.platform import build
    from fieldsync.store.store import Store

    work = Path(tempfile.mkdtemp(prefix="fieldsync-bench-sync-"))
    t = time.perf_counter()
    seed(url, rows, owned=1000)
    print(f"[{name}] seeded {rows:,} accounts in {time.perf_counter() - t:.1f} s", flush=True)
    server = Server(url, plugin="bench_plugin")
    try:
        first = initial_sync(server, "all", work / "all")
        results[f"{name} initial {rows}"] = first
        print(
            f"[{name}] initial sync {rows:,} rows: {first['rows'] / first['seconds']:,.0f} rows/s"
            f", device peak {first['mb']:.0f} MB",
            flush=True,
        )
        big_dev = Device(work / "all")
        small_dev = Device.login(
            work / "mine", server=server.url, username="tech", password=PASSWORD, app="mine"
        )
        small_dev.sync()
        small = no_change(small_dev)
        large = no_change(big_dev)
        results[f"{name} no-change 1k"] = small
        results[f"{name} no-change {rows}"] = large
        print(
            f"[{name}] no-change sync: 1k in scope {small * 1000:.1f} ms, {rows:,} in scope "
            f"{large * 1000:.1f} ms (ratio {large / small:.2f})",
            flush=True,
        )
        p = build(Store.open(url))
        try:
            ids = [r["accountid"] for r in p.records.retrieve_multiple("account", limit=100)]
            p.records.update_many("account", [(i, {"telephone1": "+1 555 0199"}) for i in ids])
        finally:
            p.close()
        start = time.perf_counter()
        report = big_dev.sync()
        hundred = time.perf_counter() - start
        assert report.downloaded["account"] == 100, report.downloaded
        results[f"{name} 100 changes in {rows}"] = hundred
        print(f"[{name}] sync of 100 changes in {rows:,}: {hundred * 1000:.1f} ms", flush=True)
        local = [r["accountid"] for r in small_dev.query("account", top=1000)]
        for rid in local:
            small_dev.update("account", rid, {"telephone1": "+1 555 0142"})
        start = time.perf_counter()
        report = small_dev.sync()
        upload = time.perf_counter() - start
        assert report.uploaded == len(local), report
        results[f"{name} upload changes/s"] = len(local) / upload
        print(
            f"[{name}] upload through a plugin: {len(local) / upload:,.0f} changes/s",
            flush=True,
        )
        big_dev.close()
        small_dev.close()
    finally:
        server.stop()
    if big:
        seed_more(url, rows, big)
        server = Server(url)
        try:
            huge = initial_sync(server, "all", work / "huge")
            results[f"{name} initial {big}"] = huge
            print(
                f"[{name}] initial sync {huge['rows']:,.0f} rows: "
                f"{huge['rows'] / huge['seconds']:,.0f} rows/s, device peak {huge['mb']:.0f} MB",
                flush=True,
            )
        finally:
            server.stop()


def seed_more(url: str, have: int, want: int) -> None:
    from fieldsync.platform import build
    from fieldsync.store.store import Store

    p = build(Store.open(url))
    try:
        other = p.org.user_id("other")
        t = time.perf_counter()
        add_accounts(p, have, want, lambda i: other)
        print(f"seeded up to {want:,} accounts in {time.perf_counter() - t:.1f} s", flush=True)
    finally:
        p.close()


def raw_limit(rows: int, pg: str | None) -> float | None:
    if not LIMITS.exists():
        print(f"{LIMITS} is missing: no raw limit to compare with")
        return None
    out = Path(tempfile.mkdtemp()) / "limits.json"
    args = [sys.executable, str(LIMITS), "--rows", str(rows), "--repeat", "1", "--json", str(out)]
    args += ["--pg", pg] if pg else ["--no-pg"]
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL)
    data = json.loads(out.read_text())
    limit = data.get("limit") or {}
    value = limit.get("rows_per_s")
    print(f"raw pipeline limit ({limit.get('key')}): {value:,} rows/s", flush=True)
    return float(value) if value else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--big", type=int, default=1_000_000, help="0 skips the big scope")
    parser.add_argument("--no-pg", action="store_true")
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_initial_sync(*args.child)
        return
    limit = raw_limit(args.rows, None if args.no_pg else args.pg)
    results: dict[str, Any] = {}
    backends = [("sqlite", ScratchDatabases.sqlite())]
    if not args.no_pg:
        backends.append(("postgresql", ScratchDatabases.postgres(args.pg)))
    for name, scratch in backends:
        with scratch:
            url = scratch.url("sync")
            run_backend(name, url, args.rows, args.big, results)
    print("\nsummary")
    for key, value in results.items():
        if isinstance(value, dict):
            rate = value["rows"] / value["seconds"]
            ratio = f"  {rate / limit:.2f}x the raw limit" if limit else ""
            print(f"  {key:34} {rate:10,.0f} rows/s{ratio}  device peak {value['mb']:.0f} MB")
        elif "changes/s" in key:
            print(f"  {key:34} {value:10,.0f}")
        else:
            print(f"  {key:34} {value * 1000:10.1f} ms")


if __name__ == "__main__":
    main()
