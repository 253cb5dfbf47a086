"""Service protection limits, as Dataverse's, per user across every server process.

Three limits per user (``FIELDSYNC_WEBAPI_*`` settings): requests and execution time in a
sliding window (6,000 requests and 1,200 s in 300 s, as Dataverse), and requests in flight at
once (52). Past one, the Web API answers 429 with ``Retry-After`` (seconds) and Dataverse's
error code for the limit hit; every admitted answer carries what is left:
``x-ms-ratelimit-burst-remaining-xrm-requests`` (requests) and
``x-ms-ratelimit-time-remaining-xrm-requests`` (seconds of execution time).

Shared through the database without a write per request: each process counts in memory, per
user and per time bucket (the window is 30 buckets: 10 s for 300 s), and every
``sync_seconds`` (1 s) one thread of the process adds what it counted to the shared table
``fs_throttle`` (one upsert per user and bucket touched), writes its requests in flight per
user, and reads the other processes' totals for the users it serves. A request is judged on
the process's own exact counts plus the others' as of their last exchange. So:

- the window slides in bucket steps (a request leaves the count 290 to 300 s after it came);
- another process's requests count here at most about two sync intervals late: a user over
  the limit on one process is refused on the others within ~2 s; in that time a user spread
  over N processes can overshoot by what N-1 processes admit in ~2 s;
- requests in flight on other processes are as of their last exchange; a process that stops
  exchanging (it died) is forgotten after three intervals.

Nothing here holds a database connection on the request path; a failed exchange is logged
and retried on the next interval (the process then judges on its own counts alone).
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from fieldsync.config import Settings
from fieldsync.errors import TooManyRequests
from fieldsync.store.catalog import fs_throttle
from fieldsync.store.engine import WRITE_OPTION
from fieldsync.store.store import Store

log = logging.getLogger(__name__)

REQUESTS_CODE = "0x80072322"  # -2147015902: number of requests
TIME_CODE = "0x80072321"  # -2147015903: combined execution time
CONCURRENCY_CODE = "0x80072326"  # -2147015898: concurrent requests
BURST_HEADER = "x-ms-ratelimit-burst-remaining-xrm-requests"
TIME_HEADER = "x-ms-ratelimit-time-remaining-xrm-requests"
IN_FLIGHT = -1  # the bucket of the row holding a process's requests in flight for a user
BUCKETS = 30


@dataclass(frozen=True)
class Limits:
    requests: int = 6000
    execution_seconds: int = 1200
    window_seconds: int = 300
    concurrent: int = 52
    sync_seconds: float = 1.0

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(
            requests=settings.webapi_max_requests,
            execution_seconds=settings.webapi_max_execution_seconds,
            window_seconds=max(1, settings.webapi_window_seconds),
            concurrent=settings.webapi_max_concurrent,
            sync_seconds=max(0.05, settings.webapi_limits_sync_ms / 1000),
        )

    @property
    def bucket_seconds(self) -> int:
        return max(1, self.window_seconds // BUCKETS)

    @property
    def buckets(self) -> int:
        return max(1, math.ceil(self.window_seconds / self.bucket_seconds))


@dataclass
class _Usage:
    """One user's counts: per bucket [requests, milliseconds]."""

    buckets: dict[int, list[int]] = field(default_factory=dict)

    def add(self, bucket: int, requests: int, ms: int) -> None:
        slot = self.buckets.setdefault(bucket, [0, 0])
        slot[0] += requests
        slot[1] += ms

    def trim(self, oldest: int) -> None:
        for b in [b for b in self.buckets if b < oldest]:
            del self.buckets[b]


@dataclass(frozen=True)
class Ticket:
    user: uuid.UUID
    started: float
    headers: dict[str, str]


