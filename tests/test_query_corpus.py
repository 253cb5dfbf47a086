"""The query corpora run: every documented FetchXML query (``test_fetchxml.CORPUS``) and every
OData request (``test_odata.CORPUS``) is parsed and executed by ``Records.query`` on the demo
organisation, on SQLite and PostgreSQL, as SYSTEM and as a field technician.

For each query and caller:

- the query runs, or is refused with ``Forbidden`` exactly when the caller lacks read on the
  root table or a joined one (link filters are guarded instead: they see readable rows only);
- every row returned is one the caller may read, and joined columns come back as
  ``alias.column``;
- when the query joins nothing, the ids SQL returns are the ones Python finds by binding the
  filter (same user, same ``now``) and evaluating it with ``matches`` on every row the caller
  may read (link filters look at the related rows the caller may read); with ``top`` or
  paging the result is a subset of the right size;
- the rows are loosely in the order asked for: by the first order column's values (strings by
  their first letter, which every collation agrees on), with nulls as the lowest value, as
  Dataverse (SQL Server) sorts them: first when ascending, last when descending;
- single-valued ``$expand``s are run through ``Records.retrieve``.

The corpora keep Microsoft's literal values (Redmond, Contoso...); the copies run here swap
them for demo values (``FETCHXML_VALUES``, ``ODATA_VALUES``) so that most queries find rows.
Problems are collected, so one run reports every failing query, not just the first.
"""

from __future__ import annotations

import datetime as dt
import traceback
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest

from fieldsync.demo import seed_demo
from fieldsync.errors import Forbidden
from fieldsync.platform import Platform
from fieldsync.query.ast import TRUE, And, Link, LinkFilter, Node, Not, Or, Query
from fieldsync.query.bind import bind
from fieldsync.query.evaluate import Related, matches
from fieldsync.query.fetchxml import parse_fetchxml
from fieldsync.query.odata import Expand, parse_query_options
from fieldsync.records.service import SYSTEM
from fieldsync.security.context import load_context, user_binding
from fieldsync.security.model import Privilege, SecurityContext
from fieldsync.security.predicate import has_privilege
from fieldsync.types import Row
from test_fetchxml import CORPUS as FETCHXML_CORPUS
from test_odata import CORPUS as ODATA_CORPUS

FIXED_DATE = dt.date(2025, 3, 14)
NOW = dt.datetime.combine(FIXED_DATE, dt.time(12), tzinfo=dt.UTC)
TECHNICIAN = "lena"  # Senior Field Technician, North Region: reads her unit's accounts

# Microsoft's example values -> demo values (demo.py's fixed seed makes these exist).
FETCHXML_VALUES = {
    "'Redmond'": "'Manchester'",
    "'Seattle'": "'Leeds'",
    "'Bellevue'": "'London'",
    "<value>Redmond</value>": "<value>Manchester</value>",
    "<value>Seattle</value>": "<value>Leeds</value>",
    "<value>Bellevue</value>": "<value>London</value>",
    "'Contoso'": "'Anchor Accountants'",
    '"Case%"': '"WO-00%"',
    '"425-425-4021"': '"+44 161 496 0145"',  # Anchor Accountants' phone
}
ODATA_VALUES = {
    "'Con'": "'Co'",
    "name eq 'A'": "name eq 'Anchor Accountants'",
    "name eq 'a b'": "name eq 'anchor builders group'",
}


def adapt(text: str, values: Mapping[str, str]) -> str:
    for old, new in values.items():
        text = text.replace(old, new)
    return text


# ---------------------------------------------------------------------------------------------
# What a query touches


def joined_tables(links: Iterable[Link]) -> Iterator[str]:
    for link in links:
        yield link.table
        yield from joined_tables(link.links)


def joined_columns(links: Iterable[Link]) -> Iterator[str]:
    for link in links:
        for column in link.columns or ():
            yield f"{link.alias or link.table}.{column}"
        yield from joined_columns(link.links)


def link_filters(node: Node | None) -> Iterator[Link]:
    """The links of every link filter in ``node``, nested ones included."""
    if isinstance(node, LinkFilter):
        yield node.link
        yield from link_filters(node.link.filter)
    elif isinstance(node, (And, Or)):
        for item in node.items:
            yield from link_filters(item)
    elif isinstance(node, Not):
        yield from link_filters(node.item)


def loose_key(value: Any) -> Any:
    return value[:1].casefold() if isinstance(value, str) else value


# ---------------------------------------------------------------------------------------------
# Running a corpus


