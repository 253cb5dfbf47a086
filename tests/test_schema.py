"""Runtime schema: creating tables and columns, relationships, system columns, bad definitions,
persistence across restarts and idempotent upgrades. Every store test runs on SQLite and
PostgreSQL through the ``store`` fixture."""

from __future__ import annotations

import datetime as dt
import os
import re
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import sqlalchemy as sa

from fieldsync.errors import (
    LookupNotFound,
    NotFound,
    PreconditionFailed,
    SchemaError,
    TableNotFound,
)
from fieldsync.records.service import Records
from fieldsync.schema.builtin import ROOT_BUSINESS_UNIT_ID, SYSTEM_USER_ID
from fieldsync.schema.model import (
    AlternateKey,
    Column,
    ColumnType,
    Option,
    Ownership,
    Relationship,
    RelationshipKind,
    Table,
    define_table,
)
from fieldsync.store.catalog import fs_change, fs_file, fs_relationship
from fieldsync.store.catalog import fs_table as fs_table_t
from fieldsync.store.engine import create_engine
from fieldsync.store.store import Store
from fieldsync.types import EntityRef

T = ColumnType

COMMON_SYSTEM = (
    "createdon",
    "modifiedon",
    "createdby",
    "modifiedby",
    "statecode",
    "statuscode",
    "versionnumber",
)


def every_type_columns(prefix: str = "") -> list[Column]:
    """One column of every column type (lookups both single and polymorphic)."""
    p = prefix
    return [
        Column(f"{p}code", T.STRING, max_length=40),
        Column(f"{p}notes", T.MEMO),
        Column(f"{p}count", T.INTEGER),
        Column(f"{p}bignumber", T.BIGINT),
        Column(f"{p}ratio", T.DECIMAL, precision=4),
        Column(f"{p}price", T.MONEY),
        Column(f"{p}reading", T.FLOAT, precision=3),
        Column(f"{p}active", T.BOOLEAN),
        Column(f"{p}visitedon", T.DATETIME),
        Column(f"{p}dueon", T.DATE),
        Column(f"{p}kind", T.CHOICE, options=(Option(1, "Small"), Option(2, "Large"))),
        Column(
            f"{p}tags",
            T.MULTICHOICE,
            options=(Option(10, "Red"), Option(20, "Green"), Option(30, "Blue")),
        ),
        Column(f"{p}accountid", T.LOOKUP, targets=("account",)),
        Column(f"{p}customerid", T.LOOKUP, targets=("account", "contact")),
        Column(f"{p}externalid", T.UNIQUEIDENTIFIER),
        Column(f"{p}document", T.FILE, max_size_kb=1024),
        Column(f"{p}photo", T.IMAGE),
    ]


def sql_columns(store: Store, table: str) -> dict[str, Any]:
    """The columns the database itself reports for ``table``."""
    with store.engine.connect() as conn:
        return {c["name"]: c for c in sa.inspect(conn).get_columns(table)}


def sql_table_exists(store: Store, table: str) -> bool:
    with store.engine.connect() as conn:
        return sa.inspect(conn).has_table(table)


def count_rows(store: Store, table: str) -> int:
    with store.read() as conn:
        stmt = sa.select(sa.func.count()).select_from(store.sql_table(table))
        return int(conn.execute(stmt).scalar_one())


def add_file(store: Store) -> uuid.UUID:
    """A stored file row, the thing file and image columns point at."""
    fileid = uuid.uuid4()
    with store.write() as conn:
        conn.execute(
            fs_file.insert().values(
                fileid=fileid,
                name="report.pdf",
                mimetype="application/pdf",
                size=3,
                sha256="0" * 64,
                createdon=dt.datetime.now(dt.UTC),
            )
        )
    return fileid


def one_to_many(store: Store, referencing_table: str, column: str) -> list[Relationship]:
    return sorted(
        (
            r
            for r in store.schema.relationships.values()
            if r.kind is RelationshipKind.ONE_TO_MANY
            and r.referencing_table == referencing_table
            and r.referencing_column == column
        ),
        key=lambda r: r.referenced_table,
    )


# -- creating tables with every column type ---------------------------------------------


def test_create_table_with_every_column_type(store: Store, records: Records) -> None:
    definition = define_table(
        "new_inspection", display_name="Inspection", columns=every_type_columns()
    )
    created = store.create_table(definition)

    assert created.name == "new_inspection"
    assert store.schema.table("new_inspection") is created
    assert store.schema.by_entity_set("new_inspections") is created
    assert created.primary_id == "new_inspectionid"
    assert created.custom is True
    types = {c.name: c.type for c in created.columns.values() if not c.system}
    assert types == {"name": T.STRING} | {c.name: c.type for c in every_type_columns()}
    assert {c.type for c in created.columns.values()} == set(ColumnType)
    # defaults filled in by normalisation
    assert created.columns["name"].max_length == 100
    assert created.columns["notes"].max_length == 2000
    assert created.columns["price"].precision == 2
    assert created.columns["ratio"].precision == 4
    assert created.columns["customerid"].polymorphic
    assert not created.columns["accountid"].polymorphic

    db_columns = sql_columns(store, "new_inspection")
    logical = set(created.columns)
    assert logical <= set(db_columns)
    # the polymorphic lookup (and the owner) carry their target table in a companion column
    assert set(db_columns) - logical == {"customeridtype", "owneridtype"}
    assert not db_columns["new_inspectionid"]["nullable"]
    if store.dialect == "postgresql":
        assert db_columns["code"]["type"].length == 40
        assert db_columns["name"]["type"].length == 100
        assert db_columns["ratio"]["type"].scale == 4

    # the table takes rows at once
    account = records.create("account", {"name": "Contoso"})
    rid = records.create(
        "new_inspection",
        {
            "name": "first",
            "accountid": account,
            "customerid": EntityRef("account", account),
            "document": add_file(store),
        },
    )
    row = records.retrieve("new_inspection", rid)
    assert row["accountid"] == account
    assert (row["customerid"], row["customeridtype"]) == (account, "account")

    check_reserved_words_and_custom_keys(store, records)


