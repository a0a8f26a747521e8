"""Flink Agents' documented durable-execution semantics, on ``AgentRunner``.

Ported (in our own words) from Flink Agents' e2e agents (``execute_test_agent.py``:
one call, keyword arguments, a caught synchronous exception) and from the examples
of its "Durable Execution" documentation (``workflow_agent.md``: a function and a
payment reconciler defined inside the action, an async action), plus what that page
promises: a call that is never awaited is not recorded, a reconciler only runs for a
call whose outcome was not persisted, and ``AgentContext`` has exactly the methods and
signatures of Flink Agents' ``RunnerContext``.
"""

from __future__ import annotations

import inspect
import os

import pytest

try:
    import flink_agents.api.runner_context  # noqa: F401
except ImportError:  # pragma: no cover - depends on the machine
    if os.environ.get("CI"):
        raise
    pytest.skip("flink-agents is not installed: see durable_nb.flink_agents.INSTALL_HINT", allow_module_level=True)

import _fa_agents as A
from flink_agents.api.agents.agent import Agent
from flink_agents.api.decorators import action
from flink_agents.api.events.event import Event, InputEvent, OutputEvent
from flink_agents.api.runner_context import AsyncExecutionResult, RunnerContext

import durable_nb as dnb
from durable_nb import Origin, Status
from durable_nb.flink_agents import AgentContext, AgentRunner

effects: list[tuple[str, object]] = []


def compute_value(x: int, y: int) -> int:
    effects.append(("compute", (x, y)))
    return x + y


def raise_exception(message: str) -> None:
    effects.append(("raise", message))
    raise ValueError(message)


class ExecuteAgent(Agent):
    @action(InputEvent.EVENT_TYPE)
    @staticmethod
    def process(event: Event, ctx: RunnerContext) -> None:
        data = InputEvent.from_event(event).input
        ctx.send_event(OutputEvent(output={"id": data["id"], "result": ctx.durable_execute(compute_value,
                                                                                            data["value"], 10)}))


class KwargsAgent(Agent):
    @action(InputEvent.EVENT_TYPE)
    @staticmethod
    def process(event: Event, ctx: RunnerContext) -> None:
        data = InputEvent.from_event(event).input
        result = ctx.durable_execute(compute_value, x=data["value"], y=20)
        ctx.send_event(OutputEvent(output={"id": data["id"], "result": result}))


class SyncExceptionAgent(Agent):
    @action(InputEvent.EVENT_TYPE)
    @staticmethod
    def process(event: Event, ctx: RunnerContext) -> None:
        data = InputEvent.from_event(event).input
        try:
            ctx.durable_execute(raise_exception, f"Test error: {data['value']}")
        except ValueError as exc:
            ctx.send_event(OutputEvent(output={"id": data["id"], "error": f"Caught: {exc}"}))


@pytest.mark.parametrize("agent_cls", [ExecuteAgent, KwargsAgent, SyncExceptionAgent])
def test_the_e2e_agents_output_what_flink_agents_outputs_and_replay_without_running_anything(agent_cls):
    expected = A.without_durability(agent_cls(), A.NUMBERS)
    effects.clear()
    store = dnb.MemoryStore()
    for _ in range(2):  # the second time everything replays, the caught exception too
        frame = AgentRunner(agent_cls(), dnb.LocalRunner(store)).map(A.NUMBERS, key="id")
        assert list(frame["result"]) == expected
    assert len(effects) == len(A.NUMBERS)
    calls = [c for rid in frame["run_id"] for c in store.calls(rid)]
    assert [c.status for c in calls] == [Status.FAILED if agent_cls is SyncExceptionAgent else Status.SUCCEEDED] * 2


def slow_computation(x: int, y: int) -> int:
    effects.append(("slow_computation", (x, y)))
    return x + y


def multiply(x: int, y: int) -> int:
    effects.append(("multiply", (x, y)))
    return x * y


# Flink Agents' runtime/tests/test_runner_context_execute.py, its agents as they are written there.


class AgentWithDurableExecute(Agent):
    @action(InputEvent.EVENT_TYPE)
    @staticmethod
    def process(event: Event, ctx: RunnerContext) -> None:
        input_val = InputEvent.from_event(event).input
        result = ctx.durable_execute(slow_computation, input_val, 10)
        ctx.send_event(OutputEvent(output=result))


