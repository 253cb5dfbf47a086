"""``$expand``: navigation properties with their own ``$select``, ``$filter``, ``$orderby``,
``$top`` and nested ``$expand``."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Final

from fieldsync.errors import QueryError
from fieldsync.query.ast import (
    Node,
    Order,
)
from fieldsync.query.odata.filter import parse_filter
from fieldsync.query.odata.lexer import comma_items, fail_at, show, split_outside
from fieldsync.query.odata.names import Navigation, resolve_navigation
from fieldsync.query.odata.options import parse_orderby, parse_select, parse_top
from fieldsync.schema.model import (
    ColumnType,
    Schema,
    Table,
)

T = ColumnType


MAX_EXPAND_DEPTH: Final = 4  # $expand inside $expand


@dataclass(frozen=True, slots=True)
class Expand:
    """One ``$expand`` item.

    Single-valued (``collection`` false): ``lookup_column`` is the lookup on the parent table
    that points at ``target_table``. Collection-valued: ``lookup_column`` is the lookup on
    ``target_table`` that points back at the parent's primary id; only these take
    ``filter``, ``orders`` and ``top``. Many-to-many (``relationship`` names it): collection-
    valued, ``lookup_column`` is the target's primary id. ``columns`` ``None`` means every
    column."""

    navigation: str
    lookup_column: str
    target_table: str
    columns: tuple[str, ...] | None = None
    filter: Node | None = None
    orders: tuple[Order, ...] = ()
    top: int | None = None
    collection: bool = False
    expand: tuple[Expand, ...] = ()
    relationship: str | None = None


_EXPAND_ITEM = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:\((.*)\))?", re.DOTALL)
_EXPAND_OPTION = re.compile(r"\s*(\$?[A-Za-z]+)\s*=(.*)", re.DOTALL)


def parse_expand(
    text: str,
    table: Table,
    schema: Schema,
    where: str,
    depth: int,
    aliases: Mapping[str, str],
) -> tuple[Expand, ...]:
    if depth > MAX_EXPAND_DEPTH:
        raise QueryError(f"{where}: $expand is nested more than {MAX_EXPAND_DEPTH} levels deep")
    out: list[Expand] = []
    seen: set[str] = set()
    for item, pos in comma_items(text, where):
        if item == "*":
            fail_at("$expand=* is not supported; name the navigation properties", pos, where)
        m = _EXPAND_ITEM.fullmatch(item)
        if m is None:
            if "/" in item:
                fail_at(f"{show(item)}: expand one navigation property at a time", pos, where)
            fail_at(f"expected a navigation property, got {show(item)}", pos, where)
        try:
            nav = resolve_navigation(table, schema, m.group(1), many_to_many=True)
        except QueryError as e:
            fail_at(e.message, pos, where)
        if nav.name in seen:
            fail_at(f"{nav.name!r} is expanded twice", pos, where)
        seen.add(nav.name)
        expand = Expand(
            navigation=nav.name,
            lookup_column=nav.column.name,
            target_table=nav.target.name,
            collection=nav.collection,
            relationship=nav.relationship,
        )
        if m.group(2) is not None:
            expand = _expand_options(
                expand, nav, m.group(2), pos + m.start(2), schema, where, depth, aliases
            )
        out.append(expand)
    return tuple(out)


def _expand_options(
    expand: Expand,
    nav: Navigation,
    text: str,
    offset: int,
    schema: Schema,
    where: str,
    depth: int,
    aliases: Mapping[str, str],
) -> Expand:
    target = nav.target
    seen: set[str] = set()
    for part, pos in split_outside(text, ";", where, offset):
        if not part.strip():
            continue
        m = _EXPAND_OPTION.fullmatch(part)
        if m is None:
            fail_at(f"expected $option=value, got {show(part.strip())}", pos, where)
        key, value = m.group(1).lower(), m.group(2)
        key = key if key.startswith("$") else "$" + key
        inner = f"{key} of $expand {nav.name}"
        if key in seen:
            fail_at(f"{key} is given twice", pos, where)
        seen.add(key)
        if key in ("$filter", "$orderby", "$top") and not nav.collection:
            fail_at(
                f"{key} applies to collection-valued navigation properties; "
                f"{nav.name!r} is single-valued",
                pos,
                where,
            )
        if key == "$select":
            expand = replace(expand, columns=parse_select(value, target, inner))
        elif key == "$filter":
            node = parse_filter(value, target, schema, aliases=aliases, where=inner)
            expand = replace(expand, filter=node)
        elif key == "$orderby":
            expand = replace(expand, orders=parse_orderby(value, target, inner))
        elif key == "$top":
            expand = replace(expand, top=parse_top(value, inner))
        elif key == "$expand":
            nested = parse_expand(value, target, schema, inner, depth + 1, aliases)
            expand = replace(expand, expand=nested)
        else:
            fail_at(f"{m.group(1)} is not supported inside $expand", pos, where)
    return expand
