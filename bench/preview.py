"""Publish preview at scale: 1,000 users x 10 tables over 1M rows, against the time it takes to
count every user's published scope one user at a time (load the context, build the scope
statements, count; no draft) in the same run.

    python bench/preview.py                       # PostgreSQL (FIELDSYNC_BENCH_POSTGRES_URL
                                                  #   or the test URL), 1M rows, 1,000 users
    python bench/preview.py --rows 100000 --users 100 --sqlite   # quicker, SQLite too
    python bench/preview.py --keep        # then: --reuse URL (the printed one) times again

The organisation (``scope_world.py``): ten custom user-owned tables, users reading their own
rows (user depth), 100 rows per user per table. The published profile takes each table's rows
the user owns; the draft narrows two tables with a custom filter (``new_amount lt 50``, half
their rows move out) and keeps eight, so the preview counts ten tables per user and computes
the rows moving in and out of the two that changed.

The preview is timed cold: no security context cached before it (the CLI, the portal and the
bound action pass the platform's context cache, which a second preview would reuse).

Printed: seeding time; per round (``--repeat``, 3 by default) the baseline (every user's ten
published counts) and the preview of all 1,000 users, computed, not sampled; then the medians,
per-user and per-query averages, the ratio, and whether the preview stays under a minute.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from scope_world import amount_below, custom_item, profile_yaml, seed, table_names
from scratch import ScratchDatabases

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"
LIMIT_SECONDS = 60.0


def items(names: list[str], narrowed: int) -> dict[str, str]:
    out = {}
    for i, name in enumerate(names):
        if i < narrowed:
            fetch = amount_below(name, 50).replace(
                "<filter>",
                '<filter><condition attribute="ownerid" operator="eq-userid" />',
            )
            out[name] = custom_item(name, fetch)
        else:
            out[name] = "filter: other\nowned_by: [me]"
    return out


def run(name: str, url: str, args: argparse.Namespace) -> dict[str, float]:
    from fieldsync.platform import build
    from fieldsync.store.store import Store
    from fieldsync.sync.preview import preview_profile

    p = build(Store.open(url))
    try:
        names = table_names(args.tables)
        if args.reuse:
            users = [p.org.user_id(f"user{i}") for i in range(args.users)]
            print(f"[{name}] reusing {url}", flush=True)
        else:
            t = time.perf_counter()
            users = seed(p, tables=args.tables, rows=args.rows, users=args.users)
            print(
                f"[{name}] seeded {args.rows:,} rows, {args.users:,} users in "
                f"{time.perf_counter() - t:.1f} s",
                flush=True,
            )
            p.offline.import_yaml(profile_yaml("Bench preview", "preview", items(names, 0)))
            p.offline.publish(p.offline.profile_id("Bench preview"))
            p.offline.import_yaml(profile_yaml("Bench preview", "preview", items(names, 2)))
        profile = p.offline.profile_id("Bench preview")

        # each round: the baseline, then the preview, so both see the same load
        baselines, previews = [], []
        for round_ in range(1, args.repeat + 1):
            baseline, total = published_counts(p, profile, users)
            baselines.append(baseline)
            print(
                f"[{name}] round {round_}: baseline {baseline:.1f} s ({len(users):,} users' "
                f"published counts, {total:,} rows in scope in all)",
                flush=True,
            )
            t = time.perf_counter()
            preview = preview_profile(p.records, profile, sample=len(users))
            seconds = time.perf_counter() - t
            previews.append(seconds)
            moved = sum(u.to_json()["moving_out"] for u in preview.users)
            print(
                f"[{name}] round {round_}: preview {seconds:.1f} s ({len(preview.users):,} "
                f"users computed, {moved:,} rows would move out); ratio {seconds / baseline:.2f}",
                flush=True,
            )
        baseline, seconds = statistics.median(baselines), statistics.median(previews)
        queries = len(users) * (args.tables + 2 * 3)
        print(
            f"[{name}] median of {args.repeat}: preview of {len(users):,} users x {args.tables} "
            f"tables over {args.rows:,} rows {seconds:.1f} s ({seconds / len(users) * 1000:.1f} "
            f"ms per user, ~{seconds / queries * 1000:.2f} ms per counting query); baseline "
            f"{baseline:.1f} s; ratio to the baseline {seconds / baseline:.2f}",
            flush=True,
        )
        verdict = "under" if seconds < LIMIT_SECONDS else "OVER"
        print(f"[{name}] {verdict} the {LIMIT_SECONDS:.0f} s goal", flush=True)
        return {"baseline": baseline, "preview": seconds}
    finally:
        p.close()


def published_counts(p: Any, profile: Any, users: list[Any]) -> tuple[float, int]:
    """Seconds to count every user's published scope the plain way, and the rows counted."""
    import datetime as dt

    import sqlalchemy as sa

    from fieldsync.query.ast import Query
    from fieldsync.security.context import load_context, user_binding
    from fieldsync.sync.scope import build_plan

    store, records = p.store, p.records
    t = time.perf_counter()
    now = dt.datetime.now(dt.UTC)
    plan = build_plan(p.offline.published_profile(profile), store.schema)
    total = 0
    with store.read() as conn:
        for uid in users:
            ctx = load_context(store, uid, conn)
            binding = user_binding(store, conn, ctx)
            counts = []
            for table in plan.order:
                query = Query(
                    table=table,
                    columns=(plan.plan(table).table.primary_id,),
                    filter=plan.node(table),
                )
                stmt = records.query_statement(
                    query, caller=ctx, now=now, conn=conn, binding=binding
                ).order_by(None)
                counts.append(sa.select(sa.func.count()).select_from(stmt.subquery()))
            row = conn.execute(sa.select(*(c.scalar_subquery() for c in counts))).one()
            total += sum(row)
    return time.perf_counter() - t, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--tables", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3, help="Rounds timed (medians printed).")
    parser.add_argument("--sqlite", action="store_true", help="Run on SQLite as well.")
    parser.add_argument("--no-pg", action="store_true", help="Skip PostgreSQL.")
    parser.add_argument("--keep", action="store_true", help="Keep the seeded PostgreSQL schema.")
    parser.add_argument("--reuse", metavar="URL", help="Time again on a kept schema's URL.")
    args = parser.parse_args()
    pg = os.environ.get("FIELDSYNC_BENCH_POSTGRES_URL") or os.environ.get(
        "FIELDSYNC_TEST_POSTGRES_URL", DEFAULT_PG
    )
    if args.sqlite:
        with ScratchDatabases.sqlite() as dbs:
            url = dbs.url("preview")
            run("sqlite", url, args)
            dbs.discard(url)
    if args.reuse:
        run("postgresql", args.reuse, args)
    elif not args.no_pg:
        with ScratchDatabases.postgres(pg) as dbs:
            url = dbs.url("preview")
            run("postgresql", url, args)
            if args.keep:
                print(f"kept for --reuse: {url}", flush=True)
                dbs._schemas.pop(url, None)  # not dropped at the end
            else:
                dbs.discard(url)


if __name__ == "__main__":
    main()
