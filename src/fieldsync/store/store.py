"""The store: one engine, the schema it holds, transactions, versions and runtime DDL.

Versions (:mod:`fieldsync.store.versions`): on SQLite from one counter row (``fs_sequence``),
taken inside the one write transaction SQLite runs at a time, so they are handed out in commit
order. On PostgreSQL from a sequence (``fs_version_seq``), with no lock held until commit:
writers run side by side, and readers of the change log go only up to the *horizon*, below
which every version is committed or rolled back for good, so a cursor never passes a version
that commits later.

Write transactions on PostgreSQL come in two kinds, told apart by one advisory lock taken
first, before any row: a *concurrent* unit of work (the records service, the Web API, sync
uploads) takes it shared and runs beside the others; any other write takes it exclusive and
runs alone, as every write did when versions came from a counter held until commit (sign-in,
the organisation, offline profiles, DDL, upgrades). Concurrent writers lock the rows they
update (``SELECT … FOR UPDATE``) and the rows their lookups point at (``FOR KEY SHARE``)
before taking versions, so one row's versions still rise in commit order. Every write goes
through :meth:`Store.transact`, which runs the unit of work again when the database reports
a deadlock or a serialization failure (concurrent writers may lock rows in different
orders), or, for a concurrent one, a unique violation (two writers that both checked first and
then inserted: the second attempt sees the first's row and answers as the check does), and
answers :class:`~fieldsync.errors.WriteConflict` (503, ``Retry-After``) if it persists.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import secrets
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from fieldsync.errors import SchemaError, WriteConflict
from fieldsync.schema.builtin import (
    ORGANIZATION_ID,
    ROOT_BUSINESS_UNIT_ID,
    SYSTEM_USER_ID,
    builtin_relationships,
    builtin_tables,
)
from fieldsync.schema.model import (
    KEY_COLUMN_TYPES,
    AlternateKey,
    Column,
    ColumnType,
    Relationship,
    RelationshipKind,
    Schema,
    Table,
    check_name,
    define_intersect,
)
from fieldsync.store import catalog
from fieldsync.store.audit import AuditLog
from fieldsync.store.bulk import insert_many
from fieldsync.store.catalog import fs_change, fs_meta, fs_migration, fs_relationship, fs_sequence
from fieldsync.store.catalog import fs_table as fs_table_t
from fieldsync.store.ddl import (
    add_column_ddl,
    add_index_ddl,
    build_sql_table,
    create_key_index,
    index_names,
    key_index_name,
)
from fieldsync.store.engine import WRITE_OPTION, create_engine
from fieldsync.store.notify import install_trigger
from fieldsync.store.versions import (
    REGISTERED,
    SEQUENCE,
    SPACE_KEY,
    VersionClock,
    configure_from_database,
    register,
)

SCHEMA_CHECK_SECONDS = 1.0
COPY_THRESHOLD = 50  # rows from which COPY beats executemany on PostgreSQL
UPGRADE_LOCK = 0x6669656C64  # advisory lock key for upgrades on PostgreSQL
WRITE_ATTEMPTS = 5  # a unit of work runs at most this often when the database aborts it
RETRY_DELAY = 0.02  # seconds before the second attempt; doubled for each further one, jittered
RETRY_AFTER = 1  # seconds a client is asked to wait when the conflicts persist
RETRYABLE = frozenset({"40P01", "40001"})  # deadlock detected, serialization failure
RACED = "23505"  # unique violation: retried for concurrent units of work (see the module)
VERSIONS_LOCKED = "fieldsync_versions_locked"  # conn.info key: this transaction may take versions
TABLES_HELD = "fieldsync_tables_held"  # conn.info key: tables this transaction writes alone
# advisory locks of two 32-bit keys (the version registrations use one 64-bit key), the
# second one this store's key space (fs_meta.version_lock_space) or derived from it, so
# stores in other schemas of the same database never wait for each other:
WRITERS_LOCK = 0x66735772  # shared by concurrent writers, exclusive for the others
TABLE_LOCK = 0x66735462  # with a table's hash: its writers one at a time (serialise_table)

log = logging.getLogger(__name__)
T = TypeVar("T")


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def retryable(exc: BaseException, *, concurrent: bool = False) -> bool:
    """Whether the database aborted a transaction that may succeed when run again: a
    deadlock (``40P01``) or a serialization failure (``40001``); for a concurrent unit of
    work also a unique violation (``23505``: it raced another writer between its check and
    its insert, and runs its check again)."""
    if not isinstance(exc, sa.exc.DBAPIError) or exc.connection_invalidated:
        return False
    state = getattr(exc.orig, "sqlstate", None)
    return state in RETRYABLE or (concurrent and state == RACED)


class Store:
    """Holds the engine and the schema; hands out transactions and versions.

    >>> store = Store.open("sqlite:////tmp/example.db")   # doctest: +SKIP
    >>> versions = store.transact(lambda conn: store.allocate_versions(conn, 3))  # doctest: +SKIP
    """

    def __init__(self, engine: Engine) -> None:
        self.closed = False
        self.engine = engine
        self.dialect = engine.dialect.name
        self._lock = threading.RLock()
        self._schema = Schema()
        self._sql: dict[str, sa.Table] = {}
        self._generation = -1
        self._checked_at = 0.0
        self.committed: list[Callable[[], None]] = []  # called after each write commits
        self.write_attempts = WRITE_ATTEMPTS
        self.retries = 0  # units of work run again after a deadlock or serialization failure
        self.conflicts = 0  # units of work given up (answered with WriteConflict)
        self._local = threading.local()
        self.audit = AuditLog(self)
        self.clock = VersionClock(self.dialect)
        register(engine, self.clock)

    @classmethod
    def open(cls, url: str, *, upgrade: bool = True, pool_size: int = 5) -> Store:
        store = cls(create_engine(url, pool_size=pool_size))
        if upgrade:
            store.upgrade()
        else:
            store.reload_schema()
        return store

    def close(self) -> None:
        self.closed = True  # background work (the Web API's throttle) stops touching the pool
        self.engine.dispose()

    # -- transactions -------------------------------------------------------------------

    @contextmanager
    def read(self) -> Iterator[sa.Connection]:
        """A read transaction; on SQLite it runs beside the writer (WAL)."""
        self._refresh_schema()
        with self.engine.connect() as conn, conn.begin():
            yield conn

    @contextmanager
    def write(self, *, concurrent: bool = False) -> Iterator[sa.Connection]:
        """One write transaction, run once: ``BEGIN IMMEDIATE`` on SQLite; on PostgreSQL the
        writers' lock first, shared when ``concurrent`` (the unit of work runs beside other
        concurrent ones), else exclusive (it runs alone); commits on success. Application
        code goes through :meth:`transact`, which runs it again after a deadlock; this is its
        building block.

        A thread that already has a write transaction open may not open a second one: on
        PostgreSQL it could wait for the writers' lock its own first transaction holds."""
        if getattr(self._local, "writing", False):
            raise RuntimeError(
                "a write transaction is already open in this thread: pass its connection on"
            )
        self._refresh_schema()
        self._local.writing = True
        committed = False
        self.audit.enter()
        try:
            with self.engine.connect() as conn:
                conn = conn.execution_options(**{WRITE_OPTION: True})
                try:
                    with conn.begin():
                        self._lock_versions(conn, concurrent=concurrent)
                        yield conn
                finally:
                    conn.info.pop(VERSIONS_LOCKED, None)
                    conn.info.pop(REGISTERED, None)
                    conn.info.pop(TABLES_HELD, None)
            committed = True
        finally:
            self._local.writing = False
            # audit events raised in the transaction: written now, in their own transaction
            self.audit.leave(committed)
        for hook in tuple(self.committed):
            hook()

    def transact(self, work: Callable[[sa.Connection], T], *, concurrent: bool = False) -> T:
        """Run ``work(conn)`` in a write transaction and commit; return what it returns.

        This is the one way in for writes. ``concurrent`` units of work run beside each other
        on PostgreSQL (they lock the rows they touch); the others run alone (see the module's
        notes). Should the database abort the unit of work with a deadlock or a serialization
        failure (or, when concurrent, a unique violation), it runs again, up to
        ``write_attempts`` times with a short, jittered pause; after that the caller gets
        :class:`~fieldsync.errors.WriteConflict` (503 with ``Retry-After``). ``work`` must
        therefore keep its effects inside the transaction: whatever it does outside (files,
        caches, messages) has to be safe to do twice, or wait until it returns."""
        attempts = max(1, self.write_attempts)
        for attempt in range(1, attempts + 1):
            try:
                with self.write(concurrent=concurrent) as conn:
                    return work(conn)
            except sa.exc.DBAPIError as exc:
                if not retryable(exc, concurrent=concurrent):
                    raise
                reason = getattr(exc.orig, "sqlstate", "")
                if attempt == attempts:
                    with self._lock:
                        self.conflicts += 1
                    log.warning(
                        "write conflict (%s) persisted through %d attempts; answering 503",
                        reason,
                        attempts,
                    )
                    raise WriteConflict(
                        "the database kept aborting this write to break a deadlock; "
                        "nothing was written: try again",
                        retry_after=RETRY_AFTER,
                    ) from exc
                with self._lock:
                    self.retries += 1
                log.warning(
                    "write conflict (%s); running the transaction again (attempt %d of %d)",
                    reason,
                    attempt + 1,
                    attempts,
                )
                time.sleep(RETRY_DELAY * 2 ** (attempt - 1) * random.uniform(0.5, 1.5))
        raise AssertionError("unreachable")  # pragma: no cover

    def _lock_versions(self, conn: sa.Connection, *, concurrent: bool = False) -> None:
        """The first lock of every write transaction. SQLite's ``BEGIN IMMEDIATE`` has
        already locked the whole database. On PostgreSQL: the writers' lock, shared or
        exclusive (or, on a database not yet given the version sequence, the counter row)."""
        if self.dialect == "postgresql":
            if self.clock.sequenced:
                fn = "pg_advisory_xact_lock_shared" if concurrent else "pg_advisory_xact_lock"
                conn.execute(
                    sa.text(f"SELECT {fn}(:a, :b)"), {"a": WRITERS_LOCK, "b": self.clock.space}
                )
            else:
                conn.execute(
                    sa.select(fs_sequence.c.value)
                    .where(fs_sequence.c.name == "version")
                    .with_for_update()
                )
        conn.info[VERSIONS_LOCKED] = True

    def serialise_table(self, conn: sa.Connection, table: str) -> None:
        """Let one write transaction at a time write ``table`` from here until it ends: what
        a check that reads other rows before a write needs (a unique name, no cycle) now that
        writers run side by side on PostgreSQL. SQLite runs one writer anyway."""
        if self.dialect != "postgresql":
            return
        held: set[str] = conn.info.setdefault(TABLES_HELD, set())
        if table in held:
            return
        key = zlib.crc32(f"{self.clock.space}:{table}".encode()) - 2**31  # a signed int4
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:a, :b)"), {"a": TABLE_LOCK, "b": key})
        held.add(table)

    def allocate_versions(self, conn: sa.Connection, count: int) -> Sequence[int]:
        """Take ``count`` new versions, in increasing order (consecutive on SQLite; on
        PostgreSQL other writers' versions may fall between them). The transaction must be
        one of :meth:`write`'s. Take them after locking the rows they are for, so that a
        row's versions rise in the order its writes commit."""
        if not conn.info.get(VERSIONS_LOCKED):
            raise RuntimeError("versions are taken in a write transaction (Store.transact)")
        return self.clock.take(conn, count)

    def bulk_insert(self, conn: sa.Connection, table: sa.Table, rows: list[dict[str, Any]]) -> None:
        """Insert rows that all have the same keys: ``COPY`` on PostgreSQL (several times
        faster than an INSERT per row), ``executemany`` on SQLite. Values go through the
        columns' SQL types as they would in an INSERT."""
        if not rows:
            return
        if self.dialect != "postgresql" or len(rows) < COPY_THRESHOLD:
            insert_many(conn, table, rows)
            return
        dialect = conn.dialect
        names = list(rows[0])
        processors = [
            table.c[name].type.dialect_impl(dialect).bind_processor(dialect) for name in names
        ]
        quote = dialect.identifier_preparer.quote
        sql = f"COPY {quote(table.name)} ({', '.join(quote(n) for n in names)}) FROM STDIN"
        raw = conn.connection.driver_connection
        assert raw is not None
        with raw.cursor() as cursor, cursor.copy(sql) as copy:
            for row in rows:
                copy.write_row(
                    [
                        value if proc is None or value is None else proc(value)
                        for value, proc in zip((row[n] for n in names), processors, strict=True)
                    ]
                )

    def current_version(self, conn: sa.Connection) -> int:
        """The version a reader may go up to (:mod:`fieldsync.store.versions`): every
        version at or below it is committed or rolled back for good. On PostgreSQL, read it
        before the statements it bounds."""
        return self.clock.horizon(conn)

    # -- schema -------------------------------------------------------------------------

    @property
    def schema(self) -> Schema:
        return self._schema

    @property
    def schema_generation(self) -> int:
        """Goes up with every schema change (any process's); caches of metadata key on it."""
        return self._generation

    def sql_table(self, name: str) -> sa.Table:
        table = self._sql.get(name)
        if table is None:
            self._schema.table(name)  # raises TableNotFound
            raise AssertionError(f"no SQL table for {name}")  # pragma: no cover
        return table

    def reload_schema(self) -> None:
        with self.engine.connect() as conn, conn.begin():
            self._load_schema(conn)

    def _load_schema(self, conn: sa.Connection) -> None:
        if not sa.inspect(conn).has_table(fs_table_t.name):
            return  # a new database: upgrade() creates the catalog
        configure_from_database(self.clock, conn)
        rows = conn.execute(
            sa.select(fs_table_t.c.definition).order_by(fs_table_t.c.position)
        ).scalars()
        tables = [Table.from_json(r) for r in rows]
        rels = [
            Relationship.from_json(r)
            for r in conn.execute(sa.select(fs_relationship.c.definition)).scalars()
        ]
        generation = conn.execute(
            sa.select(fs_meta.c.value).where(fs_meta.c.key == "schema_generation")
        ).scalar()
        metadata = sa.MetaData()
        sql = {t.name: build_sql_table(t, metadata) for t in tables}
        with self._lock:
            self._schema = Schema(tables, rels)
            self._sql = sql
            self._generation = int(generation or 0)
            self._checked_at = time.monotonic()

    def _refresh_schema(self) -> None:
        """Pick up schema changes made by other processes (checked at most once a second)."""
        now = time.monotonic()
        if now - self._checked_at < SCHEMA_CHECK_SECONDS:
            return
        self._checked_at = now
        with self.engine.connect() as conn, conn.begin():
            generation = conn.execute(
                sa.select(fs_meta.c.value).where(fs_meta.c.key == "schema_generation")
            ).scalar()
            if int(generation or 0) != self._generation:
                self._load_schema(conn)

    def _bump_generation(self, conn: sa.Connection) -> None:
        conn.execute(
            fs_meta.update()
            .where(fs_meta.c.key == "schema_generation")
            .values(value=sa.cast(sa.cast(fs_meta.c.value, sa.Integer) + 1, sa.Text))
        )

    def create_table(self, table: Table) -> Table:
        """Create a business table (real DDL) and persist its definition.

        Each lookup that is not a system column also becomes a one-to-many relationship."""

        def work(conn: sa.Connection) -> None:
            self._create_table(conn, table)
            self._bump_generation(conn)

        self.transact(work)
        self.reload_schema()
        return self._schema.table(table.name)

    def _create_table(
        self, conn: sa.Connection, table: Table, *, also_known: frozenset[str] = frozenset()
    ) -> None:
        schema = self._schema
        if table.name in schema:
            raise SchemaError(f"table {table.name!r} already exists")
        if any(t.entity_set_name == table.entity_set_name for t in schema.tables.values()):
            raise SchemaError(f"entity set name {table.entity_set_name!r} is already taken")
        for col in table.lookups():
            for target in col.targets:
                if target != table.name and target not in schema and target not in also_known:
                    raise SchemaError(
                        f"table {table.name!r}: lookup {col.name!r} targets unknown table "
                        f"{target!r}"
                    )
        build_sql_table(table, sa.MetaData()).create(conn)
        # alternate keys are the server's: a device's replica holds a subset of the rows and
        # applies changes in version order, so it builds its tables without them
        for key in table.keys:
            create_key_index(conn, table, key)
        position = conn.execute(
            sa.select(sa.func.coalesce(sa.func.max(fs_table_t.c.position), 0))
        ).scalar_one()
        conn.execute(
            fs_table_t.insert().values(
                name=table.name, position=position + 1, definition=table.to_json()
            )
        )
        for col in table.lookups():
            if not col.system and not table.intersect:
                self._insert_lookup_relationships(conn, table, col)

    def _insert_lookup_relationships(
        self, conn: sa.Connection, table: Table, col: Column, schema_name: str = ""
    ) -> None:
        for target in col.targets:
            referenced = table if target == table.name else self._schema.tables.get(target)
            name = schema_name.lower() or f"{target}_{table.name}_{col.name}"
            if name in self._schema.relationships:
                raise SchemaError(f"relationship {schema_name or name!r} already exists")
            rel = Relationship(
                name=name,
                schema_name=schema_name if schema_name != name else "",
                kind=RelationshipKind.ONE_TO_MANY,
                referenced_table=target,
                referencing_table=table.name,
                referencing_column=col.name,
                referenced_column=referenced.primary_id if referenced else f"{target}id",
            )
            conn.execute(fs_relationship.insert().values(name=rel.name, definition=rel.to_json()))

    def add_column(self, table_name: str, column: Column, *, relationship: str = "") -> Column:
        """Add a column to an existing table (``ALTER TABLE … ADD COLUMN``): safe on existing
        rows, which read the new column as null. A lookup also makes a one-to-many
        relationship, named ``relationship`` (its schema name, kept in its case) or
        ``<referenced>_<referencing>_<lookup>``."""
        if relationship:
            check_name("relationship", relationship.lower())
        table = self._schema.table(table_name)
        if table.intersect:
            raise SchemaError(f"{table_name!r} is an intersect table; it takes no columns")
        column = column.normalised()
        check_name("column", column.name)
        taken = set(table.columns) | {
            c.type_column for c in table.columns.values() if c.polymorphic
        }
        if column.name in taken or (column.polymorphic and column.type_column in taken):
            raise SchemaError(f"table {table_name!r} already has a column {column.name!r}")
        if column.system:
            raise SchemaError("system columns are added by the platform")
        for target in column.targets:
            if target not in self._schema and target != table_name:
                raise SchemaError(f"lookup {column.name!r} targets unknown table {target!r}")
        new = Table.from_json(table.to_json())
        new.columns[column.name] = column

        def work(conn: sa.Connection) -> None:
            add_column_ddl(conn, new, column)
            conn.execute(
                fs_table_t.update()
                .where(fs_table_t.c.name == table_name)
                .values(definition=new.to_json())
            )
            if column.type.value == "lookup":
                self._insert_lookup_relationships(conn, new, column, relationship)
            self._bump_generation(conn)

        self.transact(work)
        self.reload_schema()
        return column

    def set_table_offline(self, table_name: str, offline: bool) -> Table:
        """Turn a table's "can be taken offline" setting on or off (persisted; other
        processes pick it up with the next schema check)."""
        table = self._schema.table(table_name)
        if table.intersect:
            raise SchemaError(f"{table_name!r} is an intersect table; it cannot be taken offline")
        if table.offline == offline:
            return table
        new = Table.from_json(table.to_json())
        new.offline = offline

        def work(conn: sa.Connection) -> None:
            conn.execute(
                fs_table_t.update()
                .where(fs_table_t.c.name == table_name)
                .values(definition=new.to_json())
            )
            self._bump_generation(conn)

        self.transact(work)
        self.reload_schema()
        return self._schema.table(table_name)

    def drop_column(self, table_name: str, column_name: str) -> None:
        """Drop a custom column that no relationship uses (``ALTER TABLE … DROP COLUMN``)."""
        table = self._schema.table(table_name)
        column = table.columns.get(column_name)
        if column is None:
            raise SchemaError(f"table {table_name!r} has no column {column_name!r}")
        if column.system or column.name == table.primary_name:
            raise SchemaError(f"{table_name}.{column_name} is a system or primary name column")
        if column.type.value in ("lookup", "uniqueidentifier"):
            raise SchemaError(f"{table_name}.{column_name} is indexed (a lookup or an id column)")
        if not table.custom:
            raise SchemaError(f"{table_name!r} is a built-in table; its columns stay")
        keys = [k.schema for k in table.keys if column_name in k.columns]
        if keys:
            raise SchemaError(
                f"{table_name}.{column_name} is part of the alternate key {keys[0]!r}; "
                "delete the key first"
            )
        new = Table.from_json(table.to_json())
        del new.columns[column_name]
        quoted = self.engine.dialect.identifier_preparer.quote
        index = index_names(table, column)

        def work(conn: sa.Connection) -> None:
            if index and column.type in (ColumnType.FILE, ColumnType.IMAGE):
                conn.exec_driver_sql(f"DROP INDEX IF EXISTS {quoted(index)}")
            conn.exec_driver_sql(
                f"ALTER TABLE {quoted(table_name)} DROP COLUMN {quoted(column_name)}"
            )
            conn.execute(
                fs_table_t.update()
                .where(fs_table_t.c.name == table_name)
                .values(definition=new.to_json())
            )
            self._bump_generation(conn)

        self.transact(work)
        self.reload_schema()

    def create_many_to_many(
        self, name: str, first: str, second: str, *, intersect: str | None = None
    ) -> Relationship:
        """A many-to-many relationship between two tables, with its intersect table. ``name``
        is its schema name, kept in its case; it is known by its lowercase form."""
        schema_name, name = name, name.lower()
        check_name("relationship", name)
        if name in self._schema.relationships:
            raise SchemaError(f"relationship {name!r} already exists")
        a, b = self._schema.table(first), self._schema.table(second)
        cols = (
            (f"{a.name}idone", f"{b.name}idtwo")
            if a.name == b.name
            else (a.primary_id, b.primary_id)
        )
        table = define_intersect(intersect or name, (cols[0], a.name), (cols[1], b.name))
        rel = Relationship(
            name=name,
            kind=RelationshipKind.MANY_TO_MANY,
            referenced_table=a.name,
            referencing_table=b.name,
            referenced_column=cols[0],
            referencing_column=cols[1],
            intersect_table=table.name,
            schema_name=schema_name if schema_name != name else "",
        )

        def work(conn: sa.Connection) -> None:
            self._create_table(conn, table)
            conn.execute(fs_relationship.insert().values(name=rel.name, definition=rel.to_json()))
            self._bump_generation(conn)

        self.transact(work)
        self.reload_schema()
        return rel

    def _save_table(self, conn: sa.Connection, table: Table) -> None:
        conn.execute(
            fs_table_t.update()
            .where(fs_table_t.c.name == table.name)
            .values(definition=table.to_json())
        )

    def update_column(self, table_name: str, column: Column) -> Column:
        """Change a column's definition in place: labels, description, required level, length,
        range, options, file size. Its type, precision and targets stay (changing them would
        rewrite stored values); a string's length changes the SQL type on PostgreSQL, and
        shrinking below a stored value is refused there."""
        table = self._schema.table(table_name)
        old = table.columns.get(column.name)
        if old is None:
            raise SchemaError(f"table {table_name!r} has no column {column.name!r}")
        column = column.normalised()
        if old.system:
            column = replace(
                old,
                display_name=column.display_name,
                description=column.description,
            )
        for attr in ("type", "precision", "targets"):
            if getattr(old, attr) != getattr(column, attr):
                raise SchemaError(
                    f"{table_name}.{column.name}: its {attr} cannot change "
                    f"({getattr(old, attr)!r} to {getattr(column, attr)!r})"
                )
        column = replace(column, read_only=old.read_only, system=old.system)
        if old.schema_name and not column.schema_name:
            column = replace(column, schema_name=old.schema_name)
        new = Table.from_json(table.to_json())
        new.columns[column.name] = column
        quoted = self.engine.dialect.identifier_preparer.quote
        with self.write() as conn:
            shorter = (old.max_length or 0) > (column.max_length or 0)
            if column.type.value in ("string", "memo") and shorter:
                sql_col = self.sql_table(table_name).c[column.name]
                longest = conn.execute(sa.select(sa.func.max(sa.func.length(sql_col)))).scalar()
                if longest is not None and longest > (column.max_length or 0):
                    raise SchemaError(
                        f"{table_name}.{column.name}: a stored value has {longest} characters, "
                        f"more than the new maximum length {column.max_length}"
                    )
            if (
                column.type.value == "string"
                and column.max_length != old.max_length
                and self.dialect == "postgresql"
            ):
                conn.exec_driver_sql(
                    f"ALTER TABLE {quoted(table_name)} ALTER COLUMN {quoted(column.name)} "
                    f"TYPE VARCHAR({column.max_length})"
                )
            self._save_table(conn, new)
            self._bump_generation(conn)
        self.reload_schema()
        return column

    def create_key(self, table_name: str, key: AlternateKey) -> AlternateKey:
        """An alternate key: a unique index over its columns, built at once. Refused when
        rows already share values (Dataverse would mark the index Failed)."""
        table = self._schema.table(table_name)
        check_name("key", key.name)
        if table.intersect:
            raise SchemaError(f"{table_name!r} is an intersect table; it takes no keys")
        if any(k.name == key.name for k in table.keys):
            raise SchemaError(f"table {table_name!r} already has a key {key.schema!r}")
        if not key.columns or len(key.columns) > 16 or len(set(key.columns)) != len(key.columns):
            raise SchemaError("a key needs 1 to 16 distinct columns")
        for name in key.columns:
            col = table.columns.get(name)
            if col is None:
                raise SchemaError(f"table {table_name!r} has no column {name!r}")
            if col.type not in KEY_COLUMN_TYPES or col.polymorphic:
                raise SchemaError(
                    f"{table_name}.{name} is {col.type.value}: a key takes string, whole "
                    "number, decimal, date, lookup, choice or unique identifier columns"
                )
        if table.key_named(key.columns) is not None:
            raise SchemaError(f"table {table_name!r} already has a key on {list(key.columns)}")
        new = Table.from_json(table.to_json())
        new.keys = (*table.keys, key)
        sql = self.sql_table(table_name)
        with self.write() as conn:
            cols = [sql.c[n] for n in key.columns]
            dup = conn.execute(
                sa.select(*cols)
                .where(*(c.is_not(None) for c in cols))
                .group_by(*cols)
                .having(sa.func.count() > 1)
                .limit(1)
            ).first()
            if dup is not None:
                values = ", ".join(f"{n}={v!r}" for n, v in zip(key.columns, dup, strict=True))
                raise SchemaError(
                    f"key {key.schema!r}: several {table_name} rows share {values}; make them "
                    "unique first"
                )
            create_key_index(conn, table, key)
            self._save_table(conn, new)
            self._bump_generation(conn)
        self.reload_schema()
        return key

    def delete_key(self, table_name: str, key_name: str) -> None:
        table = self._schema.table(table_name)
        key = next((k for k in table.keys if k.name == key_name), None)
        if key is None:
            raise SchemaError(f"table {table_name!r} has no key {key_name!r}")
        new = Table.from_json(table.to_json())
        new.keys = tuple(k for k in table.keys if k.name != key_name)
        quoted = self.engine.dialect.identifier_preparer.quote
        with self.write() as conn:
            conn.exec_driver_sql(f"DROP INDEX {quoted(key_index_name(table, key))}")
            self._save_table(conn, new)
            self._bump_generation(conn)
        self.reload_schema()

    def delete_relationship(self, name: str) -> None:
        """Delete a custom relationship: a one-to-many one takes its lookup column with it
        (as in Dataverse), a many-to-many one its intersect table and links."""
        rel = self._schema.relationships.get(name)
        if rel is None:
            raise SchemaError(f"no relationship {name!r}")
        quoted = self.engine.dialect.identifier_preparer.quote
        if rel.kind is RelationshipKind.MANY_TO_MANY:
            intersect = self._schema.table(rel.intersect_table)
            with self.write() as conn:
                self._sql[intersect.name].drop(conn)
                conn.execute(fs_table_t.delete().where(fs_table_t.c.name == intersect.name))
                conn.execute(fs_relationship.delete().where(fs_relationship.c.name == rel.name))
                conn.execute(fs_change.delete().where(fs_change.c.tablename == intersect.name))
                self._bump_generation(conn)
            self.reload_schema()
            return
        table = self._schema.table(rel.referencing_table)
        column = table.columns[rel.referencing_column]
        builtin = {t.name: t for t in builtin_tables()}
        if (
            column.system
            or rel.name in {r.name for r in builtin_relationships()}
            or column.name in (builtin[table.name].columns if table.name in builtin else ())
        ):
            raise SchemaError(f"{rel.schema!r} is a system relationship and cannot be deleted")
        if any(rel.referencing_column in k.columns for k in table.keys):
            raise SchemaError(f"{table.name}.{column.name} is part of an alternate key")
        others = [
            r.name
            for r in self._schema.relationships.values()
            if r.name != rel.name
            and r.referencing_table == table.name
            and r.referencing_column == column.name
            and r.kind is RelationshipKind.ONE_TO_MANY
        ]
        new = Table.from_json(table.to_json())
        with self.write() as conn:
            conn.execute(fs_relationship.delete().where(fs_relationship.c.name == rel.name))
            if not others:
                index = index_names(table, column)
                if index:
                    conn.exec_driver_sql(f"DROP INDEX {quoted(index)}")
                conn.exec_driver_sql(
                    f"ALTER TABLE {quoted(table.name)} DROP COLUMN {quoted(column.name)}"
                )
                del new.columns[column.name]
                self._save_table(conn, new)
            self._bump_generation(conn)
        self.reload_schema()

    def delete_table(self, name: str) -> None:
        """Drop a custom table, its relationships and its change log."""
        table = self._schema.table(name)
        if not table.custom:
            raise SchemaError(f"{name!r} is a built-in table and cannot be deleted")
        users = [f"{t.name}.{c.name}" for t, c in self._schema.referencing(name) if t.name != name]
        if users:
            raise SchemaError(f"table {name!r} is still the target of lookups: {', '.join(users)}")

        def work(conn: sa.Connection) -> None:
            self._sql[name].drop(conn)
            conn.execute(fs_table_t.delete().where(fs_table_t.c.name == name))
            for rel in self._schema.relationships.values():
                if name in (rel.referenced_table, rel.referencing_table, rel.intersect_table):
                    conn.execute(fs_relationship.delete().where(fs_relationship.c.name == rel.name))
            conn.execute(fs_change.delete().where(fs_change.c.tablename == name))
            self._bump_generation(conn)

        self.transact(work)
        self.reload_schema()

    # -- upgrade ------------------------------------------------------------------------

    def upgrade(self) -> list[str]:
        """Bring the database to this version of fieldsync; safe to run again and on data.

        Creates missing system tables, adds built-in tables and columns that are missing
        (never drops or rewrites anything), and applies the named migrations not yet applied.
        Returns the names of the steps applied."""
        applied: list[str] = []
        clock = (self.clock.sequenced, self.clock.space)
        with self.engine.connect() as conn:
            conn = conn.execution_options(**{WRITE_OPTION: True})
            try:
                self._upgrade(conn, applied)
            except BaseException:
                self.clock.configure(*clock)  # rolled back: as the database still is
                raise
            finally:
                conn.info.pop(VERSIONS_LOCKED, None)
                conn.info.pop(REGISTERED, None)
                conn.info.pop(TABLES_HELD, None)
        self.reload_schema()
        return applied

    def _upgrade(self, conn: sa.Connection, applied: list[str]) -> None:
        with conn.begin():
            if self.dialect == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": UPGRADE_LOCK})
            catalog.metadata.create_all(conn, checkfirst=True)
            applied += self._seed_meta(conn)
            self._load_schema(conn)
            self._lock_versions(conn)  # before any business table: the one lock order
            applied += self._reconcile_builtin(conn)
            done = set(conn.execute(sa.select(fs_migration.c.name)).scalars())
            for name, step in MIGRATIONS:
                if name not in done:
                    step(self, conn)
                    conn.execute(fs_migration.insert().values(name=name, appliedon=utcnow()))
                    applied.append(name)
            if applied:
                self._bump_generation(conn)

    def _seed_meta(self, conn: sa.Connection) -> list[str]:
        steps = []
        if (
            conn.execute(
                sa.select(fs_sequence.c.value).where(fs_sequence.c.name == "version")
            ).first()
            is None
        ):
            conn.execute(fs_sequence.insert().values(name="version", value=0))
            steps.append("version sequence")
        if (
            conn.execute(
                sa.select(fs_meta.c.value).where(fs_meta.c.key == "schema_generation")
            ).first()
            is None
        ):
            conn.execute(fs_meta.insert().values(key="schema_generation", value="0"))
        if (
            conn.execute(sa.select(fs_meta.c.value).where(fs_meta.c.key == "token_secret")).first()
            is None
        ):
            conn.execute(
                fs_meta.insert().values(key="token_secret", value=secrets.token_urlsafe(48))
            )
            steps.append("token signing key")
        return steps

    def meta(self, key: str) -> str | None:
        with self.engine.connect() as conn, conn.begin():
            value: str | None = conn.execute(
                sa.select(fs_meta.c.value).where(fs_meta.c.key == key)
            ).scalar()
        return value

    def _reconcile_builtin(self, conn: sa.Connection) -> list[str]:
        steps = []
        tables = builtin_tables()
        names = frozenset(t.name for t in tables)
        for table in tables:
            existing = self._schema.tables.get(table.name)
            if existing is None:
                self._create_table(conn, table, also_known=names)
                steps.append(f"create table {table.name}")
            else:
                merged = Table.from_json(existing.to_json())
                for col in table.columns.values():
                    if col.name not in existing.columns:
                        add_column_ddl(conn, table, col)
                        merged.columns[col.name] = col
                        steps.append(f"add column {table.name}.{col.name}")
                if merged.columns.keys() != existing.columns.keys():
                    conn.execute(
                        fs_table_t.update()
                        .where(fs_table_t.c.name == table.name)
                        .values(definition=merged.to_json())
                    )
        self._load_schema(conn)
        for rel in builtin_relationships():
            if rel.name not in self._schema.relationships:
                conn.execute(
                    fs_relationship.insert().values(name=rel.name, definition=rel.to_json())
                )
                steps.append(f"create relationship {rel.name}")
        self._load_schema(conn)
        return steps

    def insert_rows(
        self, conn: sa.Connection, table: str, rows: list[dict[str, Any]], *, userid: Any
    ) -> None:
        """Insert rows as the platform (bootstrap and migrations): versions and change log
        included, no validation. The records service is the way in for everything else."""
        if not rows:
            return
        versions = self.allocate_versions(conn, len(rows))
        now = utcnow()
        pk = self._schema.table(table).primary_id
        for row, version in zip(rows, versions, strict=True):
            row["versionnumber"] = version
        conn.execute(self.sql_table(table).insert(), rows)
        conn.execute(
            fs_change.insert(),
            [
                {
                    "version": row["versionnumber"],
                    "tablename": table,
                    "recordid": row[pk],
                    "operation": "create",
                    "changed": None,
                    "old": None,
                    "userid": userid,
                    "changedon": now,
                }
                for row in rows
            ],
        )


