"""Apache Flink Agents agents, unchanged, with durable_nb's journal behind them.

``AgentRunner(agent, runner=None)`` runs an ``Agent`` (``@action`` methods, the
built-in chat-model / tool / retrieval actions, ``ReActAgent``) on a durable_nb
runner: the input becomes Flink Agents' ``InputEvent``, ``send_event`` routes
events to the actions that listen for them, the ``OutputEvent``s are the result,
and every ``durable_execute(_async)`` is journaled. One input is one durable_nb
run, so a crash anywhere recovers by replaying that run.

An optional extra: ``pip install 'durable_nb[flink-agents]'`` (Flink Agents with
every dependency it pins), or the minimal set this package needs (about 15 MB on
top of ``apache-flink``)::

    pip install 'durable_nb[flink]' pydantic==2.11.4 docstring-parser==0.16 'importlib-resources>=5'
    FLINK_AGENTS_SKIP_JAR_DOWNLOAD=1 pip install --no-deps flink-agents==0.3.1
"""

from __future__ import annotations

INSTALL_HINT = (
    "pip install 'durable_nb[flink-agents]' (Flink Agents with all its pinned dependencies), or the minimal set: "
    "pip install 'durable_nb[flink]' pydantic==2.11.4 docstring-parser==0.16 'importlib-resources>=5' && "
    "FLINK_AGENTS_SKIP_JAR_DOWNLOAD=1 pip install --no-deps flink-agents==0.3.1"
)


def _import_flink_agents() -> None:
    """Import Flink Agents, keeping the root logger as it was.

    ``flink_agents.plan.function`` calls ``logging.basicConfig(level=INFO)`` at import,
    which would turn every library's INFO records into notebook output; the notebook's
    own logging configuration wins here.
    """
    import logging

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        import flink_agents.api.runner_context
        import flink_agents.plan.agent_plan  # noqa: F401
    except ImportError as exc:  # pragma: no cover - exercised in a venv without the extra
        raise ImportError(
            f"durable_nb.flink_agents needs Apache Flink Agents 0.3 (import failed: {exc}). Install it with: "
            f"{INSTALL_HINT}"
        ) from exc
    finally:
        for handler in [h for h in root.handlers if h not in handlers]:
            root.removeHandler(handler)
        root.setLevel(level)


_import_flink_agents()

from .context import AgentContext, DurableAsyncResult, UnsupportedFeatureError  # noqa: E402
from .driver import AgentAction  # noqa: E402
from .runner import AgentRunner  # noqa: E402

__all__ = [
    "INSTALL_HINT",
    "AgentAction",
    "AgentContext",
    "AgentRunner",
    "DurableAsyncResult",
    "UnsupportedFeatureError",
]
