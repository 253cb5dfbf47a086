"""Version ordering: a reader that follows the change log never has a version filled in
behind its cursor, even with many concurrent writers (the trap of DESIGN.md: commit order is
not sequence order)."""

from __future__ import annotations

import random
import threading
import time

import pytest
import sqlalchemy as sa

from fieldsync.records.plugins import PluginContext, PluginRegistry
from fieldsync.records.service import Records
from fieldsync.store.catalog import fs_change
from fieldsync.store.store import Store

WRITERS = 4
WRITES_EACH = 25


def _slow_commit(ctx: PluginContext) -> None:
    # Runs after the versions are taken and before the commit: widens the window in which a
    # naive sequence would let a later version commit first.
    time.sleep(random.uniform(0, 0.004))


def test_reader_never_sees_a_version_filled_in_behind_it(
    store: Store, records: Records, plugins: PluginRegistry
) -> None:
    plugins.register("*", "create", "post-operation", _slow_commit)
    plugins.register("*", "update", "post-operation", _slow_commit)
    seed = records.create_many("account", [{"name": f"seed {i}"} for i in range(WRITERS)])
    with store.read() as conn:
        start = store.current_version(conn)

    stop = threading.Event()
    seen: list[int] = []
    late: list[tuple[int, int]] = []
    errors: list[BaseException] = []

    def reader() -> None:
        cursor = start
        while True:
            finished = stop.is_set()
            with store.read() as conn:
                versions = list(
                    conn.execute(
                        sa.select(fs_change.c.version)
                        .where(fs_change.c.version > start)
                        .order_by(fs_change.c.version)
                    ).scalars()
                )
            for v in versions:
                if v not in seen_set:
                    if v <= cursor:
                        late.append((v, cursor))
                    seen_set.add(v)
                    seen.append(v)
            if versions:
                cursor = max(cursor, versions[-1])
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
def test_allocate_versions_returns_consecutive_ranges(store: Store, count: int) -> None:
    with store.write() as conn:
        first = store.allocate_versions(conn, count)
        second = store.allocate_versions(conn, count)
        assert second == first + count
        assert store.current_version(conn) == second + count - 1
