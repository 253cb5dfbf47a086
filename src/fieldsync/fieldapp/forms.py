"""What the field app shows and edits, decided from the handshake alone (pure: no I/O).

- :func:`lists` names the lists on the home screen: the app's views, or one list per profile
  table when the app has none.
- :func:`form_fields` picks a table's editable columns; :func:`parse` turns what the user typed
  into the value the device SDK takes (and says clearly what is wrong otherwise);
  :func:`changed` keeps only the columns the user really changed, so an update carries only
  those and a concurrent change to another column survives the merge.
- :func:`show` renders a replica value for a person: option labels, lookup names, short times.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from fieldsync.errors import BadRequest
from fieldsync.schema.model import Column, ColumnType, Table
from fieldsync.types import as_uuid

T = ColumnType

# Files and images are not taken offline (as in Dataverse's offline-first apps).
NOT_ON_FORMS = (T.FILE, T.IMAGE)
# The system columns a person may see on a form, read-only.
SHOWN_SYSTEM = ("statecode", "statuscode", "ownerid", "modifiedon")
LIST_COLUMNS = 5


@dataclass(frozen=True)
class ListSpec:
    """One list of the home screen: a view (its FetchXML) or a whole profile table."""

    name: str
    table: str
    fetchxml: str | None = None


@dataclass(frozen=True)
class Field:
    """One column on a record form."""

    column: Column
    label: str
    editable: bool

    @property
    def name(self) -> str:
        return self.column.name

    @property
    def type(self) -> ColumnType:
        return self.column.type


def tables(handshake: Mapping[str, Any]) -> dict[str, Table]:
    """The profile's table definitions, by name, in the profile's order."""
    defs = {t["name"]: Table.from_json(t) for t in handshake.get("tables", [])}
    return {name: defs[name] for name in handshake.get("order", []) if name in defs}


def lists(handshake: Mapping[str, Any]) -> list[ListSpec]:
    """The app's views of the profile's tables; without views, one list per profile table."""
    known = tables(handshake)
    views = [
        ListSpec(v["name"], v["table"], v["fetchxml"])
        for v in handshake.get("views", [])
        if v.get("table") in known and v.get("fetchxml")
    ]
    if views:
        return views
    return [ListSpec(t.display_name or t.name, t.name) for t in known.values()]


def form_fields(table: Table, travelling: Sequence[str]) -> list[Field]:
    """The columns a form shows, in the table's order: those that travel to the device, but
    not ids, files or images; system columns only where a person cares, read-only."""
    out: list[Field] = []
    wanted = set(travelling)
    for col in table.columns.values():
        if col.name not in wanted or col.name == table.primary_id or col.type in NOT_ON_FORMS:
            continue
        if col.system and col.name not in SHOWN_SYSTEM:
            continue
        editable = not (col.system or col.read_only)
        out.append(Field(col, col.display_name or col.name, editable))
    out.sort(key=lambda f: (f.name != table.primary_name, not f.editable))
    return out


def list_columns(table: Table, keys: Sequence[str]) -> list[str]:
    """The columns a list shows: what a view selects, or the primary name and a few more."""
    if len(keys) <= LIST_COLUMNS + 2:
        shown = [k for k in keys if k != table.primary_id and table.column(k) is not None]
        if shown:
            return shown
    fields = form_fields(table, keys)
    return [f.name for f in fields if f.editable][:LIST_COLUMNS]


# -- from what a person typed to a value ---------------------------------------------------------


def parse(field: Field, raw: Any) -> Any:
    """The SDK value for what the form holds: text from an input, an option from a select, a
    list of options, or a lookup ``(id, table)``. Raises :class:`BadRequest` naming the field."""
    col = field.column
    if raw is None or (isinstance(raw, str) and not raw.strip()) or raw == []:
        if col.required:
            raise BadRequest(f"{field.label} is required")
        return None
    text = raw.strip() if isinstance(raw, str) else raw
    kind = col.type
    if kind in (T.STRING, T.MEMO):
        return raw
    if kind in (T.INTEGER, T.BIGINT):
        try:
            return int(text)
        except (TypeError, ValueError):
            raise BadRequest(f"{field.label}: enter a whole number, not {text!r}") from None
    if kind in (T.DECIMAL, T.MONEY, T.FLOAT):
        try:
            number = Decimal(str(text))
        except InvalidOperation:
            raise BadRequest(f"{field.label}: enter a number, not {text!r}") from None
        if not number.is_finite():
            raise BadRequest(f"{field.label}: enter a number, not {text!r}")
        return float(number) if kind is T.FLOAT else str(number)
    if kind is T.DATETIME:
        try:
            moment = dt.datetime.fromisoformat(str(text))
        except ValueError:
            raise BadRequest(
                f"{field.label}: enter a date and time as YYYY-MM-DD HH:MM (UTC), not {text!r}"
            ) from None
        return moment.isoformat()
    if kind is T.DATE:
        try:
            return dt.date.fromisoformat(str(text)).isoformat()
        except ValueError:
            raise BadRequest(f"{field.label}: enter a date as YYYY-MM-DD, not {text!r}") from None
    if kind is T.UNIQUEIDENTIFIER:
        try:
            return str(as_uuid(str(text)))
        except ValueError:
            raise BadRequest(f"{field.label}: enter a GUID, not {text!r}") from None
    if kind is T.BOOLEAN:
        if not isinstance(raw, bool):
            raise BadRequest(f"{field.label}: choose yes or no")
        return raw
    if kind is T.CHOICE:
        if raw not in col.option_values():
            raise BadRequest(f"{field.label}: choose one of the options")
        return raw
    if kind is T.MULTICHOICE:
        values = sorted(set(raw))
        if not set(values) <= set(col.option_values()):
            raise BadRequest(f"{field.label}: choose among the options")
        return values
    if kind is T.LOOKUP:
        rid, target = raw
        if target not in col.targets:
            raise BadRequest(f"{field.label}: pick a row of {', '.join(col.targets)}")
        return (str(rid), target) if col.polymorphic else str(rid)
    raise BadRequest(f"{field.label} cannot be edited here")


def current(field: Field, row: Mapping[str, Any]) -> Any:
    """A row's value of ``field`` in the form's terms (a lookup as ``(id, table)``)."""
    value = row.get(field.name)
    if value is None:
        return None
    if field.type is T.LOOKUP:
        col = field.column
        target = row.get(col.type_column) if col.polymorphic else None
        return (str(value), target or col.targets[0])
    if field.type is T.MULTICHOICE:
        return sorted(value)
    return value


def _same(kind: ColumnType, a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is b
    if kind in (T.DECIMAL, T.MONEY, T.FLOAT):
        return Decimal(str(a)) == Decimal(str(b))
    if kind is T.DATETIME:  # a form shows minutes: unchanged minutes keep the seconds
        x, y = dt.datetime.fromisoformat(str(a)), dt.datetime.fromisoformat(str(b))
        x = x if x.tzinfo else x.replace(tzinfo=dt.UTC)
        y = y if y.tzinfo else y.replace(tzinfo=dt.UTC)
        return x.replace(second=0, microsecond=0) == y.replace(second=0, microsecond=0)
    if kind is T.LOOKUP:
        return str(a[0] if isinstance(a, tuple) else a) == str(b[0] if isinstance(b, tuple) else b)
    if kind is T.MULTICHOICE:
        return sorted(a) == sorted(b)
    return bool(a == b)


def changed(
    fields: Sequence[Field], row: Mapping[str, Any], values: Mapping[str, Any]
) -> dict[str, Any]:
    """The values that differ from ``row`` (all of them for a new row: ``row`` empty)."""
    by_name = {f.name: f for f in fields}
    out: dict[str, Any] = {}
    for name, value in values.items():
        field = by_name[name]
        is_new = not row
        if (value is not None) if is_new else not _same(field.type, current(field, row), value):
            out[name] = value
    return out


# -- from a value to what a person reads ----------------------------------------------------------

Names = Callable[[str, str], str | None]


def show(col: Column | None, value: Any, names: Names, row: Mapping[str, Any] = {}) -> str:
    """A replica value for a person; ``names(table, id)`` gives a looked-up row's name."""
    if value is None or col is None:
        return "" if value is None else str(value)
    kind = col.type
    if kind in (T.CHOICE, T.MULTICHOICE):
        labels = {o.value: o.label for o in col.options}
        items = value if isinstance(value, list) else [value]
        return ", ".join(labels.get(v, str(v)) for v in items)
    if kind is T.BOOLEAN:
        return "Yes" if value else "No"
    if kind is T.DATETIME:
        moment = dt.datetime.fromisoformat(str(value))
        if moment.tzinfo is not None:
            moment = moment.astimezone(dt.UTC)
        return moment.strftime("%Y-%m-%d %H:%M")
    if kind is T.LOOKUP:
        target = (row.get(col.type_column) if col.polymorphic else None) or col.targets[0]
        return names(target, str(value)) or f"({target} {str(value)[:8]})"
    return str(value)
