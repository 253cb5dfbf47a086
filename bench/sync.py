"""Sync throughput and cost, against this machine's raw pipeline limit measured in the same run.

    python bench/sync.py                   # 100k and 1M rows, SQLite and PostgreSQL
    python bench/sync.py --big 0 --no-pg   # quicker: 100k rows on SQLite only
    python bench/sync.py --filtered-only --no-limit   # only the filtered scopes at the big size

For each server backend, a real ``fieldsync serve`` process on a loopback port serves a scratch
database seeded with accounts; a device (the SDK, in a child process so its peak memory is its
own) signs in and syncs. Printed:

- initial sync rows/s and MB/s (of the JSON the device received) for the 100k and 1M-row
  scopes, median of ``--repeat`` runs, and the ratio to the raw end-to-end limit of
  ``../shared/bench/limits.py`` (run first, same machine, same run; ``--limits`` names the
  script). Two tables: ``account`` (about 30 travelling columns) and ``new_benchrow``, which
  travels exactly the limit's 13 columns (3 ids, 2 times, 3 integers, 5 strings of the same
  lengths), so that its ratio compares like with like;
- the CPU seconds the server process and the device spent on each initial sync (the figure to
  trust when the machine is busy), and the device's peak memory (max RSS);
- filtered scopes at the big size: a user's own accounts (2% of the table, owner filter) and
  the same rows through a custom FetchXML filter with a link-entity, against the same number
  of rows synced alone from a table that holds only them;
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
NARROW = "new_benchrow"
# the server and the device run this tree's code, whatever the environment installed
PATH = os.pathsep.join(
    (os.environ.get("FIELDSYNC_BENCH_SRC", str(ROOT / "src")), str(ROOT / "bench"))
)
WORDS = [
    "account",
    "customer",
    "renewal",
    "contract",
    "quarterly",
    "pipeline",
    "invoice",
    "shipment",
    "warehouse",
    "regional",
    "partner",
    "support",
    "escalation",
    "onboarding",
    "discount",
    "priority",
    "delivery",
    "service",
    "agreement",
    "pending",
    "review",
    "approved",
    "follow",
    "call",
    "meeting",
    "proposal",
    "budget",
    "forecast",
    "the",
    "and",
    "with",
    "for",
]
CITIES = ("Oslo", "Lyon", "Austin", "Pune", "Osaka", "Lagos", "Porto", "Denver", "Leeds")
LINKED_FILTER = """\
<fetch>
  <entity name="account">
    <filter>
      <link-entity name="systemuser" from="systemuserid" to="ownerid" link-type="any">
        <filter><condition attribute="domainname" operator="eq" value="tech" /></filter>
      </link-entity>
    </filter>
  </entity>
