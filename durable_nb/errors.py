"""Exceptions and warnings raised by durable_nb.

Over 400 lines because each class carries its own message, naming the fix, and its ``__reduce__``: one
module keeps the whole tree, which users import from, in one place.

Every message names what went wrong, where (run id, call index, call id) and
what to do about it. Exceptions that can be journaled define ``__reduce__`` so
they survive the pickle round trip into and out of a journal.
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings

_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep


def warn_at_user_code(message: str, category: type[Warning]) -> None:
    """Warn at the first frame outside durable_nb: the user's line, however deep the call inside is.

    ``contextlib``'s frames count as durable_nb's: a check made as a ``@contextmanager`` of
    durable_nb exits there, and a warning pointing at ``contextlib.py`` tells the user nothing.
    """
    frame = sys._getframe(0)
    level = 1
    while frame.f_back is not None and (frame.f_code.co_filename.startswith(_PACKAGE)
                                        or frame.f_code.co_filename == contextlib.__file__):
        frame = frame.f_back
        level += 1
    warnings.warn(message, category, stacklevel=level)


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

    def __init__(self, run_id: str, owner: str, message: str | None = None) -> None:
        """``message`` replaces the text for a caller that knows what the run is (a notebook cell)."""
        self.run_id = run_id
        self.owner = owner
        self._message = message
        super().__init__(message or (
            f"run {run_id!r} is already open by {owner}; two recoveries of one run at once would "
            f"interleave their journal writes. Wait for the other one to finish, or stop it first."
        ))

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (type(self), (self.run_id, self.owner, self._message))


class UnserializableResultError(DurableError):
    """A durable call returned (or raised) something that cannot be pickled, or whose pickle is too large.

    The call stays PENDING in the journal: a recovery reconciles or re-executes it.
    """

    def __init__(
        self, run_id: str, index: int, call_id: str, type_name: str, reason: str, prompt: str | None = None
    ) -> None:
        self.run_id = run_id
        self.index = index
        self.call_id = call_id
        self.type_name = type_name
        self.reason = reason
        self.prompt = prompt
        """The question of the ``durable_input`` the value was to answer (``store.answer``); None: a call's result."""
        if prompt is not None:  # a person answering returned nothing: say what they did and what still holds
            message = (
                f"the answer to input {index} of run {run_id!r} ({prompt!r}) is a {type_name} that cannot be "
                f"journaled ({reason}); nothing was written and the input still waits. Answer with plain data "
                f"(dicts, lists, numbers, strings, DataFrames), not live objects such as open files, locks or "
                f"connections."
            )
        else:
            message = (
                f"durable call {call_id!r} (run {run_id!r}, index {index}) produced a {type_name} that "
                f"cannot be journaled ({reason}). The call stays PENDING in the journal. Return plain data "
                f"(dicts, lists, numbers, strings, DataFrames) instead of live objects such as open files, "
                f"locks or connections."
            )
        super().__init__(message)

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (type(self), (self.run_id, self.index, self.call_id, self.type_name, self.reason, self.prompt))


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
        where = f" at {point} of durable call {call_id!r}" if call_id else ""
        super().__init__(f"simulated crash{where}; do not catch this, recover the run instead (run it again).")

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (type(self), (self.call_id, self.point))


class CrashNotInjectedWarning(UserWarning):
    """An ``inject_crash`` block ended without crashing anything: no durable call with its id executed in it.

    Raised at the block's exit, naming the id given and the ids of the calls that did execute, so that a
    tutorial or test meant to crash (a typo in the id, a module-qualified id, a run that only replayed) does
    not go on to "recover" a run that never crashed.
    """


class NonDeterminismWarning(UserWarning):
    """A recovery met a call that differs from the journal at that position.

    The rest of the run's journal was discarded (kept in the discarded history)
    and execution went on from there. Also warned, before anything runs, by a ``map``
    (or ``AgentRunner.run``) whose key function keys the same record differently when
    asked again (``uuid4()``): its runs would never be found again.
    """