@dataclass
class Outcome:
    ran: int = 0
    forbidden: int = 0
    returning: set[str] = field(default_factory=set)  # queries with rows as SYSTEM
    compared: int = 0  # runs checked against the Python evaluation
    compared_with_link_filters: int = 0
    expanded: int = 0
    failures: list[str] = field(default_factory=list)

    def summary(self, kind: str, queries: int) -> str:
        return (
            f"{kind}: {queries} queries, {self.ran} runs, {self.forbidden} refused as expected, "
            f"{len(self.returning)} queries return rows as SYSTEM, {self.compared} runs compared "
            f"with Python ({self.compared_with_link_filters} through link filters), "
            f"{self.expanded} expansions, {len(self.failures)} failures"
        )


class Runner:
    def __init__(self, platform: Platform) -> None:
        self.store = platform.store
        self.schema = platform.store.schema
        self.records = platform.records
        self.callers: dict[str, SecurityContext] = {
            "SYSTEM": SYSTEM,
            TECHNICIAN: load_context(self.store, platform.org.user_id(TECHNICIAN)),
        }
        self._readable: dict[tuple[str, str], list[Row]] = {}
        self._index: dict[tuple[str, str, str], dict[Any, list[Row]]] = {}
        self.outcome = Outcome()

    def readable(self, who: str, table: str) -> list[Row]:
        key = (who, table)
        if key not in self._readable:
            self._readable[key] = self.records.retrieve_multiple(table, caller=self.callers[who])
        return self._readable[key]

    def related(self, who: str) -> Related:
        """What a link filter looks at: the caller's readable rows of the linked table whose
        ``from`` column holds the row's ``to`` column."""

        def find(link: Link, row: Mapping[str, Any]) -> list[Row]:
            key = (who, link.table, link.from_column)
            if key not in self._index:
                index: dict[Any, list[Row]] = defaultdict(list)
                for r in self.readable(who, link.table):
                    index[r[link.from_column]].append(r)
                self._index[key] = index
            value = row.get(link.to_column)
            return [] if value is None else self._index[key].get(value, [])

        return find

    def fail(self, label: str, source: str, exc: BaseException) -> None:
        if isinstance(exc, AssertionError):
            self.outcome.failures.append(f"{label}: {str(exc).splitlines()[0]}")
        else:
            self.outcome.failures.append(f"{label}: {source}\n{traceback.format_exc()}")

    def run(self, name: str, source: str, query: Query) -> None:
        for who, ctx in self.callers.items():
            try:
                self._run(who, ctx, name, query)
            except Exception as exc:
                self.fail(f"{name} as {who}", source, exc)

    def _run(self, who: str, ctx: SecurityContext, name: str, query: Query) -> None:
        tables = {query.table, *joined_tables(query.links)}
        if any(not has_privilege(ctx, self.schema.table(t), Privilege.READ) for t in tables):
            try:
                self.records.query(query, caller=ctx, now=NOW)
            except Forbidden:
                self.outcome.forbidden += 1
                return
            raise AssertionError("ran although the caller may not read every table it joins")
        rows = self.records.query(query, caller=ctx, now=NOW)
        self.outcome.ran += 1
        if rows and who == "SYSTEM":
            self.outcome.returning.add(name)
        self.check(who, ctx, query, rows)

    def check(self, who: str, ctx: SecurityContext, query: Query, rows: list[Row]) -> None:
        table = self.schema.table(query.table)
        pk = table.primary_id
        if query.distinct:
            # distinct values, not rows: no ids come back; each selected combination once
            keys = [tuple(sorted(r.items(), key=lambda kv: kv[0])) for r in rows]
            assert len(keys) == len(set(keys)), "distinct returned a combination twice"
            return
        ids = [r[pk] for r in rows]
        readable = self.readable(who, query.table)
        assert set(ids) <= {r[pk] for r in readable}, "returned a row the caller may not read"
        self.check_order(query, rows)
        if query.links:
            missing = set(joined_columns(query.links)) - set().union(*rows) if rows else set()
            assert not missing, f"joined columns missing: {sorted(missing)}"
            return
        assert len(ids) == len(set(ids)), "a row came back twice"
        semi = list(link_filters(query.filter))
        if any(link.links for link in semi):
            return  # the evaluator does not join inside a link filter
        node: Node = TRUE
        if query.filter is not None:
            with self.store.read() as conn:
                user = user_binding(self.store, conn, ctx)
            node = bind(query.filter, table, user=user, now=NOW, tables=self.schema.table)
        related = self.related(who)
        expected = {r[pk] for r in readable if matches(node, r, related=related)}
        self.outcome.compared += 1
        self.outcome.compared_with_link_filters += bool(semi)
        got = set(ids)
        if query.page_size is not None:
            skipped = ((query.page or 1) - 1) * query.page_size
            size = max(0, min(query.page_size, len(expected) - skipped))
            assert got <= expected, f"the page holds {len(got - expected)} rows not matching"
            assert len(ids) == size, f"{len(ids)} rows on page {query.page}, expected {size}"
        elif query.top is not None:
            assert got <= expected, f"top holds {len(got - expected)} rows not matching"
            assert len(ids) == min(query.top, len(expected)), f"top gave {len(ids)} rows"
        else:
            assert got == expected, (
                f"SQL and Python disagree: {len(got - expected)} rows only from SQL, "
                f"{len(expected - got)} only from Python"
            )

    @staticmethod
    def check_order(query: Query, rows: list[Row]) -> None:
        if not rows or not query.orders:
            return
        order = query.orders[0]
        if order.entity is not None or order.column not in rows[0]:
            return
        values = [r[order.column] for r in rows]
        nulls = [v is None for v in values]
        where = "last" if order.descending else "first"
        assert nulls == sorted(nulls, reverse=not order.descending), (
            f"ordered by {order.column} {'desc' if order.descending else 'asc'}: its "
            f"{sum(nulls)} nulls are not {where} (nulls sort as the lowest value in Dataverse)"
        )
        keys = [loose_key(v) for v in values if v is not None]
        assert keys == sorted(keys, reverse=order.descending), f"not ordered by {order.column}"

    def expand(self, name: str, source: str, table: str, expands: tuple[Expand, ...]) -> None:
        """Single-valued ``$expand`` through ``Records.retrieve`` on the caller's first
        readable row (nothing in fieldsync runs collection-valued ones yet)."""
        pk = self.schema.table(table).primary_id
        for who, ctx in self.callers.items():
            label = f"{name} $expand as {who}"
            try:
                assert not any(e.collection for e in expands), "a collection-valued $expand"
                rows = self.readable(who, table)
                if not rows:
                    continue
                row = rows[0]
                got = self.records.retrieve(
                    table,
                    row[pk],
                    columns=[pk, *(e.lookup_column for e in expands)],
                    expand={e.lookup_column: e.columns for e in expands},
                    caller=ctx,
                )
                for e in expands:
                    self.check_expanded(
                        who, e, row[e.lookup_column], got[f"{e.lookup_column}@expand"]
                    )
                self.outcome.expanded += 1
            except Exception as exc:
                self.fail(label, source, exc)

    def check_expanded(self, who: str, e: Expand, value: Any, related: Row | None) -> None:
        target = self.schema.table(e.target_table)
        readable = {r[target.primary_id] for r in self.readable(who, target.name)}
        if value is None or value not in readable:
            assert related is None, f"{e.navigation}: expanded a row the caller may not read"
            return
        assert related is not None, f"{e.navigation}: the related row is missing"
        assert related[target.primary_id] == value
        assert set(e.columns or ()) <= set(related), f"{e.navigation}: columns missing"


