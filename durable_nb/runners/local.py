"""``LocalRunner``: actions in this process, journaled in a store (durable by default).

Thin on purpose: it picks run ids and opens runs; every replay decision is made
by :mod:`durable_nb.journal.replay` through the :class:`RunnerContext` the action
receives.

Reused by the other runners: :func:`call_action` (one sync or async action on one
record inside an open run), :func:`check_action` and :func:`default_run_id`; the
map helpers they share are in :mod:`.mapping` (keys, run ids), :mod:`.rows`
(:class:`~.rows.MapRow`, the failed-record rule) and :mod:`.progress` (the bar).
"""

from __future__ import annotations

import asyncio
import builtins
import functools
import inspect
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING, Any

from ..errors import RunBusyError
from ..journal import timetravel
from ..journal.context import RunnerContext, open_run, refuse_inside_loop, settle_calls
from ..journal.digest import digest_value
from ..journal.history import check_flag
from ..journal.replay import Journal, StopRecovery, found_in
from ..journal.store import Store
from ..stores import open_store
from . import map_warnings
from .isolation import isolated
from .mapping import Key, action_name, key_name, keyed, records_of, run_id_for
from .progress import MapProgress
from .rows import MapRow, apply_action

if TYPE_CHECKING:
    import os

    import pandas as pd

    from ..journal.timetravel import DryRunReport

Action = Callable[[Any, RunnerContext], Any]

_RUN_ASYNC = "runner.run_async(action, value)"
"""What ``run`` (and ``map``) tell a caller inside a running event loop to use instead."""


def default_run_id(action: Action, value: Any) -> str:
    """Same action on an equal input -> same run id, so calling ``run`` again recovers it."""
    return f"{action_name(action)}/{digest_value(value)[:16]}"


def call_action(action: Action, value: Any, ctx: RunnerContext) -> Any:
    """Call a sync or async action inside an open run."""
    __tracebackhide__ = True  # IPython leaves durable_nb's own frames out of a user's traceback
    result = action(value, ctx)
    if inspect.isawaitable(result):
        refuse_inside_loop(_RUN_ASYNC, result)
        return asyncio.run(_await(result, ctx))
    return result


_GROUPS: tuple[type[BaseException], ...] = tuple(
    t for t in (getattr(builtins, "BaseExceptionGroup", None),) if t is not None)  # none before Python 3.11


async def _await(awaitable: Any, ctx: RunnerContext) -> Any:
    """The async action's result, once no durable call of its run is in flight (see ``settle_calls``)."""
    __tracebackhide__ = True
    try:
        return await awaitable
    except _GROUPS as group:  # a TaskGroup's: a stepped recovery's stop comes out as itself
        stop = found_in(group, StopRecovery)
        if stop is None:
            raise
        raise stop from None
    finally:
        await settle_calls(ctx.journal)


def in_fresh_thread(name: str, work: Callable[[], Any]) -> Any:
    """Run ``work()`` in a fresh thread named ``name``, wait for it, and return or re-raise its outcome.

    Where an event loop runs (a widget's click handler on the kernel's loop), ``call_action``
    refuses async actions; a fresh thread has no running loop, so sync and async actions
    both work, inside a loop or not.
    """
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["result"] = work()
        except BaseException as exc:  # handed to the caller, which sorts them out
            box["error"] = exc

    thread = threading.Thread(target=run, name=name)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["result"]


def check_strict(strict: Any) -> bool:
    """``strict`` if it is a bool: ``strict="no"`` or ``strict=None`` would otherwise be read as true or false."""
    if not isinstance(strict, bool):
        raise TypeError(f"strict must be True or False (True: a replay mismatch raises NonDeterminismError "
                        f"instead of discarding the journal), got {type(strict).__name__} {strict!r}")
    return strict


def check_action(action: Any, *, sync: bool = True, instead: str | None = None) -> None:
    """Refuse what cannot run before a run is opened, so a refusal never touches the journal."""
    if not callable(action):
        raise TypeError(f"an action must be a function action(input, ctx), got {type(action).__name__}")
    _check_takes_input_and_ctx(action)
    body = action if inspect.isroutine(action) or isinstance(action, (functools.partial, type)) else (
        type(action).__call__)  # an instance of a class: its __call__ is the body
    if inspect.isgeneratorfunction(body) or inspect.isasyncgenfunction(body):
        # Its body runs only when its result is iterated: after its run ended, so its run was COMPLETED
        # with no call journaled, and the durable calls it then made were refused (the run was closed).
        while isinstance(body, functools.partial):  # named by its function, not 'partial'
            body = body.func
        name = getattr(body, "__qualname__", None) or type(action).__name__
        raise TypeError(f"the action {name!r} is a generator function (it has `yield`): its body would run only "
                        f"when its result is iterated, after its run has ended, outside the journal. Make it "
                        f"return its result instead, e.g. collect the values and `return [...]`.")
    if sync and inspect.iscoroutinefunction(action):
        refuse_inside_loop(instead or _RUN_ASYNC)


