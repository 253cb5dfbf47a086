"""Concurrent writers of every kind against two ``fieldsync serve`` processes sharing one
PostgreSQL database: no 5xx, and every acknowledged write is in the database afterwards.

    python bench/write_load.py                      # 2 processes x 8 writers for 60 s
    python bench/write_load.py --seconds 20 --json out.json

Writers are threads with their own HTTP client, ``--writers`` per process. Each loops
until the time is up, picking one write at a time: Web API create, update and delete of its
own accounts; an update or an assign of one of a few *hot* accounts that every writer touches;
a ``$batch`` change set that updates two hot accounts (in random order) and creates one; an
associate of its own account with a contact (``$ref``); a sync upload (a create and an update
from the writer's device). Hot rows in random order inside change sets are what made
PostgreSQL report deadlocks on the version counter before writers took it first.

Afterwards it checks the database: every account a writer was told it created is there with
the last value it was told it wrote, deleted ones are gone, every acknowledged link is there,
and each hot account has exactly one change-log entry per acknowledged write to it (a write
that was refused or answered 503 wrote nothing). It prints requests, acknowledged writes per
second, the status counts, 5xx (inner ``$batch`` parts included), 503s and how often the
servers ran a transaction again after a deadlock (from their logs).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fieldsync.platform import build
from fieldsync.security.roles import BASIC_USER, SYSTEM_ADMINISTRATOR
from fieldsync.store.catalog import fs_change
from fieldsync.store.store import Store
from scratch import ScratchDatabases, postgres_problem

API = "/api/data/v9.2/"
APP = "mine"
LINKS = "new_account_contact"
HOT_ROWS = 6
CONTACTS = 12
PROFILE = """\
name: Mine
tables:
  account: {filter: other, owned_by: [me]}
apps:
  - {uniquename: mine, name: Mine, can_be_used_offline: true, mode: offline-first}
