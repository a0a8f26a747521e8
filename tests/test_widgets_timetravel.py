"""Time travel in the widgets, headless on real stores: Fork from here, lineage, answering durable_input.

Each test clicks the widget (``button.click()``, as the browser's click ends up in the
kernel) and then asserts the journal itself: what the fork copied, what the answer
wrote, and how often each side effect ran when the fork or the answered run goes on.
"""

from __future__ import annotations

import collections
import html
import re
from typing import Any

import pytest

import durable_nb as dnb
from durable_nb.journal import context as journal_context
from durable_nb.widgets.fork_control import FORK_TEXT
from durable_nb.widgets.input_prompt import ANSWER_TEXT, InputPrompt

calls: dict[str, int] = {}


def text(value: str) -> str:
    value = re.sub(r"<style>.*?</style>", "", value, flags=re.S)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", value)).split())


def count(name: str) -> None:
    calls[name] = calls.get(name, 0) + 1


@dnb.durable(name="step")
def step(i: int) -> str:
    count(f"step{i}")
    return f"s{i}"


def three_steps(_: Any, ctx: dnb.RunnerContext) -> list[str]:
    return [ctx.durable_execute(step, i) for i in range(3)]


@dnb.durable(name="refund")
def refund(amount: int) -> str:
    count("refund")
    return f"refunded {amount}"


def approve_refund(amount: int, ctx: dnb.RunnerContext) -> str:
    answer = ctx.durable_input(f"Refund {amount} EUR?", choices=["yes", "no"])
    return ctx.durable_execute(refund, amount) if answer == "yes" else "refused"


def ask_reason(_: Any, ctx: dnb.RunnerContext) -> str:
    return "reason: " + ctx.durable_input("Why?")


@pytest.fixture(autouse=True)
def _reset() -> Any:
    calls.clear()
    previous = journal_context.set_input_hook(None)  # no notebook here: nothing to display
    yield
    journal_context.set_input_hook(previous)


def select(view: dnb.JournalView, run_id: str, index: int) -> None:
    view.run_filter.value = run_id
    view.selector.value = next(i for i, r in enumerate(view.records) if r.index == index)


# -- JournalView: Fork from here -----------------------------------------------------------------


def test_fork_from_here_copies_the_calls_before_the_selected_one(store: dnb.Store) -> None:
    runner = dnb.LocalRunner(store)
    runner.run(three_steps, None, run_id="r")
    view = dnb.JournalView(store)
    select(view, "r", 2)
    assert view.fork.button.description == FORK_TEXT
    assert not view.fork.button.disabled

    view.fork.button.click()

    new_id = view.fork.last_fork
    assert new_id is not None and new_id != "r"
    assert "forked" in text(view.fork.message.value) and new_id in text(view.fork.message.value)
    forked = store.run(new_id)
    assert forked is not None and (forked.parent_run_id, forked.forked_at) == ("r", 2)
    assert [(c.index, c.call_id, c.status.value, c.result_preview) for c in store.calls(new_id)] == [
        (0, "step", "SUCCEEDED", "'s0'"), (1, "step", "SUCCEEDED", "'s1'"),
    ]
    assert len(store.calls("r")) == 3  # the original is untouched
    # The view switched to the fork and says where it came from.
    assert view.filters["run_id"] == new_id
    assert "forked from r at call 2" in text(view.fork.lineage.value)
    assert "forked from r at call 2" in text(view.runs_table.value)

    calls.clear()
    assert runner.run(three_steps, None, run_id=new_id) == ["s0", "s1", "s2"]
    assert calls == {"step2": 1}  # the copied calls replayed; call 2 executed once
    assert [c.origin.value for c in store.calls(new_id)] == ["EXECUTED"] * 3


@dnb.durable(name="ship")
def ship(i: int) -> str:
    count("ship")
    return f"shipped {i}"


def step_then_ship(_: Any, ctx: dnb.RunnerContext) -> str:
    return ctx.durable_execute(step, 0) + ctx.durable_execute(ship, 1)


