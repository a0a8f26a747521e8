"""What runs in a Flink Python worker for a durable job: one record in, one durable run, one row out.

Shared by :class:`~durable_nb.runners.flink_job.FlinkRunner` and
:func:`~durable_nb.runners.flink_job.durable_process`:

* :func:`keyed_function` - the ``KeyedProcessFunction``: ``seq`` per key in
  ValueState, one store per worker opened in ``open()``, the worker's writes
  flushed at the end of every bundle (so before every checkpoint).
* :func:`perform` - one record's run, with the failed-record rule of
  ``LocalRunner.map`` (:func:`~durable_nb.runners.rows.apply_action`).
* The records file ``FlinkRunner.map`` streams through a FileSource: one line per
  record, ``partition<TAB>base64(pickle((index, key, record)))``.
"""

from __future__ import annotations

import base64
import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cloudpickle

from ..errors import RunBusyError
from ..journal.context import RunnerContext, open_run
from ..journal.records import RunStatus
from ..journal.store import Store
from . import worker_warnings
from .flink_env import COLLECT_MAX, StoreSpec
from .local import Action, call_action
from .mapping import Key, key_of, key_text, run_id_for, sequence_numbers
from .progress import ReplayCounter
from .rows import MapRow, WireRow, apply_action
from .worker_warnings import Relayed

#: How long a worker waits for a run still leased by an attempt Flink is cancelling.
BUSY_WAIT_S = 60.0

# ---------------------------------------------------------------- one record, in a worker


class open_run_when_free:  # a class, not a generator context manager: it runs once per record
    """``open_run``, waiting while an attempt Flink is cancelling still holds the run's lease.

    After a failover the old attempt's Python worker may still be finishing the
    same record; Flink gives the key to the new attempt, the lease makes it wait
    for the old one rather than interleave journal writes. A lease still held
    after ``BUSY_WAIT_S`` fails the task, and Flink's restart strategy tries again.
    """

    __slots__ = ("_run",)

    def __init__(self, store: Store, run_id: str, key: Any, strict: bool) -> None:
        self._run = open_run(store, run_id, key=key, strict=strict)

    def __enter__(self) -> RunnerContext:
        deadline = time.monotonic() + BUSY_WAIT_S
        while True:
            try:
                return self._run.__enter__()
            except RunBusyError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def __exit__(self, *exc: Any) -> None:
        self._run.__exit__(*exc)


Again = tuple[tuple[int, str], ...]
"""``(index, call_id)`` of each durable call of a record's run that executed again (PENDING, no reconciler)."""


def perform(store: Store, action: Action, record: Any, run_id: str, key: Any, *,
            strict: bool) -> tuple[MapRow, bool, Again]:
    """One record in a worker: its :class:`MapRow` (the rule LocalRunner.map follows), whether it only replayed,
    and the calls it executed again (a task that died mid-call, restarted by Flink).

    An ``Exception`` from the action is the record's FAILED (or WAITING) row, see
    :func:`~durable_nb.runners.rows.apply_action`; so is a ``ValueError`` from the
    store about the run itself (a run id the journal cannot hold), which no retry
    can cure. Anything else (a crash, a lease still busy, a store that is down)
    propagates and fails the task: Flink restores it from the last checkpoint and
    the journal replays what was done.
    """
    counter = ReplayCounter()

    def call(ctx: RunnerContext) -> Any:
        if ctx.journal.observer is None:
            ctx.journal.observer = counter
        return call_action(action, record, ctx)

    try:
        row = apply_action(open_run_when_free(store, run_id, key, strict), call, key, run_id)
    except ValueError as exc:  # the same on every attempt: the record's row says why (as on LocalRunner)
        row = MapRow.failed(key, run_id, exc)
    return row, row.status is RunStatus.COMPLETED and counter.replayed, tuple(counter.reexecuted)