class AgentWithMultipleDurableExecute(Agent):
    @action(InputEvent.EVENT_TYPE)
    @staticmethod
    def process(event: Event, ctx: RunnerContext) -> None:
        input_val = InputEvent.from_event(event).input
        result1 = ctx.durable_execute(slow_computation, input_val, 5)
        result2 = ctx.durable_execute(multiply, result1, 2)
        ctx.send_event(OutputEvent(output=result2))


class AgentWithDurableExecuteAndAsync(Agent):
    @action(InputEvent.EVENT_TYPE)
    @staticmethod
    async def process(event: Event, ctx: RunnerContext) -> None:
        input_val = InputEvent.from_event(event).input
        sync_result = ctx.durable_execute(slow_computation, input_val, 5)
        async_result = await ctx.durable_execute_async(multiply, sync_result, 3)
        ctx.send_event(OutputEvent(output=async_result))


class AgentWithDurableExecuteException(Agent):
    @action(InputEvent.EVENT_TYPE)
    @staticmethod
    def process(event: Event, ctx: RunnerContext) -> None:
        input_val = InputEvent.from_event(event).input
        try:
            ctx.durable_execute(raise_exception, f"Test error: {input_val}")
        except ValueError as e:
            ctx.send_event(OutputEvent(output=f"Caught: {e}"))


class AgentWithKwargs(Agent):
    @action(InputEvent.EVENT_TYPE)
    @staticmethod
    def process(event: Event, ctx: RunnerContext) -> None:
        input_val = InputEvent.from_event(event).input
        result = ctx.durable_execute(slow_computation, x=input_val, y=20)
        ctx.send_event(OutputEvent(output=result))


# (agent, [(key, input)], Flink Agents' expected outputs {key: output}, the durable calls of one input)
RUNNER_CONTEXT_EXECUTE = [
    (AgentWithDurableExecute, [("alice", 5), ("bob", 15)], [{"alice": 15}, {"bob": 25}], [slow_computation]),
    (AgentWithMultipleDurableExecute, [("alice", 10)], [{"alice": 30}], [slow_computation, multiply]),
    (AgentWithDurableExecuteAndAsync, [("alice", 7)], [{"alice": 36}], [slow_computation, multiply]),
    (AgentWithDurableExecuteException, [("alice", "test")], [{"alice": "Caught: Test error: test"}],
     [raise_exception]),
    (AgentWithKwargs, [("alice", 5)], [{"alice": 25}], [slow_computation]),
]


def outputs_by_key(runner: AgentRunner, inputs: list[tuple[str, object]]) -> list[dict[str, object]]:
    """What Flink Agents' local environment's ``to_list()`` gives: ``{key: output}`` per output."""
    return [{key: out} for key, value in inputs for out in runner.run(value, key=key)]


@pytest.mark.parametrize(("agent_cls", "inputs", "expected", "funcs"), RUNNER_CONTEXT_EXECUTE,
                         ids=[case[0].__name__ for case in RUNNER_CONTEXT_EXECUTE])
def test_flink_agents_runner_context_execute_agents_give_its_outputs_and_replay(agent_cls, inputs, expected, funcs):
    effects.clear()
    runner = AgentRunner(agent_cls(), dnb.LocalRunner(dnb.MemoryStore()))
    assert outputs_by_key(runner, inputs) == expected
    assert len(effects) == len(inputs) * len(funcs)
    assert outputs_by_key(runner, inputs) == expected  # replayed: nothing runs again
    assert len(effects) == len(inputs) * len(funcs)


@pytest.mark.parametrize("point", ["before_call", "after_call"])
@pytest.mark.parametrize(("agent_cls", "inputs", "expected", "funcs"), RUNNER_CONTEXT_EXECUTE,
                         ids=[case[0].__name__ for case in RUNNER_CONTEXT_EXECUTE])
def test_flink_agents_runner_context_execute_agents_recover_a_crash_at_each_call(
        agent_cls, inputs, expected, funcs, point, sqlite_store):
    """A crash at every durable call of every input, each recovered by a new runner on the same journal:
    Flink Agents' outputs, finished calls never run again, the call in flight runs once more at most."""
    for func in funcs:
        effects.clear()
        name = f"{agent_cls.__name__}-{func.__name__}-{point}"  # one set of runs per crash
        with dnb.inject_crash(call=func, point=point), pytest.raises(dnb.SimulatedCrash):
            outputs_by_key(AgentRunner(agent_cls(), dnb.LocalRunner(sqlite_store), name=name), inputs)
        crashed = list(effects)
        assert outputs_by_key(AgentRunner(agent_cls(), dnb.LocalRunner(sqlite_store), name=name), inputs) == expected
        if point == "after_call":  # the call in flight (no reconciler) is the one side effect made twice
            assert effects[len(crashed)] == crashed[-1]
        assert len(effects) == len(inputs) * len(funcs) + (point == "after_call")


