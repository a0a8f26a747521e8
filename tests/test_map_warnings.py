"""Per-record warnings inside one ``map`` are summed up: the first shown as it is, then one summary.

Why: a second batch whose keys reuse the first batch's run ids gave one NonDeterminismWarning per
record (5,000 records: 5,000 warnings in the notebook). Warnings a filter turns into errors (this
suite's ``filterwarnings``) still raise for every record.
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from collections.abc import Iterator
from typing import Any

from shell_harness import run

import durable_nb as dnb
from durable_nb.runners import flink_job


def _old(x: int) -> int:
    return x


def _new(x: int) -> int:
    return x + 1


@dnb.durable(name="orders")
def _first_batch(record: dict[str, int], ctx: dnb.RunnerContext) -> int:
    return ctx.durable_execute(_old, record["v"])


@dnb.durable(name="orders")
def _second_batch(record: dict[str, int], ctx: dnb.RunnerContext) -> int:
    return ctx.durable_execute(_new, record["v"])


def _batch(n: int) -> list[dict[str, int]]:
    return [{"customer": i, "v": i} for i in range(n)]


@contextlib.contextmanager
def _shown() -> Iterator[list[warnings.WarningMessage]]:
    """The warnings a notebook shows (Python's default filter), instead of this suite's errors."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        yield caught


def test_a_second_batch_reusing_run_ids_gives_one_warning_and_a_summary_not_one_per_record(
    store: dnb.Store,
) -> None:
    runner = dnb.LocalRunner(store)
    runner.map(_first_batch, _batch(50), key="customer")
    with _shown() as caught:
        frame = runner.map(_second_batch, _batch(50), key="customer")
    assert list(frame["result"]) == [i + 1 for i in range(50)]  # every record executed again, as before
    first, summary = [w for w in caught if w.category is dnb.NonDeterminismWarning]
    assert "run 'orders/0#0' is not deterministic" in str(first.message)
    text = str(summary.message)
    assert "49 more record(s) of this map gave a NonDeterminismWarning" in text
    assert "'orders/1#0', 'orders/2#0', 'orders/3#0', ..." in text
    assert "Key each batch's records by what is new in it" in text
    assert summary.filename == __file__  # at the user's map call
    assert len(caught) == 2


def test_the_summary_of_an_edited_actions_rerun_names_that_cause_not_only_reused_keys(store: dnb.Store) -> None:
    """The same batch again after an edit of the action (the commonest cause) gave a summary whose only
    explanation and fix were a new batch reusing old keys: 'Key each batch's records by what is new'."""
    runner = dnb.LocalRunner(store)
    runner.map(_first_batch, _batch(5), key="customer")
    with _shown() as caught:
        runner.map(_second_batch, _batch(5), key="customer")  # same records, the action edited
    summary = [w for w in caught if w.category is dnb.NonDeterminismWarning][-1]
    assert "4 more record(s)" in str(summary.message)
    assert "If the action was changed since those runs" in str(summary.message)


def test_a_warning_filter_that_raises_still_raises_for_every_record(store: dnb.Store) -> None:
    runner = dnb.LocalRunner(store)
    runner.map(_first_batch, _batch(5), key="customer")
    frame = runner.map(_second_batch, _batch(5), key="customer")  # pyproject: NonDeterminismWarning is an error
    assert list(frame["status"]) == ["FAILED"] * 5
    assert all("NonDeterminismWarning" in e for e in frame["error"])


def _locks(record: int, ctx: dnb.RunnerContext) -> int:
    ctx.durable_execute(threading.Lock)  # cannot be journaled: a warning per call
    ctx.durable_execute(threading.RLock)
    warnings.warn(f"the user's own warning {record}", UserWarning, stacklevel=1)
    return record


def test_the_first_records_warnings_are_all_shown_and_the_users_own_warnings_are_left_alone(
    store: dnb.Store,
) -> None:
    with _shown() as caught:
        dnb.LocalRunner(store).map(_locks, [1, 2, 3, 4])
    results = [str(w.message) for w in caught if w.category is dnb.UnserializableResultWarning]
    assert len(results) == 3  # record 0's two calls, then the summary
    assert "lock" in results[0] and "RLock" in results[1]
    assert "3 more record(s)" in results[2] and "_locks/1#0', " in results[2]
    assert [str(w.message) for w in caught if w.category is UserWarning] == [
        f"the user's own warning {i}" for i in (1, 2, 3, 4)]


def test_one_map_cell_gives_one_warning_and_a_summary(ip: Any, store: dnb.Store) -> None:
    from durable_nb.notebook.magics import magics_of

    magics = magics_of(ip)
    assert magics is not None
    saved = magics._store
    magics.store = store
    ip.user_ns.update(items=[1, 2, 3], threading=threading)
    try:
        with _shown() as caught:
            run(ip, "locked --map items", "_ = ctx.durable_execute(threading.Lock)\nrecord\n")
    finally:
        magics._store = saved
        for name in ("items", "locked", "threading"):
            ip.user_ns.pop(name, None)
    messages = [str(w.message) for w in caught if w.category is dnb.UnserializableResultWarning]
    assert len(messages) == 2 and "2 more record(s)" in messages[1]


class _Stream:
    """What ``_collect`` reads from Flink: the rows the workers sent, each with its warnings."""

    def __init__(self, shipped: list[tuple[Any, ...]]) -> None:
        self.shipped = shipped

    @contextlib.contextmanager
    def execute_and_collect(self, job_name: str) -> Iterator[list[tuple[Any, ...]]]:
        yield self.shipped


def test_the_warnings_flink_workers_send_are_summed_up_in_the_notebook_too() -> None:
    warned = (("NonDeterminismWarning", "durable_nb: run 'orders/{}#0' is not deterministic"),)
    rows = [(i, (f"orders/{i}#0", "COMPLETED", None, None), False,
             ((warned[0][0], warned[0][1].format(i)),)) for i in range(6)]
    with _shown() as caught:
        flink_job._collect(_Stream(rows), "durable_nb map orders", 6, 1, False)
    first, summary = [str(w.message) for w in caught]
    assert first == "durable_nb: run 'orders/0#0' is not deterministic (in a Flink worker)"
    assert "5 more record(s)" in summary and "'orders/1#0'" in summary
    assert all(w.category is dnb.NonDeterminismWarning for w in caught)



def test_a_flink_workers_warning_points_at_the_users_map_line_not_at_durable_nb(
    tmp_path: Any, monkeypatch: Any
) -> None:
    """Was: given again with ``stacklevel=3``, it pointed at ``durable_nb/runners/flink_job.py`` (``_execute``):
    the notebook showed a line of durable_nb's as where the map's warning came from."""
    monkeypatch.setattr(flink_job, "require_pyflink", lambda: None)
    monkeypatch.setattr(flink_job, "check_java", lambda: None)
    runner = flink_job.FlinkRunner(dnb.SqliteStore(tmp_path / "journal.db"), parallelism=1)
    rows = [(0, ("orders/0#0", "COMPLETED", None, None), False,
             (("NonDeterminismWarning", "durable_nb: run 'orders/0#0' is not deterministic"),))]
    monkeypatch.setattr(runner, "_build", lambda job, path: _Stream(rows))
    with _shown() as caught:
        runner.map(_second_batch, [1])
    [shown] = [w for w in caught if w.category is dnb.NonDeterminismWarning]
    assert shown.filename == __file__, shown.filename


def test_a_map_inside_another_maps_records_is_summed_up_with_it(store: dnb.Store) -> None:
    """Each inner map showed its own first warning and summary: one pair per outer record, and the outer
    summary then counted the inner summaries under the outer runs, which gave no warning of their own."""
    runner = dnb.LocalRunner(store)

    def outer(record: dict[str, int], ctx: dnb.RunnerContext) -> int:
        batch = [{"customer": record["o"] * 10 + i, "v": i} for i in range(3)]
        runner.map(_first_batch, batch, key="customer")
        runner.map(_second_batch, batch, key="customer")
        return record["o"]

    with _shown() as caught:
        frame = runner.map(outer, [{"o": o} for o in range(4)], key="o")
    assert list(frame["status"]) == ["COMPLETED"] * 4
    first, summary = [str(w.message) for w in caught if w.category is dnb.NonDeterminismWarning]
    assert "run 'orders/0#0' is not deterministic" in first
    assert "11 more record(s) of this map" in summary and "'orders/1#0', 'orders/2#0', 'orders/10#0', ..." in summary


def _returns(record: dict[str, Any], ctx: dnb.RunnerContext) -> Any:
    """A record's call returns something that cannot be journaled: a lock for most, a generator for some."""
    make = (lambda: (i for i in ())) if record["v"] % 10 == 7 else threading.Lock
    return type(ctx.durable_execute(make))


def test_a_later_records_warning_that_says_something_else_is_shown_not_summed_as_like_the_first(
    store: dnb.Store,
) -> None:
    """Record 7's result was a generator, every other record's a lock: 'like the one shown above' hid it."""
    with _shown() as caught:
        dnb.LocalRunner(store).map(_returns, _batch(30), key="customer")
    said = [str(w.message) for w in caught if w.category is dnb.UnserializableResultWarning]
    assert [("lock" in s, "generator" in s) for s in said[:2]] == [(True, False), (False, True)]
    assert "28 more record(s) of this map gave a UnserializableResultWarning like one shown above" in said[2]
    assert len(said) == 3


def _refuses_pickling(self: object) -> Any:
    raise TypeError("not journaled")


def _own_type(record: dict[str, Any], ctx: dnb.RunnerContext) -> str:
    """Each record's call returns an instance of a class of its own (a text that differs per record)."""
    make = type(f"Thing{record['v']}", (), {"__reduce__": _refuses_pickling})
    return type(ctx.durable_execute(make)).__name__


def test_texts_that_differ_in_every_record_do_not_flood_the_notebook(store: dnb.Store) -> None:
    """A text that names something of each record shows at most a few times, then one summary."""
    with _shown() as caught:
        dnb.LocalRunner(store).map(_own_type, _batch(40), key="customer")
    said = [str(w.message) for w in caught if w.category is dnb.UnserializableResultWarning]
    assert [f"Thing{i}" in s for i, s in enumerate(said[:3])] == [True] * 3  # three texts a category at most
    assert "37 more record(s)" in said[3]
    assert len(said) == 4


def test_a_lambda_action_is_warned_about_before_it_takes_another_lambdas_runs(tmp_path):
    """Every lambda of a module is named ``mod.<lambda>``: mapping a second lambda over the same keys
    took the first one's runs over, and mapping the first again charged every record twice."""
    runner = dnb.LocalRunner(dnb.SqliteStore(tmp_path / "j.db"))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        runner.map(lambda rec, ctx: ctx.durable_execute(_old, rec), [1, 2], key=lambda r: r)
    lambdas = [w for w in seen if "the action is a lambda" in str(w.message)]
    assert len(lambdas) == 1 and lambdas[0].category is UserWarning
    assert "<lambda>/KEY#SEQ" in str(lambdas[0].message) and "dnb.durable(name=" in str(lambdas[0].message)
    assert lambdas[0].filename == __file__  # the user's line, not durable_nb's

    named = dnb.durable(name="charge_all")(lambda rec, ctx: ctx.durable_execute(_old, rec))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        frame = runner.map(named, [1, 2], key=lambda r: r)
    assert not [w for w in seen if "lambda" in str(w.message)]
    assert list(frame["run_id"]) == ["charge_all/1#0", "charge_all/2#0"]
