"""A collection page rendered from the database driver's values (``webapi.driver``,
``render.render_values``) is the page rendered from SQLAlchemy's typed rows
(``render.render_rows``), for every column type, nulls, the earliest date, exact
decimals and polymorphic lookups, with and without the lookup annotations; and the Web API
serves those pages."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import httpx
import orjson
import pytest

from fieldsync.config import Settings
from fieldsync.http.responses import json_bytes
from fieldsync.platform import Platform
from fieldsync.query.ast import Query
from fieldsync.schema.model import Column, ColumnType, Option, define_table
from fieldsync.security.roles import SYSTEM_ADMINISTRATOR
from fieldsync.server.app import create_app
from fieldsync.types import EntityRef
from fieldsync.webapi import driver, render

T = ColumnType
OPTIONS = tuple(Option(v, f"o{v}") for v in range(1, 4))
ANNOTATIONS = (render.LOOKUP_NAME, render.NAVIGATION)


def columns() -> list[Column]:
    return [
        Column("s", T.STRING, max_length=20),
        Column("m", T.MEMO),
        Column("i", T.INTEGER),
        Column("big", T.BIGINT),
        Column("d", T.DECIMAL, precision=2),
        Column("d9", T.DECIMAL, precision=9),
        Column("money", T.MONEY, precision=4),
        Column("f", T.FLOAT, precision=2),
        Column("flag", T.BOOLEAN),
        Column("t", T.DATETIME),
        Column("day", T.DATE),
        Column("ch", T.CHOICE, options=OPTIONS),
        Column("mc", T.MULTICHOICE, options=OPTIONS),
        Column("u", T.UNIQUEIDENTIFIER),
        Column("acct", T.LOOKUP, targets=("account",)),
    ]


def values(i: int, account: uuid.UUID) -> dict[str, Any]:
    if i == 0:
        return {"name": "nulls"}
    return {
        "name": f"row {i}",
        "s": 'é ü " \\ {}' if i == 1 else f"s{i}",
        "m": "line\nline" * i,
        "i": -(2**31) if i == 1 else i,
        "big": 2**40 + i,
        "d": Decimal("-99.99") if i == 1 else Decimal(i) / 4,
        "d9": Decimal("0.000000001") * i,
        "money": Decimal("12345.6789") * i,
        "f": 1.25 * i,
        "flag": i % 2 == 0,
        "t": dt.datetime(1753, 1, 1, 0, 0, 0, tzinfo=dt.UTC)
        if i == 1
        else dt.datetime(2026, 3, 18, 15, 30, 5, 123456, tzinfo=dt.UTC),
        "day": dt.date(2026, 1, i),
        "ch": 1 + i % 3,
        "mc": [1, 3] if i % 2 else [2],
        "u": uuid.UUID(int=i),
        "acct": EntityRef("account", account),
    }


@pytest.fixture
def world(platform: Platform) -> Platform:
    platform.store.create_table(define_table("new_kind", ownership="user", columns=columns()))
    account = platform.records.create("account", {"name": "A"})
    platform.records.create_many("new_kind", [values(i, account) for i in range(6)])
    return platform


def pages(p: Platform, annotations: Callable[[str], bool]) -> tuple[bytes, bytes, int]:
    table = p.store.schema.table("new_kind")
    query = Query("new_kind", orders=())
    with p.store.read() as conn:
        stmt = p.records.query_statement(query, conn=conn)
        typed = [dict(r) for r in conn.execute(stmt).mappings()]
        page = driver.fetch(conn, stmt)
    reference = render.render_rows(table, typed, annotations=annotations)
    fast = render.render_values(
        table, page.keys, page.rows, page.convert, page.text, annotations=annotations
    )
    assert [page.typed(i) for i in range(len(page.rows))] == typed
    return json_bytes(reference), json_bytes(fast), len(typed)


@pytest.mark.parametrize("annotated", [False, True])
def test_driver_values_render_as_typed_rows(world: Platform, annotated: bool) -> None:
    want: Callable[[str], bool] = (
        (lambda name: name in ANNOTATIONS) if annotated else (lambda _name: False)
    )
    reference, fast, rows = pages(world, want)
    assert rows == 6
    # the same entities, the same values, written the same way (the order of the properties
    # may differ: the entity tag leads, and each lookup's annotations follow it)
    assert orjson.loads(fast) == orjson.loads(reference)
    for entity in orjson.loads(fast):
        names = list(entity)
        assert names[0] == "@odata.etag"
        for i, name in enumerate(names):
            if "@" in name[1:]:
                assert names[i - 1].startswith(name.split("@")[0])
    for text in sorted(set(reference.split(b","))):  # each value written identically
        assert text.strip(b"[]{}") in fast
    if annotated:
        assert render.LOOKUP_NAME.encode() in fast


@pytest.mark.anyio
async def test_the_web_api_pages_from_driver_values(world: Platform) -> None:
    org = world.org
    org.user("admin", roles=[org.role_id(SYSTEM_ADMINISTRATOR)])
    _, secret = world.auth.create_api_token(org.user_id("admin"), "t")
    app = create_app(Settings(), platform=world)
    headers = {"Authorization": f"Bearer {secret}", "Prefer": "odata.maxpagesize=4"}
    seen: list[dict[str, Any]] = []
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="https://test"
    ) as client:
        url: str | None = "/api/data/v9.2/new_kinds?$orderby=name"
        while url:
            r = await client.get(url, headers=headers)
            assert r.status_code == 200, r.text
            seen += r.json()["value"]
            url = r.json().get("@odata.nextLink")
    assert [row["name"] for row in seen] == ["nulls", *(f"row {i}" for i in range(1, 6))]
    first = seen[1]
    assert first["t"] == "1753-01-01T00:00:00Z"
    assert first["day"] == "2026-01-01"
    assert first["d"] == -99.99
    assert first["mc"] == "1,3"
    assert first["flag"] is False
    assert first["u"] == str(uuid.UUID(int=1))
    assert first["@odata.etag"].startswith('W/"')
    assert seen[0]["s"] is None
    assert seen[0]["_acct_value"] is None
