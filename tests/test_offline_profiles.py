"""Profiles as records: save rules, privileges, publish, who gets a profile, apps, views and
the generated profile, through the service layer on both backends."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import sqlalchemy as sa

from fieldsync.errors import Forbidden, NotFound, OfflineNotAvailable, PluginError, ProfileInvalid
from fieldsync.offline.access import offline_access
from fieldsync.offline.apps import app_views, create_app, create_view, generate_profile
from fieldsync.offline.profiles import ASSOCIATION, ITEM, PROFILE, publish, published_profile
from fieldsync.offline.snapshot import Distribution
from fieldsync.platform import Platform
from fieldsync.schema.model import define_table
from fieldsync.security.context import load_context
from fieldsync.security.model import SecurityContext
from fieldsync.security.roles import BASIC_USER, ENVIRONMENT_MAKER, SYSTEM_ADMINISTRATOR
from fieldsync.store.catalog import fs_change, fs_published_profile
from fieldsync.types import RecordId

MakeUser = Callable[..., SecurityContext]


@pytest.fixture
def make_user(platform: Platform) -> MakeUser:
    def make(name: str, *roles: str, business_unit: RecordId | None = None) -> SecurityContext:
        uid = platform.org.user(
            name, business_unit=business_unit, roles=[platform.org.role_id(r) for r in roles]
        )
        return load_context(platform.store, uid)

    return make


def count(platform: Platform, table: str) -> int:
    with platform.store.read() as conn:
        sql = platform.store.sql_table(table)
        return int(conn.execute(sa.select(sa.func.count()).select_from(sql)).scalar_one())


def log_size(platform: Platform) -> int:
    with platform.store.read() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(fs_change)).scalar_one())


def new_profile(platform: Platform, caller: SecurityContext, name: str = "Field") -> RecordId:
    r = platform.records
    pid = r.create(PROFILE, {"name": name}, caller=caller)
    r.create(
        ITEM,
        {
            "regardingobjectid": pid,
            "selectedentitytypecode": "workorder",
            "recorddistributioncriteria": 2,
            "recordsownedbyme": True,
        },
        caller=caller,
    )
    account = r.create(
        ITEM, {"regardingobjectid": pid, "selectedentitytypecode": "account"}, caller=caller
    )
    r.create(
        ASSOCIATION,
        {
            "mobileofflineprofileitemid": account,
            "selectedrelationshipsschema": "account_workorder_serviceaccountid",
        },
        caller=caller,
    )
    return pid


def test_a_maker_builds_and_publishes_a_profile(platform: Platform, make_user: MakeUser) -> None:
    maker = make_user("mia", ENVIRONMENT_MAKER)
    pid = new_profile(platform, maker)
    row = platform.records.retrieve(PROFILE, pid, caller=maker)
    assert (row["componentstate"], row["isvalidated"], row["publishedversion"]) == (1, False, 0)
    assert published_profile(platform.store, pid) is None

    first = publish(platform.records, pid, caller=maker)
    assert first.version == 1
    assert [i.table for i in first.items] == ["account", "workorder"]
    account = first.item("account")
    assert account is not None
    assert account.distribution is Distribution.RELATED
    assert account.relationships[0].related_table == "workorder"
    row = platform.records.retrieve(PROFILE, pid, caller=maker)
    assert (row["componentstate"], row["isvalidated"], row["publishedversion"]) == (0, True, 1)

    # the draft changes freely; devices keep version 1 until the next publish
    item = platform.records.retrieve_multiple(
        ITEM, where={"selectedentitytypecode": "workorder"}, caller=maker
    )[0]
    platform.records.update(ITEM, item[f"{ITEM}id"], {"syncintervalinminutes": 60}, caller=maker)
    assert published_profile(platform.store, pid) == first
    second = publish(platform.records, pid, caller=maker)
    assert second.version == 2
    assert second.item("workorder").sync_interval_minutes == 60  # type: ignore[union-attr]
    with platform.store.read() as conn:
        assert published_profile(conn, pid, 1) == first
        assert published_profile(conn, pid) == second


def test_save_rules_refuse_and_change_nothing(platform: Platform, make_user: MakeUser) -> None:
    maker = make_user("mia", ENVIRONMENT_MAKER)
    pid = new_profile(platform, maker)
    platform.store.create_table(define_table("new_site", display_name="Site", offline=False))
    before, items = log_size(platform), count(platform, ITEM)
    cases = [
        ({"selectedentitytypecode": "new_site"}, "table 'new_site': the table is not enabled"),
        ({"selectedentitytypecode": "contact", "recordsownedbyme": True}, "combines with no"),
        ({"selectedentitytypecode": "contact", "syncintervalinminutes": 2}, "5 to 1440"),
        ({"selectedentitytypecode": "contact", "selectedcolumns": "nope"}, "unknown column"),
        ({"selectedentitytypecode": "workorder"}, "in the profile twice"),
    ]
    for values, message in cases:
        with pytest.raises(ProfileInvalid, match=message) as err:
            platform.records.create(ITEM, {"regardingobjectid": pid, **values}, caller=maker)
        assert "profile 'Field'" in err.value.message
    contact = platform.records.create(
        ITEM, {"regardingobjectid": pid, "selectedentitytypecode": "contact"}, caller=maker
    )
    for relationship, message in (
        ("contact_contact_parentcustomerid", "self reference"),
        ("contact_account_primarycontactid", None),
    ):
        values = {
            "mobileofflineprofileitemid": contact,
            "selectedrelationshipsschema": relationship,
        }
        if message is None:
            platform.records.create(ASSOCIATION, values, caller=maker)
            continue
        with pytest.raises(ProfileInvalid, match=message):
            platform.records.create(ASSOCIATION, values, caller=maker)
    solo = platform.records.create(PROFILE, {"name": "Solo"}, caller=maker)
    alone = platform.records.create(
        ITEM, {"regardingobjectid": solo, "selectedentitytypecode": "contact"}, caller=maker
    )
    with pytest.raises(ProfileInvalid, match="'account', which is not in the profile"):
        platform.records.create(
            ASSOCIATION,
            {
                "mobileofflineprofileitemid": alone,
                "selectedrelationshipsschema": "account_contact_parentcustomerid",
            },
            caller=maker,
        )
    with pytest.raises(PluginError, match="cannot change"):
        platform.records.update(ITEM, contact, {"selectedentitytypecode": "account"}, caller=maker)
    assert count(platform, ITEM) == items + 2
    assert count(platform, ASSOCIATION) == 2
    assert log_size(platform) == before + 4


def test_publish_refuses_a_broken_draft_and_changes_nothing(
    platform: Platform, make_user: MakeUser
) -> None:
    maker = make_user("mia", ENVIRONMENT_MAKER)
    empty = platform.records.create(PROFILE, {"name": "Empty"}, caller=maker)
    with pytest.raises(ProfileInvalid, match="at least one table"):
        publish(platform.records, empty, caller=maker)
    # a table taken out of offline after it was added: saves elsewhere go on, publish says no
    platform.store.create_table(define_table("new_site", offline=True))
    pid = new_profile(platform, maker)
    platform.records.create(
        ITEM, {"regardingobjectid": pid, "selectedentitytypecode": "new_site"}, caller=maker
    )
    with platform.store.write() as conn:
        from fieldsync.store.catalog import fs_table

        definition = conn.execute(
            sa.select(fs_table.c.definition).where(fs_table.c.name == "new_site")
        ).scalar_one()
        conn.execute(
            fs_table.update()
            .where(fs_table.c.name == "new_site")
            .values(definition={**definition, "offline": False})
        )
    platform.store.reload_schema()
    platform.records.update(PROFILE, pid, {"description": "still editable"}, caller=maker)
    before = log_size(platform)
    with pytest.raises(ProfileInvalid, match="table 'new_site': the table is not enabled"):
        publish(platform.records, pid, caller=maker)
    assert log_size(platform) == before
    assert published_profile(platform.store, pid) is None


def test_privileges(platform: Platform, make_user: MakeUser) -> None:
    maker = make_user("mia", ENVIRONMENT_MAKER)
    basic = make_user("bob", BASIC_USER)
    pid = new_profile(platform, maker)
    assert platform.records.retrieve(PROFILE, pid, caller=basic)["name"] == "Field"
    assert platform.records.retrieve_multiple(ITEM, caller=basic)
    with pytest.raises(Forbidden):
        platform.records.create(PROFILE, {"name": "Mine"}, caller=basic)
    with pytest.raises(Forbidden):
        platform.records.update(PROFILE, pid, {"name": "Mine"}, caller=basic)
    with pytest.raises(Forbidden):
        platform.records.delete(PROFILE, pid, caller=basic)
    with pytest.raises(Forbidden):
        publish(platform.records, pid, caller=basic)
    with pytest.raises(PluginError, match="set by publishing"):
        platform.records.update(PROFILE, pid, {"publishedversion": 7}, caller=maker)
    # adding members needs administrator rights
    with pytest.raises(Forbidden):
        platform.offline.add_members(pid, users=[basic.user_id], caller=maker)
    admin = make_user("ada", SYSTEM_ADMINISTRATOR)
    assert platform.offline.add_members(pid, users=[basic.user_id], caller=admin) == 1
    assert platform.offline.members(pid, caller=maker).users == (basic.user_id,)
    with pytest.raises(Forbidden):
        platform.offline.remove_members(pid, users=[basic.user_id], caller=maker)
    # removing a table removes the relationships that lead to it
    workorder = platform.records.retrieve_multiple(
        ITEM, where={"selectedentitytypecode": "workorder"}, caller=maker
    )[0]
    platform.records.delete(ITEM, workorder[f"{ITEM}id"], caller=maker)
    assert count(platform, ASSOCIATION) == 0
    platform.records.create(
        ITEM,
        {
            "regardingobjectid": pid,
            "selectedentitytypecode": "workorder",
            "recorddistributioncriteria": 1,
        },
        caller=maker,
    )
    # deleting a profile takes its items, relationships, members and published versions
    publish(platform.records, pid, caller=maker)
    platform.records.delete(PROFILE, pid, caller=maker)
    for table in (ITEM, ASSOCIATION, "usermobileofflineprofilemembership"):
        assert count(platform, table) == 0
    with platform.store.read() as conn:
        assert conn.execute(sa.select(fs_published_profile)).first() is None


def offline_app(platform: Platform, pid: RecordId | None, **kw: bool) -> RecordId:
    return create_app(
        platform.records, "Field Service", "fieldservice", tables=["workorder"], profile=pid, **kw
    )


def test_offline_access(platform: Platform, make_user: MakeUser) -> None:
    store, records = platform.store, platform.records
    maker = make_user("mia", ENVIRONMENT_MAKER)
    lena = make_user("lena", BASIC_USER)

    def access(ctx: SecurityContext, app: str = "fieldservice") -> object:
        with store.read() as conn:
            return offline_access(store, conn, ctx, app)

    with pytest.raises(NotFound, match="no app 'nope'"):
        access(lena, "nope")
    app = offline_app(platform, None)
    with pytest.raises(OfflineNotAvailable, match="not enabled for offline"):
        access(lena)
    records.update("appmodule", app, {"canbeusedoffline": True})
    with pytest.raises(OfflineNotAvailable, match="has no offline profile"):
        access(lena)
    pid = new_profile(platform, maker)
    records.update("appmodule", app, {"mobileofflineprofileid": pid})
    with pytest.raises(OfflineNotAvailable, match="has not been published"):
        access(lena)
    published = publish(records, pid, caller=maker)
    got = platform.offline.access(lena, str(app))
    assert got.profile == published
    assert got.app.app_id == app
    assert got.app.can_be_used_offline

    # no read on profiles: a role that reads apps only
    role = platform.org.role("App reader", privileges={"appmodule": {"read": "organization"}})
    reader = make_user("rex")
    platform.org.assign_role(_ref(reader), role)
    reader = load_context(store, reader.user_id)
    with pytest.raises(OfflineNotAvailable, match="needs Read on mobile offline profiles"):
        access(reader)
    with pytest.raises(NotFound):
        access(make_user("nobody"))

    # restricted: members only, directly or through a team whose members are read live
    records.update("appmodule", app, {"offlineprofilemode": 1})
    with pytest.raises(OfflineNotAvailable, match="selected users"):
        access(lena)
    team = platform.org.team("North", kind="group")
    platform.offline.add_members(pid, teams=[team])
    with pytest.raises(OfflineNotAvailable):
        access(lena)
    platform.org.add_members(team, [lena.user_id])
    assert access(lena)
    platform.org.remove_members(team, [lena.user_id])
    with pytest.raises(OfflineNotAvailable):
        access(lena)
    platform.offline.add_members(pid, users=[lena.user_id])
    assert access(lena)
    members = platform.offline.members(pid)
    assert members.users == (lena.user_id,)
    assert members.teams == (team,)
    # a team holding a profile can still be deleted: its membership goes with it
    platform.records.delete("team", team)
    assert platform.offline.members(pid).teams == ()


def _ref(ctx: SecurityContext) -> object:
    from fieldsync.types import EntityRef

    return EntityRef("systemuser", ctx.user_id)


def test_apps_views_and_the_generated_profile(platform: Platform, make_user: MakeUser) -> None:
    maker = make_user("mia", ENVIRONMENT_MAKER)
    records = platform.records
    view = create_view(
        records,
        "My active work orders",
        "workorder",
        "<fetch><entity name='workorder'><attribute name='name'/>"
        "<attribute name='primarycontactid'/>"
        "<link-entity name='account' from='accountid' to='serviceaccountid'>"
        "<attribute name='name'/></link-entity>"
        "<filter><condition attribute='ownerid' operator='eq-userid'/></filter>"
        "</entity></fetch>",
        caller=maker,
    )
    with pytest.raises(PluginError, match="queries 'account'"):
        create_view(records, "Bad", "workorder", "<fetch><entity name='account'/></fetch>")
    with pytest.raises(PluginError, match="line 1"):
        create_view(records, "Bad", "workorder", "<fetch><entity name='workorder'>")
    app = create_app(
        records, "Field", "field", tables=["workorder", "new_x"][:1], views=[view], caller=maker
    )
    with pytest.raises(PluginError, match="exists already"):
        create_app(records, "Other", "FIELD", caller=maker)
    with pytest.raises(PluginError, match="no such table"):
        create_app(records, "Other", "other", tables=["nope"], caller=maker)
    assert [v["name"] for v in app_views(records, "field", caller=maker)] == [
        "My active work orders"
    ]
    pid = generate_profile(records, app, caller=maker)
    assert records.retrieve("appmodule", app)["mobileofflineprofileid"] == pid
    exported = platform.offline.export_yaml(pid)
    assert "workorder:\n    filter: other\n    owned_by:\n    - me\n    - my_teams" in exported
    assert "account_workorder_serviceaccountid" in exported
    assert "contact_workorder_primarycontactid" in exported
    assert published_profile(platform.store, pid) is None  # a draft to review
    assert publish(records, pid, caller=maker).version == 1


def test_upgrade_creates_the_offline_tables_on_an_existing_database(tmp_path: object) -> None:
    from pathlib import Path

    from fieldsync.store.catalog import fs_relationship, fs_table
    from fieldsync.store.store import Store

    assert isinstance(tmp_path, Path)
    store = Store.open(f"sqlite:///{tmp_path / 'old.db'}")
    offline = [
        "appmoduleview",
        "appmodule",
        "savedquery",
        "teammobileofflineprofilemembership",
        "usermobileofflineprofilemembership",
        ASSOCIATION,
        ITEM,
        PROFILE,
    ]
    with store.write() as conn:
        for name in offline:
            conn.execute(sa.text(f"DROP TABLE {name}"))
            conn.execute(fs_table.delete().where(fs_table.c.name == name))
        for rel in list(store.schema.relationships.values()):
            if {rel.referencing_table, rel.referenced_table} & set(offline):
                conn.execute(fs_relationship.delete().where(fs_relationship.c.name == rel.name))
    steps = store.upgrade()
    assert f"create table {PROFILE}" in steps
    assert "create relationship appmodule_savedquery" in steps
    assert PROFILE in store.schema
    assert store.upgrade() == []
    store.close()