def _bootstrap(store: Store, conn: sa.Connection) -> None:
    """The root business unit and the SYSTEM user every other row can point at."""
    now = utcnow()
    common = {
        "createdon": now,
        "modifiedon": now,
        "createdby": SYSTEM_USER_ID,
        "modifiedby": SYSTEM_USER_ID,
        "statecode": 0,
        "statuscode": 1,
    }
    store.insert_rows(
        conn,
        "businessunit",
        [
            {
                "businessunitid": ROOT_BUSINESS_UNIT_ID,
                "name": "fieldsync",
                "isdisabled": False,
                **common,
            }
        ],
        userid=SYSTEM_USER_ID,
    )
    store.insert_rows(
        conn,
        "systemuser",
        [
            {
                "systemuserid": SYSTEM_USER_ID,
                "fullname": "SYSTEM",
                "domainname": "system",
                "businessunitid": ROOT_BUSINESS_UNIT_ID,
                "owningbusinessunit": ROOT_BUSINESS_UNIT_ID,
                "isdisabled": False,
                **common,
            }
        ],
        userid=SYSTEM_USER_ID,
    )
    store.insert_rows(
        conn,
        "organization",
        [
            {
                "organizationid": ORGANIZATION_ID,
                "name": "fieldsync",
                "hierarchysecurity": False,
                "hierarchydepth": 3,
                "hierarchymanagerwrite": True,
                "languagecode": 1033,
                **common,
            }
        ],
        userid=SYSTEM_USER_ID,
    )


