"""Live sync's one decision: which of a device's tables to name when changes land.

A device on profile P, signed in as user U, hears of a change to table W when

1. W is *watched* by one of P's tables T (W is T itself, or a table whose changes can move
   T's rows in or out: record shares, related tables; see :mod:`fieldsync.sync.scope`); the
   notice then names every such T; and
2. U may read the changed row before the change or after it (``readable(U, W)`` evaluated on
   the row's owner and business unit), when W is one of P's tables. A row U cannot read
   before or after is in none of U's scopes, and moves none of U's related rows, because the
   read guard sits at the root of every scope and inside every relationship.

The check errs on the side of telling: shares, a missing owner, a table outside the profile or
a change too large to inspect row by row all count as "may read". A notice names tables only,
never rows or versions; the device then syncs those tables and the download decides, exactly,
what it may see. The user's security context is the one at connect time: a change to it shows
on the next sync (the interval floor) or reconnect.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from fieldsync.query.ast import And, Condition, Const, Node, Op, Or
from fieldsync.security.model import SecurityContext
from fieldsync.security.predicate import readable
from fieldsync.store.notify import ALL_TABLES, AUDIENCE_COLUMNS, Touch
from fieldsync.sync.scope import ScopePlan


class Interest:
    """What one (user, published profile) hears about; shared by the user's devices."""

    def __init__(self, plan: ScopePlan, ctx: SecurityContext, key: Any = None) -> None:
        self.key = key
        self.tables = frozenset(plan.tables)
        targets: dict[str, set[str]] = defaultdict(set)
        for name, tp in plan.tables.items():
            for watched in {name, *tp.watched}:
                targets[watched].add(name)
        self.targets = {k: frozenset(v) for k, v in targets.items()}
        self.guards: dict[str, Node] = {
            name: readable(ctx, tp.table) for name, tp in plan.tables.items()
        }

    def notice(self, touches: Iterable[Touch]) -> frozenset[str]:
        """The profile tables to name for these changes (empty: say nothing)."""
        out: set[str] = set()
        for touch in touches:
            if touch.table == ALL_TABLES:
                return self.tables
            targets = self.targets.get(touch.table)
            if targets is None or targets <= out:
                continue
            if self.may_read(touch):
                out |= targets
        return frozenset(out)

    def audience(self, table: str) -> frozenset[tuple[str, Any]] | None:
        """The (column, value) pairs of which a row of ``table`` must carry one for
        :meth:`may_read` to pass, when its image holds those columns; None when that cannot be
        told (every change to the table must then be checked). An index, not the decision:
        :meth:`may_read` still decides for every candidate it finds."""
        guard = self.guards.get(table)
        if guard is None:
            return None
        return _audience(guard)

    def may_read(self, touch: Touch) -> bool:
        guard = self.guards.get(touch.table)
        if guard is None:
            return True  # a watched table outside the profile: shares, intersects
        if isinstance(guard, Const):
            return guard.value
        if not touch.known or not touch.images:
            return True
        return any(passes(guard, image) for image in touch.images)


def passes(node: Node, image: Mapping[str, Any]) -> bool:
    """Whether a row with these owner and business unit values may pass ``node``; anything
    the image cannot decide passes."""
    if isinstance(node, Const):
        return node.value
    if isinstance(node, Or):
        return any(passes(n, image) for n in node.items)
    if isinstance(node, And):
        return all(passes(n, image) for n in node.items)
    if isinstance(node, Condition) and node.entity is None and node.op in (Op.EQ, Op.IN):
        value = image.get(node.column)
        if value is None:
            return True
        values = node.value if node.op is Op.IN else (node.value,)
        return any(_same(value, v) for v in values)
    return True


def _audience(node: Node) -> frozenset[tuple[str, Any]] | None:
    if isinstance(node, Const):
        return None if node.value else frozenset()
    if isinstance(node, Or):
        out: set[tuple[str, Any]] = set()
        for item in node.items:
            part = _audience(item)
            if part is None:
                return None
            out |= part
        return frozenset(out)
    if (
        isinstance(node, Condition)
        and node.entity is None
        and node.op in (Op.EQ, Op.IN)
        and node.column in AUDIENCE_COLUMNS
    ):
        values = node.value if node.op is Op.IN else (node.value,)
        return frozenset((node.column, audience_key(v)) for v in values)
    return None


def audience_key(value: Any) -> Any:
    """A value as an image holds it (images hold ids as UUIDs): what :func:`_same` equates."""
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return value


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, uuid.UUID) and not isinstance(b, uuid.UUID):
        try:
            b = uuid.UUID(str(b))
        except ValueError:
            return False
    return bool(a == b)
