"""The demo's offline part: views, the Field Service app and its published profile.

Technicians carry their own work orders (with site photos and service reports), the accounts
those work orders are for, and the contacts of those work orders and accounts. Seeding is
idempotent: what exists is left as it is.
"""

from __future__ import annotations

import uuid

import sqlalchemy as sa

from fieldsync.offline.apps import create_app, create_view
from fieldsync.offline.profiles import publish, write_draft
from fieldsync.offline.snapshot import Distribution
from fieldsync.offline.validation import ItemDraft, ProfileDraft
from fieldsync.platform import Platform
from fieldsync.security.roles import APP_TABLES, PROFILE_TABLES

NAMESPACE = uuid.UUID("5f0c7c9e-2b1d-4a8e-9d3b-6a1f0e4c2d71")
APP_NAME = "fieldservice"
OFFLINE_READ = {t: {"read": "organization"} for t in PROFILE_TABLES + APP_TABLES}


def _id(kind: str, key: str) -> uuid.UUID:
    return uuid.uuid5(NAMESPACE, f"{kind}:{key}")


PROFILE_ID = _id("mobileofflineprofile", "fieldservice")
APP_ID = _id("appmodule", APP_NAME)

VIEWS = (
    (
        "My active work orders",
        "workorder",
        """<fetch>
  <entity name="workorder">
    <attribute name="name" /><attribute name="scheduledstart" />
    <attribute name="serviceaccountid" /><attribute name="primarycontactid" />
    <order attribute="scheduledstart" />
    <filter>
      <condition attribute="ownerid" operator="eq-useroruserteams" />
      <condition attribute="statecode" operator="eq" value="0" />
    </filter>
  </entity>
</fetch>""",
    ),
    (
        "My active accounts",
        "account",
        """<fetch>
  <entity name="account">
    <attribute name="name" /><attribute name="address1_city" /><attribute name="telephone1" />
    <order attribute="name" />
    <filter><condition attribute="statecode" operator="eq" value="0" /></filter>
  </entity>
</fetch>""",
    ),
    (
        "Active contacts",
        "contact",
        """<fetch>
  <entity name="contact">
    <attribute name="fullname" /><attribute name="telephone1" />
    <attribute name="parentcustomerid" />
    <order attribute="fullname" />
    <filter><condition attribute="statecode" operator="eq" value="0" /></filter>
  </entity>
</fetch>""",
    ),
)

PROFILE = ProfileDraft(
    name="Field Service",
    description="What field technicians carry: their work orders, and the accounts and "
    "contacts of those work orders.",
    items=(
        ItemDraft(
            "account",
            Distribution.RELATED,
            relationships=("account_workorder_serviceaccountid",),
            sync_interval_minutes=60,
        ),
        ItemDraft(
            "contact",
            Distribution.RELATED,
            relationships=(
                "account_contact_parentcustomerid",
                "contact_workorder_primarycontactid",
            ),
            sync_interval_minutes=60,
        ),
        ItemDraft(
            "workorder",
            Distribution.OTHER,
            owned_by_me=True,
            owned_by_my_teams=True,
            file_columns=("servicereport",),
            image_columns=("sitephoto",),
            sync_interval_minutes=15,
        ),
    ),
)


def seed_offline(platform: Platform, roles: dict[str, uuid.UUID]) -> list[str]:
    """Create whatever of the demo's offline set-up is missing; return what was created."""
    store, records, org = platform.store, platform.records, platform.org
    created: list[str] = []
    rp = store.sql_table("roleprivilege")
    with store.read() as conn:
        have = set(conn.execute(sa.select(rp.c.roleid, rp.c.tablename, rp.c.privilege)).all())
    for role in roles.values():
        for table in OFFLINE_READ:
            if (role, table, 2) not in have:
                org.set_privilege(role, table, "read", "organization")
    view_sql, app_sql = store.sql_table("savedquery"), store.sql_table("appmodule")
    prof_sql = store.sql_table("mobileofflineprofile")

    def work(conn: sa.Connection) -> tuple[list[uuid.UUID], list[str]]:
        views, created = [], []
        for name, table, fetchxml in VIEWS:
            vid = _id("savedquery", name)
            views.append(vid)
            if (
                conn.execute(
                    sa.select(view_sql.c.savedqueryid).where(view_sql.c.savedqueryid == vid)
                ).first()
                is None
            ):
                create_view(records, name, table, fetchxml, view_id=vid, conn=conn)
                created.append(f"view {name!r}")
        exists = conn.execute(
            sa.select(prof_sql.c.publishedversion).where(
                prof_sql.c.mobileofflineprofileid == PROFILE_ID
            )
        ).first()
        if exists is None:
            write_draft(records, conn, PROFILE, profile_id=PROFILE_ID)
            created.append(f"profile {PROFILE.name!r}")
        if exists is None or not exists.publishedversion:
            publish(records, PROFILE_ID, conn=conn)
            created.append(f"published profile {PROFILE.name!r}")
        return views, created

    views, made = store.transact(work)
    created += made
    with store.read() as conn:
        has_app = conn.execute(
            sa.select(app_sql.c.appmoduleid).where(app_sql.c.appmoduleid == APP_ID)
        ).first()
    if has_app is None:
        create_app(
            records,
            "Field Service",
            APP_NAME,
            tables=("workorder", "account", "contact"),
            views=views,
            profile=PROFILE_ID,
            can_be_used_offline=True,
            allow_sync_frequency=True,
            allow_wifi_only=True,
            app_id=APP_ID,
        )
        created.append(f"app {APP_NAME!r}")
    return created
