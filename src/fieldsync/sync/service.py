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
from fieldsync.errors import BadRequest, FieldsyncError, Forbidden, NotFound
from fieldsync.offline.access import offline_access
from fieldsync.offline.apps import app_views
from fieldsync.offline.profiles import published_profile
from fieldsync.offline.snapshot import OfflineAccess, PublishedProfile
from fieldsync.records.service import Records
from fieldsync.security.context import load_context, user_binding
from fieldsync.security.model import SecurityContext
from fieldsync.store.catalog import (
    fs_change,
    fs_device,
    fs_device_receipt,
    fs_meta,
    fs_sync_applied,
)
from fieldsync.store.changes import WATERMARK
from fieldsync.store.store import utcnow
from fieldsync.sync import inventory as inv
from fieldsync.sync.devices import (
    PURGED_EVENT,
    WIPED_EVENT,
    DeviceInfo,
    caller_device,
    list_devices,
    wipe_pending,
)
from fieldsync.sync.download import Downloader, TablePage
from fieldsync.sync.explain import Explainer
from fieldsync.sync.protocol import (
    PROTOCOL_VERSION,
    ChangeAnswer,
    DownloadAnswer,
    HandshakeAnswer,
    HandshakeResult,
    HandshakeUnchanged,
    TableLayout,
    UploadAnswer,
    ViewInfo,
)
from fieldsync.sync.scope import SHARE_TABLE, ScopePlan, build_plan
from fieldsync.sync.upload import MAX_BATCH, SERVER_WINS_KEY, ClientChange, Uploader
from fieldsync.sync.views import compile_views, replica_layout
from fieldsync.types import EntityRef

MAX_PAGE = 5000
DEFAULT_PAGE = 1000
_DEVICE_ID = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
_ETAG = re.compile(r"^[0-9a-f]{16,64}$")
REGISTRATION_REFRESH = dt.timedelta(seconds=60)
"""How stale the registration's ``lastsyncon`` may grow before a handshake that changes
nothing else writes it again (a handshake that changes anything writes at once)."""

VIEW_TABLES = ("appmodule", "appmoduleview", "savedquery", SHARE_TABLE)
"""What the app's views are read from: an app, its list of views, the views and their shares."""


def _views_stamp_statement() -> sa.Select[Any]:
    newest = [
        sa.select(sa.func.max(fs_change.c.version))
        .where(fs_change.c.tablename == name)
        .scalar_subquery()
        for name in VIEW_TABLES
    ]
    pruned = sa.select(fs_meta.c.value).where(fs_meta.c.key == WATERMARK).scalar_subquery()
    return sa.select(*newest, pruned)


VIEWS_STAMP = _views_stamp_statement()  # built once, as the context cache's stamp


