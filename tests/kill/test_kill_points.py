"""SIGKILL at each instant of a durable call, then recovery in another process.

For every point the killed child leaves a journal that opens, passes
``PRAGMA integrity_check``, holds exactly the state the replay rules promise at
that instant, and that a recovery with a ledger-reading reconciler completes with
every side effect done exactly once. The journal ``inject_crash`` leaves in this
process is the one the SIGKILL leaves, which is what tutorials rely on.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import child as child_mod  # child.py beside this file (pytest puts this folder on sys.path)
import pytest
from checks import (
    CALLS,
    EXPECTED,
    SPECIAL,
    assert_recovered_by_child,
    integrity,
    ledger_counts,
)

import durable_nb as dnb

pytestmark = pytest.mark.kill

CHILD = Path(__file__).with_name("child.py")
RUN = "order-7"




def spawn(
    db: Path, ledger: Path, *extra: str, run: str = RUN, calls: int = CALLS, durability: str = "call"
) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, str(CHILD), "--db", str(db), "--ledger", str(ledger), "--run", run,
           "--calls", str(calls), "--special", str(SPECIAL), "--durability", durability, *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def snapshot(store: dnb.Store, run: str) -> tuple[Any, list[tuple[Any, ...]]]:
    """What must be equal between a SIGKILL and inject_crash: run status and each call's state."""
    rec = store.run(run)
    calls = [
        (c.index, c.call_id, c.args_digest, c.status, c.origin, c.result_preview) for c in store.calls(run)
    ]
    return (rec.status if rec else None), calls


def old_scheme_could_leave(calls: list[tuple[Any, ...]]) -> bool:
    """A journal the two-commit scheme can leave after a kill: SUCCEEDED calls, then at most one PENDING."""
    statuses = [c[3] for c in calls]
    n_ok = statuses.count(dnb.Status.SUCCEEDED)
    return statuses[:n_ok] == [dnb.Status.SUCCEEDED] * n_ok and statuses[n_ok:] in ([], [dnb.Status.PENDING])


@pytest.mark.timeout(60)
@pytest.mark.parametrize("durability", ["transition", "call"])
@pytest.mark.parametrize("point", list(EXPECTED))
def test_sigkill_at_point_recovers_every_side_effect_exactly_once(tmp_path: Path, point: str, durability: str) -> None:
    db, ledger = tmp_path / "journal.db", tmp_path / "ledger.txt"
    n_effects, special_status, recovered_origin = EXPECTED[point]
    # Under "call" the outcome of call SPECIAL-1 commits with call SPECIAL's PENDING: a kill
    # before that commit leaves call SPECIAL-1 PENDING (as a kill just after it returned would).
    held_back = durability == "call" and point == "before_pending_commit"

    killed = spawn(db, ledger, "--kill", point, durability=durability)
    assert killed.returncode == -signal.SIGKILL, killed.stderr

    # The journal the kill left: opens, is intact, and is in the promised state.
    assert integrity(db) == "ok"
    store = dnb.SqliteStore(db)
    try:
        status, calls = snapshot(store, RUN)
        assert status is dnb.RunStatus.RUNNING
        assert old_scheme_could_leave(calls)
        n_ok = SPECIAL - 1 if held_back else SPECIAL
        assert [c[3] for c in calls[:n_ok]] == [dnb.Status.SUCCEEDED] * n_ok
        assert [c.result() for c in store.calls(RUN)[:n_ok]] == [child_mod.result(i) for i in range(n_ok)]
        if held_back:
            assert len(calls) == SPECIAL and calls[-1][3] is dnb.Status.PENDING
        elif special_status is None:
            assert len(calls) == SPECIAL
        else:
            assert len(calls) == SPECIAL + 1
            assert calls[SPECIAL][1:4:2] == ("kill.charge", special_status)
        assert child_mod.ledger_lines(ledger) == [str(i) for i in range(n_effects)]
    finally:
        store.close()

    # Recovery in another process: exactly-once, results right, run completed.
    recovered = spawn(db, ledger, durability=durability)
    assert recovered.returncode == 0, recovered.stderr
    assert_recovered_by_child(db, ledger, RUN, recovered.stdout, recovered_origin, held_back)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("point", ["before_call", "after_call"])
