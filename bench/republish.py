"""Incremental republish: a filter change that moves 1 % of the rows in scope, against a full
initial sync of the same scope measured first, in the same run.

    python bench/republish.py            # SQLite and PostgreSQL (FIELDSYNC_BENCH_POSTGRES_URL
                                         #   or the test URL)
    python bench/republish.py --no-pg    # SQLite only

A five-table profile (``scope_world.py``: custom tables, 25,000 rows each, every row readable
by the user) takes the rows with ``new_amount lt 80`` of every table: 100,000 rows in scope.
A real ``fieldsync serve`` process serves it; a device (the SDK) signs in and syncs:

1. the full initial sync: bytes downloaded and seconds (the baseline);
2. a sync with nothing changed (what any sync costs);
3. the profile is republished with one table's filter changed to ``new_amount ge 2 and
   new_amount lt 82``: 500 rows leave and 500 enter, 1 % of the scope. The device's next
   sync: bytes and seconds, and their ratios to the baseline (the goal: at most 5 % of both).

The device's rows are checked against the new scope's count afterwards, and the sync must not
re-scope any table.

4. Replica migrations: 1, 2 and 4 integer columns are added to three other tables (20,000 rows
   in scope each) on the server; the device's next sync alters its tables and backfills only
   those columns. Printed per case: bytes and seconds of that sync (minus nothing: a
   no-change sync is printed above), and per row x new column, against re-downloading the
   table (a fifth of the full sync).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from scope_world import PASSWORD, amount_below, custom_item, profile_yaml, seed, table_names
from scratch import ScratchDatabases
from sync import Server

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"
TABLES = 5
PER_TABLE = 25_000
GOAL = 0.05


def items(names: list[str], changed: bool) -> dict[str, str]:
    out = {name: custom_item(name, amount_below(name, 80)) for name in names}
    if changed:
        out[names[0]] = custom_item(names[0], amount_below(names[0], 82, low=2))
    return out


def add_columns(url: str, table: str, count: int) -> None:
    """``count`` integer columns on ``table``, filled on every row (the values the device
    backfills)."""
    from fieldsync.platform import build
    from fieldsync.schema.model import Column, ColumnType
    from fieldsync.store.store import Store

    p = build(Store.open(url))
    try:
        for i in range(count):
            column = f"new_extra{i}"
            p.store.add_column(table, Column(column, ColumnType.INTEGER, display_name=column))
            with p.store.write() as conn:
                conn.exec_driver_sql(f'UPDATE "{table}" SET {column} = new_amount * {i + 7}')
    finally:
        p.close()


def timed_sync(device: Any) -> tuple[float, int, Any]:
    start = time.perf_counter()
    report = device.sync(files=False)
    return time.perf_counter() - start, report.bytes, report


def run(name: str, url: str, per_table: int = PER_TABLE) -> dict[str, float]:
    from fieldsync.client import Device
    from fieldsync.platform import build
    from fieldsync.store.store import Store

    p = build(Store.open(url))
    try:
        t = time.perf_counter()
        seed(
            p,
            tables=TABLES,
            rows=TABLES * per_table,
            users=1,
            passwords=1,
            depth="organization",
            progress=lambda *_: None,
        )
        names = table_names(TABLES)
        p.offline.import_yaml(profile_yaml("Bench republish", "republish", items(names, False)))
        p.offline.publish("Bench republish")
        print(
            f"[{name}] seeded {TABLES * per_table:,} rows in {time.perf_counter() - t:.1f} s",
            flush=True,
        )
    finally:
        p.close()
    server = Server(url)
    work = Path(tempfile.mkdtemp(prefix="fieldsync-bench-republish-"))
    try:
        device = Device.login(
            work / "device",
            server=server.url,
            username="user0",
            password=PASSWORD,
            app="republish",
        )
        full_s, full_b, report = timed_sync(device)
        rows = sum(report.downloaded.values())
        print(
            f"[{name}] full initial sync (baseline): {rows:,} rows, {full_b / 1e6:.2f} MB, "
            f"{full_s:.2f} s",
            flush=True,
        )
        idle = statistics.median(timed_sync(device)[0] for _ in range(5))
        print(
            f"[{name}] no-change sync: {idle * 1000:.0f} ms ({idle / full_s:.1%} of the baseline)",
            flush=True,
        )

        p = build(Store.open(url))
        try:
            p.offline.import_yaml(profile_yaml("Bench republish", "republish", items(names, True)))
            p.offline.publish("Bench republish")
        finally:
            p.close()
        moved_s, moved_b, report = timed_sync(device)
        held = len(device.query(names[0]))
        assert held == per_table * 80 // 100, held
        assert not report.rescoped, report.rescoped
        arrived = report.downloaded.get(names[0], 0)
        print(
            f"[{name}] republish moving 1% ({arrived} rows in, 500 out of {names[0]}): "
            f"{moved_b / 1e3:.1f} kB, {moved_s * 1000:.0f} ms; ratio to the full sync: "
            f"bytes {moved_b / full_b:.2%}, time {moved_s / full_s:.2%} "
            f"(goal: at most {GOAL:.0%} of each)",
            flush=True,
        )
        ok = moved_b / full_b <= GOAL and moved_s / full_s <= GOAL
        print(f"[{name}] {'within' if ok else 'OVER'} the goal", flush=True)

        table_b, table_s = full_b / TABLES, full_s / TABLES
        for table, count in ((names[1], 1), (names[2], 2), (names[3], 4)):
            add_columns(url, table, count)
            time.sleep(1.5)  # the server process reloads its schema within a second
            spent_s, spent_b, report = timed_sync(device)
            assert not report.rescoped, report.rescoped
            filled = report.backfilled.get(table, 0)
            cells = max(1, filled * count)
            print(
                f"[{name}] +{count} column(s) on {table}: backfilled {filled:,} rows, "
                f"{spent_b / 1e3:.0f} kB, {spent_s * 1000:.0f} ms; per row x column "
                f"{spent_b / cells:.1f} bytes, {spent_s / cells * 1e6:.1f} us; "
                f"vs re-downloading the table: bytes {spent_b / table_b:.1%}, "
                f"time {spent_s / table_s:.1%}",
                flush=True,
            )
        device.close()
        return {"full_s": full_s, "full_b": full_b, "moved_s": moved_s, "moved_b": moved_b}
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-pg", action="store_true", help="Skip PostgreSQL.")
    parser.add_argument("--no-sqlite", action="store_true", help="Skip SQLite.")
    parser.add_argument(
        "--per-table", type=int, default=PER_TABLE, help="Rows per table (quick runs)."
    )
    args = parser.parse_args()
    pg = os.environ.get("FIELDSYNC_BENCH_POSTGRES_URL") or os.environ.get(
        "FIELDSYNC_TEST_POSTGRES_URL", DEFAULT_PG
    )
    if not args.no_sqlite:
        with ScratchDatabases.sqlite() as dbs:
            url = dbs.url("republish")
            run("sqlite", url, args.per_table)
            dbs.discard(url)
    if not args.no_pg:
        with ScratchDatabases.postgres(pg) as dbs:
            url = dbs.url("republish")
            run("postgresql", url, args.per_table)
            dbs.discard(url)


if __name__ == "__main__":
    main()
