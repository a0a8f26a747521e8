"""Dry replay: run an action against its journal with nothing executed and nothing written.

``runner.dry_run(action, value, run_id=...)`` answers "what would a recovery of
this run do with the action as it is now?" before it touches the world. The
action runs with a context whose journal replays every recorded call (the
recorded results and exceptions come back as usual) and stops at the first call
that would not replay: a call to execute (nothing on record), to re-execute or
reconcile (PENDING on record), a mismatch (a different call on record), or an
unanswered ``durable_input``. The verdict is :func:`replay.decide`'s, so the
rules stay in one place.

Nothing runs at the stop (neither the function nor its reconciler) and nothing
is written: the journal is read with ``store.calls`` only, no lease is taken, and
the dry journal never calls a store write method. The action's own plain code
(between durable calls) does run: it is what is being checked. A dry run started
inside a durable call (a durable function that checks another run) starts outside
any call, as ``open_run`` does: otherwise its durable calls would be plain calls,
run for real, and the report would say nothing ran.
"""

from __future__ import annotations

import asyncio
import dataclasses
import html
import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import JournalFormatError, NonDeterminismError
from . import codec
from .nesting import enter_run, leave_run
from .records import INPUT_CALL_ID, CallRecord, misnumbered
from .replay import Decision, Journal, decide, found_in
from .store import Store

if TYPE_CHECKING:
    import pandas as pd

    from .context import RunnerContext

_RULES = {
    Decision.REPLAY: "rule 1: the recorded outcome is returned (or raised); nothing runs",
    Decision.EXECUTE: "rule 3: nothing on record at this index: the call would be journaled PENDING and executed",
    Decision.REEXECUTE: "rule 1: PENDING on record and no reconciler: the function would run again (at-least-once)",
    Decision.RECONCILE: "rule 1: PENDING on record and a reconciler given: the reconciler would run instead",
    Decision.MISMATCH: (
        "rule 2: a different call is on record here: the journal from this index would be discarded and "
        "the call executed (strict mode: NonDeterminismError)"
    ),
}
_INPUT_RULE = "durable_input not answered yet: the run would stop WAITING for a person's answer"
_STRICT_MISMATCH = (
    "rule 2, strict mode: a different call is on record here: the run would be refused with NonDeterminismError "
    "(nothing discarded, nothing executed)"
)


@dataclass(frozen=True)
class DryStep:
    """One durable call the dry replay examined."""

    index: int
    decision: Decision
    call_id: str
    """The call id the action makes now."""
    args_digest: str
    """The argument digest the action makes now."""
    recorded: CallRecord | None
    """What the journal holds at this index (None: nothing)."""
    strict: bool = False
    """Examined for a strict runner: a mismatch here is refused (NonDeterminismError), not discarded."""

    @property
    def rule(self) -> str:
        """The replay rule that applies, in words."""
        if self.strict and self.decision is Decision.MISMATCH:
            return _STRICT_MISMATCH
        if self.recorded is not None and self.recorded.is_input and self.decision is not Decision.REPLAY \
                and self.decision is not Decision.MISMATCH:
            return _INPUT_RULE
        if self.recorded is None and self.call_id == INPUT_CALL_ID and self.decision is Decision.EXECUTE:
            return _INPUT_RULE.replace("not answered yet", "reached for the first time")
        return _RULES[self.decision]


