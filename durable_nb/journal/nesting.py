"""Nested durable calls: what "inside a durable call" means, and async functions in sync calls.

A durable call is atomic for the journal. ``durable_execute(_async)`` made while a
durable function or a reconciler runs is a plain call, part of the outer one, and
is not journaled: on replay the outer call is not run, so a journaled inner call
would sit where the next call is expected, a false mismatch would follow and the
next call (an e-mail) would run again.

"Inside a durable call" is a ``ContextVar``, so it is per thread and per asyncio
task, never per run context: 16 threads sharing one ``RunnerContext`` are 16
independent callers, and while one task is inside a call the other tasks' calls
stay journaled. Sync functions are marked in the worker thread that runs them;
coroutine functions in a copied context that only their own steps run in
(``_InCall`` in :mod:`durable_nb.journal.context`). A run opened inside a call
(``runner.run``) starts afresh (:func:`enter_run`); a ``%%durable`` cell is a run,
not a call, so the calls inside a cell are journaled.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import types
from collections.abc import Callable
from typing import Any

_in_call: contextvars.ContextVar[bool] = contextvars.ContextVar("durable_nb_in_call", default=False)


def inside_call() -> bool:
    """Whether this thread / asyncio task is running a durable function or a reconciler."""
    return _in_call.get()


def enter_run() -> contextvars.Token[bool]:
    """A run opened here starts outside any call (``open_run`` resets it at the end)."""
    return _in_call.set(False)


def leave_run(token: contextvars.Token[bool]) -> None:
    _in_call.reset(token)


def mark_in_call() -> None:
    """Mark the current context as inside a durable call (for a copied context only)."""
    _in_call.set(True)


def as_call(run: Callable[[], Any]) -> Callable[[], Any]:
    """``run`` marked as a durable call: durable calls it makes are plain calls, part of it."""

    def scoped() -> Any:
        __tracebackhide__ = True
        token = _in_call.set(True)
        try:
            return run()
        finally:
            _in_call.reset(token)

    return scoped


_CO_COROUTINE = inspect.CO_COROUTINE


def is_async_callable(func: Any) -> bool:
    """A coroutine function (also behind ``functools.partial`` or as an ``async def __call__``)."""
    # The common case, a plain function, without inspect (this runs on every durable call).
    if type(func) is types.FunctionType and not hasattr(func, "_is_coroutine_marker"):
        return bool(func.__code__.co_flags & _CO_COROUTINE)
    while isinstance(func, functools.partial):
        func = func.func
    if inspect.iscoroutinefunction(func):
        return True
    dunder_call = type(func).__dict__.get("__call__")  # an instance with ``async def __call__``
    return not inspect.isroutine(func) and inspect.iscoroutinefunction(dunder_call)


def check_sync(func: Any) -> None:
    """``durable_execute`` of a coroutine function is refused before anything is written."""
    if (  # the fast path of is_async_callable, without its call (this runs on every durable call)
        type(func) is types.FunctionType
        and not hasattr(func, "_is_coroutine_marker")
        and not func.__code__.co_flags & _CO_COROUTINE
    ):
        return
    if is_async_callable(func):
        name = getattr(func, "__qualname__", type(func).__qualname__)
        raise TypeError(
            f"durable_execute got the coroutine function {name!r}: calling it would only create a "
            f"coroutine, never run it. Use `await ctx.durable_execute_async({name}, ...)` for async "
            f"functions. Nothing was written to the journal."
        )
