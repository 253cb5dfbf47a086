"""Microsoft's Python SDK (PowerPlatform-Dataverse-Client 1.1.0), unchanged, against a live
fieldsync over HTTPS on loopback: a self-signed certificate trusted through
REQUESTS_CA_BUNDLE, and a fieldsync API token handed over by a static credential."""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from azure.core.credentials import AccessToken
from click.testing import CliRunner
from PowerPlatform.Dataverse.client import DataverseClient
from PowerPlatform.Dataverse.core.errors import HttpError
from PowerPlatform.Dataverse.models.filters import col
from PowerPlatform.Dataverse.models.upsert import UpsertItem

from fieldsync.cli import main
from fieldsync.client import Device
from fieldsync.config import Settings
from fieldsync.devcert import DevCertificate
from fieldsync.platform import Platform
from fieldsync.security.roles import BASIC_USER, SYSTEM_ADMINISTRATOR
from fieldsync.server.app import create_app


class StaticTokenCredential:
    """What the README shows: any object with get_token(*scopes) works as a credential."""

    def __init__(self, token: str) -> None:
        self._token = token

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken(self._token, int(time.time()) + 3600)


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> DevCertificate:
    """What ``fieldsync dev-cert`` writes: a local authority and a certificate it signed for
    127.0.0.1 and localhost."""
    folder = tmp_path_factory.mktemp("tls")
    result = CliRunner().invoke(main, ["dev-cert", "--dir", str(folder)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "--ssl-certfile" in result.output
    assert "REQUESTS_CA_BUNDLE" in result.output
    assert "SSL_CERT_FILE" in result.output
    return DevCertificate(folder / "ca.pem", folder / "cert.pem", folder / "key.pem")


class _Server(uvicorn.Server):
    """Remembers its event loop, so that the fixture can drop idle TLS connections at the
    end (a client's pooled connection would otherwise hold the shutdown open)."""

    loop: asyncio.AbstractEventLoop | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        self.loop = asyncio.get_running_loop()
        await super().startup(sockets)

    def drop_connections(self) -> None:
        for connection in list(self.server_state.connections):
            if connection.transport is not None:
                connection.transport.abort()


@pytest.fixture
def server(
    platform: Platform, certificate: DevCertificate, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """fieldsync served over HTTPS by uvicorn in a thread; yields the base URL."""
    cert_file, key_file = certificate.cert, certificate.key
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(certificate.ca))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        create_app(Settings(), platform=platform),
        ssl_certfile=str(cert_file),
        ssl_keyfile=str(key_file),
        log_level="warning",
        lifespan="off",
    )
    srv = _Server(config)
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not srv.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.01)
    try:
        yield f"https://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        if srv.loop is not None:
            srv.loop.call_soon_threadsafe(srv.drop_connections)
        thread.join(10)
        sock.close()


def test_the_dev_certificate_is_trusted_through_its_authority(
    server: str, certificate: DevCertificate
) -> None:
    port = server.rsplit(":", 1)[1]
    for host in ("127.0.0.1", "localhost"):
        trust = ssl.create_default_context(cafile=certificate.ca)
        with httpx.Client(verify=trust) as http:
            assert http.get(f"https://{host}:{port}/health").status_code == 200
    with httpx.Client() as http, pytest.raises(httpx.ConnectError):
        http.get(f"{server}/health")  # without the authority: refused
    assert certificate.key.stat().st_mode & 0o077 == 0


def test_dev_cert_refuses_a_bad_name(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["dev-cert", "--dir", str(tmp_path), "--name", "a b"])
    assert result.exit_code == 2
    assert "neither a host name nor an IP address" in result.output
    assert not (tmp_path / "key.pem").exists()


def client_for(platform: Platform, base_url: str, username: str) -> DataverseClient:
    _, secret = platform.auth.create_api_token(platform.org.user_id(username), "sdk")
    return DataverseClient(base_url, StaticTokenCredential(secret))


@pytest.fixture
def admin(platform: Platform, server: str) -> Iterator[DataverseClient]:
    org = platform.org
    org.user("admin", roles=[org.role_id(SYSTEM_ADMINISTRATOR)])
    with client_for(platform, server, "admin") as client:
        yield client


