"""**Fork from here**: the part of ``JournalView``'s call detail that forks a run at the selected call.

Forking run ``R`` at call ``k`` (``store.fork(R, at=k)``) makes a new run whose
calls ``0..k-1`` are copies of ``R``'s recorded outcomes and whose lineage says
where it came from; running the action on the new run replays those ``k`` calls
and executes from ``k`` on. ``R`` itself is untouched. This is "re-run from
here" for a journal: pick the first call you want done again, fork, and run the
fork (``runner.run(action, value, run_id=new_id)``).

The control only writes through ``store.fork``; the store refuses what would be
unsafe (a PENDING call before ``k`` would let two runs recover the same side
effect) and the refusal is shown in the widget, never raised into a click.

Stable hooks (for browser tests): the root has class ``dnb-fork``; the button is
labelled "Fork from here"; ``.dnb-lineage`` says "forked from RUN at call K"
for a fork (empty otherwise); ``.dnb-message`` (``.dnb-ok`` / ``.dnb-error``)
holds the outcome of the last click, with the new run id in ``.dnb-new-run``.
"""

from __future__ import annotations

from collections.abc import Callable

import ipywidgets as W

from ..journal.records import CallRecord, RunRecord
from ..journal.store import Store
from ._html import esc, message, page
from .render_journal import lineage

FORK_TEXT = "Fork from here"


def lineage_html(run: RunRecord | None, record: CallRecord | None = None, store: Store | None = None) -> str:
    """The lineage line; with ``store``, a parent no longer in the journal is said to be gone (``lineage``)."""
    runs = None
    parent = getattr(run, "parent_run_id", None)
    if store is not None and parent is not None:
        try:
            runs = {parent: store.run(parent)}
        except Exception:  # the line is drawn in a click handler: a journal that cannot be read leaves it plain
            runs = None
    text = lineage(run, record, runs)
    return page(f'<div class="dnb-lineage dnb-note">{esc(text)}</div>') if text else ""


