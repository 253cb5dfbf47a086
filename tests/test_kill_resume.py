"""Crash safety: a writer killed (SIGKILL) at a random instant leaves every committed batch
whole, no partial batch, a consistent change log, and a store that takes new writes."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import sqlalchemy as sa

from fieldsync.records.service import Records
from fieldsync.store.catalog import fs_change
from fieldsync.store.store import Store

BATCH = 150
WRITER = textwrap.dedent(
    """
    import sys
    from fieldsync.records.service import Records
    from fieldsync.store.store import Store

    BATCH = int(sys.argv[2])
    store = Store.open(sys.argv[1])
    records = Records(store)
    batch = 0
    while True:
        batch += 1
        ids = records.create_many(
            "account",
            [{"name": f"b{batch} #{i}", "accountnumber": f"B{batch}"} for i in range(BATCH)],
        )
        records.update_many("account", [(i, {"telephone1": f"T{batch}"}) for i in ids[:20]])
        print(batch, flush=True)
    """
)


def kill_after(url: str, batches: int, rng: random.Random) -> int:
    """Run the writer until it reports ``batches`` commits, then kill it mid-flight; returns
    the last batch it reported committed."""
    child = subprocess.Popen(
        [sys.executable, "-c", WRITER, url, str(BATCH)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert child.stdout is not None
    last = 0
    try:
        while last < batches:
            line = child.stdout.readline()
            if not line:
                raise AssertionError(f"the writer stopped early (exit {child.poll()})")
            last = int(line)
        time.sleep(rng.uniform(0, 0.05))
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        child.stdout.close()
    return last


@pytest.mark.parametrize("seed", [1, 2])
def test_killed_writer_leaves_whole_batches(database_url: str, seed: int) -> None:
    rng = random.Random(seed)
    store = Store.open(database_url)
    with store.read() as conn:
        start = store.current_version(conn)
    store.close()
    committed = kill_after(database_url, rng.randint(2, 5), rng)

    store = Store.open(database_url)
    try:
        account = store.sql_table("account")
        with store.read() as conn:
            counts = dict(
                conn.execute(
                    sa.select(account.c.accountnumber, sa.func.count())
                    .where(account.c.accountnumber.is_not(None))
                    .group_by(account.c.accountnumber)
                ).all()
            )
            versions = list(conn.execute(sa.select(account.c.versionnumber)).scalars())
            changes = conn.execute(
                sa.select(fs_change.c.version, fs_change.c.recordid, fs_change.c.operation)
                .where(fs_change.c.version > start)
                .order_by(fs_change.c.version)
            ).all()
            current = store.current_version(conn)
        for batch in range(1, committed + 1):
            assert counts.get(f"B{batch}") == BATCH, f"committed batch {batch} is not whole"
        assert all(n == BATCH for n in counts.values()), f"a partial batch: {counts}"
        assert len(versions) == len(set(versions)), "two rows share a version"
        assert current >= max(versions)
        logged = {v for v, _, _ in changes}
        assert {v for v in versions if v > start} <= logged, "a row version has no change"
        assert [v for v, _, _ in changes] == sorted(logged), "the log is out of order"
        live = {rid for _, rid, op in changes if op == "create"}
        assert len(live) == BATCH * len(counts), "creates in the log do not match the rows"
        # and the store goes on
        Records(store).create("account", {"name": "after the crash"})
    finally:
        store.close()
