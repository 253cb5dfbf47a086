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


@dataclass(frozen=True, slots=True)
class Const:
    value: bool


TRUE = Const(True)
FALSE = Const(False)


@dataclass(frozen=True, slots=True)
class Condition:
    """``column op value``; for ``in``/``not-in`` the value is a tuple, for ``null`` none."""

    column: str
    op: Op
    value: Any = None


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


Node: TypeAlias = Const | Condition | And | Or | Not | Shared


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
