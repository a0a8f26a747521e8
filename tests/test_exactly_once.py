"""Exactly once, whatever the input (issue 9): each side effect runs once, replays are right, errors are clear.

Every test counts what really ran (``Counter``s) and reads the journal back,
because "it returned the right value" cannot tell a replay from a re-execution.
"""

from __future__ import annotations

import _thread
import asyncio
import collections
import importlib
import math
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import durable_nb as dnb
from durable_nb import Origin, RunStatus, Status
from durable_nb.errors import RecordDecodeError, UnserializableResultWarning
from durable_nb.journal.callid import default_call_id

ran: collections.Counter[str] = collections.Counter()
DONE = ("SUCCEEDED", "EXECUTED")


@pytest.fixture(autouse=True)
def _reset():
    ran.clear()


def send_email(to: str) -> str:
    ran["email"] += 1
    return f"sent to {to}"


def inner_lookup(order: str) -> dict:
    ran["inner"] += 1
    return {"order": order, "found": True}


def journal(store: dnb.Store, run_id: str) -> list[tuple]:
    return [(c.index, c.call_id.rsplit(".", 1)[-1], c.status.value, c.origin and c.origin.value)
            for c in store.calls(run_id)]


# ---------------------------------------------------------------- nested durable calls


def outer_charge(order: str) -> dict:
    ran["outer"] += 1
    ctx = dnb.current_context()
    assert ctx is not None
    return ctx.durable_execute(inner_lookup, order)  # part of outer_charge: not journaled


def nested_action(order: str, ctx: dnb.RunnerContext) -> str:
    charge = ctx.durable_execute(outer_charge, order)
    return ctx.durable_execute(send_email, charge["order"])


def test_a_durable_call_inside_a_durable_function_is_part_of_it_and_never_repeats_the_next_call(store):
    runner = dnb.LocalRunner(store)
    assert runner.run(nested_action, "o1", run_id="n") == "sent to o1"
    assert journal(store, "n") == [(0, "outer_charge", *DONE), (1, "send_email", *DONE)]
    # A recovery replays both calls: no mismatch (NonDeterminismWarning is an error here), no second e-mail.
    assert runner.run(nested_action, "o1", run_id="n") == "sent to o1"
    assert (ran["outer"], ran["inner"], ran["email"]) == (1, 1, 1)
    assert len(store.calls("n")) == 2


def test_a_crashed_outer_call_reruns_with_its_nested_calls_and_the_email_is_sent_once(store):
    runner = dnb.LocalRunner(store)
    with pytest.raises(dnb.SimulatedCrash), dnb.inject_crash(call=default_call_id(outer_charge)):
        runner.run(nested_action, "o1", run_id="c")
    assert journal(store, "c") == [(0, "outer_charge", "PENDING", None)]
    assert runner.run(nested_action, "o1", run_id="c") == "sent to o1"
    assert (ran["outer"], ran["inner"], ran["email"]) == (2, 2, 1)  # at-least-once for the outer call only
    assert journal(store, "c") == [(0, "outer_charge", *DONE), (1, "send_email", *DONE)]


def charge_card(order: str) -> dict:
    ran["charge"] += 1
    return {"order": order}


def test_durable_calls_made_by_a_reconciler_are_part_of_the_reconciliation(store):
    runner = dnb.LocalRunner(store)

    def action(order, ctx):
        charge = ctx.durable_execute(charge_card, order,
                                     reconciler=lambda: ctx.durable_execute(inner_lookup, order))
        return ctx.durable_execute(send_email, charge["order"])

    with pytest.raises(dnb.SimulatedCrash), dnb.inject_crash(call=default_call_id(charge_card)):
        runner.run(action, "o1", run_id="r")
    assert runner.run(action, "o1", run_id="r") == "sent to o1"
    assert runner.run(action, "o1", run_id="r") == "sent to o1"
    assert (ran["charge"], ran["inner"], ran["email"]) == (1, 1, 1)
    assert journal(store, "r") == [(0, "charge_card", "SUCCEEDED", "RECONCILED"), (1, "send_email", *DONE)]