def test_records_crud_bulk_and_paged_queries(admin: DataverseClient, platform: Platform) -> None:
    client = admin
    first = client.records.create("account", {"name": "Contoso", "revenue": 5})
    record = client.records.retrieve("account", first, select=["name", "revenue"])
    assert record["name"] == "Contoso"
    assert record["revenue"] == 5

    client.records.update("account", first, {"name": "Contoso Ltd"})
    assert client.records.retrieve("account", first, select=["name"])["name"] == "Contoso Ltd"

    ids = client.records.create("account", [{"name": f"Bulk {i:02}"} for i in range(12)])
    assert len(ids) == 12
    assert [client.records.retrieve("account", i, select=["name"])["name"] for i in ids[:2]] == [
        "Bulk 00",
        "Bulk 01",
    ]
    client.records.update("account", ids[:3], {"telephone1": "555-0100"})
    client.records.update("account", ids[3:5], [{"telephone1": "1"}, {"telephone1": "2"}])
    phones = [
        client.records.retrieve("account", i, select=["telephone1"])["telephone1"] for i in ids
    ]
    assert phones[:5] == ["555-0100", "555-0100", "555-0100", "1", "2"]

    # paging: pages of 5, $top 11 enforced by the server across pages
    pages = list(
        client.records.list_pages(
            "account",
            select=["name"],
            filter="startswith(name, 'Bulk')",
            orderby=["name desc"],
            top=11,
            page_size=5,
        )
    )
    assert [len(p.records) for p in pages] == [5, 5, 1]
    names = [r["name"] for p in pages for r in p.records]
    assert names == [f"Bulk {i:02}" for i in range(11, 0, -1)]

    # QueryBuilder
    found = list(
        client.query.builder("account")
        .select("name", "telephone1")
        .where((col("telephone1") == "555-0100") | col("name").in_(["Bulk 03", "Bulk 04"]))
        .order_by("name")
        .page_size(2)
        .execute()
    )
    assert [r["name"] for r in found] == ["Bulk 00", "Bulk 01", "Bulk 02", "Bulk 03", "Bulk 04"]

    # upsert by an alternate key: one (PATCH) creates then updates, several (UpsertMultiple)
    client.records.upsert(
        "account", [UpsertItem(alternate_key={"accountnumber": "A-1"}, record={"name": "One"})]
    )
    client.records.upsert(
        "account",
        [
            UpsertItem(alternate_key={"accountnumber": "A-1"}, record={"name": "One again"}),
            UpsertItem(alternate_key={"accountnumber": "A-2"}, record={"name": "Two"}),
        ],
    )
    keyed = platform.records.retrieve_multiple(
        "account", columns=["name", "accountnumber"], filter=None, order_by="accountnumber"
    )
    assert [(r["accountnumber"], r["name"]) for r in keyed if r["accountnumber"]] == [
        ("A-1", "One again"),
        ("A-2", "Two"),
    ]

    # delete one, then the rest with BulkDelete
    client.records.delete("account", first)
    assert client.records.retrieve("account", first) is None
    assert not client.records.list("account", select=["name"], filter=f"accountid eq {first}")
    client.records.delete("account", ids)
    left = [r["name"] for r in client.records.list("account", select=["name"])]
    assert sorted(left) == ["One again", "Two"]


def test_fetchxml_paging_and_sql(admin: DataverseClient) -> None:
    client = admin
    client.records.create("account", [{"name": f"F{i}"} for i in range(7)])
    xml = (
        '<fetch count="3"><entity name="account"><attribute name="name"/>'
        '<order attribute="name"/></entity></fetch>'
    )
    pages = list(client.query.fetchxml(xml).execute_pages())
    assert [len(p.records) for p in pages] == [3, 3, 1]
    assert [r["name"] for p in pages for r in p.records] == [f"F{i}" for i in range(7)]

    rows = client.query.sql("SELECT TOP 5 name FROM account WHERE name = 'F1'")
    assert [r["name"] for r in rows] == ["F1"]  # more in tests/test_webapi_sdk_sql.py
    with pytest.raises(HttpError) as refused:
        client.query.sql("SELECT name, COUNT(*) FROM account GROUP BY name")
    assert refused.value.status_code == 400
    assert "GROUP BY" in str(refused.value)