class PaymentClient:
    """A payment service the reconciler can ask what happened."""

    def __init__(self) -> None:
        self.payments: dict[str, str] = {}

    def submit(self, order_id: str) -> str:
        effects.append(("submit", order_id))
        self.payments[order_id] = f"pay-{order_id}"
        return self.payments[order_id]

    def get_status(self, order_id: str) -> str:
        return "SUCCEEDED" if order_id in self.payments else "FAILED"

    def lookup_completed_payment(self, order_id: str) -> str:
        effects.append(("lookup", order_id))
        return self.payments[order_id]

    def get_failure(self, order_id: str) -> Exception:
        return RuntimeError(f"no payment for {order_id}")


payment_client = PaymentClient()


class DocsAgent(Agent):
    """The documentation's examples: functions and the reconciler are local to the action."""

    @action(InputEvent.EVENT_TYPE)
    @staticmethod
    def process_input(event: Event, ctx: RunnerContext) -> None:
        input_event = InputEvent.from_event(event)

        def slow_external_call(data: str) -> str:
            effects.append(("slow", data))
            return f"Processed: {data}"

        processed = ctx.durable_execute(slow_external_call, input_event.input)

        def submit_payment(order_id: str) -> str:
            return payment_client.submit(order_id)

        def payment_reconciler() -> str:
            if payment_client.get_status(input_event.input) == "SUCCEEDED":
                return payment_client.lookup_completed_payment(input_event.input)
            raise payment_client.get_failure(input_event.input)

        paid = ctx.durable_execute(submit_payment, input_event.input, reconciler=payment_reconciler)
        ctx.send_event(Event(type="paid", attributes={"processed": processed, "paid": paid}))

    @action("paid")
    @staticmethod
    async def process_with_async(event: Event, ctx: RunnerContext) -> None:
        def slow_external_call(data: str) -> str:
            effects.append(("async", data))
            return f"Async: {data}"

        pending = ctx.durable_execute_async(slow_external_call, event.get_attr("paid"))
        assert isinstance(pending, AsyncExecutionResult)
        ctx.send_event(OutputEvent(output=[event.get_attr("processed"), await pending]))


SUBMIT = f"{__name__}.DocsAgent.process_input.<locals>.submit_payment"


def test_the_documented_reconciler_recovers_a_payment_whose_outcome_was_not_persisted(sqlite_store):
    effects.clear()
    payment_client.payments.clear()
    runner = AgentRunner(DocsAgent(), dnb.LocalRunner(sqlite_store))
    with dnb.inject_crash(call=SUBMIT, point="after_call"), pytest.raises(dnb.SimulatedCrash):
        runner.run("o1", key="o1")
    assert effects == [("slow", "o1"), ("submit", "o1")]
    # a new runner and agent instance (a restarted kernel): the local functions are recognised again
    recovered = AgentRunner(DocsAgent(), dnb.LocalRunner(sqlite_store))
    assert recovered.run("o1", key="o1") == [["Processed: o1", "Async: pay-o1"]]
    assert effects[2:] == [("lookup", "o1"), ("async", "pay-o1")]
    calls = sqlite_store.calls(runner.run_id("o1", "o1"))
    assert [(c.status, c.origin) for c in calls] == [(Status.SUCCEEDED, Origin.EXECUTED),
                                                     (Status.SUCCEEDED, Origin.RECONCILED),
                                                     (Status.SUCCEEDED, Origin.EXECUTED)]
    assert recovered.run("o1", key="o1") == [["Processed: o1", "Async: pay-o1"]]
    assert len(effects) == 4  # all replayed


def test_the_documented_reconciler_that_raises_fails_the_call_and_the_run(sqlite_store):
    effects.clear()
    payment_client.payments.clear()
    runner = AgentRunner(DocsAgent(), dnb.LocalRunner(sqlite_store))
    with dnb.inject_crash(call=SUBMIT, point="before_call"), pytest.raises(dnb.SimulatedCrash):
        runner.run("o2", key="o2")  # died before the payment was submitted
    for _ in range(2):  # the reconciler's failure is journaled: the second attempt replays it
        with pytest.raises(RuntimeError, match="no payment for o2"):
            runner.run("o2", key="o2")
    assert effects == [("slow", "o2")]
    calls = sqlite_store.calls(runner.run_id("o2", "o2"))
    assert [(c.status, c.origin) for c in calls] == [(Status.SUCCEEDED, Origin.EXECUTED),
                                                     (Status.FAILED, Origin.RECONCILED)]


