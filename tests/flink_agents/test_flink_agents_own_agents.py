"""Flink Agents' own e2e agents, imported from the installed flink-agents package, on ``AgentRunner``.

Not rewritten: ``flink_agents.e2e_tests.e2e_tests_integration`` ships with flink-agents 0.3.1,
and its agents run here as its Flink e2e tests run them (``flink_intergration_test.py``,
``execute_test.py``): the same inputs, the same key selectors, and outputs compared with
the same ground-truth files (copied below from flink-agents' ``e2e_tests/resources``).

``DataStreamAgent`` is the demanding one: an async action with short-term memory (a
per-key counter) and a ``durable_execute_async`` call, a custom event carrying a memory
reference to a second action, a tool resource. Its call ``log_to_stdout`` sleeps (up to a
second) and prints; the tests make the sleep instant and the print a line in a ledger
(the agent module's ``time`` and ``print``), which is what lets them count the side
effect across a SIGKILL.
"""

from __future__ import annotations

import collections
import json
import os
import time
import types
from pathlib import Path

import pytest

try:
    from flink_agents.e2e_tests.e2e_tests_integration import execute_test_agent as eta
    from flink_agents.e2e_tests.e2e_tests_integration import flink_integration_agent as fia
except ImportError:  # pragma: no cover - depends on the machine
    if os.environ.get("CI"):
        raise
    pytest.skip("flink-agents is not installed: see durable_nb.flink_agents.INSTALL_HINT", allow_module_level=True)

from _killing import run_and_kill_when_held

import durable_nb as dnb
from durable_nb import Status
from durable_nb.flink_agents import AgentRunner

# flink-agents 0.3.1: e2e_tests/resources/input/input_data.txt
REVIEWS = """\
{"id":1,"review":"Great product! Works perfectly and lasts a long time.","review_score":3.0}
{"id":2,"review":"The item arrived damaged, and the packaging was poor.","review_score":5.0}
{"id":3,"review":"Highly satisfied with the performance and value for money.","review_score":7.0}
{"id":3,"review":"Not as good as expected. It stopped working after a week.","review_score":8.0}
{"id":1,"review":"Fast shipping and excellent customer service. Would buy again!","review_score":8.0}
{"id":2,"review":"Too complicated to set up. Instructions were unclear.","review_score":8.0}
{"id":2,"review":"Good quality, but overview_scored for what it does.","review_score":8.0}
{"id":1,"review":"Exactly what I needed. Easy to use and very reliable.","review_score":8.0}
{"id":2,"review":"Worst purchase ever. Waste of money and time.","review_score":8.0}
{"id":2,"review":"Looks nice and functions well, but could be more durable.","review_score":8.0}
""".splitlines()

# flink-agents 0.3.1: e2e_tests/resources/ground_truth/test_from_datastream_to_datastream.txt
DATASTREAM_TRUTH = [
    {"id": 3, "review": "Highly satisfied with the performance and value for money.", "review_score": 7.0, "n": 1},
    {"id": 1, "review": "Great product! Works perfectly and lasts a long time.", "review_score": 3.0, "n": 1},
    {"id": 2, "review": "The item arrived damaged, and the packaging was poor.", "review_score": 5.0, "n": 1},
    {"id": 2, "review": "Too complicated to set up. Instructions were unclear.", "review_score": 8.0, "n": 2},
    {"id": 1, "review": "Fast shipping and excellent customer service. Would buy again!", "review_score": 8.0, "n": 2},
    {"id": 1, "review": "Exactly what I needed. Easy to use and very reliable.", "review_score": 8.0, "n": 3},
    {"id": 2, "review": "Good quality, but overview_scored for what it does.", "review_score": 8.0, "n": 3},
    {"id": 3, "review": "Not as good as expected. It stopped working after a week.", "review_score": 8.0, "n": 2},
    {"id": 2, "review": "Worst purchase ever. Waste of money and time.", "review_score": 8.0, "n": 4},
    {"id": 2, "review": "Looks nice and functions well, but could be more durable.", "review_score": 8.0, "n": 5},
]
TRUTH_LINES = sorted(
    json.dumps({"id": t["id"], "review": t["review"] + " first action, log success=True, second action call my tool",
                "review_score": t["review_score"], "memory_info": {"total_reviews": t["n"]}}, separators=(",", ":"))
    for t in DATASTREAM_TRUTH)