def _file_columns(store: Store, conn: sa.Connection) -> None:
    """fs_file gains who uploaded a file and an image's thumbnail (databases made before)."""
    have = {c["name"] for c in sa.inspect(conn).get_columns("fs_file")}
    for column in ("createdby", "thumbnail", "thumbnailsize"):
        if column not in have:
            kind = catalog.fs_file.c[column].type.compile(dialect=conn.dialect)
            conn.exec_driver_sql(f"ALTER TABLE fs_file ADD COLUMN {column} {kind}")


def _file_references(store: Store, conn: sa.Connection) -> None:
    """fs_file gains ``attachedon`` (set for every file a row holds today, so that only new
    uploads count as not yet attached), and every file and image column its index."""
    fs_file = catalog.fs_file
    have = {c["name"] for c in sa.inspect(conn).get_columns("fs_file")}
    if "attachedon" not in have:
        kind = fs_file.c.attachedon.type.compile(dialect=conn.dialect)
        conn.exec_driver_sql(f"ALTER TABLE fs_file ADD COLUMN attachedon {kind}")
    for table in store.schema.tables.values():
        for col in table.columns.values():
            if col.type not in (ColumnType.FILE, ColumnType.IMAGE):
                continue
            add_index_ddl(conn, table, col)
            held = store.sql_table(table.name).c[col.name]
            conn.execute(
                fs_file.update()
                .where(
                    fs_file.c.attachedon.is_(None),
                    fs_file.c.fileid.in_(sa.select(held).where(held.is_not(None))),
                )
                .values(attachedon=fs_file.c.createdon)
            )


