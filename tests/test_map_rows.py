"""``map``'s rows (one typed MapRow per record, shared by the runners) and its progress bar; a cell's typed outcome."""

from __future__ import annotations

import pickle
import threading
from typing import Any

import pytest
from shell_harness import run

import durable_nb as dnb
from durable_nb.notebook.outcome import CellOutcome, DisplayedResult, NamedResult, PickledResult
from durable_nb.runners.rows import MapRow, apply_action


def double_unless_three(x: int, ctx: dnb.RunnerContext) -> int:
    if x == 3:
        raise ValueError("three is not welcome")
    return ctx.durable_execute(abs, x) * 2


def test_map_rows_keep_input_order_and_a_raising_record_is_a_failed_row(store: dnb.Store) -> None:
    frame = dnb.LocalRunner(store).map(double_unless_three, [1, 3, -2])
    assert list(frame.columns) == ["key", "run_id", "status", "result", "error"]
    assert list(frame.status) == ["COMPLETED", "FAILED", "COMPLETED"]
    assert list(frame.result) == [2, None, 4]  # ints stay ints beside the failed record's None
    assert frame.error[1] == "ValueError: three is not welcome"
    assert store.run(frame.run_id[1]).status is dnb.RunStatus.FAILED  # open_run recorded the run FAILED


def shout_unless_empty(word: str, ctx: dnb.RunnerContext) -> str | None:
    if not word:
        raise ValueError("nothing to shout")
    return None if word == "quiet" else word.upper()


def test_text_results_keep_a_failed_or_returned_none_as_none_on_every_pandas(store: dnb.Store) -> None:
    """pandas 3 infers text as its ``str`` dtype, turning None into nan; the column holds the values as returned."""
    frame = dnb.LocalRunner(store).map(shout_unless_empty, ["a", "", "quiet"])
    assert list(frame.status) == ["COMPLETED", "FAILED", "COMPLETED"]
    assert list(frame.result) == ["A", None, None]
    assert dnb.LocalRunner(store).map(shout_unless_empty, ["a", "b"]).result.tolist() == ["A", "B"]


def test_a_key_field_named_like_a_result_column_comes_back_as_key(store: dnb.Store) -> None:
    import pandas as pd

    runner = dnb.LocalRunner(store)
    frame = runner.map(lambda rec, ctx: rec["status"] * 2, pd.DataFrame({"status": [1, 2]}), key="status")
    assert list(frame.columns) == ["key", "run_id", "status", "result", "error"]
    assert list(frame.key) == [1, 2] and list(frame.status) == ["COMPLETED", "COMPLETED"]
    with pytest.raises(KeyError, match=r"no field 'id' \(its fields: status, amount\)"):
        runner.map(lambda rec, ctx: 0, [{"status": 1, "amount": 2}], key="id")


def test_a_key_that_is_the_frames_index_says_to_reset_the_index(store: dnb.Store) -> None:
    """``pd.read_csv(...).set_index("order_id")`` then ``key="order_id"``: the index is not in a record."""
    import pandas as pd

    orders = pd.DataFrame({"order_id": [7, 8], "amount": [5, 6]}).set_index("order_id")
    runner = dnb.LocalRunner(store)
    with pytest.raises(KeyError, match=r"'order_id' is the DataFrame's index, not a column.*df.reset_index\(\)"):
        runner.map(lambda rec, ctx: rec["amount"], orders, key="order_id")
    assert store.runs() == []
    frame = runner.map(lambda rec, ctx: rec["amount"], orders.reset_index(), key="order_id")
    assert list(frame.order_id) == [7, 8] and list(frame.result) == [5, 6]


def test_a_key_name_on_dataclass_records_says_it_is_an_attribute_and_how_to_key_by_it(store: dnb.Store) -> None:
    """It said the record 'has no field 'customer'' while the record's repr showed that field."""
    import dataclasses

    @dataclasses.dataclass
    class Order:
        id: int
        customer: str

    with pytest.raises(KeyError, match=r"record 0 is a Order, whose 'customer' is an attribute") as raised:
        dnb.LocalRunner(store).map(lambda rec, ctx: 0, [Order(1, "ada")], key="customer")
    assert "has no field" not in str(raised.value) and "key=lambda r: r.customer" in str(raised.value)
    assert store.runs() == []


