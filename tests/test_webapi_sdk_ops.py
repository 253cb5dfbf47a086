"""Microsoft's Python SDK (PowerPlatform-Dataverse-Client 1.1.0), unchanged, against a live
fieldsync over HTTPS, on SQLite and PostgreSQL: the operations the other SDK tests leave out.
``records.get`` (both overloads), the query helpers that read metadata (``sql_columns``,
``odata_select``, ``odata_expands``, ``odata_expand``, ``odata_bind``), the DataFrame helpers
(``get``, ``create``, ``update``, ``delete``) and, inside one ``$batch``, every table operation
and the DataFrame ones. Each result is read back from the server, not taken on trust."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pandas as pd
import pytest
from PowerPlatform.Dataverse.client import DataverseClient
from PowerPlatform.Dataverse.models.filters import col
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
from test_webapi_sdk import (  # the live HTTPS server and the SDK clients
    AsyncStaticTokenCredential,
    admin,
    certificate,
    server,
)

__all__ = ["admin", "certificate", "server"]  # fixtures used by name below


def label(text: str) -> Label:
    return Label(localized_labels=[LocalizedLabel(label=text, language_code=1033)])


def test_records_get_one_by_id_and_pages_of_many(admin: DataverseClient) -> None:
    client = admin
    ids = client.records.create(
        "account", [{"name": f"Get {i}", "numberofemployees": i} for i in range(7)]
    )
    with pytest.deprecated_call():
        one = client.records.get("account", ids[3], select=["name", "numberofemployees"])
    assert one.id == ids[3]
    assert (one["name"], one["numberofemployees"]) == ("Get 3", 3)

    with pytest.deprecated_call():
        pages = client.records.get(
            "account",
            select=["name"],
            filter="numberofemployees ge 1",
            orderby=["numberofemployees desc"],
            top=5,
            page_size=2,
        )
    got = list(pages)
    assert [len(p) for p in got] == [2, 2, 1]
    assert [r["name"] for p in got for r in p] == [f"Get {i}" for i in (6, 5, 4, 3, 2)]

    contact = client.records.create("contact", {"firstname": "Gia", "lastname": "Get"})
    client.records.update(
        "account", ids[0], {"primarycontactid@odata.bind": f"/contacts({contact})"}
    )
    with pytest.deprecated_call():
        pages = client.records.get(
            "account",
            select=["name", "primarycontactid"],
            filter="name eq 'Get 0'",
            expand=["primarycontactid($select=fullname)"],
            count=True,
            include_annotations="OData.Community.Display.V1.FormattedValue",
        )
    [[row]] = list(pages)
    assert row["primarycontactid"]["fullname"] == "Gia Get"
    formatted = "_primarycontactid_value@OData.Community.Display.V1.FormattedValue"
    assert row[formatted] == "Gia Get"


def test_query_metadata_helpers(admin: DataverseClient) -> None:
    client = admin
    client.tables.create("new_Visit", {"new_Minutes": "int", "new_Notes": "string"})
    client.tables.create_lookup_field(
        referencing_table="new_visit",
        lookup_field_name="new_AccountId",
        referenced_table="account",
        display_name="Account",
    )
    columns = client.query.sql_columns("new_visit")
    by_name = {c["name"]: c for c in columns}
    assert columns[0]["name"] == "new_visitid"
    assert columns[0]["is_pk"] is True
    assert columns[1]["name"] == "new_name"
    assert columns[1]["is_name"] is True
    assert by_name["new_minutes"]["type"] == "Integer"
    assert by_name["new_notes"]["type"] == "String"
    assert by_name["new_accountid"]["type"] == "Lookup"
    assert by_name["new_accountid"]["label"] == "Account"

    with pytest.deprecated_call():
        select = client.query.odata_select("new_visit")
    assert select == [c["name"] for c in columns]

    expands = client.query.odata_expands("new_visit")
    to_account = [e for e in expands if e["target_table"] == "account"]
    assert to_account == [
        {
            "nav_property": "new_AccountId",
            "target_table": "account",
            "target_entity_set": "accounts",
            "lookup_attribute": "new_accountid",
            "relationship": "account_new_visit_new_AccountId",
        }
    ]
    with pytest.deprecated_call():
        nav = client.query.odata_expand("new_visit", "account")
    assert nav == "new_AccountId"

    account = client.records.create("account", {"name": "Bound"})
    with pytest.deprecated_call():
        bind = client.query.odata_bind("new_visit", "account", account)
    assert bind == {"new_AccountId@odata.bind": f"/accounts({account})"}
    visit = client.records.create("new_visit", {"new_name": "v1", "new_minutes": 30, **bind})
    row = client.records.retrieve(
        "new_visit", visit, select=["new_minutes"], expand=[f"{nav}($select=name)"]
    )
    assert row["new_minutes"] == 30
    assert row[nav]["name"] == "Bound"
    with pytest.deprecated_call(), pytest.raises(ValueError, match="No navigation property"):
        client.query.odata_expand("new_visit", "contact")


def test_dataframe_create_get_update_delete(admin: DataverseClient, platform: Platform) -> None:
    client = admin
    frame = pd.DataFrame(
        [
            {"name": "DF A", "numberofemployees": 1, "telephone1": "555-0001"},
            {"name": "DF B", "numberofemployees": 2, "telephone1": None},
            {"name": "DF C", "numberofemployees": 3, "telephone1": "555-0003"},
        ],
        index=[10, 20, 30],
    )
    ids = client.dataframe.create("account", frame)
    assert list(ids.index) == [10, 20, 30]
    frame["accountid"] = ids

    with pytest.deprecated_call():
        got = client.dataframe.get(
            "account",
            select=["name", "numberofemployees", "telephone1"],
            filter="startswith(name, 'DF ')",
            orderby=["name"],
            page_size=2,
        )
    assert list(got["name"]) == ["DF A", "DF B", "DF C"]
    assert list(got["numberofemployees"]) == [1, 2, 3]
    assert list(got["accountid"]) == list(ids)
    phones = got["telephone1"]
    assert (phones[0], phones[2]) == ("555-0001", "555-0003")
    assert pd.isna(phones[1])
    with pytest.deprecated_call():
        single = client.dataframe.get("account", record_id=ids[20], select=["name"])
    assert single.loc[0, "name"] == "DF B"
    with pytest.deprecated_call():
        empty = client.dataframe.get("account", select=["name"], filter="name eq 'none'")
    assert empty.empty
    assert list(empty.columns) == ["name"]

    changes = pd.DataFrame(
        {
            "accountid": list(ids),
            "numberofemployees": [100, 200, 300],
            "telephone1": [None, "555-0222", None],
        }
    )
    client.dataframe.update("account", changes, id_column="accountid")  # UpdateMultiple
    client.dataframe.update(  # one row: a PATCH; clear_nulls sends the null
        "account",
        pd.DataFrame([{"accountid": ids[10], "telephone1": None}]),
        id_column="accountid",
        clear_nulls=True,
    )
    rows = platform.records.retrieve_multiple(
        "account", columns=["name", "numberofemployees", "telephone1"], order_by="name"
    )
    assert [(r["name"], r["numberofemployees"], r["telephone1"]) for r in rows] == [
        ("DF A", 100, None),
        ("DF B", 200, "555-0222"),
        ("DF C", 300, "555-0003"),
    ]

    assert client.dataframe.delete("account", pd.Series([ids[10]])) is None
    client.dataframe.delete("account", ids.loc[[20, 30]])  # BulkDelete
    assert platform.records.retrieve_multiple("account", columns=["name"]) == []


def test_every_table_operation_inside_one_batch(admin: DataverseClient, platform: Platform) -> None:
    client = admin
    batch = client.batch.new()
    batch.tables.create("new_Crate", {"new_Weight": "int"}, display_name="Crate")
    batch.tables.create("new_Shelf", {"new_Level": "int"})
    result = batch.execute()
    assert not result.failed, [(f.status_code, f.error_message) for f in result.failed]
    assert {"new_crate", "new_shelf"} <= set(platform.store.schema.tables)

    batch = client.batch.new()
    batch.tables.get("new_crate")
    batch.tables.list(filter="SchemaName eq 'new_Crate'", select=["LogicalName", "SchemaName"])
    batch.tables.add_columns("new_crate", {"new_Label": "string", "new_Fragile": "bool"})
    batch.tables.create_lookup_field(
        referencing_table="new_crate",
        lookup_field_name="new_AccountId",
        referenced_table="account",
        display_name="Account",
    )
    batch.tables.create_one_to_many_relationship(
        LookupAttributeMetadata(schema_name="new_ShelfId", display_name=label("Shelf")),
        OneToManyRelationshipMetadata(
            schema_name="new_Shelf_Crates",
            referenced_entity="new_shelf",
            referencing_entity="new_crate",
            referenced_attribute="new_shelfid",
        ),
    )
    batch.tables.create_many_to_many_relationship(
        ManyToManyRelationshipMetadata(
            schema_name="new_Crate_Contact",
            entity1_logical_name="new_crate",
            entity2_logical_name="contact",
        )
    )
    result = batch.execute()
    assert not result.failed, [(f.status_code, f.error_message) for f in result.failed]
    got, listed = result.responses[0].data, result.responses[1].data
    assert got is not None
    [table] = got["value"]  # the SDK asks EntityDefinitions?$filter=LogicalName eq ...
    assert (table["LogicalName"], table["SchemaName"]) == ("new_crate", "new_Crate")
    assert table["EntitySetName"] == "new_crates"
    assert listed is not None
    assert [t["SchemaName"] for t in listed["value"]] == ["new_Crate"]
    columns = platform.store.schema.table("new_crate").columns
    assert {"new_label", "new_fragile", "new_accountid", "new_shelfid"} <= set(columns)
    assert "new_crate_contact" in platform.store.schema.relationships

    batch = client.batch.new()
    batch.tables.get_relationship("new_Shelf_Crates")
    batch.tables.get_relationship("new_Crate_Contact")
    result = batch.execute()
    assert not result.failed, [(f.status_code, f.error_message) for f in result.failed]
    one, many = (r.data for r in result.responses)
    assert one is not None
    assert many is not None
    [one_row], [many_row] = one["value"], many["value"]
    assert one_row["SchemaName"] == "new_Shelf_Crates"
    assert one_row["ReferencingEntity"] == "new_crate"
    assert many_row["SchemaName"] == "new_Crate_Contact"

    shelf = client.records.create("new_shelf", {"new_name": "Top", "new_level": 3})
    crate = client.records.create(
        "new_crate",
        {
            "new_name": "C1",
            "new_label": "glass",
            "new_fragile": True,
            "new_ShelfId@odata.bind": f"/new_shelfs({shelf})",
        },
    )
    row = client.records.retrieve(
        "new_crate", crate, select=["new_label", "new_fragile"], expand=["new_ShelfId"]
    )
    assert (row["new_label"], row["new_fragile"]) == ("glass", True)
    assert row["new_ShelfId"]["new_level"] == 3

    batch = client.batch.new()
    batch.tables.delete_relationship(one_row["MetadataId"])
    batch.tables.delete_relationship(many_row["MetadataId"])
    batch.tables.remove_columns("new_crate", ["new_label", "new_fragile"])
    result = batch.execute()
    assert not result.failed, [(f.status_code, f.error_message) for f in result.failed]
    assert client.tables.get_relationship("new_Shelf_Crates") is None
    assert client.tables.get_relationship("new_Crate_Contact") is None
    columns = platform.store.schema.table("new_crate").columns
    assert not {"new_label", "new_fragile", "new_shelfid"} & set(columns)

    batch = client.batch.new()
    batch.tables.delete("new_crate")
    batch.tables.delete("new_shelf")
    result = batch.execute()
    assert not result.failed, [(f.status_code, f.error_message) for f in result.failed]
    assert client.tables.get("new_crate") is None
    assert client.tables.get("new_shelf") is None


def test_dataframes_inside_a_batch(admin: DataverseClient, platform: Platform) -> None:
    client = admin
    batch = client.batch.new()
    # a gap in an integer column: pandas' nullable Int64 keeps the others integers (with
    # float64 the SDK sends 1.0, which an integer column refuses with a 400)
    frame = pd.DataFrame(
        {"name": ["BDF 1", "BDF 2"], "numberofemployees": pd.array([1, None], dtype="Int64")}
    )
    batch.dataframe.create("account", frame)
    result = batch.execute()
    assert not result.failed, [(f.status_code, f.error_message) for f in result.failed]
    rows = platform.records.retrieve_multiple(
        "account", columns=["accountid", "name", "numberofemployees"], order_by="name"
    )
    assert [(r["name"], r["numberofemployees"]) for r in rows] == [("BDF 1", 1), ("BDF 2", None)]
    ids = [str(r["accountid"]) for r in rows]
    [created] = result.responses  # CreateMultiple: the ids are in the body, not in headers
    assert created.data is not None
    assert sorted(created.data["Ids"]) == sorted(ids)

    batch = client.batch.new()
    batch.dataframe.update(
        "account",
        pd.DataFrame({"accountid": ids, "numberofemployees": [10, 20]}),
        id_column="accountid",
    )
    result = batch.execute()
    assert not result.failed, [(f.status_code, f.error_message) for f in result.failed]
    rows = platform.records.retrieve_multiple(
        "account", columns=["name", "numberofemployees"], order_by="name"
    )
    assert [(r["name"], r["numberofemployees"]) for r in rows] == [("BDF 1", 10), ("BDF 2", 20)]

    batch = client.batch.new()
    batch.dataframe.delete("account", pd.Series(ids), use_bulk_delete=False)
    result = batch.execute()
    assert not result.failed, [(f.status_code, f.error_message) for f in result.failed]
    assert platform.records.retrieve_multiple("account", columns=["name"]) == []

    again = client.dataframe.create("account", pd.DataFrame({"name": ["BDF 3", "BDF 4"]}))
    batch = client.batch.new()
    batch.dataframe.delete("account", again)  # BulkDelete inside the batch
    result = batch.execute()
    assert not result.failed, [(f.status_code, f.error_message) for f in result.failed]
    assert platform.records.retrieve_multiple("account", columns=["name"]) == []


def test_batch_record_writes_changesets_and_continue_on_error(
    admin: DataverseClient, platform: Platform
) -> None:
    client = admin
    client.tables.create("new_Part", {"new_Code": "string"})
    client.tables.create_alternate_key("new_part", "new_Code_Key", ["new_code"])
    ids = client.records.create("account", [{"name": f"BR {i}"} for i in range(6)])

    batch = client.batch.new()
    batch.records.update("account", ids[0], {"telephone1": "0"})  # one PATCH
    batch.records.update("account", ids[1:3], {"telephone1": "same"})  # UpdateMultiple
    batch.records.update("account", ids[3:5], [{"telephone1": "3"}, {"telephone1": "4"}])
    with pytest.deprecated_call():
        batch.records.get("account", ids[0], select=["name"])
    batch.records.upsert(
        "new_part", [UpsertItem(alternate_key={"new_code": "P-1"}, record={"new_name": "One"})]
    )
    batch.records.upsert(
        "new_part",
        [
            UpsertItem(alternate_key={"new_code": "P-1"}, record={"new_name": "One again"}),
            UpsertItem(alternate_key={"new_code": "P-2"}, record={"new_name": "Two"}),
        ],
    )
    result = batch.execute()
    assert not result.failed, [(f.status_code, f.error_message) for f in result.failed]
    read = result.responses[3].data
    assert read is not None
    assert read["name"] == "BR 0"
    rows = platform.records.retrieve_multiple(
        "account", columns=["name", "telephone1"], order_by="name"
    )
    assert [r["telephone1"] for r in rows] == ["0", "same", "same", "3", "4", None]
    parts = platform.records.retrieve_multiple(
        "new_part", columns=["new_code", "new_name"], order_by="new_code"
    )
    assert [(r["new_code"], r["new_name"]) for r in parts] == [("P-1", "One again"), ("P-2", "Two")]

    batch = client.batch.new()
    with batch.changeset() as cs:
        ref = cs.records.create("contact", {"lastname": "Temp"})
        cs.records.update("contact", ref, {"firstname": "Tess"})  # by content-ID
        cs.records.delete("account", ids[5])
    batch.records.delete("account", ids[0])  # one DELETE
    batch.records.delete("account", ids[1:3], use_bulk_delete=False)  # one DELETE each
    batch.records.delete("account", ids[3:5])  # BulkDelete
    result = batch.execute()
    assert not result.failed, [(f.status_code, f.error_message) for f in result.failed]
    assert platform.records.retrieve_multiple("account", columns=["name"]) == []
    [contact] = platform.records.retrieve_multiple("contact", columns=["firstname", "lastname"])
    assert (contact["firstname"], contact["lastname"]) == ("Tess", "Temp")

    batch = client.batch.new()
    batch.records.create("account", {"name": "Kept 1"})
    batch.records.create("account", {"name": "x" * 500})  # too long: this one fails
    batch.records.create("account", {"name": "Kept 2"})
    result = batch.execute(continue_on_error=True)
    assert [r.status_code for r in result.responses] == [204, 400, 204]
    assert len(result.entity_ids) == 2
    names = {r["name"] for r in platform.records.retrieve_multiple("account", columns=["name"])}
    assert names == {"Kept 1", "Kept 2"}


def test_choice_labels_are_resolved_from_metadata_and_the_cache_flushed(
    admin: DataverseClient, platform: Platform
) -> None:
    """The SDK turns a choice label into its value with one read of
    ``Attributes/Microsoft.Dynamics.CRM.PicklistAttributeMetadata``, cached per table."""
    client = admin
    account = client.records.create("account", {"name": "Choices"})
    order = client.records.create(
        "workorder",
        {
            "name": "WO-C",
            "priority": "High",
            "serviceaccountid@odata.bind": f"/accounts({account})",
        },
    )
    row = client.records.retrieve("workorder", order, select=["priority"])
    assert row["priority"] == 3
    client.records.update("workorder", order, {"priority": "urgent"})  # labels match any case
    assert client.records.retrieve("workorder", order, select=["priority"])["priority"] == 4
    assert client.flush_cache("picklist") >= 1
    assert client.flush_cache("picklist") == 0


def test_the_async_client_s_records_dataframes_files_and_batches(
    platform: Platform, server: str, certificate: DevCertificate, tmp_path: Path
) -> None:
    """What the other async tests leave out: the same operations as above through
    ``AsyncDataverseClient``, over the same live server."""
    import aiohttp
    from PowerPlatform.Dataverse.aio import AsyncDataverseClient

    platform.org.user("async", roles=[platform.org.role_id(SYSTEM_ADMINISTRATOR)])
    _, secret = platform.auth.create_api_token(platform.org.user_id("async"), "aio")
    report = tmp_path / "report.pdf"
    report.write_bytes(b"%PDF-1.7 async report")

    def names(table: str = "account", column: str = "name") -> list[str]:
        rows = platform.records.retrieve_multiple(table, columns=[column], order_by=column)
        return [r[column] for r in rows]

    async def walk() -> None:
        client = AsyncDataverseClient(server, AsyncStaticTokenCredential(secret))
        trust = ssl.create_default_context(cafile=certificate.ca)
        client._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=trust))
        async with client:
            ids = await client.records.create("account", [{"name": f"A {i}"} for i in range(5)])
            await client.records.update("account", ids[0], {"numberofemployees": 10})
            await client.records.update("account", ids[1:3], {"numberofemployees": 20})
            listed = await client.records.list(
                "account", select=["name"], filter="numberofemployees ge 10", orderby=["name"]
            )
            assert [r["name"] for r in listed] == ["A 0", "A 1", "A 2"]
            pages = [
                [r["name"] for r in page]
                async for page in client.records.list_pages(
                    "account", select=["name"], orderby=["name desc"], page_size=2
                )
            ]
            assert pages == [["A 4", "A 3"], ["A 2", "A 1"], ["A 0"]]
            built = await (
                client.query.builder("account")
                .select("name")
                .where(col("numberofemployees") == 20)
                .order_by("name")
                .execute()
            )
            assert [r["name"] for r in built] == ["A 1", "A 2"]
            xml = (
                '<fetch count="2"><entity name="account"><attribute name="name"/>'
                '<order attribute="name"/></entity></fetch>'
            )
            fetched = [len(page) async for page in client.query.fetchxml(xml).execute_pages()]
            assert fetched == [2, 2, 1]
            await client.records.delete("account", ids[4])
            await client.records.delete("account", ids[2:4])  # BulkDelete
            assert names() == ["A 0", "A 1"]
            await client.records.delete("account", ids[:2], use_bulk_delete=False)
            assert names() == []

            columns = await client.query.sql_columns("workorder")
            assert columns[0] == {
                "name": "workorderid",
                "type": "Uniqueidentifier",
                "is_pk": True,
                "is_name": False,
                "label": columns[0]["label"],
            }
            expands = await client.query.odata_expands("workorder")
            to_account = [e for e in expands if e["lookup_attribute"] == "serviceaccountid"]
            assert [(e["nav_property"], e["target_entity_set"]) for e in to_account] == [
                ("serviceaccountid", "accounts")
            ]

            frame = pd.DataFrame({"name": ["DF 1", "DF 2"], "numberofemployees": [1, 2]})
            created = await client.dataframe.create("account", frame)
            await client.dataframe.update(
                "account",
                pd.DataFrame({"accountid": list(created), "numberofemployees": [11, 22]}),
                id_column="accountid",
            )
            got = await client.dataframe.sql(
                "SELECT name, numberofemployees FROM account ORDER BY name"
            )
            assert list(got["numberofemployees"]) == [11, 22]
            order = await client.records.create(
                "workorder",
                {
                    "name": "WO-A",
                    "priority": "Normal",  # a label, resolved through the metadata
                    "serviceaccountid@odata.bind": f"/accounts({created[0]})",
                },
            )
            assert (await client.records.retrieve("workorder", order, select=["priority"]))[
                "priority"
            ] == 2
            assert await client.flush_cache("picklist") >= 1
            await client.files.upload("workorder", order, "servicereport", str(report))
            await client.records.delete("workorder", order)
            await client.dataframe.delete("account", created)
            assert names() == []

            await client.tables.create("new_Part", {"new_Code": "string"})
            await client.tables.create_alternate_key("new_part", "new_Code_Key", ["new_code"])
            await client.records.upsert(
                "new_part",
                [
                    UpsertItem(alternate_key={"new_code": "P-1"}, record={"new_name": "One"}),
                    UpsertItem(alternate_key={"new_code": "P-2"}, record={"new_name": "Two"}),
                ],
            )
            assert names("new_part", "new_name") == ["One", "Two"]

            batch = client.batch.new()
            batch.tables.create("new_Bin", {"new_Size": "int"})
            batch.dataframe.create("account", pd.DataFrame({"name": ["B 1", "B 2"]}))
            async with batch.changeset() as cs:
                ref = cs.records.create("contact", {"lastname": "Async"})
                cs.records.update("contact", ref, {"firstname": "Ann"})
            result = await batch.execute()
            assert not result.failed, [(f.status_code, f.error_message) for f in result.failed]
            assert "new_bin" in platform.store.schema.tables
            assert names() == ["B 1", "B 2"]
            [ann] = platform.records.retrieve_multiple("contact", columns=["fullname"])
            assert ann["fullname"] == "Ann Async"

            batch = client.batch.new()
            batch.tables.get("new_bin")
            batch.tables.add_columns("new_bin", {"new_Label": "string"})
            batch.tables.create_lookup_field(
                referencing_table="new_bin",
                lookup_field_name="new_AccountId",
                referenced_table="account",
            )
            result = await batch.execute()
            assert not result.failed, [(f.status_code, f.error_message) for f in result.failed]
            got_table = result.responses[0].data
            assert got_table is not None
            assert got_table["value"][0]["SchemaName"] == "new_Bin"
            bin_columns = platform.store.schema.table("new_bin").columns
            assert {"new_label", "new_accountid"} <= set(bin_columns)

            ids = [str(r["accountid"]) for r in platform.records.retrieve_multiple("account")]
            batch = client.batch.new()
            batch.dataframe.update(
                "account",
                pd.DataFrame({"accountid": ids, "telephone1": ["1", "2"]}),
                id_column="accountid",
            )
            batch.dataframe.delete("account", pd.Series(ids))
            batch.tables.delete("new_bin")
            result = await batch.execute()
            assert not result.failed, [(f.status_code, f.error_message) for f in result.failed]
            assert names() == []
            assert await client.tables.get("new_bin") is None

    asyncio.run(walk())
