"""What does ``map(..., progress=True)`` cost on a replay?

A replay of a finished map is the fastest thing a map does (every durable call
comes from the journal, nothing is executed or written), so it is where a
progress bar would show first. The same map of N one-call records on a
MemoryStore is replayed with ``progress=False`` and ``progress=True``,
interleaved in ABBA order, and the best of each is compared. The bar's output goes to a
string buffer (a terminal or a notebook widget costs the same: it is redrawn at
most every 0.2 s). The target is a ratio under 1.05.

Run: ``.venv/bin/python benchmarks/bench_map_progress.py [N]``
"""

from __future__ import annotations

import contextlib
import io
import sys
import time
from typing import Any

import durable_nb as dnb

TARGET_RATIO = 1.05
ROUNDS = 6


def lookup(x: int) -> int:
    return abs(x)


def action(x: int, ctx: dnb.RunnerContext) -> Any:
    return ctx.durable_execute(lookup, x)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    runner = dnb.LocalRunner(dnb.MemoryStore())
    records = list(range(n))
    runner.map(action, records)  # the first run: everything after it is a replay
    times: dict[bool, list[float]] = {False: [], True: []}
    for round_ in range(ROUNDS):
        # ABBA order: the process warms up and the store grows over the rounds, which must not
        # favour whichever variant always runs first
        for progress in ((False, True) if round_ % 2 == 0 else (True, False)):
            started = time.perf_counter()
            with contextlib.redirect_stderr(io.StringIO()):
                runner.map(action, records, progress=progress)
            times[progress].append(time.perf_counter() - started)
    off, on = min(times[False]), min(times[True])
    print("| map replay, MemoryStore | records/s |")
    print("| --- | ---: |")
    print(f"| progress=False | {n / off:,.0f} |")
    print(f"| progress=True | {n / on:,.0f} |")
    ratio = on / off
    print(f"\nprogress=True / progress=False: {ratio:.3f} (target < {TARGET_RATIO}; best of {ROUNDS}, interleaved)")


if __name__ == "__main__":
    main()
