"""Binding a filter to its caller and its moment: the user operators (``eq-userid``,
``eq-userteams``, the hierarchy, the business unit, the language) become conditions on ids,
and the date operators (``today``, ``last-x-days``, ``this-month``, ``on``, …) become ranges
in UTC. After binding, a filter holds only plain operators, which the SQL compiler and the
Python evaluator share.

Date ranges: a day runs from 00:00 UTC to the next 00:00; weeks start on Sunday (Dataverse's
default for English); ``last-x-days`` is from the start of the day X days ago until now,
``next-x-days`` from now until the end of the day X days ahead, ``last-x-hours`` and
``next-x-hours`` are X hours back or ahead of now, ``older-x-days`` is before now minus X
days. On date-only columns the same ranges compare dates.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from fieldsync.errors import QueryError
from fieldsync.query.ast import (
    FALSE,
    And,
    ColumnCompare,
    Condition,
    Const,
    LinkFilter,
    Node,
    Not,
    Op,
    Or,
    Shared,
    all_of,
    any_of,
    is_in,
    negate,
)
from fieldsync.query.operators import DATE_OPS, USER_OPS, Binds, spec
from fieldsync.schema.model import ColumnType, Table
from fieldsync.types import RecordId

WEEK_START = 6  # Sunday (Monday is 0)


@dataclass(frozen=True)
class UserBinding:
    """What the user operators need about the caller. ``hierarchy`` lists the users below
    the caller (every level); ``hierarchy_teams`` the teams of the caller and those users."""

    user_id: RecordId
    business_unit_id: RecordId
    teams: frozenset[RecordId] = frozenset()
    hierarchy: frozenset[RecordId] = frozenset()
    hierarchy_teams: frozenset[RecordId] = frozenset()
    language: int = 1033


def _day(moment: dt.datetime) -> dt.datetime:
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


def date_range(
    op: Op, value: object, now: dt.datetime
) -> tuple[dt.datetime | None, dt.datetime | None]:
    """The half-open UTC range [start, end) a date operator means (``None``: unbounded)."""
    now = now.astimezone(dt.UTC)
    today = _day(now)
    one = dt.timedelta(days=1)
    if op is Op.TODAY:
        return today, today + one
    if op is Op.YESTERDAY:
        return today - one, today
    if op is Op.TOMORROW:
        return today + one, today + 2 * one
    if op in (Op.LAST_X_DAYS, Op.NEXT_X_DAYS, Op.LAST_X_HOURS, Op.NEXT_X_HOURS, Op.OLDER_X_DAYS):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise QueryError(f"{op.value} needs a whole number of days or hours, got {value!r}")
        if op is Op.LAST_X_DAYS:
            return today - value * one, now + dt.timedelta(microseconds=1)
        if op is Op.NEXT_X_DAYS:
            return now, today + (value + 1) * one
        if op is Op.LAST_X_HOURS:
            return now - dt.timedelta(hours=value), now + dt.timedelta(microseconds=1)
        if op is Op.NEXT_X_HOURS:
            return now, now + dt.timedelta(hours=value)
        return None, now - value * one
    if op is Op.THIS_WEEK:
        start = today - dt.timedelta(days=(today.weekday() - WEEK_START) % 7)
        return start, start + 7 * one
    if op is Op.THIS_MONTH:
        start = today.replace(day=1)
        following = (start + 32 * one).replace(day=1)
        return start, following
    if op is Op.THIS_YEAR:
        start = today.replace(month=1, day=1)
        return start, start.replace(year=start.year + 1)
    if op in (Op.ON, Op.ON_OR_BEFORE, Op.ON_OR_AFTER):
        if isinstance(value, dt.datetime):
            value = value.date()
        if not isinstance(value, dt.date):
            raise QueryError(f"{op.value} needs a date (YYYY-MM-DD), got {value!r}")
        start = dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC)
        if op is Op.ON:
            return start, start + one
        if op is Op.ON_OR_BEFORE:
            return None, start + one
        return start, None
    raise AssertionError(op)  # pragma: no cover


def _range(column: str, entity: str | None, start: object, end: object) -> Node:
    parts: list[Node] = []
    if start is not None:
        parts.append(Condition(column, Op.GE, start, entity))
    if end is not None:
        parts.append(Condition(column, Op.LT, end, entity))
    return all_of(parts)


def bind(
    node: Node,
    table: Table,
    *,
    user: UserBinding | None,
    now: dt.datetime,
    tables: Callable[[str], Table] | None = None,
    aliases: Mapping[str, str] | None = None,
) -> Node:
    """``node`` with every user and date operator replaced by plain conditions.

    ``table`` is the table the filter belongs to; ``aliases`` maps the aliases of joined
    tables to table names and ``tables`` finds a table by name (needed for conditions on
    joined tables and for link filters)."""
    aliases = aliases or {}

    def table_of(entity: str | None, current: Table) -> Table:
        if entity is None:
            return current
        if tables is None or entity not in aliases:
            raise QueryError(f"unknown entity alias {entity!r}")
        return tables(aliases[entity])

    def walk(n: Node, current: Table) -> Node:
        if isinstance(n, (Const, Shared, ColumnCompare)):
            return n
        if isinstance(n, And):
            return all_of(walk(i, current) for i in n.items)
        if isinstance(n, Or):
            return any_of(walk(i, current) for i in n.items)
        if isinstance(n, Not):
            return negate(walk(n.item, current))
        if isinstance(n, LinkFilter):
            if tables is None:
                raise QueryError("link filters need the schema to bind")
            inner = tables(n.link.table)
            f = None if n.link.filter is None else walk(n.link.filter, inner)
            return LinkFilter(replace(n.link, filter=f))
        if n.op in USER_OPS:
            return _user(n, user)
        if n.op in DATE_OPS:
            target = table_of(n.entity, current)
            col = target.column(n.column)
            start, end = date_range(n.op, n.value, now)
            if col is not None and col.type is ColumnType.DATE:
                return _range(n.column, n.entity, start and start.date(), end and end.date())
            return _range(n.column, n.entity, start, end)
        return n

    return walk(node, table)


def _user(n: Condition, user: UserBinding | None) -> Node:
    if user is None:
        raise QueryError(f"{n.op.value} needs a signed-in user")
    col, ent = n.column, n.entity
    binding = spec(n.op)
    single = {
        Binds.USER: user.user_id,
        Binds.BUSINESS_UNIT: user.business_unit_id,
        Binds.LANGUAGE: user.language,
    }
    if binding.binds in single:
        return Condition(col, Op.NE if binding.negated else Op.EQ, single[binding.binds], ent)
    if binding.binds is Binds.TEAMS:
        ids = sorted(user.teams)
    elif binding.binds is Binds.USER_OR_TEAMS:
        ids = [user.user_id, *sorted(user.teams)]
    elif binding.binds is Binds.USER_OR_HIERARCHY:
        ids = [user.user_id, *sorted(user.hierarchy)]
    else:
        ids = [user.user_id, *sorted(user.hierarchy), *sorted(user.teams | user.hierarchy_teams)]
    found = is_in(col, ids)
    if isinstance(found, Condition):
        return replace(found, entity=ent)
    return FALSE
