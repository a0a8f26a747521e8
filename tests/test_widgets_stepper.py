"""ReplayStepper on real stores: each step really performs one call of the recovery."""

from __future__ import annotations

import asyncio
import collections
import html
import re
from pathlib import Path
from typing import Any

import pytest
from descriptors import descriptors_on, needs_proc

import durable_nb as dnb
from durable_nb.widgets.replay_stepper import BACK_NOTE

ran: dict[str, int] = {}


def text(value: str) -> str:
    value = re.sub(r"<style>.*?</style>", "", value, flags=re.S)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", value)).split())


def count(name: str) -> None:
    ran[name] = ran.get(name, 0) + 1


@dnb.durable(name="reserve")
def reserve(order: int) -> str:
    count("reserve")
    return f"slot_{order}"


@dnb.durable(name="charge_card")
def charge_card(order: int) -> str:
    count("charge_card")
    return f"ch_{order}"


@dnb.durable(name="send_receipt")
def send_receipt(order: int, charge: str) -> str:
    count("send_receipt")
    return f"receipt {charge}"


def place_order(order: int, ctx: dnb.RunnerContext) -> str:
    ctx.durable_execute(reserve, order)
    def find_charge() -> str:
        count("reconciler")
        return f"ch_{order}_found"

    charge = ctx.durable_execute(charge_card, order, reconciler=find_charge)
    return ctx.durable_execute(send_receipt, order, charge)


@pytest.fixture(autouse=True)
def _reset() -> None:
    ran.clear()


def crashed(store: dnb.Store, action: Any = None, order: int = 1) -> None:
    """order-N: charge_card PENDING (it ran, the crash lost its outcome); before it, place_order's reserve SUCCEEDED."""
    with pytest.raises(dnb.SimulatedCrash), dnb.inject_crash(call="charge_card", point="after_call"):
        dnb.LocalRunner(store).run(action or place_order, order, run_id=f"order-{order}")
    ran.clear()


def test_plan_comes_from_the_recorded_calls_and_constructing_writes_nothing(store: dnb.Store) -> None:
    crashed(store)
    attempts = store.run("order-1").attempts  # type: ignore[union-attr]
    stepper = dnb.ReplayStepper(store, "order-1", place_order, 1)
    plan = text(stepper.plan_table.value)
    assert "reserve SUCCEEDED · EXECUTED replay" in plan
    assert "charge_card PENDING reconcile (if the action passes a reconciler) / re-execute" in plan
    assert "position 0 of 2 calls · next: call 0" in text(stepper.position_label.value)
    assert BACK_NOTE in text(stepper.note.value)
    assert store.run("order-1").attempts == attempts and ran == {}  # type: ignore[union-attr]
    assert stepper.back_button.disabled


def test_each_step_performs_exactly_one_call(store: dnb.Store) -> None:
    crashed(store)
    stepper = dnb.ReplayStepper(store, "order-1", place_order, 1)

    stepper.step_button.click()  # call 0: replay
    assert ran == {}
    assert "call 0 reserve: replay" in text(stepper.message.value)
    assert "next: call 1 charge_card → reconcile" in text(stepper.position_label.value)
    assert store.call("order-1", 1).status is dnb.Status.PENDING  # type: ignore[union-attr]

    stepper.step_button.click()  # call 1: the reconciler runs, the outcome is persisted
    assert ran == {"reconciler": 1}
    rec = store.call("order-1", 1)
    assert rec is not None and (rec.status, rec.origin) == (dnb.Status.SUCCEEDED, dnb.Origin.RECONCILED)
    assert "call 1 charge_card: reconcile → SUCCEEDED · RECONCILED: 'ch_1_found'" in text(stepper.message.value)
    assert "next: call 2 send_receipt → execute" in text(stepper.position_label.value)
    assert 'class="dnb-plan-row dnb-current" data-index="2"' in stepper.plan_table.value
    assert store.count_calls(run_id="order-1") == 2  # send_receipt not performed yet
    assert stepper.journal_view is not None
    assert "SUCCEEDED · RECONCILED" in text(stepper.journal_view.table.value)  # the view beside it updated

    stepper.step_button.click()  # call 2: executed, and the action finishes
    assert ran == {"reconciler": 1, "send_receipt": 1}
    assert store.run("order-1").status is dnb.RunStatus.COMPLETED  # type: ignore[union-attr]
    assert "COMPLETED with result 'receipt ch_1_found'" in text(stepper.message.value)
    assert "the action has finished" in text(stepper.position_label.value)
    assert [e.decision.value for e in stepper.history] == ["replay", "reconcile", "execute"]
    assert text(stepper.log_html.value).count("SUCCEEDED") == 3
    assert ran.get("charge_card") is None  # never re-executed


