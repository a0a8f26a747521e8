"""The replay rules (DESIGN.md, "Replay rules") and nothing else.

This is the only module that decides what a durable call does (over 400 lines
because DESIGN.md wants the replay rules in exactly one module; nesting, digests
and payload codecs live beside it). Runners, the
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

Nested calls: a durable call is atomic for the journal. ``durable_execute(_async)``
made while a durable function or a reconciler runs (same thread or asyncio task)
is a plain call, part of the outer one, never journaled; a ``%%durable`` cell is a
run, not a call. Why, and how it is tracked: :mod:`durable_nb.journal.nesting`.

Results that cannot be pickled are returned with an :class:`UnserializableResultWarning`
and the call stays PENDING (as in Flink Agents); ``Journal.strict`` raises instead.
Exceptions are journaled so that replay raises an instance of the recorded class
whenever it is importable (see :func:`durable_nb.journal.codec.dumps_exception`).
"""

from __future__ import annotations

import contextlib
import inspect
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from ..errors import (
    AwaitingInput,
    ChangedInputWarning,
    DurableError,
    LeaseLostError,
    NonDeterminismError,
    NonDeterminismWarning,
    RecordDecodeError,
    UnserializableResultError,
    UnserializableResultWarning,
    warn_at_user_code,
)
from . import codec, faults
from .callid import call_identity
from .digest import digest, digest_and_earlier, type_name
from .nesting import as_call, check_sync, inside_call, is_async_callable
from .records import (
    INPUT_CALL_ID,
    CallRecord,
    Origin,
    Outcome,
    Status,
    _Name,
    check_choices,
    damaged,
    encode_prompt,
    undecodable,
)
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


def check_reconciler(reconciler: Any, *, awaited: bool = False) -> None:
    """A reconciler must be callable with no arguments; checked before anything is written.

    Only an awaited call (``durable_execute_async``) may take a coroutine function:
    ``durable_execute`` would journal the coroutine object it returns, never run.
    """
    if reconciler is None:
        return
    if not awaited and is_async_callable(reconciler):
        name = getattr(reconciler, "__qualname__", type(reconciler).__qualname__)
        raise TypeError(
            f"durable_execute got the coroutine function {name!r} as its reconciler: calling it would only "
            f"create a coroutine, never run it. Use `await ctx.durable_execute_async(..., reconciler={name})`, "
            f"or a plain function. Nothing was written to the journal."
        )
    if not callable(reconciler):
        raise TypeError(
            f"reconciler must be callable (with no arguments), got {type(reconciler).__name__} {reconciler!r}; "
            f"write reconciler=lambda: lookup(order_id)."
        )
    try:
        inspect.signature(reconciler).bind()
    except TypeError:
        raise TypeError(
            f"reconciler must be a callable that takes no arguments: "
            f"{getattr(reconciler, '__qualname__', reconciler)!r} needs some (it runs during recovery, when the "
            f"original arguments are not passed again); capture what it needs: reconciler=lambda: lookup(order_id)."
        ) from None
    except ValueError:  # builtins without a signature: let them be
        return


