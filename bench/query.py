"""Cost of turning a query into SQL: a three-level filter with link filters, compiled to a
SQLAlchemy statement and to SQL text, on both dialects, next to the cost of building the
same statement by hand with SQLAlchemy (the baseline, measured in the same run).

    python bench/query.py [--repeat N] [--json PATH]

Target: compiling a three-level filter with links costs well under a millisecond.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from fieldsync.query.ast import (
    And,
    Condition,
    Link,
    LinkFilter,
    LinkType,
    Node,
    Op,
    Or,
    Query,
)
from fieldsync.query.bind import UserBinding, bind
from fieldsync.query.compile import compile_query
from fieldsync.schema.builtin import builtin_relationships, builtin_tables
from fieldsync.schema.model import Schema, Table
from fieldsync.store.ddl import build_sql_table

TARGET_MS = 1.0


def three_level_filter() -> Node:
    """The shape of a real offline custom filter: three levels, a link filter, user and date
    operators, lists and patterns."""
    urgent = Link(
        "workorder",
        "serviceaccountid",
        "accountid",
        type=LinkType.ANY,
        filter=And(
            (Condition("priority", Op.IN, (3, 4)), Condition("scheduledstart", Op.NEXT_X_DAYS, 7))
        ),
    )
    return And(
        (
            Condition("statecode", Op.EQ, 0),
            Or(
                (
                    Condition("ownerid", Op.EQ_USERORUSERTEAMS),
                    And(
                        (
                            Condition("address1_city", Op.IN, ("Leeds", "York", "Hull")),
                            Condition("name", Op.BEGINS_WITH, "North%"),
                            Condition("revenue", Op.GE, 1000),
                        )
                    ),
                    LinkFilter(urgent),
                )
            ),
            Condition("modifiedon", Op.LAST_X_DAYS, 30),
        )
    )


def timed(fn: Callable[[], object], repeat: int, inner: int = 200) -> float:
    """Best mean time of one call, in milliseconds."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        best = min(best, (time.perf_counter() - start) / inner)
    return best * 1000


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args(argv)

    schema = Schema(builtin_tables(), builtin_relationships())
    metadata = sa.MetaData()
    sql = {t.name: build_sql_table(t, metadata) for t in schema.tables.values()}

    def resolve(name: str) -> tuple[Table, sa.Table]:
        return schema.table(name), sql[name]

    user = UserBinding(
        user_id=uuid.uuid4(),
        business_unit_id=uuid.uuid4(),
        teams=frozenset({uuid.uuid4(), uuid.uuid4()}),
    )
    account = schema.table("account")
    node = three_level_filter()
    now = dt.datetime.now(dt.UTC)
    query = Query("account", columns=("name", "address1_city", "revenue"))

    def full() -> sa.Select[Any]:
        bound = bind(node, account, user=user, now=now, tables=schema.table)
        return compile_query(replace(query, filter=bound), resolve=resolve, dialect="postgresql")

    a, w = sql["account"], sql["workorder"]

    def by_hand() -> sa.Select[Any]:
        ids = [user.user_id, *sorted(user.teams)]
        exists = sa.exists(
            sa.select(sa.literal(1))
            .select_from(w.alias())
            .where(w.c.serviceaccountid == a.c.accountid, w.c.priority.in_((3, 4)))
        )
        return (
            sa.select(a.c.accountid, a.c.name, a.c.address1_city, a.c.revenue)
            .where(
                a.c.statecode == 0,
                sa.or_(
                    a.c.ownerid.in_(ids),
                    sa.and_(
                        sa.func.lower(a.c.address1_city).in_(("leeds", "york", "hull")),
                        sa.func.lower(a.c.name).like("north%"),
                        a.c.revenue >= 1000,
                    ),
                    exists,
                ),
                a.c.modifiedon >= now,
            )
            .order_by(a.c.accountid)
        )

    figures: dict[str, float] = {}
    figures["bind"] = timed(
        lambda: bind(node, account, user=user, now=now, tables=schema.table), args.repeat
    )
    figures["bind + compile to statement"] = timed(full, args.repeat)
    figures["hand-built statement (baseline)"] = timed(by_hand, args.repeat)
    for name, dialect in (("postgresql", postgresql.dialect()), ("sqlite", sqlite.dialect())):
        figures[f"statement -> SQL text ({name})"] = timed(
            lambda d=dialect: str(full().compile(dialect=d)), args.repeat, inner=50
        )
        figures[f"baseline -> SQL text ({name})"] = timed(
            lambda d=dialect: str(by_hand().compile(dialect=d)), args.repeat, inner=50
        )
    base = figures["hand-built statement (baseline)"]
    print(f"{'step':44} {'ms':>8} {'vs baseline':>12}")
    for name, ms in figures.items():
        print(f"{name:44} {ms:8.3f} {ms / base:12.2f}")
    ours = figures["bind + compile to statement"]
    verdict = "met" if ours < TARGET_MS else "MISSED"
    print(
        f"\nthree-level filter with links, bind + compile: {ours:.3f} ms "
        f"(target < {TARGET_MS} ms: {verdict})"
    )
    report = {
        "figures_ms": figures,
        "target_ms": TARGET_MS,
        "met": ours < TARGET_MS,
        "median_ms": statistics.median(figures.values()),
    }
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(report, fh, indent=2)
    return report


if __name__ == "__main__":
    main()
