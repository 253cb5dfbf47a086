"""The sync service: handshake, download, upload and sync errors for one signed-in user.

Every call starts from the caller's security context and the app they name; the app's
published offline profile (``fieldsync.offline``) decides the tables, and the scope plan of that
profile version decides the rows. Nothing about a device is kept in memory between calls:
download state travels in signed cursors, upload state is the applied-changes record, and the
device registry (``fs_device``) is bookkeeping for admins.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson
import sqlalchemy as sa

from fieldsync import __version__
from fieldsync.errors import BadRequest, Forbidden, NotFound
from fieldsync.offline.access import offline_access
from fieldsync.offline.apps import app_views
from fieldsync.offline.profiles import published_profile
from fieldsync.offline.snapshot import OfflineAccess, PublishedProfile
from fieldsync.records.service import Records
from fieldsync.security.model import SecurityContext
from fieldsync.store.catalog import fs_device, fs_meta, fs_sync_applied
from fieldsync.store.store import utcnow
from fieldsync.sync.devices import caller_device
from fieldsync.sync.download import Downloader, TablePage
from fieldsync.sync.explain import Explainer
from fieldsync.sync.protocol import (
    PROTOCOL_VERSION,
    ChangeAnswer,
    DownloadAnswer,
    HandshakeAnswer,
    UploadAnswer,
    ViewInfo,
)
from fieldsync.sync.scope import ScopePlan, build_plan
from fieldsync.sync.upload import MAX_BATCH, SERVER_WINS_KEY, ClientChange, Uploader
from fieldsync.types import EntityRef

MAX_PAGE = 5000
DEFAULT_PAGE = 1000
_DEVICE_ID = re.compile(r"^[A-Za-z0-9_-]{8,64}$")

AccessResolver = Callable[[sa.Connection, SecurityContext, str], OfflineAccess]


def fingerprint(ctx: SecurityContext) -> str:
    """A short hash of everything the user's access depends on."""
    parts = {
        "user": str(ctx.user_id),
        "unit": str(ctx.business_unit_id),
        "teams": sorted(map(str, ctx.teams)),
        "owner_teams": sorted(map(str, ctx.owner_teams)),
        "grants": sorted(
            (t, int(p), sorted(repr(g) for g in grants)) for (t, p), grants in ctx.grants.items()
        ),
        "tree": sorted((str(k), sorted(map(str, v))) for k, v in ctx.unit_tree.items()),
        "reports": [sorted(map(str, level)) for level in ctx.reports],
        "hierarchy": repr(ctx.hierarchy),
        "shared": sorted(ctx.shared_tables),
        "language": ctx.language,
        "admin": ctx.administrator,
    }
    return hashlib.sha256(orjson.dumps(parts)).hexdigest()[:24]


_FINGERPRINTS: OrderedDict[int, tuple[SecurityContext, str]] = OrderedDict()
_FINGERPRINTS_LOCK = threading.Lock()


def cached_fingerprint(ctx: SecurityContext) -> str:
    """:func:`fingerprint`, computed once per context object (contexts are immutable and
    the context cache hands the same object to every request until something changes)."""
    key = id(ctx)
    with _FINGERPRINTS_LOCK:
        found = _FINGERPRINTS.get(key)
        if found is not None and found[0] is ctx:
            return found[1]
    value = fingerprint(ctx)
    with _FINGERPRINTS_LOCK:
        _FINGERPRINTS[key] = (ctx, value)  # holding ctx keeps its id from being reused
        _FINGERPRINTS.move_to_end(key)
        while len(_FINGERPRINTS) > 4096:
            _FINGERPRINTS.popitem(last=False)
    return value


def _default_access(store: Any) -> AccessResolver:
    def resolve(conn: sa.Connection, ctx: SecurityContext, app: str) -> OfflineAccess:
        return offline_access(store, conn, ctx, app)

    return resolve


