"""Random SIGKILLs while two processes fork runs, fork forks, forget and prune them (SQLite and PostgreSQL).

Forks write their id's number in the fork's own transaction (meta ``fork_seq:<run_id>``) so
that a generated id is never given twice, not even after that fork was pruned: a ledger
keyed by run id (tests/kill/fork_child.py) would otherwise take a new fork's side effect for
the old one's. Two children (fork_child.py) work on one journal at once and are SIGKILLed at
random instants, again and again; after each pair of kills:

* the journal opens (SQLite: ``PRAGMA integrity_check``), no call is FAILED, SUCCEEDED ones hold
  their results (digested when awaited: a strict runner would refuse a replay otherwise);
* no side effect is in the ledger twice; a copied call (index < ``forked_at``) has none of its
  own; a SUCCEEDED call the run made itself has exactly one; no side effect without its PENDING;
* no fork id was returned twice, and no run id reappears as a new run (``created_at``).

At the end every run left unfinished is recovered, and each run's own calls happened once each.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import fork_child
import pytest
from checks import integrity

import durable_nb as dnb

pytestmark = pytest.mark.kill

CHILD = Path(__file__).with_name("fork_child.py")
CYCLES = 8


def open_journal(journal: str) -> dnb.Store:
    return dnb.PostgresStore(journal) if journal.startswith("postgresql://") else dnb.SqliteStore(journal)


def start(journal: str, folder: Path, seed: int) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, str(CHILD), journal, str(folder), str(seed)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline() == "ready\n", proc.communicate(timeout=30)
    return proc


def check(journal: str, folder: Path, born: dict[str, float], final: bool = False) -> Counter[str]:
    """The invariants of the module docstring; ``born`` keeps each run id's ``created_at`` across checks."""
    if not journal.startswith("postgresql://"):
        assert integrity(journal) == "ok"
    ledger = Counter(fork_child.ledger_lines(folder / "ledger"))  # before the journal: an effect follows its PENDING
    store = open_journal(journal)
    try:
        runs = {r.run_id: (r, store.calls(r.run_id)) for r in store.runs()}
    finally:
        store.close()
    assert [line for line, n in ledger.items() if n > 1] == []
    forks = Counter(fork_child.ledger_lines(folder / "forks"))
    assert [fork_id for fork_id, n in forks.items() if n > 1] == [], "a fork id was given twice"
    seen: Counter[str] = Counter()
    for run_id, (rec, calls) in runs.items():
        assert born.setdefault(run_id, rec.created_at) == rec.created_at, f"run id {run_id} given again"
        copied = rec.forked_at or 0
        assert [c.index for c in calls] == list(range(len(calls)))
        for c in calls:
            assert c.status is not dnb.Status.FAILED, (run_id, c)
            own = ledger[f"{run_id} {c.index}"]
            if c.index < copied:
                assert own == 0, f"{run_id}: copied call {c.index} has a side effect of its own"
            elif c.status is dnb.Status.SUCCEEDED:
                assert own == 1, f"{run_id}: call {c.index} SUCCEEDED with {own} side effects"
            if c.status is dnb.Status.SUCCEEDED:
                assert c.result() == fork_child.result(c.index)
        assert all(ledger[f"{run_id} {i}"] == 0 for i in range(len(calls), fork_child.CALLS)), run_id
        if final:
            assert rec.status is dnb.RunStatus.COMPLETED and len(calls) == fork_child.CALLS, run_id
        seen["forks"] += rec.parent_run_id is not None
        seen["in flight"] += 0 < len(calls) < fork_child.CALLS or dnb.Status.PENDING in [c.status for c in calls]
    return seen


def finish(journal: str, folder: Path) -> None:
    """Recover every run the killed children left unfinished, in this process."""
    fork_child.FOLDER = folder
    store = open_journal(journal)
    try:
        runner = dnb.LocalRunner(store, strict=True)
        for rec in store.runs():
            if rec.status is not dnb.RunStatus.COMPLETED:
                runner.run(fork_child.action, None, run_id=rec.run_id)
    finally:
        store.close()


@pytest.mark.timeout(180)
def test_random_kills_while_forking_and_pruning_never_give_a_fork_id_twice_or_repeat_a_side_effect(
    journal: str, tmp_path: Path
) -> None:
    rng = random.Random(14)
    born: dict[str, float] = {}
    seen: Counter[str] = Counter()
    kills = 0
    for _ in range(CYCLES):
        children = [start(journal, tmp_path, rng.randrange(10**6)) for _ in range(2)]
        time.sleep(rng.uniform(0.3, 1.0))
        for child in children:
            child.kill()
            _, err = child.communicate(timeout=60)
            assert child.returncode == -signal.SIGKILL, err[-3000:]
            kills += 1
            time.sleep(rng.uniform(0, 0.1))
        seen += check(journal, tmp_path, born)
    finish(journal, tmp_path)
    seen_final = check(journal, tmp_path, born, final=True)
    # The kills must land mid-run and forks must have been made, or the test proves little.
    assert kills == 2 * CYCLES and seen["forks"] >= CYCLES and seen["in flight"] >= 2, (seen, seen_final)
