"""Rows as Dataverse renders them: lookups as ``_x_value``, choices as integers, multi-choice
as ``"1,3"``, dates in ISO 8601 UTC, ``@odata.etag``, and the formatted-value and
lookup annotations when ``Prefer: odata.include-annotations`` asks for them.

A lookup's formatted value is the primary name of the row it points at, taken from
``names`` (read by the caller beforehand, one query per table and page): a row the caller
may not read has no formatted value."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from fieldsync.schema.model import Column, ColumnType, Table
from fieldsync.webapi.protocol import etag

T = ColumnType
FORMATTED = "OData.Community.Display.V1.FormattedValue"
LOOKUP_NAME = "Microsoft.Dynamics.CRM.lookuplogicalname"
NAVIGATION = "Microsoft.Dynamics.CRM.associatednavigationproperty"


def value(col: Column | None, raw: Any) -> Any:
    """One stored value as JSON."""
    if raw is None:
        return None
    if col is not None and col.type is T.MULTICHOICE:
        return ",".join(str(v) for v in raw) if isinstance(raw, (list, tuple)) else str(raw)
    if isinstance(raw, uuid.UUID):
        return str(raw)
    if isinstance(raw, dt.datetime):
        return raw.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(raw, dt.date):
        return raw.isoformat()
    if isinstance(raw, Decimal):
        return float(raw)
    return raw


def formatted(col: Column, raw: Any) -> str | None:
    if raw is None:
        return None
    if col.type is T.CHOICE:
        return next((o.label for o in col.options if o.value == raw), str(raw))
    if col.type is T.MULTICHOICE and isinstance(raw, (list, tuple)):
        labels = {o.value: o.label for o in col.options}
        return "; ".join(labels.get(v, str(v)) for v in raw)
    if col.type is T.BOOLEAN:
        return "Yes" if raw else "No"
    if col.type in (T.INTEGER, T.BIGINT):
        return f"{raw:,}"
    if col.type is T.MONEY:
        return f"{Decimal(raw):,.2f}"
    if col.type is T.DATETIME and isinstance(raw, dt.datetime):
        return raw.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M")
    return None


def render_row(
    table: Table,
    row: Mapping[str, Any],
    *,
    annotations: Any = None,
    columns: tuple[str, ...] | None = None,
    names: Mapping[Any, str] | None = None,
) -> dict[str, Any]:
    """A row as an OData entity. ``annotations(name) -> bool`` says which annotations to
    add; ``columns`` limits the output to the selected columns (the id always comes);
    ``names`` maps ids to the primary names lookups show as their formatted value."""
    want = annotations or (lambda _name: False)
    out: dict[str, Any] = {}
    version = row.get("versionnumber")
    if isinstance(version, int):
        out["@odata.etag"] = etag(version)
    for name, raw in row.items():
        col = table.columns.get(name)
        if col is None:
            if "." in name:  # a joined table's column (FetchXML link-entity)
                out[name] = value(None, raw)
            continue
        if columns is not None and name not in columns and name != table.primary_id:
            continue
        if col.type is T.LOOKUP:
            key = f"_{name}_value"
            out[key] = value(col, raw)
            if raw is not None:
                target = row.get(col.type_column) if col.polymorphic else col.targets[0]
                if names is not None and raw in names and want(FORMATTED):
                    out[f"{key}@{FORMATTED}"] = names[raw]
                if want(LOOKUP_NAME):
                    out[f"{key}@{LOOKUP_NAME}"] = target
                if want(NAVIGATION):
                    nav = f"{name}_{target}" if col.polymorphic else name
                    out[f"{key}@{NAVIGATION}"] = nav
            continue
        out[name] = value(col, raw)
        if want(FORMATTED):
            text = formatted(col, raw)
            if text is not None:
                out[f"{name}@{FORMATTED}"] = text
    return out
