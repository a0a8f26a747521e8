"""The store protocol every journal backend implements.

A store only persists and reads; it never decides what a recovery does (that is
:mod:`durable_nb.journal.replay`).

Durability: each write method is one transition. ``append_pending`` is durable
when it returns (before the function runs). An outcome (``complete_call`` with an
``owner``) may be held back by a store's durability level (``"call"``) until the
next write of that store, the run's end (``close_run``), a boundary
(:meth:`Store.boundary`, :meth:`Store.flush`) or a short delay; readers of the
same store object always see it.

Leases (:mod:`durable_nb.journal.lease`): ``open_run`` takes the run for an
``owner`` without necessarily writing (a replay writes nothing); the first write
takes it in the journal. Every write made with ``owner=`` is fenced: if that
owner's lease was taken over or closed it raises :class:`LeaseLostError` and
writes nothing. ``owner=None`` writes unfenced (ReconcilePanel, ``answer``: they
check ``only_if_pending`` instead).

Over 400 lines because it is the whole protocol every store implements (reads, leases, writes, time travel,
kept numbers), each method with the why its implementations share.
"""

from __future__ import annotations

import abc
import contextlib
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import check_run_id
from .queries import as_int, check_call_index, check_prefix
from .records import INPUT_CALL_ID, CallRecord, DiscardedCall, Origin, Outcome, RunRecord, RunStatus, Status

if TYPE_CHECKING:
    from datetime import timedelta

    import pandas as pd

    from .history import FreshHead

# ---------------------------------------------------------------- the protocol


