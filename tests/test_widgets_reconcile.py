"""ReconcilePanel on real stores: each button's effect on the widget and on the journal."""

from __future__ import annotations

import collections
import html
import re
from pathlib import Path
from typing import Any

import pytest
from descriptors import descriptors_on, needs_proc

import durable_nb as dnb
from durable_nb.widgets.reconcile_panel import LEFT_TEXT, call_reconciler

calls: dict[str, int] = {}


def text(value: str) -> str:
    value = re.sub(r"<style>.*?</style>", "", value, flags=re.S)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", value)).split())


@dnb.durable(name="charge_card")
def charge_card(order: int) -> str:
    calls["charge_card"] = calls.get("charge_card", 0) + 1
    return f"ch_{order}"


def place_order(order: int, ctx: dnb.RunnerContext) -> str:
    return ctx.durable_execute(charge_card, order)


@pytest.fixture(autouse=True)
def _reset_counters() -> None:
    calls.clear()


def crash(store: dnb.Store, *orders: int) -> dnb.LocalRunner:
    runner = dnb.LocalRunner(store)
    for order in orders:
        with pytest.raises(dnb.SimulatedCrash), dnb.inject_crash(call="charge_card", point="after_call"):
            runner.run(place_order, order, run_id=f"order-{order}")
    calls.clear()
    return runner


def test_lists_every_pending_call_across_runs(store: dnb.Store) -> None:
    crash(store, 1, 2)
    panel = dnb.ReconcilePanel(store)
    assert [(r.record.run_id, r.record.index) for r in panel.rows] == [("order-1", 0), ("order-2", 0)]
    assert "2 PENDING calls" in text(panel.header.value)
    assert [text(r.info.value).count("PENDING") for r in panel.rows] == [1, 1]
    assert 'data-call="order-1#0"' in panel.rows[0].info.value
    assert all(r.reconcile_button.disabled for r in panel.rows)  # no reconciler registered


def test_waiting_inputs_neither_count_as_nor_crowd_out_pending_calls(store: dnb.Store) -> None:
    """Inputs are PENDING calls a person answers below the rows: with more of them than a page holds
    before the one call in flight, that call is still on page 1 and counted, also once some are answered."""
    def ask(n: int, ctx: dnb.RunnerContext) -> str:
        return ctx.durable_input(f"approve {n}?", choices=["yes", "no"])

    runner = dnb.LocalRunner(store)
    for n in range(25):
        with pytest.raises(dnb.AwaitingInput):
            runner.run(ask, n, run_id=f"ask-{n:02d}")
    crash(store, 7)
    panel = dnb.ReconcilePanel(store, page_size=20)
    assert [r.record.run_id for r in panel.rows] == ["order-7"]
    assert "1 PENDING call" in text(panel.header.value) and "nothing in flight" not in text(panel.header.value)
    assert panel.next_button.disabled
    panel.inputs[0].answer("yes")
    panel.inputs[1].answer("no")
    panel.refresh()
    assert "1 PENDING call" in text(panel.header.value) and [r.record.run_id for r in panel.rows] == ["order-7"]


def test_more_waiting_inputs_than_listed_are_counted_in_full_and_the_oldest_listed() -> None:
    """The panel read every waiting input to list the oldest INPUTS_SHOWN, and counted the list: 5,000 runs
    waiting for an answer said "50 waiting inputs". It counts them all and says where the rest are."""
    from durable_nb.widgets.reconcile_panel import INPUTS_SHOWN

    def ask(n: int, ctx: dnb.RunnerContext) -> str:
        return ctx.durable_input(f"approve {n}?", choices=["yes", "no"])

    store = dnb.MemoryStore()
    runner = dnb.LocalRunner(store)
    waiting = INPUTS_SHOWN + 10
    for n in range(waiting):
        with pytest.raises(dnb.AwaitingInput):
            runner.run(ask, n, run_id=f"ask-{n:02d}")
    panel = dnb.ReconcilePanel(store)
    assert f"{waiting} waiting inputs" in text(panel.inputs_header.value)
    assert f"the oldest {INPUTS_SHOWN} are listed, store.waiting() lists every one" in text(panel.inputs_header.value)
    assert [p.record.run_id for p in panel.inputs] == [f"ask-{n:02d}" for n in range(INPUTS_SHOWN)]
    panel.close()


