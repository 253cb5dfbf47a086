"""Microsoft's Python SDK (PowerPlatform-Dataverse-Client 1.1.0), unchanged, against a live
fieldsync over HTTPS: every metadata operation (tables, columns, lookups, relationships,
alternate keys); and a generic OData client (python-odata) that builds its model from
``$metadata`` and queries through it. The server and the SDK client are the fixtures of
``test_webapi_sdk``."""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

import pytest
import requests
from odata import ODataService  # type: ignore[import-untyped]
from PowerPlatform.Dataverse.client import DataverseClient
from PowerPlatform.Dataverse.core.errors import HttpError
from PowerPlatform.Dataverse.models.labels import Label, LocalizedLabel
from PowerPlatform.Dataverse.models.relationship import (
    LookupAttributeMetadata,
    ManyToManyRelationshipMetadata,
    OneToManyRelationshipMetadata,
)
from PowerPlatform.Dataverse.models.upsert import UpsertItem

from fieldsync.devcert import DevCertificate
from fieldsync.platform import Platform
from fieldsync.security.roles import SYSTEM_ADMINISTRATOR
from test_webapi_sdk import (  # the live fixtures
    AsyncStaticTokenCredential,
    admin,  # noqa: F401
    certificate,  # noqa: F401
    server,  # noqa: F401
)

ONE_TO_MANY = "RelationshipType eq Microsoft.Dynamics.CRM.RelationshipType'OneToManyRelationship'"


def test_tables_and_columns_keep_their_schema_names(
    admin: DataverseClient,  # noqa: F811
) -> None:
    client = admin
    info = client.tables.create(
        "new_Product",
        {
            "new_Code": {"type": "string", "max_length": 20},
            "new_Score": {"type": "int", "min_value": 0, "max_value": 10},
            "new_Price": "decimal",
        },
    )
    assert info["table_schema_name"] == "new_Product"
    got = client.tables.get("new_product")
    assert got is not None
    assert got["table_schema_name"] == "new_Product"
    assert got["table_logical_name"] == "new_product"
    listed = client.tables.list(
        filter="SchemaName eq 'new_Product'", select=["LogicalName", "SchemaName"]
    )
    assert [t["SchemaName"] for t in listed] == ["new_Product"]
    listed = client.tables.list(
        filter="OwnershipType eq Microsoft.Dynamics.CRM.OwnershipTypes'UserOwned'"
    )
    assert "new_product" in {t["LogicalName"] for t in listed}

    columns = client.tables.list_columns(
        "new_product", select=["LogicalName", "SchemaName"], filter="AttributeType eq 'Integer'"
    )
    assert [(c["LogicalName"], c["SchemaName"]) for c in columns] == [("new_score", "new_Score")]
    column = client.tables.get_column("new_product", "new_code")
    assert column is not None
    assert column["SchemaName"] == "new_Code"
    typed = client.tables.get_column("new_product", "new_code", typed=True)
    assert typed is not None
    assert typed["MaxLength"] == 20
    typed_all = client.tables.list_columns("new_product", typed=True)
    assert {c["LogicalName"] for c in typed_all} >= {"new_code", "new_score", "new_price"}
    assert client.tables.get_column("new_product", "no_such_column") is None

    client.tables.update_column(
        "new_product", "new_code", {"max_length": 400, "display_name": "Product code"}
    )
    column = client.tables.get_column("new_product", "new_code", typed=True)
    assert column is not None
    assert column["MaxLength"] == 400
    assert column["DisplayName"]["UserLocalizedLabel"]["Label"] == "Product code"
    updated = client.tables.update_columns(
        "new_product",
        {"new_score": {"max_value": 100, "required": "ApplicationRequired"}},
    )
    assert updated == ["new_score"]
    score = client.tables.get_column("new_product", "new_score", typed=True)
    assert score is not None
    assert score["MaxValue"] == 100
    assert score["RequiredLevel"]["Value"] == "ApplicationRequired"
    client.records.create("new_product", {"new_name": "x", "new_code": "c" * 300, "new_score": 50})

    client.tables.add_columns("new_product", {"new_Flag": "bool"})
    assert client.tables.get_column("new_product", "new_flag")["SchemaName"] == "new_Flag"
    client.tables.remove_columns("new_product", ["new_flag"])
    assert client.tables.get_column("new_product", "new_flag") is None
    client.tables.delete("new_product")
    assert client.tables.get("new_product") is None


