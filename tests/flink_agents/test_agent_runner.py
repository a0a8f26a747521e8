"""Unchanged Flink Agents agents on ``AgentRunner`` with ``LocalRunner``: equal results, crashes, replay."""

from __future__ import annotations

import _thread
import asyncio
import collections
import os
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any, ClassVar

import pytest

try:
    import flink_agents.api.runner_context  # noqa: F401
except ImportError:  # pragma: no cover - depends on the machine
    if os.environ.get("CI"):
        raise
    pytest.skip("flink-agents is not installed: see durable_nb.flink_agents.INSTALL_HINT", allow_module_level=True)

import _fa_agents as A
from flink_agents.api.agents.agent import Agent
from flink_agents.api.core_options import AgentExecutionOptions
from flink_agents.api.decorators import action
from flink_agents.api.events.event import Event, InputEvent, OutputEvent
from flink_agents.api.runner_context import AsyncExecutionResult, RunnerContext

import durable_nb as dnb
from durable_nb import Origin, Status
from durable_nb.flink_agents import AgentContext, AgentRunner, UnsupportedFeatureError

CASES = {
    "sync": (A.ExecuteMultipleTestAgent, A.NUMBERS),
    "async": (A.ExecuteWithAsyncTestAgent, A.NUMBERS),
    "async-exception": (A.ExecuteWithAsyncExceptionTestAgent, A.NUMBERS),
    "reconciler": (A.OrderAgent, A.ORDERS),
    "chat-model-and-tool": (A.ReviewAnalysisAgent, A.REVIEWS),
}


@pytest.mark.parametrize("case", CASES)
def test_outputs_equal_flink_agents_own_runner_and_a_second_map_replays_everything(case, store, ledger):
    agent_cls, inputs = CASES[case]
    expected = A.without_durability(agent_cls(), inputs)
    plain_effects = collections.Counter(A.ledger_lines(ledger))
    ledger.unlink()

    runner = AgentRunner(agent_cls(), dnb.LocalRunner(store))
    frame = runner.map(inputs, key="id")
    assert list(frame["id"]) == [r["id"] for r in inputs]
    assert list(frame["status"]) == ["COMPLETED"] * len(inputs)
    assert list(frame["result"]) == expected
    assert collections.Counter(A.ledger_lines(ledger)) == plain_effects  # the same side effects, each once

    again = AgentRunner(agent_cls(), dnb.LocalRunner(store)).map(inputs, key="id")
    assert list(again["result"]) == expected
    assert collections.Counter(A.ledger_lines(ledger)) == plain_effects  # nothing executed the second time
    calls = [c for rid in frame["run_id"] for c in store.calls(rid)]
    assert calls and all(c.origin is Origin.EXECUTED for c in calls)


def clean_run(agent_cls: Any, record: Any, ledger: Path) -> tuple[Any, Any, list[str], collections.Counter[str]]:
    """An uncrashed run on a MemoryStore: its output, run, call ids in order and side effects (ledger emptied)."""
    reference = dnb.MemoryStore()
    expected = AgentRunner(agent_cls(), dnb.LocalRunner(reference)).run(record, key=record["id"])
    (run,) = reference.runs()
    call_ids = [c.call_id for c in reference.calls(run.run_id)]
    effects = collections.Counter(A.ledger_lines(ledger))
    ledger.unlink()
    return expected, run, call_ids, effects


@pytest.mark.parametrize("case", CASES)
def test_a_crash_before_each_call_recovers_with_each_side_effect_once(case, sqlite_store, ledger, tmp_path):
    agent_cls, inputs = CASES[case]
    record = inputs[-1]
    expected, run, call_ids, clean_effects = clean_run(agent_cls, record, ledger)

    runner = AgentRunner(agent_cls(), dnb.LocalRunner(sqlite_store))
    for call_id in call_ids:  # each attempt replays what is done and crashes at the next call
        with dnb.inject_crash(call=call_id, point="before_call", times=1), pytest.raises(dnb.SimulatedCrash):
            runner.run(record, key=record["id"])
    assert runner.run(record, key=record["id"]) == expected
    assert collections.Counter(A.ledger_lines(ledger)) == clean_effects
    assert [c.call_id for c in sqlite_store.calls(run.run_id)] == call_ids


@pytest.mark.parametrize("case", ["async", "reconciler", "chat-model-and-tool"])
def test_a_crash_after_each_call_is_reconciled_or_executed_again(case, store, ledger):
    """After the function ran and before its outcome was journaled: the reconciler settles it (once),
    a call without one runs again (at-least-once, as in Flink Agents)."""
    agent_cls, inputs = CASES[case]
    record = inputs[-1]
    expected, run, call_ids, clean = clean_run(agent_cls, record, ledger)

    runner = AgentRunner(agent_cls(), dnb.LocalRunner(store))
    for call_id in call_ids:
        with dnb.inject_crash(call=call_id, point="after_call", times=1), pytest.raises(dnb.SimulatedCrash):
            runner.run(record, key=record["id"])
    assert runner.run(record, key=record["id"]) == expected
    calls = store.calls(run.run_id)
    effects = collections.Counter(A.ledger_lines(ledger))
    for line, n in clean.items():
        reconciled = case == "reconciler" and line.startswith("charge")
        assert effects[line] == (n if reconciled else 2 * n), line
    if case == "reconciler":
        assert [(c.status, c.origin) for c in calls] == [(Status.SUCCEEDED, Origin.RECONCILED),
                                                         (Status.SUCCEEDED, Origin.EXECUTED)]
        assert effects["reconciled o2 35"] == 1


