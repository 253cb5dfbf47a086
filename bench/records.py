"""Throughput of the records service's batched writes, next to a raw SQLAlchemy baseline.

    python bench/records.py [--rows N] [--batch N] [--repeat N] [--pg URL | --no-pg]
                            [--json PATH]

For each backend (a SQLite file in a temporary directory; PostgreSQL in scratch schemas that
the bench creates and drops) it measures, on realistic ``account`` rows:

- create: ``Records.create_many("account", batch)`` for each batch, against the baseline
  ``conn.execute(table.insert(), rows)`` of the same rows already in their final SQL form
  (system columns, owner, state, version number included), one transaction per batch;
- update: ``Records.update_many("account", [(id, values), ...])`` for each batch, against
  ``conn.execute(table.update().where(pk == bindparam(...)), params)``.

Service and baseline write into separate, identical stores (fresh ones for every repeat); the
best of ``--repeat`` runs is kept. After the first run the two tables are compared column by
column (timestamps and versions aside), so the baseline keeps writing the same rows as the
service. The baseline writes no change log: the service's figure includes ``fs_change``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import functools
import gc
import json
import platform
import random
import sqlite3
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from importlib.metadata import version as dist_version
from pathlib import Path
from typing import Any, NamedTuple

import sqlalchemy as sa

from fieldsync.records.service import Records
from fieldsync.schema.builtin import ROOT_BUSINESS_UNIT_ID, SYSTEM_USER_ID
from fieldsync.store.store import Store

# Run as ``python bench/records.py`` or loaded from its path (tests): either way, next to scratch.
if (_HERE := str(Path(__file__).resolve().parent)) not in sys.path:
    sys.path.insert(0, _HERE)
from scratch import ScratchDatabases, postgres_problem

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"
TABLE = "account"
PK = "accountid"
CREATE_TARGET = 0.5
SEED = 20240611
# Columns the comparison ignores: the service stamps them itself, the baseline precomputes them.
STAMPS = frozenset({"createdon", "modifiedon", "versionnumber"})

# fmt: off
CITIES = (
    "Seattle", "Redmond", "Portland", "Denver", "Austin", "Chicago", "Boston", "Atlanta",
    "Toronto", "Dublin", "London", "Leeds", "Lyon", "Munich", "Utrecht", "Oslo", "Madrid", "Milan",
    "Sydney", "Auckland",
)
NAME_PARTS = (
    "Contoso", "Fabrikam", "Northwind", "Adventure", "Litware", "Proseware", "Tailspin", "Wingtip",
    "Alpine", "Coho", "Humongous", "Lucerne", "Margie", "Trey", "Woodgrove",
)
SUFFIXES = (
    "Ltd", "Inc", "GmbH", "Group", "Holdings", "Services", "Partners", "Supply",
)
WORDS = (
    "service", "contract", "annual", "maintenance", "site", "visit", "customer", "prefers",
    "morning", "appointments", "equipment", "installed", "warehouse", "north", "entrance",
    "contact", "reception", "before", "arrival", "parts", "stocked", "locally", "billing",
    "quarterly", "renewal", "pending", "review", "priority", "account", "manager", "assigned",
)
# fmt: on

Change = tuple[uuid.UUID, dict[str, Any]]


# -- data ---------------------------------------------------------------------------------


def _description(rnd: random.Random) -> str:
    words: list[str] = []
    while sum(len(w) + 1 for w in words) < 200:
        words.append(rnd.choice(WORDS))
    return " ".join(words)[:200].rstrip().capitalize() + "."


def make_accounts(n: int, seed: int = SEED) -> list[dict[str, Any]]:
    """``n`` account rows as a client sends them; ~40% have a parent among earlier rows."""
    rnd = random.Random(seed)
    ids = [uuid.UUID(int=rnd.getrandbits(128), version=4) for _ in range(n)]
    rows: list[dict[str, Any]] = []
    for i, rid in enumerate(ids):
        name = f"{rnd.choice(NAME_PARTS)} {rnd.choice(SUFFIXES)}"
        row: dict[str, Any] = {
            PK: rid,
            "name": f"{name} {i}",
            "accountnumber": f"AC-{i:08d}",
            "telephone1": f"+1 555 {rnd.randrange(10**7):07d}",
            "emailaddress1": f"info{i}@{name.split()[0].lower()}.example.com",
            "address1_city": rnd.choice(CITIES),
            "revenue": Decimal(rnd.randrange(10**11)).scaleb(-2),
            "numberofemployees": rnd.randrange(1, 50_000),
            "industrycode": rnd.randint(1, 8),
            "creditonhold": rnd.random() < 0.1,
            "description": _description(rnd),
        }
        if i and rnd.random() < 0.4:
            row["parentaccountid"] = ids[rnd.randrange(i)]
        rows.append(row)
    return rows


def make_changes(accounts: Sequence[Mapping[str, Any]], seed: int = SEED) -> list[Change]:
    """One update per account, the same columns each time (a typical sync upload)."""
    rnd = random.Random(seed + 1)
    return [
        (
            row[PK],
            {
                "telephone1": f"+1 555 {rnd.randrange(10**7):07d}",
                "emailaddress1": f"sales{i}@example.org",
                "numberofemployees": rnd.randrange(1, 50_000),
                "revenue": Decimal(rnd.randrange(10**11)).scaleb(-2),
                "creditonhold": rnd.random() < 0.1,
            },
        )
        for i, row in enumerate(accounts)
    ]


def batched(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def sql_create_rows(batch: Sequence[Mapping[str, Any]], first_version: int) -> list[dict[str, Any]]:
    """What the service inserts for a batch: every row with the same keys (the batch's union),
    lookups as bare ids, and the system columns filled in."""
    now = dt.datetime.now(dt.UTC)
    keys: dict[str, None] = {}
    for values in batch:
        keys.update(dict.fromkeys(values))
    rows: list[dict[str, Any]] = []
    for i, values in enumerate(batch):
        row: dict[str, Any] = dict(keys)
        row.update(values)
        row.update(
            createdon=now,
            modifiedon=now,
            createdby=SYSTEM_USER_ID,
            modifiedby=SYSTEM_USER_ID,
            ownerid=SYSTEM_USER_ID,
            owneridtype="systemuser",
            owningbusinessunit=ROOT_BUSINESS_UNIT_ID,
            statecode=0,
            statuscode=1,
            versionnumber=first_version + i,
        )
        rows.append(row)
    return rows


def sql_update_params(batch: Sequence[Change], first_version: int) -> list[dict[str, Any]]:
    now = dt.datetime.now(dt.UTC)
    return [
        {
            **values,
            "modifiedon": now,
            "modifiedby": SYSTEM_USER_ID,
            "versionnumber": first_version + i,
            "_key": rid,
        }
        for i, (rid, values) in enumerate(batch)
    ]


# -- measurements -------------------------------------------------------------------------


Step = Callable[[], object]


def service_creates(store: Store, batches: Sequence[Sequence[Mapping[str, Any]]]) -> list[Step]:
    records = Records(store)
    return [functools.partial(records.create_many, TABLE, batch) for batch in batches]


def service_updates(store: Store, batches: Sequence[Sequence[Change]]) -> list[Step]:
    records = Records(store)
    return [functools.partial(records.update_many, TABLE, batch) for batch in batches]


def _in_transaction(store: Store, stmt: sa.Executable, params: list[dict[str, Any]]) -> None:
    with store.engine.begin() as conn:
        conn.execute(stmt, params)


def baseline_creates(store: Store, batches: Sequence[list[dict[str, Any]]]) -> list[Step]:
    insert = store.sql_table(TABLE).insert()
    return [functools.partial(_in_transaction, store, insert, rows) for rows in batches]


def baseline_updates(store: Store, batches: Sequence[list[dict[str, Any]]]) -> list[Step]:
    table = store.sql_table(TABLE)
    update = table.update().where(table.c[PK] == sa.bindparam("_key", type_=sa.Uuid()))
    return [functools.partial(_in_transaction, store, update, params) for params in batches]


def race(service: Sequence[Step], baseline: Sequence[Step]) -> tuple[float, float]:
    """Run both sides batch by batch, alternating which goes first, so both see the same
    conditions (other load, checkpoints); returns each side's total time."""
    gc.collect()
    totals = [0.0, 0.0]
    clock = time.perf_counter
    for i, pair in enumerate(zip(service, baseline, strict=True)):
        for side in (0, 1) if i % 2 == 0 else (1, 0):
            start = clock()
            pair[side]()
            totals[side] += clock() - start
    return totals[0], totals[1]


def table_contents(store: Store) -> list[tuple[Any, ...]]:
    table = store.sql_table(TABLE)
    cols = [c for c in table.c if c.name not in STAMPS]
    with store.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.select(*cols).order_by(table.c[PK]))]


