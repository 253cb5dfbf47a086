"""Scope: which rows of each profile table a device holds, as one filter per table.

For user U on a published profile, table T's scope is

    scope(T) = readable(U, T) ∩ ( filter(T, U)  ∪  related(T) )

``filter`` comes from the item's download filter; ``related`` is a semi-join (a ``LinkFilter``
of type *any*) per selected relationship, whose inner filter is the related table's own
scope. Profiles may not hold circular relationships, so the dependencies between tables form
a tree-like graph (a DAG) and this nesting ends; the read guard of the query compiler adds
``readable`` at the root and inside every link.

A :class:`ScopePlan` is built once per (profile version, schema) and holds, per table, the
unbound filter node, the tables whose changes can move its rows in or out, and an item hash
that changes when the item or anything it depends on changes (a changed hash re-scopes the
table on the device).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Literal

import orjson

from fieldsync import tracing
from fieldsync.errors import BadRequest
from fieldsync.offline.snapshot import Distribution, ItemSnapshot, PublishedProfile
from fieldsync.query.ast import (
    FALSE,
    TRUE,
    And,
    Condition,
    Link,
    LinkFilter,
    LinkType,
    Node,
    Not,
    Op,
    Or,
    any_of,
)
from fieldsync.query.fetchxml import parse_fetchxml
from fieldsync.query.operators import DATE_OPS
from fieldsync.schema.model import ColumnType, RelationshipKind, Schema, Table

SHARE_TABLE = "principalobjectaccess"
# the columns a row's readability depends on (the rest is in the user's security context)
SCOPE_COLUMNS = frozenset({"ownerid", "owneridtype", "owningbusinessunit", "statecode"})

EdgeKind = Literal["lookup", "reverse", "many"]


@dataclass(frozen=True)
class Edge:
    """Rows of ``table`` that are related to rows in scope of ``other``.

    - ``lookup``: ``table.column`` points at ``other``;
    - ``reverse``: ``other.column`` points at ``table``;
    - ``many``: an ``intersect`` row links ``table`` (``column``) and ``other``
      (``other_column``).
    """

    table: str
    other: str
    kind: EdgeKind
    column: str
    intersect: str = ""
    other_column: str = ""


@dataclass
class TablePlan:
    table: Table
    item: ItemSnapshot
    filter: Node  # the item's own download filter, unbound
    edges: tuple[Edge, ...]
    columns: tuple[str, ...]  # the columns that travel
    depends_on: frozenset[str] = frozenset()  # profile tables whose scope feeds this one
    watched: frozenset[str] = frozenset()  # tables whose changes may move rows in or out
    linked: frozenset[str] = frozenset()  # tables a custom filter reads through links
    timed: bool = False  # the filter reads the clock: re-evaluated whole on every sync
    item_hash: str = ""


@dataclass
class ScopePlan:
    profile: PublishedProfile
    tables: dict[str, TablePlan] = field(default_factory=dict)
    order: tuple[str, ...] = ()  # dependencies first
    _nodes: dict[str, Node] = field(default_factory=dict, repr=False)

    def plan(self, table: str) -> TablePlan:
        found = self.tables.get(table)
        if found is None:
            raise BadRequest(f"table {table!r} is not in the offline profile {self.profile.name!r}")
        return found

    def node(self, table: str) -> Node:
        """``filter(T) ∪ related(T)``, unbound; the caller's read guard adds ``readable``.
        Built once per table: a plan is cached per profile version and every download page
        of every device asks for it."""
        found = self._nodes.get(table)
        if found is None:
            plan = self.plan(table)
            parts: list[Node] = [plan.filter]
            for edge in plan.edges:
                parts.append(self.related_node(edge))
            found = self._nodes[table] = _simplify_or(parts)
        return found

    def related_node(self, edge: Edge) -> Node:
        """Rows of ``edge.table`` related to rows in the scope of ``edge.other``."""
        inner = self.node(edge.other)
        other = self.tables[edge.other].table
        mine = self.tables[edge.table].table
        if edge.kind == "lookup":
            link = Link(
                table=edge.other,
                from_column=other.primary_id,
                to_column=edge.column,
                type=LinkType.ANY,
                filter=inner,
            )
        elif edge.kind == "reverse":
            link = Link(
                table=edge.other,
                from_column=edge.column,
                to_column=mine.primary_id,
                type=LinkType.ANY,
                filter=inner,
            )
        else:
            link = Link(
                table=edge.intersect,
                from_column=edge.column,
                to_column=mine.primary_id,
                type=LinkType.ANY,
                filter=LinkFilter(
                    Link(
                        table=edge.other,
                        from_column=other.primary_id,
                        to_column=edge.other_column,
                        type=LinkType.ANY,
                        filter=inner,
                    )
                ),
            )
        return LinkFilter(link)


def _simplify_or(parts: list[Node]) -> Node:
    kept = [p for p in parts if p != FALSE]
    if any(p == TRUE for p in kept):
        return TRUE
    if not kept:
        return FALSE
    return kept[0] if len(kept) == 1 else Or(tuple(kept))


def item_filter(item: ItemSnapshot, table: Table, schema: Schema) -> Node:
    """The download filter of one item as a filter node (unbound user and date operators)."""
    d = item.distribution
    if d is Distribution.RELATED:
        return FALSE
    if d is Distribution.ALL:
        return TRUE
    if d is Distribution.OTHER:
        parts: list[Node] = []
        if item.owned_by_me and table.owned:
            parts.append(Condition("ownerid", Op.EQ_USERID))
        if item.owned_by_my_teams and table.owned:
            parts.append(Condition("ownerid", Op.EQ_USERTEAMS))
        if item.owned_by_my_business_unit and "owningbusinessunit" in table.columns:
            parts.append(Condition("owningbusinessunit", Op.EQ_BUSINESSID))
        return any_of(parts) if parts else FALSE
    if not item.custom_filter:
        return FALSE
    query = parse_fetchxml(item.custom_filter, schema)
    if query.table != table.name:
        raise BadRequest(
            f"the custom filter of {table.name!r} queries {query.table!r}; it must query "
            f"{table.name!r}"
        )
    parts = [] if query.filter is None else [query.filter]
    for link in query.links:  # an inner link-entity outside a filter: rows with a match
        parts.append(LinkFilter(replace(link, type=LinkType.ANY, columns=(), orders=())))
    if not parts:
        return TRUE
    return parts[0] if len(parts) == 1 else And(tuple(parts))


def walk(node: Node | None) -> Iterator[Node]:
    """Every node of a filter tree, links' filters included."""
    if node is None:
        return
    yield node
    if isinstance(node, (And, Or)):
        for item in node.items:
            yield from walk(item)
    elif isinstance(node, Not):
        yield from walk(node.item)
    elif isinstance(node, LinkFilter):
        yield from _walk_link(node.link)


