"""OData v4 query options, as Dataverse's Web API takes them, into the query AST.

``parse_query_options`` reads the already decoded query parameters of a collection request
(``$filter $select $orderby $top $count $expand $skiptoken``) and ``parse_filter`` one
``$filter``. Both check every name and value against the schema and raise
:class:`~fieldsync.errors.QueryError` saying what is wrong and where (``at character 17 of
$filter``), counting characters from 1.

``$filter`` (a hand-written tokenizer and a recursive-descent parser):

- ``eq ne gt ge lt le``, ``and``, ``or``, ``not``, parentheses; ``not`` binds tightest, then
  the comparisons, then ``and``, then ``or``. A bare boolean column is a condition
  (``signedoff``, ``not signedoff``), and so are ``true`` and ``false``.
- Literals: ``'text'`` (``''`` escapes a quote), integers, decimals (``12.5``, ``12.5m``,
  ``1e5``), ``true``, ``false``, ``null`` (``x eq null`` is ``null``, ``x ne null``
  ``not-null``), GUIDs bare or as ``guid'…'``, datetimes (``2024-01-01T00:00:00Z``) and dates
  (``2024-01-01``) unquoted, parameter aliases (``@p1``, given as query parameters).
- Values must suit the column: numbers for number and choice columns, GUIDs for lookups,
  unquoted dates for date columns, and so on. Bounds are the column type's, not the column's
  own minimum and maximum (a filter may ask for values no row can hold).
- ``contains``/``startswith``/``endswith`` on text columns become ``like`` ``%v%``,
  ``begins-with`` and ``ends-with``; their value is literal text, so ``%`` ``_`` ``[`` are
  escaped the Dataverse way (``[%]`` ``[_]`` ``[[]``): ``contains(name,'50%')`` finds "50%".
- Columns compare with columns of the same row (``firstname eq lastname``).
- Lookups are filtered by their logical name or as ``_x_value``.
- Single-valued navigation paths (``primarycontactid/fullname eq 'A'``) become link filters;
  a comparison with ``null`` through one also matches rows without a related row. Through a
  one-to-many navigation, ``nav/any(c: c/col eq 1)`` and ``nav/all(...)`` become link filters.
- The Dataverse query functions ``Microsoft.Dynamics.CRM.<Name>(PropertyName='c', …)`` that
  the AST has operators for: In, NotIn, Between, NotBetween, ContainValues,
  DoesNotContainValues, the user functions (EqualUserId …) and the date functions (Today,
  LastXDays, On …). Their values may be strings (as the SDK sends them:
  ``PropertyValues=["0","1"]``) or plain literals.

Navigation properties (``$expand`` and paths in ``$filter``):

- names are case-sensitive, as in Dataverse: a custom lookup's navigation property is its
  schema name (``new_AccountId``), a relationship's its schema name;
- single-valued: a lookup's logical name (``primarycontactid``); a lookup to several tables
  names its target: ``parentcustomerid_account``, ``ownerid_team`` (``owninguser`` and
  ``owningteam`` are the owner's);
- collection-valued: a one-to-many relationship's name from the schema, or
  ``<table>_<lookup>`` for any lookup that points at the table (``contact_parentcustomerid``
  on account: the contacts whose company is the account);
- many-to-many: the relationship's name on both tables (``teammembership_association``), in
  ``$expand`` only.

Not supported (a QueryError says so): ``$skip`` (page with ``Prefer: odata.maxpagesize``),
``$apply``, ``$search``, ``$compute``, ``$expand=*``, many-to-many paths in ``$filter``,
arithmetic, the ``in`` and ``has`` operators, the string and date functions other than the
three above, and the Dataverse query functions without an AST operator (LastWeek, Under, the
fiscal ones …).
"""

from __future__ import annotations

import datetime as dt
import difflib
import json
import math
import re
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any, Final, NoReturn, TypeAlias

from fieldsync.errors import FieldsyncError, QueryError
from fieldsync.limits import MAX_CONDITIONS, MAX_FILTER_LENGTH
from fieldsync.query.ast import (
    FALSE,
    TRUE,
    ColumnCompare,
    Condition,
    Link,
    LinkFilter,
    LinkType,
    Node,
    Op,
    Order,
    Query,
    all_of,
    any_of,
    is_in,
    negate,
)
from fieldsync.query.like import literal_like
from fieldsync.query.operators import (
    BETWEEN_TYPES,
    BY_ODATA_COMPARISON,
    BY_ODATA_FUNCTION,
    BY_ODATA_STRING_FUNCTION,
    DATES,
    ODATA_ALIASES,
    ODATA_UNSUPPORTED,
    TEXT,
    UNORDERABLE,
    Values,
    allows,
    family,
    same_family,
    spec,
)
from fieldsync.schema.model import (
    BIGINT_RANGE,
    DECIMAL_RANGE,
    FLOAT_RANGE,
    INT_RANGE,
    MONEY_RANGE,
    Column,
    ColumnType,
    RelationshipKind,
    Schema,
    Table,
)
from fieldsync.schema.values import make_coercer

T = ColumnType

MAX_TOP: Final = 100_000
MAX_DEPTH: Final = 50  # nested parentheses and any/all in one $filter
MAX_EXPAND_DEPTH: Final = 4  # $expand inside $expand
MAX_DAYS: Final = 100_000  # LastXDays and friends: about 270 years
MAX_HOURS: Final = MAX_DAYS * 24


# ---------------------------------------------------------------------------------------------
# Results


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


@dataclass(frozen=True, slots=True)
class ODataQuery:
    """A collection request's query options: the query, its expansions and the opaque
    ``$skiptoken`` of a next page."""

    query: Query
    expand: tuple[Expand, ...] = ()
    skiptoken: str | None = None


# ---------------------------------------------------------------------------------------------
# Query options

_OPTIONS: Final = frozenset(
    {"$filter", "$select", "$orderby", "$top", "$count", "$expand", "$skiptoken"}
)
_REFUSED: Final = {
    "$skip": "$skip is not supported, use paging: send Prefer: odata.maxpagesize=N and follow "
    "@odata.nextLink",
    "$apply": "$apply (aggregation) is not supported; use FetchXML for aggregates",
    "$search": "$search is not supported",
    "$compute": "$compute is not supported",
    "$levels": "$levels is not supported",
    "$deltatoken": "$deltatoken (change tracking) is not supported",
}


