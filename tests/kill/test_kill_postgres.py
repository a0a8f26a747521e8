"""The SIGKILL suites on PostgreSQL: kill a client at each instant of a durable call, and at random.

Same child (tests/kill/child.py, given a DSN instead of a file) and the same promises
as tests/kill/test_kill_points.py: the journal a killed client leaves holds what the
replay rules promise at that instant (one the two-commit scheme could also leave),
its lease dies with its connection so another process recovers at once, and every
side effect happens exactly once with a ledger-reading reconciler.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import child as child_mod  # child.py beside this file (pytest puts this folder on sys.path)
import pytest
from checks import CALLS, EXPECTED, SPECIAL, assert_after_random_kill, assert_recovered, ledger_counts

import durable_nb as dnb

pytestmark = pytest.mark.kill

CHILD = Path(__file__).with_name("child.py")
RUN = "order-7"



# Ledger lines right after the kill, and the status call SPECIAL is left in (None: not written).


def spawn(dsn: str, ledger: Path, *extra: str, durability: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, str(CHILD), "--db", dsn, "--ledger", str(ledger), "--run", RUN,
           "--calls", str(CALLS), "--special", str(SPECIAL), "--durability", durability, *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def recover(dsn: str, ledger: Path, durability: str) -> subprocess.CompletedProcess[str]:
    """Recovery in a new process; the dead client's lease goes when the server sees its connection end."""
    deadline = time.monotonic() + 30
    while True:
        done = spawn(dsn, ledger, durability=durability)
        if "RunBusyError" not in done.stderr or time.monotonic() > deadline:
            return done
        time.sleep(0.2)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("durability", ["transition", "call"])
@pytest.mark.parametrize("point", list(EXPECTED))
def test_sigkill_at_point_on_postgres_recovers_every_side_effect_exactly_once(
    pg_dsn: str, tmp_path: Path, point: str, durability: str
) -> None:
    ledger = tmp_path / "ledger.txt"
    n_effects, special_status, recovered_origin = EXPECTED[point]

    killed = spawn(pg_dsn, ledger, "--kill", point, durability=durability)
    assert killed.returncode == -signal.SIGKILL, killed.stderr

    store = dnb.PostgresStore(pg_dsn)
    try:
        rec = store.run(RUN)
        calls = store.calls(RUN)
        assert rec is not None and rec.status is dnb.RunStatus.RUNNING and rec.owner is not None
        statuses = [c.status for c in calls]
        n_ok = statuses.count(dnb.Status.SUCCEEDED)
        # The two-commit scheme could leave this: SUCCEEDED calls, then at most one PENDING.
        assert statuses == [dnb.Status.SUCCEEDED] * n_ok + [dnb.Status.PENDING] * (len(calls) - n_ok)
        assert len(calls) - n_ok <= 1
        # Under "call" the outcome of call SPECIAL-1 commits with call SPECIAL's PENDING, so a kill
        # before that commit leaves call SPECIAL-1 PENDING (as a kill just after it returned would).
        held_back = durability == "call" and point == "before_pending_commit" and len(calls) == SPECIAL \
            and statuses[-1] is dnb.Status.PENDING
        if held_back or special_status is None:
            assert len(calls) == SPECIAL
        else:
            assert len(calls) == SPECIAL + 1 and calls[SPECIAL].call_id == "kill.charge"
            assert calls[SPECIAL].status is special_status
        n_ok = SPECIAL - 1 if held_back else SPECIAL
        assert [c.result() for c in calls[:n_ok]] == [child_mod.result(i) for i in range(n_ok)]
        assert child_mod.ledger_lines(ledger) == [str(i) for i in range(n_effects)]
    finally:
        store.close()

    recovered = recover(pg_dsn, ledger, durability)
    assert recovered.returncode == 0, recovered.stderr
    expected_results = [child_mod.result(i) for i in range(CALLS)]
    assert json.loads(recovered.stdout.splitlines()[-1]) == expected_results
    assert ledger_counts(ledger) == {str(i): 1 for i in range(CALLS)}
    store = dnb.PostgresStore(pg_dsn)
    try:
        assert_recovered(store.calls(RUN), recovered_origin, held_back)
        rec = store.run(RUN)
        assert rec is not None and rec.status is dnb.RunStatus.COMPLETED and rec.owner is None
    finally:
        store.close()