def test_tables_and_columns(admin: DataverseClient) -> None:
    client = admin
    info = client.tables.create("new_Product", {"new_Price": "decimal", "new_Qty": "int"})
    assert info["entity_set_name"] == "new_products"
    assert client.tables.get("new_product")["primary_id_attribute"] == "new_productid"
    client.tables.add_columns("new_product", {"new_Flag": "bool", "new_Notes": "string"})
    rid = client.records.create(
        "new_product", {"new_name": "Widget", "new_price": 9.5, "new_qty": 3, "new_flag": True}
    )
    row = client.records.retrieve("new_product", rid, select=["new_name", "new_price", "new_flag"])
    assert (row["new_name"], row["new_price"], row["new_flag"]) == ("Widget", 9.5, True)
    names = {c["LogicalName"] for c in client.tables.list_columns("new_product")}
    assert {"new_price", "new_qty", "new_flag", "new_notes"} <= names
    client.tables.remove_columns("new_product", ["new_notes"])
    names = {c["LogicalName"] for c in client.tables.list_columns("new_product")}
    assert "new_notes" not in names
    assert "new_product" in {t["LogicalName"] for t in client.tables.list()}
    client.tables.delete("new_product")
    assert client.tables.get("new_product") is None


def test_batch_with_an_atomic_change_set(admin: DataverseClient, platform: Platform) -> None:
    client = admin
    batch = client.batch.new()
    batch.records.create("account", {"name": "B1"})
    with batch.changeset() as cs:
        ref = cs.records.create("contact", {"lastname": "Alice"})
        cs.records.create("account", {"name": "C1", "primarycontactid@odata.bind": ref})
    result = batch.execute()
    assert not result.failed
    rows = platform.records.retrieve_multiple("account", columns=["name", "primarycontactid"])
    by_name = {r["name"]: r for r in rows}
    assert set(by_name) == {"B1", "C1"}
    assert by_name["C1"]["primarycontactid"] is not None

    batch = client.batch.new()
    with batch.changeset() as cs:
        cs.records.create("account", {"name": "D1"})
        cs.records.create("account", {"name": "x" * 500})  # too long: the set rolls back
    result = batch.execute()
    assert len(result.failed) == 1
    names = {r["name"] for r in platform.records.retrieve_multiple("account", columns=["name"])}
    assert names == {"B1", "C1"}


def test_a_user_sees_only_what_the_security_model_allows(platform: Platform, server: str) -> None:
    org = platform.org
    org.user("clerk", roles=[org.role_id(BASIC_USER)])
    org.user("boss", roles=[org.role_id(SYSTEM_ADMINISTRATOR)])
    with client_for(platform, server, "boss") as boss:
        hidden = boss.records.create("account", {"name": "Not for clerks"})
    with client_for(platform, server, "clerk") as client:
        assert client.records.retrieve("account", hidden) is None
        with pytest.raises(HttpError) as also_missing:
            client.records.update("account", hidden, {"name": "mine now"})
        assert also_missing.value.status_code == 404
        with pytest.raises(HttpError) as refused:
            client.tables.create("new_Gadget", {"new_Size": "int"})
        assert refused.value.status_code == 403


