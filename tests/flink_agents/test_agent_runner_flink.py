"""Flink Agents agents inside a FlinkRunner job: the same outputs, the same run ids, one journal."""

from __future__ import annotations

import collections
import os
from pathlib import Path

import pytest

try:
    import flink_agents.api.runner_context  # noqa: F401
except ImportError:  # pragma: no cover - depends on the machine
    if os.environ.get("CI"):
        raise
    pytest.skip("flink-agents is not installed: see durable_nb.flink_agents.INSTALL_HINT", allow_module_level=True)

import _fa_agents as A

import durable_nb as dnb
from durable_nb import Origin
from durable_nb.flink_agents import AgentRunner

pytestmark = pytest.mark.flink


@pytest.fixture(scope="module")
def flink_runner_cls() -> type:
    """FlinkRunner, or a skip (a failure in CI) when apache-flink or Java is missing."""
    give_up = pytest.fail if os.environ.get("CI") else pytest.skip
    try:
        from durable_nb.runners.flink_job import FlinkRunner, FlinkSetupError, check_java
    except ImportError as exc:
        give_up(f"apache-flink is not installed ({exc}): pip install 'durable_nb[flink]'")
    try:
        check_java()
    except FlinkSetupError as exc:
        give_up(str(exc))
    return FlinkRunner


@pytest.mark.timeout(300)
@pytest.mark.parametrize("concurrency", [1, 4], ids=["one-record-at-a-time", "four-records-at-once"])
def test_agents_run_in_a_flink_job_and_recover_across_runners(
    flink_runner_cls, tmp_path: Path, ledger: Path, concurrency: int
):
    store = dnb.SqliteStore(tmp_path / "journal.db")
    # With concurrency, each record's agent (its async actions, its own event loop) runs in a pool thread.
    flink = flink_runner_cls(store, parallelism=2, progress=False, concurrency=concurrency)

    # The quickstart agent (async built-in chat and tool actions, resources, memory) inside the job.
    expected = A.without_durability(A.ReviewAnalysisAgent(), A.REVIEWS)
    effects = collections.Counter(A.ledger_lines(ledger))
    ledger.unlink()
    on_flink = AgentRunner(A.ReviewAnalysisAgent(), flink).map(A.REVIEWS, key="id")
    assert list(on_flink["status"]) == ["COMPLETED"] * 3
    assert [[r.model_dump() for r in rows] for rows in on_flink["result"]] == \
        [[r.model_dump() for r in rows] for rows in expected]
    assert collections.Counter(A.ledger_lines(ledger)) == effects

    # The same run ids on LocalRunner: everything replays, nothing runs again.
    local = AgentRunner(A.ReviewAnalysisAgent(), dnb.LocalRunner(store)).map(A.REVIEWS, key="id")
    assert list(local["run_id"]) == list(on_flink["run_id"])
    assert list(local["result"]) == expected
    assert collections.Counter(A.ledger_lines(ledger)) == effects

    # o1 crashed in the notebook after its charge; o2's Flink worker dies right after its charge.
    # Both charges are recovered by the reconciler (from the ledger), inside the job, each made once.
    order_outputs = A.without_durability(A.OrderAgent(), A.ORDERS)
    ledger.unlink()
    orders = AgentRunner(A.OrderAgent(), dnb.LocalRunner(store))
    with dnb.inject_crash(call="_fa_agents.charge_card", point="after_call"), pytest.raises(dnb.SimulatedCrash):
        orders.map(A.ORDERS, key="id")
    A.LEDGER["die"] = "charge o2 35"
    recovered = AgentRunner(A.OrderAgent(), flink).map(A.ORDERS, key="id")
    assert Path(str(ledger) + ".died").exists(), "the worker did not die"
    assert list(recovered["result"]) == order_outputs
    effects = collections.Counter(A.ledger_lines(ledger))
    assert (effects["charge o1 120"], effects["charge o2 35"]) == (1, 1)
    assert effects["receipt o1 ch-o1-120"] >= 1 and effects["receipt o2 ch-o2-35"] >= 1  # no reconciler: at least once
    for rid in recovered["run_id"]:
        assert store.calls(rid)[0].origin is Origin.RECONCILED
    store.close()


@pytest.mark.timeout(300)
@pytest.mark.parametrize("concurrency", [1, 4], ids=["one-record-at-a-time", "four-records-at-once"])
def test_a_keys_inputs_share_its_short_term_memory_in_a_flink_job(
    flink_runner_cls, tmp_path: Path, ledger: Path, concurrency: int
):
    """Was: records were partitioned by run id, so a key's inputs were spread over the two workers and each
    saw only the memory of the ones it ran (visits 1, 2, 1, 2, 3, 3 for one user); a LocalRunner replay of
    the map then found other arguments and charged (here: noted) again."""
    expected = A.without_durability(A.VisitCounterAgent(), A.VISITS, key="user")
    assert [rows[0]["visits"] for rows in expected] == [1, 2, 1, 3, 2, 4, 3, 4, 5, 6]
    ledger.unlink()
    store = dnb.SqliteStore(tmp_path / "journal.db")
    flink = flink_runner_cls(store, parallelism=2, progress=False, concurrency=concurrency)
    on_flink = AgentRunner(A.VisitCounterAgent(), flink).map(A.VISITS, key="user")
    assert list(on_flink["result"]) == expected
    effects = A.ledger_lines(ledger)
    noted = [f"visit {v['user']} {rows[0]['visits']}" for v, rows in zip(A.VISITS, expected, strict=True)]
    assert sorted(effects) == sorted(noted), "each visit noted once"

    local = AgentRunner(A.VisitCounterAgent(), dnb.LocalRunner(store)).map(A.VISITS, key="user")
    assert list(local["run_id"]) == list(on_flink["run_id"]) and list(local["result"]) == expected
    assert A.ledger_lines(ledger) == effects, "the same map on LocalRunner replays: nothing noted again"