# ---------------------------------------------------------------- random kills

SEED, KILLS, RANDOM_CALLS = 2024, 20, 30


def check_random(dsn: str, run: str, ledger: Path, ack: Path, durability: str) -> tuple[int, bool]:
    """What holds after any kill (tests/kill/checks.py), read from the server."""
    store = dnb.PostgresStore(dsn)
    try:
        calls = store.calls(run)
    finally:
        store.close()
    return assert_after_random_kill(calls, run, ledger, ack, durability)


def start_random(dsn: str, run: str, ledger: Path, ack: Path, durability: str) -> subprocess.Popen[str]:
    cmd = [sys.executable, str(CHILD), "--db", dsn, "--ledger", str(ledger), "--run", run, "--calls",
           str(RANDOM_CALLS), "--special", "10", "--ack", str(ack), "--durability", durability]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline() == "ready\n", proc.communicate(timeout=30)
    return proc


@pytest.mark.timeout(300)
@pytest.mark.parametrize("durability", ["call", "transition"])
def test_random_sigkills_on_postgres_never_lose_an_acknowledged_call(
    pg_dsn: str, tmp_path: Path, durability: str
) -> None:
    import random

    rng = random.Random(SEED)
    # Calibrate: how long the calls take after "ready" (the child's exit, which follows, is not a target).
    ack = tmp_path / "c.ack"
    proc = start_random(pg_dsn, "calibrate", tmp_path / "c.ledger", ack, durability)
    t0 = time.perf_counter()
    while len(child_mod.ledger_lines(ack)) < RANDOM_CALLS and proc.poll() is None:
        time.sleep(0.0005)
    window = time.perf_counter() - t0
    assert proc.wait(timeout=60) == 0, proc.communicate()
    kills = runs = 0
    states: list[tuple[int, bool]] = []
    while kills < KILLS:
        assert runs < 10 * KILLS, "the children keep finishing before the kill"
        run, runs = f"run-{runs}", runs + 1
        ledger, ack = tmp_path / f"{run}.ledger", tmp_path / f"{run}.ack"
        for _ in range(rng.randint(1, 4)):
            proc = start_random(pg_dsn, run, ledger, ack, durability)
            time.sleep(rng.uniform(0, window))
            proc.kill()
            _, err = proc.communicate(timeout=60)
            if proc.returncode == 0:
                break
            if "RunBusyError" in err:  # the server had not yet seen the last victim's connection end
                time.sleep(0.2)
                continue
            assert proc.returncode == -signal.SIGKILL, err
            kills += 1
            states.append(check_random(pg_dsn, run, ledger, ack, durability))
            if states[-1] == (RANDOM_CALLS, False):
                break  # every call was done (killed while closing or exiting): the next run
        done = recover_random(pg_dsn, run, ledger, ack, durability)
        assert done == [child_mod.result(i) for i in range(RANDOM_CALLS)]
        assert check_random(pg_dsn, run, ledger, ack, durability) == (RANDOM_CALLS, False)
        assert child_mod.ledger_lines(ledger) == [str(i) for i in range(RANDOM_CALLS)]
    mid_run = sum(0 < n < RANDOM_CALLS for n, _ in states)
    assert mid_run >= kills // 4  # the kills really landed inside runs


def recover_random(dsn: str, run: str, ledger: Path, ack: Path, durability: str) -> Any:
    """Finish the run in this process (a recovery), waiting for a killed child's lock to go."""
    child_mod.LEDGER, child_mod.ACK, child_mod.KILL_POINT = ledger, ack, None
    store = dnb.PostgresStore(dsn, durability=durability)
    deadline = time.monotonic() + 30
    try:
        while True:
            try:
                return dnb.LocalRunner(store).run(child_mod.make_action(RANDOM_CALLS, 10), None, run_id=run)
            except dnb.RunBusyError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
    finally:
        store.close()
