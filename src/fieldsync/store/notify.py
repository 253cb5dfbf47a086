"""Change notifications: telling every server process, as soon as a write commits, that the
change log grew, and what the new changes touched.

- **PostgreSQL**: a statement trigger on ``fs_change`` calls ``pg_notify`` inside the writing
  transaction, so the notice leaves at commit, in commit order, for every process that
  ``LISTEN``s on the database: one connection per process, whatever the number of devices.
  The channel is named after the schema (two fieldsync databases in one PostgreSQL database
  never hear each other) and the payload maps each table to the highest version written.
- **SQLite** (one process): :meth:`Store.write` calls the store's commit hooks after each
  commit; the listener turns that into a wake-up on its event loop.

A notice only wakes the reader: :func:`read_touches` then reads the change log after the last
version it saw (versions are taken in commit order, so nothing is skipped, and a lost notice
costs at most a poll interval). For each change it returns the owner and business unit the row
had before and has after the change: what decides who may be told about it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import uuid
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from fieldsync.schema.model import Ownership
from fieldsync.store.catalog import fs_change
from fieldsync.store.changes import read_changes, watermark
from fieldsync.store.versions import horizon

if TYPE_CHECKING:
    from fieldsync.store.store import Store

log = logging.getLogger(__name__)

AUDIENCE_COLUMNS = ("ownerid", "owningbusinessunit")
MAX_TOUCHES = 2000  # changes inspected one by one per read; past that, tables only
ALL_TABLES = "*"

TRIGGER_SQL = (
    """
CREATE OR REPLACE FUNCTION fs_change_notify() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    payload text;
BEGIN
    SELECT json_object_agg(tablename, top)::text INTO payload
    FROM (SELECT tablename, max(version) AS top FROM fs_change_new GROUP BY tablename) t;
    IF payload IS NULL THEN
        RETURN NULL;
    END IF;
    IF length(payload) > 7900 THEN
        SELECT json_build_object('*', max(version))::text INTO payload FROM fs_change_new;
    END IF;
    PERFORM pg_notify('fieldsync_' || substr(md5(TG_TABLE_SCHEMA), 1, 16), payload);
    RETURN NULL;
END
$$
""",
    "DROP TRIGGER IF EXISTS fs_change_notify ON fs_change",
    """