def check_reserved_words_and_custom_keys(store: Store, records: Records) -> None:
    store.create_table(
        define_table(
            "new_order",
            columns=[
                Column("select", T.STRING),
                Column("order", T.INTEGER),
                Column("user", T.LOOKUP, targets=("systemuser",)),
            ],
        )
    )
    store.add_column("new_order", Column("group", T.LOOKUP, targets=("account", "contact")))
    rid = records.create(
        "new_order", {"name": "x", "select": "s", "order": 3, "user": SYSTEM_USER_ID}
    )
    row = records.retrieve("new_order", rid)
    assert (row["select"], row["order"], row["user"], row["group"]) == (
        "s",
        3,
        SYSTEM_USER_ID,
        None,
    )

    created = store.create_table(
        define_table(
            "new_site",
            primary_id="new_site_pk",
            primary_name="sitename",
            columns=[Column("sitename", T.STRING, max_length=20, required=True)],
        )
    )
    assert created.primary_id == "new_site_pk"
    assert created.primary_name == "sitename"
    assert "name" not in created.columns
    rid = records.create("new_site", {"sitename": "North"})
    assert records.retrieve("new_site", rid)["new_site_pk"] == rid


# -- persistence -----------------------------------------------------------------------


def test_definitions_persist_across_reopen(store: Store, database_url: str) -> None:
    other = Store.open(database_url)  # another process with the same database
    try:
        check_other_store_sees_new_tables(store, other)
    finally:
        other.close()
    site = store.create_table(
        define_table(
            "new_site",
            columns=every_type_columns(),
            ownership=Ownership.BUSINESS,
            offline=True,
            description="Where work happens",
        )
    )
    visit = store.create_table(
        define_table(
            "new_visit",
            columns=[
                Column("siteid", T.LOOKUP, targets=("new_site",), required=True),
                Column("parentvisitid", T.LOOKUP, targets=("new_visit",)),
                Column(
                    "hours",
                    T.DECIMAL,
                    precision=3,
                    min_value=Decimal("0.5"),
                    max_value=Decimal("24"),
                ),
                Column("score", T.INTEGER, min_value=-5, max_value=5),
                Column("temperature", T.FLOAT, min_value=-40.5, max_value=60),
            ],
        )
    )
    store.add_column("new_site", Column("rating", T.CHOICE, options=(Option(1, "Good"),)))
    store.add_column("account", Column("new_siteid", T.LOOKUP, targets=("new_site",)))
    m2m = store.create_many_to_many("new_site_visit", "new_site", "new_visit")
    expected = {
        name: store.schema.table(name).to_json()
        for name in ("new_site", "new_visit", "new_site_visit", "account")
    }
    columns = {name: dict(store.schema.table(name).columns) for name in expected}
    relationships = dict(store.schema.relationships)
    assert (site.name, visit.name) == ("new_site", "new_visit")
    store.close()

    for upgrade in (True, False):
        reopened = Store.open(database_url, upgrade=upgrade)
        try:
            for name, definition in expected.items():
                table = reopened.schema.table(name)
                assert table.to_json() == definition
                assert table.columns == columns[name]
            assert reopened.schema.relationships == relationships
            assert reopened.schema.relationships["new_site_visit"] == m2m
            assert reopened.schema.table("new_site").ownership is Ownership.BUSINESS
            assert reopened.schema.table("new_site").offline is True
            assert reopened.schema.table("new_site_visit").intersect is True
            # the reopened store can use what it found
            records = Records(reopened)
            site_id = records.create("new_site", {"name": "North", "rating": 1})
            visit_id = records.create(
                "new_visit", {"name": "v", "siteid": site_id, "hours": "1.2346"}
            )
            records.associate("new_site_visit", site_id, visit_id)
            assert records.retrieve("new_visit", visit_id)["hours"] == Decimal("1.235")
            assert records.retrieve("new_site", site_id)["rating"] == 1
        finally:
            reopened.close()


def check_other_store_sees_new_tables(store: Store, other: Store) -> None:
    store.create_table(define_table("new_region", ownership=Ownership.ORGANIZATION))
    other.reload_schema()
    assert other.schema.table("new_region").to_json() == store.schema.table("new_region").to_json()
    rid = Records(other).create("new_region", {"name": "seen by the other store"})
    assert Records(store).retrieve("new_region", rid)["name"] == "seen by the other store"


