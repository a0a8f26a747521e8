"""``ReconcilePanel``: settle calls left in flight (PENDING) by hand.

A crash between "the function ran" and "its outcome is durable" leaves a call
PENDING. The next recovery settles it by the replay rules (reconcile if the
action passes a reconciler, else execute again). This panel lets a person
settle it *now*, one click per call, with the same vocabulary the replay engine
uses: the outcome is written with ``store.complete_call(..., only_if_pending=True)``,
so a call that something else settled in the meantime is never overwritten, and
the next recovery simply replays it.

Reconcilers are registered by call id. Each is either a callable taking the
:class:`~durable_nb.CallRecord` (which names the run, so one reconciler serves
every run of that call id: ``lambda rec: payments.lookup(rec.run_id)``), or a
zero-argument callable as in ``durable_execute(..., reconciler=...)``. The
panel passes the record when the callable accepts one positional argument.

Stable hooks (for browser tests): buttons "Reconcile", "Re-execute later",
"Resolve" (with a text box whose placeholder is "Python literal, e.g. {'ok': True}");
each row's HTML is ``.dnb-pending-row`` with ``data-call="RUN#INDEX"``; its
``.dnb-state`` text goes from ``PENDING`` to ``SUCCEEDED · RECONCILED``,
``FAILED · RECONCILED``, ``SUCCEEDED · RESOLVED`` or
``will re-execute on next recovery``; ``.dnb-outcome`` holds the escaped
preview. The panel's last message is ``.dnb-message`` (``.dnb-ok`` / ``.dnb-error``). A PENDING row the store
refuses to read (a status or origin typed in by hand) is a ``.dnb-unreadable-row`` naming it, without buttons.

Over 400 lines because each of the three buttons must hold up against a stale view (a call
settled, deleted or replaced meanwhile) and a journal that fails under it, and says which.
"""

from __future__ import annotations

import ast
import inspect
import os
from collections.abc import Callable, Mapping
from typing import Any

import ipywidgets as W

from ..errors import RunBusyError, UnserializableResultError
from ..journal.lease import end_owner, new_owner
from ..journal.records import INPUT_CALL_ID, CallRecord, Origin, Status
from ..journal.replay import settle_pending
from ..journal.store import Store
from ._close import close_children, close_own_store, close_tree, open_own
from ._html import esc, fmt_time, message, page
from ._layout import row as control_row
from ._readable import Unreadable, readable_calls
from ._sync import changed, unwatch, watch
from .input_prompt import InputPrompt

Reconciler = Callable[[CallRecord], Any] | Callable[[], Any]
"""A reconciler for the panel: ``f(record)`` or ``f()``; see the module docstring."""

LEFT_TEXT = "will re-execute on next recovery"
INPUTS_SHOWN = 50
"""At most this many waiting ``durable_input`` questions are listed (oldest first)."""


def checked_reconcilers(reconcilers: Any) -> dict[str, Reconciler]:
    """``reconcilers`` as a dict keyed by call id; TypeError naming the fix for anything else.

    Why: a list of functions failed with dict()'s "cannot convert dictionary update sequence
    element #0", and a key that is not a call id (the function itself, a number) was taken
    and matched no PENDING call, so its row showed "no reconciler registered" with no reason.
    """
    if reconcilers is None:
        return {}
    if not isinstance(reconcilers, Mapping):
        raise TypeError(
            f"reconcilers must be a dict {{call_id: reconciler}}, got {type(reconcilers).__name__}"
            f" {reconcilers!r:.200}; e.g. reconcilers={{'mymodule.charge_card': lambda record: lookup(record)}}."
        )
    for key in reconcilers:
        if not isinstance(key, str):
            from ..journal.callid import call_identity

            named = f" its call id {call_identity(key)[0]!r}" if callable(key) else " a call id string"
            raise TypeError(
                f"reconcilers are keyed by call id (a str, as store.pending() shows it), got {type(key).__name__} "
                f"{key!r:.200}; use{named} as the key."
            )
    return dict(reconcilers)