class CancelledAwaitWarning(UserWarning):
    """The await of a durable call was cancelled while the call runs on (a timeout around it, say).

    Its outcome is journaled anyway, so a replay returns it at that await instead of
    the cancellation, and the action may take another branch.
    """


class UnpicklableArgumentWarning(UserWarning):
    """An argument could not be pickled and was digested by its type name only."""


class ChangedInputWarning(UserWarning):
    """Something changed in place a value the journal had digested, so the next run sees other values.

    A %%durable cell that changed one of its inputs: run again, it is a new version and
    executes again. A durable function that changed its own arguments: a replay does
    not repeat the change, and a later call reading them executes again.
    """


class UnpicklableOutputWarning(UserWarning):
    """A %%durable cell bound a name whose value cannot be journaled."""


class UnserializableResultWarning(UserWarning):
    """A durable call returned a value that cannot be pickled (what Flink Agents does).

    The value is returned to the caller, the call stays PENDING in the journal, so a
    recovery reconciles or re-executes it. Strict mode raises
    :class:`UnserializableResultError` instead.
    """


class RecordDecodeError(DurableError):
    """A journaled result or exception cannot be loaded (its class no longer exists, or the row is damaged).

    Raised on replay instead of the loader's bare ``ModuleNotFoundError`` /
    ``AttributeError``; the journal and the run's status are left unchanged.
    """

    def __init__(
        self, run_id: str, index: int, call_id: str, class_name: str | None, reason: str, damage: bool = False,
        packages: tuple[str, ...] = (),
    ) -> None:
        self.run_id = run_id
        self.index = index
        self.call_id = call_id
        self.class_name = class_name
        """The class or function the payload names that cannot be found; None when all of them can be."""
        self.reason = reason
        self.damage = damage
        """Whether the row holds what durable_nb never writes (bytes that are not a pickle, no payload at all,
        a FAILED call's payload that is no exception): ``reason`` says which; no loading code is to blame."""
        self.packages = tuple(packages)
        """``name version`` of the installed packages whose classes the payload names (pandas, cloudpickle...)."""
        fork = f"fork the run before this call (store.fork({run_id!r}, at={index})) and run the fork."
        if damage:  # edited by hand, or damaged: nothing to fix in the code, and no class to restore
            super().__init__(
                f"cannot load the recorded outcome of call {index} ({call_id!r}) of run {run_id!r}: {reason}. "
                f"durable_nb never writes such a row: the journal was edited by hand or damaged, and was left "
                f"unchanged. Restore it from a backup, or {fork[:-1]}, where that call runs again."
            )
            return
        super().__init__(f"cannot replay call {index} ({call_id!r}) of run {run_id!r}: {self._cause(fork)}")

    def _cause(self, fork: str) -> str:
        """Why the payload does not load, and the fix. Why a version mismatch is named: a payload pickled by
        another pandas or cloudpickle (a journal written before an upgrade, or by a Flink job's environment)
        fails in their loading code or lacks one of their functions, and blaming that code, or asking to
        "re-install" a module that is installed, sent the user the wrong way."""
        class_name, reason = self.class_name, self.reason
        shown = ", ".join(sorted(self.packages))  # the installed versions: the payload's are not known
        names = " or ".join(sorted(p.partition(" ")[0] for p in self.packages))
        versions = (f"pickled with other versions of {names} than those installed here ({shown}; a journal "
                    f"written before an upgrade or a downgrade, or by another environment, a Flink job's): replay "
                    f"it with the versions that wrote it (pip install them in this environment)")
        if class_name is not None and class_name.partition(".")[0] in {p.partition(" ")[0] for p in self.packages}:
            return (f"its recorded outcome names {class_name}, which cannot be loaded ({reason}): this version "
                    f"of its package does not have it. The outcome was most likely {versions}. The journal was "
                    f"left unchanged. Or {fork}")
        if class_name is None and self.packages:
            return (f"its recorded outcome cannot be loaded ({reason}), although every class it names can be "
                    f"imported. Either it was {versions}; or the loading code of one of its classes (its "
                    f"__reduce__, __setstate__ or __init__) fails: fix that code. The journal was left unchanged. "
                    f"Or {fork}")
        if class_name is None:  # everything it names exists: its own loading code fails
            return (f"its recorded outcome cannot be loaded ({reason}), although every class it names can be "
                    f"imported: the loading code of one of them (its __reduce__, __setstate__ or __init__) "
                    f"fails. The journal was left unchanged. Fix that loading code, or {fork}")
        return (f"its recorded outcome is a {class_name}, which cannot be loaded ({reason}). The journal "
                f"was left unchanged. Make {class_name} importable again (restore or re-install its "
                f"module), or {fork}")

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (type(self), (self.run_id, self.index, self.call_id, self.class_name, self.reason, self.damage,
                             self.packages))