@dataclass(frozen=True, slots=True)
class Shipped:
    """A record's outcome on its way from a worker to the notebook (``FlinkRunner``'s collect sink).

    It travels as the plain tuple ``(index, wire, replayed, warned, again)``: PyFlink pickles every output
    with cloudpickle, and an instance of a class costs 5 µs there and 2 µs to load, a tuple 1.5 and 0.3.
    """

    index: int
    """The record's position in the map's input."""
    wire: WireRow
    """:meth:`MapRow.to_wire`: the row as plain values, its result or exception pickled."""
    replayed: bool
    """Every durable call of the run replayed (for the progress bar)."""
    warned: Relayed = ()
    """durable_nb's warnings the run gave in the worker (:mod:`.worker_warnings`)."""
    again: Again = ()
    """The run's durable calls that executed again (:attr:`FlinkRunner.reexecuted`): the notebook says "ran again"
    for them, as it does on ``--runner local``, where the worker's own output would only reach Flink's log."""

    @property
    def status(self) -> str:
        _run_id, status, _payload, _error = self.wire
        return status


# ---------------------------------------------------------------- the records file


def partition(key: Any) -> str:
    """The text Flink partitions by: :func:`key_text`, the text ``seq`` counts by on every runner."""
    return base64.b64encode(key_text(key).encode("utf-8", "surrogatepass")).decode("ascii")  # any str a key has


def write_records(path: Path, records: list[Any], keys: list[Any], groups: list[Any] | None = None) -> None:
    """One line per record: ``partition<TAB>base64(pickle((index, key, record)))``.

    With ``groups`` (a :class:`~durable_nb.runners.mapping.GroupedKey` map) a line is partitioned by
    its group and carries its ``seq`` too, ``(index, key, record, seq)``: the keyed state then counts
    groups, not keys, so the run's ``seq`` is counted here, in input order, as every runner counts it.
    """
    seqs = sequence_numbers(keys) if groups is not None else None
    with open(path, "w", encoding="ascii") as fh:
        for index, (key, record) in enumerate(zip(keys, records, strict=True)):
            fields = (index, key, record) if seqs is None else (index, key, record, seqs[index])
            try:
                blob = cloudpickle.dumps(fields)
            except Exception as exc:
                raise unpicklable_record(index, key, record, exc) from exc
            where = partition(key if groups is None else groups[index])
            fh.write(f"{where}\t{base64.b64encode(blob).decode('ascii')}\n")


def unpicklable_record(index: int, key: Any, record: Any, exc: Exception) -> TypeError:
    """The error naming what of record ``index`` cannot be pickled: its key, when that is the culprit.

    The key travels beside the record, so a key function returning a lock would
    otherwise be reported as the (plain) record, pointing the user at the wrong thing.
    """
    what, culprit, plain = f"record {index}", record, "Records must be plain data."
    try:
        cloudpickle.dumps(key)
    except Exception:
        what, culprit, plain = f"the key of record {index}", key, "Keys must be plain data (a str, a number, a tuple)."
    return TypeError(
        f"FlinkRunner: {what} ({type(culprit).__name__}) cannot be pickled to ship it "
        f"to the Flink workers ({type(exc).__name__}: {exc}). {plain}"
    )


def line_key(line: str) -> str:
    return line[: line.index("\t")]


def line_record(line: str) -> tuple[int, Any, Any, int | None]:
    """``(index, key, record, seq)``; ``seq`` None unless the notebook counted it (a grouped map)."""
    fields = cloudpickle.loads(base64.b64decode(line[line.index("\t") + 1:]))
    return int(fields[0]), fields[1], fields[2], fields[3] if len(fields) > 3 else None


# ---------------------------------------------------------------- the process functions


@dataclass(frozen=True)
class MapJob:
    """Everything a FlinkRunner worker needs, shipped once inside the job graph (records are not)."""

    action: Action
    name: str
    store: StoreSpec
    strict: bool
    run_id: str | None = None
    """Set for ``FlinkRunner.run``: the one record's explicit run id."""


