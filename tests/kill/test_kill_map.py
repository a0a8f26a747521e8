"""SIGKILL during ``LocalRunner.map``, on SQLite and on a real PostgreSQL server.

A map is one durable boundary: inside it a record's end (and its last outcome)
rides with the next record's PENDING, so a record costs one commit. What that may
cost after a kill, and what it may not:

* killed at a random instant mid-map: the map run again performs every side effect
  exactly once (a record left in flight is reconciled from the ledger), and every
  row is COMPLETED with its result;
* killed right after the map returned (no clean exit, nothing flushed at exit): the
  map run again replays every record and touches no function and no reconciler,
  since a returned map's rows are durable.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import child as child_mod  # child.py beside this file (pytest puts this folder on sys.path)
import pytest
from checks import integrity

pytestmark = pytest.mark.kill

CHILD = Path(__file__).with_name("map_child.py")
RECORDS = 200


def command(journal: str, tmp_path: Path, *extra: str) -> list[str]:
    return [sys.executable, str(CHILD), "--db", journal, "--ledger", str(tmp_path / "ledger"),
            "--touched", str(tmp_path / "touched"), "--ack", str(tmp_path / "ack"),
            "--records", str(RECORDS), *extra]


def finish(journal: str, tmp_path: Path) -> dict[str, list[str]]:
    """Run the map to its end in a new process (waiting while a killed client's lease is still seen)."""
    deadline = time.monotonic() + 30
    while True:
        done = subprocess.run(command(journal, tmp_path), capture_output=True, text=True, timeout=120)
        if done.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert done.returncode == 0, done.stderr[-3000:]
    rows: dict[str, list[str]] = json.loads(done.stdout.strip().splitlines()[-1])
    return rows


def assert_sqlite_intact(journal: str) -> None:
    if not journal.startswith("postgresql"):
        assert integrity(journal) == "ok"


@pytest.mark.timeout(300)
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_map_killed_at_a_random_instant_performs_every_side_effect_once_when_run_again(
    journal: str, tmp_path: Path, seed: int
) -> None:
    # 3 ms of work per record: the map takes over 0.6 s, and the kill lands inside it.
    proc = subprocess.Popen(command(journal, tmp_path, "--sleep-ms", "3"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    deadline = time.monotonic() + 60
    while not child_mod.ledger_lines(tmp_path / "ledger") and time.monotonic() < deadline:
        time.sleep(0.005)  # the map has begun (imports done, first record charged)
    time.sleep(random.Random(seed).uniform(0.02, 0.3))
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stdout.close()
    assert proc.stderr is not None
    proc.stderr.close()
    assert not (tmp_path / "ack").exists(), "the map ended before the kill: nothing was tested"
    assert 0 < len(child_mod.ledger_lines(tmp_path / "ledger")) < RECORDS
    assert_sqlite_intact(journal)

    rows = finish(journal, tmp_path)
    assert rows["status"] == ["COMPLETED"] * RECORDS
    assert rows["result"] == [f"r{i}" for i in range(RECORDS)]
    ledger = child_mod.ledger_lines(tmp_path / "ledger")
    assert sorted(ledger, key=int) == [str(i) for i in range(RECORDS)]  # each side effect exactly once
    assert_sqlite_intact(journal)


@pytest.mark.timeout(300)
def test_a_map_that_returned_is_durable_even_if_the_process_is_killed_before_it_exits(
    journal: str, tmp_path: Path
) -> None:
    died = subprocess.run(command(journal, tmp_path, "--die-after-map"), capture_output=True, text=True,
                          timeout=120)
    assert died.returncode == -signal.SIGKILL, died.stderr[-3000:]
    assert child_mod.ledger_lines(tmp_path / "ack") == ["done"]
    touched_before = child_mod.ledger_lines(tmp_path / "touched")
    assert sorted(touched_before, key=int) == [str(i) for i in range(RECORDS)]

    rows = finish(journal, tmp_path)
    assert rows["status"] == ["COMPLETED"] * RECORDS
    assert rows["result"] == [f"r{i}" for i in range(RECORDS)]
    # Every record replayed: no function and no reconciler ran again.
    assert child_mod.ledger_lines(tmp_path / "touched") == touched_before
    assert_sqlite_intact(journal)
