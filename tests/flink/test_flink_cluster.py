"""FlinkRunner against a real standalone cluster, journaling in PostgreSQL, whose TaskManager is SIGKILLed mid-job.

The TaskManagers run in working folders of their own and never see a journal
file: every journal write goes through a real PostgreSQL server (the session's
``pg_server``), as on a cluster of separate machines with no shared disk.
"""

from __future__ import annotations

import _thread
import contextlib
import threading
import time
from pathlib import Path
from typing import Any

import _orders
import psutil
import pytest

import durable_nb as dnb
from durable_nb.journal.records import RunStatus
from durable_nb.runners.flink_cluster import StandaloneCluster
from durable_nb.runners.flink_job import FlinkRunner

pytestmark = pytest.mark.flink


def _gone(pid: int) -> bool:
    """Not running (a zombie, exited but not reaped, is gone too)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.mark.timeout(240)
def test_a_killed_taskmanager_journaling_in_postgresql_is_replaced_and_every_charge_happens_once(
    flink: None, tmp_path: Path, pg_dsn: str
) -> None:
    store = dnb.PostgresStore(pg_dsn)
    action = _orders.make_action(tmp_path, delay=0.02)  # ~4 s of charges: time to kill mid-job
    cluster = StandaloneCluster(slots=2)
    try:
        cluster.start()
        first_tm = cluster.taskmanagers[0]
        own = cluster.taskmanager_dirs[first_tm]
        assert Path(psutil.Process(first_tm).cwd()) == own and tmp_path not in own.parents
        runner = FlinkRunner(store, parallelism=2, checkpoint_interval_ms=300,
                             jobmanager=cluster.jobmanager, restart_attempts=10, restart_delay_ms=1000)
        outcome: dict[str, Any] = {}

        def submit() -> None:
            try:
                outcome["df"] = runner.map(action, _orders.orders(200), key="customer")
            except BaseException as exc:  # reported by the main thread
                outcome["error"] = exc

        job = threading.Thread(target=submit, daemon=True)
        job.start()
        deadline = time.monotonic() + 120
        while sum(_orders.ledger_counts(tmp_path).values()) < 60:
            assert job.is_alive(), outcome
            assert time.monotonic() < deadline, "the job did not start charging"
            time.sleep(0.05)

        cluster.kill_taskmanager(first_tm)  # SIGKILL: a lost machine, nothing flushed
        charged_at_kill = sum(_orders.ledger_counts(tmp_path).values())
        cluster.start_taskmanager()
        job.join(timeout=180)

        assert not job.is_alive(), "the job did not finish after the TaskManager was replaced"
        assert "error" not in outcome, outcome.get("error")
        assert charged_at_kill < 200, "the kill came after the job had charged everything"
        _orders.check_exactly_once(outcome["df"], tmp_path, 200)
        runs = store.runs()
        assert len(runs) == 200 and set(outcome["df"]["run_id"]) == {run.run_id for run in runs}
        assert all(len(store.calls(run.run_id)) == 2 for run in runs), "a record has more or fewer calls"
        [flink_job] = cluster.jobs()
        assert cluster.failures(flink_job["jid"]), "the job did not fail over after the kill"
        assert not list(tmp_path.glob("*.db")), "a SQLite journal appeared"
    finally:
        started = cluster.started_pids()
        cluster.stop()
        store.close()
    assert started and all(_gone(pid) for pid in started)


def _slow_charge(record: int, ctx: dnb.RunnerContext) -> int:
    return ctx.durable_execute(time.sleep, 1.0) or record


@pytest.mark.timeout(240)
def test_ctrl_c_right_after_a_cluster_job_was_submitted_cancels_it_and_leaves_the_taskmanager_running(
    flink: None, pg_dsn: str
) -> None:
    # Flink 2.3's collect sink cancelled while it was still starting threw in close() (FLINK-39330),
    # which the TaskManager took as fatal: one Ctrl-C shut it down, with every other job it ran.
    store = dnb.PostgresStore(pg_dsn)
    cluster = StandaloneCluster(slots=2, config={"web.refresh-interval": 20})  # REST sees task states at once
    try:
        cluster.start()
        [taskmanager] = cluster.taskmanagers
        runner = FlinkRunner(store, parallelism=2, jobmanager=cluster.jobmanager)

        def interrupt_while_the_sink_starts() -> None:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                with contextlib.suppress(Exception):
                    [job] = cluster.jobs()
                    vertices = cluster._rest(f"/jobs/{job['jid']}")["vertices"]
                    sink = next(v for v in vertices if "collect sink" in v["name"])["tasks"]
                    if sink["DEPLOYING"] or sink["INITIALIZING"]:
                        break
                time.sleep(0.01)
            _thread.interrupt_main()  # what Ctrl-C (a kernel interrupt) does to the waiting notebook

        threading.Thread(target=interrupt_while_the_sink_starts, daemon=True).start()
        with pytest.raises(KeyboardInterrupt):
            runner.map(_slow_charge, list(range(8)))
        assert len(cluster.jobs()) == 1
        deadline = time.monotonic() + 60
        while cluster.jobs()[0]["state"] not in ("CANCELED", "FAILED") and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(3)  # the fatal error came within a second of the cancel
        assert not _gone(taskmanager), "the TaskManager died when the job was cancelled"
        assert cluster.overview()["taskmanagers"] == 1
        [job] = cluster.jobs()
        assert job["state"] == "CANCELED", [entry.get("exceptionName") for entry in cluster.failures(job["jid"])]
        assert all(run.status is not RunStatus.FAILED for run in store.runs())
    finally:
        cluster.stop()
        store.close()
