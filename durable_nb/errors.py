"""Exceptions and warnings raised by durable_nb.

Every message names what went wrong, where (run id, call index, call id) and
what to do about it. Exceptions that can be journaled define ``__reduce__`` so
they survive the pickle round trip into and out of a journal.
"""

from __future__ import annotations


class DurableError(Exception):
    """Base class of every error durable_nb raises on purpose."""


class JournalFormatError(DurableError):
    """A file is not a durable_nb journal, or was written by a newer version.

    Raised before anything is written, so the file is left exactly as it was.
    """


class RunBusyError(DurableError):
    """The run is open in another live context (this process or another one).

    Two recoveries of one run at once would interleave their writes; the second
    one is refused instead.
    """

    def __init__(self, run_id: str, owner: str) -> None:
        self.run_id = run_id
        self.owner = owner
        super().__init__(
            f"run {run_id!r} is already open by {owner}; two recoveries of one run at once would "
            f"interleave their journal writes. Wait for the other one to finish, or stop it first."
        )

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (type(self), (self.run_id, self.owner))


class UnserializableResultError(DurableError):
    """A durable call returned (or raised) something that cannot be pickled.

    The call stays PENDING in the journal: a recovery reconciles or re-executes it.
    """

    def __init__(self, run_id: str, index: int, call_id: str, type_name: str, reason: str) -> None:
        self.run_id = run_id
        self.index = index
        self.call_id = call_id
        self.type_name = type_name
        self.reason = reason
        super().__init__(
            f"durable call {call_id!r} (run {run_id!r}, index {index}) produced a {type_name} that "
            f"cannot be pickled ({reason}). The call stays PENDING in the journal. Return plain data "
            f"(dicts, lists, numbers, strings, DataFrames) instead of live objects such as open files, "
            f"locks or connections."
        )

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (type(self), (self.run_id, self.index, self.call_id, self.type_name, self.reason))


class SimulatedCrash(BaseException):
    """Raised by :func:`durable_nb.inject_crash` to stand in for ``kill -9``.

    It is a ``BaseException`` so that ordinary ``except Exception`` blocks in user
    code do not swallow it, exactly as they could not swallow a killed process.
    Do not catch it: the journal it leaves is the one a crash at that instant
    leaves, and recovery is what should handle it.
    """

    def __init__(self, call_id: str = "", point: str = "") -> None:
        self.call_id = call_id
        self.point = point
        super().__init__(
            f"simulated crash at {point} of durable call {call_id!r}; do not catch this, "
            f"recover the run instead (run it again)."
        )

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (type(self), (self.call_id, self.point))


class NonDeterminismWarning(UserWarning):
    """A recovery met a call that differs from the journal at that position.

    The rest of the run's journal was discarded (kept in the discarded history)
    and execution went on from there.
    """


class UnpicklableArgumentWarning(UserWarning):
    """An argument could not be pickled and was digested by its type name only."""


class UnpicklableOutputWarning(UserWarning):
    """A %%durable cell bound a name whose value cannot be journaled."""
