"""A child process for the SIGKILL suites: one run of durable calls with real side effects.

The action makes ``--calls`` durable calls; each one appends ``"<i>\\n"`` to a
*ledger* file and fsyncs it (the side effect), then returns ``result(i)``. The call
at index ``--special`` goes through another function (call id ``kill.charge``) so
that a fault can target exactly that call, by SIGKILL here or by
``dnb.inject_crash(call="kill.charge")`` in the test process. Every call has a
reconciler that reads the ledger: if the side effect happened it returns the result
without doing it again, otherwise it does it (lookup-or-do), which is what makes
recovery exactly-once.

After each ``durable_execute`` returns, the child appends ``"<i> <result>\\n"`` to
the ``--ack`` file and fsyncs it: an acknowledgment that the call was observed
SUCCEEDED, which no later kill may take back.

``--kill POINT`` kills the process with SIGKILL at ``kill.charge``:

* ``before_pending_commit``: PENDING not written yet;
* ``before_call``: PENDING durable, the function has not run;
* ``in_call``: inside the function, after the ledger line is durable, before it returns;
* ``after_call``: the function returned, its outcome is not durable yet.

``--apply-delay S`` makes SQLite lag the intent log by S seconds (under ``call``,
what a kill leaves is then only in the log); ``--pause-after K`` prints ``paused``
after K calls and waits for a line on stdin (a steal test's window).

``--durability`` picks the store's durability level (default ``call``: an outcome
becomes durable with the next call's PENDING). ``--gather N`` makes the calls in
rounds of N ``durable_execute_async`` gathered in one context (their PENDINGs share
commits), acknowledging each round once it is gathered. ``--threads N`` runs N runs
(``RUN-t0`` ... ) at once from N threads on one store, each with its own ledger
(``LEDGER.t0`` ...) and ack file: their commits are shared (group commit).

Without ``--kill`` the run goes to the end (a first attempt or a recovery) and the
action's result is printed as JSON on the last line of stdout. ``ready`` is printed
(and flushed) once the store is open, so a parent can time a random kill.

    python child.py --db J.db|postgresql://... --ledger L.txt --run R [--calls N] [--special K] [--kill P] [--ack A]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import durable_nb as dnb
from durable_nb.journal import faults as _faults

POINTS = ("before_pending_commit", "before_call", "in_call", "after_call")
TARGET = "kill.charge"

LEDGER: Path | None = None
ACK: Path | None = None
KILL_POINT: str | None = None
PAUSE_AFTER: int | None = None


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def append_durably(path: Path, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def ledger_lines(path: Path) -> list[str]:
    """Complete lines of a ledger/ack file (a torn last line, if any, is ignored)."""
    if not path.exists():
        return []
    text = path.read_text()
    lines = text.split("\n")
    return lines[:-1]  # the part after the last newline is empty or torn


def result(i: int) -> str:
    return f"r{i}-{i * i}"


_thread = threading.local()


def _ledger() -> Path:
    path = getattr(_thread, "ledger", None) or LEDGER
    assert path is not None
    return path


def _ack() -> Path | None:
    return getattr(_thread, "ack", None) or ACK


def _side_effect(i: int, *, may_die: bool) -> str:
    append_durably(_ledger(), f"{i}\n")
    if may_die and KILL_POINT == "in_call":
        die()
    return result(i)


@dnb.durable(name="kill.effect")
def effect(i: int) -> str:
    return _side_effect(i, may_die=False)


@dnb.durable(name=TARGET)
def charge(i: int) -> str:
    return _side_effect(i, may_die=True)


def reconcile(i: int) -> str:
    """Lookup-or-do: the ledger says whether the side effect of call ``i`` happened."""
    if f"{i}" in ledger_lines(_ledger()):
        return result(i)
    return _side_effect(i, may_die=False)


def make_action(calls: int, special: int) -> Any:
    def action(_value: Any, ctx: dnb.RunnerContext) -> list[str]:
        out = []
        for i in range(calls):
            func = charge if i == special else effect
            r = ctx.durable_execute(func, i, reconciler=lambda i=i: reconcile(i))
            ack = _ack()
            if ack is not None:
                append_durably(ack, f"{i} {r}\n")
            out.append(r)
            if i + 1 == PAUSE_AFTER:  # tell the parent, wait for a line on stdin
                print("paused", flush=True)
                sys.stdin.readline()
        return out

    return action


def make_gathered_action(calls: int, special: int, width: int) -> Any:
    """``--gather N``: the calls in rounds of N ``durable_execute_async`` gathered in one context (group commit)."""
    import asyncio

    async def action(_value: Any, ctx: dnb.RunnerContext) -> list[str]:
        out: list[str] = []
        for start in range(0, calls, width):
            batch = range(start, min(start + width, calls))
            got = await asyncio.gather(*(
                ctx.durable_execute_async(charge if i == special else effect, i, reconciler=lambda i=i: reconcile(i))
                for i in batch
            ))
            ack = _ack()
            for i, r in zip(batch, got, strict=True):
                if ack is not None:
                    append_durably(ack, f"{i} {r}\n")
                out.append(r)
        return out

    return action


def kill_hook(point: str, call_id: str) -> None:
    if point == KILL_POINT and call_id == TARGET:
        die()


def main(argv: list[str] | None = None) -> int:
    global LEDGER, ACK, KILL_POINT
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", required=True)
    parser.add_argument("--ledger", required=True)
    parser.add_argument("--run", required=True)
    parser.add_argument("--calls", type=int, default=6)
    parser.add_argument("--special", type=int, default=3)
    parser.add_argument("--kill", choices=POINTS)
    parser.add_argument("--ack")
    parser.add_argument("--durability", default="call")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--gather", type=int, default=0)
    parser.add_argument("--apply-delay", type=float, default=None)
    parser.add_argument("--pause-after", type=int, default=None)
    args = parser.parse_args(argv)
    if args.apply_delay is not None:  # SQLite lags its intent log: what a kill leaves is only in the log
        from durable_nb.stores import sqlite_intent

        sqlite_intent.DELAY = args.apply_delay
    global PAUSE_AFTER
    PAUSE_AFTER = args.pause_after
    LEDGER = Path(args.ledger)
    ACK = Path(args.ack) if args.ack else None
    KILL_POINT = args.kill
    if KILL_POINT is not None and KILL_POINT != "in_call":
        _faults.add_hook(kill_hook)
    if args.db.startswith("postgresql://"):  # the same suite on PostgreSQL (tests/kill/test_kill_postgres.py)
        store: dnb.Store = dnb.PostgresStore(args.db, durability=args.durability)
    else:
        store = dnb.SqliteStore(args.db, durability=args.durability)
    print("ready", flush=True)
    if args.threads:
        return run_threads(store, args)
    if args.gather:
        action = make_gathered_action(args.calls, args.special, args.gather)
        print(json.dumps(dnb.LocalRunner(store).run(action, None, run_id=args.run)), flush=True)
        return 0
    out = dnb.LocalRunner(store).run(make_action(args.calls, args.special), None, run_id=args.run)
    print(json.dumps(out), flush=True)
    return 0


def run_threads(store: dnb.Store, args: argparse.Namespace) -> int:
    """``--threads N``: N runs at once on one store; prints one JSON object {run: results}."""
    results: dict[str, list[str]] = {}

    def one(k: int) -> None:
        _thread.ledger = Path(f"{args.ledger}.t{k}")
        _thread.ack = Path(f"{args.ack}.t{k}") if args.ack else None
        run = f"{args.run}-t{k}"
        results[run] = dnb.LocalRunner(store).run(make_action(args.calls, args.special), None, run_id=run)

    threads = [threading.Thread(target=one, args=(k,)) for k in range(args.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if len(results) != args.threads:
        return 1
    print(json.dumps(results), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
