"""Single-row writes/s on PostgreSQL with 1, 8 and 32 concurrent writers over 2 server processes.

    python bench/writes.py                      # 1, 8, 32 writers, 8 s each, 3 repeats
    python bench/writes.py --seconds 5 --repeat 1

Two ``fieldsync serve`` processes on one scratch PostgreSQL database; each writer (a thread
with its own keep-alive connection and its own user, so no service protection limit is
shared) creates one account per request through the Web API, alternating servers by writer.
Printed for each concurrency: the median writes/s over the repeats, its ratio to the single
writer, the 5xx count (the goal: none), the two server processes' CPU per write (user +
system; with the single writer's latency it says whether the servers' CPU, not a lock, is
what caps the ratio on this machine) and how many server transactions were seen waiting
for a lock, on average (``pg_stat_activity`` sampled every 20 ms): any lock (a row, the
writers' advisory lock, or, on a version of fieldsync that took versions from a counter row
held until commit, that row).

The same run's baseline: the same single-row INSERT ... COMMIT straight through psycopg, with
1, 8 and 32 connections and no counter, shows what this machine and database allow.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from scratch import ScratchDatabases
from sync import Server

API = "/api/data/v9.2/accounts"


def seed(url: str, users: int) -> list[str]:
    """``users`` administrators; an API token for each."""
    from fieldsync.platform import build
    from fieldsync.security.roles import SYSTEM_ADMINISTRATOR
    from fieldsync.store.store import Store

    p = build(Store.open(url))
    try:
        role = p.org.role_id(SYSTEM_ADMINISTRATOR)
        tokens = []
        for i in range(users):
            user = p.org.user(f"writer{i}", roles=[role])
            tokens.append(p.auth.create_api_token(user, "bench")[1])
        return tokens
    finally:
        p.close()


class Sampler(threading.Thread):
    """Counts the servers' backends seen waiting on a lock in ``pg_stat_activity``."""

    def __init__(self, url: str, application: str) -> None:
        super().__init__(daemon=True)
        import psycopg

        self.conn = psycopg.connect(url, autocommit=True)
        self.application = application
        self.stop = threading.Event()
        self.samples = 0
        self.waiting = 0  # backends seen waiting, summed over samples

    def run(self) -> None:
        sql = (
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s "
            "AND wait_event_type = 'Lock'"
        )
        while not self.stop.is_set():
            (n,) = self.conn.execute(sql, (self.application,)).fetchone() or (0,)
            self.samples += 1
            self.waiting += n
            time.sleep(0.02)
        self.conn.close()


def writers(servers: list[str], tokens: list[str], n: int, seconds: float) -> dict[str, float]:
    import httpx

    done = [0] * n
    failed = [0] * n
    other = [0] * n
    start = threading.Barrier(n + 1)
    stop = threading.Event()

    def work(i: int) -> None:
        with httpx.Client(
            base_url=servers[i % len(servers)],
            headers={"Authorization": f"Bearer {tokens[i]}"},
            timeout=60,
        ) as client:
            client.get("/api/data/v9.2/WhoAmI")
            start.wait()
            while not stop.is_set():
                r = client.post(API, json={"name": f"W{i} {uuid.uuid4().hex[:8]}"})
                if r.status_code == 204:
                    done[i] += 1
                elif r.status_code >= 500:
                    failed[i] += 1
                else:
                    other[i] += 1

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    start.wait()
    began = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - began
    return {
        "rate": sum(done) / elapsed,
        "writes": sum(done),
        "5xx": sum(failed),
        "other": sum(other),
    }


def raw_inserts(url: str, n: int, seconds: float) -> float:
    """Single-row INSERT ... COMMIT/s with ``n`` psycopg connections: the machine's own."""
    import psycopg

    table = f"bench_raw_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(f"CREATE TABLE {table} (id uuid PRIMARY KEY, name text, v bigint)")
    counts = [0] * n
    stop = threading.Event()
    start = threading.Barrier(n + 1)

    def work(i: int) -> None:
        with psycopg.connect(url) as conn:
            start.wait()
            while not stop.is_set():
                conn.execute(f"INSERT INTO {table} VALUES (%s, %s, %s)", (uuid.uuid4(), f"R{i}", i))
                conn.commit()
                counts[i] += 1

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    start.wait()
    began = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    rate = sum(counts) / (time.perf_counter() - began)
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(f"DROP TABLE {table}")
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--writers", default="1,8,32")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    counts = [int(w) for w in args.writers.split(",")]
    results: dict[int, list[dict[str, Any]]] = {n: [] for n in counts}
    raw: dict[int, list[float]] = {n: [] for n in counts}
    with ScratchDatabases.postgres(args.pg) as scratch:
        url = scratch.url("writes")
        tokens = seed(url, max(counts))
        application = f"fieldsync-bench-{uuid.uuid4().hex[:8]}"  # the servers' connections
        servers = [Server(f"{url}&application_name={application}") for _ in range(2)]
        try:
            for _ in range(args.repeat):
                for n in counts:
                    sampler = Sampler(url, application)
                    sampler.start()
                    cpu = sum(s.cpu() for s in servers)
                    result = writers([s.url for s in servers], tokens, n, args.seconds)
                    cpu = sum(s.cpu() for s in servers) - cpu
                    result["cpu_ms"] = 1000 * cpu / max(1, result["writes"])
                    sampler.stop.set()
                    sampler.join()
                    result["waiting"] = sampler.waiting / max(1, sampler.samples)
                    results[n].append(result)
                    raw[n].append(raw_inserts(url, n, args.seconds / 2))
                    print(
                        f"  {n:2} writers: {result['rate']:7,.0f} writes/s, "
                        f"5xx {result['5xx']}, other refusals {result['other']}, "
                        f"server CPU {result['cpu_ms']:.1f} ms/write, "
                        f"waiting on a lock {result['waiting']:.1f} on average; "
                        f"raw INSERT+COMMIT {raw[n][-1]:7,.0f}/s",
                        flush=True,
                    )
        finally:
            for s in servers:
                s.stop()
    one = statistics.median(r["rate"] for r in results[counts[0]])
    raw_one = statistics.median(raw[counts[0]])
    print("\nsummary (medians)")
    print(
        f"  {'writers':>7} {'writes/s':>10} {'x one':>6} {'5xx':>5} {'cpu ms':>7} "
        f"{'waiting':>8} {'raw/s':>9} {'x one':>6}"
    )
    for n in counts:
        rate = statistics.median(r["rate"] for r in results[n])
        fails = sum(r["5xx"] for r in results[n])
        waiting = statistics.median(r["waiting"] for r in results[n])
        cpu_ms = statistics.median(r["cpu_ms"] for r in results[n])
        raw_rate = statistics.median(raw[n])
        print(
            f"  {n:7} {rate:10,.0f} {rate / one:6.2f} {fails:5} {cpu_ms:7.1f} {waiting:8.1f} "
            f"{raw_rate:9,.0f} {raw_rate / raw_one:6.2f}"
        )


if __name__ == "__main__":
    main()