# -- add_column ------------------------------------------------------------------------


def test_add_column_of_every_type_to_table_with_rows(store: Store, records: Records) -> None:
    store.create_table(define_table("new_site"))
    old_ids = records.create_many("new_site", [{"name": f"site {i}"} for i in range(3)])
    old_versions = {i: records.retrieve("new_site", i)["versionnumber"] for i in old_ids}
    account = records.create("account", {"name": "Contoso"})
    values: dict[str, Any] = {
        "x_code": "A-1",
        "x_notes": "n",
        "x_count": 7,
        "x_bignumber": 2**40,
        "x_ratio": "0.12345",
        "x_price": "9.99",
        "x_reading": 1.23456,
        "x_active": True,
        "x_visitedon": "2024-01-02T03:04:05+00:00",
        "x_dueon": "2024-02-03",
        "x_kind": 2,
        "x_tags": [30, 10],
        "x_accountid": account,
        "x_customerid": EntityRef("account", account),
        "x_externalid": str(uuid.UUID(int=7)),
        "x_document": add_file(store),
        "x_photo": add_file(store),
    }

    # each new column takes values straight away, and after the schema is reloaded (as when
    # another process changed it): the records service must not keep using the table's
    # definition from before the change
    added = []
    for col in every_type_columns("x_"):
        added.append(store.add_column("new_site", col))
        rid = records.create("new_site", {"name": f"with {col.name}", col.name: None})
        store.reload_schema()
        records.update("new_site", rid, {col.name: values[col.name]})
    for i in range(8):
        store.add_column("new_site", Column(f"reading{i}", T.INTEGER))
        rid = records.create("new_site", {"name": f"reading {i}", f"reading{i}": i})
        store.reload_schema()
        records.update("new_site", rid, {f"reading{i}": i + 1})
        assert records.retrieve("new_site", rid)[f"reading{i}"] == i + 1

    assert [c.name for c in added] == [c.name for c in every_type_columns("x_")]
    assert added[1].max_length == 2000  # normalised defaults
    table = store.schema.table("new_site")
    for col in every_type_columns("x_"):
        assert table.columns[col.name].type is col.type
    assert {"x_customeridtype"} <= set(sql_columns(store, "new_site"))

    # the rows that were there read every new column as null, and were not rewritten
    for rid in old_ids:
        row = records.retrieve("new_site", rid)
        for col in every_type_columns("x_"):
            assert row[col.name] is None, col.name
        assert row["x_customeridtype"] is None
        assert row["name"].startswith("site ")
        assert row["versionnumber"] == old_versions[rid]

    # old rows take values in the new columns; new rows too
    records.update("new_site", old_ids[0], values)
    new_id = records.create("new_site", {"name": "new", **values})
    for rid in (old_ids[0], new_id):
        row = records.retrieve("new_site", rid)
        assert row["x_ratio"] == Decimal("0.1234")
        assert row["x_reading"] == 1.235
        assert row["x_tags"] == [10, 30]
        assert row["x_customeridtype"] == "account"
        assert row["x_externalid"] == uuid.UUID(int=7)

    # a built-in table with rows takes columns too
    store.add_column("account", Column("new_region", T.STRING, max_length=30))
    assert records.retrieve("account", account)["new_region"] is None
    records.update("account", account, {"new_region": "North"})
    assert records.retrieve("account", account)["new_region"] == "North"


BAD_NEW_COLUMNS: list[tuple[str, Column, str]] = [
    ("account", Column("name", T.STRING), "already has a column 'name'"),
    ("account", Column("createdon", T.DATETIME), "already has a column 'createdon'"),
    ("account", Column("ownerid", T.STRING), "already has a column 'ownerid'"),
    # the companion column of a polymorphic lookup is taken too
    ("account", Column("owneridtype", T.STRING), "owneridtype"),
    ("contact", Column("parentcustomeridtype", T.STRING), "parentcustomeridtype"),
    ("account", Column("Region", T.STRING), "not valid"),
    ("account", Column("new-region", T.STRING), "not valid"),
    ("account", Column("fs_region", T.STRING), "reserved prefix"),
    (
        "account",
        Column("new_siteid", T.LOOKUP, targets=("new_nowhere",)),
        "unknown table 'new_nowhere'",
    ),
    ("account", Column("new_kind", T.CHOICE), "needs options"),
    ("account", Column("new_ratio", T.DECIMAL, precision=11), "precision must be 0..10"),
    ("account", Column("new_flag", T.BOOLEAN, system=True), "system columns"),
    ("teammembership", Column("new_note", T.STRING), "intersect table"),
]