"""
KINDS = {  # write kind -> weight
    "create": 3,
    "update": 2,
    "delete": 1,
    "hot_update": 3,
    "assign": 2,
    "changeset": 3,
    "associate": 2,
    "sync_upload": 2,
}


@dataclass
class World:
    url: str
    admin_token: str
    tech_token: str
    owners: list[str]  # systemuser ids hot rows are assigned between
    hot: list[str]
    contacts: list[str]
    start_version: int


def seed(url: str) -> World:
    """An administrator and a technician with API tokens, a second owner for assigns, hot
    accounts, contacts, a many-to-many account-contact relationship and the technician's
    published offline profile."""
    platform = build(Store.open(url))
    try:
        org = platform.org
        store = platform.store
        store.create_many_to_many(LINKS, "account", "contact")
        admin = org.user("admin", roles=[org.role_id(SYSTEM_ADMINISTRATOR)])
        other = org.user("other", roles=[org.role_id(SYSTEM_ADMINISTRATOR)])
        role = org.role(
            "Technician",
            privileges={"account": {"read": "user", "create": "user", "write": "user"}},
        )
        org.user("tech", roles=[org.role_id(BASIC_USER), role])
        platform.offline.import_yaml(PROFILE)
        platform.offline.publish("Mine")
        _, admin_token = platform.auth.create_api_token(admin, "load")
        _, tech_token = platform.auth.create_api_token(org.user_id("tech"), "load")
        hot = platform.records.create_many(
            "account", [{"name": f"hot {i}"} for i in range(HOT_ROWS)]
        )
        contacts = platform.records.create_many(
            "contact", [{"lastname": f"contact {i}"} for i in range(CONTACTS)]
        )
        with store.read() as conn:
            start = store.current_version(conn)
        return World(
            url,
            admin_token,
            tech_token,
            [str(admin), str(other)],
            [str(h) for h in hot],
            [str(c) for c in contacts],
            start,
        )
    finally:
        platform.close()


class Server:
    """``fieldsync serve`` in a child process on a loopback port; its log goes to a file."""

    def __init__(self, url: str, log: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.log = log
        args = [sys.executable, "-m", "fieldsync.cli", "serve", "--database", url]
        args += ["--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning"]
        self._out = log.open("wb")
        self.proc = subprocess.Popen(
            args, env=dict(os.environ), stdout=subprocess.DEVNULL, stderr=self._out
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.stop()
                    raise RuntimeError(f"the server did not start; see {log}") from None
                time.sleep(0.1)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(15)
        self._out.close()

    def count(self, text: str) -> int:
        return self.log.read_text(errors="replace").count(text)


@dataclass
class Tally:
    """What one writer was told, and what it expects to find."""

    statuses: Counter[int] = field(default_factory=Counter)
    kinds: Counter[str] = field(default_factory=Counter)
    acknowledged: int = 0
    unknown: list[str] = field(default_factory=list)  # no answer (transport errors)
    unexpected: list[str] = field(default_factory=list)  # answers other than success or 503
    own: dict[str, str] = field(default_factory=dict)  # account id -> last name written
    deleted: set[str] = field(default_factory=set)
    links: set[tuple[str, str]] = field(default_factory=set)
    synced: dict[str, str] = field(default_factory=dict)  # account id -> name (via sync)
    hot_writes: Counter[str] = field(default_factory=Counter)


class Writer:
    def __init__(self, number: int, server: str, world: World) -> None:
        self.n = number
        self.world = world
        self.deadline = 0.0
        self.rng = random.Random(number)
        self.tally = Tally()
        self.seq = 0
        self.device = f"load-device-{number}-{uuid.uuid4().hex[:8]}"
        self.api = httpx.Client(
            base_url=server,
            headers={"Authorization": f"Bearer {world.admin_token}"},
            timeout=60,
        )
        self.sync = httpx.Client(
            base_url=server,
            headers={"Authorization": f"Bearer {world.tech_token}"},
            timeout=60,
        )

    def close(self) -> None:
        self.api.close()
        self.sync.close()

    def name(self, what: str) -> str:
        self.seq += 1
        return f"w{self.n} {what} {self.seq}"

    def _status(self, kind: str, status: int, text: str, *inner: int) -> bool:
        """Record an answer; True when it acknowledged the write."""
        self.tally.statuses[status] += 1
        for s in inner:
            self.tally.statuses[s] += 1
        codes = (status, *inner)
        if all(200 <= c < 300 for c in codes):
            self.tally.acknowledged += 1
            self.tally.kinds[kind] += 1
            return True
        if not any(c == 503 for c in codes):
            self.tally.unexpected.append(f"{kind}: {codes} {text[:200]}")
        return False

    def run(self) -> None:
        kinds, weights = list(KINDS), list(KINDS.values())
        self.api.post(API + "accounts", json={"name": "warm-up"})  # not counted
        self.sync.post("/sync/v1/handshake", json={"device": self.device, "app": APP})
        while time.monotonic() < self.deadline:
            kind = self.rng.choices(kinds, weights)[0]
            try:
                getattr(self, kind)()
            except httpx.HTTPError as exc:
                self.tally.unknown.append(f"{kind}: {type(exc).__name__}: {exc}")

    # -- the writes ------------------------------------------------------------------------

    def create(self) -> None:
        name = self.name("create")
        r = self.api.post(API + "accounts", json={"name": name})
        if self._status("create", r.status_code, r.text):
            rid = r.headers["OData-EntityId"].rsplit("(", 1)[1].rstrip(")")
            self.tally.own[rid] = name

    def _own(self) -> str | None:
        return self.rng.choice(sorted(self.tally.own)) if self.tally.own else None

    def update(self) -> None:
        rid = self._own()
        if rid is None:
            return self.create()
        name = self.name("update")
        r = self.api.patch(API + f"accounts({rid})", json={"name": name})
        if self._status("update", r.status_code, r.text):
            self.tally.own[rid] = name
        return None

    def delete(self) -> None:
        rid = self._own()
        if rid is None or len(self.tally.own) < 3:
            return self.create()
        r = self.api.delete(API + f"accounts({rid})")
        if self._status("delete", r.status_code, r.text):
            del self.tally.own[rid]
            self.tally.deleted.add(rid)
            self.tally.links = {(a, c) for a, c in self.tally.links if a != rid}
        return None

    def hot_update(self) -> None:
        rid = self.rng.choice(self.world.hot)
        r = self.api.patch(API + f"accounts({rid})", json={"description": self.name("hot")})
        if self._status("hot_update", r.status_code, r.text):
            self.tally.hot_writes[rid] += 1

    def assign(self) -> None:
        rid = self.rng.choice(self.world.hot)
        owner = self.rng.choice(self.world.owners)
        r = self.api.patch(
            API + f"accounts({rid})", json={"ownerid@odata.bind": f"/systemusers({owner})"}
        )
        if self._status("assign", r.status_code, r.text):
            self.tally.hot_writes[rid] += 1

    def changeset(self) -> None:
        first, second = self.rng.sample(self.world.hot, 2)
        name = self.name("changeset")
        batch, cs = f"batch_{uuid.uuid4().hex}", f"changeset_{uuid.uuid4().hex}"
        parts = [
            (f"PATCH {API}accounts({first})", {"description": name}),
            (f"PATCH {API}accounts({second})", {"description": name}),
            (f"POST {API}accounts", {"name": name}),
        ]
        body = f"--{batch}\r\nContent-Type: multipart/mixed; boundary={cs}\r\n\r\n"
        for i, (line, payload) in enumerate(parts, 1):
            body += (
                f"--{cs}\r\nContent-Type: application/http\r\n"
                f"Content-Transfer-Encoding: binary\r\nContent-ID: {i}\r\n\r\n"
                f"{line} HTTP/1.1\r\nContent-Type: application/json\r\n\r\n"
                f"{json.dumps(payload)}\r\n"
            )
        body += f"--{cs}--\r\n--{batch}--\r\n"
        r = self.api.post(
            API + "$batch",
            content=body.encode(),
            headers={"Content-Type": f'multipart/mixed; boundary="{batch}"'},
        )
        inner = [int(s) for s in re.findall(r"HTTP/1\.1 (\d{3})", r.text)]
        if len(inner) != 3 and 200 <= r.status_code < 300 and all(s < 300 for s in inner):
            self.tally.unexpected.append(f"changeset: {len(inner)} parts answered: {r.text[:200]}")
            return
        if self._status("changeset", r.status_code, r.text, *inner):
            created = re.findall(r"OData-EntityId: \S+\(([0-9a-f-]{36})\)", r.text)
            self.tally.own[created[-1]] = name
            self.tally.hot_writes[first] += 1
            self.tally.hot_writes[second] += 1

    def associate(self) -> None:
        rid = self._own()
        if rid is None:
            return self.create()
        free = [c for c in self.world.contacts if (rid, c) not in self.tally.links]
        if not free:
            return self.update()
        contact = self.rng.choice(free)
        r = self.api.post(
            API + f"accounts({rid})/{LINKS}/$ref",
            json={"@odata.id": f"{self.api.base_url}{API}contacts({contact})"},
        )
        if self._status("associate", r.status_code, r.text):
            self.tally.links.add((rid, contact))
        return None

    def sync_upload(self) -> None:
        changes: list[dict[str, Any]] = []
        new = str(uuid.uuid4())
        new_name = self.name("sync create")
        changes.append(
            {
                "id": str(uuid.uuid4()),
                "table": "account",
                "operation": "create",
                "record": new,
                "values": {"name": new_name},
            }
        )
        edited: tuple[str, str] | None = None
        if self.tally.synced:
            rid = self.rng.choice(sorted(self.tally.synced))
            edited = (rid, self.name("sync update"))
            changes.append(
                {
                    "id": str(uuid.uuid4()),
                    "table": "account",
                    "operation": "update",
                    "record": rid,
                    "values": {"name": edited[1]},
                }
            )
        r = self.sync.post(
            "/sync/v1/upload", json={"device": self.device, "app": APP, "changes": changes}
        )
        if r.status_code == 200:
            results = r.json()["results"]
            rejected = [x for x in results if x.get("status") != "applied"]
            if rejected:
                self.tally.unexpected.append(f"sync_upload: rejected {rejected}")
                return
        if self._status("sync_upload", r.status_code, r.text):
            self.tally.synced[new] = new_name
            if edited is not None:
                self.tally.synced[edited[0]] = edited[1]


def check(world: World, tallies: list[Tally]) -> list[str]:
    """What the database lacks of what the writers were told: empty when all is there."""
    problems: list[str] = []
    store = Store.open(world.url, upgrade=False)
    try:
        account = store.sql_table("account")
        links = store.sql_table(LINKS)
        with store.read() as conn:
            names = dict(conn.execute(sa.select(account.c.accountid, account.c.name)).all())
            pairs = {
                (str(a), str(c))
                for a, c in conn.execute(sa.select(links.c.accountid, links.c.contactid))
            }
            logged = Counter(
                str(r)
                for r in conn.execute(
                    sa.select(fs_change.c.recordid).where(
                        fs_change.c.version > world.start_version,
                        fs_change.c.recordid.in_([uuid.UUID(h) for h in world.hot]),
                    )
                ).scalars()
            )
    finally:
        store.close()
    by_id = {str(k): v for k, v in names.items()}
    hot_writes: Counter[str] = Counter()
    for t in tallies:
        for rid, name in {**t.own, **t.synced}.items():
            if rid not in by_id:
                problems.append(f"account {rid} ({name!r}) is missing")
            elif by_id[rid] != name:
                problems.append(f"account {rid} is {by_id[rid]!r}, not the acknowledged {name!r}")
        problems += [f"deleted account {rid} is still there" for rid in t.deleted if rid in by_id]
        problems += [f"link {a} - {c} is missing" for a, c in t.links if (a, c) not in pairs]
        hot_writes.update(t.hot_writes)
    for rid in world.hot:
        if logged[rid] != hot_writes[rid]:
            problems.append(
                f"hot account {rid}: {hot_writes[rid]} writes acknowledged, "
                f"{logged[rid]} in the change log"
            )
    return problems


def run(url: str, *, seconds: float, writers: int, log_dir: Path) -> dict[str, Any]:
    """Seed ``url`` (an empty database), run ``writers`` writers against each of two server
    processes, check the database; returns the figures and the problems found."""
    world = seed(url)
    servers = [Server(url, log_dir / f"server-{i}.log") for i in range(2)]
    try:
        team = [Writer(i, servers[i % 2].url, world) for i in range(writers * len(servers))]
        threads = [threading.Thread(target=w.run, name=f"writer-{w.n}") for w in team]
        started = time.monotonic()
        for w in team:
            w.deadline = started + seconds
        for t in threads:
            t.start()
        for t in threads:
            t.join(seconds + 120)
        elapsed = time.monotonic() - started
        for w in team:
            w.close()
    finally:
        for s in servers:
            s.stop()
    tallies = [w.tally for w in team]
    statuses: Counter[int] = Counter()
    kinds: Counter[str] = Counter()
    for t in tallies:
        statuses.update(t.statuses)
        kinds.update(t.kinds)
    acknowledged = sum(t.acknowledged for t in tallies)
    return {
        "seconds": round(elapsed, 1),
        "writers": len(team),
        "processes": len(servers),
        "requests": sum(sum(t.statuses.values()) for t in tallies),
        "acknowledged": acknowledged,
        "writes_per_s": round(acknowledged / elapsed, 1),
        "kinds": dict(sorted(kinds.items())),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "5xx": sum(v for k, v in statuses.items() if k >= 500),
        "503": statuses.get(503, 0),
        "retries": sum(s.count("running the transaction again") for s in servers),
        "gave_up": sum(s.count("persisted through") for s in servers),
        "server_errors_logged": sum(s.count("Traceback") for s in servers),
        "unknown": [u for t in tallies for u in t.unknown],
        "unexpected": [u for t in tallies for u in t.unexpected],
        "problems": check(world, tallies),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--writers", type=int, default=8, help="writers per process")
    parser.add_argument(
        "--postgres",
        default=os.environ.get(
            "FIELDSYNC_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
        ),
        help="the PostgreSQL server to make a scratch schema on",
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--logs", type=Path, help="keep the servers' logs in this directory")
    args = parser.parse_args(argv)
    problem = postgres_problem(args.postgres)
    if problem:
        raise SystemExit(problem)
    with (
        ScratchDatabases.postgres(args.postgres) as dbs,
        tempfile.TemporaryDirectory(prefix="fieldsync-write-load-") as logs,
    ):
        url = dbs.url("writeload")
        log_dir = args.logs or Path(logs)
        log_dir.mkdir(parents=True, exist_ok=True)
        report = run(url, seconds=args.seconds, writers=args.writers, log_dir=log_dir)
    print(
        f"{report['writers']} writers on {report['processes']} processes for "
        f"{report['seconds']} s: {report['requests']} requests, {report['acknowledged']} "
        f"writes acknowledged ({report['writes_per_s']}/s)"
    )
    print(f"  by kind: {report['kinds']}")
    print(f"  statuses: {report['statuses']}")
    print(
        f"  5xx: {report['5xx']}  503: {report['503']}  transactions run again: "
        f"{report['retries']}  given up: {report['gave_up']}  tracebacks logged: "
        f"{report['server_errors_logged']}"
    )
    for label in ("unknown", "unexpected", "problems"):
        items = report[label]
        print(f"  {label}: {len(items)}")
        for item in items[:10]:
            print(f"    {item}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    report = main()
    failed = report["5xx"] or report["unknown"] or report["unexpected"] or report["problems"]
    sys.exit(1 if failed else 0)