class ForkControl(W.VBox):
    """Lineage line, a **Fork from here** button and its message, for the call ``show`` was given.

    Args:
        store: the journal.
        on_forked: told the new run id after a successful fork (``JournalView`` switches to it).
    """

    def __init__(self, store: Store, on_forked: Callable[[str], None] | None = None) -> None:
        self.store = store
        self.on_forked = on_forked
        self.record: CallRecord | None = None
        self.run: RunRecord | None = None
        self.last_fork: str | None = None
        """The run id the last successful click created."""
        self._unpicked = False
        """A fork was just made and nobody has picked a call since: the call shown is the one the view chose
        in the new run. A click now is the second click of a double click (it arrives after the first one
        forked and the view switched), and must not fork the fork."""
        self.lineage = W.HTML()
        self.button = W.Button(
            description=FORK_TEXT, icon="code-fork", disabled=True, layout=W.Layout(width="auto", min_width="150px"),
            tooltip="new run: calls before this one are copied and replay; this call and the ones after it "
            "execute when you run the fork",
        )
        self.message = W.HTML()
        self.button.on_click(lambda _: self.fork())
        super().__init__([self.lineage, W.HBox([self.button, self.message])])
        self.add_class("dnb-fork")

    def __repr__(self) -> str:
        return f"ForkControl({self.store!r})"

    def show(self, record: CallRecord | None, run: RunRecord | None, *, picked: bool = True) -> None:
        """Point the control at ``record`` (the selected call) of ``run``; None disables it.

        ``picked=False``: a redraw moved the selection, not a person (``JournalView`` after a refresh or
        a fork); the control keeps refusing a click that follows a fork until someone picks a call.
        """
        self.record, self.run = record, run
        if picked:
            self.picked()
        html = lineage_html(run, record, self.store)
        if self.lineage.value != html:
            self.lineage.value = html
        self.button.disabled = record is None

    def picked(self) -> None:
        """A person chose a call (or a run) since the last fork: **Fork from here** forks it again."""
        self._unpicked = False

    def fork(self) -> str | None:
        """``store.fork(run, at=selected index)``; the new run id, or None (the reason is shown)."""
        rec = self.record
        if self._unpicked:
            # One click swallowed, not every click until a pick: the call shown may be the one a person wants
            # (a dropdown sends no change for the entry already chosen), and a refresh or a page moves it.
            self._unpicked = False
            self._say(f"forked {self.last_fork} just now (a second click is ignored); click {FORK_TEXT} again "
                      f"to fork the call shown, or pick another call first.", "note")
            return None
        if rec is None:
            self._say("select a call first: the fork keeps the calls before it.", "error")
            return None
        try:
            busy = self._cell_run(rec) or self._in_flight(rec)
            if busy is not None:
                self._say(busy, "error")
                return None
            new_id: str = self.store.fork(rec.run_id, at=rec.index)
        except Exception as exc:  # shown, not raised: a click handler's exception is only logged
            self._say(f"cannot fork {rec.run_id} at call {rec.index}: {type(exc).__name__}: {exc}", "error")
            return None
        self.last_fork = new_id
        copied = "no calls" if rec.index == 0 else f"calls 0–{rec.index - 1}"
        self.message.value = page(
            f'<div class="dnb-message dnb-ok">forked <span class="dnb-new-run">{esc(new_id)}</span> '
            f"from {esc(rec.run_id)} at call {esc(rec.index)} ({esc(copied)} copied); run it with "
            f"runner.run(action, value, run_id={esc(repr(new_id))}): the copied calls replay, call "
            f"{esc(rec.index)} and later execute</div>"
        )
        if self.on_forked is not None:
            self.on_forked(new_id)
        self._unpicked = True  # after on_forked: the view moving to the fork is not a person's pick
        return new_id

    def _cell_run(self, rec: CallRecord) -> str | None:
        """What to do instead when ``rec`` is in the run of a ``%%durable`` cell (call 0 is the cell), or None.

        Why: ``store.fork`` copies call 0, the cell's finished record, into a run the cell never reopens (its
        runs are named by its code and inputs): the next run of the cell replayed it as a whole, and the fork
        the widget said would "execute call K and later" stayed RUNNING, run by nothing. ``%durable_fork``
        keeps call 0 open under the id the cell reopens; the widget sits below the magics, so it names it.
        """
        if not rec.run_id.startswith("cell:"):
            return None
        head = rec if rec.index == 0 else self.store.call(rec.run_id, 0)
        if head is None or not head.call_id.startswith("cell:") or not rec.run_id.startswith(head.call_id + ":"):
            return None
        name = head.call_id[len("cell:"):]
        if rec.index == 0:
            return (f"{rec.run_id} is the run of %%durable cell {name}: call 0 is the cell itself; to run all of "
                    f"it again, run the cell with --rerun (a fork here would be a run the cell never reopens).")
        return (f"{rec.run_id} is the run of %%durable cell {name}: fork it with %durable_fork {name} --at "
                f"{rec.index} --run {rec.run_id} in the notebook; the next run of the cell then replays calls "
                f"1..{rec.index - 1} and executes from call {rec.index} on (a fork here would copy the cell's "
                f"finished record into a run the cell never reopens).")

    def _in_flight(self, rec: CallRecord) -> str | None:
        """Why forking ``rec``'s run at ``rec.index`` now would run a call twice, or None.

        Why: a PENDING call of a run a live context holds (another kernel or process running it) is
        not a crash's, it may be executing right now; the store allows a fork at it ("the fork runs
        that call again"), so the fork, run, did the side effect a second time while the original was
        still doing it. ``%durable_fork`` refuses a live run for the same reason.
        """
        if not self.store.run_is_open(rec.run_id):
            return None
        pending = self.store.query_calls(run_id=rec.run_id, status="PENDING")
        running = [c.index for c in pending if c.index >= rec.index]
        if not running:
            return None
        return (f"cannot fork {rec.run_id} at call {rec.index} now: the run is open in a live context (another "
                f"kernel or process is running it) and call {running[0]} is PENDING there, so it may be executing "
                f"right now and the fork would run it again. Let that run finish or stop, then fork.")

    def _say(self, text: str, kind: str) -> None:
        self.message.value = message(text, kind)