</fetch>"""
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


def seed(url: str, rows: int, owned: int, narrow: int = 0) -> None:
    """A technician who reads every account; ``rows`` accounts, ``owned`` of them theirs;
    ``narrow`` rows of the 13-column table. Published profiles: every account (app ``all``),
    the technician's own (app ``mine``: owner filter; app ``linked``: the same rows through
    a link-entity to their owner), every 13-column row (app ``narrow``)."""
    from fieldsync.platform import build
    from fieldsync.schema.model import Column, ColumnType, define_table
    from fieldsync.security.roles import BASIC_USER
    from fieldsync.store.store import Store

    p = build(Store.open(url))
    try:
        # 8 system columns (3 ids, 2 times, 3 integers) and 5 strings: the limit's 13
        p.store.create_table(
            define_table(
                NARROW,
                ownership="organization",
                offline=True,
                columns=[
                    Column("name", ColumnType.STRING, max_length=100),
                    Column("email", ColumnType.STRING, max_length=100),
                    Column("phone", ColumnType.STRING, max_length=50),
                    Column("city", ColumnType.STRING, max_length=80),
                    Column("description", ColumnType.MEMO, max_length=2000),
                ],
            )
        )
        org = p.org
        role = org.role(
            "Bench reader",
            privileges={"account": {"read": "organization"}, NARROW: {"read": "organization"}},
        )
        tech = org.user("tech", password=PASSWORD, roles=[org.role_id(BASIC_USER), role])
        other = org.user("other")
        add_accounts(p, 0, rows, lambda i: tech if i < owned else other)
        add_narrow(p, 0, narrow)
        linked = "{filter: custom, custom_filter: " + json.dumps(LINKED_FILTER) + "}"
        for app, name, flt, table in (
            ("all", "All", "{filter: all}", "account"),
            ("mine", "Mine", "{filter: other, owned_by: [me]}", "account"),
            ("linked", "Linked", linked, "account"),
            ("narrow", "Narrow", "{filter: all}", NARROW),
        ):
            yaml = PROFILES.format(name=name, app=app, filter=flt)
            p.offline.import_yaml(yaml.replace("  account:", f"  {table}:"))
            p.offline.publish(f"Bench {name}")
    finally:
        p.close()


def add_narrow(p: Any, start: int, stop: int) -> None:
    """Rows ``start`` … ``stop - 1`` of the 13-column table: about the limit's row sizes."""
    import random

    rnd = random.Random(start)
    for first in range(start, stop, 10000):
        p.records.create_many(
            NARROW,
            [
                {
                    "name": f"Northwind Contoso Bank #{i:07d}",
                    "email": f"ana.garcia{i % 1000}@example.com",
                    "phone": f"+1 {rnd.randint(200, 989)}-555-{rnd.randrange(10000):04d}",
                    "city": rnd.choice(CITIES),
                    "description": " ".join(rnd.choices(WORDS, k=45))[:200].ljust(200, "."),
                }
                for i in range(first, min(stop, first + 10000))
            ],
        )


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
        env = {**os.environ, "PYTHONPATH": PATH}
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

    def cpu(self) -> float:
        """CPU seconds (user + system) the server process has used so far."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


def child_initial_sync(server: str, app: str, directory: str) -> None:
    """Run in a child process: log in, sync once, print rows, bytes, seconds, CPU seconds and
    peak RSS."""
    from fieldsync.client import Device

    device = Device.login(directory, server=server, username="tech", password=PASSWORD, app=app)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    report = device.sync(page_size=5000)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = after.ru_utime + after.ru_stime - usage.ru_utime - usage.ru_stime
    result = {
        "rows": sum(report.downloaded.values()),
        "bytes": report.bytes,
        "seconds": seconds,
        "cpu": cpu,
        "mb": after.ru_maxrss / 1024,
    }
    print(json.dumps(result))


def initial_sync(server: Server, app: str, directory: Path, repeat: int = 1) -> dict[str, float]:
    """The median of ``repeat`` initial syncs, each into a new device directory."""
    runs = []
    for n in range(repeat):
        cpu = server.cpu()
        out = subprocess.run(
            [sys.executable, __file__, "--child", server.url, app, f"{directory}-{n}"],
            check=True,
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": PATH},
        )
        run: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
        run["server_cpu"] = server.cpu() - cpu
        runs.append(run)
    runs.sort(key=lambda r: r["seconds"])
    median = dict(runs[len(runs) // 2])
    median["runs"] = len(runs)
    median["mb"] = max(r["mb"] for r in runs)
    return median


def rate(result: dict[str, float]) -> str:
    rows_s = result["rows"] / result["seconds"]
    mb_s = result["bytes"] / result["seconds"] / 1e6
    per_row = 1e6 / result["rows"]
    return (
        f"{result['rows']:,.0f} rows: {rows_s:,.0f} rows/s, {mb_s:.1f} MB/s"
        f" ({result['bytes'] / result['rows']:.0f} B/row), CPU server"
        f" {result['server_cpu'] * per_row:.1f} us/row, device {result['cpu'] * per_row:.1f}"
        f" us/row, device peak {result['mb']:.0f} MB"
    )


def no_change(device: Any, server: Server, repeat: int = 15) -> tuple[float, float]:
    """The median wall time of a no-change sync, and the server's CPU seconds per sync."""
    device.sync()
    times = []
    cpu = server.cpu()
    for _ in range(repeat):
        start = time.perf_counter()
        device.sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times), (server.cpu() - cpu) / repeat


