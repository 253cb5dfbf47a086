"""Why a row is (or is not) on a device: the scope of one row, step by step.

The verdict is the download's own query (the table's scope node under the user's read guard,
limited to the one row), so it cannot disagree with what sync sends. The steps take the same
pieces apart: the read paths of :func:`fieldsync.security.predicate.privilege_paths` (whose
union is the read guard), the item's download filter (each condition of a custom filter with
the row's value and its result) and each selected relationship, with the related rows in
scope that bring the row in. Every step is a query through the same compiler.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from fieldsync.offline.snapshot import Distribution, ItemSnapshot
from fieldsync.query.ast import And, Condition, LinkFilter, Node, Not, Op, Or, Query
from fieldsync.query.bind import bind
from fieldsync.records.pipeline import SYSTEM
from fieldsync.records.service import Records
from fieldsync.schema.model import Table
from fieldsync.security.context import user_binding
from fieldsync.security.model import Privilege, SecurityContext
from fieldsync.security.predicate import privilege_paths
from fieldsync.sync.scope import Edge, ScopePlan

MAX_RELATED = 5  # related rows named per relationship


@dataclass
class Step:
    """One reason: what was checked, whether it held, and the details."""

    check: str  # readable | filter | condition | related
    ok: bool
    detail: str
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"check": self.check, "ok": self.ok, "detail": self.detail, **self.data}


@dataclass
class Explanation:
    table: str
    id: str
    in_scope: bool
    readable: bool
    matched: bool
    steps: list[Step]

    def to_json(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "id": self.id,
            "in_scope": self.in_scope,
            "readable": self.readable,
            "matched": self.matched,
            "steps": [s.to_json() for s in self.steps],
        }


class Explainer:
    """Explains rows of one user's scope on one published profile."""

    def __init__(
        self,
        records: Records,
        plan: ScopePlan,
        ctx: SecurityContext,
        conn: sa.Connection,
        *,
        now: dt.datetime | None = None,
    ) -> None:
        self.records = records
        self.plan = plan
        self.ctx = ctx
        self.conn = conn
        self.now = now or dt.datetime.now(dt.UTC)
        self.schema = records.store.schema
        self._user = user_binding(records.store, conn, ctx)

    # -- the questions, each one query through the compiler ------------------------------

    def _ids(
        self, table: Table, node: Node, *, guarded: bool, top: int | None = None
    ) -> list[uuid.UUID]:
        """Ids of ``table`` passing ``node``: under the user's read guard (as sync reads),
        or as the system (a bound node only, no guard)."""
        query = Query(table=table.name, columns=(table.primary_id,), filter=node, top=top)
        caller = self.ctx if guarded else SYSTEM
        stmt = self.records.query_statement(query, caller=caller, now=self.now, conn=self.conn)
        return [r[0] for r in self.conn.execute(stmt)]

    def _bound(self, node: Node, table: Table) -> Node:
        return bind(node, table, user=self._user, now=self.now, tables=self.schema.table)

    def _holds(self, table: Table, row_id: uuid.UUID, node: Node, *, guarded: bool) -> bool:
        this = Condition(table.primary_id, Op.EQ, row_id)
        return bool(self._ids(table, And((self._bound(node, table), this)), guarded=guarded))

    def in_scope(self, table: str, row_id: uuid.UUID) -> bool:
        """The verdict: the download's own scope node, as the user, for this one row."""
        t = self.schema.table(table)
        return self._holds(t, row_id, self.plan.node(table), guarded=True)

    def readable(self, table: str, row_id: uuid.UUID) -> bool:
        t = self.schema.table(table)
        return self._holds(t, row_id, Condition(t.primary_id, Op.NOT_NULL), guarded=True)

    # -- the explanation ------------------------------------------------------------------

    def explain(self, table: str, row_id: uuid.UUID) -> Explanation:
        tp = self.plan.plan(table)
        t = tp.table
        steps: list[Step] = []
        row = self._row(t, row_id)

        # 1. readable, and by which paths
        paths = privilege_paths(self.ctx, t, Privilege.READ)
        held = [name for name, node in paths if self._holds(t, row_id, node, guarded=False)]
        passed = list(dict.fromkeys(held))  # two roles may reach by the same path
        readable = bool(passed)
        if readable:
            detail = "readable through " + ", ".join(_PATHS.get(p, p) for p in passed)
        elif not paths:
            detail = f"the user's roles give no read privilege on {table!r}"
        else:
            detail = "not readable: no role, team, business unit, share or hierarchy reaches it"
        steps.append(Step("readable", readable, detail, {"paths": passed}))

        # 2. the item's own download filter
        matched_filter = self._holds(t, row_id, tp.filter, guarded=False)
        steps.append(Step("filter", matched_filter, _filter_text(tp.item, matched_filter)))
        if tp.item.distribution is Distribution.CUSTOM and row is not None:
            for node in _leaves(tp.filter):
                steps.append(self._condition(t, row_id, row, node))

        # 3. the relationships that bring rows in
        related_any = False
        for edge in tp.edges:
            step = self._related(t, row_id, row, edge)
            related_any = related_any or step.ok
            steps.append(step)

        in_scope = self.in_scope(table, row_id)
        return Explanation(
            table=table,
            id=str(row_id),
            in_scope=in_scope,
            readable=readable,
            matched=matched_filter or related_any,
            steps=steps,
        )

    def _row(self, t: Table, row_id: uuid.UUID) -> dict[str, Any] | None:
        sql = self.records.store.sql_table(t.name)
        found = self.conn.execute(sa.select(sql).where(sql.c[t.primary_id] == row_id)).first()
        return None if found is None else dict(found._mapping)

    def _condition(self, t: Table, row_id: uuid.UUID, row: dict[str, Any], node: Node) -> Step:
        ok = self._holds(t, row_id, node, guarded=False)
        if isinstance(node, Condition):
            value = row.get(node.column)
            text = f"{node.column} {node.op.value}"
            if node.value is not None:
                text += f" {_show(node.value)}"
            return Step(
                "condition",
                ok,
                f"{text}: the row has {_show(value)}",
                {
                    "attribute": node.column,
                    "operator": node.op.value,
                    "value": _show(node.value),
                    "row_value": _show(value),
                },
            )
        if isinstance(node, LinkFilter):
            return Step(
                "condition",
                ok,
                f"related {node.link.table} rows ({node.link.type.value})",
                {"link": node.link.table},
            )
        return Step("condition", ok, "a nested condition group")

    def _related(self, t: Table, row_id: uuid.UUID, row: dict[str, Any] | None, e: Edge) -> Step:
        other = self.schema.table(e.other)
        ok = self._holds(t, row_id, self.plan.related_node(e), guarded=True)
        through: list[str] = []
        if ok and row is not None:
            through = [str(i) for i in self._sources(t, row_id, row, e, other)]
        if ok:
            detail = f"related to {e.other} rows in scope through {e.column}: " + ", ".join(through)
        else:
            detail = f"no {e.other} row in scope is related through {e.column}"
        return Step(
            "related",
            ok,
            detail,
            {"relationship": e.column, "other": e.other, "kind": e.kind, "rows": through},
        )

    def _sources(
        self, t: Table, row_id: uuid.UUID, row: dict[str, Any], e: Edge, other: Table
    ) -> list[uuid.UUID]:
        """The rows of the other table, in its scope, that bring this row in."""
        scope = self.plan.node(e.other)
        if e.kind == "lookup":
            target = row.get(e.column)
            if target is None:
                return []
            wanted: Node = Condition(other.primary_id, Op.EQ, target)
        elif e.kind == "reverse":
            wanted = Condition(e.column, Op.EQ, row_id)
        else:
            sql = self.records.store.sql_table(e.intersect)
            linked = [
                r[0]
                for r in self.conn.execute(
                    sa.select(sql.c[e.other_column]).where(sql.c[e.column] == row_id)
                )
            ]
            if not linked:
                return []
            wanted = Condition(other.primary_id, Op.IN, tuple(linked))
        return self._ids(
            other, And((self._bound(scope, other), wanted)), guarded=True, top=MAX_RELATED
        )


