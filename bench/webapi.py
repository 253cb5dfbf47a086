"""The Web API through Microsoft's Python SDK, against plain baselines measured in the same run.

    python bench/webapi.py              # SQLite and PostgreSQL, 100k rows, 1 and 4 clients
    python bench/webapi.py --no-pg --rows 20000 --clients 3

A real ``fieldsync serve`` process over HTTPS (a development certificate made for the run) on
a scratch database with ``--rows`` accounts; the SDK (``PowerPlatform-Dataverse-Client``)
signed in with an API token. Printed:

- single-record round trips per second: creates (``records.create``), retrieves by id
  (``records.retrieve``) and one-row queries (``records.list`` filtered on the id), first from
  one client, then from ``--clients`` client processes at once (the SDK spends over a
  millisecond of CPU per call, so one closed-loop client cannot load the server); beside
  them the same clients' plain HTTPS ``GET /health`` through ``requests`` (the floor of the
  stack: TLS, HTTP, one ``SELECT 1``), and the server process's CPU per request, the figure
  to trust when the machine is busy (the ceiling one server process can reach is its
  inverse);
- rows/s paging every account through the SDK (``records.list_pages``, 5,000 per page),
  next to reading the same rows with SQLAlchemy straight from the database, and the server's
  CPU per 1,000 rows paged; the median time of a full page early and late in the listing
  (medians of the first and the last third of the full pages: keyset paging keeps a late
  page as cheap as an early one).

Each timed figure is the median of ``--runs`` runs.
"""

from __future__ import annotations

import argparse
import itertools
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from scratch import ScratchDatabases
from sync import Server, add_accounts

OPERATIONS = ("health", "create", "retrieve", "query")


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


def operation(
    client: Any, server: str, token: str, name: str, ids: list[str]
) -> Callable[[int], Any]:
    """One round trip of ``name``; ``i`` picks the row (retrieve, query) or names it (create)."""
    if name == "health":
        import requests

        session = requests.Session()
        return lambda i: session.get(f"{server}/health").raise_for_status()
    if name == "create":
        return lambda i: client.records.create("account", {"name": f"Single {os.getpid()} {i}"})
    if name == "retrieve":

        def retrieve(i: int) -> None:
            found = client.records.retrieve("account", ids[i % len(ids)], select=["name"])
            assert found is not None

        return retrieve

    def query(i: int) -> None:
        row = ids[i % len(ids)]
        found = client.records.list("account", select=["name"], filter=f"accountid eq {row}")
        assert len(found) == 1

    return query


def client_process(
    server: str,
    token: str,
    ca: str,
    ids: list[str],
    repeat: int,
    barrier: Any,
    results: Any,
) -> None:
    """A client process: each operation ``repeat`` times, started together with the others
    (the barrier), its seconds per operation sent back."""
    os.environ["REQUESTS_CA_BUNDLE"] = ca
    from PowerPlatform.Dataverse.client import DataverseClient

    with DataverseClient(server, StaticTokenCredential(token)) as client:
        client.records.create("account", {"name": "warm-up"})  # metadata caches
        client.records.retrieve("account", ids[0], select=["name"])
        for name in OPERATIONS:
            run = operation(client, server, token, name, ids)
            run(0)  # warm
            barrier.wait()
            start = time.perf_counter()
            for i in range(repeat):
                run(i)
            results.put((name, start, time.perf_counter()))
            barrier.wait()


def round_trips(
    server: Server, token: str, ca: str, ids: list[str], clients: int, repeat: int
) -> dict[str, tuple[float, float]]:
    """Requests/s and server CPU ms per request of each operation with ``clients`` client
    processes, each ``repeat`` round trips."""
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(clients + 1)
    results = ctx.Queue()
    procs = [
        ctx.Process(
            target=client_process,
            args=(server.url, token, ca, ids, repeat, barrier, results),
        )
        for _ in range(clients)
    ]
    for proc in procs:
        proc.start()
    out: dict[str, tuple[float, float]] = {}
    try:
        for name in OPERATIONS:
            barrier.wait(timeout=300)  # all warmed: go
            cpu = server.cpu()
            barrier.wait(timeout=600)  # all done
            used = server.cpu() - cpu
            spans = [results.get(timeout=60) for _ in range(clients)]
            assert all(s[0] == name for s in spans)
            seconds = max(s[2] for s in spans) - min(s[1] for s in spans)
            requests = clients * repeat
            out[name] = (requests / seconds, used / requests * 1000)
    finally:
        for proc in procs:
            proc.join(60)
    return out