def test_add_column_rejects_bad_definitions(store: Store, records: Records) -> None:
    problems: list[str] = []
    for table, column, message in BAD_NEW_COLUMNS:
        before = store.schema.table(table).to_json()
        try:
            store.add_column(table, column)
        except SchemaError as exc:
            if not re.search(message, str(exc)):
                problems.append(f"{table}.{column.name}: message {str(exc)!r} lacks {message!r}")
        except Exception as exc:
            problems.append(
                f"{table}.{column.name}: {type(exc).__name__} instead of "
                f"SchemaError: {str(exc).splitlines()[0]}"
            )
        else:
            problems.append(f"{table}.{column.name}: accepted")
        if store.schema.table(table).to_json() != before:
            problems.append(f"{table}.{column.name}: the definition changed")
    assert problems == []
    # the tables still work
    records.create("account", {"name": "still fine"})
    records.create("contact", {"lastname": "still fine"})
    with pytest.raises(TableNotFound):
        store.add_column("new_nowhere", Column("x", T.STRING))


# -- relationships ---------------------------------------------------------------------


def test_lookups_create_one_to_many_relationships(store: Store) -> None:
    store.create_table(
        define_table(
            "new_visit",
            columns=[
                Column("accountid", T.LOOKUP, targets=("account",)),
                Column("customerid", T.LOOKUP, targets=("account", "contact")),
                Column("previousvisitid", T.LOOKUP, targets=("new_visit",)),
            ],
        )
    )
    single = one_to_many(store, "new_visit", "accountid")
    assert [(r.referenced_table, r.referenced_column) for r in single] == [("account", "accountid")]
    poly = one_to_many(store, "new_visit", "customerid")
    assert [(r.referenced_table, r.referenced_column) for r in poly] == [
        ("account", "accountid"),
        ("contact", "contactid"),
    ]
    selfref = one_to_many(store, "new_visit", "previousvisitid")
    assert [(r.referenced_table, r.referenced_column) for r in selfref] == [
        ("new_visit", "new_visitid")
    ]
    # system lookups (owner, created by, ...) are not relationships of their own
    for col in ("ownerid", "owningbusinessunit", "createdby", "modifiedby"):
        assert one_to_many(store, "new_visit", col) == []
    names = {r.name for r in store.schema.relationships_of("new_visit")}
    assert {r.name for r in single + poly + selfref} == names
    assert ("new_visit", "accountid") in {
        (t.name, c.name) for t, c in store.schema.referencing("account")
    }
    # add_column makes the relationship too
    store.add_column("new_visit", Column("contactid", T.LOOKUP, targets=("contact",)))
    added = one_to_many(store, "new_visit", "contactid")
    assert [(r.referenced_table, r.referenced_column) for r in added] == [("contact", "contactid")]
    with store.read() as conn:
        stored = {
            Relationship.from_json(d)
            for d in conn.execute(sa.select(fs_relationship.c.definition)).scalars()
        }
    assert set(single + poly + selfref + added) <= stored

    # a target whose primary id is not "<table>id"
    store.create_table(define_table("new_place", primary_id="new_place_pk"))
    store.add_column("new_visit", Column("placeid", T.LOOKUP, targets=("new_place",)))
    store.add_column("account", Column("new_placeid", T.LOOKUP, targets=("new_place",)))
    for table, column in (("new_visit", "placeid"), ("account", "new_placeid")):
        [rel] = one_to_many(store, table, column)
        assert rel.referenced_table == "new_place"
        assert rel.referenced_column == "new_place_pk"


def make_site_and_technician(store: Store) -> None:
    store.create_table(define_table("new_site"))
    store.create_table(define_table("new_technician", ownership=Ownership.ORGANIZATION))


