"""PostgresStore's per-call cost against its own floor and against DBOS Transact, on one real server.

* **floor**: one committed ``INSERT`` of a small row on the same server, through
  the same driver (psycopg 3, autocommit): a round trip and a WAL flush. No
  journal on this server can make a call durable for less.
* **PostgresStore**: ``ctx.durable_execute(step, i)`` inside one open run, under
  durability ``"call"`` (default: one commit per call, outcome k with PENDING k+1)
  and ``"transition"`` (two commits per call).
* **DBOS Transact** (``pip install -e '.[bench]'``, a benchmark-only extra; ``--no-dbos`` skips it): a workflow
  of ``@DBOS.step()`` calls of the same function, its system database on the same
  server.
* **LocalRunner.map** on PostgresStore, 2,000 records of one call each: first run
  and replay (a map is one durable boundary: a record's end rides with the next
  record's PENDING, so a record costs one round trip to open its run and one commit). No target.

A shared VM is noisy (the WAL flush swings by 10x within seconds), so every
durable call and every DBOS step is timed right after one floor ``INSERT``: each
pair sees the same moment of the disk, and each figure is the median of its
samples (the floor's over all pairs). Targets: PostgresStore at most 2.5x the
floor, and at least 3x faster than DBOS per call.

    python benchmarks/bench_postgres.py [--dsn postgresql://...] [--rounds 5] [--calls 300] [--map-records 2000]

Without ``--dsn`` a server is started for the run (tests/postgres_server.py:
Debian's postgresql, initdb in /tmp, loopback, default durability settings).
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import durable_nb as dnb

try:
    import psycopg
except ImportError:  # without the extra a bare ModuleNotFoundError said nothing about how to get it
    sys.exit("bench_postgres needs psycopg 3: pip install -e '.[postgres,bench]' (bench: DBOS Transact; "
             "or run with --no-dbos)")

TARGET_FLOOR_RATIO = 2.5
TARGET_DBOS_SPEEDUP = 3.0
clock = time.perf_counter


def step(i: int) -> int:
    return i + 1


class Floor:
    """One committed INSERT on its own connection; ``paired(op)`` times the floor, then ``op``."""

    def __init__(self, dsn: str) -> None:
        self.conn = psycopg.connect(dsn, autocommit=True)
        self.conn.execute("CREATE TABLE IF NOT EXISTS floor (i integer, note text)")
        for i in range(10):  # prepared, as the store's statements are
            self.conn.execute("INSERT INTO floor VALUES (%s, %s)", (i, "warm"))
        self.samples: list[float] = []

    def paired(self, op: Callable[[], Any], into: list[float]) -> None:
        t0 = clock()
        self.conn.execute("INSERT INTO floor VALUES (%s, %s)", (1, "step"))
        t1 = clock()
        op()
        t2 = clock()
        self.samples.append(t1 - t0)
        into.append(t2 - t1)


def store_round(store: dnb.Store, run_id: str, n: int, floor: Floor, into: list[float]) -> None:
    with dnb.LocalRunner(store).context(run_id) as ctx:
        de = ctx.durable_execute
        for i in range(n):
            floor.paired(lambda i=i: de(step, i), into)


def replay_round(store: dnb.Store, run_id: str, n: int) -> float:
    with dnb.LocalRunner(store).context(run_id) as ctx:
        t0 = clock()
        for i in range(n):
            ctx.durable_execute(step, i)
        return (clock() - t0) / n


def threads_round(store: dnb.Store, run_id: str, n: int, pool: Any, threads: int = 8) -> float:
    """Seconds per call with ``threads`` runs writing at once from long-lived threads (one connection each)."""
    runner = dnb.LocalRunner(store)

    def one(k: int) -> None:
        with runner.context(f"{run_id}-t{k}") as ctx:
            for i in range(n // threads):
                ctx.durable_execute(step, i)

    t0 = clock()
    list(pool.map(one, range(threads)))
    return (clock() - t0) / (n // threads * threads)


class Dbos:
    """DBOS Transact with its system database on the same server; steps paired with the floor."""

    def __init__(self, dsn: str, floor: Floor) -> None:
        from dbos import DBOS

        logging.getLogger("dbos").setLevel(logging.WARNING)
        self.DBOS = DBOS
        self.samples: list[float] = []
        DBOS(config={"name": "bench_postgres", "system_database_url": dsn, "log_level": "WARNING"})

        @DBOS.step()
        def dbos_step(i: int) -> int:
            return step(i)

        @DBOS.workflow()
        def dbos_workflow(n: int, timed: bool) -> None:
            for i in range(n):
                if timed:
                    floor.paired(lambda i=i: dbos_step(i), self.samples)
                else:
                    dbos_step(i)

        self.workflow = dbos_workflow
        DBOS.launch()
        self.workflow(5, False)  # warm up

    def round(self, n: int) -> None:
        self.workflow(n, True)

    def close(self) -> None:
        self.DBOS.destroy()


def map_action(record: int, ctx: dnb.RunnerContext) -> int:
    return ctx.durable_execute(step, record)


def map_round(store: dnb.Store, records: int) -> tuple[float, float]:
    """Seconds per record of ``LocalRunner.map`` on a new map (first run), then of the same map (replay)."""
    items = list(range(records))
    t0 = time.perf_counter()
    dnb.LocalRunner(store).map(map_action, items)
    t1 = time.perf_counter()
    dnb.LocalRunner(store).map(map_action, items)
    t2 = time.perf_counter()
    return (t1 - t0) / records, (t2 - t1) / records


def start_server() -> Any:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from postgres_server import PostgresServer

    return PostgresServer().start()


def row(name: str, seconds: float, note: str = "") -> None:
    print(f"  {name:46s} {seconds * 1e6:9.1f} us   {note}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", help="URL of a server to use (postgresql://...; a database per part is created)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--no-dbos", action="store_true")
    parser.add_argument("--map-records", type=int, default=2000, help="records of the LocalRunner.map rows")
    args = parser.parse_args()
    if not args.no_dbos and importlib.util.find_spec("dbos") is None:
        sys.exit("DBOS Transact is not installed: pip install -e '.[bench]' (a benchmark-only extra), "
                     "or run with --no-dbos")
    server = None if args.dsn else start_server()
    admin = args.dsn or server.dsn()

    def database(name: str) -> str:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[arg-type]
            conn.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]
        return urlunsplit(urlsplit(admin)._replace(path=f"/{name}"))  # DBOS takes URLs only

    try:
        floor = Floor(database("bench_floor"))
        journal = database("bench_journal")
        stores = {d: dnb.PostgresStore(journal, durability=d) for d in ("call", "transition")}
        dbos = None if args.no_dbos else Dbos(database("bench_dbos"), floor)
        n = args.calls
        calls: dict[str, list[float]] = {"call": [], "transition": []}
        replay: list[float] = []
        threads: list[float] = []
        pool = ThreadPoolExecutor(8)
        threads_round(stores["call"], "threads-warm", 8, pool)  # each thread opens its connection once
        for r in range(args.rounds):
            store_round(stores["call"], f"call-{r}", n, floor, calls["call"])
            if dbos is not None:
                dbos.round(n)
            store_round(stores["transition"], f"transition-{r}", n, floor, calls["transition"])
            replay.append(replay_round(stores["call"], f"call-{r}", n))
            threads.append(threads_round(stores["call"], f"threads-{r}", n, pool))
        med = {k: statistics.median(v) for k, v in calls.items()}
        fl = statistics.median(floor.samples)
        print(f"PostgresStore on PostgreSQL ({args.rounds} rounds of {n} calls, each paired with a floor INSERT; "
              f"medians)")
        row("floor: one committed INSERT", fl)
        for level in ("call", "transition"):
            target = f"(target <= {TARGET_FLOOR_RATIO}x)" if level == "call" else ""
            row(f"PostgresStore durable call ({level!r})", med[level], f"{med[level] / fl:5.2f}x floor {target}")
        rp, th = statistics.median(replay), statistics.median(threads)
        row("PostgresStore replayed call", rp, f"{1 / rp:,.0f} calls/s")
        row("PostgresStore, 8 runs in 8 threads (per call)", th,
            f"{1 / th:,.0f} calls/s ({med['call'] / th:.1f}x one thread's rate)")
        if dbos is not None:
            d = statistics.median(dbos.samples)
            speedup = d / med["call"]
            row("DBOS Transact step (same server)", d,
                f"{d / fl:5.2f}x floor; PostgresStore {speedup:4.1f}x faster (target >= {TARGET_DBOS_SPEEDUP}x)")
            dbos.close()
        for store in stores.values():
            store.close()
        # A map is one durable boundary: a record's end rides with the next record's PENDING.
        firsts, replays = zip(*(map_round(dnb.PostgresStore(database(f"bench_map_{r}")), args.map_records)
                                for r in range(3)), strict=True)
        first, again = statistics.median(firsts), statistics.median(replays)
        row(f"LocalRunner.map, {args.map_records:,} records, first run", first, f"{1 / first:,.0f} records/s")
        row(f"LocalRunner.map, {args.map_records:,} records, replayed", again, f"{1 / again:,.0f} records/s")
    finally:
        if server is not None:
            server.cleanup()


if __name__ == "__main__":
    main()
