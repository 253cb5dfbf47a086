"""A server and devices in one process, for the sync tests: the ASGI app behind an in-process
HTTP transport, an organisation with technicians, and a field-service offline profile."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from fieldsync.client import Device
from fieldsync.config import Settings
from fieldsync.offline.snapshot import (
    AppOfflineSettings,
    Distribution,
    ItemSnapshot,
    OfflineAccess,
    PublishedProfile,
    RelationshipRef,
)
from fieldsync.platform import Platform
from fieldsync.security.model import SecurityContext
from fieldsync.security.roles import BASIC_USER
from fieldsync.server.app import create_app
from fieldsync.sync.service import SyncService

PASSWORD = "correct horse battery"
APP_ID = uuid.UUID("00000000-0000-4000-8000-00000000a001")


def field_profile(version: int = 1, **changes: ItemSnapshot) -> PublishedProfile:
    """Work orders the user owns; their accounts; those accounts' contacts."""
    items = {
        "workorder": ItemSnapshot("workorder", Distribution.OTHER, owned_by_me=True),
        "account": ItemSnapshot(
            "account",
            Distribution.RELATED,
            relationships=(RelationshipRef("account_workorder_serviceaccountid", "workorder"),),
        ),
        "contact": ItemSnapshot(
            "contact",
            Distribution.RELATED,
            relationships=(RelationshipRef("account_contact_parentcustomerid", "account"),),
        ),
    }
    items.update(changes)
    return PublishedProfile(
        profile_id=uuid.UUID("00000000-0000-4000-8000-00000000b001"),
        name="Field service",
        version=version,
        published_on=dt.datetime(2026, 12, 1, tzinfo=dt.UTC),
        items=tuple(items.values()),
    )


class AsgiBridge(httpx.BaseTransport):
    """A synchronous httpx transport into an ASGI app, on an event loop of its own."""

    def __init__(self, app: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.inner = httpx.ASGITransport(app=app)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = request.read()

        async def send() -> httpx.Response:
            forwarded = httpx.Request(
                request.method, request.url, headers=request.headers, content=body
            )
            response = await self.inner.handle_async_request(forwarded)
            content = await response.aread()
            return httpx.Response(response.status_code, headers=response.headers, content=content)

        return asyncio.run_coroutine_threadsafe(send(), self.loop).result()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)


