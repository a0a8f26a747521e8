"""The cell as a durable call, wherever it runs: :func:`perform_cell`, :class:`CellRun`, :class:`CellAction`.

:func:`perform_cell` is the one place a cell is performed inside its open run:
call 0 (``cell:NAME``) goes through :meth:`Journal.begin` and
:meth:`Journal.perform` (the replay rules decide), the body (or the cell's
``--reconciler``) runs in between, and the journaled :class:`CellOutcome` comes
back. The kernel calls it with a body that runs in the notebook namespace
(:mod:`durable_nb.notebook.kernel`); a Flink worker calls it through
:class:`CellRun`, with a body that runs in a fresh namespace. :func:`run_body` is
the one piece of code that executes a cell's statements and evaluates its last
expression, for those two and for :class:`CellAction` (``--map``).

This module does not import IPython: :class:`CellRun` and :class:`CellAction`
are cloudpickled to Flink workers, which import this module and not the magics.
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import linecache
import traceback
import types
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import ChangedInputWarning
from ..journal import codec
from ..journal.records import CallRecord
from ..journal.replay import Decision, Journal, Planned, Step
from .cell import CellAnalysis, analyze, split_last_expression
from .cell_inputs import changed_in_place, changed_values, input_tokens
from .outcome import CellOutcome, executed_outcome, reconciled_outcome
from .outputs import OutputRecorder
from .runids import cell_call_id

#: Attribute of an exception raised by a cell in a Flink worker: what the cell printed before it.
WORKER_OUTPUTS = "_durable_nb_outputs"
#: Attribute of an exception a cell raised in the kernel: where in the cell, shown when its failure replays.
CELL_TRACEBACK = "_durable_nb_traceback"
#: Names ``--map`` binds inside the cell; never part of its result.
MAP_RESERVED = ("record", "ctx")

#: ``compile(source, filename, mode)``: the builtin, or the shell's caching compiler.
Compiler = Callable[..., types.CodeType]
#: Runs the body once: the outcome to journal and the live value of the cell's last expression.
Body = Callable[[], tuple[CellOutcome, Any]]


def run_body(
    tree: ast.Module, filename: str, glob: dict[str, Any], ns: dict[str, Any] | None = None,
    compiler: Compiler = compile,
) -> tuple[ast.Expression | None, Any]:
    """Execute a cell's statements, then evaluate its last expression; ``(that expression, its value)``.

    ``compiler`` is the shell's caching compiler in the kernel (so tracebacks show
    the cell's lines), the builtin ``compile`` elsewhere.
    """
    __tracebackhide__ = True  # IPython leaves this frame out of tracebacks
    body, last = split_last_expression(tree)
    local = glob if ns is None else ns
    exec(compiler(body, filename, "exec"), glob, local)
    if last is None:
        return None, None
    return last, eval(compiler(last, filename, "eval"), glob, local)


@dataclass(frozen=True)
class ParsedCell:
    """One ``%%durable NAME`` cell, parsed once: what every path that runs it needs."""

    name: str
    source: str
    """The cell's Python source, after IPython's transformations (``%magic`` lines are calls by then)."""
    tree: ast.Module
    analysis: CellAnalysis

    @classmethod
    def parse(cls, name: str, source: str) -> ParsedCell:
        tree = ast.parse(source)
        return cls(name, source, tree, analyze(tree))


@dataclass(frozen=True)
class Performed:
    """What :func:`perform_cell` did for call 0 of a cell's run."""

    decision: Decision | None
    """EXECUTE, REEXECUTE or RECONCILE; None when the record was already terminal (replay ``recorded``)."""
    outcome: CellOutcome | None = None
    """The outcome journaled just now (None with ``decision`` None)."""
    recorded: CallRecord | None = None
    """The terminal record found when ``decision`` is None."""
    value: Any = None
    """The live result of an executed body, or the dict a reconciler returned; not journaled as such."""