def test_reconcile_persists_the_reconcilers_value_as_reconciled(store: dnb.Store) -> None:
    runner = crash(store, 1, 2)
    seen: list[dnb.CallRecord] = []

    def lookup(record: dnb.CallRecord) -> dict[str, str]:
        seen.append(record)
        return {"charge": "found_" + record.run_id}

    panel = dnb.ReconcilePanel(store, reconcilers={"charge_card": lookup})
    row = panel.row("order-2", 0)
    assert not row.reconcile_button.disabled
    row.reconcile_button.click()
    assert [r.run_id for r in seen] == ["order-2"]
    rec = store.call("order-2", 0)
    assert rec is not None and (rec.status, rec.origin) == (dnb.Status.SUCCEEDED, dnb.Origin.RECONCILED)
    assert rec.result() == {"charge": "found_order-2"}
    assert row.state == "SUCCEEDED · RECONCILED"
    assert "SUCCEEDED · RECONCILED" in text(row.info.value)
    assert "{'charge': 'found_order-2'}" in text(row.info.value)
    assert "SUCCEEDED · RECONCILED" in text(panel.message.value)
    assert row.reconcile_button.disabled and row.resolve_button.disabled
    # the recovery replays what the panel persisted; charge_card is not run again
    assert runner.run(place_order, 2, run_id="order-2") == {"charge": "found_order-2"}
    assert calls == {}
    assert store.call("order-1", 0).status is dnb.Status.PENDING  # type: ignore[union-attr]
    panel.refresh_button.click()
    assert [r.record.run_id for r in panel.rows] == ["order-1"]


def test_zero_argument_reconcilers_work_too(store: dnb.Store) -> None:
    crash(store, 1)
    panel = dnb.ReconcilePanel(store, reconcilers={"charge_card": lambda: "ch_1_found"})
    panel.rows[0].reconcile_button.click()
    assert store.call("order-1", 0).result_preview == "'ch_1_found'"  # type: ignore[union-attr]


def test_call_reconciler_rejects_a_reconciler_with_two_arguments() -> None:
    record = dnb.CallRecord("r", 0, "f", "d", dnb.Status.PENDING, None, None, None, 0.0, None)
    with pytest.raises(TypeError, match="must take the CallRecord or no arguments"):
        call_reconciler(lambda a, b: None, record)  # type: ignore[arg-type,misc]


def test_reconcilers_not_keyed_by_call_id_are_refused_naming_the_key_to_use(store: dnb.Store) -> None:
    """A list failed with dict()'s "cannot convert dictionary update sequence"; a function or int key was
    taken and matched no call, so every row said no reconciler was registered."""
    with pytest.raises(TypeError, match=r"reconcilers must be a dict \{call_id: reconciler\}, got list"):
        dnb.ReconcilePanel(store, reconcilers=[charge_card])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="keyed by call id.*use its call id 'charge_card' as the key"):
        dnb.ReconcilePanel(store, reconcilers={charge_card: lambda: "x"})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="keyed by call id.*got int 5; use a call id string"):
        dnb.ReconcilePanel(store, reconcilers={5: lambda: "x"})  # type: ignore[dict-item]


def test_a_reconciler_exception_is_persisted_failed_and_shown(store: dnb.Store) -> None:
    runner = crash(store, 1)

    def broken(record: dnb.CallRecord) -> Any:
        raise LookupError("<b>no such payment</b>")

    panel = dnb.ReconcilePanel(store, reconcilers={"charge_card": broken})
    row = panel.rows[0]
    row.reconcile_button.click()
    rec = store.call("order-1", 0)
    assert rec is not None and (rec.status, rec.origin) == (dnb.Status.FAILED, dnb.Origin.RECONCILED)
    assert isinstance(rec.error(), LookupError)
    assert row.state == "FAILED · RECONCILED"
    assert "LookupError: <b>no such payment</b>" in text(row.info.value)
    assert "&lt;b&gt;no such payment" in row.info.value
    assert "dnb-error" in panel.message.value
    with pytest.raises(LookupError):  # the recovery replays the recorded failure
        runner.run(place_order, 1, run_id="order-1")
    assert calls == {}


def test_reexecute_later_writes_nothing_and_the_recovery_runs_the_call_again(store: dnb.Store) -> None:
    runner = crash(store, 1)
    before = store.calls("order-1")
    panel = dnb.ReconcilePanel(store)
    row = panel.rows[0]
    row.reexecute_button.click()
    assert store.calls("order-1") == before
    assert row.state == LEFT_TEXT
    assert "will re-execute on next recovery" in text(row.info.value)
    assert runner.run(place_order, 1, run_id="order-1") == "ch_1"
    assert calls == {"charge_card": 1}
    assert store.call("order-1", 0).origin is dnb.Origin.EXECUTED  # type: ignore[union-attr]