def parse_query_options(params: Mapping[str, str], table: Table, schema: Schema) -> ODataQuery:
    """The OData query options of a request on ``table``.

    Parameters that do not start with ``$`` are not options: the ones starting with ``@``
    are parameter aliases for ``$filter``, the rest (``fetchXml``, ``sql``…) are left to the
    caller. Option names are matched case-insensitively."""
    options: dict[str, str] = {}
    for key, value in params.items():
        if not key.startswith("$"):
            continue
        low = key.lower()
        if low in _REFUSED:
            raise QueryError(_REFUSED[low])
        if low not in _OPTIONS:
            known = ", ".join(sorted(_OPTIONS))
            raise QueryError(f"unknown query option {key!r}; the options are {known}")
        if low in options:
            raise QueryError(f"the query option {low} is given twice")
        options[low] = value
    aliases = {k: v for k, v in params.items() if k.startswith("@")}

    columns = None
    if "$select" in options:
        columns = _parse_select(options["$select"], table, "$select")
    node = None
    if "$filter" in options:
        node = parse_filter(options["$filter"], table, schema, aliases=aliases)
    orders: tuple[Order, ...] = ()
    if "$orderby" in options:
        orders = _parse_orderby(options["$orderby"], table, "$orderby")
    top = None
    if "$top" in options:
        top = _parse_top(options["$top"], "$top")
    count = False
    if "$count" in options:
        flag = options["$count"].strip().lower()
        if flag not in ("true", "false"):
            raise QueryError(f"$count must be true or false, got {_show(options['$count'])}")
        count = flag == "true"
    expand: tuple[Expand, ...] = ()
    if "$expand" in options:
        expand = _parse_expand(options["$expand"], table, schema, "$expand", 1, aliases)
    query = Query(
        table=table.name, columns=columns, filter=node, orders=orders, top=top, count=count
    )
    return ODataQuery(query=query, expand=expand, skiptoken=options.get("$skiptoken"))


def _fail(message: str, pos: int, where: str) -> NoReturn:
    raise QueryError(f"{message} at character {pos + 1} of {where}")


def _show(text: str, limit: int = 40) -> str:
    """``text`` quoted for a message (text with quotes in it shows as written)."""
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    return text if "'" in text or '"' in text else f"'{text}'"


