"""A child process for the map SIGKILL suite: ``LocalRunner.map`` over records with real side effects.

Each record makes one durable call that appends ``"<record>\\n"`` to a *ledger* file
(fsynced: the side effect) and returns ``"r<record>"``; its reconciler reads the
ledger (lookup-or-do), which makes recovery exactly-once. Every execution of the
call or of its reconciler also appends ``"<record>\\n"`` to a *touched* file, so a
parent can tell a replay (touches nothing) from a recovery.

When the map returns (every row durable: the map is the durable boundary), the
child appends ``"done\\n"`` to the ack file; ``--die-after-map`` then SIGKILLs the
process at once (no clean exit, no atexit flush). Prints ``ready`` once the store
is open and, after a finished map, its rows as JSON.

    python map_child.py --db J.db|postgresql://... --ledger L --touched T --ack A --records N
        [--die-after-map] [--sleep-ms MS]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from child import append_durably, ledger_lines  # child.py beside this file

import durable_nb as dnb


def main() -> None:
    parser = argparse.ArgumentParser()
    for name in ("--db", "--ledger", "--touched", "--ack"):
        parser.add_argument(name, required=True)
    parser.add_argument("--records", type=int, default=200)
    parser.add_argument("--die-after-map", action="store_true")
    parser.add_argument("--sleep-ms", type=float, default=0.0, help="work inside each side effect")
    args = parser.parse_args()
    ledger, touched = Path(args.ledger), Path(args.touched)

    def charge(record: int) -> str:
        append_durably(touched, f"{record}\n")
        time.sleep(args.sleep_ms / 1000)
        append_durably(ledger, f"{record}\n")
        return f"r{record}"

    def lookup_or_do(record: int) -> str:
        append_durably(touched, f"{record}\n")
        if f"{record}" in ledger_lines(ledger):
            return f"r{record}"
        append_durably(ledger, f"{record}\n")
        return f"r{record}"

    def action(record: int, ctx: dnb.RunnerContext) -> Any:
        return ctx.durable_execute(charge, record, reconciler=lambda: lookup_or_do(record))

    store = dnb.open_store(args.db)
    print("ready", flush=True)
    frame = dnb.LocalRunner(store).map(action, list(range(args.records)))
    append_durably(Path(args.ack), "done\n")
    if args.die_after_map:
        os.kill(os.getpid(), signal.SIGKILL)
    print(json.dumps({"status": frame["status"].map(str).tolist(), "result": frame["result"].tolist()}), flush=True)
    store.close()
    sys.exit(0)


if __name__ == "__main__":
    main()