class FireAndForgetAgent(Agent):
    @action(InputEvent.EVENT_TYPE)
    @staticmethod
    async def process(event: Event, ctx: RunnerContext) -> None:
        ctx.durable_execute_async(compute_value, 1, 2)  # never awaited: not run, not recorded
        ctx.send_event(OutputEvent(output=await ctx.durable_execute_async(compute_value, 3, y=4)))


def test_a_call_that_is_never_awaited_is_not_recorded_and_the_next_one_replays():
    effects.clear()
    store = dnb.MemoryStore()
    runner = AgentRunner(FireAndForgetAgent(), dnb.LocalRunner(store))
    assert runner.run("x", key="k") == [7] and runner.run("x", key="k") == [7]
    assert effects == [("compute", (3, 4))]
    assert [c.status for c in store.calls(runner.run_id("x", "k"))] == [Status.SUCCEEDED]


class AwaitTwiceAgent(Agent):
    """Awaits one ``durable_execute_async`` result twice, as an ``AsyncExecutionResult`` allows."""

    @action(InputEvent.EVENT_TYPE)
    @staticmethod
    async def process(event: Event, ctx: RunnerContext) -> None:
        ok = ctx.durable_execute_async(compute_value, 1, 2)
        first, again = await ok, await ok
        failing = ctx.durable_execute_async(raise_exception, "no")
        errors = []
        for _ in range(2):
            try:
                await failing
            except ValueError as exc:
                errors.append(str(exc))
        ctx.send_event(OutputEvent(output=[first, again, errors]))


def test_a_durable_async_result_awaited_twice_gives_its_outcome_again_without_a_second_call():
    """Flink Agents' local runner (and a replayed call) returns the one outcome on every await; a second
    await is no second call: nothing runs or is journaled again, so a replay matches the journal."""
    effects.clear()
    store = dnb.MemoryStore()
    runner = AgentRunner(AwaitTwiceAgent(), dnb.LocalRunner(store))
    assert runner.run("x", key="k") == [[3, 3, ["no", "no"]]]
    assert runner.run("x", key="k") == [[3, 3, ["no", "no"]]]  # replayed
    assert effects == [("compute", (1, 2)), ("raise", "no")]
    assert [c.status for c in store.calls(runner.run_id("x", "k"))] == [Status.SUCCEEDED, Status.FAILED]


class FailsAfterAnOutputAgent(Agent):
    @action(InputEvent.EVENT_TYPE)
    @staticmethod
    def process(event: Event, ctx: RunnerContext) -> None:
        ctx.send_event(OutputEvent(output={"partial": ctx.durable_execute(compute_value, 1, 2)}))
        ctx.send_event(Event(type="next", attributes={}))

    @action("next")
    @staticmethod
    def later(event: Event, ctx: RunnerContext) -> None:
        ctx.send_event(OutputEvent(output="queued"))  # sent by the failing action itself: not returned either
        ctx.durable_execute(raise_exception, "later failed")


def test_a_failing_input_gives_no_outputs_and_its_error_names_the_ones_it_had_sent():
    """As in Flink Agents (the failure fails the job, and ``execute`` of its local runner), a failed
    input returns no outputs; the exception says which ones an earlier action had sent, once per run."""
    effects.clear()
    runner = AgentRunner(FailsAfterAnOutputAgent(), dnb.LocalRunner(dnb.MemoryStore()))
    for _ in range(2):  # the second run replays the failure, and says the same once
        with pytest.raises(ValueError, match="later failed") as info:
            runner.run("x", key="k")
        assert len(info.value.__notes__) == 1
        assert "action 'later' failed" in info.value.__notes__[0] and "2 output(s) ({'partial': 3}, 'queued')" in (
            info.value.__notes__[0])
    assert effects == [("compute", (1, 2)), ("raise", "later failed")]


def test_agent_context_has_every_runner_context_method_with_its_exact_signature():
    for name, member in vars(RunnerContext).items():
        if name.startswith("_") or not getattr(member, "__isabstractmethod__", False):
            continue
        ours = inspect.getattr_static(AgentContext, name)
        if isinstance(member, property):
            assert isinstance(ours, property), name
            continue
        theirs = [(p.name, p.kind, p.default) for p in inspect.signature(member).parameters.values()]
        assert [(p.name, p.kind, p.default) for p in inspect.signature(ours).parameters.values()] == theirs, name
    assert not AgentContext.__abstractmethods__