class Throttle:
    """The limits of one server process; ``store`` shares them with the others (``None``:
    this process alone)."""

    def __init__(
        self,
        limits: Limits,
        store: Store | None = None,
        *,
        clock: Callable[[], float] = time.time,
        background: bool = True,
    ) -> None:
        self.limits = limits
        self.store = store
        self.clock = clock
        self.process = uuid.uuid4().hex
        self._lock = threading.Lock()
        self._mine: dict[uuid.UUID, _Usage] = {}
        self._pending: dict[uuid.UUID, _Usage] = {}
        self._active: dict[uuid.UUID, int] = {}
        self._published: set[uuid.UUID] = set()  # users whose in-flight row we wrote
        self._others: dict[uuid.UUID, _Usage] = {}
        self._others_active: dict[uuid.UUID, int] = {}
        self._syncing = False
        self._background = background  # False: the owner calls sync() (tests)

    # -- the request path ----------------------------------------------------------------

    def _bucket(self, now: float) -> int:
        return int(now // self.limits.bucket_seconds)

    def admit(self, user: uuid.UUID) -> Ticket:
        """Count a request in, or refuse it with :class:`TooManyRequests`."""
        lim = self.limits
        now = self.clock()
        bucket = self._bucket(now)
        oldest = bucket - lim.buckets + 1
        with self._lock:
            mine = self._mine.setdefault(user, _Usage())
            mine.trim(oldest)
            merged = self._merged(user, oldest)
            requests = sum(r for r, _ in merged.values())
            ms = sum(m for _, m in merged.values())
            active = self._active.get(user, 0) + self._others_active.get(user, 0)
            if active >= lim.concurrent:
                raise self._refuse(
                    f"more than {lim.concurrent} concurrent requests",
                    CONCURRENCY_CODE,
                    1,
                    requests,
                    ms,
                )
            if requests >= lim.requests:
                wait = self._wait(merged, now, lambda r, _m: r, requests - lim.requests + 1)
                raise self._refuse(
                    f"more than {lim.requests} requests in {lim.window_seconds} seconds",
                    REQUESTS_CODE,
                    wait,
                    requests,
                    ms,
                )
            if ms >= lim.execution_seconds * 1000:
                excess = ms - lim.execution_seconds * 1000 + 1
                wait = self._wait(merged, now, lambda _r, m: m, excess)
                raise self._refuse(
                    f"more than {lim.execution_seconds} seconds of execution time in "
                    f"{lim.window_seconds} seconds",
                    TIME_CODE,
                    wait,
                    requests,
                    ms,
                )
            mine.add(bucket, 1, 0)
            self._pending.setdefault(user, _Usage()).add(bucket, 1, 0)
            self._active[user] = self._active.get(user, 0) + 1
            headers = self._headers(requests + 1, ms)
        self._maybe_sync()
        return Ticket(user, now, headers)

    def finish(self, ticket: Ticket) -> None:
        """The request is answered: its execution time counts, it is no longer in flight."""
        now = self.clock()
        ms = max(0, int((now - ticket.started) * 1000))
        bucket = self._bucket(now)
        with self._lock:
            self._mine.setdefault(ticket.user, _Usage()).add(bucket, 0, ms)
            self._pending.setdefault(ticket.user, _Usage()).add(bucket, 0, ms)
            left = self._active.get(ticket.user, 1) - 1
            if left > 0:
                self._active[ticket.user] = left
            else:
                self._active.pop(ticket.user, None)
        self._maybe_sync()

    def _merged(self, user: uuid.UUID, oldest: int) -> dict[int, tuple[int, int]]:
        out: dict[int, list[int]] = {}
        for usage in (self._mine.get(user), self._others.get(user)):
            if usage is None:
                continue
            for b, (r, m) in usage.buckets.items():
                if b >= oldest:
                    slot = out.setdefault(b, [0, 0])
                    slot[0] += r
                    slot[1] += m
        return {b: (r, m) for b, (r, m) in out.items()}

    def _wait(
        self,
        merged: dict[int, tuple[int, int]],
        now: float,
        measure: Callable[[int, int], int],
        excess: int,
    ) -> int:
        """Seconds until enough of the oldest buckets leave the window to bring the count
        back under the limit."""
        lim = self.limits
        freed = 0
        for b in sorted(merged):
            freed += measure(*merged[b])
            if freed >= excess:
                leaves = (b + lim.buckets) * lim.bucket_seconds
                return max(1, math.ceil(leaves - now))
        return lim.window_seconds

    def _headers(self, requests: int, ms: int) -> dict[str, str]:
        lim = self.limits
        time_left = max(0.0, lim.execution_seconds - ms / 1000)
        return {
            BURST_HEADER: str(max(0, lim.requests - requests)),
            TIME_HEADER: f"{time_left:.2f}",
        }

    def _refuse(
        self, message: str, code: str, wait: int, requests: int, ms: int
    ) -> TooManyRequests:
        exc = TooManyRequests(
            f"service protection limit: {message}; retry after {wait} s",
            retry_after=wait,
            headers=self._headers(requests, ms),
        )
        exc.code = code  # type: ignore[misc]
        return exc

    # -- sharing through the database ----------------------------------------------------

    def _maybe_sync(self) -> None:
        """Start the exchange thread if it is not running (it stops once idle)."""
        if self.store is None or not self._background:
            return
        with self._lock:
            if self._syncing:
                return
            self._syncing = True
        threading.Thread(target=self._run, name="fieldsync-throttle", daemon=True).start()

    def _run(self) -> None:
        """Exchange every interval until idle, or after three failures in a row (the next
        request starts it again, and the counts kept are shared then)."""
        failures = 0
        try:
            while True:
                time.sleep(self.limits.sync_seconds)
                if self.store is not None and self.store.closed:
                    # the store is gone (the server stops): a connection opened now would
                    # belong to no pool anyone closes
                    with self._lock:
                        self._syncing = False
                    return
                try:
                    self.sync()
                    failures = 0
                except Exception:  # the database is away: judge on local counts meanwhile
                    failures += 1
                    log.warning("service protection counts were not shared", exc_info=True)
                with self._lock:
                    idle = not self._pending and not self._active and not self._published
                    if idle or failures >= 3:
                        self._syncing = False
                        return
        except BaseException:
            with self._lock:
                self._syncing = False
            raise

    def sync(self) -> None:
        """Add this process's new counts to the shared table, publish its requests in flight,
        and read the other processes' counts for the users this process has seen."""
        if self.store is None:
            return
        lim = self.limits
        now = self.clock()
        bucket = self._bucket(now)
        oldest = bucket - lim.buckets + 1
        with self._lock:
            pending, self._pending = self._pending, {}
            active = dict(self._active)
            for usage in self._mine.values():
                usage.trim(oldest)
            for u in [u for u, usage in self._mine.items() if not usage.buckets]:
                del self._mine[u]  # users gone from the window are forgotten
            users = [*self._mine, *active]
            publish = set(active) | self._published
        counts = [
            {"userid": u, "bucket": b, "requests": r, "milliseconds": m}
            for u, usage in pending.items()
            for b, (r, m) in usage.buckets.items()
            if b >= oldest
        ]
        flights = [
            {"userid": u, "bucket": IN_FLIGHT, "active": active.get(u, 0), "seen": int(now)}
            for u in publish
        ]
        try:
            others, others_active = self._exchange(counts, flights, users, now, oldest)
        except Exception:
            with self._lock:  # keep the counts for the next exchange
                for u, usage in pending.items():
                    for b, (r, m) in usage.buckets.items():
                        self._pending.setdefault(u, _Usage()).add(b, r, m)
            raise
        with self._lock:
            self._others = others
            self._others_active = others_active
            self._published = {u for u in publish if active.get(u, 0) > 0}

    def _exchange(
        self,
        counts: list[dict[str, Any]],
        flights: list[dict[str, Any]],
        users: Iterable[uuid.UUID],
        now: float,
        oldest: int,
    ) -> tuple[dict[uuid.UUID, _Usage], dict[uuid.UUID, int]]:
        assert self.store is not None
        wanted = list(dict.fromkeys(users))
        # a write transaction of its own, not Store.write(): no commit hooks (live sync
        # listeners) run for these rows
        with self.store.engine.connect() as raw:
            conn = raw.execution_options(**{WRITE_OPTION: True})
            with conn.begin():
                self._write(conn, counts, flights, wanted, now, oldest)
                return self._read(conn, wanted, now, oldest)

    def _write(
        self,
        conn: sa.Connection,
        counts: list[dict[str, Any]],
        flights: list[dict[str, Any]],
        wanted: list[uuid.UUID],
        now: float,
        oldest: int,
    ) -> None:
        """Add this process's new counts, publish its requests in flight, and drop what left
        the window (and in-flight rows of processes gone for a minute)."""
        assert self.store is not None
        t = fs_throttle
        insert: Any = postgresql.insert if self.store.dialect == "postgresql" else sqlite.insert
        if counts:
            stmt = insert(t).values(
                [{"processid": self.process, "active": 0, "seen": int(now), **c} for c in counts]
            )
            conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=[t.c.processid, t.c.userid, t.c.bucket],
                    set_={
                        "requests": t.c.requests + stmt.excluded.requests,
                        "milliseconds": t.c.milliseconds + stmt.excluded.milliseconds,
                        "seen": stmt.excluded.seen,
                    },
                )
            )
        if flights:
            stmt = insert(t).values(
                [
                    {"processid": self.process, "requests": 0, "milliseconds": 0, **f}
                    for f in flights
                ]
            )
            conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=[t.c.processid, t.c.userid, t.c.bucket],
                    set_={"active": stmt.excluded.active, "seen": stmt.excluded.seen},
                )
            )
        conn.execute(
            t.delete().where(
                sa.or_(
                    sa.and_(t.c.bucket != IN_FLIGHT, t.c.bucket < oldest - 1),
                    sa.and_(t.c.bucket == IN_FLIGHT, t.c.seen < int(now) - 60),
                )
            )
        )

    def _read(
        self, conn: sa.Connection, wanted: list[uuid.UUID], now: float, oldest: int
    ) -> tuple[dict[uuid.UUID, _Usage], dict[uuid.UUID, int]]:
        """The other processes' counts in the window and requests in flight (as of their
        last three intervals) for ``wanted`` users."""
        t = fs_throttle
        others: dict[uuid.UUID, _Usage] = {}
        others_active: dict[uuid.UUID, int] = {}
        fresh = int(now - 3 * self.limits.sync_seconds - 1)
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            rows = conn.execute(
                sa.select(
                    t.c.userid,
                    t.c.bucket,
                    sa.func.sum(t.c.requests),
                    sa.func.sum(t.c.milliseconds),
                    sa.func.sum(sa.case((t.c.seen >= fresh, t.c.active), else_=0)),
                )
                .where(
                    t.c.processid != self.process,
                    t.c.userid.in_(chunk),
                    sa.or_(t.c.bucket >= oldest, t.c.bucket == IN_FLIGHT),
                )
                .group_by(t.c.userid, t.c.bucket)
            )
            for user, bucket, requests, ms, active in rows:
                if bucket == IN_FLIGHT:
                    if active:
                        others_active[user] = int(active)
                else:
                    others.setdefault(user, _Usage()).add(
                        int(bucket), int(requests or 0), int(ms or 0)
                    )
        return others, others_active