def test_an_organisation_and_its_offline_profile_set_up_from_the_sdk(
    admin: DataverseClient,
    platform: Platform,
    server: str,
    certificate: DevCertificate,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Business unit, user with a role, team, offline profile and app, all through the SDK
    as a System Administrator (so the organisation and profile rules run); the SDK has no
    call for $ref or bound actions, so those two go through httpx with the same token."""
    client = admin
    api = f"{server}/api/data/v9.2"
    [root] = client.records.list(
        "businessunit", select=["name"], filter="parentbusinessunitid eq null"
    )
    unit = client.records.create(
        "businessunit",
        {
            "name": "North",
            "parentbusinessunitid@odata.bind": f"/businessunits({root['businessunitid']})",
        },
    )
    [basic] = client.records.list("role", select=["name"], filter=f"name eq '{BASIC_USER}'")
    user = client.records.create(
        "systemuser",
        {
            "domainname": "tina",
            "firstname": "Tina",
            "lastname": "North",
            "businessunitid@odata.bind": f"/businessunits({unit})",
            "systemuserroles_association@odata.bind": [f"/roles({basic['roleid']})"],
        },
    )
    team = client.records.create(
        "team",
        {"name": "North technicians", "businessunitid@odata.bind": f"/businessunits({unit})"},
    )
    _, secret = platform.auth.create_api_token(platform.org.user_id("admin"), "ref")
    trust = ssl.create_default_context(cafile=certificate.ca)
    with httpx.Client(verify=trust, headers={"Authorization": f"Bearer {secret}"}) as http:
        added = http.post(
            f"{api}/teams({team})/teammembership_association/$ref",
            json={"@odata.id": f"{api}/systemusers({user})"},
        )
        assert added.status_code == 204, added.text
        again = http.post(
            f"{api}/teams({team})/teammembership_association/$ref",
            json={"@odata.id": f"{api}/systemusers({user})"},
        )
        assert again.status_code == 412
        wrong = http.post(
            f"{api}/teams({team})/teammembership_association/$ref",
            json={"@odata.id": f"{api}/roles({basic['roleid']})"},
        )
        assert wrong.status_code == 400

        profile = client.records.create("mobileofflineprofile", {"name": "North field"})
        on_profile = f"/mobileofflineprofiles({profile})"
        client.records.create(
            "mobileofflineprofileitem",
            {
                "name": "Work orders",
                "regardingobjectid@odata.bind": on_profile,
                "selectedentitytypecode": "workorder",
                "recorddistributioncriteria": 2,
                "recordsownedbyme": True,
                "recordsownedbymyteam": True,
            },
        )
        accounts = client.records.create(
            "mobileofflineprofileitem",
            {
                "name": "Accounts",
                "regardingobjectid@odata.bind": on_profile,
                "selectedentitytypecode": "account",
                "recorddistributioncriteria": 0,
            },
        )
        client.records.create(
            "mobileofflineprofileitemassociation",
            {
                "name": "Accounts of work orders",
                "mobileofflineprofileitemid@odata.bind": f"/mobileofflineprofileitems({accounts})",
                "selectedrelationshipsschema": "account_workorder_serviceaccountid",
            },
        )
        with pytest.raises(HttpError) as refused:  # the profile rules run on every save
            client.records.create(
                "mobileofflineprofileitem",
                {
                    "regardingobjectid@odata.bind": on_profile,
                    "selectedentitytypecode": "workorder",
                    "recorddistributioncriteria": 1,
                },
            )
        assert refused.value.status_code == 400
        client.records.create(
            "appmodule",
            {
                "name": "North field",
                "uniquename": "northfield",
                "canbeusedoffline": True,
                "mobileofflineprofileid@odata.bind": on_profile,
            },
        )
        action = "Microsoft.Dynamics.CRM.PublishMobileOfflineProfile"
        published = http.post(f"{api}/mobileofflineprofiles({profile})/{action}")
        assert published.status_code == 200, published.text
        assert published.json()["Version"] == 1
        assert sorted(published.json()["Tables"]) == ["account", "workorder"]

    account = client.records.create(
        "account", {"name": "Fjord Farms", "ownerid@odata.bind": f"/teams({team})"}
    )
    mine = client.records.create(
        "workorder",
        {
            "name": "WO-1",
            "ownerid@odata.bind": f"/teams({team})",
            "serviceaccountid@odata.bind": f"/accounts({account})",
        },
    )
    client.records.create(
        "workorder", {"name": "WO-2", "serviceaccountid@odata.bind": f"/accounts({account})"}
    )  # the administrator's own

    # the identity provider's part: the user signs in with a password
    platform.auth.set_password(platform.org.user_id("tina"), "north password 1")
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate.ca))
    device = Device.login(
        tmp_path / "tina",
        server=server,
        username="tina",
        password="north password 1",
        app="northfield",
    )
    try:
        device.sync()
        assert [r["workorderid"] for r in device.query("workorder")] == [mine]
        assert [r["name"] for r in device.query("account")] == ["Fjord Farms"]
    finally:
        device.close()
    assert list(client.records.list("syncerror", select=["name", "errorcode"])) == []

    with client_for(platform, server, "tina") as tina:
        with pytest.raises(HttpError) as not_hers:
            tina.records.create("mobileofflineprofile", {"name": "Mine"})
        assert not_hers.value.status_code == 403
    [admin_role] = client.records.list(
        "role", select=["name"], filter=f"name eq '{SYSTEM_ADMINISTRATOR}'"
    )
    _, tina_secret = platform.auth.create_api_token(platform.org.user_id("tina"), "ref")
    with httpx.Client(verify=trust, headers={"Authorization": f"Bearer {tina_secret}"}) as http:
        promoted = http.post(
            f"{api}/systemusers({user})/systemuserroles_association/$ref",
            json={"@odata.id": f"{api}/roles({admin_role['roleid']})"},
        )
        assert promoted.status_code in (403, 404)
    with httpx.Client(verify=trust, headers={"Authorization": f"Bearer {secret}"}) as http:
        patched = http.patch(
            f"{api}/systemusers({user})",
            json={"systemuserroles_association@odata.bind": [f"/roles({admin_role['roleid']})"]},
        )
        assert patched.status_code == 400
        removed = http.delete(f"{api}/teams({team})/teammembership_association({user})/$ref")
        assert removed.status_code == 204
        gone = http.delete(f"{api}/teams({team})/teammembership_association({user})/$ref")
        assert gone.status_code == 404
    held = platform.records.retrieve_multiple("systemuserroles", columns=["systemuserid", "roleid"])
    assert [str(r["roleid"]) for r in held if str(r["systemuserid"]) == user] == [basic["roleid"]]


def test_files_upload_small_and_chunked_then_read_back(
    admin: DataverseClient,
    platform: Platform,
    server: str,
    certificate: DevCertificate,
    tmp_path: Path,
) -> None:
    client = admin
    account = client.records.create("account", {"name": "Files"})
    first = client.records.create(
        "workorder", {"name": "WO-F1", "serviceaccountid@odata.bind": f"/accounts({account})"}
    )
    second = client.records.create(
        "workorder", {"name": "WO-F2", "serviceaccountid@odata.bind": f"/accounts({account})"}
    )
    small, large = tmp_path / "report.pdf", tmp_path / "big.pdf"
    small.write_bytes(b"%PDF-1.7 small report")
    large.write_bytes(bytes(range(256)) * 20_000)  # 5 MB: more than one chunk
    client.files.upload("workorder", first, "servicereport", str(small), mode="small")
    client.files.upload(
        "workorder", second, "servicereport", str(large), mode="chunk", mime_type="application/pdf"
    )
    with pytest.raises(HttpError) as occupied:  # If-None-Match: null on a full column
        client.files.upload("workorder", first, "servicereport", str(small), mode="small")
    assert occupied.value.status_code == 412
    client.files.upload(
        "workorder", first, "servicereport", str(large), mode="chunk", if_none_match=False
    )
    _, secret = platform.auth.create_api_token(platform.org.user_id("admin"), "files")
    trust = ssl.create_default_context(cafile=certificate.ca)
    with httpx.Client(verify=trust, headers={"Authorization": f"Bearer {secret}"}) as http:
        for rid in (first, second):
            got = http.get(f"{server}/api/data/v9.2/workorders({rid})/servicereport/$value")
            assert got.status_code == 200
            assert got.content == large.read_bytes()
            assert got.headers["x-ms-file-name"] == large.name


def test_relationships_from_the_sdk(admin: DataverseClient, platform: Platform) -> None:
    from PowerPlatform.Dataverse.models.relationship import ManyToManyRelationshipMetadata

    client = admin
    client.tables.create("new_Visit", {"new_Minutes": "int"})
    lookup = client.tables.create_lookup_field(
        referencing_table="new_visit",
        lookup_field_name="new_AccountId",
        referenced_table="account",
        display_name="Account",
    )
    found = client.tables.get_relationship("account_new_visit_new_AccountId")
    assert found is not None
    assert found.relationship_id == lookup.relationship_id
    assert found.referencing_entity == "new_visit"
    account = client.records.create("account", {"name": "Visited"})
    visit = client.records.create(
        "new_visit", {"new_name": "First", "new_accountid@odata.bind": f"/accounts({account})"}
    )
    row = client.records.retrieve("new_visit", visit, select=["_new_accountid_value"])
    assert row["_new_accountid_value"] == account
    many = client.tables.create_many_to_many_relationship(
        ManyToManyRelationshipMetadata(
            schema_name="new_visit_contact",
            entity1_logical_name="new_visit",
            entity2_logical_name="contact",
        )
    )
    assert many.relationship_id
    assert "new_visit_contact" in platform.store.schema.relationships
    assert client.tables.get_relationship("no_such_relationship") is None


class AsyncStaticTokenCredential:
    """The async client's credential: ``get_token`` is a coroutine."""

    def __init__(self, token: str) -> None:
        self._token = token

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken(self._token, int(time.time()) + 3600)

    async def close(self) -> None:
        return None

    async def __aenter__(self) -> AsyncStaticTokenCredential:
        return self

    async def __aexit__(self, *args: object) -> None:
        return None


def test_headers_go_on_the_wire_in_dataverse_case(
    platform: Platform, server: str, certificate: DevCertificate
) -> None:
    """What uvicorn writes, read off the socket: the OData headers keep Dataverse's case."""
    platform.org.user("wire", roles=[platform.org.role_id(SYSTEM_ADMINISTRATOR)])
    _, secret = platform.auth.create_api_token(platform.org.user_id("wire"), "raw")
    port = int(server.rsplit(":", 1)[1])
    body = b'{"name": "On the wire"}'
    request = (
        "POST /api/data/v9.2/accounts HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{port}\r\n"
        f"Authorization: Bearer {secret}\r\n"
        "Content-Type: application/json\r\n"
        "Prefer: return=representation\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode() + body
    trust = ssl.create_default_context(cafile=certificate.ca)
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        trust.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        tls.sendall(request)
        answer = b""
        while chunk := tls.recv(65536):
            answer += chunk
    head = answer.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    assert head.startswith("HTTP/1.1 201"), head
    names = {line.split(":", 1)[0] for line in head.split("\r\n")[1:]}
    assert {"OData-EntityId", "OData-Version", "Preference-Applied", "ETag"} <= names, names


def test_the_async_client_creates_reads_and_batches(
    platform: Platform, server: str, certificate: DevCertificate
) -> None:
    """The async SDK reads ``OData-EntityId`` from a plain dict, case-sensitively: every create
    depends on the header's case."""
    import aiohttp
    from PowerPlatform.Dataverse.aio import AsyncDataverseClient

    platform.org.user("async", roles=[platform.org.role_id(SYSTEM_ADMINISTRATOR)])
    _, secret = platform.auth.create_api_token(platform.org.user_id("async"), "aio")

    async def walk() -> None:
        client = AsyncDataverseClient(server, AsyncStaticTokenCredential(secret))
        # aiohttp makes its TLS contexts at import: trust the dev authority by a session
        trust = ssl.create_default_context(cafile=certificate.ca)
        client._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=trust))
        async with client:
            contact = await client.records.create(
                "contact", {"firstname": "Ada", "lastname": "Async"}
            )
            account = await client.records.create(
                "account",
                {"name": "Async Ltd", "primarycontactid@odata.bind": f"/contacts({contact})"},
            )
            row = await client.records.retrieve(
                "account",
                account,
                select=["name", "primarycontactid"],
                include_annotations="OData.Community.Display.V1.FormattedValue",
            )
            assert row is not None
            assert row["name"] == "Async Ltd"
            assert row["_primarycontactid_value"] == contact
            formatted = "_primarycontactid_value@OData.Community.Display.V1.FormattedValue"
            assert row[formatted] == "Ada Async"
            batch = client.batch.new()
            batch.records.create("account", {"name": "Async batch"})
            batch.records.retrieve("account", account, select=["name"])
            result = await batch.execute()
            assert not result.failed, [(f.status_code, f.error_message) for f in result.failed]
            assert len(result.entity_ids) == 1
            assert result.succeeded[1].data is not None
            assert result.succeeded[1].data["name"] == "Async Ltd"

    asyncio.run(walk())


def test_batch_reads_return_rows_and_lookups_their_names(admin: DataverseClient) -> None:
    client = admin
    contact = client.records.create("contact", {"firstname": "Lin", "lastname": "Batch"})
    account = client.records.create(
        "account", {"name": "Batched", "primarycontactid@odata.bind": f"/contacts({contact})"}
    )
    row = client.records.retrieve(
        "account", account, select=["name", "primarycontactid"], include_annotations="*"
    )
    assert row["_primarycontactid_value@OData.Community.Display.V1.FormattedValue"] == "Lin Batch"
    batch = client.batch.new()
    batch.records.retrieve("account", account, select=["name"], expand=["primarycontactid"])
    batch.records.list("contact", select=["fullname"], filter="lastname eq 'Batch'", top=5)
    result = batch.execute()
    assert not result.failed, [(f.status_code, f.error_message) for f in result.failed]
    one, many = result.succeeded
    assert one.data is not None
    assert many.data is not None
    assert one.data["name"] == "Batched"
    assert one.data["primarycontactid"]["fullname"] == "Lin Batch"
    assert [r["fullname"] for r in many.data["value"]] == ["Lin Batch"]