def perform_cell(
    journal: Journal,
    name: str,
    args_digest: str,
    body: Body,
    reconciler: Callable[[], Any] | None = None,
    before_reexecute: Callable[[], None] | None = None,
) -> Performed:
    """Perform call 0 of a cell's run by the replay rules; an exception from the body is journaled and raised.

    ``before_reexecute`` is told when an earlier attempt died mid-way and the body
    runs again (the kernel says so before the body's own output starts).
    """
    __tracebackhide__ = True
    step = journal.begin(cell_call_id(name), args_digest, reconciler is not None)
    if not isinstance(step, Step):  # finished by another attempt since the caller looked
        journal.keep_rest()
        return Performed(None, recorded=step)
    live: list[tuple[CellOutcome, Any]] = []  # what run() journaled, and the live value beside it
    if step.decision is Decision.RECONCILE:
        assert reconciler is not None
        journal.keep_rest()  # the reconciled outcome accounts for the body's calls too

        def run() -> dict[str, Any]:
            values = reconciler()
            try:
                outcome = reconciled_outcome(name, values)
            except TypeError as exc:  # the magic's argument is wrong, not the cell: nothing is journaled
                raise _WrongShape(exc) from None
            live.append((outcome, values))
            return outcome.to_payload()
    else:
        if step.decision is Decision.REEXECUTE and before_reexecute is not None:
            before_reexecute()

        def run() -> dict[str, Any]:
            __tracebackhide__ = True
            outcome, value = body()
            live.append((outcome, value))
            return outcome.to_payload()

    try:
        journal.perform(step, run, lambda _payload: live[0][0].summary())
    except _WrongShape as wrong:
        raise ReconcilerResultError(str(wrong.error)) from None  # call 0 stays PENDING: a fixed one recovers it
    outcome, value = live[0]
    return Performed(step.decision, outcome, value=value)


def note_reexecuted(journal: Journal, into: list[str], *, first: int = 1, where: str = "") -> None:
    """Collect in ``into`` the durable calls of the cell's run that execute again (PENDING, no reconciler).

    Why: a recovered cell said its durable calls "replay or reconcile", while a call that was
    in flight when the kernel died and has no reconciler runs a second time (at-least-once, by
    the rules): a payment made twice, with nothing on screen saying so. Call 0 (the cell's body
    running again) is what the recovery line already says; a ``--map`` record's run has no such
    call (``first=0``), and ``where`` names the record's run.
    """
    before = journal.observer

    def observe(planned: Planned, call_id: str) -> None:
        if planned.decision is Decision.REEXECUTE and planned.index >= first:
            into.append(reexecuted_call(planned.index, call_id, where))
        if before is not None:
            before(planned, call_id)

    journal.observer = observe


def reexecuted_call(index: int, call_id: str, where: str = "") -> str:
    """One call of the "ran again" line; the same words whether the kernel saw it or a Flink worker shipped it."""
    return f"call {index} ({call_id}){where}"


def shipped_reexecuted(calls: list[tuple[str, int, str]], *, first: int = 1, per_run: bool = False) -> list[str]:
    """The "ran again" calls from ``FlinkRunner.reexecuted`` (``(run_id, index, call_id)``), as
    :func:`note_reexecuted` collects them in the kernel: ``first`` and ``per_run`` (a ``--map``) as its
    ``first`` and ``where``."""
    return [reexecuted_call(index, call_id, f" of run {codec.shown(run_id)!r}" if per_run else "")
            for run_id, index, call_id in calls if index >= first]


REEXECUTED_LISTED = 5
"""Calls the "ran again" line names one by one (a map crashed over many records: it counts the rest)."""


def reexecuted_notice(name: str, calls: list[str]) -> str:
    """The line a recovered cell prints after its body when some of its durable calls executed again."""
    one = len(calls) == 1
    listed = ", ".join(calls[:REEXECUTED_LISTED]) + (
        f" and {len(calls) - REEXECUTED_LISTED} more" if len(calls) > REEXECUTED_LISTED else "")
    return (f"  ran again: {listed} of cell {name!r} {'was' if one else 'were'} in flight when its last "
            f"attempt stopped and {'has' if one else 'have'} no reconciler, so {'it' if one else 'they'} executed "
            f"again (at-least-once: what {'it does' if one else 'they do'} may now be done twice); give such a "
            f"call reconciler= to look up what it did instead")