def test_a_recovered_run_replays_finished_calls_and_reconciles_the_one_in_flight(store, ledger):
    runner = AgentRunner(A.OrderAgent(), dnb.LocalRunner(store))
    with dnb.inject_crash(call="_fa_agents.send_receipt", point="before_call"), pytest.raises(dnb.SimulatedCrash):
        runner.run(A.ORDERS[0], key="o1")
    assert [c.status for c in store.calls(runner.run_id(A.ORDERS[0], "o1"))] == [Status.SUCCEEDED, Status.PENDING]
    assert runner.run(A.ORDERS[0], key="o1") == [{"order": "o1", "receipt": "receipt for ch-o1-120"}]
    assert A.ledger_lines(ledger) == ["charge o1 120", "receipt o1 ch-o1-120"]


def test_run_ids_come_from_the_key_and_the_input_not_from_event_ids(store, ledger):
    runner = AgentRunner(A.ExecuteMultipleTestAgent(), dnb.LocalRunner(store), name="calc")
    assert runner.run({"id": 1, "value": 3}, key="k1") == [A.ExecuteTestOutput(id=1, result=16)]
    runner.run({"id": 1, "value": 3}, key="k1")  # the same run: replayed
    [first] = [r.run_id for r in store.runs()]
    assert first == runner.run_id({"id": 1, "value": 3}, key="k1") and first.startswith("calc/k1@")
    assert first.endswith("#0")
    assert len(A.ledger_lines(ledger)) == 2
    # the same in a new process (a new runner object), whatever came before
    assert AgentRunner(A.ExecuteMultipleTestAgent(), name="calc").run_id({"id": 1, "value": 3}, key="k1") == first

    frame = runner.map(A.NUMBERS, key="id")
    assert frame["run_id"].tolist() == [runner.run_id(n, key=n["id"]) for n in A.NUMBERS]  # named as run names them
    assert frame["id"].tolist() == [1, 2]  # the user's keys
    assert runner.run(A.NUMBERS[0], key=1) == [A.ExecuteTestOutput(id=1, result=16)]  # map's run, replayed
    assert runner.map(A.NUMBERS, key=lambda r: f"n{r['id']}")["key"].tolist() == ["n1", "n2"]
    assert len(A.ledger_lines(ledger)) == 2 + 4 + 4

    with warnings.catch_warnings():  # another input under a used key: a run of its own, nothing discarded
        warnings.simplefilter("error", dnb.NonDeterminismWarning)
        assert runner.run({"id": 1, "value": 4}, key="k1") == [A.ExecuteTestOutput(id=1, result=18)]
        assert runner.run({"id": 1, "value": 3}, key="k1") == [A.ExecuteTestOutput(id=1, result=16)]
    assert len(A.ledger_lines(ledger)) == 2 + 4 + 4 + 2
    assert runner.run({"id": 5, "value": 5}, run_id="explicit") == [A.ExecuteTestOutput(id=5, result=20)]


def test_an_action_that_raises_fails_its_row_and_its_run(store, ledger):
    frame = AgentRunner(A.ExecuteMultipleTestAgent(), dnb.LocalRunner(store)).map([{"id": 1}], key="id")
    assert frame["status"].tolist() == ["FAILED"] and "value" in frame["error"][0]
    assert [r.status for r in store.runs()] == [dnb.RunStatus.FAILED]


seen: dict[str, Any] = {}


def stamp(text: str) -> str:
    return text.upper()


class ContextProbeAgent(Agent):
    """Looks at everything Flink Agents' RunnerContext offers, from a sync and an async action."""

    @action(InputEvent.EVENT_TYPE)
    @staticmethod
    def first(event: Event, ctx: RunnerContext) -> None:
        seen["is_runner_context"] = isinstance(ctx, RunnerContext)
        seen["chat_async"] = ctx.config.get(AgentExecutionOptions.CHAT_ASYNC)
        seen["custom"] = ctx.config.get_str("custom.option")
        seen["metrics"] = (ctx.agent_metric_group, ctx.action_metric_group)
        ctx.short_term_memory.set("greeting", ctx.durable_execute(stamp, InputEvent.from_event(event).input))
        ctx.sensory_memory.set("scratch", 1)
        try:
            ctx.long_term_memory  # noqa: B018
        except UnsupportedFeatureError as exc:
            seen["long_term"] = str(exc)
        ctx.send_event(Event(type="next", attributes={}))

    @action("next")
    @staticmethod
    async def second(event: Event, ctx: RunnerContext) -> None:
        pending = ctx.durable_execute_async(stamp, "async")
        seen["async_result"] = isinstance(pending, AsyncExecutionResult)
        value = await pending
        ctx.send_event(OutputEvent(output=[ctx.short_term_memory.get("greeting"), value,
                                           ctx.sensory_memory.get("scratch")]))


def test_actions_get_a_flink_agents_runner_context_backed_by_the_journal(store):
    seen.clear()
    runner = AgentRunner(ContextProbeAgent(), dnb.LocalRunner(store), config={"custom.option": "yes",
                                                                               "chat.async": False})
    assert runner.run("hi", key="k") == [["HI", "ASYNC", 1]]
    assert seen["is_runner_context"] and seen["async_result"]
    assert seen["chat_async"] is False and seen["custom"] == "yes" and seen["metrics"] == (None, None)
    assert "long-term memory" in seen["long_term"] and "not supported" in seen["long_term"]
    assert [c.call_id for c in store.calls(runner.run_id("hi", "k"))] == [f"{__name__}.stamp"] * 2


