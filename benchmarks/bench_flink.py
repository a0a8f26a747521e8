"""What durability costs on Flink: FlinkRunner against plain PyFlink in the same job shape, and worker memory.

Part 1, speed. The action makes one durable call doing ``work`` ms of I/O-bound
work (``time.sleep``, a stand-in for a model or API call) plus a little CPU.
"Plain PyFlink" runs the very same function in the very same job shape as
FlinkRunner (the records file read by a FileSource, key_by, a
KeyedProcessFunction with a ValueState sequence number, execute_and_collect),
with no store at all. Each variant runs a small warm-up job first, so JVM
start-up is not counted; job submission and Python worker start-up are (a user
pays them). The variants alternate for ``--rounds`` rounds and the best time of
each is reported, so load from other processes skews them alike; each round's own
ratio (both variants back to back) and their median are printed too, because this
machine's speed swings by a third within minutes. Rows:

* 20,000 records, 0 ms of work, parallelism 2: target FlinkRunner <= 1.4x plain;
* 2,000 records, 5 ms of work, parallelism 2: target <= 1.1x plain;
* the 0 ms map run again: every call replayed;
* both comparisons again with ``FlinkRunner(concurrency=16)`` (``--concurrency``): several
  records at once in each worker, against the same plain PyFlink (no target);
* with ``--postgres``: the 0 ms comparison on a PostgresStore (a server started by
  ``tests/postgres_server.py``): target <= 1.5x plain.

Part 2, memory. Peak resident memory (psutil, sampled every 100 ms) of the
process tree that runs the job: on the local mini-cluster that is the JVM (the
TaskManager) and the Python worker processes it starts; the notebook's own
process is not counted; each worker's own peak and the number of worker processes
seen are printed too, so workers of a restarted job (new pids while the old ones
exit) cannot pass for growth. Measured for maps of ``--memory-records`` records (0 ms
work, default 100,000 and 1,000,000, journal with durability ``"relaxed"`` to
spare a million fsyncs): records reach the workers through a FileSource, so it
should not grow with the number of records.

Usage::

    python benchmarks/bench_flink.py [--records 20000] [--work-records 2000] [--memory-records 100000,1000000]
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psutil

import durable_nb as dnb
from durable_nb.runners import flink_worker
from durable_nb.runners.flink_env import EnvOptions, environment, gateway
from durable_nb.runners.flink_job import FlinkRunner


def score(record: dict[str, Any], work_s: float) -> dict[str, Any]:
    """The per-record work: I/O wait plus a little CPU, as a remote scoring call would be."""
    if work_s:
        time.sleep(work_s)
    text = f"{record['id']}:{record['text']}"
    return {"id": record["id"], "score": sum(map(ord, text)) % 97}


def durable_action(record: dict[str, Any], ctx: dnb.RunnerContext) -> dict[str, Any]:
    return ctx.durable_execute(score, record, record["work_s"])


def _plain_element(_init: None, _store: None, line: str, seq: int) -> tuple[int, Any]:
    index, _key, record, _seq = flink_worker.line_record(line)
    return index, score(record, record["work_s"])


class _NoStore:
    """Stands in for the store spec: plain PyFlink opens nothing."""

    def open(self) -> None:
        return None


def plain_pyflink(records: list[dict[str, Any]], parallelism: int, tmp: str) -> list[Any]:
    """FlinkRunner's job shape (records file, FileSource, key_by, keyed state), calling ``score`` directly."""
    from pyflink.common import Types, WatermarkStrategy
    from pyflink.datastream.connectors.file_system import FileSource, StreamFormat

    path = Path(tmp) / "plain-records.txt"
    flink_worker.write_records(path, records, [r["id"] for r in records])
    env = environment(EnvOptions())
    env.set_parallelism(1)
    init = type("Init", (), {"store": _NoStore()})()
    source = FileSource.for_record_stream_format(StreamFormat.text_line_format(), path.as_uri()).build()
    out = (
        env.from_source(source, WatermarkStrategy.no_watermarks(), "records").set_parallelism(1)
        .key_by(flink_worker.line_key, key_type=Types.STRING())
        .process(flink_worker.keyed_function(_plain_element, init), output_type=Types.PICKLED_BYTE_ARRAY())
        .set_parallelism(parallelism)
    )
    with out.execute_and_collect("plain pyflink") as rows:
        result = sorted(rows, key=lambda row: row[0])
    path.unlink()
    return result


