"""Live sync over HTTP: ``GET /sync/v1/live?app=…`` holds a server-sent events stream on which
the server names the device's tables as soon as changes to them commit, on any process.

The stream, after the bearer token, the app and the device (``device=…``, optional: when named,
it must be the caller's registered device with no wipe pending) have been checked::

    retry: 5000
    event: ready
    data: {"tables": ["account", ...], "keepalive": 15}

    event: changes
    data: {"tables": ["account"]}

    : keep-alive

    event: bye
    data: {}

``ready`` says the subscription is in place (sync everything now: changes made while the
device was away were not announced); ``bye`` ends the stream after ``live_max_seconds`` so that
tokens and security contexts are checked again on reconnect.

One :class:`LiveHub` per process: one change listener (:mod:`fieldsync.store.notify`), one
reader of the change log per wake-up, a fan-out in memory and one timer for keep-alives and
byes. The fan-out looks up the groups a change may concern (streams are grouped by user and
profile, groups indexed by the tables they watch and the owners and business units they read)
and checks each of those once, not every stream. A stream costs its socket, its request's
coroutine, a task that notices the client leaving and a small :class:`Subscriber`; no database
connection is held while it waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from fieldsync.config import Settings
from fieldsync.errors import BadRequest
from fieldsync.http.principal import Principal
from fieldsync.security.model import SecurityContext
from fieldsync.store.notify import (
    ALL_TABLES,
    ChangeListener,
    Touch,
    TouchBatch,
    head_version,
    read_touches,
)
from fieldsync.store.store import Store
from fieldsync.sync.live import Interest
from fieldsync.sync.service import SyncService, fingerprint

log = logging.getLogger(__name__)

router = APIRouter(prefix="/sync/v1", tags=["sync"])


class Subscriber:
    """One stream: what it has still to send and when. A few slots, no task of its own; the
    hub's fan-out and its one timer wake the stream's response coroutine."""

    __slots__ = ("closing", "deadline", "due", "gone", "interest", "pending", "waiter")

    def __init__(self, interest: Interest, deadline: float, due: float) -> None:
        self.interest = interest
        self.pending: set[str] | None = None  # tables to name on the next event
        self.waiter: asyncio.Future[None] | None = None
        self.deadline = deadline  # when to say bye
        self.due = due  # when a keep-alive is due
        self.closing = False  # the deadline passed: say bye
        self.gone = False  # the client went away

    def push(self, tables: frozenset[str]) -> None:
        if self.pending is None:
            self.pending = set(tables)
        else:
            self.pending |= tables
        self.wake()

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self) -> None:
        if self.pending or self.closing or self.gone:
            return
        self.waiter = asyncio.get_running_loop().create_future()
        try:
            await self.waiter
        finally:
            self.waiter = None


class Group:
    """The streams of one :class:`Interest` (a user on a published profile)."""

    __slots__ = ("interest", "subs")

    def __init__(self, interest: Interest) -> None:
        self.interest = interest
        self.subs: set[Subscriber] = set()


class TableIndex:
    """Which groups a change to one table may concern: by the owner or business unit a row
    must carry for each group to read it (``by_value``; ``by_column`` for images without that
    column), and the groups that cannot be told by those (``open``)."""

    __slots__ = ("by_column", "by_value", "open", "watchers")

    def __init__(self) -> None:
        self.watchers: set[Any] = set()
        self.open: set[Any] = set()
        self.by_column: dict[str, set[Any]] = {}
        self.by_value: dict[tuple[str, Any], set[Any]] = {}

    def add(self, key: Any, audience: frozenset[tuple[str, Any]] | None) -> None:
        self.watchers.add(key)
        if audience is None:
            self.open.add(key)
            return
        for pair in audience:
            self.by_value.setdefault(pair, set()).add(key)
            self.by_column.setdefault(pair[0], set()).add(key)

    def remove(self, key: Any, audience: frozenset[tuple[str, Any]] | None) -> None:
        self.watchers.discard(key)
        if audience is None:
            self.open.discard(key)
            return
        for pair in audience:
            _discard(self.by_value, pair, key)
            _discard(self.by_column, pair[0], key)

    def candidates(self, touch: Touch) -> set[Any]:
        """A superset of the groups :meth:`Interest.may_read` lets hear of ``touch``."""
        if not touch.known or not touch.images:
            return self.watchers
        out = set(self.open)
        for image in touch.images:
            for column, keys in self.by_column.items():
                value = image.get(column)
                if value is None:
                    out |= keys
                else:
                    out |= self.by_value.get((column, value), _NONE)
        return out


_NONE: frozenset[Any] = frozenset()


def _discard(index: dict[Any, set[Any]], at: Any, key: Any) -> None:
    found = index.get(at)
    if found is not None:
        found.discard(key)
        if not found:
            del index[at]


class LiveHub:
    """The subscribers of one server process, the loop that tells them about changes and the
    timer that keeps them alive.

    A change reaches only the groups the index names for it (the watchers of its table that
    may read its row), each checked once whatever its number of streams; a stream costs its
    socket, its request's coroutine and a :class:`Subscriber`.
    """

    def __init__(
        self,
        store: Store,
        *,
        keepalive: float = 15.0,
        max_seconds: float = 600.0,
        poll: float | None = None,
    ) -> None:
        self.store = store
        self.keepalive = keepalive
        self.max_seconds = max_seconds
        self.poll = poll if poll is not None else (10.0 if store.dialect == "postgresql" else 2.0)
        self.groups: dict[Any, Group] = {}
        self.tables: dict[str, TableIndex] = {}
        self.everyone: set[Subscriber] = set()
        self.listener: ChangeListener | None = None
        self._task: asyncio.Task[None] | None = None
        self._timer: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._starting = asyncio.Lock()
        self.notices = 0  # pushes to subscribers, for tests and the bench
        self.checks = 0  # groups checked against a change, for tests and the bench

    @property
    def connected(self) -> int:
        return len(self.everyone)

    async def start(self) -> None:
        """Start listening (on the first subscriber: the app may run without a lifespan)."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # a new server loop (tests serve one app several times)
            if self.listener is not None:
                self.store.committed.clear()
            self._loop, self._task, self._timer, self.listener = loop, None, None, None
            self._starting = asyncio.Lock()
            self.groups.clear()
            self.tables.clear()
            self.everyone.clear()
        async with self._starting:
            if self._task is not None:
                return
            listener = ChangeListener(self.store, poll=self.poll)
            after = await asyncio.to_thread(head_version, self.store)
            listener.start()
            self.listener = listener
            self._task = asyncio.create_task(self._read(after), name="fieldsync-live")
            self._timer = asyncio.create_task(self._tick(), name="fieldsync-live-timer")

    async def close(self) -> None:
        for task in (self._task, self._timer):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._task = self._timer = None
        if self.listener is not None:
            await self.listener.close()
            self.listener = None

    def subscribe(self, interest: Interest) -> Subscriber:
        group = self.groups.get(interest.key)
        if group is None:
            group = self.groups[interest.key] = Group(interest)
            for table in interest.targets:
                index = self.tables.get(table)
                if index is None:
                    index = self.tables[table] = TableIndex()
                index.add(interest.key, interest.audience(table))
        now = time.monotonic()
        sub = Subscriber(group.interest, now + self.max_seconds, now + self.keepalive)
        group.subs.add(sub)
        self.everyone.add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        self.everyone.discard(sub)
        interest = sub.interest
        group = self.groups.get(interest.key)
        if group is None:
            return
        group.subs.discard(sub)
        if not group.subs:
            del self.groups[interest.key]
            for table in interest.targets:
                index = self.tables.get(table)
                if index is not None:
                    index.remove(interest.key, interest.audience(table))
                    if not index.watchers:
                        del self.tables[table]

    def fan_out(self, batch: TouchBatch) -> None:
        told: dict[Any, set[str]] = {}
        for touch in batch.touches:
            if touch.table == ALL_TABLES:
                for key, group in self.groups.items():
                    told.setdefault(key, set()).update(group.interest.tables)
                continue
            index = self.tables.get(touch.table)
            if index is None:
                continue
            for key in index.candidates(touch):
                group = self.groups[key]
                targets = group.interest.targets[touch.table]
                already = told.get(key)
                if already is not None and targets <= already:
                    continue
                self.checks += 1
                if group.interest.may_read(touch):
                    if already is None:
                        told[key] = set(targets)
                    else:
                        already |= targets
        for key, tables in told.items():
            frozen = frozenset(tables)
            for sub in self.groups[key].subs:
                sub.push(frozen)
                self.notices += 1

    async def _read(self, after: int) -> None:
        assert self.listener is not None
        attempt = 0
        while True:
            await self.listener.wait()
            try:
                batch = await asyncio.to_thread(read_touches, self.store, after)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                attempt += 1
                log.warning("live sync cannot read the change log: %s", exc)
                await asyncio.sleep(min(30.0, 0.5 * 2**attempt))
                self.listener.wake.set()
                continue
            attempt = 0
            after = batch.head
            self.fan_out(batch)

    async def _tick(self) -> None:
        """The one timer: wakes the streams whose keep-alive is due or whose time is up.
        Each stream's keep-alive falls due on its own schedule, so they spread out."""
        while True:
            await asyncio.sleep(max(0.05, min(1.0, self.keepalive / 2, self.max_seconds / 4)))
            now = time.monotonic()
            for sub in self.everyone:
                if now >= sub.deadline:
                    sub.closing = True
                    sub.wake()
                elif now >= sub.due:
                    sub.wake()

    def response(self, sub: Subscriber) -> LiveResponse:
        return LiveResponse(self, sub)