def label(text: str) -> Label:
    return Label(localized_labels=[LocalizedLabel(label=text, language_code=1033)])


def test_relationships_keep_their_names_and_are_listed_and_deleted(
    admin: DataverseClient,  # noqa: F811
    platform: Platform,
) -> None:
    client = admin
    client.tables.create("new_Visit", {"new_Minutes": "int"})
    client.tables.create("new_Site", {"new_Area": "int"})
    lookup = client.tables.create_lookup_field(
        referencing_table="new_visit",
        lookup_field_name="new_AccountId",
        referenced_table="account",
        display_name="Account",
    )
    found = client.tables.get_relationship(lookup.relationship_schema_name)
    assert found is not None
    assert found.relationship_id == lookup.relationship_id
    assert found.lookup_schema_name == "new_AccountId"

    custom = client.tables.create_one_to_many_relationship(
        LookupAttributeMetadata(schema_name="new_SiteId", display_name=label("Site")),
        OneToManyRelationshipMetadata(
            schema_name="new_Site_Visits",
            referenced_entity="new_site",
            referencing_entity="new_visit",
            referenced_attribute="new_siteid",
        ),
    )
    found = client.tables.get_relationship("new_Site_Visits")
    assert found is not None
    assert found.relationship_id == custom.relationship_id
    assert found.relationship_schema_name == "new_Site_Visits"

    many = client.tables.create_many_to_many_relationship(
        ManyToManyRelationshipMetadata(
            schema_name="new_Visit_Contact",
            entity1_logical_name="new_visit",
            entity2_logical_name="contact",
        )
    )
    assert client.tables.get_relationship("new_Visit_Contact") is not None

    one_to_many = client.tables.list_relationships(
        filter=ONE_TO_MANY, select=["SchemaName", "ReferencingEntity"]
    )
    names = {r["SchemaName"] for r in one_to_many}
    assert "new_Site_Visits" in names
    assert "new_Visit_Contact" not in names
    per_table = client.tables.list_table_relationships("new_visit")
    assert {r["SchemaName"] for r in per_table} >= {
        "new_Site_Visits",
        "new_Visit_Contact",
        lookup.relationship_schema_name,
    }

    site = client.records.create("new_site", {"new_name": "North"})
    visit = client.records.create(
        "new_visit", {"new_name": "v1", "new_SiteId@odata.bind": f"/new_sites({site})"}
    )
    row = client.records.retrieve(
        "new_visit", visit, select=["new_name"], expand=["new_SiteId($select=new_name)"]
    )
    assert row["new_SiteId"]["new_name"] == "North"

    client.tables.delete_relationship(custom.relationship_id)
    assert client.tables.get_relationship("new_Site_Visits") is None
    assert "new_siteid" not in platform.store.schema.table("new_visit").columns
    client.tables.delete_relationship(many.relationship_id)
    assert client.tables.get_relationship("new_Visit_Contact") is None
    with pytest.raises(HttpError):
        client.tables.delete_relationship(many.relationship_id)


def test_alternate_keys_from_the_sdk(
    admin: DataverseClient,  # noqa: F811
) -> None:
    client = admin
    client.tables.create("new_Part", {"new_Code": "string"})
    key = client.tables.create_alternate_key(
        "new_part", "new_Code_Key", ["new_code"], display_name="Code"
    )
    assert key.metadata_id
    keys = client.tables.get_alternate_keys("new_part")
    assert [(k.schema_name, k.key_attributes, k.status) for k in keys] == [
        ("new_Code_Key", ["new_code"], "Active")
    ]
    client.records.upsert(
        "new_part", [UpsertItem(alternate_key={"new_code": "P-1"}, record={"new_name": "One"})]
    )
    client.records.upsert(
        "new_part",
        [
            UpsertItem(alternate_key={"new_code": "P-1"}, record={"new_name": "One again"}),
            UpsertItem(alternate_key={"new_code": "P-2"}, record={"new_name": "Two"}),
        ],
    )
    rows = list(client.records.list("new_part", select=["new_name"]))
    assert sorted(r["new_name"] for r in rows) == ["One again", "Two"]
    with pytest.raises(HttpError) as refused:
        client.records.create("new_part", {"new_name": "Dup", "new_code": "P-1"})
    assert refused.value.status_code == 412
    client.tables.delete_alternate_key("new_part", key.metadata_id)
    assert client.tables.get_alternate_keys("new_part") == []


