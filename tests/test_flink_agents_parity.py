"""Flink Agents' own durable-execution scenarios, ported to durable_nb's ``RunnerContext``.

Flink Agents tests ``durable_execute`` / ``durable_execute_async`` with reconcilers
against a fake Java journal (``runtime/tests/test_flink_runner_context_reconcilable.py``)
and checks its call ids, digests and reconciler validation
(``runtime/tests/test_durable_execution.py``). The same scenarios are written here
against durable_nb's public API, so code written for Flink Agents behaves as its
documentation says: a reconciler only runs for a call left PENDING, its result or
exception is journaled and replayed, a mismatch discards the rest of the journal and
runs the function (not the reconciler), ``reconciler`` is never forwarded, and an
async call writes nothing until awaited. Flink Agents is not needed for these.
"""

from __future__ import annotations

import asyncio
import inspect
import warnings
from typing import Any

import pytest

import durable_nb as dnb
from durable_nb import Origin, Status

effects: list[tuple[str, Any]] = []


def call_value(value: str) -> str:
    effects.append(("call", value))
    return f"call:{value}"


def other_call(value: str) -> str:
    effects.append(("other", value))
    return f"other:{value}"


def collect_kwargs(**kwargs: Any) -> dict[str, Any]:
    return kwargs


def compute_value(x: int, y: int) -> int:
    effects.append(("compute", (x, y)))
    return x + y


@pytest.fixture
def runner() -> dnb.LocalRunner:
    effects.clear()
    return dnb.LocalRunner(dnb.MemoryStore())


def left_pending(runner: dnb.LocalRunner, run_id: str, func: Any, *args: Any, point: str = "after_call") -> None:
    """A first attempt that dies at ``point`` of ``func(*args)``: the call stays PENDING."""
    crash = dnb.inject_crash(call=func, point=point)
    with crash, pytest.raises(dnb.SimulatedCrash), runner.context(run_id) as ctx:
        ctx.durable_execute(func, *args)
    assert [c.status for c in runner.store.calls(run_id)] == [Status.PENDING]


def journal(runner: dnb.LocalRunner, run_id: str) -> list[tuple[str, Status, Origin | None]]:
    return [(c.call_id.rsplit(".", 1)[-1], c.status, c.origin) for c in runner.store.calls(run_id)]


def test_a_first_call_with_a_reconciler_executes_the_function_not_the_reconciler(runner):
    reconciled: list[int] = []
    with runner.context("r") as ctx:
        assert ctx.durable_execute(call_value, "order-1", reconciler=lambda: reconciled.append(1)) == "call:order-1"
    assert reconciled == []
    assert journal(runner, "r") == [("call_value", Status.SUCCEEDED, Origin.EXECUTED)]


def test_a_pending_call_is_recovered_by_its_reconciler_whose_result_is_journaled_and_replayed(runner):
    left_pending(runner, "r", call_value, "order-1")
    effects.clear()
    with runner.context("r") as ctx:
        assert ctx.durable_execute(call_value, "order-1", reconciler=lambda: "reconciled:order-1") == (
            "reconciled:order-1")
    assert effects == []  # the function did not run again
    assert journal(runner, "r") == [("call_value", Status.SUCCEEDED, Origin.RECONCILED)]
    assert runner.store.calls("r")[0].result() == "reconciled:order-1"

    def must_not_run() -> str:
        raise AssertionError("a terminal call must replay, not reconcile again")

    with runner.context("r") as ctx:
        assert ctx.durable_execute(call_value, "order-1", reconciler=must_not_run) == "reconciled:order-1"
    assert effects == []


def test_a_reconciler_that_raises_journals_the_failure_re_raises_it_and_moves_the_cursor_on(runner):
    left_pending(runner, "r", call_value, "order-1")
    effects.clear()

    def failed() -> str:
        raise ValueError("failed:order-1")

    with runner.context("r") as ctx:
        with pytest.raises(ValueError, match="failed:order-1"):
            ctx.durable_execute(call_value, "order-1", reconciler=failed)
        assert ctx.durable_execute(other_call, "next") == "other:next"  # the next call is index 1
    assert effects == [("other", "next")]
    assert journal(runner, "r") == [("call_value", Status.FAILED, Origin.RECONCILED),
                                    ("other_call", Status.SUCCEEDED, Origin.EXECUTED)]
    error = runner.store.calls("r")[0].error()
    assert isinstance(error, ValueError) and str(error) == "failed:order-1"
    with runner.context("r") as ctx:  # replayed: the recorded failure, nothing called
        with pytest.raises(ValueError, match="failed:order-1"):
            ctx.durable_execute(call_value, "order-1", reconciler=failed)
        ctx.durable_execute(other_call, "next")
    assert effects == [("other", "next")]