@dataclass(frozen=True)
class DryRunReport:
    """What a recovery of ``run_id`` would do: the first durable call that would not replay.

    ``stopped_at`` is None when every call the action made replays.
    """

    run_id: str
    stopped_at: int | None
    """Index of the first call that would not replay; None when all replay."""
    decision: Decision | None
    """The rule's verdict at ``stopped_at`` (EXECUTE, REEXECUTE, RECONCILE or MISMATCH); None when all replay."""
    recorded: CallRecord | None
    """The journal's record at ``stopped_at`` (None: nothing recorded there, or no stop)."""
    call_id: str | None
    """The call id the action makes now at ``stopped_at``."""
    args_digest: str | None
    """The argument digest the action makes now at ``stopped_at``."""
    rule: str
    """The replay rule that applies at the stop, in words."""
    replayed: int
    """Calls that replayed before the stop."""
    unreached: int = 0
    """Recorded calls the action finished without reaching (a real run would discard them)."""
    error: str | None = None
    """``Type: message`` if the action raised (a replayed exception it did not catch, or its own bug)."""
    result_preview: str | None = None
    """Preview of the action's result when it finished with every call replayed."""
    steps: tuple[DryStep, ...] = ()
    """Every call examined, in order (the replayed ones, then the stop)."""
    busy: bool = False
    """A live context holds the run now (another thread, kernel or process): a run now gets ``RunBusyError``,
    and a call the journal shows PENDING may be running there, not crashed."""
    strict: bool = False
    """Dry-run for a strict runner: what strict mode refuses (a mismatch, calls never reached) is reported as
    refused, since a strict run raises NonDeterminismError there instead of discarding and executing."""

    @property
    def refused(self) -> bool:
        """A strict run would raise NonDeterminismError: a mismatch at the stop, or recorded calls never reached."""
        return self.strict and (self.decision is Decision.MISMATCH or (self.stopped_at is None and self.unreached > 0))

    def to_pandas(self) -> pd.DataFrame:
        """One row per examined call: the decision, the current and the recorded call id and digest."""
        import pandas as pd

        columns = ["index", "decision", "call_id", "args_digest", "recorded_call_id", "recorded_args_digest",
                   "recorded_status", "recorded_origin", "recorded_result_preview", "rule"]
        rows = [
            (s.index, s.decision.value, s.call_id, s.args_digest,
             s.recorded.call_id if s.recorded else None, s.recorded.args_digest if s.recorded else None,
             s.recorded.status.value if s.recorded else None,
             s.recorded.origin.value if s.recorded and s.recorded.origin else None,
             s.recorded.result_preview if s.recorded else None, s.rule)
            for s in self.steps
        ]
        frame = pd.DataFrame.from_records(rows, columns=columns)
        frame["index"] = frame["index"].astype("int64")  # an action making no call: object otherwise (calls_frame)
        return frame

    def _summary(self) -> list[str]:
        replayed = f"{self.replayed} call replays" if self.replayed == 1 else f"{self.replayed} calls replay"
        if self.stopped_at is None:
            # the rule says what replaying means here: a finished %%durable cell is one call (its record), not
            # "all 1 calls" of a run whose journal shows three
            lines = [f"dry run of {self.run_id!r}: {'all ' * (self.replayed > 1)}{replayed}; nothing would run",
                     f"  {self.rule}"]
            if self.unreached and self.strict:
                lines.append(f"but {self.unreached} recorded call(s) are never reached: strict mode refuses the "
                             f"run with NonDeterminismError (nothing discarded)")
            elif self.unreached:
                lines.append(f"but {self.unreached} recorded call(s) are never reached and would be discarded "
                             f"(strict mode: NonDeterminismError)")
            if self.error and not self.refused:  # refused: the line above says what a strict run raises
                lines.append(f"the action raised {self.error}")
            return lines
        assert self.decision is not None
        lines = [
            f"dry run of {self.run_id!r}: {replayed}, then call {self.stopped_at} would "
            + ("be refused: a mismatch, and strict mode raises NonDeterminismError" if self.refused
               else self.decision.value),
            f"  now:      {self.call_id}  args {str(self.args_digest)[:16]}",
        ]
        rec = self.recorded
        lines.append(
            f"  recorded: {rec.call_id}  args {rec.args_digest[:16]}  {rec.status.value}" if rec
            else "  recorded: nothing"
        )
        lines.append(f"  {self.rule}")
        return lines

    def _lines(self) -> list[str]:
        lines = self._summary()
        if self.busy:
            lines.append("the run is open in a live context now: running it now raises RunBusyError, and a "
                         "PENDING call may still be running there; dry-run it again once that context ends")
        # The recorded call id, the rule and the error come from the journal, which may be someone else's:
        # shown with lone surrogates and NULs as escapes (display outputs travel as UTF-8; one would fail
        # the cell's output) and bidirectional controls as escapes (an id must not display reversed).
        return [codec.shown(line) for line in lines]

    def __repr__(self) -> str:
        return "\n".join(self._lines())

    def _repr_html_(self) -> str:
        lines = self._lines()
        head = f"<b>{html.escape(lines[0])}</b>"
        rest = "".join(f"<div style='font-family:monospace;white-space:pre'>{html.escape(x)}</div>"
                       for x in lines[1:])
        return f"<div class='durable-nb-dry-run'>{head}{rest}</div>"


