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
same updates (and inserts), in one transaction, on a copy of the SQLite server's own file
(the same table and indexes), on this machine in the same run.
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


def baseline(path: Path, changes: int, repeat: int) -> dict[str, float]:
    """Rows/s of ``executemany`` updates (and inserts) of the same rows on a copy of the
    SQLite server's file: median of ``repeat``."""
    work = Path(tempfile.mkdtemp(prefix="fieldsync-bench-upload-")) / "copy.db"
    shutil.copy(path, work)
    db = sqlite3.connect(work, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    ids = [r[0] for r in db.execute("SELECT accountid FROM account LIMIT ?", (changes,))]
    cols = [r[1] for r in db.execute("PRAGMA table_info(account)")]
    template = db.execute("SELECT * FROM account LIMIT 1").fetchone()
    updates, inserts = [], []
    for run in range(repeat):
        params = [(phone(run, i), run + 10**9, rid) for i, rid in enumerate(ids)]
        start = time.perf_counter()
        db.execute("BEGIN IMMEDIATE")
        db.executemany(
            "UPDATE account SET telephone1 = ?, modifiedon = CURRENT_TIMESTAMP, "
            "versionnumber = ? WHERE accountid = ?",
            params,
        )
        db.execute("COMMIT")
        updates.append(len(params) / (time.perf_counter() - start))
        rows = []
        for i in range(len(ids)):
            row = list(template)
            row[cols.index("accountid")] = uuid.uuid4().hex
            row[cols.index("name")] = f"New {run}-{i}"
            row[cols.index("telephone1")] = phone(run, i)
            row[cols.index("versionnumber")] = 2 * 10**9 + run * len(ids) + i
            rows.append(row)
        start = time.perf_counter()
        db.execute("BEGIN IMMEDIATE")
        db.executemany(f"INSERT INTO account VALUES ({', '.join('?' * len(cols))})", rows)
        db.execute("COMMIT")
        inserts.append(len(rows) / (time.perf_counter() - start))
    db.close()
    shutil.rmtree(work.parent)
    return {"update": statistics.median(updates), "insert": statistics.median(inserts)}


def run_backend(name: str, url: str, args: argparse.Namespace) -> dict[str, float]:
    from fieldsync.client import Device

    t = time.perf_counter()
    seed(url, args.rows)
    print(f"[{name}] seeded {args.rows:,} accounts in {time.perf_counter() - t:.1f} s", flush=True)
    server = Server(url, plugin="bench_plugin")
    work = Path(tempfile.mkdtemp(prefix="fieldsync-bench-upload-"))
    out: dict[str, list[float]] = {"update": [], "create": [], "device": [], "cpu": []}
    try:
        device = Device.login(
            work / "device", server=server.url, username="tech", password=PASSWORD, app="all"
        )
        device.sync(page_size=5000)
        n = args.changes
        for run in range(args.repeat):
            rows = device.query("account", top=n)
            ids = [(str(r["accountid"]), int(r["versionnumber"])) for r in rows]
            cpu = server.cpu()
            seconds = endpoint_updates(device, ids, run)
            out["cpu"].append((server.cpu() - cpu) / n)
            out["update"].append(n / seconds)
            out["create"].append(n / endpoint_creates(device, n, run))
            device.sync()  # take the endpoint's writes, so the next edits start from them
            out["device"].append(n / device_sync(device, [i for i, _ in ids], run))
            print(
                f"[{name}] run {run + 1}: updates {out['update'][-1]:,.0f}/s, creates "
                f"{out['create'][-1]:,.0f}/s, device sync {out['device'][-1]:,.0f}/s, server "
                f"CPU {out['cpu'][-1] * 1e6:.0f} us/update",
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
    base: dict[str, float] = {}
    backends = [("sqlite", ScratchDatabases.sqlite())]
    if not args.no_pg:
        backends.append(("postgresql", ScratchDatabases.postgres(args.pg)))
    for name, scratch in backends:
        with scratch:
            url = scratch.url("upload")
            results[name] = run_backend(name, url, args)
            if name == "sqlite":
                base = baseline(Path(url.removeprefix("sqlite:///")), args.changes, args.repeat)
                print(
                    f"[baseline] SQLite executemany of the same rows: updates "
                    f"{base['update']:,.0f}/s, inserts {base['insert']:,.0f}/s",
                    flush=True,
                )
    print(f"\nsummary: medians of {args.repeat} runs of {args.changes:,} changes (changes/s)")
    print(f"  {'baseline: SQLite executemany update':44} {base['update']:10,.0f}")
    print(f"  {'baseline: SQLite executemany insert':44} {base['insert']:10,.0f}")
    for name, r in results.items():
        print(
            f"  {name + ' upload, updates':44} {r['update']:10,.0f}"
            f"  ({r['update'] / base['update']:.2f}x executemany; server CPU "
            f"{r['cpu'] * 1e6:.0f} us/change)"
        )
        print(
            f"  {name + ' upload, creates':44} {r['create']:10,.0f}"
            f"  ({r['create'] / base['insert']:.2f}x executemany)"
        )
        print(
            f"  {name + ' device sync of offline edits':44} {r['device']:10,.0f}"
            f"  ({r['device'] / base['update']:.2f}x executemany)"
        )


if __name__ == "__main__":
    main()
