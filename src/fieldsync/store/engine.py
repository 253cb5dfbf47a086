"""Database engines for SQLite (the embedded default) and PostgreSQL (psycopg 3).

SQLite discipline: WAL, ``synchronous=NORMAL``, a busy timeout, and transactions begun by us:
``BEGIN IMMEDIATE`` for writes (so two writers queue instead of failing on upgrade of a read
lock) and a plain ``BEGIN`` for reads, which then run beside the writer.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Engine, make_url

from fieldsync.errors import ConfigurationError

WRITE_OPTION = "fieldsync_write"
# a pooled PostgreSQL connection idle longer than this is pinged before use; one in steady use
# is not (a ping is a round trip on every checkout, and a request checks out several times)
PING_IDLE_SECONDS = 1.0


def normalise_url(url: str | URL) -> URL:
    """Accept ``postgresql://`` and ``sqlite:///`` URLs and pick our drivers for them."""
    try:
        parsed = make_url(url)
    except sa.exc.ArgumentError:
        raise ConfigurationError(f"not a database URL: {url!r}") from None
    backend = parsed.get_backend_name()
    if backend == "postgresql":
        return parsed.set(drivername="postgresql+psycopg")
    if backend == "sqlite":
        if parsed.database in (None, "", ":memory:"):
            raise ConfigurationError(
                "fieldsync needs a SQLite file (sqlite:///path/to/file.db), "
                "not an in-memory database"
            )
        return parsed.set(drivername="sqlite+pysqlite")
    raise ConfigurationError(f"unsupported database {backend!r}: use sqlite or postgresql")


def create_engine(url: str | URL, *, pool_size: int = 5) -> Engine:
    parsed = normalise_url(url)
    if parsed.get_backend_name() == "sqlite":
        assert parsed.database is not None
        Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(
            parsed,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_size=pool_size,
            max_overflow=10,
            json_serializer=_json,
        )
        _sqlite_discipline(engine)
        return engine
    engine = sa.create_engine(parsed, pool_size=pool_size, max_overflow=10, json_serializer=_json)

    @event.listens_for(engine, "checkin")
    def on_checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        # a connection that sat idle may have been dropped (a restart, an idle timeout):
        # ping it, and let the pool replace it (DisconnectionError) if it is gone. One in
        # steady use that died meanwhile fails its request with a 503 and the pool is renewed.
        since = record.info.get("idle_since")
        if since is None or time.monotonic() - since < PING_IDLE_SECONDS:
            return
        try:
            with dbapi_connection.cursor() as cur:
                cur.execute("SELECT 1")
            dbapi_connection.rollback()
        except Exception as exc:
            raise sa.exc.DisconnectionError(str(exc)) from exc

    @event.listens_for(engine, "connect")
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        # fieldsync's queries are short; JIT compilation only ever costs them time, and a
        # misestimated plan (an OR of index conditions) can pay hundreds of ms for it
        with dbapi_connection.cursor() as cur:
            cur.execute("SET jit = off")
            # every stored time is UTC: read back as UTC, psycopg gives datetimes whose
            # tzinfo is datetime.UTC itself, which UTCDateTime passes on as they are
            cur.execute("SET TIME ZONE 'UTC'")
        dbapi_connection.commit()

    return engine


def _json(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


def _sqlite_discipline(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cur = dbapi_connection.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()
        # the query language's case-insensitive comparisons and LIKE patterns with character
        # classes: Unicode-aware lower() (SQLite's own folds ASCII only) and REGEXP
        dbapi_connection.create_function("lower", 1, _lower, deterministic=True)
        dbapi_connection.create_function("regexp", 2, _regexp, deterministic=True)

    @event.listens_for(engine, "begin")
    def on_begin(conn: sa.Connection) -> None:
        write = conn.get_execution_options().get(WRITE_OPTION, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def _lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


def _regexp(pattern: str | None, value: Any) -> bool | None:
    if pattern is None or value is None:
        return None
    return (
        re.fullmatch(pattern[1:-1] if pattern.startswith("^") else pattern, str(value), re.DOTALL)
        is not None
    )


def default_database_url(data_dir: str | os.PathLike[str]) -> str:
    return f"sqlite:///{Path(data_dir).expanduser() / 'fieldsync.db'}"