def handshake_etag(answer: HandshakeAnswer) -> str:
    """The hash of a handshake answer as the device adopts it (everything but the clock)."""
    body = {k: v for k, v in answer.items() if k not in ("server_time", "etag")}
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]


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
        self._plan_of: OrderedDict[int, tuple[PublishedProfile, Any, ScopePlan]] = OrderedDict()
        # the handshake's costly parts, kept while what they are made of stays the same
        self._layouts: OrderedDict[tuple[Any, ...], tuple[Any, dict[str, TableLayout]]] = (
            OrderedDict()
        )
        self._views_cache: OrderedDict[tuple[Any, ...], tuple[Any, ...]] = OrderedDict()
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
        with self._lock:
            # the same snapshot object as a moment ago (published snapshots are kept per id
            # and version): its plan, without hashing the profile again
            seen = self._plan_of.get(id(profile))
            if seen is not None and seen[0] is profile and seen[1] is schema:
                return seen[2]
        content = hashlib.sha256(orjson.dumps(profile.to_json())).hexdigest()
        key = (profile.profile_id, profile.version, content, id(schema))
        with self._lock:
            found = self._plans.get(key)
            if found is not None:
                self._plans.move_to_end(key)
        if found is not None:
            self._remember_plan(profile, schema, found)
            return found
        built = build_plan(profile, schema)
        with self._lock:
            self._plans[key] = built
            while len(self._plans) > 64:
                self._plans.popitem(last=False)
        self._remember_plan(profile, schema, built)
        return built

    def _remember_plan(self, profile: PublishedProfile, schema: Any, plan: ScopePlan) -> None:
        with self._lock:
            # holding the profile and the schema keeps their ids from being reused
            self._plan_of[id(profile)] = (profile, schema, plan)
            self._plan_of.move_to_end(id(profile))
            while len(self._plan_of) > 64:
                self._plan_of.popitem(last=False)

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
        etag: object = None,
    ) -> HandshakeResult:
        """Register the device and answer what it syncs. ``etag``: the ``etag`` of the
        handshake answer the device holds; when the answer of now has the same one, a short
        answer says so (``unchanged``) instead of repeating it. The answer is built (from
        caches) and hashed on every call, so any change to the user, the app, the profile,
        the tables or the views gives another etag."""
        device_id, app_name = self.checked_device(device), self.checked_app(app)
        if pending is not None and (
            isinstance(pending, bool) or not isinstance(pending, int) or pending < 0
        ):
            raise BadRequest("'pending' is the number of changes in the device's outbox")
        if etag is not None and (not isinstance(etag, str) or not _ETAG.match(etag)):
            raise BadRequest("'etag' is the etag of the handshake answer the device holds")

        with self.store.read() as conn:
            # another user's device: refused, nothing changes
            found = caller_device(conn, ctx, device_id, audit=self.store.audit)
            access = self.access(conn, ctx, app_name)
            plan = self.plan(access.profile)
            values = _registration(ctx, app_name, access, sdk, pending)
            current = found is not None and self._registration_current(conn, ctx, device_id, values)
            fullname = conn.execute(
                sa.select(self.store.sql_table("systemuser").c.fullname).where(
                    self.store.sql_table("systemuser").c.systemuserid == ctx.user_id
                )
            ).scalar()
            views = self.views(conn, ctx, access, plan)
        if not current:
            # a sync that changes nothing writes nothing; a registration writes only the
            # device's own row (a first one that races another user's is settled by the
            # insert), so it runs beside other writers
            self.store.transact(
                lambda conn: self._register(conn, ctx, device_id, values), concurrent=True
            )
        schema = self.store.schema
        tables = [schema.table(name).to_json() for name in plan.order]
        answer: HandshakeAnswer = {
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
            "sqlite": self.layout(list(plan.order)),
            "server_time": utcnow().isoformat(),
        }
        tag = handshake_etag(answer)
        if etag == tag:
            unchanged: HandshakeUnchanged = {
                "protocol": PROTOCOL_VERSION,
                "server": __version__,
                "unchanged": True,
                "etag": tag,
                "server_time": answer["server_time"],
            }
            return unchanged
        answer["etag"] = tag
        return answer

    def layout(self, tables: list[str]) -> dict[str, TableLayout]:
        """:func:`replica_layout`, made once per schema and table list."""
        schema = self.store.schema
        key = (id(schema), tuple(tables))
        with self._lock:
            found = self._layouts.get(key)
            if found is not None and found[0] is schema:
                return found[1]
        built = replica_layout(schema, tables)
        with self._lock:
            self._layouts[key] = (schema, built)  # holding the schema keeps its id unique
            while len(self._layouts) > 64:
                self._layouts.popitem(last=False)
        return built

    def views(
        self, conn: sa.Connection, ctx: SecurityContext, access: OfflineAccess, plan: ScopePlan
    ) -> list[ViewInfo]:
        """The app's views compiled for the device, kept per context, plan and app while the
        change log shows no change to the views, the app's list of them or their shares (the
        context cache hands out one context object until the user's access changes)."""
        clock = self.store.clock
        known = clock.known  # a horizon computed before the stamp is read
        stamp = tuple(conn.execute(VIEWS_STAMP).one())
        newest = max((v for v in stamp[:-1] if v is not None), default=0)
        # kept only when nothing can still commit below the stamp (on PostgreSQL writers
        # commit out of version order; see ContextCache): otherwise compiled, used, not kept
        final = not clock.sequenced or newest <= known
        if not final:
            self.store.current_version(conn)  # the horizon, for the next requests
        key = (id(ctx), id(plan), access.app.app_id, stamp)
        with self._lock:
            found = self._views_cache.get(key)
            if found is not None and found[0] is ctx and found[1] is plan:
                self._views_cache.move_to_end(key)
                compiled: list[ViewInfo] = found[2]
                return compiled
        compiled = compile_views(
            self._views(conn, ctx, access, plan),
            self.store.schema,
            list(plan.order),
            user_binding(self.store, conn, ctx),
        )
        if not final:
            return compiled
        with self._lock:
            self._views_cache[key] = (ctx, plan, compiled)  # held: their ids stay unique
            while len(self._views_cache) > 1024:
                self._views_cache.popitem(last=False)
        return compiled

    def _views(
        self, conn: sa.Connection, ctx: SecurityContext, access: OfflineAccess, plan: ScopePlan
    ) -> list[ViewInfo]:
        """The app's views of the profile's tables, which the device runs on its replica."""
        try:
            rows = app_views(self.records, access.app.app_id, caller=ctx, conn=conn)
        except NotFound:
            return []
        return [
            {
                "id": str(v["savedqueryid"]),
                "name": v["name"],
                "table": v["returnedtypecode"],
                "fetchxml": v["fetchxml"],
                "default": bool(v.get("isdefault")),
            }
            for v in rows
            if v.get("returnedtypecode") in plan.tables and v.get("fetchxml")
        ]

    @staticmethod
    def _registration_current(
        conn: sa.Connection, ctx: SecurityContext, device: str, values: Mapping[str, Any]
    ) -> bool:
        """The caller's registration of the device already says what ``values`` say, it
        synced within :data:`REGISTRATION_REFRESH`, and after its last receipt (a device that
        synced since its receipt must show so: administrators list such devices as still
        holding data)."""
        held = conn.execute(
            sa.select(
                fs_device.c.app,
                fs_device.c.profileid,
                fs_device.c.profileversion,
                fs_device.c.sdkversion,
                fs_device.c.pendingchanges,
                fs_device.c.lastsyncon,
                fs_device.c.receipton,
            ).where(fs_device.c.deviceid == device, fs_device.c.userid == ctx.user_id)
        ).first()
        if held is None or any(
            getattr(held, k) != v for k, v in values.items() if k not in ("userid", "lastsyncon")
        ):
            return False
        now, last = values["lastsyncon"], held.lastsyncon
        if last is None or last < now - REGISTRATION_REFRESH or last > now:
            return False
        return held.receipton is None or held.receipton < last

    def _register(
        self, conn: sa.Connection, ctx: SecurityContext, device: str, values: Mapping[str, Any]
    ) -> None:
        """Register the device to the caller, or bring its registration up to date."""
        if caller_device(conn, ctx, device, audit=self.store.audit) is not None:
            conn.execute(
                fs_device.update()
                .where(fs_device.c.deviceid == device, fs_device.c.userid == ctx.user_id)
                .values(**values)
            )
            return
        # a new device id is the caller's from now on; when another user's first handshake
        # with the same id commits first, the insert fails and that user's ownership stands
        now = values["lastsyncon"]
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
                heals=inv.heals(conn, device_id),
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
                # a page that ended a phase (a snapshot's last page, a diff's half) goes on
                # with the next phase in the same answer, as one page: a republish's diff
                # and the delta after it cost one round trip, not three
                pk = page.columns.index(plan.plan(table).table.primary_id)
                while page.follows and budget > 0:
                    later = dl.page(conn, table, page.cursor, budget)
                    if later.rescope:
                        break  # a re-scope starts a page of its own (the next request)
                    budget -= len(later.upserts) + len(later.removes)
                    page = page.merged(later, pk)
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
            # one upload of a device at a time (a retry while the first still runs waits,
            # then answers from fs_sync_applied): uploads of other devices run beside it
            conn.execute(
                sa.select(fs_device.c.deviceid)
                .where(fs_device.c.deviceid == device_id, fs_device.c.userid == ctx.user_id)
                .with_for_update()
            )
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

        return {"results": self.store.transact(work, concurrent=True)}

    def backfill(
        self,
        ctx: SecurityContext,
        *,
        device: object,
        app: object,
        table: object,
        columns: object,
        after: object = None,
        limit: object = DEFAULT_PAGE,
    ) -> dict[str, Any]:
        """A page of some travelling columns of the rows in a table's scope (ids and those
        columns only), for a device whose table gained them: a column added to the table or
        to the profile's selection reaches it without the rows being downloaded again."""
        device_id, app_name = self.checked_device(device), self.checked_app(app)
        if not isinstance(table, str) or not table:
            raise BadRequest("'table' names a table of the app's offline profile")
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
            raise BadRequest(f"'limit' is a page size from 1 to {MAX_PAGE}")
        if after is not None:
            try:
                after = str(uuid.UUID(str(after)))
            except ValueError:
                raise BadRequest("'after' is the last id of the previous page (a GUID)") from None
        with self.store.read() as conn:
            registration = self.owned_device(conn, ctx, device_id)
            access = self.access(conn, ctx, app_name)
            plan = self.plan(access.profile)
            tp = plan.plan(table)
            if (
                not isinstance(columns, list)
                or not columns
                or len(set(columns)) != len(columns)
                or any(c not in tp.columns or c == tp.table.primary_id for c in columns)
            ):
                raise BadRequest(
                    f"'columns' lists travelling columns of {table!r} (not its id), once each"
                )
            dl = Downloader(
                self.records,
                plan,
                ctx,
                device=device_id,
                fingerprint=fingerprint(ctx),
                secret=self.secret,
                registration=registration,
            )
            return dl.backfill(conn, table, [str(c) for c in columns], after, limit)

    def inventory(
        self,
        ctx: SecurityContext,
        *,
        device: object,
        app: object,
        tables: object,
        now: dt.datetime | None = None,
    ) -> dict[str, Any]:
        """Compare what the device says it holds of each table with the table's scope
        (:mod:`fieldsync.sync.inventory`); record the verdicts, and heal a mismatched table
        with a targeted re-scope (listed in ``rescope``: download it again)."""
        device_id, app_name = self.checked_device(device), self.checked_app(app)
        reports = inv.parse_reports(tables)
        with self.store.read() as conn:
            registration = self.owned_device(conn, ctx, device_id)
            access = self.access(conn, ctx, app_name)
            plan = self.plan(access.profile)
            for name in reports:
                plan.plan(name)
            dl = Downloader(
                self.records,
                plan,
                ctx,
                device=device_id,
                fingerprint=fingerprint(ctx),
                secret=self.secret,
                now=now,
                registration=registration,
                heals=inv.heals(conn, device_id),
            )
            known = inv.verified(conn, device_id)
            cached = 0  # tables answered from an earlier verification
            verdicts: list[inv.Verdict] = []
            for name, report in reports.items():
                key = inv.cursor_key(report.cursor)
                if plan.plan(name).timed:
                    verdicts.append(inv.Verdict(name, "clock", report.rows, report.checksum))
                    continue
                if known.get(name) == (report.rows, report.checksum, key):
                    cached += 1
                    # verified at this very cursor before: the device holds the same rows
                    # (a cursor changes with every change that reaches the table)
                    verdicts.append(
                        inv.Verdict(
                            name,
                            "match",
                            report.rows,
                            report.checksum,
                            report.rows,
                            report.checksum,
                            key,
                        )
                    )
                    continue
                if dl.settled(conn, name, report.cursor) is None:
                    verdicts.append(inv.Verdict(name, "behind", report.rows, report.checksum))
                    continue
                rows, check = dl.inventory(conn, name)
                same = rows == report.rows and check == report.checksum
                verdicts.append(
                    inv.Verdict(
                        name,
                        "match" if same else "mismatch",
                        report.rows,
                        report.checksum,
                        rows,
                        check,
                        key if same else None,
                    )
                )

        def work(conn: sa.Connection) -> None:
            self.owned_device(conn, ctx, device_id)
            inv.record(conn, device_id, ctx.user_id, verdicts)

        if cached < len(verdicts):
            self.store.transact(work)  # nothing new to keep when every table was known
        for v in verdicts:
            if v.status == "mismatch":
                self.store.audit.record(
                    inv.MISMATCH_EVENT,
                    outcome="healed",
                    user=ctx.user_id,
                    username=ctx.username or None,
                    target=f"device {device_id}",
                    detail={
                        "app": app_name,
                        "table": v.table,
                        "rows": v.rows,
                        "expected_rows": v.expected_rows,
                        "checksum": v.checksum,
                        "expected_checksum": v.expected_checksum,
                    },
                )
        return {
            "tables": [v.to_json() for v in verdicts],
            "rescope": [v.table for v in verdicts if v.status == "mismatch"],
        }

    def receipt(
        self,
        ctx: SecurityContext,
        *,
        device: object,
        app: object,
        kind: object,
        tables: object,
        outbox: object = 0,
        files: object = 0,
        reason: object = None,
    ) -> dict[str, Any]:
        """A device acknowledges that it removed data: ``purge`` (its access ended) or
        ``wipe`` (an administrator asked: this closes the request). The counts are the
        device's word, kept as given."""
        device_id, app_name = self.checked_device(device), self.checked_app(app)
        if kind not in ("purge", "wipe"):
            raise BadRequest("'kind' is 'purge' (access ended) or 'wipe' (asked for)")
        counts = _receipt_counts(tables, outbox, files)
        if reason is not None and not isinstance(reason, str):
            raise BadRequest("'reason' is text: why the device removed its data")
        now = utcnow()

        def work(conn: sa.Connection) -> str:
            found = caller_device(conn, ctx, device_id, audit=self.store.audit, wiping=True)
            row = conn.execute(
                sa.select(fs_device.c.wiperequestedon, fs_device.c.wipedon).where(
                    fs_device.c.deviceid == device_id
                )
            ).first()
            pending = row is not None and wipe_pending(row.wiperequestedon, row.wipedon)
            if kind == "wipe" and not pending:
                raise BadRequest("no wipe of this device is pending: send a 'purge' receipt")
            if kind == "purge" and pending:
                raise BadRequest("a wipe of this device is pending: wipe it, then send 'wipe'")
            receipt_id = uuid.uuid4()
            conn.execute(
                fs_device_receipt.insert().values(
                    receiptid=receipt_id,
                    deviceid=device_id,
                    userid=ctx.user_id,
                    app=app_name,
                    kind=kind,
                    counts=counts,
                    reason=None if reason is None else str(reason)[:512],
                    receivedon=now,
                )
            )
            if found is not None:
                values: dict[str, Any] = {"receipton": now}
                if kind == "wipe":
                    values["wipedon"] = now
                conn.execute(
                    fs_device.update()
                    .where(fs_device.c.deviceid == device_id, fs_device.c.userid == ctx.user_id)
                    .values(**values)
                )
            return str(receipt_id)

        receipt_id = self.store.transact(work)
        self.store.audit.record(
            WIPED_EVENT if kind == "wipe" else PURGED_EVENT,
            outcome="done",
            user=ctx.user_id,
            username=ctx.username or None,
            target=f"device {device_id}",
            detail={"app": app_name, **counts},
        )
        return {"receipt": receipt_id, "received_on": now.isoformat()}

    def receipts(self, device: str) -> list[dict[str, Any]]:
        """A device's receipts, newest first (for administrators: the portal and CLI)."""
        t = fs_device_receipt
        with self.store.read() as conn:
            rows = conn.execute(
                sa.select(t).where(t.c.deviceid == device).order_by(t.c.receivedon.desc())
            ).all()
        return [
            {
                "receipt": str(r.receiptid),
                "kind": r.kind,
                "app": r.app,
                "user": str(r.userid),
                "counts": r.counts,
                "reason": r.reason,
                "received_on": r.receivedon.isoformat(),
            }
            for r in rows
        ]

    def stranded(self, caller: SecurityContext) -> list[dict[str, Any]]:
        """Devices that still hold data for a user or app that lost access: the user (or
        their access to the app) is gone and the device synced after its last receipt."""
        if not caller.unrestricted:
            raise Forbidden("only administrators list the devices of other users")
        out: list[dict[str, Any]] = []
        devices: list[DeviceInfo] = list_devices(self.store, caller)
        with self.store.read() as conn:
            for d in devices:
                if d.receipt_on is not None and (
                    d.last_sync_on is None or d.receipt_on >= d.last_sync_on
                ):
                    continue  # removed what it held since it last synced
                try:
                    ctx = load_context(self.store, d.user_id, conn)
                    self.access(conn, ctx, d.app)
                except FieldsyncError as exc:
                    out.append({**d.to_json(), "lost": exc.message})
        return out

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


