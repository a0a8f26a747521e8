"""What a store does to whole runs: fork them, prune them, answer their inputs.

The rules (which runs a ``prune`` removes, when a ``fork`` is refused, which
answers an input accepts) live here once; each store only runs them inside its
own transaction, so PostgresStore and SqliteStore cannot drift apart.

Decisions, documented in README "Time travel":

* **Fork refuses to copy a PENDING call.** A PENDING call was in flight when the
  run stopped: its side effect may have happened. Copying it would let both the
  original and the fork recover it (two charges). Resolve it first (run the
  original, ReconcilePanel, ``store.answer`` for an input), or fork at its index
  so the fork runs that call afresh, knowingly.
* **A fork starts RUNNING with no owner** (attempts 0): a run stopped at call
  ``at``, which the next ``runner.run(..., run_id=new_id)`` continues. ``prune``
  leaves it alone like any unfinished run.
* **A generated fork id is never given twice in one journal**, not even after the fork
  was pruned or forgotten: a reconciler or an external system that dedupes by run id
  (a payments ledger keyed by run id and call index) would take the new fork's side
  effect for the old one's. Each store keeps the last number it generated per forked
  run (:func:`fork_seq_key`; it stays when the parent is pruned, as a run may be
  started again under the same id) and goes on after it and after any existing
  ``<run_id>.fork-<n>`` (a journal written before the number was kept).
* **Numbers of runs opened by id follow the same rule** (:meth:`Store.keep_number`): the
  highest number of a named sequence used is kept in the journal (:func:`sequence_key`)
  before the run is opened, and stays when the run goes. A ``%%durable`` cell's attempts
  (``base``, ``base#2`` ...) are numbered so (:mod:`durable_nb.notebook.runids`). Keeping is
  idempotent (the highest stays): two kernels starting one attempt at once choose one id,
  and the second finds the first's run (``RunBusyError``), as before numbers were kept.
* **prune's "recent"/"older" use ``updated_at``** (the run's last activity); the
  ``keep_last`` most recent are counted over every run in the store, not only the
  ones of ``status``; a run held open by a live process is never removed, even
  with ``include_pending=True``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from ..errors import RunNotFoundError, check_run_id
from .lease import owner_is_alive
from .queries import as_int
from .records import CallRecord, RunRecord, RunStatus, Status, type_name

# ---------------------------------------------------------------- fork


def check_fork_args(run_id: Any, at: Any, new_run_id: Any) -> int:
    """Type checks made before a store is touched; ``at`` as a plain int.

    Any integer ``at`` is taken (``operator.index``), not only ``int``: an index read from
    ``store.to_pandas()`` or ``report.to_pandas()`` is a ``numpy.int64``, and refusing it
    made the obvious "fork at the failed call" from a DataFrame fail.
    """
    check_run_id(run_id)
    index = as_int(at)
    if index is None:
        raise TypeError(f"at must be a call index (int), got {type(at).__name__} {at!r}")
    if new_run_id is not None:  # None: a generated id
        check_run_id(new_run_id, "new_run_id")
    return index


@dataclass(frozen=True)
class FreshHead:
    """Call 0 of a fork written afresh, PENDING, instead of copied: the fork of a ``%%durable`` cell.

    A cell's call 0 is the cell itself: copied finished, it would make the cell replay as
    a whole. Its fork keeps call 0 open (as a crash leaves it) and copies calls
    ``1..at-1``; :meth:`Store.fork_reopened` writes all of it, lineage included, in the
    fork's one transaction, so a process killed while forking leaves either no fork or
    the whole fork, never a prefix whose next run would execute calls meant to replay.
    """

    call_id: str
    args_digest: str
    parent_run_id: str | None = None
    """The lineage to record (None: the forked run), for a fork moved to another run id."""
    forked_at: int | None = None

    def first_call(self, run_id: str, now: float) -> CallRecord:
        return CallRecord.pending(run_id, 0, self.call_id, self.args_digest, now)


def fork_row(head: FreshHead | None, run_id: str, at: int) -> tuple[str, int, int]:
    """``(parent_run_id, forked_at, attempts)`` of a fork's run row, the same on every store.

    A plain fork records ``(run_id, at)`` and was never opened; a cell's fork (``head``)
    records the lineage ``head`` gives, else the same, and counts as opened once.
    """
    if head is None:
        return run_id, at, 0
    return head.parent_run_id or run_id, at if head.forked_at is None else head.forked_at, 1


PRUNE_BATCH = 1000
"""Runs a prune deletes per transaction, on every store: each batch's runs stay locked until it commits, and
locks are bounded (PostgreSQL's shared lock table; on SQLite every OS lock call walks the file's lock list)."""


def prune_batches(selected: list[RunRecord]) -> Iterator[list[RunRecord]]:
    """``selected`` in batches of :data:`PRUNE_BATCH`, in order."""
    for start in range(0, len(selected), PRUNE_BATCH):
        yield selected[start:start + PRUNE_BATCH]


def fork_prefix(run_id: str) -> tuple[str, str]:
    """``(low, high)``: the run ids ``low <= id < high`` are those starting ``<run_id>.fork-`` (an index range)."""
    return f"{run_id}.fork-", f"{run_id}.fork."


def fork_seq_key(run_id: str) -> str:
    """The ``meta`` key (SqliteStore, PostgresStore) of the last fork number generated for ``run_id``."""
    return f"fork_seq:{run_id}"


FORK_DIGITS = 18
"""Most digits of a fork number: more is no number a store gave (it counts from 1), so it is not one."""


def _fork_count(text: str) -> int | None:
    """``text`` as a fork number, None if it is not one (empty, not ASCII digits, more than :data:`FORK_DIGITS`).

    Why the bound: a meta value edited by hand, or a run named ``r.fork-`` and 5,000 digits, failed every fork
    of ``r`` with Python's "Exceeds the limit (4300 digits) for integer string conversion".
    """
    return int(text) if 0 < len(text) <= FORK_DIGITS and text.isascii() and text.isdigit() else None


def fork_number(run_id: str, new_id: str) -> int | None:
    """n when ``new_id`` is ``<run_id>.fork-<n>`` or a run named after it (``<run_id>.fork-<n>.fork-1``)."""
    low, _ = fork_prefix(run_id)
    if not new_id.startswith(low):
        return None
    tail = new_id[len(low):]
    digits = len(tail) - len(tail.lstrip("0123456789"))
    return _fork_count(tail[:digits])


def forks_issued(run_id: str, recorded: Any, existing: Iterable[str]) -> int:
    """The highest fork number of ``run_id`` given out: the one kept (``recorded``), or seen in ``existing`` ids.

    ``recorded`` is the kept value as read (a ``meta`` text, None when never kept); one that is not a number
    (edited by hand) counts as none, the existing ids still keep the numbers in use.
    """
    seen = (fork_number(run_id, rid) for rid in existing)
    return max([number_kept(recorded), *(n for n in seen if n is not None)])


def number_kept(recorded: Any) -> int:
    """The last number a journal kept as given (a ``meta`` text as read; None, never kept, is 0).

    One that is not a number (edited by hand) counts as none: the run ids still in the journal
    (``existing``, ``after``) keep the numbers in use.
    """
    return _fork_count(str(recorded)) or 0


def sequence_key(sequence: Any) -> str:
    """The ``meta`` key (SqliteStore, PostgresStore) of the highest number :meth:`Store.keep_number` kept.

    A sequence is named by a non-empty str (anything else is a TypeError, before a store is touched); a str
    subclass (``numpy.str_`` read from a DataFrame) names the same sequence as its plain str, as run ids do.
    """
    if not isinstance(sequence, str) or not sequence:
        raise TypeError(f"sequence must be a non-empty str, got {type(sequence).__name__} {sequence!r:.200}")
    return "issued:" + str.__str__(sequence)


def check_number(number: Any) -> int:
    """``keep_number``'s number as a plain int, 1 or more, of at most :data:`FORK_DIGITS` digits.

    Why the bound: a kept number is read back as a number only up to that many digits (:func:`number_kept`),
    so a longer one was kept, then read as none: ``last_number`` fell to 0 and the numbers kept before it were
    lost, letting an attempt id be given twice. Refused instead, before the store is touched.
    """
    value = as_int(number)
    if value is None or value < 1 or value >= 10**FORK_DIGITS:
        # repr of an int over 4,300 digits raises ValueError itself: name its size instead
        size = 0 if value is None else abs(value).bit_length()
        got = f"an integer of about {int(size * 0.30103) + 1} digits" if size >= 60 else f"{number!r:.200}"
        raise ValueError(f"number must be an integer 1 or more, of at most {FORK_DIGITS} digits, got {got}")
    return value


def check_fork(
    run_id: str, at: int, new_run_id: str | None, calls: list[CallRecord] | None, exists: Callable[[str], bool],
    where: str = "", head: FreshHead | None = None, issued: int = 0,
) -> str:
    """Validate a fork against the parent's calls (None: no such run); return the new run id.

    With ``head`` (a cell fork) call 0 is written afresh, not copied: it may be PENDING, and ``at`` is 1 or more.
    A generated id takes the number after ``issued`` (:func:`forks_issued`), so none is given twice.
    """
    if calls is None:
        raise RunNotFoundError(run_id, where, "Fork an existing run: see store.runs().")
    low = 0 if head is None else 1
    if not low <= at <= len(calls):
        raise ValueError(
            f"cannot fork run {run_id!r} at call {at}: it has {len(calls)} calls, so `at` must be in "
            f"{low}..{len(calls)} (at={low} copies nothing, at={len(calls)} copies every call)."
        )
    for rec in calls[low:at]:
        if rec.status is Status.PENDING:
            what = "an unanswered durable_input" if rec.is_input else "in flight when the run stopped"
            raise ValueError(
                f"cannot fork run {run_id!r} at call {at}: call {rec.index} ({rec.call_id!r}) is PENDING "
                f"({what}), and copying it would let two runs recover the same side effect. Resolve it "
                f"first (run the original again, ReconcilePanel, or store.answer for an input), or fork "
                f"at={rec.index} so that the fork runs that call again."
            )
    if new_run_id is None:
        n = issued + 1
        while exists(f"{run_id}.fork-{n}"):
            n += 1
        return f"{run_id}.fork-{n}"
    if exists(new_run_id):
        raise fork_id_taken(run_id, new_run_id)
    return new_run_id


def fork_id_taken(run_id: str, new_run_id: str) -> ValueError:
    return ValueError(
        f"cannot fork run {run_id!r} into {new_run_id!r}: a run with that id exists. Pick another "
        f"new_run_id, leave it out for a generated one, or prune/forget the old run first."
    )


def forked_calls(calls: Iterable[CallRecord], new_run_id: str) -> list[CallRecord]:
    """The copies a fork gets: same index, ids, outcomes, payloads and times, under the new run id."""
    return [
        CallRecord(
            new_run_id, c.index, c.call_id, c.args_digest, c.status, c.origin, c.result_preview,
            c.error_preview, c.started_at, c.finished_at, c.payload, c.prompt, c.choices,
        )
        for c in calls
    ]


# ---------------------------------------------------------------- prune

_UNFINISHED = (RunStatus.RUNNING, RunStatus.WAITING)


@dataclass(frozen=True)
class PruneRule:
    """The validated filters of one ``prune`` call."""

    older_than: timedelta | None = None
    keep_last: int | None = None
    status: frozenset[RunStatus] | None = None
    include_pending: bool = False

    @classmethod
    def make(
        cls,
        older_than: timedelta | None = None,
        keep_last: int | None = None,
        status: RunStatus | str | Collection[RunStatus | str] | None = None,
        include_pending: bool = False,
    ) -> PruneRule:
        if older_than is not None:
            if not isinstance(older_than, timedelta):
                raise TypeError(
                    f"older_than must be a datetime.timedelta (e.g. timedelta(days=30)), "
                    f"got {type(older_than).__name__} {older_than!r}"
                )
            if older_than < timedelta(0):
                raise ValueError(f"older_than must not be negative, got {older_than!r}")
        if keep_last is not None:
            count = as_int(keep_last)
            if count is None:
                raise TypeError(
                    f"keep_last must be an int >= 0 or None, got {type(keep_last).__name__} {keep_last!r}")
            keep_last = count
        if keep_last is not None and keep_last < 0:
            raise ValueError(f"keep_last must be >= 0 (0 keeps none), got {keep_last}")
        check_flag("include_pending", include_pending)
        return cls(older_than, keep_last, _statuses(status), include_pending)

    def select(
        self,
        runs: list[RunRecord],
        with_pending: Collection[str],
        now: float | None = None,
        is_open: Callable[[RunRecord], bool] | None = None,
    ) -> list[RunRecord]:
        """The runs to remove, oldest first (``runs`` in any order).

        ``is_open(record)`` says whether a live context holds the run (default: its
        recorded owner is alive); asked only for runs every filter selected.
        """
        now = time.time() if now is None else now
        held = is_open or (lambda run: owner_is_alive(run.owner))
        order = sorted(range(len(runs)), key=lambda i: (runs[i].updated_at, i))
        recent: set[int] = set()
        if self.keep_last:
            recent = set(order[-self.keep_last:])
        chosen = []
        for i in order:
            run = runs[i]
            if i in recent:
                continue
            if self.older_than is not None and run.updated_at > now - self.older_than.total_seconds():
                continue
            if self.status is not None and run.status not in self.status:
                continue
            if not self.include_pending and (run.status in _UNFINISHED or run.run_id in with_pending):
                continue
            if held(run):
                continue  # a live context is writing it: removing rows under it would corrupt its run
            chosen.append(run)
        return chosen


def _statuses(status: Any) -> frozenset[RunStatus] | None:
    if status is None:
        return None
    try:
        items = [status] if isinstance(status, str) else list(status)
        chosen = frozenset(RunStatus(s) for s in items)
    except (ValueError, TypeError):
        chosen = frozenset()
    if not chosen:  # an empty collection would silently match nothing
        raise ValueError(
            f"status must be a run status or a non-empty collection of them, one of "
            f"{[s.value for s in RunStatus]}; got {status!r}"
        )
    return chosen


def check_flag(name: str, value: Any) -> None:
    """A switch that changes what is deleted takes True or False only: ``"no"`` must not mean yes."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {type(value).__name__} {value!r}")


