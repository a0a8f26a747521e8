"""A journal in this process's memory: for tests, demos and replay-only experiments.

It behaves like :class:`SqliteStore` (payloads are stored pickled, so a replay
returns a copy, not the object the call returned) but survives nothing: not a
kernel restart, not a crash. ``memory://NAME`` gives a store shared by name
within the process.
"""

from __future__ import annotations

import dataclasses
import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..errors import LeaseLostError, RunBusyError, check_run_id
from ..journal.history import (
    FreshHead,
    PruneRule,
    check_fork,
    fork_number,
    fork_row,
    fork_seq_key,
    forked_calls,
    forks_issued,
    number_kept,
)
from ..journal.lease import Lease, describe_owner, end_owner
from ..journal.queries import check_page, check_prefix, check_status
from ..journal.records import (
    CallRecord,
    DiscardedCall,
    Origin,
    Outcome,
    RunRecord,
    RunStatus,
    Status,
    decode_prompt,
)
from ..journal.store import Store


@dataclass
class _Run:
    status: RunStatus
    created_at: float
    updated_at: float
    attempts: int = 0
    owner: str | None = None
    calls: list[CallRecord] = field(default_factory=list)
    seqs: list[int] = field(default_factory=list)
    n_discarded: int = 0
    parent_run_id: str | None = None
    forked_at: int | None = None