def test_a_generic_odata_client_builds_its_model_from_metadata(
    server: str,  # noqa: F811
    platform: Platform,
    admin: DataverseClient,  # noqa: F811
) -> None:
    """python-odata reads $metadata (entity types, keys, properties, navigation properties,
    entity sets, actions, functions) into classes, then queries the service through them."""
    admin.records.create("account", {"name": "Contoso"})
    _, secret = platform.auth.create_api_token(platform.org.user_id("admin"), "odata")
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {secret}"
    service: Any = ODataService(
        f"{server}/api/data/v9.2/", session=session, reflect_entities=True, quiet_progress=True
    )
    account = service.entities["accounts"]
    assert "contacts" in service.entities
    found = service.query(account).filter(account.name == "Contoso").all()
    assert [a.name for a in found] == ["Contoso"]


def test_the_async_client_s_metadata_operations(
    platform: Platform,
    server: str,  # noqa: F811
    certificate: DevCertificate,  # noqa: F811
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
            tables = client.tables
            await tables.create("new_Crate", {"new_Label": "string", "new_Weight": "int"})
            got = await tables.get("new_crate")
            assert got is not None
            assert got["table_schema_name"] == "new_Crate"
            assert "new_crate" in {t["LogicalName"] for t in await tables.list()}
            await tables.add_columns("new_crate", {"new_Flag": "bool"})
            await tables.update_column("new_crate", "new_label", {"max_length": 250})
            column = await tables.get_column("new_crate", "new_label", typed=True)
            assert column is not None
            assert column["MaxLength"] == 250
            await tables.update_columns("new_crate", {"new_weight": {"max_value": 99}})
            assert [
                c["LogicalName"]
                for c in await tables.list_columns("new_crate", filter="AttributeType eq 'Integer'")
            ] == ["new_weight"]
            await tables.remove_columns("new_crate", ["new_flag"])
            lookup = await tables.create_lookup_field(
                referencing_table="new_crate",
                lookup_field_name="new_AccountId",
                referenced_table="account",
            )
            custom = await tables.create_one_to_many_relationship(
                LookupAttributeMetadata(schema_name="new_ContactId", display_name=label("Contact")),
                OneToManyRelationshipMetadata(
                    schema_name="new_Contact_Crates",
                    referenced_entity="contact",
                    referencing_entity="new_crate",
                    referenced_attribute="contactid",
                ),
            )
            many = await tables.create_many_to_many_relationship(
                ManyToManyRelationshipMetadata(
                    schema_name="new_Crate_Account",
                    entity1_logical_name="new_crate",
                    entity2_logical_name="account",
                )
            )
            found = await tables.get_relationship("new_Contact_Crates")
            assert found is not None
            assert found.relationship_id == custom.relationship_id
            listed = await tables.list_relationships(filter=ONE_TO_MANY)
            assert lookup.relationship_schema_name in {r["SchemaName"] for r in listed}
            per_table = await tables.list_table_relationships("new_crate")
            assert {r["SchemaName"] for r in per_table} >= {
                "new_Contact_Crates",
                "new_Crate_Account",
            }
            key = await tables.create_alternate_key("new_crate", "new_Label_Key", ["new_label"])
            keys = await tables.get_alternate_keys("new_crate")
            assert [(k.schema_name, k.status) for k in keys] == [("new_Label_Key", "Active")]
            await tables.delete_alternate_key("new_crate", key.metadata_id)
            assert await tables.get_alternate_keys("new_crate") == []
            await tables.delete_relationship(many.relationship_id)
            await tables.delete_relationship(custom.relationship_id)
            assert await tables.get_relationship("new_Contact_Crates") is None
            await tables.delete("new_crate")
            assert await tables.get("new_crate") is None

    asyncio.run(walk())
