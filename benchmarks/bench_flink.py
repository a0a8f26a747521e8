"""Records/s of one durable action on FlinkRunner, on plain PyFlink without a journal, and on LocalRunner.

The question it answers: what does durability cost on Flink? The action makes
one durable call doing ``--work-ms`` of I/O-bound work (a stand-in for a model
or API call, ``time.sleep``) plus a little CPU. "Plain PyFlink" runs the very
same function in the very same job shape (checkpointed sequence source, key_by,
KeyedProcessFunction with a ValueState sequence number, execute_and_collect),
with no store at all. LocalRunner runs it in this process, one record after the
other. Each Flink variant runs a small warm-up job first, so JVM start-up is not
counted; job submission and Python worker start-up are (a user pays them). The
Flink variants alternate for ``--rounds`` rounds and the best time of each is
reported, so that load from other processes on the machine skews them alike.

Usage::

    python benchmarks/bench_flink.py [--records 2000] [--work-ms 5] [--parallelism 2]

Target: FlinkRunner at most 1.5x the time of plain PyFlink (the ratio printed last).
"""

from __future__ import annotations

import argparse
import functools
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import durable_nb as dnb
from durable_nb.runners.flink_job import FlinkRunner, _gateway


def score(record: dict[str, Any], work_s: float) -> dict[str, Any]:
    """The per-record work: I/O wait plus a little CPU, as a remote scoring call would be."""
    time.sleep(work_s)
    text = f"{record['id']}:{record['text']}"
    return {"id": record["id"], "score": sum(map(ord, text)) % 97}


def durable_action(record: dict[str, Any], ctx: dnb.RunnerContext) -> dict[str, Any]:
    return ctx.durable_execute(score, record, record["work_s"])


def plain_pyflink(records: list[dict[str, Any]], parallelism: int) -> list[Any]:
    """The same job shape as FlinkRunner, calling ``score`` directly: no store, no runs."""
    from pyflink.common import Configuration, Types, WatermarkStrategy
    from pyflink.datastream import KeyedProcessFunction, StreamExecutionEnvironment
    from pyflink.datastream.connectors.number_seq import NumberSequenceSource
    from pyflink.datastream.state import ValueStateDescriptor

    from durable_nb.runners.flink_job import _env_var

    class Plain(KeyedProcessFunction):  # type: ignore[misc]
        def __init__(self, records: list[dict[str, Any]]) -> None:
            self.records = records

        def open(self, runtime_context: Any) -> None:
            self.seq = runtime_context.get_state(ValueStateDescriptor("seq", Types.LONG()))

        def process_element(self, value: int, ctx: Any) -> Any:
            seq = self.seq.value() or 0
            self.seq.update(seq + 1)
            record = self.records[value]
            yield value, score(record, record["work_s"])

    conf = Configuration()
    conf.set_string("restart-strategy.type", "fixed-delay")
    conf.set_string("restart-strategy.fixed-delay.attempts", "3")
    conf.set_string("execution.checkpointing.interval", "500 ms")
    conf.set_string("python.executable", sys.executable)
    with _env_var("_python_worker_execution_mode", "process"):
        env = StreamExecutionEnvironment.get_execution_environment(conf)
    env.set_parallelism(1)
    keys = [repr(r["id"]) for r in records]
    out = (
        env.from_source(NumberSequenceSource(0, len(records) - 1), WatermarkStrategy.no_watermarks(), "records")
        .set_parallelism(1)
        .key_by(lambda i: keys[i], key_type=Types.STRING())
        .process(Plain(records), output_type=Types.PICKLED_BYTE_ARRAY())
        .set_parallelism(parallelism)
    )
    with out.execute_and_collect("plain pyflink") as rows:
        return sorted(rows, key=lambda row: row[0])


def once(fn: Any) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def report(label: str, n: int, times: list[float]) -> float:
    best = min(times)
    spread = f" (rounds: {', '.join(f'{t:.2f}' for t in times)} s)" if len(times) > 1 else ""
    print(f"{label:<34} {n:>6} records in {best:7.2f} s = {n / best:8.1f} records/s{spread}", flush=True)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--work-ms", type=float, default=5.0)
    parser.add_argument("--parallelism", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3,
                        help="Flink runs alternate this many times; the best of each is reported")
    args = parser.parse_args()
    work_s = args.work_ms / 1000
    records = [{"id": i, "text": f"record number {i}", "work_s": work_s} for i in range(args.records)]
    warm = records[:20]

    print(f"# {args.records} records, {args.work_ms} ms of work each, parallelism {args.parallelism}")
    _gateway()
    with tempfile.TemporaryDirectory() as tmp:
        flink_runner = FlinkRunner(dnb.SqliteStore(Path(tmp) / "warm.db"), parallelism=args.parallelism)
        flink_runner.map(durable_action, warm, key="id")
        plain_pyflink(warm, args.parallelism)

        t_flinks, t_plains, t_replays = [], [], []
        for round_ in range(args.rounds):
            # A fresh journal each round: every round journals every call for the first time.
            fresh = FlinkRunner(dnb.SqliteStore(Path(tmp) / f"flink{round_}.db"), parallelism=args.parallelism)
            journaled = functools.partial(fresh.map, durable_action, records, key="id")
            t_flinks.append(once(journaled))
            t_plains.append(once(functools.partial(plain_pyflink, records, args.parallelism)))
            t_replays.append(once(journaled))
        local = dnb.LocalRunner(dnb.SqliteStore(Path(tmp) / "local.db"))
        t_local = [once(functools.partial(local.map, durable_action, records, key="id"))]
        t_flink = report("FlinkRunner (journaled)", args.records, t_flinks)
        t_plain = report("plain PyFlink (no journal)", args.records, t_plains)
        report("LocalRunner (journaled, 1 thread)", args.records, t_local)
        t_replay = report("FlinkRunner, same map replayed", args.records, t_replays)
    ratio = t_flink / t_plain
    verdict = "OK" if ratio <= 1.5 else "ABOVE TARGET"
    print(f"durability cost on Flink: {ratio:.2f}x plain PyFlink (target <= 1.5x): {verdict}")
    print(f"(a replay of the finished map took {t_replay / t_flink:.2f}x the first run)")


if __name__ == "__main__":
    main()