def check_same(service: Store, baseline: Store, rows: int, when: str) -> None:
    a, b = table_contents(service), table_contents(baseline)
    if len(a) != rows or len(b) != rows or a != b:
        diff = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), None)
        detail = "" if diff is None else f"; first difference: {a[diff]} != {b[diff]}"
        raise RuntimeError(
            f"after {when}, the service table ({len(a)} rows) and the baseline table "
            f"({len(b)} rows) differ{detail}"
        )


class Result(NamedTuple):
    backend: str
    operation: str
    rows: int
    batch: int
    service_s: float
    baseline_s: float

    @property
    def service_rate(self) -> float:
        return self.rows / self.service_s

    @property
    def baseline_rate(self) -> float:
        return self.rows / self.baseline_s

    @property
    def ratio(self) -> float:
        return self.service_rate / self.baseline_rate

    def as_json(self) -> dict[str, Any]:
        return {
            **self._asdict(),
            "service_rows_per_s": round(self.service_rate, 1),
            "baseline_rows_per_s": round(self.baseline_rate, 1),
            "ratio": round(self.ratio, 4),
        }


class Workload(NamedTuple):
    """The batches each side writes: the service's input, the baseline's final SQL rows."""

    creates: list[Sequence[Mapping[str, Any]]]
    updates: list[Sequence[Change]]
    sql_creates: list[list[dict[str, Any]]]
    sql_updates: list[list[dict[str, Any]]]
    rows: int
    batch: int

    @classmethod
    def build(cls, accounts: list[dict[str, Any]], changes: list[Change], size: int) -> Workload:
        creates, updates = batched(accounts, size), batched(changes, size)
        sql_creates, sql_updates, version = [], [], 1_000
        for batch in creates:
            sql_creates.append(sql_create_rows(batch, version))
            version += len(batch)
        for batch in updates:
            sql_updates.append(sql_update_params(batch, version))
            version += len(batch)
        return cls(creates, updates, sql_creates, sql_updates, len(accounts), size)