def test_an_action_name_holding_a_slash_is_warned_about_since_another_actions_run_ids_could_equal_its(
    store: dnb.Store,
) -> None:
    """``shop/eu`` keyed ``c`` and ``shop`` keyed ``eu/c`` both make ``shop/eu/c#0``: the second map replayed
    the first one's calls as its own."""
    eu = dnb.durable(name="shop/eu")(lambda r, ctx: ctx.durable_execute(str.upper, r["k"]))
    shop = dnb.durable(name="shop")(lambda r, ctx: ctx.durable_execute(str.upper, r["k"]))
    with pytest.warns(UserWarning, match=r"'shop/eu' holds '/'.*name='shop\.eu'"):
        first = dnb.LocalRunner(store).map(eu, [{"k": "c"}], key="k", progress=False)
    second = dnb.LocalRunner(store).map(shop, [{"k": "eu/c"}], key="k", progress=False)
    assert first.run_id[0] == second.run_id[0] == "shop/eu/c#0"  # the collision the warning is about


def test_a_key_function_that_keys_a_record_differently_each_time_is_warned_about(store: dnb.Store) -> None:
    """``key=lambda r: uuid.uuid4()`` (as Flink Agents' e2e tests key a stream): every map made new runs, so a
    second map charged every card again, silently. The warning names the fix; a field key stays quiet."""
    import uuid
    import warnings

    charges: list[int] = []

    def charge(order: int, ctx: dnb.RunnerContext) -> int:
        return ctx.durable_execute(charges.append, order) or order

    for _ in range(2):
        with pytest.warns(dnb.NonDeterminismWarning, match=r"two different keys .*key=None") as caught:
            dnb.LocalRunner(store).map(charge, [1, 2], key=lambda r: uuid.uuid4(), progress=False)
        assert len(caught) == 1 and caught[0].filename == __file__  # once per map, at the user's line
    with warnings.catch_warnings():
        warnings.simplefilter("error", dnb.NonDeterminismWarning)
        dnb.LocalRunner(store).map(charge, [1, 2], key=lambda r: r, progress=False)


def test_a_key_drawing_from_state_keeps_every_record_s_key(store: dnb.Store) -> None:
    """A key function drawing from state (ids of a parallel list, a field popped): asked twice for the first
    record before the others, it gave record 1 record 2's id (its run, journaled before: another record's
    calls) and the last record a StopIteration as a RuntimeError; a pop raised KeyError. Asked again only
    once every record has its key, the keys are those they always were, and a second ask that fails is quiet."""
    import warnings

    def name(order: dict[str, Any], ctx: dnb.RunnerContext) -> str:
        return str(ctx.durable_execute(str.upper, order["name"]))

    orders = [{"id": i, "name": n} for i, n in enumerate("abc")]
    with warnings.catch_warnings():
        warnings.simplefilter("error", dnb.NonDeterminismWarning)
        ids = iter(["o-10", "o-11", "o-12"])
        frame = dnb.LocalRunner(store).map(name, orders, key=lambda order: next(ids), progress=False)
        assert [rid.rsplit("/", 1)[1] for rid in frame.run_id] == ["o-10#0", "o-11#0", "o-12#0"]
        assert list(frame.result) == ["A", "B", "C"]
        popped = dnb.LocalRunner(store).map(name, [dict(o) for o in orders], key=lambda o: o.pop("id"))
        assert list(popped.key) == [0, 1, 2]
        from durable_nb.runners.mapping import keys_of  # FlinkRunner.map's and AgentRunner.map's keys

        ids = iter(["o-10", "o-11", "o-12"])
        assert keys_of(orders, lambda order: next(ids)) == ["o-10", "o-11", "o-12"]


def test_a_key_function_that_raises_keeps_its_error_and_names_the_record(store: dnb.Store) -> None:
    def region(rec: dict[str, Any]) -> str:
        return rec["region"]

    with pytest.raises(KeyError, match="region") as raised:
        dnb.LocalRunner(store).map(lambda rec, ctx: 0, [{"region": "eu"}, {"id": 7}], key=region)
    assert "raised by the key function 'test_a_key_function_that_raises_keeps_its_error_and_names_the_record" \
           ".<locals>.region' on record 1: {'id': 7}" in raised.value.__notes__[0]
    assert store.runs() == []  # keys are worked out before any record runs