class _DryStop(BaseException):
    """Stops the action at the first call that would not replay (a BaseException: user code must not catch it)."""

    def __init__(self, step: DryStep) -> None:
        self.step = step
        super().__init__(f"dry run stopped before call {step.index}")


class DryJournal(Journal):
    """A journal that only replays: any other decision stops the action; it never writes."""

    def __init__(self, store: Store, run_id: str, recorded: list[CallRecord]) -> None:
        super().__init__(store, run_id, recorded)
        self.steps: list[DryStep] = []
        self.stop: DryStep | None = None

    def begin_queued(
        self, call_id: str, args_digest: str, has_reconciler: bool, *, count: bool = False,
        earlier: Callable[[], str] | None = None,
    ) -> tuple[Any, None]:
        """Replay, or stop before anything is decided for real: the one door of sync and async calls.

        ``count`` is moot: a replay is not counted, and anything else stops here.
        """
        with self._lock:
            if self.stop is not None:  # a concurrent call after the stop (asyncio.gather)
                raise _DryStop(self.stop)
            index = self.cursor
            recorded = self._log[index] if index < len(self._log) else None
            decision = decide(recorded, call_id, args_digest, has_reconciler, earlier)
            step = DryStep(index, decision, call_id, args_digest, recorded, self.strict)
            self.steps.append(step)
            if decision is not Decision.REPLAY:
                self.stop = step
                raise _DryStop(step)
            self.cursor += 1
            return recorded, None

    def discard_unreached(self) -> None:
        """Writes nothing; the report counts the unreached calls instead."""

    def keep_rest(self) -> None:
        """Writes nothing either way."""


def _report(journal: DryJournal, result: Any, error: BaseException | None) -> DryRunReport:
    stop = journal.stop
    replayed = sum(1 for s in journal.steps if s.decision is Decision.REPLAY)
    if stop is not None:
        return DryRunReport(
            journal.run_id, stop.index, stop.decision, stop.recorded, stop.call_id, stop.args_digest,
            stop.rule, replayed, steps=tuple(journal.steps), strict=journal.strict,
        )
    unreached = max(0, len(journal.calls) - journal.cursor) if error is None and not journal.reached_none else 0
    if unreached and journal.strict:  # a strict run raises this at its end instead of returning the result
        rec = journal.calls[journal.cursor]
        error = NonDeterminismError(journal.run_id, journal.cursor, rec.call_id, rec.args_digest, None, None)
    return DryRunReport(
        journal.run_id, None, None, None, None, None,
        "every call replays: the recorded outcomes are returned (or raised); nothing runs", replayed,
        unreached=unreached, error=None if error is None else codec.error_preview(error),
        result_preview=None if error is not None else codec.preview(result), steps=tuple(journal.steps),
        strict=journal.strict,
    )


DRY_RUN_ASYNC = "runner.dry_run_async(action, value)"
"""What ``dry_run`` tells a caller inside a running event loop to use instead."""


