"""The profile rules as a pure function: every rule, passing and failing."""

from __future__ import annotations

import dataclasses

import pytest

from fieldsync.offline.snapshot import Distribution
from fieldsync.offline.validation import ItemDraft, ProfileDraft, problems
from fieldsync.schema.builtin import builtin_relationships, builtin_tables
from fieldsync.schema.model import (
    Column,
    ColumnType,
    Relationship,
    RelationshipKind,
    Schema,
    define_table,
)

D = Distribution


def _schema() -> Schema:
    tables = builtin_tables()
    for ownership in ("organization", "business", "none"):
        tables.append(define_table(f"new_{ownership}", ownership=ownership, offline=True))
    tables.append(define_table("new_offline_off", offline=False))
    photos = [Column(f"photo{i}", ColumnType.IMAGE) for i in range(15)]
    tables.append(define_table("new_gallery", offline=True, columns=photos))
    # a chain of 17 tables, each with a lookup to the next: for transitive counting
    for i in range(17):
        cols = (
            [Column("nextid", ColumnType.LOOKUP, targets=(f"new_chain{i + 1}",))] if i < 16 else []
        )
        tables.append(define_table(f"new_chain{i}", offline=True, columns=cols))
    rels = list(builtin_relationships())
    for t in tables:
        for c in t.lookups():
            if not c.system and not t.intersect:
                for target in c.targets:
                    rels.append(
                        Relationship(
                            f"{target}_{t.name}_{c.name}",
                            RelationshipKind.ONE_TO_MANY,
                            target,
                            t.name,
                            c.name,
                            f"{target}id",
                        )
                    )
    return Schema(tables, rels)


SCHEMA = _schema()


def check(*items: ItemDraft) -> list[str]:
    return [p.message for p in problems(ProfileDraft("P", items=items), SCHEMA)]


def test_a_sound_profile_has_no_problems() -> None:
    assert (
        check(
            ItemDraft("workorder", D.OTHER, owned_by_me=True, image_columns=("sitephoto",)),
            ItemDraft("account", D.RELATED, relationships=("account_workorder_serviceaccountid",)),
            ItemDraft("new_organization", D.ALL, sync_interval_minutes=1440),
            ItemDraft("new_business", D.OTHER, owned_by_my_business_unit=True),
            ItemDraft("new_none", D.RELATED, sync_interval_minutes=5),
        )
        == []
    )


@pytest.mark.parametrize(
    ("table", "allowed"),
    [
        ("workorder", {D.RELATED, D.ALL, D.OTHER, D.CUSTOM}),
        ("new_organization", {D.RELATED, D.ALL}),
        ("new_business", {D.RELATED, D.ALL, D.OTHER}),
        ("new_none", {D.RELATED}),
    ],
)
def test_filters_offered_by_ownership(table: str, allowed: set[Distribution]) -> None:
    for d in Distribution:
        item = ItemDraft(
            table,
            d,
            owned_by_my_business_unit=d is D.OTHER,
            custom_filter=f"<fetch><entity name='{table}' /></fetch>" if d is D.CUSTOM else None,
        )
        found = check(item)
        if d in allowed:
            assert found == [], (table, d)
        else:
            assert found, (table, d)
            assert "is not offered for a table with" in found[0]
            assert f"table {table!r}" in found[0]


def test_other_filter_needs_an_owner_choice_and_business_tables_take_only_the_unit() -> None:
    assert "needs at least one of me" in check(ItemDraft("workorder", D.OTHER))[0]
    for flags in ({"owned_by_me": True}, {"owned_by_my_teams": True}):
        found = check(ItemDraft("new_business", D.OTHER, **flags))  # type: ignore[arg-type]
        assert "only my business unit" in found[0]
    both = ItemDraft(
        "workorder",
        D.OTHER,
        owned_by_me=True,
        owned_by_my_teams=True,
        owned_by_my_business_unit=True,
    )
    assert check(both) == []


@pytest.mark.parametrize("d", [D.ALL, D.RELATED])
def test_all_and_related_combine_with_nothing(d: Distribution) -> None:
    found = check(ItemDraft("workorder", d, owned_by_me=True))
    assert "combines with no owner choice" in found[0]


def test_table_rules() -> None:
    assert "not enabled for offline" in check(ItemDraft("new_offline_off", D.ALL))[0]
    assert "no such table" in check(ItemDraft("nope"))[0]
    assert "twice" in check(ItemDraft("account", D.ALL), ItemDraft("account", D.ALL))[0]
    many = [ItemDraft(f"t{i}") for i in range(100)]
    assert any("fewer than 100 tables" in m for m in check(*many))


def test_relationship_rules() -> None:
    lonely = ItemDraft("account", relationships=("account_workorder_serviceaccountid",))
    assert "'workorder', which is not in the profile" in check(lonely)[0]
    assert "does not exist" in check(ItemDraft("account", relationships=("nope",)))[0]
    wrong = ItemDraft("account", relationships=("contact_workorder_primarycontactid",))
    assert "does not involve table 'account'" in check(wrong)[0]
    self_ref = ItemDraft("account", relationships=("account_account_parentaccountid",))
    assert "self reference" in check(self_ref)[0]
    cycle = check(
        ItemDraft("account", relationships=("account_workorder_serviceaccountid",)),
        ItemDraft("workorder", D.ALL, relationships=("account_workorder_serviceaccountid",)),
    )
    assert any("circular relationships: account -> workorder -> account" in m for m in cycle)


