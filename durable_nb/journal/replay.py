"""The replay rules (DESIGN.md, "Replay rules") and nothing else.

This is the only module that decides what a durable call does. Runners, the
``%%durable`` magic and the ``ReplayStepper`` all go through :class:`Journal`;
stores only persist what it tells them to.

One :class:`Journal` is one open run: the persisted calls ``L`` read when the
run was opened, and a cursor that starts at 0. For each call,
:meth:`Journal.begin` applies the rules to ``L[cursor]`` and either returns the
recorded outcome (replay) or a :class:`Step` saying which function to run; the
caller runs it (sync, in an executor, or awaited) and reports back with
:meth:`Journal.succeed` / :meth:`Journal.fail`. Splitting decide / run / record
this way is what lets the sync and async paths share every rule.

Durability order: PENDING is committed before the function runs; the outcome is
committed before the caller sees it. A ``BaseException`` that is not an
``Exception`` (``KeyboardInterrupt``, ``SystemExit``, :class:`SimulatedCrash`)
writes nothing: the call stays PENDING, as after ``kill -9``.
"""

from __future__ import annotations

import inspect
import threading
import time
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ..errors import DurableError, NonDeterminismWarning, UnserializableResultError
from . import codec, faults
from .callid import call_identity
from .digest import digest, type_name
from .records import CallRecord, Origin, Status, _Name
from .store import Store


class Decision(_Name):
    """What recovery does with one call; what the ReplayStepper shows."""

    REPLAY = "replay"
    """SUCCEEDED or FAILED on record: return / raise it, run nothing."""
    RECONCILE = "reconcile"
    """PENDING on record and a reconciler given: run the reconciler."""
    REEXECUTE = "re-execute"
    """PENDING on record, no reconciler: run the function again (at-least-once)."""
    EXECUTE = "execute"
    """Nothing on record: persist PENDING, run the function."""
    MISMATCH = "mismatch"
    """A different call is on record here: discard the rest of the run, then execute."""


class RecordedError(DurableError):
    """Stands in for a recorded exception that could not itself be pickled."""

    def __init__(self, type_name: str, message: str) -> None:
        self.type_name = type_name
        self.message = message
        super().__init__(f"{type_name}: {message}")

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (type(self), (self.type_name, self.message))


@dataclass(frozen=True)
class Step:
    """A call that has to run something: the function or its reconciler."""

    index: int
    call_id: str
    decision: Decision
    """EXECUTE, REEXECUTE or RECONCILE (a MISMATCH has been turned into EXECUTE)."""
    origin: Origin
    """Origin the outcome will be persisted with."""
    mismatch: bool = False


@dataclass(frozen=True)
class Planned:
    """The rules' verdict for a call, without performing it (for the ReplayStepper)."""

    index: int
    decision: Decision
    recorded: CallRecord | None


def check_reconciler(reconciler: Any) -> None:
    """A reconciler must be callable with no arguments; checked before anything is written."""
    if reconciler is None:
        return
    if not callable(reconciler):
        raise TypeError(
            f"reconciler must be a zero-argument callable, got {type(reconciler).__name__} {reconciler!r}; "
            f"write reconciler=lambda: lookup(order_id)."
        )
    try:
        inspect.signature(reconciler).bind()
    except TypeError:
        raise TypeError(
            f"reconciler {getattr(reconciler, '__qualname__', reconciler)!r} must be callable with no "
            f"arguments (it runs during recovery, when the original arguments are not passed again); "
            f"capture what it needs: reconciler=lambda: lookup(order_id)."
        ) from None
    except ValueError:  # builtins without a signature: let them be
        return