def dry_run(
    store: Store, run_id: str, call: Callable[[RunnerContext], Any], *, key: Any = None, strict: bool = False
) -> DryRunReport:
    """Run ``call(ctx)`` (an action bound to its input) against the journal of ``run_id``, dry.

    Refuses what ``runner.run`` refuses, with the same error: a run id ``open_run`` would
    refuse, and (after ``call`` returns a coroutine) a running event loop, where
    ``asyncio.run`` cannot start; there use :func:`dry_run_async`. ``strict``: report what a
    strict runner does (a mismatch is refused with NonDeterminismError, not discarded).
    """
    from .context import RunnerContext, _current, check_open_run_id, refuse_inside_loop

    check_open_run_id(run_id)
    journal = DryJournal(store, run_id, _recorded(store, run_id))
    journal.strict = strict
    ctx = RunnerContext(journal, key=key)
    token, outside = _current.set(ctx), enter_run()
    try:
        started = _dry_start(journal, call, ctx)
        if not isinstance(started, DryRunReport):
            refuse_inside_loop(DRY_RUN_ASYNC, started)
            started = asyncio.run(_dry_finish(journal, started))
        return _held(store, started)
    finally:
        leave_run(outside)
        _current.reset(token)


async def dry_run_async(
    store: Store, run_id: str, call: Callable[[RunnerContext], Any], *, key: Any = None, strict: bool = False
) -> DryRunReport:
    """:func:`dry_run` for code inside a running event loop (notebook cells)."""
    from .context import RunnerContext, _current, check_open_run_id

    check_open_run_id(run_id)
    journal = DryJournal(store, run_id, _recorded(store, run_id))
    journal.strict = strict
    ctx = RunnerContext(journal, key=key)
    token, outside = _current.set(ctx), enter_run()
    try:
        started = _dry_start(journal, call, ctx)
        return _held(store, started if isinstance(started, DryRunReport) else await _dry_finish(journal, started))
    finally:
        leave_run(outside)
        _current.reset(token)


def _recorded(store: Store, run_id: str) -> list[CallRecord]:
    """The run's calls, refused as ``open_run`` refuses them when they are not numbered 0, 1, 2...

    Why: ``store.calls`` reads them as they are, and the dry journal paired them by position, so a
    run renumbered by hand (that the real run refuses with this error) was reported as replaying
    some calls and then mismatching, which a recovery would answer by executing them again.
    """
    calls = store.calls(run_id)
    wrong = misnumbered(run_id, calls)
    if wrong is not None:
        raise JournalFormatError(
            f"the journal {store!r} holds rows durable_nb never writes: {wrong}, and a replay pairs calls by "
            f"position: running it is refused with this error too. It was edited by hand or damaged; restore it "
            f"from a backup, or run it under a new run id.")
    return calls


def _dry_start(
    journal: DryJournal, call: Callable[[RunnerContext], Any], ctx: RunnerContext
) -> DryRunReport | Awaitable[Any]:
    """Call the action: the report, or the awaitable an async action returned (its caller awaits it)."""
    try:
        result = call(ctx)
    except Exception as exc:
        return _report(journal, None, exc)
    except BaseException as exc:
        if not _stopped(exc):
            raise
        return _report(journal, None, None)
    return result if inspect.isawaitable(result) else _report(journal, result, None)


async def _dry_finish(journal: DryJournal, awaitable: Awaitable[Any]) -> DryRunReport:
    """Await an async action's coroutine: the report of the whole dry run."""
    try:
        result = await awaitable
    except Exception as exc:
        return _report(journal, None, exc)
    except BaseException as exc:
        if not _stopped(exc):
            raise
        return _report(journal, None, None)
    return _report(journal, result, None)


def _held(store: Store, report: DryRunReport) -> DryRunReport:
    """``report``, saying whether a live context holds its run: the journal alone cannot tell a PENDING call
    that crashed from one running now, and "would reconcile" about a running charge is not what a run does."""
    return dataclasses.replace(report, busy=True) if store.run_is_open(report.run_id) else report


def _stopped(exc: BaseException) -> bool:
    """The dry stop, alone or in the exception group an ``asyncio.TaskGroup`` wraps it in (``found_in``)."""
    return found_in(exc, _DryStop) is not None
