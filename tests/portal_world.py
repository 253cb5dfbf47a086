"""An organisation for the portal tests: a maker (System Administrator), a technician with a
work order, a team, an app that is not yet offline, and a custom table that is not yet
enabled for offline."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

import httpx

from fieldsync.offline.apps import create_app
from fieldsync.platform import Platform
from fieldsync.schema.model import Column, ColumnType, define_table
from fieldsync.security.roles import BASIC_USER, SYSTEM_ADMINISTRATOR
from fieldsync.types import EntityRef

PASSWORD = "correct horse battery"
TABLES = ("account", "contact", "workorder", "sitevisit")


@dataclass
class PortalOrg:
    maker: uuid.UUID
    lena: uuid.UUID
    team: uuid.UUID
    app: uuid.UUID
    account: uuid.UUID
    workorder: uuid.UUID


def make_org(platform: Platform) -> PortalOrg:
    platform.store.create_table(
        define_table(
            "sitevisit",
            display_name="Site Visit",
            columns=[
                Column("name", ColumnType.STRING, max_length=100, required=True),
                Column("workorderid", ColumnType.LOOKUP, targets=("workorder",)),
            ],
        )
    )
    org = platform.org
    own = dict.fromkeys(("create", "write", "delete", "append", "assign", "share"), "user")
    technician = org.role(
        "Technician",
        privileges={t: {**own, "read": "businessunit", "appendto": "businessunit"} for t in TABLES},
    )
    maker = org.user("maker", password=PASSWORD, roles=[org.role_id(SYSTEM_ADMINISTRATOR)])
    lena = org.user(
        "lena", password=PASSWORD, firstname="Lena", roles=[org.role_id(BASIC_USER), technician]
    )
    team = org.team("Crew", members=[lena])
    records = platform.records
    account = records.create(
        "account", {"name": "Contoso", "ownerid": EntityRef("systemuser", lena)}
    )
    workorder = records.create(
        "workorder",
        {"name": "Pump", "serviceaccountid": account, "ownerid": EntityRef("systemuser", lena)},
    )
    app = create_app(
        records, "Field Service", "fieldservice", tables=("workorder", "account", "sitevisit")
    )
    return PortalOrg(maker, lena, team, app, account, workorder)


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "the page has no form"
    return found.group(1)


def sign_in(client: httpx.Client, username: str) -> None:
    page = client.get("/portal/sign-in")
    answer = client.post(
        "/portal/sign-in",
        data={"csrf": csrf_of(page.text), "username": username, "password": PASSWORD},
    )
    assert answer.status_code == 303, answer.text