def once(fn: Any) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def report(label: str, n: int, times: list[float]) -> float:
    best = min(times)
    spread = f" (rounds: {', '.join(f'{t:.2f}' for t in times)} s)" if len(times) > 1 else ""
    print(f"{label:<40} {n:>8} records in {best:7.2f} s = {n / best:8.1f} records/s{spread}", flush=True)
    return best


def make_records(n: int, work_ms: float) -> list[dict[str, Any]]:
    return [{"id": i, "text": f"record number {i}", "work_s": work_ms / 1000} for i in range(n)]


def compare(n: int, work_ms: float, parallelism: int, rounds: int, tmp: str, target: float,
            new_store: Any = None, label: str = "SqliteStore", concurrency: int = 1) -> None:
    """FlinkRunner vs plain PyFlink, alternating; prints the ratio against ``target``.

    ``concurrency`` > 1 adds a third variant, ``FlinkRunner(concurrency=...)``, in the same
    rounds: what running several records at once in each worker gives against plain
    PyFlink, whose KeyedProcessFunction runs them one after another.
    """
    records = make_records(n, work_ms)
    print(f"# {n} records, {work_ms:g} ms of work each, parallelism {parallelism}, {label}", flush=True)
    fresh = new_store or (lambda name: dnb.SqliteStore(Path(tmp) / f"{name}.db"))
    t_flinks, t_plains, t_replays, t_concurrent = [], [], [], []
    for round_ in range(rounds):
        # A fresh journal for each variant and round: each journals every call for the first time.
        name = f"flink-{n}-{int(work_ms)}-{round_}"
        store = fresh(name)
        journaled = functools.partial(FlinkRunner(store, parallelism=parallelism).map, durable_action, records,
                                      key="id")
        t_flinks.append(once(journaled))
        t_plains.append(once(functools.partial(plain_pyflink, records, parallelism, tmp)))
        if work_ms == 0:
            t_replays.append(once(journaled))
        store.close()
        if concurrency > 1:
            store = fresh(f"{name}-c")
            runner = FlinkRunner(store, parallelism=parallelism, concurrency=concurrency)
            t_concurrent.append(once(functools.partial(runner.map, durable_action, records, key="id")))
            store.close()
    t_flink = report("FlinkRunner (journaled)", n, t_flinks)
    t_plain = report("plain PyFlink (no journal)", n, t_plains)
    if t_replays:
        report("FlinkRunner, same map replayed", n, t_replays)
    ratio = t_flink / t_plain
    verdict = "OK" if ratio <= target else "ABOVE TARGET"
    # Each round runs both variants back to back, so its own ratio compares runs under the same load.
    per_round = [f / p for f, p in zip(t_flinks, t_plains, strict=True)]
    spread = f"; per round {', '.join(f'{r:.2f}' for r in per_round)}, median {statistics.median(per_round):.2f}x"
    print(f"durability cost on Flink ({label}), {work_ms:g} ms work: {ratio:.2f}x plain PyFlink "
          f"(best of each; target <= {target}x): {verdict}{spread if len(per_round) > 1 else ''}", flush=True)
    if t_concurrent:
        best = report(f"FlinkRunner(concurrency={concurrency})", n, t_concurrent)
        print(f"FlinkRunner(concurrency={concurrency}) ({label}), {work_ms:g} ms work: {best / t_plain:.2f}x "
              f"plain PyFlink's time (no target: what concurrency gives)", flush=True)


