"""Two ``fieldsync serve`` processes on PostgreSQL, eight writers each mixing every kind of write
(single creates, updates and deletes, updates and assigns of shared rows, ``$batch`` change
sets, associates, sync uploads): no 5xx, and every acknowledged write is in the database
(issue 16, item 5). The run lasts ``FIELDSYNC_WRITE_LOAD_SECONDS`` (20 by default); the full
60-second run is ``python bench/write_load.py``."""

from __future__ import annotations

import importlib.util
import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from urllib.parse import quote

import pytest
import sqlalchemy as sa

from conftest import PG_URL, need_postgres

BENCH = Path(__file__).resolve().parents[1] / "bench" / "write_load.py"
SECONDS = float(os.environ.get("FIELDSYNC_WRITE_LOAD_SECONDS", "20"))

pytestmark = pytest.mark.postgres


def load_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fieldsync_bench_write_load", BENCH)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


@pytest.fixture
def database() -> Iterator[str]:
    need_postgres()
    name = f"fs_load_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(
        PG_URL.replace("postgresql://", "postgresql+psycopg://", 1), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{name}"'))
    sep = "&" if "?" in PG_URL else "?"
    try:
        yield f"{PG_URL}{sep}options={quote(f'-csearch_path={name}')}"
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{name}" CASCADE'))
        admin.dispose()


def test_mixed_writers_on_two_processes_get_no_5xx_and_lose_nothing(
    database: str, tmp_path: Path
) -> None:
    bench = load_bench()
    report = bench.run(database, seconds=SECONDS, writers=8, log_dir=tmp_path)
    print(
        f"\n{report['requests']} requests, {report['writes_per_s']} writes/s, "
        f"{report['retries']} retries, {report['503']} x 503, {report['5xx']} x 5xx"
    )
    assert report["5xx"] == 0, report["statuses"]
    assert report["server_errors_logged"] == 0
    assert report["unknown"] == []
    assert report["unexpected"] == []
    assert report["problems"] == []
    # every kind of write was acknowledged at least once, so each was exercised
    assert set(report["kinds"]) == set(bench.KINDS), report["kinds"]
