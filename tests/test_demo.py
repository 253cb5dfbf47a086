from __future__ import annotations

import datetime as dt
import re
import uuid
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from click.testing import CliRunner

from fieldsync.cli import main
from fieldsync.demo import USERS, demo_id, seed_demo
from fieldsync.platform import Platform, build
from fieldsync.records.service import Records
from fieldsync.schema.builtin import ROOT_BUSINESS_UNIT_ID
from fieldsync.security.context import load_context
from fieldsync.store.store import Store

TODAY = dt.date(2025, 3, 14)
EXPECTED = {
    "businessunit": 5,
    "systemuser": 15,
    "team": 2,
    "teammembership": 10,
    "account": 300,
    "contact": 900,
    "workorder": 2000,
}


def rows(store: Store, table: str) -> list[dict[str, Any]]:
    with store.read() as conn:
        return [dict(r) for r in conn.execute(sa.select(store.sql_table(table))).mappings()]


def by_id(store: Store, table: str) -> dict[uuid.UUID, dict[str, Any]]:
    pk = store.schema.table(table).primary_id
    return {r[pk]: r for r in rows(store, table)}


def counts(store: Store) -> dict[str, int]:
    with store.read() as conn:
        return {
            name: conn.execute(
                sa.select(sa.func.count()).select_from(store.sql_table(name))
            ).scalar_one()
            for name in EXPECTED
        }


def version(store: Store) -> int:
    with store.read() as conn:
        return store.current_version(conn)


def users_by_name(store: Store) -> dict[str, dict[str, Any]]:
    return {u["domainname"]: u for u in rows(store, "systemuser")}


def test_seed_counts_and_report(store: Store, platform: Platform) -> None:
    report = seed_demo(platform, today=TODAY)
    assert counts(store) == EXPECTED
    assert report.startswith("Demo organisation seeded")
    for user in USERS:
        assert user.username in report
    assert "workorder" in report
    # the Field Service app goes offline with its published profile, for technicians too
    lena = load_context(store, demo_id("systemuser", "lena"))
    access = platform.offline.access(lena, "fieldservice")
    assert access.profile.version == 1
    assert [i.table for i in access.profile.items] == ["account", "contact", "workorder"]
    assert access.app.allow_wifi_only


def test_business_units_and_manager_hierarchy(store: Store, platform: Platform) -> None:
    seed_demo(platform, today=TODAY)
    units = {u["name"]: u for u in rows(store, "businessunit")}
    root = units["fieldsync"]
    assert root["businessunitid"] == ROOT_BUSINESS_UNIT_ID
    assert units["Field Service"]["parentbusinessunitid"] == ROOT_BUSINESS_UNIT_ID
    assert units["Sales"]["parentbusinessunitid"] == ROOT_BUSINESS_UNIT_ID
    field = units["Field Service"]["businessunitid"]
    assert units["North Region"]["parentbusinessunitid"] == field
    assert units["South Region"]["parentbusinessunitid"] == field

    users = users_by_name(store)
    ids = {u["systemuserid"]: name for name, u in users.items()}
    assert users["admin"]["businessunitid"] == ROOT_BUSINESS_UNIT_ID
    assert users["admin"]["parentsystemuserid"] is None

    def chain(name: str) -> list[str]:
        out = [name]
        while (manager := users[out[-1]]["parentsystemuserid"]) is not None:
            out.append(ids[manager])
        return out

    assert chain("tom") == ["tom", "nora", "diana"]
    assert chain("jake") == ["jake", "samuel", "diana"]
    assert chain("raj") == ["raj", "sophie"]
    for name in ("priya", "lena", "tom", "oscar"):
        assert users[name]["businessunitid"] == units["North Region"]["businessunitid"]
    for user in users.values():
        assert re.fullmatch("[a-z]+", user["domainname"])
        assert user["owningbusinessunit"] == user["businessunitid"]


def test_team_memberships(store: Store, platform: Platform) -> None:
    seed_demo(platform, today=TODAY)
    users = users_by_name(store)
    names = {u["systemuserid"]: n for n, u in users.items()}
    teams = {t["teamid"]: t for t in rows(store, "team")}
    members: dict[str, set[str]] = {t["name"]: set() for t in teams.values()}
    for link in rows(store, "teammembership"):
        members[teams[link["teamid"]]["name"]].add(names[link["systemuserid"]])
    assert members == {
        "North Field Team": {"nora", "priya", "lena", "tom", "oscar"},
        "South Field Team": {"samuel", "marco", "carlos", "fatima", "jake"},
    }
    for team in teams.values():
        assert team["teamtype"] == 0
        assert team["administratorid"] in names


