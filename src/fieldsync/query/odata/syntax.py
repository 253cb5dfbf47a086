"""What the ``$filter`` parser holds between tokens and conditions: a scope, column
references through navigation properties, literals and lists."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TypeAlias

from fieldsync.query.ast import (
    LinkFilter,
    LinkType,
    Node,
    negate,
)
from fieldsync.query.odata.lexer import Tok
from fieldsync.schema.model import (
    Column,
    ColumnType,
    Table,
)

T = ColumnType


@dataclass(frozen=True, slots=True)
class Scope:
    """The table names refer to; inside ``any``/``all`` paths start with ``var``."""

    table: Table
    var: str | None = None


@dataclass(frozen=True, slots=True)
class Hop:
    lookup: Column  # on the table before the hop
    target: Table


@dataclass(frozen=True, slots=True)
class ColRef:
    column: Column
    table: Table  # the column's table
    hops: tuple[Hop, ...]  # single-valued navigations from the scope's table
    pos: int
    name: str


@dataclass(frozen=True, slots=True)
class Lit:
    tok: Tok


@dataclass(frozen=True, slots=True)
class Cond:
    """An operand that is already a condition (``nav/any(...)``)."""

    node: Node
    pos: int


@dataclass(frozen=True, slots=True)
class ListValue:
    items: tuple[Tok, ...]
    pos: int


Operand: TypeAlias = ColRef | Lit | Cond
Param: TypeAlias = Tok | ListValue


def negate_filter(node: Node) -> Node:
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
