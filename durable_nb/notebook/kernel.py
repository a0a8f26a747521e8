"""A ``%%durable`` cell in the kernel: look at the journal, perform or replay, restore the notebook.

:func:`run_cell` is what the magic delegates to once its arguments are parsed.
A cell whose record is terminal is answered from a read of the journal alone
(:func:`~durable_nb.journal.replay.decide`): no lease, no write, the body does
not run, and :func:`replay_cell` restores the names, outputs and result. Otherwise
the run is opened here and :func:`~durable_nb.notebook.perform.perform_cell`
performs call 0 with a body running in the notebook namespace, or, with
``--runner flink``, the cell's source and inputs are shipped as a
:class:`~durable_nb.notebook.perform.CellRun` to ``FlinkRunner.run`` under the same
run id. The kernel never opens that run itself, so it never competes with the
worker for the run's lease; it restores what the worker journaled with the same
:func:`restore` that a replay uses.

This module works on an IPython shell; only :mod:`durable_nb.notebook.magics` imports it.

Over 400 lines because what the user sees of each path (replayed, recovered, reconciled, ran again,
a map refused before any run) is said beside the path that says it.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import warnings
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError

from ..errors import ChangedInputWarning, RunBusyError, UnpicklableOutputWarning
from ..journal.callid import durable as _durable_name
from ..journal.context import open_run
from ..journal.records import CallRecord
from ..journal.replay import Decision, decide, replay
from ..journal.store import Store
from ..runners.mapping import key_of, records_of
from .cell_inputs import ABSENT, changed_in_place, changed_values, select_inputs, star_values
from .in_place import update_all_in_place
from .namespace import unpack_namespace
from .outcome import CellOutcome, executed_outcome
from .outputs import OutputRecorder, replay_outputs
from .perform import (
    CELL_TRACEBACK,
    MAP_RESERVED,
    WORKER_OUTPUTS,
    Body,
    CellAction,
    CellRun,
    ParsedCell,
    Performed,
    ReconcilerResultError,
    cell_traceback,
    keep_cell_details,
    note_reexecuted,
    perform_cell,
    reexecuted_notice,
    run_body,
    shipped_reexecuted,
)
from .runids import cell_call_id, cell_run_base, keep_attempt, latest_attempt, new_attempt
from .timetravel import cell_inputs, recorded_digest, stoppable, unwrap_stopped, user_module
from .unfinished import check_no_unfinished

if TYPE_CHECKING:
    import pandas as pd

FLINK_HINT = "pip install 'durable_nb[flink]'"
RECOVERING = "↻ durable: recovering cell {!r}: its last attempt did not finish; its durable calls replay or reconcile"
"""Said before a recovered cell's body runs, so it is not part of the cell's recorded output."""


def run_cell(
    shell: Any, cell: ParsedCell, store: Store, reconciler: Callable[[], Any] | None = None, *,
    rerun: bool = False, runner: str = "local", strict: bool = False,
) -> Any:
    """Replay, perform or recover one ``%%durable NAME`` cell; returns what the cell shows as its result.

    ``strict``: a replay mismatch inside the cell raises ``NonDeterminismError``. That, and
    an unanswered ``durable_input``, stop the body without journaling call 0 as failed
    (:func:`~durable_nb.notebook.timetravel.stoppable`): the next run of the cell goes on.
    """
    __tracebackhide__ = True
    name = cell.name
    inputs, _, tokens, _ = found = cell_inputs(shell, cell)
    args_digest = found.digest if rerun else recorded_digest(store, shell, cell, found)
    base = cell_run_base(name, args_digest)
    latest = latest_attempt(store, base)
    if latest is None and not rerun:  # a new version: refused while an earlier one's run is unfinished
        check_no_unfinished(store, name, base)
    if latest is not None and not rerun:
        calls = store.calls(latest)
        recorded = calls[0] if calls else None
        if decide(recorded, cell_call_id(name), args_digest, reconciler is not None) is Decision.REPLAY:
            assert recorded is not None
            return replay_cell(shell, name, recorded)
    new_base = base if rerun or latest is None else None  # a new attempt: its number kept once its run is held
    run_id = new_attempt(store, base) if rerun or latest is None else latest
    quiet = bool(shell.displayhook.semicolon_at_end_of_expression(cell.source))
    if runner == "flink":
        shipped = CellRun(cell, inputs, args_digest, quiet, reconciler, tokens)
        return _run_on_flink(shell, name, shipped, store, inputs, run_id, strict, new_base)

    def announce() -> None:
        print(RECOVERING.format(name))

    changed: list[list[str]] = []  # the inputs the body changed in place, once it finished
    body = _kernel_body(shell, cell, quiet, inputs, tokens, changed)
    ran: list[bool] = []
    again: list[str] = []  # its durable calls that executed again (PENDING, no reconciler)

    def watched() -> tuple[CellOutcome, Any]:
        __tracebackhide__ = True
        ran.append(True)
        return body()

    try:
        with contextlib.ExitStack() as opened, unwrap_stopped():
            ctx = _open_cell_run(opened, name, store, run_id, strict, rerun=rerun)
            if new_base is not None:  # held now: a kernel starting it too meets this run (runids.new_attempt)
                keep_attempt(store, new_base, run_id)
            note_reexecuted(ctx.journal, again)
            done = perform_cell(ctx.journal, name, args_digest, stoppable(watched), reconciler, announce)
    except ReconcilerResultError as exc:  # the magic's argument is wrong, not the cell
        raise UsageError(f"{exc}. Nothing was journaled: the cell's last attempt stays unfinished, and "
                         f"a fixed --reconciler (or --rerun) recovers it.") from None
    finally:
        _say_reexecuted(name, again)  # after the body's own output, and not part of it (a replay does not say it)
        if ran:
            _warn_changed(name, changed[0] if changed else
                          changed_in_place(inputs, tokens, shell.user_ns, user_module(shell)))
    return _performed_result(shell, name, done, quiet)


def _performed_result(shell: Any, name: str, done: Performed, quiet: bool) -> Any:
    """What a cell performed in the kernel shows as its result; its reconciled names bound."""
    if done.outcome is None:  # another kernel finished it since we looked
        assert done.recorded is not None
        return replay_cell(shell, name, done.recorded)
    _warn_skipped(name, done.outcome.skipped)
    if done.decision is Decision.RECONCILE:
        shell.user_ns.update({k: v for k, v in done.value.items() if k not in done.outcome.skipped})
        _say_reconciled(name, done.outcome)
        return None
    return None if quiet else done.value


def _open_cell_run(
    opened: contextlib.ExitStack, name: str, store: Store, run_id: str, strict: bool, *, rerun: bool = False
) -> Any:
    """The cell's run opened on ``opened``; a run open elsewhere is told as what it is: this cell, running now.

    The store's text spoke of "two recoveries of one run"; the common case is two
    notebooks in one folder (one default journal) running the same cell, and the
    user needs to know that nothing ran here and that the other kernel's result
    replays here once it is done. Only the open is translated: a RunBusyError the
    cell's own code raises is the cell's. ``rerun``: the run is a new attempt (a ``--rerun``
    two kernels started at once); run again as it is, that cell executes again as the next
    attempt, so the refusal says to drop ``--rerun`` to replay the other kernel's run.
    """
    __tracebackhide__ = True
    try:
        return opened.enter_context(open_run(store, run_id, strict=strict))
    except RunBusyError as exc:
        plain = " without --rerun" if rerun else ""
        shared = " (notebooks in one folder share .durable/journal.db by default)" if _is_sqlite(store) else ""
        again = ("run this cell again without --rerun: it replays that result (names and output) without executing "
                 "the cell (with --rerun it executes again, as a new attempt)" if rerun else
                 "run this cell again: it replays that result (names and output) without executing the cell")
        raise RunBusyError(exc.run_id, exc.owner, (
            f"%%durable {name}: this cell, with the same code and inputs (run {exc.run_id!r}), is running now in "
            f"{exc.owner}: another kernel using the journal {store!r}{shared}, or a context left open in this "
            f"kernel. Nothing was run here. Once it finishes, {again}. "
            f"If that kernel is stuck, stop it (or restart it) and run this cell again{plain} to recover the run here."
        )) from None


def _is_sqlite(store: Store) -> bool:
    """Whether ``store`` is a journal file, the one kind two notebooks share just by sitting in one folder."""
    from ..stores.sqlite import SqliteStore  # stores sit below the notebook layer; imported when a refusal is told

    return isinstance(store, SqliteStore)


def _kernel_body(
    shell: Any, cell: ParsedCell, quiet: bool, inputs: Mapping[str, Any], tokens: Mapping[str, Any],
    changed: list[list[str]],
) -> Body:
    """The cell's body in the notebook namespace, its outputs recorded in order while shown live.

    The inputs it changed in place are journaled with the names it binds (see
    :func:`~.outcome.executed_outcome`) and put in ``changed`` for the cell's warning.

    A body that does not finish (an exception, a KeyboardInterrupt) gives the inputs
    it had already rebound (``order = dict(order, ...)``) their values back: run again,
    the cell then has the same inputs, reopens the same run and its durable calls
    replay, instead of starting a new run that repeats them. (An input changed in
    place stays changed: that cannot be undone.)
    """
    analysis = cell.analysis
    rebound = {n: inputs[n] for n in (*analysis.binds, *analysis.deletes) if n in inputs}

    def body() -> tuple[CellOutcome, Any]:
        __tracebackhide__ = True
        filename = shell.compile.cache(cell.source, shell.execution_count)  # tracebacks show the cell's lines
        ns = shell.user_ns
        globals_before = {n: ns.get(n, ABSENT) for n in analysis.global_binds}
        recorder = OutputRecorder(shell)
        try:
            with recorder.recording():
                last, result = run_body(cell.tree, filename, shell.user_global_ns, ns, shell.compile)
        except BaseException as exc:
            ns.update(rebound)
            if isinstance(exc, Exception):  # journaled as FAILED: its replay shows these
                keep_cell_details(exc, recorder.outputs, cell_traceback(exc, filename, f"<durable cell {cell.name}>"))
            raise
        fmt = None if quiet else shell.display_formatter.format
        binds = analysis.binds + tuple(n for n, was in globals_before.items() if ns.get(n, ABSENT) is not was)
        changed.append(changed_in_place(inputs, tokens, ns, user_module(shell)))
        outcome = executed_outcome(binds, analysis.deletes, ns, recorder.outputs, last, result, fmt,
                                   analysis.star_imports, changed_values(changed[0], tokens, binds))
        return outcome, result

    return body


def _run_on_flink(
    shell: Any, name: str, cell: CellRun, store: Store, inputs: dict[str, Any], run_id: str, strict: bool = False,
    new_base: str | None = None,
) -> Any:
    """Execute (or recover) the cell as a one-record job on FlinkRunner, then restore what it journaled.

    ``new_base``: ``run_id`` is a new attempt of that cell version, whose number is kept once the job
    that held the run ended (:func:`~.runids.keep_attempt`).
    """
    __tracebackhide__ = True
    _check_shippable(name, inputs)
    action = _durable_name(name=cell_call_id(name))(cell)
    flink = flink_runner(store, parallelism=1, strict=strict)
    try:
        done: Performed = flink.run(action, None, run_id=run_id)
    except BaseException as exc:
        if new_base is not None:  # the job's error is the one told
            with contextlib.suppress(Exception):
                keep_attempt(store, new_base, run_id)
        if isinstance(exc, Exception):
            replay_outputs(shell, getattr(exc, WORKER_OUTPUTS, None) or [])
            _say_reexecuted(name, shipped_reexecuted(flink.reexecuted))
        raise
    if new_base is not None:
        keep_attempt(store, new_base, run_id)
    if done.outcome is None:  # another kernel finished it meanwhile
        return replay_cell(shell, name, store.calls(run_id)[0])
    if done.decision is Decision.REEXECUTE:
        print(f"↻ durable: recovered cell {name!r} on Flink: its last attempt did not finish; "
              f"its durable calls replayed or reconciled")
    _warn_skipped(name, done.outcome.skipped, flink=True)
    result = restore(shell, done.outcome, notice=None)
    _say_reexecuted(name, shipped_reexecuted(flink.reexecuted))  # after the body's output, as on --runner local
    _warn_changed(name, list(done.outcome.changed))  # in the worker's copy; not the inputs it rebound
    if done.decision is Decision.RECONCILE:
        _say_reconciled(name, done.outcome)
    return None if cell.quiet else result


def replay_cell(shell: Any, name: str, recorded: CallRecord) -> Any:
    """Restore a finished cell from its record: variables, outputs in order, result or exception."""
    __tracebackhide__ = True
    notice = f"↺ durable: replayed cell {name!r} recorded {_utc(recorded.finished_at)} (use --rerun to execute)"
    try:
        payload = replay(recorded)
    except Exception as exc:
        print(notice.replace("replayed cell", "replayed the failure of cell"))
        replay_outputs(shell, getattr(exc, WORKER_OUTPUTS, None) or [])  # what the cell showed before it raised
        where = getattr(exc, CELL_TRACEBACK, None)
        if isinstance(where, str) and where:
            with contextlib.suppress(Exception):
                exc.add_note(f"Raised in cell {name!r} when it ran:\n{where}")
        raise
    return restore(shell, CellOutcome.from_payload(payload), notice=notice)


def restore(shell: Any, outcome: CellOutcome, *, notice: str | None) -> Any:
    """Bring a journaled outcome into the notebook: names, deletions, outputs in order; returns the result.

    ``notice`` is the replay line; None when the outcome was just produced by a
    Flink worker (its unpicklable names were already warned about).
    """
    for module in outcome.star_imports:  # first: names the cell bound after the import override them
        shell.user_ns.update(star_values(module))
    restored, failed = unpack_namespace(outcome.values, outcome.modules)
    _keep_changed_objects(shell.user_ns, restored, outcome.changed)
    shell.user_ns.update(restored)
    for gone in outcome.deletes:
        shell.user_ns.pop(gone, None)
    lost = {**outcome.skipped, **failed} if notice is not None else failed
    if notice is not None:
        print(notice)
    if lost:
        print("  not restored: " + ", ".join(f"{n} ({why})" for n, why in lost.items()))
    replay_outputs(shell, list(outcome.outputs))
    if outcome.result is None:
        return None
    value, failure = outcome.result.restore(restored)
    if failure is not None:
        print(f"  not restored: the cell's result ({failure})")
    return value


def _keep_changed_objects(ns: Mapping[str, Any], restored: dict[str, Any], changed: tuple[str, ...]) -> None:
    """The inputs the cell changed in place get the journaled state in the notebook's own objects.

    Why: another name may hold the same object (``pipeline`` holding ``clf``, ``a = df``); it saw
    the change in the first run, so it sees it in the replay. A name the cell bound to the same
    object (``model = clf.fit(X)``), or to one holding it (``results = {"model": clf}``), holds that object again.
    """
    pairs = {n: (ns[n], restored[n]) for n in changed if n in restored and n in ns}
    restored.update(update_all_in_place(pairs, {n: v for n, v in restored.items() if n not in pairs}))


def run_map(
    shell: Any, cell: ParsedCell, store: Store, map_var: str, *, key: str | None = None, runner: str = "local",
    progress: bool = False, strict: bool = False, concurrency: int = 1,
) -> pd.DataFrame:
    """``%%durable NAME --map VAR``: the cell as an action over every record of ``VAR``, one run per record."""
    name = cell.name
    if map_var not in shell.user_ns:
        raise UsageError(f"%%durable {name} --map {map_var}: no variable {map_var!r} in the "
                         f"notebook; define the DataFrame or list of records first.")
    if name == map_var:
        raise UsageError(f"%%durable {name} --map {map_var}: the cell's result frame is bound to {name!r}, which "
                         f"would replace the records it maps (and the next run would map its own results); "
                         f"name the cell differently, e.g. %%durable {name}_out --map {map_var}")
    try:  # refused before any run is opened, as a UsageError naming the fix
        records = records_of(shell.user_ns[map_var], key)
    except KeyError as exc:  # the key is the frame's index
        raise UsageError(f"%%durable {name} --map {map_var} --key {key}: {exc.args[0]}") from None
    except TypeError as exc:
        value = shell.user_ns[map_var]
        if isinstance(value, set | frozenset):
            raise UsageError(f"%%durable {name} --map {map_var}: {exc} (--key ... in a cell)") from None
        raise UsageError(
            f"%%durable {name} --map {map_var}: {map_var} is a {type(value).__name__} ({str(value)[:40]!r}), "
            f"not records; --map needs a DataFrame or a list of records (one run each). For a single "
            f"record, wrap it in a list first: {map_var} = [{map_var}]"
        ) from None
    try:
        for position, record in enumerate(records):
            key_of(record, key, position)
    except KeyError as exc:
        raise UsageError(f"%%durable {name} --map {map_var} --key {key}: {exc.args[0]}") from None
    reads = tuple(n for n in cell.analysis.reads if n not in MAP_RESERVED)
    env = select_inputs(reads, shell.user_ns, shell.user_ns_hidden)
    cell_action = CellAction(name, cell.source, env, cell.analysis.binds, remote=runner == "flink")
    action = _durable_name(name=cell_call_id(name))(cell_action)
    if runner == "flink":
        _check_shippable(name, env)  # a UsageError naming the input, as for a plain cell, not FlinkRunner's TypeError
        mapper: Any = flink_runner(store, strict=strict, concurrency=concurrency)
    else:
        from ..runners.local import LocalRunner

        mapper = LocalRunner(store, strict=strict)
        cell_action.reexecuted = []  # said after the map: a record's call in flight at a crash ran again
    try:
        frame = mapper.map(action, records, key=key, progress=progress)  # off unless --progress, on every runner
    finally:  # what the map's recovered records executed again: seen here (local), or shipped by the workers
        _say_reexecuted(name, cell_action.reexecuted if runner != "flink" else
                        shipped_reexecuted(mapper.reexecuted, first=0, per_run=True))
    shell.user_ns[name] = frame
    return frame


def flink_runner(store: Store, **options: Any) -> Any:
    """A FlinkRunner on the cell's store; what keeps it from running here is a UsageError, before any job."""
    try:
        from ..runners.flink_job import FlinkRunner, FlinkSetupError

        try:
            return FlinkRunner(store, **options)
        except (FlinkSetupError, ValueError) as exc:
            raise UsageError(f"%%durable --runner flink: {exc}") from None
    except ImportError as exc:
        # FlinkRunner's own ImportError already names the extra: say it once, not twice.
        hint = "" if FLINK_HINT in str(exc) else f" Install it with: {FLINK_HINT}"
        message = f"%%durable --runner flink needs PyFlink, which is not installed here ({exc})."
        raise UsageError(message + hint) from None


