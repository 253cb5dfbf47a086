"""Writers that run alone never deadlock, a deadlock the database still reports is retried,
and one that persists is a 503 with Retry-After.

A write transaction that is not a concurrent unit of work takes the writers' lock first and
exclusively (``BEGIN IMMEDIATE`` on SQLite), so two such writers that touch the same rows in
opposite orders queue instead of deadlocking. Concurrent units of work (PostgreSQL: the
records service, the Web API, sync uploads) run side by side and lock rows as they go: two
that lock rows in opposite orders deadlock, and ``Store.transact`` runs the one PostgreSQL
aborts again, so both commit. A deadlock caused by a lock taken outside the order (here: a
bare connection) is retried the same way; when every attempt is aborted the client gets 503
with ``Retry-After`` and nothing is written. The two-process load test is
``tests/test_write_load.py``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from fieldsync.config import Settings
from fieldsync.errors import WriteConflict
from fieldsync.platform import Platform
from fieldsync.records.plugins import PluginContext, PluginRegistry
from fieldsync.records.service import Records
from fieldsync.security.roles import SYSTEM_ADMINISTRATOR
from fieldsync.server.app import create_app
from fieldsync.store.store import WRITERS_LOCK, Store

API = "/api/data/v9.2/"


def _name(store: Store, rid: object) -> str | None:
    account = store.sql_table("account")
    with store.read() as conn:
        value: str | None = conn.execute(
            sa.select(account.c.name).where(account.c.accountid == rid)
        ).scalar()
    return value


def test_a_writer_waits_for_the_counter_before_it_touches_any_row(
    store: Store, records: Records
) -> None:
    """The lock order: a second writer's unit of work starts only once the first commits."""
    rid = records.create("account", {"name": "start"})
    entered: list[float] = []
    committed_at: list[float] = []

    def second() -> None:
        def work(conn: sa.Connection) -> None:
            entered.append(time.monotonic())
            records.update("account", rid, {"name": "second"}, conn=conn)

        store.transact(work)

    with store.write() as conn:
        records.update("account", rid, {"name": "first"}, conn=conn)
        thread = threading.Thread(target=second)
        thread.start()
        time.sleep(0.4)
        assert entered == []  # still waiting at BEGIN, holding no row lock
        committed_at.append(time.monotonic())
    thread.join(10)
    assert not thread.is_alive()
    assert entered
    assert entered[0] >= committed_at[0]
    assert _name(store, rid) == "second"