class SyncService:
    def __init__(self, records: Records, *, access: AccessResolver | None = None) -> None:
        self.records = records
        self.store = records.store
        self.access = access or _default_access(self.store)
        self._plans: OrderedDict[tuple[Any, ...], ScopePlan] = OrderedDict()
        self._lock = threading.Lock()
        self._secret: bytes | None = None

    # -- helpers --------------------------------------------------------------------------

    @property
    def secret(self) -> bytes:
        if self._secret is None:
            value = self.store.meta("token_secret") or ""
            self._secret = hashlib.sha256(b"sync-cursor:" + value.encode()).digest()
        return self._secret

    def plan(self, profile: PublishedProfile) -> ScopePlan:
        schema = self.store.schema
        content = hashlib.sha256(orjson.dumps(profile.to_json())).hexdigest()
        key = (profile.profile_id, profile.version, content, id(schema))
        with self._lock:
            found = self._plans.get(key)
            if found is not None:
                self._plans.move_to_end(key)
                return found
        built = build_plan(profile, schema)
        with self._lock:
            self._plans[key] = built
            while len(self._plans) > 64:
                self._plans.popitem(last=False)
        return built

    def earlier_plan(
        self, conn: sa.Connection, profile: PublishedProfile, version: int
    ) -> ScopePlan | None:
        """The plan of an earlier published version of ``profile``: from the published
        snapshots, or from this process's plans (profiles not kept in the database)."""
        stored = published_profile(conn, profile.profile_id, version)
        if stored is not None:
            return self.plan(stored)
        schema = id(self.store.schema)
        with self._lock:
            for (pid, v, _, sid), found in reversed(self._plans.items()):
                if pid == profile.profile_id and v == version and sid == schema:
                    return found
        return None

    @staticmethod
    def checked_device(device: object) -> str:
        """A device id as a request gave it, checked (400 otherwise)."""
        if not isinstance(device, str) or not _DEVICE_ID.match(device):
            raise BadRequest("'device' must be 8 to 64 letters, digits, '-' or '_'")
        return device

    @staticmethod
    def checked_app(app: object) -> str:
        """An app's id or unique name as a request gave it, checked (400 otherwise)."""
        if not isinstance(app, str) or not app or len(app) > 128:
            raise BadRequest("'app' must name an app (its id or unique name)")
        return app

    def server_wins(self, conn: sa.Connection) -> frozenset[str]:
        raw = conn.execute(
            sa.select(fs_meta.c.value).where(fs_meta.c.key == SERVER_WINS_KEY)
        ).scalar()
        return frozenset(orjson.loads(raw)) if raw else frozenset()

    def set_server_wins(self, tables: Sequence[str]) -> None:
        """Tables where an offline change to a column the server changed since is rejected
        (a conflict sync error) instead of overwriting it."""
        for name in tables:
            self.store.schema.table(name)
        value = orjson.dumps(sorted(set(tables))).decode()

        def work(conn: sa.Connection) -> None:
            done = conn.execute(
                fs_meta.update().where(fs_meta.c.key == SERVER_WINS_KEY).values(value=value)
            )
            if done.rowcount == 0:
                conn.execute(fs_meta.insert().values(key=SERVER_WINS_KEY, value=value))

        self.store.transact(work)

    # -- the protocol ---------------------------------------------------------------------

    def handshake(
        self,
        ctx: SecurityContext,
        *,
        device: object,
        app: object,
        sdk: object = None,
        pending: object = None,
    ) -> HandshakeAnswer:
        device_id, app_name = self.checked_device(device), self.checked_app(app)
        if pending is not None and (
            isinstance(pending, bool) or not isinstance(pending, int) or pending < 0
        ):
            raise BadRequest("'pending' is the number of changes in the device's outbox")

        def work(conn: sa.Connection) -> tuple[Any, Any, Any, Any]:
            caller_device(
                conn, ctx, device_id, audit=self.store.audit
            )  # another user's device: refused, nothing changes
            access = self.access(conn, ctx, app_name)
            plan = self.plan(access.profile)
            self._register(conn, ctx, device_id, app_name, access, sdk, pending)
            fullname = conn.execute(
                sa.select(self.store.sql_table("systemuser").c.fullname).where(
                    self.store.sql_table("systemuser").c.systemuserid == ctx.user_id
                )
            ).scalar()
            views = self._views(conn, ctx, access, plan)
            return access, plan, fullname, views

        access, plan, fullname, views = self.store.transact(work)
        schema = self.store.schema
        tables = [schema.table(name).to_json() for name in plan.order]
        return {
            "protocol": PROTOCOL_VERSION,
            "server": __version__,
            "user": {
                "id": str(ctx.user_id),
                "name": ctx.username,
                "fullname": fullname,
                "business_unit": str(ctx.business_unit_id),
                "teams": sorted(map(str, ctx.teams)),
                "language": ctx.language,
            },
            "app": access.app.to_json(),
            "profile": access.profile.to_json(),
            "tables": tables,
            "columns": {name: list(plan.tables[name].columns) for name in plan.order},
            "order": list(plan.order),
            "views": views,
            "server_time": utcnow().isoformat(),
        }

    def _views(
        self, conn: sa.Connection, ctx: SecurityContext, access: OfflineAccess, plan: ScopePlan
    ) -> list[ViewInfo]:
        """The app's views of the profile's tables, which the device runs on its replica."""
        try:
            rows = app_views(self.records, access.app.app_id, caller=ctx, conn=conn)
        except NotFound:
            return []
        return [
            {"name": v["name"], "table": v["returnedtypecode"], "fetchxml": v["fetchxml"]}
            for v in rows
            if v.get("returnedtypecode") in plan.tables and v.get("fetchxml")
        ]

    def _register(
        self,
        conn: sa.Connection,
        ctx: SecurityContext,
        device: str,
        app: str,
        access: OfflineAccess,
        sdk: object,
        pending: int | None = None,
    ) -> None:
        now = utcnow()
        values: dict[str, Any] = {
            "userid": ctx.user_id,
            "app": app,
            "profileid": access.profile.profile_id,
            "profileversion": access.profile.version,
            "sdkversion": str(sdk)[:32] if sdk is not None else None,
            "lastsyncon": now,
        }
        if pending is not None:
            values["pendingchanges"] = pending
        if caller_device(conn, ctx, device, audit=self.store.audit) is not None:
            conn.execute(
                fs_device.update()
                .where(fs_device.c.deviceid == device, fs_device.c.userid == ctx.user_id)
                .values(**values)
            )
            return
        # a new device id is the caller's from now on; when another user's first handshake
        # with the same id commits first, the insert fails and that user's ownership stands
        savepoint = conn.begin_nested()
        try:
            conn.execute(fs_device.insert().values(deviceid=device, registeredon=now, **values))
        except sa.exc.IntegrityError:
            savepoint.rollback()
            if caller_device(conn, ctx, device, audit=self.store.audit) is None:
                raise
            conn.execute(
                fs_device.update()
                .where(fs_device.c.deviceid == device, fs_device.c.userid == ctx.user_id)
                .values(**values)
            )
        else:
            savepoint.commit()

    def owned_device(self, conn: sa.Connection, ctx: SecurityContext, device: str) -> str:
        """The caller's registration of the device (its stamp), through
        :func:`fieldsync.sync.devices.caller_device`; refused when the caller has not
        registered it (run the handshake first) or another user has."""
        found = caller_device(conn, ctx, device, audit=self.store.audit)
        if found is None:
            raise Forbidden("this device is not registered for you: run the handshake first")
        return found.stamp

    def download(
        self,
        ctx: SecurityContext,
        *,
        device: object,
        app: object,
        cursors: object,
        limit: object = DEFAULT_PAGE,
        now: dt.datetime | None = None,
        lag: Callable[[int], None] | None = None,
    ) -> DownloadAnswer:
        """One page per table named in ``cursors``. ``lag``, when given, is told how many
        versions behind the newest change the device was (delta pages only)."""
        device_id, app_name = self.checked_device(device), self.checked_app(app)
        if not isinstance(cursors, Mapping):
            raise BadRequest("'cursors' maps each table to download to its cursor (or null)")
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
            raise BadRequest(f"'limit' is a page size from 1 to {MAX_PAGE}")
        with self.store.read() as conn:
            registration = self.owned_device(conn, ctx, device_id)
            access = self.access(conn, ctx, app_name)
            plan = self.plan(access.profile)
            for table, token in cursors.items():
                plan.plan(str(table))
                if token is not None and not isinstance(token, str):
                    raise BadRequest(f"the cursor of {table!r} must be a string or null")
            dl = Downloader(
                self.records,
                plan,
                ctx,
                device=device_id,
                fingerprint=cached_fingerprint(ctx),
                secret=self.secret,
                now=now,
                registration=registration,
                earlier=lambda version: self.earlier_plan(conn, access.profile, version),
            )
            pages: list[TablePage] = []
            budget = limit
            skipped = False
            for table in plan.order:
                if table not in cursors:
                    continue
                if budget <= 0:
                    skipped = True
                    continue
                page = dl.page(conn, table, cursors[table], budget)
                budget -= len(page.upserts) + len(page.removes)
                pages.append(page)
            behind = [p.after for p in pages if p.after is not None]
            if lag is not None and behind:
                lag(max(0, self.store.current_version(conn) - min(behind)))
        return {
            "profile": {"id": str(access.profile.profile_id), "version": access.profile.version},
            "pages": [p.to_json() for p in pages],
            "more": skipped or any(p.more for p in pages),
        }

    def upload(
        self,
        ctx: SecurityContext,
        *,
        device: object,
        app: object,
        changes: object,
        acknowledged: object = None,
    ) -> UploadAnswer:
        """Apply a batch of changes. ``acknowledged`` lists client change ids whose answers
        the device has stored: their records are no longer needed for retries."""
        device_id, app_name = self.checked_device(device), self.checked_app(app)
        if not isinstance(changes, list):
            raise BadRequest("'changes' is a list of changes")
        acks = _change_ids(acknowledged)
        if len(changes) > MAX_BATCH:
            raise BadRequest(f"send at most {MAX_BATCH} changes per batch")
        parsed = [ClientChange.parse(c, i) for i, c in enumerate(changes)]
        ids = [c.change_id for c in parsed]
        if len(set(ids)) != len(ids):
            raise BadRequest("two changes in the batch share a client change id")

        def work(conn: sa.Connection) -> list[ChangeAnswer]:
            self.owned_device(conn, ctx, device_id)
            access = self.access(conn, ctx, app_name)
            plan = self.plan(access.profile)
            uploader = Uploader(
                self.records,
                plan,
                ctx,
                device=device_id,
                server_wins=self.server_wins(conn),
            )
            results = uploader.apply(conn, parsed)
            for start in range(0, len(acks), 500):
                conn.execute(
                    fs_sync_applied.delete().where(
                        fs_sync_applied.c.userid == ctx.user_id,
                        fs_sync_applied.c.deviceid == device_id,
                        fs_sync_applied.c.changeid.in_(acks[start : start + 500]),
                    )
                )
            conn.execute(
                fs_device.update()
                .where(fs_device.c.deviceid == device_id, fs_device.c.userid == ctx.user_id)
                .values(
                    lastsyncon=utcnow(),
                    pendingchanges=sa.case(
                        (
                            fs_device.c.pendingchanges > len(parsed),
                            fs_device.c.pendingchanges - len(parsed),
                        ),
                        else_=0,
                    ),
                )
            )
            return results

        return {"results": self.store.transact(work)}

    def explain(
        self,
        ctx: SecurityContext,
        *,
        app: object,
        table: object,
        record_id: object,
        user: SecurityContext | None = None,
        now: dt.datetime | None = None,
    ) -> dict[str, Any]:
        """Why a row is (or is not) in the scope of ``user`` (default: the caller) for an
        app's published profile, step by step. Only administrators ask about another user,
        and only they hear about a row the user may not read: to anyone else such a row,
        like a missing one, is not found."""
        app_name = self.checked_app(app)
        if not isinstance(table, str) or not table:
            raise BadRequest("'table' names a table of the app's offline profile")
        try:
            row_id = uuid.UUID(str(record_id))
        except ValueError:
            raise BadRequest(f"'id' must be a GUID, not {record_id!r}") from None
        if user is not None and user.user_id != ctx.user_id and not ctx.unrestricted:
            raise Forbidden("only administrators explain another user's device")
        target = user or ctx
        with self.store.read() as conn:
            access = self.access(conn, target, app_name)
            plan = self.plan(access.profile)
            plan.plan(table)
            explainer = Explainer(self.records, plan, target, conn, now=now)
            sql = self.store.sql_table(table)
            pk = self.store.schema.table(table).primary_id
            exists = conn.execute(sa.select(sql.c[pk]).where(sql.c[pk] == row_id)).first()
            hidden = not ctx.unrestricted and (
                exists is None or not explainer.readable(table, row_id)
            )
            if exists is None or hidden:
                raise NotFound(f"no {table} row {row_id} that you can read")
            answer = explainer.explain(table, row_id)
        return {
            "app": app_name,
            "user": str(target.user_id),
            "profile": {"name": access.profile.name, "version": access.profile.version},
            **answer.to_json(),
        }

    def errors(
        self, ctx: SecurityContext, *, since: dt.datetime | None = None, limit: int = 500
    ) -> list[dict[str, Any]]:
        """The user's sync errors, newest first (active ones and resolved ones)."""
        if not 1 <= limit <= MAX_PAGE:
            raise BadRequest(f"'limit' is from 1 to {MAX_PAGE}")
        rows = self.records.retrieve_multiple(
            "syncerror", where={"ownerid": EntityRef("systemuser", ctx.user_id)}, caller=ctx
        )
        out = [
            {k: _jsonable(v) for k, v in r.items()}
            for r in rows
            if since is None or r["errortime"] >= since
        ]
        out.sort(key=lambda r: r["errortime"], reverse=True)
        return out[:limit]


def _change_ids(value: object) -> list[uuid.UUID]:
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > 10_000:
        raise BadRequest("'acknowledged' is a list of at most 10000 client change ids")
    try:
        return [uuid.UUID(str(v)) for v in value]
    except ValueError:
        raise BadRequest("'acknowledged' holds client change ids (GUIDs)") from None


def _jsonable(value: Any) -> Any:
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if hasattr(value, "table") and hasattr(value, "id"):
        return str(value.id)
    return value