@pytest.mark.parametrize("recorded", ["pending", "succeeded"])
def test_a_mismatch_discards_the_journal_from_there_and_runs_the_function_not_the_reconciler(runner, recorded):
    """The journal holds ``call_value("other-order")`` (PENDING, or SUCCEEDED and then a later call); the
    recovery calls ``call_value("order-1")`` there: all of it is discarded and the function runs."""
    if recorded == "pending":
        left_pending(runner, "r", call_value, "other-order", point="before_call")
    else:
        with runner.context("r") as ctx:
            ctx.durable_execute(call_value, "other-order")
            ctx.durable_execute(other_call, "stale")
    effects.clear()
    reconciled: list[int] = []
    with runner.context("r") as ctx, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert ctx.durable_execute(call_value, "order-1", reconciler=lambda: reconciled.append(1)) == "call:order-1"
    assert reconciled == [] and effects == [("call", "order-1")]
    assert [w.category for w in caught] == [dnb.NonDeterminismWarning]
    assert journal(runner, "r") == [("call_value", Status.SUCCEEDED, Origin.EXECUTED)]
    assert runner.store.calls("r")[0].result() == "call:order-1"


def test_an_async_call_writes_nothing_until_awaited_and_then_executes_the_function(runner):
    reconciled: list[int] = []

    async def action() -> str:
        with runner.context("r") as ctx:
            pending = ctx.durable_execute_async(call_value, "order-1", reconciler=lambda: reconciled.append(1))
            assert runner.store.calls("r") == [] and effects == []
            return await pending

    assert asyncio.run(action()) == "call:order-1"
    assert reconciled == [] and journal(runner, "r") == [("call_value", Status.SUCCEEDED, Origin.EXECUTED)]


@pytest.mark.parametrize("outcome", ["result", "exception"])
def test_an_async_pending_call_is_recovered_by_its_reconciler(runner, outcome):
    left_pending(runner, "r", call_value, "order-1")
    effects.clear()

    def reconciler() -> str:
        if outcome == "exception":
            raise RuntimeError("reconcile unavailable")
        return "reconciled:order-1"

    async def action() -> str:
        with runner.context("r") as ctx:
            return await ctx.durable_execute_async(call_value, "order-1", reconciler=reconciler)

    if outcome == "exception":
        with pytest.raises(RuntimeError, match="reconcile unavailable"):
            asyncio.run(action())
        assert journal(runner, "r") == [("call_value", Status.FAILED, Origin.RECONCILED)]
    else:
        assert asyncio.run(action()) == "reconciled:order-1"
        assert journal(runner, "r") == [("call_value", Status.SUCCEEDED, Origin.RECONCILED)]
    assert effects == []


def test_an_async_call_is_awaitable_without_an_event_loop_as_flink_agents_drives_actions(runner):
    """Flink Agents drives an ``async def`` action with ``coro.send(None)``; no asyncio loop runs."""

    async def action(ctx: dnb.RunnerContext) -> int:
        return await ctx.durable_execute_async(compute_value, 2, y=3)

    with runner.context("r") as ctx:
        coro = action(ctx)
        with pytest.raises(StopIteration) as stop:
            while True:
                coro.send(None)
    assert stop.value.value == 5 and effects == [("compute", (2, 3))]


def test_the_reconciler_keyword_is_never_forwarded_to_the_function(runner):
    with runner.context("r") as ctx:
        assert ctx.durable_execute(collect_kwargs, reconciler=lambda: "unused") == {}
        assert ctx.durable_execute(collect_kwargs, x=1, reconciler=lambda: "unused") == {"x": 1}

        async def awaited() -> dict[str, Any]:
            return await ctx.durable_execute_async(collect_kwargs, reconciler=lambda: "unused", y=2)

        assert asyncio.run(awaited()) == {"y": 2}


def test_keyword_arguments_reach_the_function_and_replay(runner):
    """Flink Agents' e2e ``ExecuteWithKwargsTestAgent``: ``durable_execute(compute_value, x=..., y=20)``."""
    for _ in range(2):
        with runner.context("r") as ctx:
            assert ctx.durable_execute(compute_value, x=5, y=20) == 25
    assert effects == [("compute", (5, 20))]


class Callables:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def bound_no_arg(self) -> str:
        return f"bound:{self.prefix}"

    def requires_arg(self, value: int) -> str:
        return f"{self.prefix}:{value}"


