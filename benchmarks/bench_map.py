"""``LocalRunner.map`` over records, one durable call per record, against same-run baselines.

Rows (issue 10):

* **first run**: ``map`` of N records on a fresh ``SqliteStore`` (default durability
  ``"call"``: one commit per record, the map's return is the durable boundary);
  baseline: N fsynced appends to a file in the same folder (the fsync floor), and
  the same map with a bare call instead of ``durable_execute`` (no journal at all).
* **replay**: the same map again, every call replayed from the journal (nothing is
  written); baseline: the bare map.

Disk noise on a shared VM is large, so first runs and floors alternate in rounds
and each figure is the median over rounds.

    python benchmarks/bench_map.py [--dir DIR] [--records 3000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import durable_nb as dnb

TARGET_FIRST_PER_S = 3_000.0
TARGET_REPLAY_PER_S = 50_000.0


def work(record: dict[str, Any]) -> int:
    return int(record["amount"]) * 2


def durable_action(record: dict[str, Any], ctx: dnb.RunnerContext) -> int:
    return ctx.durable_execute(work, record)


def bare_action(record: dict[str, Any], ctx: dnb.RunnerContext) -> int:
    return work(record)


def floor(path: Path, n: int) -> float:
    """Seconds for n fsynced 100-byte appends (what one commit per record cannot beat)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        t0 = time.perf_counter()
        for _ in range(n):
            os.write(fd, b"x" * 100)
            os.fsync(fd)
        return time.perf_counter() - t0
    finally:
        os.close(fd)


def timed_map(store: dnb.Store, action: Any, records: list[dict[str, Any]]) -> float:
    t0 = time.perf_counter()
    df = dnb.LocalRunner(store).map(action, records, key="id")
    elapsed = time.perf_counter() - t0
    assert (df["status"] == "COMPLETED").all()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", default=None, help="where the journals go (the disk they would live on)")
    parser.add_argument("--records", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    n = args.records
    records = [{"id": f"order-{i}", "amount": i} for i in range(n)]

    with tempfile.TemporaryDirectory(prefix="bench_map-", dir=args.dir or ".") as tmp:
        d = Path(tmp)
        firsts, replays, floors, bares = [], [], [], []
        for r in range(args.rounds):
            floors.append(floor(d / "floor.log", n))
            store = dnb.SqliteStore(d / f"map-{r}.db")
            firsts.append(timed_map(store, durable_action, records))
            store.close()
            store = dnb.SqliteStore(d / f"map-{r}.db")  # a fresh store object, as after a restart
            replays.append(timed_map(store, durable_action, records))
            store.close()
            bares.append(timed_map(dnb.MemoryStore(), bare_action, records))

    first_rate, replay_rate = n / statistics.median(firsts), n / statistics.median(replays)
    floor_rate, bare_rate = n / statistics.median(floors), n / statistics.median(bares)
    print(f"durable_nb {dnb.__version__}, {os.cpu_count()} CPUs, {n:,} records, median of {args.rounds} rounds\n")
    print("| workload | this machine | baseline (same run) | target | |")
    print("| --- | --- | --- | --- | --- |")
    print(
        f"| `LocalRunner.map`, {n:,} records, first run | {first_rate:,.0f} records/s | fsync floor "
        f"{floor_rate:,.0f}/s ({first_rate / floor_rate:.2f}× of it); bare map {bare_rate:,.0f}/s | "
        f"≥ {TARGET_FIRST_PER_S:,.0f}/s | {'met' if first_rate >= TARGET_FIRST_PER_S else 'MISSED'} |"
    )
    print(
        f"| the same map again (every call replayed) | {replay_rate:,.0f} records/s | bare map "
        f"{bare_rate:,.0f}/s ({bare_rate / replay_rate:.1f}× faster) | ≥ {TARGET_REPLAY_PER_S:,.0f}/s | "
        f"{'met' if replay_rate >= TARGET_REPLAY_PER_S else 'MISSED'} |"
    )


if __name__ == "__main__":
    main()
