"""An edited cell whose earlier version's run did not finish: refused before its body runs.

A ``%%durable NAME`` cell's run id holds the digest of its code and inputs (see
:mod:`.runids`), so a cell edited after a crash (a ``sleep`` removed, an input changed in
place by the attempt that died) is a new version with a new run: it would execute every
durable call again, while the crashed run, the one whose calls replay or reconcile, is left
behind. A charge made by the crashed attempt was made twice, and nothing said so.

:func:`check_no_unfinished` refuses such a run (a ``UsageError``, nothing run, nothing
written) when the cell's latest run is of another version, is unfinished (call 0 PENDING:
killed, interrupted, stopped by strict mode or waiting for an input) and made durable calls,
and names the ways on: undo the edit (the run recovers), ``%durable_fork`` (keep its calls in
the edited version), ``--rerun`` (go on, executing them again), ``%durable_forget``. Only the
latest run counts: once the user went on past it (a ``--rerun``, a fork that ran), the cell is
not refused again for it. A run a live context holds is running, not crashed: not refused. A
``%durable_fork`` not run yet counts too: after a kernel restart the magics no longer know it, so
the edited cell would not take its kept calls over, and would execute them again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from IPython.core.error import UsageError

from ..journal import codec
from ..journal.records import RunStatus, Status
from .runids import cell_call_id

if TYPE_CHECKING:
    from ..journal.records import CallRecord, RunRecord
    from ..journal.store import Store

LISTED = 5
"""Inner calls of the unfinished run the refusal names one by one (it counts the rest)."""


def unfinished_run(store: Store, name: str, base: str) -> tuple[RunRecord, list[CallRecord]] | None:
    """The cell's latest run if it belongs to another version than ``base``, did not finish and made
    durable calls (with its calls); else None.

    Cheap: one prefix read of the cell's runs (an index range), and the calls of one run only
    when its record says it is unfinished with calls after call 0. Called only when the cell
    has no run of its current version, that is when its body is about to execute anyway.
    """
    runs = store.runs_with_prefix(f"cell:{name}:")  # not --map records (cell:NAME/...)
    if not runs:
        return None
    latest = max(runs, key=lambda r: (r.updated_at, r.created_at))
    if latest.run_id.split("#", 1)[0] == base or latest.status is RunStatus.COMPLETED or latest.n_calls < 2:
        return None
    calls = store.calls(latest.run_id)
    if not calls or calls[0].call_id != cell_call_id(name) or calls[0].status is not Status.PENDING:
        return None  # finished (the cell raised: FAILED), or not a plain cell run
    if store.run_is_open(latest.run_id):  # running now (another kernel): not a crash's leftover
        return None
    return latest, calls


def check_no_unfinished(store: Store, name: str, base: str) -> None:
    """Refuse to run a new version of cell ``name`` while its earlier version's run is unfinished."""
    found = unfinished_run(store, name, base)
    if found is not None:
        raise UsageError(refusal(name, *found))


def refusal(name: str, run: RunRecord, calls: list[CallRecord]) -> str:
    """What the refusal says: the run, what it did, why a run now repeats it, and each way on."""
    inner = calls[1:]
    shown = ", ".join(f"call {c.index} ({codec.shown(c.call_id)}) {c.status.value}" for c in inner[:LISTED])
    more = f" and {len(inner) - LISTED} more" if len(inner) > LISTED else ""
    pending = next((c for c in inner if c.status is Status.PENDING), None)
    at = pending.index if pending is not None else len(calls)
    how = ("is waiting for an answer (durable_input) after making" if run.status is RunStatus.WAITING else
           "is a fork that has not run yet, holding" if run.parent_run_id is not None and run.attempts <= 1 else
           "did not finish after making")
    lines = [
        f"%%durable {name}: this cell changed (its code or inputs) since its last run {codec.shown(run.run_id)!r}, "
        f"which {how} durable calls ({shown}{more}). Run now, this version would start a new run "
        f"and execute its durable calls again (a charge made twice). Nothing was run. Choose:",
        "  - undo the edit and run the cell: that run recovers (its calls replay or reconcile);",
    ]
    if at >= 2:
        lines.append(f"  - %durable_fork {name} --at {at}, then run this cell: calls 1..{at - 1} of that run replay "
                     f"in this version and it executes from call {at} on"
                     + (f" (call {at}, unfinished in that run, runs again)" if pending is not None else ""))
    lines += [f"  - %%durable {name} --rerun: run this version anyway, executing its calls again (the old run stays "
              f"in the journal, unfinished);",
              f"  - %durable_forget {name}: forget every run of the cell, then run it.",
              f"If that run is another notebook's cell named {name!r} (notebooks in one folder share a journal), "
              f"give this cell another name instead: forgetting would lose the run that notebook recovers from."]
    return "\n".join(lines)
