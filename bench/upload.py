"""Upload throughput through a server plugin, against SQLite ``executemany`` of the same rows
measured in the same run.

    python bench/upload.py                 # SQLite and PostgreSQL servers
    python bench/upload.py --no-pg         # SQLite only

For each server backend, a real ``fieldsync serve`` process (with ``bench/bench_plugin.py``:
a pre-operation plugin on every account create and update) serves a scratch database with
``--rows`` accounts, all owned by a technician whose role writes at user depth (so every row's
ownership is checked). The technician's device syncs them, then:

- **endpoint**: ``--changes`` updates (one column, a base version the device saw) sent as
  batches of 500 to ``/sync/v1/upload``, timed from the first request to the last answer;
  and the same number of creates;
- **device**: the same number of offline edits made through the SDK, then one timed
  ``Device.sync()`` (upload, settle, and the download of what changed).

Each figure is the median of ``--repeat`` runs. The baseline: ``sqlite3.executemany`` of the
same number of updates (and inserts) of the same accounts, in one transaction, on a SQLite
file seeded as the servers are (the same table and indexes), measured just before each run;
the ratios to it are medians of the runs' own ratios.
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from scratch import ScratchDatabases
from sync import PASSWORD, PROFILES, Server

BATCH = 500


def seed(url: str, rows: int) -> None:
    """A technician (Basic User: write at user depth; reads every account) who owns ``rows``
    accounts, and a published profile of them (app ``all``)."""
    from fieldsync.platform import build
    from fieldsync.security.roles import BASIC_USER
    from fieldsync.store.store import Store
    from fieldsync.types import EntityRef

    p = build(Store.open(url))
    try:
        org = p.org
        role = org.role("Bench reader", privileges={"account": {"read": "organization"}})
        tech = org.user("tech", password=PASSWORD, roles=[org.role_id(BASIC_USER), role])
        for first in range(0, rows, 10000):
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
                        "ownerid": EntityRef("systemuser", tech),
                    }
                    for i in range(first, min(rows, first + 10000))
                ],
            )
        p.offline.import_yaml(PROFILES.format(name="All", app="all", filter="{filter: all}"))
        p.offline.publish("Bench All")
    finally:
        p.close()


def phone(run: int, i: int) -> str:
    return f"+1  555 {run:02d}{i % 100:02d}"  # the plugin squeezes the double space


def post(device: Any, changes: list[dict[str, Any]]) -> float:
    """Seconds to upload ``changes`` in batches; every change must be applied."""
    http = device.http()
    start = time.perf_counter()
    for i in range(0, len(changes), BATCH):
        answer = http.call(
            "POST",
            "/sync/v1/upload",
            {"device": device.device_id, "app": device.app, "changes": changes[i : i + BATCH]},
        )
        bad = [r for r in answer["results"] if r["status"] != "applied"]
        assert not bad, bad[:3]
    return time.perf_counter() - start


def endpoint_updates(device: Any, ids: list[tuple[str, int]], run: int) -> float:
    changes = [
        {
            "id": str(uuid.uuid4()),
            "table": "account",
            "operation": "update",
            "record": rid,
            "values": {"telephone1": phone(run, i)},
            "base_version": version,
        }
        for i, (rid, version) in enumerate(ids)
    ]
    return post(device, changes)


def endpoint_creates(device: Any, count: int, run: int) -> float:
    changes = [
        {
            "id": str(uuid.uuid4()),
            "table": "account",
            "operation": "create",
            "record": str(uuid.uuid4()),
            "values": {"name": f"New {run}-{i}", "telephone1": phone(run, i)},
            "base_version": None,
        }
        for i in range(count)
    ]
    return post(device, changes)


def device_sync(device: Any, ids: list[str], run: int) -> float:
    for i, rid in enumerate(ids):
        device.update("account", rid, {"telephone1": phone(run + 50, i)})
    start = time.perf_counter()
    report = device.sync()
    seconds = time.perf_counter() - start
    assert report.uploaded == len(ids), report
    assert not report.rejected, report
    return seconds


class Baseline:
    """``sqlite3.executemany`` of the same updates and inserts, in one transaction each, on
    a SQLite file of the same accounts (the server's own schema and indexes)."""

    def __init__(self, path: Path, changes: int) -> None:
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.ids = [
            r[0] for r in self.db.execute("SELECT accountid FROM account LIMIT ?", (changes,))
        ]
        self.cols = [r[1] for r in self.db.execute("PRAGMA table_info(account)")]
        self.template = self.db.execute("SELECT * FROM account LIMIT 1").fetchone()
        self.runs = 0

    def measure(self) -> dict[str, float]:
        """Rows/s of one executemany of updates and one of inserts, and CPU seconds a row."""
        self.runs += 1
        run, cols = self.runs, self.cols
        params = [(phone(run, i), run + 10**9, rid) for i, rid in enumerate(self.ids)]
        start, cpu = time.perf_counter(), time.process_time()
        self.db.execute("BEGIN IMMEDIATE")
        self.db.executemany(
            "UPDATE account SET telephone1 = ?, modifiedon = CURRENT_TIMESTAMP, "
            "versionnumber = ? WHERE accountid = ?",
            params,
        )
        self.db.execute("COMMIT")
        update = len(params) / (time.perf_counter() - start)
        update_cpu = (time.process_time() - cpu) / len(params)
        rows = []
        for i in range(len(self.ids)):
            row = list(self.template)
            row[cols.index("accountid")] = uuid.uuid4().hex
            row[cols.index("name")] = f"New {run}-{i}"
            row[cols.index("telephone1")] = phone(run, i)
            row[cols.index("versionnumber")] = 2 * 10**9 + run * len(self.ids) + i
            rows.append(row)
        start, cpu = time.perf_counter(), time.process_time()
        self.db.execute("BEGIN IMMEDIATE")
        self.db.executemany(f"INSERT INTO account VALUES ({', '.join('?' * len(cols))})", rows)
        self.db.execute("COMMIT")
        return {
            "update": update,
            "insert": len(rows) / (time.perf_counter() - start),
            "update cpu": update_cpu,
            "insert cpu": (time.process_time() - cpu) / len(rows),
        }

    def close(self) -> None:
        self.db.close()


def run_backend(name: str, url: str, args: argparse.Namespace, base: Baseline) -> dict[str, float]:
    """Medians of the runs; each run's figures are also divided by the baseline measured
    just before it (the ratios' medians are reported: the machine's speed drifts)."""
    from fieldsync.client import Device

    t = time.perf_counter()
    seed(url, args.rows)
    print(f"[{name}] seeded {args.rows:,} accounts in {time.perf_counter() - t:.1f} s", flush=True)
    server = Server(url, plugin="bench_plugin")
    work = Path(tempfile.mkdtemp(prefix="fieldsync-bench-upload-"))
    out: dict[str, list[float]] = {}

    def keep(key: str, value: float) -> None:
        out.setdefault(key, []).append(value)

    try:
        device = Device.login(
            work / "device", server=server.url, username="tech", password=PASSWORD, app="all"
        )
        device.sync(page_size=5000)
        n = args.changes
        for run in range(args.repeat):
            rows = device.query("account", top=n)
            ids = [(str(r["accountid"]), int(r["versionnumber"])) for r in rows]
            b = base.measure()
            for key, value in b.items():
                keep(f"base {key}", value)
            cpu = server.cpu()
            keep("update", n / endpoint_updates(device, ids, run))
            keep("update cpu", (server.cpu() - cpu) / n)
            cpu = server.cpu()
            keep("create", n / endpoint_creates(device, n, run))
            keep("create cpu", (server.cpu() - cpu) / n)
            device.sync()  # take the endpoint's writes, so the next edits start from them
            keep("device", n / device_sync(device, [i for i, _ in ids], run))
            for key, against in (("update", "update"), ("create", "insert")):
                keep(f"{key} ratio", out[key][-1] / b[against])
                keep(f"{key} cpu ratio", b[f"{against} cpu"] / out[f"{key} cpu"][-1])
            keep("device ratio", out["device"][-1] / b["update"])
            print(
                f"[{name}] run {run + 1}: updates {out['update'][-1]:,.0f}/s "
                f"({out['update ratio'][-1]:.2f}x executemany {b['update']:,.0f}/s; server "
                f"CPU {out['update cpu'][-1] * 1e6:.0f} us a change, "
                f"{out['update cpu ratio'][-1]:.2f}x executemany's), creates "
                f"{out['create'][-1]:,.0f}/s ({out['create ratio'][-1]:.2f}x executemany "
                f"{b['insert']:,.0f}/s; server CPU {out['create cpu'][-1] * 1e6:.0f} us, "
                f"{out['create cpu ratio'][-1]:.2f}x), device sync {out['device'][-1]:,.0f}/s",
                flush=True,
            )
        device.close()
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    return {k: statistics.median(v) for k, v in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--changes", type=int, default=5_000, help="changes per figure")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--no-pg", action="store_true")
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    if args.changes > args.rows:
        parser.error("--changes must not exceed --rows")
    results: dict[str, dict[str, float]] = {}
    with ScratchDatabases.sqlite() as files:
        url = files.url("baseline")
        seed(url, args.rows)
        base = Baseline(Path(url.removeprefix("sqlite:///")), args.changes)
        backends = [("sqlite", ScratchDatabases.sqlite())]
        if not args.no_pg:
            backends.append(("postgresql", ScratchDatabases.postgres(args.pg)))
        for name, scratch in backends:
            with scratch:
                results[name] = run_backend(name, scratch.url("upload"), args, base)
        base.close()
    print(
        f"\nsummary: medians of {args.repeat} runs of {args.changes:,} changes; the baseline "
        "(SQLite executemany of the same rows) is measured before each run"
    )
    for name, r in results.items():
        for key, against in (("update", "update"), ("create", "insert")):
            print(
                f"  {name + ' upload, ' + key + 's':30} {r[key]:8,.0f}/s  {r[key + ' ratio']:.2f}x"
                f" (executemany {r['base ' + against]:,.0f}/s); server CPU "
                f"{r[key + ' cpu'] * 1e6:.0f} us a change = {1 / r[key + ' cpu']:,.0f}/s of "
                f"CPU, {r[key + ' cpu ratio']:.2f}x executemany's "
                f"({1 / r['base ' + against + ' cpu']:,.0f}/s of CPU)"
            )
        print(
            f"  {name + ' device sync of edits':30} {r['device']:8,.0f}/s  {r['device ratio']:.2f}x"
        )


if __name__ == "__main__":
    main()
