"""SIGKILL while a process creates a new journal: the next process opens it and runs.

Creating a journal switches the empty file to WAL (which writes SQLite's header, so the
file is no longer empty) and then commits the schema. A process killed in between
leaves a database with a header and no tables. Found by the SIGKILL fuzzer (kills
within the first milliseconds of a worker): every later open then failed every read
and every run with ``sqlite3.OperationalError: no such table: runs``, for good.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
from checks import integrity

import durable_nb as dnb

pytestmark = pytest.mark.kill

# The child dies inside the transaction that would create the schema, after the WAL switch.
CHILD = """
import os, signal, sys
import durable_nb as dnb
from durable_nb.stores import sqlite_schema

def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)

sqlite_schema.migrate = die
dnb.SqliteStore(sys.argv[1], durability=sys.argv[2])
"""


def action(value: int, ctx: dnb.RunnerContext) -> int:
    return int(ctx.durable_execute(abs, value))


@pytest.mark.timeout(120)
@pytest.mark.parametrize("durability", ["call", "transition"])
def test_a_journal_whose_creator_was_killed_before_its_schema_committed_opens_and_runs(
    tmp_path: Path, durability: str
) -> None:
    db = tmp_path / "journal.db"
    killed = subprocess.run([sys.executable, "-c", CHILD, str(db), durability], capture_output=True, text=True,
                            timeout=60)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert db.stat().st_size > 0  # the header is there: not the empty file a new journal starts from

    store = dnb.SqliteStore(db, durability=durability)
    try:
        assert store.runs() == []
        assert store.to_pandas().empty
        assert dnb.LocalRunner(store).run(action, -7, run_id="r") == 7
        assert store.run("r").status is dnb.RunStatus.COMPLETED
        assert [c.status for c in store.calls("r")] == [dnb.Status.SUCCEEDED]
    finally:
        store.close()
    assert integrity(db) == "ok"