def _check_shippable(name: str, inputs: Mapping[str, Any]) -> None:
    """Name the notebook value that cannot travel to a Flink worker, before a job is built."""
    import cloudpickle

    try:
        cloudpickle.dumps(dict(inputs))
        return
    except Exception:
        pass
    for var, value in inputs.items():
        try:
            cloudpickle.dumps(value)
        except Exception as exc:
            raise UsageError(
                f"%%durable {name} --runner flink: the cell reads {var!r} ({type(value).__name__}), which "
                f"cannot be pickled to ship it to the Flink worker ({type(exc).__name__}: {exc}). Create it "
                f"inside the cell, or run this cell with --runner local."
            ) from None


def _warn_skipped(name: str, skipped: Mapping[str, str], *, flink: bool = False) -> None:
    if not skipped:
        return
    were, these = ("was", "this name") if len(skipped) == 1 else ("were", "these names")
    where = (f"could not come back from the Flink worker and {were} left out of the journal; the cell's other "
             f"outputs are restored and journaled, and a replay will not restore {these} either"
             if flink else
             f"{were} left out of the journal; the cell's other outputs are journaled, and a replay will not "
             f"restore {these}")
    _warn_cell(name, f"durable_nb: cell {name!r}: " + ", ".join(f"{n} ({why})" for n, why in skipped.items())
               + f" cannot be journaled and {where}. Keep live objects (open files, connections) out of durable "
               "cells, or recreate them in a cell of their own.", UnpicklableOutputWarning)