# ---------------------------------------------------------------- answer


def check_answer(run_id: str, index: int, value: Any, run: RunRecord | None, rec: CallRecord | None,
                 waiting: list[CallRecord], where: str = "") -> None:
    """Refuse an answer that does not answer a waiting ``durable_input``; nothing is written."""
    if run is None:
        raise RunNotFoundError(run_id, where, "Answer a waiting input: see store.waiting().")
    open_ones = ", ".join(f"index {c.index} ({c.prompt!r})" for c in waiting) or "none"
    if rec is None or not rec.is_input:
        what = "no call" if rec is None else f"call {rec.call_id!r}, not a durable_input"
        raise ValueError(
            f"run {run_id!r} has {what} at index {index}; its inputs waiting for an answer: {open_ones}."
        )
    if rec.status is not Status.PENDING:
        raise ValueError(
            f"the input at index {index} of run {run_id!r} ({rec.prompt!r}) was already answered "
            f"({rec.result_preview}); fork the run at={index} to answer it differently."
        )
    if rec.prompt is None:
        raise ValueError(
            f"the input at index {index} of run {run_id!r} has no question on record: the run stopped (a crash) "
            f"after the input began and before its prompt and choices were journaled, so no answer can be "
            f"checked against them. Run the action (or the cell) again: it asks again and waits, then answer."
        )
    if rec.choices is not None and not any(is_choice(value, c) for c in rec.choices):
        raise ValueError(
            f"{value!r} is not one of the choices of input {index} of run {run_id!r} ({rec.prompt!r}): "
            f"{', '.join(f'{c!r} ({type_name(c)})' for c in rec.choices)}; got {type_name(value)}. Answer "
            f"with one of them, of the same type (True is not 1, 1.0 is not 1; .item() makes a numpy value plain)."
        )


def is_choice(value: Any, choice: Any) -> bool:
    """Equal and of the same type: ``in`` would take True for 1, 1.0 for 1, and a numpy array for anything."""
    if type(value) is not type(choice):  # before ==, which a numpy value answers with an array
        return False
    return bool(value == choice) or (value != value and choice != choice)  # a NaN choice can be answered too