def test_an_async_agent_runs_from_inside_a_running_event_loop_as_in_a_notebook(store, ledger):
    runner = AgentRunner(A.ExecuteWithAsyncTestAgent(), dnb.LocalRunner(store))

    async def cell() -> Any:
        return runner.run({"id": 1, "value": 3}, key=1)

    expected = [A.ExecuteTestOutput(id=1, result=24)]
    assert asyncio.run(cell()) == expected
    assert asyncio.run(cell()) == expected
    assert A.ledger_lines(ledger) == ["compute_value 3 5", "multiply_value 8 3"]


class ForeignFuture:
    """What awaiting an asyncio future or task yields to its driver: not a bare yield."""

    def __await__(self):  # type: ignore[no-untyped-def]
        yield self


class ForeignAwaitAgent(Agent):
    @action(InputEvent.EVENT_TYPE)
    @staticmethod
    async def process(event: Event, ctx: RunnerContext) -> None:
        await ForeignFuture()


def test_unsupported_features_raise_errors_that_name_them(store):
    with pytest.raises(UnsupportedFeatureError, match=r"awaiting .* in an async action"):
        AgentRunner(ForeignAwaitAgent(), dnb.LocalRunner(store)).run(1, key=1)
    with pytest.raises(TypeError, match="agent instance"):
        AgentRunner(ForeignAwaitAgent, dnb.LocalRunner(store))  # type: ignore[arg-type]


class AsyncioAgent(Agent):
    """Awaits asyncio's own sleep / create_task, which Flink Agents' async actions do not support."""

    @action(InputEvent.EVENT_TYPE)
    @staticmethod
    async def process(event: Event, ctx: RunnerContext) -> None:
        if event.input == "sleep":
            await asyncio.sleep(0.01)
        else:
            await asyncio.create_task(ctx.durable_execute_async(A.compute_value, 1, 2))


@pytest.mark.parametrize("what", ["sleep", "create_task"])
def test_asyncio_in_an_async_action_is_refused_naming_what_is_supported_as_flink_agents_does(store, what):
    # Flink Agents turns asyncio's bare "no running event loop" into a RuntimeError naming what is supported;
    # a user porting an agent gets that explanation here too (UnsupportedFeatureError is a RuntimeError).
    with pytest.raises(RuntimeError, match=r"asyncio functions \(gather/wait/create_task/sleep\) are not supported"
                       ) as caught, warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the coroutine asyncio never got to schedule
        AgentRunner(AsyncioAgent(), dnb.LocalRunner(store)).run(what, key=what)
    assert isinstance(caught.value, UnsupportedFeatureError)
    assert "no running event loop" in str(caught.value.__cause__)


def loop_of_call(x: int) -> str:
    asyncio.get_running_loop()  # a durable function's own error: the call's outcome, journaled as it is
    return str(x)


class OwnRuntimeErrorAgent(Agent):
    @action(InputEvent.EVENT_TYPE)
    @staticmethod
    async def process(event: Event, ctx: RunnerContext) -> None:
        ctx.send_event(OutputEvent(output=await ctx.durable_execute_async(loop_of_call, event.input)))


def test_a_durable_calls_own_no_running_loop_error_is_its_journaled_outcome_not_rewritten(store):
    runner = AgentRunner(OwnRuntimeErrorAgent(), dnb.LocalRunner(store))
    for _ in range(2):  # executed, then replayed: the same error both times
        with pytest.raises(RuntimeError, match="^no running event loop$") as caught:
            runner.run(1, key=1)
        assert not isinstance(caught.value, UnsupportedFeatureError)
    assert [c.status for c in store.calls(runner.run_id(1, 1))] == [Status.FAILED]


async def ask_llm_async(prompt: str) -> str:
    """An async LLM client's request (AsyncOpenAI, httpx.AsyncClient ...): it awaits asyncio."""
    await asyncio.sleep(0.001)
    A.record(f"ask {prompt}")
    return f"answer to {prompt}"


class AsyncClientAgent(Agent):
    @action(InputEvent.EVENT_TYPE)
    @staticmethod
    async def process(event: Event, ctx: RunnerContext) -> None:
        ctx.send_event(OutputEvent(output=await ctx.durable_execute_async(ask_llm_async, event.input)))


def test_an_async_client_function_given_to_durable_execute_async_runs_and_replays(store, ledger):
    runner = AgentRunner(AsyncClientAgent(), dnb.LocalRunner(store))
    assert runner.run("hi", key="k") == ["answer to hi"]
    assert runner.run("hi", key="k") == ["answer to hi"]  # replayed, not failed with "no running event loop"
    assert A.ledger_lines(ledger) == ["ask hi"]
    assert [c.status for c in store.calls(runner.run_id("hi", "k"))] == [Status.SUCCEEDED]


