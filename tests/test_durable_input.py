"""``ctx.durable_input``: a person's answer journaled like any outcome (origin RESOLVED).

The first run stops WAITING (``AwaitingInput``, never FAILED); ``store.answer``
journals the answer; the next run replays everything before it, returns the
answer and goes on. Counters prove the calls before the input ran once.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import pickle
import threading
from pathlib import Path
from typing import Any

import pytest

import durable_nb as dnb
from durable_nb import Origin, RunStatus, Status
from durable_nb.journal.context import set_input_hook
from durable_nb.journal.records import INPUT_CALL_ID

ran: collections.Counter[str] = collections.Counter()


def quote(order: str) -> int:
    ran["quote"] += 1
    return 120


def refund(order: str, amount: int) -> str:
    ran["refund"] += 1
    return f"refunded {amount} on {order}"


def refund_flow(order: str, ctx: dnb.RunnerContext) -> str:
    amount = ctx.durable_execute(quote, order)
    answer = ctx.durable_input(f"Refund {amount} EUR?", choices=["yes", "no"])
    if answer != "yes":
        return "kept"
    return ctx.durable_execute(refund, order, amount)


@pytest.fixture(autouse=True)
def _fresh() -> Any:
    ran.clear()
    previous = set_input_hook(None)
    yield
    set_input_hook(previous)


def test_the_first_run_stops_waiting_with_the_prompt_journaled(store):
    runner = dnb.LocalRunner(store)
    with pytest.raises(dnb.AwaitingInput) as info:
        runner.run(refund_flow, "o1", run_id="r1")
    waiting = info.value
    assert isinstance(waiting, dnb.DurableError)
    assert (waiting.run_id, waiting.index, waiting.prompt, waiting.choices) == (
        "r1", 1, "Refund 120 EUR?", ("yes", "no"))
    assert "store.answer('r1', 1, value)" in str(waiting)
    assert store.run("r1").status is RunStatus.WAITING
    call = store.calls("r1")[1]
    assert (call.call_id, call.status, call.prompt, call.choices, call.is_input) == (
        INPUT_CALL_ID, Status.PENDING, "Refund 120 EUR?", ("yes", "no"), True)
    assert [(c.run_id, c.index, c.prompt) for c in store.waiting()] == [("r1", 1, "Refund 120 EUR?")]
    assert ran == {"quote": 1}


def test_running_again_before_an_answer_still_waits_and_writes_no_new_call(store):
    runner = dnb.LocalRunner(store)
    for _ in range(2):
        with pytest.raises(dnb.AwaitingInput):
            runner.run(refund_flow, "o1", run_id="r1")
    assert len(store.calls("r1")) == 2 and store.run("r1").status is RunStatus.WAITING
    assert ran == {"quote": 1}


def test_an_answer_is_journaled_resolved_and_the_next_run_replays_to_it_and_goes_on(store):
    runner = dnb.LocalRunner(store)
    with pytest.raises(dnb.AwaitingInput):
        runner.run(refund_flow, "o1", run_id="r1")
    answered = store.answer("r1", 1, "yes")
    assert (answered.status, answered.origin, answered.result()) == (Status.SUCCEEDED, Origin.RESOLVED, "yes")
    assert store.waiting() == []
    assert runner.run(refund_flow, "o1", run_id="r1") == "refunded 120 on o1"
    assert store.run("r1").status is RunStatus.COMPLETED
    assert [(c.status, c.origin) for c in store.calls("r1")] == [
        (Status.SUCCEEDED, Origin.EXECUTED), (Status.SUCCEEDED, Origin.RESOLVED), (Status.SUCCEEDED, Origin.EXECUTED)]
    assert runner.run(refund_flow, "o1", run_id="r1") == "refunded 120 on o1"
    assert ran == {"quote": 1, "refund": 1}


def test_answers_are_checked_before_anything_is_written(store):
    runner = dnb.LocalRunner(store)
    with pytest.raises(dnb.AwaitingInput):
        runner.run(refund_flow, "o1", run_id="r1")
    with pytest.raises(ValueError, match="'maybe' is not one of the choices"):
        store.answer("r1", 1, "maybe")
    with pytest.raises(ValueError, match="not a durable_input"):
        store.answer("r1", 0, "yes")
    with pytest.raises(ValueError, match="no call at index 5.*index 1 \\('Refund 120 EUR\\?'\\)"):
        store.answer("r1", 5, "yes")
    with pytest.raises(dnb.RunNotFoundError):
        store.answer("nope", 1, "yes")
    with pytest.raises(TypeError, match="call index as an int, got 'r1' and '1'"):
        store.answer("r1", "1", "yes")  # type: ignore[arg-type]
    assert store.calls("r1")[1].status is Status.PENDING
    store.answer("r1", 1, "no")
    with pytest.raises(ValueError, match="already answered"):
        store.answer("r1", 1, "yes")
    assert runner.run(refund_flow, "o1", run_id="r1") == "kept"
    assert ran == {"quote": 1}


def test_an_index_past_64_bits_is_no_such_call_and_a_numpy_index_answers(store):
    """``store.answer(run, 10**20, ...)`` raised OverflowError from SQLite; a ``numpy.int64`` index (read from
    ``store.to_pandas()``) was refused as not an int, though ``store.fork(at=...)`` takes one."""
    import numpy as np

    runner = dnb.LocalRunner(store)
    with pytest.raises(dnb.AwaitingInput):
        runner.run(refund_flow, "o1", run_id="r1")
    for index in (10**20, -(10**20), -1):
        with pytest.raises(ValueError, match=f"no call at index {index}; its inputs waiting.*index 1"):
            store.answer("r1", index, "yes")
    with pytest.raises(TypeError, match="call index as an int, got 'r1' and True"):
        store.answer("r1", True, "yes")
    assert store.calls("r1")[1].status is Status.PENDING
    index = store.to_pandas(run_id="r1")["index"].iloc[1]
    assert isinstance(index, np.integer)
    assert store.answer("r1", index, "yes").index == 1
    assert runner.run(refund_flow, "o1", run_id="r1") == "refunded 120 on o1"


def test_an_input_cannot_be_answered_while_a_live_context_holds_its_run(store):
    """Answered under a context still open, the run would close WAITING over an answered input."""
    with pytest.raises(dnb.AwaitingInput), dnb.LocalRunner(store).context("held") as ctx:  # closes WAITING
        with pytest.raises(dnb.AwaitingInput):
            ctx.durable_input("Refund?", choices=["yes", "no"])
        with pytest.raises(dnb.RunBusyError, match="live context"):
            store.answer("held", 0, "yes")
    assert store.run("held").status is RunStatus.WAITING
    store.answer("held", 0, "yes")  # once it stopped at the input
    assert store.waiting() == []


def test_a_free_answer_can_be_any_picklable_value(store):
    def action(_: object, ctx: dnb.RunnerContext) -> dict:
        return ctx.durable_input("Shipping address?")

    runner = dnb.LocalRunner(store)
    with pytest.raises(dnb.AwaitingInput) as info:
        runner.run(action, None, run_id="r1")
    assert info.value.choices is None and store.waiting()[0].choices is None
    store.answer("r1", 0, {"street": "Main 1", "zip": 1000})
    assert store.run("r1").status is RunStatus.WAITING  # until it is run again
    assert runner.run(action, None, run_id="r1") == {"street": "Main 1", "zip": 1000}
    assert store.run("r1").status is RunStatus.COMPLETED


def test_an_answer_that_cannot_be_pickled_is_refused_as_an_answer_and_the_input_still_waits(store):
    # The refusal used to read as a durable call's result ("produced a _thread.lock ... Return plain
    # data"): the person answering returned nothing, and was not told the input still waits.
    def action(_: object, ctx: dnb.RunnerContext) -> Any:
        return ctx.durable_input("Which lock?")

    runner = dnb.LocalRunner(store)
    with pytest.raises(dnb.AwaitingInput):
        runner.run(action, None, run_id="r1")
    refused = r"(?s)the answer to input 0 of run 'r1' \('Which lock\?'\) is a _thread.lock.*nothing was written.*"
    with pytest.raises(dnb.UnserializableResultError, match=refused + "still waits.*Answer with plain data") as info:
        store.answer("r1", 0, threading.Lock())
    assert (info.value.run_id, info.value.index, info.value.prompt) == ("r1", 0, "Which lock?")
    assert str(pickle.loads(pickle.dumps(info.value))) == str(info.value)
    assert store.call("r1", 0).status is Status.PENDING
    store.answer("r1", 0, "the blue one")
    assert runner.run(action, None, run_id="r1") == "the blue one"


def test_an_input_can_be_answered_at_an_index_read_from_a_dataframe(store):
    # store.to_pandas() gives numpy integers; answering the PENDING row it shows was a TypeError,
    # though fork takes the same index.
    runner = dnb.LocalRunner(store)
    with pytest.raises(dnb.AwaitingInput):
        runner.run(refund_flow, "o1", run_id="r1")
    frame = store.to_pandas()
    row = frame[frame["status"] == "PENDING"].iloc[0]
    assert type(row["index"]).__module__ == "numpy"
    assert store.answer(row["run_id"], row["index"], "yes").origin is Origin.RESOLVED
    assert runner.run(refund_flow, "o1", run_id="r1") == "refunded 120 on o1"


def test_choices_must_be_plain_values_and_the_prompt_a_string(store):
    def bad_choices(_: object, ctx: dnb.RunnerContext) -> Any:
        return ctx.durable_input("pick", choices=[object()])

    def bad_prompt(_: object, ctx: dnb.RunnerContext) -> Any:
        return ctx.durable_input(42)  # type: ignore[arg-type]

    def unordered_choices(_: object, ctx: dnb.RunnerContext) -> Any:
        return ctx.durable_input("pick", choices={"a", "b"})

    runner = dnb.LocalRunner(store)
    with pytest.raises(TypeError, match="choices must be plain values"):
        runner.run(bad_choices, None, run_id="r1")
    with pytest.raises(TypeError, match="list or tuple"):
        runner.run(unordered_choices, None, run_id="r3")
    assert store.calls("r3") == []
    with pytest.raises(TypeError, match="str prompt"):
        runner.run(bad_prompt, None, run_id="r2")
    assert store.calls("r1") == [] and store.calls("r2") == []


def test_an_answer_must_be_a_choice_of_the_same_type_and_the_widget_answers_with_the_one_offered(store):
    """``in`` took True for 1, 1.0 for 1 and a numpy array for "yes": each was journaled and reached the
    action. A button answers with the choice itself, as the journal gave it back: same value, same type."""
    import numpy as np

    from durable_nb.widgets.input_prompt import InputPrompt

    def ask(choices: list[Any]) -> Any:
        return lambda _, ctx: ctx.durable_input("pick", choices=choices)

    runner = dnb.LocalRunner(store)
    cases = [("s", ["yes", "no"], [np.array(["yes"]), np.str_("yes")], "no"),
             ("i", [1, 2], [True, 1.0, np.int64(1)], 2), ("f", [0.5, 1.0], [1, np.float64(1.0)], 1.0),
             ("b", [True, False], [1, 0], False), ("n", [None, "x"], [0, ""], None)]
    for rid, choices, wrong, offered in cases:
        with pytest.raises(dnb.AwaitingInput):
            runner.run(ask(choices), None, run_id=rid)
        for value in wrong:
            with pytest.raises(ValueError, match=f"not one of the choices.*got {type(value).__module__}"
                               if type(value).__module__ == "numpy" else "not one of the choices.*of the same type"):
                store.answer(rid, 0, value)
        assert store.calls(rid)[0].status is Status.PENDING  # nothing written
        [record] = store.waiting(rid)
        prompt = InputPrompt(store, record)
        prompt.choice_buttons[choices.index(offered)].click()
        assert prompt.state == "ANSWERED", prompt.message.value
        answer = runner.run(ask(choices), None, run_id=rid)
        assert answer == offered and type(answer) is type(offered)


def test_choices_the_journal_would_give_back_changed_are_refused_before_anything_is_written(store):
    """A tuple choice came back a list (so the tuple offered was refused as an answer and a list
    accepted); a numpy value came back a plain one."""
    import numpy as np

    runner = dnb.LocalRunner(store)
    for rid, bad in [("t", [(1, 2), (3, 4)]), ("l", ["a", ["b"]]), ("np", [np.float64(1.0), 2.0])]:
        with pytest.raises(TypeError, match=r"choices must be plain values \(str, int, float, bool, None\), got "
                                            r".*\((tuple|list|numpy.float64)\).*Offer plain values"):
            runner.run(lambda _, ctx, bad=bad: ctx.durable_input("pick", choices=bad), None, run_id=rid)
        assert store.calls(rid) == [] and store.waiting() == []


def test_map_reports_a_waiting_record_as_a_waiting_row(store):
    runner = dnb.LocalRunner(store)
    frame = runner.map(refund_flow, ["o1", "o2"], key=lambda o: o)
    assert list(frame["status"]) == ["WAITING", "WAITING"]
    assert "waiting for input" in frame["error"].iloc[0]
    rid = frame["run_id"].iloc[0]
    store.answer(rid, 1, "yes")
    frame = runner.map(refund_flow, ["o1", "o2"], key=lambda o: o)
    assert list(frame["status"]) == ["COMPLETED", "WAITING"]
    assert frame["result"].iloc[0] == "refunded 120 on o1"
    assert ran == {"quote": 2, "refund": 1}


def test_the_input_hook_is_told_after_the_run_is_waiting(store):
    seen = []

    def hook(hook_store: dnb.Store, waiting: dnb.AwaitingInput) -> None:
        seen.append((hook_store.run(waiting.run_id).status, [c.index for c in hook_store.waiting()], waiting.prompt))

    assert set_input_hook(hook) is None
    with pytest.raises(dnb.AwaitingInput):
        dnb.LocalRunner(store).run(refund_flow, "o1", run_id="r1")
    assert seen == [(RunStatus.WAITING, [1], "Refund 120 EUR?")]
    assert set_input_hook(None) is hook


def test_a_failing_hook_is_logged_and_the_run_still_waits(store, caplog):
    def hook(_: dnb.Store, __: dnb.AwaitingInput) -> None:
        raise RuntimeError("widget broke")

    set_input_hook(hook)
    with caplog.at_level(logging.ERROR, logger="durable_nb"), pytest.raises(dnb.AwaitingInput):
        dnb.LocalRunner(store).run(refund_flow, "o1", run_id="r1")
    assert "widget broke" in caplog.text
    assert store.run("r1").status is RunStatus.WAITING


def test_an_action_that_swallows_awaiting_input_still_leaves_the_run_waiting(store):
    def swallow(_: object, ctx: dnb.RunnerContext) -> str:
        try:
            ctx.durable_input("ok?")
        except dnb.AwaitingInput:
            return "ignored"
        return "answered"

    with pytest.raises(dnb.AwaitingInput):
        dnb.LocalRunner(store).run(swallow, None, run_id="r1")
    assert store.run("r1").status is RunStatus.WAITING


@pytest.mark.parametrize("strict", [False, True])
def test_no_durable_call_runs_after_an_unanswered_input_an_action_swallowed(store, strict):
    # AwaitingInput is an Exception: a broad ``except Exception`` (a default, a log line) around the
    # question let the action go on as if "no" had been answered: the next call ran for real, and after
    # the real answer its recorded call no longer matched (strict mode: NonDeterminismError for ever).
    def flow(order: str, ctx: dnb.RunnerContext) -> str:
        try:
            answer = ctx.durable_input("Refund 120 EUR?", choices=["yes", "no"])
        except Exception:
            answer = "no"
        return ctx.durable_execute(refund, order, 120 if answer == "yes" else 0)

    runner = dnb.LocalRunner(store, strict=strict)
    with pytest.raises(dnb.AwaitingInput) as info:
        runner.run(flow, "o1", run_id="r1")
    assert info.value.index == 0
    assert ran["refund"] == 0
    assert [c.call_id for c in store.calls("r1")] == [INPUT_CALL_ID]
    assert store.run("r1").status is RunStatus.WAITING
    store.answer("r1", 0, "yes")
    assert runner.run(flow, "o1", run_id="r1") == "refunded 120 on o1"
    assert ran["refund"] == 1


def test_an_async_action_waits_and_resumes(store):
    async def action(order: str, ctx: dnb.RunnerContext) -> str:
        amount = await ctx.durable_execute_async(quote, order)
        if ctx.durable_input("go?", choices=[True, False]):
            return await ctx.durable_execute_async(refund, order, amount)
        return "kept"

    runner = dnb.LocalRunner(store)
    with pytest.raises(dnb.AwaitingInput):
        asyncio.run(runner.run_async(action, "o1", run_id="r1"))
    store.answer("r1", 1, True)
    assert runner.run(action, "o1", run_id="r1") == "refunded 120 on o1"
    assert ran == {"quote": 1, "refund": 1}


def test_a_waiting_input_survives_a_restart_of_the_sqlite_journal(tmp_path: Path):
    path = tmp_path / "journal.db"
    first = dnb.SqliteStore(path)
    with pytest.raises(dnb.AwaitingInput):
        dnb.LocalRunner(first).run(refund_flow, "o1", run_id="r1")
    first.close()
    second = dnb.SqliteStore(path)
    assert [(c.run_id, c.index, c.prompt, c.choices) for c in second.waiting()] == [
        ("r1", 1, "Refund 120 EUR?", ("yes", "no"))]
    second.answer("r1", 1, "yes")
    second.close()
    third = dnb.SqliteStore(path)
    try:
        assert dnb.LocalRunner(third).run(refund_flow, "o1", run_id="r1") == "refunded 120 on o1"
        assert ran == {"quote": 1, "refund": 1}
    finally:
        third.close()


def test_a_damaged_prompt_column_reads_as_text_and_the_panel_still_opens(tmp_path: Path):
    # A journal is data: a prompt column of '{"prompt": 5, "choices": 5}' raised TypeError in
    # store.waiting(), so ReconcilePanel could not be built for any run of the journal.
    import sqlite3

    store = dnb.SqliteStore(tmp_path / "journal.db")
    with pytest.raises(dnb.AwaitingInput):
        dnb.LocalRunner(store).run(refund_flow, "o1", run_id="r1")
    store.close()
    conn = sqlite3.connect(tmp_path / "journal.db")
    with conn:
        conn.execute("""UPDATE calls SET prompt = '{"prompt": 5, "choices": 5}' WHERE run_id = 'r1'""")
    conn.close()
    store = dnb.SqliteStore(tmp_path / "journal.db")
    try:
        assert [(c.prompt, c.choices) for c in store.waiting()] == [("5", (5,))]
        assert len(dnb.ReconcilePanel(store).inputs) == 1
    finally:
        store.close()


def test_a_dry_run_stops_at_an_unanswered_input(store):
    runner = dnb.LocalRunner(store)
    with pytest.raises(dnb.AwaitingInput):
        runner.run(refund_flow, "o1", run_id="r1")
    report = runner.dry_run(refund_flow, "o1", run_id="r1")
    assert report.stopped_at == 1 and "durable_input" in report.rule
    store.answer("r1", 1, "yes")
    report = runner.dry_run(refund_flow, "o1", run_id="r1")
    assert (report.stopped_at, report.decision, report.replayed) == (2, dnb.Decision.EXECUTE, 2)
    assert ran == {"quote": 1}


_CHILD = '''
import sys
import durable_nb as dnb

LEDGER = sys.argv[2]


def quote(order):
    with open(LEDGER, "a") as fh:
        fh.write("quote\\n")
    return 120


def refund(order, amount):
    with open(LEDGER, "a") as fh:
        fh.write("refund\\n")
    return f"refunded {amount} on {order}"


def flow(order, ctx):
    amount = ctx.durable_execute(quote, order)
    if ctx.durable_input(f"Refund {amount} EUR?", choices=["yes", "no"]) == "yes":
        return ctx.durable_execute(refund, order, amount)
    return "kept"


store = dnb.SqliteStore(sys.argv[1])
phase = sys.argv[3]
if phase == "answer":
    (waiting,) = store.waiting()
    store.answer(waiting.run_id, waiting.index, "yes")
    print("answered", waiting.index)
else:
    try:
        print(dnb.LocalRunner(store).run(flow, "o1", run_id="r1"))
    except dnb.AwaitingInput as exc:
        print("waiting", exc.index)
'''


def test_ask_answer_and_resume_happen_in_three_separate_processes(tmp_path: Path):
    import subprocess
    import sys

    script, db, ledger = tmp_path / "child.py", tmp_path / "journal.db", tmp_path / "ledger.txt"
    script.write_text(_CHILD)
    ledger.write_text("")

    def child(phase: str) -> str:
        done = subprocess.run([sys.executable, str(script), str(db), str(ledger), phase],
                              capture_output=True, text=True, timeout=120, check=True)
        return done.stdout.strip()

    assert child("run") == "waiting 1"
    assert child("answer") == "answered 1"
    assert child("run") == "refunded 120 on o1"
    assert child("run") == "refunded 120 on o1"
    assert ledger.read_text().split() == ["quote", "refund"]


def test_asking_inside_a_durable_call_is_refused_clearly(store):
    def inner() -> Any:
        ctx = dnb.current_context()
        assert ctx is not None
        return ctx.durable_input("inside?")

    def action(_: object, ctx: dnb.RunnerContext) -> Any:
        return ctx.durable_execute(inner)

    with pytest.raises(RuntimeError, match="inside a durable call"):
        dnb.LocalRunner(store).run(action, None, run_id="r1")
    assert store.waiting() == []


@pytest.mark.parametrize("point", ["before_call", "after_call"])
def test_a_crash_while_asking_leaves_a_run_that_asks_again(store, point):
    runner = dnb.LocalRunner(store)
    with dnb.inject_crash(call=INPUT_CALL_ID, point=point), pytest.raises(dnb.SimulatedCrash):
        runner.run(refund_flow, "o1", run_id="r1")
    assert store.run("r1").status is RunStatus.RUNNING  # as kill -9 leaves it, not WAITING
    assert store.calls("r1")[1].status is Status.PENDING
    with pytest.raises(dnb.AwaitingInput) as info:
        runner.run(refund_flow, "o1", run_id="r1")
    assert info.value.index == 1 and store.run("r1").status is RunStatus.WAITING
    assert [(c.index, c.prompt, c.choices) for c in store.waiting()] == [(1, "Refund 120 EUR?", ("yes", "no"))]
    store.answer("r1", 1, "yes")
    assert runner.run(refund_flow, "o1", run_id="r1") == "refunded 120 on o1"
    assert ran == {"quote": 1, "refund": 1}


def test_an_input_whose_question_a_crash_kept_from_the_journal_cannot_be_answered_until_asked_again(store):
    """Killed between the input's PENDING and its prompt, the journal holds no choices to check an
    answer against: an answer then ("maybe" to a yes/no question) would reach the action unchecked."""
    from durable_nb.widgets.input_prompt import NO_QUESTION, InputPrompt

    runner = dnb.LocalRunner(store)
    with dnb.inject_crash(call=INPUT_CALL_ID, point="before_call"), pytest.raises(dnb.SimulatedCrash):
        runner.run(refund_flow, "o1", run_id="r1")
    [unasked] = store.waiting()
    assert (unasked.index, unasked.prompt, unasked.choices) == (1, None, None)
    with pytest.raises(ValueError, match="no question on record.*Run the action"):
        store.answer("r1", 1, "maybe")
    assert store.calls("r1")[1].status is Status.PENDING  # nothing written
    prompt = InputPrompt(store, unasked)
    assert NO_QUESTION in prompt.info.value and "None" not in prompt.info.value
    assert prompt.answer_button.disabled and prompt.text.disabled
    with pytest.raises(dnb.AwaitingInput):
        runner.run(refund_flow, "o1", run_id="r1")  # asks again: the question is on record now
    with pytest.raises(ValueError, match="not one of the choices"):
        store.answer("r1", 1, "maybe")
    store.answer("r1", 1, "no")
    assert runner.run(refund_flow, "o1", run_id="r1") == "kept"


_KILLED_CHILD = _CHILD.replace("phase = sys.argv[3]", '''phase = sys.argv[3]
if phase == "kill":
    import os
    import signal
    from durable_nb.journal import faults

    def die(point, call_id):
        if point == sys.argv[4] and call_id == "durable_nb.durable_input":
            os.kill(os.getpid(), signal.SIGKILL)

    faults.add_hook(die)
''')


@pytest.mark.parametrize("point", ["before_call", "after_call"])
def test_a_process_killed_while_asking_leaves_a_journal_that_asks_again(tmp_path: Path, point: str):
    import signal
    import subprocess
    import sys

    script, db, ledger = tmp_path / "child.py", tmp_path / "journal.db", tmp_path / "ledger.txt"
    script.write_text(_KILLED_CHILD)
    ledger.write_text("")

    def child(*phase: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, str(script), str(db), str(ledger), *phase],
                              capture_output=True, text=True, timeout=120)

    assert child("kill", point).returncode == -signal.SIGKILL
    assert child("run").stdout.strip() == "waiting 1"
    assert child("answer").stdout.strip() == "answered 1"
    assert child("run").stdout.strip() == "refunded 120 on o1"
    assert ledger.read_text().split() == ["quote", "refund"]