def _registration(
    ctx: SecurityContext, app: str, access: OfflineAccess, sdk: object, pending: int | None
) -> dict[str, Any]:
    """What a handshake writes into the device's registration."""
    values: dict[str, Any] = {
        "userid": ctx.user_id,
        "app": app,
        "profileid": access.profile.profile_id,
        "profileversion": access.profile.version,
        "sdkversion": str(sdk)[:32] if sdk is not None else None,
        "lastsyncon": utcnow(),
    }
    if pending is not None:
        values["pendingchanges"] = pending
    return values


def _receipt_counts(tables: object, outbox: object, files: object) -> dict[str, Any]:
    def count(value: object, what: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << 63:
            raise BadRequest(f"{what} is a count, 0 or more")
        return value

    if not isinstance(tables, Mapping) or len(tables) > inv.MAX_TABLES:
        raise BadRequest("'tables' maps each table to the rows the device removed from it")
    removed: dict[str, int] = {}
    for name, value in tables.items():
        if not isinstance(name, str) or not 0 < len(name) <= 64:
            raise BadRequest("a receipt names each table (at most 64 characters)")
        removed[name] = count(value, f"the rows removed from {name!r}")
    return {
        "tables": removed,
        "outbox": count(outbox, "'outbox' (changes discarded)"),
        "files": count(files, "'files' (files removed)"),
    }


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
