"""The journal's record types: what a store hands out to readers.

Records are frozen: a record is a snapshot of what was durable when it was read.
Payloads stay as bytes until a caller asks for them with :meth:`CallRecord.result`
or :meth:`CallRecord.error`, because unpickling runs code from the journal and must
be an explicit, trusted act (viewers use the text previews instead).
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from typing import Any

from ..errors import RecordDecodeError
from . import codec

INPUT_CALL_ID = "durable_nb.durable_input"
"""The call id every ``ctx.durable_input`` call is journaled with."""


def encode_prompt(prompt: str, choices: tuple[Any, ...] | None) -> str:
    """The text stored in a call's ``prompt`` column: JSON ``{"prompt": ..., "choices": [...] | null}``."""
    if choices is not None and not choices:
        raise ValueError(f"durable_input {prompt!r}: choices must not be empty (pass None for a free answer)")
    try:
        return json.dumps({"prompt": prompt, "choices": None if choices is None else list(choices)})
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"durable_input {prompt!r}: choices must be plain values (str, int, float, bool, None) so that "
            f"the journal can show them; got {choices!r} ({exc})"
        ) from None


PLAIN_CHOICE_TYPES = (str, int, float, bool, type(None))
"""The types a ``durable_input`` choice may have: the journal stores choices as JSON, which gives back
exactly these types (a tuple would come back a list, a numpy value a plain one), and an answer must match
a choice in type as well as value."""


def check_choices(prompt: str, choices: tuple[Any, ...]) -> None:
    """Refuse choices the journal would change on the way back, so that the choice offered is the one answered."""
    for choice in choices:
        if type(choice) not in PLAIN_CHOICE_TYPES:  # exact: a numpy float or a str enum is a subclass
            raise TypeError(
                f"durable_input {prompt!r}: choices must be plain values (str, int, float, bool, None), got "
                f"{choice!r} ({type_name(choice)}) in {choices!r}: the journal stores choices as JSON and would "
                f"give it back changed, so the choice offered could not be answered. Offer plain values (e.g. a "
                f"label str per option, or .item() for a numpy value) and map the answer back in the action."
            )
    encode_prompt(prompt, choices)


def type_name(value: Any) -> str:
    """``str``, ``numpy.ndarray``: a type as an error message names it."""
    kind = type(value)
    return kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"


def decode_prompt(text: str | None) -> tuple[str | None, tuple[Any, ...] | None]:
    """``(prompt, choices)`` from a stored prompt column (tolerates plain text)."""
    if text is None:
        return None, None
    try:
        data = json.loads(text)
    except ValueError:
        return text, None
    if not isinstance(data, dict):
        return text, None
    # A journal is data (maybe damaged, maybe someone else's): odd values read as text, not as a TypeError
    # that would stop every view of the journal from opening.
    prompt, choices = data.get("prompt"), data.get("choices")
    return (None if prompt is None else str(prompt),
            tuple(choices) if isinstance(choices, list) else None if choices is None else (choices,))