def _check_takes_input_and_ctx(action: Any) -> None:
    """A TypeError naming the shape when ``action`` cannot be called as ``action(input, ctx)``.

    Called with the wrong arity, the action would fail inside its run: one FAILED run per record
    of a map (on Flink, after the job started) and a message that does not say what an action is.
    The signature read is the one that gets called: a ``functools.wraps`` decorator that supplies or
    adapts arguments (``wrapper(x, ctx)`` around ``f(x)``) is valid however its wrapped function reads.
    """
    try:
        sig = inspect.signature(action, follow_wrapped=False)
    except (TypeError, ValueError):  # a builtin without a signature: let the call decide
        return
    try:
        sig.bind(None, None)
    except TypeError:
        name = getattr(action, "__qualname__", None) or type(action).__name__
        raise TypeError(f"an action is called as action(input, ctx), but {name!r} takes {sig}: give it a ctx "
                        f"parameter, through which it makes its durable calls (ctx.durable_execute(...))") from None


class LocalRunner:
    """Runs actions in-process; the journal survives crashes and kernel restarts.

    ``store`` is a :class:`Store`, a URL/path for :func:`open_store`, or None for
    the embedded default ``.durable/journal.db`` under the working directory.
    """

    def __init__(self, store: Store | str | os.PathLike[str] | None = None, *, strict: bool = False) -> None:
        check_strict(strict)  # before open_store, which may create the journal file
        self.store = open_store(store)
        self.strict = strict
        """Strict mode: a replay mismatch raises NonDeterminismError instead of discarding the journal."""

    def __repr__(self) -> str:
        return f"LocalRunner({self.store!r})"

    def run(self, action: Action, value: Any = None, *, run_id: str | None = None) -> Any:
        """Run ``action(value, ctx)`` as one run (first attempt or recovery) and return its result.

        Without ``run_id`` the id is derived from the action and the input, so a
        second ``run`` with an equal input recovers/replays the first. A replay unpickles
        the recorded outcomes, which runs code chosen by whoever wrote the journal: trusted journals only.
        """
        __tracebackhide__ = True  # IPython leaves durable_nb's own frames out of a user's traceback
        check_action(action)
        rid = run_id if run_id is not None else default_run_id(action, value)
        with open_run(self.store, rid, strict=self.strict) as ctx:
            return call_action(action, isolated(value), ctx)

    async def run_async(self, action: Action, value: Any = None, *, run_id: str | None = None) -> Any:
        """``run`` for code already inside an event loop (notebook cells, async apps)."""
        __tracebackhide__ = True
        check_action(action, sync=False)
        rid = run_id if run_id is not None else default_run_id(action, value)
        with open_run(self.store, rid, strict=self.strict) as ctx:
            result = action(isolated(value), ctx)
            return await _await(result, ctx) if inspect.isawaitable(result) else result

    def map(self, action: Action, records: Any, *, key: Key = None, progress: bool | None = False) -> pd.DataFrame:
        """One run per record; returns a DataFrame ``[key, run_id, status, result, error]`` in input order.

        A record whose action raises is a FAILED row, not an aborted map (so is one
        whose run cannot be opened); a record whose run another process holds is a
        RUNNING row (nothing ran here; map again later and it replays); a record stopped at an
        unanswered ``durable_input`` is a WAITING row; a crash (``BaseException``)
        stops the map and the next ``map`` recovers. ``progress=True`` shows a
        tqdm bar (records done, replayed, failed); ``None`` is off, as ``FlinkRunner.map``'s default
        (the runner's setting) is, so code written for either runner runs on both.
        """
        from ..journal.frames import map_frame

        check_action(action)
        if progress is None:
            progress = False
        check_flag("progress", progress)  # progress="no" showed a bar, as strict="no" once meant strict
        name = action_name(action)
        items = records_of(records, key)
        rows: list[MapRow] = []
        # One durable boundary for the whole map: a record costs one commit (its PENDING, carrying
        # the previous record's outcome); everything is durable when the DataFrame is returned.
        # Run ids up front: a bad key fails before any run is opened, and the store may read ahead.
        plan = [(k, record, run_id_for(name, k, seq)) for k, seq, record in keyed(items, key)]
        # Per-record warnings (a second batch reusing the first one's run ids: one each) summed up (map_warnings).
        with MapProgress(len(items), name, enabled=progress) as bar, self.store.boundary(), \
                self.store.prefetch([rid for _, _, rid in plan]), map_warnings.summed() as warned:
            for k, record, rid in plan:
                warned.run_id = rid  # its warnings are counted under its run
                row, replayed = self._map_one(action, record, k, rid, count=progress)
                rows.append(row)
                bar.add(row, replayed=replayed)
        return map_frame(key_name(key), rows)

    def _map_one(self, action: Action, record: Any, key: Any, run_id: str, *, count: bool) -> tuple[MapRow, bool]:
        """One record of :meth:`map`: its row, and whether its run replayed every call (when ``count``)."""
        journals: list[Journal] = []

        def call(ctx: RunnerContext) -> Any:
            if count:
                journals.append(ctx.journal)
            return call_action(action, isolated(record), ctx)

        try:
            row = apply_action(open_run(self.store, run_id, key=key, strict=self.strict), call, key, run_id)
        except RunBusyError as exc:  # held by another process: running there, not failed
            row = MapRow.busy(key, run_id, exc)
        except Exception as exc:  # the run could not be opened or closed: the record's row says why
            row = MapRow.failed(key, run_id, exc)
        # Replayed: the run made durable calls and every one came from the journal.
        return row, bool(journals) and journals[0].replayed > 0 and journals[0].performed == 0

    def context(self, run_id: str) -> AbstractContextManager[RunnerContext]:
        """A run without an action function: ``with runner.context("r1") as ctx: ctx.durable_execute(...)``."""
        return _ContextBlock(self._context(run_id), run_id)

    @contextmanager
    def _context(self, run_id: str) -> Iterator[RunnerContext]:
        with open_run(self.store, run_id, strict=self.strict) as ctx:
            yield ctx

    # -- time travel ---------------------------------------------------------------------

    def fork(self, run_id: str, at: int, new_run_id: str | None = None) -> str:
        """``store.fork``: a new run with calls ``0..at-1`` copied; ``run(..., run_id=new_id)`` continues it."""
        return self.store.fork(run_id, at, new_run_id)

    def dry_run(self, action: Action, value: Any = None, run_id: str | None = None) -> DryRunReport:
        """What running ``action`` on ``run_id`` would do: every recorded call replayed, nothing run or written.

        Stops at the first call that would not replay and reports it (see
        :class:`DryRunReport`). Async actions too; inside a running event loop use
        :meth:`dry_run_async`. "Nothing run" means no durable function or reconciler: the
        replayed calls' recorded outcomes are unpickled, as in a real replay (trusted journals only).
        A strict runner's dry run reports what strict mode refuses (a mismatch) as refused.
        """
        check_action(action, instead=timetravel.DRY_RUN_ASYNC)
        rid = run_id if run_id is not None else default_run_id(action, value)
        return timetravel.dry_run(self.store, rid, lambda ctx: action(isolated(value), ctx), strict=self.strict)

    async def dry_run_async(
        self, action: Action, value: Any = None, run_id: str | None = None
    ) -> DryRunReport:
        """``dry_run`` for code already inside an event loop (notebook cells)."""
        check_action(action, sync=False)
        rid = run_id if run_id is not None else default_run_id(action, value)
        return await timetravel.dry_run_async(self.store, rid, lambda ctx: action(isolated(value), ctx),
                                              strict=self.strict)


class _ContextBlock(AbstractContextManager):  # type: ignore[type-arg]
    """What ``runner.context(run_id)`` returns: the run opens at ``with``, and the block's ``as`` is the context.

    Why not the bare ``@contextmanager`` object: ``ctx = runner.context("r1"); ctx.durable_execute(...)``
    failed with "'_GeneratorContextManager' object has no attribute 'durable_execute'", which names
    neither the mistake nor the fix.
    """

    def __init__(self, block: AbstractContextManager[RunnerContext], run_id: str) -> None:
        self._block = block
        self._run_id = run_id

    def __enter__(self) -> RunnerContext:
        return self._block.__enter__()

    def __exit__(self, *exc: Any) -> bool | None:
        return self._block.__exit__(*exc)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or not hasattr(RunnerContext, name):
            raise AttributeError(name)
        raise AttributeError(
            f"runner.context({self._run_id!r}) opens the run only in a with block, and the context is what the "
            f"block gives: write `with runner.context({self._run_id!r}) as ctx:` and use ctx.{name} inside it."
        )
