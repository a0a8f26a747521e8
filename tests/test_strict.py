"""Strict mode: a non-deterministic recovery raises NonDeterminismError and discards nothing."""

from __future__ import annotations

import collections
import pickle

import pytest

import durable_nb as dnb
from durable_nb import RunStatus, Status

ran: collections.Counter[str] = collections.Counter()


def charge(order: str, amount: int) -> dict:
    ran["charge"] += 1
    return {"order": order, "charged": amount}


def refund(order: str) -> str:
    ran["refund"] += 1
    return f"refund {order}"


def notify(order: str) -> str:
    ran["notify"] += 1
    return f"mail {order}"


def place_order(order: str, ctx: dnb.RunnerContext) -> str:
    c = ctx.durable_execute(charge, order, 10)
    return ctx.durable_execute(notify, c["order"])


def place_order_changed(order: str, ctx: dnb.RunnerContext) -> str:
    c = ctx.durable_execute(charge, order, 10)
    return ctx.durable_execute(refund, c["order"])  # another function at index 1


@pytest.fixture(autouse=True)
def _fresh_counter() -> None:
    ran.clear()


def test_a_mismatch_raises_naming_run_index_and_both_calls_and_discards_nothing(store):
    dnb.LocalRunner(store).run(place_order, "o1", run_id="r1")
    before = store.calls("r1")
    with pytest.raises(dnb.NonDeterminismError) as info:
        dnb.LocalRunner(store, strict=True).run(place_order_changed, "o1", run_id="r1")
    err = info.value
    assert isinstance(err, dnb.DurableError)
    assert (err.run_id, err.index) == ("r1", 1)
    assert (err.recorded_call_id, err.recorded_args_digest) == (before[1].call_id, before[1].args_digest)
    assert err.call_id == f"{__name__}.refund" and err.args_digest
    assert "'r1'" in str(err) and "call 1" in str(err) and "refund" in str(err) and "notify" in str(err)
    assert store.calls("r1") == before
    assert store.discarded() == [] and store.run("r1").n_discarded == 0
    assert ran == {"charge": 1, "notify": 1}  # refund never ran
    assert store.run("r1").status is RunStatus.COMPLETED and store.run("r1").attempts == 1  # nothing written


def test_without_strict_the_same_mismatch_warns_and_discards(store):
    dnb.LocalRunner(store).run(place_order, "o1", run_id="r1")
    with pytest.warns(dnb.NonDeterminismWarning):
        out = dnb.LocalRunner(store).run(place_order_changed, "o1", run_id="r1")
    assert out == "refund o1"
    assert [d.call_id for d in store.discarded("r1")] == [f"{__name__}.notify"]


def test_changed_arguments_are_a_mismatch_too(store):
    def changed_amount(order: str, ctx: dnb.RunnerContext) -> dict:
        return ctx.durable_execute(charge, order, 99)

    dnb.LocalRunner(store).run(place_order, "o1", run_id="r1")
    with pytest.raises(dnb.NonDeterminismError) as info:
        dnb.LocalRunner(store, strict=True).run(changed_amount, "o1", run_id="r1")
    assert info.value.index == 0 and info.value.call_id == info.value.recorded_call_id
    assert info.value.args_digest != info.value.recorded_args_digest
    assert ran == {"charge": 1, "notify": 1}


def test_an_action_that_stops_before_a_recorded_call_raises_in_strict_mode(store):
    def shorter(order: str, ctx: dnb.RunnerContext) -> dict:
        return ctx.durable_execute(charge, order, 10)

    dnb.LocalRunner(store).run(place_order, "o1", run_id="r1")
    with pytest.raises(dnb.NonDeterminismError, match="finished before reaching it") as info:
        dnb.LocalRunner(store, strict=True).run(shorter, "o1", run_id="r1")
    assert info.value.index == 1 and info.value.call_id is None
    assert len(store.calls("r1")) == 2 and store.discarded() == []