def test_a_fork_the_store_refuses_is_shown_in_the_widget_not_raised(store: dnb.Store) -> None:
    runner = dnb.LocalRunner(store)
    with pytest.raises(dnb.SimulatedCrash), dnb.inject_crash(call="ship", point="after_call"):
        runner.run(step_then_ship, None, run_id="r")
    assert [c.status.value for c in store.calls("r")] == ["SUCCEEDED", "PENDING"]
    view = dnb.JournalView(store, run_id="r")
    select(view, "r", 1)
    # Forking at call 2 would copy the in-flight call 1; the store refuses, the widget says why.
    pending = store.calls("r")[1]
    view.fork.show(dnb.CallRecord("r", 2, "ship", pending.args_digest, dnb.Status.PENDING, None, None, None,
                                  pending.started_at, None), store.run("r"))
    runs_before = len(store.runs())
    assert view.fork.fork() is None
    assert "cannot fork r at call 2" in text(view.fork.message.value)
    assert len(store.runs()) == runs_before  # nothing written
    # At the PENDING call itself it is allowed: the fork executes it again.
    select(view, "r", 0)
    select(view, "r", 1)
    new_id = view.fork.fork()
    assert new_id is not None
    calls.clear()
    assert runner.run(step_then_ship, None, run_id=new_id) == "s0shipped 1"
    assert calls == {"ship": 1}


def test_forks_show_their_parent_and_escape_it(store: dnb.Store) -> None:
    runner = dnb.LocalRunner(store)
    hostile = "<img src=x onerror=alert(1)>"
    runner.run(three_steps, None, run_id=hostile)
    new_id = store.fork(hostile, at=1)
    view = dnb.JournalView(store)
    assert "<img" not in view.runs_table.value
    assert f"forked from {hostile} at call 1" in text(view.runs_table.value)
    select(view, new_id, 0)
    assert "<img" not in view.fork.lineage.value
    assert f"this call was copied from {hostile} #0" in text(view.fork.lineage.value)
    select(view, hostile, 0)
    assert view.fork.lineage.value == ""  # not a fork


# -- durable_input: the answer widget and the ReconcilePanel --------------------------------------


def waiting_run(store: dnb.Store, action: Any = approve_refund, value: Any = 120, run_id: str = "refund-1") -> Any:
    runner = dnb.LocalRunner(store)
    with pytest.raises(dnb.AwaitingInput) as info:
        runner.run(action, value, run_id=run_id)
    return runner, info.value


def test_choice_buttons_answer_the_input_and_the_run_goes_on(store: dnb.Store) -> None:
    runner, waiting = waiting_run(store)
    [record] = store.waiting()
    prompt = InputPrompt(store, record)
    assert [b.description for b in prompt.choice_buttons] == ["yes", "no"]
    assert "Refund 120 EUR?" in text(prompt.info.value) and "WAITING" in text(prompt.info.value)

    prompt.choice_buttons[0].click()

    assert prompt.state == "ANSWERED" and "'yes'" in text(prompt.info.value)
    assert all(b.disabled for b in prompt.choice_buttons)
    answered = store.call("refund-1", waiting.index)
    assert answered is not None
    assert (answered.status.value, answered.origin.value, answered.result_preview) == ("SUCCEEDED", "RESOLVED", "'yes'")
    assert calls == {}
    assert runner.run(approve_refund, 120, run_id="refund-1") == "refunded 120"
    assert calls == {"refund": 1}
    assert store.run("refund-1").status.value == "COMPLETED"


def test_text_box_answers_with_the_text_as_typed(store: dnb.Store) -> None:
    runner, _ = waiting_run(store, ask_reason, None, "why")
    prompt = InputPrompt(store, store.waiting("why")[0])
    assert prompt.choice_buttons == [] and prompt.answer_button.description == ANSWER_TEXT
    prompt.text.value = "42"
    prompt.answer_button.click()
    assert runner.run(ask_reason, None, run_id="why") == "reason: 42"


def test_an_input_answered_elsewhere_is_refused_and_nothing_is_overwritten(store: dnb.Store) -> None:
    _, waiting = waiting_run(store)
    prompt = InputPrompt(store, store.waiting()[0])
    store.answer("refund-1", waiting.index, "no")
    assert prompt.answer("yes") is False
    assert "could not answer" in text(prompt.message.value)
    assert store.call("refund-1", waiting.index).result_preview == "'no'"