def run_backend(
    name: str, url: str, scratch: Any, args: argparse.Namespace, results: dict[str, Any]
) -> None:
    rows, big = args.rows, args.big
    work = Path(tempfile.mkdtemp(prefix="fieldsync-bench-sync-"))
    t = time.perf_counter()
    seed(url, rows, owned=1000, narrow=0 if args.filtered_only else rows)
    print(
        f"[{name}] seeded {rows:,} accounts and 13-column rows in {time.perf_counter() - t:.1f} s"
    )
    if not args.filtered_only:
        run_small(name, url, args, results, work)
    if big:
        run_filtered(name, url, scratch, args, results, work)


def run_small(
    name: str, url: str, args: argparse.Namespace, results: dict[str, Any], work: Path
) -> None:
    """Initial syncs at ``--rows``, no-change syncs, 100 changes, uploads."""
    from fieldsync.client import Device
    from fieldsync.platform import build
    from fieldsync.store.store import Store

    rows = args.rows
    server = Server(url, plugin="bench_plugin")
    try:
        narrow = initial_sync(server, "narrow", work / "narrow", args.repeat)
        results[f"{name} initial 13 cols {rows}"] = narrow
        print(f"[{name}] initial sync, 13 columns, {rate(narrow)}", flush=True)
        first = initial_sync(server, "all", work / "all", args.repeat)
        results[f"{name} initial {rows}"] = first
        print(f"[{name}] initial sync, accounts, {rate(first)}", flush=True)
        big_dev = Device(work / "all-0")
        small_dev = Device.login(
            work / "mine", server=server.url, username="tech", password=PASSWORD, app="mine"
        )
        small_dev.sync()
        small, small_cpu = no_change(small_dev, server, args.syncs)
        large, large_cpu = no_change(big_dev, server, args.syncs)
        results[f"{name} no-change 1k"] = small
        results[f"{name} no-change {rows}"] = large
        results[f"{name} no-change 1k, server CPU"] = small_cpu
        print(
            f"[{name}] no-change sync: 1k in scope {small * 1000:.1f} ms (server CPU "
            f"{small_cpu * 1000:.1f} ms), {rows:,} in scope {large * 1000:.1f} ms (server CPU "
            f"{large_cpu * 1000:.1f} ms; ratio {large / small:.2f})",
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


def run_filtered(
    name: str,
    url: str,
    scratch: Any,
    args: argparse.Namespace,
    results: dict[str, Any],
    work: Path,
) -> None:
    """The big scope: every account, then the technician's 2% by owner filter and by a
    link-entity filter, against the same rows synced alone."""
    rows, big = args.rows, args.big
    owned = seed_more(url, rows, big, args.big_narrow)
    server = Server(url)
    try:
        if args.big_narrow:
            huge = initial_sync(server, "narrow", work / "huge-narrow")
            results[f"{name} initial 13 cols {big}"] = huge
            print(f"[{name}] initial sync, 13 columns, {rate(huge)}", flush=True)
        if not args.filtered_only:
            huge = initial_sync(server, "all", work / "huge")
            results[f"{name} initial {big}"] = huge
            print(f"[{name}] initial sync, accounts, {rate(huge)}", flush=True)
        mine = initial_sync(server, "mine", work / "big-mine", args.repeat)
        linked = initial_sync(server, "linked", work / "big-linked", args.repeat)
    finally:
        server.stop()
    assert mine["rows"] == owned == linked["rows"], (mine, linked, owned)
    alone_url = scratch.url("alone")
    seed(alone_url, owned, owned=owned)
    server = Server(alone_url)
    try:
        alone = initial_sync(server, "mine", work / "alone", args.repeat)
    finally:
        server.stop()
    share = f"{owned:,} of {big:,}"
    results[f"{name} owner filter, {share}"] = mine
    results[f"{name} link-entity filter, {share}"] = linked
    results[f"{name} {owned:,} rows synced alone"] = alone
    for label, found in (("owner filter", mine), ("link-entity filter", linked)):
        print(
            f"[{name}] {label}, {share} rows: {found['seconds']:.2f} s, the same rows alone "
            f"{alone['seconds']:.2f} s: {found['seconds'] / alone['seconds']:.2f}x",
            flush=True,
        )


def seed_more(url: str, have: int, want: int, narrow: bool) -> int:
    """Accounts up to ``want``, every 50th the technician's (2% of the table in all); with
    ``narrow``, 13-column rows up to ``want`` too. Returns how many accounts are theirs."""
    from fieldsync.platform import build
    from fieldsync.store.store import Store

    p = build(Store.open(url))
    try:
        tech, other = p.org.user_id("tech"), p.org.user_id("other")
        owned = want // 50
        t = time.perf_counter()
        # the first 1,000 are theirs already; every 50th of the rest makes up the 2%
        step = (want - have) // (owned - 1000)
        add_accounts(
            p,
            have,
            want,
            lambda i: (
                tech if (i - have) % step == 0 and i < have + step * (owned - 1000) else other
            ),
        )
        if narrow:
            add_narrow(p, have, want)
        print(f"seeded up to {want:,} rows in {time.perf_counter() - t:.1f} s", flush=True)
        return owned
    finally:
        p.close()


def raw_limit(path: Path, rows: int, pg: str | None) -> dict[str, Any] | None:
    if not path.exists():
        print(f"{path} is missing: no raw limit to compare with (give --limits)")
        return None
    out = Path(tempfile.mkdtemp()) / "limits.json"
    args = [sys.executable, str(path), "--rows", str(rows), "--repeat", "3", "--json", str(out)]
    args += ["--pg", pg] if pg else ["--no-pg"]
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL)
    data = json.loads(out.read_text())
    limit = data.get("limit") or {}
    value = limit.get("rows_per_s")
    if not value:
        return None
    bpr = float(data["bytes_per_row_ndjson"])
    print(
        f"raw pipeline limit ({limit.get('key')}): {value:,} rows/s, {value * bpr / 1e6:.1f} MB/s"
        f" ({bpr:.0f} B/row), steal {data.get('machine_steal_share', 0):.0%}",
        flush=True,
    )
    return {"rows_per_s": float(value), "bytes_per_row": bpr}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--big", type=int, default=1_000_000, help="0 skips the big scope")
    parser.add_argument(
        "--big-narrow", action="store_true", help="the 13-column table at the big size too"
    )
    parser.add_argument("--repeat", type=int, default=3, help="initial syncs per figure")
    parser.add_argument("--syncs", type=int, default=50, help="no-change syncs per figure")
    parser.add_argument("--no-pg", action="store_true")
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--limits", type=Path, default=LIMITS, help="the raw limit's script")
    parser.add_argument("--no-limit", action="store_true", help="skip the raw limit")
    parser.add_argument(
        "--filtered-only",
        action="store_true",
        help="only the filtered scopes at the big size (owner and link-entity filters)",
    )
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_initial_sync(*args.child)
        return
    limit = None
    if not args.no_limit:
        limit = raw_limit(args.limits, args.rows, None if args.no_pg else args.pg)
    results: dict[str, Any] = {}
    backends = [("sqlite", ScratchDatabases.sqlite())]
    if not args.no_pg:
        backends.append(("postgresql", ScratchDatabases.postgres(args.pg)))
    for name, scratch in backends:
        with scratch:
            run_backend(name, scratch.url("sync"), scratch, args, results)
    print("\nsummary (initial syncs: median of the runs; MB/s of the JSON received)")
    for key, value in results.items():
        if isinstance(value, dict):
            rows_s = value["rows"] / value["seconds"]
            mb_s = value["bytes"] / value["seconds"] / 1e6
            ratio = f"  {rows_s / limit['rows_per_s']:.2f}x the raw limit" if limit else ""
            print(
                f"  {key:40} {rows_s:10,.0f} rows/s {mb_s:6.1f} MB/s{ratio}"
                f"  device peak {value['mb']:.0f} MB"
            )
        elif "changes/s" in key:
            print(f"  {key:40} {value:10,.0f}")
        else:
            print(f"  {key:40} {value * 1000:10.1f} ms")
    if limit:
        print(
            f"  {'raw limit (same run)':40} {limit['rows_per_s']:10,.0f} rows/s "
            f"{limit['rows_per_s'] * limit['bytes_per_row'] / 1e6:6.1f} MB/s"
        )


if __name__ == "__main__":
    main()