def chain(length: int) -> list[ItemDraft]:
    """new_chain0 follows new_chain1 follows … new_chain<length>."""
    items = [
        ItemDraft(f"new_chain{i}", relationships=(f"new_chain{i + 1}_new_chain{i}_nextid",))
        for i in range(length)
    ]
    return [*items, ItemDraft(f"new_chain{length}", D.ALL)]


def test_relationships_count_transitively() -> None:
    assert check(*chain(15)) == []  # new_chain0 counts 15: 1 + 14 + …
    found = check(*chain(16))
    assert len(found) == 1
    assert "table 'new_chain0': 16 relationships counted transitively" in found[0]


def test_column_file_and_image_rules() -> None:
    assert (
        "unknown column 'nope'" in check(ItemDraft("account", D.ALL, columns=("name", "nope")))[0]
    )
    assert (
        "choose it under files or images"
        in check(ItemDraft("workorder", D.ALL, columns=("sitephoto",)))[0]
    )
    assert (
        "not a file column" in check(ItemDraft("workorder", D.ALL, file_columns=("sitephoto",)))[0]
    )
    assert "not an image column" in check(ItemDraft("workorder", D.ALL, image_columns=("name",)))[0]
    assert check(ItemDraft("workorder", D.ALL, file_columns=("servicereport",))) == []
    gallery = ItemDraft("new_gallery", D.ALL, image_columns=tuple(f"photo{i}" for i in range(15)))
    assert "at most 14 image columns" in check(gallery)[0]
    assert check(dataclasses.replace(gallery, image_columns=gallery.image_columns[:14])) == []


@pytest.mark.parametrize(("minutes", "ok"), [(4, False), (5, True), (1440, True), (1441, False)])
def test_sync_interval(minutes: int, ok: bool) -> None:
    found = check(ItemDraft("account", D.ALL, sync_interval_minutes=minutes))
    assert (found == []) is ok
    if not ok:
        assert "5 to 1440 minutes" in found[0]


def fetch(body: str, table: str = "workorder") -> ItemDraft:
    return ItemDraft(
        table, D.CUSTOM, custom_filter=f"<fetch><entity name='{table}'>{body}</entity></fetch>"
    )


def test_custom_filters() -> None:
    ok = fetch(
        "<filter><condition attribute='ownerid' operator='eq-useroruserteams' />"
        "<link-entity name='account' from='accountid' to='serviceaccountid' link-type='any'>"
        "<filter><condition attribute='name' operator='begins-with' value='A' />"
        "<link-entity name='contact' from='contactid' to='primarycontactid' link-type='not any'>"
        "<filter><condition attribute='lastname' operator='not-null' /></filter>"
        "</link-entity></filter></link-entity></filter>"
    )
    assert check(ok) == []
    deeper = fetch(
        "<filter><link-entity name='account' from='accountid' to='serviceaccountid' "
        "link-type='any'><filter><link-entity name='contact' from='contactid' "
        "to='primarycontactid' link-type='any'><filter><link-entity name='account' "
        "from='accountid' to='parentcustomerid' link-type='any'>"
        "<filter><condition attribute='name' operator='eq' value='x' /></filter>"
        "</link-entity></filter></link-entity></filter></link-entity></filter>"
    )
    assert "at most 3 levels" in check(deeper)[0]
    assert (
        "'today' is not offered"
        in check(
            fetch("<filter><condition attribute='scheduledstart' operator='today' /></filter>")
        )[0]
    )
    join = fetch("<link-entity name='account' from='accountid' to='serviceaccountid' />")
    assert "inside a <filter>" in check(join)[0]
    all_type = fetch(
        "<filter><link-entity name='account' from='accountid' to='serviceaccountid' "
        "link-type='all'><filter><condition attribute='name' operator='eq' value='x' />"
        "</filter></link-entity></filter>"
    )
    assert "use 'any' or 'not any'" in check(all_type)[0]
    bad = check(fetch("<filter><condition attribute='nope' operator='eq' value='1' /></filter>"))
    assert "custom filter: line 1" in bad[0]
    assert (
        "must be 'workorder'"
        in check(
            ItemDraft(
                "workorder", D.CUSTOM, custom_filter="<fetch><entity name='account'/></fetch>"
            )
        )[0]
    )
    assert "needs FetchXML" in check(ItemDraft("workorder", D.CUSTOM))[0]
    assert (
        "goes only with the custom filter"
        in check(
            ItemDraft("workorder", D.ALL, custom_filter="<fetch><entity name='workorder'/></fetch>")
        )[0]
    )


def test_more_than_15_related_tables_in_a_custom_filter() -> None:
    link = (
        "<link-entity name='account' from='accountid' to='serviceaccountid' link-type='any'>"
        "<filter><condition attribute='name' operator='eq' value='x' /></filter></link-entity>"
    )
    assert check(fetch("<filter type='or'>" + link * 15 + "</filter>")) == []
    found = check(fetch("<filter type='or'>" + link * 16 + "</filter>"))
    assert found
    assert "15" in found[0]
    assert "table 'workorder'" in found[0]
