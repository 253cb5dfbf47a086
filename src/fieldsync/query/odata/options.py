"""``$select``, ``$orderby`` and ``$top``."""

from __future__ import annotations

import re
from typing import Final

from fieldsync.errors import QueryError
from fieldsync.query.ast import (
    Order,
)
from fieldsync.query.odata.lexer import NAME, comma_items, fail_at, show
from fieldsync.query.odata.names import find_column
from fieldsync.query.operators import (
    UNORDERABLE,
)
from fieldsync.schema.model import (
    ColumnType,
    Table,
)

T = ColumnType


MAX_TOP: Final = 100_000


def parse_select(text: str, table: Table, where: str) -> tuple[str, ...] | None:
    names: list[str] = []
    for item, pos in comma_items(text, where):
        if item == "*":
            return None
        if "/" not in item and not NAME.fullmatch(item):
            fail_at(f"{show(item)} is not a column name", pos, where)
        if "/" in item:
            fail_at(f"{item!r}: select related columns with $expand", pos, where)
        names.append(find_column(table, item, pos, where).name)
    return tuple(dict.fromkeys(names))


_ORDER_ITEM = re.compile(r"(\S+)(?:\s+(\S+))?")


def parse_orderby(text: str, table: Table, where: str) -> tuple[Order, ...]:
    orders = []
    for item, pos in comma_items(text, where):
        m = _ORDER_ITEM.fullmatch(item)
        if m is None:
            fail_at(
                f"expected 'column', 'column asc' or 'column desc', got {show(item)}", pos, where
            )
        name, direction = m.group(1), m.group(2)
        if "/" in name:
            fail_at(f"{name!r}: ordering by a related table's column is not supported", pos, where)
        if not NAME.fullmatch(name):
            fail_at(f"{show(name)} is not a column name", pos, where)
        col = find_column(table, name, pos, where)
        if col.type in UNORDERABLE:
            fail_at(f"cannot order by the {col.type.value} column {col.name!r}", pos, where)
        descending = False
        if direction is not None:
            if direction.lower() not in ("asc", "desc"):
                fail_at(f"expected asc or desc, got {show(direction)}", pos + m.start(2), where)
            descending = direction.lower() == "desc"
        orders.append(Order(col.name, descending))
    return tuple(orders)


def parse_top(text: str, where: str) -> int:
    stripped = text.strip()
    if not re.fullmatch(r"\d{1,9}", stripped) or not 1 <= int(stripped) <= MAX_TOP:
        raise QueryError(f"{where} must be a whole number from 1 to {MAX_TOP}, got {show(text)}")
    return int(stripped)