def test_a_flink_key_selector_keys_inputs_as_flink_agents_key_selector_does(store):
    """Flink Agents keys a stream with a pyflink ``KeySelector`` (``from_datastream(..., key_selector=...)``):
    the same object given as ``key=`` keys ``map`` and ``run`` by what its ``get_key`` returns."""
    from pyflink.datastream import KeySelector

    class UserSelector(KeySelector):
        def get_key(self, value):  # type: ignore[no-untyped-def]
            return value["user"]

    by_field = AgentRunner(A.VisitCounterAgent(), dnb.LocalRunner(dnb.MemoryStore())).map(A.VISITS, key="user")
    runner = AgentRunner(A.VisitCounterAgent(), dnb.LocalRunner(store))
    by_selector = runner.map(A.VISITS, key=UserSelector())
    assert list(by_selector["result"]) == list(by_field["result"])
    assert list(by_selector["run_id"]) == list(by_field["run_id"])
    assert list(by_selector["key"]) == [v["user"] for v in A.VISITS]
    assert runner.run_id(A.VISITS[0], key=UserSelector()) == runner.run_id(A.VISITS[0], key="a")
    assert runner.run(A.VISITS[0], key=UserSelector()) == by_field["result"][0]  # the same run: replayed


@pytest.mark.parametrize("chat_async", [False, True], ids=["sync-chat", "async-chat"])
def test_a_chat_request_retried_by_flink_agents_error_strategy_replays_its_failed_attempt_and_its_answer(
        store, ledger, chat_async):
    """Flink Agents' ``test_chat_model_action_retry.py``: with ``error-handling-strategy: RETRY`` a request
    that fails once is retried (``retry_count`` 1). Each attempt is a durable call with the same arguments:
    the failure and the answer are journaled in order, and a replay makes no request and gives the same
    output. A request that fails every attempt fails the input, and its replay raises the same error."""
    from flink_agents.api.core_options import ErrorHandlingStrategy

    config = {"error-handling-strategy": ErrorHandlingStrategy.RETRY, "retry-wait-interval": 0,
              "max-retries": 2, "chat.async": chat_async}
    runner = AgentRunner(A.RetryingChatAgent(), dnb.LocalRunner(store), config=config)
    A.FLAKY["failures"] = 1
    for _ in range(2):
        assert runner.run("hi", key="k") == [{"content": "answer to hi", "retries": 1}]
        assert A.ledger_lines(ledger) == ["llm hi", "llm hi"]
    assert [c.status for c in store.calls(runner.run_id("hi", "k"))] == [Status.FAILED, Status.SUCCEEDED]
    A.FLAKY["failures"] = 9
    for _ in range(2):
        with pytest.raises(RuntimeError, match="transient error"):
            runner.run("ho", key="k")
        assert A.ledger_lines(ledger)[2:] == ["llm ho"] * 3  # max-retries 2: three attempts, made once
    A.FLAKY["failures"] = 0


def test_a_key_selector_that_gives_each_call_a_new_key_is_warned_about_naming_key_none(store, ledger):
    """Flink Agents' e2e ``built_in_action_async_execution_test`` keys its stream with
    ``key_selector=lambda x: uuid.uuid4()``. Here the run id is made of the key, so each map (or run) of
    such inputs started new runs: mapped again, every call was made again, silently. Its intent, inputs
    that share nothing, is ``key=None``: replayed, with a memory each."""
    import uuid

    from pyflink.datastream import KeySelector

    class RandomKey(KeySelector):
        def get_key(self, value):  # type: ignore[no-untyped-def]
            return uuid.uuid4()

    runner = AgentRunner(A.ExecuteMultipleTestAgent(), dnb.LocalRunner(store))
    for key in (lambda x: uuid.uuid4(), RandomKey()):
        with pytest.warns(dnb.NonDeterminismWarning, match=r"two different keys .*key=None"):
            runner.map(A.NUMBERS, key=key)
    with pytest.warns(dnb.NonDeterminismWarning, match="two different keys"):
        runner.run(A.NUMBERS[0], key=RandomKey())
    calls = len(A.ledger_lines(ledger))
    with warnings.catch_warnings():
        warnings.simplefilter("error", dnb.NonDeterminismWarning)
        first = runner.map(A.NUMBERS)
        assert list(runner.map(A.NUMBERS)["result"]) == list(first["result"])
    assert len(A.ledger_lines(ledger)) == calls + 2 * len(A.NUMBERS)  # once per input, the second map replayed


charges: list[str] = []
interrupted: list[str] = []
first_done = threading.Event()


def slow_charge(order: str) -> str:
    """A payment request: the user presses Ctrl-C while the first is in flight; the provider charges when it lands."""
    first = not interrupted
    if first:
        interrupted.append(order)
        _thread.interrupt_main()  # Ctrl-C, delivered to the thread driving the agent while this one runs
        time.sleep(0.3)
    charges.append(order)
    if first:
        first_done.set()
    return f"ch-{order}"


def charged(order: str) -> str:
    """The reconciler: the provider's ledger; charge now if the charge never happened."""
    return f"ch-{order}" if order in charges else slow_charge(order)


class SlowPayAgent(Agent):
    @action(InputEvent.EVENT_TYPE)
    @staticmethod
    async def process(event: Event, ctx: RunnerContext) -> None:
        order = InputEvent.from_event(event).input
        ctx.send_event(OutputEvent(output=await ctx.durable_execute_async(
            slow_charge, order, reconciler=lambda: charged(order))))


def test_ctrl_c_during_an_async_call_waits_for_it_so_the_re_run_reconciles_it_once(store):
    """Was: the interrupt left the call's worker thread running; the cell run again at once reconciled while the
    first attempt was still in flight (nothing charged yet), charged, and then the first attempt charged too."""
    charges.clear()
    interrupted.clear()
    first_done.clear()
    runner = AgentRunner(SlowPayAgent(), dnb.LocalRunner(store))
    with pytest.raises(KeyboardInterrupt):
        runner.run("o1", key="u")
    assert [c.status for c in store.calls(runner.run_id("o1", key="u"))] == [Status.PENDING]  # not its outcome
    assert runner.run("o1", key="u") == ["ch-o1"]  # the re-run right after: reconciled
    assert first_done.wait(5)  # the first attempt has finished (it was left running before)
    assert charges == ["o1"]
    assert store.calls(runner.run_id("o1", key="u"))[0].origin is Origin.RECONCILED


