"""Service protection limits (``fieldsync.http.throttle``): requests and execution time per
user in a sliding window, requests in flight, ``Retry-After`` and the ``x-ms-ratelimit-*``
headers; shared between server processes through the database (two throttles on one store,
on SQLite and PostgreSQL; and two ``fieldsync serve`` processes on PostgreSQL); ``$batch``
size."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
import sqlalchemy as sa

from fieldsync.config import Settings
from fieldsync.errors import TooManyRequests
from fieldsync.http.throttle import (
    BURST_HEADER,
    CONCURRENCY_CODE,
    REQUESTS_CODE,
    TIME_CODE,
    TIME_HEADER,
    Limits,
    Throttle,
)
from fieldsync.platform import Platform, build
from fieldsync.security.roles import SYSTEM_ADMINISTRATOR
from fieldsync.server.app import create_app
from fieldsync.store.catalog import fs_throttle
from fieldsync.store.store import Store

API = "/api/data/v9.2/"
USER = uuid.UUID(int=7)


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def refused(throttle: Throttle, user: uuid.UUID = USER) -> TooManyRequests:
    with pytest.raises(TooManyRequests) as caught:
        throttle.admit(user)
    return caught.value


def test_requests_in_the_window_then_429_until_the_oldest_leave() -> None:
    clock = Clock()
    throttle = Throttle(Limits(requests=3, window_seconds=30), clock=clock)
    assert throttle.limits.bucket_seconds == 1
    seen = []
    for _ in range(3):
        ticket = throttle.admit(USER)
        throttle.finish(ticket)
        seen.append(ticket.headers[BURST_HEADER])
        clock.now += 5
    assert seen == ["2", "1", "0"]
    exc = refused(throttle)
    assert exc.status == 429
    assert exc.code == REQUESTS_CODE
    assert exc.retry_after == 15  # the first request leaves the window 30 s after it came
    assert exc.headers[BURST_HEADER] == "0"
    throttle.admit(uuid.UUID(int=8))  # per user
    clock.now += 14
    assert refused(throttle).retry_after == 1
    clock.now += 1
    throttle.admit(USER)


def test_execution_time_counts_and_is_told() -> None:
    clock = Clock()
    throttle = Throttle(Limits(execution_seconds=2, window_seconds=60), clock=clock)
    ticket = throttle.admit(USER)
    assert ticket.headers[TIME_HEADER] == "2.00"
    clock.now += 1.5
    throttle.finish(ticket)
    ticket = throttle.admit(USER)
    assert ticket.headers[TIME_HEADER] == "0.50"
    clock.now += 0.75
    throttle.finish(ticket)
    exc = refused(throttle)
    assert exc.code == TIME_CODE
    assert exc.headers[TIME_HEADER] == "0.00"
    assert 1 <= exc.retry_after <= 60
    clock.now += exc.retry_after
    throttle.finish(throttle.admit(USER))


def test_requests_in_flight_are_refused_at_once() -> None:
    throttle = Throttle(Limits(concurrent=2), clock=Clock())
    first, _second = throttle.admit(USER), throttle.admit(USER)
    exc = refused(throttle)
    assert exc.code == CONCURRENCY_CODE
    assert exc.retry_after == 1
    throttle.finish(first)
    throttle.admit(USER)


def shared(store: Store, clock: Clock, **limits: int) -> Throttle:
    return Throttle(Limits(**limits), store, clock=clock, background=False)


def test_processes_share_counts_through_the_database(platform: Platform) -> None:
    """Two throttles on one database, as two processes: each exchange publishes what it
    counted and reads the other's; a user over the limit on one is refused on the other."""
    clock = Clock()
    store = platform.store
    a, b = shared(store, clock, requests=5), shared(store, clock, requests=5)
    b.finish(b.admit(USER))  # b has served the user before
    for _ in range(4):
        a.finish(a.admit(USER))
    a.sync()
    b.sync()
    exc = refused(b)  # 4 on a + 1 on b
    assert exc.code == REQUESTS_CODE
    a.sync()
    assert refused(a).code == REQUESTS_CODE
    with store.read() as conn:
        total = conn.execute(
            sa.select(sa.func.sum(fs_throttle.c.requests)).where(fs_throttle.c.userid == USER)
        ).scalar_one()
    assert total == 5  # one row per process and bucket, not one per request
    clock.now += 301  # the window moved on: the counts leave it, and the table
    a.sync()
    b.sync()
    b.finish(b.admit(USER))
    with store.read() as conn:
        buckets = conn.execute(sa.select(fs_throttle.c.bucket).where(fs_throttle.c.bucket >= 0))
        assert all(row.bucket >= a._bucket(clock.now) - 31 for row in buckets)


