"""durable_nb: durable execution for Jupyter.

Journal expensive or side-effecting calls with ``ctx.durable_execute`` (the
Apache Flink Agents API); after a crash or kernel restart the journal replays
what already happened and reconcilers recover what was in flight.

Importing this package is cheap: the notebook layer (IPython, ipywidgets) and
Flink are loaded on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._callid import durable
from ._context import RunnerContext, current_context
from ._faults import inject_crash
from ._records import CallRecord, DiscardedCall, Origin, RunRecord, RunStatus, Status
from ._replay import Decision
from ._runner_local import LocalRunner
from ._store import Store, open_store
from ._store_memory import MemoryStore
from ._store_sqlite import SqliteStore
from .errors import (
    DurableError,
    JournalFormatError,
    NonDeterminismWarning,
    RunBusyError,
    SimulatedCrash,
    UnpicklableArgumentWarning,
    UnpicklableOutputWarning,
    UnserializableResultError,
)

if TYPE_CHECKING:
    from ._runner_flink import FlinkRunner
    from .widgets import JournalView, ReconcilePanel, ReplayStepper

__version__ = "0.1.0"

__all__ = [
    "CallRecord",
    "Decision",
    "DiscardedCall",
    "DurableError",
    "FlinkRunner",
    "JournalFormatError",
    "JournalView",
    "LocalRunner",
    "MemoryStore",
    "NonDeterminismWarning",
    "Origin",
    "ReconcilePanel",
    "ReplayStepper",
    "RunBusyError",
    "RunRecord",
    "RunStatus",
    "RunnerContext",
    "SimulatedCrash",
    "SqliteStore",
    "Status",
    "Store",
    "UnpicklableArgumentWarning",
    "UnpicklableOutputWarning",
    "UnserializableResultError",
    "current_context",
    "durable",
    "inject_crash",
    "load_ipython_extension",
    "open_store",
    "unload_ipython_extension",
]

_LAZY = {
    "FlinkRunner": "._runner_flink",
    "JournalView": ".widgets",
    "ReplayStepper": ".widgets",
    "ReconcilePanel": ".widgets",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'durable_nb' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(module, __name__), name)
    globals()[name] = value
    return value


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext durable_nb``: register the ``%%durable`` magics."""
    from ._magics import load

    load(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    """``%unload_ext durable_nb``: remove the magics (journals are untouched)."""
    from ._magics import unload

    unload(ipython)