def test_resolve_persists_a_literal_as_resolved(store: dnb.Store) -> None:
    runner = crash(store, 1)
    panel = dnb.ReconcilePanel(store)
    row = panel.rows[0]
    row.resolve_text.value = "{'charge': 'ch_manual', 'amount': 12.5}"
    row.resolve_button.click()
    rec = store.call("order-1", 0)
    assert rec is not None and (rec.status, rec.origin) == (dnb.Status.SUCCEEDED, dnb.Origin.RESOLVED)
    assert "SUCCEEDED · RESOLVED" in text(row.info.value)
    assert runner.run(place_order, 1, run_id="order-1") == {"charge": "ch_manual", "amount": 12.5}
    assert calls == {}


def test_resolve_refuses_text_that_is_not_a_literal(store: dnb.Store) -> None:
    crash(store, 1)
    before = store.calls("order-1")
    panel = dnb.ReconcilePanel(store)
    row = panel.rows[0]
    row.resolve_text.value = "__import__('os').system('true')"
    row.resolve_button.click()
    assert store.calls("order-1") == before
    assert row.state == "PENDING"
    assert "could not read" in text(panel.message.value) and "dnb-error" in panel.message.value


def test_reconcile_without_a_registered_reconciler_says_how_to_register_one(store: dnb.Store) -> None:
    crash(store, 1)
    panel = dnb.ReconcilePanel(store)
    panel.rows[0].reconcile_button.click()  # disabled in the browser; click() still fires
    assert "no reconciler registered for 'charge_card'" in text(panel.message.value)
    assert store.call("order-1", 0).status is dnb.Status.PENDING  # type: ignore[union-attr]


def test_a_call_whose_run_is_open_in_a_live_context_is_refused(store: dnb.Store) -> None:
    shown: list[str] = []
    runner = dnb.LocalRunner(store)

    @dnb.durable(name="slow_call")
    def slow_call() -> str:
        # while this runs, the call is PENDING and its run is open in this live context
        panel = dnb.ReconcilePanel(store, reconcilers={"slow_call": lambda: "from panel"})
        panel.rows[0].reconcile_button.click()
        panel.rows[0].resolve_text.value = "1"
        panel.rows[0].resolve_button.click()
        shown.append(text(panel.message.value))
        assert store.call("live", 0).status is dnb.Status.PENDING  # type: ignore[union-attr]
        return "from the function"

    with runner.context("live") as ctx:
        assert ctx.durable_execute(slow_call) == "from the function"
    assert "run 'live' is open in a live context" in shown[0]
    assert store.call("live", 0).origin is dnb.Origin.EXECUTED  # type: ignore[union-attr]


def test_a_run_reopened_but_not_yet_written_is_refused_too(store: dnb.Store) -> None:
    """A recovery holds the run before it writes anything (replays write nothing): the panel must see it."""
    runner = crash(store, 1)
    panel = dnb.ReconcilePanel(store, reconcilers={"charge_card": lambda: "from panel"})
    with runner.context("order-1") as ctx:
        panel.rows[0].reconcile_button.click()
        assert "run 'order-1' is open in a live context" in text(panel.message.value)
        assert store.call("order-1", 0).status is dnb.Status.PENDING  # type: ignore[union-attr]
        assert ctx.durable_execute(charge_card, 1) == "ch_1"  # the recovery decides the call
    assert store.call("order-1", 0).origin is dnb.Origin.EXECUTED  # type: ignore[union-attr]


def test_a_misconfigured_reconciler_is_refused_before_anything_is_journaled(store: dnb.Store) -> None:
    crash(store, 1)
    with pytest.raises(TypeError, match="reconciler for 'charge_card' is a int"):
        dnb.ReconcilePanel(store, reconcilers={"charge_card": 5})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="must take the CallRecord or no arguments"):
        dnb.ReconcilePanel(store, reconcilers={"charge_card": lambda a, b: 1})
    assert store.call("order-1", 0).status is dnb.Status.PENDING  # type: ignore[union-attr]