def _walk_link(link: Link) -> Iterator[Node]:
    yield from walk(link.filter)
    for nested in link.links:
        yield from _walk_link(nested)


def linked_tables(node: Node) -> set[str]:
    out: set[str] = set()

    def visit(link: Link) -> None:
        out.add(link.table)
        for nested in link.links:
            visit(nested)

    for n in walk(node):
        if isinstance(n, LinkFilter):
            visit(n.link)
    return out


def reads_clock(node: Node) -> bool:
    return any(isinstance(n, Condition) and n.op in DATE_OPS for n in walk(node))


def edge_for(schema: Schema, table: str, relationship: str, other: str) -> Edge:
    rel = schema.relationships.get(relationship)
    if rel is None:
        raise BadRequest(f"the offline profile names an unknown relationship {relationship!r}")
    sides = {rel.referenced_table, rel.referencing_table}
    if sides != {table, other} or table == other:
        raise BadRequest(
            f"relationship {relationship!r} does not link {table!r} with another table {other!r}"
        )
    if rel.kind is RelationshipKind.MANY_TO_MANY:
        mine, theirs = (
            (rel.referenced_column, rel.referencing_column)
            if rel.referenced_table == table
            else (rel.referencing_column, rel.referenced_column)
        )
        return Edge(table, other, "many", mine, rel.intersect_table, theirs)
    if rel.referencing_table == table:
        return Edge(table, other, "lookup", rel.referencing_column)
    return Edge(table, other, "reverse", rel.referencing_column)


@tracing.traced("scope.compile")
def build_plan(profile: PublishedProfile, schema: Schema) -> ScopePlan:
    """The scope plan of a published profile; refuses cycles and unknown tables (publish
    validates both, so this only guards against a schema changed since)."""
    plan = ScopePlan(profile)
    for item in profile.items:
        table = schema.table(item.table)
        edges = tuple(
            edge_for(schema, item.table, r.relationship, r.related_table)
            for r in item.relationships
            if r.related_table in {i.table for i in profile.items}
        )
        node = item_filter(item, table, schema)
        plan.tables[item.table] = TablePlan(
            table=table,
            item=item,
            filter=node,
            edges=edges,
            columns=travelling_columns(table, item),
            linked=frozenset(linked_tables(node)),
            timed=reads_clock(node),
        )
    plan.order = tuple(_topological(plan))
    for name in plan.order:
        tp = plan.tables[name]
        deps: set[str] = set()
        watched: set[str] = {name, SHARE_TABLE, *tp.linked}
        timed = tp.timed
        hashes = [orjson.dumps(tp.item.to_json(), option=orjson.OPT_SORT_KEYS)]
        for edge in tp.edges:
            other = plan.tables[edge.other]
            deps |= {edge.other, *other.depends_on}
            watched |= other.watched
            if edge.intersect:
                watched.add(edge.intersect)
            timed = timed or other.timed
            hashes.append(other.item_hash.encode())
        tp.depends_on = frozenset(deps)
        tp.watched = frozenset(watched)
        tp.timed = timed
        tp.item_hash = hashlib.sha256(b"|".join(hashes)).hexdigest()[:24]
    return plan


def _topological(plan: ScopePlan) -> Iterable[str]:
    done: list[str] = []
    state: dict[str, int] = {}

    def visit(name: str, path: tuple[str, ...]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            cycle = " -> ".join((*path, name))
            raise BadRequest(f"the offline profile's relationships form a cycle: {cycle}")
        state[name] = 1
        for edge in plan.tables[name].edges:
            visit(edge.other, (*path, name))
        state[name] = 2
        done.append(name)

    for name in plan.tables:
        visit(name, ())
    return done


def travelling_columns(table: Table, item: ItemSnapshot) -> tuple[str, ...]:
    """The item's columns (every column when it names none), always with the system columns
    sync and the device need; file and image columns only where the item selects them."""
    keep: list[str] = []
    chosen = set(item.file_columns) | set(item.image_columns)
    named = set(item.columns)
    for col in table.columns.values():
        if col.type in (ColumnType.FILE, ColumnType.IMAGE):
            if col.name not in chosen:
                continue
        elif named and not col.system and col.name not in named and col.name != table.primary_name:
            continue
        keep.append(col.name)
        if col.polymorphic:
            keep.append(col.type_column)
    return tuple(dict.fromkeys(keep))
