"""The reliability suite: devices syncing with a real server process through a fault-injecting
proxy, with the server killed now and then, and an oracle check at the end.

    python reliability/run.py              # the CI-sized run, SQLite and PostgreSQL
    python reliability/run.py --soak       # longer: more rounds and devices
    python reliability/run.py --no-pg      # SQLite only

Each scenario: a scratch database with an organisation, a published offline profile and
rows; ``fieldsync serve`` in a child process behind :class:`proxy.FaultProxy`; three devices
(the SDK, real HTTP through the proxy). Rounds of random server writes (creates, edits,
reassignments, deletes, shares, team changes) and device edits, then syncs under faults
(latency, bandwidth, connections cut mid-request and mid-response, responses lost after the
server committed), and ``kill -9`` of the server during uploads and downloads, restarted on
the same port. Then the faults stop, every device syncs, and the oracle counts:

- divergences: replica rows that differ from the user's scope computed from scratch;
- leaks: replica rows the user may not read;
- lost: device creates missing from the server (not rejected, not deleted), and device column
  writes whose value the server does not hold although nothing wrote that column after them;
- duplicated: a client change with two Sync Errors rows, or a record created twice;
- server errors: 5xx answers seen by devices.

Every figure but the faults must be zero; the exit status says whether it was.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE), str(ROOT / "tests"), str(ROOT / "bench")]

import httpx  # noqa: E402
from proxy import FaultProxy, Faults  # noqa: E402

PROFILE = """\
name: Field Service
tables:
  workorder: {filter: other, owned_by: [me, my_teams]}
  account: {filter: related, relationships: [account_workorder_serviceaccountid]}
  contact: {filter: related, relationships: [account_contact_parentcustomerid]}
apps:
  - {uniquename: fieldservice, name: Field Service, can_be_used_offline: true}