def _applied_by_user(store: Store, conn: sa.Connection) -> None:
    """fs_sync_applied is keyed by (user, device, client change id); databases made before
    keyed it by device and change id only. The rows are kept."""
    key = sa.inspect(conn).get_pk_constraint("fs_sync_applied")["constrained_columns"]
    if key and key[0] == "userid":
        return  # made by this version
    columns = ", ".join(c.name for c in catalog.fs_sync_applied.columns)
    conn.exec_driver_sql(
        f"CREATE TABLE fs_sync_applied_0004 AS SELECT {columns} FROM fs_sync_applied"
    )
    conn.exec_driver_sql("DROP TABLE fs_sync_applied")
    catalog.fs_sync_applied.create(conn)
    conn.exec_driver_sql(
        f"INSERT INTO fs_sync_applied ({columns}) SELECT {columns} FROM fs_sync_applied_0004"
    )
    conn.exec_driver_sql("DROP TABLE fs_sync_applied_0004")


def _session_grace_columns(store: Store, conn: sa.Connection) -> None:
    """fs_session gains what accepting a just-rotated refresh token needs (databases made
    before): the seed its tokens derive from, the previous token's hash, when it rotated."""
    have = {c["name"] for c in sa.inspect(conn).get_columns("fs_session")}
    for column in ("seed", "previoushash", "rotatedon"):
        if column not in have:
            kind = catalog.fs_session.c[column].type.compile(dialect=conn.dialect)
            conn.exec_driver_sql(f"ALTER TABLE fs_session ADD COLUMN {column} {kind}")


