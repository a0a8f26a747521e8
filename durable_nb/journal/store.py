"""The store protocol every journal backend implements.

A store only persists and reads; it never decides what a recovery does (that is
:mod:`durable_nb.journal.replay`). Each write method is one durable transition:
when it returns, the change is committed (for ``SqliteStore``: fsynced to the WAL).
Leases (:mod:`durable_nb.journal.lease`) fence every write.
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING, Any

from .records import CallRecord, DiscardedCall, Origin, RunRecord, RunStatus, Status

if TYPE_CHECKING:
    import pandas as pd

# ---------------------------------------------------------------- the protocol


class Store(abc.ABC):
    """Where journals live. See :class:`SqliteStore` and :class:`MemoryStore`."""

    # -- reading ------------------------------------------------------------

    @abc.abstractmethod
    def runs(self) -> list[RunRecord]:
        """Every run, oldest first."""

    @abc.abstractmethod
    def run(self, run_id: str) -> RunRecord | None:
        """One run, or None if it was never opened."""

    @abc.abstractmethod
    def calls(self, run_id: str) -> list[CallRecord]:
        """The run's live calls in index order (discarded ones excluded), payloads included."""

    @abc.abstractmethod
    def discarded(self, run_id: str | None = None) -> list[DiscardedCall]:
        """Calls dropped by non-determinism mismatches, oldest first."""

    @abc.abstractmethod
    def query_calls(
        self,
        *,
        run_id: str | None = None,
        status: Status | str | None = None,
        call_id: str | None = None,
        offset: int = 0,
        limit: int | None = None,
    ) -> list[CallRecord]:
        """Calls across runs in journal order (the order they were first written), no payloads.

        This is what viewers page through: it never loads payloads.
        """

    @abc.abstractmethod
    def count_calls(
        self, *, run_id: str | None = None, status: Status | str | None = None, call_id: str | None = None
    ) -> int:
        """How many calls :meth:`query_calls` would return without offset/limit."""

    def call(self, run_id: str, index: int) -> CallRecord | None:
        """One call with its payload, or None."""
        for rec in self.calls(run_id):
            if rec.index == index:
                return rec
        return None

    def pending(self) -> list[CallRecord]:
        """Every PENDING call across runs: the calls a crash left in flight."""
        return self.query_calls(status=Status.PENDING)

    def to_pandas(self, run_id: str | None = None) -> pd.DataFrame:
        """One row per call (all runs, or one), without payloads."""
        from .frames import calls_frame

        return calls_frame(self.query_calls(run_id=run_id))

    # -- writing: the vocabulary of the replay engine -------------------------

    @abc.abstractmethod
    def open_run(self, run_id: str, owner: str, *, steal: bool = False) -> list[CallRecord]:
        """Take the run's lease (creating the run if new), mark it RUNNING, return its calls.

        Raises :class:`RunBusyError` if a live context holds the run, unless ``steal``.
        """

    @abc.abstractmethod
    def close_run(self, run_id: str, owner: str, status: RunStatus | None) -> None:
        """Record the run's final status (None: keep it) and release its lease, if ``owner`` still holds it."""

    @abc.abstractmethod
    def append_pending(self, run_id: str, index: int, call_id: str, args_digest: str, started_at: float) -> None:
        """Persist a new PENDING call at ``index`` (durable before the function runs)."""

    @abc.abstractmethod
    def complete_call(
        self,
        run_id: str,
        index: int,
        *,
        status: Status,
        origin: Origin,
        payload: bytes,
        result_preview: str | None,
        error_preview: str | None,
        finished_at: float,
        only_if_pending: bool = False,
    ) -> bool:
        """Persist a call's terminal outcome; returns False if ``only_if_pending`` and it was not."""

    @abc.abstractmethod
    def discard_from(self, run_id: str, index: int, reason: str, at: float) -> None:
        """Move calls ``index..`` of the run to the discarded history."""

    @abc.abstractmethod
    def delete_run(self, run_id: str) -> None:
        """Forget a run and its calls entirely (``%durable_forget``)."""

    def close(self) -> None:
        """Release connections; the store can still be reopened."""

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def check_status(status: Status | str | None) -> str | None:
    if status is None:
        return None
    try:
        return Status(status).value
    except ValueError:
        raise ValueError(
            f"status must be one of {[s.value for s in Status]}, got {status!r}"
        ) from None
