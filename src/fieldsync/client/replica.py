"""The device's local replica: one SQLite file with the profile's tables, the outbox, the
download cursors and the sync errors.

Every local write changes the replica row and the outbox in one transaction (``synchronous=
FULL``: durable when the call returns). Every download page changes the rows, the cursor and
the re-scope marks of its table in one transaction, so a crash at any instant resumes from
the last page committed.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from fieldsync.client.transport import StorageFull
from fieldsync.schema.model import ColumnType, Schema, Table
from fieldsync.store.ddl import build_sql_table
from fieldsync.store.engine import WRITE_OPTION, create_engine
from fieldsync.store.sqltypes import UTCDateTime

T = ColumnType

meta = sa.MetaData()
state_table = sa.Table(
    "_fs_state",
    meta,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)
cursor_table = sa.Table(
    "_fs_cursor",
    meta,
    sa.Column("tablename", sa.String(64), primary_key=True),
    sa.Column("cursor", sa.Text),
    sa.Column("marking", sa.Integer, nullable=False, default=0),
    sa.Column("lastsync", sa.String(40)),
)
seen_table = sa.Table(
    "_fs_seen",
    meta,
    sa.Column("tablename", sa.String(64), primary_key=True),
    sa.Column("recordid", sa.String(36), primary_key=True),
)
outbox_table = sa.Table(
    "_fs_outbox",
    meta,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("changeid", sa.String(36), nullable=False, unique=True),
    sa.Column("tablename", sa.String(64), nullable=False),
    sa.Column("operation", sa.String(16), nullable=False),
    sa.Column("recordid", sa.String(36), nullable=False, index=True),
    sa.Column("changes", sa.Text, nullable=False),
    sa.Column("baseversion", sa.BigInteger),
    sa.Column("sent", sa.Integer, nullable=False, default=0),
)
error_table = sa.Table(
    "_fs_error",
    meta,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("changeid", sa.String(36), nullable=False),
    sa.Column("tablename", sa.String(64), nullable=False),
    sa.Column("operation", sa.String(16), nullable=False),
    sa.Column("recordid", sa.String(36), nullable=False),
    sa.Column("code", sa.String(64), nullable=False),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("errortype", sa.Integer, nullable=False),
    sa.Column("sent", sa.Text, nullable=False),  # the values the change carried
    sa.Column("reverted", sa.Text),  # the server's row it was reverted to (null: removed)
    sa.Column("occurredon", sa.String(40), nullable=False),
)


Decoder = Callable[[Any], Any]


def _decoder(t: ColumnType | None) -> Decoder | None:
    if t in (T.LOOKUP, T.UNIQUEIDENTIFIER, T.FILE, T.IMAGE):
        return lambda v: v if v is None or isinstance(v, uuid.UUID) else uuid.UUID(v)
    if t is T.DATETIME:
        return lambda v: (
            v if v is None or isinstance(v, dt.datetime) else dt.datetime.fromisoformat(v)
        )
    if t is T.DATE:
        return lambda v: v if v is None or isinstance(v, dt.date) else dt.date.fromisoformat(v)
    if t in (T.DECIMAL, T.MONEY):
        return lambda v: v if v is None else Decimal(str(v))
    if t is T.MULTICHOICE:
        return lambda v: v if v is None else tuple(v)
    return None


def decoders(table: Table, columns: Sequence[str]) -> list[Decoder | None]:
    out: list[Decoder | None] = []
    for name in columns:
        col = table.column(name)
        out.append(_decoder(col.type if col is not None else None))
    return out


def _storers(sql: sa.Table, table: Table, columns: Sequence[str], dialect: Any) -> list[Any]:
    """Per column, a function from a wire value to what SQLite stores (the column type's own
    bind processing, with a fast path for ids), or None where the wire value is stored as is."""
    out: list[Any] = []
    for name in columns:
        col = sql.c[name]
        if isinstance(col.type, sa.Uuid):
            out.append(_hex)
            continue
        if isinstance(col.type, UTCDateTime) and dialect.name == "sqlite":
            out.append(_sqlite_moment)
            continue
        logical = table.column(name)
        decode = _decoder(logical.type if logical is not None else None)
        bind = col.type._cached_bind_processor(dialect)
        if decode is None and bind is None:
            out.append(None)
        elif bind is None:
            out.append(decode)
        elif decode is None:
            out.append(bind)
        else:
            out.append(lambda v, d=decode, b=bind: b(d(v)))
    return out


def _sqlite_moment(value: Any) -> Any:
    """An ISO 8601 UTC time as SQLite stores it ("YYYY-MM-DD HH:MM:SS.ffffff")."""
    if isinstance(value, str) and len(value) >= 25 and value.endswith("+00:00"):
        frac = value[20:-6] if value[19] == "." else ""
        return f"{value[:10]} {value[11:19]}.{frac.ljust(6, '0')}"
    moment = dt.datetime.fromisoformat(value) if isinstance(value, str) else value
    if moment.tzinfo is not None:
        moment = moment.astimezone(dt.UTC).replace(tzinfo=None)
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")


def _hex(value: Any) -> Any:
    if isinstance(value, str) and len(value) == 36:
        return value.replace("-", "")
    return None if value is None else uuid.UUID(str(value)).hex


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


class Replica:
    """The local database of one device (one directory)."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / "replica.db"
        self.engine = create_engine(f"sqlite:///{self.path}", pool_size=2)

        @event.listens_for(self.engine, "connect")
        def durable(dbapi_connection: Any, _record: Any) -> None:
            cur = dbapi_connection.cursor()
            cur.execute("PRAGMA synchronous=FULL")  # a local write survives a power cut
            cur.close()

        with self.write() as conn:
            meta.create_all(conn)
        self.schema = Schema()
        self.sql: dict[str, sa.Table] = {}
        self.columns: dict[str, tuple[str, ...]] = {}
        self.handshake: dict[str, Any] | None = None  # the stored handshake, read-only
        self._load()

    def close(self) -> None:
        self.engine.dispose()

    # -- transactions -----------------------------------------------------------------------

    @contextmanager
    def read(self) -> Iterator[sa.Connection]:
        with self.engine.connect() as conn, conn.begin():
            yield conn

    @contextmanager
    def write(self) -> Iterator[sa.Connection]:
        """A write transaction; a full disk rolls it back and raises :class:`StorageFull`."""
        try:
            with self.engine.connect() as conn:
                conn = conn.execution_options(**{WRITE_OPTION: True})
                with conn.begin():
                    yield conn
        except sa.exc.OperationalError as exc:
            if "full" in str(exc.orig).lower():
                raise StorageFull(
                    f"the device's storage is full ({self.path}); nothing was written: free "
                    "some space and try again"
                ) from exc
            raise

    # -- state ------------------------------------------------------------------------------

    def get_state(self, key: str, conn: sa.Connection | None = None) -> Any:
        def fetch(c: sa.Connection) -> Any:
            raw = c.execute(sa.select(state_table.c.value).where(state_table.c.key == key)).scalar()
            return None if raw is None else orjson.loads(raw)

        if conn is not None:
            return fetch(conn)
        with self.read() as c:
            return fetch(c)

    def set_state(self, conn: sa.Connection, key: str, value: Any) -> None:
        raw = orjson.dumps(value).decode()
        stmt = sqlite_insert(state_table).values(key=key, value=raw)
        conn.execute(stmt.on_conflict_do_update(index_elements=["key"], set_={"value": raw}))

    def delete_state(self, conn: sa.Connection, key: str) -> None:
        conn.execute(state_table.delete().where(state_table.c.key == key))

    # -- tables -----------------------------------------------------------------------------

    def _load(self) -> None:
        """Build the SQL tables of the stored handshake's profile tables."""
        handshake = self.get_state("handshake")
        self.handshake = handshake or None
        self.schema = Schema()
        self.sql = {}
        self.columns = {}
        if not handshake:
            return
        tables = [Table.from_json(t) for t in handshake["tables"]]
        self.schema = Schema(tables)
        md = sa.MetaData()
        for t in tables:
            self.sql[t.name] = build_sql_table(t, md)
            self.columns[t.name] = tuple(handshake["columns"][t.name])

    def adopt(self, handshake: Mapping[str, Any]) -> list[str]:
        """Take a handshake's tables: create new ones, drop ones no longer in the profile,
        rebuild ones whose definition changed (their cursors restart). Returns the tables
        that were reset."""
        old = self.handshake or {"tables": [], "columns": {}}
        before = {t["name"]: t for t in old["tables"]}
        after = {t["name"]: t for t in handshake["tables"]}
        reset: list[str] = []
        with self.write() as conn:
            for name, definition in before.items():
                changed = name in after and (
                    after[name] != definition
                    or handshake["columns"].get(name) != old["columns"].get(name)
                )
                if name not in after or changed:
                    conn.exec_driver_sql(f'DROP TABLE IF EXISTS "{name}"')
                    conn.execute(cursor_table.delete().where(cursor_table.c.tablename == name))
                    conn.execute(seen_table.delete().where(seen_table.c.tablename == name))
                    reset.append(name)
            md = sa.MetaData()
            for definition in handshake["tables"]:
                build_sql_table(Table.from_json(definition), md)
            md.create_all(conn)
            self.set_state(conn, "handshake", dict(handshake))
        self._load()
        return reset

    def purge(self) -> None:
        """Remove every row, cursor and mark of the profile's tables (access was removed)."""
        with self.write() as conn:
            for name in list(self.sql):
                conn.exec_driver_sql(f'DROP TABLE IF EXISTS "{name}"')
            conn.execute(cursor_table.delete())
            conn.execute(seen_table.delete())
            self.delete_state(conn, "handshake")
        self._load()

    def table(self, name: str) -> tuple[Table, sa.Table]:
        if name not in self.sql:
            from fieldsync.errors import TableNotFound

            raise TableNotFound(name)
        return self.schema.table(name), self.sql[name]

    # -- download ---------------------------------------------------------------------------

    def cursors(self, tables: Iterable[str]) -> dict[str, str | None]:
        with self.read() as conn:
            found = dict(
                conn.execute(sa.select(cursor_table.c.tablename, cursor_table.c.cursor)).all()
            )
        return {t: found.get(t) for t in tables}

    def last_syncs(self) -> dict[str, str | None]:
        with self.read() as conn:
            return dict(
                conn.execute(sa.select(cursor_table.c.tablename, cursor_table.c.lastsync)).all()
            )

    def apply_page(self, page: Mapping[str, Any], now: str) -> int:
        """Apply one download page of one table, with its cursor, in one transaction.
        Returns the number of rows written or removed."""
        name = str(page["table"])
        table, sql = self.table(name)
        pk = table.primary_id
        columns = list(page["columns"])
        index = columns.index(pk)
        storers = _storers(sql, table, columns, self.engine.dialect)
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
                sa.select(cursor_table.c.marking).where(cursor_table.c.tablename == name)
            ).scalar()
            marking = bool(state)
            if page.get("rescope"):
                conn.execute(seen_table.delete().where(seen_table.c.tablename == name))
                # an empty table has nothing to sweep: no need to mark what arrives
                marking = conn.execute(sa.select(sql.c[pk]).limit(1)).first() is not None
                if not marking:
                    # a whole table arrives: its lookup indexes are built once, by the page
                    # that completes it (one sort instead of an index insert per row)
                    for lookup in sql.indexes:
                        if not lookup.unique:
                            lookup.drop(conn, checkfirst=True)
            pending = self._pending(conn, name)
            if rows:
                # every travelling column arrives, so replacing the whole row is the upsert
                names = ", ".join(f'"{c}"' for c in columns)
                marks = ", ".join("?" for _ in columns)
                conn.exec_driver_sql(
                    f'INSERT OR REPLACE INTO "{name}" ({names}) VALUES ({marks})',
                    [tuple(r) for r in rows],
                )
                if marking:
                    conn.execute(
                        sqlite_insert(seen_table).on_conflict_do_nothing(),
                        [{"tablename": name, "recordid": str(r[index])} for r in page["upserts"]],
                    )
            if removes:
                keep = {uuid.UUID(k) for k, ops in pending.items() if "create" in ops}
                gone = [r for r in removes if r not in keep]
                for start in range(0, len(gone), 500):
                    conn.execute(sql.delete().where(sql.c[pk].in_(gone[start : start + 500])))
            if page.get("complete"):
                for lookup in sql.indexes:
                    lookup.create(conn, checkfirst=True)
            if page.get("complete") and marking:
                keep_ids = [uuid.UUID(k) for k in pending]
                seen = sa.select(seen_table.c.recordid).where(seen_table.c.tablename == name)
                ids = [uuid.UUID(r) for r in conn.execute(seen).scalars()]
                self._sweep(conn, sql, pk, set(ids) | set(keep_ids))
                conn.execute(seen_table.delete().where(seen_table.c.tablename == name))
                marking = False
            if pending:
                self._overlay(conn, name, pending, {str(uuid.UUID(r[index])) for r in rows})
            values = {"cursor": page["cursor"], "marking": int(marking), "lastsync": now}
            stmt2 = sqlite_insert(cursor_table).values(tablename=name, **values)
            conn.execute(stmt2.on_conflict_do_update(index_elements=["tablename"], set_=values))
        return len(rows) + len(removes)

    def _sweep(self, conn: sa.Connection, sql: sa.Table, pk: str, keep: set[uuid.UUID]) -> None:
        present = list(conn.execute(sa.select(sql.c[pk])).scalars())
        gone = [r for r in present if r not in keep]
        for start in range(0, len(gone), 500):
            conn.execute(sql.delete().where(sql.c[pk].in_(gone[start : start + 500])))

    def _pending(self, conn: sa.Connection, table: str) -> dict[str, list[str]]:
        """Record ids of the table with changes still in the outbox, and their operations."""
        out: dict[str, list[str]] = {}
        rows = conn.execute(
            sa.select(outbox_table.c.recordid, outbox_table.c.operation)
            .where(outbox_table.c.tablename == table)
            .order_by(outbox_table.c.seq)
        )
        for rid, op in rows:
            out.setdefault(rid, []).append(op)
        return out

    def _overlay(
        self, conn: sa.Connection, table: str, pending: Mapping[str, list[str]], ids: set[str]
    ) -> None:
        """Local changes not yet uploaded stay visible over what the server sent."""
        touched = [i for i in pending if i in ids]
        if not touched:
            return
        t, sql = self.table(table)
        pk = t.primary_id
        entries = conn.execute(
            sa.select(outbox_table.c.recordid, outbox_table.c.operation, outbox_table.c.changes)
            .where(outbox_table.c.tablename == table, outbox_table.c.recordid.in_(touched))
            .order_by(outbox_table.c.seq)
        ).all()
        for rid, op, changes in entries:
            key = uuid.UUID(rid)
            if op == "delete":
                conn.execute(sql.delete().where(sql.c[pk] == key))
                continue
            values = self.decode_values(t, orjson.loads(changes))
            values.pop(pk, None)
            if values:
                conn.execute(sql.update().where(sql.c[pk] == key).values(**values))

    def decode_values(self, table: Table, values: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, value in values.items():
            col = table.column(name)
            d = _decoder(col.type if col is not None else None)
            out[name] = d(value) if d is not None and value is not None else value
        return out