def test_a_record_whose_run_is_busy_elsewhere_is_a_running_row_that_the_next_map_replays(store: dnb.Store) -> None:
    """Two kernels mapping the same records: the second one's rows for the runs the first one holds were
    FAILED, read as failed charges to retry by hand, with an error about "two recoveries of one run".
    Nothing failed and nothing ran there: the run is RUNNING elsewhere, and mapping again replays it."""
    runner = dnb.LocalRunner(store)
    first = runner.map(double_unless_three, [5])
    opened, release = threading.Event(), threading.Event()

    def hold() -> None:
        with runner.context(first.run_id[0]) as ctx:
            opened.set()
            release.wait(10)
            ctx.journal.keep_rest()  # it made no calls: keep the recorded ones

    holder = threading.Thread(target=hold)
    holder.start()
    opened.wait(10)
    try:
        frame = runner.map(double_unless_three, [5, 6])
    finally:
        release.set()
        holder.join()
    assert list(frame.status) == ["RUNNING", "COMPLETED"]
    assert frame.error[0].startswith(f"RunBusyError: run {first.run_id[0]!r} is running now in process ")
    assert "nothing ran here for this record" in frame.error[0] and "two recoveries" not in frame.error[0]
    again = runner.map(double_unless_three, [5, 6])
    assert list(again.status) == ["COMPLETED", "COMPLETED"] and list(again.result) == [10, 12]


def test_map_progress_counts_the_records_whose_runs_another_process_holds(store: dnb.Store, capsys: Any) -> None:
    """Was: a busy record (now a RUNNING row, not FAILED) was neither failed nor replayed on the bar, so a long
    map ended "3/3, replayed=2 failed=0" with one record not run at all, and nothing on screen said so."""
    runner = dnb.LocalRunner(store)
    first = runner.map(double_unless_three, [1, 2, 4])
    opened, release = threading.Event(), threading.Event()

    def hold() -> None:
        with runner.context(first.run_id[1]) as ctx:
            opened.set()
            release.wait(10)
            ctx.journal.keep_rest()

    holder = threading.Thread(target=hold)
    holder.start()
    opened.wait(10)
    capsys.readouterr()
    try:
        frame = runner.map(double_unless_three, [1, 2, 4], progress=True)
    finally:
        release.set()
        holder.join()
    assert list(frame.status) == ["COMPLETED", "RUNNING", "COMPLETED"]
    bar = capsys.readouterr().err
    assert "3/3" in bar and "replayed=2 failed=0 running elsewhere=1" in bar
    runner.map(double_unless_three, [1, 2, 4], progress=True)
    assert "running elsewhere" not in capsys.readouterr().err  # said only when some record was


def test_map_progress_counts_done_replayed_and_failed_records(store: dnb.Store, capsys: Any) -> None:
    runner = dnb.LocalRunner(store)
    runner.map(double_unless_three, [1, 2, 3, 4], progress=True)
    first = capsys.readouterr().err
    assert "4/4" in first and "replayed=0" in first and "failed=1" in first
    runner.map(double_unless_three, [1, 2, 3, 4], progress=True)
    again = capsys.readouterr().err
    # the three completed runs replay every call; the failed one runs its action again (and fails again)
    assert "4/4" in again and "replayed=3" in again and "failed=1" in again


def test_map_without_progress_prints_nothing(store: dnb.Store, capsys: Any) -> None:
    dnb.LocalRunner(store).map(double_unless_three, [1, 2])
    assert capsys.readouterr().err == ""


def test_map_progress_must_be_true_or_false_and_nothing_runs_otherwise(store: dnb.Store, capsys: Any) -> None:
    """``progress="no"`` showed a bar (any non-empty string is true), as ``strict="no"`` once meant strict."""
    for bad in ("no", 1):
        with pytest.raises(TypeError, match="progress must be True or False, got"):
            dnb.LocalRunner(store).map(double_unless_three, [1, 2], progress=bad)  # type: ignore[arg-type]
    assert capsys.readouterr().err == "" and store.runs() == []


def test_map_progress_none_is_off_as_on_flink_runner(store: dnb.Store, capsys: Any) -> None:
    """``FlinkRunner.map(progress=None)`` (its default: the runner's setting) is the same call on LocalRunner:
    code written for either runner (AgentRunner.map passes its options on) ran on both, until None was refused."""
    frame = dnb.LocalRunner(store).map(double_unless_three, [1, 2], progress=None)
    assert list(frame.status) == ["COMPLETED", "COMPLETED"] and capsys.readouterr().err == ""