def test_many_to_many_with_intersect_table(store: Store, records: Records) -> None:
    make_site_and_technician(store)
    rel = store.create_many_to_many("new_site_technician", "new_site", "new_technician")
    assert rel.kind is RelationshipKind.MANY_TO_MANY
    assert (rel.referenced_table, rel.referenced_column) == ("new_site", "new_siteid")
    assert (rel.referencing_table, rel.referencing_column) == ("new_technician", "new_technicianid")
    assert store.schema.relationships["new_site_technician"] == rel
    intersect = store.schema.table(rel.intersect_table)
    assert intersect.intersect is True
    assert intersect.ownership is Ownership.NONE
    lookups = {c.name: c.targets for c in intersect.lookups()}
    assert lookups == {"new_siteid": ("new_site",), "new_technicianid": ("new_technician",)}
    assert all(c.required for c in intersect.lookups())
    assert sql_table_exists(store, rel.intersect_table)

    sites = records.create_many("new_site", [{"name": "s1"}, {"name": "s2"}])
    techs = records.create_many("new_technician", [{"name": "t1"}, {"name": "t2"}])
    links = {(s, t): records.associate("new_site_technician", s, t) for s in sites for t in techs}
    assert count_rows(store, rel.intersect_table) == 4
    rows = records.retrieve_multiple(rel.intersect_table)
    assert {(r["new_siteid"], r["new_technicianid"]) for r in rows} == set(links)
    assert {r[intersect.primary_id] for r in rows} == set(links.values())

    with pytest.raises(PreconditionFailed):
        records.associate("new_site_technician", sites[0], techs[0])
    with pytest.raises(LookupNotFound):
        records.associate("new_site_technician", sites[0], uuid.uuid4())
    with pytest.raises(LookupNotFound):
        records.associate("new_site_technician", uuid.uuid4(), techs[0])
    with pytest.raises(NotFound):
        records.associate("new_nowhere", sites[0], techs[0])

    version = records.disassociate("new_site_technician", sites[0], techs[1])
    assert count_rows(store, rel.intersect_table) == 3
    with pytest.raises(NotFound):
        records.disassociate("new_site_technician", sites[0], techs[1])
    # associating again after disassociating works
    records.associate("new_site_technician", sites[0], techs[1])

    with store.read() as conn:
        log = conn.execute(
            sa.select(fs_change.c.operation, fs_change.c.recordid, fs_change.c.version)
            .where(fs_change.c.tablename == rel.intersect_table)
            .order_by(fs_change.c.version)
        ).all()
    assert [op for op, _, _ in log] == ["associate"] * 4 + ["disassociate", "associate"]
    assert log[4] == ("disassociate", links[(sites[0], techs[1])], version)

    # a table related to itself, with a chosen intersect table name
    rel = store.create_many_to_many(
        "new_site_neighbour", "new_site", "new_site", intersect="new_siteneighbour"
    )
    assert rel.intersect_table == "new_siteneighbour"
    assert rel.referenced_column != rel.referencing_column
    records.associate("new_site_neighbour", sites[0], sites[1])
    records.associate("new_site_neighbour", sites[1], sites[0])
    assert count_rows(store, "new_siteneighbour") == 2

    # the built-in team membership
    team = records.create("team", {"name": "Crew", "businessunitid": ROOT_BUSINESS_UNIT_ID})
    records.associate("teammembership_association", SYSTEM_USER_ID, team)
    rows = records.retrieve_multiple("teammembership", where={"teamid": team})
    assert [(r["systemuserid"], r["teamid"]) for r in rows] == [(SYSTEM_USER_ID, team)]

    # bad definitions
    with pytest.raises(SchemaError, match="already exists"):
        store.create_many_to_many("new_site_technician", "new_site", "new_technician")
    with pytest.raises(SchemaError, match="reserved prefix"):
        store.create_many_to_many("fs_links", "new_site", "new_technician")
    with pytest.raises(SchemaError, match="not valid"):
        store.create_many_to_many("Bad Name", "new_site", "new_technician")
    with pytest.raises(SchemaError, match="already exists"):
        # the intersect table's name is taken by a table
        store.create_many_to_many(
            "new_site_technician2", "new_site", "new_technician", intersect="account"
        )
    with pytest.raises(TableNotFound):
        store.create_many_to_many("new_site_nowhere", "new_site", "new_nowhere")
    assert "new_site_technician2" not in store.schema.relationships
    assert "new_site_nowhere" not in store.schema.relationships


# -- system columns per ownership ------------------------------------------------------

OWNERSHIP_COLUMNS = {
    Ownership.USER: {"ownerid", "owningbusinessunit"},
    Ownership.BUSINESS: {"owningbusinessunit"},
    Ownership.ORGANIZATION: set(),
    Ownership.NONE: set(),
}


def test_system_columns_per_ownership(store: Store, records: Records) -> None:
    for ownership in Ownership:
        check_system_columns(store, records, ownership)


def check_system_columns(store: Store, records: Records, ownership: Ownership) -> None:
    name = f"new_{ownership.value}thing"
    pk = f"{name}id"
    table = store.create_table(define_table(name, ownership=ownership))
    system = {c.name for c in table.columns.values() if c.system}
    assert system == {pk, *COMMON_SYSTEM} | OWNERSHIP_COLUMNS[ownership]
    assert table.owned is (ownership is Ownership.USER)
    for col in COMMON_SYSTEM:
        assert table.columns[col].read_only is (col not in ("statecode", "statuscode"))
    if ownership is Ownership.USER:
        assert table.columns["ownerid"].targets == ("systemuser", "team")
        assert table.columns["ownerid"].polymorphic
    if OWNERSHIP_COLUMNS[ownership]:
        assert table.columns["owningbusinessunit"].targets == ("businessunit",)

    db = set(sql_columns(store, name))
    scope = {"ownerid", "owneridtype", "owningbusinessunit"}
    expected_scope = {
        Ownership.USER: scope,
        Ownership.BUSINESS: {"owningbusinessunit"},
        Ownership.ORGANIZATION: set(),
        Ownership.NONE: set(),
    }[ownership]
    assert db & scope == expected_scope
    assert {pk, *COMMON_SYSTEM} <= db

    row = records.retrieve(name, records.create(name, {"name": "x"}))
    assert (row["statecode"], row["statuscode"]) == (0, 1)
    assert row["createdby"] == row["modifiedby"] == SYSTEM_USER_ID
    assert row["createdon"] == row["modifiedon"]
    assert row["versionnumber"] > 0
    if ownership is Ownership.USER:
        assert (row["ownerid"], row["owneridtype"]) == (SYSTEM_USER_ID, "systemuser")
    if ownership in (Ownership.USER, Ownership.BUSINESS):
        assert row["owningbusinessunit"] == ROOT_BUSINESS_UNIT_ID
    assert set(row) & scope == expected_scope


def test_ownership_codes() -> None:
    assert [o.code for o in Ownership] == [0, 1, 4, 8]


# -- bad definitions -------------------------------------------------------------------