def test_a_call_settled_elsewhere_is_not_overwritten(store: dnb.Store) -> None:
    runner = crash(store, 1)
    panel = dnb.ReconcilePanel(store, reconcilers={"charge_card": lambda: "late"})
    runner.run(place_order, 1, run_id="order-1")  # a recovery re-executes it first
    panel.rows[0].reconcile_button.click()
    assert store.call("order-1", 0).result_preview == "'ch_1'"  # type: ignore[union-attr]
    assert "already settled (SUCCEEDED · EXECUTED)" in text(panel.message.value)


def test_pages_through_many_pending_calls(store: dnb.Store) -> None:
    crash(store, *range(5))
    panel = dnb.ReconcilePanel(store, page_size=2)
    assert "5 PENDING calls · page 1 of 3" in text(panel.header.value)
    panel.next_button.click()
    panel.next_button.click()
    assert [r.record.run_id for r in panel.rows] == ["order-4"]
    assert panel.next_button.disabled
    assert repr(panel) == f"ReconcilePanel({store!r}, reconcilers=[])"


def test_a_page_after_waiting_inputs_reads_one_page_not_every_pending_call_before_it(store: dnb.Store) -> None:
    """With an input waiting, each page was cut from the PENDING calls read from the journal's start: the last
    page of 100,000 read 100,001 calls (0.44 s), and paging through them all was quadratic."""
    def ask(n: int, ctx: dnb.RunnerContext) -> str:
        return ctx.durable_input(f"approve {n}?", choices=["yes", "no"])

    runner = crash(store, 0, 1, 2)
    with pytest.raises(dnb.AwaitingInput):
        runner.run(ask, 0, run_id="ask-0")  # between the calls in flight
    crash(store, *range(3, 9))
    read: list[int] = []
    query = store.query_calls

    def spy(**kwargs: Any) -> list[dnb.CallRecord]:
        found = query(**kwargs)
        read.append(len(found))
        return found

    store.query_calls = spy  # type: ignore[method-assign]
    panel = dnb.ReconcilePanel(store, page_size=2)
    assert "9 PENDING calls · page 1 of 5" in text(panel.header.value)
    panel.next_button.click()
    assert [r.record.run_id for r in panel.rows] == ["order-2", "order-3"]
    for _ in range(3):
        panel.next_button.click()
    assert [r.record.run_id for r in panel.rows] == ["order-8"]
    assert "1 waiting input" in text(panel.inputs_header.value)
    assert read and max(read) <= 2


def test_a_double_click_runs_the_reconciler_once_and_reports_success_not_something_else(store: dnb.Store) -> None:
    """A browser double click sends two clicks before the first one's disabled buttons reach the page:
    the second must neither run the reconciler again nor say "already settled by something else"."""
    crash(store, 1, 2)
    looked_up: list[str] = []
    panel = dnb.ReconcilePanel(store, reconcilers={"charge_card": lambda rec: looked_up.append(rec.run_id) or "ch"})
    row = panel.row("order-1", 0)
    row.reconcile_button.click()
    row.reconcile_button.click()
    assert looked_up == ["order-1"]
    assert row.state == "SUCCEEDED · RECONCILED"
    assert "dnb-message dnb-error" not in panel.message.value and "something else" not in text(panel.message.value)
    assert "already SUCCEEDED · RECONCILED" in text(panel.message.value)

    row = panel.row("order-2", 0)
    row.resolve_text.value = "42"
    row.resolve_button.click()
    row.resolve_button.click()
    now = store.call("order-2", 0)
    assert now is not None and (now.status.value, now.origin.value, now.result_preview) == ("SUCCEEDED", "RESOLVED",
                                                                                          "42")
    assert "dnb-message dnb-error" not in panel.message.value and "something else" not in text(panel.message.value)


@dnb.durable(name="refund")
def refund(order: int) -> str:
    calls["refund"] = calls.get("refund", 0) + 1
    return f"rf_{order}"


def test_a_stale_row_runs_no_reconciler_and_never_settles_the_call_that_replaced_it(store: dnb.Store) -> None:
    crash(store, 1)
    found: list[str] = []
    panel = dnb.ReconcilePanel(store, reconcilers={"charge_card": lambda rec: found.append(rec.run_id) or "ch_found"})
    # Meanwhile a recovery of a changed action discards charge_card and crashes in refund, at the same index.
    with pytest.warns(dnb.NonDeterminismWarning), pytest.raises(dnb.SimulatedCrash), \
            dnb.inject_crash(call="refund", point="after_call"):
        dnb.LocalRunner(store).run(lambda order, ctx: ctx.durable_execute(refund, order), 1, run_id="order-1")
    panel.row("order-1", 0).reconcile_button.click()
    now = store.call("order-1", 0)
    assert now is not None and (now.call_id, now.status) == ("refund", dnb.Status.PENDING)  # not charge_card's value
    assert found == []  # the reconciler (a lookup, or a charge-if-absent) did not run for a call that is gone
    assert "replaced by another PENDING call, refund" in text(panel.message.value)
    assert "its reconciler was not run" in text(panel.message.value)


