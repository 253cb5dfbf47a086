"""What the security predicate costs: listing ``account`` rows as a user, next to the same
query without the predicate.

    python bench/security.py [--rows N] [--repeat N] [--pg URL | --no-pg] [--json PATH]
                             [--explain]

For each backend (a SQLite file in a temporary directory; PostgreSQL in scratch schemas that
the bench creates and drops) it builds two stores of ``--rows`` accounts each, written by
``Records.create_many`` in batches of 5000 as SYSTEM with an explicit owner:

- ``all``: every row is owned by one user of one business unit, so a predicate passes every
  row and the time it adds is the time of evaluating it, with no fewer rows to fetch.
  Cases: the unfiltered query (the baseline), the same without ORDER BY (for scale), the
  SYSTEM statement of ``Records.select`` (predicate TRUE), the owner at user depth, a
  colleague at business-unit depth, and the owner again once 1% of the rows are shared with
  their team (so the share lookup on ``principalobjectaccess`` is in the SQL).
- ``mix``: six business units under the root (two regions of three), 50 users spread over
  them, an owner team per leaf unit; 92% of the rows belong to users, 8% to teams, at random.
  Cases: the unfiltered baseline, a user at user depth (own ~1.8% + their team's ~2%), a user
  at business-unit depth (their unit holds ~20%), a user at parent-child depth (a region:
  ~48%), and a user at user depth with shares (1% of the rows shared with them, 0.5% with
  their team, among 4% shared with others).

Every user also holds Basic User (account at user depth), as real users do, so the
business-unit and parent-child predicates are ``OR``s with the user-depth part.

Each measurement is "fetch every row of the statement into Python":
``with store.read() as conn: conn.execute(stmt).all()``, selecting the same 8 columns. The
statements are built once (``Records.select(..., caller=ctx)``) outside the clock; every
case runs once per round (every other round in reverse order), rounds repeat ``--repeat``
times and the best time is kept. Every run checks each case's row count against what the
data says the user may read.
The baseline is ``SELECT <columns> FROM account ORDER BY accountid``: ``Records.select``
always orders by the primary id, so the ratio isolates the predicate. The "within 2x"
target applies to the cases where the predicate passes every row and to the shares cases.

PostgreSQL tables are ``ANALYZE``d after loading (the state autovacuum reaches within a
minute); SQLite gets no ``ANALYZE``, as the store runs none. ``load_context`` (building a
user's security context) is timed per call for each user measured, and ``Records.select``
(building the statement) per call beside it. ``--explain`` prints each case's plan
(SQLite ``EXPLAIN QUERY PLAN``, PostgreSQL ``EXPLAIN (ANALYZE, BUFFERS)``).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import platform
import random
import sqlite3
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from importlib.metadata import version as dist_version
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from fieldsync.platform import Platform, build
from fieldsync.query.ast import TRUE
from fieldsync.records.service import SYSTEM
from fieldsync.schema.builtin import SYSTEM_USER_ID
from fieldsync.security.context import load_context
from fieldsync.security.model import Privilege, SecurityContext
from fieldsync.security.predicate import readable
from fieldsync.security.roles import BASIC_USER, SYSTEM_ADMINISTRATOR
from fieldsync.store.store import Store, utcnow
from fieldsync.types import EntityRef, RecordId

# Run as ``python bench/security.py`` or loaded from its path (tests): either way, next to scratch.
if (_HERE := str(Path(__file__).resolve().parent)) not in sys.path:
    sys.path.insert(0, _HERE)
from scratch import ScratchDatabases, postgres_problem

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"
TABLE = "account"
PK = "accountid"
SHARE_TABLE = "principalobjectaccess"
# With the primary id, the 8 columns every case selects.
COLUMNS = (
    "name",
    "accountnumber",
    "telephone1",
    "emailaddress1",
    "address1_city",
    "revenue",
    "modifiedon",
)
BATCH = 5_000
TARGET = 2.0
SEED = 20240612
CONTEXT_CALLS = 20
SELECT_CALLS = 200
READ = int(Privilege.READ)

# The mixed organisation: (unit, parent unit, users); the leaf units have an owner team.
UNITS = (
    ("North", None, 6),
    ("North East", "North", 10),
    ("North West", "North", 8),
    ("South", None, 6),
    ("South East", "South", 10),
    ("South West", "South", 10),
)
LEAVES = ("North East", "North West", "South East", "South West")
TEAM_ROWS = 0.08  # of the mixed rows, owned by the leaf teams
SHARED_WITH_USER = 0.01  # of the rows, shared with the shares user
SHARED_WITH_TEAM = 0.005  # of the rows, shared with the shares user's team
SHARED_ELSEWHERE = 0.04  # of the rows, shared with other users and teams
ALL_SHARED = 0.01  # of the rows of the ``all`` store, shared with the owner's team

# fmt: off
CITIES = (
    "Seattle", "Redmond", "Portland", "Denver", "Austin", "Chicago", "Boston", "Atlanta",
    "Toronto", "Dublin", "London", "Leeds", "Lyon", "Munich", "Utrecht", "Oslo", "Madrid", "Milan",
)
NAME_PARTS = (
    "Contoso", "Fabrikam", "Northwind", "Adventure", "Litware", "Proseware", "Tailspin", "Wingtip",
    "Alpine", "Coho", "Humongous", "Lucerne", "Margie", "Trey", "Woodgrove",
)
WORDS = (
    "service", "contract", "annual", "maintenance", "site", "visit", "customer", "prefers",
    "morning", "appointments", "equipment", "installed", "warehouse", "north", "entrance",
    "contact", "reception", "before", "arrival", "parts", "stocked", "locally", "billing",
)
# fmt: on


# -- data ---------------------------------------------------------------------------------


def descriptions(rnd: random.Random, n: int = 512) -> list[str]:
    """A pool of ~200-character notes (drawing words for every row would take longer than
    inserting it)."""
    return [" ".join(rnd.choice(WORDS) for _ in range(32))[:200] for _ in range(n)]


def account_values(
    rnd: random.Random, notes: Sequence[str], i: int, owner: EntityRef
) -> dict[str, Any]:
    company = NAME_PARTS[i % len(NAME_PARTS)]
    return {
        PK: uuid.UUID(int=rnd.getrandbits(128), version=4),
        "name": f"{company} {i}",
        "accountnumber": f"AC-{i:08d}",
        "telephone1": f"+1 555 {rnd.getrandbits(23):07d}",
        "emailaddress1": f"info{i}@{company.lower()}.example.com",
        "address1_city": CITIES[rnd.getrandbits(16) % len(CITIES)],
        "revenue": Decimal(rnd.getrandbits(36)).scaleb(-2),
        "numberofemployees": 1 + rnd.getrandbits(15),
        "industrycode": 1 + i % 8,
        "description": notes[rnd.getrandbits(16) % len(notes)],
        "ownerid": owner,
    }


def load_accounts(p: Platform, owners: Sequence[EntityRef], seed: int) -> list[RecordId]:
    """One account per owner, created as SYSTEM in batches; returns the ids in order."""
    rnd = random.Random(seed)
    notes = descriptions(rnd)
    ids: list[RecordId] = []
    for start in range(0, len(owners), BATCH):
        stop = min(start + BATCH, len(owners))
        batch = [account_values(rnd, notes, i, owners[i]) for i in range(start, stop)]
        ids += p.records.create_many(TABLE, batch)
    return ids


def add_shares(p: Platform, shares: Iterable[tuple[RecordId, EntityRef, int]]) -> int:
    """Share rows in bulk: the rows ``Records.share`` writes, through ``Store.insert_rows``
    (versions and change log included) instead of one transaction per share."""
    now = utcnow()
    rows = [
        {
            "principalobjectaccessid": uuid.uuid4(),
            "name": f"{TABLE} share",
            "objectid": rid,
            "objecttypecode": TABLE,
            "principalid": who.id,
            "principaltypecode": who.table,
            "accessrightsmask": mask,
            "createdon": now,
            "modifiedon": now,
            "createdby": SYSTEM_USER_ID,
            "modifiedby": SYSTEM_USER_ID,
            "statecode": 0,
            "statuscode": 1,
        }
        for rid, who, mask in shares
    ]
    for start in range(0, len(rows), BATCH):
        with p.store.write() as conn:
            p.store.insert_rows(
                conn, SHARE_TABLE, rows[start : start + BATCH], userid=SYSTEM_USER_ID
            )
    return len(rows)


def count(n: int, fraction: float) -> int:
    return max(1, round(n * fraction))


# -- cases --------------------------------------------------------------------------------


@dataclass
class Case:
    store: str  # "all" or "mix"
    name: str
    stmt: sa.Select[Any]
    expected: int  # rows the data says the caller may read
    kind: str = "case"  # "baseline", "info" (no ratio target) or "case"
    gated: bool = False  # held to the "within 2x of unfiltered" target
    user: str | None = None  # the user whose context built the statement
    times: list[float] = field(default_factory=list)
    rows: int = -1

    @property
    def best(self) -> float:
        return min(self.times)


@dataclass
class Scenario:
    label: str
    platform: Platform
    cases: list[Case] = field(default_factory=list)
    users: dict[str, RecordId] = field(default_factory=dict)  # name -> id, for load_context


def columns_of(store: Store) -> list[sa.Column[Any]]:
    sql = store.sql_table(TABLE)
    return [sql.c[PK], *(sql.c[name] for name in COLUMNS)]


def user_select(p: Platform, ctx: SecurityContext) -> sa.Select[Any]:
    return p.records.select(p.store.schema.table(TABLE), columns=COLUMNS, caller=ctx)


def baseline_cases(label: str, p: Platform, rows: int, *, extra: bool) -> list[Case]:
    cols = columns_of(p.store)
    cases = [
        Case(label, "unfiltered (baseline)", sa.select(*cols).order_by(cols[0]), rows, "baseline")
    ]
    if extra:
        system = user_select(p, SYSTEM)
        if system.whereclause is not None:
            raise RuntimeError("the SYSTEM statement has a WHERE clause")
        cases += [
            Case(label, "unfiltered, no ORDER BY", sa.select(*cols), rows, "info"),
            Case(label, "SYSTEM via Records.select", system, rows, "info"),
        ]
    return cases


def setup_all(p: Platform, rows: int) -> Scenario:
    """Every row owned by one user of one unit: predicates that pass every row."""
    o = p.org
    basic = o.role_id(BASIC_USER)
    unit_reader = o.role("Bench Unit Reader", privileges={"account": {"read": "businessunit"}})
    unit = o.business_unit("Everything")
    owner = o.user("owner", business_unit=unit, roles=[basic])
    local = o.user("local", business_unit=unit, roles=[basic, unit_reader])
    admin = o.user("admin", business_unit=unit, roles=[o.role_id(SYSTEM_ADMINISTRATOR)])
    team = o.team("Everything Team", unit, members=[owner])
    ids = load_accounts(p, [EntityRef("systemuser", owner)] * rows, SEED)

    store = p.store
    plain = load_context(store, owner)  # before any share exists: no share lookup in the predicate
    rnd = random.Random(SEED + 1)
    picked = rnd.sample(range(rows), count(rows, ALL_SHARED))
    add_shares(p, ((ids[i], EntityRef("team", team), READ) for i in picked))
    shared = load_context(store, owner)
    if TABLE in plain.shared_tables or TABLE not in shared.shared_tables:
        raise RuntimeError("the owner's contexts do not see the shares as expected")
    if readable(load_context(store, admin), store.schema.table(TABLE)) != TRUE:
        raise RuntimeError("a System Administrator's read filter should be TRUE")

    s = Scenario("all", p, users={"owner": owner, "local": local, "admin": admin})
    s.cases = baseline_cases("all", p, rows, extra=True)
    s.cases += [
        Case("all", "user depth, owns all", user_select(p, plain), rows, gated=True, user="owner"),
        Case(
            "all",
            "BU depth, unit holds all",
            user_select(p, load_context(store, local)),
            rows,
            gated=True,
            user="local",
        ),
        Case(
            "all",
            "user depth + shares, owns all",
            user_select(p, shared),
            rows,
            gated=True,
            user="owner",
        ),
    ]
    return s


def setup_mix(p: Platform, rows: int) -> Scenario:
    """A realistic organisation: users and teams in six units own the rows at random."""
    o = p.org
    basic = o.role_id(BASIC_USER)
    unit_reader = o.role("Bench Unit Reader", privileges={"account": {"read": "businessunit"}})
    deep_reader = o.role("Bench Deep Reader", privileges={"account": {"read": "parentchild"}})
    unit_ids: dict[str, RecordId] = {}
    users: dict[str, list[RecordId]] = {}
    unit_of: dict[RecordId, str] = {}
    for name, parent, n in UNITS:
        unit_ids[name] = o.business_unit(name, unit_ids[parent] if parent else None)
        users[name] = []
        for i in range(n):
            uid = o.user(
                f"{name.lower().replace(' ', '')}{i}", business_unit=unit_ids[name], roles=[basic]
            )
            users[name].append(uid)
            unit_of[uid] = name
    teams: dict[str, RecordId] = {}
    for name in LEAVES:
        teams[name] = o.team(f"{name} Team", unit_ids[name], members=users[name])
        unit_of[teams[name]] = name

    user_depth = users["North East"][0]
    unit_depth = users["North East"][1]
    deep = users["North"][0]
    sharer = users["South East"][0]
    o.assign_role(EntityRef("systemuser", unit_depth), unit_reader)
    o.assign_role(EntityRef("systemuser", deep), deep_reader)

    rnd = random.Random(SEED + 2)
    people = [EntityRef("systemuser", u) for name, _, _ in UNITS for u in users[name]]
    crews = [EntityRef("team", teams[name]) for name in LEAVES]
    owners = [
        rnd.choice(crews) if rnd.random() < TEAM_ROWS else rnd.choice(people) for _ in range(rows)
    ]
    ids = load_accounts(p, owners, SEED + 3)

    # Shares: some with the shares user (read, and a few without read), some with their
    # team, the rest with users and teams not measured (so only the shares case has the share lookup
    # in its SQL); never two shares of one row with one principal.
    me, my_team = EntityRef("systemuser", sharer), EntityRef("team", teams["South East"])
    measured = {user_depth, unit_depth, deep, sharer, teams["North East"], teams["South East"]}
    others = [r for r in people + crews if r.id not in measured]
    shares: dict[tuple[int, RecordId], int] = {}
    for who, fraction in ((me, SHARED_WITH_USER), (my_team, SHARED_WITH_TEAM)):
        for i in rnd.sample(range(rows), count(rows, fraction)):
            shares[(i, who.id)] = READ | int(Privilege.WRITE)
    for i in rnd.sample(range(rows), count(rows, SHARED_WITH_USER / 10)):
        shares.setdefault((i, me.id), int(Privilege.APPEND_TO))  # no read: not listed
    for i in rnd.sample(range(rows), count(rows, SHARED_ELSEWHERE)):
        shares.setdefault((i, rnd.choice(others).id), READ)
    kinds = {r.id: r for r in people + crews}
    add_shares(p, ((ids[i], kinds[pid], mask) for (i, pid), mask in shares.items()))

    def readable_rows(principals: Iterable[RecordId], units: Iterable[str] = ()) -> int:
        """Rows owned by ``principals`` or by anyone in ``units``, or shared with read."""
        who, where = set(principals), set(units)
        rows_shared = {i for (i, pid), mask in shares.items() if pid in who and mask & READ}
        return sum(
            1
            for i, r in enumerate(owners)
            if r.id in who or unit_of[r.id] in where or i in rows_shared
        )

    def pct(n: int) -> str:
        return f"{100 * n / rows:.0f}%"

    store = p.store
    contexts = {uid: load_context(store, uid) for uid in (user_depth, unit_depth, deep, sharer)}
    if any((TABLE in c.shared_tables) != (uid == sharer) for uid, c in contexts.items()):
        raise RuntimeError("only the shares user should have rows shared with them")
    ne, se = teams["North East"], teams["South East"]
    n_user = readable_rows([user_depth, ne])
    n_unit = readable_rows([unit_depth, ne], ["North East"])
    n_deep = readable_rows([deep], ["North", "North East", "North West"])
    n_share = readable_rows([sharer, se])
    s = Scenario(
        "mix",
        p,
        users={
            "user-depth": user_depth,
            "bu-depth": unit_depth,
            "parent-child": deep,
            "sharer": sharer,
        },
    )
    s.cases = baseline_cases("mix", p, rows, extra=False)
    s.cases += [
        Case(
            "mix",
            f"user depth, own + team ({pct(n_user)})",
            user_select(p, contexts[user_depth]),
            n_user,
            user="user-depth",
        ),
        Case(
            "mix",
            f"BU depth, own unit ({pct(n_unit)})",
            user_select(p, contexts[unit_depth]),
            n_unit,
            user="bu-depth",
        ),
        Case(
            "mix",
            f"parent-child, region ({pct(n_deep)})",
            user_select(p, contexts[deep]),
            n_deep,
            user="parent-child",
        ),
        Case(
            "mix",
            f"user depth + shares ({pct(n_share)})",
            user_select(p, contexts[sharer]),
            n_share,
            gated=True,
            user="sharer",
        ),
    ]
    return s


# -- backends -----------------------------------------------------------------------------


def open_platform(url: str) -> Platform:
    return build(Store.open(url))


def describe_pg(dbs: ScratchDatabases) -> str:
    """The version, and the settings these plans depend on."""
    shown = dbs.show("server_version", "jit", "work_mem")
    version = shown.pop("server_version").split()[0]
    return f"{version} ({', '.join(f'{k}={v}' for k, v in shown.items())})"


def settle(p: Platform) -> None:
    """After loading: bring the statistics to a steady state, if the backend has any."""
    if p.store.engine.dialect.name == "postgresql":
        with p.store.write() as conn:
            conn.exec_driver_sql(f"ANALYZE {TABLE}, {SHARE_TABLE}")


def literal_sql(conn: sa.Connection, stmt: sa.Select[Any]) -> str:
    return str(stmt.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True}))


def query_plan(p: Platform, stmt: sa.Select[Any]) -> list[str]:
    with p.store.read() as conn:
        sql = literal_sql(conn, stmt)
        if conn.dialect.name == "postgresql":
            return [str(r[0]) for r in conn.exec_driver_sql(f"EXPLAIN (ANALYZE, BUFFERS) {sql}")]
        plan = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}").all()
    depth: dict[int, int] = {0: -1}
    lines = []
    for node, parent, _, detail in plan:
        depth[node] = depth.get(parent, -1) + 1
        lines.append("  " * depth[node] + str(detail))
    return lines


# -- measurements -------------------------------------------------------------------------


def fetch(store: Store, stmt: sa.Select[Any]) -> tuple[float, int]:
    """Seconds to fetch every row of ``stmt`` on a read connection, and how many came."""
    clock = time.perf_counter
    start = clock()
    with store.read() as conn:
        rows = conn.execute(stmt).all()
    elapsed = clock() - start
    return elapsed, len(rows)


def measure(scenarios: Sequence[Scenario], repeat: int, log: Callable[[str], None]) -> None:
    """Every case once per round, ``repeat`` rounds, every other round in reverse order (so
    no case always runs first or last); records each time."""
    order = [(s, case) for s in scenarios for case in s.cases]
    for run in range(1, repeat + 1):
        started = time.perf_counter()
        for s, case in order if run % 2 else reversed(order):
            gc.collect()
            seconds, n = fetch(s.platform.store, case.stmt)
            if n != case.expected:
                raise RuntimeError(
                    f"{case.store}/{case.name}: {n} rows returned, the data says {case.expected}"
                )
            case.rows = n
            case.times.append(seconds)
        log(f"  round {run}/{repeat}: {len(order)} cases in {time.perf_counter() - started:.1f}s")


@dataclass
class ContextTiming:
    store: str
    user: str
    context_ms: float = float("inf")  # load_context, per call
    select_us: float = float("inf")  # Records.select with that context, per call


def time_contexts(scenarios: Sequence[Scenario], repeat: int) -> list[ContextTiming]:
    clock = time.perf_counter
    timings = [
        (s, ContextTiming(s.label, name), uid) for s in scenarios for name, uid in s.users.items()
    ]
    for s, _, uid in timings:  # warm up: first statements compiled, pool filled
        user_select(s.platform, load_context(s.platform.store, uid))
    for _ in range(repeat):
        for s, t, uid in timings:
            store = s.platform.store
            start = clock()
            for _ in range(CONTEXT_CALLS):
                ctx = load_context(store, uid)
            t.context_ms = min(t.context_ms, (clock() - start) / CONTEXT_CALLS * 1e3)
            start = clock()
            for _ in range(SELECT_CALLS):
                user_select(s.platform, ctx)
            t.select_us = min(t.select_us, (clock() - start) / SELECT_CALLS * 1e6)
    return [t for _, t, _ in timings]


@dataclass
class Result:
    backend: str
    store: str
    case: str
    kind: str
    gated: bool
    user: str | None
    rows: int
    seconds: float
    baseline_s: float
    sql_where: str
    times: list[float]

    @property
    def ratio(self) -> float:
        return self.seconds / self.baseline_s

    @property
    def us_per_row(self) -> float:
        return self.seconds / self.rows * 1e6 if self.rows else float("nan")

    @property
    def verdict(self) -> str:
        if not self.gated:
            return ""
        return "PASS" if self.ratio <= TARGET else "MISS"

    def as_json(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "store": self.store,
            "case": self.case,
            "kind": self.kind,
            "user": self.user,
            "rows": self.rows,
            "seconds": round(self.seconds, 5),
            "baseline_s": round(self.baseline_s, 5),
            "ratio": round(self.ratio, 4),
            "us_per_row": round(self.us_per_row, 3),
            "target": TARGET if self.gated else None,
            "verdict": self.verdict or None,
            "sql_where": self.sql_where,
            "times": [round(t, 5) for t in self.times],
        }


def where_sql(p: Platform, stmt: sa.Select[Any]) -> str:
    if stmt.whereclause is None:
        return ""
    with p.store.read() as conn:
        return str(stmt.whereclause.compile(dialect=conn.dialect))


def bench_backend(
    dbs: ScratchDatabases, rows: int, repeat: int, explain: bool, log: Callable[[str], None]
) -> tuple[list[Result], list[ContextTiming], dict[str, float]]:
    scenarios: list[Scenario] = []
    setup: dict[str, float] = {}
    with contextlib.ExitStack() as opened:  # closed and discarded even if setup fails
        for label, setup_fn in (("all", setup_all), ("mix", setup_mix)):
            started = time.perf_counter()
            p = opened.enter_context(dbs.opened(label, open_platform))
            scenarios.append(setup_fn(p, rows))
            settle(p)
            setup[label] = time.perf_counter() - started
            log(f"  {dbs.name} {label}: {rows} accounts set up in {setup[label]:.1f}s")

        # What is left of the setup (and the platform itself) would otherwise be walked by
        # every full collection the fetched rows trigger.
        gc.collect()
        gc.freeze()
        try:
            measure(scenarios, repeat, log)
            contexts = time_contexts(scenarios, repeat)
        finally:
            gc.unfreeze()

        results: list[Result] = []
        for s in scenarios:
            base = next(c for c in s.cases if c.kind == "baseline")
            for c in s.cases:
                results.append(
                    Result(
                        dbs.name,
                        s.label,
                        c.name,
                        c.kind,
                        c.gated,
                        c.user,
                        c.rows,
                        c.best,
                        base.best,
                        where_sql(s.platform, c.stmt),
                        c.times,
                    )
                )
                if explain:
                    log(f"\n  plan {dbs.name}/{s.label}/{c.name}:")
                    for line in query_plan(s.platform, c.stmt):
                        log(f"    {line}")
    return results, contexts, setup


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
    header = (
        f"{'backend':<11} {'store':<5} {'case':<34} {'rows':>9} {'seconds':>8} "
        f"{'vs unfiltered':>13} {'us/row':>7}  within {TARGET:g}x"
    )
    lines = [header]
    for r in results:
        lines.append(
            f"{r.backend:<11} {r.store:<5} {r.case:<34} {r.rows:>9,} {r.seconds:>8.3f} "
            f"{r.ratio:>13.2f} {r.us_per_row:>7.2f}  {r.verdict}".rstrip()
        )
    return "\n".join(lines)


def format_contexts(backend: str, timings: Sequence[ContextTiming]) -> str:
    lines = [f"{'backend':<11} {'store':<5} {'user':<13} {'load_context ms':>15} {'select us':>9}"]
    for t in timings:
        lines.append(
            f"{backend:<11} {t.store:<5} {t.user:<13} {t.context_ms:>15.2f} {t.select_us:>9.0f}"
        )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/security.py",
        description="Listing account rows through the security predicate, next to the "
        "unfiltered query, on SQLite and PostgreSQL.",
    )
    parser.add_argument("--rows", type=int, default=100_000, help="accounts per store (100000)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; the best is kept (3)")
    pg = parser.add_mutually_exclusive_group()
    pg.add_argument("--pg", metavar="URL", default=DEFAULT_PG, help=f"PostgreSQL ({DEFAULT_PG})")
    pg.add_argument("--no-pg", action="store_true", help="skip PostgreSQL")
    parser.add_argument("--json", metavar="PATH", type=Path, help="also write the figures here")
    parser.add_argument("--explain", action="store_true", help="print each case's query plan")
    args = parser.parse_args(argv)
    if args.rows < 100:
        parser.error("--rows must be at least 100")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the bench, print the tables and return the figures (as written by ``--json``)."""
    args = parse_args(argv)

    def log(line: str) -> None:
        print(line, flush=True)

    skipped: dict[str, str] = {}
    pg_version: str | None = None
    results: list[Result] = []
    contexts: dict[str, list[ContextTiming]] = {}
    setup: dict[str, dict[str, float]] = {}
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
            pg_version = describe_pg(pg)

        log(f"fieldsync security bench: {args.rows} {TABLE} rows per store, best of {args.repeat}")
        started = time.perf_counter()
        for backend in backends:
            found, timings, took = bench_backend(backend, args.rows, args.repeat, args.explain, log)
            results += found
            contexts[backend.name] = timings
            setup[backend.name] = took
        elapsed = time.perf_counter() - started

    info = versions(pg_version)
    log("")
    log(", ".join(f"{k} {v}" for k, v in info.items()))
    log(format_table(results))
    log("")
    for name, timings in contexts.items():
        log(format_contexts(name, timings))
    gated = [r for r in results if r.gated]
    missed = [r for r in gated if r.verdict == "MISS"]
    log("")
    log(
        f"within {TARGET:g}x of unfiltered: {len(gated) - len(missed)}/{len(gated)} PASS"
        + ("" if not missed else "; MISS: " + ", ".join(f"{r.backend}/{r.case}" for r in missed))
    )
    if skipped:
        log("skipped: " + "; ".join(f"{k}: {v}" for k, v in skipped.items()))
    log(f"({elapsed:.1f}s)")

    report = {
        "params": {"rows": args.rows, "repeat": args.repeat, "columns": [PK, *COLUMNS]},
        "versions": info,
        "results": [r.as_json() for r in results],
        "contexts": {
            name: [
                {
                    "store": t.store,
                    "user": t.user,
                    "load_context_ms": round(t.context_ms, 3),
                    "select_us": round(t.select_us, 1),
                }
                for t in timings
            ]
            for name, timings in contexts.items()
        },
        "setup_s": {b: {k: round(v, 2) for k, v in s.items()} for b, s in setup.items()},
        "all_within_target": not missed,
        "skipped": skipped,
        "elapsed_s": round(elapsed, 2),
    }
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