BAD_DEFINITIONS: list[tuple[str, Callable[[], object], str]] = [
    ("uppercase table", lambda: define_table("New_site"), "table name 'New_site' is not valid"),
    ("digit first", lambda: define_table("1site"), "is not valid"),
    ("hyphen", lambda: define_table("new-site"), "is not valid"),
    ("space", lambda: define_table("new site"), "is not valid"),
    ("empty", lambda: define_table(""), "is not valid"),
    ("too long", lambda: define_table("a" * 50), "is not valid"),
    ("reserved table", lambda: define_table("fs_site"), "reserved prefix 'fs_'"),
    (
        "reserved entity set",
        lambda: define_table("new_site", entity_set_name="fs_sites"),
        "entity set name 'fs_sites' uses the reserved prefix",
    ),
    (
        "bad entity set",
        lambda: define_table("new_site", entity_set_name="Sites"),
        "entity set name 'Sites' is not valid",
    ),
    ("bad primary id", lambda: define_table("new_site", primary_id="Site Id"), "Site Id"),
    (
        "reserved primary id",
        lambda: define_table("new_site", primary_id="fs_siteid"),
        "reserved prefix",
    ),
    (
        "bad column",
        lambda: define_table("new_site", columns=[Column("Code", T.STRING)]),
        "column name 'Code' is not valid",
    ),
    (
        "reserved column",
        lambda: define_table("new_site", columns=[Column("fs_code", T.STRING)]),
        "column name 'fs_code' uses the reserved prefix",
    ),
    (
        "duplicate column",
        lambda: define_table(
            "new_site", columns=[Column("code", T.STRING), Column("code", T.INTEGER)]
        ),
        "column names must be unique",
    ),
    (
        "system column",
        lambda: define_table("new_site", columns=[Column("createdon", T.DATETIME)]),
        "'createdon' is a system column",
    ),
    (
        "polymorphic companion",
        lambda: define_table(
            "new_site",
            columns=[
                Column("customerid", T.LOOKUP, targets=("account", "contact")),
                Column("customeridtype", T.STRING),
            ],
        ),
        "'customeridtype' is reserved",
    ),
    (
        "owner companion",
        lambda: define_table("new_site", columns=[Column("owneridtype", T.STRING)]),
        "'owneridtype' is reserved",
    ),
    (
        "unknown ownership",
        lambda: define_table("new_site", ownership="team"),
        "unknown ownership 'team'",
    ),
    (
        "primary name not a string",
        lambda: define_table("new_site", columns=[Column("name", T.INTEGER)]),
        "primary name column must be a string",
    ),
    (
        "choice without options",
        lambda: define_table("new_site", columns=[Column("kind", T.CHOICE)]),
        "'kind': a choice column needs options",
    ),
    (
        "multichoice without options",
        lambda: define_table("new_site", columns=[Column("tags", T.MULTICHOICE)]),
        "'tags': a multichoice column needs options",
    ),
    (
        "duplicate option values",
        lambda: define_table(
            "new_site", columns=[Column("kind", T.CHOICE, options=(Option(1, "a"), Option(1, "b")))]
        ),
        "option values must be unique",
    ),
    (
        "options on a string",
        lambda: define_table(
            "new_site", columns=[Column("code", T.STRING, options=(Option(1, "a"),))]
        ),
        "options apply to choice",
    ),
    (
        "decimal precision 11",
        lambda: define_table("new_site", columns=[Column("ratio", T.DECIMAL, precision=11)]),
        "precision must be 0..10 for decimal",
    ),
    (
        "decimal precision -1",
        lambda: define_table("new_site", columns=[Column("ratio", T.DECIMAL, precision=-1)]),
        "precision must be 0..10 for decimal",
    ),
    (
        "money precision 5",
        lambda: define_table("new_site", columns=[Column("price", T.MONEY, precision=5)]),
        "precision must be 0..4 for money",
    ),
    (
        "float precision 6",
        lambda: define_table("new_site", columns=[Column("reading", T.FLOAT, precision=6)]),
        "precision must be 0..5 for float",
    ),
    (
        "precision on integer",
        lambda: define_table("new_site", columns=[Column("count", T.INTEGER, precision=2)]),
        "precision applies to decimal",
    ),
    (
        "string length 0",
        lambda: define_table("new_site", columns=[Column("code", T.STRING, max_length=0)]),
        "max_length must be 1..4000",
    ),
    (
        "string length 4001",
        lambda: define_table("new_site", columns=[Column("code", T.STRING, max_length=4001)]),
        "max_length must be 1..4000",
    ),
    (
        "memo too long",
        lambda: define_table("new_site", columns=[Column("notes", T.MEMO, max_length=1_048_577)]),
        "max_length must be 1..1048576",
    ),
    (
        "length on integer",
        lambda: define_table("new_site", columns=[Column("count", T.INTEGER, max_length=3)]),
        "max_length applies to string",
    ),
    (
        "lookup without target",
        lambda: define_table("new_site", columns=[Column("accountid", T.LOOKUP)]),
        "needs a target table",
    ),
    (
        "targets on a string",
        lambda: define_table("new_site", columns=[Column("code", T.STRING, targets=("account",))]),
        "targets apply to lookups",
    ),
    (
        "min above max",
        lambda: define_table(
            "new_site", columns=[Column("count", T.INTEGER, min_value=5, max_value=1)]
        ),
        "min_value is above max_value",
    ),
    (
        "unknown column type",
        lambda: Column.from_json({"name": "x", "type": "blob"}),
        "unknown column type 'blob'",
    ),
    (
        "unknown column key",
        lambda: Column.from_json({"name": "x", "type": "string", "colour": 1}),
        "unknown keys",
    ),
    ("column without type", lambda: Column.from_json({"name": "x"}), "needs a name and a type"),
    (
        "bad options",
        lambda: Column.from_json({"name": "x", "type": "choice", "options": [{"value": "a"}]}),
        "options must be a list",
    ),
]


