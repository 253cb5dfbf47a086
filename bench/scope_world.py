"""An organisation for the scope benches: ``tables`` custom user-owned tables, ``users`` users,
``rows`` rows spread evenly over the tables and owned round-robin by the users.

Each row has ``new_amount`` = its index in its table mod 100, so a custom filter on it selects
an exact share of every table (``new_amount lt 80``: 80 %). Rows go in through
``Store.insert_rows`` (versions and change log, no per-row validation): seeding is not what the
benches measure.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

PASSWORD = "bench-password-1"


def table_names(tables: int) -> list[str]:
    return [f"new_t{i}" for i in range(tables)]


def custom_filter(table: str, condition: str) -> str:
    return f'<fetch><entity name="{table}"><filter>{condition}</filter></entity></fetch>'


def amount_below(table: str, limit: int, low: int = 0) -> str:
    conditions = f'<condition attribute="new_amount" operator="lt" value="{limit}" />'
    if low:
        conditions += f'<condition attribute="new_amount" operator="ge" value="{low}" />'
    return custom_filter(table, conditions)


def profile_yaml(name: str, app: str, items: dict[str, str]) -> str:
    """A profile of ``items`` (table: YAML body of its item) and one app using it."""
    lines = [f"name: {name}", "tables:"]
    for table, body in items.items():
        lines.append(f"  {table}:")
        lines.extend(f"    {line}" for line in body.splitlines())
    lines += [
        "apps:",
        f"  - {{uniquename: {app}, name: {name}, can_be_used_offline: true, mode: offline-first}}",
    ]
    return "\n".join(lines) + "\n"


def custom_item(table: str, fetchxml: str) -> str:
    return "filter: custom\ncustom_filter: |\n  " + fetchxml


def seed(
    p: Any,
    *,
    tables: int,
    rows: int,
    users: int,
    depth: str = "user",
    passwords: int = 0,
    progress: Any = print,
) -> list[uuid.UUID]:
    """Create the tables, a role reading them at ``depth``, the users (the first
    ``passwords`` of them can sign in with :data:`PASSWORD`) and the rows. Returns the user
    ids (``user0`` … in order)."""
    from fieldsync.records.pipeline import SYSTEM
    from fieldsync.schema.model import Column, ColumnType, define_table
    from fieldsync.security.roles import BASIC_USER
    from fieldsync.store.store import ROOT_BUSINESS_UNIT_ID, SYSTEM_USER_ID

    store, org = p.store, p.org
    names = table_names(tables)
    for name in names:
        store.create_table(
            define_table(
                name,
                offline=True,
                columns=[Column("new_amount", ColumnType.INTEGER, display_name="Amount")],
            )
        )
    privileges = {
        name: {
            "read": depth,
            "create": "user",
            "write": "user",
            "delete": "user",
            "append": "user",
            "appendto": "user",
        }
        for name in names
    }
    role = org.role("Bench scope reader", privileges=privileges)
    basic = org.role_id(BASIC_USER)
    ids = [
        org.user(
            f"user{i}",
            password=PASSWORD if i < passwords else None,
            roles=[basic, role],
            caller=SYSTEM,
        )
        for i in range(users)
    ]
    per_table = rows // tables
    now = dt.datetime.now(dt.UTC)
    for name in names:
        t = store.schema.table(name)
        owner_type = t.column("ownerid").type_column
        for first in range(0, per_table, 10_000):
            batch = [
                {
                    t.primary_id: uuid.uuid4(),
                    "name": f"{name} row {i}",
                    "new_amount": i % 100,
                    "ownerid": ids[i % users],
                    owner_type: "systemuser",
                    "owningbusinessunit": ROOT_BUSINESS_UNIT_ID,
                    "createdon": now,
                    "modifiedon": now,
                    "createdby": SYSTEM_USER_ID,
                    "modifiedby": SYSTEM_USER_ID,
                    "statecode": 0,
                    "statuscode": 1,
                }
                for i in range(first, min(per_table, first + 10_000))
            ]

            def work(conn: Any, batch: list[dict[str, Any]] = batch, name: str = name) -> None:
                store.insert_rows(conn, name, batch, userid=SYSTEM_USER_ID)

            store.transact(work)
        progress(f"  seeded {name}: {per_table:,} rows")
    if store.dialect == "postgresql":
        with store.write() as conn:
            for name in names:
                conn.exec_driver_sql(f'ANALYZE "{name}"')
    return ids
