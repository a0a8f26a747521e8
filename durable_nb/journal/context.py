"""``RunnerContext`` (what an action receives) and opening a run.

Internal API used by every runner and by the notebook layer:

* :func:`open_run(store, run_id, steal=False)` - a context manager that takes the
  run's lease, loads its journal, binds :func:`current_context` and yields a
  :class:`RunnerContext`. On normal exit the run is COMPLETED, on an ``Exception``
  FAILED; on any other ``BaseException`` (a crash, Ctrl-C) calls and status stay as
  ``kill -9`` would leave them and only the lease is released.
* :func:`current_context()` - the innermost open context in this thread/task, or None.

The rules themselves live in :mod:`durable_nb._replay`; this module only adapts
them to the sync and async call styles of Flink Agents' ``RunnerContext``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import functools
import inspect
from collections.abc import Awaitable, Callable, Generator, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from .lease import end_owner, new_owner
from .records import CallRecord, RunStatus
from .replay import Decision, Journal, StopRecovery, check_reconciler, identify, replay
from .store import Store

T = TypeVar("T")

_current: contextvars.ContextVar[RunnerContext | None] = contextvars.ContextVar(
    "durable_nb_context", default=None
)


def current_context() -> RunnerContext | None:
    """The context of the run executing in this thread or task (inside an action or a %%durable cell)."""
    return _current.get()


class RunnerContext:
    """What an action receives: durable calls bound to one run.

    Same call shape as Flink Agents' ``RunnerContext.durable_execute``; here the
    journal is real on every runner.
    """

    def __init__(self, journal: Journal, *, key: Any = None) -> None:
        self.journal = journal
        self.key = key
        """The record key, when the run came from ``map``."""

    @property
    def run_id(self) -> str:
        return self.journal.run_id

    @property
    def store(self) -> Store:
        return self.journal.store

    def __repr__(self) -> str:
        return f"<RunnerContext run_id={self.run_id!r} cursor={self.journal.cursor}>"

    def durable_execute(
        self, func: Callable[..., T], *args: Any, reconciler: Callable[[], T] | None = None, **kwargs: Any
    ) -> T:
        """Run ``func(*args, **kwargs)`` once across crashes and recoveries.

        Journaled as PENDING before ``func`` runs and as SUCCEEDED/FAILED after;
        on recovery a finished call is replayed from the journal, and a call left
        PENDING is recovered by ``reconciler()`` (no arguments) if given, else run
        again. ``reconciler`` is never passed to ``func``.
        """
        return self.journal.execute(func, args, kwargs, reconciler)  # type: ignore[no-any-return]

    def durable_execute_async(
        self, func: Callable[..., T], *args: Any, reconciler: Callable[[], T] | None = None, **kwargs: Any
    ) -> Awaitable[T]:
        """Awaitable ``durable_execute``: ``func`` runs off the event loop.

        Arguments and the reconciler are checked now; nothing is written until the
        result is awaited. A coroutine function is awaited on the loop instead.
        """
        check_reconciler(reconciler)
        call_id, args_digest = identify(func, args, kwargs)
        return self._execute_async(func, args, kwargs, reconciler, call_id, args_digest)

    async def _execute_async(
        self,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        reconciler: Callable[[], Any] | None,
        call_id: str,
        args_digest: str,
    ) -> Any:
        journal = self.journal
        outcome = journal.begin(call_id, args_digest, reconciler is not None)
        if isinstance(outcome, CallRecord):
            return replay(outcome)
        bound: Callable[[], Any] = (
            reconciler if reconciler is not None and outcome.decision is Decision.RECONCILE
            else functools.partial(func, *args, **kwargs)
        )

        async def run() -> Any:
            value = await bound() if _is_async(bound) else await _off_loop(bound)
            return await value if inspect.isawaitable(value) else value

        return await journal.perform_async(outcome, run)


class _Polled:
    """Awaits a thread-pool future by bare yields, for coroutines driven without asyncio.

    Flink Agents drives async actions with ``coro.send(None)`` and no event loop;
    code written for it awaits ``durable_execute_async`` this way.
    """

    def __init__(self, future: concurrent.futures.Future[Any]) -> None:
        self.future = future

    def __await__(self) -> Generator[None, None, Any]:
        while not self.future.done():
            yield
        return self.future.result()


_pool: concurrent.futures.ThreadPoolExecutor | None = None


def _off_loop(func: Callable[[], Any]) -> Awaitable[Any]:
    """Run ``func`` in a worker thread (with this context's variables) and await it."""
    runner = contextvars.copy_context().run
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        global _pool
        if _pool is None:
            _pool = concurrent.futures.ThreadPoolExecutor(thread_name_prefix="durable_nb")
        return _Polled(_pool.submit(runner, func))
    return loop.run_in_executor(None, runner, func)


def _is_async(func: Callable[..., Any]) -> bool:
    while isinstance(func, functools.partial):
        func = func.func
    return inspect.iscoroutinefunction(func)


@contextmanager
def open_run(store: Store, run_id: str, *, steal: bool = False, key: Any = None) -> Iterator[RunnerContext]:
    """Open (or recover) a run; see the module docstring for what each exit writes."""
    if not isinstance(run_id, str) or not run_id:
        raise ValueError(f"run_id must be a non-empty string, got {run_id!r}")
    owner = new_owner()
    try:
        recorded = store.open_run(run_id, owner, steal=steal)
    except BaseException:
        end_owner(owner)
        raise
    ctx = RunnerContext(Journal(store, run_id, recorded), key=key)
    token = _current.set(ctx)
    try:
        yield ctx
    except StopRecovery:
        end_owner(owner)
        raise
    except Exception:
        # Not discard_unreached(): an action that fails early (a transient error before
        # its first durable call) must not throw away calls a later recovery will reach.
        store.close_run(run_id, owner, RunStatus.FAILED)
        end_owner(owner)
        raise
    except BaseException:
        # Calls and status stay exactly as a crash leaves them. The lease is released
        # so that another process can recover now; after kill -9 it would be stale anyway.
        end_owner(owner)
        with contextlib.suppress(Exception):
            store.close_run(run_id, owner, None)
        raise
    else:
        ctx.journal.discard_unreached()
        store.close_run(run_id, owner, RunStatus.COMPLETED)
        end_owner(owner)
    finally:
        _current.reset(token)