@pytest.fixture
def runner(platform: Platform) -> Runner:
    seed_demo(platform, today=FIXED_DATE)
    return Runner(platform)


def test_fetchxml_corpus_runs(runner: Runner) -> None:
    for name, text in FETCHXML_CORPUS.items():
        source = adapt(text, FETCHXML_VALUES)
        runner.run(name, source, parse_fetchxml(source, runner.schema))
    outcome = runner.outcome
    print(outcome.summary("FetchXML", len(FETCHXML_CORPUS)))
    if outcome.failures:
        pytest.fail("\n\n".join(outcome.failures), pytrace=False)
    assert outcome.ran + outcome.forbidden == len(runner.callers) * len(FETCHXML_CORPUS)
    assert len(outcome.returning) * 3 >= len(FETCHXML_CORPUS), sorted(outcome.returning)


def test_odata_corpus_runs(runner: Runner) -> None:
    for name, (table, params) in ODATA_CORPUS.items():
        adapted = {k: adapt(v, ODATA_VALUES) for k, v in params.items()}
        source = f"{table} {adapted}"
        options = parse_query_options(adapted, runner.schema.table(table), runner.schema)
        runner.run(name, source, options.query)
        if options.expand:
            runner.expand(name, source, table, options.expand)
    outcome = runner.outcome
    print(outcome.summary("OData", len(ODATA_CORPUS)))
    if outcome.failures:
        pytest.fail("\n\n".join(outcome.failures), pytrace=False)
    assert outcome.ran + outcome.forbidden == len(runner.callers) * len(ODATA_CORPUS)
    assert len(outcome.returning) * 3 >= len(ODATA_CORPUS), sorted(outcome.returning)
