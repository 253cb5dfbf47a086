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

The package, by concern: ``lexer`` (tokens, positions, splitting), ``names`` (columns and
navigation properties), ``options`` (``$select``, ``$orderby``, ``$top``), ``expand``,
``filter`` (the ``$filter`` grammar, with ``syntax`` for what it holds) and ``functions`` (the
string and Dataverse query functions). Which operator a name means, and which columns it
applies to, comes from :mod:`fieldsync.query.operators`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from fieldsync.errors import QueryError
from fieldsync.query.ast import Order, Query
from fieldsync.query.odata.expand import MAX_EXPAND_DEPTH, Expand, parse_expand
from fieldsync.query.odata.filter import parse_filter
from fieldsync.query.odata.functions import CRM_PREFIX
from fieldsync.query.odata.lexer import show
from fieldsync.query.odata.names import Navigation, resolve_column, resolve_navigation
from fieldsync.query.odata.options import MAX_TOP, parse_orderby, parse_select, parse_top
from fieldsync.schema.model import Schema, Table

__all__ = [
    "CRM_PREFIX",
    "MAX_EXPAND_DEPTH",
    "MAX_TOP",
    "Expand",
    "Navigation",
    "ODataQuery",
    "parse_filter",
    "parse_query_options",
    "resolve_column",
    "resolve_navigation",
]


@dataclass(frozen=True, slots=True)
class ODataQuery:
    """A collection request's query options: the query, its expansions and the opaque
    ``$skiptoken`` of a next page."""

    query: Query
    expand: tuple[Expand, ...] = ()
    skiptoken: str | None = None


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
        columns = parse_select(options["$select"], table, "$select")
    node = None
    if "$filter" in options:
        node = parse_filter(options["$filter"], table, schema, aliases=aliases)
    orders: tuple[Order, ...] = ()
    if "$orderby" in options:
        orders = parse_orderby(options["$orderby"], table, "$orderby")
    top = None
    if "$top" in options:
        top = parse_top(options["$top"], "$top")
    count = False
    if "$count" in options:
        flag = options["$count"].strip().lower()
        if flag not in ("true", "false"):
            raise QueryError(f"$count must be true or false, got {show(options['$count'])}")
        count = flag == "true"
    expand: tuple[Expand, ...] = ()
    if "$expand" in options:
        expand = parse_expand(options["$expand"], table, schema, "$expand", 1, aliases)
    query = Query(
        table=table.name, columns=columns, filter=node, orders=orders, top=top, count=count
    )
    return ODataQuery(query=query, expand=expand, skiptoken=options.get("$skiptoken"))