def test_a_row_travels_from_a_worker_as_plain_values() -> None:
    ok = MapRow.from_wire("k", MapRow("k", "a/k#0", dnb.RunStatus.COMPLETED, {"v": 1}).to_wire())
    assert ok == MapRow("k", "a/k#0", dnb.RunStatus.COMPLETED, {"v": 1})
    failed = MapRow.failed("k", "a/k#0", KeyError("gone"))
    back = MapRow.from_wire("k", failed.to_wire())
    assert back.status is dnb.RunStatus.FAILED and back.error == "KeyError: 'gone'"
    assert isinstance(back.exception, KeyError)


def test_a_result_that_cannot_travel_makes_the_row_failed_and_says_why() -> None:
    row = MapRow("k", "a/k#0", dnb.RunStatus.COMPLETED, threading.Lock())
    _run_id, status, payload, error = row.to_wire()
    assert (status, payload) == ("FAILED", None)
    assert error is not None and "cannot be pickled to return it from Flink" in error
    emitted = row.portable()  # what durable_process emits: the same rule, decided in the worker
    assert (emitted.status, emitted.result, emitted.error) == (dnb.RunStatus.FAILED, None, error)
    plain = MapRow("k", "a/k#0", dnb.RunStatus.COMPLETED, {"v": 1})
    assert plain.portable() is plain


class _LoadsOnlyWhereMade(Exception):
    def __reduce__(self) -> tuple[Any, ...]:
        return _refuse_to_load, ()


def _refuse_to_load() -> None:
    raise RuntimeError("not reachable here")


def test_a_payload_the_notebook_cannot_load_fails_only_its_own_row() -> None:
    done = MapRow.from_wire("k", ("a/k#0", "COMPLETED", pickle.dumps(_LoadsOnlyWhereMade()), None))
    assert done.status is dnb.RunStatus.FAILED and done.result is None
    assert "cannot be loaded in the notebook (RuntimeError: not reachable here)" in str(done.error)
    failed = MapRow.from_wire("k", ("a/k#1", "FAILED", pickle.dumps(_LoadsOnlyWhereMade()), "Boom: no"))
    assert (failed.status, failed.error, failed.exception) == (dnb.RunStatus.FAILED, "Boom: no", None)


def test_apply_action_lets_errors_of_the_run_itself_propagate() -> None:
    class Broken:
        def __enter__(self) -> Any:
            return None

        def __exit__(self, *exc: object) -> None:
            raise OSError("disk gone")

    with pytest.raises(OSError, match="disk gone"):
        apply_action(Broken(), lambda ctx: 1, "k", "r")


# ---------------------------------------------------------------- the notebook side


def test_map_cells_show_progress_when_asked(ip: Any, store: dnb.Store) -> None:
    from durable_nb.notebook.magics import magics_of

    magics = magics_of(ip)
    assert magics is not None
    saved = magics._store
    magics.store = store
    ip.user_ns["items"] = [1, 2, 3]
    try:
        frame, log = run(ip, "bump --map items --progress", "record + 1\n")
        assert list(frame.result) == [2, 3, 4]
        assert "3/3" in log.text("stderr") and "replayed=0" in log.text("stderr")
        frame, log = run(ip, "bump --map items", "record + 1\n")
        assert log.text("stderr") == ""
    finally:
        magics._store = saved
        ip.user_ns.pop("items", None)
        ip.user_ns.pop("bump", None)


def test_a_cell_outcome_is_journaled_as_plain_builtins_and_read_back_typed() -> None:
    outcome = CellOutcome(
        values={"x": pickle.dumps(1)}, modules={"np": "numpy"}, skipped={"fh": "TextIOWrapper: TypeError"},
        deletes=("old",), outputs=(("stdout", "hi\n"),), result=NamedResult("x"),
    )
    payload = outcome.to_payload()
    assert payload["format"] == 1 and payload["result"] == ("name", "x")
    # nothing of durable_nb inside: a journal stays readable whatever these classes are called later
    assert b"durable_nb" not in pickle.dumps(payload)
    assert CellOutcome.from_payload(payload) == outcome
    for result in (PickledResult(pickle.dumps([1])), DisplayedResult({"text/plain": "<x>"}, {})):
        assert CellOutcome.from_payload(CellOutcome(result=result).to_payload()).result == result