CREATE TRIGGER fs_change_notify AFTER INSERT ON fs_change
REFERENCING NEW TABLE AS fs_change_new
FOR EACH STATEMENT EXECUTE FUNCTION fs_change_notify()
""",
)


def channel(schema: str) -> str:
    """The NOTIFY channel of the fieldsync database in ``schema`` (what the trigger computes)."""
    return "fieldsync_" + hashlib.md5(schema.encode()).hexdigest()[:16]


def install_trigger(store: Store, conn: sa.Connection) -> None:
    """The migration that makes every write to the change log notify (PostgreSQL only)."""
    if store.dialect != "postgresql":
        return
    for statement in TRIGGER_SQL:
        conn.execute(sa.text(statement))


# -- what changed -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Touch:
    """A change to a row of ``table``, with the owner and business unit the row had before
    the change and has after it (``images``); ``known`` is false when they could not be told
    (too many changes at once, a pruned log): then everyone watching the table hears of it."""

    table: str
    images: tuple[Mapping[str, Any], ...] = ()
    known: bool = True


@dataclass(frozen=True, slots=True)
class TouchBatch:
    head: int  # the last version read: the next read starts after it
    touches: tuple[Touch, ...]


def head_version(store: Store) -> int:
    """Where a new listener starts: the horizon (every version at or below it is final), so
    a change still in flight with a smaller version is not passed."""
    with store.read() as conn:
        return store.current_version(conn)


def read_touches(store: Store, after: int, *, limit: int = MAX_TOUCHES) -> TouchBatch:
    """What the changes after version ``after`` touched."""
    with store.read() as conn:
        mark = watermark(conn)
        if after < mark:  # pruned under us: nothing can be told precisely
            return _tables_only(conn, mark)
        page = read_changes(conn, after, limit=limit)
        if page.more:
            return _tables_only(conn, after)
        by_table: dict[str, list[Any]] = defaultdict(list)
        for change in page.changes:
            by_table[change.table].append(change)
        touches: list[Touch] = []
        for name, changes in by_table.items():
            current = _current_images(store, conn, name, {c.record_id for c in changes})
            for change in changes:
                images = []
                if change.record_id in current:
                    images.append(current[change.record_id])
                old = _image(change.old or {})
                if old:
                    images.append(old)
                touches.append(Touch(name, tuple(images)))
        return TouchBatch(page.cursor, tuple(touches))


def _tables_only(conn: sa.Connection, after: int) -> TouchBatch:
    top = horizon(conn)  # its own statement, before the read it bounds
    rows = conn.execute(
        sa.select(fs_change.c.tablename, sa.func.max(fs_change.c.version))
        .where(fs_change.c.version > after, fs_change.c.version <= top)
        .group_by(fs_change.c.tablename)
    ).all()
    head = max([after, *(int(r[1]) for r in rows)])
    return TouchBatch(head, tuple(Touch(r[0], known=False) for r in rows))


def _current_images(
    store: Store, conn: sa.Connection, name: str, ids: set[uuid.UUID]
) -> dict[uuid.UUID, dict[str, Any]]:
    schema = store.schema
    if name not in schema.tables:
        return {}
    table = schema.table(name)
    if table.ownership not in (Ownership.USER, Ownership.BUSINESS):
        return {}
    sql = store.sql_table(name)
    columns = [sql.c[c] for c in AUDIENCE_COLUMNS if c in sql.c]
    if not columns:
        return {}
    pk = sql.c[table.primary_id]
    out: dict[uuid.UUID, dict[str, Any]] = {}
    ordered = sorted(ids)
    for start in range(0, len(ordered), 500):
        rows = conn.execute(sa.select(pk, *columns).where(pk.in_(ordered[start : start + 500])))
        for row in rows:
            out[row[0]] = _image(dict(zip((c.name for c in columns), row[1:], strict=True)))
    return out


def _image(values: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in AUDIENCE_COLUMNS:
        value = values.get(name)
        if isinstance(value, Mapping):
            value = value.get("id")
        elif value is not None and not isinstance(value, uuid.UUID) and hasattr(value, "id"):
            value = value.id
        if value is None:
            continue
        try:
            out[name] = value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
        except ValueError:
            continue
    return out


# -- wake-ups -----------------------------------------------------------------------------


class ChangeListener:
    """Wakes its event loop when changes commit: ``LISTEN`` on PostgreSQL (one connection,
    reconnected with backoff), the store's commit hook on SQLite. ``wait`` returns on a
    wake-up or after ``poll`` seconds, whichever comes first (the floor that catches writes
    from other processes on SQLite, and a notice lost while reconnecting)."""

    def __init__(self, store: Store, *, poll: float) -> None:
        self.store = store
        self.poll = poll
        self.wake = asyncio.Event()
        self.listening = asyncio.Event()  # set while the LISTEN connection is up
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        if self.store.dialect == "postgresql":
            self._task = asyncio.create_task(self._listen(), name="fieldsync-listen")
        else:
            self.store.committed.append(self._on_commit)
            self.listening.set()

    def _on_commit(self) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop is shutting down
                loop.call_soon_threadsafe(self.wake.set)

    async def wait(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.wake.wait(), self.poll)
        self.wake.clear()

    async def close(self) -> None:
        if self._on_commit in self.store.committed:
            self.store.committed.remove(self._on_commit)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _listen(self) -> None:
        import psycopg

        url = self.store.engine.url.set(drivername="postgresql")
        conninfo = url.render_as_string(hide_password=False)
        attempt = 0
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(conninfo, autocommit=True)
                try:
                    cur = await conn.execute(
                        "SELECT n.nspname FROM pg_class c JOIN pg_namespace n "
                        "ON n.oid = c.relnamespace WHERE c.oid = 'fs_change'::regclass"
                    )
                    found = await cur.fetchone()
                    assert found is not None
                    name = channel(str(found[0]))
                    await conn.execute(f'LISTEN "{name}"')
                    attempt = 0
                    self.listening.set()
                    self.wake.set()  # catch up on anything committed while not listening
                    async for _notice in conn.notifies():
                        self.wake.set()
                finally:
                    self.listening.clear()
                    await conn.close()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                delay = min(30.0, 0.5 * 2**attempt)
                attempt += 1
                log.warning("change notifications: %s; listening again in %.1fs", exc, delay)
                await asyncio.sleep(delay)
