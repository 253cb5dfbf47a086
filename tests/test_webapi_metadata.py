"""The Web API's metadata, in process on both backends: schema names in their case,
case-sensitive navigation properties, relationship definitions (filters, casts, per table,
deletion), typed attribute casts and column updates, alternate keys, RetrieveMetadataChanges,
the CSDL document and the SDK message filters."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote
from xml.etree import ElementTree as ET

import httpx
import pytest

from fieldsync.config import Settings
from fieldsync.platform import Platform
from fieldsync.security.roles import BASIC_USER, SYSTEM_ADMINISTRATOR
from fieldsync.server.app import create_app
from fieldsync.store.store import Store

API = "/api/data/v9.2/"
CRM = "Microsoft.Dynamics.CRM."
pytestmark = pytest.mark.anyio


def label(text: str) -> dict[str, Any]:
    return {"LocalizedLabels": [{"Label": text, "LanguageCode": 1033}]}


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
        yield c


async def maker(platform: Platform) -> dict[str, str]:
    org = platform.org
    org.user("maker", roles=[org.role_id(BASIC_USER)])
    _, secret = platform.auth.create_api_token(org.user_id("maker"), "m")
    return {"Authorization": f"Bearer {secret}"}


async def create_product(api: httpx.AsyncClient) -> None:
    body = {
        "Entities": [
            {
                "@odata.type": f"{CRM}ComplexEntityMetadata",
                "SchemaName": "new_Product",
                "DisplayName": label("Product"),
                "OwnershipType": "UserOwned",
                "HasNotes": True,
                "Attributes": [
                    {
                        "@odata.type": f"{CRM}ComplexStringAttributeMetadata",
                        "SchemaName": "new_Name",
                        "MaxLength": 200,
                        "IsPrimaryName": True,
                    },
                    {"@odata.type": f"{CRM}IntegerAttributeMetadata", "SchemaName": "new_Score"},
                    {
                        "@odata.type": f"{CRM}StringAttributeMetadata",
                        "SchemaName": "new_Code",
                        "MaxLength": 20,
                    },
                ],
            }
        ]
    }
    r = await api.post(API + "CreateEntities", json=body)
    assert r.status_code == 200, r.text


async def test_schema_names_keep_their_case_and_survive_a_restart(
    api: httpx.AsyncClient, platform: Platform, database_url: str
) -> None:
    await create_product(api)
    r = await api.get(
        API + "EntityDefinitions?$select=LogicalName,SchemaName,PrimaryNameAttribute"
        "&$filter=LogicalName eq 'new_product'"
    )
    [table] = r.json()["value"]
    assert (table["LogicalName"], table["SchemaName"]) == ("new_product", "new_Product")
    assert table["PrimaryNameAttribute"] == "new_name"
    r = await api.get(API + "EntityDefinitions(LogicalName='new_product')/Attributes")
    names = {a["LogicalName"]: a["SchemaName"] for a in r.json()["value"]}
    assert names["new_score"] == "new_Score"
    assert names["new_name"] == "new_Name"
    assert names["createdon"] == "createdon"
    assert names["new_productid"] == "new_ProductId"
    reopened = Store.open(database_url)
    try:
        table_def = reopened.schema.table("new_product")
        assert table_def.schema == "new_Product"
        assert table_def.columns["new_score"].schema == "new_Score"
    finally:
        reopened.close()


async def test_entity_definitions_filter_on_enums_and_managed_properties(
    api: httpx.AsyncClient,
) -> None:
    await create_product(api)
    r = await api.get(
        API + "EntityDefinitions?$select=LogicalName,HasActivities,HasNotes,IsActivity"
        f"&$filter=OwnershipType eq {CRM}OwnershipTypes'UserOwned' and IsCustomEntity eq true"
    )
    assert r.status_code == 200, r.text
    [product] = [t for t in r.json()["value"] if t["LogicalName"] == "new_product"]
    assert product["HasActivities"] is False
    assert product["HasNotes"] is False
    assert product["IsActivity"] is False
    r = await api.get(
        API + "EntityDefinitions?$select=LogicalName&$filter=CanCreateAttributes/Value eq true"
    )
    custom = {t["LogicalName"] for t in r.json()["value"]}
    assert "new_product" in custom
    assert "account" not in custom
    r = await api.get(
        API + f"EntityDefinitions?$filter=OwnershipType eq {CRM}OwnershipTypes'Nobody'"
    )
    assert r.status_code == 400
    assert "UserOwned" in r.json()["error"]["message"]
    r = await api.get(API + f"EntityDefinitions?$filter=OwnershipType eq {CRM}Colours'Red'")
    assert r.status_code == 400


async def test_a_lookup_keeps_its_schema_name_and_navigates_case_sensitively(
    api: httpx.AsyncClient, platform: Platform
) -> None:
    await create_product(api)
    relationship = {
        "@odata.type": f"{CRM}OneToManyRelationshipMetadata",
        "SchemaName": "new_Account_Products",
        "ReferencedEntity": "account",
        "ReferencedAttribute": "accountid",
        "ReferencingEntity": "new_product",
        "Lookup": {"SchemaName": "new_AccountId", "DisplayName": label("Account")},
    }
    r = await api.post(API + "RelationshipDefinitions", json=relationship)
    assert r.status_code == 204, r.text
    r = await api.get(API + "RelationshipDefinitions?$filter=SchemaName eq 'new_Account_Products'")
    [rel] = r.json()["value"]
    assert rel["SchemaName"] == "new_Account_Products"
    assert rel["ReferencingEntityNavigationPropertyName"] == "new_AccountId"
    assert rel["ReferencingAttribute"] == "new_accountid"
    r = await api.post(API + "accounts", json={"name": "Contoso"})
    account = r.headers["OData-EntityId"].rsplit("(", 1)[1].rstrip(")")
    r = await api.post(
        API + "new_products",
        json={"new_name": "Widget", "new_AccountId@odata.bind": f"/accounts({account})"},
    )
    assert r.status_code == 204, r.text
    r = await api.get(API + "new_products?$select=new_name&$expand=new_AccountId($select=name)")
    assert r.status_code == 200, r.text
    [row] = r.json()["value"]
    assert row["new_AccountId"]["name"] == "Contoso"
    r = await api.get(API + "new_products?$expand=new_accountid")
    assert r.status_code == 400
    assert "case-sensitive" in r.json()["error"]["message"]
    r = await api.get(API + f"accounts({account})?$expand=new_Account_Products($select=new_name)")
    assert r.json()["new_Account_Products"][0]["new_name"] == "Widget"


async def test_relationship_definitions_filter_cast_per_table_and_delete(
    api: httpx.AsyncClient, platform: Platform
) -> None:
    await create_product(api)
    r = await api.post(
        API + "RelationshipDefinitions",
        json={
            "@odata.type": f"{CRM}ManyToManyRelationshipMetadata",
            "SchemaName": "new_Product_Contact",
            "Entity1LogicalName": "new_product",
            "Entity2LogicalName": "contact",
        },
    )
    assert r.status_code == 204, r.text
    many_id = r.headers["OData-EntityId"].rsplit("(", 1)[1].rstrip(")")
    one_to_many = f"RelationshipType eq {CRM}RelationshipType'OneToManyRelationship'"
    r = await api.get(API + f"RelationshipDefinitions?$filter={one_to_many}")
    assert r.status_code == 200, r.text
    kinds = {v["@odata.type"] for v in r.json()["value"]}
    assert kinds == {f"#{CRM}OneToManyRelationshipMetadata"}
    r = await api.get(
        API + f"RelationshipDefinitions/{CRM}ManyToManyRelationshipMetadata"
        "?$select=SchemaName,IntersectEntityName&$filter=Entity1LogicalName eq 'new_product'"
    )
    [many] = r.json()["value"]
    assert many["SchemaName"] == "new_Product_Contact"
    assert many["IntersectEntityName"] == "new_product_contact"
    r = await api.get(API + "RelationshipDefinitions(SchemaName='new_Product_Contact')")
    assert r.json()["MetadataId"] == many_id
    r = await api.get(
        API + f"RelationshipDefinitions({many_id})/{CRM}OneToManyRelationshipMetadata"
    )
    assert r.status_code == 404
    r = await api.get(API + "RelationshipDefinitions?$filter=Nonsense eq 1")
    assert r.status_code == 400
    r = await api.get(
        API + "EntityDefinitions(LogicalName='account')/OneToManyRelationships"
        "?$select=SchemaName,ReferencingEntity&$filter=ReferencingEntity eq 'contact'"
    )
    assert r.status_code == 200, r.text
    assert r.json()["value"]
    assert all(v["ReferencingEntity"] == "contact" for v in r.json()["value"])
    r = await api.get(API + "EntityDefinitions(LogicalName='contact')/ManyToOneRelationships")
    assert {v["ReferencedEntity"] for v in r.json()["value"]} >= {"account", "contact"}
    r = await api.get(API + "EntityDefinitions(LogicalName='contact')/ManyToManyRelationships")
    assert [v["SchemaName"] for v in r.json()["value"]] == ["new_Product_Contact"]
    r = await api.get(
        API + "EntityDefinitions(LogicalName='account')?$select=LogicalName"
        "&$expand=OneToManyRelationships,Keys"
    )
    assert r.json()["OneToManyRelationships"]
    assert r.json()["Keys"] == []

    headers = await maker(platform)
    r = await api.delete(API + f"RelationshipDefinitions({many_id})", headers=headers)
    assert r.status_code == 403
    assert "new_product_contact" in platform.store.schema
    r = await api.delete(API + f"RelationshipDefinitions({many_id})")
    assert r.status_code == 204
    assert "new_product_contact" not in platform.store.schema
    assert "new_product_contact" not in platform.store.schema.relationships
    r = await api.get(
        API + "RelationshipDefinitions?$filter=SchemaName eq 'contact_customer_accounts'"
    )
    [builtin] = r.json()["value"] or [None]
    if builtin is not None:
        r = await api.delete(API + f"RelationshipDefinitions({builtin['MetadataId']})")
        assert r.status_code == 400
    r = await api.delete(API + f"RelationshipDefinitions({uuid.uuid4()})")
    assert r.status_code == 404


async def test_every_attribute_type_casts_and_a_column_updates_by_put(
    api: httpx.AsyncClient, platform: Platform
) -> None:
    await create_product(api)
    table = "EntityDefinitions(LogicalName='new_product')/Attributes"
    r = await api.get(API + table + "?$select=LogicalName,AttributeType")
    by_type: dict[str, set[str]] = {}
    for attr in r.json()["value"]:
        by_type.setdefault(attr["@odata.type"].removeprefix("#"), set()).add(attr["LogicalName"])
    assert f"{CRM}StateAttributeMetadata" in by_type
    assert f"{CRM}LookupAttributeMetadata" in by_type
    for odata_type, names in by_type.items():
        r = await api.get(API + f"{table}/{odata_type}?$select=LogicalName")
        assert r.status_code == 200, (odata_type, r.text)
        assert {a["LogicalName"] for a in r.json()["value"]} == names
        one = sorted(names)[0]
        r = await api.get(API + f"{table}(LogicalName='{one}')/{odata_type}")
        assert r.status_code == 200
        assert r.json()["LogicalName"] == one
    r = await api.get(API + f"{table}(LogicalName='new_score')/{CRM}StringAttributeMetadata")
    assert r.status_code == 404
    r = await api.get(API + f"{table}/{CRM}EnumAttributeMetadata")
    assert r.status_code == 404
    r = await api.get(API + f"{table}/{CRM}ManagedPropertyAttributeMetadata")
    assert r.json()["value"] == []

    r = await api.get(API + f"{table}(LogicalName='new_code')/{CRM}StringAttributeMetadata")
    full = {k: v for k, v in r.json().items() if not k.startswith("@odata.")}
    full["@odata.type"] = f"{CRM}StringAttributeMetadata"
    full["MaxLength"] = 300
    full["DisplayName"] = label("Product code")
    full["RequiredLevel"] = {"Value": "ApplicationRequired"}
    url = API + f"{table}({full['MetadataId']})"
    headers = await maker(platform)
    r = await api.put(url, json=full, headers=headers)
    assert r.status_code == 403
    r = await api.put(url, json=full, headers={"MSCRM.MergeLabels": "true"})
    assert r.status_code == 204, r.text
    column = platform.store.schema.table("new_product").columns["new_code"]
    assert (column.max_length, column.display_name, column.required) == (300, "Product code", True)
    assert column.schema == "new_Code"
    r = await api.post(API + "new_products", json={"new_name": "x", "new_code": "c" * 250})
    assert r.status_code == 204, r.text
    for bad in (
        {**full, "@odata.type": f"{CRM}IntegerAttributeMetadata"},
        {**full, "SchemaName": "new_Other"},
        {**full, "MaxLength": 0},
        {**full, "MaxLength": 100},  # a stored value has 250 characters
    ):
        r = await api.put(url, json=bad)
        assert r.status_code == 400, r.text
    assert platform.store.schema.table("new_product").columns["new_code"].max_length == 300


async def test_alternate_keys_are_unique_indexes_used_by_upserts(
    api: httpx.AsyncClient, platform: Platform, database_url: str
) -> None:
    await create_product(api)
    keys = API + "EntityDefinitions(LogicalName='new_product')/Keys"
    body = {
        "SchemaName": "new_Code_Key",
        "KeyAttributes": ["new_code"],
        "DisplayName": label("Code"),
    }
    headers = await maker(platform)
    r = await api.post(keys, json=body, headers=headers)
    assert r.status_code == 403
    r = await api.post(keys, json=body)
    assert r.status_code == 204, r.text
    key_id = r.headers["OData-EntityId"].rsplit("(", 1)[1].rstrip(")")
    r = await api.get(keys)
    [key] = r.json()["value"]
    assert (key["SchemaName"], key["KeyAttributes"], key["EntityKeyIndexStatus"]) == (
        "new_Code_Key",
        ["new_code"],
        "Active",
    )
    assert key["MetadataId"] == key_id
    reopened = Store.open(database_url)  # the key is part of the stored definition
    try:
        assert [k.schema for k in reopened.schema.table("new_product").keys] == ["new_Code_Key"]
    finally:
        reopened.close()
    r = await api.post(keys, json={**body, "SchemaName": "new_other"})
    assert r.status_code == 400  # the same columns again
    r = await api.post(keys, json={"SchemaName": "new_bad", "KeyAttributes": ["nosuch"]})
    assert r.status_code == 400

    r = await api.patch(API + "new_products(new_code='A-1')", json={"new_name": "One"})
    assert r.status_code == 204, r.text
    r = await api.patch(API + "new_products(new_code='A-1')", json={"new_name": "One again"})
    assert r.status_code == 204
    r = await api.get(API + "new_products(new_code='A-1')?$select=new_name")
    assert r.json()["new_name"] == "One again"
    r = await api.get(API + "new_products?$select=new_name")
    assert len(r.json()["value"]) == 1
    r = await api.post(API + "new_products", json={"new_name": "Dup", "new_code": "A-1"})
    assert r.status_code == 412, r.text
    assert "new_Code_Key" in r.json()["error"]["message"]
    r = await api.get(API + "new_products?$select=new_name")
    assert len(r.json()["value"]) == 1

    column = API + "EntityDefinitions(LogicalName='new_product')/Attributes(LogicalName='new_code')"
    r = await api.delete(column)
    assert r.status_code == 400
    assert "new_Code_Key" in r.json()["error"]["message"]
    r = await api.delete(keys + f"({key_id})")
    assert r.status_code == 204
    assert platform.store.schema.table("new_product").keys == ()
    r = await api.post(API + "new_products", json={"new_name": "Dup", "new_code": "A-1"})
    assert r.status_code == 204
    r = await api.post(keys, json=body)  # two rows share A-1 now: no unique index
    assert r.status_code == 400
    assert "A-1" in r.json()["error"]["message"]
    assert platform.store.schema.table("new_product").keys == ()


async def test_retrieve_metadata_changes(api: httpx.AsyncClient) -> None:
    await create_product(api)
    query = {
        "Properties": {"PropertyNames": ["LogicalName", "Attributes"]},
        "Criteria": {
            "Conditions": [
                {
                    "PropertyName": "LogicalName",
                    "ConditionOperator": "Equals",
                    "Value": {"Type": "System.String", "Value": "new_product"},
                }
            ]
        },
        "AttributeQuery": {
            "Properties": {"PropertyNames": ["LogicalName", "MaxLength"]},
            "Criteria": {
                "Conditions": [
                    {
                        "PropertyName": "LogicalName",
                        "ConditionOperator": "Equals",
                        "Value": {"Type": "System.String", "Value": "new_code"},
                    }
                ]
            },
        },
    }
    p1 = quote(json.dumps(query))
    r = await api.get(API + f"RetrieveMetadataChanges(Query=@p1)?@p1={p1}")
    assert r.status_code == 200, r.text
    [entity] = r.json()["EntityMetadata"]
    assert entity["LogicalName"] == "new_product"
    [attribute] = entity["Attributes"]
    assert attribute["MaxLength"] == 20
    assert "DisplayName" not in attribute
    stamp = r.json()["ServerVersionStamp"]
    url = API + f"RetrieveMetadataChanges(Query=@p1,ClientVersionStamp=@p2)?@p1={p1}&@p2='{stamp}'"
    r = await api.get(url)
    assert r.status_code == 200
    assert r.json()["EntityMetadata"] == []
    r = await api.post(
        API + "EntityDefinitions(LogicalName='new_product')/Attributes",
        json={"@odata.type": f"{CRM}MemoAttributeMetadata", "SchemaName": "new_Notes"},
    )
    assert r.status_code == 204
    r = await api.get(url)
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "0x80044352"
    r = await api.get(API + "RetrieveMetadataChanges(Query=@p1)?@p1={not json")
    assert r.status_code == 400


async def test_the_csdl_document_describes_the_schema(
    api: httpx.AsyncClient, platform: Platform
) -> None:
    r = await api.get(API + "$metadata")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/xml")
    first = r.content
    ns = {
        "edmx": "http://docs.oasis-open.org/odata/ns/edmx",
        "edm": "http://docs.oasis-open.org/odata/ns/edm",
    }
    doc = ET.fromstring(first)
    [schema] = doc.findall("edmx:DataServices/edm:Schema", ns)
    assert (schema.get("Namespace"), schema.get("Alias")) == ("Microsoft.Dynamics.CRM", "mscrm")
    types = {e.get("Name"): e for e in schema.findall("edm:EntityType", ns)}
    account = types["account"]
    assert account.find("edm:Key/edm:PropertyRef", ns).get("Name") == "accountid"  # type: ignore[union-attr]
    props = {p.get("Name"): p.get("Type") for p in account.findall("edm:Property", ns)}
    assert props["name"] == "Edm.String"
    assert props["_primarycontactid_value"] == "Edm.Guid"
    navs = {n.get("Name"): n for n in account.findall("edm:NavigationProperty", ns)}
    primary = navs["primarycontactid"]
    assert primary.get("Type") == "mscrm.contact"
    partner = primary.get("Partner")
    contact_navs = {
        n.get("Name"): n for n in types["contact"].findall("edm:NavigationProperty", ns)
    }
    assert contact_navs[partner].get("Type") == "Collection(mscrm.account)"  # type: ignore[index]
    assert contact_navs[partner].get("Partner") == "primarycontactid"  # type: ignore[index]
    constraint = primary.find("edm:ReferentialConstraint", ns)
    assert constraint is not None
    assert constraint.get("Property") == "_primarycontactid_value"
    # every partner and every type named exists
    for et in types.values():
        for nav in et.findall("edm:NavigationProperty", ns):
            target = nav.get("Type", "").removeprefix("Collection(").rstrip(")")
            target = target.removeprefix("mscrm.")
            assert target in types, nav.get("Name")
            partner_names = {
                n.get("Name") for n in types[target].findall("edm:NavigationProperty", ns)
            }
            assert nav.get("Partner") in partner_names, (et.get("Name"), nav.get("Name"))
    container = schema.find("edm:EntityContainer", ns)
    assert container is not None
    sets = {s.get("Name"): s.get("EntityType") for s in container.findall("edm:EntitySet", ns)}
    assert sets["accounts"] == "Microsoft.Dynamics.CRM.account"
    actions = {a.get("Name") for a in schema.findall("edm:Action", ns)}
    assert {"CreateMultiple", "UpdateMultiple", "UpsertMultiple", "BulkDelete"} <= actions
    assert "WhoAmI" in {f.get("Name") for f in schema.findall("edm:Function", ns)}

    r = await api.get(API + "$metadata")
    assert r.content == first  # cached per schema generation
    await create_product(api)
    r = await api.get(API + "$metadata")
    assert b'EntityType Name="new_product"' in r.content
    assert b'Name="new_products"' in r.content
    r = await api.post(API + "$metadata")
    assert r.status_code == 405


async def test_sdk_message_filters_say_which_tables_take_the_bulk_messages(
    api: httpx.AsyncClient,
) -> None:
    await create_product(api)
    url = (
        API + "sdkmessagefilters?$select=sdkmessagefilterid"
        "&$filter=sdkmessageid/name eq @message and primaryobjecttypecode eq @table"
    )
    for message in ("CreateMultiple", "UpdateMultiple", "UpsertMultiple"):
        r = await api.get(url + f"&@message='{message}'&@table='new_product'")
        assert r.status_code == 200, r.text
        assert len(r.json()["value"]) == 1
    r = await api.get(url + "&@message='CreateMultiple'&@table='new_product_nothing'")
    assert r.json()["value"] == []
    r = await api.get(url + "&@message='Merge'&@table='account'")
    assert r.json()["value"] == []
    r = await api.get(API + "sdkmessages?$select=name&$filter=name eq 'UpsertMultiple'")
    [message] = r.json()["value"]
    assert message["name"] == "UpsertMultiple"
    r = await api.post(API + "sdkmessages", json={"name": "x"})
    assert r.status_code == 405