# flink-agents 0.3.1: e2e_tests/resources/execute_test_input/input_data.txt and ground_truth/test_execute_*.txt
NUMBERS = ['{"id": 1, "value": 5}', '{"id": 2, "value": 15}', '{"id": 3, "value": 10}']
EXECUTE_TRUTH = {
    "ExecuteTestAgent": [{"id": 1, "result": 15}, {"id": 2, "result": 25}, {"id": 3, "result": 20}],
    "ExecuteMultipleTestAgent": [{"id": 1, "result": 20}, {"id": 2, "result": 40}, {"id": 3, "result": 30}],
    "ExecuteWithAsyncTestAgent": [{"id": 1, "result": 30}, {"id": 2, "result": 60}, {"id": 3, "result": 45}],
    "ExecuteWithAsyncExceptionTestAgent": [{"id": 1, "error": "Test error: 5"}, {"id": 2, "error": "Test error: 15"},
                                           {"id": 3, "error": "Test error: 10"}],
}


def lines_of(frame) -> list[str]:  # type: ignore[no-untyped-def]
    """The outputs of a map as the e2e test writes them (``json.dumps`` of each, pydantic by its fields)."""
    return sorted(json.dumps(out.model_dump(mode="json"), separators=(",", ":"))
                  for outputs in frame["result"] for out in outputs)


def instrument(ledger: Path, hold: int = 0) -> None:
    """``log_to_stdout``'s sleep made instant (the ``hold``-th parks, to be killed), its print a ledger line."""
    count = collections.Counter()

    def sleep(seconds: float) -> None:
        count["sleep"] += 1
        if count["sleep"] == hold:
            Path(str(ledger) + ".held").write_text("parked")
            time.sleep(600)

    def record(*parts: object) -> None:
        with open(ledger, "a") as f:
            f.write(" ".join(map(str, parts)) + "\n")
            f.flush()
            os.fsync(f.fileno())

    fia.time = types.SimpleNamespace(sleep=sleep)
    fia.print = record


@pytest.fixture
def instrumented(tmp_path: Path):  # type: ignore[no-untyped-def]
    ledger = tmp_path / "ledger.txt"
    instrument(ledger)
    yield ledger
    fia.time = time
    del fia.print


def map_reviews(store: dnb.Store) -> object:
    inputs = [fia.ItemData.model_validate_json(line) for line in REVIEWS]
    return AgentRunner(fia.DataStreamAgent(), dnb.LocalRunner(store)).map(inputs, key=fia.MyKeySelector())


def test_the_datastream_agent_gives_flink_agents_ground_truth_and_a_second_map_replays_it(sqlite_store, instrumented):
    frame = map_reviews(sqlite_store)
    assert frame["status"].tolist() == ["COMPLETED"] * 10
    assert lines_of(frame) == TRUTH_LINES  # each key's memory counted its own reviews, in input order
    assert len(instrumented.read_text().splitlines()) == 10
    assert lines_of(map_reviews(sqlite_store)) == TRUTH_LINES
    assert len(instrumented.read_text().splitlines()) == 10  # nothing logged again


@pytest.mark.parametrize("agent", sorted(EXECUTE_TRUTH))
def test_the_execute_test_agents_give_flink_agents_ground_truth(agent):
    runner = AgentRunner(getattr(eta, agent)(), dnb.LocalRunner(dnb.MemoryStore()))
    inputs = [eta.ExecuteTestData.model_validate_json(line) for line in NUMBERS]
    frame = runner.map(inputs, key=eta.ExecuteTestKeySelector())
    assert [out.model_dump() for outputs in frame["result"] for out in outputs] == EXECUTE_TRUTH[agent]
    assert {c.status for run in runner.store.runs() for c in runner.store.calls(run.run_id)} == {
        Status.FAILED if "Exception" in agent else Status.SUCCEEDED}