def takes_record(reconciler: Any, call_id: str) -> bool:
    """Whether ``reconciler`` is called with the CallRecord (else with no arguments); TypeError if neither fits.

    Checked before it runs, so a misconfigured panel journals nothing: its error is
    not the outcome of the call.
    """
    if not callable(reconciler):
        raise TypeError(
            f"the reconciler for {call_id!r} is a {type(reconciler).__name__} ({reconciler!r}), not a function; "
            f"pass reconcilers={{{call_id!r}: lambda record: lookup(record)}}."
        )
    try:
        sig = inspect.signature(reconciler)
    except (TypeError, ValueError):  # builtins without a signature: zero arguments, as in durable_execute
        return False
    for args in ((object(),), ()):
        try:
            sig.bind(*args)
        except TypeError:
            continue
        return bool(args)
    raise TypeError(f"the reconciler for {call_id!r} must take the CallRecord or no arguments, its signature is {sig}")


def unreadable_row(row: Unreadable) -> W.HTML:
    """A PENDING row the store refuses to read, shown with the store's reason (what is wrong, how to correct it)
    and no buttons: its run cannot be opened until it is corrected, and the other rows stay usable."""
    return W.HTML(page(f'<div class="dnb-unreadable-row dnb-error">cannot be read: {esc(row.reason)}</div>'))


def call_reconciler(reconciler: Reconciler, record: CallRecord) -> Any:
    """Call ``reconciler(record)`` if it takes one positional argument, else ``reconciler()``."""
    if takes_record(reconciler, record.call_id):
        return reconciler(record)  # type: ignore[call-arg]
    return reconciler()  # type: ignore[call-arg]


class PendingRow(W.VBox):
    """One PENDING call with its three ways to settle it."""

    def __init__(self, record: CallRecord, has_reconciler: bool) -> None:
        self.record = record
        self.has_reconciler = has_reconciler
        self.state = "PENDING"
        """``PENDING``, ``SUCCEEDED · RECONCILED``, ... or :data:`LEFT_TEXT`; what ``.dnb-state`` shows."""
        self.outcome: str | None = None
        self.info = W.HTML()
        self.reconcile_button = W.Button(
            description="Reconcile", button_style="primary", disabled=not has_reconciler,
            tooltip="run the reconciler registered for this call id and persist its outcome"
            if has_reconciler else "no reconciler registered for this call id",
        )
        self.reexecute_button = W.Button(
            description="Re-execute later", tooltip="leave it PENDING: the next recovery runs it again"
        )
        self.resolve_text = W.Text(placeholder="Python literal, e.g. {'ok': True}", layout=W.Layout(width="260px"))
        self.resolve_button = W.Button(description="Resolve", tooltip="persist this value as the call's result")
        super().__init__([
            self.info,
            control_row([self.reconcile_button, self.reexecute_button, self.resolve_text, self.resolve_button]),
        ])
        self.add_class("dnb-pending-widget")  # scope: .dnb-pending-widget:has([data-call="RUN#0"])
        self.draw()

    def __repr__(self) -> str:
        return f"PendingRow({self.record.run_id!r}, {self.record.index})"

    @property
    def settled(self) -> bool:
        """The row shows an outcome (written from this panel, or found written by something else)."""
        return self.state != "PENDING" and self.state != LEFT_TEXT

    def draw(self) -> None:
        r = self.record
        settled = self.settled
        outcome = (
            f'<span class="dnb-outcome">{esc(self.outcome)}</span>' if self.outcome is not None else ""
        )
        self.info.value = page(
            f'<div class="dnb-pending-row" data-call="{esc(r.run_id)}#{esc(r.index)}">'
            f"<b>{esc(r.run_id)}</b> #{esc(r.index)} <code>{esc(r.call_id)}</code> "
            f'<span class="dnb-note">args {esc(r.args_digest[:12])} · started {esc(fmt_time(r.started_at))} UTC · '
            f'{"reconciler registered" if self.has_reconciler else "no reconciler registered"}</span> → '
            f'<span class="dnb-state dnb-status-{esc(self.state.split(" ")[0])}">{esc(self.state)}</span> '
            f"{outcome}</div>"
        )
        with self.hold_sync():
            for b in (self.reconcile_button, self.reexecute_button, self.resolve_button, self.resolve_text):
                b.disabled = settled or (b is self.reconcile_button and not self.has_reconciler)


