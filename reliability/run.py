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

Files ride along: devices attach files larger than a chunk and images (thumbnails made on
the server) offline, the server attaches some through the Web API's path, and some kills land
the moment a chunk goes up or a range comes down. The oracle then checks every file: on the
server once, with its sha256, its blob whole; on every device whose scope holds its row, with
the right bytes (and thumbnail); no row referencing a file that is not there; no blob whose
bytes do not hash to its name (a half-written blob made visible). On PostgreSQL the blobs live
in an S3 bucket (``rclone serve s3``, see ``tests/s3_server.py``), on SQLite in the data
directory.

Then live sync: the devices hold ``/sync/v1/live`` while the server is killed and restarted;
each must reconnect (with backoff) and hear of a change made after the restart. Then the
portal: a signed-in maker's cookie keeps working across a restart and under every fault mix,
and a form post with its CSRF token succeeds after the restart.

Every response passes the proxy, which counts its status: a 5xx cannot hide behind a retry.
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

PASSWORD = "correct horse battery"
CHUNK = 64 * 1024  # the server's upload chunk and the devices' download range, in this suite
FILE_COLUMNS = ("servicereport", "sitephoto")
KINDS = ("account", "workorder", "workorder", "edit", "edit", "assign", "delete", "share")
PROFILE = """\
name: Field Service
tables:
  workorder: {filter: other, owned_by: [me, my_teams], files: [servicereport], images: [sitephoto]}
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
    answers: Counter[int] = field(default_factory=Counter)
    files_attached: int = 0  # on devices
    files_server: int = 0  # through the server's upload path
    file_kills: int = 0  # kills the moment a chunk went up or a range came down
    files_verified: int = 0  # copies checked byte for byte (server blobs, device files)
    corrupt: int = 0  # blobs whose bytes do not hash to their name
    live_restarts: int = 0
    # seconds, per backend: reconnect after a restart, notice and row after a change
    live_reconnects: dict[str, list[float]] = field(default_factory=dict)
    live_notices: dict[str, list[float]] = field(default_factory=dict)
    live_arrivals: dict[str, list[float]] = field(default_factory=dict)
    live_missed: int = 0
    portal_requests: int = 0
    portal_restarts: int = 0
    portal_posts: int = 0
    portal_signed_out: int = 0
    phases: Counter[str] = field(default_factory=Counter)  # seconds spent in each phase
    blob_stores: dict[str, str] = field(default_factory=dict)  # backend -> where blobs lived
    problems: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (
            self.lost
            or self.duplicated
            or self.divergences
            or self.leaks
            or self.server_errors
            or self.corrupt
            or self.live_missed
            or self.portal_signed_out
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
            f"answers              {sum(self.answers.values())} ({_classes(self.answers)})",
            f"files                {self.files_attached} attached on devices, "
            f"{self.files_server} on the server, {self.file_kills} kills mid-transfer, "
            f"{self.files_verified} copies verified",
            f"corrupt blobs        {self.corrupt} (blobs: "
            + ", ".join(f"{k} in {v}" for k, v in self.blob_stores.items())
            + ")",
            f"live restarts        {self.live_restarts}",
            *(
                f"  {name:<18} reconnected {_spread(self.live_reconnects.get(name, []))} "
                f"after the restart; notice {_spread(self.live_notices.get(name, []))}, "
                f"row {_spread(self.live_arrivals.get(name, []))} after a change"
                for name in sorted(self.live_reconnects)
            ),
            f"live notices missed  {self.live_missed}",
            f"portal               {self.portal_requests} requests, {self.portal_restarts} "
            f"restarts, {self.portal_posts} form posts after a restart",
            f"portal signed out    {self.portal_signed_out}",
            "phases               " + ", ".join(f"{k} {v:.0f} s" for k, v in self.phases.items()),
        ]


def _classes(answers: Counter[int]) -> str:
    by: Counter[str] = Counter()
    for status, n in answers.items():
        by[f"{status // 100}xx"] += n
    return ", ".join(f"{k} {v}" for k, v in sorted(by.items())) or "none"


def _spread(values: list[float]) -> str:
    if not values:
        return "none"
    ordered = sorted(values)
    median = ordered[len(ordered) // 2]
    return f"median {median:.2f} s, max {ordered[-1]:.2f} s"


def sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Server:
    """``fieldsync serve`` in a child process; ``kill()`` is SIGKILL, ``start()`` restarts it
    on the same port. Its log goes to a file (a temporary one unless ``log`` is given): a
    pipe nobody reads fills up with long error lines and then blocks the server."""

    def __init__(
        self, url: str, env: dict[str, str] | None = None, *, log: Path | None = None
    ) -> None:
        self.url = url
        self.env = {**os.environ, **(env or {})}
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        if log is None:
            handle, name = tempfile.mkstemp(prefix="fieldsync-server-", suffix=".log")
            os.close(handle)
            log = Path(name)
        self.log = log

    def start(self) -> None:
        args = [sys.executable, "-m", "fieldsync.cli", "serve", "--database", self.url]
        args += ["--host", "127.0.0.1", "--port", str(self.port), "--log-level", "error"]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=out, env=self.env)
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    tail = self.log.read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"the server did not start: {tail}") from None
                time.sleep(0.05)

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:  # streams still held open: end it
                self.proc.kill()
                self.proc.wait(10)
            self.proc = None


class Scenario:
    def __init__(
        self,
        url: str,
        work: Path,
        seed: int,
        figures: Figures,
        *,
        restart_database: bool = False,
        s3: Any = None,
    ) -> None:
        from fieldsync.files.blobs import BlobStore, LocalBlobs, S3Blobs
        from fieldsync.files.service import FileLimits, Files
        from fieldsync.platform import build
        from fieldsync.security.context import load_context
        from fieldsync.security.roles import SYSTEM_ADMINISTRATOR
        from fieldsync.store.store import Store
        from sync_world import World

        self.rng = random.Random(seed)
        self.figures = figures
        self.restart_database = restart_database
        self.backend = url.split(":", 1)[0]
        from fieldsync.identity.auth import AuthSettings

        # cheap password hashes (their parameters travel in the hash, so the server process
        # verifies them cheaply too): the suite is about faults, not argon2's cost
        cheap = AuthSettings(argon2_time_cost=1, argon2_memory_kib=1024, argon2_parallelism=1)
        self.platform = build(Store.open(url), auth_settings=cheap)
        self.world = World(self.platform, work)
        self.platform.offline.import_yaml(PROFILE)
        self.world.profile = self.platform.offline.publish("Field Service")
        from fieldsync.sync.service import SyncService

        self.world.sync = SyncService(self.platform.records)
        org = self.platform.org
        self.maker = org.user("maker", password=PASSWORD, roles=[org.role_id(SYSTEM_ADMINISTRATOR)])
        self.maker_ctx = load_context(self.platform.store, self.maker)
        self.rows: dict[str, list[uuid.UUID]] = {"account": [], "contact": [], "workorder": []}
        env = {
            "FIELDSYNC_DATA_DIR": str(work / "server"),
            "FIELDSYNC_FILES_CHUNK_KB": str(CHUNK // 1024),
            "FIELDSYNC_LIVE_KEEPALIVE_SECONDS": "1",
        }
        blobs: BlobStore
        if s3 is not None:
            bucket = s3.bucket()
            env.update(s3.environment())
            env["FIELDSYNC_FILES_URL"] = f"s3://{bucket}/files"
            env["FIELDSYNC_FILES_S3_ENDPOINT"] = s3.endpoint
            blobs = S3Blobs(bucket, "files", client=s3.client())
        else:
            blobs = LocalBlobs(work / "server" / "files")
        self.blob_kind = "an S3 bucket" if s3 is not None else "the data directory"
        self.files = Files(self.platform.records, blobs, FileLimits(chunk_bytes=CHUNK))
        self.server = Server(url, env, log=work / "server.log")
        self.proxy = FaultProxy(0, seed=seed)
        self.devices: dict[str, Any] = {}
        self.created: dict[str, set[str]] = {}  # device -> record ids it created
        self.deleted: set[str] = set()
        self.writes: dict[tuple[str, str, str], tuple[str, Any]] = {}  # last writer per column
        # file columns: the last writer of each, the file id and the sha256 it put there
        self.file_writes: dict[tuple[str, str], tuple[str, str, str]] = {}
        self.rejected: set[tuple[str, str]] = set()

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
        kind = self.rng.choice([*KINDS, "attach"])
        try:
            if kind == "attach" and self.rows["workorder"]:
                self.server_attach(self.rng.choice(self.rows["workorder"]))
            elif kind == "account" or not self.rows["account"]:
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

    def content(self, column: str) -> tuple[bytes, str]:
        """New bytes for a file column: a file of one to three chunks and a bit, or a PNG of
        noise (which compresses to more than a chunk) for the image column."""
        import io

        from PIL import Image

        if column == "sitephoto":
            side = self.rng.randint(150, 220)
            image = Image.frombytes("RGB", (side, side), self.rng.randbytes(side * side * 3))
            out = io.BytesIO()
            image.save(out, "PNG")
            return out.getvalue(), "site.png"
        return self.rng.randbytes(self.rng.randint(CHUNK + 1, 3 * CHUNK + 100)), "report.bin"

    def server_attach(self, rid: uuid.UUID) -> None:
        """A file put into a row's column on the server, as the Web API does (chunked, the
        row updated by the last chunk)."""
        column = self.rng.choice(FILE_COLUMNS)
        data, name = self.content(column)
        ctx = self.maker_ctx
        state = self.files.begin(
            ctx,
            table="workorder",
            column=column,
            name=name,
            size=len(data),
            sha256=sha256(data),
            record_id=rid,
        )
        while not state["complete"]:
            at = int(state["received"])
            state = self.files.append(
                ctx, state["upload"], start=at, data=data[at : at + CHUNK], total=len(data)
            )
        self.file_writes[(str(rid), column)] = ("server", state["file"]["id"], sha256(data))
        self.figures.files_server += 1

    def device_write(self, user: str) -> None:
        from fieldsync.errors import FieldsyncError

        device = self.devices[user]
        if "workorder" not in device.replica.sql:
            return
        orders = [r["workorderid"] for r in device.query("workorder")]
        accounts = [r["accountid"] for r in device.query("account")]
        try:
            if orders and self.rng.random() < 0.4:
                rid = self.rng.choice(orders)
                column = self.rng.choice(FILE_COLUMNS)
                data, name = self.content(column)
                fid = device.attach("workorder", rid, column, data, name)
                self.file_writes[(rid, column)] = (user, str(fid), sha256(data))
                self.figures.files_attached += 1
            elif orders and self.rng.random() < 0.6:
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
                if "server failed (5" in str(exc):  # the proxy counts every 5xx
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
        roll = self.rng.random()
        uploading = [u for u, d in self.devices.items() if self._queued_uploads(d)]
        if roll < 0.15:
            self.kill_during_sync(self.rng.choice(list(self.devices)))
        elif roll < 0.65 and uploading:
            self.kill_during_transfer(self.rng.choice(uploading))
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

    def _queued_uploads(self, device: Any) -> int:
        with device.replica.read() as conn:
            found = conn.execute("SELECT count(*) FROM _fs_file_upload").fetchone()[0]
        return int(found or 0)

    def kill_during_transfer(self, user: str) -> None:
        """SIGKILL the server the moment this device's sync sends a file chunk or asks for
        a file range (within a few milliseconds: before, during or after the server handles
        it), or, in half of these, while the server makes a file from its last chunk (up to
        150 ms after the chunk is sent); restart it, and let the device go on. No file
        moving, no kill."""
        import re
        import threading

        delay = self.rng.uniform(0.0, 0.03)
        finishing = self.rng.uniform(0.0, 0.15)  # while the server makes the file
        last = self.rng.random() < 0.5  # wait for the last chunk of a file
        fired: list[threading.Timer] = []

        def hook(head: str) -> None:
            line, _, headers = head.partition("\r\n")
            method, _, rest = line.partition(" ")
            if fired or method not in ("PUT", "GET") or not rest.startswith("/sync/v1/files/"):
                return
            span = re.search(r"(?im)^content-range: bytes \d+-(\d+)/(\d+)", headers)
            final = span is not None and int(span.group(1)) + 1 == int(span.group(2))
            if last and not final:
                return
            timer = threading.Timer(finishing if final else delay, self.server.kill)
            fired.append(timer)
            timer.start()

        self.proxy.on_request = hook
        try:
            self.sync(user)
        finally:
            self.proxy.on_request = None
        if fired:
            fired[0].join()
            self.figures.server_kills += 1
            self.figures.file_kills += 1
            self.server.start()

    # -- live sync across restarts ----------------------------------------------------------

    def live(self, restarts: int) -> None:
        """Every device holds the live stream; the server is killed and restarted; each
        device must reconnect and then hear of (and fetch) a work order created for it."""
        import threading

        from fieldsync.types import EntityRef

        self.proxy.faults = Faults(latency=0.005)
        seen: dict[str, list[tuple[float, str, list[str]]]] = {u: [] for u in self.devices}
        lock = threading.Lock()
        stop = threading.Event()

        def note(user: str, name: str, tables: list[str]) -> None:
            with lock:
                seen[user].append((time.monotonic(), name, tables))

        def run(user: str, device: Any) -> None:
            try:
                device.live(
                    stop,
                    base=0.1,
                    cap=1.0,
                    read_timeout=10.0,
                    on_event=lambda name, tables: note(user, name, tables),
                )
            except Exception as exc:
                self.figures.problems.append(f"{user}: live sync ended: {exc!r}")

        def first(user: str, name: str, after: float, table: str | None = None) -> float | None:
            with lock:
                for at, event, tables in seen[user]:
                    if at >= after and event == name and (table is None or table in tables):
                        return at
            return None

        def wait(check: Any, timeout: float = 20.0) -> bool:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if check():
                    return True
                time.sleep(0.02)
            return False

        threads = [
            threading.Thread(target=run, args=(u, d), daemon=True) for u, d in self.devices.items()
        ]
        began = time.monotonic()
        for t in threads:
            t.start()
        try:
            if not wait(lambda: all(first(u, "ready", began) for u in self.devices)):
                self.figures.problems.append("live: not every device connected")
            f = self.figures
            for _ in range(restarts):
                self.server.kill()
                f.server_kills += 1
                f.live_restarts += 1
                time.sleep(self.rng.uniform(0.2, 0.6))  # the devices notice and back off
                self.server.start()
                up = time.monotonic()
                for user in self.devices:
                    if wait(lambda user=user, up=up: first(user, "ready", up) is not None):
                        f.live_reconnects.setdefault(self.backend, []).append(
                            first(user, "ready", up) - up  # type: ignore[operator]
                        )
                    else:
                        f.live_missed += 1
                        f.problems.append(f"{user}: no live reconnect within 20 s of the restart")
                created: dict[str, tuple[uuid.UUID, float]] = {}
                for user in self.devices:
                    rid = self.platform.records.create(
                        "workorder",
                        {
                            "name": f"live job for {user}",
                            "serviceaccountid": self.rng.choice(self.rows["account"]),
                            "ownerid": EntityRef("systemuser", self.world.users[user]),
                        },
                    )
                    self.rows["workorder"].append(rid)
                    created[user] = (rid, time.monotonic())
                for user, (rid, at) in created.items():
                    device = self.devices[user]
                    heard = wait(lambda user=user, at=at: first(user, "changes", at, "workorder"))
                    arrived = wait(lambda device=device, rid=rid: device.get("workorder", rid))
                    if heard:
                        f.live_notices.setdefault(self.backend, []).append(
                            first(user, "changes", at, "workorder") - at  # type: ignore[operator]
                        )
                    if arrived:
                        f.live_arrivals.setdefault(self.backend, []).append(time.monotonic() - at)
                    else:
                        f.live_missed += 1
                        f.problems.append(f"{user}: work order {rid} did not arrive by live sync")
        finally:
            stop.set()
            for t in threads:
                t.join(15)
                if t.is_alive():
                    self.figures.problems.append("live: a device did not stop")

    # -- the portal ---------------------------------------------------------------------------

    def portal(self) -> None:
        """A maker signed in to the portal (a cookie): pages under every fault mix, a kill
        during a page load, then pages and a form post with the session's CSRF token after
        the restart, with the same cookie."""
        import re
        import threading

        from fieldsync.offline.access import APP

        f = self.figures
        http = httpx.Client(
            base_url=f"http://127.0.0.1:{self.proxy.port}",
            transport=httpx.HTTPTransport(limits=httpx.Limits(max_keepalive_connections=0)),
            timeout=30,
        )

        def send(method: str, path: str, **kw: Any) -> httpx.Response:
            for _ in range(12):
                f.portal_requests += 1
                try:
                    return http.request(method, path, **kw)
                except httpx.TransportError:
                    time.sleep(0.1)
            raise RuntimeError(f"{method} {path}: no answer after 12 tries")

        def csrf(html: str) -> str:
            found = re.search(r'name="csrf" value="([^"]+)"', html)
            return found.group(1) if found else ""

        def page(path: str) -> str:
            r = send("GET", path)
            if r.status_code == 303 and "/portal/sign-in" in r.headers.get("location", ""):
                f.portal_signed_out += 1
                f.problems.append(f"portal: {path} sent a signed-in maker to sign in")
            elif r.status_code != 200:
                f.problems.append(f"portal: {path} answered {r.status_code}")
            return r.text

        try:
            self.proxy.faults = Faults()
            answer = send(
                "POST",
                "/portal/sign-in",
                data={
                    "csrf": csrf(send("GET", "/portal/sign-in").text),
                    "username": "maker",
                    "password": PASSWORD,
                },
            )
            if answer.status_code != 303:
                f.problems.append(f"portal: sign-in answered {answer.status_code}")
                return
            [app] = self.platform.records.retrieve_multiple(
                APP, where={"uniquename": "fieldservice"}
            )
            app_id = app[f"{APP}id"]
            pages = ["/portal/profiles", "/portal/apps", f"/portal/apps/{app_id}"]
            pages += ["/portal/tables", "/portal/devices", "/portal/sync-errors"]
            for n, faults in enumerate(FAULTS):
                self.proxy.faults = faults
                for path in (pages[n % len(pages)], pages[(n + 3) % len(pages)]):
                    page(path)
            # a kill during a page load, and the same cookie after the restart
            self.proxy.faults = Faults()
            timer = threading.Timer(self.rng.uniform(0.0, 0.05), self.server.kill)
            timer.start()
            with contextlib.suppress(httpx.TransportError):
                http.get(f"/portal/apps/{app_id}")
            timer.join()
            f.server_kills += 1
            f.portal_restarts += 1
            self.server.start()
            for faults in (Faults(), FAULTS[-1]):
                self.proxy.faults = faults
                token = csrf(page(f"/portal/apps/{app_id}"))
                values = {
                    "csrf": token,
                    "profile": str(app["mobileofflineprofileid"] or ""),
                    "offlinemode": str(app["offlinemode"] or 0),
                    "offlineprofilemode": str(app["offlineprofilemode"] or 0),
                }
                for flag in ("canbeusedoffline", "allowsyncfrequency", "allowwifionly"):
                    if app[flag]:
                        values[flag] = "on"
                posted = send("POST", f"/portal/apps/{app_id}", data=values)
                where = posted.headers.get("location", "")
                if posted.status_code == 303 and where.endswith(f"/apps/{app_id}?notice=saved"):
                    f.portal_posts += 1
                elif "/portal/sign-in" in where:
                    f.portal_signed_out += 1
                    f.problems.append("portal: a form post after the restart needed sign-in")
                else:
                    f.problems.append(f"portal: the form post answered {posted.status_code}")
                for path in pages[:3]:
                    page(path)
            [after] = self.platform.records.retrieve_multiple(
                APP, where={"uniquename": "fieldservice"}
            )
            changed = [
                k
                for k in app
                if k not in ("modifiedon", "modifiedby", "versionnumber") and app[k] != after[k]
            ]
            if changed:
                f.problems.append(f"portal: saving the app unchanged changed {changed}")
                f.divergences += len(changed)
        finally:
            self.proxy.faults = Faults()
            http.close()

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
        rejected_records = self.rejected = set(self._sync_errors())
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

    def check_files(self) -> None:
        """Every file where it belongs, once, whole, with its bytes."""
        import sqlalchemy as sa

        from fieldsync.store.catalog import fs_file, fs_upload

        f = self.figures
        blobs = self.files.blobs
        with self.platform.store.read() as conn:
            files = {str(r.fileid): r for r in conn.execute(sa.select(fs_file))}
            uploads = conn.execute(sa.select(fs_upload.c.fileid, fs_upload.c.received)).all()
        rows = {
            str(r["workorderid"]): r
            for r in self.platform.records.retrieve_multiple(
                "workorder", columns=["workorderid", *FILE_COLUMNS]
            )
        }
        by_digest = Counter(r.sha256 for r in files.values())
        # each column's last file is on the server, once, with its sha256
        for (rid, column), (writer, fid, digest) in self.file_writes.items():
            if rid in self.deleted or (writer, rid) in self.rejected or rid not in rows:
                continue
            held = rows[rid][column]
            if str(held) != fid:
                f.lost += 1
                f.problems.append(f"{writer}: {rid}.{column} holds {held}, not file {fid}")
                continue
            row = files.get(fid)
            if row is None or row.sha256 != digest:
                f.lost += 1
                f.problems.append(f"{writer}: file {fid} is missing or has other bytes")
            elif by_digest[digest] > 1:
                f.duplicated += 1
                f.problems.append(f"{writer}: file {fid}'s bytes are on the server twice")
        # no row references a file that is not there; every blob is whole
        for rid, row in rows.items():
            for column in FILE_COLUMNS:
                fid = row[column]
                if fid is None:
                    continue
                info = files.get(str(fid))
                if info is None:
                    f.lost += 1
                    f.problems.append(f"{rid}.{column} references file {fid}, which is gone")
                    continue
                for digest, size in (
                    (info.sha256, info.size),
                    (info.thumbnail, info.thumbnailsize),
                ):
                    if digest is not None and blobs.size(digest) != size:
                        f.lost += 1
                        f.problems.append(f"file {fid}: blob {digest[:12]} is missing or short")
        for digest, _ in blobs.blobs():
            f.files_verified += 1
            if sha256(b"".join(blobs.read(digest))) != digest:
                f.corrupt += 1
                f.problems.append(f"server blob {digest[:12]} does not hash to its name")
        for fid, _received in uploads:
            if str(fid) in files:
                f.duplicated += 1
                f.problems.append(f"upload of file {fid} left behind after it finished")
        # every device holds the files of its rows, with the right bytes
        for user, device in self.devices.items():
            for row in device.query("workorder"):
                for column in FILE_COLUMNS:
                    fid = row.get(column)
                    if fid is None:
                        continue
                    info = files.get(str(fid))
                    want = [(False, None if info is None else info.sha256)]
                    if column == "sitephoto":
                        want.append((True, None if info is None else info.thumbnail))
                    for thumb, digest in want:
                        path = device.file_path(
                            "workorder", row["workorderid"], column, thumbnail=thumb
                        )
                        if path is None or digest is None or sha256(path.read_bytes()) != digest:
                            f.divergences += 1
                            f.problems.append(
                                f"{user}: {row['workorderid']}.{column}"
                                f"{' thumbnail' if thumb else ''} is not on the device as sent"
                            )
                        else:
                            f.files_verified += 1
            for path in (device.directory / "files" / "blobs").rglob("*"):
                if path.is_file() and sha256(path.read_bytes()) != path.name:
                    f.corrupt += 1
                    f.problems.append(f"{user}: blob {path.name[:12]} does not hash to its name")
            left = self._queued_uploads(device)
            if left:
                f.lost += left
                f.problems.append(f"{user}: {left} file uploads still queued")

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
    *,
    rounds: int,
    scenarios: int,
    pg: str | None,
    seed: int = 1,
    restart_pg: bool = False,
    s3: Any = None,
    live_restarts: int = 1,
) -> Figures:
    import fieldsync.client.files as device_files
    from scratch import ScratchDatabases

    device_files.CHUNK = CHUNK  # the devices download in ranges of a chunk too
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
                    s3=s3 if name == "postgresql" else None,
                )
                figures.blob_stores[name] = scenario.blob_kind
                clock = time.perf_counter()

                def lap(phase: str) -> None:
                    nonlocal clock
                    now = time.perf_counter()
                    figures.phases[phase] += now - clock
                    clock = now

                try:
                    scenario.start()
                    lap("set-up")
                    for _ in range(rounds):
                        scenario.round()
                    lap("rounds")
                    scenario.live(live_restarts)
                    lap("live")
                    scenario.portal()
                    lap("portal")
                    scenario.check()
                    scenario.check_files()
                    lap("oracle")
                finally:
                    figures.faults.update(scenario.proxy.injected)
                    figures.answers.update(scenario.proxy.statuses)
                    scenario.close()
                figures.scenarios += 1
    figures.unavailable = figures.answers[503]
    figures.server_errors = sum(n for k, n in figures.answers.items() if k >= 500 and k != 503)
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
    import s3_server

    s3: Any = None
    if pg is not None:  # the PostgreSQL scenarios keep their blobs in an S3 bucket
        problem = s3_server.problem()
        if problem is not None:
            if s3_server.REQUIRED:
                sys.exit(f"an S3 server is required and cannot run: {problem}")
            print(f"blobs on disk for PostgreSQL too: {problem}")
        else:
            s3 = s3_server.S3Server.start()
    start = time.perf_counter()
    try:
        figures = run(
            rounds=rounds,
            scenarios=scenarios,
            pg=pg,
            seed=args.seed,
            restart_pg=args.restart_postgres and shutil.which("pg_ctlcluster") is not None,
            s3=s3,
            live_restarts=3 if args.soak else 1,
        )
    finally:
        if s3 is not None:
            s3.stop()
    print("\n".join(figures.lines()))
    print(f"time                 {time.perf_counter() - start:.0f} s")
    for problem in figures.problems[:20]:
        print(f"  problem: {problem}")
    with contextlib.suppress(Exception):
        sys.stdout.flush()
    sys.exit(0 if figures.clean else 1)


if __name__ == "__main__":
    main()