def paging(server: Server, token: str) -> tuple[int, float, float, list[float]]:
    """Rows listed, rows/s, server CPU ms per 1,000 rows, and the seconds of each page."""
    from PowerPlatform.Dataverse.client import DataverseClient

    with DataverseClient(server.url, StaticTokenCredential(token)) as client:
        client.records.create("account", {"name": "warm-up"})
        cpu = server.cpu()
        start = time.perf_counter()
        seen, marks = 0, [start]
        for page in client.records.list_pages("account", page_size=5000):
            seen += len(page.records)
            marks.append(time.perf_counter())
        used = server.cpu() - cpu
    return (
        seen,
        seen / (marks[-1] - start),
        used / seen * 1e6,
        [b - a for a, b in itertools.pairwise(marks)],
    )


def first_ids(server: Server, token: str, n: int) -> list[str]:
    from PowerPlatform.Dataverse.client import DataverseClient

    with DataverseClient(server.url, StaticTokenCredential(token)) as client:
        page = next(iter(client.records.list_pages("account", select=["name"], page_size=n)))
        return [str(r["accountid"]) for r in page.records]


def run_backend(name: str, url: str, args: argparse.Namespace, results: dict[str, float]) -> None:
    from fieldsync.devcert import make_dev_certificate

    token = seed(url, args.rows)
    tls = make_dev_certificate(Path(tempfile.mkdtemp(prefix="fieldsync-bench-tls-")))
    os.environ["REQUESTS_CA_BUNDLE"] = str(tls.ca)
    # one user makes every request of the run: lift the service protection limits for it
    os.environ["FIELDSYNC_WEBAPI_MAX_REQUESTS"] = str(10**9)
    os.environ["FIELDSYNC_WEBAPI_MAX_EXECUTION_SECONDS"] = str(10**9)
    server = Server(url, tls=tls)
    trips: dict[tuple[int, str], list[tuple[float, float]]] = {}
    pages: list[tuple[int, float, float, list[float]]] = []
    baselines: list[float] = []
    try:
        ids = first_ids(server, token, 1000)
        for _ in range(args.runs):
            for clients in sorted({1, args.clients}):
                for op, figures in round_trips(
                    server, token, str(tls.ca), ids, clients, args.repeat
                ).items():
                    trips.setdefault((clients, op), []).append(figures)
            pages.append(paging(server, token))
            baselines.append(sqlalchemy_read(url))
    finally:
        server.stop()

    def median(values: list[float]) -> float:
        return statistics.median(values)

    for (clients, op), figures in sorted(trips.items()):
        per_s = median([f[0] for f in figures])
        cpu_ms = median([f[1] for f in figures])
        health = median([f[0] for f in trips[(clients, "health")]])
        results[f"{name} {op} x{clients} /s"] = per_s
        results[f"{name} {op} x{clients} server ms"] = cpu_ms
        print(
            f"[{name}] {op:8} {clients} client(s): {per_s:7,.0f}/s "
            f"({per_s / health:.2f}x plain GET /health {health:,.0f}/s); "
            f"server CPU {cpu_ms:.2f} ms per request (one process's ceiling "
            f"{1000 / cpu_ms:,.0f}/s)",
            flush=True,
        )
    seen = pages[0][0]
    rate = median([p[1] for p in pages])
    cpu_k = median([p[2] for p in pages])
    baseline = median(baselines)
    full = [p[3][:-1] or p[3] for p in pages]  # full pages (the last is partial)
    third = max(1, len(full[0]) // 3)
    early = median([s for f in full for s in f[:third]])
    late = median([s for f in full for s in f[-third:]])
    results[f"{name} paging rows/s"] = rate
    results[f"{name} SQLAlchemy rows/s"] = baseline
    results[f"{name} paging server ms/1k rows"] = cpu_k
    results[f"{name} early page ms"] = early * 1000
    results[f"{name} late page ms"] = late * 1000
    print(
        f"[{name}] paging {seen:,} rows through the SDK {rate:,.0f} rows/s vs SQLAlchemy "
        f"{baseline:,.0f} rows/s ({rate / baseline:.2f}x); server CPU {cpu_k:.1f} ms per "
        f"1,000 rows; a full page in the first third {early * 1000:.0f} ms, in the last "
        f"{late * 1000:.0f} ms ({late / early:.2f}x)",
        flush=True,
    )


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=300, help="round trips per client")
    parser.add_argument("--clients", type=int, default=4, help="concurrent client processes")
    parser.add_argument("--runs", type=int, default=3, help="runs to take the median of")
    parser.add_argument("--no-pg", action="store_true")
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/test")
    args = parser.parse_args(argv)
    results: dict[str, float] = {}
    backends = [("sqlite", ScratchDatabases.sqlite())]
    if not args.no_pg:
        backends.append(("postgresql", ScratchDatabases.postgres(args.pg)))
    for name, scratch in backends:
        with scratch:
            run_backend(name, scratch.url("webapi"), args, results)
    print("\nsummary")
    for key, value in results.items():
        print(f"  {key:36} {value:12,.2f}")
    return results


if __name__ == "__main__":
    main()