def _device_inventory_columns(store: Store, conn: sa.Connection) -> None:
    """fs_device gains the inventory verdict, the last receipt and the remote wipe
    (databases made before; the inventory and receipt tables are new and made whole)."""
    have = {c["name"] for c in sa.inspect(conn).get_columns("fs_device")}
    for column in (
        "inventoryon",
        "inventorystatus",
        "receipton",
        "wiperequestedon",
        "wiperequestedby",
        "wipedon",
    ):
        if column not in have:
            kind = catalog.fs_device.c[column].type.compile(dialect=conn.dialect)
            conn.exec_driver_sql(f"ALTER TABLE fs_device ADD COLUMN {column} {kind}")


def _file_batches(store: Store, conn: sa.Connection) -> None:
    """fs_file gains ``isimage`` (databases made before: every file with a thumbnail is an
    image), so that an image whose thumbnail is still to be made is known as one; fs_upload
    gains ``stamp``."""
    fs_file = catalog.fs_file
    if "stamp" not in {c["name"] for c in sa.inspect(conn).get_columns("fs_upload")}:
        kind = catalog.fs_upload.c.stamp.type.compile(dialect=conn.dialect)
        conn.exec_driver_sql(f"ALTER TABLE fs_upload ADD COLUMN stamp {kind}")
    have = {c["name"] for c in sa.inspect(conn).get_columns("fs_file")}
    if "isimage" not in have:
        kind = fs_file.c.isimage.type.compile(dialect=conn.dialect)
        conn.exec_driver_sql(f"ALTER TABLE fs_file ADD COLUMN isimage {kind}")
    conn.execute(
        fs_file.update()
        .where(fs_file.c.isimage.is_(None), fs_file.c.thumbnail.is_not(None))
        .values(isimage=True)
    )
    for index in fs_file.indexes:
        index.create(conn, checkfirst=True)


