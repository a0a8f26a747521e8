"""``AgentContext``: Flink Agents' ``RunnerContext``, backed by a durable_nb run.

Every action of a Flink Agents agent receives one. It *is* an instance of
``flink_agents.api.runner_context.RunnerContext`` (the plan checks action
signatures against that class, and user code may ``isinstance`` it), and it
delegates the two durable calls to durable_nb's :class:`~durable_nb.RunnerContext`
of the run, so the replay rules are the ones every durable_nb runner uses.

What it provides, and why each piece is the way it is:

* ``send_event`` appends to the run's event queue; :mod:`.driver` routes it.
* ``durable_execute_async`` returns a :class:`DurableAsyncResult`, a subclass of
  Flink Agents' ``AsyncExecutionResult`` (code that checks for it keeps working),
  whose ``__await__`` is durable_nb's: nothing is written until it is awaited.
* ``short_term_memory`` / ``sensory_memory``: Flink Agents' own
  ``LocalMemoryObject`` over plain dicts. Short-term memory lives per key in the
  process running the agent (as Flink Agents' local runner keeps it), and a run
  that does not finish leaves it as it found it (as a Flink restore would). It is
  not journaled: a recovery re-runs the actions of the run, which write it again,
  while their durable calls replay. Sensory memory is new for every run.
* ``get_resource``: Flink Agents' ``ResourceCache`` over the plan's providers.
* ``config`` / ``action_config``: the ``AgentConfiguration`` given to the runner
  and the action's own config from the plan.
* Long-term memory and Java resources need Flink Agents' Java runtime:
  :class:`UnsupportedFeatureError` names them. Metric groups are ``None``, as
  Flink Agents documents for runs outside Flink.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any

from flink_agents.api.events.event import Event
from flink_agents.api.memory_object import MemoryType
from flink_agents.api.runner_context import AsyncExecutionResult
from flink_agents.api.runner_context import RunnerContext as FlinkAgentsContext
from flink_agents.plan.resource_provider import JavaResourceProvider, JavaSerializableResourceProvider
from flink_agents.runtime.local_memory_object import LocalMemoryObject

from ..errors import DurableError

if TYPE_CHECKING:
    from flink_agents.api.resource import Resource, ResourceType
    from flink_agents.plan.agent_plan import AgentPlan
    from flink_agents.plan.configuration import AgentConfiguration
    from flink_agents.runtime.resource_cache import ResourceCache

    from ..journal.context import RunnerContext


class UnsupportedFeatureError(DurableError, NotImplementedError):
    """A Flink Agents feature that needs its Java runtime, which ``AgentRunner`` does not start."""

    def __init__(self, feature: str, why: str, fix: str | None = None) -> None:
        self.feature = feature
        self.why = why
        self.fix = fix
        super().__init__(
            f"{feature} is not supported by durable_nb.flink_agents.AgentRunner: {why}. "
            + (fix or "Run this agent on Flink Agents' own runtime (its Java operator) for that feature.")
        )

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (type(self), (self.feature, self.why, self.fix))


class DurableAsyncResult(AsyncExecutionResult):
    """What ``ctx.durable_execute_async`` returns: one durable call, made when first awaited.

    Driven either by an asyncio event loop or by ``coro.send(None)`` with no loop
    (Flink Agents' way); durable_nb's awaitable already supports both.

    Awaited again, it gives the same outcome (the value, or the same exception)
    without running or journaling anything: Flink Agents' ``AsyncExecutionResult``
    may be awaited more than once (its local runner and a replayed call return
    the one outcome each time), and a second ``await`` is no second call (it
    would not be one on replay either, so journaling it would make the next
    recovery a mismatch).
    """

    def __init__(self, awaitable: Any, func: Callable[..., Any], args: tuple[Any, ...],
                 kwargs: dict[str, Any]) -> None:
        # No executor: durable_nb decides where func runs (a worker thread) when awaited.
        super().__init__(None, func, args, kwargs)
        self._awaitable = awaitable
        self._outcome: tuple[bool, Any] | None = None  # (raised, value or exception) once awaited to the end

    def __await__(self) -> Generator[Any, None, Any]:
        if self._outcome is None:
            try:
                value = yield from self._awaitable.__await__()
            except Exception as exc:  # a BaseException (Ctrl-C, a crash) is no outcome: the call stays PENDING
                self._outcome = (True, exc)
                raise
            self._outcome = (False, value)
            return value
        raised, value = self._outcome
        if raised:
            raise value
        return value


class AgentContext(FlinkAgentsContext):
    """Flink Agents' ``RunnerContext`` for one agent run, journaled by durable_nb."""

    def __init__(self, durable: RunnerContext, plan: AgentPlan, resources: ResourceCache,
                 config: AgentConfiguration, *, key: Any, short_term: dict[str, Any]) -> None:
        self.durable = durable
        """durable_nb's context of the run: ``run_id``, ``journal``, ``store``."""
        self.events: deque[Event] = deque()
        self.action_name: str | None = None
        self._plan = plan
        self._resources = resources
        self._config = config
        self._key = key
        self._sensory: dict[str, Any] = {}
        self._sensory_memory = LocalMemoryObject(MemoryType.SENSORY, self._sensory, LocalMemoryObject.ROOT_KEY)
        self._short_term_memory = LocalMemoryObject(MemoryType.SHORT_TERM, short_term, LocalMemoryObject.ROOT_KEY)

    def __repr__(self) -> str:
        return f"<AgentContext run_id={self.run_id!r} key={self._key!r} action={self.action_name!r}>"

    @property
    def key(self) -> Any:
        """The key the input was run under (Flink Agents: the KeyedStream key)."""
        return self._key

    @property
    def run_id(self) -> str:
        return self.durable.run_id

    # -- events -----------------------------------------------------------------

    def send_event(self, event: Event) -> None:
        if not isinstance(event, Event):
            raise TypeError(
                f"send_event expects a flink_agents Event (InputEvent, OutputEvent, ChatRequestEvent, ...), "
                f"got {type(event).__name__} in action {self.action_name!r} of run {self.run_id!r}"
            )
        self.events.append(event)

    # -- durable calls: durable_nb's rules ----------------------------------------

    def durable_execute(self, func: Callable[..., Any], *args: Any,
                        reconciler: Callable[[], Any] | None = None, **kwargs: Any) -> Any:
        return self.durable.durable_execute(func, *args, reconciler=reconciler, **kwargs)

    def durable_execute_async(self, func: Callable[..., Any], *args: Any,
                              reconciler: Callable[[], Any] | None = None, **kwargs: Any) -> DurableAsyncResult:
        awaitable = self.durable.durable_execute_async(func, *args, reconciler=reconciler, **kwargs)
        return DurableAsyncResult(awaitable, func, args, kwargs)

    # -- resources and configuration ----------------------------------------------

    def get_resource(self, name: str, type: ResourceType, metric_group: Any = None) -> Resource:
        provider = ((self._plan.resource_providers or {}).get(type) or {}).get(name)
        if isinstance(provider, (JavaResourceProvider, JavaSerializableResourceProvider)):
            raise UnsupportedFeatureError(
                f"the Java resource {name!r} ({type.value})", "Java resources are created by the Java runtime"
            )
        return self._resources.get_resource(name, type)

    @property
    def action_config(self) -> dict[str, Any]:
        return self._plan.get_action_config(action_name=self.action_name) or {}

    def get_action_config_value(self, key: str) -> Any:
        return (self._plan.get_action_config(action_name=self.action_name) or {}).get(key)

    @property
    def config(self) -> AgentConfiguration:
        return self._config

    # -- memory -------------------------------------------------------------------

    @property
    def sensory_memory(self) -> LocalMemoryObject:
        return self._sensory_memory

    @property
    def short_term_memory(self) -> LocalMemoryObject:
        return self._short_term_memory

    @property
    def long_term_memory(self) -> Any:
        raise UnsupportedFeatureError(
            "long-term memory (ctx.long_term_memory)", "Flink Agents backs it with its Java runtime and mem0"
        )

    # -- metrics: None outside Flink, as Flink Agents documents -------------------

    @property
    def agent_metric_group(self) -> None:
        return None

    @property
    def action_metric_group(self) -> None:
        return None

    def close(self) -> None:
        """Nothing to release per run: resources belong to the :class:`~.driver.AgentAction`."""