def test_requests_in_flight_are_shared(platform: Platform) -> None:
    clock = Clock()
    a, b = shared(platform.store, clock, concurrent=3), shared(platform.store, clock, concurrent=3)
    b.finish(b.admit(USER))
    held = [a.admit(USER), a.admit(USER)]
    a.sync()
    b.sync()
    ticket = b.admit(USER)  # 2 on a + this one
    assert refused(b).code == CONCURRENCY_CODE
    b.finish(ticket)
    for t in held:
        a.finish(t)
    a.sync()
    b.sync()
    b.admit(USER)
    b.admit(USER)
    b.admit(USER)
    clock.now += 10  # a process that stopped exchanging is forgotten
    c = shared(platform.store, clock, concurrent=3)
    c.finish(c.admit(USER))
    c.sync()
    c.admit(USER)


def test_a_failed_exchange_keeps_the_counts(platform: Platform) -> None:
    clock = Clock()
    a = shared(platform.store, clock, requests=2)
    a.finish(a.admit(USER))
    a.finish(a.admit(USER))
    with platform.store.write() as conn:  # the exchange fails: the table is gone
        conn.execute(sa.text("DROP TABLE fs_throttle"))
    with pytest.raises(sa.exc.DBAPIError):
        a.sync()
    assert sum(r for r, _ in a._pending[USER].buckets.values()) == 2
    assert refused(a).code == REQUESTS_CODE  # judged on its own counts meanwhile


pytestmark = pytest.mark.anyio


@pytest.fixture
async def small(platform: Platform) -> AsyncIterator[httpx.AsyncClient]:
    org = platform.org
    org.user("admin", roles=[org.role_id(SYSTEM_ADMINISTRATOR)])
    _, secret = platform.auth.create_api_token(org.user_id("admin"), "t")
    settings = Settings(webapi_max_requests=3, webapi_max_batch_operations=2)
    app = create_app(settings, platform=platform)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="https://test",
        headers={"Authorization": f"Bearer {secret}"},
    ) as c:
        yield c


async def test_the_web_api_answers_429_with_retry_after_and_the_headers(
    small: httpx.AsyncClient,
) -> None:
    remaining = []
    for _ in range(3):
        r = await small.get(API + "WhoAmI()")
        assert r.status_code == 200
        remaining.append(r.headers["x-ms-ratelimit-burst-remaining-xrm-requests"])
        assert float(r.headers["x-ms-ratelimit-time-remaining-xrm-requests"]) <= 1200
    assert remaining == ["2", "1", "0"]
    r = await small.get(API + "accounts")
    assert r.status_code == 429
    assert 1 <= int(r.headers["Retry-After"]) <= 300
    assert r.headers["x-ms-ratelimit-burst-remaining-xrm-requests"] == "0"
    assert r.json()["error"]["code"] == "0x80072322"
    assert "service protection" in r.json()["error"]["message"]


async def test_a_batch_past_its_operations_is_refused(small: httpx.AsyncClient) -> None:
    part = (
        "--b\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n"
        "GET https://test/api/data/v9.2/WhoAmI() HTTP/1.1\r\n\r\n\r\n"
    )
    headers = {"Content-Type": "multipart/mixed; boundary=b"}
    r = await small.post(API + "$batch", content=part * 2 + "--b--\r\n", headers=headers)
    assert r.status_code == 200
    r = await small.post(API + "$batch", content=part * 3 + "--b--\r\n", headers=headers)
    assert r.status_code == 400
    assert "at most 2" in r.json()["error"]["message"]


@pytest.mark.postgres
def test_over_the_limit_on_one_process_is_refused_on_the_other(
    database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two ``fieldsync serve`` processes on one PostgreSQL database: a user who used up the
    limit on the first is refused on the second within a couple of exchange intervals."""
    from test_live_scale import Server

    monkeypatch.setenv("FIELDSYNC_WEBAPI_MAX_REQUESTS", "5")
    monkeypatch.setenv("FIELDSYNC_WEBAPI_LIMITS_SYNC_MS", "200")
    p = build(Store.open(database))
    try:
        _, secret = p.auth.create_api_token(p.org.user_id("tech"), "limits")
    finally:
        p.close()
    auth = {"Authorization": f"Bearer {secret}"}
    first, second = Server(database), None
    try:
        second = Server(database)
        with httpx.Client(headers=auth, timeout=10) as http:
            assert http.get(second.url + "/api/data/v9.2/WhoAmI()").status_code == 200
            for _ in range(5):  # the first judges on its own counts: its sixth is refused
                assert http.get(first.url + "/api/data/v9.2/WhoAmI()").status_code == 200
            assert http.get(first.url + "/api/data/v9.2/WhoAmI()").status_code == 429
            start = time.monotonic()
            admitted = 0
            while True:
                r = http.get(second.url + "/api/data/v9.2/WhoAmI()")
                if r.status_code == 429:
                    break
                assert r.status_code == 200
                admitted += 1
                assert time.monotonic() - start < 3, "the second process never refused"
                time.sleep(0.05)
            assert r.json()["error"]["code"] == "0x80072322"
            assert int(r.headers["Retry-After"]) >= 1
            print(f"refused on the second after {time.monotonic() - start:.2f} s, {admitted} more")
    finally:
        first.stop()
        if second is not None:
            second.stop()


from test_live_scale import database  # noqa: E402  (the PostgreSQL schema with a technician)

__all__ = ["database"]
