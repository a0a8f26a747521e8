"""durable_nb: durable execution for Jupyter.

Journal expensive or side-effecting calls with ``ctx.durable_execute`` (the
Apache Flink Agents API); after a crash or kernel restart the journal replays
what already happened and reconcilers recover what was in flight.

Importing this package is cheap: the notebook layer (IPython, ipywidgets) and
Flink are loaded on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import (
    AwaitingInput,
    CancelledAwaitWarning,
    ChangedInputWarning,
    CrashNotInjectedWarning,
    DurableError,
    JournalFormatError,
    JournalReadOnlyError,
    JournalUnavailableError,
    JournalWriteError,
    LeaseLostError,
    NonDeterminismError,
    NonDeterminismWarning,
    RecordDecodeError,
    RunBusyError,
    RunNotFoundError,
    SimulatedCrash,
    UnpicklableArgumentWarning,
    UnpicklableOutputWarning,
    UnserializableResultError,
    UnserializableResultWarning,
)
from .journal.callid import durable
from .journal.context import RunnerContext, current_context
from .journal.faults import inject_crash
from .journal.records import CallRecord, DiscardedCall, Origin, RunRecord, RunStatus, Status
from .journal.replay import Decision
from .journal.store import Store
from .journal.timetravel import DryRunReport
from .runners.local import LocalRunner
from .stores import open_store
from .stores.memory import MemoryStore
from .stores.sqlite import SqliteStore

if TYPE_CHECKING:
    from .runners.flink_job import FlinkRunner
    from .stores.postgres import PostgresStore
    from .widgets import JournalView, ReconcilePanel, ReplayStepper

__version__ = "0.1.0"

__all__ = [
    "AwaitingInput",
    "CallRecord",
    "CancelledAwaitWarning",
    "ChangedInputWarning",
    "CrashNotInjectedWarning",
    "Decision",
    "DiscardedCall",
    "DryRunReport",
    "DurableError",
    "FlinkRunner",
    "JournalFormatError",
    "JournalReadOnlyError",
    "JournalUnavailableError",
    "JournalView",
    "JournalWriteError",
    "LeaseLostError",
    "LocalRunner",
    "MemoryStore",
    "NonDeterminismError",
    "NonDeterminismWarning",
    "Origin",
    "PostgresStore",
    "ReconcilePanel",
    "RecordDecodeError",
    "ReplayStepper",
    "RunBusyError",
    "RunNotFoundError",
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
    "UnserializableResultWarning",
    "current_context",
    "durable",
    "inject_crash",
    "load_ipython_extension",
    "open_store",
    "unload_ipython_extension",
]

_LAZY = {
    "FlinkRunner": ".runners.flink_job",
    "PostgresStore": ".stores.postgres",  # psycopg is the optional extra durable_nb[postgres]
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
    from .notebook.magics import load

    load(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    """``%unload_ext durable_nb``: remove the magics (journals are untouched)."""
    from .notebook.magics import unload

    unload(ipython)