def test_inject_crash_leaves_the_journal_a_sigkill_leaves(tmp_path: Path, point: str) -> None:
    killed_db, killed_ledger = tmp_path / "killed.db", tmp_path / "killed.txt"
    killed = spawn(killed_db, killed_ledger, "--kill", point)
    assert killed.returncode == -signal.SIGKILL, killed.stderr

    injected_db, injected_ledger = tmp_path / "injected.db", tmp_path / "injected.txt"
    child_mod.LEDGER, child_mod.ACK, child_mod.KILL_POINT = injected_ledger, None, None
    store = dnb.SqliteStore(injected_db)
    try:
        with dnb.inject_crash(call=child_mod.TARGET, point=point), pytest.raises(dnb.SimulatedCrash):
            dnb.LocalRunner(store).run(child_mod.make_action(CALLS, SPECIAL), None, run_id=RUN)
    finally:
        store.close()

    assert integrity(killed_db) == integrity(injected_db) == "ok"
    a, b = dnb.SqliteStore(killed_db), dnb.SqliteStore(injected_db)
    try:
        assert snapshot(a, RUN) == snapshot(b, RUN)
        status, calls = snapshot(a, RUN)
        assert status is dnb.RunStatus.RUNNING and calls[-1][3] is dnb.Status.PENDING
        # Only the lease differs: the dead process's is left behind (and stale), the crashed
        # context released its own, so both runs are recoverable from any process right away.
        assert a.run(RUN).owner is not None and b.run(RUN).owner is None
    finally:
        a.close()
        b.close()
    assert child_mod.ledger_lines(killed_ledger) == child_mod.ledger_lines(injected_ledger)

    # And both recover the same way: the killed one from another process, the injected one here,
    # in the process that "crashed" (as a notebook kernel would after inject_crash).
    done = spawn(killed_db, killed_ledger)
    assert done.returncode == 0, done.stderr
    child_mod.LEDGER = injected_ledger
    b = dnb.SqliteStore(injected_db)
    try:
        out = dnb.LocalRunner(b).run(child_mod.make_action(CALLS, SPECIAL), None, run_id=RUN)
    finally:
        b.close()
    assert out == json.loads(done.stdout.splitlines()[-1]) == [child_mod.result(i) for i in range(CALLS)]
    for ledger in (killed_ledger, injected_ledger):
        assert ledger_counts(ledger) == {str(i): 1 for i in range(CALLS)}
    a, b = dnb.SqliteStore(killed_db), dnb.SqliteStore(injected_db)
    try:
        assert snapshot(a, RUN) == snapshot(b, RUN)
        assert snapshot(a, RUN)[0] is dnb.RunStatus.COMPLETED
    finally:
        a.close()
        b.close()


THREADS = 4


