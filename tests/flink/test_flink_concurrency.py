"""``FlinkRunner(concurrency=N)``: several records at once in each worker, with every promise of one at a time."""

from __future__ import annotations

from pathlib import Path

import _orders
import pytest

import durable_nb as dnb
from durable_nb.runners.flink_job import FlinkRunner

pytestmark = pytest.mark.flink

CUSTOMERS = 7


@pytest.mark.timeout(240)
def test_concurrent_records_overlap_keep_each_keys_order_and_survive_a_worker_crash_exactly_once(
    flink: None, tmp_path: Path
) -> None:
    n = 84
    store = dnb.SqliteStore(tmp_path / "journal.db")
    action = _orders.make_action(tmp_path, crash_at=40, delay=0.05, timed=True)
    runner = FlinkRunner(store, parallelism=2, checkpoint_interval_ms=200, concurrency=8)
    records = _orders.orders(n)

    df = runner.map(action, records, key="customer")

    assert (tmp_path / "crashed.flag").exists(), "the injected crash did not happen"
    _orders.check_exactly_once(df, tmp_path, n)
    # The run ids are LocalRunner's: seq is still counted per key, in input order.
    for i, run_id in enumerate(df["run_id"]):
        assert run_id.endswith(f"/c{i % CUSTOMERS}#{i // CUSTOMERS}"), (i, run_id)
    _orders.check_concurrent_and_in_key_order(tmp_path, n, CUSTOMERS)

    # The crashed charge was in flight: its reconciler found it in the ledger.
    crashed = store.calls(df["run_id"].iloc[40])
    assert [(c.status.value, c.origin.value) for c in crashed] == [
        ("SUCCEEDED", "RECONCILED"), ("SUCCEEDED", "EXECUTED")
    ]

    work = (tmp_path / "work.txt").read_text()
    again = runner.map(action, records, key="customer")
    assert list(again["result"]) == list(df["result"])
    assert (tmp_path / "work.txt").read_text() == work, "a replay re-ran a durable call"
    _orders.check_exactly_once(again, tmp_path, n)
    store.close()


@pytest.mark.parametrize(("option", "bad"), [("concurrency", v) for v in (0, -1, 2.5, "8", True)]
                         + [("parallelism", v) for v in (0, "2", True)])
def test_a_concurrency_or_parallelism_that_is_not_a_positive_int_is_refused_naming_the_range(
    flink: None, tmp_path: Path, option: str, bad: object
) -> None:
    with pytest.raises(ValueError, match=rf"{option} must be an int >= 1") as refused:
        FlinkRunner(dnb.SqliteStore(tmp_path / "journal.db"), **{option: bad})  # type: ignore[arg-type]
    assert repr(bad) in str(refused.value)


def _exits(init: object, store: object, record: object, seq: int) -> object:
    raise SystemExit(3)


@pytest.mark.timeout(60)
def test_an_action_raising_system_exit_with_concurrency_fails_the_record_instead_of_hanging_the_map() -> None:
    """Was: PyFlink's async runner reports only an ``Exception``; a ``SystemExit`` from the action ended its
    event loop's thread, the record never completed, and (no timeout) the map waited forever."""
    import threading
    from types import SimpleNamespace

    pytest.importorskip("pyflink")
    from pyflink.fn_execution.datastream.process.async_function.operation import AsyncFunctionRunner

    from durable_nb.runners.flink_concurrent import concurrent_function

    function = concurrent_function(_exits, SimpleNamespace(store=SimpleNamespace(open=lambda: None)), 2)
    function.open(None)
    runner = AsyncFunctionRunner()  # the event loop thread PyFlink runs async_invoke on
    runner.start()
    runner.wait_ready()
    done = threading.Event()
    failures: list[BaseException] = []

    class Handler:
        def complete(self, result: object) -> None:
            done.set()

        def complete_exceptionally(self, error: BaseException) -> None:
            failures.append(error)
            done.set()

    try:
        runner.run_async(function.async_invoke, ("c1", {"id": 1}, 0), Handler())
        assert done.wait(10), "the record never completed: the map would wait for it forever"
        assert runner.is_alive(), "the worker's event loop died with the SystemExit"
    finally:
        runner.stop()
        function.close()
    [error] = failures
    assert str(error).startswith("SystemExit: 3 (raised by the action") and isinstance(error.__cause__, SystemExit)