class ReconcilerResultError(TypeError):
    """A cell's ``--reconciler`` returned something other than a dict of variable names: nothing was journaled."""


class _WrongShape(BaseException):
    """Carries a ``--reconciler`` result of the wrong shape past ``Journal.perform``, which journals Exceptions."""

    def __init__(self, error: TypeError) -> None:
        super().__init__(error)
        self.error = error


class CellRun:
    """A plain ``%%durable NAME --runner flink`` cell as the one-record action ``action(None, ctx)``.

    Built in the kernel, cloudpickled with the cell's source and the notebook
    values it reads, called in a Flink worker inside the cell's run (which
    ``FlinkRunner.run`` opens there). It performs the cell with
    :func:`perform_cell`, as the kernel does, and returns the :class:`Performed`
    without its live value (the kernel restores from the journaled outcome).
    Only stdout and stderr are recorded there: a worker has no display
    publisher, so ``display(obj)`` prints ``repr(obj)`` and rich MIME output is lost.
    """

    def __init__(
        self, cell: ParsedCell, env: dict[str, Any], args_digest: str, quiet: bool,
        reconciler: Callable[[], Any] | None = None, tokens: Mapping[str, Any] | None = None,
    ) -> None:
        self.name = cell.name
        self.source = cell.source  # not the tree: the worker parses it again (smaller to ship)
        self.env = env
        # the inputs a change in place of which comes back as an output, as it does in the kernel
        self.values = tuple(n for n, token in (tokens or {}).items() if token[0] == "value")
        self.binds = cell.analysis.binds
        self.deletes = cell.analysis.deletes
        self.args_digest = args_digest
        self.quiet = quiet
        self.reconciler = reconciler

    def __repr__(self) -> str:
        return f"<CellRun cell:{self.name}>"

    def __call__(self, _value: Any, ctx: Any) -> Performed:
        done = perform_cell(ctx.journal, self.name, self.args_digest, self._execute, self.reconciler)
        return Performed(done.decision, done.outcome, done.recorded)

    def _execute(self) -> tuple[CellOutcome, Any]:
        """Run the body in a fresh namespace, recording what it prints."""
        filename = f"<durable cell {self.name}>"
        linecache.cache[filename] = (len(self.source), None, self.source.splitlines(True), filename)
        ns: dict[str, Any] = {"__builtins__": builtins, "__name__": "__main__", **self.env}
        values = {n: self.env[n] for n in self.values}
        before = input_tokens(values)  # here: digests of the worker's copies compare with each other
        recorder = OutputRecorder(None)
        try:
            with recorder.streams():
                last, result = run_body(ast.parse(self.source), filename, ns)
        except Exception as exc:
            attach_worker_details(exc, recorder.outputs, filename)
            raise
        fmt = None if self.quiet else _plain_text
        changed = changed_values(changed_in_place(values, before, ns), before, self.binds)
        return executed_outcome(self.binds, self.deletes, ns, recorder.outputs, last, result, fmt,
                                changed=changed), None


