"""The README's first command runs this demo: it must keep proving exactly-once after a real SIGKILL."""

from __future__ import annotations

import subprocess
import sys

import durable_nb as dnb


def test_demo_kills_a_worker_and_recovers_every_side_effect_exactly_once(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "durable_nb.demo"], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert "killed with SIGKILL (exit -9)" in out.stdout
    assert "every payment and every e-mail happened exactly once" in out.stdout
    store = dnb.SqliteStore(tmp_path / ".durable" / "journal.db")
    origins = {
        (c.run_id.rsplit("/", 1)[-1], c.index): c.origin.value for r in store.runs() for c in store.calls(r.run_id)
    }
    assert origins[("o2#0", 0)] == "RECONCILED"
    assert origins[("o1#0", 0)] == origins[("o3#0", 0)] == "EXECUTED"
    # The journal's folder is private, as every folder a store creates for a journal (it holds pickles).
    assert (tmp_path / ".durable").stat().st_mode & 0o777 == 0o700
