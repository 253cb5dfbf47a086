"""Shared fixtures: every store and records test runs on SQLite and on PostgreSQL.

PostgreSQL tests use a fresh schema per test in the database named by
``FIELDSYNC_TEST_POSTGRES_URL`` (default ``postgresql://postgres@127.0.0.1:5432/test``). When
the server cannot be reached they skip with the reason, unless ``FIELDSYNC_REQUIRE_POSTGRES=1``
(CI sets it), which turns the skip into a failure.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
import sqlalchemy as sa

from fieldsync.identity.auth import AuthSettings
from fieldsync.platform import Platform, build
from fieldsync.records.plugins import PluginRegistry
from fieldsync.records.service import Records
from fieldsync.store.store import Store

PG_URL = os.environ.get("FIELDSYNC_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
REQUIRE_PG = os.environ.get("FIELDSYNC_REQUIRE_POSTGRES") == "1"

_pg_problem: str | None = None
_pg_checked = False


def postgres_problem() -> str | None:
    """Why PostgreSQL cannot be used, or None when it can."""
    global _pg_checked, _pg_problem
    if not _pg_checked:
        _pg_checked = True
        try:
            engine = sa.create_engine(PG_URL.replace("postgresql://", "postgresql+psycopg://", 1))
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
            engine.dispose()
        except Exception as exc:
            _pg_problem = f"PostgreSQL at {PG_URL} is unreachable: {type(exc).__name__}"
    return _pg_problem


def need_postgres() -> None:
    problem = postgres_problem()
    if problem:
        if REQUIRE_PG:
            pytest.fail(f"{problem} (FIELDSYNC_REQUIRE_POSTGRES=1)")
        pytest.skip(problem)


class _PostgresBaseline:
    """One upgraded schema per test worker, reset to its first state after each test.

    Resetting (TRUNCATE every table, put the baseline rows back) costs a fraction of
    creating a schema; a test that changed the schema (DDL) gets a new one instead."""

    def __init__(self) -> None:
        self.admin = sa.create_engine(
            PG_URL.replace("postgresql://", "postgresql+psycopg://", 1),
            isolation_level="AUTOCOMMIT",
        )
        self.name = ""
        self.rows: dict[str, list[dict[str, object]]] = {}
        self.tables: dict[str, sa.Table] = {}
        self.generation = ""

    @property
    def url(self) -> str:
        sep = "&" if "?" in PG_URL else "?"
        return f"{PG_URL}{sep}options={quote(f'-csearch_path={self.name}')}"

    def create(self) -> None:
        self.name = f"fs_test_{uuid.uuid4().hex[:12]}"
        with self.admin.connect() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{self.name}"'))
        store = Store.open(self.url)
        try:
            build(store)
        finally:
            store.close()
        metadata = sa.MetaData()
        with self.admin.connect() as conn:
            metadata.reflect(conn, schema=self.name)
            self.tables = {t.name: t for t in metadata.tables.values()}
            self.rows = {
                name: [dict(r) for r in conn.execute(sa.select(t)).mappings()]
                for name, t in self.tables.items()
            }
            self.generation = self._generation(conn)

    def _generation(self, conn: sa.Connection) -> str:
        value = conn.execute(
            sa.text(f"SELECT value FROM \"{self.name}\".fs_meta WHERE key = 'schema_generation'")
        ).scalar()
        return str(value)

    def reset(self) -> None:
        with self.admin.connect() as conn:
            names = set(
                conn.execute(
                    sa.text("SELECT tablename FROM pg_tables WHERE schemaname = :s"),
                    {"s": self.name},
                ).scalars()
            )
            changed = names != set(self.tables) or self._generation(conn) != self.generation
        if changed:
            self.drop()
            self.create()
            return
        with self.admin.begin() as conn:
            listed = ", ".join(f'"{self.name}"."{t}"' for t in self.tables)
            conn.execute(sa.text(f"TRUNCATE {listed} RESTART IDENTITY"))
            for name, rows in self.rows.items():
                if rows:
                    conn.execute(self.tables[name].insert(), rows)

    def drop(self) -> None:
        with self.admin.connect() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{self.name}" CASCADE'))


@pytest.fixture(scope="session")
def _pg_baseline() -> Iterator[_PostgresBaseline]:
    need_postgres()
    baseline = _PostgresBaseline()
    baseline.create()
    try:
        yield baseline
    finally:
        baseline.drop()
        baseline.admin.dispose()


@pytest.fixture
def pg_schema_url(_pg_baseline: _PostgresBaseline) -> Iterator[str]:
    """A URL whose search_path is an upgraded schema in its first state."""
    yield _pg_baseline.url
    _pg_baseline.reset()


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An upgraded database file that each test copies (much faster than upgrading)."""
    folder = tmp_path_factory.mktemp("template")
    store = Store.open(f"sqlite:///{folder / 'build.db'}")
    try:
        build(store)
        raw = store.engine.raw_connection()
        try:
            raw.cursor().execute(f"VACUUM INTO '{folder / 'template.db'}'")
        finally:
            raw.close()
    finally:
        store.close()
    return folder / "template.db"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        template: Path = request.getfixturevalue("_sqlite_template")
        shutil.copyfile(template, tmp_path / "fieldsync.db")
        return f"sqlite:///{tmp_path / 'fieldsync.db'}"
    url: str = request.getfixturevalue("pg_schema_url")
    return url


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    s = Store.open(database_url)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def plugins() -> PluginRegistry:
    return PluginRegistry()


FAST_HASHING = AuthSettings(argon2_time_cost=1, argon2_memory_kib=1024, argon2_parallelism=1)


@pytest.fixture
def platform(store: Store, plugins: PluginRegistry) -> Platform:
    """The assembled platform (organisation rules, authenticator, organisation API), with
    cheap password hashing: the tests are not about argon2's cost."""
    return build(store, plugins=plugins, auth_settings=FAST_HASHING)


@pytest.fixture
def records(store: Store, plugins: PluginRegistry) -> Records:
    return Records(store, plugins)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