def _warn_changed(name: str, changed: list[str]) -> None:
    if not changed:
        return
    names = ", ".join(repr(n) for n in changed)
    _warn_cell(
        name,
        f"durable_nb: cell {name!r} changed its input{'s' if len(changed) > 1 else ''} {names} in place. A "
        f"replay after a restart restores such a value as the cell left it (the notebook's own classes and "
        f"functions stay as they are), but run again in this kernel the cell reads other inputs, so it is a "
        f"new version of itself and executes again, its durable "
        f"calls included (a payment would be made twice). Bind new names instead of changing inputs "
        f"(orders2 = [dict(o, charge=...) for o in orders]), or keep the change in a cell of its own.",
        ChangedInputWarning,
    )


def _warn_cell(name: str, message: str, category: type[Warning]) -> None:
    """Warn from the cell: with a stacklevel the warning named durable_nb/notebook/magics.py and showed the
    magic's own line (``return run_cell(self.shell, ...``) under it, library source on the user's screen."""
    warnings.warn_explicit(message, category, f"<durable cell {name}>", 1, module="__main__")


def _say_reexecuted(name: str, calls: list[str] | None) -> None:
    """The "ran again" line, after the cell's own output, when some durable calls executed again."""
    if calls:
        print(reexecuted_notice(name, calls))


def _say_reconciled(name: str, outcome: CellOutcome) -> None:
    print(f"↻ durable: reconciled cell {name!r} with --reconciler; restored: "
          f"{', '.join(outcome.restorable) or 'nothing'}")


def _utc(ts: float | None) -> str:
    if ts is None:
        return "at an unknown time"
    try:
        return _dt.datetime.fromtimestamp(ts, _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S UTC")
    except (OverflowError, OSError, ValueError, TypeError):
        return f"at {ts!r} (not a time)"