class ReconcilePanel(W.VBox):
    """Every PENDING call across runs, with buttons to settle each one.

    Args:
        store: a :class:`~durable_nb.Store`, or anything :func:`~durable_nb.open_store` takes.
        reconcilers: call id -> reconciler (``f(record)`` or ``f()``), used by "Reconcile".
        page_size: rows per page (each row is a handful of widgets).

    "Reconcile" persists the reconciler's value as SUCCEEDED (origin RECONCILED),
    or its exception as FAILED (origin RECONCILED). "Re-execute later" writes
    nothing: the next recovery runs the call again (or its in-action reconciler).
    "Resolve" persists the typed Python literal (``ast.literal_eval``) as
    SUCCEEDED with origin RESOLVED. A call whose run is open in a live context is
    refused: that context's own recovery is deciding it.
    """

    _closed = False  # set by close(): a closed panel reads nothing more

    def __init__(
        self,
        store: Store | str | os.PathLike[str],
        reconcilers: Mapping[str, Reconciler] | None = None,
        *,
        page_size: int = 20,
    ) -> None:
        self.reconcilers: dict[str, Reconciler] = checked_reconcilers(reconcilers)
        for call_id, reconciler in self.reconcilers.items():
            takes_record(reconciler, call_id)  # a misconfigured panel fails here, not at a click
        self.store = open_own(self, store, existing=True)
        self.page_size = page_size
        self.page_index = 0
        self.total = 0
        self.rows: list[PendingRow] = []
        """The rows on the visible page; settled rows stay until the next :meth:`refresh`."""
        self._unreadable: list[W.HTML] = []  # rows of the page the store refuses to read (a status typed in)
        self._unreadable_inputs: list[W.HTML] = []
        self.header = W.HTML()
        self.message = W.HTML()
        self.refresh_button = W.Button(description="Refresh", icon="refresh")
        self.prev_button = W.Button(description="Prev", layout=W.Layout(width="60px"))
        self.next_button = W.Button(description="Next", layout=W.Layout(width="60px"))
        self.rows_box = W.VBox()
        self.inputs: list[InputPrompt] = []
        """One answer control per waiting ``durable_input`` (runs in the WAITING state)."""
        self.inputs_header = W.HTML()
        self.inputs_box = W.VBox()
        super().__init__([
            control_row([self.header, self.refresh_button, self.prev_button, self.next_button]),
            self.message,
            self.rows_box,
            self.inputs_header,
            self.inputs_box,
        ])
        self.add_class("dnb-reconcile-panel")
        self.refresh_button.on_click(lambda _: self.refresh())
        self.prev_button.on_click(lambda _: self._go(self.page_index - 1))
        self.next_button.on_click(lambda _: self._go(self.page_index + 1))
        try:
            self._reload()  # a journal that cannot be read fails the cell that builds the panel
        except BaseException:
            self.close()  # and leaves no widget models, nor the store it opened, behind
            raise
        watch(self)

    def close(self) -> None:
        """Close the panel and every widget it made (rows, answer controls), and the store if it opened it.

        A store passed in is the caller's and stays open; one opened from a path or URL is closed.
        """
        self._closed = True
        unwatch(self)
        close_children(self)
        super().close()
        close_own_store(self)

    def __repr__(self) -> str:
        return f"ReconcilePanel({self.store!r}, reconcilers={sorted(self.reconcilers)!r})"

    def _go(self, index: int) -> None:
        self.page_index = max(0, index)
        self.refresh()

    def refresh(self) -> None:
        """Re-read the PENDING calls (settled rows disappear); a journal that cannot be read is shown, not raised.

        Called by Refresh, Prev and Next, and by other widgets after they write (``_sync``): an error raised
        here would only be logged by the click handler, or fail the other widget's click after its write.
        A closed panel reads nothing: the read would reopen the store its ``close()`` closed, for good.
        """
        if self._closed:
            return
        try:
            self._reload()
        except Exception as exc:
            self._say(f"could not read the journal: {type(exc).__name__}: {exc}", "error")

    def _reload(self) -> None:
        # A waiting durable_input is PENDING too, but a person answers it (below), not a reconciler: it is
        # neither counted nor listed here. The store leaves inputs out (not_call_id), so a page is read at
        # its offset: cutting it from the calls read from the start read every PENDING call before the page
        # (100,001 for the last page of 100,000 with one input waiting; paging through all was quadratic).
        asking = self.store.count_calls(status=Status.PENDING, call_id=INPUT_CALL_ID)
        self.total = self.store.count_calls(status=Status.PENDING, not_call_id=INPUT_CALL_ID)
        pages = max(1, -(-self.total // self.page_size))
        self.page_index = min(self.page_index, pages - 1)
        read = readable_calls(self.store, status=Status.PENDING, not_call_id=INPUT_CALL_ID,
                              offset=self.page_index * self.page_size, limit=self.page_size)
        self._refresh_inputs(asking)
        old = [*self.rows, *self._unreadable]
        self.rows = [PendingRow(r, r.call_id in self.reconcilers) for r in read if isinstance(r, CallRecord)]
        self._unreadable = [unreadable_row(r) for r in read if isinstance(r, Unreadable)]
        for row in self.rows:
            row.reconcile_button.on_click(lambda _, row=row: self.reconcile(row))
            row.reexecute_button.on_click(lambda _, row=row: self.leave(row))
            row.resolve_button.on_click(lambda _, row=row: self.resolve(row, row.resolve_text.value))
        with self.hold_sync():
            self.rows_box.children = [*self.rows, *self._unreadable]
            self.header.value = page(
                f'<span class="dnb-count">{self.total:,} PENDING call{"" if self.total == 1 else "s"}</span>'
                + (f" · page {self.page_index + 1} of {pages}" if pages > 1 else "")
                + ("" if self.total else ' <span class="dnb-note">nothing in flight</span>')
            )
            self.prev_button.disabled = self.page_index == 0
            self.next_button.disabled = self.page_index >= pages - 1
        for row in old:  # dropped rows: free their front-end models
            close_tree(row)

    def _refresh_inputs(self, n: int) -> None:
        """Re-read the oldest waiting inputs (``n`` wait in all): one :class:`InputPrompt` each.

        Only the :data:`INPUTS_SHOWN` listed are read: 5,000 waiting inputs were all read on every refresh to
        list 50, and the count said "50 waiting inputs"."""
        read = readable_calls(self.store, status=Status.PENDING, call_id=INPUT_CALL_ID, limit=INPUTS_SHOWN)
        waiting = [r for r in read if isinstance(r, CallRecord)]
        # An input answered here stays listed (ANSWERED) while its run still waits to be run again.
        kept = [p for p in self.inputs if p.state == "ANSWERED" and self._still_waiting(p.record.run_id)]
        old: list[W.Widget] = [p for p in self.inputs if p not in kept] + self._unreadable_inputs
        self.inputs = kept + [InputPrompt(self.store, r) for r in waiting]
        self._unreadable_inputs = [unreadable_row(r) for r in read if isinstance(r, Unreadable)]
        more = (f"; the oldest {len(waiting):,} are listed, store.waiting() lists every one"
                if n > len(read) else "")
        with self.hold_sync():
            self.inputs_box.children = [*self.inputs, *self._unreadable_inputs]
            self.inputs_header.value = page(
                f'<span class="dnb-waiting-count">{n:,} waiting input{"" if n == 1 else "s"}</span>'
                + (f' <span class="dnb-note">answer one, then run its action or cell again{esc(more)}</span>'
                   if n else "")
            )
        for prompt in old:
            close_tree(prompt)

    def _still_waiting(self, run_id: str) -> bool:
        run = self.store.run(run_id)
        return run is not None and run.status.value == "WAITING"

    def input(self, run_id: str, index: int) -> InputPrompt:
        """The answer control of the waiting input ``index`` of ``run_id`` (KeyError if not listed)."""
        for p in self.inputs:
            if p.record.run_id == run_id and p.record.index == index:
                return p
        raise KeyError(f"call {index} of run {run_id!r} is not a waiting input in this panel")

    def row(self, run_id: str, index: int) -> PendingRow:
        """The visible row of call ``index`` of ``run_id`` (KeyError if it is not on this page)."""
        for r in self.rows:
            if r.record.run_id == run_id and r.record.index == index:
                return r
        raise KeyError(f"call {index} of run {run_id!r} is not a PENDING row on this page")

    # -- the three ways to settle a call ---------------------------------------------

    def reconcile(self, row: PendingRow) -> bool:
        """Run the call's registered reconciler and persist its outcome (origin RECONCILED)."""
        rec = row.record
        if row.settled:  # a double click: the second click arrives after the first one settled the call
            return self._already(row)
        reconciler = self.reconcilers.get(rec.call_id)
        if reconciler is None:
            return self._say(
                f"no reconciler registered for {rec.call_id!r}; pass ReconcilePanel(store, "
                f"reconcilers={{{rec.call_id!r}: lambda record: ...}}), or resolve the call by hand.", "error")
        def settle() -> bool:
            try:
                value = call_reconciler(reconciler, rec)
            except Exception as exc:
                return self._persist(row, Status.FAILED, Origin.RECONCILED, exc)
            return self._persist(row, Status.SUCCEEDED, Origin.RECONCILED, value)

        return self._under_lease(row, settle, skipped="; its reconciler was not run")

    def leave(self, row: PendingRow) -> bool:
        """Write nothing: the call stays PENDING and the next recovery runs it again."""
        if row.settled:
            return self._already(row)
        try:
            there = self._stale(row)
            if there is not None:  # settled elsewhere: "left PENDING" would be untrue
                return self._settled_elsewhere(row, there, "")
        except Exception as exc:
            return self._say(f"could not read {row.record.run_id} #{row.record.index}: {type(exc).__name__}: "
                             f"{exc}", "error")
        row.state = LEFT_TEXT
        row.outcome = None
        row.draw()
        return self._say(
            f"{row.record.run_id} #{row.record.index} left PENDING: the next recovery of the run executes it "
            f"again (or runs the reconciler its action passes).", "ok")

    def resolve(self, row: PendingRow, text: str) -> bool:
        """Persist the Python literal ``text`` as the call's result (origin RESOLVED)."""
        if row.settled:
            return self._already(row)
        try:
            value = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as exc:
            return self._say(
                f"could not read {text!r} as a Python literal ({type(exc).__name__}); type a number, a string "
                f"in quotes, or a list/dict/tuple of those, e.g. {{'charge_id': 'ch_42'}}.", "error")
        return self._under_lease(row, lambda: self._persist(row, Status.SUCCEEDED, Origin.RESOLVED, value))

    # -- helpers ------------------------------------------------------------------------

    def _under_lease(self, row: PendingRow, settle: Callable[[], bool], skipped: str = "") -> bool:
        """Settle ``row``'s call holding its run's lease: a live context that holds the run (even one that has
        written nothing yet) refuses it, and no context can open the run until the outcome is written (only if
        still PENDING, so nothing recorded meanwhile is overwritten).

        The row may be stale (something else settled the call, or a recovery of a changed action put another
        call at its index): checked under the lease, before the reconciler runs, so a stale click performs no
        lookup or charge and never writes one call's outcome onto another call.
        """
        rec = row.record
        owner = new_owner()
        try:
            self.store.open_run(rec.run_id, owner)
        except RunBusyError as exc:
            end_owner(owner)
            return self._say(
                f"run {rec.run_id!r} is open in a live context ({exc.owner}): its recovery is deciding call "
                f"{rec.index} right now. Settle it after that context ends.", "error")
        except Exception as exc:  # shown, not raised: a click handler's exception is only logged
            end_owner(owner)
            return self._say(f"could not open run {rec.run_id!r}: {type(exc).__name__}: {exc}", "error")
        try:
            there = self._stale(row)
            if there is not None:
                return self._settled_elsewhere(row, there, skipped)
            return settle()
        except Exception as exc:  # the journal failed under us (a lost server): shown, the call stays as it is
            return self._say(f"could not settle {rec.run_id} #{rec.index}: {type(exc).__name__}: {exc}", "error")
        finally:
            try:
                self.store.close_run(rec.run_id, owner, None)
            finally:
                end_owner(owner)

    def _stale(self, row: PendingRow) -> str | None:
        """What the journal holds at the row's index instead of its PENDING call (settled, gone, or replaced by
        another call); None while the call is still there, PENDING. One read serves the check and the message."""
        rec = row.record
        now = self.store.call(rec.run_id, rec.index)
        if now is None:
            return "gone"
        if now.status is Status.PENDING:
            if (now.call_id, now.args_digest) == (rec.call_id, rec.args_digest):
                return None
            return f"replaced by another PENDING call, {now.call_id}"
        state = f"{now.status.value} · {now.origin.value}" if now.origin else now.status.value
        return state + (f", now call {now.call_id}" if now.call_id != rec.call_id else "")

    def _settled_elsewhere(self, row: PendingRow, state: str, extra: str) -> bool:
        rec = row.record
        row.state, row.outcome = state, None
        row.draw()
        return self._say(f"{rec.run_id} #{rec.index} was already settled ({state}) by something else; nothing "
                         f"written{extra}. Refresh to see the calls in flight now.", "error")

    def _already(self, row: PendingRow) -> bool:
        """A row this panel settled already (its buttons are disabled; a double click's second click still
        arrives): run no reconciler, write nothing, and do not call the panel's own write "something else"."""
        return self._say(f"{row.record.run_id} #{row.record.index} is already {row.state}: "
                         "nothing written.", "note")

    def _persist(self, row: PendingRow, status: Status, origin: Origin, outcome: Any) -> bool:
        rec = row.record
        try:
            done = settle_pending(self.store, rec, outcome, failed=status is Status.FAILED, origin=origin)
        except UnserializableResultError as exc:
            return self._say(
                f"the value for {rec.run_id} #{rec.index} is a {exc.type_name} that cannot be pickled; "
                f"nothing was written, the call stays PENDING.", "error")
        now = self.store.call(rec.run_id, rec.index)
        if not done:
            state = f"{now.status.value} · {now.origin.value}" if now and now.origin else "gone"
            row.state, row.outcome = state, None
            row.draw()
            return self._say(
                f"{rec.run_id} #{rec.index} was already settled ({state}) by something else; nothing written.",
                "error")
        assert now is not None
        row.state = f"{status.value} · {origin.value}"
        row.outcome = now.result_preview if now.result_preview is not None else now.error_preview
        row.draw()
        self._say(f"{rec.run_id} #{rec.index} {row.state}: {row.outcome}",
                  "ok" if status is Status.SUCCEEDED else "error")
        changed(self.store, source=self)
        return True

    def _say(self, text: str, kind: str) -> bool:
        self.message.value = message(text, kind)
        return kind == "ok"