def _raw(text: str, limit: int = 40) -> str:
    """A literal as written, shortened for a message."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _a(word: str) -> str:
    return ("an " if word[:1] in "aeiou" else "a ") + word


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_VALUE_NAME = re.compile(r"_([a-z][a-z0-9_]*)_value")


def _split(text: str, sep: str, where: str, offset: int = 0) -> list[tuple[str, int]]:
    """``text`` split at ``sep`` outside parentheses, brackets and quotes: (part, position)."""
    parts: list[tuple[str, int]] = []
    depth = 0
    start = 0
    i = 0
    opened: list[int] = []
    while i < len(text):
        ch = text[i]
        if ch in "'\"":
            end = _string_end(text, i)
            if end < 0:
                _fail("unterminated string", offset + i, where)
            i = end
            continue
        if ch in "([":
            depth += 1
            opened.append(i)
        elif ch in ")]":
            if depth == 0:
                _fail(f"unbalanced {ch!r}", offset + i, where)
            depth -= 1
            opened.pop()
        elif ch == sep and depth == 0:
            parts.append((text[start:i], offset + start))
            start = i + 1
        i += 1
    if depth:
        _fail(f"unclosed {text[opened[-1]]!r}", offset + opened[-1], where)
    parts.append((text[start:], offset + start))
    return parts


def _string_end(text: str, i: int) -> int:
    """The index after the string literal starting at ``text[i]``, or -1 if unterminated."""
    quote = text[i]
    j = i + 1
    while j < len(text):
        ch = text[j]
        if quote == '"' and ch == "\\":
            j += 2
            continue
        if ch == quote:
            if quote == "'" and j + 1 < len(text) and text[j + 1] == "'":
                j += 2
                continue
            return j + 1
        j += 1
    return -1


def _items(text: str, where: str) -> list[tuple[str, int]]:
    """Comma-separated items, stripped, with the position of each; none may be empty."""
    if not text.strip():
        _fail(f"{where} is empty", 0, where)
    out = []
    for part, pos in _split(text, ",", where):
        stripped = part.strip()
        lead = len(part) - len(part.lstrip())
        if not stripped:
            _fail("empty item", pos + lead, where)
        out.append((stripped, pos + lead))
    return out


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


def _unknown_column(table: Table, name: str) -> str:
    message = f"table {table.name!r} has no column {name!r}"
    close = difflib.get_close_matches(name.lower(), list(table.columns), n=1)
    return message + (f" (did you mean {close[0]!r}?)" if close else "")


def _column(table: Table, name: str, pos: int, where: str) -> Column:
    if "/" in name:
        _fail(f"{name!r}: paths through navigation properties are not supported here", pos, where)
    col = resolve_column(table, name)
    if col is None:
        _fail(_unknown_column(table, name), pos, where)
    return col


def _parse_select(text: str, table: Table, where: str) -> tuple[str, ...] | None:
    names: list[str] = []
    for item, pos in _items(text, where):
        if item == "*":
            return None
        if "/" not in item and not _NAME.fullmatch(item):
            _fail(f"{_show(item)} is not a column name", pos, where)
        if "/" in item:
            _fail(f"{item!r}: select related columns with $expand", pos, where)
        names.append(_column(table, item, pos, where).name)
    return tuple(dict.fromkeys(names))


_ORDER_ITEM = re.compile(r"(\S+)(?:\s+(\S+))?")


def _parse_orderby(text: str, table: Table, where: str) -> tuple[Order, ...]:
    orders = []
    for item, pos in _items(text, where):
        m = _ORDER_ITEM.fullmatch(item)
        if m is None:
            _fail(
                f"expected 'column', 'column asc' or 'column desc', got {_show(item)}", pos, where
            )
        name, direction = m.group(1), m.group(2)
        if "/" in name:
            _fail(f"{name!r}: ordering by a related table's column is not supported", pos, where)
        if not _NAME.fullmatch(name):
            _fail(f"{_show(name)} is not a column name", pos, where)
        col = _column(table, name, pos, where)
        if col.type in UNORDERABLE:
            _fail(f"cannot order by the {col.type.value} column {col.name!r}", pos, where)
        descending = False
        if direction is not None:
            if direction.lower() not in ("asc", "desc"):
                _fail(f"expected asc or desc, got {_show(direction)}", pos + m.start(2), where)
            descending = direction.lower() == "desc"
        orders.append(Order(col.name, descending))
    return tuple(orders)


def _parse_top(text: str, where: str) -> int:
    stripped = text.strip()
    if not re.fullmatch(r"\d{1,9}", stripped) or not 1 <= int(stripped) <= MAX_TOP:
        raise QueryError(f"{where} must be a whole number from 1 to {MAX_TOP}, got {_show(text)}")
    return int(stripped)


# ---------------------------------------------------------------------------------------------
# Navigation properties


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
        raise QueryError(f"{col.name!r} is {_a(col.type.value)} column, not a navigation property")
    raise QueryError(
        f"table {table.name!r} has no navigation property {name!r}; single-valued ones are "
        "named after the lookup (primarycontactid, parentcustomerid_account), collection-valued "
        "ones after the referencing table and lookup (contact_parentcustomerid)"
    )


_EXPAND_ITEM = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:\((.*)\))?", re.DOTALL)
_EXPAND_OPTION = re.compile(r"\s*(\$?[A-Za-z]+)\s*=(.*)", re.DOTALL)


def _parse_expand(
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
    for item, pos in _items(text, where):
        if item == "*":
            _fail("$expand=* is not supported; name the navigation properties", pos, where)
        m = _EXPAND_ITEM.fullmatch(item)
        if m is None:
            if "/" in item:
                _fail(f"{_show(item)}: expand one navigation property at a time", pos, where)
            _fail(f"expected a navigation property, got {_show(item)}", pos, where)
        try:
            nav = resolve_navigation(table, schema, m.group(1), many_to_many=True)
        except QueryError as e:
            _fail(e.message, pos, where)
        if nav.name in seen:
            _fail(f"{nav.name!r} is expanded twice", pos, where)
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
    for part, pos in _split(text, ";", where, offset):
        if not part.strip():
            continue
        m = _EXPAND_OPTION.fullmatch(part)
        if m is None:
            _fail(f"expected $option=value, got {_show(part.strip())}", pos, where)
        key, value = m.group(1).lower(), m.group(2)
        key = key if key.startswith("$") else "$" + key
        inner = f"{key} of $expand {nav.name}"
        if key in seen:
            _fail(f"{key} is given twice", pos, where)
        seen.add(key)
        if key in ("$filter", "$orderby", "$top") and not nav.collection:
            _fail(
                f"{key} applies to collection-valued navigation properties; "
                f"{nav.name!r} is single-valued",
                pos,
                where,
            )
        if key == "$select":
            expand = replace(expand, columns=_parse_select(value, target, inner))
        elif key == "$filter":
            node = parse_filter(value, target, schema, aliases=aliases, where=inner)
            expand = replace(expand, filter=node)
        elif key == "$orderby":
            expand = replace(expand, orders=_parse_orderby(value, target, inner))
        elif key == "$top":
            expand = replace(expand, top=_parse_top(value, inner))
        elif key == "$expand":
            nested = _parse_expand(value, target, schema, inner, depth + 1, aliases)
            expand = replace(expand, expand=nested)
        else:
            _fail(f"{m.group(1)} is not supported inside $expand", pos, where)
    return expand


# ---------------------------------------------------------------------------------------------
# $filter: tokens


@dataclass(frozen=True, slots=True)
class _Tok:
    """kind: ident alias string jstring int num guid datetime date bool null, a punctuation
    character, or eof. ``value`` is the parsed literal (``int``/``num`` keep their text)."""

    kind: str
    text: str
    pos: int
    value: Any = None


_HEX = "[0-9A-Fa-f]"
_GUID = re.compile(rf"{_HEX}{{8}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{12}}(?![\w-])")
_DATETIME = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,12})?)?(?:[Zz]|[+-]\d{2}:\d{2})?(?![\w:.])"
)
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}(?![\w:.-])")
_NUMBER = re.compile(r"-?\d{1,40}(\.\d{1,40})?([eE][+-]?\d{1,4})?([mMdDfFlL]?)(?![\w.])")
_IDENT = re.compile(r"[A-Za-z_$][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")
_ALIAS = re.compile(r"@[A-Za-z_][A-Za-z0-9_]*")
_JUNK = re.compile(r"[\w.:+-]+")
_PUNCT: Final = frozenset("(),[]=/:")
_SPACE: Final = frozenset(" \t\r\n")
_TYPED_PREFIXES: Final = frozenset({"guid", "datetime", "datetimeoffset", "date"})
LITERALS: Final = frozenset(
    {"string", "jstring", "int", "num", "guid", "datetime", "date", "bool", "null"}
)


def _literal(kind: str, text: str, body: str, pos: int, where: str) -> _Tok:
    """A guid, datetime, date or number token from its spelling ``body``."""
    try:
        if kind == "guid":
            return _Tok("guid", text, pos, uuid.UUID(body))
        if kind == "datetime":
            return _Tok("datetime", text, pos, dt.datetime.fromisoformat(body.upper()))
        if kind == "date":
            return _Tok("date", text, pos, dt.date.fromisoformat(body))
    except ValueError:
        _fail(f"{_show(text)} is not a valid {kind}", pos, where)
    m = _NUMBER.fullmatch(body)
    assert m is not None
    fraction, exponent, suffix = m.group(1), m.group(2), m.group(3).lower()
    number = body[: len(body) - len(suffix)] if suffix else body
    integral = not fraction and not exponent and suffix in ("", "l")
    return _Tok("int" if integral else "num", text, pos, number)


def _tokenize(text: str, where: str) -> list[_Tok]:
    tokens: list[_Tok] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch in _SPACE:
            i += 1
            continue
        if ch in _PUNCT:
            tokens.append(_Tok(ch, ch, i))
            i += 1
            continue
        if ch in "'\"":
            end = _string_end(text, i)
            if end < 0:
                _fail("unterminated string", i, where)
            raw = text[i:end]
            if ch == "'":
                tokens.append(_Tok("string", raw, i, raw[1:-1].replace("''", "'")))
            else:
                try:
                    value = json.loads(raw)
                except ValueError:
                    _fail(f"{_show(raw)} is not a valid double-quoted string", i, where)
                tokens.append(_Tok("jstring", raw, i, value))
            i = end
            continue
        m = _GUID.match(text, i)
        kind = "guid"
        if m is None:
            m, kind = _DATETIME.match(text, i), "datetime"
        if m is None:
            m, kind = _DATE.match(text, i), "date"
        if m is None:
            m, kind = _NUMBER.match(text, i), "number"
        if m is not None:
            tokens.append(_literal(kind, m.group(), m.group(), i, where))
            i = m.end()
            continue
        m = _IDENT.match(text, i)
        if m is not None:
            word = m.group()
            end = m.end()
            if word.lower() in _TYPED_PREFIXES and end < n and text[end] == "'":
                close = _string_end(text, end)
                if close < 0:
                    _fail("unterminated string", end, where)
                body = text[end + 1 : close - 1]
                kind = "datetime" if word.lower() == "datetimeoffset" else word.lower()
                tokens.append(_literal(kind, text[i:close], body.strip(), i, where))
                i = close
                continue
            tokens.append(_Tok("ident", word, i))
            i = end
            continue
        m = _ALIAS.match(text, i)
        if m is not None:
            tokens.append(_Tok("alias", m.group(), i))
            i = m.end()
            continue
        junk = _JUNK.match(text, i)
        if junk is not None and ch.isdigit():
            _fail(f"{_show(junk.group())} is not a valid number, date or GUID", i, where)
        _fail(f"unexpected character {ch!r}", i, where)
    tokens.append(_Tok("eof", "", n))
    return tokens


# ---------------------------------------------------------------------------------------------
# $filter: parser

_COMPARE: Final = BY_ODATA_COMPARISON
_FLIP: Final = {Op.EQ: Op.EQ, Op.NE: Op.NE, Op.GT: Op.LT, Op.GE: Op.LE, Op.LT: Op.GT, Op.LE: Op.GE}
_REFUSED_OPERATORS: Final = {
    "in": "the 'in' operator is not supported; use Microsoft.Dynamics.CRM.In(PropertyName='c',"
    "PropertyValues=['a','b'])",
    "has": "the 'has' operator is not supported",
    **dict.fromkeys(
        ("add", "sub", "mul", "div", "divby", "mod"), "arithmetic is not supported in $filter"
    ),
}
_KEYWORDS: Final = frozenset({"and", "or", "not", *_COMPARE, *_REFUSED_OPERATORS})
_STRING_FUNCTIONS: Final = BY_ODATA_STRING_FUNCTION
_ODATA_FUNCTIONS: Final = frozenset(
    {
        "tolower", "toupper", "trim", "length", "indexof", "substring", "concat",
        "matchespattern", "year", "month", "day", "hour", "minute", "second",
        "fractionalseconds", "totalseconds", "date", "time", "now", "maxdatetime",
        "mindatetime", "totaloffsetminutes", "round", "floor", "ceiling", "cast", "isof",
        "hassubset", "hassubsequence", "geo.distance", "geo.length", "geo.intersects",
    }
)  # fmt: skip
CRM_PREFIX: Final = "microsoft.dynamics.crm."

_SHAPES: Final = {
    Values.LIST: "list",
    Values.CHOICES: "choices",
    Values.NONE: "date",
    Values.DAYS: "days",
    Values.HOURS: "hours",
    Values.DAY: "day",
}
# Dataverse query functions: lower-case name -> (shape, operator)
_CRM_FUNCTIONS: Final[dict[str, tuple[str, Op | None]]] = {
    **{
        name: ("user" if spec(op).user else _SHAPES[spec(op).values], op)
        for name, op in BY_ODATA_FUNCTION.items()
    },
    **ODATA_ALIASES,
}
_CRM_LATER: Final = ODATA_UNSUPPORTED
_SHAPE_PARAMS: Final = {
    "list": ("propertyname", "propertyvalues"),
    "range": ("propertyname", "propertyvalues"),
    "choices": ("propertyname", "propertyvalues"),
    "user": ("propertyname",),
    "date": ("propertyname",),
    "week": ("propertyname",),
    "days": ("propertyname", "propertyvalue"),
    "hours": ("propertyname", "propertyvalue"),
    "day": ("propertyname", "propertyvalue"),
}
_PARAM_SPELLING: Final = {
    "propertyname": "PropertyName",
    "propertyvalue": "PropertyValue",
    "propertyvalues": "PropertyValues",
}


@dataclass(frozen=True, slots=True)
class _Scope:
    """The table names refer to; inside ``any``/``all`` paths start with ``var``."""

    table: Table
    var: str | None = None


@dataclass(frozen=True, slots=True)
class _Hop:
    lookup: Column  # on the table before the hop
    target: Table


@dataclass(frozen=True, slots=True)
class _ColRef:
    column: Column
    table: Table  # the column's table
    hops: tuple[_Hop, ...]  # single-valued navigations from the scope's table
    pos: int
    name: str


@dataclass(frozen=True, slots=True)
class _Lit:
    tok: _Tok


@dataclass(frozen=True, slots=True)
class _Cond:
    """An operand that is already a condition (``nav/any(...)``)."""

    node: Node
    pos: int


@dataclass(frozen=True, slots=True)
class _List:
    items: tuple[_Tok, ...]
    pos: int


_Operand: TypeAlias = _ColRef | _Lit | _Cond
_Param: TypeAlias = _Tok | _List


def parse_filter(
    text: str,
    table: Table,
    schema: Schema,
    *,
    aliases: Mapping[str, str] | None = None,
    where: str = "$filter",
) -> Node:
    """One ``$filter`` on ``table`` as a filter node. ``aliases`` are the request's
    parameter aliases (``{"@p1": "'x'"}``); ``where`` names the text in error messages."""
    if len(text) > MAX_FILTER_LENGTH:
        raise QueryError(f"{where} is longer than {MAX_FILTER_LENGTH} characters")
    return _Parser(text, schema, where, aliases or {}).parse(table)


def _negate(node: Node) -> Node:
    if isinstance(node, LinkFilter):
        flipped = {
            LinkType.ANY: LinkType.NOT_ANY,
            LinkType.NOT_ANY: LinkType.ANY,
            LinkType.ALL: LinkType.NOT_ALL,
            LinkType.NOT_ALL: LinkType.ALL,
        }.get(node.link.type)
        if flipped is not None:
            return LinkFilter(replace(node.link, type=flipped))
    return negate(node)


def _check_text(value: str) -> str | None:
    """Why ``value`` cannot be stored as text (None if it can)."""
    if "\x00" in value:
        return "text cannot contain NUL characters"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "text must be valid Unicode (no lone surrogates)"
    return None


class _Parser:
    def __init__(self, text: str, schema: Schema, where: str, aliases: Mapping[str, str]):
        self.where = where
        self.schema = schema
        self.aliases = aliases
        self.tokens = _tokenize(text, where)
        self.i = 0
        self.depth = 0
        self.conditions = 0
        self.coercers: dict[tuple[str, str], Callable[[Any], Any]] = {}

    # -- helpers

    def fail(self, message: str, pos: int) -> NoReturn:
        _fail(message, pos, self.where)

    def peek(self, ahead: int = 0) -> _Tok:
        return self.tokens[min(self.i + ahead, len(self.tokens) - 1)]

    def take(self) -> _Tok:
        tok = self.tokens[self.i]
        if tok.kind != "eof":
            self.i += 1
        return tok

    def describe(self, tok: _Tok) -> str:
        return f"the end of {self.where}" if tok.kind == "eof" else _show(tok.text)

    def expect(self, kind: str, what: str) -> _Tok:
        tok = self.peek()
        if tok.kind != kind:
            self.fail(f"expected {what}, got {self.describe(tok)}", tok.pos)
        return self.take()

    @staticmethod
    def is_word(tok: _Tok, *words: str) -> bool:
        return tok.kind == "ident" and tok.text.lower() in words

    def enter(self, pos: int) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            self.fail(f"the filter is nested more than {MAX_DEPTH} levels deep", pos)

    def condition(self, pos: int) -> None:
        self.conditions += 1
        if self.conditions > MAX_CONDITIONS:
            self.fail(f"{self.where} has more than {MAX_CONDITIONS} conditions", pos)

    # -- grammar

    def parse(self, table: Table) -> Node:
        if self.peek().kind == "eof":
            self.fail(f"{self.where} is empty", 0)
        node = self.disjunction(_Scope(table))
        tok = self.peek()
        if tok.kind != "eof":
            self.fail(f"expected 'and', 'or' or the end, got {self.describe(tok)}", tok.pos)
        return node

    def disjunction(self, scope: _Scope) -> Node:
        items = [self.conjunction(scope)]
        while self.is_word(self.peek(), "or"):
            self.take()
            items.append(self.conjunction(scope))
        return any_of(items)

    def conjunction(self, scope: _Scope) -> Node:
        items = [self.unary(scope)]
        while self.is_word(self.peek(), "and"):
            self.take()
            items.append(self.unary(scope))
        return all_of(items)

    def unary(self, scope: _Scope) -> Node:
        nots = 0
        while self.is_word(self.peek(), "not"):
            self.take()
            nots += 1
        node = self.primary(scope)
        for _ in range(nots):
            node = _negate(node)
        return node

    def primary(self, scope: _Scope) -> Node:
        tok = self.peek()
        if tok.kind == "(":
            self.take()
            self.enter(tok.pos)
            node = self.disjunction(scope)
            self.expect(")", "')'")
            self.depth -= 1
            return node
        self.condition(tok.pos)
        if tok.kind == "ident" and self.peek(1).kind == "(":
            return self.call(scope)
        left = self.operand(scope)
        nxt = self.peek()
        if nxt.kind == "ident" and nxt.text.lower() in _COMPARE:
            self.take()
            right = self.operand(scope)
            return self.compare(left, nxt, right)
        if nxt.kind == "ident" and nxt.text.lower() in _REFUSED_OPERATORS:
            self.fail(_REFUSED_OPERATORS[nxt.text.lower()], nxt.pos)
        if isinstance(left, _Cond):
            return left.node
        if isinstance(left, _ColRef) and left.column.type is T.BOOLEAN:
            return self.wrap(Condition(left.column.name, Op.EQ, True), left.hops)
        if isinstance(left, _Lit) and left.tok.kind == "bool":
            return TRUE if left.tok.value else FALSE
        after = left.name if isinstance(left, _ColRef) else left.tok.text
        self.fail(
            f"expected a comparison operator (eq, ne, gt, ge, lt, le) after {_show(after)}, "
            f"got {self.describe(nxt)}",
            nxt.pos,
        )

    def operand(self, scope: _Scope) -> _Operand:
        tok = self.peek()
        if tok.kind == "ident" and tok.text.lower() not in ("true", "false", "null"):
            if tok.text.lower() in _KEYWORDS:
                self.fail(f"expected a column or a value, got {_show(tok.text)}", tok.pos)
            if self.peek(1).kind == "(":
                self.fail(f"{tok.text}() cannot be used as a value", tok.pos)
            return self.path(scope)
        if tok.kind in ("ident", "alias") or tok.kind in LITERALS:
            value = self.value()
            if isinstance(value, _List):
                self.fail("a list is not a value here", value.pos)
            return _Lit(value)
        self.fail(f"expected a column or a value, got {self.describe(tok)}", tok.pos)

    def value(self) -> _Param:
        """A literal, a bracketed list of literals, or a parameter alias for one."""
        tok = self.peek()
        if tok.kind == "alias":
            return self.alias(self.take())
        if tok.kind == "[":
            self.take()
            items: list[_Tok] = []
            if self.peek().kind != "]":
                while True:
                    item = self.value()
                    if isinstance(item, _List):
                        self.fail("lists cannot be nested", item.pos)
                    items.append(item)
                    if self.peek().kind != ",":
                        break
                    self.take()
            self.expect("]", "',' or ']'")
            return _List(tuple(items), tok.pos)
        if tok.kind in LITERALS:
            return self.take()
        if self.is_word(tok, "true", "false"):
            self.take()
            return _Tok("bool", tok.text, tok.pos, tok.text.lower() == "true")
        if self.is_word(tok, "null"):
            self.take()
            return _Tok("null", tok.text, tok.pos)
        self.fail(f"expected a value, got {self.describe(tok)}", tok.pos)

    def alias(self, tok: _Tok) -> _Param:
        text = self.aliases.get(tok.text)
        if text is None:
            self.fail(f"the parameter alias {tok.text} is not defined", tok.pos)
        sub = _Parser(text, self.schema, f"parameter alias {tok.text}", {})
        if sub.peek().kind == "eof":
            self.fail(f"the parameter alias {tok.text} is empty", tok.pos)
        value = sub.value()
        sub.expect("eof", "the end")
        # errors about the value point at where the alias is used
        if isinstance(value, _List):
            return _List(tuple(replace(t, pos=tok.pos) for t in value.items), tok.pos)
        return replace(value, pos=tok.pos)

    def path(self, scope: _Scope) -> _ColRef | _Cond:
        segments = [self.expect("ident", "a column")]
        while self.peek().kind == "/":
            self.take()
            segment = self.expect("ident", "a column or navigation property after '/'")
            segments.append(segment)
            if self.is_word(segment, "any", "all") and self.peek().kind == "(":
                break
        index = 0
        first = segments[0]
        if scope.var is not None:
            if first.text != scope.var:
                self.fail(
                    f"inside any/all, write columns as {scope.var}/column "
                    "(columns of the outer table are not supported there)",
                    first.pos,
                )
            index = 1
        elif first.text == "$it":
            index = 1
        if index >= len(segments):
            self.fail(f"expected a column after {first.text!r}", first.pos)
        table = scope.table
        hops: list[_Hop] = []
        while True:
            seg = segments[index]
            last = index == len(segments) - 1
            if last and self.is_word(seg, "any", "all") and self.peek().kind == "(" and index:
                self.fail(f"{seg.text}() needs a collection-valued navigation property", seg.pos)
            if last:
                col = resolve_column(table, seg.text)
                if col is None:
                    self.fail(_unknown_column(table, seg.text), seg.pos)
                if hops and col.name == table.primary_id:
                    # nav/<its id> is the lookup itself
                    col = hops.pop().lookup
                    table = hops[-1].target if hops else scope.table
                return _ColRef(col, table, tuple(hops), seg.pos, seg.text)
            try:
                nav = resolve_navigation(table, self.schema, seg.text)
            except QueryError as e:
                self.fail(e.message, seg.pos)
            nxt = segments[index + 1]
            lambda_next = index + 1 == len(segments) - 1 and self.is_word(nxt, "any", "all")
            if nav.collection:
                if not (lambda_next and self.peek().kind == "("):
                    self.fail(
                        f"{nav.name!r} is collection-valued: filter it with "
                        f"{nav.name}/any(x: x/column eq …) or all(…)",
                        seg.pos,
                    )
                node = self.lambda_(table, nav, nxt)
                return _Cond(self.wrap(node, hops), seg.pos)
            hops.append(_Hop(nav.column, nav.target))
            table = nav.target
            index += 1

    def lambda_(self, table: Table, nav: Navigation, word: _Tok) -> Node:
        kind = LinkType.ANY if word.text.lower() == "any" else LinkType.ALL
        open_ = self.expect("(", "'('")
        inner: Node | None = None
        if self.peek().kind == ")":
            if kind is LinkType.ALL:
                self.fail("all() needs a condition: all(x: x/column eq …)", self.peek().pos)
        else:
            var = self.expect("ident", "a range variable (any(x: x/column eq …))")
            self.expect(":", "':' after the range variable")
            self.enter(open_.pos)
            inner = self.disjunction(_Scope(nav.target, var.text))
            self.depth -= 1
        self.expect(")", "')'")
        link = Link(
            table=nav.target.name,
            from_column=nav.column.name,
            to_column=table.primary_id,
            type=kind,
            filter=inner,
        )
        return LinkFilter(link)

    def wrap(self, node: Node, hops: Iterable[_Hop], *, null_missing: bool = False) -> Node:
        """``node`` (on the last hop's table) as a filter on the first table. With
        ``null_missing`` a row without a related row matches too (``nav/x eq null``)."""
        for hop in reversed(tuple(hops)):
            link = Link(
                table=hop.target.name,
                from_column=hop.target.primary_id,
                to_column=hop.lookup.name,
                type=LinkType.ANY,
                filter=node,
            )
            node = LinkFilter(link)
            if null_missing:
                node = any_of([Condition(hop.lookup.name, Op.NULL), node])
        return node

    # -- comparisons

    def compare(self, left: _Operand, op_tok: _Tok, right: _Operand) -> Node:
        op = _COMPARE[op_tok.text.lower()]
        if isinstance(left, _Lit) and isinstance(right, _ColRef):
            left, right, op = right, left, _FLIP[op]
        for side in (left, right):
            if isinstance(side, _Cond):
                self.fail("any()/all() is a condition and cannot be compared", side.pos)
        if isinstance(left, _ColRef) and isinstance(right, _ColRef):
            return self.column_compare(left, op, right)
        if not isinstance(left, _ColRef):
            self.fail("a comparison needs a column on one side", op_tok.pos)
        assert isinstance(right, _Lit)
        col, tok = left.column, right.tok
        if tok.kind == "null":
            if op not in (Op.EQ, Op.NE):
                self.fail(f"only eq and ne compare with null, not {op_tok.text}", op_tok.pos)
            null_op = Op.NULL if op is Op.EQ else Op.NOT_NULL
            return self.wrap(Condition(col.name, null_op), left.hops, null_missing=op is Op.EQ)
        self.check_op(left, op, op_tok)
        value = self.convert(left.table, col, tok, lenient=False)
        return self.wrap(Condition(col.name, op, value), left.hops)

    def check_op(self, ref: _ColRef, op: Op, op_tok: _Tok) -> None:
        col = ref.column
        t = col.type
        if t in (T.FILE, T.IMAGE):
            self.fail(f"the {t.value} column {col.name!r} only compares with null", ref.pos)
        if t is T.MULTICHOICE:
            self.fail(
                f"the multichoice column {col.name!r} compares with null or with "
                "Microsoft.Dynamics.CRM.ContainValues / DoesNotContainValues",
                ref.pos,
            )
        if not allows(op, t):
            hint = "; lookups compare with eq, ne and In" if t is T.LOOKUP else ""
            self.fail(
                f"{op_tok.text} does not apply to the {t.value} column {col.name!r}{hint}",
                op_tok.pos,
            )

    def column_compare(self, left: _ColRef, op: Op, right: _ColRef) -> Node:
        if left.hops or right.hops:
            hopped = left if left.hops else right
            self.fail(
                "comparing columns through navigation properties is not supported", hopped.pos
            )
        a, b = left.column, right.column
        for ref in (left, right):
            if family(ref.column.type) is None:
                self.fail(
                    f"the {ref.column.type.value} column {ref.column.name!r} cannot be "
                    "compared with another column",
                    ref.pos,
                )
        if not same_family(a.type, b.type):
            self.fail(
                f"cannot compare the {a.type.value} column {a.name!r} with the {b.type.value} "
                f"column {b.name!r}",
                right.pos,
            )
        if not allows(op, a.type) or not allows(op, b.type):
            self.fail(f"{op.value} does not apply to {a.type.value} columns", left.pos)
        return ColumnCompare(a.name, op, b.name)

    # -- values

    def coerce(self, table: Table, col: Column, value: Any, pos: int) -> Any:
        key = (table.name, col.name)
        coercer = self.coercers.get(key)
        if coercer is None:
            coercer = make_coercer(table, replace(col, min_value=None, max_value=None))
            self.coercers[key] = coercer
        try:
            return coercer(value)
        except FieldsyncError as e:
            self.fail(e.message, pos)

    def convert(self, table: Table, col: Column, tok: _Tok, *, lenient: bool) -> Any:
        """The literal ``tok`` as a value of ``col``. ``lenient`` (query-function values)
        takes a string spelling any literal, as Dataverse's functions take strings."""
        t = col.type
        kind = tok.kind
        if lenient and kind in ("string", "jstring") and t not in TEXT:
            tok = self.respell(tok)
            kind = tok.kind

        def wrong(expected: str) -> NoReturn:
            hint = ""
            if kind == "string" and t not in TEXT and not lenient:
                hint = " (numbers, GUIDs, dates and true/false are written without quotes)"
            if kind == "jstring" and t in TEXT:
                hint = " (strings take single quotes)"
            self.fail(
                f"{table.name}.{col.name} is {_a(t.value)} column: expected {expected}, "
                f"got {_raw(tok.text)}{hint}",
                tok.pos,
            )

        if t in TEXT:
            if kind != "string" and not (lenient and kind == "jstring"):
                wrong("a string in single quotes")
            problem = _check_text(tok.value)
            if problem is not None:
                self.fail(problem, tok.pos)
            return tok.value
        if t in (T.INTEGER, T.BIGINT, T.CHOICE, T.MULTICHOICE):
            if kind != "int":
                wrong("a whole number" if t in (T.INTEGER, T.BIGINT) else "a choice value")
            lo, hi = BIGINT_RANGE if t is T.BIGINT else INT_RANGE
            number = int(tok.value)
            if not lo <= number <= hi:
                self.fail(f"{number} is outside {lo} .. {hi}", tok.pos)
            return number
        if t in (T.DECIMAL, T.MONEY):
            if kind not in ("int", "num"):
                wrong("a number")
            lo_d, hi_d = DECIMAL_RANGE if t is T.DECIMAL else MONEY_RANGE
            dec = Decimal(tok.value)
            if not lo_d <= dec <= hi_d:
                self.fail(f"{tok.value} is outside {lo_d} .. {hi_d}", tok.pos)
            return dec
        if t is T.FLOAT:
            if kind not in ("int", "num"):
                wrong("a number")
            number_f = float(tok.value)
            lo_f, hi_f = FLOAT_RANGE
            if not math.isfinite(number_f) or not lo_f <= number_f <= hi_f:
                self.fail(f"{tok.value} is outside {lo_f:.0f} .. {hi_f:.0f}", tok.pos)
            return number_f
        if t is T.BOOLEAN:
            if kind != "bool":
                wrong("true or false")
            return tok.value
        if t is T.DATETIME:
            if kind == "date":
                d = tok.value
                return self.coerce(table, col, dt.datetime(d.year, d.month, d.day), tok.pos)
            if kind != "datetime":
                wrong("a date and time such as 2024-01-01T00:00:00Z")
            return self.coerce(table, col, tok.value, tok.pos)
        if t is T.DATE:
            if kind != "date":
                wrong("a date such as 2024-01-01")
            return self.coerce(table, col, tok.value, tok.pos)
        if t in (T.LOOKUP, T.UNIQUEIDENTIFIER):
            if kind != "guid":
                wrong("a GUID")
            return tok.value
        wrong("null")  # file and image columns

    def respell(self, tok: _Tok) -> _Tok:
        """A string such as ``"12"`` as the literal it spells, or ``tok`` unchanged."""
        body = str(tok.value).strip()
        if body.lower() in ("true", "false"):
            return _Tok("bool", tok.text, tok.pos, body.lower() == "true")
        if body.startswith("{") and body.endswith("}"):
            body = body[1:-1]  # {GUID}
        for kind, pattern in (
            ("guid", _GUID),
            ("datetime", _DATETIME),
            ("date", _DATE),
            ("number", _NUMBER),
        ):
            if pattern.fullmatch(body):
                return _literal(kind, tok.text, body, tok.pos, self.where)
        return tok

    # -- functions

    def call(self, scope: _Scope) -> Node:
        name = self.take()
        low = name.text.lower()
        if low in _STRING_FUNCTIONS:
            return self.string_function(scope, name, _STRING_FUNCTIONS[low])
        if low.startswith(CRM_PREFIX):
            return self.crm_function(scope, name, low[len(CRM_PREFIX) :])
        if low in _ODATA_FUNCTIONS:
            self.fail(f"the function {name.text}() is not supported", name.pos)
        if low in ("any", "all"):
            self.fail(f"{name.text}() follows a navigation property: nav/{low}(x: …)", name.pos)
        if low in _CRM_FUNCTIONS or low in _CRM_LATER:
            self.fail(
                f"write Dataverse query functions in full: Microsoft.Dynamics.CRM.{name.text}",
                name.pos,
            )
        self.fail(f"unknown function {name.text}()", name.pos)

    def string_function(self, scope: _Scope, name: _Tok, op: Op) -> Node:
        fname = name.text.lower()
        self.expect("(", "'('")
        arg = self.operand(scope)
        if not isinstance(arg, _ColRef):
            pos = arg.tok.pos if isinstance(arg, _Lit) else arg.pos
            self.fail(f"{fname}() needs a column as its first argument", pos)
        self.expect(",", "','")
        tok = self.value()
        if isinstance(tok, _List):
            self.fail(f"{fname}() needs a string as its second argument", tok.pos)
        self.expect(")", "')'")
        col = arg.column
        if col.type not in TEXT:
            self.fail(
                f"{fname}() applies to text columns; {col.name!r} is {_a(col.type.value)} column",
                arg.pos,
            )
        if tok.kind != "string":
            self.fail(f"{fname}() needs a string in single quotes, got {_raw(tok.text)}", tok.pos)
        text = self.convert(arg.table, col, tok, lenient=False)
        # the value is literal text; the operators take Dataverse patterns
        pattern = f"%{literal_like(text)}%" if op is Op.LIKE else literal_like(text)
        node = self.wrap(Condition(col.name, op, pattern), arg.hops)
        nxt = self.peek()
        if nxt.kind == "ident" and nxt.text.lower() in _COMPARE:
            self.take()
            other = self.value()
            if nxt.text.lower() not in ("eq", "ne") or not (
                isinstance(other, _Tok) and other.kind == "bool"
            ):
                self.fail(f"{fname}() can only be compared with eq/ne true or false", nxt.pos)
            if (nxt.text.lower() == "eq") != other.value:
                node = _negate(node)
        return node

    def params(self) -> dict[str, tuple[_Tok, _Param]]:
        self.expect("(", "'('")
        out: dict[str, tuple[_Tok, _Param]] = {}
        if self.peek().kind == ")":
            self.take()
            return out
        while True:
            key = self.expect("ident", "a parameter such as PropertyName=")
            self.expect("=", f"'=' after {key.text}")
            value = self.value()
            if key.text.lower() in out:
                self.fail(f"the parameter {key.text} is given twice", key.pos)
            out[key.text.lower()] = (key, value)
            if self.peek().kind != ",":
                break
            self.take()
        self.expect(")", "',' or ')'")
        return out

    def crm_function(self, scope: _Scope, name: _Tok, fname: str) -> Node:
        found = _CRM_FUNCTIONS.get(fname)
        if found is None:
            if fname in _CRM_LATER:
                self.fail(f"{name.text} is not supported yet", name.pos)
            self.fail(f"unknown function {name.text}", name.pos)
        shape, op = found
        params = self.params()
        wanted = _SHAPE_PARAMS[shape]
        for key, (key_tok, _) in params.items():
            if key not in wanted:
                takes = ", ".join(_PARAM_SPELLING[w] for w in wanted)
                self.fail(f"{name.text} takes {takes}, not {key_tok.text}", key_tok.pos)
        for key in wanted:
            if key not in params:
                self.fail(f"{name.text} needs {_PARAM_SPELLING[key]}", name.pos)
        prop = params["propertyname"][1]
        if not (isinstance(prop, _Tok) and prop.kind in ("string", "jstring")):
            pos = prop.pos
            self.fail("PropertyName must name a column as a string ('name')", pos)
        table = scope.table
        col = resolve_column(table, prop.value)
        if col is None:
            self.fail(_unknown_column(table, prop.value), prop.pos)
        column = col
        t = col.type

        def needs(types: frozenset[T], what: str) -> None:
            if t not in types:
                self.fail(
                    f"{name.text} applies to {what}; {column.name!r} is {_a(t.value)} column",
                    prop.pos,
                )

        if shape in ("list", "range", "choices"):
            values = params["propertyvalues"][1]
            if not isinstance(values, _List):
                self.fail("PropertyValues must be a list: ['a','b']", values.pos)
            if not values.items:
                self.fail("PropertyValues must list at least one value", values.pos)
            if shape == "list":
                needs(spec(Op.IN).types, "columns that compare with eq")
            elif shape == "range":
                needs(BETWEEN_TYPES, "number and date columns")
                if len(values.items) != 2:
                    self.fail(f"{name.text} needs two PropertyValues, from and to", values.pos)
            else:
                needs(spec(Op.CONTAIN_VALUES).types, "multichoice columns")
            converted = []
            for item in values.items:
                if item.kind == "null":
                    self.fail("null is not a value here; compare with eq null", item.pos)
                converted.append(self.convert(table, col, item, lenient=True))
            unique = tuple(dict.fromkeys(converted))
            if shape == "range":
                lo, hi = converted
                node = all_of([Condition(col.name, Op.GE, lo), Condition(col.name, Op.LE, hi)])
                return node if fname == "between" else negate(node)
            if shape == "choices":
                assert op is not None
                return Condition(col.name, op, tuple(sorted(unique)))
            if op is Op.IN:
                return is_in(col.name, unique)
            if len(unique) == 1:
                return Condition(col.name, Op.NE, unique[0])
            return Condition(col.name, Op.NOT_IN, unique)
        assert op is not None
        if shape == "user":
            if op is Op.EQ_USERLANGUAGE:
                needs(spec(op).types, "whole-number columns")
            else:
                targets = spec(op).targets
                fits = t is T.UNIQUEIDENTIFIER or (
                    t is T.LOOKUP and bool(targets.intersection(col.targets))
                )
                if not fits:
                    self.fail(
                        f"{name.text} applies to lookups to {' or '.join(sorted(targets))} "
                        f"(and id columns); {col.name!r} is not one",
                        prop.pos,
                    )
            return Condition(col.name, op)
        dated = spec(op).types
        needs(dated, "date and time columns" if dated == DATES else "date-and-time columns")
        if shape == "date":
            return Condition(col.name, op)
        if shape == "week":
            return Condition(col.name, op, 7)
        raw = params["propertyvalue"][1]
        if isinstance(raw, _List):
            self.fail("PropertyValue takes one value", raw.pos)
        tok = self.respell(raw) if raw.kind in ("string", "jstring") else raw
        if shape in ("days", "hours"):
            limit = MAX_DAYS if shape == "days" else MAX_HOURS
            if tok.kind != "int" or not 0 <= int(tok.value) <= limit:
                self.fail(
                    f"{name.text} needs a whole number of {shape} from 0 to {limit}, "
                    f"got {_raw(raw.text)}",
                    raw.pos,
                )
            return Condition(col.name, op, int(tok.value))
        day: dt.date
        if tok.kind == "date":
            day = tok.value
        elif tok.kind == "datetime":
            moment = tok.value
            if moment.tzinfo is not None:
                try:
                    moment = moment.astimezone(dt.UTC)
                except OverflowError:
                    self.fail(f"{_raw(raw.text)} is out of range", raw.pos)
            day = moment.date()
        else:
            self.fail(
                f"{name.text} needs a date such as '2024-01-01', got {_raw(raw.text)}", raw.pos
            )
        if not dt.date(1753, 1, 1) <= day <= dt.date(9999, 12, 30):
            self.fail(f"{day.isoformat()} is outside 1753-01-01 .. 9999-12-30", raw.pos)
        return Condition(col.name, op, day)