def test_an_agent_class_defined_inside_a_function_is_refused_naming_the_fix(store):
    """Was: Flink Agents' bare "AttributeError: module 'tests...' has no attribute 'make.<locals>.Echo'"."""

    def make() -> Agent:
        class Echo(Agent):
            @action(InputEvent.EVENT_TYPE)
            @staticmethod
            def process(event: Event, ctx: RunnerContext) -> None:
                ctx.send_event(OutputEvent(output=InputEvent.from_event(event).input))

        return Echo()

    with pytest.raises(TypeError, match=r"make\.<locals>\.Echo is defined inside a function.*top level of a module"):
        AgentRunner(make(), dnb.LocalRunner(store))


def test_the_context_type_is_flink_agents_runner_context():
    assert issubclass(AgentContext, RunnerContext)


def test_importing_without_flink_agents_names_the_extra_and_the_minimal_install(tmp_path: Path):
    code = (
        "import sys; sys.modules['flink_agents'] = None\n"
        "try:\n    import durable_nb.flink_agents\n"
        "except ImportError as exc:\n    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert "pip install 'durable_nb[flink-agents]'" in out.stdout
    assert "--no-deps flink-agents==0.3.1" in out.stdout


def react_agent() -> Agent:
    """Flink Agents' quickstart ReAct agent (react_agent_example.py) with the stand-in chat model."""
    from flink_agents.api.agents.react_agent import ReActAgent
    from flink_agents.api.chat_message import ChatMessage, MessageRole
    from flink_agents.api.prompts.prompt import Prompt
    from flink_agents.api.resource import ResourceDescriptor

    return ReActAgent(
        chat_model=ResourceDescriptor(clazz="_fa_agents.StandInChatModel", connection="stand_in_server",
                                      model="stand-in", tools=["notify_shipping_manager"]),
        prompt=Prompt.from_messages(messages=[
            ChatMessage(role=MessageRole.SYSTEM, content="Analyze the review; notify shipping problems."),
            ChatMessage(role=MessageRole.USER, content='"id": {id},\n"review": {review}'),
        ]),
        output_schema=A.ProductReviewAnalysisRes,
    )


def test_a_react_agent_with_environment_resources_runs_durably_and_replays(store, ledger):
    from flink_agents.api.resource import ResourceDescriptor, ResourceType
    from flink_agents.api.tools.tool import Tool

    connection = ResourceDescriptor(clazz="_fa_agents.StandInChatConnection")
    plain = react_agent()
    plain.add_resource("stand_in_server", ResourceType.CHAT_MODEL_CONNECTION, connection)
    plain.add_resource("notify_shipping_manager", ResourceType.TOOL, Tool.from_callable(A.notify_shipping_manager))
    expected = A.without_durability(plain, A.REVIEWS)
    effects = collections.Counter(A.ledger_lines(ledger))
    ledger.unlink()

    runner = (
        AgentRunner(react_agent(), dnb.LocalRunner(store))
        .add_resource("stand_in_server", ResourceType.CHAT_MODEL_CONNECTION, connection)
        .add_resource("notify_shipping_manager", ResourceType.TOOL, Tool.from_callable(A.notify_shipping_manager))
    )
    assert list(runner.map(A.REVIEWS, key="id")["result"]) == expected
    assert list(runner.map(A.REVIEWS, key="id")["result"]) == expected
    assert collections.Counter(A.ledger_lines(ledger)) == effects
    assert expected[2] == [A.ProductReviewAnalysisRes(id="p3", score=1, reasons=["shipping damage"])]


def visit(n: int) -> int:
    return n


class VisitAgent(Agent):
    """Reads short-term memory before its durable call: a recovery must see what the first attempt saw."""

    @action(InputEvent.EVENT_TYPE)
    @staticmethod
    def process(event: Event, ctx: RunnerContext) -> None:
        visits = ctx.short_term_memory.get("visits") or 0
        ctx.short_term_memory.set("visits", visits + 1)
        ctx.send_event(OutputEvent(output=ctx.durable_execute(visit, visits)))


def test_short_term_memory_is_kept_per_key_and_a_crashed_run_leaves_it_as_it_found_it(store):
    runner = AgentRunner(VisitAgent(), dnb.LocalRunner(store))
    assert runner.map(["a", "b"], key=lambda r: "k")["result"].tolist() == [[0], [1]]  # one key: memory carried
    with dnb.inject_crash(call=f"{__name__}.visit", point="before_call"), pytest.raises(dnb.SimulatedCrash):
        runner.run("c", key="other")
    assert runner.run("c", key="other") == [0]  # no NonDeterminismWarning: the recovery saw visits == 0
    assert runner.run("d", key="third") == [0]


RATES = [1.10, 1.25, 1.40]
fetched: list[float] = []


def fetch_rate() -> float:
    """A call whose arguments do not depend on the input: only the run id tells two inputs apart."""
    fetched.append(RATES[len(fetched)])
    return fetched[-1]


class CountingAgent(Agent):
    @action(InputEvent.EVENT_TYPE)
    @staticmethod
    def process(event: Event, ctx: RunnerContext) -> None:
        n = (ctx.short_term_memory.get("n") or 0) + 1
        ctx.short_term_memory.set("n", n)
        ctx.send_event(OutputEvent(output=(InputEvent.from_event(event).input, n, ctx.durable_execute(fetch_rate))))


def test_each_input_of_a_key_given_to_run_is_a_run_of_its_own_and_sees_the_memory_before_it(store):
    """Flink Agents' short-term memory is shared by the runs of one key; each input is a run. Before, a second
    input under a used key reopened the first input's run and, its calls matching, replayed its results."""
    fetched.clear()
    runner = AgentRunner(CountingAgent(), dnb.LocalRunner(store), name="count")
    with warnings.catch_warnings():
        warnings.simplefilter("error", dnb.NonDeterminismWarning)
        assert runner.run("q1", key="acct") == [("q1", 1, 1.10)]
        assert runner.run("q2", key="acct") == [("q2", 2, 1.25)]
        assert runner.run("q1", key="acct") == [("q1", 1, 1.10)]  # given again: its own run, replayed
        assert runner.run("q3", key="acct") == [("q3", 3, 1.40)]
    assert len(store.runs()) == 3
    # a new kernel gets the same ids, in any order: each input's durable calls replay (its memory is the
    # new process's: short-term memory is not journaled, see the README)
    again = AgentRunner(CountingAgent(), dnb.LocalRunner(store), name="count")
    assert [again.run(q, key="acct")[0][2] for q in ("q3", "q1", "q2")] == [1.40, 1.10, 1.25]
    assert fetched == RATES  # each fetched once


def test_memory_is_kept_per_key_as_run_ids_tell_keys_apart_and_unkeyed_inputs_have_their_own(store):
    runner = AgentRunner(VisitAgent(), dnb.LocalRunner(store), name="visits")
    # 1, True and 1.0 are equal in Python but three keys here, as in run ids: each its own memory
    frame = runner.map([{"k": 1}, {"k": True}, {"k": 1.0}, {"k": 1}], key="k")
    assert frame["result"].tolist() == [[0], [0], [0], [1]]
    assert frame["k"].tolist() == [1, True, 1.0, 1]
    # without a key each input has a memory of its own (not key 0's, 1's ...), and run names it as map does
    unkeyed = runner.map([{"n": 1}, {"n": 2}])
    assert unkeyed["result"].tolist() == [[0], [0]] and unkeyed["key"].tolist() == [0, 1]
    assert unkeyed["run_id"].tolist() == [runner.run_id({"n": 1}), runner.run_id({"n": 2})]
    assert runner.run({"n": 2}) == [0]  # map's run, replayed
    # a keyed map's record whose key is None is the run run(key=None) names (it was "None@digest" there)
    keyed = runner.map([{"k": None, "n": 3}], key="k")
    assert keyed["run_id"].tolist() == [runner.run_id({"k": None, "n": 3}, key=None)]
    assert keyed["k"].tolist() == [None]


def test_a_dataframe_row_given_to_run_is_the_input_map_gave_that_row(store):
    import pandas as pd

    runner = AgentRunner(VisitAgent(), dnb.LocalRunner(store), name="rows")
    frame = pd.DataFrame([{"id": 1, "text": "a"}, {"id": 2, "text": "b"}])
    mapped = runner.map(frame, key="id")
    assert runner.run_id(frame.iloc[1], key=2) == mapped["run_id"][1]
    assert runner.run(frame.iloc[1], key=2) == mapped["result"][1]  # replayed (a Series was refused before)



def test_a_misspelt_key_column_names_the_fields_as_local_runner_map_does(store):
    """Was: a bare KeyError('User') from inside AgentRunner, noted as raised by "<..._Field object at 0x...>"."""
    import pandas as pd

    runner = AgentRunner(VisitAgent(), dnb.LocalRunner(store), name="typo")
    with pytest.raises(KeyError, match=r"map\(key='User'\): a record has no field 'User' \(its fields: id, user\)"):
        runner.map(pd.DataFrame([{"id": 1, "user": "u"}]), key="User")
    assert store.runs() == []  # refused before any run was opened


def test_a_resource_added_between_inputs_keeps_each_keys_short_term_memory(store):
    """Was: add_resource compiled a new action with an empty memory, so the key's next input saw none of what its
    earlier inputs left (visits 0 again); a later process, mapping the key's inputs from its first, then found
    other arguments for that input's durable calls and executed them again."""
    from flink_agents.api.resource import ResourceType
    from flink_agents.api.tools.tool import Tool

    runner = AgentRunner(VisitAgent(), dnb.LocalRunner(store), name="resources")
    assert runner.map(["a", "b"], key=lambda r: "k")["result"].tolist() == [[0], [1]]
    runner.add_resource("notify_shipping_manager", ResourceType.TOOL, Tool.from_callable(A.notify_shipping_manager))
    assert runner.run("c", key="k") == [2]  # the key's memory, as before the resource was added
    with warnings.catch_warnings():
        warnings.simplefilter("error", dnb.NonDeterminismWarning)
        again = AgentRunner(VisitAgent(), dnb.LocalRunner(store), name="resources")  # a new kernel
        assert again.map(["a", "b", "c"], key=lambda r: "k")["result"].tolist() == [[0], [1], [2]]


def test_a_key_field_named_like_a_result_column_gives_one_column_each_as_local_runner_map(store):
    """Was: map(df, key="status") renamed the key column to "status" beside the run's "status" column, so
    ``frame["status"]`` was a two-column DataFrame and ``frame[frame.status == "FAILED"]`` raised."""
    import pandas as pd

    runner = AgentRunner(VisitAgent(), dnb.LocalRunner(store), name="columns")
    frame = runner.map(pd.DataFrame([{"status": "new", "n": 1}, {"status": "new", "n": 2}]), key="status")
    assert frame.columns.tolist() == ["key", "run_id", "status", "result", "error"]  # as LocalRunner.map names it
    assert frame["key"].tolist() == ["new", "new"] and frame["status"].tolist() == ["COMPLETED", "COMPLETED"]
    assert frame["result"].tolist() == [[0], [1]]  # one key: memory carried
    assert runner.map([{"user": "u"}], key="user").columns.tolist()[0] == "user"  # other fields keep their name

asked: list[str] = []
asked: list[str] = []


def ask_model(history: list[str]) -> str:
    """A stand-in for an LLM request: the whole conversation so far is the prompt."""
    asked.append("|".join(history))
    return f"answer {len(history)}"


class ChatAgent(Agent):
    """Flink Agents' usual conversation shape: the history in short-term memory goes to the model."""

    @action(InputEvent.EVENT_TYPE)
    @staticmethod
    def process(event: Event, ctx: RunnerContext) -> None:
        history = [*(ctx.short_term_memory.get("history") or []), InputEvent.from_event(event).input]
        ctx.short_term_memory.set("history", history)
        ctx.send_event(OutputEvent(output=ctx.durable_execute(ask_model, history)))


def test_running_inputs_again_in_the_same_process_replays_with_the_memory_they_first_saw(store):
    """A replayed map, a run() once more and a recovery in the same kernel start each input from the
    memory its first attempt started from: were its own earlier writes in memory, the model would be
    asked another prompt, the journal discarded and the request sent again."""
    asked.clear()
    runner = AgentRunner(ChatAgent(), dnb.LocalRunner(store))
    turns = ["hi", "how", "bye"]
    frame = runner.map(turns, key=lambda t: "user1")
    first, first_ids = frame["result"].tolist(), frame["run_id"].tolist()
    assert first == [["answer 1"], ["answer 2"], ["answer 3"]] and asked == ["hi", "hi|how", "hi|how|bye"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", dnb.NonDeterminismWarning)
        assert runner.map(turns, key=lambda t: "user1")["result"].tolist() == first
        assert runner.run("hi", key="user1") == ["answer 1"]  # map's record, replayed by run
        assert first_ids[0] == runner.run_id("hi", key="user1")
        assert runner.map(turns, key=lambda t: "user1")["result"].tolist() == first
    assert asked == ["hi", "hi|how", "hi|how|bye"]  # nothing asked again

    asked.clear()
    other = AgentRunner(ChatAgent(), dnb.LocalRunner(store), name="chat2")
    with dnb.inject_crash(call=f"{__name__}.ask_model", point="after_call"), pytest.raises(dnb.SimulatedCrash):
        other.map(["a", "b"], key=lambda t: "user2")  # dies in turn 1, after the model answered
    assert other.map(["a", "b"], key=lambda t: "user2")["result"].tolist() == [["answer 1"], ["answer 2"]]
    assert asked == ["a", "a", "a|b"]  # only the request in flight (no reconciler) went again


def test_a_runner_built_again_in_the_same_kernel_replays_what_the_last_one_ran_and_charges_nothing_twice(
        tmp_path: Path):
    """A notebook runs the cell that builds the runner again, then the cell of an input already run: the
    memory was the old runner object's, so the input started from an empty one, its request did not match
    its journal, which was discarded, and the model was asked (a charge made) again."""
    asked.clear()
    AgentRunner(ChatAgent(), dnb.LocalRunner(dnb.SqliteStore(tmp_path / "j.db"))).map(["hi", "how"], key=lambda t: "u")
    again = AgentRunner(ChatAgent(), dnb.LocalRunner(dnb.SqliteStore(tmp_path / "j.db")))  # the cell run again
    with warnings.catch_warnings():
        warnings.simplefilter("error", dnb.NonDeterminismWarning)
        assert again.run("how", key="u") == ["answer 2"]
        assert again.run("bye", key="u") == ["answer 3"]  # and a new input sees what the key's inputs left
    assert asked == ["hi", "hi|how", "hi|how|bye"]
    store = again.store
    store.prune(keep_last=0)  # starting over: the journal's runs go, and so does their memory
    assert AgentRunner(ChatAgent(), dnb.LocalRunner(store)).run("how", key="u") == ["answer 1"]
    # another journal is another memory, also a new MemoryStore reusing a dead one's id
    assert AgentRunner(ChatAgent(), dnb.LocalRunner(dnb.SqliteStore(tmp_path / "k.db"))).run("how", key="u") == [
        "answer 1"]
    for _ in range(3):
        assert AgentRunner(ChatAgent(), dnb.LocalRunner(dnb.MemoryStore())).run("how", key="u") == ["answer 1"]


class FlakyChatAgent(Agent):
    """Fails once on "how", outside any durable call (a transient error), after writing its history."""

    failed: ClassVar[set[str]] = set()

    @action(InputEvent.EVENT_TYPE)
    @staticmethod
    def process(event: Event, ctx: RunnerContext) -> None:
        turn = InputEvent.from_event(event).input
        history = [*(ctx.short_term_memory.get("history") or []), turn]
        ctx.short_term_memory.set("history", history)
        if turn == "how" and turn not in FlakyChatAgent.failed:
            FlakyChatAgent.failed.add(turn)
            raise ConnectionError("model unreachable")
        ctx.send_event(OutputEvent(output=ctx.durable_execute(ask_model, history)))


def test_a_turn_that_finished_after_a_failed_one_replays_from_the_memory_it_first_saw(store):
    asked.clear()
    FlakyChatAgent.failed.clear()
    runner = AgentRunner(FlakyChatAgent(), dnb.LocalRunner(store))
    first = runner.map(["hi", "how", "bye"], key=lambda t: "u")
    assert list(first["status"]) == ["COMPLETED", "FAILED", "COMPLETED"] and asked == ["hi", "hi|bye"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", dnb.NonDeterminismWarning)
        again = runner.map(["hi", "how", "bye"], key=lambda t: "u")
    assert list(again["status"]) == ["COMPLETED"] * 3
    assert again["result"].tolist()[2] == first["result"].tolist()[2]  # "bye" replayed: recorded, not re-asked
    assert asked == ["hi", "hi|bye", "hi|how"]


def test_inputs_without_a_key_have_a_memory_each_as_in_flink_agents_local_runner(store):
    asked.clear()
    runner = AgentRunner(ChatAgent(), dnb.LocalRunner(store))
    assert [runner.run(t) for t in ("x", "y")] == [["answer 1"], ["answer 1"]]
    assert runner.run("x") == ["answer 1"] and asked == ["x", "y"]


def test_a_run_whose_starting_memory_is_no_longer_kept_is_refused_naming_what_to_do():
    from durable_nb.flink_agents.memory import MemoryByKey

    memory = MemoryByKey(snapshots=0)
    for run_id in ("k#0", "k#1", "k#2"):
        with memory.for_run("k", run_id) as m:
            m["n"] = m.get("n", 0) + 1
    with pytest.raises(RuntimeError, match=r"'k#1'.*no longer kept.*from its first one"), memory.for_run("k", "k#1"):
        pass
    for run_id, seen in (("k#0", 0), ("k#1", 1), ("k#2", 2)):  # from the first one on, in order
        with memory.for_run("k", run_id) as m:
            assert m.get("n", 0) == seen
            m["n"] = seen + 1


def count_messages(messages: list[dict[str, str]]) -> int:
    return len(messages)


class MessagesAgent(Agent):
    """A conversation kept as Flink Agents wants memory values: a list of JSON-like messages."""

    @action(InputEvent.EVENT_TYPE)
    @staticmethod
    def process(event: Event, ctx: RunnerContext) -> None:
        messages = ctx.short_term_memory.get("messages") or []
        messages.append({"role": "user", "content": f"{InputEvent.from_event(event).input} " + "." * 40})
        ctx.short_term_memory.set("messages", messages)
        ctx.send_event(OutputEvent(output=ctx.durable_execute(count_messages, messages)))


def test_a_keys_growing_memory_keeps_starting_copies_within_a_byte_budget_not_one_deep_copy_per_input(monkeypatch):
    """Each input's starting memory was kept as a deep copy: a history growing with every input made the
    kept copies grow with the square of the inputs (1,000 inputs of one key: 318 MB, 4,000: 3.1 GB)."""
    import tracemalloc

    from durable_nb.flink_agents import memory

    monkeypatch.setattr(memory, "SNAPSHOT_BYTES", 100_000, raising=False)
    runner = AgentRunner(MessagesAgent(), dnb.LocalRunner(dnb.MemoryStore()))
    turns = [f"turn {i:03d}" for i in range(300)]
    runner.map(["warm-up"], key=lambda t: "another user")  # what a first map imports is not kept memory
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        frame = runner.map(turns, key=lambda t: "user")
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert frame["result"].tolist()[-1] == [300]
    assert kept < 3_000_000, f"{kept:,} bytes kept for a memory of 300 messages"  # deep copies: 9 MB
    with warnings.catch_warnings():
        warnings.simplefilter("error", dnb.NonDeterminismWarning)
        assert runner.run(turns[-2], key="user") == [299]  # a recent input still replays from what it saw
    with pytest.raises(RuntimeError, match=r"no longer kept.*up to 0.0954 MB.*from its first one"):
        runner.run(turns[1], key="user")  # an early one's copy went over the budget: refused, naming the fix


def echo(event: Event, ctx: RunnerContext) -> None:
    ctx.send_event(OutputEvent(output=ctx.durable_execute(stamp, InputEvent.from_event(event).input)))


def test_an_agent_built_with_add_action_and_action_config_runs_durably(store):
    def configured(event: Event, ctx: RunnerContext) -> None:
        ctx.send_event(OutputEvent(output=(ctx.get_action_config_value("suffix"), ctx.action_config)))

    agent = Agent().add_action("echo", [InputEvent.EVENT_TYPE], echo)
    runner = AgentRunner(agent, dnb.LocalRunner(store), name="echo-agent")
    assert runner.run("hi", key="k") == ["HI"]
    assert [c.origin for c in store.calls(runner.run_id("hi", key="k"))] == [Origin.EXECUTED]
    assert runner.run("hi", key="k") == ["HI"]

    globals()["configured"] = configured  # Flink Agents resolves actions by module and name
    configured.__qualname__ = "configured"
    agent = Agent().add_action("configured", [InputEvent.EVENT_TYPE], configured, suffix="!")
    assert AgentRunner(agent, dnb.LocalRunner(store)).run("x", key="c") == [("!", {"suffix": "!"})]