@pytest.mark.parametrize("concurrent", [False, True], ids=["alone", "concurrent"])
def test_writers_that_lock_rows_in_opposite_orders_both_commit(
    store: Store, records: Records, concurrent: bool
) -> None:
    """Two writers update two rows in opposite orders. Writers that run alone queue at the
    writers' lock and both commit at the first attempt; concurrent ones (PostgreSQL)
    deadlock, PostgreSQL aborts one, and it runs again: both commit, nobody sees an error."""
    a, b = records.create_many("account", [{"name": "a"}, {"name": "b"}])
    barrier = threading.Barrier(2, timeout=10)
    errors: list[BaseException] = []

    def writer(first: object, second: object, label: str) -> None:
        def work(conn: sa.Connection) -> None:
            records.update("account", first, {"name": f"{label} 1"}, conn=conn)
            time.sleep(0.2)  # the other writer is started meanwhile
            records.update("account", second, {"name": f"{label} 2"}, conn=conn)

        try:
            barrier.wait()
            store.transact(work, concurrent=concurrent)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [
        threading.Thread(target=writer, args=(a, b, "x")),
        threading.Thread(target=writer, args=(b, a, "y")),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert errors == []
    assert store.retries == (1 if concurrent and store.dialect == "postgresql" else 0)
    assert store.conflicts == 0
    # the last to commit wrote both rows
    assert {_name(store, a), _name(store, b)} in ({"x 1", "x 2"}, {"y 1", "y 2"})


def _postgres_only(store: Store) -> None:
    if store.dialect != "postgresql":
        pytest.skip("SQLite has one writer at a time (BEGIN IMMEDIATE): no deadlock to force")


def test_a_deadlock_runs_the_whole_unit_of_work_again(store: Store, records: Records) -> None:
    """A real deadlock, forced: a bare connection (outside Store.transact, so outside the lock
    order) holds a row and then waits for the writers' lock while the unit of work holds
    that lock and waits for the row. PostgreSQL aborts the unit of work (it waited first);
    it runs again and commits."""
    _postgres_only(store)
    rid = records.create("account", {"name": "start"})
    account = store.sql_table("account")
    attempts: list[int] = []
    waiting = threading.Event()
    outcome: dict[str, Any] = {}

    def work(conn: sa.Connection) -> int:
        attempts.append(len(attempts) + 1)
        waiting.set()
        version = records.update("account", rid, {"name": f"attempt {len(attempts)}"}, conn=conn)
        return version

    def unit() -> None:
        try:
            outcome["version"] = store.transact(work)
        except BaseException as exc:
            outcome["error"] = exc

    other = store.engine.connect()
    try:
        tx = other.begin()
        # the other side must not be the one PostgreSQL picks: it checks long after us
        other.execute(sa.text("SET LOCAL deadlock_timeout = '10s'"))
        other.execute(account.update().where(account.c.accountid == rid).values(name="other"))
        thread = threading.Thread(target=unit)
        thread.start()
        assert waiting.wait(10)
        time.sleep(0.3)  # the unit of work now waits for the row the other side holds
        # ... and the other side waits for the writers' lock the unit of work holds: a cycle
        other.execute(
            sa.text("SELECT pg_advisory_xact_lock_shared(:a, :b)"),
            {"a": WRITERS_LOCK, "b": store.clock.space},
        )
        tx.commit()  # reached once PostgreSQL aborted the unit of work and released its lock
    finally:
        other.close()
    thread.join(20)
    assert "error" not in outcome, outcome.get("error")
    assert attempts == [1, 2]
    assert store.retries == 1
    assert store.conflicts == 0
    assert _name(store, rid) == "attempt 2"
    assert outcome["version"] == records.retrieve("account", rid)["versionnumber"]


def _deadlock_every_time(calls: list[int]) -> Any:
    def plugin(ctx: PluginContext) -> None:
        calls.append(1)
        # the database itself reports a deadlock (SQLSTATE 40P01) inside the write
        ctx.records.conn.execute(
            sa.text("DO $$ BEGIN RAISE EXCEPTION 'forced' USING ERRCODE = '40P01'; END $$")
        )

    return plugin


def test_a_persistent_deadlock_gives_up_after_the_attempts(
    store: Store, records: Records, plugins: PluginRegistry
) -> None:
    _postgres_only(store)
    calls: list[int] = []
    plugins.register("account", "create", "pre-operation", _deadlock_every_time(calls))
    store.write_attempts = 3
    with pytest.raises(WriteConflict) as caught:
        records.create("account", {"name": "never"})
    assert caught.value.status == 503
    assert caught.value.retry_after >= 1
    assert len(calls) == 3
    assert store.retries == 2
    assert store.conflicts == 1
    with store.read() as conn:
        assert (
            conn.execute(
                sa.select(sa.func.count()).select_from(store.sql_table("account"))
            ).scalar()
            == 0
        )


@pytest.fixture
async def api(platform: Platform) -> AsyncIterator[httpx.AsyncClient]:
    org = platform.org
    org.user("admin", roles=[org.role_id(SYSTEM_ADMINISTRATOR)])
    _, secret = platform.auth.create_api_token(org.user_id("admin"), "t")
    app = create_app(Settings(), platform=platform)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="https://test",
        headers={"Authorization": f"Bearer {secret}"},
    ) as c:
        yield c


@pytest.mark.anyio
async def test_a_persistent_deadlock_answers_503_with_retry_after(
    api: httpx.AsyncClient, platform: Platform, plugins: PluginRegistry
) -> None:
    store = platform.store
    _postgres_only(store)
    calls: list[int] = []
    plugins.register("account", "create", "pre-operation", _deadlock_every_time(calls))
    store.write_attempts = 2

    r = await api.post(API + "accounts", json={"name": "never"})
    assert r.status_code == 503, r.text
    assert r.headers["Retry-After"] == "1"
    error = r.json()["error"]
    assert error["code"] == "0x80040216"
    assert "try again" in error["message"]
    assert len(calls) == 2

    # a change set is one unit of work: retried whole, then its part answers 503
    boundary, changeset = "batch_x", "changeset_y"
    body = (
        f"--{boundary}\r\nContent-Type: multipart/mixed; boundary={changeset}\r\n\r\n"
        f"--{changeset}\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n"
        "Content-ID: 1\r\n\r\n"
        "POST https://test/api/data/v9.2/accounts HTTP/1.1\r\n"
        "Content-Type: application/json\r\n\r\n"
        '{"name": "never either"}\r\n'
        f"--{changeset}--\r\n"
        f"--{boundary}--\r\n"
    )
    r = await api.post(
        API + "$batch",
        content=body.encode(),
        headers={"Content-Type": f'multipart/mixed; boundary="{boundary}"'},
    )
    assert r.status_code == 200
    assert "HTTP/1.1 503" in r.text
    assert "Retry-After: 1" in r.text
    assert len(calls) == 4
    r = await api.get(API + "accounts?$select=name")
    assert r.json()["value"] == []
    assert store.retries == 2
    assert store.conflicts == 2
