"""Rows as Dataverse renders them: lookups as ``_x_value``, choices as integers, multi-choice
as ``"1,3"``, dates in ISO 8601 UTC, ``@odata.etag``, and the formatted-value and
lookup annotations when ``Prefer: odata.include-annotations`` asks for them.

A lookup's formatted value is the primary name of the row it points at, taken from
``names`` (read by the caller beforehand, one query per table and page): a row the caller
may not read has no formatted value."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping, Sequence
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
        utc = raw.astimezone(dt.UTC)
        if utc.year < 1000:  # strftime's %Y does not pad; keep what it wrote
            return utc.strftime("%Y-%m-%dT%H:%M:%SZ")
        return utc.replace(microsecond=0, tzinfo=None).isoformat() + "Z"
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
    [out] = render_rows(table, [row], annotations=annotations, columns=columns, names=names)
    return out


# what passes to the JSON renderer as it is: orjson writes ids as Dataverse does (``str(id)``)
_PLAIN = (str, int, float, bool, uuid.UUID)
_JOINED, _LOOKUP, _VALUE, _PASS = range(4)


def render_rows(
    table: Table,
    rows: Sequence[Mapping[str, Any]],
    *,
    annotations: Any = None,
    columns: tuple[str, ...] | None = None,
    names: Mapping[Any, str] | None = None,
) -> list[dict[str, Any]]:
    """Rows of one query as entities (see :func:`render_row`): what each column becomes is
    decided once for the rows, not once a row."""
    if not rows:
        return []
    want = annotations or (lambda _name: False)
    show_formatted, show_table, show_nav = want(FORMATTED), want(LOOKUP_NAME), want(NAVIGATION)

    def plan(keys: tuple[str, ...]) -> list[tuple[str, int, Column | None]]:
        steps: list[tuple[str, int, Column | None]] = []
        for name in keys:
            col = table.columns.get(name)
            if col is None:
                if "." in name:  # a joined table's column (FetchXML link-entity)
                    steps.append((name, _JOINED, None))
            elif columns is not None and name not in columns and name != table.primary_id:
                continue
            elif col.type is T.LOOKUP:
                steps.append((name, _LOOKUP, col))
            elif show_formatted or col.type is T.MULTICHOICE:
                steps.append((name, _VALUE, col))
            else:
                steps.append((name, _PASS, col))  # plain JSON values pass as they are
        return steps

    plans: dict[tuple[str, ...], list[tuple[str, int, Column | None]]] = {}
    memo: dict[Any, Any] = {}  # dates repeat across rows (created together, modified together)
    out_rows = []
    for row in rows:
        keys = tuple(row)
        steps = plans.get(keys)
        if steps is None:
            steps = plans[keys] = plan(keys)
        out: dict[str, Any] = {}
        if "versionnumber" in row:
            version = row["versionnumber"]
            if isinstance(version, int):
                out["@odata.etag"] = etag(version)
        for name, kind, col in steps:
            raw = row[name]
            if kind == _PASS:
                if raw is None or type(raw) in _PLAIN:
                    out[name] = raw
                else:
                    done = memo.get(raw)
                    if done is None:
                        done = memo[raw] = value(col, raw)
                    out[name] = done
            elif kind == _JOINED:
                out[name] = value(None, raw)
            elif kind == _LOOKUP:
                assert col is not None
                key = f"_{name}_value"
                out[key] = raw if type(raw) is uuid.UUID else value(col, raw)
                if raw is not None:
                    target = row.get(col.type_column) if col.polymorphic else col.targets[0]
                    if names is not None and show_formatted and raw in names:
                        out[f"{key}@{FORMATTED}"] = names[raw]
                    if show_table:
                        out[f"{key}@{LOOKUP_NAME}"] = target
                    if show_nav:
                        nav = f"{name}_{target}" if col.polymorphic else name
                        out[f"{key}@{NAVIGATION}"] = nav
            else:
                assert col is not None
                out[name] = value(col, raw)
                if show_formatted:
                    text = formatted(col, raw)
                    if text is not None:
                        out[f"{name}@{FORMATTED}"] = text
        out_rows.append(out)
    return out_rows