class PeakRss:
    """Samples the resident memory of a process tree (the JVM and its Python workers) in a thread."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        self.root = psutil.Process(pid)
        self.interval = interval
        self.peak = 0
        self.peak_workers = 0
        self.workers_seen: dict[int, int] = {}
        """Peak RSS of each Python worker process seen (a restarted job's workers are new pids)."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        procs = [self.root, *self.root.children(recursive=True)]
        total = workers = 0
        for proc in procs:
            try:
                rss = proc.memory_info().rss
            except psutil.Error:
                continue
            total += rss
            if proc.pid != self.root.pid:
                workers += rss
                self.workers_seen[proc.pid] = max(self.workers_seen.get(proc.pid, 0), rss)
        self.peak = max(self.peak, total)
        self.peak_workers = max(self.peak_workers, workers)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def memory(sizes: list[int], parallelism: int, tmp: str, plain: bool = False) -> None:
    jvm_pid = int(gateway().jvm.java.lang.ProcessHandle.current().pid())
    print(f"# peak RSS of the mini-cluster JVM (TaskManager) + its Python workers, 0 ms work, "
          f"parallelism {parallelism}", flush=True)
    for n in sizes:
        records = make_records(n, 0)
        # "relaxed" (no fsync): this part measures memory, and a million fsyncs would only add time.
        store = dnb.SqliteStore(Path(tmp) / f"memory-{n}.db", durability="relaxed")
        runner = FlinkRunner(store, parallelism=parallelism)
        with PeakRss(jvm_pid) as rss:
            start = time.perf_counter()
            runner.map(durable_action, records, key="id")
            took = time.perf_counter() - start
        each = ", ".join(f"{v / 2**20:.0f}" for v in rss.workers_seen.values())
        print(f"{n:>9} records: peak {rss.peak / 2**20:7.0f} MiB (Python workers {rss.peak_workers / 2**20:6.0f} "
              f"MiB; {len(rss.workers_seen)} worker processes seen, peak MiB each: {each}), {took:6.1f} s = "
              f"{n / took:7.0f} records/s", flush=True)
        store.close()
        if plain:  # the same job shape without a journal: what PyFlink itself takes
            with PeakRss(jvm_pid) as rss:
                plain_pyflink(records, parallelism, tmp)
            each = ", ".join(f"{v / 2**20:.0f}" for v in rss.workers_seen.values())
            print(f"{n:>9} records, plain PyFlink: peak {rss.peak / 2**20:7.0f} MiB (Python workers "
                  f"{rss.peak_workers / 2**20:6.0f} MiB; {len(rss.workers_seen)} seen: {each})", flush=True)
        del records


def postgres(args: argparse.Namespace, tmp: str) -> None:
    """The 0 ms comparison with a PostgresStore on a local server (target <= 1.5x plain PyFlink)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from postgres_server import PostgresServer

    server = PostgresServer().start()
    try:
        def new_store(name: str) -> Any:
            return dnb.PostgresStore(server.create_database(name.replace("-", "_")))

        compare(args.records, 0.0, args.parallelism, args.rounds, tmp, 1.5, new_store, "PostgresStore",
                concurrency=args.concurrency)
    finally:
        server.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20000, help="records of the 0 ms comparison")
    parser.add_argument("--work-records", type=int, default=2000, help="records of the 5 ms comparison (0: skip)")
    parser.add_argument("--work-ms", type=float, default=5.0)
    parser.add_argument("--parallelism", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2,
                        help="Flink runs alternate this many times; the best of each is reported")
    parser.add_argument("--memory-records", default="100000,1000000",
                        help="comma-separated map sizes for the memory part; empty to skip")
    parser.add_argument("--concurrency", type=int, default=16,
                        help="also run FlinkRunner(concurrency=N) in each comparison; 1 to skip")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--memory-plain", action="store_true",
                        help="also measure plain PyFlink's peak memory at each --memory-records size")
    parser.add_argument("--postgres", action="store_true",
                        help="also compare with a PostgresStore on a server started here (tests/postgres_server.py)")
    args = parser.parse_args()

    gateway()
    with tempfile.TemporaryDirectory() as tmp:
        warm = make_records(20, 0)
        FlinkRunner(dnb.SqliteStore(Path(tmp) / "warm.db"), parallelism=args.parallelism).map(
            durable_action, warm, key="id")
        plain_pyflink(warm, args.parallelism, tmp)
        if not args.skip_speed:
            compare(args.records, 0.0, args.parallelism, args.rounds, tmp, 1.4, concurrency=args.concurrency)
            if args.work_records:  # 0 skips the row
                compare(args.work_records, args.work_ms, args.parallelism, args.rounds, tmp, 1.1,
                        concurrency=args.concurrency)
        if args.postgres:
            postgres(args, tmp)
        sizes = [int(s) for s in args.memory_records.split(",") if s.strip()]
        if sizes:
            memory(sizes, args.parallelism, tmp, args.memory_plain)


if __name__ == "__main__":
    main()
