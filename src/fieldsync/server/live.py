"""Live sync over HTTP: ``GET /sync/v1/live?app=…`` holds a server-sent events stream on which
the server names the device's tables as soon as changes to them commit, on any process.

The stream, after the bearer token and the app have been checked::

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
reader of the change log per wake-up, and a fan-out to the subscribers in memory. A subscriber
costs an asyncio task and a socket; no database connection is held while it waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import StreamingResponse

from fieldsync.config import Settings
from fieldsync.errors import BadRequest
from fieldsync.http.principal import Principal
from fieldsync.security.model import SecurityContext
from fieldsync.store.notify import ChangeListener, TouchBatch, head_version, read_touches
from fieldsync.store.store import Store
from fieldsync.sync.live import Interest
from fieldsync.sync.service import SyncService, fingerprint

log = logging.getLogger(__name__)

router = APIRouter(prefix="/sync/v1", tags=["sync"])


class Subscriber:
    __slots__ = ("event", "interest", "pending")

    def __init__(self, interest: Interest) -> None:
        self.interest = interest
        self.pending: set[str] = set()
        self.event = asyncio.Event()

    def push(self, tables: frozenset[str]) -> None:
        self.pending |= tables
        self.event.set()


class LiveHub:
    """The subscribers of one server process and the loop that tells them about changes."""

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
        self.groups: dict[Any, tuple[Interest, set[Subscriber]]] = {}
        self.listener: ChangeListener | None = None
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._starting = asyncio.Lock()
        self.notices = 0  # pushes to subscribers, for tests and the bench

    @property
    def connected(self) -> int:
        return sum(len(subs) for _, subs in self.groups.values())

    async def start(self) -> None:
        """Start listening (on the first subscriber: the app may run without a lifespan)."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # a new server loop (tests serve one app several times)
            if self.listener is not None:
                self.store.committed.clear()
            self._loop, self._task, self.listener = loop, None, None
            self._starting = asyncio.Lock()
            self.groups.clear()
        async with self._starting:
            if self._task is not None:
                return
            listener = ChangeListener(self.store, poll=self.poll)
            after = await asyncio.to_thread(head_version, self.store)
            listener.start()
            self.listener = listener
            self._task = asyncio.create_task(self._read(after), name="fieldsync-live")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self.listener is not None:
            await self.listener.close()
            self.listener = None

    def subscribe(self, interest: Interest) -> Subscriber:
        found = self.groups.get(interest.key)
        if found is None:
            found = self.groups[interest.key] = (interest, set())
        sub = Subscriber(found[0])
        found[1].add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        found = self.groups.get(sub.interest.key)
        if found is not None:
            found[1].discard(sub)
            if not found[1]:
                del self.groups[sub.interest.key]

    def fan_out(self, batch: TouchBatch) -> None:
        if not batch.touches:
            return
        for interest, subs in list(self.groups.values()):
            tables = interest.notice(batch.touches)
            if tables:
                for sub in subs:
                    sub.push(tables)
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

    async def stream(self, sub: Subscriber) -> AsyncIterator[bytes]:
        try:
            ready = {"tables": sorted(sub.interest.tables), "keepalive": self.keepalive}
            yield b"retry: 5000\nevent: ready\ndata: " + orjson.dumps(ready) + b"\n\n"
            deadline = time.monotonic() + self.max_seconds
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    yield b"event: bye\ndata: {}\n\n"
                    return
                try:
                    await asyncio.wait_for(sub.event.wait(), min(self.keepalive, remaining))
                except TimeoutError:
                    yield b": keep-alive\n\n"
                    continue
                sub.event.clear()
                tables, sub.pending = sub.pending, set()
                if tables:
                    body = orjson.dumps({"tables": sorted(tables)})
                    yield b"event: changes\ndata: " + body + b"\n\n"
        finally:
            self.unsubscribe(sub)


def _interest(sync: SyncService, ctx: SecurityContext, app: str) -> Interest:
    with sync.store.read() as conn:
        access = sync.access(conn, ctx, app)
    plan = sync.plan(access.profile)
    profile = access.profile
    key = (ctx.user_id, fingerprint(ctx), profile.profile_id, profile.version, id(plan))
    return Interest(plan, ctx, key)


@router.get("/live")
async def live(request: Request, ctx: Principal, app: str | None = None) -> StreamingResponse:
    """Hold a server-sent events stream that names the app's tables when they change."""
    if not app or len(app) > 128:
        raise BadRequest("'app' must name an app (its id or unique name)")
    hub: LiveHub = request.app.state.live
    sync: SyncService = request.app.state.sync
    interest = await run_in_threadpool(_interest, sync, ctx, app)
    await hub.start()
    sub = hub.subscribe(interest)
    return StreamingResponse(
        hub.stream(sub),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def hub(store: Store, settings: Settings) -> LiveHub:
    return LiveHub(
        store,
        keepalive=float(settings.live_keepalive_seconds),
        max_seconds=float(settings.live_max_seconds),
    )
