"""``LocalRunner``: actions in this process, journaled in a store (durable by default).

Thin on purpose: it picks run ids and opens runs; every replay decision is made
by ``_replay`` through the :class:`RunnerContext` the action receives.

Internal API reused by other runners: :func:`run_action` (one action on one
record inside an open run, sync or async) and the ``_mapping`` helpers.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from ..journal import codec
from ..journal.context import RunnerContext, open_run
from ..journal.digest import digest_value
from ..journal.store import Store
from ..stores import open_store
from .mapping import Key, action_name, key_name, keyed, records_of, run_id_for

if TYPE_CHECKING:
    import os

    import pandas as pd

Action = Callable[[Any, RunnerContext], Any]


def default_run_id(action: Action, value: Any) -> str:
    """Same action on an equal input -> same run id, so calling ``run`` again recovers it."""
    return f"{action_name(action)}/{digest_value(value)[:16]}"


def call_action(action: Action, value: Any, ctx: RunnerContext) -> Any:
    """Call a sync or async action inside an open run."""
    result = action(value, ctx)
    if inspect.isawaitable(result):
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(_await(result))
        raise RuntimeError(
            "an async action was run from inside a running event loop (a notebook cell?); "
            "use `await runner.run_async(action, value)` there."
        )
    return result


async def _await(awaitable: Any) -> Any:
    return await awaitable


def check_action(action: Any, *, sync: bool = True) -> None:
    """Refuse what cannot run before a run is opened, so a refusal never touches the journal."""
    if not callable(action):
        raise TypeError(f"an action must be a function action(input, ctx), got {type(action).__name__}")
    if sync and inspect.iscoroutinefunction(action):
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return
        raise RuntimeError(
            "an async action was run from inside a running event loop (a notebook cell?); "
            "use `await runner.run_async(action, value)` there."
        )


class LocalRunner:
    """Runs actions in-process; the journal survives crashes and kernel restarts.

    ``store`` is a :class:`Store`, a URL/path for :func:`open_store`, or None for
    the embedded default ``.durable/journal.db`` under the working directory.
    """

    def __init__(self, store: Store | str | os.PathLike[str] | None = None) -> None:
        self.store = open_store(store)

    def __repr__(self) -> str:
        return f"LocalRunner({self.store!r})"

    def run(self, action: Action, value: Any = None, *, run_id: str | None = None) -> Any:
        """Run ``action(value, ctx)`` as one run (first attempt or recovery) and return its result.

        Without ``run_id`` the id is derived from the action and the input, so a
        second ``run`` with an equal input recovers/replays the first.
        """
        check_action(action)
        rid = run_id if run_id is not None else default_run_id(action, value)
        with open_run(self.store, rid) as ctx:
            return call_action(action, value, ctx)

    async def run_async(self, action: Action, value: Any = None, *, run_id: str | None = None) -> Any:
        """``run`` for code already inside an event loop (notebook cells, async apps)."""
        check_action(action, sync=False)
        rid = run_id if run_id is not None else default_run_id(action, value)
        with open_run(self.store, rid) as ctx:
            result = action(value, ctx)
            return await result if inspect.isawaitable(result) else result

    def map(self, action: Action, records: Any, *, key: Key = None) -> pd.DataFrame:
        """One run per record; returns a DataFrame ``[key, run_id, status, result, error]`` in input order.

        A record whose action raises is a FAILED row, not an aborted map; a crash
        (``BaseException``) stops the map and the next ``map`` recovers.
        """
        from ..journal.frames import map_frame

        check_action(action)
        name = action_name(action)
        rows = []
        for k, seq, record in keyed(records_of(records), key):
            rid = run_id_for(name, k, seq)
            try:
                with open_run(self.store, rid, key=k) as ctx:
                    result = call_action(action, record, ctx)
            except Exception as exc:
                rows.append((k, rid, "FAILED", None, codec.error_preview(exc)))
            else:
                rows.append((k, rid, "COMPLETED", result, None))
        return map_frame(key_name(key), rows)

    @contextmanager
    def context(self, run_id: str) -> Iterator[RunnerContext]:
        """A run without an action function: ``with runner.context("r1") as ctx: ctx.durable_execute(...)``."""
        with open_run(self.store, run_id) as ctx:
            yield ctx
