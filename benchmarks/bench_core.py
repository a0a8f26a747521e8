"""The durable core's costs against this machine's own floor, measured in one run.

* **fsync floor**: append a small record to a file in the journal's directory and
  ``fsync`` it. No durable store can commit faster than this disk allows.
* **per-call overhead** of ``ctx.durable_execute(f, i)`` over a bare ``f(i)`` (a
  trivial function), on ``SqliteStore`` at each durability level (``"call"``, the
  default: one commit per call, the outcome riding with the next PENDING;
  ``"transition"``: two; ``"relaxed"``: no fsync) and on ``MemoryStore`` (the
  engine's own cost).
* **concurrent calls**: 64 threads, each running its own run of durable calls on
  one ``SqliteStore``; and 64 ``durable_execute_async`` calls gathered with
  ``asyncio.gather`` inside one context. Their commits are shared (group commit).
* **the ceiling**: the SQL of one ``"call"`` commit written by hand with ``sqlite3``
  (lease check, previous outcome, PENDING, commit), alternated with fsyncs: what
  SQLite itself costs per call over the floor, before any of durable_nb's Python.
* **replay throughput**: a 10,000-call run reopened from ``SqliteStore`` by a fresh
  store object; time from opening the store to the end of the action.

The disk of a shared VM is noisy, so the floor and the SQLite calls are measured in
interleaved rounds and each figure is the median over rounds. Targets: SQLite
overhead (``"call"``) at most 1.5x the fsync floor, MemoryStore overhead under
20 us, replay at least 100,000 calls/s, 64 concurrent callers at least 10,000
calls/s.

    python benchmarks/bench_core.py [--dir DIR] [--rounds 7] [--replay-calls 10000] [--profile]

``--dir`` should be on the disk the journal would live on (default: a temporary
folder under the current directory, not /tmp, which may be tmpfs).
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import durable_nb as dnb

TARGET_SQLITE_RATIO = 1.5
TARGET_CONCURRENT_PER_S = 10_000.0
TARGET_MEMORY_US = 20.0
TARGET_REPLAY_PER_S = 100_000.0


def trivial(i: int) -> int:
    return i + 1


@contextmanager
def fsync_floor(path: Path) -> Iterator[Callable[[], float]]:
    """The floor, one sample at a time: append 100 bytes to ``path`` and fsync; returns the seconds it took."""
    record = b"x" * 100 + b"\n"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    clock = time.perf_counter

    def once() -> float:
        t0 = clock()
        os.write(fd, record)
        os.fsync(fd)
        return clock() - t0

    try:
        yield once
    finally:
        os.close(fd)


def paired_floor_and_sqlite(path: Path, store: dnb.Store, run_id: str, n: int) -> tuple[list[float], list[float]]:
    """Per-operation seconds of a durable append and of a SqliteStore durable call, alternated.

    Alternating one of each puts both under the same moment of a noisy disk, so their
    ratio is meaningful even when the absolute numbers swing by 10x.
    """
    floors, calls = [], []
    clock = time.perf_counter
    with fsync_floor(path) as floor, dnb.LocalRunner(store).context(run_id) as ctx:
        de = ctx.durable_execute
        for i in range(n):
            floors.append(floor())
            t1 = clock()
            de(trivial, i)
            calls.append(clock() - t1)
    return floors, calls


def bare(n: int) -> float:
    f = trivial
    t0 = time.perf_counter()
    for i in range(n):
        f(i)
    return (time.perf_counter() - t0) / n


def durable_calls(store: dnb.Store, run_id: str, n: int) -> float:
    """Seconds per durable_execute of a new (executed, journaled) call."""
    with dnb.LocalRunner(store).context(run_id) as ctx:
        de = ctx.durable_execute
        t0 = time.perf_counter()
        for i in range(n):
            de(trivial, i)
        return (time.perf_counter() - t0) / n


def concurrent_calls(path: Path, threads: int, calls: int) -> float:
    """Calls per second of ``threads`` threads, each making ``calls`` durable calls in its own run."""
    import threading

    store = dnb.SqliteStore(path)
    runner = dnb.LocalRunner(store)
    start = threading.Barrier(threads + 1)

    def one(k: int) -> None:
        with runner.context(f"c{k}-{time.perf_counter_ns()}") as ctx:
            start.wait()
            for i in range(calls):
                ctx.durable_execute(trivial, i)

    workers = [threading.Thread(target=one, args=(k,)) for k in range(threads)]
    for w in workers:
        w.start()
    start.wait()
    t0 = time.perf_counter()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - t0
    store.close()
    return threads * calls / elapsed


def gathered_calls(path: Path, tasks: int, rounds: int) -> float:
    """Calls per second of ``tasks`` ``durable_execute_async`` calls gathered in ONE context, ``rounds`` times."""
    import asyncio

    store = dnb.SqliteStore(path)

    async def action(_: Any, ctx: dnb.RunnerContext) -> None:
        for r in range(rounds):
            await asyncio.gather(*(ctx.durable_execute_async(trivial, r * tasks + i) for i in range(tasks)))

    run_id = f"gather-{time.perf_counter_ns()}"
    runner = dnb.LocalRunner(store)
    t0 = time.perf_counter()
    asyncio.run(runner.run_async(action, None, run_id=run_id))
    elapsed = time.perf_counter() - t0
    store.close()
    return tasks * rounds / elapsed


def paired_floor_and_raw_sqlite(floor: Callable[[], float], db: Path, n: int) -> tuple[list[float], list[float]]:
    """The ceiling under the engine: the SQL of one ``"call"`` commit, by hand, alternated with fsyncs.

    ``BEGIN IMMEDIATE``, the lease check, the previous call's outcome, this call's
    PENDING, ``COMMIT`` on the journal's own schema (WAL, ``synchronous=FULL``): what
    SQLite itself costs per call before any Python of durable_nb runs.
    """
    import sqlite3

    dnb.SqliteStore(db).close()  # the journal schema, created by the store itself
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    now = time.time()
    conn.execute("INSERT INTO runs (run_id, status, created_at, updated_at, attempts, owner) "
                 "VALUES ('raw', 'RUNNING', ?, ?, 1, 'me')", (now, now))
    floors, raws = [], []
    clock = time.perf_counter
    warm = 1200  # the journal's WAL has wrapped once (as a journal in use has): commits overwrite, not grow it
    try:
        for i in range(warm + n):
            sample = floor() if i >= warm else 0.0
            t1 = clock()
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("SELECT owner, attempts FROM runs WHERE run_id = 'raw'").fetchone()
            if i:
                conn.execute("UPDATE calls SET status = 'SUCCEEDED', origin = 'EXECUTED', payload = ?, "
                             "payload_format = 'pickle', result_preview = ?, finished_at = ? "
                             "WHERE run_id = 'raw' AND idx = ?", (b"\x80\x05K\x02.", str(i), time.time(), i - 1))
            conn.execute("INSERT INTO calls (run_id, idx, call_id, args_digest, status, started_at) "
                         "VALUES ('raw', ?, '__main__.trivial', ?, 'PENDING', ?)", (i, "0" * 32, time.time()))
            conn.execute("COMMIT")
            if i >= warm:
                raws.append(clock() - t1)
                floors.append(sample)
    finally:
        conn.close()
    return floors, raws


class _UnsyncedStore(dnb.SqliteStore):
    """Writes the replay benchmark's journal through the real engine, without fsyncs.

    The records are exactly the engine's; only the setup skips 20,000 fsyncs that
    would measure the disk rather than replay. Reading uses a plain SqliteStore.
    """

    def _connect(self) -> Any:
        conn = super()._connect()
        conn.execute("PRAGMA synchronous = OFF")
        return conn


def replay_action(n: int, marks: dict[str, float]) -> Callable[[Any, dnb.RunnerContext], int]:
    def action(_: Any, ctx: dnb.RunnerContext) -> int:
        total = 0
        for i in range(n):
            total += ctx.durable_execute(trivial, i)
        marks["end"] = time.perf_counter()
        return total

    return action


def build_replay_journal(path: Path, n: int) -> None:
    store = _UnsyncedStore(path)
    try:
        dnb.LocalRunner(store).run(replay_action(n, {}), None, run_id="replay")
        assert store.count_calls(run_id="replay") == n
    finally:
        store.close()


def replay_once(path: Path, n: int) -> float:
    """Seconds from a fresh SqliteStore to the end of an action replaying n calls."""
    marks: dict[str, float] = {}
    t0 = time.perf_counter()
    store = dnb.SqliteStore(path)
    try:
        total = dnb.LocalRunner(store).run(replay_action(n, marks), None, run_id="replay")
    finally:
        store.close()
    assert total == sum(trivial(i) for i in range(n))
    return marks["end"] - t0


def q(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


def profile(what: str, func: Callable[[], Any], top: int = 18) -> None:
    prof = cProfile.Profile()
    prof.enable()
    func()
    prof.disable()
    print(f"\n### cProfile: {what} (top {top} by own time)\n")
    pstats.Stats(prof).sort_stats("tottime").print_stats(top)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", default=None, help="where the journal and the floor file go")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--sqlite-calls", type=int, default=200, help="SQLite calls (and fsyncs) per round")
    parser.add_argument("--memory-calls", type=int, default=20_000, help="durable calls per MemoryStore round")
    parser.add_argument("--replay-calls", type=int, default=10_000)
    parser.add_argument("--replays", type=int, default=5)
    parser.add_argument("--threads", type=int, default=64, help="concurrent callers, each in its own run")
    parser.add_argument("--thread-calls", type=int, default=50, help="durable calls per concurrent caller")
    parser.add_argument("--profile", action="store_true", help="cProfile each measured path afterwards")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench_core-", dir=args.dir or ".") as tmp:
        d = Path(tmp)
        sqlite = dnb.SqliteStore(d / "journal.db")
        memory = dnb.MemoryStore()
        levels = {
            level: dnb.SqliteStore(d / f"{level}.db", durability=level) for level in ("transition", "relaxed")
        }
        # Warm up: imports done, and each journal's WAL has wrapped once (as in a journal in use, a
        # commit then overwrites WAL space instead of growing the file).
        for store in (sqlite, *levels.values()):
            durable_calls(store, "warmup", 1200)
        durable_calls(memory, "warmup", 1000)
        floors, sq, mem, bares = [], [], [], []
        by_level: dict[str, list[float]] = {level: [] for level in levels}
        by_level_floor: dict[str, list[float]] = {level: [] for level in levels}
        concurrent, gathered, raw_floors, raws = [], [], [], []
        for r in range(args.rounds):
            f, c = paired_floor_and_sqlite(d / "floor.log", sqlite, f"sqlite-{r}", args.sqlite_calls)
            floors += f
            sq += c
            for level, store in levels.items():
                f, c = paired_floor_and_sqlite(d / "floor.log", store, f"{level}-{r}", args.sqlite_calls)
                by_level_floor[level] += f
                by_level[level] += c
            bares.append(bare(100_000))
            mem.append(durable_calls(memory, f"memory-{r}", args.memory_calls))
            concurrent.append(concurrent_calls(d / "concurrent.db", args.threads, args.thread_calls))
            gathered.append(gathered_calls(d / "gathered.db", args.threads, args.thread_calls))
            with fsync_floor(d / "floor.log") as floor:
                f, c = paired_floor_and_raw_sqlite(floor, d / f"raw-{r}.db", args.sqlite_calls)
            raw_floors += f
            raws += c
        sqlite.close()
        for store in levels.values():
            store.close()

        replay_path = d / "replay.db"
        build_replay_journal(replay_path, args.replay_calls)
        replays = [replay_once(replay_path, args.replay_calls) for _ in range(args.replays)]

        floor = statistics.median(floors)
        bare_s = statistics.median(bares)
        sqlite_over = statistics.median(sq) - bare_s
        memory_over = statistics.median(mem) - bare_s
        replay_rate = args.replay_calls / statistics.median(replays)

        us = 1e6
        ratio = sqlite_over / floor
        rows = [
            ("fsync floor (100 B append + fsync, same folder)", f"{floor * us:,.0f} µs", "—", "—"),
            ("bare call `f(i)`", f"{bare_s * us:.3f} µs", "—", "—"),
            (
                "the SQL of one `\"call\"` commit by hand (sqlite3, no durable_nb): the ceiling",
                f"{statistics.median(raws) * us:,.0f} µs ({statistics.median(raws) / statistics.median(raw_floors):.2f}"
                f"× floor)",
                "—",
                "—",
            ),
            (
                "`durable_execute` overhead, SqliteStore (durability='call', the default)",
                f"{sqlite_over * us:,.0f} µs ({ratio:.2f}× floor)",
                f"≤ {TARGET_SQLITE_RATIO}× floor",
                "met" if ratio <= TARGET_SQLITE_RATIO else "MISSED",
            ),
            *(
                (
                    f"`durable_execute` overhead, SqliteStore durability={level!r}",
                    f"{(statistics.median(by_level[level]) - bare_s) * us:,.0f} µs "
                    f"({(statistics.median(by_level[level]) - bare_s) / statistics.median(by_level_floor[level]):.2f}"
                    f"× floor)",
                    "—",
                    "—",
                )
                for level in levels
            ),
            (
                f"{args.threads} threads, each its own run, one SqliteStore (group commit)",
                f"{statistics.median(concurrent):,.0f} calls/s",
                f"≥ {TARGET_CONCURRENT_PER_S:,.0f} calls/s",
                "met" if statistics.median(concurrent) >= TARGET_CONCURRENT_PER_S else "MISSED",
            ),
            (
                f"{args.threads} `durable_execute_async` calls gathered in one context, one SqliteStore",
                f"{statistics.median(gathered):,.0f} calls/s",
                f"≥ {TARGET_CONCURRENT_PER_S:,.0f} calls/s",
                "met" if statistics.median(gathered) >= TARGET_CONCURRENT_PER_S else "MISSED",
            ),
            (
                "`durable_execute` overhead, MemoryStore",
                f"{memory_over * us:.1f} µs",
                f"< {TARGET_MEMORY_US:.0f} µs",
                "met" if memory_over * us < TARGET_MEMORY_US else "MISSED",
            ),
            (
                f"replay of a {args.replay_calls:,}-call run from SqliteStore",
                f"{replay_rate:,.0f} calls/s",
                f"≥ {TARGET_REPLAY_PER_S:,.0f} calls/s",
                "met" if replay_rate >= TARGET_REPLAY_PER_S else "MISSED",
            ),
        ]
        print(f"durable_nb {dnb.__version__}, {os.cpu_count()} CPUs, journal in {d.resolve().parent}")
        mean_ratio = (statistics.fmean(sq) - bare_s) / statistics.fmean(floors)
        print(
            f"{len(floors)} fsyncs alternated one by one with {len(sq)} SQLite calls, medians "
            f"(floor p10-p90 {q(floors, 0.1) * us:,.0f}-{q(floors, 0.9) * us:,.0f} µs, SQLite call p10-p90 "
            f"{q(sq, 0.1) * us:,.0f}-{q(sq, 0.9) * us:,.0f} µs, ratio of means {mean_ratio:.2f}×); "
            f"MemoryStore median of {args.rounds} rounds of {args.memory_calls:,}; replay median of "
            f"{args.replays}\n"
        )
        print("| measure | this machine | target | |")
        print("| --- | --- | --- | --- |")
        for row in rows:
            print("| " + " | ".join(row) + " |")

        if args.profile:
            profile("MemoryStore durable_execute", lambda: durable_calls(dnb.MemoryStore(), "p", args.memory_calls))
            profile("replay from SqliteStore", lambda: replay_once(replay_path, args.replay_calls))
            profile("SqliteStore durable_execute", lambda: durable_calls(dnb.SqliteStore(d / "p.db"), "p", 200))


if __name__ == "__main__":
    main()
