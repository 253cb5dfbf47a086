"""The device's SQLite, with the standard library only: connections, the DDL of the profile
tables (from the table definitions the handshake sends) and each column's value conversion.

Values are stored as the server's SQLite store stores them, so a replica written by an earlier
version of the SDK reads the same: ids as 32 hex digits, date-times as UTC text
``YYYY-MM-DD HH:MM:SS.ffffff``, dates as ``YYYY-MM-DD``, decimal and money as integers scaled
by 10^precision (as zero-padded text, offset by 10^12, past 7 places), multi-choice as
``,1,3,``, booleans as 0 or 1. Per column, :class:`Codec` turns a wire value (or a Python value)
into what is stored, and what is stored into a Python value.
"""

from __future__ import annotations

import datetime as dt
import re
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any

from fieldsync.client.transport import StorageFull
from fieldsync.schema.model import Column, ColumnType, Table

T = ColumnType
MAX_SCALED_PLACES = 7  # as fieldsync.store.sqltypes.ExactDecimal
TEXT_OFFSET = Decimal(10) ** 12
TEXT_WIDTH = 24
TEXT_TYPES = (T.STRING, T.MEMO)
ID_TYPES = (T.LOOKUP, T.UNIQUEIDENTIFIER, T.FILE, T.IMAGE)


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# -- values ----------------------------------------------------------------------------------


def _store_id(value: Any) -> str:
    if isinstance(value, uuid.UUID):
        return value.hex
    if isinstance(value, str) and len(value) == 36:
        return value.replace("-", "").lower()
    return uuid.UUID(str(value)).hex


def _load_id(value: Any) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


def _store_moment(value: Any) -> str:
    """An ISO 8601 time (or a datetime) as SQLite holds it, in UTC."""
    if isinstance(value, str) and len(value) >= 25 and value.endswith("+00:00"):
        frac = value[20:-6] if value[19] == "." else ""
        return f"{value[:10]} {value[11:19]}.{frac.ljust(6, '0')}"
    moment = dt.datetime.fromisoformat(value) if isinstance(value, str) else value
    if moment.tzinfo is not None:
        moment = moment.astimezone(dt.UTC).replace(tzinfo=None)
    text: str = moment.strftime("%Y-%m-%d %H:%M:%S.%f")
    return text


def _load_moment(value: Any) -> dt.datetime:
    moment = value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value))
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)


def _store_date(value: Any) -> str:
    if isinstance(value, dt.datetime):
        return value.date().isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    return dt.date.fromisoformat(str(value)).isoformat()


def _load_date(value: Any) -> dt.date:
    return value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value))


def _store_bool(value: Any) -> int:
    return 1 if value else 0


def _load_bool(value: Any) -> bool:
    return bool(value)


def _store_choices(value: Any) -> str | None:
    items = sorted({int(v) for v in value})
    return "," + ",".join(str(v) for v in items) + "," if items else None


def _load_choices(value: Any) -> tuple[int, ...]:
    return tuple(int(v) for v in str(value).strip(",").split(",") if v)


def _store_float(value: Any) -> float:
    return float(value)


def _decimal_codec(scale: int) -> tuple[Callable[[Any], Any], Callable[[Any], Any]]:
    quantum = Decimal(1).scaleb(-scale)
    scaled = scale <= MAX_SCALED_PLACES

    def store(value: Any) -> Any:
        number = value if isinstance(value, Decimal) else Decimal(str(value))
        if scaled:
            return int(number.scaleb(scale).to_integral_value(rounding=ROUND_HALF_EVEN))
        shifted = (number + TEXT_OFFSET).scaleb(scale)
        if shifted < 0:
            return ""  # below every stored value (only ever a bound comparison value)
        text = str(int(shifted.to_integral_value(rounding=ROUND_HALF_EVEN)))
        return text.zfill(TEXT_WIDTH) if len(text) <= TEXT_WIDTH else "9" * (TEXT_WIDTH + 1)

    def load(value: Any) -> Decimal:
        if isinstance(value, Decimal):
            return value.quantize(quantum)
        if scaled and isinstance(value, int):
            return Decimal(value).scaleb(-scale).quantize(quantum)
        if isinstance(value, float):
            return Decimal(str(value)).quantize(quantum)
        return (Decimal(int(value)).scaleb(-scale) - TEXT_OFFSET).quantize(quantum)

    return store, load


def _same(value: Any) -> Any:
    return value


@dataclass(frozen=True)
class Codec:
    """One SQL column: its declared type, whether it is text (compared case-insensitively),
    ``store`` (a wire or Python value, never None, to what SQLite holds) and ``load`` (what
    SQLite holds, never None, to the Python value)."""

    sql_type: str
    text: bool
    store: Callable[[Any], Any]
    load: Callable[[Any], Any]
    identity: bool = False  # store and load are both the identity

    def to_sql(self, value: Any) -> Any:
        return None if value is None else self.store(value)

    def from_sql(self, value: Any) -> Any:
        return None if value is None else self.load(value)


TYPE_COLUMN = Codec("VARCHAR(64)", True, _same, _same, identity=True)


