"""``AgentAction``: one input through a Flink Agents agent, as one durable_nb action.

``AgentAction(plan, name, config)(input, ctx)`` is an ordinary durable_nb action
(``action(input, ctx)``), so ``LocalRunner`` and ``FlinkRunner`` run it unchanged
and the whole agent run for one input is one durable_nb run: every action it
triggers journals its durable calls in that run, in a deterministic order, and a
recovery replays the run from its ``InputEvent``.

The event loop is Flink Agents' local one: wrap the input as ``InputEvent``, pop
events in FIFO order, collect ``OutputEvent`` outputs, call every action that
listens for the event's type in plan order. An ``async def`` action is driven
with ``coro.send(None)`` and no event loop, as Flink Agents drives it (so
``asyncio.gather``/``sleep`` are as unsupported as there). An event no action
listens for is dropped, as Flink Agents' Java runtime does.

The plan is compiled in the notebook and shipped as is: its functions are
resolved there (also for classes defined in the notebook, ``__main__``), so a
Flink worker that cannot import the notebook's module still runs them.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import reprlib
import time
import traceback
from collections.abc import Coroutine, Iterator
from typing import TYPE_CHECKING, Any

from flink_agents.api.events.event import Event, InputEvent, OutputEvent
from flink_agents.plan.function import JavaFunction
from flink_agents.runtime.resource_cache import ResourceCache

from .context import AgentContext, UnsupportedFeatureError
from .memory import MemoryByKey

if TYPE_CHECKING:
    from flink_agents.plan.agent_plan import AgentPlan
    from flink_agents.plan.configuration import AgentConfiguration

    from ..journal.context import RunnerContext

#: Longest pause between two polls of an async action waiting for its worker thread.
_MAX_POLL_S = 0.005


class KeyedInput:
    """An input with the key it runs under, for ``AgentRunner.run`` (``map`` gets keys from the runner)."""

    __slots__ = ("key", "value")

    def __init__(self, value: Any, key: Any) -> None:
        self.value = value
        self.key = key

    def __getstate__(self) -> tuple[Any, Any]:
        return (self.value, self.key)

    def __setstate__(self, state: tuple[Any, Any]) -> None:
        self.value, self.key = state

    def __repr__(self) -> str:
        return f"KeyedInput({self.value!r}, key={self.key!r})"


class AgentAction:
    """The durable_nb action that runs a Flink Agents agent on one input; returns the outputs."""

    def __init__(self, plan: AgentPlan, name: str, config: AgentConfiguration,
                 memory: MemoryByKey | None = None) -> None:
        for action in plan.actions.values():
            if isinstance(action.exec, JavaFunction):
                raise UnsupportedFeatureError(
                    f"the action {action.name!r} (a Java function target)", "Java actions run in the Java runtime"
                )
        self.plan = plan
        self.config = config
        self.__durable_name__ = name  # the run ids' prefix (durable_nb.runners.mapping.action_name)
        self._resources: ResourceCache | None = None
        self._memory = MemoryByKey() if memory is None else memory

    def __repr__(self) -> str:
        return f"AgentAction({self.__durable_name__!r})"

    def __getstate__(self) -> dict[str, Any]:
        # Resources (clients, connections) and memory stay in the process that made them.
        return {"plan": self.plan, "config": self.config, "name": self.__durable_name__}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.plan, self.config, self.__durable_name__ = state["plan"], state["config"], state["name"]
        self._resources, self._memory = None, MemoryByKey()

    def resources(self) -> ResourceCache:
        """Flink Agents' resource cache for this process, made on first use."""
        if self._resources is None:
            self._resources = ResourceCache(self.plan.resource_providers, self.config)
        return self._resources

    @property
    def memory(self) -> MemoryByKey:
        """The short-term memory of every key this action has run in this process."""
        return self._memory

    def close(self) -> None:
        """Close the resources this process opened (chat model clients, ...)."""
        if self._resources is not None:
            resources, self._resources = self._resources, None
            resources.close()

    def __call__(self, value: Any, ctx: RunnerContext) -> list[Any]:
        key = ctx.key
        if isinstance(value, KeyedInput):
            value, key = value.value, value.key
        with self._memory.for_run(key, ctx.run_id) as memory:
            agent_ctx = AgentContext(ctx, self.plan, self.resources(), self.config, key=key, short_term=memory)
            return self._events(agent_ctx, value)

    def _events(self, agent_ctx: AgentContext, value: Any) -> list[Any]:
        """Flink Agents' event loop for one input; the outputs of its OutputEvents, in order."""
        agent_ctx.send_event(InputEvent(input=value))
        outputs: list[Any] = []
        while agent_ctx.events:
            event = agent_ctx.events.popleft()
            if _is_output(event):
                outputs.append(OutputEvent.from_event(event).output)
                continue
            for name in self.plan.actions_by_event.get(event.get_type(), ()):
                agent_ctx.action_name = name
                try:
                    result = self.plan.actions[name].exec(event, agent_ctx)
                    if inspect.iscoroutine(result):
                        drive(result)
                except Exception as exc:
                    queued = [OutputEvent.from_event(e).output for e in agent_ctx.events if _is_output(e)]
                    _note_lost_outputs(exc, outputs + queued, name, agent_ctx.run_id)
                    raise
        return outputs