def test_a_cell_reconciler_returning_a_bad_variable_name_is_named() -> None:
    from durable_nb.notebook.outcome import reconciled_outcome

    with pytest.raises(TypeError, match=r"keys must be variable names; '1bad' is not"):
        reconciled_outcome("pay", {"1bad": 2, "x": 3})
    with pytest.raises(TypeError, match="as a dict .*got list"):
        reconciled_outcome("pay", [1])
    assert set(reconciled_outcome("pay", {"x": 3}).values) == {"x"}


def test_an_action_that_changes_its_record_in_place_replays_when_the_map_or_run_is_called_again(
    store: dnb.Store,
) -> None:
    """Each run gets its own copy of its input (as on Flink): the caller's records never change under it."""
    charged: list[str] = []

    def charge(order: dict[str, Any]) -> str:
        charged.append(order["id"])
        return f"ch_{order['id']}"

    def place(order: dict[str, Any], ctx: dnb.RunnerContext) -> str:
        order["charge"] = ctx.durable_execute(charge, order)  # changes its input after the side effect
        order["lines"].append("charged")
        return order["charge"]

    runner = dnb.LocalRunner(store)
    orders = [{"id": "o1", "lines": []}, {"id": "o2", "lines": []}]
    first = runner.map(place, orders, key="id")
    again = runner.map(place, orders, key="id")  # a notebook cell run twice
    assert list(first.result) == list(again.result) == ["ch_o1", "ch_o2"]
    assert orders == [{"id": "o1", "lines": []}, {"id": "o2", "lines": []}]
    one = {"id": "o3", "lines": []}
    assert runner.run(place, one) == runner.run(place, one) == "ch_o3"  # same derived run id both times
    assert runner.dry_run(place, one).stopped_at is None and one == {"id": "o3", "lines": []}
    assert charged == ["o1", "o2", "o3"], "a side effect ran again"
    assert not store.discarded(), "a replay saw other arguments"


def test_a_record_that_cannot_be_copied_is_handed_to_the_action_as_it_is(store: dnb.Store) -> None:
    lock = threading.Lock()
    frame = dnb.LocalRunner(store).map(lambda rec, ctx: rec["lock"] is lock, [{"id": 1, "lock": lock}], key="id")
    assert list(frame.result) == [True]


def test_a_row_flinks_collect_sink_could_not_carry_is_a_failed_row_naming_where_the_result_is(monkeypatch):
    from durable_nb.runners import flink_worker

    monkeypatch.setattr(flink_worker, "COLLECT_MAX", 3 << 20)
    small = ("r", "COMPLETED", b"x" * 100, None)
    assert flink_worker.within_collect_limit(small) is small
    run_id, status, payload, error = flink_worker.within_collect_limit(("r", "COMPLETED", b"x" * (3 << 20), None))
    assert (run_id, status, payload) == ("r", "FAILED", None)
    assert "3,145,728 bytes" in error and "store.calls('r')" in error


class _FiveTupleError(Exception):
    """A ``__reduce__`` that spells out pickle's optional items as None."""

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), self.args, None, None, None


class _NoReduceError(Exception):
    def __reduce__(self) -> tuple[Any, ...]:
        raise TypeError("not picklable")


def _chained(outer: Exception, inner: Exception) -> Exception:
    try:
        try:
            raise inner
        except Exception as exc:
            raise outer from exc
    except Exception as exc:
        return exc


@pytest.mark.parametrize("outer, inner", [
    (ValueError("charge failed"), KeyError("card")),
    (_FiveTupleError("charge failed"), KeyError("card")),
    (_NoReduceError("charge failed"), KeyError("card")),
    (ValueError("charge failed"), _FiveTupleError("card")),
    (ValueError("charge failed"), _NoReduceError("card")),
])
def test_a_failed_rows_exception_keeps_its_chain_on_the_wire_whatever_its_reduce(outer: Exception,
                                                                                 inner: Exception) -> None:
    row = MapRow.failed(7, "r", _chained(outer, inner))
    assert row.error == f"{type(outer).__qualname__}: charge failed (from {type(inner).__qualname__}: {inner})"
    for back in (MapRow.from_wire(7, row.to_wire()), pickle.loads(pickle.dumps(row))):
        assert (back.status, back.error) == (dnb.RunStatus.FAILED, row.error)
        assert type(back.exception) is type(outer) and back.exception.args == ("charge failed",)
        assert type(back.exception.__cause__) is type(inner) and back.exception.__cause__.args == inner.args
        assert back.exception.__suppress_context__