class _Name(str, enum.Enum):
    """A state stored as its name: ``str(x)`` and comparisons with plain strings read naturally."""

    def __str__(self) -> str:
        return str(self.value)


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
    WAITING = "WAITING"
    """Stopped at an unanswered ``durable_input`` until a person answers (never FAILED)."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """A call's terminal outcome, encoded for the journal (what ``Store.complete_call`` persists).

    Made once, when the call ends (:func:`durable_nb.journal.replay.encode_success` /
    ``encode_failure``): the previews are computed then, so that nothing reading the
    journal ever needs to unpickle the payload.
    """

    status: Status
    """SUCCEEDED or FAILED."""
    payload: bytes
    """Pickled result or exception."""
    result_preview: str | None = None
    error_preview: str | None = None


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
    prompt: str | None = None
    """The question of a ``durable_input`` call (None for other calls)."""
    choices: tuple[Any, ...] | None = None
    """The allowed answers of a ``durable_input`` call, if it restricted them."""
    payload_left_out: bool = field(default=False, repr=False, compare=False)
    """Read without its payload (``query_calls``): a None payload says nothing about the journal."""

    @classmethod
    def pending(cls, run_id: str, index: int, call_id: str, args_digest: str, started_at: float) -> CallRecord:
        """A call just begun: PENDING, no origin, no outcome yet."""
        return cls(run_id, index, call_id, args_digest, Status.PENDING, None, None, None, started_at, None)

    def completed(self, outcome: Outcome, origin: Origin, finished_at: float) -> CallRecord:
        """This call with its terminal outcome, as ``complete_call`` persists it."""
        # Positional on purpose: dataclasses.replace costs a few microseconds on every call's hot path.
        return CallRecord(
            self.run_id, self.index, self.call_id, self.args_digest, outcome.status, origin,
            outcome.result_preview, outcome.error_preview, self.started_at, finished_at, outcome.payload,
            self.prompt, self.choices,
        )

    @property
    def is_input(self) -> bool:
        """Whether this is a ``ctx.durable_input`` call (answered by a person, origin RESOLVED)."""
        return self.call_id == INPUT_CALL_ID

    def result(self) -> Any:
        """Unpickle and return the recorded result.

        Unpickling runs code chosen by whoever wrote the journal: call this only on
        journals you trust.
        """
        if self.status is not Status.SUCCEEDED:
            raise ValueError(
                f"call {self.index} ({self.call_id!r}) of run {self.run_id!r} is {self.status.value}, "
                f"it has no result; check record.status first."
            )
        return self._load(self._payload_loaded())

    def error(self) -> BaseException:
        """Unpickle and return the recorded exception (trusted journals only)."""
        if self.status is not Status.FAILED:
            raise ValueError(
                f"call {self.index} ({self.call_id!r}) of run {self.run_id!r} is {self.status.value}, "
                f"it has no error; check record.status first."
            )
        err = self._load(self._payload_loaded())
        if not isinstance(err, BaseException):
            raise damaged(self, f"it FAILED, but its payload holds a {type_name(err)} ({codec.preview(err)}), "
                                f"not an exception")
        return err

    def _load(self, data: bytes) -> Any:
        try:
            return codec.loads(data)
        except Exception as exc:
            why = codec.not_a_pickle(data)  # only after a failure: loading valid payloads costs nothing more
            if why is None:  # a pickle whose class or loading code fails
                raise undecodable(self, exc) from exc
            raise damaged(self, why) from None

    def _payload_loaded(self) -> bytes:
        if self.payload is None:
            if not self.payload_left_out:  # read with its payload, and there is none: the journal lacks it
                raise damaged(self, f"it is {self.status.value}, but the journal holds no payload for it")
            raise ValueError(
                f"call {self.index} ({self.call_id!r}) of run {self.run_id!r} was read without its payload "
                f"(query_calls, pending() and waiting() leave payloads out to stay fast); read it with "
                f"store.call({self.run_id!r}, {self.index}) or store.calls({self.run_id!r}) to get its outcome."
            )
        return self.payload

    def matches(self, call_id: str, args_digest: str) -> bool:
        """Whether this record is the call ``(call_id, args_digest)``: replay rule 1 (match) versus rule 2."""
        return self.call_id == call_id and self.args_digest == args_digest


def misnumbered(run_id: str, calls: list[CallRecord]) -> str | None:
    """What is wrong with a run whose calls are not numbered 0, 1, 2... (None when they are).

    Replay pairs the action's calls with the recorded ones by position, so a row renumbered by hand
    (-1, a gap, a duplicate) would pair them with the wrong records. Opening a run and a dry run both
    refuse it with this text.
    """
    n = len(calls)  # one call is the usual map record's run: its check stays a comparison (a replay's hot path)
    if not ((n and calls[0].index != 0) or (n > 1 and any(c.index != i for i, c in enumerate(calls)))):
        return None
    shown = ", ".join(str(c.index) for c in calls[:12]) + (", ..." if n > 12 else "")
    return f"run {run_id!r} has its calls at indices {shown} instead of 0 to {n - 1}"


def undecodable(record: CallRecord, exc: Exception) -> RecordDecodeError:
    """The error for a payload that is a pickle but does not load: naming the call, the class that is missing
    (or none), and the installed packages the pickle names (another version of them may have written it).

    Why here: ``record.result()`` raised the loader's bare error (``TypeError: StringDtype.__init__() ...``),
    which names neither the call nor the cause; a replay and ``record.result()`` now say the same.
    """
    data = record.payload or b""
    return RecordDecodeError(record.run_id, record.index, record.call_id, codec.missing_global(data),
                             f"{type(exc).__name__}: {exc}", packages=tuple(codec.packages_named(data)))


def damaged(record: CallRecord, why: str) -> RecordDecodeError:
    """The error for a terminal call whose payload durable_nb never wrote: ``why`` says what is wrong."""
    return RecordDecodeError(record.run_id, record.index, record.call_id, None, why, True)


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
    """How many opens of this run wrote something (1 = never recovered; a replay that writes nothing is not counted)."""
    n_calls: int
    n_discarded: int
    """Calls discarded by non-determinism mismatches, over the run's life."""
    owner: str | None = None
    """Process holding the run open, if any (may be stale after a crash)."""
    parent_run_id: str | None = None
    """For a fork (``store.fork``): the run it was copied from."""
    forked_at: int | None = None
    """For a fork: the call index it was forked at (calls ``0..forked_at-1`` were copied)."""