def _is_output(event: Event) -> bool:
    return isinstance(event, OutputEvent) or event.get_type() == OutputEvent.EVENT_TYPE


def _note_lost_outputs(exc: Exception, outputs: list[Any], action: str, run_id: str) -> None:
    """Say on a failing action's exception which outputs the input had already sent.

    A failed input gives no outputs (``run`` raises, ``map`` has a FAILED row), as a
    failure fails Flink Agents' job and its local ``execute``; without this note
    the outputs its actions sent (the failing one's too) vanish without a word.
    """
    if outputs:
        shown = ", ".join(reprlib.repr(output) for output in outputs[:3]) + (", ..." if len(outputs) > 3 else "")
        exc.add_note(f"AgentRunner: action {action!r} failed in run {run_id!r} after the input had sent "
                     f"{len(outputs)} output(s) ({shown}); a failed input returns none of them.")


def drive(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine to its end with ``coro.send(None)``, as Flink Agents drives async actions.

    No event loop is visible while it runs, even inside a notebook cell (whose
    kernel loop is running but blocked by this call): durable_nb's
    ``durable_execute_async`` then polls its worker thread by bare yields instead of
    scheduling on a loop that cannot turn.

    A Ctrl-C (any ``BaseException``) that lands between two polls is thrown into
    the coroutine (one that lands elsewhere closes it), where the awaited call waits
    for its worker thread before it propagates: a re-run of the input (its
    reconciler) then never overlaps the call still in flight, as with
    ``asyncio.run``, which waits for its executor.
    """
    pause = 0.0
    interrupt: BaseException | None = None
    with _no_running_loop():
        try:
            while True:
                if interrupt is None:
                    yielded = coro.send(None)
                else:
                    yielded, interrupt = coro.throw(interrupt), None
                if yielded is not None:
                    coro.close()
                    raise UnsupportedFeatureError(f"awaiting {type(yielded).__name__} in an async action", *_NO_LOOP)
                try:
                    time.sleep(pause)
                    pause = min(_MAX_POLL_S, pause + 0.0002)
                except BaseException as exc:  # Ctrl-C while a durable call runs in its worker thread
                    interrupt = exc
        except StopIteration as stop:
            return stop.value
        except RuntimeError as exc:
            coro.close()
            if _asyncio_without_loop(exc):  # asyncio.sleep/create_task in the action: as Flink Agents words it
                raise UnsupportedFeatureError("asyncio in an async action", *_NO_LOOP) from exc
            raise
        except BaseException:
            coro.close()  # an interrupt that landed outside the coroutine: closing it waits for the call too
            raise


#: Why asyncio cannot be awaited in an action (Flink Agents' own words first), and what to do instead.
_NO_LOOP = ("asyncio functions (gather/wait/create_task/sleep) are not supported in Flink Agents. "
            "Only 'await ctx.durable_execute_async(...)' is supported",
            "Flink Agents drives async actions without an event loop: await durable calls one at a time, and put "
            "a wait (time.sleep) inside the durable function, which runs in a worker thread.")


def _asyncio_without_loop(exc: RuntimeError) -> bool:
    """Whether ``exc`` is asyncio finding no loop in the action's own code, not a durable call's outcome.

    asyncio's ``get_running_loop`` says "no running event loop" (and a future awaited outside
    its loop "await wasn't used with future"). The same words from inside a durable call are
    that call's journaled outcome, to be replayed as it is: its traceback passes through
    durable_nb's journal, the action's own does not.
    """
    if str(exc) not in ("no running event loop", "await wasn't used with future"):
        return False
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    frames = [frame.f_code.co_filename for frame, _ in traceback.walk_tb(exc.__traceback__)][1:]  # [0]: drive
    return not any(os.path.abspath(name).startswith(package + os.sep) for name in frames)


@contextlib.contextmanager
def _no_running_loop() -> Iterator[None]:
    # asyncio's own hooks (exported in asyncio.events.__all__, stable since 3.7): the loop of a
    # notebook cell is hidden for the duration and put back after, even on a crash.
    loop = asyncio.events._get_running_loop()
    if loop is None:
        yield
        return
    asyncio.events._set_running_loop(None)
    try:
        yield
    finally:
        asyncio.events._set_running_loop(loop)