def identify(func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[str, str]:
    """``(call_id, args_digest)`` of a call, as matched against the journal."""
    if not callable(func):
        raise TypeError(f"durable_execute needs a callable first argument, got {type(func).__name__}")
    call_id, salt = call_identity(func)
    return call_id, digest(args, kwargs, salt)


def decide(recorded: CallRecord | None, call_id: str, args_digest: str, has_reconciler: bool) -> Decision:
    """Rules 1-3 for one position of the journal."""
    if recorded is None:
        return Decision.EXECUTE
    if not recorded.matches(call_id, args_digest):
        return Decision.MISMATCH
    if recorded.status is not Status.PENDING:
        return Decision.REPLAY
    return Decision.RECONCILE if has_reconciler else Decision.REEXECUTE


class Journal:
    """The replay state of one open run."""

    def __init__(self, store: Store, run_id: str, recorded: list[CallRecord]) -> None:
        self.store = store
        self.run_id = run_id
        self._log = list(recorded)
        self.cursor = 0
        self._lock = threading.Lock()
        self._warned = False
        self.stop_before: int | None = None
        """If set, stepping stops (with :class:`StopRecovery`) before this call index."""
        self.observer: Callable[[Planned, str], None] | None = None
        """Told each decision (with the call id) before it is carried out: the ReplayStepper's view."""

    @property
    def calls(self) -> list[CallRecord]:
        """The run's calls as this context knows them (persisted state, index order)."""
        with self._lock:
            return list(self._log)

    # -- planning (no side effects) -------------------------------------------------

    def peek(self, call_id: str, args_digest: str, has_reconciler: bool) -> Planned:
        with self._lock:
            recorded = self._log[self.cursor] if self.cursor < len(self._log) else None
            return Planned(self.cursor, decide(recorded, call_id, args_digest, has_reconciler), recorded)

    # -- performing -------------------------------------------------------------------

    def begin(self, call_id: str, args_digest: str, has_reconciler: bool) -> Step | CallRecord:
        """Apply the rules at the cursor and advance it.

        Returns the recorded call to replay, or a :class:`Step` to run. For a new
        call, PENDING is durable when this returns.
        """
        with self._lock:
            index = self.cursor
            recorded = self._log[index] if index < len(self._log) else None
            decision = decide(recorded, call_id, args_digest, has_reconciler)
            if self.observer is not None:
                self.observer(Planned(index, decision, recorded), call_id)
            if self.stop_before is not None and index >= self.stop_before:
                raise StopRecovery(index)
            mismatch = decision is Decision.MISMATCH
            if mismatch:
                assert recorded is not None
                self._discard(index, f"expected {recorded.call_id} here, the action called {call_id}"
                              + ("" if recorded.call_id != call_id else " with other arguments"))
                decision = Decision.EXECUTE
            if decision is Decision.REPLAY:
                self.cursor += 1
                assert recorded is not None
                return recorded
            if decision is Decision.EXECUTE:
                faults.fire("before_pending_commit", call_id)
                self.store.append_pending(self.run_id, index, call_id, args_digest, time.time())
                self._log.append(
                    CallRecord(self.run_id, index, call_id, args_digest, Status.PENDING, None, None, None,
                               time.time(), None)
                )
            self.cursor += 1
        origin = Origin.RECONCILED if decision is Decision.RECONCILE else Origin.EXECUTED
        return Step(index, call_id, decision, origin, mismatch)

    def succeed(self, step: Step, value: Any) -> None:
        """Persist a value as SUCCEEDED; raises UnserializableResultError (call stays PENDING)."""
        self._complete(step, *encode_success(value, self.run_id, step.index, step.call_id))

    def fail(self, step: Step, exc: Exception) -> None:
        """Persist an exception as FAILED (a stand-in if the exception itself cannot be pickled)."""
        self._complete(step, *encode_failure(exc))

    def _complete(self, step: Step, status: Status, payload: bytes, preview: str | None, error: str | None) -> None:
        now = time.time()
        self.store.complete_call(
            self.run_id, step.index, status=status, origin=step.origin, payload=payload,
            result_preview=preview, error_preview=error, finished_at=now,
        )
        with self._lock:
            if step.index < len(self._log):
                old = self._log[step.index]
                self._log[step.index] = CallRecord(
                    old.run_id, old.index, old.call_id, old.args_digest, status, step.origin,
                    preview, error, old.started_at, now, payload,
                )

    def _discard(self, index: int, reason: str) -> None:
        self.store.discard_from(self.run_id, index, reason, time.time())
        del self._log[index:]
        if not self._warned:
            self._warned = True
            warnings.warn(
                f"durable_nb: run {self.run_id!r} is not deterministic: at call {index} {reason}. "
                f"The journal from call {index} on was discarded (the journal view keeps it) and the "
                f"run continues by executing. Keep durable calls in the same order with the same "
                f"arguments across recoveries.",
                NonDeterminismWarning,
                stacklevel=4,
            )

    def keep_rest(self) -> None:
        """The outcome came from elsewhere (a record, a cell-level reconciler): keep the calls after the cursor.

        Those calls were not reached, but the outcome accounts for them; without this,
        closing the run would discard them as if the action had stopped making them.
        """
        with self._lock:
            self.cursor = max(self.cursor, len(self._log))

    def discard_unreached(self) -> None:
        """Called when the action ends: recorded calls it never reached are not part of this run."""
        with self._lock:
            if self.cursor < len(self._log):
                self._discard(self.cursor, "the action finished before reaching this call")

    # -- the whole rule for one call ------------------------------------------------------

    def execute(
        self,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        reconciler: Callable[[], Any] | None,
    ) -> Any:
        check_reconciler(reconciler)
        call_id, args_digest = identify(func, args, kwargs)
        outcome = self.begin(call_id, args_digest, reconciler is not None)
        if isinstance(outcome, CallRecord):
            return replay(outcome)
        if outcome.decision is Decision.RECONCILE:
            assert reconciler is not None
            return self.perform(outcome, reconciler)
        return self.perform(outcome, lambda: func(*args, **kwargs))

    def perform(self, step: Step, run: Callable[[], Any]) -> Any:
        """Run what ``step`` says to run, between its fault points, and persist its outcome.

        An ``Exception`` is persisted FAILED and re-raised; any other ``BaseException``
        passes through with nothing written (the call stays PENDING).
        """
        faults.fire("before_call", step.call_id)
        try:
            value = run()
        except Exception as exc:
            faults.fire("after_call", step.call_id)
            self.fail(step, exc)
            raise
        faults.fire("after_call", step.call_id)
        self.succeed(step, value)
        return value

    async def perform_async(self, step: Step, run: Callable[[], Awaitable[Any]]) -> Any:
        """:meth:`perform` for a step whose work is awaited."""
        faults.fire("before_call", step.call_id)
        try:
            value = await run()
        except Exception as exc:
            faults.fire("after_call", step.call_id)
            self.fail(step, exc)
            raise
        faults.fire("after_call", step.call_id)
        self.succeed(step, value)
        return value


Encoded = tuple[Status, bytes, str | None, str | None]


def encode_success(value: Any, run_id: str, index: int, call_id: str) -> Encoded:
    """``(status, payload, result_preview, error_preview)`` of a result; previews are made now, once."""
    try:
        payload = codec.dumps(value)
    except Exception as exc:
        raise UnserializableResultError(run_id, index, call_id, type_name(value), f"{type(exc).__name__}: {exc}") \
            from exc
    return Status.SUCCEEDED, payload, codec.preview(value), None


def encode_failure(exc: BaseException) -> Encoded:
    try:
        payload = codec.dumps(exc)
    except Exception:
        payload = codec.dumps(RecordedError(type_name(exc), str(exc)))
    return Status.FAILED, payload, None, codec.error_preview(exc)


def settle_pending(store: Store, record: CallRecord, outcome: Any, *, failed: bool, origin: Origin) -> bool:
    """Give a PENDING call its outcome from outside any run (the ReconcilePanel).

    Written only if the call is still PENDING, so an outcome something else
    recorded meanwhile is never overwritten; returns whether it was written. The
    next recovery replays it like any terminal call. Raises UnserializableResultError
    (nothing written) for a value that cannot be pickled.
    """
    status, payload, preview, error = (
        encode_failure(outcome) if failed else encode_success(outcome, record.run_id, record.index, record.call_id)
    )
    return store.complete_call(
        record.run_id, record.index, status=status, origin=origin, payload=payload,
        result_preview=preview, error_preview=error, finished_at=time.time(), only_if_pending=True,
    )


class StopRecovery(BaseException):
    """Stops a stepped recovery before a call; writes nothing (a BaseException on purpose)."""

    def __init__(self, index: int) -> None:
        self.index = index
        super().__init__(f"recovery stopped before call {index}")


def replay(recorded: CallRecord) -> Any:
    """Return the recorded result or raise the recorded exception."""
    if recorded.status is Status.SUCCEEDED:
        return recorded.result()
    raise recorded.error()