_PATHS = {
    "owner": "the user's own rows (user depth)",
    "team": "a team's role (rows the team owns)",
    "businessunit": "the business unit (business unit depth)",
    "parentchild": "the business unit and the units below (parent-child depth)",
    "organization": "organization depth",
    "share": "a share with the user or one of their teams",
    "hierarchy": "the manager hierarchy",
    "administrator": "the System Administrator role",
    "system": "the system account",
}


def _filter_text(item: ItemSnapshot, ok: bool) -> str:
    d = item.distribution
    if d is Distribution.OTHER:
        owners = [
            name
            for name, on in (
                ("the user", item.owned_by_me),
                ("the user's teams", item.owned_by_my_teams),
                ("the user's business unit", item.owned_by_my_business_unit),
            )
            if on
        ]
        what = "rows owned by " + " or ".join(owners)
    else:
        what = {
            Distribution.RELATED: "related rows only: the filter itself matches no row",
            Distribution.ALL: "all rows",
            Distribution.CUSTOM: "the custom filter",
        }[d]
    return f"download filter ({what}): {'matches' if ok else 'does not match'}"


def _leaves(node: Node) -> Iterator[Node]:
    """The conditions and link filters of a filter, in order (groups opened)."""
    if isinstance(node, (And, Or)):
        for item in node.items:
            yield from _leaves(item)
    elif isinstance(node, Not):
        yield from _leaves(node.item)
    elif isinstance(node, (Condition, LinkFilter)):
        yield node


def _show(value: Any) -> Any:
    if isinstance(value, (uuid.UUID, dt.date, dt.datetime)):
        return str(value)
    if isinstance(value, (tuple, list)):
        return [_show(v) for v in value]
    return value