def test_a_double_click_on_step_performs_one_call(store: dnb.Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """The page sends both clicks of a double click (3 ms apart by its clock); the kernel handles the second after
    the first performed its call, and it performed the next call too. Clicks 0.8 s apart are two steps."""
    import datetime as dt
    import types

    import IPython

    sent = [dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)]
    clicked: list[Any] = []  # the button the page's message is for
    kernel = types.SimpleNamespace(get_parent=lambda: {
        "msg_type": "comm_msg", "header": {"date": sent[0]}, "content": {"comm_id": clicked[0].model_id}})
    monkeypatch.setattr(IPython, "get_ipython", lambda: types.SimpleNamespace(kernel=kernel))
    crashed(store)
    stepper = dnb.ReplayStepper(store, "order-1", place_order, 1)
    clicked.append(stepper.step_button)
    stepper.step_button.click()  # call 0: replay
    for ms in (800, 3, 3):  # a new click (call 1: reconcile), then the rest of a triple click
        sent[0] += dt.timedelta(milliseconds=ms)
        stepper.step_button.click()
    assert ran == {"reconciler": 1}  # send_receipt not executed by the extra clicks
    assert store.count_calls(run_id="order-1") == 2 and stepper.performed == 2
    said = text(stepper.message.value)
    assert "call 1 charge_card: reconcile → SUCCEEDED · RECONCILED" in said  # the performed step's outcome stays
    assert said.count("second click of a double click on Step was ignored") == 1
    sent[0] += dt.timedelta(seconds=1)
    clicked[0] = stepper.run_button
    stepper.run_button.click()
    sent[0] += dt.timedelta(milliseconds=3)
    stepper.run_button.click()
    assert ran == {"reconciler": 1, "send_receipt": 1} and stepper.done
    assert "ignored" in text(stepper.message.value)


