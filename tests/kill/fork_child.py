"""A child process for tests/kill/test_kill_forks.py: forks, forks of forks and prunes, with side effects.

``python fork_child.py DB FOLDER SEED`` loops until killed. Each step, chosen by the seeded
random generator, is one of: run a new base run to its end; fork a COMPLETED run (a
base or a fork) at a random call and run the fork to its end; forget a COMPLETED run
(``store.delete_run``, what ``%durable_forget`` does); prune COMPLETED runs
(``store.prune(keep_last=...)``); finish a RUNNING run another child left.

The action makes its calls in gathered rounds of ``durable_execute_async`` (the ``tag``
argument is changed after the call is made and before it is awaited: digested when
awaited). Each call's side effect appends ``"<run_id> <index>"`` to FOLDER/ledger and
fsyncs it: a ledger keyed by run id, as a payments system deduping by (run, call) is.
Its reconciler does the side effect only if that line is not there (lookup-or-do). If
a fork id were ever given again after its fork was pruned, the new fork's reconciler
would take the old fork's line for its own and skip the side effect, and a plain
execution would write the line twice: both show in the ledger.

Generated fork ids go to FOLDER/forks as they are returned (each one must be new);
``ready`` is printed once the store is open.
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

from child import append_durably, ledger_lines  # child.py beside this file

import durable_nb as dnb

ROUNDS = ((0, 1), (1, 4), (4, 6))  # [start, end) of each gathered round
CALLS = ROUNDS[-1][1]
FOLDER = Path(".")


def result(i: int) -> str:
    return f"r{i}-2"  # the tag has two items when awaited


def _effect_for(run_id: str) -> Any:
    @dnb.durable(name="kill.fork_effect")
    def effect(i: int, tag: list[Any]) -> str:
        append_durably(FOLDER / "ledger", f"{run_id} {i}\n")
        time.sleep(0.002)  # a kill also lands between the side effect and its outcome
        return f"r{i}-{len(tag)}"

    return effect


def _reconcile(run_id: str, i: int, tag: list[Any]) -> str:
    if f"{run_id} {i}" not in ledger_lines(FOLDER / "ledger"):
        append_durably(FOLDER / "ledger", f"{run_id} {i}\n")
    return f"r{i}-{len(tag)}"


async def action(_value: Any, ctx: dnb.RunnerContext) -> list[str]:
    run_id, effect = ctx.run_id, _effect_for(ctx.run_id)
    out: list[str] = []
    for start, end in ROUNDS:
        pending = []
        for i in range(start, end):
            tag: list[Any] = [i]
            pending.append(ctx.durable_execute_async(
                effect, i, tag, reconciler=lambda i=i, tag=tag: _reconcile(run_id, i, tag)))
            tag.append("changed before awaited")
        out.extend(await asyncio.gather(*pending))
    return out


def step(store: dnb.Store, runner: dnb.LocalRunner, rng: random.Random, name: str) -> None:
    """One step of the loop (see the module docstring)."""
    runs = store.runs()
    completed = [r.run_id for r in runs if r.status is dnb.RunStatus.COMPLETED]
    running = [r.run_id for r in runs if r.status is dnb.RunStatus.RUNNING]
    roll = rng.random()
    if roll < 0.25 or not completed:
        runner.run(action, None, run_id=name)
    elif roll < 0.65:
        new_id = store.fork(rng.choice(completed), rng.randint(0, CALLS))
        append_durably(FOLDER / "forks", f"{new_id}\n")
        runner.run(action, None, run_id=new_id)
    elif roll < 0.8:
        store.delete_run(rng.choice(completed))
    elif roll < 0.9 and running:
        runner.run(action, None, run_id=rng.choice(running))
    else:
        store.prune(status="COMPLETED", keep_last=6)


def main() -> None:
    global FOLDER
    db, FOLDER, seed = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    store: dnb.Store = dnb.PostgresStore(db) if db.startswith("postgresql://") else dnb.SqliteStore(db)
    runner, rng = dnb.LocalRunner(store, strict=True), random.Random(seed)
    print("ready", flush=True)
    for n in range(1_000_000):
        try:
            step(store, runner, rng, f"base-{seed}-{os.getpid()}-{n}")
        except (dnb.RunBusyError, dnb.RunNotFoundError):
            pass  # the other child holds that run, or forgot it meanwhile


if __name__ == "__main__":
    main()
