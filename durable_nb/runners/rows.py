"""One record of a ``map``, as both runners report it: :class:`MapRow`, and how a record becomes one.

``LocalRunner.map`` and ``FlinkRunner.map`` share the rule for a record whose
action raises: an ``Exception`` from the action is that record's FAILED row (the
run is recorded FAILED by ``open_run``), not an aborted map; a run stopped at an
unanswered ``durable_input`` is a WAITING row; anything else (a crash, a store
error) propagates, and the next ``map`` recovers. :func:`apply_action` is that
rule; :meth:`MapRow.to_wire` / :meth:`MapRow.from_wire` carry a row from a Flink
worker to the notebook as plain values.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from ..errors import AwaitingInput, RunBusyError
from ..journal import codec
from ..journal.context import RunnerContext
from ..journal.records import RunStatus

#: ``(run_id, status, payload, error)``: a row as a worker sends it (payload: the pickled result or exception).
WireRow = tuple[str, str, "bytes | None", "str | None"]


@dataclass(frozen=True)
class MapRow:
    """The outcome of one record of a ``map``: one row of the DataFrame it returns."""

    key: Any
    """The record's key (its position when ``map`` got no ``key=``)."""
    run_id: str
    status: RunStatus
    """COMPLETED, FAILED (the action raised), WAITING (stopped at an unanswered ``durable_input``) or RUNNING
    (another process holds the run: :meth:`busy`)."""
    result: Any = None
    """The action's return value (COMPLETED rows only)."""
    error: str | None = None
    """``Type: message`` of the exception (FAILED rows); the question asked (WAITING rows); who holds the run
    (RUNNING rows)."""
    exception: BaseException | None = field(default=None, repr=False, compare=False)
    """The exception itself when it is at hand (``run`` re-raises it); not a DataFrame column."""

    @classmethod
    def failed(cls, key: Any, run_id: str, exc: BaseException) -> MapRow:
        """The row of a record whose action raised ``exc`` (WAITING for :class:`AwaitingInput`)."""
        if isinstance(exc, AwaitingInput):  # the error column says what is asked, and how to answer
            return cls(key, run_id, RunStatus.WAITING, None, str(exc), exc)
        return cls(key, run_id, RunStatus.FAILED, None, codec.error_preview(exc), exc)

    @classmethod
    def busy(cls, key: Any, run_id: str, exc: RunBusyError) -> MapRow:
        """The row of a record whose run another process holds (a second kernel mapping the same records).

        RUNNING, not FAILED: nothing failed and nothing ran here; the run is running there, and
        the next ``map`` replays its result. A FAILED row read as a failed charge to retry by
        hand, and its error spoke of "two recoveries of one run".
        """
        message = (f"run {run_id!r} is running now in {exc.owner} (another kernel mapping these records, or "
                   f"a context open there); nothing ran here for this record. Map again once it is done: the "
                   f"run replays its result.")
        return cls(key, run_id, RunStatus.RUNNING, None, f"RunBusyError: {message}",
                   RunBusyError(exc.run_id, exc.owner, message))

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled with its exception as the journal keeps it, so an attribute that cannot be pickled (a
        client, a lock) does not fail the job where a ``durable_process`` row crosses to another worker."""
        return _row, (self.key, self.run_id, self.status, self.result, self.error, _exception_payload(self.exception))

    def as_tuple(self) -> tuple[Any, str, str, Any, str | None]:
        """``(key, run_id, status, result, error)``: the DataFrame row (status as its plain string)."""
        return self.key, self.run_id, self.status.value, self.result, self.error

    def to_wire(self) -> WireRow:
        """The row as plain values for the trip from a Flink worker (the key stays behind, by position).

        A result that cannot be pickled turns the row FAILED, saying why; an
        exception that cannot be pickled travels as its text only.
        """
        if self.status is RunStatus.COMPLETED:
            try:
                return self.run_id, self.status.value, codec.dumps(self.result), None
            except Exception as exc:
                return self.run_id, RunStatus.FAILED.value, None, (
                    f"the action's result ({type(self.result).__name__}) cannot be pickled to return it "
                    f"from Flink: {exc}"
                )
        # The exception as the journal keeps it (attributes that cannot be pickled left out), or its text only.
        return self.run_id, self.status.value, _exception_payload(self.exception), self.error

    def portable(self) -> MapRow:
        """This row as it may leave a Flink worker: a result that cannot be pickled makes it FAILED, saying why.

        :meth:`to_wire`'s rule, applied where ``durable_process`` emits the row: Flink
        pickles it at a network edge or a sink, where such a result would fail the
        whole job (every row lost). Decided once, in the worker, so a downstream
        operator sees the same row whether or not Flink chains it to this one.
        """
        if self.status is not RunStatus.COMPLETED:
            return self  # its exception already travels as the journal keeps it (__reduce__)
        wire = self.to_wire()
        return self if wire[1] == self.status.value else MapRow.from_wire(self.key, wire)

    @classmethod
    def from_wire(cls, key: Any, wire: WireRow) -> MapRow:
        """Read back a row a worker sent (unpickles its payload: the job's own output, trusted).

        A payload that pickled in the worker but cannot be rebuilt here (its ``__reduce__`` needs what only
        the worker has) makes this one row FAILED, saying why: raised, it lost every row of the map.
        """
        run_id, status, payload, error = wire
        try:
            value = codec.loads(payload) if payload is not None else None
        except Exception as unloadable:
            if status != RunStatus.COMPLETED.value:  # the error's text is at hand: the row keeps it
                return cls(key, run_id, RunStatus(status), None, error)
            return cls(key, run_id, RunStatus.FAILED, None, (
                f"the action's result came back from Flink but cannot be loaded in the notebook "
                f"({type(unloadable).__name__}: {unloadable}); the run ended COMPLETED in the journal: "
                f"store.run({run_id!r})"))
        if status == RunStatus.COMPLETED.value:
            return cls(key, run_id, RunStatus.COMPLETED, value)
        exc = value if isinstance(value, BaseException) else None
        return cls(key, run_id, RunStatus(status), None, error, exc)


def apply_action(
    opened: AbstractContextManager[RunnerContext],
    call: Callable[[RunnerContext], Any],
    key: Any,
    run_id: str,
) -> MapRow:
    """Call ``call(ctx)`` inside the run ``opened`` opens; an ``Exception`` from it is the record's row.

    The exception is re-raised inside the run, so ``open_run`` records the run
    FAILED (or WAITING); an error from opening or closing the run itself propagates.
    """
    failure: Exception | None = None
    try:
        with opened as ctx:
            try:
                result = call(ctx)
            except Exception as exc:
                failure = exc
                raise
    except Exception as exc:
        if exc is not failure:
            raise
        return MapRow.failed(key, run_id, exc)
    return MapRow(key, run_id, RunStatus.COMPLETED, result)


def _exception_payload(exc: BaseException | None) -> bytes | None:
    """``exc`` pickled as the journal keeps it (class, args, the attributes that pickle); None if not even that."""
    if exc is None:
        return None
    try:
        return codec.dumps_exception(exc)
    except Exception:
        return None


def _row(key: Any, run_id: str, status: RunStatus, result: Any, error: str | None, exc: bytes | None) -> MapRow:
    return MapRow(key, run_id, status, result, error, None if exc is None else codec.loads(exc))