@pytest.mark.parametrize(
    ("make", "message"),
    [(m, msg) for _, m, msg in BAD_DEFINITIONS],
    ids=[i for i, _, _ in BAD_DEFINITIONS],
)
def test_bad_definitions_raise_schema_error(make: Callable[[], object], message: str) -> None:
    with pytest.raises(SchemaError, match=message):
        make()


def test_store_rejects_bad_tables_and_leaves_nothing_behind(store: Store) -> None:
    tables = set(store.schema.tables)
    cases: list[tuple[Table, str]] = [
        (define_table("account"), "table 'account' already exists"),
        (define_table("contact", ownership="none"), "table 'contact' already exists"),
        (
            define_table("new_customer", entity_set_name="accounts"),
            "entity set name 'accounts' is already taken",
        ),
        (
            define_table("new_location", entity_set_name="workorders"),
            "entity set name 'workorders' is already taken",
        ),
        (
            define_table(
                "new_visit", columns=[Column("siteid", T.LOOKUP, targets=("new_nowhere",))]
            ),
            "lookup 'siteid' targets unknown table 'new_nowhere'",
        ),
        (
            define_table(
                "new_visit",
                columns=[Column("customerid", T.LOOKUP, targets=("account", "new_nowhere"))],
            ),
            "targets unknown table 'new_nowhere'",
        ),
    ]
    for table, message in cases:
        with pytest.raises(SchemaError, match=message):
            store.create_table(table)
    assert set(store.schema.tables) == tables
    for name in ("new_customer", "new_location", "new_visit"):
        assert not sql_table_exists(store, name)
    with store.read() as conn:
        names = set(conn.execute(sa.select(fs_table_t.c.name)).scalars())
    assert names == tables

    # built-in tables cannot be deleted
    for builtin in ("account", "systemuser", "businessunit", "teammembership"):
        with pytest.raises(SchemaError, match=f"'{builtin}' is a built-in table"):
            store.delete_table(builtin)
        assert builtin in store.schema
        assert sql_table_exists(store, builtin)


def test_delete_custom_table(store: Store, records: Records) -> None:
    store.create_table(
        define_table("new_site", columns=[Column("accountid", T.LOOKUP, targets=("account",))])
    )
    store.create_table(
        define_table("new_visit", columns=[Column("siteid", T.LOOKUP, targets=("new_site",))])
    )
    site = records.create("new_site", {"name": "s"})
    with pytest.raises(SchemaError, match=r"still the target of lookups: new_visit\.siteid"):
        store.delete_table("new_site")
    assert records.retrieve("new_site", site)["name"] == "s"

    store.delete_table("new_visit")
    store.delete_table("new_site")
    for name in ("new_site", "new_visit"):
        assert name not in store.schema
        assert not sql_table_exists(store, name)
        assert store.schema.relationships_of(name) == []
    with store.read() as conn:
        assert (
            conn.execute(
                sa.select(sa.func.count()).where(fs_change.c.tablename == "new_site")
            ).scalar_one()
            == 0
        )
    with pytest.raises(TableNotFound):
        records.create("new_site", {"name": "gone"})
    with pytest.raises(TableNotFound):
        store.delete_table("new_site")
    # the name can be used again
    store.create_table(define_table("new_site", columns=[Column("code", T.INTEGER)]))
    assert records.retrieve("new_site", records.create("new_site", {"code": 1}))["code"] == 1

    # deleting an intersect table takes its many-to-many relationship with it
    store.create_table(define_table("new_depot"))
    store.create_table(define_table("new_driver", ownership=Ownership.ORGANIZATION))
    store.create_many_to_many("new_depot_driver", "new_depot", "new_driver")
    store.delete_table("new_depot_driver")
    assert "new_depot_driver" not in store.schema
    assert "new_depot_driver" not in store.schema.relationships
    depot = records.create("new_depot", {"name": "d"})
    driver = records.create("new_driver", {"name": "t"})
    with pytest.raises(NotFound) as info:
        records.associate("new_depot_driver", depot, driver)
    assert not isinstance(info.value, TableNotFound)
    # and the relationship can be made again
    store.create_many_to_many("new_depot_driver", "new_depot", "new_driver")


# -- upgrade ---------------------------------------------------------------------------


