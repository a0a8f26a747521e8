"""SIGKILL while ``%durable_fork`` writes the fork: no half fork may make the cell's next run execute again.

``%durable_fork order --at 4`` keeps every call of the cell's run, so the next run of the cell
replays them all, and without the fork the cell replays as a whole: either way no side
effect runs again. A kernel killed in the middle of forking must leave one of those two
journals, never a fork holding only some of the kept calls (its next run would execute
the others a second time).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.kill

CHILD = Path(__file__).with_name("cell_fork_child.py")


def child(db: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The child, its temp folder the test's: the killed one leaves IPython's test history file there."""
    env = {**os.environ, "TMPDIR": str(Path(db).parent)}
    return subprocess.run([sys.executable, str(CHILD), db, *args], capture_output=True, text=True, timeout=120,
                          env=env)


@pytest.mark.parametrize("writes", [1, 2, 3])
def test_a_kill_while_forking_a_cell_leaves_no_half_fork(tmp_path: Path, writes: int) -> None:
    db, ledger = str(tmp_path / "journal.db"), tmp_path / "ledger.txt"
    done = child(db, str(ledger), "first")
    assert done.returncode == 0, done.stderr
    assert ledger.read_text().split() == ["charge", "receipt", "notify"]
    forked = child(db, str(ledger), "fork", str(writes))
    assert forked.returncode in (0, -9), forked.stderr
    again = child(db, str(ledger), "again")
    assert again.returncode == 0, again.stderr
    assert ledger.read_text().split() == ["charge", "receipt", "notify"]  # nothing ran twice
    runs = json.loads(again.stdout.strip().splitlines()[-1])
    for run_id, (status, parent, forked_at, calls) in runs.items():
        assert status == "COMPLETED" and len(calls) == 4, (run_id, runs)
        if parent is not None:  # the fork, whole: it shows its parent and where it was forked
            assert forked_at == 4, runs
