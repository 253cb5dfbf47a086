"""The security audit log: every kind of event is written (and survives the refused
transaction), the log is bounded in rate and size, and only administrators read it, through
the command line, the portal and the Web API."""

from __future__ import annotations

import datetime as dt
import json
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from fieldsync.cli import main
from fieldsync.errors import Forbidden
from fieldsync.platform import Platform
from fieldsync.security.roles import SYSTEM_ADMINISTRATOR
from fieldsync.store import audit
from fieldsync.store.audit import AuditLimits, AuditLog
from fieldsync.store.catalog import fs_audit
from fieldsync.types import EntityRef
from portal_world import csrf_of
from sync_world import PASSWORD, World

API = "/api/data/v9.2"


@pytest.fixture
def world(platform: Platform, tmp_path: Path) -> Iterator[World]:
    w = World(platform, tmp_path)
    platform.org.user("boss", password=PASSWORD, roles=[platform.org.role_id(SYSTEM_ADMINISTRATOR)])
    try:
        yield w
    finally:
        w.bridge.close()
        w.bridge.loop.close()


@pytest.fixture
def client(world: World) -> Iterator[httpx.Client]:
    with httpx.Client(transport=world.bridge, base_url="http://testserver") as c:
        yield c


def token(client: httpx.Client, user: str) -> dict[str, str]:
    pair = client.post(
        "/auth/token", data={"grant_type": "password", "username": user, "password": PASSWORD}
    ).json()
    return {"Authorization": f"Bearer {pair['access_token']}", "refresh": pair["refresh_token"]}


def bearer(headers: dict[str, str]) -> dict[str, str]:
    return {"Authorization": headers["Authorization"]}


def events(platform: Platform, event: str) -> list[dict[str, object]]:
    return platform.store.audit.read(event=event)


