"""``RunnerContext`` (what an action receives) and opening a run.

Internal API used by every runner and by the notebook layer:

* :func:`open_run(store, run_id, steal=False)` - a context manager that takes the
  run's lease, loads its journal, binds :func:`current_context` and yields a
  :class:`RunnerContext`. On normal exit the run is COMPLETED, on an ``Exception``
  FAILED; on any other ``BaseException`` (a crash, Ctrl-C) calls and status stay as
  ``kill -9`` would leave them and only the lease is released.
* :func:`current_context()` - the innermost open context in this thread/task, or None.

The rules themselves live in :mod:`durable_nb.journal.replay`; this module only adapts
them to the sync and async call styles of Flink Agents' ``RunnerContext``. Over 400 lines
because what each exit of a run writes (completed, failed, waiting, crashed, strict) is
read best beside the opening it undoes; the call styles share that state.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import functools
import inspect
import logging
import threading
import time
import warnings
from collections.abc import Awaitable, Callable, Coroutine, Generator, Sequence
from typing import Any, TypeVar

from ..errors import (
    AwaitingInput,
    CancelledAwaitWarning,
    JournalUnavailableError,
    JournalWriteError,
    NonDeterminismError,
    RecordDecodeError,
    check_run_id,
)
from .digest import digest_and_earlier
from .lease import end_owner, new_owner
from .nesting import as_call, enter_run, inside_call, leave_run, mark_in_call
from .records import CallRecord, RunStatus
from .replay import Decision, Journal, Step, StopRecovery, check_reconciler, identity_of, replay
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
        self._cancelled_awaits: list[str] = []  # calls whose await was cancelled: see _went_on

    @property
    def run_id(self) -> str:
        """The run this context journals into (Flink Agents' actions read it to key their own side effects)."""
        return self.journal.run_id

    @property
    def store(self) -> Store:
        """The journal's store: an action may read its own run's history (``ctx.store.calls(ctx.run_id)``)."""
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
        __tracebackhide__ = True  # IPython leaves durable_nb's own frames out of a user's traceback
        if self._cancelled_awaits:
            self._went_on(func)
        return self.journal.execute(func, args, kwargs, reconciler)  # type: ignore[no-any-return]

    def durable_input(self, prompt: str, *, choices: Sequence[Any] | None = None) -> Any:
        """Ask a person; the answer is journaled (origin RESOLVED) and replayed from then on.

        The first time, the call is journaled PENDING with its prompt, the run stops
        WAITING and :class:`AwaitingInput` propagates out of ``runner.run`` (the notebook
        shows a widget). Answer with ``store.answer(run_id, index, value)``; running
        the action again replays everything before it and returns the answer.
        ``choices`` (plain values) restricts the answers.
        """
        return self.journal.input(prompt, choices)

    def durable_execute_async(
        self, func: Callable[..., T], *args: Any, reconciler: Callable[[], T] | None = None, **kwargs: Any
    ) -> Awaitable[T]:
        """Awaitable ``durable_execute``: ``func`` runs off the event loop.

        The function and the reconciler are checked now; the arguments are digested, and
        anything written, when the result is awaited. A coroutine function is awaited on the loop instead (driven
        without a loop, Flink Agents' way: on a loop of its own, in a worker thread).
        """
        check_reconciler(reconciler, awaited=True)
        if inside_call():  # part of the enclosing durable call: a plain call (durable_nb.journal.nesting)
            return _Deferred(functools.partial(_plain_async, functools.partial(func, *args, **kwargs)))
        call_id, salt = identity_of(func)
        return _Deferred(functools.partial(self._execute_async, func, args, kwargs, reconciler, call_id, salt))

    async def _execute_async(
        self,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        reconciler: Callable[[], Any] | None,
        call_id: str,
        salt: bytes,
    ) -> Any:
        __tracebackhide__ = True
        journal = self.journal
        # Digested when awaited, not when called: the function runs with the arguments as they are now, and a
        # list the action changed in between (``batch.clear()`` after ``tasks.append(...)``) was journaled
        # with the values it did not run with, and the ChangedInputWarning blamed the durable function.
        args_digest, earlier = digest_and_earlier(args, kwargs, salt)
        if self._cancelled_awaits:
            self._went_on(func)
        # On another thread's event loop (a thread the action started): the run's end waits for it as for
        # a sync call (wait_running). Not on the run's own thread: its end would block the loop the call needs.
        count = threading.get_ident() != journal.home
        try:
            outcome, durable = journal.begin_queued(call_id, args_digest, reconciler is not None, count=count,
                                                    earlier=earlier)
        except StopRecovery:
            # A step of the ReplayStepper ends here: calls gathered with this one that began before it
            # finish and journal their outcomes first, or the loop's end would cancel one whose function
            # already ran, and the next step would run it again.
            await settle_calls(journal)
            raise
        if isinstance(outcome, CallRecord):
            return replay(outcome)
        journal.in_flight += 1
        try:
            return await self._perform_async(outcome, durable, func, args, kwargs, reconciler, args_digest)
        finally:
            journal.in_flight -= 1
            if count:
                journal.done_running()

    async def _perform_async(
        self,
        outcome: Step,
        durable: Callable[[], None] | None,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        reconciler: Callable[[], Any] | None,
        args_digest: str,
    ) -> Any:
        __tracebackhide__ = True
        journal = self.journal
        if durable is not None:  # waited for off the loop: calls gathered with this one share its commit
            await _off_loop(functools.partial(journal.wait_durable, outcome, durable))
        bound: Callable[[], Any] = (
            reconciler if reconciler is not None and outcome.decision is Decision.RECONCILE
            else functools.partial(func, *args, **kwargs)
        )

        cancelled: list[BaseException] = []

        async def run() -> Any:
            __tracebackhide__ = True
            # Marked "inside a durable call" in the worker thread / a copied context only,
            # never in this task: other calls of this task (or of coroutines driven
            # alongside it in this thread) stay journaled.
            looped = _loop_running()  # False: driven by coro.send(None), Flink Agents' way
            if _is_async(bound) and looped:
                value = await _InCall(bound())
            else:
                name = f"call {outcome.index}, {outcome.call_id}"
                work = bound if looped else functools.partial(_on_own_loop, bound)
                value = await _outlive_cancel(_off_loop(as_call(work)), cancelled, name)
            return await _InCall(value) if inspect.isawaitable(value) else value

        try:
            if bound is reconciler:
                return await journal.perform_async(outcome, run)
            with journal.arguments_watched(outcome, func, args, kwargs, args_digest):
                return await journal.perform_async(outcome, run)
        finally:
            if cancelled:  # the outcome is journaled: now the cancellation goes on
                self._cancelled_awaits.append(f"call {outcome.index} ({outcome.call_id})")
                raise cancelled[0]

    def _went_on(self, func: Callable[..., Any]) -> None:
        """Warn once when the action makes another durable call after one whose await was cancelled.

        Why: the first run saw that await cancelled (``except TimeoutError:`` a fallback), but the
        call's outcome is journaled, so a replay returns it at that await at once and the action
        may take the other branch: a mismatch, and the calls of that branch executed again. A
        timeout inside the durable function journals its ``TimeoutError`` and replays it.
        """
        cancelled, self._cancelled_awaits = ", ".join(self._cancelled_awaits), []
        warnings.warn(
            f"durable_nb: run {self.run_id!r} goes on to {getattr(func, '__qualname__', func)!r} after the await "
            f"of {cancelled} was cancelled (a timeout caught?). That call's outcome is journaled, so a replay "
            "returns it at that await instead of the cancellation, and may take another branch (the calls of "
            "that branch then run again). Put the timeout inside the durable function (its TimeoutError is "
            "journaled and replayed), or let the cancellation end the action.", CancelledAwaitWarning, stacklevel=3)


class _Deferred(Coroutine):  # type: ignore[type-arg]
    """What ``durable_execute_async`` returns: its coroutine is made when it is first awaited (or run as a task).

    Why: Flink Agents lets an action call ``durable_execute_async`` and never await it
    (fire and forget, not recorded); an eager coroutine would then warn, when collected,
    that ``RunnerContext._execute_async`` was never awaited. A ``Coroutine`` still, so
    ``asyncio.create_task`` and ``gather`` take it.
    """

    __slots__ = ("_coro", "_make")

    def __init__(self, make: Callable[[], Coroutine[Any, Any, Any]]) -> None:
        self._make: Callable[[], Coroutine[Any, Any, Any]] | None = make
        self._coro: Coroutine[Any, Any, Any] | None = None

    def _started(self) -> Coroutine[Any, Any, Any]:
        if self._coro is None:
            assert self._make is not None
            self._coro, self._make = self._make(), None
        return self._coro

    def __await__(self) -> Generator[Any, None, Any]:
        return self._started().__await__()

    def send(self, value: Any) -> Any:
        return self._started().send(value)

    def throw(self, *exc: Any) -> Any:
        return self._started().throw(*exc)

    def close(self) -> None:
        if self._coro is not None:
            self._coro.close()
        self._make = None


async def _plain_async(bound: Callable[[], Any]) -> Any:
    """A durable call made inside another one: run as a plain call, nothing journaled."""
    value = await bound() if _is_async(bound) else await _off_loop(bound)
    return await value if inspect.isawaitable(value) else value


class _InCall:
    """Awaits a coroutine whose every step runs in a copied context marked "inside a durable call"."""

    def __init__(self, awaitable: Any) -> None:
        self.inner = awaitable.__await__()
        self.context = contextvars.copy_context()
        self.context.run(mark_in_call)

    def __await__(self) -> Generator[Any, Any, Any]:
        send: Any = None
        error: BaseException | None = None
        while True:
            try:
                if error is None:
                    yielded = self.context.run(self.inner.send, send)
                else:
                    yielded = self.context.run(self.inner.throw, error)
            except StopIteration as stop:
                return stop.value
            try:
                send, error = (yield yielded), None
            except BaseException as exc:  # cancellation and friends go to the coroutine
                send, error = None, exc


class _Polled:
    """Awaits a thread-pool future by bare yields, for coroutines driven without asyncio.

    Flink Agents drives async actions with ``coro.send(None)`` and no event loop;
    code written for it awaits ``durable_execute_async`` this way.

    Interrupted while the function runs (Ctrl-C thrown in by the driver, a crash), it
    waits for the worker thread before re-raising, as ``asyncio.run`` waits for its
    executor: the call stays ``PENDING``, and a recovery run right after (its reconciler,
    or the function again) must not overlap the first attempt still in flight, which
    would then make its side effect a second time. A second Ctrl-C stops the wait.
    """

    def __init__(self, future: concurrent.futures.Future[Any]) -> None:
        self.future = future

    def __await__(self) -> Generator[None, None, Any]:
        try:
            while not self.future.done():
                yield
        except BaseException:
            concurrent.futures.wait([self.future])
            raise
        return self.future.result()


_pool: concurrent.futures.ThreadPoolExecutor | None = None


class CallNotStarted(BaseException):
    """No thread took a durable function (the interpreter is shutting down, the event loop is closed).

    A ``BaseException``, as a crash is: the function never ran, so this is not its
    outcome. As a ``RuntimeError`` it was journaled FAILED (origin EXECUTED) and every
    later attempt replayed it; now the call stays ``PENDING`` and the next attempt
    reconciles or runs it. A Flink attempt being cancelled shuts its worker down so,
    while records still run.
    """


def _off_loop(func: Callable[[], Any]) -> Awaitable[Any]:
    """Run ``func`` in a worker thread (with this context's variables) and await it."""
    runner = contextvars.copy_context().run
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    try:
        if loop is not None:
            return loop.run_in_executor(None, runner, func)
        global _pool
        if _pool is None:
            _pool = concurrent.futures.ThreadPoolExecutor(thread_name_prefix="durable_nb")
        return _Polled(_pool.submit(runner, func))
    except RuntimeError as exc:  # "cannot schedule new futures after interpreter shutdown", "Event loop is closed"
        raise CallNotStarted(f"durable_nb: a durable call's function was not started ({exc}); it stays PENDING") \
            from exc


async def settle_calls(journal: Journal) -> None:
    """Wait until no durable call of the run is in flight: before an async action's run closes, and when
    a step of the ReplayStepper stops the run.

    Why: an action can leave with a call still running in another task (a cancelled
    ``asyncio.gather`` settles at once, a task it started and never awaited). Closed
    meanwhile, the run would be COMPLETED with that call PENDING while its function
    runs on, and the outcome it then tries to journal would be refused. A cancellation
    of this wait (a second Ctrl-C) closes the run as it is: the call stays PENDING.
    """
    __tracebackhide__ = True
    while journal.in_flight or journal.running:  # running: sync calls other threads make in the run
        await _off_loop(functools.partial(time.sleep, 0.001))  # with or without a running event loop


async def _outlive_cancel(work: Awaitable[Any], cancelled: list[BaseException], name: str = "the call") -> Any:
    """Await a function running in a worker thread to its end, even when the awaiting task is cancelled.

    Why: a thread cannot be cancelled. Cancelled and gone (``asyncio.wait_for``'s timeout,
    a TaskGroup, Ctrl-C under ``asyncio.run``), the call would stay PENDING while its
    function still runs, and a retry right after would reconcile it before it finished
    (a lookup that finds no charge yet, or a second charge). Waited for, its outcome is
    journaled and the cancellation then goes on (``cancelled`` holds it for the caller).
    A second cancellation stops the wait: the call stays PENDING, as a crash leaves it.
    The wait is announced: a timeout that does not time out is otherwise a mystery.
    """
    __tracebackhide__ = True
    if not isinstance(work, asyncio.Future):  # driven without a loop (Flink Agents): _Polled waits itself
        return await work
    while True:
        try:
            return await asyncio.shield(work)
        except asyncio.CancelledError as exc:
            if cancelled or work.cancelled():
                raise
            cancelled.append(exc)
            if work.done():
                return work.result()
            warnings.warn(
                f"durable_execute_async: the await of {name} was cancelled while it runs in a thread, which "
                "cannot be stopped; waiting for it to end so its outcome is journaled (a retry then replays it "
                "instead of reconciling a call still running). Cancel again to stop waiting: the call stays "
                "PENDING, as after a crash.", CancelledAwaitWarning, stacklevel=2)


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _on_own_loop(bound: Callable[[], Any]) -> Any:
    """Call ``bound``; what it returns to await (a coroutine function's, a reconciler's coroutine) is
    awaited to its end on an event loop of its own, in the worker thread calling this.

    Why: an action driven by ``coro.send(None)`` has no loop, and a durable coroutine
    awaited inline there fails at its first ``asyncio.sleep`` or async client request
    with "no running event loop", which would be journaled as the call's outcome.
    """
    value = bound()
    if not inspect.isawaitable(value):
        return value

    async def main() -> Any:
        return await value

    return asyncio.run(main())


def _is_async(func: Callable[..., Any]) -> bool:
    while isinstance(func, functools.partial):
        func = func.func
    return inspect.iscoroutinefunction(func)


def check_open_run_id(run_id: object) -> None:
    """The run ids ``open_run`` accepts; ``runner.dry_run`` checks the same, never predicting a refused run."""
    check_run_id(run_id)


def refuse_inside_loop(instead: str, awaitable: Any = None) -> None:
    """A sync door awaits an async action with ``asyncio.run``, which cannot start inside a running loop.

    Refused before anything is awaited, naming the async door to use instead; ``awaitable``
    (the action's coroutine, never started) is closed so that it is not reported as never awaited.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    if inspect.iscoroutine(awaitable):
        awaitable.close()
    raise RuntimeError(
        f"an async action was run from inside a running event loop (a notebook cell?); use `await {instead}` there."
    )


class open_run:  # lower case: a function to its callers; a class so that entering a run is cheap
    """Open (or recover) a run; see the module docstring for what each exit writes.

    ``with open_run(store, run_id) as ctx:``. ``strict``: a replay mismatch raises
    NonDeterminismError instead of discarding. A run stopped at an unanswered
    ``durable_input`` closes WAITING (never FAILED), the input hook is told, and
    :class:`AwaitingInput` propagates. A class rather than a generator-based
    context manager: a replayed ``map`` record opens one per record, and the
    generator machinery cost as much as a third of what the replay itself costs.
    """

    __slots__ = ("_before", "_ctx", "_key", "_outside", "_owner", "_steal", "_store", "_strict", "_token", "run_id")

    def __init__(
        self, store: Store, run_id: str, *, steal: bool = False, key: Any = None, strict: bool = False
    ) -> None:
        self._store, self.run_id, self._steal, self._key, self._strict = store, run_id, steal, key, strict

    def __enter__(self) -> RunnerContext:
        __tracebackhide__ = True  # a RunBusyError shows where the store raised it, not this frame too
        run_id, store = self.run_id, self._store
        check_open_run_id(run_id)
        if type(run_id) is not str:  # a numpy.str_ (an id read from an array): a MemoryStore kept it as one
            # Its characters, as SQLite and PostgreSQL bind it; not str(): a (str, Enum) member's is "Order.A".
            run_id = self.run_id = str.__str__(run_id)
        owner = self._owner = new_owner()
        # Strict mode keeps the run's status when it raises NonDeterminismError: remember it (a read, strict only).
        self._before = getattr(store.run(run_id), "status", None) if self._strict else None
        try:
            recorded = store.open_run(run_id, owner, steal=self._steal)
        except BaseException:
            end_owner(owner)
            raise
        ctx = self._ctx = RunnerContext(Journal(store, run_id, recorded, owner), key=self._key)
        if self._strict:
            ctx.journal.strict = True
        self._token = _current.set(ctx)
        self._outside = enter_run()  # a run opened inside a durable call journals its own calls
        return ctx

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        ctx, store, run_id, owner = self._ctx, self._store, self.run_id, self._owner
        try:
            if exc_type is None or issubclass(exc_type, Exception):
                self._settle_threads()
            if exc_type is None:
                _close_completed(ctx, store, run_id, owner, self._kept_status)
            elif issubclass(exc_type, (StopRecovery, RecordDecodeError, NonDeterminismError)):
                # A stepped recovery stopped, a recorded outcome cannot be loaded, or strict mode
                # found the code and the journal disagree: the status on record stays (a COMPLETED
                # run is never rewritten as FAILED by a replay that wrote nothing); only the lease goes.
                end_owner(owner)
                with contextlib.suppress(Exception):
                    store.close_run(run_id, owner, self._kept_status(exc_type))  # releases the lease too
            elif issubclass(exc_type, Exception):
                # Not discard_unreached(): an action that fails early (a transient error before
                # its first durable call) must not throw away calls a later recovery will reach.
                waiting = ctx.journal.awaiting
                # When the journal failed already, the error being raised (the first write refused) says
                # more than the close failing the same way; otherwise a journal that is down now is news.
                failed = issubclass(exc_type, (JournalWriteError, JournalUnavailableError))
                also = (JournalUnavailableError,) if failed else ()
                try:  # the lease is released even when the journal cannot be written (disk full)
                    with contextlib.suppress(JournalWriteError, *also):
                        store.close_run(run_id, owner, RunStatus.FAILED if waiting is None else RunStatus.WAITING)
                finally:
                    end_owner(owner)
                if waiting is not None:
                    _tell_input_hook(store, waiting)
            else:
                # Calls and status stay exactly as a crash leaves them. The lease is released
                # so that another process can recover now; after kill -9 it would be stale anyway.
                end_owner(owner)
                with contextlib.suppress(Exception):
                    store.close_run(run_id, owner, None)
        finally:
            ctx.journal.closed = "its `with` block has ended (the run was closed)"
            leave_run(self._outside)
            _current.reset(self._token)


    def _settle_threads(self) -> None:
        """Wait for durable calls other threads are still making in the run (see ``Journal.wait_running``).

        A Ctrl-C during the wait closes the run as a crash leaves it, lease released, and goes on.
        """
        try:
            self._ctx.journal.wait_running()
        except BaseException:
            end_owner(self._owner)
            with contextlib.suppress(Exception):
                self._store.close_run(self.run_id, self._owner, None)
            raise

    def _kept_status(self, exc_type: type[BaseException]) -> RunStatus | None:
        """The status a strict run had, if its first write (a PENDING call re-executed) made it RUNNING."""
        if self._before in (None, RunStatus.RUNNING) or not issubclass(exc_type, NonDeterminismError):
            return None
        return self._before if getattr(self._store.run(self.run_id), "status", None) is RunStatus.RUNNING else None


def _close_completed(ctx: RunnerContext, store: Store, run_id: str, owner: str,
                     kept: Callable[[type[BaseException]], RunStatus | None]) -> None:
    """The action returned: close the run COMPLETED (WAITING if it swallowed an AwaitingInput, ``kept`` if strict)."""
    waiting = ctx.journal.awaiting
    if waiting is not None:  # the action swallowed AwaitingInput: the run still waits
        store.close_run(run_id, owner, RunStatus.WAITING)
        end_owner(owner)
        _tell_input_hook(store, waiting)
        raise waiting
    try:
        ctx.journal.discard_unreached()
    except BaseException as exc:
        store.close_run(run_id, owner, kept(type(exc)))
        end_owner(owner)
        raise
    try:
        store.close_run(run_id, owner, None if ctx.journal.reached_none else RunStatus.COMPLETED)
    finally:
        end_owner(owner)


# ---------------------------------------------------------------- durable_input hook

InputHook = Callable[[Store, AwaitingInput], None]
_input_hook: InputHook | None = None


def set_input_hook(hook: InputHook | None) -> InputHook | None:
    """Register ``hook(store, waiting)``, called when a run has just stopped WAITING at a ``durable_input``.

    The notebook layer registers one to show an answer widget; the journal layer
    never imports it. When the hook runs, the run is closed WAITING and the PENDING
    input call (with its prompt) is in the store, so ``store.answer`` works. Returns
    the previous hook; ``None`` removes it. A failing hook is logged, never raised.
    """
    global _input_hook
    previous, _input_hook = _input_hook, hook
    return previous


def _tell_input_hook(store: Store, waiting: AwaitingInput) -> None:
    hook = _input_hook
    if hook is None:
        return
    try:
        hook(store, waiting)
    except Exception:
        logging.getLogger("durable_nb").exception("the durable_input hook %r failed", hook)