def test_sixteen_threads_sharing_one_context_each_journal_their_own_calls(store):
    barrier = threading.Barrier(16)

    def work(i: int) -> int:
        barrier.wait(timeout=30)  # all 16 threads are inside a durable call at the same time
        ctx = dnb.current_context()
        return ctx.durable_execute(inner_lookup, f"o{i}")["found"] if ctx else i

    with dnb.LocalRunner(store).context("threads") as ctx:
        results: list[int] = []

        def thread_main(i: int) -> None:
            results.append(ctx.durable_execute(work, i))  # another thread being inside a call must not matter

        threads = [threading.Thread(target=thread_main, args=(i,)) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    calls = store.calls("threads")
    assert len(results) == 16 and len(calls) == 16
    assert {c.call_id.rsplit(".", 1)[-1] for c in calls} == {"work"}
    assert all(c.status is Status.SUCCEEDED for c in calls)


def _call_in_a_thread(ctx, func, results):
    """Start a thread making one durable call in ``ctx``'s run; it appends the result or the error's name."""
    def main() -> None:
        try:
            results.append(ctx.durable_execute(func))
        except BaseException as exc:
            results.append(type(exc).__name__)

    thread = threading.Thread(target=main)
    thread.start()
    return thread


def test_a_run_ends_only_once_a_durable_call_another_thread_makes_in_it_is_journaled(store):
    started, results = threading.Event(), []

    def ship() -> str:
        started.set()
        ran["ship"] += 1
        time.sleep(0.3)  # still running when the with block ends
        return "parcel"

    ran.clear()
    with dnb.LocalRunner(store).context("bg") as ctx:
        thread = _call_in_a_thread(ctx, ship, results)
        assert started.wait(10)
    thread.join()
    assert results == ["parcel"]  # its outcome was not refused as written after the run's end
    assert journal(store, "bg") == [(0, "ship", *DONE)]
    assert store.run("bg").status is RunStatus.COMPLETED
    with dnb.LocalRunner(store).context("bg") as ctx:  # a recovery replays it: shipped once
        assert ctx.durable_execute(ship) == "parcel"
    assert ran["ship"] == 1


def test_a_run_ending_while_another_threads_pending_commits_waits_for_that_call(store, monkeypatch):
    """The call counted only once its PENDING was durable: a run that ended during that commit's wait (an
    fsync; the thread descheduled) was COMPLETED with the call PENDING, the function then ran (shipped),
    and its outcome was refused as written after the run's end."""
    from durable_nb.journal.replay import Journal

    waiting, results = threading.Event(), []
    wait_durable = Journal.wait_durable

    def slow_wait(self, step, durable):
        wait_durable(self, step, durable)
        waiting.set()
        time.sleep(0.3)  # the PENDING is durable; the thread has not come back from the wait yet

    monkeypatch.setattr(Journal, "wait_durable", slow_wait)
    ran.clear()

    def ship() -> str:
        ran["ship"] += 1
        return "parcel"

    with dnb.LocalRunner(store).context("bg") as ctx:
        thread = _call_in_a_thread(ctx, ship, results)
        assert waiting.wait(10)
    thread.join()
    assert results == ["parcel"]
    assert journal(store, "bg") == [(0, "ship", *DONE)]
    assert store.run("bg").status is RunStatus.COMPLETED


def test_a_run_ends_only_once_an_async_call_on_another_threads_event_loop_is_journaled(store):
    """Only sync calls were waited for: a thread running ``asyncio.run`` over ``durable_execute_async`` left
    the run COMPLETED with its call PENDING, shipped, and the outcome refused."""
    started, results = threading.Event(), []

    def ship() -> str:
        started.set()
        ran["ship"] += 1
        time.sleep(0.3)
        return "parcel"

    ran.clear()
    with dnb.LocalRunner(store).context("bg") as ctx:
        thread = threading.Thread(target=lambda: results.append(asyncio.run(ctx.durable_execute_async(ship))))
        thread.start()
        assert started.wait(10)
    thread.join()
    assert results == ["parcel"]
    assert journal(store, "bg") == [(0, "ship", *DONE)]
    assert store.run("bg").status is RunStatus.COMPLETED


def test_ctrl_c_while_a_run_waits_for_another_threads_call_leaves_it_pending_and_the_run_free(store):
    started, release, results = threading.Event(), threading.Event(), []

    def ship() -> str:
        started.set()
        release.wait(10)
        return "parcel"

    with pytest.raises(KeyboardInterrupt), dnb.LocalRunner(store).context("bg") as ctx:
        thread = _call_in_a_thread(ctx, ship, results)
        assert started.wait(10)
        threading.Timer(0.2, _thread.interrupt_main).start()  # the user presses Interrupt during the wait
    release.set()
    thread.join()
    assert results == ["LeaseLostError"]  # the run was closed as a crash leaves it: nothing written late
    assert [(c.status, c.origin) for c in store.calls("bg")] == [(Status.PENDING, None)]
    assert store.run("bg").status is RunStatus.RUNNING
    with dnb.LocalRunner(store).context("bg") as ctx:  # not busy: a recovery reconciles it
        assert ctx.durable_execute(ship, reconciler=lambda: "found") == "found"


def test_asyncio_tasks_track_nesting_separately(store):
    runner = dnb.LocalRunner(store)

    async def action(order, ctx):
        started, release = asyncio.Event(), asyncio.Event()

        async def slow_outer() -> dict:
            ran["outer"] += 1
            started.set()
            await release.wait()
            return await ctx.durable_execute_async(inner_lookup, order)  # nested: plain

        async def other() -> str:
            await started.wait()  # slow_outer is inside its durable call now, in another task
            value = await ctx.durable_execute_async(send_email, order)  # journaled
            release.set()
            return value

        return await asyncio.gather(ctx.durable_execute_async(slow_outer), other())

    out = asyncio.run(runner.run_async(action, "o1", run_id="t"))
    assert out == [{"order": "o1", "found": True}, "sent to o1"]
    assert sorted(c.call_id.rsplit(".", 1)[-1] for c in store.calls("t")) == ["send_email", "slow_outer"]
    assert (ran["outer"], ran["inner"], ran["email"]) == (1, 1, 1)


def test_a_run_opened_inside_a_durable_call_journals_its_own_calls(store):
    runner = dnb.LocalRunner(store)

    def sub_action(order, ctx):
        return ctx.durable_execute(send_email, order)

    def starts_a_run(order: str) -> str:
        return runner.run(sub_action, order, run_id="sub")

    with runner.context("top") as ctx:
        ctx.durable_execute(starts_a_run, "o1")
    assert journal(store, "sub") == [(0, "send_email", "SUCCEEDED", "EXECUTED")]
    assert journal(store, "top") == [(0, "starts_a_run", "SUCCEEDED", "EXECUTED")]


# ---------------------------------------------------------------- async functions to durable_execute


async def async_charge(order: str) -> dict:
    ran["async"] += 1
    return {"order": order}


def test_durable_execute_of_a_coroutine_function_is_refused_before_anything_is_written(store):
    refused = pytest.raises(TypeError, match=r"async_charge.*durable_execute_async.*Nothing was written")
    with dnb.LocalRunner(store).context("a") as ctx, refused:
        ctx.durable_execute(async_charge, "o1")
    assert store.calls("a") == [] and ran["async"] == 0


# ---------------------------------------------------------------- closures that rebind their own variables


def test_a_closure_counting_its_calls_keeps_its_identity_and_recovery_reconciles(store):
    runner = dnb.LocalRunner(store)
    count = 0

    def bump(order: str) -> int:
        nonlocal count
        count += 1
        ran["bump"] += 1
        return count

    def action(order, ctx):
        return ctx.durable_execute(bump, order, reconciler=lambda: ran.update(["reconciled"]) or 99)

    with pytest.raises(dnb.SimulatedCrash), dnb.inject_crash(call=default_call_id(bump)):
        runner.run(action, "o1", run_id="k")
    # Same kernel, count is now 1: the call is still "the same call" and its reconciler recovers it.
    assert runner.run(action, "o1", run_id="k") == 99
    assert (ran["bump"], ran["reconciled"]) == (1, 1)
    assert journal(store, "k") == [(0, "bump", "SUCCEEDED", "RECONCILED")]


# ---------------------------------------------------------------- map keys that print alike


def pay(record, ctx):
    return ctx.durable_execute(send_email, str(record["who"]))


def test_map_keys_that_print_alike_get_runs_of_their_own(store):
    nan = float("nan")
    records = [{"k": 1, "who": "a"}, {"k": "1", "who": "b"}, {"k": None, "who": "c"}, {"k": "None", "who": "d"},
               {"k": nan, "who": "e"}, {"k": float("nan"), "who": "f"}, {"k": None, "who": "g"}]
    runner = dnb.LocalRunner(store)
    first = runner.map(pay, records, key="k")
    assert first["run_id"].nunique() == len(records)
    assert list(first["status"]) == ["COMPLETED"] * len(records)
    assert ran["email"] == len(records)
    again = runner.map(pay, records, key="k")  # a re-map replays every record: no second e-mail
    assert ran["email"] == len(records)
    assert list(again["run_id"]) == list(first["run_id"])
    assert [r["result"] for _, r in again.iterrows()] == [f"sent to {r['who']}" for r in records]
    keys = list(again["k"])
    assert keys[0] == 1 and keys[1] == "1" and keys[2] is None and math.isnan(keys[4])


def test_plain_str_and_int_keys_keep_the_run_ids_journals_already_have(store):
    frame = dnb.LocalRunner(store).map(pay, [{"k": "o1", "who": "a"}, {"k": 7, "who": "b"}, {"k": "o1", "who": "c"}],
                                       key="k")
    name = default_call_id(pay)
    assert list(frame["run_id"]) == [f"{name}/o1#0", f"{name}/7#0", f"{name}/o1#1"]


def test_map_over_something_that_is_not_records_names_the_fix(store):
    with pytest.raises(TypeError, match=r"got int \('42'\); wrap a single record in a list"):
        dnb.LocalRunner(store).map(pay, 42)


def greet(person, ctx):
    return ctx.durable_execute(str.__add__, "hi ", person)


def test_map_over_a_set_needs_a_key_because_its_order_changes_between_processes(store):
    people = frozenset({"ann", "bob", "cy"})
    with pytest.raises(TypeError, match=r"map over a frozenset needs a key.*key=lambda r: r"):
        dnb.LocalRunner(store).map(greet, people)
    assert store.runs() == []
    frame = dnb.LocalRunner(store).map(greet, people, key=lambda r: r)
    assert sorted(frame["result"]) == ["hi ann", "hi bob", "hi cy"]


# ---------------------------------------------------------------- replayed exceptions


class PaymentError(Exception):
    def __init__(self, code: int, detail: str) -> None:
        self.code = code
        self.detail = detail
        super().__init__(f"payment failed [{code}]: {detail}")


class CardDeclined(ValueError):
    pass


def test_an_exception_with_a_custom_init_replays_as_its_class_with_args_and_attributes(store):
    def fail(order):
        ran["fail"] += 1
        raise PaymentError(402, f"insufficient funds for {order}")

    def action(order, ctx):
        try:
            ctx.durable_execute(fail, order)
        except PaymentError as exc:
            return ("handled", exc.code, exc.detail, exc.args)

    runner = dnb.LocalRunner(store)
    first = runner.run(action, "o1", run_id="e")
    assert runner.run(action, "o1", run_id="e") == first == (
        "handled", 402, "insufficient funds for o1", ("payment failed [402]: insufficient funds for o1",))
    assert ran["fail"] == 1


def test_an_exception_with_an_unpicklable_attribute_keeps_its_class_and_the_other_attributes(store):
    def fail(order):
        ran["fail"] += 1
        exc = CardDeclined(f"card declined for {order}")
        exc.retry_after = 30
        exc.connection = threading.Lock()  # cannot be pickled
        raise exc

    def action(order, ctx):
        try:
            ctx.durable_execute(fail, order)
        except ValueError as exc:  # an except path that worked on the first run works on replay
            return (type(exc).__name__, str(exc), getattr(exc, "retry_after", None), hasattr(exc, "connection"))

    runner = dnb.LocalRunner(store)
    assert runner.run(action, "o1", run_id="u") == ("CardDeclined", "card declined for o1", 30, True)
    assert runner.run(action, "o1", run_id="u") == ("CardDeclined", "card declined for o1", 30, False)
    assert ran["fail"] == 1


class Ticket:
    """Pickles (its ``__reduce__`` forgets the argument ``__init__`` needs) and fails to load."""

    def __init__(self, number: int) -> None:
        self.number = number

    def __reduce__(self):
        return (Ticket, ())


def test_a_result_whose_own_loading_code_fails_names_that_code_not_a_missing_class(store):
    runner = dnb.LocalRunner(store)
    with runner.context("broken") as ctx:
        ctx.durable_execute(Ticket, 7)
    expected = r"every class it names can be imported.*__reduce__.*store\.fork"
    with pytest.raises(RecordDecodeError, match=expected) as err, runner.context("broken") as ctx:
        ctx.durable_execute(Ticket, 7)
    assert err.value.class_name is None and "importable again" not in str(err.value)
    assert store.calls("broken")[0].status is Status.SUCCEEDED  # the journal left as it was


def test_a_result_whose_class_was_deleted_names_run_call_and_class_and_changes_nothing(store, tmp_path: Path):
    module = tmp_path / "vanishing_receipts.py"
    module.write_text(textwrap.dedent("""
        class Receipt:
            def __init__(self, order):
                self.order = order
    """))
    sys.path.insert(0, str(tmp_path))
    try:
        receipts = importlib.import_module("vanishing_receipts")

        def make_receipt(order):
            ran["receipt"] += 1
            return receipts.Receipt(order)

        runner = dnb.LocalRunner(store)
        with runner.context("gone") as ctx:
            ctx.durable_execute(make_receipt, "o1")
        before = [(c.status, c.origin, c.payload) for c in store.calls("gone")]
        module.unlink()
        del sys.modules["vanishing_receipts"]
        importlib.invalidate_caches()
        expected = r"call 0 .*make_receipt.*run 'gone'.*vanishing_receipts\.Receipt.*importable"
        with pytest.raises(RecordDecodeError, match=expected) as err, runner.context("gone") as ctx:
            ctx.durable_execute(make_receipt, "o1")
        assert (err.value.run_id, err.value.index) == ("gone", 0)
        assert store.run("gone").status is RunStatus.COMPLETED  # not rewritten as FAILED
        assert [(c.status, c.origin, c.payload) for c in store.calls("gone")] == before
        assert ran["receipt"] == 1
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("vanishing_receipts", None)


# ---------------------------------------------------------------- results that cannot be pickled


def test_an_unpicklable_result_is_returned_with_a_warning_and_recovered_later(store):
    lock = threading.Lock()

    def open_connection(order):
        ran["connect"] += 1
        return lock

    def action(order, ctx):
        conn = ctx.durable_execute(open_connection, order)
        ctx.durable_execute(send_email, order)
        return conn is lock

    runner = dnb.LocalRunner(store)
    with pytest.warns(UnserializableResultWarning, match=r"open_connection.*run 'p', index 0.*_thread.lock"):
        assert runner.run(action, "o1", run_id="p") is True
    assert journal(store, "p") == [(0, "open_connection", "PENDING", None), (1, "send_email", "SUCCEEDED", "EXECUTED")]
    with pytest.warns(UnserializableResultWarning):
        assert runner.run(action, "o1", run_id="p") is True  # re-executed (no reconciler), e-mail replayed
    assert (ran["connect"], ran["email"]) == (2, 1)
    assert store.calls("p")[0].status is Status.PENDING and store.calls("p")[1].origin is Origin.EXECUTED


# ---------------------------------------------------------------- frames as arguments


def total_rows(frame) -> str:
    ran["frame"] += 1
    return f"{len(frame)} rows, first {frame.iloc[0, 0]!r}"


def test_a_frame_with_list_and_dict_cells_is_a_durable_argument_and_replays(store):
    import pandas as pd

    frame = pd.DataFrame({"items": [[1, 2], {"sku": "a"}], "n": [1, 2]})
    runner = dnb.LocalRunner(store)
    for _ in range(2):
        with runner.context("f") as ctx:
            assert ctx.durable_execute(total_rows, frame) == "2 rows, first [1, 2]"
    assert ran["frame"] == 1


def test_frames_that_differ_only_by_1_and_str_1_never_replay_each_others_result(store):
    import pandas as pd

    ints = pd.DataFrame({"v": [1, "x"]})
    strings = pd.DataFrame({"v": ["1", "x"]})
    runner = dnb.LocalRunner(store)
    with runner.context("m") as ctx:
        assert ctx.durable_execute(total_rows, ints) == "2 rows, first 1"
    with pytest.warns(dnb.NonDeterminismWarning), runner.context("m") as ctx:
        assert ctx.durable_execute(total_rows, strings) == "2 rows, first '1'"
    assert ran["frame"] == 2


def test_numpy_scalar_keys_keep_the_run_ids_of_the_python_values_they_hold():
    import numpy as np

    from durable_nb.runners.mapping import run_id_for

    assert run_id_for("a", np.int64(7), 0) == run_id_for("a", 7, 0) == "a/7#0"


_keys = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=5),
                  st.tuples(st.text(max_size=2), st.integers()))


@settings(max_examples=400, deadline=None)
@given(_keys, _keys)
def test_keys_of_different_types_or_values_never_share_a_run_id(a, b):
    from durable_nb.runners.mapping import run_id_for

    if type(a) is not type(b) or repr(a) != repr(b):
        assert run_id_for("act", a, 0) != run_id_for("act", b, 0)