def test_each_kind_of_event_is_written_once_and_outlives_its_refused_transaction(
    world: World, client: httpx.Client, platform: Platform, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="fieldsync.audit")
    store = platform.store
    # a refused sign-in, with the client's address
    wrong = client.post(
        "/auth/token", data={"grant_type": "password", "username": "tech1", "password": "nope"}
    )
    assert wrong.status_code == 401
    [row] = events(platform, audit.SIGNIN_REFUSED)
    assert row["username"] == "tech1"
    assert row["address"] == "127.0.0.1"
    line = json.loads(next(r.getMessage() for r in caplog.records if r.name == "fieldsync.audit"))
    assert line["event"] == "signin.refused"
    assert line["ip"] == "127.0.0.1"
    assert line["outcome"] == "refused"
    assert line["target"] == "tech1"

    tech1, tech2 = token(client, "tech1"), token(client, "tech2")
    # a refused write (no privilege on business units); its transaction rolled back, the
    # audit row stayed
    refused = client.post(f"{API}/businessunits", json={"name": "x"}, headers=bearer(tech1))
    assert refused.status_code == 403
    [row] = events(platform, audit.WRITE_REFUSED)
    assert row["userid"] == world.users["tech1"]
    assert "create privilege" in str(row["detail"])
    # the same refusal inside a change set that rolls back
    with pytest.raises(Forbidden), store.write() as conn:
        platform.records.create("businessunit", {"name": "y"}, caller=world.ctx("tech2"), conn=conn)
    assert len(events(platform, audit.WRITE_REFUSED)) == 2

    # a handshake naming another user's device (however the handshake answers it)
    body = {"device": "dev-tech1", "app": "fieldservice"}
    assert client.post("/sync/v1/handshake", json=body, headers=bearer(tech1)).status_code == 200
    client.post("/sync/v1/handshake", json=body, headers=bearer(tech2))
    [row] = events(platform, audit.DEVICE_TAKEOVER)
    assert row["userid"] == world.users["tech2"]
    assert row["target"] == "device dev-tech1"
    assert row["detail"] == {"owner": str(world.users["tech1"])}

    # a forged download cursor and a forged file ticket
    body = {"device": "dev-cursor", "app": "fieldservice"}
    assert client.post("/sync/v1/handshake", json=body, headers=bearer(tech1)).status_code == 200
    forged = client.post(
        "/sync/v1/download",
        json={**body, "cursors": {"account": "x.y"}},
        headers=bearer(tech1),
    )
    assert forged.status_code == 400
    assert [r["target"] for r in events(platform, audit.CURSOR_FORGED)] == ["device dev-cursor"]
    file_id = uuid.uuid4()
    bad = client.get(f"/sync/v1/files/{file_id}?ticket=9999999999.forged", headers=bearer(tech1))
    assert bad.status_code == 403
    assert [r["target"] for r in events(platform, audit.TICKET_FORGED)] == [f"file {file_id}"]

    # a refresh token used again after a later rotation (past the grace of the token rotated
    # last) revokes its session; revoking tokens is recorded
    first = client.post(
        "/auth/token", data={"grant_type": "refresh_token", "refresh_token": tech2["refresh"]}
    )
    assert first.status_code == 200
    second = client.post(
        "/auth/token",
        data={"grant_type": "refresh_token", "refresh_token": first.json()["refresh_token"]},
    )
    assert second.status_code == 200
    again = client.post(
        "/auth/token", data={"grant_type": "refresh_token", "refresh_token": tech2["refresh"]}
    )
    assert again.status_code == 401
    [row] = events(platform, audit.SESSION_REUSED)
    assert row["userid"] == world.users["tech2"]
    assert row["outcome"] == "revoked"
    assert client.post("/auth/revoke", data={"token": tech1["refresh"]}).status_code == 200
    made = client.post(
        "/auth/api-tokens", json={"name": "ci"}, headers=bearer(token(client, "tech3"))
    )
    gone = client.delete(
        f"/auth/api-tokens/{made.json()['id']}",
        headers={"Authorization": f"Bearer {made.json()['token']}"},
    )
    assert gone.status_code in (200, 204)
    revoked = events(platform, audit.TOKEN_REVOKED)
    assert sorted(str(r["target"]).split()[0] for r in revoked) == ["API", "session"]

    # role, team and business unit changes, only when they commit
    org = platform.org
    role = org.role_id(SYSTEM_ADMINISTRATOR)
    org.assign_role(EntityRef("systemuser", world.users["tech3"]), role)
    org.remove_role(EntityRef("systemuser", world.users["tech3"]), role)
    org.add_members(world.team, [world.users["tech2"]])
    org.remove_members(world.team, [world.users["tech2"]])
    org.move_user(world.users["tech2"], world.other_unit)
    for event in (
        audit.ROLE_ASSIGNED,
        audit.ROLE_REMOVED,
        audit.TEAM_MEMBER_ADDED,
        audit.TEAM_MEMBER_REMOVED,
        audit.BUSINESS_UNIT_CHANGED,
    ):
        newest = events(platform, event)[0]
        assert str(world.users["tech3" if "role" in event else "tech2"]) in str(newest["target"])
        assert newest["outcome"] == "done"
    before = len(events(platform, audit.ROLE_ASSIGNED))

    def assign_then_fail() -> None:
        with store.write() as conn:
            platform.records.associate(
                "systemuserroles_association", world.users["tech3"], role, conn=conn
            )
            raise RuntimeError("rolled back")

    with pytest.raises(RuntimeError):
        assign_then_fail()
    assert len(events(platform, audit.ROLE_ASSIGNED)) == before
    # a basic user cannot give themselves a role: refused, and no change is recorded
    sneaky = client.post(
        f"{API}/systemusers({world.users['tech3']})/systemuserroles_association/$ref",
        json={"@odata.id": f"{API}/roles({role})"},
        headers=bearer(token(client, "tech3")),
    )
    assert sneaky.status_code in (403, 404)
    assert len(events(platform, audit.ROLE_ASSIGNED)) == before