def test_prompts_are_escaped(store: dnb.Store) -> None:
    hostile = "<script>alert(1)</script>"

    def ask(_: Any, ctx: dnb.RunnerContext) -> Any:
        return ctx.durable_input(hostile, choices=[hostile])

    waiting_run(store, ask, None, "h")
    prompt = InputPrompt(store, store.waiting("h")[0])
    assert "<script>" not in prompt.info.value and hostile in text(prompt.info.value)
    assert prompt.choice_buttons[0].description == hostile  # a button label is text, not markup
    panel = dnb.ReconcilePanel(store)
    assert "<script>" not in panel.inputs[0].info.value


def test_reconcile_panel_lists_waiting_inputs_with_an_answer_control(store: dnb.Store) -> None:
    runner, waiting = waiting_run(store)
    panel = dnb.ReconcilePanel(store)
    assert panel.rows == []  # the input is not offered to reconcilers
    assert "1 waiting input" in text(panel.inputs_header.value)
    prompt = panel.input("refund-1", waiting.index)
    prompt.choice_buttons[1].click()  # "no"
    # The answered input stays listed while its run still waits to be run again.
    assert [p.state for p in panel.inputs] == ["ANSWERED"]
    assert "0 waiting inputs" in text(panel.inputs_header.value)
    assert runner.run(approve_refund, 120, run_id="refund-1") == "refused"
    panel.refresh()
    assert panel.inputs == []
    assert calls == {}


def test_reconcile_panel_pages_show_every_pending_call_once_when_inputs_wait_between_them(store: dnb.Store) -> None:
    # Journal order a, b0, b1 (waiting inputs), c, d, e: pages of two must be [a, c] and [d, e], not [c, d].
    def crash(_: Any, ctx: dnb.RunnerContext) -> None:
        def ship() -> None:
            raise KeyboardInterrupt  # an interrupt is not the call's outcome: the call stays PENDING

        ctx.durable_execute(ship)

    for run_id in ("a", "b0", "b1", "c", "d", "e"):
        if run_id.startswith("b"):
            waiting_run(store, ask_reason, None, run_id)
        else:
            with pytest.raises(KeyboardInterrupt):
                dnb.LocalRunner(store).run(crash, None, run_id=run_id)
    panel = dnb.ReconcilePanel(store, page_size=2)
    pages = []
    for index in range(3):
        panel._go(index)
        pages.append([row.record.run_id for row in panel.rows])
    assert panel.total == 4
    assert pages == [["a", "c"], ["d", "e"], ["d", "e"]]  # the last page stays the last


def test_reconcile_panel_survives_a_reopened_store(tmp_path: Any) -> None:
    path = tmp_path / "journal.db"
    first = dnb.SqliteStore(path)
    _, waiting = waiting_run(first)
    first.close()
    again = dnb.SqliteStore(path)  # as after a kernel restart
    try:
        panel = dnb.ReconcilePanel(again)
        panel.input("refund-1", waiting.index).choice_buttons[0].click()
        assert dnb.LocalRunner(again).run(approve_refund, 120, run_id="refund-1") == "refunded 120"
    finally:
        again.close()


def test_the_notebook_hook_displays_the_input_widget_in_the_shell(store: dnb.Store, ip: Any) -> None:
    from shell_harness import _Log, _Publisher

    from durable_nb.notebook import inputs

    log = _Log()
    pub = _Publisher()
    pub.log = log
    saved = ip.display_pub
    ip.display_pub = pub
    inputs.register()  # what %load_ext durable_nb does
    try:
        waiting_run(store)
    finally:
        inputs.unregister()
        ip.display_pub = saved
    [(kind, bundle)] = log.items
    assert kind == "display"
    assert bundle["text/plain"] == "InputPrompt('refund-1', 0, 'Refund 120 EUR?')"
    assert "application/vnd.jupyter.widget-view+json" in bundle


# -- ReplayStepper: Dry run --------------------------------------------------------------------------


def test_stepper_dry_run_reports_the_first_call_that_would_not_replay_and_runs_nothing(store: dnb.Store) -> None:
    runner = dnb.LocalRunner(store)
    with pytest.raises(dnb.SimulatedCrash), dnb.inject_crash(call="ship", point="after_call"):
        runner.run(step_then_ship, None, run_id="r")
    before = store.to_pandas().to_dict("records")
    calls.clear()
    stepper = dnb.ReplayStepper(store, "r", step_then_ship)
    stepper.dry_button.click()
    html_value = stepper.dry_html.value
    assert "1 call replay, then call 1 would re-execute" in text(html_value)
    assert 'tr class="dnb-dry-row dnb-current" data-index="1"' in html_value
    assert calls == {} and store.to_pandas().to_dict("records") == before
    assert "nothing was executed or written" in text(stepper.message.value)