def run_once(dbs: ScratchDatabases, work: Workload, check: bool) -> dict[str, tuple[float, float]]:
    """One run on fresh stores: {operation: (service seconds, baseline seconds)}."""
    with (
        dbs.opened("svc", Store.open) as service,
        dbs.opened("base", Store.open) as baseline,
    ):
        creates = race(
            service_creates(service, work.creates),
            baseline_creates(baseline, work.sql_creates),
        )
        if check:
            check_same(service, baseline, work.rows, "create")
        updates = race(
            service_updates(service, work.updates),
            baseline_updates(baseline, work.sql_updates),
        )
        if check:
            check_same(service, baseline, work.rows, "update")
    return {"create": creates, "update": updates}


def bench_backend(
    dbs: ScratchDatabases, work: Workload, repeat: int, log: Callable[[str], None]
) -> list[Result]:
    best = {"create": (float("inf"), float("inf")), "update": (float("inf"), float("inf"))}
    # The bench's own data (every batch, in both forms) would otherwise be walked by each full
    # collection the measured code triggers; a server holds one batch at a time.
    gc.collect()
    gc.freeze()
    try:
        for run in range(1, repeat + 1):
            times = run_once(dbs, work, check=run == 1)
            log(
                f"  {dbs.name} run {run}/{repeat}: "
                + ", ".join(f"{op} {s:.2f}s vs {b:.2f}s" for op, (s, b) in times.items())
                + " (service vs baseline)"
            )
            # The best (smallest) time of each side is kept, independently.
            for op, (s, b) in times.items():
                best[op] = (min(best[op][0], s), min(best[op][1], b))
    finally:
        gc.unfreeze()
    return [Result(dbs.name, op, work.rows, work.batch, s, b) for op, (s, b) in best.items()]


