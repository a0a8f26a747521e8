"""``ReplayStepper``: walk through the recovery of a run one durable call at a time.

A step is real. Stepping to position ``k`` opens the run with ``open_run``, sets
``ctx.journal.stop_before = k`` and runs the action: calls before ``k`` are
performed by the replay rules in :mod:`durable_nb.journal.replay` (replayed,
reconciled, re-executed or executed, for real), and the action is stopped with
:class:`~durable_nb.journal.replay.StopRecovery` when it reaches call ``k``, which
writes nothing. Every step runs the action again from the start (what it performed replays).

Nothing here re-implements a rule. The plan shown before stepping is
:func:`~durable_nb.journal.replay.decide` applied to the recorded entries (a PENDING
entry is "reconcile" or "re-execute" depending on whether the action passes a
reconciler, which only the action knows). While stepping, the stepper asks the
journal itself: it sets the open journal's ``observer``, which
:meth:`~durable_nb.journal.replay.Journal.begin` tells each decision before
carrying it out, so the decisions shown are the ones the engine made, including a
mismatch, and the decision for the next call is known before it is performed.

Back only moves the view: side effects performed are not undone, and Step after Back walks
forward through the steps already performed. The UI says so: a person must never think
Back reverted a payment.

**Dry run** (:meth:`ReplayStepper.dry_run`) asks the same question without
performing anything: :func:`durable_nb.journal.timetravel.dry_run` replays the
recorded calls and stops at the first one that would not replay; the report is
drawn under the plan (:mod:`durable_nb.widgets.render_dry`).

Stable hooks (for browser tests): buttons "Step", "Back", "Run to end", "Dry run"; the
position text is ``.dnb-position`` ("position 1 of 3 recorded · next: call 1 ...");
plan rows are ``tr.dnb-plan-row`` with ``data-index`` (``dnb-unreadable`` for a row the store refuses to
read, e.g. a status typed in by hand); the row at the view
position has class ``dnb-current``; ``.dnb-performed`` cells hold the decision
performed in this session ("reconcile", "replay", ...); ``.dnb-message`` holds the
last outcome; ``.dnb-back-note`` the warning about Back. A long run's plan draws :data:`PLAN_ROWS` rows around
the view position, and ``.dnb-plan-left-out`` names the calls not drawn; the session log draws its last
:data:`LOG_ROWS` decisions (``.dnb-log-left-out``).

Over 400 lines because a step must tell apart what stops the run (the action raised: FAILED)
from what only stops the step (a journal lost under it), and say which in the widget.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Any

import ipywidgets as W

from ..errors import AwaitingInput, NonDeterminismError, RunBusyError, SimulatedCrash, check_run_id
from ..journal import codec
from ..journal.context import RunnerContext, open_run
from ..journal.records import CallRecord, Status, misnumbered
from ..journal.replay import Decision, Planned, StopRecovery, decide
from ..journal.store import Store
from ..journal.timetravel import DryRunReport
from ..journal.timetravel import dry_run as _dry_run
from ..runners.isolation import isolated
from ..runners.local import Action, call_action, check_action, check_strict, in_fresh_thread
from ._clicks import ClickGuard
from ._close import close_children, close_own_store, open_own
from ._html import esc, message, page, status_cell, table, td
from ._layout import row
from ._readable import Unreadable, readable_calls
from ._sync import changed
from .journal_view import JournalView
from .render_dry import dry_report_html, dry_summary

PLAN_ROWS = 200
"""Plan rows drawn at most, around the view position. Why: every recorded call was a row, and the plan of a
100,000-call run was a 16 MB table for the widget to send (and redraw on every Step and Back); the journal view
pages and the dry-run table is capped (``render_dry.DRY_ROWS``) for the same reason."""
LOG_ROWS = 200
"""Decisions of the session log drawn at most (the latest): a Run to end over a long run logged every call."""

BACK_NOTE = (
    "Back only moves the view: side effects already performed (calls executed or reconciled) are not "
    "undone, and the journal keeps them."
)


@dataclass(frozen=True)
class Performed:
    """One decision the replay engine made during a step, as shown in the log."""

    index: int
    call_id: str
    decision: Decision
    outcome: str
    """Status (and origin, preview) persisted for the call after the step."""


@dataclass(frozen=True)
class _Snapshot:
    """The run's journal at one view position: ``newer``'s calls before ``at``, ``older``'s from ``at`` on (all
    of ``newer`` without ``older``).

    The positions a Run to end passes share its two journals: a list of records per
    position held n²/2 records (10,000 calls: half a GB).
    """

    newer: list[CallRecord]
    older: list[CallRecord] | None = None
    at: int = 0

    def records(self) -> list[CallRecord]:
        if self.older is None:
            return self.newer
        return [r for r in self.newer if r.index < self.at] + [r for r in self.older if r.index >= self.at]


def planned_decision(rec: CallRecord) -> str:
    """The replay rules applied to a recorded entry, before knowing what the action calls.

    A PENDING entry's fate depends on whether the action passes a reconciler, so both
    outcomes of :func:`decide` are named when they differ.
    """
    if rec.is_input and rec.status is Status.PENDING:
        # Why: an input takes no reconciler, and "reconcile (if ...) / re-execute" told a person the stepper
        # might run something there; a recovery asks again and stops WAITING (the dry run says so too).
        return f"{Decision.REEXECUTE.value}: asks again, the run stops WAITING for an answer"
    with_r = decide(rec, rec.call_id, rec.args_digest, True)
    without_r = decide(rec, rec.call_id, rec.args_digest, False)
    if with_r is without_r:
        return with_r.value
    return f"{with_r.value} (if the action passes a reconciler) / {without_r.value}"


def _describe(rec: CallRecord | None) -> str:
    if rec is None:
        return "not on record"
    text = rec.status.value + (f" · {rec.origin.value}" if rec.origin else "")
    preview = rec.result_preview if rec.result_preview is not None else rec.error_preview
    return f"{text}: {preview}" if preview is not None else text


class ReplayStepper(W.VBox):
    """Step through the recovery of one run of ``action``, one durable call per click.

    Args:
        store: a :class:`~durable_nb.Store`, or anything :func:`~durable_nb.open_store` takes; a path
            must name an existing journal (``FileNotFoundError``), as Step on a new one executes again.
        run_id: the run to recover (usually one a crash left RUNNING with a PENDING call).
        action: the run's action, ``action(value, ctx)``, exactly as given to ``LocalRunner.run``.
        value: the action's input (the same record the run was started with).
        journal_view: show a :class:`JournalView` of the run under the stepper, refreshed
            after every step.
        strict: step as a strict runner recovers (``LocalRunner(store, strict=True)``): a call that
            differs from the journal is refused with NonDeterminismError, nothing discarded or executed.

    Buttons: **Step** performs the next call of the recovery, **Back** moves the view
    one call back (nothing is undone), **Run to end** runs the rest of the action to
    completion, as ``LocalRunner.run`` would.
    """

    def __init__(
        self,
        store: Store | str | os.PathLike[str],
        run_id: str,
        action: Action,
        value: Any = None,
        *,
        journal_view: bool = True,
        strict: bool = False,
    ) -> None:
        check_action(action, sync=False)  # steps and dry runs run in a worker thread: async is fine in a loop
        self.strict = check_strict(strict)
        check_run_id(run_id)
        self.store = open_own(self, store, existing=True)  # a mistyped path: no new journal, no re-charge
        self.run_id = run_id
        self.action = action
        self.value = value
        self.position = 0
        """View position: calls ``0..position-1`` are shown as performed."""
        self.performed = 0
        """How far the recovery really got in this session (the store reflects this)."""
        self.done = False
        """The action ran to its end (run COMPLETED or FAILED)."""
        self.next_call: Planned | None = None
        """What the engine will do with the next call, learned when the action stopped before it."""
        self.next_call_id: str | None = None
        self.history: list[Performed] = []
        initial = self._read_plan()
        self.snapshots: list[_Snapshot] = [_Snapshot(initial)]
        """Journal of the run (no payloads) as it stood at each position."""

        self.step_button = W.Button(description="Step", button_style="primary", tooltip="perform the next call")
        self.back_button = W.Button(description="Back", tooltip="move the view one call back (nothing is undone)")
        self.run_button = W.Button(description="Run to end", tooltip="perform the rest of the recovery")
        self.dry_button = W.Button(description="Dry run", tooltip="what a recovery would do, with nothing "
                                   "executed and nothing written (runner.dry_run)")
        self.dry_html = W.HTML()
        """The last **Dry run** report (:func:`~durable_nb.widgets.render_dry.dry_report_html`)."""
        self.position_label = W.HTML()
        self.plan_table = W.HTML()
        self.log_html = W.HTML()
        self.message = W.HTML()
        self.note = W.HTML(page(f'<div class="dnb-note dnb-back-note">{esc(BACK_NOTE)}</div>'))
        self.journal_view = JournalView(self.store, run_id=run_id) if journal_view else None
        children: list[W.Widget] = [
            row([self.step_button, self.back_button, self.run_button, self.dry_button, self.position_label]),
            self.note, self.message, self.plan_table, self.log_html, self.dry_html,
        ]
        if self.journal_view is not None:
            children.append(self.journal_view)
        super().__init__(children)
        self.add_class("dnb-replay-stepper")
        self.step_button.on_click(self._guarded(self.step, "Step"))
        self.back_button.on_click(lambda _: self.back())
        self.run_button.on_click(self._guarded(self.run_to_end, "Run to end"))
        self.dry_button.on_click(lambda _: self.dry_run())
        self._say_first(initial)
        self._draw()

    def _say_first(self, initial: list[CallRecord]) -> None:
        """What the stepper will do; for a run renumbered by hand, that every step is refused, before the click."""
        wrong = misnumbered(self.run_id, initial)
        if self.unreadable:
            self._say(f"{self.unreadable[0].reason} A recovery of this run is refused until then, so a step is "
                      "too; the plan marks the row.", "error")
        elif wrong is not None:
            self._say(f"{wrong}: a recovery refuses this run (a replay pairs calls by position); "
                      "restore the journal from a backup or run the action under a new run id.", "error")
        else:
            self._say("before stepping: the plan below is the replay rules applied to the recorded calls; "
                      "Step performs them one by one.", "note")

    def _read_plan(self) -> list[CallRecord]:
        """Set :attr:`plan` and :attr:`unreadable` from the journal; the readable recorded calls."""
        read = self._recorded()
        self.unreadable = [r for r in read if isinstance(r, Unreadable)]
        """Rows of the run the store refuses to read (a status typed in by hand): shown; a step is refused."""
        self.plan: list[tuple[CallRecord | None, str]] = [
            (r, planned_decision(r)) if isinstance(r, CallRecord) else (None, f"cannot be read: {r.reason}")
            for r in read]
        return [r for r in read if isinstance(r, CallRecord)]

    def _recorded(self) -> list[CallRecord | Unreadable]:
        """The run's recorded calls, a row no durable_nb writes in its place (shown in the plan, not raised); a
        journal that cannot be read at all fails the cell, and closes the store opened here."""
        try:
            return readable_calls(self.store, run_id=self.run_id)
        except BaseException:
            self.close()
            raise

    def __repr__(self) -> str:
        return f"ReplayStepper({self.store!r}, {self.run_id!r}, {getattr(self.action, '__qualname__', self.action)})"

    def close(self) -> None:
        """Close the stepper, its journal view (stopping its live mode), every widget they made, and the store
        if the stepper opened it (a store passed in is the caller's and stays open)."""
        # Also called by ipywidgets' __del__, possibly on an instance whose __init__ failed.
        close_children(self)
        super().close()
        close_own_store(self)

    # -- buttons ---------------------------------------------------------------------

    def _guarded(self, then: Any, name: str) -> Any:
        """A click handler for a button that performs calls: the second click of a double click does nothing.

        Why: its two clicks reach the kernel one after the other, and the second one performed the next call
        too, a side effect the person never saw planned (``_clicks``).
        """
        guard = ClickGuard()

        def handler(button: Any) -> None:
            if guard.second_of_double(button):
                note = esc(f" (The second click of a double click on {name} was ignored: nothing more was "
                           f"performed; click {name} again to go on.)")
                shown = self.message.value  # the first click's outcome stays in view, the note inside its message
                if note not in shown and shown.endswith("</div></div>"):
                    self.message.value = shown[:-len("</div></div>")] + note + "</div></div>"
                return
            then()
        return handler

    def step(self) -> None:
        """Perform the next call of the recovery (or walk forward through calls already performed)."""
        if self.position < self.performed:
            self.position += 1
            self._say(f"moved the view to position {self.position}; these calls were already performed, "
                      f"nothing ran.", "note")
        elif self.done:
            self._say("the action has finished; there is nothing left to step. Back looks at earlier positions.",
                      "note")
        else:
            self._perform(self.performed + 1)
        self._draw()

    def back(self) -> None:
        """Move the view one call back; the journal and the world keep what was performed."""
        if self.position == 0:
            self._say("already at the start.", "note")
        else:
            self.position -= 1
            self._say(f"view moved back to position {self.position}. {BACK_NOTE}", "note")
        self._draw()

    def run_to_end(self) -> None:
        """Run the rest of the action to completion (replaying what is already performed)."""
        if self.done:
            self.position = self.performed
            self._say("the action has already finished; moved the view to the end.", "note")
        else:
            self._perform(None)
        self._draw()

    def dry_run(self) -> DryRunReport | None:
        """Dry-replay the action against the run as it is now: report the first call that would not replay.

        Nothing is executed (no function, no reconciler) and nothing is written;
        the report is drawn under the stepper. None (and the error shown) if the
        dry run itself could not start. It runs in a worker thread, as a step does, so an
        async action is dry-run from a click handler on the kernel's event loop too.
        """
        try:
            report = in_fresh_thread(f"durable_nb-dry-run-{self.run_id}", lambda: _dry_run(
                self.store, self.run_id, lambda ctx: call_action(self.action, isolated(self.value), ctx),
                strict=self.strict))
        except Exception as exc:  # shown, not raised: a click handler's exception is only logged
            self._say(f"dry run failed: {codec.error_preview(exc)}", "error")
            return None
        self.dry_html.value = dry_report_html(report)
        self._say(f"dry run: {dry_summary(report)} (nothing was executed or written).", "note")
        return report

    # -- performing ----------------------------------------------------------------------

    def _perform(self, stop_before: int | None) -> None:
        start = self.performed
        seen: list[tuple[Planned, str]] = []
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            attempt = self._attempt(stop_before, seen)
        if attempt is None:
            return
        reached, outcome, kind = attempt
        try:
            journal = self.store.query_calls(run_id=self.run_id)
        except Exception as exc:  # shown, not raised: a click handler's exception is only logged
            self._say(f"{outcome} The journal cannot be read now ({codec.error_preview(exc)}); the view keeps "
                      "its last state. Step again once it can be read: what was performed replays.", "error")
            return
        if reached < 0:
            reached = len(journal)
        self.next_call = None
        self.next_call_id = None
        done_now: list[str] = []
        for planned, call_id in seen:
            if planned.index >= reached:  # the call the action was stopped before
                self.next_call, self.next_call_id = planned, call_id
            elif planned.index >= start:
                after = _describe(journal[planned.index] if planned.index < len(journal) else None)
                self.history.append(Performed(planned.index, call_id, planned.decision, after))
                done_now.append(f"call {planned.index} {call_id}: {planned.decision.value} → {after}.")
        if self.next_call is not None:
            outcome += f" Next: call {self.next_call.index} {self.next_call_id} → {self._next_decision()}."
        previous = self.snapshots[self.performed].records()
        del self.snapshots[self.performed + 1:]
        for p in range(self.performed + 1, reached + 1):  # in-between positions of a Run to end
            self.snapshots.append(_Snapshot(journal, previous, p))
        self.snapshots[reached] = _Snapshot(journal)
        self.performed = self.position = reached
        notes = [str(w.message) for w in caught]
        self._say(" ".join([*done_now, outcome, *notes]), "error" if notes else kind)
        if self.journal_view is not None:
            self.journal_view.refresh()
        changed(self.store, source=self.journal_view)

    def _attempt(self, stop_before: int | None, seen: list[tuple[Planned, str]]) -> tuple[int, str, str] | None:
        """Run one step: (position reached, -1 for the end; what happened; message kind), or None (shown).

        An exception makes the stepper *done* only when the run is FAILED in the journal: a journal that
        failed under the step (a lost server, a payload that cannot be loaded, a lease taken over) stops the
        step, not the run, and a later Step must still go on once the cause is gone.
        """
        try:
            result = self._run_in_thread(stop_before, seen)
        except StopRecovery as stop:
            return stop.index, f"Stopped before call {stop.index}.", "ok"
        except RunBusyError as exc:
            self._say(str(exc), "error")
            return None
        except NonDeterminismError as exc:  # strict: refused, nothing discarded; the call stays the next one
            return exc.index, f"Refused (strict mode): {codec.error_preview(exc)}", "error"
        except AwaitingInput as exc:  # WAITING, not FAILED: once answered, the next step goes on
            return (exc.index, f"The run is WAITING at call {exc.index} for an answer to {exc.prompt!r}; answer, "
                    "then Step.", "note")
        except (Exception, SimulatedCrash) as exc:
            try:
                run = self.store.run(self.run_id)
            except Exception as read_exc:
                self._say(f"The step stopped with {codec.error_preview(exc)}, and the journal cannot be read "
                          f"({codec.error_preview(read_exc)}). Step again once it can be read.", "error")
                return None
            self.done = isinstance(exc, Exception) and run is not None and run.status.value == "FAILED"
            if self.done:
                return -1, f"The action raised {codec.error_preview(exc)}; the run is FAILED.", "error"
            if isinstance(exc, Exception):  # the view stays at the last call the engine got to
                reached = max([self.performed] + [planned.index + 1 for planned, _ in seen])
                return reached, (f"The step stopped with {codec.error_preview(exc)}; the run is not FAILED: Step again "
                            "once the cause is fixed, what was performed replays."), "error"
            return -1, f"The action raised {codec.error_preview(exc)}; the run stopped as after a crash.", "error"
        self.done = True
        return -1, f"The action finished; the run is COMPLETED with result {codec.preview(result)}.", "ok"

    def _run_in_thread(self, stop_before: int | None, seen: list[tuple[Planned, str]]) -> Any:
        """Run the action to ``stop_before`` in a worker thread and return or re-raise its outcome.

        A click handler runs on the kernel's event loop, where ``call_action`` refuses
        async actions; a thread has no running loop, so sync and async actions both work.
        """
        def work() -> Any:
            with open_run(self.store, self.run_id, strict=self.strict) as ctx:
                self._watch(ctx, stop_before, seen)
                return call_action(self.action, isolated(self.value), ctx)

        return in_fresh_thread(f"durable_nb-stepper-{self.run_id}", work)

    def _watch(self, ctx: RunnerContext, stop_before: int | None, seen: list[tuple[Planned, str]]) -> None:
        """Stop the recovery before ``stop_before`` and record each decision the engine makes."""
        ctx.journal.stop_before = stop_before
        ctx.journal.observer = lambda planned, call_id: seen.append((planned, call_id))

    # -- drawing --------------------------------------------------------------------------

    def _say(self, text: str, kind: str) -> None:
        self.message.value = message(text, kind)

    def _draw(self) -> None:
        snapshot = self._snapshot_at(self.position)
        n = max(len(self.plan), len(snapshot), 0 if self._at_end() else self.position + 1)
        lo, hi = plan_window(n, self.position)
        now = {r.index: r for r in snapshot if isinstance(r.index, int) and lo <= r.index < hi}  # text: hand edit
        performed = {e.index: e.decision for e in self.history if lo <= e.index < hi}
        rows = [self._plan_row(i, now.get(i), performed.get(i)) for i in range(lo, hi)]
        self.plan_table.value = page(
            _left_out(lo, hi, n, "plan-left-out", "stepper.plan lists every recorded call and its plan; "
                      "store.to_pandas(run_id=...) the journal now")
            + table(["#", "call id", "recorded before", "plan", "performed", "now", "result / error"], rows)
            + '<div class="dnb-note">then: execute any further calls the action makes; a call that differs '
            "from the recorded one at its position is a mismatch "
            + ("(strict mode: refused with NonDeterminismError, nothing discarded).</div>" if self.strict
               else "(the rest of the run is discarded).</div>")
        )
        self.position_label.value = page(f'<span class="dnb-position">{esc(self._position_text())}</span>')
        shown = self.history[-LOG_ROWS:]
        log_rows = [
            f'<tr class="dnb-log-row" data-index="{esc(e.index)}">' + td(e.index) + td(e.call_id)
            + td(e.decision.value, "dnb-decision") + td(e.outcome, "dnb-preview") + "</tr>"
            for e in shown
        ]
        earlier = len(self.history) - len(shown)
        self.log_html.value = page(
            "<b>performed in this session</b>"
            + (f'<div class="dnb-note dnb-log-left-out">the {earlier:,} earlier decisions are not drawn; '
               "stepper.history lists every one</div>" if earlier else "")
            + table(["#", "call id", "decision", "now on record"], log_rows, empty="nothing performed yet")
        )
        self.back_button.disabled = self.position == 0
        self.step_button.disabled = self.run_button.disabled = self._at_end()  # click() still works in tests

    def _snapshot_at(self, position: int) -> list[CallRecord]:
        return self.snapshots[min(position, len(self.snapshots) - 1)].records()

    def _plan_row(self, i: int, current: CallRecord | None, decision: Decision | None) -> str:
        """Row ``i`` of the plan table: recorded entry and plan, the decision performed, the call as it is now."""
        rec, plan = self.plan[i] if i < len(self.plan) else (None, "execute (not on record yet)")
        cls = "dnb-plan-row" + (" dnb-current" if i == self.position and not self._at_end() else "")
        cls += " dnb-done" if i < self.position else ""
        cls += " dnb-unreadable dnb-error" if rec is None and i < len(self.plan) else ""
        if i >= self.position:
            decision = None
        if i == self.position and self.next_call is not None and self.position == self.performed:
            next_text = f"next → {self._next_decision()}"
        else:
            next_text = ""
        return (
            f'<tr class="{cls}" data-index="{esc(i)}">' + td(i)
            + td(rec.call_id if rec else (current.call_id if current else ""))
            + (status_cell(rec.status.value, rec.origin.value if rec.origin else None) if rec
               else td("unreadable" if i < len(self.plan) else "—"))
            + td(plan, "dnb-planned")
            + td(decision.value if decision else next_text, "dnb-performed")
            + (status_cell(current.status.value, current.origin.value if current.origin else None)
               if current else td("—")) + td(_preview(current), "dnb-preview") + "</tr>"
        )

    def _next_decision(self) -> str:
        """The engine's decision for the next call; a strict stepper's mismatch is a refusal, not a discard."""
        assert self.next_call is not None
        decision = self.next_call.decision
        if self.strict and decision is Decision.MISMATCH:
            return f"{decision.value}: refused (strict mode, NonDeterminismError)"
        return decision.value

    def _at_end(self) -> bool:
        return self.done and self.position == self.performed

    def _position_text(self) -> str:
        total = max(len(self.plan), len(self._snapshot_at(self.performed)))
        text = f"position {self.position} of {total} calls"
        if self._at_end():
            return text + " · the action has finished"
        if self.position < self.performed:
            return text + f" · viewing the past (performed up to {self.performed})"
        if self.next_call is not None:
            return text + f" · next: call {self.next_call.index} {self.next_call_id} → {self._next_decision()}"
        return text + f" · next: call {self.position}"


def plan_window(n: int, position: int) -> tuple[int, int]:
    """The rows ``lo..hi-1`` of an ``n``-row plan the table draws: at most :data:`PLAN_ROWS`, the view position
    among them (a quarter of the window before it, so the calls about to be performed show)."""
    lo = max(0, min(position - PLAN_ROWS // 4, n - PLAN_ROWS))
    return lo, min(n, lo + PLAN_ROWS)


def _left_out(lo: int, hi: int, n: int, hook: str, where: str) -> str:
    """The note naming the rows of an ``n``-row table a window ``lo..hi-1`` leaves out, and where to see them."""
    parts = ([f"calls 0–{lo - 1}"] if lo else []) + ([f"calls {hi}–{n - 1}"] if hi < n else [])
    if not parts:
        return ""
    return (f'<div class="dnb-note dnb-{hook}">{esc(" and ".join(parts))} are not drawn ({n - (hi - lo):,} rows; '
            f"Step and Back move the window); {esc(where)}</div>")


def _preview(rec: CallRecord | None) -> str:
    if rec is None:
        return ""
    if rec.status is Status.PENDING:
        return "no outcome on record"
    return (rec.result_preview if rec.result_preview is not None else rec.error_preview) or ""