class MemoryStore(Store):
    """A journal held in a dict; thread-safe, not durable, not shareable with other processes."""

    _named: ClassVar[dict[str, MemoryStore]] = {}
    _named_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self) -> None:
        self._runs: dict[str, _Run] = {}
        self._discarded: list[DiscardedCall] = []
        self._seq = itertools.count()
        self._lock = threading.RLock()
        self.name: str | None = None
        self._holders: dict[str, str] = {}
        self._leases: dict[str, Lease] = {}
        self._numbers: dict[str, int] = {}  # meta's numbers: a fork's or a sequence's last, never given again

    @classmethod
    def named(cls, name: str) -> MemoryStore:
        """The process-wide store called ``name`` (``memory://name``)."""
        with cls._named_lock:
            store = cls._named.get(name)
            if store is None:
                store = cls._named[name] = cls()
                store.name = name
            return store

    def __repr__(self) -> str:
        return f"MemoryStore({self.name!r})" if self.name else "MemoryStore()"

    def __reduce__(self) -> Any:
        raise TypeError(
            "a MemoryStore lives in one process and cannot be sent to other processes (Flink workers, "
            "subprocesses); use SqliteStore('path/to/journal.db') so that they can reach the journal."
        )

    # -- reading ------------------------------------------------------------------

    def _record(self, run_id: str, run: _Run) -> RunRecord:
        return RunRecord(
            run_id, run.status, run.created_at, run.updated_at, run.attempts, len(run.calls),
            run.n_discarded, run.owner, run.parent_run_id, run.forked_at,
        )

    def runs(self) -> list[RunRecord]:
        with self._lock:
            return [self._record(k, r) for k, r in self._runs.items()]

    def run(self, run_id: str) -> RunRecord | None:
        check_run_id(run_id, empty_ok=True)
        with self._lock:
            run = self._runs.get(run_id)
            return self._record(run_id, run) if run else None

    def run_ids_with_prefix(self, prefix: str) -> list[str]:
        check_prefix(prefix)
        with self._lock:
            return sorted(k for k in self._runs if k.startswith(prefix))

    def runs_with_prefix(self, prefix: str) -> list[RunRecord]:
        check_prefix(prefix)
        with self._lock:
            return [self._record(k, self._runs[k]) for k in sorted(k for k in self._runs if k.startswith(prefix))]

    def calls(self, run_id: str) -> list[CallRecord]:
        check_run_id(run_id, empty_ok=True)
        with self._lock:
            run = self._runs.get(run_id)
            return list(run.calls) if run else []

    def discarded(self, run_id: str | None = None) -> list[DiscardedCall]:
        with self._lock:
            return [d for d in self._discarded if run_id is None or d.run_id == run_id]

    def _matching(
        self, run_id: str | None, status: Status | str | None, call_id: str | None, not_call_id: str | None = None
    ) -> list[CallRecord]:
        st = check_status(status)

        def wanted(c: CallRecord) -> bool:
            return ((st is None or c.status.value == st) and (call_id is None or c.call_id == call_id)
                    and (not_call_id is None or c.call_id != not_call_id))

        with self._lock:
            if run_id is not None:
                run = self._runs.get(run_id)
                return [c for c in run.calls if wanted(c)] if run else []
            # Filtered before sorting, under the lock the map's writes wait on: a ReconcilePanel or a live
            # JournalView asking for the PENDING calls of 1,000,000 sorted every call of the store each time.
            pairs = [pair for r in self._runs.values() for pair in zip(r.seqs, r.calls, strict=True) if wanted(pair[1])]
        pairs.sort(key=lambda p: p[0])
        return [c for _, c in pairs]

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
        offset, limit = check_page(offset, limit)
        found = self._matching(run_id, status, call_id, not_call_id)
        end = None if limit is None else offset + limit
        return [dataclasses.replace(c, payload=None, payload_left_out=True) for c in found[offset:end]]

    def count_calls(
        self, *, run_id: str | None = None, status: Status | str | None = None, call_id: str | None = None,
        not_call_id: str | None = None,
    ) -> int:
        if run_id is None and status is None and call_id is None and not_call_id is None:  # no order needed
            with self._lock:
                return sum(len(r.calls) for r in self._runs.values())
        return len(self._matching(run_id, status, call_id, not_call_id))

    # -- writing ----------------------------------------------------------------------

    def open_run(self, run_id: str, owner: str, *, steal: bool = False) -> list[CallRecord]:
        with self._lock:
            holder = self._holders.get(run_id)
            if holder is not None and not steal:
                end_owner(owner)
                raise RunBusyError(run_id, describe_owner(holder))
            old = self._leases.get(holder) if holder is not None else None
            if old is not None:
                old.lost = f"the run was taken over by {describe_owner(owner)} (steal=True)"
            self._holders[run_id] = owner
            run = self._runs.get(run_id)
            lease = Lease(run_id, owner, run.attempts if run else None, seen_status=run.status.value if run else None)
            self._leases[owner] = lease
            if old is not None:
                self._fence(lease, time.time())
            return list(run.calls) if run else []

    def run_is_open(self, run_id: str) -> bool:
        return run_id in self._holders

    def _lease(self, owner: str | None, run_id: str) -> Lease | None:
        """The writer's lease (fenced: LeaseLostError, nothing written, if it may no longer write)."""
        if owner is None:
            return None
        lease = self._leases.get(owner)
        if lease is None:
            raise LeaseLostError(run_id, describe_owner(owner), "its context has ended (the run was closed)")
        if lease.lost:
            raise LeaseLostError(run_id, describe_owner(owner), lease.lost)
        return lease

    def _fence(self, lease: Lease | None, now: float) -> None:
        """Take the run at the lease's first write (folded into it), then check it is still ours."""
        if lease is None:
            return
        run = self._runs.get(lease.run_id)
        if run is not None and run.owner == lease.owner:
            return
        if not lease.wrote and (run.attempts if run else None) == lease.seen_attempts:
            if run is None:
                run = self._runs[lease.run_id] = _Run(RunStatus.RUNNING, now, now)
            run.status, run.updated_at, run.owner = RunStatus.RUNNING, now, lease.owner
            run.attempts += 1
            lease.wrote = lease.dirty = True
            return
        reason = f"the run was taken over by {describe_owner(run.owner)}" if run and run.owner else (
            "another context recovered the run meanwhile")
        raise LeaseLostError(lease.run_id, describe_owner(lease.owner), reason)

    def close_run(self, run_id: str, owner: str, status: RunStatus | None) -> None:
        with self._lock:
            lease = self._leases.pop(owner, None)
            if self._holders.get(run_id) == owner:
                del self._holders[run_id]
            if lease is None or lease.lost:
                return
            value = None if status is None else RunStatus(status)
            if not lease.dirty and (value is None or value.value == lease.seen_status):
                return  # a replay that changed nothing writes nothing
            self._fence(lease, time.time())
            run = self._runs[run_id]
            if run.owner == owner:
                if value is not None:
                    run.status = value
                run.updated_at, run.owner = time.time(), None

    def append_pending(
        self, run_id: str, index: int, call_id: str, args_digest: str, started_at: float, *, owner: str | None = None
    ) -> None:
        with self._lock:
            self._fence(self._lease(owner, run_id), time.time())
            run = self._runs[run_id]
            if index != len(run.calls):
                raise RuntimeError(f"run {run_id!r}: call index {index} is taken")
            run.calls.append(
                CallRecord(run_id, index, call_id, args_digest, Status.PENDING, None, None, None, started_at, None)
            )
            run.seqs.append(next(self._seq))

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
        with self._lock:
            self._fence(self._lease(owner, run_id), time.time())
            run = self._runs.get(run_id)
            if run is None or index >= len(run.calls):
                return False
            old = run.calls[index]
            if only_if_pending and old.status is not Status.PENDING:
                return False
            # Positional construction: dataclasses.replace was a third of this store's per-call cost.
            run.calls[index] = CallRecord(
                old.run_id, old.index, old.call_id, old.args_digest, Status(outcome.status), Origin(origin),
                outcome.result_preview, outcome.error_preview, old.started_at, finished_at, outcome.payload,
                old.prompt, old.choices,
            )
            if owner is None:  # an answer or a reconciled outcome: the run's last activity (prune --older-than)
                run.updated_at = max(run.updated_at, finished_at)
            return True

    def discard_from(self, run_id: str, index: int, reason: str, at: float, *, owner: str | None = None) -> None:
        with self._lock:
            self._fence(self._lease(owner, run_id), time.time())
            run = self._runs[run_id]
            dropped = run.calls[index:]
            for c in dropped:
                self._discarded.append(
                    DiscardedCall(
                        c.run_id, c.index, c.call_id, c.args_digest, c.status, c.origin,
                        c.result_preview, c.error_preview, c.started_at, c.finished_at, at, reason,
                    )
                )
            del run.calls[index:], run.seqs[index:]
            run.n_discarded += len(dropped)

    def delete_run(self, run_id: str) -> None:
        check_run_id(run_id, empty_ok=True)  # an int deleted nothing, silently, where SQLite failed
        with self._lock:
            if run_id in self._holders:
                raise RunBusyError(run_id, describe_owner(self._holders[run_id]))
            self._runs.pop(run_id, None)
            self._discarded = [d for d in self._discarded if d.run_id != run_id]

    # -- time travel (rules in journal/history.py) ------------------------------------

    def _fork(self, run_id: str, at: int, new_run_id: str | None, now: float, head: FreshHead | None = None) -> str:
        with self._lock:
            parent = self._runs.get(run_id)
            issued = forks_issued(run_id, self._numbers.get(fork_seq_key(run_id)), self._runs)
            new_id = check_fork(
                run_id, at, new_run_id, None if parent is None else parent.calls, self._runs.__contains__, repr(self),
                head, issued,
            )
            assert parent is not None
            self._numbers[fork_seq_key(run_id)] = max(issued, fork_number(run_id, new_id) or 0)
            copies = forked_calls(parent.calls[:at], new_id)
            if head is not None:
                copies[0] = head.first_call(new_id, now)
            parent_run_id, forked_at, attempts = fork_row(head, run_id, at)
            self._runs[new_id] = _Run(
                RunStatus.RUNNING, now, now, attempts=attempts, calls=copies,
                seqs=[next(self._seq) for _ in copies], parent_run_id=parent_run_id, forked_at=forked_at,
            )
            return new_id

    def _kept(self, key: str) -> Any:
        return self._numbers.get(key)

    def _keep(self, key: str, number: int) -> None:
        with self._lock:
            self._numbers[key] = max(number_kept(self._numbers.get(key)), number)

    def _prune(self, rule: PruneRule, now: float) -> list[RunRecord]:
        with self._lock:
            with_pending = {
                k for k, r in self._runs.items() if any(c.status is Status.PENDING for c in r.calls)
            }
            chosen = rule.select(self.runs(), with_pending, now, self._open_as_read)
            gone = {r.run_id for r in chosen}
            for run_id in gone:
                del self._runs[run_id]
            self._discarded = [d for d in self._discarded if d.run_id not in gone]
            return chosen

    def set_lineage(self, run_id: str, parent_run_id: str, forked_at: int) -> None:
        with self._lock:
            run = self._runs[run_id]
            run.parent_run_id, run.forked_at = parent_run_id, forked_at

    def set_prompt(self, run_id: str, index: int, prompt: str) -> None:
        with self._lock:
            run = self._runs[run_id]
            old = run.calls[index]
            text, choices = decode_prompt(prompt)
            run.calls[index] = dataclasses.replace(old, prompt=text, choices=choices)
