"""The device's local replica: one SQLite file with the profile's tables, the outbox, the
download cursors and the sync errors.

Every local write changes the replica row and the outbox in one transaction (``synchronous=
FULL``: durable when the call returns). Every download page changes the rows, the cursor and
the re-scope marks of its table in one transaction, so a crash at any instant resumes from
the last page committed. The tables are made from the definitions the handshake sends
(:mod:`fieldsync.client.localdb`); nothing here uses the server's store.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

from fieldsync.client.localdb import (
    Codec,
    Database,
    create_table,
    lookup_indexes,
    quote,
    sql_columns,
)
from fieldsync.errors import TableNotFound
from fieldsync.schema.model import Schema, Table

Connection = sqlite3.Connection
BACKFILL = "backfill"  # state: per table, the columns to fill and how far it got
COLUMN_GONE = "0x80060888"  # the sync error of a pending change to a column that went


def compatible(was: Table, now: Table) -> bool:
    """Whether a table's new definition can be migrated in place: the same primary key and
    every column kept with its type (limits, labels and options may change)."""
    if was.primary_id != now.primary_id:
        return False
    for name, col in was.columns.items():
        other = now.columns.get(name)
        if other is not None and (other.type != col.type or other.polymorphic != col.polymorphic):
            return False
    return True


# the device's own tables (declared as earlier versions of the SDK made them)
INTERNAL = (
    """CREATE TABLE IF NOT EXISTS _fs_state (
        "key" VARCHAR(64) NOT NULL, value TEXT NOT NULL, PRIMARY KEY ("key"))""",
    """CREATE TABLE IF NOT EXISTS _fs_cursor (
        tablename VARCHAR(64) NOT NULL, cursor TEXT, marking INTEGER NOT NULL,
        lastsync VARCHAR(40), PRIMARY KEY (tablename))""",
    """CREATE TABLE IF NOT EXISTS _fs_seen (
        tablename VARCHAR(64) NOT NULL, recordid VARCHAR(36) NOT NULL,
        PRIMARY KEY (tablename, recordid))""",
    """CREATE TABLE IF NOT EXISTS _fs_outbox (
        seq INTEGER NOT NULL, changeid VARCHAR(36) NOT NULL, tablename VARCHAR(64) NOT NULL,
        operation VARCHAR(16) NOT NULL, recordid VARCHAR(36) NOT NULL, changes TEXT NOT NULL,
        baseversion BIGINT, sent INTEGER NOT NULL, PRIMARY KEY (seq), UNIQUE (changeid))""",
    "CREATE INDEX IF NOT EXISTS ix__fs_outbox_recordid ON _fs_outbox (recordid)",
    """CREATE TABLE IF NOT EXISTS _fs_error (
        seq INTEGER NOT NULL, changeid VARCHAR(36) NOT NULL, tablename VARCHAR(64) NOT NULL,
        operation VARCHAR(16) NOT NULL, recordid VARCHAR(36) NOT NULL, code VARCHAR(64) NOT NULL,
        message TEXT NOT NULL, errortype INTEGER NOT NULL,
        sent TEXT NOT NULL,  -- the values the change carried
        reverted TEXT,  -- the server's row it was reverted to (null: removed)
        occurredon VARCHAR(40) NOT NULL, PRIMARY KEY (seq))""",
)


def encode(value: Any) -> Any:
    """A replica value as JSON for the outbox and the API."""
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, tuple):
        return list(value)
    return value


def insert(conn: Connection, table: str, values: Mapping[str, Any]) -> None:
    names = list(values)
    conn.execute(
        f"INSERT INTO {quote(table)} ({', '.join(map(quote, names))}) "
        f"VALUES ({', '.join('?' for _ in names)})",
        [values[n] for n in names],
    )


def chunks(items: list[Any], size: int = 500) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def marks(items: list[Any]) -> str:
    return ", ".join("?" for _ in items)


class Replica:
    """The local database of one device (one directory)."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / "replica.db"
        self.db = Database(self.path)
        with self.write() as conn:
            for statement in INTERNAL:
                conn.execute(statement)
        self.schema = Schema()
        self.sql: dict[str, dict[str, Codec]] = {}  # per profile table, its SQL columns
        self.columns: dict[str, tuple[str, ...]] = {}
        self.handshake: dict[str, Any] | None = None  # the stored handshake, read-only
        self._load()

    def close(self) -> None:
        self.db.dispose()

    # -- transactions -----------------------------------------------------------------------

    @contextmanager
    def read(self) -> Iterator[Connection]:
        with self.db.transaction(write=False) as conn:
            yield conn

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A write transaction; a full disk rolls it back and raises
        :class:`~fieldsync.client.transport.StorageFull`."""
        with self.db.transaction(write=True) as conn:
            yield conn

    # -- state ------------------------------------------------------------------------------

    def get_state(self, key: str, conn: Connection | None = None) -> Any:
        def fetch(c: Connection) -> Any:
            row = c.execute('SELECT value FROM _fs_state WHERE "key" = ?', (key,)).fetchone()
            return None if row is None else orjson.loads(row[0])

        if conn is not None:
            return fetch(conn)
        with self.read() as c:
            return fetch(c)

    def set_state(self, conn: Connection, key: str, value: Any) -> None:
        conn.execute(
            'INSERT INTO _fs_state ("key", value) VALUES (?, ?) '
            'ON CONFLICT ("key") DO UPDATE SET value = excluded.value',
            (key, orjson.dumps(value).decode()),
        )

    def delete_state(self, conn: Connection, key: str) -> None:
        conn.execute('DELETE FROM _fs_state WHERE "key" = ?', (key,))

    # -- tables -----------------------------------------------------------------------------

    def _load(self) -> None:
        """Know the profile tables of the stored handshake."""
        handshake = self.get_state("handshake")
        self.handshake = handshake or None
        self.schema = Schema()
        self.sql = {}
        self.columns = {}
        if not handshake:
            return
        tables = [Table.from_json(t) for t in handshake["tables"]]
        self.schema = Schema(tables)
        for t in tables:
            self.sql[t.name] = sql_columns(t)
            self.columns[t.name] = tuple(handshake["columns"][t.name])

    def adopt(self, handshake: Mapping[str, Any]) -> list[str]:
        """Take a handshake's tables: create new ones, drop ones no longer in the profile, and
        migrate the ones whose definition or travelling columns changed in place
        (:meth:`_migrate`: columns added or dropped, values that no longer travel cleared, the
        columns gained queued for a backfill). Only a table whose change cannot be migrated
        (a column's type changed, another primary key) is rebuilt: its cursor restarts and it
        downloads again. The outbox survives every migration. Returns the tables reset."""
        old = self.handshake or {"tables": [], "columns": {}}
        before = {t["name"]: t for t in old["tables"]}
        after = {t["name"]: t for t in handshake["tables"]}
        reset: list[str] = []
        with self.write() as conn:
            backfill: dict[str, Any] = self.get_state(BACKFILL, conn) or {}
            for name, definition in before.items():
                old_cols = list(old["columns"].get(name) or [])
                new_cols = list(handshake["columns"].get(name) or [])
                if name in after and after[name] == definition and old_cols == new_cols:
                    continue
                if name in after:
                    was, now = Table.from_json(definition), Table.from_json(after[name])
                    if compatible(was, now):
                        self._migrate(conn, was, now, old_cols, new_cols, backfill)
                        continue
                conn.execute(f"DROP TABLE IF EXISTS {quote(name)}")
                conn.execute("DELETE FROM _fs_cursor WHERE tablename = ?", (name,))
                conn.execute("DELETE FROM _fs_seen WHERE tablename = ?", (name,))
                backfill.pop(name, None)
                reset.append(name)
            for definition in handshake["tables"]:
                for statement in create_table(Table.from_json(definition)):
                    conn.execute(statement)
            self.set_state(conn, BACKFILL, backfill)
            self.set_state(conn, "handshake", dict(handshake))
        self._load()
        return reset

    def _migrate(
        self,
        conn: Connection,
        was: Table,
        now: Table,
        old_cols: list[str],
        new_cols: list[str],
        backfill: dict[str, Any],
    ) -> None:
        """Bring one table to its new definition without downloading its rows again: add
        the new columns, drop the removed ones (their indexes first), clear the values of
        columns that no longer travel, turn pending changes to those columns into sync
        errors, and queue the columns that now travel for a backfill (rows x new columns)."""
        name = now.name
        present = {r[1] for r in conn.execute(f"PRAGMA table_info({quote(name)})")}
        wanted = sql_columns(now)
        for column, c in wanted.items():
            if column not in present:
                conn.execute(f"ALTER TABLE {quote(name)} ADD COLUMN {quote(column)} {c.sql_type}")
        for statement in create_table(now)[1:]:  # the indexes of added columns
            conn.execute(statement)
        for column in sql_columns(was):
            if column in wanted or column not in present:
                continue
            conn.execute(f"DROP INDEX IF EXISTS {quote(f'ix_{name}_{column}'[:63])}")
            conn.execute(f"ALTER TABLE {quote(name)} DROP COLUMN {quote(column)}")
        gone = [c for c in old_cols if c not in new_cols]
        kept = [c for c in gone if c in wanted]
        if kept:
            conn.execute(
                f"UPDATE {quote(name)} SET " + ", ".join(f"{quote(c)} = NULL" for c in kept)
            )
        if gone:
            self._orphan_changes(conn, name, set(gone))
        gained = [c for c in new_cols if c not in old_cols and c != now.primary_id]
        downloaded = conn.execute(
            "SELECT cursor FROM _fs_cursor WHERE tablename = ?", (name,)
        ).fetchone()
        if gained and downloaded is not None and downloaded[0]:
            job = backfill.get(name) or {"columns": []}
            columns = [c for c in dict.fromkeys([*job["columns"], *gained]) if c in new_cols]
            backfill[name] = {"columns": columns, "after": None}
        elif name in backfill:
            columns = [c for c in backfill[name]["columns"] if c in new_cols]
            if columns:
                backfill[name]["columns"] = columns
            else:
                del backfill[name]

    def _orphan_changes(self, conn: Connection, table: str, gone: set[str]) -> None:
        """Pending changes to columns that no longer travel: those values become sync
        errors (never uploaded); a change left with nothing to send leaves the outbox."""
        now = dt.datetime.now(dt.UTC).isoformat()
        entries = conn.execute(
            "SELECT * FROM _fs_outbox WHERE tablename = ? ORDER BY seq", (table,)
        ).fetchall()
        for entry in entries:
            values: dict[str, Any] = orjson.loads(entry["changes"])
            lost = sorted(set(values) & gone)
            if not lost:
                continue
            insert(
                conn,
                "_fs_error",
                {
                    "changeid": entry["changeid"],
                    "tablename": table,
                    "operation": entry["operation"],
                    "recordid": entry["recordid"],
                    "code": COLUMN_GONE,
                    "message": (
                        f"{table}: {', '.join(lost)} no longer reach this device (removed from "
                        "the table or the offline profile); the change to them was not uploaded"
                    ),
                    "errortype": 3,
                    "sent": entry["changes"],
                    "reverted": None,
                    "occurredon": now,
                },
            )
            rest = {k: v for k, v in values.items() if k not in gone}
            if entry["operation"] == "update" and not rest:
                conn.execute("DELETE FROM _fs_outbox WHERE seq = ?", (entry["seq"],))
            else:
                conn.execute(
                    "UPDATE _fs_outbox SET changes = ? WHERE seq = ?",
                    (orjson.dumps(rest).decode(), entry["seq"]),
                )

    def backfills(self) -> dict[str, Any]:
        """Columns waiting to be filled, per table: ``{"columns": [...], "after": id}``."""
        found: dict[str, Any] = self.get_state(BACKFILL) or {}
        return found

    def apply_backfill(self, page: Mapping[str, Any]) -> int:
        """Fill some columns of the rows held from one backfill page (rows not held are not
        added: they are not the device's), with the job's progress, in one transaction;
        local changes not yet uploaded stay on top. Returns the rows filled."""
        name = str(page["table"])
        _table, codecs = self.table(name)
        columns = list(page["columns"])
        store = [codecs[c].to_sql for c in columns]
        rows = [[s(v) for s, v in zip(store, r, strict=True)] for r in page["rows"]]
        sets = ", ".join(f"{quote(c)} = ?" for c in columns[1:])
        with self.write() as conn:
            if rows:
                conn.executemany(
                    f"UPDATE {quote(name)} SET {sets} WHERE {quote(columns[0])} = ?",
                    [(*r[1:], r[0]) for r in rows],
                )
                pending = self._pending(conn, name)
                if pending:
                    ids = {str(uuid.UUID(str(r[0]))) for r in page["rows"]}
                    self._overlay(conn, name, pending, ids)
            jobs = self.get_state(BACKFILL, conn) or {}
            if name in jobs:
                if page["more"]:
                    jobs[name]["after"] = page["after"]
                else:
                    del jobs[name]
                self.set_state(conn, BACKFILL, jobs)
        return len(rows)

    def drop_backfill(self, table: str) -> None:
        with self.write() as conn:
            jobs = self.get_state(BACKFILL, conn) or {}
            jobs.pop(table, None)
            self.set_state(conn, BACKFILL, jobs)

    def purge(self) -> None:
        """Remove every row, cursor and mark of the profile's tables (access was removed)."""
        with self.write() as conn:
            for name in list(self.sql):
                conn.execute(f"DROP TABLE IF EXISTS {quote(name)}")
            conn.execute("DELETE FROM _fs_cursor")
            conn.execute("DELETE FROM _fs_seen")
            self.delete_state(conn, "handshake")
        self._load()

    def table(self, name: str) -> tuple[Table, dict[str, Codec]]:
        """A profile table's definition and its SQL columns."""
        if name not in self.sql:
            raise TableNotFound(name)
        return self.schema.table(name), self.sql[name]

    def stored(self, table: str, values: Mapping[str, Any]) -> dict[str, Any]:
        """Wire (or Python) values as the replica stores them."""
        _, columns = self.table(table)
        out: dict[str, Any] = {}
        for name, value in values.items():
            c = columns.get(name)
            out[name] = value if c is None or value is None else c.store(value)
        return out

    def loaded(self, table: str, row: Mapping[str, Any] | sqlite3.Row) -> dict[str, Any]:
        """A stored row as Python values."""
        _, columns = self.table(table)
        keys = row.keys()
        return {str(k): columns[k].from_sql(row[k]) if k in columns else row[k] for k in keys}

    def exists(self, conn: Connection, table: str, rid: uuid.UUID) -> bool:
        t, _ = self.table(table)
        found = conn.execute(
            f"SELECT 1 FROM {quote(table)} WHERE {quote(t.primary_id)} = ?", (rid.hex,)
        ).fetchone()
        return found is not None

    def version(self, conn: Connection, table: str, rid: uuid.UUID) -> tuple[int | None] | None:
        """``(versionnumber,)`` of a row, or None when the row is not here."""
        t, _ = self.table(table)
        row = conn.execute(
            f"SELECT versionnumber FROM {quote(table)} WHERE {quote(t.primary_id)} = ?",
            (rid.hex,),
        ).fetchone()
        return None if row is None else (row[0],)

    def update_row(
        self, conn: Connection, table: str, rid: uuid.UUID, values: Mapping[str, Any]
    ) -> None:
        """Set stored ``values`` on one row."""
        if not values:
            return
        t, _ = self.table(table)
        names = list(values)
        conn.execute(
            f"UPDATE {quote(table)} SET {', '.join(f'{quote(n)} = ?' for n in names)} "
            f"WHERE {quote(t.primary_id)} = ?",
            [*(values[n] for n in names), rid.hex],
        )

    def delete_rows(self, conn: Connection, table: str, ids: Iterable[uuid.UUID]) -> None:
        t, _ = self.table(table)
        for part in chunks([i.hex for i in ids]):
            conn.execute(
                f"DELETE FROM {quote(table)} WHERE {quote(t.primary_id)} IN ({marks(part)})",
                part,
            )

    # -- download ---------------------------------------------------------------------------

    def cursors(self, tables: Iterable[str]) -> dict[str, str | None]:
        with self.read() as conn:
            found = dict(conn.execute("SELECT tablename, cursor FROM _fs_cursor").fetchall())
        return {t: found.get(t) for t in tables}

    def last_syncs(self) -> dict[str, str | None]:
        with self.read() as conn:
            return dict(conn.execute("SELECT tablename, lastsync FROM _fs_cursor").fetchall())

    def apply_page(self, page: Mapping[str, Any], now: str) -> int:
        """Apply one download page of one table, with its cursor, in one transaction.
        Returns the number of rows written or removed."""
        name = str(page["table"])
        table, sql = self.table(name)
        pk = table.primary_id
        columns = list(page["columns"])
        index = columns.index(pk)
        storers = [None if sql[c].identity else sql[c].store for c in columns]
        rows: list[list[Any]] = page["upserts"]
        for i, store in enumerate(storers):
            if store is not None:
                for row in rows:
                    value = row[i]
                    if value is not None:
                        row[i] = store(value)
        removes = [uuid.UUID(r) for r in page["removes"]]
        with self.write() as conn:
            state = conn.execute(
                "SELECT marking FROM _fs_cursor WHERE tablename = ?", (name,)
            ).fetchone()
            marking = bool(state[0]) if state is not None else False
            if page.get("rescope"):
                conn.execute("DELETE FROM _fs_seen WHERE tablename = ?", (name,))
                # an empty table has nothing to sweep: no need to mark what arrives
                marking = (
                    conn.execute(f"SELECT 1 FROM {quote(name)} LIMIT 1").fetchone() is not None
                )
                if not marking:
                    # a whole table arrives: its lookup indexes are built once, by the page
                    # that completes it (one sort instead of an index insert per row)
                    for index_name, _ in lookup_indexes(table):
                        conn.execute(f"DROP INDEX IF EXISTS {quote(index_name)}")
            pending = self._pending(conn, name)
            if rows:
                # every travelling column arrives, so replacing the whole row is the upsert
                conn.executemany(
                    f"INSERT OR REPLACE INTO {quote(name)} ({', '.join(map(quote, columns))}) "
                    f"VALUES ({marks(columns)})",
                    [tuple(r) for r in rows],
                )
                if marking:
                    conn.executemany(
                        "INSERT INTO _fs_seen (tablename, recordid) VALUES (?, ?) "
                        "ON CONFLICT DO NOTHING",
                        [(name, str(uuid.UUID(r[index]))) for r in rows],
                    )
            if removes:
                keep = {uuid.UUID(k) for k, ops in pending.items() if "create" in ops}
                self.delete_rows(conn, name, [r for r in removes if r not in keep])
            if page.get("complete"):
                for _, create in lookup_indexes(table):
                    conn.execute(create)
            if page.get("complete") and marking:
                seen = conn.execute(
                    "SELECT recordid FROM _fs_seen WHERE tablename = ?", (name,)
                ).fetchall()
                keep_ids = {uuid.UUID(r[0]) for r in seen} | {uuid.UUID(k) for k in pending}
                self._sweep(conn, name, pk, keep_ids)
                conn.execute("DELETE FROM _fs_seen WHERE tablename = ?", (name,))
                marking = False
            if pending:
                self._overlay(conn, name, pending, {str(uuid.UUID(r[index])) for r in rows})
            conn.execute(
                "INSERT INTO _fs_cursor (tablename, cursor, marking, lastsync) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (tablename) DO UPDATE SET "
                "cursor = excluded.cursor, marking = excluded.marking, "
                "lastsync = excluded.lastsync",
                (name, page["cursor"], int(marking), now),
            )
        return len(rows) + len(removes)

    def _sweep(self, conn: Connection, table: str, pk: str, keep: set[uuid.UUID]) -> None:
        present = [uuid.UUID(r[0]) for r in conn.execute(f"SELECT {quote(pk)} FROM {quote(table)}")]
        self.delete_rows(conn, table, [r for r in present if r not in keep])

    def _pending(self, conn: Connection, table: str) -> dict[str, list[str]]:
        """Record ids of the table with changes still in the outbox, and their operations."""
        out: dict[str, list[str]] = {}
        rows = conn.execute(
            "SELECT recordid, operation FROM _fs_outbox WHERE tablename = ? ORDER BY seq",
            (table,),
        )
        for rid, op in rows:
            out.setdefault(rid, []).append(op)
        return out

    def _overlay(
        self, conn: Connection, table: str, pending: Mapping[str, list[str]], ids: set[str]
    ) -> None:
        """Local changes not yet uploaded stay visible over what the server sent."""
        touched = [i for i in pending if i in ids]
        if not touched:
            return
        t, _ = self.table(table)
        entries: list[Any] = []
        for part in chunks(touched):
            entries += conn.execute(
                "SELECT seq, recordid, operation, changes FROM _fs_outbox "
                f"WHERE tablename = ? AND recordid IN ({marks(part)})",
                [table, *part],
            ).fetchall()
        entries.sort(key=lambda e: e[0])
        for _seq, rid, op, changes in entries:
            key = uuid.UUID(rid)
            if op == "delete":
                self.delete_rows(conn, table, [key])
                continue
            values = self.stored(table, orjson.loads(changes))
            values.pop(t.primary_id, None)
            self.update_row(conn, table, key, values)
