"""FlinkRunner against a real standalone cluster whose TaskManager is SIGKILLed mid-job."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import _orders
import pytest

import durable_nb as dnb
from durable_nb.runners.flink_cluster import StandaloneCluster
from durable_nb.runners.flink_job import FlinkRunner

pytestmark = pytest.mark.flink


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    with open(f"/proc/{pid}/stat", "rb") as fh:  # a zombie is gone too
        return fh.read().rsplit(b")", 1)[1].split()[0] == b"Z"


@pytest.mark.timeout(240)
def test_a_killed_taskmanager_is_replaced_and_every_charge_happens_exactly_once(
    flink: None, tmp_path: Path
) -> None:
    store = dnb.SqliteStore(tmp_path / "journal.db")
    action = _orders.make_action(tmp_path, delay=0.02)  # ~4 s of charges: time to kill mid-job
    cluster = StandaloneCluster(slots=2)
    try:
        cluster.start()
        first_tm = cluster.taskmanagers[0]
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
        assert any(run.attempts > 1 for run in store.runs()), "nothing was reprocessed after the kill"
    finally:
        started = cluster.started_pids()
        cluster.stop()
        store.close()
    assert started and all(_gone(pid) for pid in started)