def _plain_text(value: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """A worker has no display formatter: an unpicklable result is kept as its repr."""
    return {"text/plain": repr(value)}, {}


def cell_traceback(exc: BaseException, filename: str, shown_as: str | None = None) -> str:
    """The traceback of ``exc`` from the cell's own frame on, as text (pickling an exception drops it).

    ``shown_as`` replaces the cell's file name in it (a kernel's cache file means nothing after a restart).
    """
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename != filename:
        tb = tb.tb_next
    text = "".join(traceback.format_tb(tb) if tb is not None else []).rstrip()
    return text if shown_as is None else text.replace(f'File "{filename}"', shown_as)


def keep_cell_details(exc: BaseException, outputs: list[Any], traceback_text: str | None = None) -> None:
    """Keep what a failing cell printed (and where it failed) on the exception, so its FAILED record holds them.

    Why: a replay of the failure shows what the first run showed before the traceback,
    and says where in the cell it was raised, which the journaled exception alone cannot.
    """
    with contextlib.suppress(Exception):
        setattr(exc, WORKER_OUTPUTS, list(outputs))
        if traceback_text:
            setattr(exc, CELL_TRACEBACK, traceback_text)


def attach_worker_details(exc: Exception, outputs: list[Any], filename: str) -> None:
    """Keep what a failing cell printed, and where in the cell it failed, on the exception itself.

    Both travel with the pickled exception to the kernel (and into the FAILED
    record): the kernel shows the outputs, and the traceback from the worker
    (which pickling drops) is added as a note.
    """
    keep_cell_details(exc, outputs)
    with contextlib.suppress(Exception):
        exc.add_note("Raised in the Flink worker running the cell:\n" + cell_traceback(exc, filename))


class CellAction:
    """A ``%%durable --map`` cell as an action ``action(record, ctx)``.

    Holds the cell's source and the notebook values it reads (not code objects),
    so it cloudpickles to Flink workers; each call executes the cell in a fresh
    namespace with ``record`` and ``ctx`` bound. Its result is the value of the
    cell's last expression, else a dict of the names the cell assigned.
    """

    def __init__(self, name: str, source: str, env: dict[str, Any], binds: tuple[str, ...], *,
                 remote: bool = False) -> None:
        self.name = name
        self.source = source
        self.env = env
        self.binds = binds
        self.watch = remote
        """Run in Flink workers, on copies of ``env``: the first record a worker runs is checked for
        changes made in place to them, which never reach the notebook (see :meth:`_lost_changes`)."""
        self.reexecuted: list[str] | None = None
        """A list (set by the kernel for ``--runner local``) collects the durable calls of the records that executed
        again for want of a reconciler (:func:`note_reexecuted`), for the line the map prints after it."""

    def __repr__(self) -> str:
        return f"<CellAction cell:{self.name}>"

    def __call__(self, record: Any, ctx: Any) -> Any:
        __tracebackhide__ = True
        ns: dict[str, Any] = {"__builtins__": builtins, "__name__": "__main__", **self.env}
        ns["record"] = record
        ns["ctx"] = ctx
        if self.reexecuted is not None:
            note_reexecuted(ctx.journal, self.reexecuted, first=0, where=f" of run {codec.shown(ctx.run_id)!r}")
        before = None
        if self.watch:  # once per worker: two digests of the inputs, not two per record
            self.watch = False
            with contextlib.suppress(Exception):  # a check only: it never fails a record
                before = input_tokens(self.env)
        try:
            last, result = run_body(ast.parse(self.source), f"<durable cell {self.name}>", ns)
        finally:
            if before is not None:
                with contextlib.suppress(Exception):
                    self._lost_changes(changed_in_place(self.env, before, ns))
        if last is not None:
            return result
        return {
            n: ns[n] for n in self.binds
            if n in ns and n not in MAP_RESERVED and not isinstance(ns[n], types.ModuleType)
        }

    def _lost_changes(self, changed: list[str]) -> None:
        """Say so when a record changed a notebook value in place in a Flink worker.

        Why: on ``--runner local`` the cell changes the notebook's own object (``seen.append(record["id"])``
        fills ``seen``); in a Flink worker it changes that worker's copy, and the notebook's value stays as it
        was, without a word. Checked on a worker's first record only: a cell that changes an input does so
        on every record, and digesting the inputs around each one would cost more than the records.
        """
        if changed:
            names = ", ".join(map(repr, changed))
            warnings.warn(
                f"durable_nb: cell {self.name!r} changed its input(s) {names} in place, in a Flink worker's "
                f"copy: with --map and --runner flink the notebook's value does not get those changes (on "
                f"--runner local it would). Return what you need from the cell instead (its last expression, "
                f"or the names it assigns, come back in the result frame).", ChangedInputWarning, stacklevel=2)
