"""A table's "can be taken offline" setting: only tables with it on can be added to a
profile. Changing it is a table change, so it needs the System Administrator role, as every
table and column change does (the Web API's rule too)."""

from __future__ import annotations

from fieldsync.errors import Forbidden
from fieldsync.records.service import SYSTEM
from fieldsync.schema.model import Table
from fieldsync.security.model import SecurityContext
from fieldsync.store.store import Store


def offline_tables(store: Store) -> list[Table]:
    """The tables a maker can see in the table list: every table but intersect tables."""
    return sorted(
        (t for t in store.schema.tables.values() if not t.intersect), key=lambda t: t.name
    )


def set_table_offline(
    store: Store, table: str, offline: bool, *, caller: SecurityContext = SYSTEM
) -> Table:
    """Turn "can be taken offline" on or off for ``table``."""
    if not caller.unrestricted:
        raise Forbidden(
            f"{caller.username or caller.user_id} may not change tables: "
            "that needs the System Administrator role"
        )
    return store.set_table_offline(table, offline)