class WorkerStore:
    """The one store of a Python worker, opened in a function's ``open()``, and its durable boundary.

    A record's run end is not a durable boundary of its own: the end of the bundle
    is, and Flink ends one before every checkpoint, so all that a checkpoint covers
    (and the rows it releases) is durable.
    """

    def __init__(self, spec: Any) -> None:
        from . import compat

        self.store: Store = spec.open()  # None only for a benchmark's plain-PyFlink stand-in
        worker_warnings.install()
        self._span = contextlib.ExitStack()
        if self.store is not None:
            self._span.enter_context(self.store.boundary())
            self._span.callback(compat.on_bundle_finish(self.store.flush))

    def close(self) -> None:
        self._span.close()  # unregister, then leave the boundary: everything held is committed
        if self.store is not None:
            self.store.close()


Body = Callable[[Any, Store, Any, int], Any]
"""What a durable operator runs per record: ``body(init, store, record, seq)``."""


def next_seq(state: Any) -> int:
    """This record's ``seq`` from the key's ValueState, counted up for the next one.

    Updated before the action runs: keyed state is only persisted with a
    checkpoint, whose barrier comes after this element is fully processed.
    """
    seq = state.value() or 0
    state.update(seq + 1)
    return int(seq)


def keyed_function(body: Body, init: Any) -> Any:
    """A KeyedProcessFunction holding ``seq`` per key and one store per worker; built lazily (pyflink)."""
    from pyflink.common import Types
    from pyflink.datastream import KeyedProcessFunction
    from pyflink.datastream.state import ValueStateDescriptor

    class DurableKeyedProcess(KeyedProcessFunction):  # type: ignore[misc]
        """seq per key in ValueState; one durable run per element; one store connection per worker."""

        def __init__(self, init: Any) -> None:
            self.init = init
            self.worker: WorkerStore | None = None

        def open(self, runtime_context: Any) -> None:
            self.seq = runtime_context.get_state(ValueStateDescriptor("durable_nb_seq", Types.LONG()))
            self.worker = WorkerStore(self.init.store)

        def close(self) -> None:
            if self.worker is not None:
                self.worker.close()

        def process_element(self, value: Any, ctx: Any) -> Iterator[Any]:
            yield body(self.init, self.worker.store, value, next_seq(self.seq))  # type: ignore[union-attr]

    return DurableKeyedProcess(init)


def map_element(job: MapJob, store: Store, line: str, seq: int) -> tuple[int, WireRow, bool, Relayed, Again]:
    """One record of ``FlinkRunner.map``: its :class:`Shipped` outcome, as the tuple that travels."""
    index, key, record, counted = line_record(line)
    run_id = job.run_id or run_id_for(job.name, key, seq if counted is None else counted)
    with worker_warnings.collecting() as warned:
        row, replayed, again = perform(store, job.action, record, run_id, key, strict=job.strict)
    return index, within_collect_limit(row.to_wire()), replayed, tuple(warned), again


def within_collect_limit(wire: WireRow) -> WireRow:
    """A row Flink's collect sink could not carry (it would fail the job, every row lost) is FAILED, saying why."""
    run_id, status, payload, _error = wire
    if payload is None or len(payload) <= COLLECT_MAX - (1 << 20):
        return wire
    return run_id, RunStatus.FAILED.value, None, (
        f"its {'result' if status == RunStatus.COMPLETED.value else 'exception'} pickles to {len(payload):,} bytes, "
        f"more than Flink's collect sink carries back to the notebook ({COLLECT_MAX:,}); the journal holds "
        f"the run as it ended: store.calls({run_id!r}) (record.result()), or LocalRunner(store).run(...) replays it"
    )


# ---------------------------------------------------------------- durable_process


@dataclass(frozen=True)
class StreamJob:
    action: Action
    name: str
    key: Key
    store: StoreSpec
    strict: bool


def stream_element(job: StreamJob, store: Store, record: Any, seq: int) -> MapRow:
    key = key_of(record, job.key, seq)
    run_id = run_id_for(job.name, key, seq)
    row, _replayed, _again = perform(store, job.action, record, run_id, key, strict=job.strict)
    return row.portable()  # FlinkRunner's rule: a result that cannot travel is a FAILED row, not a failed job


class KeyText:
    """The key selector of ``durable_process``: the record's key as partition text."""

    def __init__(self, key: Key) -> None:
        self.key = key

    def __call__(self, record: Any) -> str:
        return partition(key_of(record, self.key, -1))
