"""A Flink Agents agent SIGKILLed mid-run in a child process, recovered here from the SQLite journal."""

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
from _killing import run_and_kill_when_held

import durable_nb as dnb
from durable_nb import Origin, Status
from durable_nb.flink_agents import AgentRunner

pytestmark = pytest.mark.kill

CHILD = """
import sys
sys.path.insert(0, {here!r})
import _fa_agents as A
import durable_nb as dnb
from durable_nb.flink_agents import AgentRunner
A.LEDGER.update(path={ledger!r}, hold={hold!r})
agent = getattr(A, {agent!r})()
AgentRunner(agent, dnb.LocalRunner(dnb.SqliteStore({db!r}))).run({record!r}, key={key!r})
print("finished: the kill came too late")
"""


def run_and_kill(tmp_path: Path, ledger: Path, agent: str, record: dict, hold: str) -> None:
    """Start the agent in a child, SIGKILL it while the side effect ``hold`` is in flight."""
    code = CHILD.format(here=str(Path(__file__).parent), ledger=str(ledger), hold=hold, agent=agent,
                        db=str(tmp_path / "journal.db"), record=record, key=record["id"])
    run_and_kill_when_held(code, Path(str(ledger) + ".held"), "the side effect")


def test_sigkill_while_charging_is_reconciled_and_every_side_effect_happens_once(tmp_path, ledger):
    order = A.ORDERS[0]
    run_and_kill(tmp_path, ledger, "OrderAgent", order, hold="charge o1 120")
    store = dnb.SqliteStore(tmp_path / "journal.db")
    runner = AgentRunner(A.OrderAgent(), dnb.LocalRunner(store))
    assert [c.status for c in store.calls(runner.run_id(order, "o1"))] == [Status.PENDING]

    assert runner.run(order, key="o1") == [{"order": "o1", "receipt": "receipt for ch-o1-120"}]
    assert A.ledger_lines(ledger) == ["charge o1 120", "reconciled o1 120", "receipt o1 ch-o1-120"]
    calls = store.calls(runner.run_id(order, "o1"))
    assert [(c.status, c.origin) for c in calls] == [(Status.SUCCEEDED, Origin.RECONCILED),
                                                     (Status.SUCCEEDED, Origin.EXECUTED)]
    store.close()


@pytest.mark.parametrize("agent", ["OrderAgent", "AsyncOrderAgent"])
def test_sigkill_while_the_receipt_is_sent_replays_the_charge_and_sends_it_again(tmp_path, ledger, agent):
    """Killed in the second action: the first action runs again (its charge replays, its memory write and
    event are made again), the receipt in flight has no reconciler and is sent again (at-least-once)."""
    order = A.ORDERS[1]
    run_and_kill(tmp_path, ledger, agent, order, hold="receipt o2 ch-o2-35")
    store = dnb.SqliteStore(tmp_path / "journal.db")
    runner = AgentRunner(getattr(A, agent)(), dnb.LocalRunner(store))
    assert [c.status for c in store.calls(runner.run_id(order, "o2"))] == [Status.SUCCEEDED, Status.PENDING]

    assert runner.run(order, key="o2") == [{"order": "o2", "receipt": "receipt for ch-o2-35"}]
    assert A.ledger_lines(ledger) == ["charge o2 35", "receipt o2 ch-o2-35", "receipt o2 ch-o2-35"]
    assert runner.run(order, key="o2") == [{"order": "o2", "receipt": "receipt for ch-o2-35"}]
    assert len(A.ledger_lines(ledger)) == 3
    store.close()


def test_sigkill_while_an_async_action_charges_in_its_worker_thread_is_reconciled_once(tmp_path, ledger):
    """Flink Agents' ``durable_execute_async(..., reconciler=...)``: the charge is in flight in a worker
    thread when the process dies; the recovery asks the reconciler, never charges twice."""
    order = A.ORDERS[0]
    run_and_kill(tmp_path, ledger, "AsyncOrderAgent", order, hold="charge o1 120")
    store = dnb.SqliteStore(tmp_path / "journal.db")
    runner = AgentRunner(A.AsyncOrderAgent(), dnb.LocalRunner(store))
    assert [c.status for c in store.calls(runner.run_id(order, "o1"))] == [Status.PENDING]

    assert runner.run(order, key="o1") == [{"order": "o1", "receipt": "receipt for ch-o1-120"}]
    assert A.ledger_lines(ledger) == ["charge o1 120", "reconciled o1 120", "receipt o1 ch-o1-120"]
    assert [(c.status, c.origin) for c in store.calls(runner.run_id(order, "o1"))] == [
        (Status.SUCCEEDED, Origin.RECONCILED), (Status.SUCCEEDED, Origin.EXECUTED)]
    store.close()


def test_sigkill_during_an_async_llm_request_replays_the_finished_calls(tmp_path, ledger):
    """The chat model's second request (after the tool ran) is in flight in a worker thread when
    the process dies: the first request and the tool replay from the journal; the request in
    flight has no reconciler, so it is made again (at-least-once, as in Flink Agents)."""
    review = A.REVIEWS[-1]
    run_and_kill(tmp_path, ledger, "ReviewAnalysisAgent", review, hold="llm p3 4")
    store = dnb.SqliteStore(tmp_path / "journal.db")
    runner = AgentRunner(A.ReviewAnalysisAgent(), dnb.LocalRunner(store))
    rid = runner.run_id(review, "p3")
    assert [c.status for c in store.calls(rid)] == [Status.SUCCEEDED, Status.SUCCEEDED, Status.PENDING]

    assert runner.run(review, key="p3") == [A.ProductReviewAnalysisRes(id="p3", score=1, reasons=["shipping damage"])]
    assert collections.Counter(A.ledger_lines(ledger)) == {"llm p3 2": 1, "notify p3": 1, "llm p3 4": 2}
    assert runner.run(review, key="p3")[0].score == 1  # and now fully replayed
    assert len(A.ledger_lines(ledger)) == 4
    store.close()
