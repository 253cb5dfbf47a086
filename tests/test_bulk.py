"""Batched writes (fieldsync.store.bulk) store exactly what SQLAlchemy's own executemany does,
for every column type, None included, on both backends and on both sides of the row count
from which PostgreSQL updates go through one ``unnest`` statement."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa

from fieldsync.records.service import Records
from fieldsync.store import bulk
from fieldsync.store.catalog import fs_change

MOMENT = dt.datetime(2026, 3, 4, 5, 6, 7, 890000, tzinfo=dt.UTC)


def values(i: int) -> dict[str, Any]:
    """Every column type of account; every third row clears them all."""
    if i % 3 == 2:
        return dict.fromkeys(
            (
                "telephone1",
                "address1_latitude",
                "industrycode",
                "revenue",
                "creditonhold",
                "parentaccountid",
                "description",
                "modifiedon",
            )
        )
    return {
        "telephone1": f"+1 555 {i:04d}",
        "address1_latitude": 59.9 + i / 1000,
        "industrycode": i,
        "revenue": Decimal(f"{i}.25"),
        "creditonhold": i % 2 == 0,
        "parentaccountid": uuid.UUID(int=i + 1),
        "description": "ü" * (i % 7) + "%(x)s ?",  # markers in values are data
        "modifiedon": MOMENT + dt.timedelta(seconds=i),
    }


@pytest.mark.parametrize("count", [3, bulk.UNNEST_FROM + 7])
def test_update_many_stores_what_executemany_stores(records: Records, count: int) -> None:
    store = records.store
    ids = records.create_many("account", [{"name": f"a{i}"} for i in range(2 * count)])
    mine, theirs = ids[:count], ids[count:]
    sql = store.sql_table("account")
    key = sa.bindparam(bulk.KEY, type_=sa.Uuid())
    with store.write() as conn:
        bulk.update_many(
            conn, sql, "accountid", [{**values(i), bulk.KEY: rid} for i, rid in enumerate(mine)]
        )
        conn.execute(
            sql.update().where(sql.c.accountid == key),
            [{**values(i), bulk.KEY: rid} for i, rid in enumerate(theirs)],
        )
    columns = [sql.c[name] for name in values(0)]
    with store.read() as conn:
        got = {r[0]: tuple(r[1:]) for r in conn.execute(sa.select(sql.c.accountid, *columns))}
    for i in range(count):
        assert got[mine[i]] == got[theirs[i]]
        assert got[mine[i]] == tuple(values(i).values())
    untouched = records.retrieve("account", ids[0], columns=["name"])
    assert untouched["name"] == "a0"


@pytest.mark.parametrize("count", [2, 60])
def test_insert_many_stores_what_an_insert_stores(records: Records, count: int) -> None:
    store = records.store
    rows = [
        {
            "version": 10**12 + i,
            "tablename": "account",
            "recordid": uuid.UUID(int=i),
            "operation": "update",
            "changed": ["telephone1"],
            "old": {"telephone1": None, "n": i},
            "userid": None,
            "changedon": MOMENT,
        }
        for i in range(count)
    ]
    with store.write() as conn:
        bulk.insert_many(conn, fs_change, rows)
    with store.read() as conn:
        got = [
            dict(r._mapping)
            for r in conn.execute(
                sa.select(fs_change).where(fs_change.c.version >= 10**12).order_by("version")
            )
        ]
    assert got == rows
