"""Several records at once in each Flink worker: ``FlinkRunner(concurrency=N)``.

A KeyedProcessFunction calls its function once per element and waits for it, so
a worker whose action waits on a model or an API waits record after record. With
``concurrency > 1`` the durable stage becomes two operators, chained into the
same Python worker:

    key_by -> KeyedProcessFunction: seq per key in ValueState, emits (key, record, seq)
           -> Flink async I/O (AsyncDataStream.unordered_wait, public PyFlink API):
              up to N records' runs at once in a thread pool, one store per worker

Why this keeps every promise of the one-operator shape:

* ``seq`` is still counted in keyed state, in arrival order, before any action
  runs, so run ids are the same as ``LocalRunner.map``'s and a restored job
  gives each record the same id again.
* Records of one key run one after another, in order (a record waits for the
  one before it of its key); only different keys overlap.
* PyFlink's async operator waits for every record in flight at the end of each
  bundle (before every checkpoint barrier), and then the worker's held-back
  journal writes are flushed (:class:`~durable_nb.runners.flink_worker.WorkerStore`):
  what a checkpoint covers is done and durable, exactly as with one operator.
* Concurrent first-time records share their commits (the store's group commit),
  so PENDINGs of several records cost one fsync.

For actions that take no time it is slower (each record hops between threads);
it pays as soon as records wait on I/O. See README, Performance.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..errors import OptionTypeError
from .flink_worker import Body, WorkerStore, next_seq


def sequence_function() -> Any:
    """The KeyedProcessFunction of the concurrent shape: counts ``seq`` per key and runs nothing."""
    from pyflink.common import Types
    from pyflink.datastream import KeyedProcessFunction
    from pyflink.datastream.state import ValueStateDescriptor

    class DurableSequence(KeyedProcessFunction):  # type: ignore[misc]
        def open(self, runtime_context: Any) -> None:
            self.seq = runtime_context.get_state(ValueStateDescriptor("durable_nb_seq", Types.LONG()))

        def process_element(self, value: Any, ctx: Any) -> Iterator[tuple[Any, Any, int]]:
            yield ctx.get_current_key(), value, next_seq(self.seq)

    return DurableSequence()


def concurrent_function(body: Body, init: Any, concurrency: int) -> Any:
    """The AsyncFunction running ``body(init, store, record, seq)`` for up to ``concurrency`` records at once."""
    from pyflink.datastream.functions import AsyncFunction

    class DurableConcurrent(AsyncFunction):  # type: ignore[misc]
        def __init__(self) -> None:
            self.worker: WorkerStore | None = None
            self.pool: ThreadPoolExecutor | None = None
            self.tails: dict[Any, asyncio.Future[None]] = {}
            """Per key, the record of that key that runs last so far: the next one waits for it."""

        def open(self, runtime_context: Any) -> None:
            self.worker = WorkerStore(init.store)
            self.pool = ThreadPoolExecutor(concurrency, thread_name_prefix="durable_nb-record")

        def close(self) -> None:
            if self.pool is not None:
                # Runs under way finish before the store closes; queued ones of a cancelled
                # attempt never start (the next attempt runs them, under the same run ids).
                self.pool.shutdown(wait=True, cancel_futures=True)
            if self.worker is not None:
                self.worker.close()

        async def async_invoke(self, item: tuple[Any, Any, int]) -> list[Any]:
            key, value, seq = item
            loop = asyncio.get_running_loop()
            before = self.tails.get(key)
            mine: asyncio.Future[None] = loop.create_future()
            self.tails[key] = mine
            try:
                if before is not None:
                    await before
                assert self.worker is not None
                return [await loop.run_in_executor(self.pool, body, init, self.worker.store, value, seq)]
            except (SystemExit, KeyboardInterrupt) as exc:
                raise crashed(exc) from exc
            finally:
                mine.set_result(None)
                if self.tails.get(key) is mine:
                    del self.tails[key]

    return DurableConcurrent()


class ActionCrashed(RuntimeError):
    """A record's action raised ``SystemExit`` or ``KeyboardInterrupt`` in the thread pool: the task fails.

    Why not let it through: PyFlink's async operator reports only an ``Exception`` to the
    task; a ``SystemExit`` ended its event loop's thread instead, the record never completed,
    and with no timeout the map waited forever. As an ``Exception`` it fails the task, and
    Flink restarts it, as the crash does with ``concurrency=1``.
    """


def crashed(exc: BaseException) -> ActionCrashed:
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return ActionCrashed(f"{text} (raised by the action in a Flink worker's thread pool, concurrency > 1)")


def durable_stage(keyed: Any, body: Body, init: Any, concurrency: int, parallelism: int | None) -> Any:
    """The durable operator(s) after ``key_by``: one KeyedProcessFunction, or seq then async I/O."""
    from pyflink.common import Time, Types
    from pyflink.datastream import AsyncDataStream

    from .flink_worker import keyed_function

    def parallel(stream: Any) -> Any:
        return stream if parallelism is None else stream.set_parallelism(parallelism)

    out = Types.PICKLED_BYTE_ARRAY()
    if concurrency == 1:
        return parallel(keyed.process(keyed_function(body, init), output_type=out))
    # forward(): the async stage keeps the seq stage's instances (chained, each key's records in one
    # place); a parallelism set on the returned stream alone is refused when the job is built.
    numbered = parallel(keyed.process(sequence_function(), output_type=out)).forward()
    # No timeout (0): a durable action may wait as long as it needs; Flink's failover covers a hung worker.
    return parallel(AsyncDataStream.unordered_wait(
        numbered, concurrent_function(body, init, concurrency), Time.milliseconds(0), 2 * concurrency, out))


def positive_int(name: str, value: Any, what: str) -> int:
    """``value`` if it is an int >= 1 (not a bool), else an error naming ``name`` and what it sets.

    Why two classes: ``parallelism="2"`` or ``1.5`` is the wrong type (:class:`OptionTypeError`), ``0`` a wrong
    value (ValueError); the runner's other options (``strict``, ``jobmanager``) already said TypeError for a type.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise OptionTypeError(f"{name} must be an int >= 1 ({what}), got {type(value).__name__} {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be an int >= 1 ({what}), got {value!r}")
    return value


def check_concurrency(concurrency: Any) -> int:
    return positive_int("concurrency", concurrency, "records run at once in each Flink worker: 1 runs them one "
                        "after another, 8-32 suits actions that wait on a model or an API")