def test_clicks_made_by_another_widgets_handler_are_never_taken_for_a_double_click(
        store: dnb.Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """A person's own "Finish recovery" button whose handler clicks Step twice: both clicks run under that button's
    one comm message (one page time), and the second was dropped as "the second click of a double click on Step"
    though no one clicked Step. Only a click the page sent for this very button can be the second of a double."""
    import datetime as dt
    import types

    import IPython
    import ipywidgets as W

    mine = W.Button(description="Finish recovery")
    at = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    parent = {"msg_type": "comm_msg", "header": {"date": at},
              "content": {"comm_id": mine.model_id, "data": {"method": "custom", "content": {"event": "click"}}}}
    kernel = types.SimpleNamespace(get_parent=lambda: parent)
    monkeypatch.setattr(IPython, "get_ipython", lambda: types.SimpleNamespace(kernel=kernel))
    crashed(store)
    stepper = dnb.ReplayStepper(store, "order-1", place_order, 1)
    mine.on_click(lambda _: [stepper.step_button.click() for _ in range(3)])
    mine.click()
    assert stepper.performed == 3 and stepper.done
    assert ran == {"reconciler": 1, "send_receipt": 1}
    assert "ignored" not in text(stepper.message.value)


def test_back_moves_the_view_and_undoes_nothing(store: dnb.Store) -> None:
    crashed(store)
    stepper = dnb.ReplayStepper(store, "order-1", place_order, 1)
    stepper.step_button.click()
    stepper.step_button.click()
    journal = store.calls("order-1")
    stepper.back_button.click()
    assert stepper.position == 1
    assert "viewing the past (performed up to 2)" in text(stepper.position_label.value)
    assert "not undone" in text(stepper.message.value)
    assert "charge_card PENDING" in text(stepper.plan_table.value)  # as it stood at position 1
    assert store.calls("order-1") == journal
    stepper.step_button.click()  # walks forward through what was performed: nothing runs
    assert stepper.position == 2 and ran == {"reconciler": 1}
    assert "nothing ran" in text(stepper.message.value)


def test_run_to_end_completes_the_recovery(store: dnb.Store) -> None:
    crashed(store)
    stepper = dnb.ReplayStepper(store, "order-1", place_order, 1)
    stepper.run_button.click()
    assert ran == {"reconciler": 1, "send_receipt": 1}
    assert store.run("order-1").status is dnb.RunStatus.COMPLETED  # type: ignore[union-attr]
    assert stepper.done and stepper.position == 3
    assert [e.decision.value for e in stepper.history] == ["replay", "reconcile", "execute"]
    stepper.back_button.click()
    stepper.back_button.click()
    assert stepper.position == 1  # the view as it stood after call 0: charge_card still PENDING
    assert "re-execute PENDING no outcome on record" in text(stepper.plan_table.value)
    stepper.run_button.click()
    assert stepper.position == 3 and ran == {"reconciler": 1, "send_receipt": 1}


def test_a_changed_action_shows_the_mismatch_and_the_discarded_calls(store: dnb.Store) -> None:
    crashed(store)

    @dnb.durable(name="refund")
    def refund(order: int) -> str:
        return "refunded"

    def changed(order: int, ctx: dnb.RunnerContext) -> str:
        ctx.durable_execute(reserve, order)
        return ctx.durable_execute(refund, order)

    stepper = dnb.ReplayStepper(store, "order-1", changed, 1)
    stepper.step_button.click()
    assert "next: call 1 refund → mismatch" in text(stepper.position_label.value)
    stepper.step_button.click()
    assert [e.decision.value for e in stepper.history] == ["replay", "mismatch"]
    assert "not deterministic" in text(stepper.message.value)  # the warning, shown in the widget
    assert [d.call_id for d in store.discarded("order-1")] == ["charge_card"]
    assert stepper.journal_view is not None
    assert "charge_card" in text(stepper.journal_view.discarded_table.value)


def test_a_strict_stepper_refuses_a_mismatch_and_its_dry_run_says_refused(store: dnb.Store) -> None:
    crashed(store)

    def changed(order: int, ctx: dnb.RunnerContext) -> str:
        return ctx.durable_execute(send_receipt, order, "?")  # a different call at index 0

    before = [(c.call_id, c.status) for c in store.calls("order-1")]
    stepper = dnb.ReplayStepper(store, "order-1", changed, 1, strict=True)
    report = stepper.dry_run()
    assert report is not None and report.refused
    assert "refused" in text(stepper.dry_html.value) and "would mismatch" not in text(stepper.dry_html.value)
    stepper.step_button.click()
    stepper.run_button.click()
    assert "Refused (strict mode)" in text(stepper.message.value)
    assert "mismatch: refused" in text(stepper.position_label.value)
    assert [(c.call_id, c.status) for c in store.calls("order-1")] == before  # nothing discarded
    assert store.discarded("order-1") == [] and ran == {} and not stepper.done


def test_an_action_that_raises_leaves_the_run_failed_and_says_so(store: dnb.Store) -> None:
    def broken(order: int, ctx: dnb.RunnerContext) -> None:
        ctx.durable_execute(reserve, order)
        raise RuntimeError("<script>x</script>")

    stepper = dnb.ReplayStepper(store, "bad", broken, 1, journal_view=False)
    stepper.run_button.click()
    assert stepper.done and store.run("bad").status is dnb.RunStatus.FAILED  # type: ignore[union-attr]
    assert "The action raised RuntimeError: <script>x</script>" in text(stepper.message.value)
    assert "<script>" not in stepper.message.value


def test_stepping_a_run_open_in_a_live_context_is_refused(store: dnb.Store) -> None:
    stepper = dnb.ReplayStepper(store, "busy", place_order, 1, journal_view=False)
    with dnb.LocalRunner(store).context("busy"):
        stepper.step_button.click()
    assert "already open" in text(stepper.message.value)
    assert stepper.position == 0 and ran == {}


def test_a_new_run_is_executed_step_by_step(store: dnb.Store) -> None:
    stepper = dnb.ReplayStepper(store, "fresh", place_order, 5, journal_view=False)
    stepper.step_button.click()
    assert ran == {"reserve": 1}
    assert "call 0 reserve: execute" in text(stepper.message.value)
    stepper.run_button.click()
    assert ran == {"reserve": 1, "charge_card": 1, "send_receipt": 1}
    assert repr(stepper).startswith("ReplayStepper(")


def test_async_actions_step_even_when_clicked_from_a_running_event_loop(store: dnb.Store) -> None:
    async def place_async(order: int, ctx: dnb.RunnerContext) -> str:
        charge = await ctx.durable_execute_async(charge_card, order)
        return await ctx.durable_execute_async(send_receipt, order, charge)

    stepper = dnb.ReplayStepper(store, "async", place_async, 4, journal_view=False)

    async def click_like_a_kernel() -> None:  # ipykernel runs click handlers on its event loop
        stepper.step_button.click()
        stepper.run_button.click()

    asyncio.run(click_like_a_kernel())
    assert ran == {"charge_card": 1, "send_receipt": 1}
    assert [e.decision.value for e in stepper.history] == ["execute", "execute"]
    assert store.run("async").status is dnb.RunStatus.COMPLETED  # type: ignore[union-attr]


async def place_order_async(order: int, ctx: dnb.RunnerContext) -> str:
    """``place_order`` as an async action (a Flink Agents style action in a notebook)."""
    def find_charge() -> str:
        count("reconciler")
        return f"ch_{order}_found"

    charge = await ctx.durable_execute_async(charge_card, order, reconciler=find_charge)
    return await ctx.durable_execute_async(send_receipt, order, charge)


def test_async_dry_run_clicked_from_a_running_event_loop_draws_the_runner_report(store: dnb.Store) -> None:
    crashed(store, place_order_async, 2)
    expected = dnb.LocalRunner(store).dry_run(place_order_async, 2, run_id="order-2")
    assert (expected.stopped_at, expected.decision) == (0, dnb.Decision.RECONCILE)
    stepper = dnb.ReplayStepper(store, "order-2", place_order_async, 2, journal_view=False)

    async def click_like_a_kernel() -> dnb.DryRunReport | None:  # ipykernel runs click handlers on its loop
        stepper.dry_button.click()
        return stepper.dry_run()

    report = asyncio.run(click_like_a_kernel())
    assert report is not None and (report.stopped_at, report.decision, report.error) == (0, dnb.Decision.RECONCILE,
                                                                                         None)
    assert "0 calls replay, then call 0 would reconcile" in text(stepper.message.value)
    assert "RuntimeError" not in text(stepper.dry_html.value)
    assert ran == {} and store.call("order-2", 0).status is dnb.Status.PENDING  # type: ignore[union-attr]


def test_an_async_action_stepper_is_built_dry_run_and_stepped_inside_a_running_event_loop(
    store: dnb.Store,
) -> None:
    crashed(store, place_order_async, 2)

    async def cell() -> dnb.ReplayStepper:  # a notebook cell runs on the kernel's event loop
        stepper = dnb.ReplayStepper(store, "order-2", place_order_async, 2, journal_view=False)
        stepper.dry_button.click()
        assert "then call 0 would reconcile" in text(stepper.message.value)
        stepper.step_button.click()
        return stepper

    stepper = asyncio.run(cell())
    assert ran == {"reconciler": 1}
    assert [e.decision.value for e in stepper.history] == ["reconcile"]


def test_stepping_gathered_async_calls_runs_each_once(store: dnb.Store) -> None:
    """asyncio.gather starts call k-1 before call k stops the step: it must finish and journal its
    outcome before the step ends, or the next step would run its side effect again."""
    import time

    def slow_charge(order: int) -> str:
        time.sleep(0.05)  # still running when the next gathered call reaches the step's stop
        return charge_card(order)

    async def charge_all(orders: list[int], ctx: dnb.RunnerContext) -> list[str]:
        return list(await asyncio.gather(*(ctx.durable_execute_async(slow_charge, o) for o in orders)))

    stepper = dnb.ReplayStepper(store, "gathered", charge_all, [1, 2, 3], journal_view=False)
    stepper.step()
    stepper.step()
    stepper.run_to_end()
    assert ran == {"charge_card": 3}
    assert [c.status.value for c in store.calls("gathered")] == ["SUCCEEDED"] * 3



def test_stepping_calls_made_in_a_task_group_stops_before_each_call(store: dnb.Store) -> None:
    """The step's stop, raised in a TaskGroup's task, left the action as a BaseExceptionGroup: the click
    failed with a traceback in the log and the stepper said nothing."""
    async def charge_all(orders: list[int], ctx: dnb.RunnerContext) -> list[str]:
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(ctx.durable_execute_async(charge_card, o)) for o in orders]
        return [t.result() for t in tasks]

    stepper = dnb.ReplayStepper(store, "grouped", charge_all, [1, 2], journal_view=False)
    stepper.step()
    assert "Stopped before call 1" in text(stepper.message.value)
    assert [c.status.value for c in store.calls("grouped")] == ["SUCCEEDED"]
    stepper.run_to_end()
    assert ran == {"charge_card": 2} and stepper.done
    assert store.run("grouped").status is dnb.RunStatus.COMPLETED  # type: ignore[union-attr]


