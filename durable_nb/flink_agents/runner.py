"""``AgentRunner``: a Flink Agents agent on ``LocalRunner`` or ``FlinkRunner``, journaled."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from flink_agents.api.agents.agent import Agent
from flink_agents.api.resource import ResourceType
from flink_agents.plan.agent_plan import AgentPlan
from flink_agents.plan.configuration import AgentConfiguration

from ..journal.digest import digest_value
from ..journal.store import Store
from ..runners.local import LocalRunner
from ..runners.mapping import GroupedKey, Key, key_name, key_text, keys_of, records_of, run_id_for, stable_key
from .driver import AgentAction, KeyedInput
from .memory import memory_of

if TYPE_CHECKING:
    import pandas as pd


class _Field:
    """``key="id"`` for dict records and for pydantic/attribute records alike (picklable, unlike a lambda)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:  # how the note "raised by the key function ..." names it
        return f"key={self.name!r}"

    def __call__(self, record: Any) -> Any:
        if isinstance(record, Mapping):
            if self.name in record:
                return record[self.name]
            # A misspelt column: LocalRunner.map's message (the record's fields), not a bare KeyError('User').
            fields = f" (its fields: {', '.join(map(str, list(record)[:20]))})"
            raise KeyError(
                f"map(key={self.name!r}): a record has no field {self.name!r}{fields}: {str(record)[:80]}. "
                f"Pass key= the name of a field every record has, or a function of the record."
            )
        try:
            return getattr(record, self.name)
        except AttributeError:
            raise KeyError(
                f"map(key={self.name!r}): record {str(record)[:80]!r} has no field {self.name!r}; "
                f"pass key= the name of a field every record has, or a function of the record."
            ) from None


def _key_selector(key: Any) -> Callable[[Any], Any] | None:
    """The ``get_key`` of a pyflink ``KeySelector`` (how Flink Agents keys a stream), else None.

    Flink Agents takes ``from_datastream(stream, key_selector=MySelector())``; the same
    object given as ``key=`` keys inputs by what it returns, not by the selector object
    itself (whose text holds its address: a new run id in every process).
    """
    get_key = getattr(key, "get_key", None)
    return get_key if not callable(key) and callable(get_key) else None


def input_key(key: Any, input: Any) -> str:
    """What names an input's run under ``key``: the key and the input's digest (``"p1@22d03495eefda12d"``)."""
    return f"{key_text(key)}@{digest_value(input)[:16]}"


def _row_as_dict(input: Any) -> Any:
    """A pandas Series (a DataFrame row) as the dict ``map`` gives an action (InputEvent takes no Series)."""
    if type(input).__module__.startswith("pandas"):
        import pandas as pd

        if isinstance(input, pd.Series):
            return input.to_dict()
    return input


def _run_key(keyed: KeyedInput) -> str:
    """The key ``AgentRunner.map`` gives its runner for an input: what names its run, as ``run`` names it."""
    return run_key(keyed.key, keyed.value)


def _memory_key(keyed: KeyedInput) -> str:
    """The group of an input: the inputs sharing one short-term memory (its key's; an unkeyed input's own)."""
    return _run_key(keyed) if keyed.key is None else key_text(keyed.key)


def run_key(key: Any, input: Any) -> str:
    """:func:`input_key`, or the input's digest alone without a key (also a keyed map's record whose key is None)."""
    return digest_value(input)[:16] if key is None else input_key(key, input)


def _plan_of(agent: Agent, config: AgentConfiguration) -> AgentPlan:
    """Flink Agents' plan of ``agent``; an agent class it cannot find again is refused naming the fix.

    The plan finds each action as ``getattr(module, "Class")`` then the method, from the
    class's ``__qualname__``: a class made inside a function (``make.<locals>.MyAgent``)
    or nested in a class cannot be found, and the plan fails with a bare
    ``AttributeError: module '__main__' has no attribute 'make.<locals>.MyAgent'``.
    """
    cls = type(agent)
    try:
        return AgentPlan.from_agent(agent, config)
    except AttributeError as exc:
        if "." not in cls.__qualname__ or cls.__qualname__ not in str(exc):
            raise
        where = "a function" if "<locals>" in cls.__qualname__ else "a class"
        raise TypeError(
            f"AgentRunner: the agent class {cls.__qualname__} is defined inside {where}; Flink Agents finds an "
            f"agent's actions by module and class name, and {cls.__module__}.{cls.__qualname__} cannot be looked "
            f"up. Define the agent class at the top level of a module or notebook cell."
        ) from exc


