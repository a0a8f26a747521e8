"""The journal's record types: what a store hands out to readers.

Records are frozen: a record is a snapshot of what was durable when it was read.
Payloads stay as bytes until a caller asks for them with :meth:`CallRecord.result`
or :meth:`CallRecord.error`, because unpickling runs code from the journal and must
be an explicit, trusted act (viewers use the text previews instead).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from . import codec


class _Name(str, enum.Enum):
    """A state stored as its name: ``str(x)`` and comparisons with plain strings read naturally."""

    def __str__(self) -> str:
        return self.value


class Status(_Name):
    """State of one durable call."""

    PENDING = "PENDING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"


class Origin(_Name):
    """How the terminal outcome of a call was obtained."""

    EXECUTED = "EXECUTED"
    RECONCILED = "RECONCILED"
    RESOLVED = "RESOLVED"


class RunStatus(_Name):
    """State of one run (one action on one input, or one cell)."""

    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One durable call inside a run, as persisted."""

    run_id: str
    index: int
    call_id: str
    args_digest: str
    status: Status
    origin: Origin | None
    """None while PENDING."""
    result_preview: str | None
    """Bounded ``repr`` of the result, written with it: safe to show, never unpickled."""
    error_preview: str | None
    """``Type: message`` of the recorded exception, bounded."""
    started_at: float
    """Unix time the PENDING entry was written."""
    finished_at: float | None
    payload: bytes | None = field(default=None, repr=False, compare=False)
    """Pickled result (SUCCEEDED) or exception (FAILED); None while PENDING."""

    def result(self) -> Any:
        """Unpickle and return the recorded result.

        Unpickling runs code chosen by whoever wrote the journal: call this only on
        journals you trust.
        """
        if self.status is not Status.SUCCEEDED or self.payload is None:
            raise ValueError(
                f"call {self.index} ({self.call_id!r}) of run {self.run_id!r} is {self.status.value}, "
                f"it has no result; check record.status first."
            )
        return codec.loads(self.payload)

    def error(self) -> BaseException:
        """Unpickle and return the recorded exception (trusted journals only)."""
        if self.status is not Status.FAILED or self.payload is None:
            raise ValueError(
                f"call {self.index} ({self.call_id!r}) of run {self.run_id!r} is {self.status.value}, "
                f"it has no error; check record.status first."
            )
        err = codec.loads(self.payload)
        assert isinstance(err, BaseException)
        return err

    def matches(self, call_id: str, args_digest: str) -> bool:
        return self.call_id == call_id and self.args_digest == args_digest


@dataclass(frozen=True, slots=True)
class DiscardedCall:
    """A call dropped from a run by a non-determinism mismatch, kept for the journal view."""

    run_id: str
    index: int
    call_id: str
    args_digest: str
    status: Status
    origin: Origin | None
    result_preview: str | None
    error_preview: str | None
    started_at: float
    finished_at: float | None
    discarded_at: float
    reason: str
    """What the recovery met at this position instead."""


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One run: its status and how many times it was opened."""

    run_id: str
    status: RunStatus
    created_at: float
    updated_at: float
    attempts: int
    """How many times a context was opened for this run (1 = never recovered)."""
    n_calls: int
    n_discarded: int
    """Calls discarded by non-determinism mismatches, over the run's life."""
    owner: str | None = None
    """Process holding the run open, if any (may be stale after a crash)."""
