"""The Web API through Microsoft's Python SDK, against a plain SQLAlchemy read in the same run.

    python bench/webapi.py              # SQLite and PostgreSQL, 100k rows
    python bench/webapi.py --no-pg --rows 20000

A real ``fieldsync serve`` process over HTTPS (a development certificate made for the run) on
a scratch database with ``--rows`` accounts; the SDK (``PowerPlatform-Dataverse-Client``)
signed in with an API token. Printed: single-record creates and single-record queries per
second (one round trip each), and rows/s paging every account through the SDK
(``records.list_pages``, 5,000 per page), next to reading the same rows with SQLAlchemy
straight from the database; and the median time of a full page early and late in the listing
(medians of the first and the last third of the full pages: keyset paging keeps a late
page as cheap as an early one).
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from scratch import ScratchDatabases
from sync import Server, add_accounts


class StaticTokenCredential:
    def __init__(self, token: str) -> None:
        self._token = token

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        from azure.core.credentials import AccessToken

        return AccessToken(self._token, int(time.time()) + 3600)


def seed(url: str, rows: int) -> str:
    """An administrator and ``rows`` accounts; returns an API token."""
    from fieldsync.platform import build
    from fieldsync.security.roles import SYSTEM_ADMINISTRATOR
    from fieldsync.store.store import Store

    p = build(Store.open(url))
    try:
        admin = p.org.user("admin", roles=[p.org.role_id(SYSTEM_ADMINISTRATOR)])
        add_accounts(p, 0, rows, lambda i: admin)
        _, token = p.auth.create_api_token(admin, "bench")
        return token
    finally:
        p.close()


def sqlalchemy_read(url: str) -> float:
    """Rows/s reading every account with SQLAlchemy Core (the same columns, typed)."""
    from fieldsync.store.store import Store

    store = Store.open(url, upgrade=False)
    try:
        sql = store.sql_table("account")
        start = time.perf_counter()
        with store.read() as conn:
            n = sum(1 for _ in conn.execute(sql.select()))
        return n / (time.perf_counter() - start)
    finally:
        store.close()


def run_backend(name: str, url: str, rows: int, repeat: int, results: dict[str, float]) -> None:
    from PowerPlatform.Dataverse.client import DataverseClient

    from fieldsync.devcert import make_dev_certificate

    token = seed(url, rows)
    tls = make_dev_certificate(Path(tempfile.mkdtemp(prefix="fieldsync-bench-tls-")))
    os.environ["REQUESTS_CA_BUNDLE"] = str(tls.ca)
    server = Server(url, tls=tls)
    try:
        with DataverseClient(server.url, StaticTokenCredential(token)) as client:
            client.records.create("account", {"name": "warm-up"})  # metadata caches
            start = time.perf_counter()
            ids = [client.records.create("account", {"name": f"Single {i}"}) for i in range(repeat)]
            creates = repeat / (time.perf_counter() - start)
            start = time.perf_counter()
            for i in range(repeat):
                found = client.records.list(
                    "account", select=["name"], filter=f"accountid eq {ids[i]}"
                )
                assert len(found) == 1
            queries = repeat / (time.perf_counter() - start)
            start = time.perf_counter()
            seen, marks = 0, [start]
            for page in client.records.list_pages("account", page_size=5000):
                seen += len(page.records)
                marks.append(time.perf_counter())
            paging = seen / (marks[-1] - start)
            spans = [b - a for a, b in itertools.pairwise(marks)]
        baseline = sqlalchemy_read(url)
    finally:
        server.stop()
    results[f"{name} creates/s"] = creates
    results[f"{name} queries/s"] = queries
    results[f"{name} paging rows/s"] = paging
    results[f"{name} SQLAlchemy rows/s"] = baseline
    # full pages only (the last is partial): the first third against the last
    full = spans[:-1] if len(spans) > 1 else spans
    third = max(1, len(full) // 3)
    early, late = statistics.median(full[:third]), statistics.median(full[-third:])
    results[f"{name} early page ms"] = early * 1000
    results[f"{name} late page ms"] = late * 1000
    print(
        f"[{name}] single creates {creates:,.0f}/s, single queries {queries:,.0f}/s, "
        f"paging {seen:,} rows through the SDK {paging:,.0f} rows/s vs SQLAlchemy "
        f"{baseline:,.0f} rows/s ({paging / baseline:.2f}x); a full page in the first third "
        f"{early * 1000:.0f} ms, in the last {late * 1000:.0f} ms ({late / early:.2f}x)",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=200, help="single-record round trips")
    parser.add_argument("--no-pg", action="store_true")
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    results: dict[str, float] = {}
    backends = [("sqlite", ScratchDatabases.sqlite())]
    if not args.no_pg:
        backends.append(("postgresql", ScratchDatabases.postgres(args.pg)))
    for name, scratch in backends:
        with scratch:
            run_backend(name, scratch.url("webapi"), args.rows, args.repeat, results)
    print("\nsummary")
    for key, value in results.items():
        print(f"  {key:32} {value:12,.0f}")


if __name__ == "__main__":
    main()