class NonDeterminismError(DurableError):
    """Strict mode: a recovery met a call that differs from the journal at that position.

    Raised instead of discarding the rest of the journal (nothing is discarded),
    so a changed action cannot silently re-run side effects the journal recorded.
    """

    def __init__(
        self,
        run_id: str,
        index: int,
        recorded_call_id: str,
        recorded_args_digest: str,
        call_id: str | None,
        args_digest: str | None,
    ) -> None:
        self.run_id = run_id
        self.index = index
        self.recorded_call_id = recorded_call_id
        self.recorded_args_digest = recorded_args_digest
        self.call_id = call_id
        self.args_digest = args_digest
        recorded = f"{recorded_call_id!r} (args digest {recorded_args_digest[:12]})"
        if call_id is None:
            met = "the action finished before reaching it"
        else:
            met = f"the action called {call_id!r} (args digest {(args_digest or '')[:12]})"
        super().__init__(
            f"run {run_id!r} is not deterministic at call {index}: the journal has {recorded}, {met}. "
            f"Strict mode discarded nothing. Make the action make the same durable calls in the same "
            f"order with the same arguments, or fork the run before this call "
            f"(store.fork({run_id!r}, at={index})) and run the fork."
        )

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (type(self), (self.run_id, self.index, self.recorded_call_id, self.recorded_args_digest,
                             self.call_id, self.args_digest))


class AwaitingInput(DurableError):
    """A run stopped at an unanswered ``ctx.durable_input``: its status is WAITING, not FAILED.

    Answer it with ``store.answer(run_id, index, value)`` (or the notebook widget /
    ReconcilePanel), then run the action again: it replays up to the answer and goes on.
    """

    def __init__(self, run_id: str, index: int, prompt: str, choices: tuple[object, ...] | None = None) -> None:
        self.run_id = run_id
        self.index = index
        self.prompt = prompt
        self.choices = None if choices is None else tuple(choices)
        options = "" if self.choices is None else f" (choices: {', '.join(map(repr, self.choices))})"
        super().__init__(
            f"run {run_id!r} is waiting for input at call {index}: {prompt!r}{options}. Answer it with "
            f"store.answer({run_id!r}, {index}, value) or the notebook widget, then run the action again."
        )

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (type(self), (self.run_id, self.index, self.prompt, self.choices))


class RunIdTypeError(TypeError, ValueError):
    """A run id that is not a str: a ``TypeError``, and a ``ValueError`` as these refusals always were."""


class EmptyDsnError(TypeError, ValueError):
    """``PostgresStore("")``: a ``ValueError`` as ``SqliteStore("")`` raises, and a ``TypeError`` as this refusal
    always was (``except TypeError`` around it keeps catching it)."""


class OptionTypeError(TypeError, ValueError):
    """A runner option that is not an int at all: a ``TypeError`` as Python's own, and a ``ValueError`` as these
    refusals always were (``except ValueError`` around a runner's options keeps catching it)."""


