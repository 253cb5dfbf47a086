"""Where versions come from, and how far a reader of the change log may go.

**SQLite** (one writer at a time) takes versions from the counter row ``fs_sequence``
(``UPDATE … RETURNING``) inside the write transaction, whose ``BEGIN IMMEDIATE`` already
serialises writers: versions are handed out in commit order, and every version up to the
counter a reader sees is committed or rolled back for good.

**PostgreSQL** takes versions from a sequence, ``fs_version_seq`` (``nextval``: no lock held
until commit), so writers run side by side and a transaction that took version 41 may commit
after one that took 42. A reader must then not pass 41 while it may still commit. Each
writing transaction, before it takes its first version, registers the sequence's current
value ``L0`` in an advisory lock held until it ends (``pg_advisory_xact_lock_shared`` on a
key in this store's own key space, so another schema in the same database only delays, never
misleads, it). Every version it takes is above ``L0``. The **horizon** a reader may go to is

    horizon = min(the sequence's value, every registered L0)

read in that order, in one statement: the sequence first. Every version at or below the
horizon is committed or rolled back for good. Proof: a version *v* ≤ horizon ≤ the sequence's
value was taken before the statement read the sequence, so its transaction had registered
``L0 < v`` before that; if it were still running, its lock would be in ``pg_locks`` and the
horizon would be at most ``L0 < v``. PostgreSQL makes a commit visible before it releases the
transaction's locks, so a later statement sees every committed version at or below the
horizon. A reader therefore computes the horizon in a statement of its own and reads the
change log in a later one (``READ COMMITTED``: each statement takes a new snapshot), up to
the horizon. A crashed or killed writer's locks go with its session, so nothing can hold the
horizon back after it is gone; a long-running writer holds it back (readers lag, they never
skip).

The horizon never goes down: a new writer registers a value at least the sequence's value, and
an older registration only ever disappears.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from fieldsync.store.catalog import fs_sequence

SEQUENCE = "fs_version_seq"
SPACE_KEY = "version_lock_space"  # fs_meta: this store's advisory key space (1..32767)
SPACE_SHIFT = 48  # a registration's key: space << 48 | L0 (versions stay below 2**48)
REGISTERED = "fieldsync_versions_registered"  # conn.info: this transaction registered its L0

# The first versions of a transaction: register L0, then take them, in one round trip. The
# registration is a materialised CTE the outer query reads before it can form the row whose
# target list calls nextval, so the lock is held before any version is taken.
_REGISTER_AND_NEXT = sa.text(
    "WITH registered AS MATERIALIZED ("
    " SELECT pg_advisory_xact_lock_shared((CAST(:space AS bigint) << 48)"
    f" | (CASE WHEN is_called THEN last_value ELSE last_value - 1 END)) FROM {SEQUENCE})"
    f" SELECT nextval('{SEQUENCE}') FROM registered, generate_series(1, :n)"
)
_NEXT = sa.text(f"SELECT nextval('{SEQUENCE}')")
_NEXT_MANY = sa.text(f"SELECT nextval('{SEQUENCE}') FROM generate_series(1, :n)")
# The sequence is read first: the lock scan is a subquery correlated with its row, so it runs
# after the row is read. pg_locks shows a 64-bit advisory key as classid (high half) and
# objid (low half) with objsubid 1.
_HORIZON = sa.text(
    "SELECT CASE WHEN s.is_called THEN s.last_value ELSE s.last_value - 1 END,"
    " (SELECT min(((l.classid::bigint & 65535) << 32) | l.objid::bigint) FROM pg_locks l"
    "   WHERE l.locktype = 'advisory' AND l.objsubid = 1"
    "   AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    "   AND (l.classid::bigint >> 16) = CAST(:space AS bigint) AND s.last_value IS NOT NULL)"
    f" FROM {SEQUENCE} s"
)
_COUNTER = sa.select(fs_sequence.c.value).where(fs_sequence.c.name == "version")


class VersionClock:
    """Hands out versions and says how far a reader may go, for one store's database."""

    def __init__(self, dialect: str) -> None:
        self.dialect = dialect
        self.sequenced = False  # PostgreSQL with fs_version_seq (migration 0007)
        self.space = 0
        self._lock = threading.Lock()
        self.known = 0  # the highest horizon computed so far (it never goes down)

    def configure(self, sequenced: bool, space: int) -> None:
        self.sequenced = sequenced and self.dialect == "postgresql"
        self.space = space

    def take(self, conn: sa.Connection, count: int) -> Sequence[int]:
        """``count`` new versions, in increasing order. On the counter they are consecutive;
        from the sequence, other writers' versions may fall between them."""
        if not self.sequenced:
            stmt = (
                fs_sequence.update()
                .where(fs_sequence.c.name == "version")
                .values(value=fs_sequence.c.value + count)
                .returning(fs_sequence.c.value)
            )
            last: int = conn.execute(stmt).scalar_one()
            return range(last - count + 1, last + 1)
        if not conn.info.get(REGISTERED):
            taken = conn.execute(_REGISTER_AND_NEXT, {"space": self.space, "n": count})
            conn.info[REGISTERED] = True
            return sorted(int(v) for v in taken.scalars())
        if count == 1:
            return [int(conn.execute(_NEXT).scalar_one())]
        return sorted(int(v) for v in conn.execute(_NEXT_MANY, {"n": count}).scalars())

    def horizon(self, conn: sa.Connection) -> int:
        """The highest version a reader may pass: every version at or below it is committed
        or rolled back for good. On PostgreSQL call it in a statement of its own *before* the
        statements it bounds (see the module's notes); on SQLite it is the counter as the
        reader's transaction sees it."""
        if not self.sequenced:
            value: int = conn.execute(_COUNTER).scalar_one()
            return value
        last, oldest = conn.execute(_HORIZON, {"space": self.space}).one()
        low = int(last) if oldest is None else min(int(last), int(oldest) & ((1 << 48) - 1))
        with self._lock:
            self.known = max(self.known, low)
        return low


_CLOCKS: weakref.WeakKeyDictionary[Engine, VersionClock] = weakref.WeakKeyDictionary()


def register(engine: Engine, clock: VersionClock) -> None:
    _CLOCKS[engine] = clock


def clock_of(conn: sa.Connection) -> VersionClock:
    """The clock of the store a connection belongs to (readers that get only a connection)."""
    clock = _CLOCKS.get(conn.engine)
    if clock is None:  # an engine no store opened (a test's own): read its database as is
        clock = VersionClock(conn.dialect.name)
        configure_from_database(clock, conn)
        _CLOCKS[conn.engine] = clock
    return clock


def configure_from_database(clock: VersionClock, conn: sa.Connection) -> None:
    if clock.dialect != "postgresql":
        clock.configure(False, 0)
        return
    found = conn.execute(
        sa.text(
            f"SELECT to_regclass('{SEQUENCE}') IS NOT NULL AND to_regclass('fs_meta') IS NOT NULL"
        )
    ).scalar()
    value = None
    if found:
        value = conn.execute(
            sa.text("SELECT value FROM fs_meta WHERE key = :k"), {"k": SPACE_KEY}
        ).scalar()
    clock.configure(bool(found) and value is not None, int(value or 0))


def horizon(conn: sa.Connection) -> int:
    """:meth:`VersionClock.horizon` of the connection's store."""
    return clock_of(conn).horizon(conn)
