"""Rows as Dataverse renders them: lookups as ``_x_value``, choices as integers, multi-choice
as ``"1,3"``, dates in ISO 8601 UTC, ``@odata.etag``, and the formatted-value and
lookup annotations when ``Prefer: odata.include-annotations`` asks for them.

A lookup's formatted value is the primary name of the row it points at, taken from
``names`` (read by the caller beforehand, one query per table and page): a row the caller
may not read has no formatted value."""

from __future__ import annotations

import datetime as dt
import operator
import uuid
from collections.abc import Callable, Mapping, Sequence
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


Step = tuple[str, int, Column | None]


def _plan(
    table: Table, keys: Sequence[str], columns: tuple[str, ...] | None, show_formatted: bool
) -> list[Step]:
    """What each column of a result becomes: skipped (not selected), a joined table's
    value, a lookup, a value to convert, or a value that passes as it is."""
    steps: list[Step] = []
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

    plans: dict[tuple[str, ...], list[Step]] = {}
    memo: dict[Any, Any] = {}  # dates repeat across rows (created together, modified together)
    out_rows = []
    for row in rows:
        keys = tuple(row)
        steps = plans.get(keys)
        if steps is None:
            steps = plans[keys] = _plan(table, keys, columns, show_formatted)
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


def render_values(
    table: Table,
    keys: Sequence[str],
    rows: Sequence[Sequence[Any]],
    convert: Sequence[Callable[[Any], Any] | None],
    text: Sequence[Callable[[Any], Any] | None],
    *,
    annotations: Any = None,
    columns: tuple[str, ...] | None = None,
) -> list[dict[str, Any]]:
    """:func:`render_rows` for rows of the database driver's values (``keys`` name their
    columns): ``convert[i]`` turns column ``i``'s value into its Python value (``None``: it
    is one), ``text[i]`` (where given) straight into its JSON. Each distinct value of a
    converted column is converted and rendered once. Without formatted values, which need
    the names of the rows lookups point at (:func:`render_rows` shows those)."""
    want = annotations or (lambda _name: False)
    show_table, show_nav = want(LOOKUP_NAME), want(NAVIGATION)
    index = {name: i for i, name in enumerate(keys)}
    # columns whose driver values are their JSON (text, numbers, and what the JSON renderer
    # writes as :func:`value` would: ids, dates) are copied in one step; the others go one by one
    plain: list[tuple[int, str]] = []
    steps = []  # (position, key, as JSON, the lookup to annotate)
    for name, kind, col in _plan(table, keys, columns, False):
        i = index[name]
        key = str(f"_{name}_value" if kind == _LOOKUP else name)  # not SQLAlchemy's str type
        annotate = col if kind == _LOOKUP and (show_table or show_nav) else None
        as_json = _json_of(col, convert[i], text[i])
        if as_json is None and annotate is None:
            plain.append((i, key))
        else:
            steps.append((i, key, as_json or _as_value, annotate))
    plain_keys = tuple(k for _, k in plain)
    pick = _picker([i for i, _ in plain])
    version = index.get("versionnumber")
    out_rows = []
    for row in rows:
        out: dict[str, Any] = {}
        if version is not None and type(row[version]) is int:
            out["@odata.etag"] = etag(row[version])
        out.update(zip(plain_keys, pick(row), strict=True))
        for i, key, as_json, lookup in steps:
            raw = row[i]
            out[key] = None if raw is None else as_json(raw)
            if lookup is not None and raw is not None:
                if lookup.polymorphic:
                    target = _typed(row, index, convert, lookup.type_column)
                else:
                    target = lookup.targets[0]
                if show_table:
                    out[f"{key}@{LOOKUP_NAME}"] = target
                if show_nav:
                    nav = f"{lookup.name}_{target}" if lookup.polymorphic else lookup.name
                    out[f"{key}@{NAVIGATION}"] = nav
        out_rows.append(out)
    return out_rows


def _as_value(raw: Any) -> Any:
    return raw if type(raw) in _PLAIN else value(None, raw)


def _picker(positions: list[int]) -> Callable[[Sequence[Any]], Sequence[Any]]:
    if not positions:
        return lambda _row: ()
    if len(positions) == 1:
        only = positions[0]
        return lambda row: (row[only],)
    return operator.itemgetter(*positions)


def _typed(
    row: Sequence[Any],
    index: Mapping[str, int],
    convert: Sequence[Callable[[Any], Any] | None],
    name: str,
) -> Any:
    i = index.get(name)
    if i is None:
        return None
    raw, process = row[i], convert[i]
    return raw if raw is None or process is None else process(raw)


def _json_of(
    col: Column | None,
    convert: Callable[[Any], Any] | None,
    text: Callable[[Any], Any] | None,
) -> Callable[[Any], Any] | None:
    """A column's driver value (never ``None``) as JSON; ``None``: the driver's value passes
    as it is (the JSON renderer writes ids and dates as :func:`value` does)."""
    if text is not None:
        return text
    multichoice = col is not None and col.type is T.MULTICHOICE
    if convert is None and not multichoice:
        return None  # the driver's value is the column's value: str, int, float, bool, id, date
    memo: dict[Any, Any] = {}  # dates repeat across rows (created together, modified together)

    def as_json(raw: Any) -> Any:
        try:
            return memo[raw]
        except KeyError:
            done = memo[raw] = value(col, raw if convert is None else convert(raw))
            return done
        except TypeError:  # a value that cannot be a key
            return value(col, raw if convert is None else convert(raw))

    return as_json
