"""SIGKILL of a process whose forked child lives on (a multiprocessing worker of a killed kernel).

The run the killed process held must be free for the next process at once: its
lease is an open-file-description lock, released when the process dies, unless a
forked child still holds a copy of the descriptor (the child closes its copies).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import durable_nb as dnb

pytestmark = [pytest.mark.kill, pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")]

PARENT = textwrap.dedent("""
    import os, sys, time
    import durable_nb as dnb

    store = dnb.SqliteStore(sys.argv[1])
    with dnb.LocalRunner(store).context("held") as ctx:
        ctx.durable_execute(abs, -1)
        pid = os.fork()
        if pid == 0:  # a worker that never touches the journal, and outlives its parent
            time.sleep(60)
            os._exit(0)
        print(pid, flush=True)
        time.sleep(60)  # killed here, holding the run
""")


def action(_value: object, ctx: dnb.RunnerContext) -> int:
    return ctx.durable_execute(abs, -1)


@pytest.mark.timeout(120)
def test_a_killed_processs_run_is_free_while_its_forked_child_lives(tmp_path: Path) -> None:
    db = tmp_path / "journal.db"
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(db)], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    try:
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=30)
        store = dnb.SqliteStore(db)
        try:
            out = dnb.LocalRunner(store).run(action, None, run_id="held")
            assert out == 1
            assert store.run("held").status is dnb.RunStatus.COMPLETED
        finally:
            store.close()
    finally:
        os.kill(child, signal.SIGKILL)
