"""Microsoft's Python SDK's SQL (``client.query.sql``, ``client.dataframe.sql``, ``batch.query.sql``
and the async client's) against a live fieldsync over HTTPS, on SQLite and PostgreSQL: what the
SDK sends (``GET {set}?sql=…``) is served, a query outside the subset is a 400 the SDK raises,
and a Basic User's SQL reaches only rows they may read."""

from __future__ import annotations

import asyncio
import ssl

import pytest
from PowerPlatform.Dataverse.client import DataverseClient
from PowerPlatform.Dataverse.core.errors import HttpError

from fieldsync.devcert import DevCertificate
from fieldsync.platform import Platform
from fieldsync.security.roles import BASIC_USER, SYSTEM_ADMINISTRATOR
from test_webapi_sdk import (  # the live HTTPS server and the SDK clients
    AsyncStaticTokenCredential,
    admin,
    certificate,
    client_for,
    server,
)

__all__ = ["admin", "certificate", "server"]  # fixtures used by name below


def seed(client: DataverseClient) -> str:
    ng = client.records.create("contact", {"firstname": "Ana", "lastname": "Ng"})
    for i in range(4):
        body: dict[str, object] = {"name": f"SQL {i}", "numberofemployees": i}
        if i % 2:
            body["primarycontactid@odata.bind"] = f"/contacts({ng})"
        client.records.create("account", body)
    return str(ng)


def test_query_sql_dataframe_sql_and_batch_sql(admin: DataverseClient) -> None:
    client = admin
    ng = seed(client)
    rows = client.query.sql(
        "SELECT TOP 2 name, numberofemployees FROM account "
        "WHERE numberofemployees >= 1 ORDER BY name DESC"
    )
    assert [(r["name"], r["numberofemployees"]) for r in rows] == [("SQL 3", 3), ("SQL 2", 2)]
    joined = client.query.sql(
        "SELECT a.name, c.fullname AS contact FROM account a "
        "JOIN contact c ON a.primarycontactid = c.contactid ORDER BY a.name"
    )
    assert [(r["name"], r["contact"]) for r in joined] == [("SQL 1", "Ana Ng"), ("SQL 3", "Ana Ng")]
    [counted] = client.query.sql("SELECT COUNT(*) AS n FROM account WHERE name LIKE 'SQL%'")
    assert counted["n"] == 4
    ids = client.query.sql(f"SELECT name FROM account WHERE primarycontactid = '{ng}'")
    assert sorted(r["name"] for r in ids) == ["SQL 1", "SQL 3"]

    frame = client.dataframe.sql("SELECT name, numberofemployees FROM account ORDER BY name")
    assert list(frame["name"]) == ["SQL 0", "SQL 1", "SQL 2", "SQL 3"]
    assert list(frame["numberofemployees"]) == [0, 1, 2, 3]

    batch = client.batch.new()
    batch.query.sql("SELECT name FROM account WHERE numberofemployees = 2")
    result = batch.execute()
    assert not result.failed, [(f.status_code, f.error_message) for f in result.failed]
    [part] = result.succeeded
    assert part.data is not None
    assert [r["name"] for r in part.data["value"]] == ["SQL 2"]

    with pytest.raises(HttpError) as refused:
        client.query.sql("SELECT name FROM account GROUP BY name")
    assert refused.value.status_code == 400
    assert "GROUP BY" in str(refused.value)


def test_a_basic_users_sql_reads_only_their_rows(platform: Platform, server: str) -> None:
    org = platform.org
    org.user("boss", roles=[org.role_id(SYSTEM_ADMINISTRATOR)])
    org.user("clerk", roles=[org.role_id(BASIC_USER)])
    with client_for(platform, server, "boss") as boss, client_for(platform, server, "clerk") as me:
        secret = boss.records.create("contact", {"lastname": "Secret"})
        boss.records.create("account", {"name": "Not mine"})
        boss.records.create(
            "account",
            {
                "name": "Mine",
                "primarycontactid@odata.bind": f"/contacts({secret})",
                "ownerid@odata.bind": f"/systemusers({org.user_id('clerk')})",
            },
        )
        assert [r["name"] for r in me.query.sql("SELECT name FROM account")] == ["Mine"]
        joined = me.query.sql(
            "SELECT a.name, c.lastname FROM account a "
            "JOIN contact c ON a.primarycontactid = c.contactid"
        )
        assert joined == []
        outer = me.query.sql(
            "SELECT a.name, c.lastname FROM account a "
            "LEFT JOIN contact c ON a.primarycontactid = c.contactid"
        )
        assert [(r["name"], r["c.lastname"]) for r in outer] == [("Mine", None)]
        frame = me.dataframe.sql("SELECT lastname FROM contact")
        assert len(frame) == 0


def test_the_async_client_runs_sql(
    platform: Platform, server: str, certificate: DevCertificate
) -> None:
    import aiohttp
    from PowerPlatform.Dataverse.aio import AsyncDataverseClient

    platform.org.user("async", roles=[platform.org.role_id(SYSTEM_ADMINISTRATOR)])
    _, secret = platform.auth.create_api_token(platform.org.user_id("async"), "aio")

    async def walk() -> None:
        client = AsyncDataverseClient(server, AsyncStaticTokenCredential(secret))
        trust = ssl.create_default_context(cafile=certificate.ca)
        client._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=trust))
        async with client:
            await client.records.create("account", {"name": "Async SQL", "numberofemployees": 7})
            rows = await client.query.sql("SELECT name FROM account WHERE numberofemployees = 7")
            assert [r["name"] for r in rows] == ["Async SQL"]
            frame = await client.dataframe.sql("SELECT name, numberofemployees FROM account")
            assert list(frame["numberofemployees"]) == [7]

    asyncio.run(walk())
