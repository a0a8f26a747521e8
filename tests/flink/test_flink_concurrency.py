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