def test_a_row_settled_elsewhere_runs_no_reconciler_and_is_not_left_pending(store: dnb.Store) -> None:
    runner = crash(store, 1, 2)
    found: list[str] = []
    panel = dnb.ReconcilePanel(store, reconcilers={"charge_card": lambda rec: found.append(rec.run_id) or "late"})
    runner.run(place_order, 1, run_id="order-1")  # another recovery settles both first
    runner.run(place_order, 2, run_id="order-2")
    panel.row("order-1", 0).reconcile_button.click()
    assert found == [] and "already settled (SUCCEEDED · EXECUTED)" in text(panel.message.value)
    panel.row("order-2", 0).reexecute_button.click()
    assert LEFT_TEXT not in text(panel.row("order-2", 0).info.value)
    assert "already settled (SUCCEEDED · EXECUTED)" in text(panel.message.value)


def test_a_journal_that_cannot_be_read_is_shown_by_the_buttons_not_raised(store: dnb.Store,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    crash(store, 1)
    panel = dnb.ReconcilePanel(store, reconcilers={"charge_card": lambda: "found"})
    row = panel.row("order-1", 0)

    def lost(*args: Any, **kwargs: Any) -> Any:
        raise dnb.JournalUnavailableError("db", "read", "order-1", "the server went away", "")

    for method in ("count_calls", "open_run"):
        monkeypatch.setattr(store, method, lost)
    panel.refresh_button.click()  # a click handler's exception is only logged: the panel must say it
    assert "could not read the journal: JournalUnavailableError" in text(panel.message.value)
    assert panel.reconcile(row) is False
    assert "could not open run 'order-1': JournalUnavailableError" in text(panel.message.value)
    monkeypatch.undo()
    assert store.call("order-1", 0).status is dnb.Status.PENDING  # type: ignore[union-attr]


# -- closing: every model, the store it opened -----------------------------------------------

def open_models() -> collections.Counter[str]:
    """The widget models open in this kernel, by class (ipywidgets keeps each one until it is closed)."""
    from ipywidgets.widgets import widget

    return collections.Counter(type(w).__name__ for w in widget._instances.values())


def test_refresh_and_close_leave_no_widget_model_open(sqlite_store: dnb.SqliteStore) -> None:
    # A refresh closed the dropped rows but not their Layouts and styles (~100 models a refresh of two rows), and
    # the panel had no close() of its own: rows, buttons and boxes stayed open.
    crash(sqlite_store, 1, 2, 3)
    before = open_models()
    panel = dnb.ReconcilePanel(sqlite_store, page_size=2)
    shown = open_models()
    for page in (1, 0, 1, 0):
        panel._go(page)
        panel.refresh()
    assert open_models() == shown
    panel.close()
    assert open_models() - before == collections.Counter()


@needs_proc
def test_a_panel_closes_the_store_it_opened_from_a_path_and_not_one_passed_in(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    with dnb.SqliteStore(path) as store:
        crash(store, 1)
    fds = descriptors_on(tmp_path)
    for _ in range(3):
        dnb.ReconcilePanel(f"sqlite:///{path}").close()
    assert descriptors_on(tmp_path) == fds
    with dnb.SqliteStore(path) as store:
        dnb.ReconcilePanel(store).close()
        assert store.count_calls(status="PENDING") == 1  # still the caller's, open


@needs_proc
def test_a_closed_panel_reads_nothing_more(tmp_path: Path) -> None:
    # A panel's Refresh (its button held by the user, or panel.refresh()) after close() reopened the store it had
    # closed, and nothing closed it again.
    path = tmp_path / "journal.db"
    with dnb.SqliteStore(path) as store:
        crash(store, 1)
    fds = descriptors_on(tmp_path)
    panel = dnb.ReconcilePanel(str(path))
    panel.close()
    panel.refresh()
    panel.next_button.click()
    assert descriptors_on(tmp_path) == fds
