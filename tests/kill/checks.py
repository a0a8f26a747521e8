"""What the SIGKILL suites check, on SQLite and on PostgreSQL alike (one definition each)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import child as child_mod  # child.py beside this file

import durable_nb as dnb

CALLS = 6
SPECIAL = 3

# What the ledger holds right after a kill at each point, the status call SPECIAL is left in (None:
# not written), and how recovery gets its outcome (durability "transition": the old two-commit scheme).
EXPECTED = {
    "before_pending_commit": (SPECIAL, None, dnb.Origin.EXECUTED),
    "before_call": (SPECIAL, dnb.Status.PENDING, dnb.Origin.RECONCILED),
    "in_call": (SPECIAL + 1, dnb.Status.PENDING, dnb.Origin.RECONCILED),
    "after_call": (SPECIAL + 1, dnb.Status.PENDING, dnb.Origin.RECONCILED),
}


def integrity(db: Path | str) -> str:
    """SQLite's own check of the journal file: ``"ok"`` when no page or index is damaged."""
    conn = sqlite3.connect(db)
    try:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        conn.close()


def ledger_counts(ledger: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for line in child_mod.ledger_lines(ledger):
        counts[line] = counts.get(line, 0) + 1
    return counts


def assert_recovered(calls: list[dnb.CallRecord], recovered_origin: dnb.Origin, held_back: bool) -> None:
    """After recovery: every call SUCCEEDED with its result; call SPECIAL recovered by ``recovered_origin``,
    the one before it reconciled if its outcome had been held back, every other call executed once."""
    assert [c.status for c in calls] == [dnb.Status.SUCCEEDED] * CALLS
    assert [c.result() for c in calls] == [child_mod.result(i) for i in range(CALLS)]
    assert calls[SPECIAL].origin is recovered_origin
    reconciled = {SPECIAL - 1} if held_back else set()
    assert all(c.origin is dnb.Origin.RECONCILED for i, c in enumerate(calls) if i in reconciled)
    assert all(c.origin is dnb.Origin.EXECUTED for i, c in enumerate(calls) if i not in reconciled | {SPECIAL})


def assert_recovered_by_child(db: Path, ledger: Path, run: str, stdout: str, recovered_origin: dnb.Origin,
                              held_back: bool) -> None:
    """After a child recovered ``run`` to its end: its results, the journal intact, each side effect once,
    and the calls recovered as :func:`assert_recovered` says."""
    assert json.loads(stdout.splitlines()[-1]) == [child_mod.result(i) for i in range(CALLS)]
    assert integrity(db) == "ok"
    assert ledger_counts(ledger) == {str(i): 1 for i in range(CALLS)}
    store = dnb.SqliteStore(db)
    try:
        assert_recovered(store.calls(run), recovered_origin, held_back)
        assert store.run(run).status is dnb.RunStatus.COMPLETED
    finally:
        store.close()


def assert_after_random_kill(calls: list[dnb.CallRecord], run: str, ledger: Path, ack: Path,
                             durability: str) -> tuple[int, bool]:
    """What holds after any kill of a run of child.py; returns (calls SUCCEEDED, last one PENDING).

    The journal is a gap-free prefix (all SUCCEEDED but maybe the last, PENDING) with the right
    results; no acknowledged SUCCEEDED call was lost or changed; the ledger of side effects is in
    order, has nothing twice, and nothing the journal does not account for.
    """
    assert [c.index for c in calls] == list(range(len(calls)))
    statuses = [c.status for c in calls]
    n_ok = statuses.count(dnb.Status.SUCCEEDED)
    assert statuses[:n_ok] == [dnb.Status.SUCCEEDED] * n_ok
    assert statuses[n_ok:] in ([], [dnb.Status.PENDING])
    for c in calls[:n_ok]:
        assert c.result() == child_mod.result(c.index)

    # Under "call" an outcome is durable once the next call began (its PENDING carried it):
    # an ack of call i proves calls < i.
    for line in child_mod.ledger_lines(ack):
        i_text, value = line.split(" ", 1)
        i = int(i_text)
        durable = i < n_ok if durability == "transition" else (i - 1 < n_ok and i < len(calls))
        assert durable, f"acknowledged call {i} of {run} is no longer SUCCEEDED ({statuses[i:i + 1]})"
        if i < n_ok:
            assert calls[i].result() == value

    effects = child_mod.ledger_lines(ledger)
    assert effects == [str(i) for i in range(len(effects))], effects
    assert n_ok <= len(effects) <= len(calls)
    return n_ok, len(calls) > n_ok