def check_run_id(value: object, name: str = "run_id", *, empty_ok: bool = False) -> None:
    """The one check of a run id argument: a str (:class:`RunIdTypeError` naming its type and the fix), and not
    empty unless ``empty_ok`` (a store's read of '' finds nothing; a run cannot be named '').

    Why one: the store's reads and ``open_run``/``fork`` checked run ids apart, and said TypeError and
    ValueError for the same int; an int (a row number, a key) found nothing on one store and failed on another.
    """
    if isinstance(value, str) and (value or empty_ok):
        return
    if not isinstance(value, str):
        raise RunIdTypeError(f"{name} must be a {'' if empty_ok else 'non-empty '}string, got {type(value).__name__} "
                             f"{value!r:.200}; a run id is a str (e.g. 'order-42'); convert an id read from a number "
                             f"column with str(...)")
    if not value:
        raise ValueError(f"{name} must be a non-empty string, got ''; name the run, e.g. {name}='order-42'")


class RunNotFoundError(DurableError, KeyError):
    """No run with this id is in the store (a ``KeyError`` too)."""

    def __init__(self, run_id: str, store: str = "", hint: str = "") -> None:
        self.run_id = run_id
        self.store = store
        self.hint = hint
        where = f" in {store}" if store else ""
        self.message = f"no run {run_id!r}{where}. {hint or 'List the runs with store.runs().'}"
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (type(self), (self.run_id, self.store, self.hint))


class LeaseLostError(DurableError):
    """A context tried to write to a run it no longer holds; nothing was written.

    Its lease was taken over (``steal=True``, or another process recovered the run
    after this one was presumed dead), or the run was closed (the context's
    ``with`` block ended). Fencing every write this way is what keeps a late,
    stale context from overwriting a newer outcome.
    """

    def __init__(self, run_id: str, owner: str, reason: str) -> None:
        self.run_id = run_id
        self.owner = owner
        self.reason = reason
        super().__init__(
            f"run {run_id!r}: this context ({owner}) may no longer write: {reason}. Nothing was written. "
            f"Open the run again (runner.run / runner.context) to recover it from the journal; a "
            f"context is valid only inside its `with` block."
        )

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (type(self), (self.run_id, self.owner, self.reason))


class JournalWriteError(DurableError):
    """The journal could not be written (disk full, I/O error, read-only): nothing of that write was kept.

    Everything journaled before it is intact, and the run's lease is released, so
    the run can be recovered once the cause is fixed.
    """

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (type(self), (self.message,))


class JournalReadOnlyError(JournalWriteError):
    """The journal is open read-only (``?mode=ro``, a read-only file or filesystem): it can be listed, not written."""


class JournalUnavailableError(DurableError, ConnectionError):
    """A journal server (PostgreSQL) is down, unreachable, or refused the connection.

    The message names host, port and database and what to do. For a write, what
    was committed before it stays; the write itself may or may not have committed
    (the connection broke), and running the action again once the server is back
    recovers either way (a PENDING call is reconciled or re-executed).
    """

    def __init__(self, where: str, doing: str, run_id: str | None, reason: str, hint: str = "") -> None:
        self.where = where
        self.doing = doing
        self.run_id = run_id
        self.reason = reason
        self.hint = hint
        run = f" (run {run_id!r})" if run_id else ""
        after = (" Everything committed before stays in the journal: once it can be written again (the server "
                 "is back, or the user may write), run the action again and it replays and recovers from there."
                 if run_id else "")
        stop = "" if reason.endswith((".", "?", "!")) else "."  # libpq's "... accepting TCP/IP connections?"
        super().__init__(f"could not {doing}{run}: the PostgreSQL journal, {where}, is unavailable: "
                         f"{reason}{stop} {hint}{after}".rstrip())

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (type(self), (self.where, self.doing, self.run_id, self.reason, self.hint))