@pytest.mark.parametrize("make", ["durable_execute", "durable_execute_async"])
def test_reconcilers_are_validated_at_the_call_with_flink_agents_messages(runner, make):
    with runner.context("r") as ctx:
        call = getattr(ctx, make)
        with pytest.raises(TypeError, match="reconciler must be callable"):
            call(call_value, "x", reconciler=1)
        with pytest.raises(TypeError, match="reconciler must be a callable that takes no arguments"):
            call(call_value, "x", reconciler=Callables("client").requires_arg)
        bound = call(call_value, "x", reconciler=Callables("client").bound_no_arg)  # a bound method is fine
        if make == "durable_execute_async":
            async def awaited() -> str:
                return await bound

            bound = asyncio.run(awaited())
        assert bound == "call:x"
    assert journal(runner, "r") == [("call_value", Status.SUCCEEDED, Origin.EXECUTED)]  # the refused wrote nothing


def test_call_ids_name_module_and_qualname_for_functions_methods_and_lambdas(runner):
    class_method_id = f"{__name__}.Sample.class_method"
    with runner.context("r") as ctx:
        ctx.durable_execute(Sample().instance_method, 1)
        ctx.durable_execute(Sample.static_method, 1)
        ctx.durable_execute(Sample.class_method, 1)
        ctx.durable_execute(lambda x: x + 1, 1)
    assert [c.call_id for c in runner.store.calls("r")] == [
        f"{__name__}.Sample.instance_method", f"{__name__}.Sample.static_method", class_method_id,
        f"{__name__}.{test_call_ids_name_module_and_qualname_for_functions_methods_and_lambdas.__name__}.<locals>.<lambda>"]


class Sample:
    def instance_method(self, x: int) -> int:
        return x * 2

    @staticmethod
    def static_method(x: int) -> int:
        return x * 3

    @classmethod
    def class_method(cls, x: int) -> int:
        return x * 4


def test_argument_order_and_positional_versus_keyword_tell_calls_apart(runner):
    """As Flink Agents' digest: ``f(1, 2)`` is not ``f(2, 1)``, nor ``f(1, y=2)``."""
    with runner.context("r") as ctx:
        ctx.durable_execute(compute_value, 1, 2)
    for args, kwargs in [((2, 1), {}), ((1,), {"y": 2})]:
        with runner.context("r") as ctx, warnings.catch_warnings():
            warnings.simplefilter("ignore", dnb.NonDeterminismWarning)
            ctx.durable_execute(compute_value, *args, **kwargs)
    assert effects == [("compute", (1, 2)), ("compute", (2, 1)), ("compute", (1, 2))]


def raise_with_attributes() -> None:
    error = RuntimeError("API error occurred")
    error.error_code = 500  # type: ignore[attr-defined]
    error.details = {"endpoint": "/api/chat", "retry_count": 3}  # type: ignore[attr-defined]
    raise error


def raise_none_message() -> None:
    raise RuntimeError(None)


def raise_key_error() -> None:
    raise KeyError("missing_key")


def raise_type_error() -> None:
    raise TypeError("Expected int, got str")


def raise_attribute_error() -> None:
    raise AttributeError("Object has no attribute 'foo'")


def raise_quoted() -> None:
    raise Exception("Generic exception with special chars: \"quotes\" and 'apostrophes'")


@pytest.mark.parametrize("func", [raise_with_attributes, raise_none_message, raise_key_error, raise_type_error,
                                  raise_attribute_error, raise_quoted])
def test_an_exception_of_the_function_is_journaled_and_replayed_with_its_class_message_and_attributes(runner, func):
    """Flink Agents persists the function's exception and re-raises it on replay (``cloudpickle`` round trip)."""
    raised = []
    for _ in range(2):
        with runner.context("r") as ctx:
            with pytest.raises(Exception) as info:
                ctx.durable_execute(func)
            raised.append(info.value)
    first, replayed = raised
    assert type(replayed) is type(first) and str(replayed) == str(first)
    assert getattr(replayed, "error_code", None) == getattr(first, "error_code", None)
    assert getattr(replayed, "details", None) == getattr(first, "details", None)
    assert journal(runner, "r") == [(func.__name__, Status.FAILED, Origin.EXECUTED)]


def test_the_signatures_are_flink_agents_runner_context_ones():
    """``durable_execute(self, func, *args, reconciler=None, **kwargs)``: names, kinds and defaults."""
    expected = [("self", inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.empty),
                ("func", inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.empty),
                ("args", inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.empty),
                ("reconciler", inspect.Parameter.KEYWORD_ONLY, None),
                ("kwargs", inspect.Parameter.VAR_KEYWORD, inspect.Parameter.empty)]
    for name in ("durable_execute", "durable_execute_async"):
        params = inspect.signature(getattr(dnb.RunnerContext, name)).parameters.values()
        assert [(p.name, p.kind, p.default) for p in params] == expected, name
