"""How fast the JournalView opens and pages over a 100,000-call SQLite journal.

Targets: build under 1 s, page switch under 100 ms. Printed beside a baseline
measured in the same run: the raw store reads one page needs (``count_calls`` +
``query_calls(offset, limit)``), so a slow machine shows up in both columns.

The journal is written straight into the SQLite tables in one transaction (through
the store's own connection and schema): writing 100,000 calls through the replay
engine would fsync 200,000 times and measure the disk, not the widget.

    python benchmarks/bench_widgets.py [--calls 100000] [--runs 1000 100000]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import durable_nb as dnb


def fill(store: dnb.SqliteStore, n_calls: int, n_runs: int) -> None:
    per_run = max(1, n_calls // n_runs)
    now = time.time() - n_calls * 0.001
    runs, calls = [], []
    for r in range(n_runs):
        rid = f"order-{r:06d}"
        runs.append((rid, "COMPLETED", now, now, 1))
        for i in range(per_run):
            k = r * per_run + i
            t = now + k * 0.001
            status = "PENDING" if k % 997 == 0 else ("FAILED" if k % 50 == 0 else "SUCCEEDED")
            calls.append((
                rid, i, f"step_{i % 7}", f"{k:016x}", status,
                None if status == "PENDING" else ("RECONCILED" if k % 13 == 0 else "EXECUTED"),
                b"\x80\x05K\x01.", repr({"k": k, "text": "<b>x</b>"}) if status == "SUCCEEDED" else None,
                "ValueError: boom" if status == "FAILED" else None, t,
                None if status == "PENDING" else t + 0.0008,
            ))
    with store._write() as conn:  # bulk load: see the module docstring
        conn.executemany(
            "INSERT INTO runs (run_id, status, created_at, updated_at, attempts) VALUES (?, ?, ?, ?, ?)", runs
        )
        conn.executemany(
            "INSERT INTO calls (run_id, idx, call_id, args_digest, status, origin, payload, result_preview, "
            "error_preview, started_at, finished_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            calls,
        )


def timed(fn: Callable[[], object], repeat: int = 5) -> float:
    """Median wall time of ``fn`` in milliseconds."""
    samples = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t) * 1000)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--runs", type=int, nargs="+", default=[1_000, 100_000],
                        help="run counts to try (100,000 one-call runs is what a map over 100,000 rows leaves)")
    args = parser.parse_args()
    ok = True
    for n_runs in args.runs:
        ok &= bench(args.calls, n_runs)
    print("all targets met" if ok else "SOME TARGETS MISSED")
    raise SystemExit(0 if ok else 1)


def bench(n_calls: int, n_runs: int) -> bool:
    with tempfile.TemporaryDirectory(prefix="dnb-bench-") as tmp:
        store = dnb.SqliteStore(Path(tmp) / "journal.db")
        t = time.perf_counter()
        fill(store, n_calls, n_runs)
        total = store.count_calls()
        print(f"\njournal: {total:,} calls in {n_runs:,} runs (SqliteStore), written in "
              f"{time.perf_counter() - t:.2f} s")

        import ipywidgets  # noqa: F401  (import cost is not the widget's build time)

        views: list[dnb.JournalView] = []
        build = timed(lambda: views.append(dnb.JournalView(store)), repeat=3)
        view = views[-1]
        last = view.page_count - 1
        base_first = timed(lambda: (store.count_calls(), store.query_calls(offset=0, limit=50)))
        base_last = timed(lambda: (store.count_calls(), store.query_calls(offset=last * 50, limit=50)))
        base_runs = timed(store.runs)
        nxt = timed(lambda: (view.go_to_page(1), view.go_to_page(0)), repeat=5) / 2
        to_last = timed(lambda: view.last_button.click(), repeat=5)
        to_first = timed(lambda: view.first_button.click(), repeat=5)
        pending = timed(lambda: setattr(view.status_filter, "value", "PENDING") or
                        setattr(view.status_filter, "value", ""), repeat=5) / 2
        assert view.page_index == 0 and view.total == total

        rows = [
            (f"build JournalView (page 1 of {view.page_count})", build, 1000.0,
             base_first + base_runs, "count + first page + runs()"),
            ("switch page (Next)", nxt, 100.0, base_first, "count + one page"),
            (f"jump to last page (OFFSET {last * 50})", to_last, 100.0, base_last, "count + last page"),
            ("jump to first page", to_first, 100.0, base_first, "count + first page"),
            ("status filter on/off", pending, 100.0, base_first, "count + one page"),
        ]
        print(f"{'operation':42} {'median ms':>10} {'target ms':>10} {'baseline ms':>12}  baseline = raw store reads")
        ok = True
        for name, ms, target, base, what in rows:
            ok &= ms < target
            print(f"{name:42} {ms:10.1f} {target:10.0f} {base:12.1f}  {what}{'' if ms < target else '  SLOW'}")
        for v in views:
            v.close()
        store.close()
        return ok


if __name__ == "__main__":
    main()