def test_dry_report_html_escapes_call_ids(store: dnb.Store) -> None:
    from durable_nb.widgets.render_dry import dry_report_html

    hostile = dnb.durable(name="<img src=x onerror=alert(1)>")(lambda: 1)
    dnb.LocalRunner(store).run(lambda _, ctx: ctx.durable_execute(hostile), None, run_id="h")
    report = dnb.LocalRunner(store).dry_run(lambda _, ctx: ctx.durable_execute(step, 9), None, run_id="h")
    assert report.stopped_at == 0
    out = dry_report_html(report)
    assert "<img" not in out and "&lt;img src=x onerror=alert(1)&gt;" in out


def test_the_dry_report_of_a_long_run_draws_the_calls_before_the_stop_not_every_one(store: dnb.Store) -> None:
    """A dry run of a 100,000-call run drew a 21 MB table; the rows left out all replayed, and are counted."""
    from durable_nb.widgets import render_dry

    def many(n: int, ctx: dnb.RunnerContext) -> None:
        for i in range(n):
            ctx.durable_execute(step, i)

    runner = dnb.LocalRunner(store)
    runner.run(many, 1000, run_id="long")
    report = runner.dry_run(many, 1001, run_id="long")
    assert report.stopped_at == 1000 and len(report.steps) == 1001
    out = render_dry.dry_report_html(report)
    assert 'tr class="dnb-dry-row dnb-current" data-index="1000"' in out
    assert 'data-index="0"' not in out and out.count('class="dnb-dry-row') < 1001
    shown = getattr(render_dry, "DRY_ROWS", 1001)
    assert out.count('class="dnb-dry-row') == shown and f'data-index="{1001 - shown}"' in out
    assert f"calls 0–{1000 - shown} replay and are not drawn" in text(out)


def test_a_double_click_on_fork_from_here_makes_one_fork(store: dnb.Store) -> None:
    """The second click of a double click arrives after the view switched to the new fork: it must not fork
    the fork (a stray RUNNING run); once a person picks a call, Fork from here forks again."""
    dnb.LocalRunner(store).run(three_steps, None, run_id="r")
    view = dnb.JournalView(store)
    select(view, "r", 2)
    view.fork.button.click()
    view.fork.button.click()
    assert sorted(r.run_id for r in store.runs()) == sorted(["r", view.fork.last_fork])
    assert "second click is ignored" in text(view.fork.message.value)

    first = view.fork.last_fork
    view.selector.value = 1  # a person picks call 1 of the fork
    assert view.fork.fork() not in (None, first)
    assert len(store.runs()) == 3


def test_after_a_fork_a_person_can_fork_the_call_shown_again_without_picking_another(store: dnb.Store) -> None:
    """Only the double click's second click is swallowed: a dropdown sends nothing when the entry already
    chosen is chosen again, so a person who clicks again (or refreshes, or pages) forks the call shown."""
    dnb.LocalRunner(store).run(three_steps, None, run_id="r")
    view = dnb.JournalView(store)
    select(view, "r", 2)
    first = view.fork.fork()
    view.refresh_button.click()  # a person refreshes after a fork: the call shown is theirs to fork
    second = view.fork.fork()
    assert second not in (None, first) and len(store.runs()) == 3

    select(view, "r", 2)
    third = view.fork.fork()
    assert view.fork.fork() is None  # the second click of a double click
    fourth = view.fork.fork()  # a person, who read the note, clicks again
    assert fourth not in (None, first, second, third) and len(store.runs()) == 5


def test_closing_an_answer_widget_closes_every_model_it_made(store: dnb.Store) -> None:
    # A choice prompt makes a text box and an Answer button it does not show: nothing closed them, nor any
    # Layout or style (a prompt dropped by a ReconcilePanel refresh left ~20 models).
    from ipywidgets.widgets import widget

    def models() -> collections.Counter[str]:
        return collections.Counter(type(w).__name__ for w in widget._instances.values())

    waiting_run(store)
    waiting_run(store, ask_reason, None, "why")
    before = models()
    for record in store.waiting():
        InputPrompt(store, record).close()
    panel = dnb.ReconcilePanel(store)
    panel.input("refund-1", store.waiting("refund-1")[0].index).choice_buttons[0].click()
    panel.refresh()
    panel.close()
    assert models() - before == collections.Counter()