def test_a_flood_is_limited_per_user_and_address_and_summarised(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = AuditLog(platform.store, AuditLimits(per_minute=3))
    clock = [1_000_000.0]
    monkeypatch.setattr(audit.time, "time", lambda: clock[0])
    for _ in range(40):  # one user name from one address
        log.signin_refused("ann", "invalid username or password", address="10.0.0.9")
    for i in range(40):  # many user names from one address: the address bounds them
        log.signin_refused(f"user{i}", "invalid username or password", address="10.0.0.8")
    rows = log.read(event=audit.SIGNIN_REFUSED)
    assert len(rows) == 6
    assert log.suppressed[audit.SIGNIN_REFUSED] == 74
    clock[0] += 61
    log.flush()
    summary = log.read(event=audit.SIGNIN_REFUSED)[0]
    assert summary["outcome"] == audit.SUPPRESSED
    assert summary["detail"] == {"count": 74, "seconds": 60}
    # a new minute: the same user is recorded again
    log.signin_refused("ann", "invalid username or password", address="10.0.0.9")
    assert log.read(event=audit.SIGNIN_REFUSED)[0]["outcome"] == "refused"
    # a distributed flood (a new address each time) meets the overall limit
    clock[0] += 61
    before = len(log.read(limit=10_000))
    for i in range(400):
        log.signin_refused(f"u{i}", "invalid username or password", address=f"10.1.{i}.1")
    assert len(log.read(limit=10_000)) - before == 3 * 50


def test_rows_beyond_the_newest_and_older_than_the_days_are_pruned(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(audit, "PRUNE_EVERY", 5)
    log = AuditLog(platform.store, AuditLimits(rows=10, days=30))
    with platform.store.write() as conn:
        conn.execute(
            fs_audit.insert().values(
                createdon=dt.datetime.now(dt.UTC) - dt.timedelta(days=31),
                event=audit.ROLE_ASSIGNED,
                outcome="done",
            )
        )
    user = uuid.uuid4()
    for i in range(60):
        log.change(audit.ROLE_ASSIGNED, user, "admin", f"role {i}")
    rows = log.read(limit=1000)
    assert 10 <= len(rows) <= 15
    assert rows[0]["target"] == "role 59"
    assert all(r["createdon"] > dt.datetime.now(dt.UTC) - dt.timedelta(days=1) for r in rows)


def test_only_administrators_read_it_by_cli_portal_and_web_api(
    world: World, client: httpx.Client, platform: Platform, database_url: str
) -> None:
    client.post("/auth/token", data={"username": "tech1", "password": "wrong password"})
    admin, tech = token(client, "boss"), token(client, "tech1")
    # the Web API: rows with $filter, $select and $top; one row by number; read-only
    got = client.get(
        f"{API}/audits?$filter=event eq 'signin.refused'&$select=event,username&$top=5",
        headers=bearer(admin),
    )
    assert got.status_code == 200, got.text
    [row] = got.json()["value"]
    assert row == {"auditid": row["auditid"], "event": "signin.refused", "username": "tech1"}
    one = client.get(f"{API}/audits({row['auditid']})", headers=bearer(admin))
    assert one.json()["address"] == "127.0.0.1"
    assert client.get(f"{API}/audits?$filter=nosuch eq 1", headers=bearer(admin)).status_code == 400
    assert client.get(f"{API}/audits", headers=bearer(tech)).status_code == 403
    assert client.get(f"{API}/audits({row['auditid']})", headers=bearer(tech)).status_code == 403
    assert client.post(f"{API}/audits", json={}, headers=bearer(admin)).status_code == 405
    # the portal page, linked in the administrator's navigation only
    page = portal_page(client, "boss", "/portal/audit?event=signin.refused")
    assert page.status_code == 200
    assert "signin.refused" in page.text
    assert "tech1" in page.text
    assert 'href="/portal/audit"' in page.text
    client.cookies.clear()
    refused = portal_page(client, "tech1", "/portal/audit")
    assert refused.status_code == 403
    assert "only administrators" in refused.text
    assert 'href="/portal/audit"' not in client.get("/portal/profiles").text
    # the command line (whoever reaches the database administers it)
    runner = CliRunner()
    out = runner.invoke(
        main, ["audit", "--database", database_url, "--event", "signin.refused", "--json"]
    )
    assert out.exit_code == 0, out.output
    [line] = [json.loads(x) for x in out.output.splitlines()]
    assert line["username"] == "tech1"
    assert line["address"] == "127.0.0.1"
    text = runner.invoke(main, ["audit", "--database", database_url, "--user", "tech1"])
    assert "signin.refused" in text.output
    bad = runner.invoke(main, ["audit", "--database", database_url, "--since", "yesterday"])
    assert bad.exit_code == 2


def portal_page(client: httpx.Client, user: str, path: str) -> httpx.Response:
    page = client.get("/portal/sign-in")
    signed = client.post(
        "/portal/sign-in",
        data={"csrf": csrf_of(page.text), "username": user, "password": PASSWORD},
    )
    assert signed.status_code == 303
    return client.get(path)


def test_upgrading_a_database_made_before_the_audit_log_adds_it(platform: Platform) -> None:
    store = platform.store
    with store.write() as conn:
        fs_audit.drop(conn)
    assert "fs_audit" not in sa.inspect(store.engine).get_table_names()
    store.upgrade()
    assert "fs_audit" in sa.inspect(store.engine).get_table_names()
    store.audit.signin_refused("ann", "invalid username or password", address="10.0.0.1")
    assert [r["username"] for r in store.audit.read()] == ["ann"]
