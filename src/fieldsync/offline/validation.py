"""The rules of a mobile offline profile, as one pure function over a draft.

:func:`problems` checks a :class:`ProfileDraft` against the schema and returns every rule it
breaks, each naming the profile and the table. The same function runs when a profile row is
saved (through the plugins in :mod:`fieldsync.offline.rules`), when a profile file is
validated or imported, and when a profile is published. The rules come from the seeds and
Dataverse's documentation:

- a table is in a profile at most once, exists, and is enabled for offline;
- the download filter is one the table's ownership offers (user or team: related, all,
  other, custom; organization: related, all; business: related, all, other with the
  business unit only; none: related only); "other" takes at least one of me, my teams, my
  business unit; "all" and "related" take nothing else;
- a custom filter is FetchXML on the item's table with the seeds' 25 operators, link
  entities only inside filters (``any`` / ``not any``), at most 15 related tables and three
  levels (the item's table and two levels of related tables);
- a relationship exists, links the item's table to another table that is in the profile,
  and is not a self reference; the relationships between items have no cycle, and each item
  counts at most 15 relationships transitively (an item that follows B, which has N
  relationships, counts N + 1 for it);
- selected columns exist; file columns are all of the table's file columns or none; image
  columns are image columns, at most 14 in a profile;
- the sync interval is 5 to 1440 minutes; a profile holds fewer than 100 tables.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field
from typing import Protocol

from fieldsync.errors import QueryError
from fieldsync.offline.snapshot import Distribution, ItemSnapshot, PublishedProfile, RelationshipRef
from fieldsync.query.ast import (
    And,
    ColumnCompare,
    Condition,
    LinkFilter,
    LinkType,
    Node,
    Not,
    Or,
)
from fieldsync.query.fetchxml import parse_fetchxml
from fieldsync.query.operators import OFFLINE_OPS
from fieldsync.schema.model import ColumnType, Ownership, Relationship, Schema

MIN_SYNC_INTERVAL = 5
MAX_SYNC_INTERVAL = 1440
DEFAULT_SYNC_INTERVAL = 15
MAX_RELATIONSHIPS = 15  # per item, counted transitively
MAX_FILTER_TABLES = 15  # related tables in a custom filter
MAX_FILTER_LEVELS = 3  # the item's table and two levels of related tables
MAX_TABLES = 99  # "under 100 tables"
MAX_IMAGE_COLUMNS = 14  # per profile

FILTERS_BY_OWNERSHIP: dict[Ownership, frozenset[Distribution]] = {
    Ownership.USER: frozenset(Distribution),
    Ownership.ORGANIZATION: frozenset({Distribution.RELATED, Distribution.ALL}),
    Ownership.BUSINESS: frozenset({Distribution.RELATED, Distribution.ALL, Distribution.OTHER}),
    Ownership.NONE: frozenset({Distribution.RELATED}),
}
FILTER_NAMES = {
    Distribution.RELATED: "related rows only",
    Distribution.ALL: "all rows",
    Distribution.OTHER: "other data filter",
    Distribution.CUSTOM: "custom filter",
}
OWNERSHIP_NAMES = {
    Ownership.USER: "user or team",
    Ownership.ORGANIZATION: "organization",
    Ownership.BUSINESS: "business",
    Ownership.NONE: "no",
}
FILTER_OPERATORS = OFFLINE_OPS  # what a custom filter may use


class _Add(Protocol):
    def __call__(
        self, table: str | None, fld: str | None, text: str, line: int | None = None
    ) -> None: ...


@dataclass(frozen=True)
class ItemDraft:
    """One table of a draft profile, as a maker edits it."""

    table: str
    distribution: Distribution = Distribution.RELATED
    owned_by_me: bool = False
    owned_by_my_teams: bool = False
    owned_by_my_business_unit: bool = False
    custom_filter: str | None = None
    relationships: tuple[str, ...] = ()  # schema relationship names
    columns: tuple[str, ...] = ()  # empty: every column
    file_columns: tuple[str, ...] = ()
    image_columns: tuple[str, ...] = ()
    sync_interval_minutes: int = DEFAULT_SYNC_INTERVAL


@dataclass(frozen=True)
class ProfileDraft:
    name: str
    description: str = ""
    items: tuple[ItemDraft, ...] = field(default=())

    def item(self, table: str) -> ItemDraft | None:
        return next((i for i in self.items if i.table == table), None)


@dataclass(frozen=True)
class Problem:
    """One broken rule. ``table`` is ``None`` for the profile itself; ``field`` says which
    setting is wrong (``name``, ``tables``, ``table``, ``filter``, ``owned_by``,
    ``custom_filter``, ``relationships``, ``columns``, ``files``, ``images``,
    ``sync_interval``, and ``cycle`` and ``relationship_count`` for the relationships
    between items)."""

    table: str | None
    field: str | None
    message: str
    filter_line: int | None = None  # for custom filter errors: the line inside the FetchXML


def related_table(rel: Relationship, table: str) -> str | None:
    """The other end of ``rel`` seen from ``table``; ``None`` if ``rel`` does not touch it."""
    ends = (rel.referenced_table, rel.referencing_table)
    if table not in ends:
        return None
    return ends[1] if ends[0] == table else ends[0]


def problems(draft: ProfileDraft, schema: Schema, *, publishing: bool = False) -> list[Problem]:
    """Every rule ``draft`` breaks, in the order of its items."""
    out: list[Problem] = []
    prefix = f"profile {draft.name!r}"

    def add(table: str | None, fld: str | None, text: str, line: int | None = None) -> None:
        where = prefix if table is None else f"{prefix}, table {table!r}"
        out.append(Problem(table, fld, f"{where}: {text}", line))

    if not draft.name.strip():
        add(None, "name", "a profile needs a name")
    if len(draft.items) > MAX_TABLES:
        add(
            None,
            "tables",
            f"a profile holds fewer than 100 tables; this one has {len(draft.items)}",
        )
    if publishing and not draft.items:
        add(None, "tables", "add at least one table before publishing")
    names = [i.table for i in draft.items]
    in_profile = set(names)
    seen: set[str] = set()
    images = 0
    edges: dict[str, list[str]] = {}
    for item in draft.items:
        t = item.table
        if t in seen:
            add(t, "table", "the table is in the profile twice")
            continue
        seen.add(t)
        if t not in schema:
            add(t, "table", "no such table")
            continue
        table = schema.table(t)
        if not table.offline:
            add(t, "table", "the table is not enabled for offline (turn on 'can be taken offline')")
        _check_filter(item, table.ownership, add)
        if item.distribution is Distribution.CUSTOM and item.custom_filter:
            _check_custom_filter(item, schema, add)
        edges[t] = []
        for name in item.relationships:
            rel = schema.relationships.get(name)
            if rel is None:
                add(t, "relationships", f"relationship {name!r} does not exist")
                continue
            other = related_table(rel, t)
            if other is None:
                add(t, "relationships", f"relationship {name!r} does not involve table {t!r}")
            elif other == t:
                add(t, "relationships", f"relationship {name!r} is a self reference")
            elif other not in in_profile:
                add(
                    t,
                    "relationships",
                    f"relationship {name!r} leads to table {other!r}, which is not in the "
                    "profile; add that table first",
                )
            else:
                edges[t].append(other)
        if len(set(item.relationships)) != len(item.relationships):
            add(t, "relationships", "a relationship is selected twice")
        for col in item.columns:
            c = table.column(col)
            if c is None:
                add(t, "columns", f"unknown column {col!r}")
            elif c.type in (ColumnType.FILE, ColumnType.IMAGE):
                add(
                    t,
                    "columns",
                    f"{col!r} is a {c.type.value} column: choose it under files or images",
                )
        files = sorted(c.name for c in table.columns.values() if c.type is ColumnType.FILE)
        wrong = False
        for col in item.file_columns:
            c = table.column(col)
            wrong = wrong or c is None or c.type is not ColumnType.FILE
            if c is None:
                add(t, "files", f"unknown column {col!r}")
            elif c.type is not ColumnType.FILE:
                add(t, "files", f"{col!r} is a {c.type.value} column, not a file column")
        if item.file_columns and not wrong and sorted(set(item.file_columns)) != files:
            add(t, "files", f"file columns are taken all or none: {', '.join(files)}")
        for col in item.image_columns:
            c = table.column(col)
            if c is None:
                add(t, "images", f"unknown column {col!r}")
            elif c.type is not ColumnType.IMAGE:
                add(t, "images", f"{col!r} is a {c.type.value} column, not an image column")
        images += len(set(item.image_columns))
        if not MIN_SYNC_INTERVAL <= item.sync_interval_minutes <= MAX_SYNC_INTERVAL:
            add(
                t,
                "sync_interval",
                f"the sync interval must be {MIN_SYNC_INTERVAL} to {MAX_SYNC_INTERVAL} minutes, "
                f"not {item.sync_interval_minutes}",
            )
    if images > MAX_IMAGE_COLUMNS:
        add(
            None,
            "images",
            f"a profile takes at most {MAX_IMAGE_COLUMNS} image columns, not {images}",
        )
    _check_graph(names, edges, add)
    return out


def _check_filter(item: ItemDraft, ownership: Ownership, add: _Add) -> None:
    t, d = item.table, item.distribution
    if d not in FILTERS_BY_OWNERSHIP[ownership]:
        offered = ", ".join(
            FILTER_NAMES[x] for x in Distribution if x in FILTERS_BY_OWNERSHIP[ownership]
        )
        add(
            t,
            "filter",
            f"the filter {FILTER_NAMES[d]!r} is not offered for a table with "
            f"{OWNERSHIP_NAMES[ownership]} ownership; choose {offered}",
        )
        return
    flags = item.owned_by_me or item.owned_by_my_teams or item.owned_by_my_business_unit
    if d is Distribution.OTHER:
        if not flags:
            add(
                t,
                "owned_by",
                "the other data filter needs at least one of me, my teams, my business unit",
            )
        if ownership is Ownership.BUSINESS and (item.owned_by_me or item.owned_by_my_teams):
            add(t, "owned_by", "a business-owned table offers only my business unit's rows")
    elif flags:
        add(
            t,
            "owned_by",
            f"{FILTER_NAMES[d]!r} combines with no owner choice (me, my teams, my business unit)",
        )
    if d is Distribution.CUSTOM and not (item.custom_filter or "").strip():
        add(t, "custom_filter", "the custom filter needs FetchXML")
    if d is not Distribution.CUSTOM and item.custom_filter:
        add(
            t,
            "custom_filter",
            f"a FetchXML filter goes only with the custom filter, not {FILTER_NAMES[d]!r}",
        )


def _check_custom_filter(item: ItemDraft, schema: Schema, add: _Add) -> None:
    t = item.table
    try:
        query = parse_fetchxml(item.custom_filter or "", schema)
    except QueryError as exc:
        add(t, "custom_filter", f"custom filter: {exc.message}", getattr(exc, "line", None))
        return
    if query.table != t:
        add(t, "custom_filter", f"custom filter: the entity must be {t!r}, not {query.table!r}")
        return
    if query.links:
        add(
            t,
            "custom_filter",
            "custom filter: put link-entity inside a <filter> with link-type 'any' or 'not any'",
        )
    if query.top is not None or query.page is not None or query.page_size is not None:
        add(t, "custom_filter", "custom filter: top and paging do not apply to a download filter")
    found: list[str] = []
    tables: list[str] = []
    levels = _walk(query.filter, 1, found, tables)
    for problem in dict.fromkeys(found):
        add(t, "custom_filter", f"custom filter: {problem}")
    if len(tables) > MAX_FILTER_TABLES:
        add(
            t,
            "custom_filter",
            f"custom filter: at most {MAX_FILTER_TABLES} related tables, not {len(tables)}",
        )
    if levels > MAX_FILTER_LEVELS:
        add(
            t,
            "custom_filter",
            f"custom filter: at most {MAX_FILTER_LEVELS} levels (the table and two levels of "
            f"related tables), not {levels}",
        )


def _walk(node: Node | None, level: int, found: list[str], tables: list[str]) -> int:
    """Check operators and link types; return the deepest level reached."""
    deepest = level
    if node is None:
        return deepest
    if isinstance(node, Condition):
        if node.op not in FILTER_OPERATORS:
            found.append(f"operator {node.op.value!r} is not offered in offline filters")
    elif isinstance(node, ColumnCompare):
        found.append("column comparisons (valueof) are not offered in offline filters")
    elif isinstance(node, (And, Or)):
        for child in node.items:
            deepest = max(deepest, _walk(child, level, found, tables))
    elif isinstance(node, Not):
        deepest = _walk(node.item, level, found, tables)
    elif isinstance(node, LinkFilter):
        link = node.link
        tables.append(link.table)
        if link.type not in (LinkType.ANY, LinkType.NOT_ANY):
            found.append(f"link-type {link.type.value!r}: use 'any' or 'not any'")
        if link.links:
            found.append("put a nested link-entity inside the <filter> of its parent link-entity")
        deepest = max(deepest, _walk(link.filter, level + 1, found, tables))
    return deepest


def _check_graph(names: list[str], edges: dict[str, list[str]], add: _Add) -> None:
    """No cycles between items; at most 15 relationships per item, counted transitively."""
    state: dict[str, int] = {}  # 1: on the path, 2: done
    counts: dict[str, int] = {}
    cyclic: set[str] = set()

    def visit(node: str, path: list[str]) -> int | None:
        if state.get(node) == 2:
            return counts.get(node)
        if state.get(node) == 1:
            cycle = [*path[path.index(node) :], node]
            if not cyclic.intersection(cycle):
                add(cycle[0], "cycle", "circular relationships: " + " -> ".join(cycle))
            cyclic.update(cycle)
            return None
        state[node] = 1
        total: int | None = 0
        for other in edges.get(node, ()):
            sub = visit(other, [*path, node])
            if sub is None or total is None:
                total = None
            else:
                total += 1 + sub
        state[node] = 2
        if total is not None:
            counts[node] = total
        return total

    for name in names:
        if name in edges and state.get(name) is None:
            visit(name, [])
    for name in names:
        count = counts.get(name)
        if count is not None and count > MAX_RELATIONSHIPS:
            add(
                name,
                "relationship_count",
                f"{count} relationships counted transitively; at most {MAX_RELATIONSHIPS} "
                "(following a table with N relationships counts N + 1)",
            )


def snapshot(
    draft: ProfileDraft,
    schema: Schema,
    profile_id: uuid.UUID,
    version: int,
    published_on: dt.datetime,
) -> PublishedProfile:
    """The immutable snapshot of a valid draft."""
    items = []
    for item in draft.items:
        refs = []
        for name in item.relationships:
            other = related_table(schema.relationships[name], item.table)
            assert other is not None
            refs.append(RelationshipRef(name, other))
        items.append(
            ItemSnapshot(
                table=item.table,
                distribution=item.distribution,
                owned_by_me=item.owned_by_me,
                owned_by_my_teams=item.owned_by_my_teams,
                owned_by_my_business_unit=item.owned_by_my_business_unit,
                custom_filter=item.custom_filter,
                relationships=tuple(refs),
                file_columns=tuple(item.file_columns),
                image_columns=tuple(item.image_columns),
                sync_interval_minutes=item.sync_interval_minutes,
                columns=tuple(item.columns),
            )
        )
    return PublishedProfile(profile_id, draft.name, version, published_on, tuple(items))