def test_fork_from_here_refuses_a_pending_call_a_live_run_is_executing_now(store: dnb.Store) -> None:
    """The store forks at a PENDING call ("the fork runs it again"): right after a crash. A live run's PENDING
    call is running now; forking it from the widget and running the fork charged a second time."""
    import threading

    started, release = threading.Event(), threading.Event()

    @dnb.durable(name="slow-charge")
    def slow_charge(i: int) -> str:
        count("charge")
        started.set()
        release.wait(10)
        return f"charged {i}"

    def pay(_: Any, ctx: dnb.RunnerContext) -> str:
        return ctx.durable_execute(step, 0) + ctx.durable_execute(slow_charge, 1)

    runner = dnb.LocalRunner(store)
    live = threading.Thread(target=runner.run, args=(pay, None), kwargs={"run_id": "live"})
    live.start()
    try:
        assert started.wait(10)
        assert store.run_is_open("live")
        view = dnb.JournalView(store, run_id="live")
        select(view, "live", 1)
        runs_before = len(store.runs())
        assert view.fork.fork() is None
        assert "cannot fork live at call 1 now" in text(view.fork.message.value)
        assert "PENDING" in text(view.fork.message.value)
        assert len(store.runs()) == runs_before  # nothing written
        select(view, "live", 0)  # forking at 0 runs call 1 again too
        assert view.fork.fork() is None
    finally:
        release.set()
        live.join()
    # Once the run has ended, the same call forks (and the fork charges once, as asked).
    view = dnb.JournalView(store, run_id="live")
    select(view, "live", 1)
    assert view.fork.fork() is not None
    assert calls == {"step0": 1, "charge": 1}


def test_choice_buttons_of_choices_sharing_a_str_say_which_value_they_answer(store: dnb.Store) -> None:
    """``[1, "1", None, "None", ""]`` drew buttons "1", "1", "None", "None" and a blank one."""
    choices = [1, "1", None, "None", "", "yes", 0]

    def pick(_: Any, ctx: dnb.RunnerContext) -> str:
        return repr(ctx.durable_input("Which?", choices=choices))

    runner, _ = waiting_run(store, pick, None, "pick")
    prompt = InputPrompt(store, store.waiting("pick")[0])
    labels = [b.description for b in prompt.choice_buttons]
    assert labels == ["1", "'1'", "None", "'None'", "''", "yes", "0"]
    assert len(set(labels)) == len(labels)
    prompt.choice_buttons[labels.index("None")].click()
    assert runner.run(pick, None, run_id="pick") == "None"


def test_lineage_of_a_fork_of_a_fork_says_when_its_parent_was_pruned_or_its_id_reused(store: dnb.Store) -> None:
    """The lineage named a pruned parent as if it were there; after a new fork took the freed id it named that
    run, which never made the calls shown as copied from it."""
    runner = dnb.LocalRunner(store)
    runner.run(three_steps, None, run_id="p")
    child = store.fork("p", at=2)
    runner.run(three_steps, None, run_id=child)
    grandchild = store.fork(child, at=2)
    runner.run(three_steps, None, run_id=grandchild)
    view = dnb.JournalView(store)
    select(view, grandchild, 0)
    assert text(view.fork.lineage.value) == f"forked from {child} at call 2; this call was copied from {child} #0"

    store.delete_run(child)  # what a prune of it does
    view = dnb.JournalView(store)
    select(view, grandchild, 0)
    gone = f"forked from {child} (no longer in the journal) at call 2"
    assert text(view.fork.lineage.value).startswith(gone)
    assert gone in text(view.runs_table.value)

    assert store.fork("p", at=1) != child  # a generated id is never given again (test_fork.py)
    assert store.fork("p", at=1, new_run_id=child) == child  # the freed id, named again by hand
    view = dnb.JournalView(store)
    select(view, grandchild, 0)
    assert text(view.fork.lineage.value).startswith(gone)
    assert gone in text(view.runs_table.value)