def identify(func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[str, str]:
    """``(call_id, args_digest)`` of a call, as matched against the journal."""
    call_id, salt = identity_of(func)
    return call_id, digest(args, kwargs, salt)


def identity_of(func: Callable[..., Any]) -> tuple[str, bytes]:
    """``(call_id, salt)`` of a durable function (the salt goes into its arguments' digest)."""
    if not callable(func):
        raise TypeError(f"durable_execute needs a callable first argument, got {type(func).__name__}")
    return call_identity(func)


def decide(recorded: CallRecord | None, call_id: str, args_digest: str, has_reconciler: bool,
           earlier: Callable[[], str] | None = None) -> Decision:
    """Rules 1-3 for one position of the journal.

    ``earlier``: the digest an earlier durable_nb gave the same arguments (:func:`.digest.earlier_digest`),
    asked only when the call id matches and the digest does not: a record journaled under it is this call.
    """
    if recorded is None:
        return Decision.EXECUTE
    if not recorded.matches(call_id, args_digest) and not (
        earlier is not None and recorded.call_id == call_id and recorded.matches(call_id, earlier())
    ):
        return Decision.MISMATCH
    if recorded.status is not Status.PENDING:
        return Decision.REPLAY
    return Decision.RECONCILE if has_reconciler else Decision.REEXECUTE


class Journal:
    """The replay state of one open run."""

    def __init__(self, store: Store, run_id: str, recorded: list[CallRecord], owner: str | None = None) -> None:
        self.store = store
        self.run_id = run_id
        self.owner = owner
        """The lease owner every write is fenced with (None: unfenced, e.g. a dry run)."""
        self.closed: str | None = None
        """Set (to why) when the context ended: every later call raises LeaseLostError."""
        self._log = list(recorded)
        self.cursor = 0
        self._lock = threading.Lock()
        self._warned = False
        self.stop_before: int | None = None
        """If set, stepping stops (with :class:`StopRecovery`) before this call index."""
        self.in_flight = 0
        """Awaited calls begun (decided to run) and not yet finished: a stop waits for them (gathered calls)."""
        self.running = 0
        """Calls being performed by sync code in any thread, or on another thread's event loop: the run's end
        waits for them (:meth:`wait_running`)."""
        self.home = threading.get_ident()
        """The thread that opened the run, and ends it."""
        self._finished: threading.Condition | None = None
        """Made by the first wait for :attr:`running`: one per run cost a map replay ~10% (most runs never wait)."""
        self.observer: Callable[[Planned, str], None] | None = None
        """Told each decision (with the call id) before it is carried out: the ReplayStepper's view."""
        self.strict = False
        """Strict mode: a mismatch raises NonDeterminismError instead of discarding."""
        self.awaiting: AwaitingInput | None = None
        """Set when the run stopped at an unanswered ``durable_input`` (the run closes WAITING)."""
        self.replayed = 0
        """Calls this context replayed from the journal (what a map's progress bar counts)."""
        self.performed = 0
        """Calls this context did more than replay (executed, re-executed, reconciled, mismatched)."""
        self._unwritten: tuple[int, str, str] | None = None
        """(index, call id, digest) of the last call if its outcome could not be written: see _uncomplete."""

    @property
    def calls(self) -> list[CallRecord]:
        """The run's calls as this context knows them (persisted state, index order)."""
        with self._lock:
            return list(self._log)

    # -- performing -------------------------------------------------------------------

    def begin(self, call_id: str, args_digest: str, has_reconciler: bool, *, count: bool = False,
              earlier: Callable[[], str] | None = None) -> Step | CallRecord:
        """Apply the rules at the cursor and advance it.

        Returns the recorded call to replay, or a :class:`Step` to run. For a new
        call, PENDING is durable when this returns. ``count``: a Step counts in
        :attr:`running` from the moment it is decided (the caller calls :meth:`done_running`).
        """
        outcome, durable = self.begin_queued(call_id, args_digest, has_reconciler, count=count, earlier=earlier)
        if durable is not None:
            # Outside the lock: calls begun meanwhile (other threads) join the same commit.
            try:
                self.wait_durable(outcome, durable)
            except BaseException:
                if count:
                    self.done_running()
                raise
        return outcome

    def wait_durable(self, step: Step | CallRecord, durable: Callable[[], None]) -> None:
        """Wait until the PENDING queued by :meth:`begin_queued` is durable (the async path: off the loop)."""
        try:
            durable()
        except BaseException as exc:
            self._unqueue(step.index, exc)
            raise

    def begin_queued(
        self, call_id: str, args_digest: str, has_reconciler: bool, *, count: bool = False,
        earlier: Callable[[], str] | None = None,
    ) -> tuple[Step | CallRecord, Callable[[], None] | None]:
        """:meth:`begin` without the wait: a new call's PENDING is queued, and what waits for it returned."""
        with self._lock:
            if self.closed is not None:
                raise LeaseLostError(self.run_id, self.owner or "this context", self.closed)
            if self.awaiting is not None:
                # The run stopped at an unanswered input. AwaitingInput is an Exception, so a broad
                # ``except Exception`` around the question lets the action go on as if answered: no
                # later call may run (its side effect would not depend on the person's answer, and
                # after the answer its record would mismatch). Every durable call says it again.
                waiting = self.awaiting
                raise AwaitingInput(waiting.run_id, waiting.index, waiting.prompt, waiting.choices)
            if self._unwritten is not None:
                if self._unwritten == (self.cursor - 1, call_id, args_digest):
                    self.cursor -= 1  # a retry of the call whose outcome could not be written: see _uncomplete
                self._unwritten = None
            index = self.cursor
            recorded = self._log[index] if index < len(self._log) else None
            decision = decide(recorded, call_id, args_digest, has_reconciler, earlier)
            if decision is Decision.REPLAY:
                self.replayed += 1
            else:
                self.performed += 1
            if self.observer is not None:
                self.observer(Planned(index, decision, recorded), call_id)
            if self.stop_before is not None and index >= self.stop_before:
                raise StopRecovery(index)
            mismatch = decision is Decision.MISMATCH
            if mismatch:
                assert recorded is not None
                if self.strict:
                    raise NonDeterminismError(
                        self.run_id, index, recorded.call_id, recorded.args_digest, call_id, args_digest
                    )
                self._discard(index, f"expected {recorded.call_id} here, the action called {call_id}"
                              + ("" if recorded.call_id != call_id else " with other arguments"))
                decision = Decision.EXECUTE
            if decision is Decision.REPLAY:
                self.cursor += 1
                assert recorded is not None
                return recorded, None
            durable = None
            if decision is Decision.EXECUTE:
                faults.fire("before_pending_commit", call_id)
                now = time.time()
                durable = self.store.queue_pending(self.run_id, index, call_id, args_digest, now, owner=self.owner)
                self._log.append(CallRecord.pending(self.run_id, index, call_id, args_digest, now))
            self.cursor += 1
            if count:  # under the lock that checked `closed`: the run's end cannot slip in before it counts
                self.running += 1
        origin = Origin.RECONCILED if decision is Decision.RECONCILE else Origin.EXECUTED
        return Step(index, call_id, decision, origin, mismatch), durable

    def _unqueue(self, index: int, exc: BaseException) -> None:
        """The PENDING of call ``index`` did not commit: forget it, as if it had never begun.

        Calls begun after it (concurrently) were queued behind it and fail with it. If
        one of them is already in the log, the log can no longer be trimmed back to
        this call, so the context closes: every later call raises ``LeaseLostError``.
        """
        with self._lock:
            if len(self._log) == index + 1 and self.cursor == index + 1:
                del self._log[index]
                self.cursor = index
                self.performed -= 1
            elif self.closed is None:
                self.closed = f"a concurrent call's PENDING could not be written ({type(exc).__name__}: {exc})"

    def succeed(self, step: Step, value: Any, preview: Callable[[Any], str] | None = None) -> None:
        """Persist a value as SUCCEEDED (``preview``: its text for the journal view, if not its repr).

        A value that cannot be pickled is not persisted: the call stays PENDING and an
        :class:`UnserializableResultWarning` names call and type (Flink Agents'
        behaviour); in strict mode :class:`UnserializableResultError` is raised instead.
        """
        try:
            encoded = encode_success(value, self.run_id, step.index, step.call_id, preview)
            check_size(encoded, self.store, self.run_id, step.index, step.call_id, value)
        except UnserializableResultError as err:
            if self.strict:
                raise
            warn_at_user_code(
                f"durable_nb: durable call {step.call_id!r} (run {self.run_id!r}, index {step.index}) "
                f"returned a {err.type_name} that cannot be journaled ({err.reason}); the value is "
                f"returned, the call stays PENDING, so a recovery reconciles or re-executes it. "
                f"Return plain data to journal it (strict mode raises instead).",
                UnserializableResultWarning,
            )
            return
        self._complete(step, encoded)

    def fail(self, step: Step, exc: Exception) -> None:
        """Persist an exception as FAILED (its class kept whenever it is importable).

        One larger than the store holds (an attribute, or a cause or context holding a large object) is
        journaled as its class and args alone: the store would fail to commit it, and the call stayed PENDING
        (run again by a recovery) or failed the commits after it.
        """
        outcome = encode_failure(exc)
        limit = self.store.max_payload
        if limit is not None and outcome.payload is not None and len(outcome.payload) > limit:
            bare = encode_failure(exc, bare=True)
            outcome = bare if bare.payload is not None and len(bare.payload) <= limit else encode_failure(
                RecordedError(type_name(exc), outcome.error_preview or ""))
        self._complete(step, outcome)

    def _complete(self, step: Step, outcome: Outcome) -> None:
        now = time.time()
        try:
            self.store.complete_call(
                self.run_id, step.index, outcome, origin=step.origin, finished_at=now, owner=self.owner
            )
        except Exception as exc:
            self._uncomplete(step.index, exc)
            raise
        with self._lock:
            if step.index < len(self._log):
                self._log[step.index] = self._log[step.index].completed(outcome, step.origin, now)

    def _uncomplete(self, index: int, exc: BaseException) -> None:
        """The outcome of call ``index`` could not be written: the journal holds it PENDING.

        Why: the error says the next call may retry (a server back after a restart). If
        the next call is that same call again (same id and arguments), it is a retry: it
        meets that PENDING call, as a recovery would (reconcile it, or re-execute it),
        instead of running the function again as the next call and shifting every later
        call by one. Any other next call goes on after it and leaves it PENDING, for a
        recovery to reconcile (an action that logs the failure and moves on).
        """
        with self._lock:
            if self.cursor == index + 1 and index < len(self._log):
                self._unwritten = (index, self._log[index].call_id, self._log[index].args_digest)

    def _discard(self, index: int, reason: str) -> None:
        self.store.discard_from(self.run_id, index, reason, time.time(), owner=self.owner)
        del self._log[index:]
        if not self._warned:
            self._warned = True
            warn_at_user_code(
                f"durable_nb: run {self.run_id!r} is not deterministic: at call {index} {reason}. "
                f"The journal from call {index} on was discarded (the journal view keeps it) and the "
                f"run continues by executing. Keep durable calls in the same order with the same "
                f"arguments across recoveries.",
                NonDeterminismWarning,
            )

    def keep_rest(self) -> None:
        """The outcome came from elsewhere (a record, a cell-level reconciler): keep the calls after the cursor.

        Those calls were not reached, but the outcome accounts for them; without this,
        closing the run would discard them as if the action had stopped making them.
        """
        with self._lock:
            self.cursor = max(self.cursor, len(self._log))

    @property
    def reached_none(self) -> bool:
        """Recorded calls exist and the action made no durable call at all.

        Such an action (or a ``with runner.context(...)`` block that only looked at
        the run) says nothing about the recorded calls: it neither discards them nor
        changes the run's status. Discarding them would make the next recovery
        repeat their side effects.
        """
        return self.cursor == 0 and bool(self._log)

    def discard_unreached(self) -> None:
        """Called when the action ends: recorded calls it never reached are not part of this run."""
        with self._lock:
            if self.cursor < len(self._log) and not self.reached_none:
                if self.strict:
                    rec = self._log[self.cursor]
                    raise NonDeterminismError(self.run_id, self.cursor, rec.call_id, rec.args_digest, None, None)
                self._discard(self.cursor, "the action finished before reaching this call")

    # -- the whole rule for one call ------------------------------------------------------

    def input(self, prompt: str, choices: Sequence[Any] | None = None) -> Any:
        """``ctx.durable_input``: a call whose outcome a person gives (origin RESOLVED).

        The same rules as any call, with ``INPUT_CALL_ID`` and a digest of prompt and
        choices: an answer on record replays; otherwise the call is (or stays) PENDING
        with its prompt stored, and :class:`AwaitingInput` stops the run (WAITING).
        """
        if not isinstance(prompt, str):
            raise TypeError(f"durable_input needs a str prompt, got {type(prompt).__name__} {prompt!r}")
        if inside_call():
            raise RuntimeError(
                f"durable_input({prompt!r}) was called inside a durable call or a reconciler of run "
                f"{self.run_id!r}; a call is atomic for the journal and cannot stop halfway for an answer. "
                f"Ask in the action, before the call, and pass the answer to it."
            )
        if isinstance(choices, str | bytes | set | frozenset | dict):
            raise TypeError(
                f"durable_input {prompt!r}: choices must be a list or tuple (ordered, so that the call digests "
                f"the same in every process), got {type(choices).__name__} {choices!r}"
            )
        options = None if choices is None else tuple(choices)
        if options is not None:
            check_choices(prompt, options)  # before anything is written
        outcome = self.begin(INPUT_CALL_ID, digest((prompt, options), {}), False)
        if isinstance(outcome, CallRecord):
            return replay(outcome)
        with self._lock:
            recorded = self._log[outcome.index] if outcome.index < len(self._log) else None
        if outcome.decision is not Decision.EXECUTE and recorded is not None and recorded.prompt is None:
            recorded = self.store.call(self.run_id, outcome.index)  # open_run may not load prompts
        # A PENDING input on record matched the digest of (prompt, choices): its stored prompt is
        # this one, unless a crash came between its PENDING and its prompt (then write it now).
        # Crash points as for any call: PENDING durable, prompt not yet (before_call); prompt
        # durable, run not yet closed WAITING (after_call). Recovery asks again either way.
        faults.fire("before_call", INPUT_CALL_ID)
        if outcome.decision is Decision.EXECUTE or recorded is None or recorded.prompt is None:
            self.store.set_prompt(self.run_id, outcome.index, encode_prompt(prompt, options))
        faults.fire("after_call", INPUT_CALL_ID)
        self.awaiting = AwaitingInput(self.run_id, outcome.index, prompt, options)
        raise self.awaiting

    def execute(
        self,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        reconciler: Callable[[], Any] | None,
    ) -> Any:
        __tracebackhide__ = True  # IPython leaves durable_nb's own frames out of a user's traceback
        if reconciler is not None:
            check_reconciler(reconciler)
        check_sync(func)
        if inside_call():  # part of the enclosing durable call: a plain call (module docstring)
            return func(*args, **kwargs)
        call_id, salt = identity_of(func)
        args_digest, earlier = digest_and_earlier(args, kwargs, salt)
        # counted from its decision on (its PENDING being written too): the run's end waits for it
        outcome = self.begin(call_id, args_digest, reconciler is not None, count=True, earlier=earlier)
        if isinstance(outcome, CallRecord):
            return replay(outcome)  # a replay costs nothing
        try:
            if outcome.decision is Decision.RECONCILE:
                assert reconciler is not None
                return self.perform(outcome, as_call(reconciler))

            def call() -> Any:
                __tracebackhide__ = True
                return func(*args, **kwargs)

            with self.arguments_watched(outcome, func, args, kwargs, args_digest):
                return self.perform(outcome, as_call(call))
        finally:
            self.done_running()

    def done_running(self) -> None:
        """A call counted by ``begin(count=True)`` is over (journaled, or left as a crash leaves it)."""
        with self._lock:
            self.running -= 1
            if not self.running and self._finished is not None:
                self._finished.notify_all()

    def wait_running(self) -> None:
        """Wait until no sync call of the run is being performed (by another thread).

        Why: a thread started in an action or a ``%%durable`` cell can still be inside a
        durable call when the action returns. Closed meanwhile, the run would be COMPLETED
        with that call PENDING while its function runs on (its side effect made), and the
        outcome it then tries to journal would be refused. Interruptible: a Ctrl-C stops
        the wait, and the caller closes the run as a crash leaves it (the call PENDING).
        """
        with self._lock:
            while self.running:
                if self._finished is None:
                    self._finished = threading.Condition(self._lock)
                self._finished.wait(0.05)
            if self.closed is None:  # a call begun from now on is refused (it would write into a closed run)
                self.closed = "its `with` block has ended (the run was closed)"

    @contextlib.contextmanager
    def arguments_watched(self, step: Step, func: Callable[..., Any], args: tuple[Any, ...],
                          kwargs: dict[str, Any], args_digest: str) -> Iterator[None]:
        """Around performing ``step``: warn when the durable function changed its own arguments in place.

        Why: a replay returns the recorded result without running the function, so
        the change is not made again; a later call that reads those arguments then
        sees other values (rule 2) and executes again, side effect included. Checked
        once the outcome is journaled (after an ``Exception`` too, not a crash): under
        ``-W error`` the warning cannot become the call's recorded failure.
        """
        try:
            yield
        except Exception:
            self._check_arguments(step, func, args, kwargs, args_digest)
            raise
        self._check_arguments(step, func, args, kwargs, args_digest)

    def _check_arguments(self, step: Step, func: Callable[..., Any], args: tuple[Any, ...],
                         kwargs: dict[str, Any], args_digest: str) -> None:
        if identify(func, args, kwargs)[1] != args_digest:
            warn_at_user_code(
                f"durable_nb: durable call {step.call_id!r} (run {self.run_id!r}, index {step.index}) changed "
                f"its arguments in place. A replay returns its recorded result without running it, so the "
                f"change is not made again, and a later durable call that reads those arguments sees other "
                f"values and executes again. Return the change instead (or copy inside the function).",
                ChangedInputWarning,
            )

    def perform(self, step: Step, run: Callable[[], Any], preview: Callable[[Any], str] | None = None) -> Any:
        """Run what ``step`` says to run, between its fault points, and persist its outcome.

        An ``Exception`` is persisted FAILED and re-raised; any other ``BaseException``
        passes through with nothing written (the call stays PENDING).
        """
        __tracebackhide__ = True
        faults.fire("before_call", step.call_id)
        try:
            value = run()
        except Exception as exc:
            faults.fire("after_call", step.call_id)
            self.fail(step, exc)
            raise
        faults.fire("after_call", step.call_id)
        self.succeed(step, value, preview)
        return value

    async def perform_async(self, step: Step, run: Callable[[], Awaitable[Any]]) -> Any:
        """:meth:`perform` for a step whose work is awaited."""
        __tracebackhide__ = True
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


def encode_success(
    value: Any, run_id: str, index: int, call_id: str, preview: Callable[[Any], str] | None = None
) -> Outcome:
    """The SUCCEEDED outcome of a result; its preview is made now, once (by ``preview`` if given)."""
    try:
        payload = codec.dumps(value)
    except Exception as exc:
        raise UnserializableResultError(run_id, index, call_id, type_name(value), f"{type(exc).__name__}: {exc}") \
            from exc
    text = codec.preview(value) if preview is None else codec.clip(preview(value))
    return Outcome(Status.SUCCEEDED, payload, result_preview=text)


def check_size(outcome: Outcome, store: Store, run_id: str, index: int, call_id: str, value: Any) -> None:
    """:class:`UnserializableResultError` for a pickle larger than ``store.max_payload``.

    Why here: a store that took it would fail to commit it (SQLite's blob limit,
    PostgreSQL's 1 GB message), and an outcome held back for a later commit would
    then fail every commit after it.
    """
    limit = store.max_payload
    if limit is not None and outcome.payload is not None and len(outcome.payload) > limit:
        raise UnserializableResultError(
            run_id, index, call_id, type_name(value),
            f"its pickle is {len(outcome.payload):,} bytes, more than the {limit:,} {type(store).__name__} can hold",
        )


def encode_failure(exc: BaseException, *, bare: bool = False) -> Outcome:
    """The exception itself if it round-trips; else its class, args and picklable attributes (``bare``: its
    class and args alone, :meth:`Journal.fail`).

    :class:`RecordedError` (type name and message) only when not even the class pickles.
    """
    try:
        payload = codec.dumps_exception_bare(exc) if bare else codec.dumps_exception(exc)
    except Exception:
        try:
            message = str(exc)
        except Exception:
            message = "<str() failed>"
        payload = codec.dumps(RecordedError(type_name(exc), message))
    return Outcome(Status.FAILED, payload, error_preview=codec.error_preview(exc))


def settle_pending(store: Store, record: CallRecord, outcome: Any, *, failed: bool, origin: Origin) -> bool:
    """Give a PENDING call its outcome from outside any run (the ReconcilePanel).

    Written only if the call is still PENDING, so an outcome something else
    recorded meanwhile is never overwritten; returns whether it was written. The
    next recovery replays it like any terminal call. Raises UnserializableResultError
    (nothing written) for a value that cannot be pickled.
    """
    encoded = (
        encode_failure(outcome) if failed else encode_success(outcome, record.run_id, record.index, record.call_id)
    )
    check_size(encoded, store, record.run_id, record.index, record.call_id, outcome)
    return store.complete_call(
        record.run_id, record.index, encoded, origin=origin, finished_at=time.time(), only_if_pending=True
    )


class StopRecovery(BaseException):
    """Stops a stepped recovery before a call; writes nothing (a BaseException on purpose)."""

    def __init__(self, index: int) -> None:
        self.index = index
        super().__init__(f"recovery stopped before call {index}")


E = TypeVar("E", bound=BaseException)


def found_in(exc: BaseException, cls: type[E]) -> E | None:
    """``exc`` if it is a ``cls``, or the first ``cls`` inside the exception group(s) it is.

    Why: durable_nb's own stops (a stepped recovery's, a dry run's) are raised at a call;
    when that call runs in an ``asyncio.TaskGroup`` task, they come out of the action
    wrapped in a ``BaseExceptionGroup``, which an ``except StopRecovery`` does not catch.
    """
    if isinstance(exc, cls):
        return exc
    for member in getattr(exc, "exceptions", None) or ():  # (Base)ExceptionGroup, or the 3.10 backport's
        inner = found_in(member, cls) if isinstance(member, BaseException) else None
        if inner is not None:
            return inner
    return None


def replay(recorded: CallRecord) -> Any:
    """Return the recorded result or raise the recorded exception.

    A payload that cannot be loaded (its class was deleted or renamed, or the row was damaged: bytes that
    are no pickle, no payload) raises :class:`RecordDecodeError`, which leaves the run as it was (``open_run``).
    """
    try:
        if recorded.status is Status.SUCCEEDED and recorded.payload is not None:
            return codec.loads(recorded.payload)  # recorded.result() without its checks, made just here
        outcome = recorded.result() if recorded.status is Status.SUCCEEDED else recorded.error()
    except RecordDecodeError:
        raise  # the record said what is wrong with its row
    except Exception as exc:
        why = None if recorded.payload is None else codec.not_a_pickle(recorded.payload)
        if why is not None:
            raise damaged(recorded, why) from None
        raise undecodable(recorded, exc) from exc
    if recorded.status is Status.SUCCEEDED:
        return outcome
    raise outcome
