"""One small filter language for every query: security predicates, offline filters, views
and Web API filters all become these nodes, which compile to SQL (``compile.py``) and
evaluate on a row in Python (``evaluate.py``) with the same meaning.

A node is immutable and hashable. ``TRUE`` and ``FALSE`` are constants; ``all_of`` and
``any_of`` build ``And``/``Or`` and fold constants away, so a predicate that grants
everything is just ``TRUE`` and costs nothing in SQL.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, TypeAlias


class Op(enum.StrEnum):
    """A condition operator, named as in FetchXML; :mod:`fieldsync.query.operators` says
    what each one applies to, takes and means."""

    EQ = "eq"
    NE = "ne"
    GT = "gt"
    GE = "ge"
    LT = "lt"
    LE = "le"
    IN = "in"
    NOT_IN = "not-in"
    NULL = "null"
    NOT_NULL = "not-null"
    LIKE = "like"
    NOT_LIKE = "not-like"
    BEGINS_WITH = "begins-with"
    NOT_BEGIN_WITH = "not-begin-with"
    ENDS_WITH = "ends-with"
    NOT_END_WITH = "not-end-with"
    # multi-choice columns: the value is a tuple of option values
    CONTAIN_VALUES = "contain-values"
    NOT_CONTAIN_VALUES = "not-contain-values"
    # bound from the caller's security context by ``bind`` before compiling (value: None)
    EQ_USERID = "eq-userid"
    NE_USERID = "ne-userid"
    EQ_USERTEAMS = "eq-userteams"
    EQ_USERORUSERTEAMS = "eq-useroruserteams"
    EQ_USERORUSERHIERARCHY = "eq-useroruserhierarchy"
    EQ_USERORUSERHIERARCHYANDTEAMS = "eq-useroruserhierarchyandteams"
    EQ_BUSINESSID = "eq-businessid"
    NE_BUSINESSID = "ne-businessid"
    EQ_USERLANGUAGE = "eq-userlanguage"
    # bound from the clock by ``bind`` (value: None, a count of days/hours, or a date)
    TODAY = "today"
    YESTERDAY = "yesterday"
    TOMORROW = "tomorrow"
    LAST_X_DAYS = "last-x-days"
    NEXT_X_DAYS = "next-x-days"
    LAST_X_HOURS = "last-x-hours"
    NEXT_X_HOURS = "next-x-hours"
    OLDER_X_DAYS = "older-x-days"
    THIS_WEEK = "this-week"
    THIS_MONTH = "this-month"
    THIS_YEAR = "this-year"
    ON = "on"
    ON_OR_BEFORE = "on-or-before"
    ON_OR_AFTER = "on-or-after"


@dataclass(frozen=True, slots=True)
class Const:
    value: bool


TRUE = Const(True)
FALSE = Const(False)


@dataclass(frozen=True, slots=True)
class Condition:
    """``column op value``; for ``in``/``not-in`` the value is a tuple, for ``null`` none.

    ``entity`` names a joined table by its alias (FetchXML's ``entityname``); ``None`` is the
    table the filter belongs to."""

    column: str
    op: Op
    value: Any = None
    entity: str | None = None


@dataclass(frozen=True, slots=True)
class ColumnCompare:
    """``column op other`` between two columns of the same row (FetchXML's ``valueof``);
    only the six comparisons."""

    column: str
    op: Op
    other: str
    entity: str | None = None


class LinkType(enum.StrEnum):
    INNER = "inner"
    OUTER = "outer"
    ANY = "any"
    NOT_ANY = "not any"
    ALL = "all"
    NOT_ALL = "not all"


@dataclass(frozen=True, slots=True)
class Link:
    """A related table joined on ``table.from_column = parent.to_column``.

    As part of a query (inner or outer) it adds columns and conditions on the related rows.
    Inside a filter (``LinkFilter``) it is a semi-join and takes one of the four filter
    types."""

    table: str
    from_column: str
    to_column: str
    alias: str | None = None
    type: LinkType = LinkType.INNER
    columns: tuple[str, ...] | None = ()
    filter: Node | None = None
    links: tuple[Link, ...] = ()
    orders: tuple[Order, ...] = ()


@dataclass(frozen=True, slots=True)
class LinkFilter:
    """Rows with related rows through ``link`` (type any, not any, all, not all) that pass
    ``link.filter``:

    - any: at least one related row passes;
    - not any: no related row passes;
    - all: there are related rows, and every one of them passes;
    - not all: at least one related row does not pass.
    """

    link: Link


@dataclass(frozen=True, slots=True)
class And:
    items: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Or:
    items: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Not:
    item: Node


@dataclass(frozen=True, slots=True)
class Shared:
    """The row was shared (``principalobjectaccess``) with one of ``principals`` with at least
    one of the rights in ``mask``."""

    table: str
    principals: tuple[Any, ...]
    mask: int


Node: TypeAlias = Const | Condition | ColumnCompare | And | Or | Not | Shared | LinkFilter


@dataclass(frozen=True, slots=True)
class Order:
    column: str
    descending: bool = False
    entity: str | None = None


@dataclass(frozen=True, slots=True)
class Query:
    """A whole query on one table: what FetchXML's ``<fetch>`` and an OData request say.

    ``columns`` ``None`` means every column. ``top`` caps the rows; ``page`` (1-based) and
    ``page_size`` page them; ``count`` asks for the total as well."""

    table: str
    columns: tuple[str, ...] | None = None
    filter: Node | None = None
    links: tuple[Link, ...] = ()
    orders: tuple[Order, ...] = ()
    top: int | None = None
    page: int | None = None
    page_size: int | None = None
    paging_cookie: str | None = None
    distinct: bool = False
    count: bool = False


def all_of(items: Iterable[Node]) -> Node:
    out: list[Node] = []
    for item in items:
        if item == FALSE:
            return FALSE
        if item == TRUE:
            continue
        out.extend(item.items if isinstance(item, And) else (item,))
    if not out:
        return TRUE
    return out[0] if len(out) == 1 else And(tuple(out))


def any_of(items: Iterable[Node]) -> Node:
    out: list[Node] = []
    for item in items:
        if item == TRUE:
            return TRUE
        if item == FALSE:
            continue
        out.extend(item.items if isinstance(item, Or) else (item,))
    if not out:
        return FALSE
    return out[0] if len(out) == 1 else Or(tuple(out))


def negate(item: Node) -> Node:
    if isinstance(item, Const):
        return FALSE if item.value else TRUE
    if isinstance(item, Not):
        return item.item
    return Not(item)


def is_in(column: str, values: Iterable[Any]) -> Node:
    """``column in values``; an empty set matches nothing."""
    vals = tuple(dict.fromkeys(values))
    if not vals:
        return FALSE
    if len(vals) == 1:
        return Condition(column, Op.EQ, vals[0])
    return Condition(column, Op.IN, vals)