PG_URL = os.environ.get("FIELDSYNC_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database nothing has been created in yet (the shared fixtures hand out upgraded ones)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    request.getfixturevalue("pg_schema_url")  # skips (or fails in CI) without PostgreSQL
    name = f"fs_empty_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(
        PG_URL.replace("postgresql://", "postgresql+psycopg://", 1), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{name}"'))
    sep = "&" if "?" in PG_URL else "?"
    try:
        yield f"{PG_URL}{sep}options={quote(f'-csearch_path={name}')}"
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{name}" CASCADE'))
        admin.dispose()


@pytest.fixture
def fresh_store(empty_database_url: str) -> Iterator[Store]:
    """A store on an empty database, not upgraded yet."""
    s = Store(create_engine(empty_database_url))
    try:
        yield s
    finally:
        s.close()


def test_upgrade_twice_applies_nothing_the_second_time(
    fresh_store: Store, empty_database_url: str
) -> None:
    first = fresh_store.upgrade()
    assert "create table account" in first
    assert "create table workorder" in first
    assert "0001_bootstrap_organisation" in first
    assert fresh_store.upgrade() == []
    assert fresh_store.upgrade() == []
    # the bootstrap rows exist once
    assert count_rows(fresh_store, "businessunit") == 1
    assert count_rows(fresh_store, "systemuser") == 1

    records = Records(fresh_store)
    store_table = fresh_store.create_table(
        define_table("new_site", columns=[Column("accountid", T.LOOKUP, targets=("account",))])
    )
    fresh_store.add_column("account", Column("new_region", T.STRING))
    account = records.create(
        "account", {"name": "Contoso", "new_region": "North", "revenue": "10.50"}
    )
    site = records.create("new_site", {"name": "s", "accountid": account})

    def state(s: Store) -> tuple[Any, ...]:
        with s.read() as conn:
            changes = conn.execute(sa.select(sa.func.count()).select_from(fs_change)).scalar()
            version = s.current_version(conn)
        return (
            Records(s).retrieve("account", account),
            Records(s).retrieve("new_site", site),
            {n: t.to_json() for n, t in s.schema.tables.items()},
            dict(s.schema.relationships),
            changes,
            version,
        )

    before = state(fresh_store)
    assert fresh_store.upgrade() == []
    assert state(fresh_store) == before
    again = Store.open(empty_database_url)
    try:
        assert again.upgrade() == []
        assert state(again) == before
    finally:
        again.close()
    assert fresh_store.schema.table("new_site").to_json() == store_table.to_json()


def test_upgrade_restores_a_missing_builtin_column_and_keeps_data(
    store: Store, records: Records
) -> None:
    account = records.create(
        "account", {"name": "Contoso", "telephone1": "555", "websiteurl": "https://contoso.example"}
    )
    # an older database: account has no websiteurl yet
    with store.write() as conn:
        definition = conn.execute(
            sa.select(fs_table_t.c.definition).where(fs_table_t.c.name == "account")
        ).scalar_one()
        definition["columns"] = [c for c in definition["columns"] if c["name"] != "websiteurl"]
        conn.execute(
            fs_table_t.update().where(fs_table_t.c.name == "account").values(definition=definition)
        )
        conn.exec_driver_sql("ALTER TABLE account DROP COLUMN websiteurl")
    store.reload_schema()
    assert "websiteurl" not in store.schema.table("account").columns

    assert store.upgrade() == ["add column account.websiteurl"]
    assert store.upgrade() == []
    row = records.retrieve("account", account)
    assert (row["name"], row["telephone1"], row["websiteurl"]) == ("Contoso", "555", None)
    records.update("account", account, {"websiteurl": "https://x.example"})
    assert records.retrieve("account", account)["websiteurl"] == "https://x.example"


def test_schema_names_and_keys_round_trip_and_a_defined_key_is_a_unique_index(
    store: Store, database_url: str
) -> None:
    table = define_table(
        "new_bin",
        schema_name="new_Bin",
        columns=[Column("new_code", ColumnType.STRING, schema_name="new_Code")],
    )
    table.keys = (AlternateKey("new_code_key", ("new_code",), schema_name="new_Code_Key"),)
    assert Table.from_json(table.to_json()) == table
    assert table.columns["new_binid"].schema == "new_BinId"
    store.create_table(table)
    rel = store.create_many_to_many("new_Bin_Contact", "new_bin", "contact")
    assert (rel.name, rel.schema) == ("new_bin_contact", "new_Bin_Contact")
    sql = store.sql_table("new_bin")
    with store.write() as conn:
        conn.execute(sql.insert().values(new_binid=uuid.uuid4(), new_code="same"))
    with pytest.raises(sa.exc.IntegrityError), store.write() as conn:
        conn.execute(sql.insert().values(new_binid=uuid.uuid4(), new_code="same"))
    reopened = Store.open(database_url)
    try:
        again = reopened.schema.table("new_bin")
        assert again.schema == "new_Bin"
        assert again.columns["new_code"].schema == "new_Code"
        assert [k.schema for k in again.keys] == ["new_Code_Key"]
        assert reopened.schema.relationships["new_bin_contact"].schema == "new_Bin_Contact"
    finally:
        reopened.close()
    with pytest.raises(SchemaError, match="must be the logical name"):
        Column("new_code", ColumnType.STRING, schema_name="new_Other").normalised()
