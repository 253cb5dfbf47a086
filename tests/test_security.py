"""Authorization through the records service: every list filtered, every write checked,
and the organisation rules (trees without cycles, rows following their owner)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import sqlalchemy as sa

from fieldsync.errors import FieldsyncError, Forbidden, LookupNotFound, RecordNotFound
from fieldsync.platform import Platform
from fieldsync.security.context import load_context
from fieldsync.security.model import Privilege, SecurityContext
from fieldsync.security.roles import BASIC_USER, SYSTEM_ADMINISTRATOR
from fieldsync.store.catalog import fs_change
from fieldsync.types import EntityRef, RecordId


@dataclass
class Org:
    p: Platform
    north: RecordId
    south: RecordId
    ann: RecordId  # north, basic user, manages bob
    bob: RecordId  # north, basic user
    sue: RecordId  # south, basic user
    team: RecordId  # north owner team: ann and bob

    def ctx(self, user: RecordId) -> SecurityContext:
        return load_context(self.p.store, user)


@pytest.fixture
def org(platform: Platform) -> Org:
    o = platform.org
    basic = o.role_id(BASIC_USER)
    north = o.business_unit("North")
    south = o.business_unit("South")
    ann = o.user("ann", business_unit=north, roles=[basic])
    bob = o.user("bob", business_unit=north, roles=[basic], manager=ann)
    sue = o.user("sue", business_unit=south, roles=[basic])
    team = o.team("North Team", north, members=[ann, bob])
    return Org(platform, north, south, ann, bob, sue, team)


def names(org: Org, user: RecordId, table: str = "account") -> set[str]:
    return {r["name"] for r in org.p.records.retrieve_multiple(table, caller=org.ctx(user))}


def test_lists_show_only_readable_rows(org: Org) -> None:
    r = org.p.records
    r.create("account", {"name": "ann's"}, caller=org.ctx(org.ann))
    r.create("account", {"name": "bob's"}, caller=org.ctx(org.bob))
    r.create("account", {"name": "team's", "ownerid": EntityRef("team", org.team)})
    assert names(org, org.ann) == {"ann's", "team's"}  # user depth includes the user's teams
    assert names(org, org.sue) == set()


def test_business_unit_depth_and_team_roles(org: Org) -> None:
    o, r = org.p.org, org.p.records
    r.create("account", {"name": "bob's"}, caller=org.ctx(org.bob))
    r.create("account", {"name": "sue's"}, caller=org.ctx(org.sue))
    reader = o.role("North Reader", privileges={"account": {"read": "businessunit"}})
    south_team = o.team("South Helpers", org.south, members=[org.ann])
    o.assign_role(EntityRef("team", south_team), reader)
    # the team's role reaches from the team's business unit (South), not from ann's
    assert names(org, org.ann) == {"sue's"}
    o.assign_role(EntityRef("systemuser", org.ann), reader)
    assert names(org, org.ann) == {"sue's", "bob's"}


def test_parent_child_depth(org: Org) -> None:
    o, r = org.p.org, org.p.records
    east = o.business_unit("North East", org.north)
    eve = o.user("eve", business_unit=east, roles=[o.role_id(BASIC_USER)])
    r.create("account", {"name": "eve's"}, caller=org.ctx(eve))
    r.create("account", {"name": "sue's"}, caller=org.ctx(org.sue))
    deep = o.role("Deep Reader", privileges={"account": {"read": "parentchild"}})
    o.assign_role(EntityRef("systemuser", org.ann), deep)
    assert names(org, org.ann) == {"eve's"}


def test_write_to_a_readable_but_not_writable_row_is_forbidden(org: Org) -> None:
    o, r = org.p.org, org.p.records
    reader = o.role("Reader", privileges={"account": {"read": "businessunit"}})
    o.assign_role(EntityRef("systemuser", org.bob), reader)
    acc = r.create("account", {"name": "ann's"}, caller=org.ctx(org.ann))
    with pytest.raises(Forbidden):
        r.update("account", acc, {"name": "defaced"}, caller=org.ctx(org.bob))
    with pytest.raises(Forbidden):
        r.delete("account", acc, caller=org.ctx(org.bob))
    assert r.retrieve("account", acc)["name"] == "ann's"
    # a row the caller cannot even read is reported as missing
    with pytest.raises(RecordNotFound):
        r.update("account", acc, {"name": "defaced"}, caller=org.ctx(org.sue))


def test_assign_without_the_right_is_forbidden(org: Org) -> None:
    o, r = org.p.org, org.p.records
    writer = o.role(
        "Writer", privileges={"account": {"read": "businessunit", "write": "businessunit"}}
    )
    o.assign_role(EntityRef("systemuser", org.bob), writer)
    acc = r.create("account", {"name": "ann's"}, caller=org.ctx(org.ann))
    for attempt in (
        lambda: r.assign("account", acc, EntityRef("systemuser", org.bob), caller=org.ctx(org.bob)),
        lambda: r.update(
            "account", acc, {"ownerid": EntityRef("systemuser", org.bob)}, caller=org.ctx(org.bob)
        ),
    ):
        with pytest.raises(Forbidden):
            attempt()
    assert r.retrieve("account", acc)["ownerid"] == org.ann
    r.assign("account", acc, EntityRef("systemuser", org.sue), caller=org.ctx(org.ann))
    row = r.retrieve("account", acc)
    assert (row["ownerid"], row["owningbusinessunit"]) == (org.sue, org.south)


def test_creating_rows_for_others_beyond_the_depth_is_forbidden(org: Org) -> None:
    r = org.p.records
    with pytest.raises(Forbidden):
        r.create(
            "account",
            {"name": "x", "ownerid": EntityRef("systemuser", org.sue)},
            caller=org.ctx(org.ann),
        )
    r.create(
        "account", {"name": "ok", "ownerid": EntityRef("team", org.team)}, caller=org.ctx(org.ann)
    )


def test_reading_through_a_lookup_expansion_reveals_nothing(org: Org) -> None:
    r = org.p.records
    secret = r.create("contact", {"lastname": "Secret"}, caller=org.ctx(org.sue))
    acc = r.create("account", {"name": "ann's"}, caller=org.ctx(org.ann))
    r.update("account", acc, {"primarycontactid": secret})  # SYSTEM links them
    row = r.retrieve(
        "account",
        acc,
        columns=["name", "primarycontactid"],
        expand={"primarycontactid": ["lastname"]},
        caller=org.ctx(org.ann),
    )
    assert row["primarycontactid@expand"] is None
    mine = r.create("contact", {"lastname": "Mine"}, caller=org.ctx(org.ann))
    r.update("account", acc, {"primarycontactid": mine}, caller=org.ctx(org.ann))
    row = r.retrieve(
        "account",
        acc,
        columns=["primarycontactid"],
        expand={"primarycontactid": ["lastname"]},
        caller=org.ctx(org.ann),
    )
    assert row["primarycontactid@expand"]["lastname"] == "Mine"


def test_linking_to_a_row_you_cannot_see_fails_as_if_missing(org: Org) -> None:
    r = org.p.records
    secret = r.create("contact", {"lastname": "Secret"}, caller=org.ctx(org.sue))
    with pytest.raises(LookupNotFound):
        r.create("account", {"name": "x", "primarycontactid": secret}, caller=org.ctx(org.ann))


def test_sharing_grants_rows_and_only_rights_the_sharer_holds(org: Org) -> None:
    r = org.p.records
    acc = r.create("account", {"name": "sue's"}, caller=org.ctx(org.sue))
    assert names(org, org.ann) == set()
    r.share(
        "account", acc, EntityRef("systemuser", org.ann), {Privilege.READ}, caller=org.ctx(org.sue)
    )
    assert names(org, org.ann) == {"sue's"}
    with pytest.raises(Forbidden):
        r.update("account", acc, {"name": "x"}, caller=org.ctx(org.ann))
    with pytest.raises(Forbidden):  # ann may read it but may not share it on
        r.share(
            "account",
            acc,
            EntityRef("systemuser", org.bob),
            {Privilege.READ},
            caller=org.ctx(org.ann),
        )
    r.share(
        "account",
        acc,
        EntityRef("team", org.team),
        {Privilege.READ, Privilege.WRITE},
        caller=org.ctx(org.sue),
    )
    r.update("account", acc, {"name": "shared edit"}, caller=org.ctx(org.bob))
    r.unshare("account", acc, EntityRef("team", org.team), caller=org.ctx(org.sue))
    r.unshare("account", acc, EntityRef("systemuser", org.ann), caller=org.ctx(org.sue))
    assert names(org, org.bob) == set()


def test_hierarchy_security(org: Org) -> None:
    o, r = org.p.org, org.p.records
    acc = r.create("account", {"name": "bob's"}, caller=org.ctx(org.bob))
    assert names(org, org.ann) == set()
    o.set_hierarchy(enabled=True, depth=2, managers_write=False)
    assert names(org, org.ann) == {"bob's"}
    with pytest.raises(Forbidden):
        r.update("account", acc, {"name": "x"}, caller=org.ctx(org.ann))
    o.set_hierarchy(enabled=True, managers_write=True)
    r.update("account", acc, {"name": "managed"}, caller=org.ctx(org.ann))
    assert names(org, org.bob) == {"managed"}  # reports do not see their managers' rows


def test_disabled_team_stops_counting(org: Org) -> None:
    r = org.p.records
    r.create("account", {"name": "team's", "ownerid": EntityRef("team", org.team)})
    assert names(org, org.bob) == {"team's"}
    org.p.org.set_team_enabled(org.team, False)
    assert names(org, org.bob) == set()


def test_users_without_roles_are_refused(org: Org) -> None:
    o = org.p.org
    nobody = o.user("nobody", business_unit=org.north)
    with pytest.raises(Forbidden, match="read privilege on account"):
        org.p.records.retrieve_multiple("account", caller=org.ctx(nobody))
    with pytest.raises(Forbidden):
        org.p.records.create("account", {"name": "x"}, caller=org.ctx(nobody))


def test_basic_users_cannot_administer(org: Org) -> None:
    o, r = org.p.org, org.p.records
    admin_role = o.role_id(SYSTEM_ADMINISTRATOR)
    with pytest.raises(FieldsyncError):
        o.assign_role(EntityRef("systemuser", org.ann), admin_role, caller=org.ctx(org.ann))
    with pytest.raises(FieldsyncError):
        o.add_members(org.team, [org.sue], caller=org.ctx(org.ann))
    with pytest.raises(FieldsyncError):
        r.update("systemuser", org.ann, {"businessunitid": org.south}, caller=org.ctx(org.ann))
    assert org.ctx(org.ann).administrator is False


def test_administrators_reach_everything(org: Org) -> None:
    o, r = org.p.org, org.p.records
    boss = o.user("boss", roles=[o.role_id(SYSTEM_ADMINISTRATOR)])
    r.create("account", {"name": "sue's"}, caller=org.ctx(org.sue))
    assert names(org, boss) == {"sue's"}


def test_cycles_are_refused(org: Org) -> None:
    o = org.p.org
    east = o.business_unit("East", org.north)
    with pytest.raises(FieldsyncError, match="below itself"):
        org.p.records.update("businessunit", org.north, {"parentbusinessunitid": east})
    with pytest.raises(FieldsyncError, match="manage themselves"):
        o.set_manager(org.ann, org.bob)
    with pytest.raises(FieldsyncError, match="manage themselves"):
        o.set_manager(org.ann, org.ann)
    with pytest.raises(FieldsyncError, match="taken"):
        o.user("ANN")


def test_a_user_moving_business_unit_takes_their_rows(org: Org) -> None:
    r, store = org.p.records, org.p.store
    acc = r.create("account", {"name": "bob's"}, caller=org.ctx(org.bob))
    before = r.retrieve("account", acc)["versionnumber"]
    org.p.org.move_user(org.bob, org.south)
    row = r.retrieve("account", acc)
    assert row["owningbusinessunit"] == org.south
    with store.read() as conn:
        change = conn.execute(
            sa.select(fs_change).where(fs_change.c.version == row["versionnumber"])
        ).one()
    assert row["versionnumber"] > before
    assert change.old["owningbusinessunit"] == str(org.north)


def test_access_teams_hold_no_roles(org: Org) -> None:
    o = org.p.org
    access = o.team("Case Team", org.north, kind="access")
    with pytest.raises(FieldsyncError, match="access teams"):
        o.assign_role(EntityRef("team", access), o.role_id(BASIC_USER))


def test_group_team_membership_follows_its_source(org: Org) -> None:
    o = org.p.org
    group = o.team(
        "Engineers", org.north, kind="group", group_id="8f0e1c2a-0000-4000-8000-000000000001"
    )
    assert o.refresh_group(group, ["ann", "bob"]) == (2, 0)
    assert o.refresh_group(group, ["bob", "sue"]) == (1, 1)
    assert o.members(group) == {org.bob, org.sue}
    with pytest.raises(FieldsyncError, match="no user named"):
        o.refresh_group(group, ["bob", "ghost"])
    assert o.members(group) == {org.bob, org.sue}
    with pytest.raises(FieldsyncError, match="group teams"):
        o.refresh_group(org.team, ["ann"])


def test_rows_cannot_be_given_to_a_disabled_user(org: Org) -> None:
    from fieldsync.errors import ValidationError

    r = org.p.records
    acc = r.create("account", {"name": "ann's"}, caller=org.ctx(org.ann))
    org.p.org.set_user_enabled(org.sue, False)
    with pytest.raises(ValidationError, match="disabled"):
        r.assign("account", acc, EntityRef("systemuser", org.sue))
    with pytest.raises(ValidationError, match="disabled"):
        r.create("account", {"name": "x", "ownerid": EntityRef("systemuser", org.sue)})
