"""FlinkRunner on the local mini-cluster: results, replay, failover, and clear errors."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import warnings
from pathlib import Path
from typing import Any

import _orders
import pytest

import durable_nb as dnb
from durable_nb.runners.flink_job import FlinkJobError, FlinkRunner, FlinkSetupError, check_java

pytestmark = pytest.mark.flink


@pytest.mark.timeout(180)
def test_map_survives_a_worker_crash_after_a_side_effect_with_each_charge_exactly_once(
    flink: None, tmp_path: Path
) -> None:
    store = dnb.SqliteStore(tmp_path / "journal.db")
    action = _orders.make_action(tmp_path, crash_at=120)
    runner = FlinkRunner(store, parallelism=2, checkpoint_interval_ms=200)

    # Keyed by customer: 7 keys, so each run id carries a per-key sequence number that
    # the restored job must give back to the same order (or charges would repeat).
    df = runner.map(action, _orders.orders(200), key="customer")

    assert (tmp_path / "crashed.flag").exists(), "the injected crash did not happen"
    _orders.check_exactly_once(df, tmp_path, 200)
    assert df["run_id"].iloc[120].endswith(f"/c{120 % 7}#{120 // 7}")
    # The crashed charge was in flight (PENDING): its reconciler recovered it from the ledger.
    crashed = store.calls(df["run_id"].iloc[120])
    assert [(c.status.value, c.origin.value) for c in crashed] == [
        ("SUCCEEDED", "RECONCILED"), ("SUCCEEDED", "EXECUTED")
    ]
    # The job was restored, not restarted from scratch: records after the checkpoint
    # were reprocessed under the same run ids (a second attempt), and they replayed.
    assert any(run.attempts > 1 for run in store.runs())
    assert len(store.runs()) == 200
    store.close()


@pytest.mark.timeout(120)
def test_map_again_replays_every_call_and_matches_local_runner_run_ids(
    flink: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = dnb.SqliteStore(tmp_path / "journal.db")
    action = _orders.make_action(tmp_path)
    runner = FlinkRunner(store, parallelism=2)
    records = [*_orders.orders(10), {"id": 3, "amount": 99.0}]  # a repeated key: seq 1

    first = runner.map(action, records, key="id")
    work_after_first = (tmp_path / "work.txt").read_text()
    assert "replayed=" not in capsys.readouterr().err, "progress is off unless asked for"
    again = runner.map(action, records, key="id", progress=True)
    bar = capsys.readouterr().err
    assert "11/11" in bar and "replayed=11 failed=0" in bar, bar
    local = dnb.LocalRunner(store).map(action, records, key="id")

    assert list(first["run_id"]) == list(again["run_id"]) == list(local["run_id"])
    assert first["run_id"].iloc[-1].endswith("/3#1")
    assert list(first["result"]) == list(again["result"]) == list(local["result"])
    assert (tmp_path / "work.txt").read_text() == work_after_first, "a replay re-ran a durable call"
    assert sum(_orders.ledger_counts(tmp_path).values()) == 11
    store.close()


def _fails_on_odd(record: dict[str, int], ctx: dnb.RunnerContext) -> tuple[int, Any]:
    if record["id"] % 2:
        raise ValueError(f"odd order {record['id']}")
    return record["id"], ctx.key


@pytest.mark.timeout(120)
def test_an_action_exception_is_a_failed_row_and_run_reraises_it(flink: None, tmp_path: Path) -> None:
    store = dnb.SqliteStore(tmp_path / "journal.db")
    runner = FlinkRunner(store, parallelism=1)

    df = runner.map(_fails_on_odd, [{"id": i} for i in range(4)], key="id")

    assert list(df["status"]) == ["COMPLETED", "FAILED", "COMPLETED", "FAILED"]
    assert df["error"].iloc[1] == "ValueError: odd order 1"
    assert list(df["result"]) == [(0, 0), None, (2, 2), None]  # ctx.key: the record's key
    # A run has no record key: ctx.key is None, as on LocalRunner (not the run id).
    assert runner.run(_fails_on_odd, {"id": 2}, run_id="two") == (2, None)
    assert dnb.LocalRunner(store).run(_fails_on_odd, {"id": 2}, run_id="two") == (2, None)
    with pytest.raises(ValueError, match="odd order 3"):
        runner.run(_fails_on_odd, {"id": 3}, run_id="three")
    assert store.run("three").status.value == "FAILED"
    store.close()


class HeldClientError(Exception):
    """An exception holding something that cannot be pickled (a client's lock), as SDK errors do."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.client_lock = threading.Lock()


def _big(n: int) -> bytes:
    return b"x" * n


async def _async_action(record: dict[str, int], ctx: dnb.RunnerContext) -> bytes:
    if record["size"] < 0:
        raise HeldClientError(f"declined {record['size']}")
    return await ctx.durable_execute_async(_big, record["size"])


@pytest.mark.timeout(180)
def test_from_a_notebook_an_async_action_runs_a_big_result_comes_back_and_an_exception_keeps_its_class(
    flink: None, tmp_path: Path
) -> None:
    """A notebook cell has a running event loop, but the action runs in a worker, which has none; a 3 MB
    result is over Flink's 2 MB collect default (which failed the whole job); an exception with an
    attribute that cannot be pickled comes back as its class, as the journal keeps it."""
    import asyncio

    store = dnb.SqliteStore(tmp_path / "journal.db")
    runner = FlinkRunner(store, parallelism=1)
    records = [{"id": 0, "size": 3_000_000}, {"id": 1, "size": 10}]

    async def cell() -> tuple:
        frame = runner.map(_async_action, records, key="id")
        with pytest.raises(HeldClientError, match="declined -1"):
            runner.run(_async_action, {"id": 9, "size": -1}, run_id="declined")
        return frame

    frame = asyncio.run(cell())
    assert list(frame["status"]) == ["COMPLETED", "COMPLETED"]
    assert [len(r) for r in frame["result"]] == [3_000_000, 10]
    store.close()


class LoadsOnlyWhereMade:
    """A result that pickles in the worker but cannot be rebuilt in the notebook (its ``__reduce__`` needs
    something only the worker has: a connection, a model on a GPU)."""

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuild_elsewhere, ()


def _rebuild_elsewhere() -> None:
    raise RuntimeError("the client this result reconnects to is not reachable here")


def _returns_per_id(record: dict[str, int], ctx: dnb.RunnerContext) -> Any:
    return LoadsOnlyWhereMade() if record["id"] == 1 else record["id"] * 10


@pytest.mark.timeout(120)
def test_a_result_the_notebook_cannot_load_is_its_records_failed_row_and_the_other_rows_come_back(
    flink: None, tmp_path: Path
) -> None:
    """It raised out of ``map`` after the job had succeeded: every row lost for one record's result."""
    store = dnb.SqliteStore(tmp_path / "journal.db")
    df = FlinkRunner(store, parallelism=1).map(_returns_per_id, [{"id": i} for i in range(3)], key="id")

    assert list(df["status"]) == ["COMPLETED", "FAILED", "COMPLETED"]
    assert [df["result"][0], df["result"][2]] == [0, 20]
    assert "cannot be loaded in the notebook" in df["error"][1] and "not reachable here" in df["error"][1]
    assert store.run(df["run_id"][1]).status.value == "COMPLETED"  # the run itself ended well
    store.close()


def _makes_a_lock(record: int, ctx: dnb.RunnerContext) -> str:
    lock = ctx.durable_execute(threading.Lock)  # cannot be journaled: the call stays PENDING, with a warning
    return f"{record}: locked {lock.locked()}"


@pytest.mark.timeout(120)
def test_a_warning_a_durable_call_gives_in_a_worker_reaches_the_notebook(flink: None, tmp_path: Path) -> None:
    store = dnb.SqliteStore(tmp_path / "journal.db")
    with pytest.warns(dnb.UnserializableResultWarning, match=r"returned a .*lock.*\(in a Flink worker\)"):
        frame = FlinkRunner(store, parallelism=1).map(_makes_a_lock, [7])
    assert list(frame["result"]) == ["7: locked False"]
    assert [c.status.value for c in store.calls(frame["run_id"][0])] == ["PENDING"]
    store.close()


# ---------------------------------------------------------------- clear errors


def _crashes_always(record: int, ctx: dnb.RunnerContext) -> int:
    raise dnb.SimulatedCrash("always", "before_call")


@pytest.mark.timeout(120)
def test_a_crash_on_every_attempt_fails_the_job_naming_the_crash(flink: None, tmp_path: Path) -> None:
    runner = FlinkRunner(dnb.SqliteStore(tmp_path / "journal.db"), restart_attempts=1, restart_delay_ms=100)
    with pytest.raises(FlinkJobError, match=r"restart\(s\)\): durable_nb\.errors\.SimulatedCrash: simulated crash"):
        runner.map(_crashes_always, [1])


def test_a_memory_store_is_refused_because_workers_cannot_reach_it(flink: None) -> None:
    with pytest.raises(FlinkSetupError, match="MemoryStore"):
        FlinkRunner(dnb.MemoryStore())


def test_a_read_only_journal_is_refused_before_any_job(java: None, tmp_path: Path) -> None:
    """Was: accepted; every record's run failed to open in the workers, and the map raised a FlinkJobError
    after three restarts (12 s)."""
    dnb.SqliteStore(tmp_path / "journal.db").close()
    with pytest.raises(FlinkSetupError, match=r"journal\.db is open read-only \(.*mode=ro.*\): no worker"):
        FlinkRunner(dnb.SqliteStore(tmp_path / "journal.db", read_only=True))


def test_an_unpicklable_action_or_record_is_named_before_the_job_starts(flink: None, tmp_path: Path) -> None:
    runner = FlinkRunner(dnb.SqliteStore(tmp_path / "journal.db"))
    lock = threading.Lock()

    def holds_a_lock(record: int, ctx: dnb.RunnerContext) -> int:
        with lock:
            return record

    with pytest.raises(TypeError, match=r"action .*holds_a_lock.* cannot be pickled"):
        runner.map(holds_a_lock, [1, 2])
    with pytest.raises(TypeError, match=r"record 1 \(lock\) cannot be pickled"):
        runner.map(_fails_on_odd, [{"id": 0}, threading.Lock()])
    with pytest.raises(TypeError, match=r"the key of record 1 \(lock\) cannot be pickled.*Keys must be plain"):
        runner.map(_fails_on_odd, [{"id": 0}, {"id": 1}], key=lambda record: lock if record["id"] else 0)
    for bad in ("", 5):  # refused as LocalRunner.run refuses it, before any job ("" ran under another run id)
        with pytest.raises(ValueError, match="run_id must be a non-empty string"):
            runner.run(_fails_on_odd, {"id": 2}, run_id=bad)  # type: ignore[arg-type]
    assert runner.store.runs() == []


def test_an_action_closing_over_a_large_object_is_warned_about_naming_it_before_the_job() -> None:
    """Was: silent; a 150 MB closure on a StandaloneCluster failed the job with only
    ``java.lang.OutOfMemoryError: Java heap space`` (the client JVM copies the action into the job graph)."""
    from durable_nb.runners.flink_job import SHIP_WARN, check_shippable

    weights = b"w" * (SHIP_WARN + (1 << 20))

    def predict(record: int, ctx: dnb.RunnerContext) -> int:
        return len(weights) + record

    with pytest.warns(UserWarning, match=r"action 'predict' pickles to 33 MB, mostly 'weights' \(33 MB\).*"
                                         r"OutOfMemoryError.*Load large data inside the action") as caught:
        check_shippable("FlinkRunner", "the action 'predict'", predict)
    assert caught[0].filename == __file__
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_shippable("FlinkRunner", "the action '_fails_on_odd'", _fails_on_odd)  # small: nothing to say


def test_inject_crash_around_a_flink_job_says_it_cannot_reach_the_workers(flink: None, tmp_path: Path) -> None:
    """Was: ``with dnb.inject_crash(...): FlinkRunner(...).map(...)`` crashed nothing, silently (the hook lives
    in the notebook, the calls run in worker processes), and the "recovered" job had never failed."""
    import warnings

    runner = FlinkRunner(dnb.SqliteStore(tmp_path / "journal.db"))
    with dnb.inject_crash(call="_orders.charge_card", point="after_call"):
        with pytest.warns(UserWarning, match=r"inject_crash\(call='_orders.charge_card'.*Flink worker processes"):
            assert runner.map(_fails_on_odd, [], key="id").empty  # no records: no job, the warning all the same
        with pytest.warns(UserWarning, match="no durable call of this job will crash"), \
                pytest.raises(ValueError, match="run_id must be a non-empty string"):
            runner.run(_fails_on_odd, {"id": 2}, run_id="")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # outside the block: nothing to say
        assert runner.map(_fails_on_odd, [], key="id").empty


@pytest.mark.timeout(120)
def test_a_journal_the_workers_cannot_see_fails_the_job_with_a_clear_error(flink: None, tmp_path: Path) -> None:
    store = dnb.SqliteStore(tmp_path / "journal.db")
    runner = FlinkRunner(store, restart_attempts=0)
    store.close()
    for suffix in ("", "-wal", "-shm"):  # the path as a worker on another machine sees it: nothing there
        Path(f"{store.path}{suffix}").unlink(missing_ok=True)

    with pytest.raises(FlinkSetupError, match="does not exist on Flink worker"):
        runner.map(_fails_on_odd, [{"id": 0}])
    assert not store.path.exists(), "a worker created an empty journal of its own"


def test_missing_java_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(FlinkSetupError, match=r"needs Java 11\+ \(no `java` on PATH"):
        check_java()


def test_a_java_too_old_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    old_java = tmp_path / "jdk8" / "bin" / "java"  # a real executable that answers like Java 8 does
    old_java.parent.mkdir(parents=True)
    old_java.write_text('#!/bin/sh\necho \'openjdk version "1.8.0_392"\' >&2\n')
    old_java.chmod(0o755)
    monkeypatch.setenv("JAVA_HOME", str(old_java.parent.parent))
    with pytest.raises(FlinkSetupError, match=r"needs Java 11\+, but .* is 'openjdk version \"1\.8\.0_392\"'"):
        check_java()


def test_import_is_cheap_and_a_missing_pyflink_names_the_extra() -> None:
    code = (
        "import sys; import durable_nb as dnb; assert 'pyflink' not in sys.modules, 'pyflink imported';"
        "sys.modules['pyflink'] = None\n"
        "try:\n    dnb.FlinkRunner()\nexcept ImportError as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    assert out.returncode == 0, out.stderr
    assert "pip install 'durable_nb[flink]'" in out.stdout


def _absolute(record: dict[str, int], ctx: dnb.RunnerContext) -> int:
    return ctx.durable_execute(abs, record["id"])


@pytest.mark.timeout(120)
def test_strict_runner_raises_non_determinism_instead_of_discarding_the_journal(
    flink: None, tmp_path: Path
) -> None:
    from durable_nb.errors import NonDeterminismError

    store = dnb.SqliteStore(tmp_path / "journal.db")
    assert FlinkRunner(store, parallelism=1).run(_absolute, {"id": -2}, run_id="nd") == 2

    with pytest.raises(NonDeterminismError, match=r"run 'nd' is not deterministic at call 0"):
        FlinkRunner(store, parallelism=1, strict=True).run(_absolute, {"id": -5}, run_id="nd")
    assert [c.status.value for c in store.calls("nd")] == ["SUCCEEDED"] and store.discarded("nd") == []
    store.close()


def test_a_worker_exception_without_a_message_is_still_named() -> None:
    from durable_nb.runners.compat import failure_cause

    trace = ("java.lang.RuntimeException: Error received from SDK harness for instruction 2: Traceback (most "
             "recent call last):\n  File \"worker.py\", line 3, in process\n    raise KeyboardInterrupt\n"
             "KeyboardInterrupt\n\tat org.apache.beam.Something(Something.java:1)\n")
    assert failure_cause(trace) == "KeyboardInterrupt"
    assert failure_cause(trace.replace("KeyboardInterrupt\n\tat", "ValueError: odd 3\n\tat")) == "ValueError: odd 3"
    # With concurrency > 1, PyFlink's async I/O wraps it with the record's line (base64): the error alone is named.
    wrapped = ("Exception: (\"Error happens inside the class '<class 'durable_nb.runners.flink_concurrent."
               "DurableConcurrent'>' during handling input '('Mw==', 'Mw==\\tgAWVHQ==', 0)'\", "
               "ActionCrashed(\"SystemExit: 3 (raised by the action in a Flink "
               "worker's thread pool, concurrency > 1)\"))")
    assert failure_cause(trace.replace("KeyboardInterrupt\n\tat", wrapped + "\n\tat")) == (
        "ActionCrashed: SystemExit: 3 (raised by the action in a Flink worker's thread pool, concurrency > 1)")


def _doubled(record: int, ctx: dnb.RunnerContext) -> int:
    return ctx.durable_execute(int.__mul__, record, 2)


@pytest.mark.timeout(120)
def test_a_relative_records_dir_is_this_folders_and_a_missing_one_is_named(
    flink: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The records file is read as a file:// URI: "recs" failed with "relative path can't be expressed
    # as a file URI", and the JobManager and TaskManagers resolve a relative folder against their own.
    (tmp_path / "recs").mkdir()
    monkeypatch.chdir(tmp_path)
    store = dnb.SqliteStore(tmp_path / "journal.db")
    runner = FlinkRunner(store, parallelism=1, records_dir="recs")
    assert runner.records_dir == tmp_path / "recs"
    assert list(runner.map(_doubled, [1, 2])["result"]) == [2, 4]
    assert not list((tmp_path / "recs").iterdir()), "the records file was left behind"
    with pytest.raises(FlinkSetupError, match="records_dir .*nowhere.* is not a folder"):
        FlinkRunner(store, records_dir=tmp_path / "nowhere")
    store.close()


def test_a_cluster_jobs_failure_points_at_the_clusters_logs_not_this_machines() -> None:
    # The workers ran on the cluster: this machine's FLINK_LOG_DIR holds only the client's logs.
    from durable_nb.runners.flink_job import job_error

    cause = "Caused by: java.lang.RuntimeException: durable_nb.errors.JournalUnavailableError: check the DSN."
    message = str(job_error(RuntimeError(cause), "durable_nb map place", 3, ("flink-host", 8081)))
    assert "TaskManagers' logs" in message and "http://flink-host:8081" in message, message
    assert "DSN.." not in message, message