CHILD = """
import sys
sys.path.insert(0, {here!r})
import test_flink_agents_own_agents as T
import durable_nb as dnb
T.instrument(T.Path({ledger!r}), hold={hold!r})
T.map_reviews(dnb.SqliteStore({db!r}))
print("finished: the kill came too late")
"""


@pytest.mark.kill
def test_sigkill_mid_map_then_a_new_map_logs_each_review_once_and_rebuilds_each_keys_memory(tmp_path, instrumented):
    """Killed while the sixth review's ``log_to_stdout`` runs: the five finished reviews replay (their
    memory writes made again, so each key's counter is right), the sixth and the rest run once."""
    db = tmp_path / "journal.db"
    code = CHILD.format(here=str(Path(__file__).parent), ledger=str(instrumented), hold=6, db=str(db))
    run_and_kill_when_held(code, Path(str(instrumented) + ".held"), "the sixth review")
    assert len(instrumented.read_text().splitlines()) == 5

    store = dnb.SqliteStore(db)
    frame = map_reviews(store)
    assert lines_of(frame) == TRUTH_LINES
    logged = instrumented.read_text().splitlines()
    assert len(logged) == 10 and len(set(logged)) == 10  # each review (and its count) logged once
    store.close()


def runtime_test_agents() -> list[tuple[str, str, list[tuple[str, object]], list[dict[str, object]]]]:
    """(module, agent, [(key, input)], Flink Agents' expected ``to_list()``) of its own local-runner tests.

    ``runtime/tests/test_local_execution_environment.py`` and ``test_get_resource_in_action.py`` ship with
    flink-agents 0.3.1; the inputs and expected outputs are theirs, the agents are imported unchanged: a
    durable_execute_async of a function defined inside the async action, unified ``Event(type=...)``
    routing, a class event mixed with string-typed ones, the chat-model / tool built-in actions with a
    ToolRequestEvent, and ``ctx.get_resource`` of a chat model and a tool in an action.
    """
    env, res = "test_local_execution_environment", "test_get_resource_in_action"
    two = [("bob", 1), ("john", 2)]
    return [(env, "Agent1", two, [{"bob": 2}, {"john": 3}]),
            (env, "Agent1WithAsync", two, [{"bob": 2}, {"john": 3}]),
            (env, "UnifiedEventAgent", [("alice", "hello")], [{"alice": "processed:hello"}]),
            (env, "MixedEventAgent", [("bob", 42)], [{"bob": "done:42"}]),
            (env, "ToolRequestAgent", [("0001", "add 1 and 2")], [{"0001": "3"}]),
            (res, "MyAgent", [("bob", "the first message.")],
             [{"bob": "the first message. 8.8.8.8 mock chat model just for testing. "
                      "call mock tools just for testing."}])]


@pytest.mark.parametrize(("module", "agent", "inputs", "expected"), runtime_test_agents(),
                         ids=[case[1] for case in runtime_test_agents()])
def test_flink_agents_local_runner_test_agents_give_its_outputs_and_replay(module, agent, inputs, expected,
                                                                             monkeypatch):
    import importlib

    tests = importlib.import_module(f"flink_agents.runtime.tests.{module}")
    if hasattr(tests, "time"):  # Agent1WithAsync's my_func sleeps 1 s per input
        monkeypatch.setattr(tests.time, "sleep", lambda s: None)
    runner = AgentRunner(getattr(tests, agent)(), dnb.LocalRunner(dnb.MemoryStore()))
    assert [{k: out} for k, value in inputs for out in runner.run(value, key=k)] == expected
    recorded = {run.run_id: runner.store.calls(run.run_id) for run in runner.store.runs()}
    assert [{k: out} for k, value in inputs for out in runner.run(value, key=k)] == expected  # replayed
    assert {run.run_id: runner.store.calls(run.run_id) for run in runner.store.runs()} == recorded
