"""``FlinkRunner(concurrency=N)``: several records at once in each worker, with every promise of one at a time."""

from __future__ import annotations

import itertools
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
    spans = _orders.charge_times(tmp_path)
    assert len(spans) >= n - 10, "most charges ran in the worker and logged their times"

    # Records of different keys ran at the same time in one worker process...
    overlapping = [(a, b) for a, b in itertools.combinations(sorted(spans), 2)
                   if spans[a][0] == spans[b][0] and spans[a][1] < spans[b][2] and spans[b][1] < spans[a][2]]
    assert overlapping, "no two records ever ran at once in one worker: concurrency had no effect"
    # ...but each key's records one after another, in input order.
    for customer in range(CUSTOMERS):
        ran = [i for i in range(customer, n, CUSTOMERS) if i in spans]
        for earlier, later in itertools.pairwise(ran):
            assert spans[earlier][2] <= spans[later][1], f"orders {earlier} and {later} of one key overlapped"

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


@pytest.mark.parametrize("bad", [0, -1, 2.5, "8", True])
def test_a_concurrency_that_is_not_a_positive_int_is_refused_naming_the_range(
    flink: None, tmp_path: Path, bad: object
) -> None:
    with pytest.raises(ValueError, match=r"concurrency must be an int >= 1") as refused:
        FlinkRunner(dnb.SqliteStore(tmp_path / "journal.db"), concurrency=bad)  # type: ignore[arg-type]
    assert repr(bad) in str(refused.value)