def _version_sequence(store: Store, conn: sa.Connection) -> None:
    """PostgreSQL takes versions from a sequence (no lock held until commit), starting after
    the counter's value, and gives this store its advisory key space (see
    :mod:`fieldsync.store.versions`). SQLite keeps the counter. The counter row stays (it is
    no longer read on PostgreSQL): nothing is rewritten, and a database keeps every version."""
    if store.dialect != "postgresql":
        return
    counter = conn.execute(
        sa.select(fs_sequence.c.value).where(fs_sequence.c.name == "version")
    ).scalar_one()
    top = conn.execute(sa.select(sa.func.max(fs_change.c.version))).scalar()
    start = max(int(counter), int(top or 0)) + 1
    conn.exec_driver_sql(
        f"CREATE SEQUENCE IF NOT EXISTS {SEQUENCE} AS bigint START WITH {start} CACHE 1"
    )
    if conn.execute(sa.select(fs_meta.c.value).where(fs_meta.c.key == SPACE_KEY)).first() is None:
        space = secrets.randbelow(32767) + 1
        conn.execute(fs_meta.insert().values(key=SPACE_KEY, value=str(space)))
    # the rest of this upgrade (later migrations) already takes versions from the sequence;
    # it runs alone (the upgrade's locks), so no reader can pass what it takes
    configure_from_database(store.clock, conn)


MIGRATIONS: list[tuple[str, Any]] = [
    ("0001_bootstrap_organisation", _bootstrap),
    ("0002_change_notifications", install_trigger),
    ("0003_files", _file_columns),
    ("0004_file_references", _file_references),
    ("0004_sync_applied_by_user", _applied_by_user),
    ("0004_refresh_grace", _session_grace_columns),
    ("0005_device_inventory", _device_inventory_columns),
    ("0006_file_batches", _file_batches),
    ("0007_version_sequence", _version_sequence),
]
