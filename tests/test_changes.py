"""The change feed: pages in version order, per table, resumable by cursor; pruning raises a
watermark below which a cursor must refetch."""

from __future__ import annotations

import datetime as dt

import pytest

from fieldsync.errors import BadRequest
from fieldsync.records.service import Records
from fieldsync.store.changes import ChangesExpired, prune_changes, prune_older_than, read_changes
from fieldsync.store.store import Store


def test_pages_follow_versions_and_resume(store: Store, records: Records) -> None:
    with store.read() as conn:
        start = store.current_version(conn)
    ids = records.create_many("account", [{"name": f"a{i}"} for i in range(7)])
    records.update("account", ids[0], {"name": "changed"})
    records.delete("account", ids[1])
    seen = []
    cursor = start
    while True:
        with store.read() as conn:
            page = read_changes(conn, cursor, limit=3)
        seen.extend(page.changes)
        cursor = page.cursor
        if not page.more:
            break
    assert [c.version for c in seen] == list(range(start + 1, start + 10))
    assert [c.operation for c in seen] == ["create"] * 7 + ["update", "delete"]
    assert seen[7].changed == ("name",)
    assert seen[7].old is not None
    assert seen[7].old["name"] == "a0"
    assert seen[8].old is not None
    assert seen[8].old["name"] == "a1"  # the tombstone keeps the old row
    with store.read() as conn:
        assert read_changes(conn, cursor).changes == ()


def test_filter_by_table(store: Store, records: Records) -> None:
    with store.read() as conn:
        start = store.current_version(conn)
    records.create("account", {"name": "a"})
    records.create("contact", {"lastname": "c"})
    with store.read() as conn:
        page = read_changes(conn, start, tables=["contact"])
        assert [c.table for c in page.changes] == ["contact"]
        assert read_changes(conn, start, tables=[]).changes == ()


def test_pruning_sets_a_watermark(store: Store, records: Records) -> None:
    with store.read() as conn:
        start = store.current_version(conn)
    records.create_many("account", [{"name": f"a{i}"} for i in range(4)])
    with store.write() as conn:
        assert prune_changes(conn, before=start + 2) >= 2
        assert prune_changes(conn, before=start) == 0  # the watermark never goes down
    with store.read() as conn:
        with pytest.raises(ChangesExpired) as info:
            read_changes(conn, start)
        assert info.value.status == 410
        page = read_changes(conn, start + 2)
        assert [c.version for c in page.changes] == [start + 3, start + 4]


def test_prune_by_age(store: Store, records: Records) -> None:
    records.create("account", {"name": "old"})
    with store.write() as conn:
        removed = prune_older_than(
            conn, age=dt.timedelta(0), now=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
        )
    assert removed >= 1
    with store.read() as conn:
        assert read_changes(conn, store.current_version(conn)).changes == ()


@pytest.mark.parametrize(("after", "limit"), [(-1, 10), (0, 0), (0, 10_001)])
def test_bad_cursors_and_limits(store: Store, after: int, limit: int) -> None:
    with store.read() as conn, pytest.raises(BadRequest, match=r"cursor|page"):
        read_changes(conn, after, limit=limit)
