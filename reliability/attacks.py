"""The attack suite: a real ``fieldsync serve`` attacked as an attacker would, on SQLite and
on PostgreSQL, and a table of what happened.

    python reliability/attacks.py            # SQLite, and PostgreSQL when reachable
    python reliability/attacks.py --no-pg    # SQLite only

An organisation is seeded (technicians in two business units, an administrator, a user with a
custom role, a published offline profile); the victim ``tech1`` owns an account, a work order
whose names carry a secret marker, and a service report file. The attacker is ``tech3``
(another business unit: they may read none of it). Each attempt has one expected outcome —
the attack refused (the right 4xx, nothing changed, nothing leaked), or for the last category
the owner's read allowed — and is counted per category:

    attempts     requests made
    refused      answered as expected
    got through  not as expected: data leaked or changed, a wrong status, an attack accepted
    5xx          server errors (always a failure)

The exit status is non-zero when anything got through or any 5xx was answered.
``FIELDSYNC_REQUIRE_POSTGRES=1`` makes an unreachable PostgreSQL a failure.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE), str(ROOT / "tests"), str(ROOT / "bench")]

import httpx  # noqa: E402
from run import PROFILE, Server  # noqa: E402

from fieldsync.config import Settings  # noqa: E402

API = "/api/data/v9.2"
PASSWORD = "correct horse battery"  # sync_world's
APP = "fieldservice"
MAX_BODY = Settings().max_request_mb * 1024 * 1024  # the Web API's and sync's request limit
MAX_FORM = Settings().max_form_kb * 1024  # /auth forms
MAX_PORTAL_FORM = MAX_FORM  # portal forms
REQUEST_SECONDS = 8  # an attack answered later than this counts as a server error
CATEGORIES = (
    "cross-user reads",
    "cross-user writes",
    "files",
    "device ids",
    "cursors and tickets",
    "csrf",
    "token replay",
    "oversized bodies",
    "deep and huge input",
    "path traversal",
    "api token days",
    "existence disclosure",
    "append depth",
    "own sync errors",
)


@dataclass
class Row:
    attempts: int = 0
    refused: int = 0
    through: int = 0
    errors: int = 0


@dataclass
class Tally:
    rows: dict[tuple[str, str], Row] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def count(self, backend: str, category: str, what: str, status: int, held: bool) -> None:
        row = self.rows.setdefault((backend, category), Row())
        row.attempts += 1
        if status >= 500 or status == 0:
            row.errors += 1
            self.problems.append(f"{backend} {category}: {what}: server error {status}")
        elif held:
            row.refused += 1
        else:
            row.through += 1
            self.problems.append(f"{backend} {category}: {what}: got through ({status})")

    @property
    def clean(self) -> bool:
        return all(r.through == 0 and r.errors == 0 for r in self.rows.values())

    def lines(self) -> list[str]:
        out = [
            f"{'backend':11} {'category':22} {'attempts':>8} {'refused':>8} "
            f"{'through':>8} {'5xx':>5}"
        ]
        for (backend, category), r in self.rows.items():
            out.append(
                f"{backend:11} {category:22} {r.attempts:8} {r.refused:8} {r.through:8} "
                f"{r.errors:5}"
            )
        return out


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _deep(levels: int) -> str:
    return "[" * levels + "]" * levels


class Attack:
    """One backend's run: the seeded organisation, the server, the attacks."""

    def __init__(self, backend: str, url: str, work: Path, tally: Tally) -> None:
        self.backend = backend
        self.url = url
        self.work = work
        self.tally = tally
        self.marker = f"SECRET{uuid.uuid4().hex[:12]}"
        self.account_number = f"ACC-{uuid.uuid4().hex[:8]}"
        self.file_bytes = f"VICTIM-BYTES-{uuid.uuid4().hex}".encode()
        self.server = Server(url, log=work / "server.log")
        self.ids: dict[str, Any] = {}
        self.store: Any = None
        self.verbose = bool(
            os.environ.get("FIELDSYNC_ATTACKS_VERBOSE")
        )  # the database as the platform sees it, to judge effects

    # -- set-up -------------------------------------------------------------------------------

    def seed(self) -> None:
        from fieldsync.identity.auth import AuthSettings
        from fieldsync.platform import build
        from fieldsync.security.roles import SYSTEM_ADMINISTRATOR
        from fieldsync.store.store import Store
        from fieldsync.types import EntityRef
        from sync_world import World

        # cheap hashes to seed with (the server rehashes each at its first sign-in)
        cheap = AuthSettings(argon2_time_cost=1, argon2_memory_kib=1024, argon2_parallelism=1)
        platform = build(Store.open(self.url), auth_settings=cheap)
        try:
            world = World(platform, self.work)
            world.bridge.close()
            world.bridge.loop.close()
            platform.offline.import_yaml(PROFILE)
            platform.offline.publish("Field Service")
            org = platform.org
            org.user("boss", password=PASSWORD, roles=[org.role_id(SYSTEM_ADMINISTRATOR)])
            # work order Write at organization, Append at user: may write any work order, but
            # may set lookups only on their own
            custom = org.role(
                "Dispatcher Lite",
                privileges={
                    "workorder": {
                        "read": "organization",
                        "write": "organization",
                        "append": "user",
                    },
                    "account": {"read": "organization", "appendto": "organization"},
                },
            )
            carol = org.user("carol", business_unit=world.unit, password=PASSWORD)
            # like the demo's technicians: a technician's role, and not Basic User (whose
            # privileges include reading one's own Sync Errors)
            field_only = org.role(
                "Technician Only",
                privileges={
                    **{
                        t: {
                            "create": "user",
                            "read": "user",
                            "write": "user",
                            "append": "user",
                            "appendto": "user",
                        }
                        for t in ("account", "contact", "workorder")
                    },
                    **{
                        t: {"read": "organization"}
                        for t in (
                            "mobileofflineprofile",
                            "mobileofflineprofileitem",
                            "mobileofflineprofileitemassociation",
                            "appmodule",
                            "savedquery",
                            "systemuser",
                            "businessunit",
                            "team",
                            "organization",
                        )
                    },
                },
            )
            org.user("dave", business_unit=world.unit, password=PASSWORD, roles=[field_only])
            org.assign_role(EntityRef("systemuser", carol), custom)
            r = platform.records
            tech1 = EntityRef("systemuser", world.users["tech1"])
            tech3 = EntityRef("systemuser", world.users["tech3"])
            a1 = r.create(
                "account",
                {
                    "name": f"{self.marker} account",
                    "accountnumber": self.account_number,
                    "ownerid": tech1,
                },
            )
            v = r.create(
                "workorder",
                {"name": f"{self.marker} order", "serviceaccountid": a1, "ownerid": tech1},
            )
            a3 = r.create("account", {"name": "attacker account", "ownerid": tech3})
            w3 = r.create(
                "workorder", {"name": "attacker order", "serviceaccountid": a3, "ownerid": tech3}
            )
            self.ids = {
                "a1": a1,
                "v": v,
                "a3": a3,
                "w3": w3,
                "users": dict(world.users),
                "team": world.team,
                "admin_role": org.role_id(SYSTEM_ADMINISTRATOR),
            }
        finally:
            platform.close()

    @contextlib.contextmanager
    def serving(self) -> Iterator[httpx.Client]:
        os.environ["FIELDSYNC_DATA_DIR"] = str(self.work / "server")
        self.server.start()
        try:
            with httpx.Client(
                base_url=f"http://127.0.0.1:{self.server.port}", timeout=60
            ) as client:
                yield client
        finally:
            try:
                self.server.stop()
            except subprocess.TimeoutExpired:
                self.server.kill()

    def sign_in(self, c: httpx.Client, user: str) -> dict[str, Any]:
        answer = c.post(
            "/auth/token", data={"grant_type": "password", "username": user, "password": PASSWORD}
        )
        answer.raise_for_status()
        data: dict[str, Any] = answer.json()
        return data

    # -- bookkeeping --------------------------------------------------------------------------

    def expect(self, category: str, what: str, status: int, held: bool) -> None:
        self.tally.count(self.backend, category, what, status, held)

    def refused(
        self, category: str, what: str, response: httpx.Response, statuses: tuple[int, ...]
    ) -> None:
        """Refused with one of ``statuses``, and the secret nowhere in the answer."""
        held = response.status_code in statuses and self.marker not in response.text
        held = held and self.file_bytes not in response.content
        self.expect(category, what, response.status_code, held)

    def send(self, c: httpx.Client, method: str, url: str, **kw: Any) -> httpx.Response:
        started = time.perf_counter()
        answer = None
        for _ in range(2):
            try:
                answer = c.request(method, url, timeout=REQUEST_SECONDS, **kw)
                break
            except httpx.TimeoutException as exc:
                # no answer in time: a hung server; start it again for the next attacks
                answer = httpx.Response(0, text=f"no answer in {REQUEST_SECONDS} s: {exc!r}")
                self.server.kill()
                self.server.start()
                break
            except httpx.HTTPError as exc:
                # a connection the server closed after an answer: one retry on a new one
                answer = httpx.Response(0, text=f"transport error: {exc!r}")
        assert answer is not None
        if self.verbose:
            took = time.perf_counter() - started
            print(f"    {method} {url[:70]} -> {answer.status_code} ({took:.2f} s)", flush=True)
            if answer.status_code >= 400:
                print(f"      {answer.text[:160]}", flush=True)
        return answer

    def row(self, table: str, rid: Any) -> dict[str, Any]:
        """The row as the platform sees it (the attack's effect, judged from the inside)."""
        from fieldsync.records.service import Records
        from fieldsync.store.store import Store

        if self.store is None:
            self.store = Store.open(self.url, upgrade=False)
        rows = Records(self.store).retrieve_multiple(table, where={f"{table}id": rid})
        return dict(rows[0]) if rows else {}

    # -- the run ------------------------------------------------------------------------------

    def run(self) -> None:
        started = time.perf_counter()
        self.seed()
        if self.verbose:
            print(f"  seeded: {time.perf_counter() - started:.1f} s")
        with self.serving() as c:
            if self.verbose:
                print(f"  serving: {time.perf_counter() - started:.1f} s")
            self.victim = self.sign_in(c, "tech1")["access_token"]
            self.attacker_pair = self.sign_in(c, "tech3")
            self.attacker = self.attacker_pair["access_token"]
            self.v = str(self.ids["v"])
            self.a1 = str(self.ids["a1"])
            self.w3 = str(self.ids["w3"])
            self.a3 = str(self.ids["a3"])
            self.upload_victim_file(c)
            for attack in (
                self.cross_user_reads,
                self.cross_user_writes,
                self.files,
                self.device_ids,
                self.cursors_and_tickets,
                self.csrf,
                self.token_replay,
                self.oversized,
                self.deep_and_huge,
                self.path_traversal,
                self.api_token_days,
                self.existence,
                self.append_depth,
                self.own_sync_errors,
            ):
                only = os.environ.get("FIELDSYNC_ATTACKS_ONLY")
                if only and attack.__name__ not in only.split(","):
                    continue
                started = time.perf_counter()
                try:
                    attack(c)
                finally:
                    if self.verbose:
                        print(f"  {attack.__name__}: {time.perf_counter() - started:.1f} s")
        self.row("workorder", self.ids["v"])  # opens the store
        counts: dict[str, int] = {}
        for r in self.store.audit.read(limit=100_000):
            counts[r["event"]] = counts.get(r["event"], 0) + 1
        self.audit_counts = counts
        self.store.close()

    def upload_victim_file(self, c: httpx.Client) -> None:
        answer = c.patch(
            f"{API}/workorders({self.v})/servicereport",
            content=self.file_bytes,
            headers={
                **_bearer(self.victim),
                "x-ms-file-name": "report.pdf",
                "content-type": "application/octet-stream",
            },
        )
        answer.raise_for_status()
        self.victim_file = str(self.row("workorder", self.ids["v"])["servicereport"])

    # -- cross-user reads and writes ---------------------------------------------------------

    def cross_user_reads(self, c: httpx.Client) -> None:
        cat, h = "cross-user reads", _bearer(self.attacker)
        m = self.marker
        reads = [
            (f"{API}/workorders({self.v})", (404,)),
            (f"{API}/accounts({self.a1})", (404,)),
            (f"{API}/workorders?$filter=workorderid eq {self.v}", (200,)),
            (f"{API}/workorders?$filter=contains(name,'{m}')", (200,)),
            (f"{API}/workorders?$filter=serviceaccountid/name eq '{m} account'", (200,)),
            (f"{API}/workorders({self.w3})?$expand=serviceaccountid($select=name)", (200,)),
            (f"{API}/accounts?$expand=account_workorder_serviceaccountid($select=name)", (200,)),
            (f"{API}/accounts({self.a3})?$expand=account_workorder_serviceaccountid", (200,)),
            (f"{API}/accounts(accountnumber='{self.account_number}')", (400, 404)),
            (
                f"{API}/workorders?fetchXml="
                + "<fetch><entity name='workorder'><all-attributes/></entity></fetch>",
                (200,),
            ),
            (
                f"{API}/workorders?fetchXml="
                + "<fetch><entity name='workorder'><attribute name='name'/>"
                + "<link-entity name='account' from='accountid' to='serviceaccountid' "
                + "alias='a'><attribute name='name'/>"
                + f"<filter><condition attribute='name' operator='like' value='{m}%'/>"
                + "</filter></link-entity></entity></fetch>",
                (200,),
            ),
            (f"{API}/workorders({self.v})/servicereport/$value", (404,)),
        ]
        for url, statuses in reads:
            self.refused(cat, url[:60], self.send(c, "GET", url, headers=h), statuses)
        batch = self.batch_body([f"GET {API}/workorders({self.v}) HTTP/1.1"])
        answer = self.send(
            c, "POST", f"{API}/$batch", content=batch[1], headers={**h, "content-type": batch[0]}
        )
        held = answer.status_code == 200 and m not in answer.text and "404" in answer.text
        self.expect(cat, "$batch GET", answer.status_code, held)

    def batch_body(self, requests: list[str], changeset: bool = False) -> tuple[str, bytes]:
        boundary = "batch_attack"
        parts: list[str] = []
        if changeset:
            inner = "changeset_attack"
            body = [
                f"--{inner}\r\nContent-Type: application/http\r\n"
                f"Content-Transfer-Encoding: binary\r\nContent-ID: {i + 1}\r\n\r\n{r}\r\n"
                for i, r in enumerate(requests)
            ]
            parts.append(
                f"--{boundary}\r\nContent-Type: multipart/mixed; boundary={inner}\r\n\r\n"
                + "".join(body)
                + f"--{inner}--\r\n"
            )
        else:
            parts += [
                f"--{boundary}\r\nContent-Type: application/http\r\n"
                f"Content-Transfer-Encoding: binary\r\n\r\n{r}\r\n\r\n"
                for r in requests
            ]
        text = "".join(parts) + f"--{boundary}--\r\n"
        return f"multipart/mixed; boundary={boundary}", text.encode()

    def cross_user_writes(self, c: httpx.Client) -> None:
        cat, h = "cross-user writes", _bearer(self.attacker)
        before = self.row("workorder", self.ids["v"])
        pwn = {"name": "pwned"}
        patch = json.dumps(pwn)
        # a PATCH or upsert naming a row the attacker cannot read is a create that cannot
        # succeed: 404 as for an update, or 400 when the body lacks a required column (as it
        # would for any new id); either way nothing changes
        writes: list[tuple[str, str, Any, tuple[int, ...]]] = [
            ("PATCH", f"{API}/workorders({self.v})", pwn, (400, 404)),
            ("DELETE", f"{API}/workorders({self.v})", None, (404,)),
            ("PATCH", f"{API}/accounts({self.a1})", pwn, (404,)),
            (
                "POST",
                f"{API}/systemusers({self.ids['users']['tech3']})/systemuserroles_association/$ref",
                {"@odata.id": f"{c.base_url}{API}/roles({self.ids['admin_role']})"},
                (403, 404),
            ),
            (
                "POST",
                f"{API}/teams({self.ids['team']})/teammembership_association/$ref",
                {"@odata.id": f"{c.base_url}{API}/systemusers({self.ids['users']['tech3']})"},
                (403, 404),
            ),
            (
                "PATCH",
                f"{API}/workorders({self.w3})",
                {"serviceaccountid@odata.bind": f"/accounts({self.a1})"},
                (400, 404),
            ),
            (
                "POST",
                f"{API}/workorders/Microsoft.Dynamics.CRM.UpdateMultiple",
                {
                    "Targets": [
                        {
                            "@odata.type": "Microsoft.Dynamics.CRM.workorder",
                            "workorderid": self.v,
                            "name": "pwned",
                        }
                    ]
                },
                (404,),
            ),
            (
                "POST",
                f"{API}/workorders/Microsoft.Dynamics.CRM.UpsertMultiple",
                {
                    "Targets": [
                        {
                            "@odata.type": "Microsoft.Dynamics.CRM.workorder",
                            "workorderid": self.v,
                            "name": "pwned",
                        }
                    ]
                },
                (400, 403, 404),
            ),
            (
                "PATCH",
                f"{API}/workorders({self.v})",
                {"ownerid@odata.bind": f"/systemusers({self.ids['users']['tech3']})"},
                (400, 404),
            ),
        ]
        for method, url, body, statuses in writes:
            answer = self.send(c, method, url, json=body, headers=h)
            self.refused(cat, f"{method} {url[len(API) :][:50]}", answer, statuses)
        content_type, batch = self.batch_body(
            [
                f"PATCH {API}/workorders({self.w3}) HTTP/1.1\r\n"
                f"Content-Type: application/json\r\n\r\n{json.dumps({'name': 'mine'})}",
                f"PATCH {API}/workorders({self.v}) HTTP/1.1\r\n"
                f"Content-Type: application/json\r\n\r\n{patch}",
            ],
            changeset=True,
        )
        answer = self.send(
            c, "POST", f"{API}/$batch", content=batch, headers={**h, "content-type": content_type}
        )
        held = answer.status_code in (200, 400, 404) and "pwned" not in answer.text
        self.expect(cat, "$batch change set", answer.status_code, held)
        after = self.row("workorder", self.ids["v"])
        unchanged = all(after.get(k) == before.get(k) for k in ("name", "ownerid", "versionnumber"))
        self.expect(cat, "victim row unchanged", 200 if after else 404, unchanged)
        mine = self.row("workorder", self.ids["w3"])
        self.expect(cat, "change set rolled back", 200, mine.get("name") == "attacker order")

    # -- files -------------------------------------------------------------------------------

    def files(self, c: httpx.Client) -> None:
        cat, h = "files", _bearer(self.attacker)
        fid = self.victim_file
        tries: list[tuple[str, str, Any]] = [
            ("PATCH", f"{API}/workorders({self.w3})", {"servicereport": fid}),
            ("PATCH", f"{API}/workorders({self.w3})", {"sitephoto": fid}),
            (
                "POST",
                f"{API}/workorders",
                {
                    "name": "file thief",
                    "servicereport": fid,
                    "serviceaccountid@odata.bind": f"/accounts({self.a3})",
                },
            ),
            (
                "POST",
                f"{API}/workorders/Microsoft.Dynamics.CRM.UpsertMultiple",
                {
                    "Targets": [
                        {
                            "@odata.type": "Microsoft.Dynamics.CRM.workorder",
                            "workorderid": self.w3,
                            "servicereport": fid,
                        }
                    ]
                },
            ),
        ]
        for method, url, body in tries:
            answer = self.send(c, method, url, json=body, headers=h)
            self.refused(cat, f"{method} file id {url[len(API) :][:40]}", answer, (400, 403, 404))
        content_type, batch = self.batch_body(
            [
                f"PATCH {API}/workorders({self.w3}) HTTP/1.1\r\n"
                f"Content-Type: application/json\r\n\r\n{json.dumps({'servicereport': fid})}"
            ],
            changeset=True,
        )
        answer = self.send(
            c, "POST", f"{API}/$batch", content=batch, headers={**h, "content-type": content_type}
        )
        self.expect(cat, "file id in a change set", answer.status_code, " 204 " not in answer.text)
        device = self.handshake(c, self.attacker, f"attacker-{uuid.uuid4().hex[:6]}")
        change = {
            "id": str(uuid.uuid4()),
            "record": self.w3,
            "table": "workorder",
            "operation": "update",
            "values": {"servicereport": fid},
        }
        answer = self.upload(c, self.attacker, device, [change])
        ok = answer.status_code == 200 and answer.json()["results"][0].get("status") != "applied"
        self.expect(cat, "file id in a sync upload", answer.status_code, ok)
        # whatever was written: the attacker must not read the bytes, nor get a ticket
        for column in ("servicereport", "sitephoto"):
            got = self.send(
                c, "GET", f"{API}/workorders({self.w3})/{column}/$value?size=full", headers=h
            )
            self.refused(cat, f"{column}/$value", got, (204, 404))
        grant = self.send(
            c,
            "POST",
            "/sync/v1/files/grants",
            json={"device": device, "app": APP, "files": [fid]},
            headers=h,
        )
        held = grant.status_code in (200, 403, 404) and "ticket" not in grant.text
        self.expect(cat, "grant of a foreign file", grant.status_code, held)
        after = self.row("workorder", self.ids["w3"])
        self.expect(
            cat,
            "attacker row holds no foreign file",
            200,
            str(after.get("servicereport")) != fid and str(after.get("sitephoto")) != fid,
        )

    # -- sync: devices, cursors, tickets -------------------------------------------------------

    def handshake(self, c: httpx.Client, token: str, device: str) -> str:
        c.post(
            "/sync/v1/handshake", json={"device": device, "app": APP}, headers=_bearer(token)
        ).raise_for_status()
        return device

    def upload(
        self, c: httpx.Client, token: str, device: str, changes: list[dict[str, Any]]
    ) -> httpx.Response:
        return self.send(
            c,
            "POST",
            "/sync/v1/upload",
            json={"device": device, "app": APP, "changes": changes},
            headers=_bearer(token),
        )

    def device_ids(self, c: httpx.Client) -> None:
        cat = "device ids"
        device = self.handshake(c, self.victim, f"victim-{uuid.uuid4().hex[:6]}")
        change_id = str(uuid.uuid4())
        create = {
            "id": change_id,
            "record": str(uuid.uuid4()),
            "table": "workorder",
            "operation": "create",
            "values": {"name": f"{self.marker} device order", "serviceaccountid": self.a1},
        }
        # a change the server rejects: its stored answer carries the server's row
        rejected = {
            "id": str(uuid.uuid4()),
            "record": self.v,
            "table": "workorder",
            "operation": "update",
            "values": {"name": "n" * 10_000},
        }
        first = self.upload(c, self.victim, device, [create, rejected])
        first.raise_for_status()
        if self.marker not in first.text:
            self.tally.problems.append(
                f"{self.backend} device ids: the rejected change's answer has no server row"
            )
        taken = self.send(
            c,
            "POST",
            "/sync/v1/handshake",
            json={"device": device, "app": APP},
            headers=_bearer(self.attacker),
        )
        owner = self.device_owner(device)
        held = taken.status_code == 403 or owner == self.ids["users"]["tech1"]
        self.expect(cat, "handshake with another's device", taken.status_code, held)
        replay = self.upload(c, self.attacker, device, [create, rejected])
        self.refused(cat, "replay change ids on their device", replay, (403, 200))
        own = self.handshake(c, self.attacker, f"attacker-{uuid.uuid4().hex[:6]}")
        replay = self.upload(c, self.attacker, own, [create, rejected])
        self.refused(cat, "replay change ids on own device", replay, (200, 400, 403, 404))
        still = self.send(
            c,
            "POST",
            "/sync/v1/download",
            json={"device": device, "app": APP, "cursors": {"workorder": None}},
            headers=_bearer(self.victim),
        )
        self.expect(cat, "the owner still syncs", still.status_code, still.status_code == 200)

    def device_owner(self, device: str) -> Any:
        import sqlalchemy as sa

        from fieldsync.store.catalog import fs_device

        self.row("workorder", self.ids["v"])  # opens the store
        with self.store.read() as conn:
            return conn.execute(
                sa.select(fs_device.c.userid).where(fs_device.c.deviceid == device)
            ).scalar()

    def cursors_and_tickets(self, c: httpx.Client) -> None:
        cat = "cursors and tickets"
        victim_dev = self.handshake(c, self.victim, f"victim-{uuid.uuid4().hex[:6]}")
        attacker_dev = self.handshake(c, self.attacker, f"attacker-{uuid.uuid4().hex[:6]}")
        first = c.post(
            "/sync/v1/download",
            json={"device": victim_dev, "app": APP, "cursors": {"workorder": None}},
            headers=_bearer(self.victim),
        ).json()
        stolen = next(p["cursor"] for p in first["pages"] if p["table"] == "workorder")
        raw = stolen.split(".")[0]
        forged_cursors = [
            stolen,  # another user's cursor
            "x.y",
            stolen[:-2] + ("AA" if not stolen.endswith("AA") else "BB"),
            base64.urlsafe_b64encode(b'{"t":"workorder","v":0}').decode() + "." + raw[-20:],
            "A" * 5000,
        ]
        for cursor in forged_cursors:
            answer = self.send(
                c,
                "POST",
                "/sync/v1/download",
                json={"device": attacker_dev, "app": APP, "cursors": {"workorder": cursor}},
                headers=_bearer(self.attacker),
            )
            self.refused(cat, f"cursor {cursor[:20]}", answer, (400,))
        grant = c.post(
            "/sync/v1/files/grants",
            json={"device": victim_dev, "app": APP, "files": [self.victim_file]},
            headers=_bearer(self.victim),
        ).json()
        ticket = grant["files"][0]["ticket"] if grant.get("files") else "0.x"
        expires = ticket.split(".")[0]
        for what, t in (
            ("another user's ticket", ticket),
            ("forged ticket", f"{expires}.{'0' * 64}"),
            ("no ticket", ""),
            ("extended ticket", f"{int(expires) + 10**6}.{ticket.split('.', 1)[-1]}"),
        ):
            answer = self.send(
                c,
                "GET",
                f"/sync/v1/files/{self.victim_file}",
                params={"ticket": t},
                headers=_bearer(self.attacker),
            )
            self.refused(cat, what, answer, (403,))

    # -- the portal ----------------------------------------------------------------------------

    def portal_sign_in(self, c: httpx.Client, user: str) -> httpx.Client:
        from portal_world import csrf_of

        portal = httpx.Client(base_url=str(c.base_url), timeout=30)
        page = portal.get("/portal/sign-in")
        portal.post(
            "/portal/sign-in",
            data={"csrf": csrf_of(page.text), "username": user, "password": PASSWORD},
        )
        return portal

    def csrf(self, c: httpx.Client) -> None:
        cat = "csrf"
        portal = self.portal_sign_in(c, "boss")
        try:
            for what, data in (
                ("no token", {"offline": "on"}),
                ("guessed token", {"offline": "on", "csrf": "guess"}),
                ("empty token", {"offline": "on", "csrf": ""}),
            ):
                answer = self.send(portal, "POST", "/portal/tables/systemuser", data=data)
                self.refused(cat, what, answer, (403,))
            other = self.portal_sign_in(c, "tech1")
            try:
                from portal_world import csrf_of

                stolen = csrf_of(other.get("/portal/profiles").text)
            finally:
                other.close()
            answer = self.send(
                portal, "POST", "/portal/tables/systemuser", data={"offline": "on", "csrf": stolen}
            )
            self.refused(cat, "another session's token", answer, (403,))
            answer = self.send(
                c, "POST", "/portal/sign-in", data={"username": "boss", "password": PASSWORD}
            )
            self.refused(cat, "sign-in without a token", answer, (403,))
        finally:
            portal.close()

    # -- tokens ----------------------------------------------------------------------------------

    def token_replay(self, c: httpx.Client) -> None:
        cat = "token replay"
        for user, password in (("tech1", "not the password"), ("nobody", PASSWORD)):
            answer = self.send(
                c,
                "POST",
                "/auth/token",
                data={"grant_type": "password", "username": user, "password": password},
            )
            self.refused(cat, f"sign in as {user} with a wrong password", answer, (401,))
        # the token rotated last is accepted again for a grace period (two page loads at
        # once); a token two rotations old is a replay
        pair = self.sign_in(c, "tech2")
        first = c.post(
            "/auth/token",
            data={"grant_type": "refresh_token", "refresh_token": pair["refresh_token"]},
        )
        first = c.post(
            "/auth/token",
            data={"grant_type": "refresh_token", "refresh_token": first.json()["refresh_token"]},
        )
        again = self.send(
            c,
            "POST",
            "/auth/token",
            data={"grant_type": "refresh_token", "refresh_token": pair["refresh_token"]},
        )
        self.refused(cat, "refresh token reused", again, (401,))
        rotated = first.json()["access_token"]
        after = self.send(c, "GET", "/auth/whoami", headers=_bearer(rotated))
        self.refused(cat, "session after reuse", after, (401,))
        pair = self.sign_in(c, "tech2")
        c.post("/auth/revoke", data={"token": pair["refresh_token"]})
        for what, token in (("revoked session's access", pair["access_token"]),):
            self.refused(
                cat, what, self.send(c, "GET", "/auth/whoami", headers=_bearer(token)), (401,)
            )
        answer = self.send(
            c,
            "POST",
            "/auth/token",
            data={"grant_type": "refresh_token", "refresh_token": pair["refresh_token"]},
        )
        self.refused(cat, "revoked refresh token", answer, (401,))
        made = c.post(
            "/auth/api-tokens",
            json={"name": "ci"},
            headers=_bearer(self.sign_in(c, "tech2")["access_token"]),
        ).json()
        c.post("/auth/revoke", data={"token": made["token"]})
        answer = self.send(c, "GET", "/auth/whoami", headers=_bearer(made["token"]))
        self.refused(cat, "revoked API token", answer, (401,))
        head, body, sig = self.attacker.split(".")
        claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        claims["sub"] = str(self.ids["users"]["tech1"])
        forged_body = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
        none_head = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').decode().rstrip("=")
        for what, token in (
            ("tampered subject", f"{head}.{forged_body}.{sig}"),
            ("alg none", f"{none_head}.{forged_body}."),
            ("truncated signature", f"{head}.{body}.{sig[:-4]}"),
            ("guessed API token", f"fsk.{uuid.uuid4().hex}.guess"),
        ):
            answer = self.send(c, "GET", f"{API}/workorders({self.v})", headers=_bearer(token))
            self.refused(cat, what, answer, (401,))

    # -- input size and shape -----------------------------------------------------------------

    def oversized(self, c: httpx.Client) -> None:
        cat, h = "oversized bodies", _bearer(self.attacker)
        big = b'{"name": "' + b"x" * (MAX_BODY + 16) + b'"}'

        def chunks(data: bytes) -> Iterator[bytes]:
            for i in range(0, len(data), 1 << 20):
                yield data[i : i + (1 << 20)]

        json_h = {**h, "content-type": "application/json"}
        targets: list[tuple[str, str, bytes, dict[str, str]]] = [
            ("PATCH", f"{API}/workorders({self.w3})", big, json_h),
            ("POST", f"{API}/$batch", big, {**h, "content-type": "multipart/mixed; boundary=b"}),
            ("POST", "/sync/v1/upload", big, json_h),
            ("POST", "/auth/token", b"username=" + b"x" * (MAX_FORM + 16), {}),
            ("POST", "/auth/api-tokens", b'{"name":"' + b"x" * (MAX_FORM + 16) + b'"}', json_h),
        ]
        for method, url, body, headers in targets:
            for mode in ("content-length", "chunked"):
                content: Any = body if mode == "content-length" else chunks(body)
                answer = self.send(c, method, url, content=content, headers=headers)
                self.refused(cat, f"{method} {url[:30]} {mode}", answer, (413,))
        portal = self.portal_sign_in(c, "tech1")
        try:
            answer = self.send(
                portal,
                "POST",
                "/portal/sign-out",
                content=b"csrf=" + b"x" * (MAX_PORTAL_FORM + 16),
                headers={"content-type": "application/x-www-form-urlencoded"},
            )
            self.refused(cat, "portal form", answer, (413,))
        finally:
            portal.close()

    def deep_and_huge(self, c: httpx.Client) -> None:
        cat, h = "deep and huge input", _bearer(self.attacker)
        deep = '{"name": ' + _deep(1000) + "}"
        json_h = {**h, "content-type": "application/json"}
        for method, url, headers in (
            ("POST", f"{API}/workorders", json_h),
            ("PATCH", f"{API}/workorders({self.w3})", json_h),
            ("POST", "/auth/token", {"content-type": "application/json"}),
            ("POST", "/auth/api-tokens", json_h),
            ("POST", "/sync/v1/upload", json_h),
        ):
            answer = self.send(c, method, url, content=deep.encode(), headers=headers)
            self.refused(cat, f"deep JSON {method} {url[:30]}", answer, (400,))
        # (in $batch parts: a request line this long does not pass the HTTP parser)
        terms = " or ".join(f"name eq 'n{i}'" for i in range(1000))
        conditions = "".join(
            f"<condition attribute='name' operator='eq' value='n{i}'/>" for i in range(1000)
        )
        fetch = (
            "<fetch><entity name='workorder'><attribute name='name'/>"
            f"<filter type='or'>{conditions}</filter></entity></fetch>"
        )
        for what, query in (
            ("$filter of 1000 terms", {"$filter": terms}),
            ("FetchXML of 1000 conditions", {"fetchXml": fetch}),
        ):
            target = f"{API}/workorders?{urlencode(query, quote_via=quote)}"
            content_type, body = self.batch_body([f"GET {target} HTTP/1.1"])
            answer = self.send(
                c,
                "POST",
                f"{API}/$batch",
                content=body,
                headers={**h, "content-type": content_type},
            )
            part = answer.text.split("HTTP/1.1 ", 1)[-1][:3]
            held = answer.status_code == 200 and part == "400"
            self.expect(cat, what, int(part) if part.isdigit() else answer.status_code, held)
        # one bad change is a sync error for that change only; the batch goes on
        device = self.handshake(c, self.attacker, f"attacker-{uuid.uuid4().hex[:6]}")
        good = {
            "id": str(uuid.uuid4()),
            "record": self.w3,
            "table": "workorder",
            "operation": "update",
            "values": {"name": "fine"},
        }
        nested: Any = "x"
        for _ in range(600):
            nested = [nested]
        bad = {**good, "id": str(uuid.uuid4()), "values": {"name": nested}}
        answer = self.upload(c, self.attacker, device, [bad, good])
        held = answer.status_code == 200 and len(answer.json().get("results", [])) == 2
        self.expect(cat, "deep value in a sync change", answer.status_code, held)

    def path_traversal(self, c: httpx.Client) -> None:
        cat, h = "path traversal", _bearer(self.attacker)
        for path in (
            "/portal/static/..%2F..%2Fconfig.py",
            "/portal/static/%2e%2e%2f__init__.py",
            "/portal/static/..%5C..%5Cconfig.py",
            "/portal/static/.hidden.css",
            "/portal/static/%00.css",
            "/portal/../api/data/v9.2/workorders",
        ):
            answer = self.send(c, "GET", path)
            held = answer.status_code in (303, 400, 401, 404) and "import " not in answer.text
            self.expect(cat, path, answer.status_code, held)
        escape = self.work / f"escaped-{uuid.uuid4().hex[:8]}"
        for name in (f"../../../../../../..{escape}", f"..\\..\\{escape.name}", "a/../../b"):
            answer = self.send(
                c,
                "PATCH",
                f"{API}/workorders({self.w3})/servicereport",
                content=b"attack",
                headers={**h, "x-ms-file-name": name, "content-type": "application/octet-stream"},
            )
            held = answer.status_code < 500 and not escape.exists()
            held = (
                held and not any(self.work.glob("**/b")) and not (self.work / escape.name).exists()
            )
            self.expect(cat, f"file name {name[:30]}", answer.status_code, held)

    # -- fixes of issue 16 ----------------------------------------------------------------------

    def api_token_days(self, c: httpx.Client) -> None:
        cat = "api token days"
        h = _bearer(self.sign_in(c, "tech2")["access_token"])
        for what, kw in (
            ("JSON days -5", {"json": {"name": "x", "days": -5}}),
            ("JSON days 0", {"json": {"name": "x", "days": 0}}),
            ("JSON days 3651", {"json": {"name": "x", "days": 3651}}),
            ("JSON days text", {"json": {"name": "x", "days": "abc"}}),
            ("JSON days 1.5", {"json": {"name": "x", "days": 1.5}}),
            ("form days -5", {"data": {"name": "x", "days": "-5"}}),
            ("form days abc", {"data": {"name": "x", "days": "abc"}}),
        ):
            answer = self.send(c, "POST", "/auth/api-tokens", headers=h, **kw)
            self.refused(cat, what, answer, (400,))
        for what, kw in (
            ("JSON days 1", {"json": {"name": "one-day-json", "days": 1}}),
            ("form days 1", {"data": {"name": "one-day-form", "days": "1"}}),
        ):
            answer = self.send(c, "POST", "/auth/api-tokens", headers=h, **kw)
            name = kw.get("json", kw.get("data"))["name"]  # type: ignore[index]
            listed = c.get("/auth/api-tokens", headers=h).json()
            tokens = listed.get("value", listed) if isinstance(listed, dict) else listed
            expires = next(
                (t.get("expireson") or t.get("expires") for t in tokens if t.get("name") == name),
                None,
            )
            self.expect(cat, f"{what} expires", answer.status_code, expires is not None)

    def existence(self, c: httpx.Client) -> None:
        cat, h = "existence disclosure", _bearer(self.attacker)
        whole = {"name": "x", "serviceaccountid@odata.bind": f"/accounts({self.a3})"}
        plain = self.send(c, "PATCH", f"{API}/workorders({self.v})", json=whole, headers=h)
        expected = (plain.status_code,) if plain.status_code < 500 else (404,)
        tries: list[tuple[str, str, Any]] = [
            (
                "PATCH",
                f"{API}/workorders(workorderid={self.v})",
                {"name": "x", "serviceaccountid@odata.bind": f"/accounts({self.a3})"},
            ),
            (
                "POST",
                f"{API}/workorders",
                {
                    "workorderid": self.v,
                    "name": "x",
                    "serviceaccountid@odata.bind": f"/accounts({self.a3})",
                },
            ),
            (
                "POST",
                f"{API}/workorders/Microsoft.Dynamics.CRM.UpsertMultiple",
                {
                    "Targets": [
                        {
                            "@odata.type": "Microsoft.Dynamics.CRM.workorder",
                            "workorderid": self.v,
                            "name": "x",
                            "serviceaccountid@odata.bind": f"/accounts({self.a3})",
                        }
                    ]
                },
            ),
        ]
        for method, url, body in tries:
            answer = self.send(c, method, url, json=body, headers=h)
            self.refused(cat, f"{method} {url[len(API) :][:40]}", answer, expected)
        device = self.handshake(c, self.attacker, f"attacker-{uuid.uuid4().hex[:6]}")
        create = {
            "id": str(uuid.uuid4()),
            "record": self.v,
            "table": "workorder",
            "operation": "create",
            "values": {"name": "x", "serviceaccountid": self.a3},
        }
        answer = self.upload(c, self.attacker, device, [create])
        text = answer.text.lower()
        held = answer.status_code == 200 and "already exists" not in text and "412" not in text
        self.expect(cat, "sync create with an unreadable id", answer.status_code, held)

    def append_depth(self, c: httpx.Client) -> None:
        cat = "append depth"
        h = _bearer(self.sign_in(c, "carol")["access_token"])
        answer = self.send(
            c,
            "PATCH",
            f"{API}/workorders({self.v})",
            json={"serviceaccountid@odata.bind": f"/accounts({self.a3})"},
            headers=h,
        )
        self.refused(cat, "bind a lookup on another user's row", answer, (403,))
        answer = self.send(
            c, "PATCH", f"{API}/workorders({self.v})", json={"name": "renamed"}, headers=h
        )
        self.expect(cat, "a plain write is allowed", answer.status_code, answer.status_code == 204)
        after = self.row("workorder", self.ids["v"])
        self.expect(
            cat, "lookup unchanged", 200, str(after.get("serviceaccountid")) == str(self.ids["a1"])
        )

    def own_sync_errors(self, c: httpx.Client) -> None:
        cat = "own sync errors"
        token = self.sign_in(c, "dave")["access_token"]
        device = self.handshake(c, token, f"dave-{uuid.uuid4().hex[:6]}")
        bad = {
            "id": str(uuid.uuid4()),
            "record": self.w3,  # not theirs to change
            "table": "workorder",
            "operation": "update",
            "values": {"name": "nope"},
        }
        self.upload(c, token, device, [bad])
        answer = self.send(c, "GET", "/sync/v1/errors", headers=_bearer(token))
        ok = answer.status_code == 200 and bad["id"] in answer.text
        self.expect(cat, "GET /sync/v1/errors", answer.status_code, ok)
        portal = self.portal_sign_in(c, "dave")
        try:
            page = self.send(portal, "GET", "/portal/sync-errors")
            self.expect(cat, "portal Sync Errors page", page.status_code, page.status_code == 200)
        finally:
            portal.close()


