"""Version ordering: a reader that follows the change log never has a version filled in
behind its cursor, even with many concurrent writers (the trap of DESIGN.md: commit order is
not sequence order). On PostgreSQL writers take versions from a sequence and commit in any
order; readers go only up to the horizon (``fieldsync.store.versions``)."""

from __future__ import annotations

import contextlib
import datetime as dt
import random
import threading
import time
import uuid
from collections.abc import Iterator
from typing import ClassVar

import pytest
import sqlalchemy as sa
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from fieldsync.platform import build
from fieldsync.records.plugins import PluginContext, PluginRegistry
from fieldsync.records.service import Records
from fieldsync.security.context import ContextCache
from fieldsync.store.catalog import fs_change, fs_sequence
from fieldsync.store.changes import read_changes
from fieldsync.store.engine import WRITE_OPTION
from fieldsync.store.store import Store

WRITERS = 4
WRITES_EACH = 25


@pytest.fixture
def pg_store(pg_schema_url: str) -> Iterator[Store]:
    s = Store.open(pg_schema_url)
    try:
        yield s
    finally:
        s.close()


def _slow_commit(ctx: PluginContext) -> None:
    # Runs after the versions are taken and before the commit: widens the window in which a
    # naive sequence would let a later version commit first.
    time.sleep(random.uniform(0, 0.004))


