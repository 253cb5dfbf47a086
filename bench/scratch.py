"""Scratch databases for the benches: URLs of fresh, empty databases, cleaned up afterwards.

- ``ScratchDatabases.sqlite()``: a SQLite file per URL, in a temporary directory;
- ``ScratchDatabases.postgres(url)``: a scratch schema per URL on the PostgreSQL at ``url``
  (``?options=-csearch_path%3D<schema>``), dropped when the URL is discarded (or at the end).

A bench opens what it needs from the URL (``Store.open(url)``, ``build(Store.open(url))``),
closes it, then discards the URL; ``opened`` does all three.
"""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol, TypeVar
from urllib.parse import quote

import sqlalchemy as sa

from fieldsync.store.engine import normalise_url


class Closable(Protocol):
    def close(self) -> None: ...


C = TypeVar("C", bound=Closable)


def _admin_engine(url: str) -> sa.Engine:
    return sa.create_engine(
        normalise_url(url), connect_args={"connect_timeout": 5}, poolclass=sa.NullPool
    )


class ScratchDatabases:
    """Hands out URLs of fresh, empty databases of one kind and cleans up after them."""

    def __init__(self, name: str, *, directory: Path | None = None, pg: str | None = None) -> None:
        self.name = name
        self._dir = directory
        self._pg = pg
        self._admin = None if pg is None else _admin_engine(pg)
        self._prefix = f"fs_bench_{uuid.uuid4().hex[:8]}"
        self._count = 0
        self._schemas: dict[str, str] = {}  # url -> schema, until discarded

    @classmethod
    def sqlite(cls) -> ScratchDatabases:
        return cls("sqlite", directory=Path(tempfile.mkdtemp(prefix="fieldsync-bench-")))

    @classmethod
    def postgres(cls, url: str) -> ScratchDatabases:
        return cls("postgresql", pg=url)

    def __enter__(self) -> ScratchDatabases:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def url(self, label: str) -> str:
        """The URL of a new, empty database; ``label`` shows in its file or schema name."""
        self._count += 1
        if self._dir is not None:
            return f"sqlite:///{self._dir / f'{label}-{self._count}.db'}"
        assert self._pg is not None
        schema = f"{self._prefix}_{label}{self._count}"
        with self._engine().begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        sep = "&" if "?" in self._pg else "?"
        url = f"{self._pg}{sep}options={quote(f'-csearch_path={schema}')}"
        self._schemas[url] = schema
        return url

    def discard(self, url: str) -> None:
        """Drop the database behind ``url`` (a PostgreSQL schema; SQLite files go at close)."""
        schema = self._schemas.pop(url, None)
        if schema is not None:
            self._drop(schema)

    @contextlib.contextmanager
    def opened(self, label: str, opener: Callable[[str], C]) -> Iterator[C]:
        """``opener(url)`` on a new database; closed, and the database discarded, on exit
        (discarded as well when ``opener`` fails)."""
        url = self.url(label)
        try:
            thing = opener(url)
            try:
                yield thing
            finally:
                thing.close()
        finally:
            self.discard(url)

    def server_version(self) -> str:
        if self._admin is None:
            return sqlite3.sqlite_version
        return self.show("server_version")["server_version"]

    def show(self, *settings: str) -> dict[str, str]:
        """PostgreSQL's ``SHOW <setting>`` for each setting, on one connection."""
        with self._engine().connect() as conn:
            return {
                name: str(conn.execute(sa.text(f"SHOW {name}")).scalar_one()) for name in settings
            }

    def close(self) -> None:
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
        if self._admin is not None:
            for schema in self._schemas.values():
                self._drop(schema)
            self._schemas.clear()
            self._admin.dispose()

    def _engine(self) -> sa.Engine:
        if self._admin is None:
            raise RuntimeError(f"{self.name} scratch databases have no server to ask")
        return self._admin

    def _drop(self, schema: str) -> None:
        with self._engine().begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))


def postgres_problem(url: str) -> str | None:
    """Why PostgreSQL at ``url`` cannot be used, or None when it can."""
    try:
        engine = _admin_engine(url)
        try:
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
        finally:
            engine.dispose()
    except Exception as exc:
        first_line = (str(exc).strip().splitlines() or [""])[0]
        return f"PostgreSQL at {url} is unreachable: {type(exc).__name__}: {first_line}"
    return None