def test_every_lookup_resolves(store: Store, platform: Platform) -> None:
    seed_demo(platform, today=TODAY)
    users = by_id(store, "systemuser")
    teams = by_id(store, "team")
    accounts = by_id(store, "account")
    contacts = by_id(store, "contact")
    owners = {"systemuser": users, "team": teams}

    def owner_unit(row: dict[str, Any]) -> uuid.UUID:
        owner = owners[row["owneridtype"]][row["ownerid"]]
        unit: uuid.UUID = owner["businessunitid"]
        return unit

    for account in accounts.values():
        contact = contacts[account["primarycontactid"]]
        assert contact["parentcustomerid"] == account["accountid"]
        assert account["owningbusinessunit"] == owner_unit(account)
        assert -90 <= account["address1_latitude"] <= 90
    for contact in contacts.values():
        assert contact["parentcustomeridtype"] == "account"
        assert contact["parentcustomerid"] in accounts
        assert contact["owningbusinessunit"] == owner_unit(contact)
    technicians = {u["systemuserid"] for u in users.values() if "Technician" in (u["title"] or "")}
    statuses = set()
    for order in rows(store, "workorder"):
        assert order["serviceaccountid"] in accounts
        contact = contacts[order["primarycontactid"]]
        assert contact["parentcustomerid"] == order["serviceaccountid"]
        assert order["owneridtype"] == "systemuser"
        assert order["ownerid"] in technicians
        assert order["owningbusinessunit"] == owner_unit(order)
        assert order["incidenttypes"]
        assert order["createdby"] in users
        assert (order["scheduledstart"] is None) == (order["systemstatus"] == 690970000)
        statuses.add(order["systemstatus"])
    assert statuses == set(range(690970000, 690970006))


def test_second_run_changes_nothing(store: Store, platform: Platform) -> None:
    seed_demo(platform, today=TODAY)
    before, counted = version(store), counts(store)
    report = seed_demo(platform, today=TODAY + dt.timedelta(days=3))
    assert report.startswith("Demo organisation already present")
    assert version(store) == before
    assert counts(store) == counted == EXPECTED


def test_rerun_recreates_only_what_is_missing(
    store: Store, platform: Platform, records: Records
) -> None:
    seed_demo(platform, today=TODAY)
    order = demo_id("workorder", "7")
    users = users_by_name(store)
    team = demo_id("team", "North Field Team")
    records.delete("workorder", order)
    records.disassociate("teammembership_association", users["tom"]["systemuserid"], team)
    before = version(store)
    report = seed_demo(platform, today=TODAY)
    assert report.startswith("Demo organisation seeded: created 1 teammembership, 1 workorder.")
    assert version(store) == before + 2
    assert counts(store) == EXPECTED
    assert records.retrieve("workorder", order)["name"] == "WO-00007"


def test_existing_username_is_reused(store: Store, platform: Platform, records: Records) -> None:
    admin = records.create(
        "systemuser",
        {
            "domainname": "admin",
            "fullname": "Existing Admin",
            "businessunitid": ROOT_BUSINESS_UNIT_ID,
        },
    )
    seed_demo(platform, today=TODAY)
    users = [u for u in rows(store, "systemuser") if u["domainname"] == "admin"]
    assert [u["systemuserid"] for u in users] == [admin]
    assert counts(store)["systemuser"] == EXPECTED["systemuser"]


def test_same_content_in_every_database(tmp_path: Path) -> None:
    def snapshot(name: str) -> dict[str, dict[uuid.UUID, dict[str, Any]]]:
        store = Store.open(f"sqlite:///{tmp_path / name}")
        try:
            seed_demo(build(store), today=TODAY)
            volatile = {"createdon", "modifiedon", "versionnumber"}
            return {
                table: {
                    rid: {k: v for k, v in row.items() if k not in volatile}
                    for rid, row in by_id(store, table).items()
                }
                for table in ("businessunit", "systemuser", "team", "account", "workorder")
            }
        finally:
            store.close()

    first, second = snapshot("a.db"), snapshot("b.db")
    assert first == second
    assert demo_id("systemuser", "diana") in first["systemuser"]


def test_cli_demo(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    result = CliRunner().invoke(main, ["demo", "--database", url])
    assert result.exit_code == 0, result.output
    assert "Demo organisation seeded" in result.output
    again = CliRunner().invoke(main, ["demo", "--database", url])
    assert again.exit_code == 0, again.output
    assert "already present" in again.output