@pytest.mark.timeout(120)
@pytest.mark.parametrize("point", ["before_call", "in_call", "after_call"])
def test_sigkill_with_several_threads_committing_together_recovers_each_run_exactly_once(
    tmp_path: Path, point: str
) -> None:
    """Group commit: THREADS runs share the store's commits; a kill mid-flight loses no durable outcome."""
    db, ledger = tmp_path / "journal.db", tmp_path / "ledger.txt"
    runs = [f"{RUN}-t{k}" for k in range(THREADS)]
    killed = spawn(db, ledger, "--kill", point, "--threads", str(THREADS), calls=12)
    assert killed.returncode == -signal.SIGKILL, killed.stderr

    assert integrity(db) == "ok"
    store = dnb.SqliteStore(db)
    try:
        for k, run in enumerate(runs):
            _, calls = snapshot(store, run)
            assert old_scheme_could_leave(calls), (run, calls)
            done = child_mod.ledger_lines(Path(f"{ledger}.t{k}"))
            # Every SUCCEEDED call's side effect happened; none happened beyond the journal's calls.
            n_ok = [c[3] for c in calls].count(dnb.Status.SUCCEEDED)
            assert done[:n_ok] == [str(i) for i in range(n_ok)]
            assert len(done) <= len(calls)
    finally:
        store.close()

    recovered = spawn(db, ledger, "--threads", str(THREADS), calls=12)
    assert recovered.returncode == 0, recovered.stderr
    results = json.loads(recovered.stdout.splitlines()[-1])
    assert results == {run: [child_mod.result(i) for i in range(12)] for run in runs}
    assert integrity(db) == "ok"
    for k in range(THREADS):
        assert ledger_counts(Path(f"{ledger}.t{k}")) == {str(i): 1 for i in range(12)}
    store = dnb.SqliteStore(db)
    try:
        for run in runs:
            assert [c.status for c in store.calls(run)] == [dnb.Status.SUCCEEDED] * 12
            assert store.run(run).status is dnb.RunStatus.COMPLETED
    finally:
        store.close()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("special", [3, 6])  # the kill in the first round of 4, or in the second
@pytest.mark.parametrize("point", ["before_pending_commit", "before_call", "in_call", "after_call"])
def test_sigkill_with_gathered_async_calls_sharing_commits_recovers_each_side_effect_exactly_once(
    tmp_path: Path, point: str, special: int
) -> None:
    """Calls gathered in one context share commits; at any kill each function ran only after its own
    PENDING was durable, a round's outcomes are durable once the next round began, and recovery
    performs every side effect exactly once."""
    db, ledger, ack = tmp_path / "journal.db", tmp_path / "ledger.txt", tmp_path / "ack.txt"
    calls, width = 12, 4
    killed = spawn(db, ledger, "--kill", point, "--gather", str(width), "--ack", str(ack), "--special", str(special),
                   calls=calls)
    assert killed.returncode == -signal.SIGKILL, killed.stderr

    assert integrity(db) == "ok"
    store = dnb.SqliteStore(db)
    try:
        journal = {c.index: c for c in store.calls(RUN)}
    finally:
        store.close()
    done = child_mod.ledger_lines(ledger)
    # No side effect without its PENDING on disk; every SUCCEEDED call's side effect happened.
    assert all(int(i) in journal for i in done), (done, sorted(journal))
    assert {i for i, c in journal.items() if c.status is dnb.Status.SUCCEEDED} <= {int(i) for i in done}
    # A round's outcomes were durable once any call of the next round reached the journal.
    for start in range(width, calls, width):
        if any(i in journal for i in range(start, start + width)):
            assert all(journal[i].status is dnb.Status.SUCCEEDED for i in range(start - width, start)), journal
    acked = [line.split(" ", 1) for line in child_mod.ledger_lines(ack)]
    assert all(int(i) in journal for i, _ in acked)

    recovered = spawn(db, ledger, "--gather", str(width), "--special", str(special), calls=calls)
    if special >= width:  # the kill came in a later round: the first round was acknowledged and durable
        assert [int(i) for i, _ in acked][:width] == list(range(width))
    assert recovered.returncode == 0, recovered.stderr
    assert json.loads(recovered.stdout.splitlines()[-1]) == [child_mod.result(i) for i in range(calls)]
    assert ledger_counts(ledger) == {str(i): 1 for i in range(calls)}
    assert all(r == child_mod.result(int(i)) for i, r in acked)
    assert integrity(db) == "ok"
    store = dnb.SqliteStore(db)
    try:
        assert [c.status for c in store.calls(RUN)] == [dnb.Status.SUCCEEDED] * calls
    finally:
        store.close()
