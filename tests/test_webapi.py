"""The Web API's OData conventions, in process: entity tags and If-Match / If-None-Match,
upserts, paging with a server-enforced $top, errors, refusals by the security model,
$batch atomicity (the service protection limits: test_throttle.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from fieldsync.config import Settings
from fieldsync.platform import Platform
from fieldsync.security.roles import BASIC_USER, SYSTEM_ADMINISTRATOR
from fieldsync.server.app import create_app
from fieldsync.webapi.protocol import parse_prefer, split_outside_quotes

API = "/api/data/v9.2/"
pytestmark = pytest.mark.anyio


@pytest.fixture
async def api(platform: Platform) -> AsyncIterator[httpx.AsyncClient]:
    org = platform.org
    org.user("admin", roles=[org.role_id(SYSTEM_ADMINISTRATOR)])
    _, secret = platform.auth.create_api_token(org.user_id("admin"), "t")
    app = create_app(Settings(), platform=platform)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="https://test",
        headers={"Authorization": f"Bearer {secret}"},
    ) as c:
        c.app = app  # type: ignore[attr-defined]
        yield c


async def create(api: httpx.AsyncClient, body: dict[str, object]) -> str:
    r = await api.post(API + "accounts", json=body)
    assert r.status_code == 204, r.text
    return r.headers["OData-EntityId"].rsplit("(", 1)[1].rstrip(")")


async def test_etags_make_writes_conditional(api: httpx.AsyncClient) -> None:
    rid = await create(api, {"name": "Contoso"})
    r = await api.get(API + f"accounts({rid})?$select=name")
    tag = r.json()["@odata.etag"]
    assert r.headers["ETag"] == tag
    assert tag.startswith('W/"')
    assert r.json()["@odata.context"].startswith("https://test/api/data/v9.2/$metadata#accounts")

    r = await api.get(API + f"accounts({rid})", headers={"If-None-Match": tag})
    assert r.status_code == 304

    r = await api.patch(API + f"accounts({rid})", json={"name": "A"}, headers={"If-Match": tag})
    assert r.status_code == 204
    r = await api.patch(API + f"accounts({rid})", json={"name": "B"}, headers={"If-Match": tag})
    assert r.status_code == 412
    assert r.json()["error"]["code"] == "0x80060882"
    r = await api.delete(API + f"accounts({rid})", headers={"If-Match": tag})
    assert r.status_code == 412
    r = await api.get(API + f"accounts({rid})?$select=name")
    assert r.json()["name"] == "A"

    r = await api.patch(
        API + f"accounts({rid})",
        json={"name": "C"},
        headers={"If-Match": "*", "Prefer": "return=representation"},
    )
    assert r.status_code == 200
    assert r.json()["name"] == "C"
    assert r.headers["Preference-Applied"] == "return=representation"


async def test_patch_upserts_and_the_preconditions_choose(api: httpx.AsyncClient) -> None:
    new = "11111111-2222-3333-4444-555555555555"
    r = await api.patch(API + f"accounts({new})", json={"name": "X"}, headers={"If-Match": "*"})
    assert r.status_code == 404  # update only: nothing created
    r = await api.get(API + f"accounts({new})")
    assert r.status_code == 404

    r = await api.patch(
        API + f"accounts({new})", json={"name": "X"}, headers={"Prefer": "return=representation"}
    )
    assert r.status_code == 201
    assert r.json()["accountid"] == new
    r = await api.patch(
        API + f"accounts({new})", json={"name": "Y"}, headers={"If-None-Match": "*"}
    )
    assert r.status_code == 412
    r = await api.patch(API + f"accounts({new})", json={"name": "Z"})
    assert r.status_code == 204
    r = await api.get(API + f"accounts({new})?$select=name")
    assert r.json()["name"] == "Z"

    # alternate keys: create, then update the same row
    r = await api.patch(API + "accounts(accountnumber='K-1')", json={"name": "K"})
    assert r.status_code == 204
    first = r.headers["OData-EntityId"]
    r = await api.patch(API + "accounts(accountnumber='K-1')", json={"name": "K2"})
    assert r.headers["OData-EntityId"] == first
    r = await api.get(API + "accounts(accountnumber='K-1')?$select=name")
    assert r.json()["name"] == "K2"


async def test_paging_follows_absolute_next_links_and_caps_at_top(
    api: httpx.AsyncClient,
) -> None:
    r = await api.post(
        API + "accounts/Microsoft.Dynamics.CRM.CreateMultiple",
        json={"Targets": [{"name": f"P{i:02}"} for i in range(12)]},
    )
    assert len(r.json()["Ids"]) == 12
    url = API + "accounts?$select=name&$orderby=name&$top=7&$count=true"
    names: list[str] = []
    while url:
        r = await api.get(url, headers={"Prefer": "odata.maxpagesize=3"})
        assert r.status_code == 200, r.text
        assert r.headers["Preference-Applied"] == "odata.maxpagesize=3"
        body = r.json()
        assert body["@odata.count"] == 7
        names += [v["name"] for v in body["value"]]
        url = body.get("@odata.nextLink")
        if url:
            assert url.startswith("https://test/api/data/v9.2/accounts?")
    assert names == [f"P{i:02}" for i in range(7)]

    r = await api.get(API + "accounts?$skiptoken=garbage")
    assert r.status_code == 400


async def test_errors_are_shaped_like_dataverse(api: httpx.AsyncClient) -> None:
    r = await api.get(API + "widgets")
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "0x80060888"
    r = await api.get(API + "accounts?$filter=nmae eq 'x'")
    assert r.status_code == 400
    assert "did you mean 'name'" in r.json()["error"]["message"]
    r = await api.get(API + "accounts(not-a-guid)")
    assert r.status_code == 400
    r = await api.post(API + "accounts", content=b"{broken")
    assert r.status_code == 400
    r = await api.post(API + "accounts", json={"name": 5})
    assert r.status_code == 400
    assert "account.name" in r.json()["error"]["message"]
    r = await api.get(API + "accounts", headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401
    r = await api.get(API + "WhoAmI()")
    assert set(r.json()) >= {"UserId", "BusinessUnitId", "OrganizationId"}


async def test_lookups_bind_and_read_back(api: httpx.AsyncClient) -> None:
    r = await api.post(API + "contacts", json={"lastname": "Ng"})
    contact = r.headers["OData-EntityId"].rsplit("(", 1)[1].rstrip(")")
    rid = await create(
        api, {"name": "Bound", "primarycontactid@odata.bind": f"/contacts({contact})"}
    )
    expand = "$expand=primarycontactid($select=lastname)"
    r = await api.get(
        API + f"accounts({rid})?$select=name,primarycontactid&{expand}",
        headers={"Prefer": 'odata.include-annotations="*"'},
    )
    body = r.json()
    assert body["_primarycontactid_value"] == contact
    assert body["_primarycontactid_value@Microsoft.Dynamics.CRM.lookuplogicalname"] == "contact"
    assert body["primarycontactid"]["lastname"] == "Ng"
    r = await api.post(API + "accounts", json={"name": "B", "primarycontactid@odata.bind": "x"})
    assert r.status_code == 400


async def test_the_security_model_decides_what_a_user_reaches(
    api: httpx.AsyncClient, platform: Platform
) -> None:
    org = platform.org
    org.user("clerk", roles=[org.role_id(BASIC_USER)])
    _, secret = platform.auth.create_api_token(org.user_id("clerk"), "t")
    clerk = {"Authorization": f"Bearer {secret}"}
    rid = await create(api, {"name": "Admin's"})
    r = await api.get(API + f"accounts({rid})", headers=clerk)
    assert r.status_code == 404
    r = await api.patch(API + f"accounts({rid})", json={"name": "x"}, headers=clerk)
    assert r.status_code == 404  # an upsert must not create over a row it cannot see
    r = await api.delete(API + f"accounts({rid})", headers=clerk)
    assert r.status_code == 404
    r = await api.get(API + "accounts?$select=name", headers=clerk)
    assert r.status_code in (200, 403)
    if r.status_code == 200:
        assert r.json()["value"] == []
    r = await api.post(API + "CreateEntities", json={"Entities": []}, headers=clerk)
    assert r.status_code == 403
    r = await api.get(API + f"accounts({rid})?$select=name")
    assert r.json()["name"] == "Admin's"


async def test_a_failing_change_set_changes_nothing(api: httpx.AsyncClient) -> None:
    boundary, changeset = "batch_x", "changeset_y"
    body = (
        f"--{boundary}\r\nContent-Type: multipart/mixed; boundary={changeset}\r\n\r\n"
        f"--{changeset}\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n"
        "Content-ID: 1\r\n\r\n"
        "POST https://test/api/data/v9.2/accounts HTTP/1.1\r\n"
        "Content-Type: application/json\r\n\r\n"
        '{"name": "kept?"}\r\n'
        f"--{changeset}\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n"
        "Content-ID: 2\r\n\r\n"
        "PATCH $1 HTTP/1.1\r\nContent-Type: application/json\r\n\r\n"
        '{"name": 42}\r\n'
        f"--{changeset}--\r\n"
        f"--{boundary}\r\nContent-Type: application/http\r\n"
        "Content-Transfer-Encoding: binary\r\n\r\n"
        "GET https://test/api/data/v9.2/accounts?$select=name&$filter=name eq 'kept?' "
        "HTTP/1.1\r\n\r\n"
        f"--{boundary}--\r\n"
    )
    r = await api.post(
        API + "$batch",
        content=body.encode(),
        headers={
            "Content-Type": f'multipart/mixed; boundary="{boundary}"',
            "Prefer": "odata.continue-on-error",
        },
    )
    assert r.status_code == 200
    assert "HTTP/1.1 400" in r.text
    assert '"value":[]' in r.text  # the GET after the change set sees nothing created
    r = await api.get(API + "accounts?$select=name")
    assert r.json()["value"] == []


def test_prefer_splits_outside_quotes() -> None:
    prefer = parse_prefer(
        'odata.include-annotations="Microsoft.Dynamics.CRM.fetchxmlpagingcookie,'
        'Microsoft.Dynamics.CRM.morerecords",odata.maxpagesize=50'
    )
    assert prefer["odata.maxpagesize"] == "50"
    assert prefer["odata.include-annotations"].count(",") == 1
    assert split_outside_quotes("a='x,y',b=(1,2),c", ",") == ["a='x,y'", "b=(1,2)", "c"]


async def test_relationship_definitions_refuse_bad_input_and_non_administrators(
    api: httpx.AsyncClient, platform: Platform
) -> None:
    org = platform.org
    org.user("maker", roles=[org.role_id(BASIC_USER)])
    _, secret = platform.auth.create_api_token(org.user_id("maker"), "t")
    lookup = {
        "@odata.type": "Microsoft.Dynamics.CRM.OneToManyRelationshipMetadata",
        "SchemaName": "account_contact_new_Other",
        "ReferencedEntity": "account",
        "ReferencingEntity": "contact",
        "Lookup": {"SchemaName": "new_Other", "DisplayName": {"LocalizedLabels": []}},
    }
    r = await api.post(
        API + "RelationshipDefinitions", json=lookup, headers={"Authorization": f"Bearer {secret}"}
    )
    assert r.status_code == 403
    for bad in (
        {**lookup, "@odata.type": "Microsoft.Dynamics.CRM.Nothing"},
        {**lookup, "ReferencedEntity": "nosuch"},
        {**lookup, "Lookup": {"SchemaName": "Bad Name!"}},
        {**lookup, "Lookup": None},
    ):
        r = await api.post(API + "RelationshipDefinitions", json=bad)
        assert 400 <= r.status_code < 500, r.text
        assert "new_other" not in platform.store.schema.table("contact").columns
    r = await api.get(API + "RelationshipDefinitions?$filter=name eq 'x'")
    assert r.status_code == 400
    r = await api.post(API + "RelationshipDefinitions", json=lookup)
    assert r.status_code == 204
    r = await api.get(
        API + "RelationshipDefinitions?$filter=SchemaName eq 'ACCOUNT_contact_new_other'"
    )
    [found] = r.json()["value"]
    assert found["ReferencingAttribute"] == "new_other"
    assert found["SchemaName"] == "account_contact_new_Other"  # kept as given
    r = await api.delete(API + f"RelationshipDefinitions({found['MetadataId']})")
    assert r.status_code == 204
    assert "new_other" not in platform.store.schema.table("contact").columns