def run(pg: str | None, tally: Tally) -> None:
    from scratch import ScratchDatabases

    kinds: list[tuple[str, Callable[[], Any]]] = [("sqlite", ScratchDatabases.sqlite)]
    if pg:
        kinds.append(("postgresql", lambda: ScratchDatabases.postgres(pg)))
    for name, make in kinds:
        with make() as scratch:
            work = Path(tempfile.mkdtemp(prefix=f"fieldsync-attacks-{name}-"))
            start = time.perf_counter()
            attack = Attack(name, scratch.url("attacks"), work, tally)
            attack.run()
            print(f"{name}: {time.perf_counter() - start:.1f} s", flush=True)
            seen = ", ".join(f"{k} {v}" for k, v in sorted(attack.audit_counts.items()))
            print(f"  audit log: {seen}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-pg", action="store_true")
    parser.add_argument(
        "--pg",
        default=os.environ.get(
            "FIELDSYNC_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
        ),
    )
    args = parser.parse_args()
    pg: str | None = None if args.no_pg else args.pg
    if pg is not None:
        from scratch import postgres_problem

        problem = postgres_problem(pg)
        if problem is not None:
            if os.environ.get("FIELDSYNC_REQUIRE_POSTGRES") == "1":
                sys.exit(f"PostgreSQL is required and unreachable: {problem}")
            print(f"skipping PostgreSQL: {problem}")
            pg = None
    tally = Tally()
    run(pg, tally)
    print("\n".join(tally.lines()))
    for problem in tally.problems:
        print(f"  {problem}")
    sys.exit(0 if tally.clean else 1)


if __name__ == "__main__":
    main()