class Store(abc.ABC):
    """Where journals live: the type to annotate with, or to check a runner's ``store`` against.

    Make one with :class:`SqliteStore` (one machine, the default), :class:`PostgresStore` (many
    machines, a Flink cluster), :class:`MemoryStore` (tests, demos) or :func:`open_store` (a URL).
    Its read methods (``runs``, ``calls``, ``to_pandas``, ``pending``, ``waiting``) unpickle nothing;
    ``fork``, ``prune`` and ``answer`` edit the history (README "Time travel").
    """

    max_payload: int | None = None
    """The largest pickled outcome this journal can hold (bytes; None: no limit). A larger result is
    not journaled: the call stays PENDING, as for a result that cannot be pickled."""

    # -- reading ------------------------------------------------------------

    @abc.abstractmethod
    def runs(self) -> list[RunRecord]:
        """Every run, oldest first."""

    @abc.abstractmethod
    def run(self, run_id: str) -> RunRecord | None:
        """One run, or None if it was never opened."""

    def newest_runs(self, n: int) -> tuple[list[RunRecord], int]:
        """The newest ``n`` runs (oldest first, as :meth:`runs` orders them) and how many runs there are.

        Why: a viewer shows a few runs; reading every one made a ``JournalView`` of 1,000,000 runs build
        1,000,000 ``RunRecord`` s (4 s, ~470 MiB) to show 200. This default reads :meth:`runs`; SQLite
        reads only those.
        """
        runs = self.runs()
        return (runs[-n:] if n > 0 else []), len(runs)

    def run_ids_with_prefix(self, prefix: str) -> list[str]:
        """Ids of the runs whose id starts with ``prefix`` (exactly, case and all), in code point order.

        Why: a cell's attempts (``base``, ``base#2`` ...) outlive a prune in any pattern, so
        :func:`durable_nb.notebook.runids.attempts` cannot probe ids one by one. The stores answer
        from an index on the run id; this default, for other subclasses, reads :meth:`runs`.
        """
        check_prefix(prefix)
        return sorted(r.run_id for r in self.runs() if r.run_id.startswith(prefix))

    def runs_with_prefix(self, prefix: str) -> list[RunRecord]:
        """The runs whose id starts with ``prefix`` (as :meth:`run_ids_with_prefix`), in code point order of id.

        Why: the notebook finds a cell's runs (``cell:NAME:`` ...) for ``%durable_journal``,
        ``%durable_fork`` and ``%durable_forget``; reading every run of the store for them took
        0.4-0.9 s on a journal of 100,000 runs. The stores answer from the run id's index; this
        default, for other subclasses, reads :meth:`runs`.
        """
        check_prefix(prefix)
        return sorted((r for r in self.runs() if r.run_id.startswith(prefix)), key=lambda r: r.run_id)

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
        not_call_id: str | None = None,
    ) -> list[CallRecord]:
        """Calls across runs in journal order (the order they were first written), no payloads.

        This is what viewers page through: it never loads payloads. ``not_call_id`` leaves out the calls
        with that call id (the ReconcilePanel's PENDING calls without the waiting inputs: a page of them is
        read at its offset instead of every call before it).
        """

    @abc.abstractmethod
    def count_calls(
        self, *, run_id: str | None = None, status: Status | str | None = None, call_id: str | None = None,
        not_call_id: str | None = None,
    ) -> int:
        """How many calls :meth:`query_calls` would return without offset/limit."""

    def call(self, run_id: str, index: int) -> CallRecord | None:
        """One call with its payload, or None."""
        index = check_call_index(index)  # type: ignore[assignment]
        if index is None:
            return None
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

        if run_id is not None:
            check_run_id(run_id, empty_ok=True)
        return calls_frame(self.query_calls(run_id=run_id))

    # -- writing: the vocabulary of the replay engine -------------------------

    @abc.abstractmethod
    def open_run(self, run_id: str, owner: str, *, steal: bool = False) -> list[CallRecord]:
        """Take the run's lease for ``owner`` and return its calls; writes nothing unless stealing.

        The run row is created, marked RUNNING and its ``attempts`` counted at the
        owner's first write (folded into it). Raises :class:`RunBusyError` if a live
        context holds the run, unless ``steal`` (then the holder's writes are fenced
        off from now on, and a holder in another process is fenced by a write now).
        """

    @abc.abstractmethod
    def close_run(self, run_id: str, owner: str, status: RunStatus | None) -> None:
        """End ``owner``'s lease; record the run's final status (None: keep it) if it wrote or the status changes.

        Always releases the lease (even when the write fails). Nothing is written for
        a context that only replayed and leaves the status as it was. A no-op for an
        owner whose lease is already gone.
        """

    @abc.abstractmethod
    def append_pending(
        self, run_id: str, index: int, call_id: str, args_digest: str, started_at: float, *, owner: str | None = None
    ) -> None:
        """Persist a new PENDING call at ``index``, durable when this returns (with any held-back outcome)."""

    def queue_pending(
        self, run_id: str, index: int, call_id: str, args_digest: str, started_at: float, *, owner: str | None = None
    ) -> Callable[[], None]:
        """:meth:`append_pending` in two steps: queue the write now, return what waits until it is durable.

        Why: the journal queues a call's PENDING under its lock (so a run's calls are
        queued, and committed, in index order) and waits outside it, so that calls
        made together (``asyncio.gather`` of ``durable_execute_async``, threads sharing
        a context) share one commit. A store that commits in the order writes are
        queued overrides this; the default writes now and returns a no-op.
        """
        self.append_pending(run_id, index, call_id, args_digest, started_at, owner=owner)
        return _durable_now

    @abc.abstractmethod
    def complete_call(
        self,
        run_id: str,
        index: int,
        outcome: Outcome,
        *,
        origin: Origin,
        finished_at: float,
        only_if_pending: bool = False,
        owner: str | None = None,
    ) -> bool:
        """Persist a call's terminal outcome; returns False if ``only_if_pending`` and it was not.

        With ``owner`` the write is fenced and, under durability ``"call"``, may be held
        back (see the module docstring); without, it is committed when this returns.
        """

    @abc.abstractmethod
    def discard_from(self, run_id: str, index: int, reason: str, at: float, *, owner: str | None = None) -> None:
        """Move calls ``index..`` of the run to the discarded history."""

    def flush(self) -> None:
        """Make every held-back outcome durable now (a durable boundary). No-op where nothing is held."""

    @contextlib.contextmanager
    def boundary(self) -> Iterator[None]:
        """A span whose end is the durable boundary: runs closed inside need not commit their end.

        ``LocalRunner.map`` wraps its records in one, so a record costs one commit
        (its PENDING) and the map's return makes everything durable.
        """
        try:
            yield
        finally:
            self.flush()

    @contextlib.contextmanager
    def prefetch(self, run_ids: Sequence[str]) -> Iterator[None]:
        """A span in which these runs are opened in this order (``map``): a store may read them ahead.

        A hint only: a store that uses it must still give ``open_run`` the run's calls as
        they are when the lease is taken. The default reads nothing ahead.
        """
        yield

    def run_is_open(self, run_id: str) -> bool:
        """Whether a live context holds the run (this process or, where the store can tell, another)."""
        from .lease import owner_is_alive

        rec = self.run(run_id)
        return rec is not None and owner_is_alive(rec.owner)

    @abc.abstractmethod
    def delete_run(self, run_id: str) -> None:
        """Forget a run and its calls entirely (``%durable_forget``); RunBusyError while a live context holds it."""

    # -- time travel: fork, retention, human input (rules in journal/history.py) --------

    def fork(self, run_id: str, at: int, new_run_id: str | None = None) -> str:
        """A new run whose calls ``0..at-1`` are copies of ``run_id``'s; returns its id.

        Running the action on the new run replays those ``at`` calls and executes
        from ``at`` on; the original run is untouched. The new run records its
        lineage (``parent_run_id``, ``forked_at``), starts RUNNING with no owner,
        and gets the id ``f"{run_id}.fork-{n}"`` unless ``new_run_id`` is given, ``n`` one never given
        before in this journal (a pruned fork's id could make a ledger keyed by run id skip the new side effect).
        Refused (nothing written): an unknown run (:class:`RunNotFoundError`), ``at``
        outside ``0..len(calls)``, an existing ``new_run_id``, or a PENDING call
        among the copied ones (two runs would recover one in-flight side effect).
        """
        from .history import check_fork_args

        index = check_fork_args(run_id, at, new_run_id)
        if type(new_run_id) not in (str, type(None)):  # a numpy.str_: a MemoryStore kept it as one
            new_run_id = str.__str__(new_run_id)  # its characters (open_run's reason)
        return self._fork(run_id, index, new_run_id, time.time())

    def fork_reopened(self, run_id: str, at: int, new_run_id: str, head: FreshHead) -> str:
        """:meth:`fork`, with call 0 written afresh as ``head`` says (PENDING) instead of copied: a cell's fork.

        Calls ``1..at-1`` are copied; call 0 of ``run_id`` may be PENDING (a cell that
        crashed mid-way). The new run starts RUNNING with attempts 1 (as a run opened
        once and stopped before its first call finished), lineage ``head``'s or
        ``(run_id, at)``. One transaction, like :meth:`fork`: a process killed meanwhile
        leaves no partial fork.
        """
        from .history import check_fork_args

        return self._fork(run_id, check_fork_args(run_id, at, new_run_id), new_run_id, time.time(), head)

    def _fork(self, run_id: str, at: int, new_run_id: str | None, now: float, head: FreshHead | None = None) -> str:
        """Validate (``history.check_fork``) and copy in one transaction (call 0 written afresh with ``head``)."""
        raise NotImplementedError(f"{type(self).__name__} cannot fork runs")

    def last_number(self, sequence: str) -> int:
        """The highest number :meth:`keep_number` kept for ``sequence`` in this journal (0: none)."""
        from .history import number_kept, sequence_key

        return number_kept(self._kept(sequence_key(sequence)))

    def keep_number(self, sequence: str, number: int) -> None:
        """Keep ``number`` as used in ``sequence`` unless a higher one is kept; it stays when runs go.

        Why: a run id made from a number (a cell's rerun ``base#3``) must not be made again once its run
        was pruned or forgotten: a ledger keyed by run id would take the new run's charge for the old one's.
        Kept, not counted up: two kernels starting one attempt at once keep one number and meet in one run.
        """
        from .history import check_number, sequence_key

        self._keep(sequence_key(sequence), check_number(number))

    def _kept(self, key: str) -> Any:
        """The value kept under ``key`` as stored (``meta``; None: none); ``_keep`` keeps the higher number.

        This default, for a store of the user's own that keeps nothing, reads none and keeps none: its cells
        still run, and their numbers come from the runs still in the journal (the rule before numbers were kept).
        """
        return None

    def _keep(self, key: str, number: int) -> None:
        """Keep ``number`` under ``key`` unless a higher one is kept (see :meth:`_kept` for this default)."""

    def prune(
        self,
        *,
        older_than: timedelta | None = None,
        keep_last: int | None = None,
        status: RunStatus | str | Collection[RunStatus | str] | None = None,
        include_pending: bool = False,
        dry_run: bool = False,
    ) -> list[RunRecord]:
        """Remove old runs (their calls and discarded history); return them, oldest first.

        A run goes when it is older than ``older_than`` (by its last update), outside
        the ``keep_last`` most recently updated runs of the store (``0`` keeps none),
        and of ``status`` (one, or a collection of them) where given: the filters combine. RUNNING and WAITING runs
        and runs with PENDING calls stay unless ``include_pending=True``; a run a live
        process holds open always stays. ``dry_run=True`` returns what would go and
        writes nothing. Runs go in transactions of 1,000 (a store's locks stay bounded):
        an error in a later one leaves the earlier ones removed; prune again for the rest.
        """
        from .history import PruneRule, check_flag

        rule = PruneRule.make(older_than, keep_last, status, include_pending)
        check_flag("dry_run", dry_run)
        if dry_run:
            with_pending = {c.run_id for c in self.query_calls(status=Status.PENDING)}
            return rule.select(self.runs(), with_pending, time.time(), self._open_as_read)
        return self._prune(rule, time.time())

    def _open_as_read(self, run: RunRecord) -> bool:
        """:meth:`run_is_open` for a run record just read (``prune``'s selection asks it of every candidate).

        Why a hook: the default asks by id; a store that would read the run's row again to learn its owner
        (SqliteStore) answers from the record instead: a prune of 1,000,000 runs otherwise read each one twice.
        """
        return self.run_is_open(run.run_id)

    def _prune(self, rule: Any, now: float) -> list[RunRecord]:
        """Select with ``rule.select`` and delete (in transactions of a bounded number of runs)."""
        raise NotImplementedError(f"{type(self).__name__} cannot prune runs")

    def set_lineage(self, run_id: str, parent_run_id: str, forked_at: int) -> None:
        """Record that ``run_id`` is a fork of ``parent_run_id`` at call ``forked_at``.

        For forks built call by call rather than copied by :meth:`fork` (a ``%%durable``
        cell's fork keeps its call 0 open), so that every fork shows its parent.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot record lineage")

    def set_prompt(self, run_id: str, index: int, prompt: str) -> None:
        """Store the question of a PENDING ``durable_input`` call (``records.encode_prompt`` text)."""
        raise NotImplementedError(f"{type(self).__name__} cannot store durable_input prompts")

    def waiting(self, run_id: str | None = None) -> list[CallRecord]:
        """Unanswered ``durable_input`` calls (PENDING), journal order, with prompt and choices."""
        if run_id is not None:
            check_run_id(run_id, empty_ok=True)
        return self.query_calls(run_id=run_id, status=Status.PENDING, call_id=INPUT_CALL_ID)

    def answer(self, run_id: str, index: int, value: Any) -> CallRecord:
        """Answer the ``durable_input`` waiting at ``index`` of ``run_id``; returns the answered call.

        The answer is journaled SUCCEEDED with origin RESOLVED; the run stays WAITING
        until it is run again, which replays up to the answer and goes on. Refused,
        with nothing written: an unknown run, no unanswered input at ``index``, a value
        outside the input's ``choices``, a value that cannot be pickled, a run a live context
        holds (:class:`RunBusyError`).
        """
        from ..errors import RunBusyError, UnserializableResultError
        from .history import check_answer
        from .replay import settle_pending

        position = as_int(index)  # a numpy index read from store.to_pandas() too
        if not isinstance(run_id, str) or position is None:
            raise TypeError(
                f"answer(run_id, index, value) takes the run id as a str and the call index as an int, got "
                f"{run_id!r} and {index!r}; e.g. store.answer('order-42', 2, 'yes') (see store.waiting())."
            )
        index = position
        # An index past SQLite's 64-bit integers raised OverflowError from the query: no such call, said so.
        rec = self.call(run_id, index) if 0 <= index < 2**63 else None
        check_answer(run_id, index, value, self.run(run_id), rec, self.waiting(run_id), repr(self))
        assert rec is not None
        if self.run_is_open(run_id):  # it would close WAITING over an answered input, or decide it itself
            raise RunBusyError(run_id, "a live context (answer once it has stopped at the input)")
        try:
            settled = settle_pending(self, rec, value, failed=False, origin=Origin.RESOLVED)
        except UnserializableResultError as exc:  # told as an answer refused, not as a call's result
            raise UnserializableResultError(
                run_id, index, exc.call_id, exc.type_name, exc.reason, rec.prompt or "") from None
        if not settled:
            raise ValueError(
                f"the input at index {index} of run {run_id!r} was answered by someone else meanwhile: "
                f"{self.call(run_id, index)!r}"
            )
        answered = self.call(run_id, index)
        assert answered is not None
        return answered

    @property
    def journal_key(self) -> object:
        """Equal for store objects on one journal (a file, a database schema): widgets on it redraw together."""
        return id(self)

    def close(self) -> None:
        """Release connections; the store can still be reopened."""

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _durable_now() -> None:
    """The wait of a write that was durable when it returned."""