"""
FAULTS = (
    Faults(),
    Faults(latency=0.02, bandwidth=200_000),
    Faults(cut_request=0.25),
    Faults(cut_response=0.25),
    Faults(lose_response=0.3),
    Faults(latency=0.01, cut_request=0.1, cut_response=0.1, lose_response=0.1),
)


@dataclass
class Figures:
    scenarios: int = 0
    rounds: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    server_kills: int = 0
    changes_made: int = 0
    sync_attempts: int = 0
    failed_syncs: int = 0
    lost: int = 0
    duplicated: int = 0
    divergences: int = 0
    leaks: int = 0
    server_errors: int = 0
    database_restarts: int = 0
    unavailable: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (
            self.lost or self.duplicated or self.divergences or self.leaks or self.server_errors
        )

    def lines(self) -> list[str]:
        injected = ", ".join(f"{k} {v}" for k, v in sorted(self.faults.items())) or "none"
        return [
            f"scenarios            {self.scenarios}",
            f"rounds               {self.rounds}",
            f"faults injected      {sum(self.faults.values())} ({injected})",
            f"server kills         {self.server_kills}",
            f"database restarts    {self.database_restarts} ({self.unavailable} answers 503)",
            f"changes made         {self.changes_made}",
            f"sync attempts        {self.sync_attempts} ({self.failed_syncs} broken by faults)",
            f"changes lost         {self.lost}",
            f"changes duplicated   {self.duplicated}",
            f"divergences          {self.divergences}",
            f"leaks                {self.leaks}",
            f"server errors (5xx)  {self.server_errors}",
        ]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Server:
    """``fieldsync serve`` in a child process; ``kill()`` is SIGKILL, ``start()`` restarts it
    on the same port."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        args = [sys.executable, "-m", "fieldsync.cli", "serve", "--database", self.url]
        args += ["--host", "127.0.0.1", "--port", str(self.port), "--log-level", "error"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                    raise RuntimeError(f"the server did not start: {err}") from None
                time.sleep(0.05)

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
            if self.proc.stderr is not None:
                self.proc.stderr.close()
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(30)
            if self.proc.stderr is not None:
                self.proc.stderr.close()
            self.proc = None


class Scenario:
    def __init__(
        self, url: str, work: Path, seed: int, figures: Figures, *, restart_database: bool = False
    ) -> None:
        from fieldsync.platform import build
        from fieldsync.store.store import Store
        from sync_world import World

        self.rng = random.Random(seed)
        self.figures = figures
        self.restart_database = restart_database
        self.platform = build(Store.open(url))
        self.world = World(self.platform, work)
        self.platform.offline.import_yaml(PROFILE)
        self.world.profile = self.platform.offline.publish("Field Service")
        from fieldsync.sync.service import SyncService

        self.world.sync = SyncService(self.platform.records)
        self.rows: dict[str, list[uuid.UUID]] = {"account": [], "contact": [], "workorder": []}
        self.server = Server(url)
        self.proxy = FaultProxy(0, seed=seed)
        self.devices: dict[str, Any] = {}
        self.created: dict[str, set[str]] = {}  # device -> record ids it created
        self.deleted: set[str] = set()
        self.writes: dict[tuple[str, str, str], tuple[str, Any]] = {}  # last writer per column

    # -- set-up ---------------------------------------------------------------------------

    def start(self) -> None:
        from fieldsync.client import Device

        self.server.start()
        self.proxy.upstream_port = self.server.port
        self.proxy.start()
        for _ in range(6):
            self.server_write()
        for user in ("tech1", "tech2", "tech3"):
            self.devices[user] = Device.login(
                self.world.tmp / f"device-{user}",
                server=f"http://127.0.0.1:{self.proxy.port}",
                username=user,
                password="correct horse battery",
                app="fieldservice",
                # a connection per request, so that every request meets the proxy's faults
                transport=httpx.HTTPTransport(limits=httpx.Limits(max_keepalive_connections=0)),
            )
            self.created[user] = set()

    def close(self) -> None:
        for device in self.devices.values():
            device.close()
        self.proxy.stop()
        self.server.stop()
        self.platform.close()

    # -- writes ---------------------------------------------------------------------------

    def _owner(self) -> Any:
        from fieldsync.types import EntityRef

        if self.rng.random() < 0.2:
            return EntityRef("team", self.world.team)
        return EntityRef(
            "systemuser", self.world.users[self.rng.choice(["tech1", "tech2", "tech3"])]
        )

    def server_write(self) -> None:
        from fieldsync.errors import FieldsyncError
        from fieldsync.types import EntityRef

        r = self.platform.records
        kind = self.rng.choice(
            ["account", "workorder", "workorder", "edit", "edit", "assign", "delete", "share"]
        )
        try:
            if kind == "account" or not self.rows["account"]:
                rid = r.create(
                    "account", {"name": f"acc {self.rng.random():.6f}", "ownerid": self._owner()}
                )
                self.rows["account"].append(rid)
            elif kind == "workorder":
                rid = r.create(
                    "workorder",
                    {
                        "name": "server job",
                        "serviceaccountid": self.rng.choice(self.rows["account"]),
                        "ownerid": self._owner(),
                    },
                )
                self.rows["workorder"].append(rid)
            elif kind == "edit" and self.rows["workorder"]:
                rid = self.rng.choice(self.rows["workorder"])
                value = self.rng.choice([1, 2, 3])
                r.update("workorder", rid, {"priority": value})
                self.writes[("workorder", str(rid), "priority")] = ("server", value)
            elif kind == "assign" and self.rows["workorder"]:
                r.assign("workorder", self.rng.choice(self.rows["workorder"]), self._owner())
            elif kind == "delete" and self.rows["workorder"]:
                rid = self.rng.choice(self.rows["workorder"])
                r.delete("workorder", rid)
                self.rows["workorder"].remove(rid)
                self.deleted.add(str(rid))
            elif kind == "share" and self.rows["account"]:
                from fieldsync.security.model import Privilege

                user = self.world.users[self.rng.choice(["tech1", "tech2", "tech3"])]
                r.share(
                    "account",
                    self.rng.choice(self.rows["account"]),
                    EntityRef("systemuser", user),
                    [Privilege.READ] if self.rng.random() < 0.7 else 0,
                )
        except FieldsyncError:
            pass

    def device_write(self, user: str) -> None:
        from fieldsync.errors import FieldsyncError

        device = self.devices[user]
        if "workorder" not in device.replica.sql:
            return
        orders = [r["workorderid"] for r in device.query("workorder")]
        accounts = [r["accountid"] for r in device.query("account")]
        try:
            if orders and self.rng.random() < 0.6:
                rid = self.rng.choice(orders)
                value = self.rng.choice([1, 2, 3, 4])
                device.update("workorder", rid, {"priority": value})
                self.writes[("workorder", rid, "priority")] = (user, value)
            elif accounts:
                rid = str(
                    device.create(
                        "workorder",
                        {"name": f"{user} job", "serviceaccountid": self.rng.choice(accounts)},
                    )
                )
                self.created[user].add(rid)
            else:
                return
        except FieldsyncError:
            return
        self.figures.changes_made += 1

    # -- syncing --------------------------------------------------------------------------

    def sync(self, user: str, *, tries: int = 1) -> bool:
        from fieldsync.client import DeviceError, Offline

        for _ in range(tries):
            self.figures.sync_attempts += 1
            try:
                self.devices[user].sync()
                return True
            except Offline as exc:
                if "unavailable (503)" in str(exc):
                    self.figures.unavailable += 1
                elif "server failed (5" in str(exc):
                    self.figures.server_errors += 1
                    self.figures.problems.append(str(exc))
                self.figures.failed_syncs += 1
            except DeviceError:
                self.figures.failed_syncs += 1
        return False

    def round(self) -> None:
        self.figures.rounds += 1
        self.proxy.faults = self.rng.choice(FAULTS)
        for _ in range(self.rng.randint(1, 4)):
            self.server_write()
        for user in self.devices:
            for _ in range(self.rng.randint(0, 3)):
                self.device_write(user)
        if self.rng.random() < 0.25:
            self.kill_during_sync(self.rng.choice(list(self.devices)))
        elif self.restart_database and self.figures.rounds % 6 == 3:
            self.restart_during_sync(self.rng.choice(list(self.devices)))
        for user in self.devices:
            self.sync(user)

    def restart_during_sync(self, user: str) -> None:
        """Restart PostgreSQL while this device syncs; the server answers 503 meanwhile and
        reconnects after."""
        import threading

        cluster = sorted(os.listdir("/etc/postgresql"))[-1]
        command = ["pg_ctlcluster", "--skip-systemctl-redirect", cluster, "main", "restart"]
        timer = threading.Timer(
            self.rng.uniform(0.0, 0.1), lambda: subprocess.run(command, check=True)
        )
        timer.start()
        self.sync(user)
        timer.join()
        self.figures.database_restarts += 1
        for _ in range(60):
            if subprocess.run(["pg_isready", "-q", "-h", "127.0.0.1"]).returncode == 0:
                break
            time.sleep(0.5)

    def kill_during_sync(self, user: str) -> None:
        """SIGKILL the server while this device syncs, restart it, and let the device go on."""
        import threading

        delay = self.rng.uniform(0.0, 0.15)
        timer = threading.Timer(delay, self.server.kill)
        timer.start()
        self.sync(user)
        timer.join()
        self.figures.server_kills += 1
        self.server.start()

    # -- the oracle -----------------------------------------------------------------------

    def check(self) -> None:
        from sync_world import replica

        self.proxy.faults = Faults()
        for _ in range(2):
            for user in self.devices:
                if not self.sync(user, tries=3):
                    self.figures.problems.append(f"{user}: no clean sync at the end")
        f = self.figures
        records = self.platform.records
        for user, device in self.devices.items():
            got = replica(device)
            want = self.world.scope(user)
            ctx = self.world.ctx(user)
            for table, rows in got.items():
                t = self.platform.store.schema.table(table)
                readable = {
                    str(r[t.primary_id])
                    for r in records.retrieve_multiple(table, columns=[t.primary_id], caller=ctx)
                }
                leaks = [k for k in rows if k not in readable]
                f.leaks += len(leaks)
                differing = set(rows) ^ set(want[table])
                differing |= {k for k in set(rows) & set(want[table]) if rows[k] != want[table][k]}
                if differing:
                    f.divergences += len(differing)
                    f.problems.append(f"{user} {table}: {len(differing)} rows differ")
            if device.pending_changes():
                f.lost += device.pending_changes()
                f.problems.append(f"{user}: {device.pending_changes()} changes still pending")
        rejected_records = set(self._sync_errors())
        for user, ids in self.created.items():
            for rid in ids:
                if rid in self.deleted or (user, rid) in rejected_records:
                    continue
                if not self._exists("workorder", rid) and not self._deleted_on_server(rid):
                    f.lost += 1
                    f.problems.append(f"{user}: created workorder {rid} is missing")
        for (table, rid, column), (writer, value) in self.writes.items():
            if writer == "server" or (writer, rid) in rejected_records or rid in self.deleted:
                continue
            if self._deleted_on_server(rid):
                continue
            row = records.retrieve_multiple(table, where={f"{table}id": uuid.UUID(rid)})
            if row and row[0][column] != value:
                f.lost += 1
                f.problems.append(
                    f"{writer}: {table} {rid}.{column} is {row[0][column]}, not {value}"
                )

    def _sync_errors(self) -> list[tuple[str, str]]:
        import sqlalchemy as sa

        sql = self.platform.store.sql_table("syncerror")
        devices = {d.device_id: u for u, d in self.devices.items()}
        with self.platform.store.read() as conn:
            rows = conn.execute(
                sa.select(sql.c.deviceid, sql.c.regardingobjectid, sql.c.clientchangeid)
            ).all()
        out: list[tuple[str, str]] = []
        seen: Counter[str] = Counter()
        for device, record, change in rows:
            seen[str(change)] += 1
            out.append((devices.get(device, device), str(record)))
        self.figures.duplicated += sum(1 for n in seen.values() if n > 1)
        return out

    def _exists(self, table: str, rid: str) -> bool:
        return bool(
            self.platform.records.retrieve_multiple(table, where={f"{table}id": uuid.UUID(rid)})
        )

    def _deleted_on_server(self, rid: str) -> bool:
        import sqlalchemy as sa

        from fieldsync.store.catalog import fs_change

        with self.platform.store.read() as conn:
            return (
                conn.execute(
                    sa.select(fs_change.c.version).where(
                        fs_change.c.recordid == uuid.UUID(rid), fs_change.c.operation == "delete"
                    )
                ).first()
                is not None
            )


def run(
    *, rounds: int, scenarios: int, pg: str | None, seed: int = 1, restart_pg: bool = False
) -> Figures:
    from scratch import ScratchDatabases

    figures = Figures()
    kinds: list[tuple[str, Any]] = [("sqlite", ScratchDatabases.sqlite)]
    if pg:
        kinds.append(("postgresql", lambda: ScratchDatabases.postgres(pg)))
    for name, make in kinds:
        with make() as scratch:
            for n in range(scenarios):
                url = scratch.url(f"rel{n}")
                work = Path(tempfile.mkdtemp(prefix=f"fieldsync-reliability-{name}-"))
                scenario = Scenario(
                    url,
                    work,
                    seed * 1000 + n,
                    figures,
                    restart_database=restart_pg and name == "postgresql",
                )
                try:
                    scenario.start()
                    for _ in range(rounds):
                        scenario.round()
                    scenario.check()
                finally:
                    figures.faults.update(scenario.proxy.injected)
                    scenario.close()
                figures.scenarios += 1
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--soak", action="store_true", help="more scenarios and rounds")
    parser.add_argument("--no-pg", action="store_true")
    parser.add_argument(
        "--pg",
        default=os.environ.get(
            "FIELDSYNC_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
        ),
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--restart-postgres",
        action="store_true",
        default=os.environ.get("FIELDSYNC_RELIABILITY_RESTART_POSTGRES") == "1",
        help="restart the PostgreSQL cluster during syncs (disturbs other users of it)",
    )
    args = parser.parse_args()
    rounds, scenarios = (60, 4) if args.soak else (12, 1)
    pg: str | None = None if args.no_pg else args.pg
    if pg is not None:
        from scratch import postgres_problem

        problem = postgres_problem(pg)
        if problem is not None:
            if os.environ.get("FIELDSYNC_REQUIRE_POSTGRES") == "1":
                sys.exit(f"PostgreSQL is required and unreachable: {problem}")
            print(f"skipping PostgreSQL: {problem}")
            pg = None
    start = time.perf_counter()
    figures = run(
        rounds=rounds,
        scenarios=scenarios,
        pg=pg,
        seed=args.seed,
        restart_pg=args.restart_postgres and shutil.which("pg_ctlcluster") is not None,
    )
    print("\n".join(figures.lines()))
    print(f"time                 {time.perf_counter() - start:.0f} s")
    for problem in figures.problems[:20]:
        print(f"  problem: {problem}")
    with contextlib.suppress(Exception):
        sys.stdout.flush()
    sys.exit(0 if figures.clean else 1)


if __name__ == "__main__":
    main()