# -- report -------------------------------------------------------------------------------


def versions(pg_version: str | None) -> dict[str, str]:
    out = {
        "python": platform.python_version(),
        "sqlalchemy": sa.__version__,
        "sqlite": sqlite3.sqlite_version,
    }
    with contextlib.suppress(Exception):
        out["psycopg"] = dist_version("psycopg")
    if pg_version is not None:
        out["postgresql"] = pg_version
    return out


def format_table(results: Sequence[Result]) -> str:
    header = ("backend", "operation", "service rows/s", "baseline rows/s", "service/baseline")
    lines = [f"{header[0]:<11} {header[1]:<9} {header[2]:>15} {header[3]:>16} {header[4]:>17}"]
    for r in results:
        note = ""
        if r.operation == "create":
            note = "  (target >= 0.5: " + ("met)" if r.ratio >= CREATE_TARGET else "MISSED)")
        lines.append(
            f"{r.backend:<11} {r.operation:<9} {r.service_rate:>15,.0f} {r.baseline_rate:>16,.0f}"
            f" {r.ratio:>17.2f}{note}"
        )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/records.py",
        description="Batched create and update throughput of the records service, next to "
        "raw SQLAlchemy executemany, on SQLite and PostgreSQL.",
    )
    parser.add_argument("--rows", type=int, default=20_000, help="rows per run (20000)")
    parser.add_argument("--batch", type=int, default=1_000, help="rows per batch (1000)")
    parser.add_argument("--repeat", type=int, default=3, help="runs; the best is kept (3)")
    pg = parser.add_mutually_exclusive_group()
    pg.add_argument("--pg", metavar="URL", default=DEFAULT_PG, help=f"PostgreSQL ({DEFAULT_PG})")
    pg.add_argument("--no-pg", action="store_true", help="skip PostgreSQL")
    parser.add_argument("--json", metavar="PATH", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    for name in ("rows", "batch", "repeat"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the bench, print the table and return the figures (as written by ``--json``)."""
    args = parse_args(argv)

    def log(line: str) -> None:
        print(line, flush=True)

    accounts = make_accounts(args.rows)
    work = Workload.build(accounts, make_changes(accounts), args.batch)
    skipped: dict[str, str] = {}
    pg_version: str | None = None
    results: list[Result] = []
    with contextlib.ExitStack() as cleanup:
        backends = [cleanup.enter_context(ScratchDatabases.sqlite())]
        if args.no_pg:
            skipped["postgresql"] = "--no-pg"
        elif problem := postgres_problem(args.pg):
            skipped["postgresql"] = problem
            log(f"skipping PostgreSQL: {problem}")
        else:
            pg = cleanup.enter_context(ScratchDatabases.postgres(args.pg))
            backends.append(pg)
            pg_version = pg.server_version()

        log(
            f"fieldsync records bench: {args.rows} {TABLE} rows, batches of {args.batch}, "
            f"best of {args.repeat}"
        )
        started = time.perf_counter()
        for backend in backends:
            results += bench_backend(backend, work, args.repeat, log)
        elapsed = time.perf_counter() - started

    info = versions(pg_version)
    log("")
    log(", ".join(f"{k} {v}" for k, v in info.items()))
    log(format_table(results))
    if skipped:
        log("skipped: " + "; ".join(f"{k}: {v}" for k, v in skipped.items()))
    log(f"({elapsed:.1f}s)")

    report = {
        "params": {"rows": args.rows, "batch": args.batch, "repeat": args.repeat},
        "versions": info,
        "results": [r.as_json() for r in results],
        "skipped": skipped,
        "elapsed_s": round(elapsed, 2),
    }
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