class LiveResponse(Response):
    """The server-sent events of one stream, as a plain ASGI response: the request's own
    coroutine waits on the :class:`Subscriber`; one small task per stream listens for the
    client going away."""

    media_type = "text/event-stream"

    def __init__(self, hub: LiveHub, sub: Subscriber) -> None:
        self.hub = hub
        self.sub = sub
        self.status_code = 200
        self.background = None
        self.init_headers({"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        hub, sub = self.hub, self.sub
        watch = asyncio.get_running_loop().create_task(_watch(receive, sub))
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            ready = {"tables": sorted(sub.interest.tables), "keepalive": hub.keepalive}
            await _body(send, b"retry: 5000\nevent: ready\ndata: " + orjson.dumps(ready) + b"\n\n")
            while True:
                await sub.wait()
                if sub.gone:
                    return
                tables, sub.pending = sub.pending, None
                if tables:
                    body = orjson.dumps({"tables": sorted(tables)})
                    await _body(send, b"event: changes\ndata: " + body + b"\n\n")
                elif sub.closing:
                    await _body(send, b"event: bye\ndata: {}\n\n")
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
                    return
                else:
                    await _body(send, b": keep-alive\n\n")
                sub.due = time.monotonic() + hub.keepalive
        finally:
            watch.cancel()
            hub.unsubscribe(sub)


async def _body(send: Send, chunk: bytes) -> None:
    await send({"type": "http.response.body", "body": chunk, "more_body": True})


async def _watch(receive: Receive, sub: Subscriber) -> None:
    """Until the client disconnects (a GET's body has been read already)."""
    while (await receive())["type"] != "http.disconnect":
        pass
    sub.gone = True
    sub.wake()


def _interest(
    sync: SyncService, ctx: SecurityContext, app: str, device: str | None = None
) -> Interest:
    with sync.store.read() as conn:
        if device is not None:  # the caller's registration, not wiped (403 otherwise)
            sync.owned_device(conn, ctx, sync.checked_device(device))
        access = sync.access(conn, ctx, app)
    plan = sync.plan(access.profile)
    profile = access.profile
    key = (ctx.user_id, fingerprint(ctx), profile.profile_id, profile.version, id(plan))
    return Interest(plan, ctx, key)


@router.get("/live")
async def live(
    request: Request, ctx: Principal, app: str | None = None, device: str | None = None
) -> Response:
    """Hold a server-sent events stream that names the app's tables when they change. A
    ``device`` named must be the caller's registered device (the handshake registers it) with
    no remote wipe pending."""
    if not app or len(app) > 128:
        raise BadRequest("'app' must name an app (its id or unique name)")
    hub: LiveHub = request.app.state.live
    sync: SyncService = request.app.state.sync
    interest = await run_in_threadpool(_interest, sync, ctx, app, device)
    await hub.start()
    sub = hub.subscribe(interest)
    return hub.response(sub)


def hub(store: Store, settings: Settings) -> LiveHub:
    return LiveHub(
        store,
        keepalive=float(settings.live_keepalive_seconds),
        max_seconds=float(settings.live_max_seconds),
    )