class AgentRunner:
    """Runs an unchanged Flink Agents agent durably: one journaled run per input.

    Args:
        agent: a Flink Agents ``Agent`` instance (``@action`` methods, resources added
            with ``agent.add_resource(...)``, or a ``ReActAgent``).
        runner: a durable_nb ``LocalRunner`` (the default: ``LocalRunner()``, the
            journal in ``.durable/journal.db``), a ``FlinkRunner``, or a store for a
            ``LocalRunner``.
        config: Flink Agents configuration (an ``AgentConfiguration`` or a dict),
            what ``ctx.config`` returns (``AgentsExecutionEnvironment.get_config()``
            in Flink Agents).
        name: the prefix of the run ids; default the agent class's ``module.qualname``.

    Every ``durable_execute(_async)`` of every action (the built-in chat-model and
    tool actions included) is journaled in the input's run; running the same input
    under the same key again replays it, and a crashed run recovers.
    """

    def __init__(self, agent: Agent, runner: Any = None, *,
                 config: AgentConfiguration | Mapping[str, Any] | None = None, name: str | None = None) -> None:
        if isinstance(agent, type):
            raise TypeError(f"AgentRunner expects an agent instance, got the class {agent.__qualname__}; "
                            f"pass {agent.__qualname__}()")
        if not isinstance(agent, Agent):
            raise TypeError(f"AgentRunner expects a flink_agents Agent, got {type(agent).__name__}")
        if runner is None or isinstance(runner, (Store, str)) or hasattr(runner, "__fspath__"):
            runner = LocalRunner(runner)
        if not (hasattr(runner, "map") and hasattr(runner, "run") and hasattr(runner, "store")):
            raise TypeError(f"runner must be a durable_nb LocalRunner or FlinkRunner, got {type(runner).__name__}")
        if not isinstance(config, AgentConfiguration):
            config = AgentConfiguration(dict(config or {}))
        cls = type(agent)
        self.agent = agent
        self.runner = runner
        self.config = config
        self.name = name or f"{cls.__module__}.{cls.__qualname__}"
        self._compile()

    def _compile(self) -> None:
        # A recompiled plan (add_resource) keeps the keys' short-term memory, as Flink Agents' keyed state
        # outlives a change of resources: a key's next input sees what its earlier ones left.
        previous: AgentAction | None = getattr(self, "action", None)
        self.plan = _plan_of(self.agent, self.config)
        self.action = AgentAction(self.plan, self.name, self.config,
                                  memory=memory_of(self.store, self.name) if previous is None else previous.memory)
        """The durable_nb action ``action(input, ctx) -> outputs`` this runner gives its runner."""

    def add_resource(self, name: str, resource_type: ResourceType, instance: Any) -> AgentRunner:
        """A resource for the agent, as ``AgentsExecutionEnvironment.add_resource`` gives one (chainable).

        Flink Agents' examples add shared resources (a chat model connection, a
        tool) to the environment rather than to the agent; this is the same call.
        """
        self.action.close()
        self.agent.add_resource(name, resource_type, instance)
        self._compile()
        return self

    def __repr__(self) -> str:
        return f"AgentRunner({self.name}, {self.runner!r})"

    @property
    def store(self) -> Store:
        """The journal every run goes to (the runner's store)."""
        return self.runner.store  # type: ignore[no-any-return]

    def run_id(self, input: Any, key: Any = None) -> str:
        """The run id ``run(input, key=key)`` uses: ``"{name}/{key}@{digest of the input}#0"``.

        As in Flink Agents, each input (event) of a key is a run of its own, and the
        key's short-term memory carries from one to the next. The id comes from the
        key and the input alone, so it is the same in every process and whatever
        order inputs are given in: the same input again is the same run (replayed,
        or recovered after a crash, also after a kernel restart), another input is
        another run. ``map`` names its runs the same way, so ``run`` recovers or
        replays what ``map`` started and the other way round (a second equal input
        of a key in one map is ``#1``). Without a key: ``"{name}/{digest}#0"``, and
        the input has a short-term memory of its own.
        """
        input = _row_as_dict(input)
        selector = _key_selector(key)
        return run_id_for(self.name, run_key(key if selector is None else selector(input), input), 0)

    def run(self, input: Any, *, key: Any = None, run_id: str | None = None) -> list[Any]:
        """Run the agent on one input; the ``output`` of every ``OutputEvent`` it sent, in order.

        The first run, a recovery after a crash, or a replay of a finished run (then
        nothing runs again: every durable call comes from the journal). An exception
        from an action fails the run and propagates. A DataFrame row (``df.iloc[i]``,
        a pandas Series) is the dict ``map`` makes of it: the same input and run.
        ``key`` is the key's value, or a pyflink ``KeySelector`` that gives it.
        """
        input = _row_as_dict(input)
        selector = _key_selector(key)
        key = key if selector is None else stable_key(input, selector, -1)
        rid = run_id if run_id is not None else self.run_id(input, key)
        return self.runner.run(self.action, KeyedInput(input, key), run_id=rid)  # type: ignore[no-any-return]

    def map(self, inputs: Any, *, key: Key = None, **options: Any) -> pd.DataFrame:
        """One run per input (a DataFrame's rows, or a list); a DataFrame ``[key, run_id, status, result, error]``.

        ``key`` is a field name or a function of the input, as in ``LocalRunner.map``, or a
        pyflink ``KeySelector`` (Flink Agents' ``key_selector``)
        (run ids as :meth:`run_id` gives them, the same on both runners); ``result`` is
        the list of outputs of that input. A failing input is a FAILED row.
        ``options`` go to the runner's ``map`` (``progress=`` on ``FlinkRunner``).
        """
        by: Key | Callable[[Any], Any] = _Field(key) if isinstance(key, str) else _key_selector(key) or key
        # Each input travels with the user's key (the key its short-term memory is kept under; None: a
        # memory of its own); the runner names its run by key and digest, as ``run`` does.
        records = records_of(inputs, by)
        keys = [None] * len(records) if by is None else keys_of(records, by)
        keyed = [KeyedInput(record, k) for record, k in zip(records, keys, strict=True)]
        # Grouped by memory: on FlinkRunner a key's inputs then run in one worker, in order, each seeing the
        # memory the key's earlier inputs left (partitioned by run key, they were spread over the workers).
        frame = self.runner.map(self.action, keyed, key=GroupedKey(_run_key, _memory_key), **options)
        frame["key"] = [k.key for k in keyed] if by is not None else list(range(len(keyed)))
        # The key column is named as LocalRunner.map names it: the field's name, or "key" for a field
        # named like a result column (key="status" would otherwise give two "status" columns).
        return frame.rename(columns={"key": key_name(key)})  # type: ignore[no-any-return]

    def close(self) -> None:
        """Close the resources (chat model clients, ...) opened in this process."""
        self.action.close()


__all__ = ["AgentRunner"]