class World:
    """The server side of a sync test, with a swappable published profile."""

    def __init__(self, platform: Platform, tmp: Path) -> None:
        self.platform = platform
        self.tmp = tmp
        self.profile = field_profile()
        self.allowed: Callable[[SecurityContext], bool] = lambda ctx: True
        self.app = create_app(Settings(data_dir=str(tmp / "server")), platform=platform)
        self.sync = SyncService(platform.records, access=self._access)
        self.app.state.sync = self.sync
        self.bridge = AsgiBridge(self.app)
        self.down = False
        org = platform.org
        basic = org.role_id(BASIC_USER)
        # technicians read their business unit's customers and work orders, change their own
        mine = {
            "create": "user",
            "write": "user",
            "delete": "user",
            "append": "user",
            "assign": "user",
            "share": "user",
        }
        self.technician = org.role(
            "Field Technician",
            privileges={
                t: {**mine, "read": "businessunit", "appendto": "businessunit"}
                for t in ("account", "contact", "workorder")
            },
        )
        self.unit = org.business_unit("North")
        self.other_unit = org.business_unit("South")
        self.users: dict[str, uuid.UUID] = {}
        for name in ("tech1", "tech2", "tech3"):
            self.users[name] = org.user(
                name,
                business_unit=self.unit if name != "tech3" else self.other_unit,
                password=PASSWORD,
                roles=[basic, self.technician],
            )
        self.team = org.team("Crew", self.unit, members=[self.users["tech1"]])

    def _access(self, conn: sa.Connection, ctx: SecurityContext, app: str) -> OfflineAccess:
        from fieldsync.errors import Forbidden, NotFound

        if app != "fieldservice":
            raise NotFound(f"no app {app!r} that you can use")
        if not self.allowed(ctx):
            raise Forbidden("you may not take this app offline")
        settings = AppOfflineSettings(APP_ID, "Field Service", True, allow_sync_frequency=True)
        return OfflineAccess(settings, self.profile)

    def transport(self) -> httpx.BaseTransport:
        inner = self.bridge
        world = self

        class Switchable(httpx.BaseTransport):
            def handle_request(self, request: httpx.Request) -> httpx.Response:
                if world.down:
                    raise httpx.ConnectError("the network is down", request=request)
                return inner.handle_request(request)

        return Switchable()

    def device(self, user: str, name: str | None = None) -> Device:
        return Device.login(
            self.tmp / (name or user),
            server="http://testserver",
            username=user,
            password=PASSWORD,
            app="fieldservice",
            transport=self.transport(),
        )

    def ctx(self, user: str) -> SecurityContext:
        from fieldsync.security.context import load_context

        return load_context(self.platform.store, self.users[user])

    # -- the oracle ------------------------------------------------------------------------

    def _custom(self, ctx: SecurityContext, item: Any, row: dict[str, Any]) -> bool:
        """A custom filter evaluated in Python on one row (the SQL compiler is not involved)."""
        from fieldsync.query.bind import bind
        from fieldsync.query.evaluate import matches
        from fieldsync.query.fetchxml import parse_fetchxml
        from fieldsync.security.context import user_binding

        store = self.platform.store
        query = parse_fetchxml(item.custom_filter, store.schema)
        if query.filter is None:
            return True
        with store.read() as conn:
            user = user_binding(store, conn, ctx)
        node = bind(
            query.filter,
            store.schema.table(item.table),
            user=user,
            now=dt.datetime.now(dt.UTC),
            tables=store.schema.table,
        )
        return matches(node, row)

    def scope(self, user: str) -> dict[str, dict[str, dict[str, Any]]]:
        """Each profile table's rows in scope for ``user``, computed from scratch with plain
        queries: the user's readable rows, the download filter, and the relationships as a
        fixpoint over the related rows."""
        from fieldsync.client.replica import encode

        ctx = self.ctx(user)
        records = self.platform.records
        readable: dict[str, dict[uuid.UUID, dict[str, Any]]] = {}
        for item in self.profile.items:
            t = self.platform.store.schema.table(item.table)
            rows = records.retrieve_multiple(item.table, caller=ctx) if _reads(ctx, t) else []
            readable[item.table] = {r[t.primary_id]: r for r in rows}
        scope: dict[str, set[uuid.UUID]] = {}
        for item in self.profile.items:
            rows = readable[item.table]
            if item.distribution is Distribution.ALL:
                scope[item.table] = set(rows)
            elif item.distribution is Distribution.OTHER:
                scope[item.table] = {
                    k
                    for k, r in rows.items()
                    if (item.owned_by_me and _owner(r) == ctx.user_id)
                    or (item.owned_by_my_teams and _owner(r) in ctx.teams)
                    or (
                        item.owned_by_my_business_unit
                        and r.get("owningbusinessunit") == ctx.business_unit_id
                    )
                }
            elif item.distribution is Distribution.CUSTOM and item.custom_filter:
                scope[item.table] = {
                    k for k, r in rows.items() if self._custom(ctx, item, _flatten(r))
                }
            else:
                scope[item.table] = set()
        changed = True
        schema = self.platform.store.schema
        while changed:
            changed = False
            for item in self.profile.items:
                for ref in item.relationships:
                    rel = schema.relationships[ref.relationship]
                    mine, other = readable[item.table], readable[ref.related_table]
                    if rel.referencing_table == item.table:
                        col = rel.referencing_column
                        new = {
                            k
                            for k, r in mine.items()
                            if _id(r.get(col)) in scope[ref.related_table]
                        }
                    else:
                        col = rel.referencing_column
                        pointed = {
                            _id(other[k].get(col)) for k in scope[ref.related_table] if k in other
                        }
                        new = {k for k in mine if k in pointed}
                    if not new <= scope[item.table]:
                        scope[item.table] |= new
                        changed = True
        out: dict[str, dict[str, dict[str, Any]]] = {}
        plan = self.sync.plan(self.profile)
        for item in self.profile.items:
            t = schema.table(item.table)
            columns = plan.tables[item.table].columns
            raw = self.platform.records.retrieve_multiple(item.table, columns=None)
            by_id = {r[t.primary_id]: r for r in raw}
            table_rows: dict[str, dict[str, Any]] = {}
            for k in scope[item.table]:
                full = _flatten(by_id[k])
                table_rows[str(k)] = {c: encode(full.get(c)) for c in columns}
            out[item.table] = table_rows
        return out


def replica(device: Device) -> dict[str, dict[str, dict[str, Any]]]:
    """Every profile table of a device's replica, as the oracle shapes it."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    handshake = device.handshake_data
    for name in handshake["order"]:
        t, _sql = device.replica.table(name)
        columns = handshake["columns"][name]
        rows = device.query(name)
        out[name] = {r[t.primary_id]: {c: r.get(c) for c in columns} for r in rows}
    return out


def _reads(ctx: SecurityContext, table: Any) -> bool:
    from fieldsync.security.model import Privilege
    from fieldsync.security.predicate import has_privilege

    return has_privilege(ctx, table, Privilege.READ)


def _owner(row: dict[str, Any]) -> Any:
    owner = row.get("ownerid")
    return getattr(owner, "id", owner)


def _id(value: Any) -> Any:
    return getattr(value, "id", value)


def _flatten(row: dict[str, Any]) -> dict[str, Any]:
    """Records return polymorphic lookups as references; the wire sends id and table."""
    out = dict(row)
    for key, value in row.items():
        if hasattr(value, "table") and hasattr(value, "id"):
            out[key] = value.id
            out[f"{key}type"] = value.table
    return out


@contextlib.contextmanager
def serving(world: World) -> Iterator[str]:
    """The world's server over real HTTP on a loopback port, in a thread; yields its URL."""
    import socket
    import time

    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(world.app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