def test_a_run_stopped_at_an_input_waits_and_goes_on_once_answered(store: dnb.Store) -> None:
    def refund(order: int, ctx: dnb.RunnerContext) -> str:
        charge = ctx.durable_execute(charge_card, order)
        if ctx.durable_input(f"Refund {charge}?", choices=["yes", "no"]) == "yes":
            return ctx.durable_execute(send_receipt, order, charge)
        return "kept"

    stepper = dnb.ReplayStepper(store, "refund", refund, 5, journal_view=False)
    stepper.step()
    stepper.step()  # reaches the input: WAITING, not FAILED, and not the end
    assert store.run("refund").status is dnb.RunStatus.WAITING  # type: ignore[union-attr]
    assert "WAITING at call 1" in text(stepper.message.value) and "FAILED" not in text(stepper.message.value)
    assert not stepper.done and not stepper.step_button.disabled
    store.answer("refund", 1, "yes")
    stepper.run_to_end()
    assert ran == {"charge_card": 1, "send_receipt": 1}
    assert store.run("refund").status is dnb.RunStatus.COMPLETED  # type: ignore[union-attr]


def test_a_journal_failing_under_a_step_stops_the_step_not_the_run(store: dnb.Store,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    crashed(store)
    stepper = dnb.ReplayStepper(store, "order-1", place_order, 1, journal_view=False)

    def lost(*args: Any, **kwargs: Any) -> Any:
        raise dnb.JournalUnavailableError("db", "open the run", "order-1", "the server went away", "")

    monkeypatch.setattr(store, "open_run", lost)
    stepper.step_button.click()  # a click handler's exception is only logged: the stepper must say it
    assert not stepper.done and stepper.position == 0
    assert "The step stopped with JournalUnavailableError" in text(stepper.message.value)
    assert "the run is not FAILED" in text(stepper.message.value)
    monkeypatch.setattr(store, "query_calls", lost)
    monkeypatch.setattr(store, "run", lost)
    stepper.step_button.click()
    assert not stepper.done and "the journal cannot be read" in text(stepper.message.value)
    monkeypatch.undo()  # the server is back: the recovery goes on where it was
    stepper.run_button.click()
    assert stepper.done and ran == {"reconciler": 1, "send_receipt": 1}
    assert store.run("order-1").status is dnb.RunStatus.COMPLETED  # type: ignore[union-attr]


def test_dry_run_of_a_run_a_live_context_holds_says_so_in_the_stepper(store: dnb.Store) -> None:
    """The report's text said the run was held (a PENDING call may be running there, a run raises RunBusyError);
    the stepper's Dry run button showed only "would reconcile"."""
    crashed(store)
    stepper = dnb.ReplayStepper(store, "order-1", place_order, 1, journal_view=False)
    with dnb.LocalRunner(store).context("order-1"):  # another kernel's recovery, running charge_card now
        report = stepper.dry_run()
    assert report is not None and report.busy
    for shown in (stepper.message.value, stepper.dry_html.value):
        assert "call 1 would reconcile; but the run is open in a live context now" in text(shown)
        assert "RunBusyError" in text(shown)
    assert ran == {}
    report = stepper.dry_run()
    assert report is not None and not report.busy and "live context" not in text(stepper.dry_html.value)


def test_run_to_end_over_a_long_run_keeps_memory_linear_in_its_calls(tmp_path):
    """Each position a Run to end passed kept its own copy of the journal: 10,000 calls held half a GB.
    The positions share the two journals now; Back still shows each one as it was."""
    import tracemalloc

    def many(n: int, ctx: dnb.RunnerContext) -> int:
        return sum(ctx.durable_execute(halve, i) for i in range(n))

    store = dnb.SqliteStore(tmp_path / "j.db")
    dnb.LocalRunner(store).run(many, 2000, run_id="long")
    half = store.fork("long", at=1000)
    stepper = dnb.ReplayStepper(store, half, many, 2000, journal_view=False)
    tracemalloc.start()
    try:
        stepper.run_to_end()
        held = tracemalloc.take_snapshot().statistics("filename")
    finally:
        tracemalloc.stop()
    held_by_stepper = sum(s.size for s in held if "replay_stepper" in str(s.traceback))
    assert held_by_stepper < 1_000_000  # 2000 positions x ~1500 records each: ~25 MB
    assert stepper.position == stepper.performed == 2000
    stepper.back()
    assert "position 1999 of 2000 calls" in text(stepper.position_label.value)
    assert [r.index for r in stepper.snapshots[1500].records()] == list(range(1500))
    stepper.close()


def halve(i: int) -> int:
    return i // 2


# -- closing: every model, the journal view's thread, the store it opened ----------------------

def open_models() -> collections.Counter[str]:
    """The widget models open in this kernel, by class (ipywidgets keeps each one until it is closed)."""
    from ipywidgets.widgets import widget

    return collections.Counter(type(w).__name__ for w in widget._instances.values())


def test_close_leaves_no_widget_model_or_thread(sqlite_store: dnb.SqliteStore) -> None:
    # The stepper closed its buttons but not their Layouts/styles, nor the HBox holding them (~70 models).
    crashed(sqlite_store)
    before = open_models()
    stepper = dnb.ReplayStepper(sqlite_store, "order-1", place_order, 1)
    assert stepper.journal_view is not None
    stepper.journal_view.start_live(0.01)
    stepper.step()
    stepper.dry_run()
    stepper.close()
    assert open_models() - before == collections.Counter()
    assert not stepper.journal_view.live
    assert stepper.journal_view._poller._thread is None  # its poller thread was stopped and joined


@needs_proc
def test_a_stepper_closes_the_store_it_opened_from_a_path_and_not_one_passed_in(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    with dnb.SqliteStore(path) as store:
        crashed(store)
    fds = descriptors_on(tmp_path)
    for _ in range(3):
        dnb.ReplayStepper(str(path), "order-1", place_order, 1).close()
    assert descriptors_on(tmp_path) == fds
    with dnb.SqliteStore(path) as store:
        dnb.ReplayStepper(store, "order-1", place_order, 1).close()
        assert store.count_calls(run_id="order-1") == 2  # still the caller's, open


def many_halves(n: int, ctx: dnb.RunnerContext) -> int:
    return sum(ctx.durable_execute(halve, i) for i in range(n))


def test_a_long_runs_plan_and_log_draw_a_bounded_window_around_the_view_position() -> None:
    """Every recorded call was a plan row (a 100,000-call run: a 16 MB table, redrawn on every Step and Back),
    and a Run to end logged every call it performed. The table draws PLAN_ROWS rows around the position and
    names the calls left out; the log its last LOG_ROWS decisions."""
    from durable_nb.widgets import replay_stepper

    store = dnb.MemoryStore()
    dnb.LocalRunner(store).run(many_halves, 2000, run_id="long")
    half = store.fork("long", at=1000)
    stepper = dnb.ReplayStepper(store, half, many_halves, 2000, journal_view=False)
    shown = getattr(replay_stepper, "PLAN_ROWS", 2000)
    plan = stepper.plan_table.value
    assert plan.count('class="dnb-plan-row') == shown < 2000
    assert 'class="dnb-plan-row dnb-current" data-index="0"' in plan
    assert f"calls {shown}–999 are not drawn" in text(plan) and len(plan) < 200_000  # 1,000 calls recorded

    stepper.run_to_end()
    assert stepper.position == 2000 and len(stepper.history) == 2000
    plan = stepper.plan_table.value
    assert plan.count('class="dnb-plan-row') == shown and 'data-index="1999"' in plan
    assert f"calls 0–{1999 - shown} are not drawn" in text(plan)
    log = stepper.log_html.value
    assert log.count('class="dnb-log-row"') == replay_stepper.LOG_ROWS and 'data-index="1999"' in log
    assert "earlier decisions are not drawn" in text(log)

    for _ in range(3):
        stepper.back()
    assert 'class="dnb-plan-row dnb-current" data-index="1997"' in stepper.plan_table.value
    stepper.close()


def test_a_run_renumbered_by_hand_says_so_before_a_step_instead_of_raising(sqlite_store: dnb.SqliteStore) -> None:
    # An idx typed in as text made the constructor raise TypeError while drawing the plan; a gap drew a plan
    # of replays that the first Step then refused. Both now say at once why the run cannot be recovered.
    import contextlib
    import sqlite3

    crashed(sqlite_store)
    sqlite_store.flush()
    with contextlib.closing(sqlite3.connect(sqlite_store.path)) as conn, conn:
        conn.execute("UPDATE calls SET idx = '<b>one</b>' WHERE run_id = 'order-1' AND idx = 1")
    stepper = dnb.ReplayStepper(sqlite_store, "order-1", place_order, 1)
    assert "has its calls at indices 0, <b>one</b> instead of 0 to 1" in text(stepper.message.value)
    assert "<b>one" not in stepper.message.value + stepper.plan_table.value
    stepper.step()
    assert "JournalFormatError" in text(stepper.message.value) and ran == {}


def test_plan_of_a_waiting_input_says_it_asks_again_as_the_dry_run_does(store: dnb.Store) -> None:
    """The plan said "reconcile (if the action passes a reconciler) / re-execute" for an unanswered
    durable_input, which takes no reconciler and runs nothing: a recovery asks again and stops WAITING."""
    from durable_nb.journal import context as journal_context

    def approve(order: int, ctx: dnb.RunnerContext) -> str:
        ctx.durable_execute(reserve, order)
        return ctx.durable_input("Ship it?", choices=["yes", 1, None])

    previous = journal_context.set_input_hook(None)
    try:
        with pytest.raises(dnb.AwaitingInput):
            dnb.LocalRunner(store).run(approve, 1, run_id="w")
        stepper = dnb.ReplayStepper(store, "w", approve, 1, journal_view=False)
        plan = text(stepper.plan_table.value)
        assert "reconcile (if" not in plan
        assert "durable_nb.durable_input PENDING re-execute: asks again, the run stops WAITING" in plan
        report = stepper.dry_run()
        assert report is not None and report.stopped_at == 1 and "not answered yet" in report.rule
        stepper.step()
        stepper.step()
        assert "WAITING at call 1" in text(stepper.message.value)
    finally:
        journal_context.set_input_hook(previous)


def test_a_stepper_given_a_path_with_no_journal_says_so_and_creates_nothing(tmp_path: Path) -> None:
    # A mistyped path created an empty journal there and planned "execute" for every call: Step charged again,
    # beside the real journal, instead of replaying the run it was meant to walk through.
    missing = tmp_path / "no-such-dir" / "jounral.db"
    for given in (str(missing), missing, f"sqlite:///{missing}"):
        with pytest.raises(FileNotFoundError, match=rf"ReplayStepper: no journal at '{re.escape(str(missing))}'"):
            dnb.ReplayStepper(given, "order-1", place_order, 1)
    assert list(tmp_path.iterdir()) == []
    path = tmp_path / "journal.db"
    dnb.SqliteStore(path).close()
    dnb.ReplayStepper(str(path), "order-1", place_order, 1).close()  # an existing journal, even an empty one
