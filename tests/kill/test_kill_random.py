"""Randomized SIGKILLs: at least 100 kills at random instants, no corruption, nothing lost.

One journal file takes many runs of 30 durable calls. Each run is started in a
child process that the test SIGKILLs after a random delay (seeded), again and
again, then finished by a recovery in this process. After every kill:

* ``PRAGMA integrity_check`` is ok and the journal opens;
* every call the child acknowledged (``durable_execute`` returned, ack fsynced) is
  still SUCCEEDED with the same result: a kill never takes back a SUCCEEDED record;
* the journal is a gap-free prefix (indexes 0..k, all SUCCEEDED but maybe the
  last, which may be PENDING), and the ledger of side effects has no duplicate and
  no line the journal does not account for.

At the end of each run every side effect is in the ledger exactly once.

``DURABLE_NB_KILL_SEED`` and ``DURABLE_NB_KILLS`` change the seed and the number
of kills (defaults 2024 and 100).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import child as child_mod  # child.py beside this file (pytest puts this folder on sys.path)
import pytest
from checks import assert_after_random_kill, integrity

import durable_nb as dnb

pytestmark = pytest.mark.kill

CHILD = Path(__file__).with_name("child.py")
CALLS = 30
SPECIAL = 10
SEED = int(os.environ.get("DURABLE_NB_KILL_SEED", "2024"))
KILLS = int(os.environ.get("DURABLE_NB_KILLS", "100"))
MAX_KILLS_PER_RUN = 5




def start(db: Path, run: str, ledger: Path, ack: Path, durability: str = "call") -> subprocess.Popen[str]:
    cmd = [sys.executable, str(CHILD), "--db", str(db), "--ledger", str(ledger), "--run", run,
           "--calls", str(CALLS), "--special", str(SPECIAL), "--ack", str(ack), "--durability", durability]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line == "ready\n", (line, proc.communicate(timeout=30))
    return proc


def check_journal(db: Path, run: str, ledger: Path, ack: Path, durability: str = "call") -> tuple[int, bool]:
    """The invariants that hold after any kill; returns (calls SUCCEEDED, last one PENDING)."""
    assert integrity(db) == "ok"
    store = dnb.SqliteStore(db)
    try:
        calls = store.calls(run)
    finally:
        store.close()
    return assert_after_random_kill(calls, run, ledger, ack, durability)


@pytest.mark.timeout(600)  # ~150 child processes; a shared 2-core machine can be slow
@pytest.mark.parametrize("durability", ["call", "transition"])
def test_random_sigkills_never_corrupt_or_lose_a_succeeded_call(tmp_path: Path, durability: str) -> None:
    rng = random.Random(SEED)
    db = tmp_path / "journal.db"

    # Calibrate: how long a run's calls take after the child says "ready" (until its last call is
    # acknowledged; not the interpreter's exit after it, where a kill would prove nothing).
    calibrate_ack = tmp_path / "calibrate.ack"
    proc = start(db, "calibrate", tmp_path / "calibrate.ledger", calibrate_ack, durability)
    t0 = time.perf_counter()
    while len(child_mod.ledger_lines(calibrate_ack)) < CALLS and proc.poll() is None:
        time.sleep(0.0005)
    window = time.perf_counter() - t0
    assert proc.wait(timeout=60) == 0, proc.communicate()

    kills = runs = spawned = 0
    states: list[tuple[int, bool]] = []
    started = time.perf_counter()
    while kills < KILLS:
        assert runs < 10 * KILLS, "the children keep finishing before the kill; the window is wrong"
        run = f"run-{runs}"
        runs += 1
        ledger, ack = tmp_path / f"{run}.ledger", tmp_path / f"{run}.ack"
        finished = False
        for _ in range(rng.randint(1, MAX_KILLS_PER_RUN)):
            proc = start(db, run, ledger, ack, durability)
            spawned += 1
            time.sleep(rng.uniform(0, window))
            proc.kill()
            _, err = proc.communicate(timeout=60)
            if proc.returncode == 0:
                finished = True
                break
            assert proc.returncode == -signal.SIGKILL, err
            kills += 1
            n_ok, pending = check_journal(db, run, ledger, ack, durability)
            states.append((n_ok, pending))
        if not finished:  # recover here, in the test process
            child_mod.LEDGER, child_mod.ACK, child_mod.KILL_POINT = ledger, ack, None
            store = dnb.SqliteStore(db)
            try:
                out = dnb.LocalRunner(store).run(child_mod.make_action(CALLS, SPECIAL), None, run_id=run)
            finally:
                store.close()
            assert out == [child_mod.result(i) for i in range(CALLS)]
        assert check_journal(db, run, ledger, ack, durability) == (CALLS, False)
        assert child_mod.ledger_lines(ledger) == [str(i) for i in range(CALLS)]
        store = dnb.SqliteStore(db)
        try:
            assert store.run(run).status is dnb.RunStatus.COMPLETED
        finally:
            store.close()

    elapsed = time.perf_counter() - started
    with_pending = sum(pending for _, pending in states)
    mid_run = sum(0 < n < CALLS for n, _ in states)
    print(
        f"\n{kills} SIGKILLs over {runs} runs ({spawned} children, seed {SEED}) in {elapsed:.1f} s: "
        f"{mid_run} mid-run, {with_pending} left a call PENDING"
    )
    # The kills must really land inside runs, in flight, or the test proves little.
    assert mid_run >= kills // 4 and with_pending >= 5