@pytest.mark.parametrize("where", ["at the end", "mid-way"])
def test_a_strict_run_that_wrote_before_raising_keeps_the_runs_status(store, where):
    """A COMPLETED run holding a PENDING call (its result could not be pickled): a strict run re-executed it,
    which made the run RUNNING, then raised NonDeterminismError; the run stayed RUNNING with no owner (a
    crashed run to prune and to recovery). README: "nothing is discarded and the run keeps its status"."""
    import threading

    pickles = []

    def result() -> object:
        return "ok" if pickles else threading.Lock()

    def first(order: str, ctx: dnb.RunnerContext) -> str:
        ctx.durable_execute(charge, order, 10)
        ctx.durable_execute(result)
        return ctx.durable_execute(notify, order)

    def second(order: str, ctx: dnb.RunnerContext) -> object:
        ctx.durable_execute(charge, order, 10)
        ctx.durable_execute(result)
        return ctx.durable_execute(refund, order) if where == "mid-way" else None

    with pytest.warns(dnb.UnserializableResultWarning):
        dnb.LocalRunner(store).run(first, "o1", run_id="r1")
    assert store.run("r1").status is RunStatus.COMPLETED
    assert [c.status for c in store.calls("r1")] == [Status.SUCCEEDED, Status.PENDING, Status.SUCCEEDED]
    pickles.append(True)
    with pytest.raises(dnb.NonDeterminismError):
        dnb.LocalRunner(store, strict=True).run(second, "o1", run_id="r1")
    assert store.run("r1").status is RunStatus.COMPLETED
    assert [c.status for c in store.calls("r1")] == [Status.SUCCEEDED] * 3  # re-executed, nothing discarded
    assert dnb.LocalRunner(store).run(first, "o1", run_id="r1") == "mail o1"  # not RunBusyError: no one holds it


def test_a_deterministic_recovery_is_unaffected_by_strict_mode(store):
    runner = dnb.LocalRunner(store, strict=True)
    assert runner.strict is True
    runner.run(place_order, "o1", run_id="r1")
    assert runner.run(place_order, "o1", run_id="r1") == "mail o1"
    assert ran == {"charge": 1, "notify": 1}


def test_strict_applies_to_map_and_to_runner_context(store):
    changed = []

    def flow(order: str, ctx: dnb.RunnerContext) -> str:  # one action name: one run id per key
        return (place_order_changed if changed else place_order)(order, ctx)

    dnb.LocalRunner(store).map(flow, ["o1"], key=lambda o: o)
    changed.append(True)
    frame = dnb.LocalRunner(store, strict=True).map(flow, ["o1"], key=lambda o: o)
    assert list(frame["status"]) == ["FAILED"] and "NonDeterminismError" in frame["error"].iloc[0]
    with dnb.LocalRunner(store).context("c1") as ctx:
        ctx.durable_execute(notify, "a")
    with pytest.raises(dnb.NonDeterminismError), dnb.LocalRunner(store, strict=True).context("c1") as ctx:
        ctx.durable_execute(refund, "a")
    assert [c.status for c in store.calls("c1")] == [Status.SUCCEEDED]


def test_an_unpicklable_result_raises_in_strict_mode_and_the_call_stays_pending(store):
    import threading

    def make_lock() -> threading.Lock:
        ran["lock"] += 1
        return threading.Lock()

    def action(_: object, ctx: dnb.RunnerContext) -> object:
        return ctx.durable_execute(make_lock)

    with pytest.raises(dnb.UnserializableResultError):
        dnb.LocalRunner(store, strict=True).run(action, None, run_id="r1")
    assert [c.status for c in store.calls("r1")] == [Status.PENDING]


def test_non_determinism_error_survives_pickling():
    err = dnb.NonDeterminismError("r1", 3, "m.f", "d1", "m.g", "d2")
    back = pickle.loads(pickle.dumps(err))
    assert (back.run_id, back.index, back.recorded_call_id, back.call_id, str(back)) == (
        "r1", 3, "m.f", "m.g", str(err))


@pytest.mark.parametrize("wrong", ["no", "yes", None, 1])
def test_strict_that_is_not_a_bool_is_refused_before_anything_is_opened(tmp_path, wrong):
    """``strict="no"`` used to be read as true (any non-empty string), ``strict=None`` as false, silently."""
    with pytest.raises(TypeError, match=r"strict must be True or False .*NonDeterminismError.*got "):
        dnb.LocalRunner(tmp_path / "journal.db", strict=wrong)
    assert not (tmp_path / "journal.db").exists()  # refused before the journal file was made