def test_reader_never_sees_a_version_filled_in_behind_it(
    store: Store, records: Records, plugins: PluginRegistry
) -> None:
    plugins.register("*", "create", "post-operation", _slow_commit, row_only=True)
    plugins.register("*", "update", "post-operation", _slow_commit, row_only=True)
    seed = records.create_many("account", [{"name": f"seed {i}"} for i in range(WRITERS)])
    with store.read() as conn:
        start = store.current_version(conn)

    stop = threading.Event()
    seen: list[int] = []
    late: list[tuple[int, int]] = []
    errors: list[BaseException] = []

    def reader() -> None:
        # follows the log as sync does (read_changes: up to the horizon), and looks at every
        # committed version (a plain read) to find one that landed behind its cursor
        cursor = start
        while True:
            finished = stop.is_set()
            with store.read() as conn:
                while True:
                    page = read_changes(conn, cursor, limit=1000)
                    followed.extend(c.version for c in page.changes)
                    cursor = page.cursor
                    if not page.more:
                        break
                committed = list(
                    conn.execute(
                        sa.select(fs_change.c.version)
                        .where(fs_change.c.version > start)
                        .order_by(fs_change.c.version)
                    ).scalars()
                )
            for v in committed:
                if v in seen_set:
                    continue
                if v <= passed[0]:
                    late.append((v, passed[0]))
                seen_set.add(v)
                seen.append(v)
            passed[0] = cursor
            if finished:
                return

    def writer(n: int) -> None:
        try:
            for i in range(WRITES_EACH):
                if i % 2:
                    records.update("account", seed[n], {"telephone1": f"{n}-{i}"})
                else:
                    records.create("contact", {"lastname": f"w{n} {i}"})
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    seen_set: set[int] = set()
    passed = [start]  # the cursor after the previous round
    followed: list[int] = []  # what the reader got, in order
    r = threading.Thread(target=reader)
    r.start()
    threads = [threading.Thread(target=writer, args=(n,)) for n in range(WRITERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    r.join()

    assert not errors, errors
    assert late == [], f"versions committed behind a reader's cursor: {late[:5]}"
    with store.read() as conn:
        committed = list(
            conn.execute(
                sa.select(fs_change.c.version)
                .where(fs_change.c.version > start)
                .order_by(fs_change.c.version)
            ).scalars()
        )
    assert len(committed) == WRITERS * WRITES_EACH
    assert sorted(seen) == committed
    assert followed == committed, "the reader got every change once, in version order"


def test_versions_strictly_increase_and_match_rows(store: Store, records: Records) -> None:
    ids = records.create_many("account", [{"name": f"a{i}"} for i in range(5)])
    v_update = records.update("account", ids[0], {"name": "changed"})
    rows = records.retrieve_multiple("account")
    versions = sorted(r["versionnumber"] for r in rows)
    assert len(set(versions)) == 5
    assert v_update == max(versions)
    with store.read() as conn:
        logged = list(
            conn.execute(
                sa.select(fs_change.c.version).where(fs_change.c.tablename == "account")
            ).scalars()
        )
    assert logged == sorted(logged)
    assert set(versions) <= set(logged)


@pytest.mark.parametrize("count", [1, 3])
def test_allocate_versions_returns_increasing_versions(store: Store, count: int) -> None:
    with store.write() as conn:
        first = list(store.allocate_versions(conn, count))
        second = list(store.allocate_versions(conn, count))
    assert len(set(first + second)) == 2 * count
    assert first == sorted(first)
    assert second == sorted(second)
    assert first[-1] < second[0]
    if store.dialect == "sqlite":  # the counter: consecutive ranges
        assert second[0] == first[-1] + 1
        assert first == list(range(first[0], first[0] + count))
    with store.read() as conn:
        assert store.current_version(conn) >= second[-1]


def test_versions_outside_a_write_transaction_are_refused(store: Store) -> None:
    with store.read() as conn, pytest.raises(RuntimeError):
        store.allocate_versions(conn, 1)


# -- out of commit order: PostgreSQL's writers, interleaved by hand ----------------------


class _Writer:
    """An open concurrent write transaction on its own connection, as Store.write opens one
    (several at once in one thread, which Store.write refuses)."""

    opened: ClassVar[list[_Writer]] = []  # every one opened, closed in the end whatever happened

    def __init__(self, store: Store) -> None:
        self.store = store
        self.conn = store.engine.connect().execution_options(**{WRITE_OPTION: True})
        _Writer.opened.append(self)
        self.conn.begin()
        store._lock_versions(self.conn, concurrent=True)
        self.versions: list[int] = []

    def take(self, count: int = 1, table: str = "account") -> list[int]:
        taken = list(self.store.allocate_versions(self.conn, count))
        now = dt.datetime.now(dt.UTC)
        self.conn.execute(
            fs_change.insert(),
            [
                {
                    "version": v,
                    "tablename": table,
                    "recordid": uuid.uuid4(),
                    "operation": "create",
                    "changedon": now,
                }
                for v in taken
            ],
        )
        self.versions += taken
        return taken

    def end(self, commit: bool) -> None:
        if self.conn.closed:
            return
        try:
            if commit:
                self.conn.commit()
            else:
                self.conn.rollback()
        finally:
            self.conn.info.clear()
            self.conn.close()

    @classmethod
    def close_all(cls) -> None:
        while cls.opened:
            with contextlib.suppress(sa.exc.DBAPIError):
                cls.opened.pop().end(commit=False)


@pytest.fixture
def pg_writers(pg_store: Store) -> Iterator[Store]:
    """The PostgreSQL store; every _Writer opened is closed (rolled back) afterwards."""
    try:
        yield pg_store
    finally:
        _Writer.close_all()


def _committed(store: Store, after: int) -> list[int]:
    with store.read() as conn:
        return list(
            conn.execute(
                sa.select(fs_change.c.version)
                .where(fs_change.c.version > after)
                .order_by(fs_change.c.version)
            ).scalars()
        )


def _follow(store: Store, cursor: int) -> tuple[list[int], int]:
    got: list[int] = []
    with store.read() as conn:
        while True:
            page = read_changes(conn, cursor, limit=1000)
            got += [c.version for c in page.changes]
            cursor = page.cursor
            if not page.more:
                return got, cursor


@pytest.mark.postgres
def test_a_later_version_committed_first_waits_for_the_earlier(pg_writers: Store) -> None:
    store = pg_writers
    with store.read() as conn:
        start = store.current_version(conn)
    early, late = _Writer(store), _Writer(store)
    try:
        (v1,) = early.take()
        (v2,) = late.take()
        assert v1 < v2
        late.end(commit=True)
        # committed out of version order: the plain log shows v2 with v1 still open...
        assert _committed(store, start) == [v2]
        # ...and a reader following it stays below v1 (without the horizon it would pass v1)
        got, cursor = _follow(store, start)
        assert got == []
        assert cursor < v1
        with store.read() as conn:
            assert store.current_version(conn) < v1
            page = read_changes(conn, start, bounded=False)
            assert [c.version for c in page.changes] == [v2]  # only for "anything since?"
        early.end(commit=True)
        got, cursor = _follow(store, cursor)
        assert got == [v1, v2]
        assert cursor == v2
    finally:
        _Writer.close_all()


@pytest.mark.postgres
def test_a_rolled_back_or_killed_writer_no_longer_holds_readers_back(pg_writers: Store) -> None:
    store = pg_writers
    with store.read() as conn:
        start = store.current_version(conn)
    stuck, other = _Writer(store), _Writer(store)
    (v1,) = stuck.take()
    (v2,) = other.take()
    other.end(commit=True)
    assert _follow(store, start)[0] == []
    # the session dies (a killed server process): its locks go with it
    with store.engine.connect() as admin:
        pid = stuck.conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
        admin.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": pid})
    with contextlib.suppress(sa.exc.DBAPIError):
        stuck.end(commit=False)
    got, cursor = _follow(store, start)
    assert got == [v2]
    assert cursor == v2
    assert v1 not in _committed(store, start)


@pytest.mark.postgres
def test_a_security_context_is_not_kept_while_a_change_below_its_stamp_may_commit(
    pg_writers: Store,
) -> None:
    """The context cache reuses a context while the newest version of the tables contexts
    are made of stays the same. A role change still in flight with a smaller version than a
    committed one would not move that stamp when it commits: a context loaded meanwhile is
    used but not kept, and the next request loads afresh."""
    store = pg_writers
    cache = ContextCache(store)
    user = build(store).org.user("ctx-user")
    cache.get(user)
    early, late = _Writer(store), _Writer(store)
    early.take(table="role")  # a change to a role, still in flight...
    late.take(table="role")
    late.end(commit=True)  # ...and a later one, committed first
    loads = cache.loads
    cache.get(user)
    cache.get(user)
    assert cache.loads == loads + 2  # loaded each time, never kept
    early.end(commit=True)  # the stamp does not move, but the context is not kept on it
    cache.get(user)
    assert cache.loads == loads + 3
    cache.get(user)
    assert cache.loads == loads + 3  # now below the horizon: kept and reused
    assert cache.hits >= 1


@pytest.mark.postgres
def test_concurrent_writers_are_not_serialised(pg_store: Store) -> None:
    """Two concurrent units of work hold their transactions open at once (neither waits for
    the other to commit), where the counter row made the second wait."""
    store = pg_store
    inside = threading.Barrier(2, timeout=10)

    def work(conn: sa.Connection) -> int:
        (v,) = store.allocate_versions(conn, 1)
        inside.wait()  # both are inside their transactions here
        return v

    results: list[int] = []
    threads = [
        threading.Thread(target=lambda: results.append(store.transact(work, concurrent=True)))
        for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 2


class _Interleavings(RuleBasedStateMachine):
    """Writers that open, take versions, commit and roll back in any interleaving, and a
    reader that follows the log: a committed version never lands at or below the reader's
    cursor unseen, and once every writer has ended the reader has them all."""

    store: Store

    def __init__(self) -> None:
        super().__init__()
        _Writer.close_all()  # a failed example's writers, should one have been left open
        with self.store.read() as conn:
            self.start = self.store.current_version(conn)
        self.cursor = self.start
        self.seen: list[int] = []
        self.open: list[_Writer] = []

    @precondition(lambda self: len(self.open) < 4)
    @rule(count=st.integers(0, 2))
    def begin(self, count: int) -> None:
        writer = _Writer(self.store)
        self.open.append(writer)
        if count:
            writer.take(count)

    @precondition(lambda self: self.open)
    @rule(i=st.integers(0, 3), count=st.integers(1, 3))
    def take(self, i: int, count: int) -> None:
        self.open[i % len(self.open)].take(count)

    @precondition(lambda self: self.open)
    @rule(i=st.integers(0, 3), commit=st.booleans())
    def end(self, i: int, commit: bool) -> None:
        self.open.pop(i % len(self.open)).end(commit)

    @rule()
    def read(self) -> None:
        got, self.cursor = _follow(self.store, self.cursor)
        self.seen += got

    @invariant()
    def nothing_lands_behind_the_cursor(self) -> None:
        behind = [v for v in _committed(self.store, self.start) if v <= self.cursor]
        assert behind == self.seen, f"committed behind the cursor {self.cursor}, unseen"

    def teardown(self) -> None:
        while self.open:
            self.open.pop().end(commit=True)
        _Writer.close_all()
        self.read()
        assert self.seen == _committed(self.store, self.start)


@pytest.mark.postgres
def test_interleaved_writers_never_slip_behind_a_reader(pg_writers: Store) -> None:
    _Interleavings.store = pg_writers
    run_state_machine_as_test(
        _Interleavings,
        settings=settings(max_examples=60, stateful_step_count=20, deadline=None),
    )


# -- the upgrade: an older database moves to the sequence in place ------------------------


def test_the_upgrade_moves_an_older_database_to_the_sequence_in_place(
    store: Store, records: Records
) -> None:
    before = records.create("account", {"name": "before"})
    with store.write() as conn:
        top = conn.execute(sa.select(sa.func.max(fs_change.c.version))).scalar_one()
        # as a database made before: the counter is where versions come from
        conn.execute(fs_sequence.update().values(value=top))
        conn.exec_driver_sql("DELETE FROM fs_meta WHERE key = 'version_lock_space'")
        if store.dialect == "postgresql":
            conn.exec_driver_sql("DROP SEQUENCE fs_version_seq")
        conn.exec_driver_sql("DELETE FROM fs_migration WHERE name = '0007_version_sequence'")
    store.reload_schema()
    assert not store.clock.sequenced
    older = records.create("account", {"name": "older"})  # the counter, as before
    assert store.upgrade() == ["0007_version_sequence"]
    assert store.upgrade() == []
    assert store.clock.sequenced == (store.dialect == "postgresql")
    after = records.create("account", {"name": "after"})
    rows = {r["name"]: r["versionnumber"] for r in records.retrieve_multiple("account")}
    assert rows["before"] < rows["older"] < rows["after"]  # nothing reused, nothing rewritten
    assert {before, older, after} <= {r["accountid"] for r in records.retrieve_multiple("account")}
    with store.read() as conn:
        page = read_changes(conn, top)
        assert store.current_version(conn) == rows["after"]
    assert [c.version for c in page.changes] == [rows["older"], rows["after"]]