def codec(col: Column) -> Codec:
    """The storage of one logical column (a polymorphic lookup's type column is
    :data:`TYPE_COLUMN`)."""
    t = col.type
    if t is T.STRING:
        length = f"({col.max_length})" if col.max_length else ""
        return Codec(f"VARCHAR{length}", True, _same, _same, identity=True)
    if t is T.MEMO:
        return Codec("TEXT", True, _same, _same, identity=True)
    if t in (T.INTEGER, T.CHOICE):
        return Codec("INTEGER", False, int, _same)
    if t is T.BIGINT:
        return Codec("BIGINT", False, int, _same)
    if t in (T.DECIMAL, T.MONEY):
        scale = col.precision or 0
        store, load = _decimal_codec(scale)
        return Codec("BIGINT" if scale <= MAX_SCALED_PLACES else "VARCHAR(24)", False, store, load)
    if t is T.FLOAT:
        return Codec("DOUBLE", False, _store_float, _same)
    if t is T.BOOLEAN:
        return Codec("BOOLEAN", False, _store_bool, _load_bool)
    if t is T.DATETIME:
        return Codec("DATETIME", False, _store_moment, _load_moment)
    if t is T.DATE:
        return Codec("DATE", False, _store_date, _load_date)
    if t is T.MULTICHOICE:
        return Codec("TEXT", False, _store_choices, _load_choices)
    if t in ID_TYPES:
        return Codec("CHAR(32)", False, _store_id, _load_id)
    raise AssertionError(f"no SQLite type for {t}")  # pragma: no cover


def sql_columns(table: Table) -> dict[str, Codec]:
    """The SQL columns of a table, in order (a polymorphic lookup has two)."""
    out: dict[str, Codec] = {}
    for col in table.columns.values():
        out[col.name] = codec(col)
        if col.polymorphic:
            out[col.type_column] = TYPE_COLUMN
    return out


def create_table(table: Table) -> list[str]:
    """CREATE TABLE and CREATE INDEX statements of a profile table, as the server's SQLite
    store declares it (the same declared types, so the same affinities)."""
    lines = []
    for name, c in sql_columns(table).items():
        lines.append(f"{quote(name)} {c.sql_type}{' NOT NULL' if name == table.primary_id else ''}")
    lines.append(f"PRIMARY KEY ({quote(table.primary_id)})")
    if table.intersect:
        lookups = ", ".join(quote(c.name) for c in table.lookups())
        lines.append(f"CONSTRAINT {quote(f'uq_{table.name}'[:63])} UNIQUE ({lookups})")
    out = [f"CREATE TABLE IF NOT EXISTS {quote(table.name)} (\n\t" + ", \n\t".join(lines) + "\n)"]
    return out + [create for _, create in lookup_indexes(table)]


def lookup_indexes(table: Table) -> list[tuple[str, str]]:
    """The (non-unique) indexes of a profile table, on its lookups and ``versionnumber``:
    each one's name and CREATE INDEX IF NOT EXISTS statement."""
    out = []
    for col in table.columns.values():
        if col.name != table.primary_id and (col.name == "versionnumber" or col.type in ID_TYPES):
            index = f"ix_{table.name}_{col.name}"[:63]
            out.append(
                (
                    index,
                    f"CREATE INDEX IF NOT EXISTS {quote(index)} ON {quote(table.name)} "
                    f"({quote(col.name)})",
                )
            )
    return out


# -- connections -----------------------------------------------------------------------------


def _lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


def _regexp(pattern: str | None, value: Any) -> bool | None:
    if pattern is None or value is None:
        return None
    body = pattern[1:-1] if pattern.startswith("^") else pattern
    return re.fullmatch(body, str(value), re.DOTALL) is not None


class Database:
    """A pool of connections to one SQLite file: WAL, ``synchronous=FULL`` (a local write
    survives a power cut), Unicode-aware ``lower`` and ``REGEXP`` for local queries. A read is
    a deferred transaction, a write an immediate one; a connection in use by a transaction is
    not handed out again, so a read inside a write gets a connection of its own."""

    def __init__(self, path: Path, *, pool_size: int = 2) -> None:
        self.path = path
        self.pool_size = pool_size
        self.on_connect: list[Callable[[sqlite3.Connection], None]] = []
        self._idle: list[sqlite3.Connection] = []
        self._generation = 0
        self._born: dict[int, int] = {}
        self._lock = threading.Lock()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30, check_same_thread=False, isolation_level=None)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA busy_timeout=30000")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.create_function("lower", 1, _lower, deterministic=True)
        conn.create_function("regexp", 2, _regexp, deterministic=True)
        for hook in self.on_connect:
            hook(conn)
        return conn

    def _acquire(self) -> sqlite3.Connection:
        with self._lock:
            if self._idle:
                return self._idle.pop()
            generation = self._generation
        conn = self._connect()
        with self._lock:
            self._born[id(conn)] = generation
        return conn

    def _release(self, conn: sqlite3.Connection) -> None:
        with self._lock:
            current = self._born.get(id(conn)) == self._generation
            if current and len(self._idle) < self.pool_size:
                self._idle.append(conn)
                return
            self._born.pop(id(conn), None)
        conn.close()

    def dispose(self) -> None:
        """Close the idle connections; the ones in use close when they are given back."""
        with self._lock:
            idle, self._idle = self._idle, []
            self._generation += 1
            for conn in idle:
                self._born.pop(id(conn), None)
        for conn in idle:
            conn.close()

    @contextmanager
    def transaction(self, *, write: bool) -> Iterator[sqlite3.Connection]:
        conn = self._acquire()
        try:
            try:
                conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                yield conn
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            if "full" in str(exc).lower():
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise StorageFull(
                    f"the device's storage is full ({self.path}); nothing was written: free "
                    "some space and try again"
                ) from exc
            raise
        finally:
            self._release(conn)
