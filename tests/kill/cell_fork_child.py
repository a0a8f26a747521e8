"""A child kernel-like process for tests/kill/test_kill_cell_fork.py: a ``%%durable`` cell and its fork.

``python cell_fork_child.py DB LEDGER PHASE [N]`` in a real IPython shell (tests/shell_harness.py):

* ``first``: run cell ``order`` (three durable calls; each appends its name to LEDGER: the side effect);
* ``fork N``: ``%durable_fork order --at 4`` (keep every call), SIGKILLed right after the store's
  N-th write returns (any write method: a begun call, an outcome, lineage, a whole fork);
* ``again``: run the unchanged cell again (a fresh kernel), then print the journal's cell runs as JSON.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/: shell_harness

from shell_harness import run, start_shell

import durable_nb as dnb
from durable_nb.notebook.magics import magics_of

CELL = """\
ctx = dnb.current_context()
a = ctx.durable_execute(side, 'charge', 1)
b = ctx.durable_execute(side, 'receipt', 2)
c = ctx.durable_execute(side, 'notify', 3)
print(a, b, c)
"""
WRITES = ("queue_pending", "append_pending", "complete_call", "discard_from", "close_run", "set_lineage",
          "set_prompt", "fork", "fork_reopened", "delete_run")


def kill_after_writes(n: int) -> None:
    """SIGKILL this process as soon as the store's ``n``-th write method returns."""
    count = [0]
    for name in WRITES:
        original = getattr(dnb.SqliteStore, name, None)
        if original is None:
            continue

        def wrapped(self: Any, *args: Any, _original: Any = original, **kwargs: Any) -> Any:
            result = _original(self, *args, **kwargs)
            count[0] += 1
            if count[0] == n:
                os.kill(os.getpid(), signal.SIGKILL)
            return result

        setattr(dnb.SqliteStore, name, wrapped)


def main() -> None:
    db, ledger, phase = sys.argv[1], Path(sys.argv[2]), sys.argv[3]

    def side(name: str, x: int) -> str:
        with ledger.open("a") as fh:
            fh.write(name + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        return f"{name}:{x}"

    ip = start_shell()
    magics = magics_of(ip)
    assert magics is not None
    magics.store = dnb.SqliteStore(db)
    ip.user_ns.update(side=side, dnb=dnb)
    if phase == "first":
        run(ip, "order", CELL)
    elif phase == "fork":
        kill_after_writes(int(sys.argv[4]))
        ip.run_line_magic("durable_fork", "order --at 4")
    else:
        run(ip, "order", CELL)
        store = magics.store
        print(json.dumps({
            r.run_id: [r.status.value, r.parent_run_id, r.forked_at,
                       [[c.index, c.status.value] for c in store.calls(r.run_id)]]
            for r in store.runs()
        }))


if __name__ == "__main__":
    main()
