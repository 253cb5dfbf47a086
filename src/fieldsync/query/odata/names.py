"""Columns and navigation properties by the names OData uses for them."""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, replace

from fieldsync.errors import QueryError
from fieldsync.query.odata.lexer import a_or_an, fail_at
from fieldsync.schema.model import (
    Column,
    ColumnType,
    RelationshipKind,
    Schema,
    Table,
)

T = ColumnType


_VALUE_NAME = re.compile(r"_([a-z][a-z0-9_]*)_value")


def resolve_column(table: Table, name: str) -> Column | None:
    """A column by logical name (any case) or, for a lookup, as ``_x_value``."""
    key = name.lower()
    col = table.columns.get(key)
    if col is not None:
        return col
    m = _VALUE_NAME.fullmatch(key)
    if m:
        col = table.columns.get(m.group(1))
        if col is not None and col.type is T.LOOKUP:
            return col
    return None


def unknown_column(table: Table, name: str) -> str:
    message = f"table {table.name!r} has no column {name!r}"
    close = difflib.get_close_matches(name.lower(), list(table.columns), n=1)
    return message + (f" (did you mean {close[0]!r}?)" if close else "")


def find_column(table: Table, name: str, pos: int, where: str) -> Column:
    if "/" in name:
        fail_at(f"{name!r}: paths through navigation properties are not supported here", pos, where)
    col = resolve_column(table, name)
    if col is None:
        fail_at(unknown_column(table, name), pos, where)
    return col


@dataclass(frozen=True, slots=True)
class Navigation:
    """A navigation property of a table; see :class:`Expand` for ``column`` and
    ``relationship``."""

    name: str
    column: Column
    target: Table
    collection: bool
    relationship: str | None = None


def resolve_navigation(
    table: Table, schema: Schema, name: str, *, many_to_many: bool = False
) -> Navigation:
    """The navigation property ``name`` of ``table``; a QueryError (without a position) says
    why there is none. Many-to-many relationships are navigation properties only where
    ``many_to_many`` says they are taken ($expand and the Web API's navigation paths, not
    $filter)."""
    key = name.lower()

    def target_of(table_name: str) -> Table:
        if table_name not in schema:
            raise QueryError(f"navigation property {name!r} leads to a missing table")
        return schema.table(table_name)

    col = table.columns.get(key)
    if col is not None and col.type is T.LOOKUP:
        if name != col.navigation:
            raise QueryError(
                f"navigation property names are case-sensitive: {table.name} has "
                f"{col.navigation!r}, not {name!r}"
            )
        if col.polymorphic:
            choices = " or ".join(f"{col.name}_{t}" for t in col.targets)
            raise QueryError(
                f"{col.name!r} can point at {', '.join(col.targets)}: name the target, {choices}"
            )
        return Navigation(col.navigation, col, target_of(col.targets[0]), collection=False)
    alias = {"owninguser": "ownerid_systemuser", "owningteam": "ownerid_team"}.get(key)
    if alias is not None and "ownerid" in table.columns:
        nav = resolve_navigation(table, schema, alias)
        return replace(nav, name=key)
    for lookup in table.lookups():
        prefix = lookup.name + "_"
        if key.startswith(prefix) and key[len(prefix) :] in lookup.targets:
            return Navigation(key, lookup, target_of(key[len(prefix) :]), collection=False)
    for rel in schema.relationships.values():
        if rel.name != key:
            continue
        if name != rel.schema:
            raise QueryError(
                f"navigation property names are case-sensitive: {rel.schema!r}, not {name!r}"
            )
        key = rel.schema
        if rel.kind is RelationshipKind.ONE_TO_MANY and rel.referenced_table == table.name:
            many = target_of(rel.referencing_table)
            back = many.column(rel.referencing_column)
            if back is not None:
                return Navigation(key, back, many, collection=True)
        if rel.kind is RelationshipKind.MANY_TO_MANY and table.name in (
            rel.referenced_table,
            rel.referencing_table,
        ):
            if not many_to_many:
                raise QueryError(
                    f"{name!r} is a many-to-many relationship; filtering through it is not "
                    f"supported (expand it, or read {table.entity_set_name}(<id>)/{rel.name})"
                )
            other = (
                rel.referencing_table
                if rel.referenced_table == table.name
                else rel.referenced_table
            )
            many = target_of(other)
            return Navigation(
                rel.schema, many.columns[many.primary_id], many, True, relationship=rel.name
            )
    for many, back in schema.referencing(table.name):
        if f"{many.name}_{back.name}" == key:
            return Navigation(key, back, many, collection=True)
    if col is not None:
        raise QueryError(
            f"{col.name!r} is {a_or_an(col.type.value)} column, not a navigation property"
        )
    raise QueryError(
        f"table {table.name!r} has no navigation property {name!r}; single-valued ones are "
        "named after the lookup (primarycontactid, parentcustomerid_account), collection-valued "
        "ones after the referencing table and lookup (contact_parentcustomerid)"
    )
