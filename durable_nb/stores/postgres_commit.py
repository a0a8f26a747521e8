"""Held-back outcomes for :class:`~durable_nb.stores.postgres.PostgresStore` (durability ``"call"``).

Why: a commit costs a round trip and a WAL flush; the rest of a durable call far
less. The outcome of call k need only be durable before the next side effect
(call k+1's PENDING), the run's end or a durable boundary, so the store keeps it
here and commits it in the *same statement* as the next PENDING of its run, in
the run's closing transaction, before any read, on :meth:`HeldOutcomes.flush`, or
from a daemon thread once it has waited :data:`FLUSH_DELAY` seconds. A kill before
that leaves the call PENDING: exactly what a kill just before the outcome's own
commit leaves under ``"transition"``.

A held outcome is fenced by its own owner when it is committed, so an outcome of
a context whose lease was taken over is dropped (as a crash would drop it). While
one run's outcomes are being committed, a writer of that run waits
(:meth:`HeldOutcomes.take`): call k+1's PENDING can never commit before call k's
outcome.

Inside a durable boundary (:meth:`Store.boundary`: ``map``, a Flink worker) a run's
*end* is held too (:meth:`HeldOutcomes.hold_close`), with its last outcome: the
next PENDING of any run in this process commits them in its own transaction
(:meth:`HeldOutcomes.take_closing`), so a record costs one commit, not two. The
run's advisory lock is kept until its end has committed, so no other context can
open the run in between.

Group commit needs nothing here: each thread writes on its own connection and
PostgreSQL flushes the WAL of concurrent commits together.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from .postgres_sql import Outcome

FLUSH_DELAY = 0.02
"""Seconds an outcome may wait for a next write to carry it before it is committed on its own."""


Close = tuple[Any, ...]
"""Parameters of ``CLOSE``: ``(status or None, updated_at, run_id, owner)``."""
Closing = tuple[list[Outcome], Close]
"""A run whose end is held: its held outcomes, then its close."""


def closed_runs(closing: list[Closing]) -> list[str]:
    """The run ids of held run ends."""
    return [close[2] for _, close in closing]


class HeldOutcomes:
    """Outcomes (and run ends) not committed yet, per run; ``write(outcomes, closing)`` commits in one transaction."""

    def __init__(self, write: Callable[[list[Outcome], list[Closing]], None]) -> None:
        self._write_of = weakref.WeakMethod(write)
        """The store's write, weakly: the store is collected once dropped (see PostgresStore._watch)."""
        self._keep: Any = None
        """The store's write while something is held: a store dropped meanwhile commits it before it goes."""
        self._cond = threading.Condition(threading.Lock())
        self._held: dict[str, list[Outcome]] = {}
        self._closes: dict[str, Close] = {}
        self._busy: set[str] = set()  # runs whose outcomes are being committed by flush()
        self._since: dict[str, float] = {}  # run_id -> when its oldest held outcome was held
        self._flusher: threading.Thread | None = None
        self._idle = False  # the flusher waits with nothing held: only then does a new hold wake it
        self._ending = False  # the store was closed: an idle flusher ends now, not 5 s later (see end)

    def __bool__(self) -> bool:
        return bool(self._held) or bool(self._closes) or bool(self._busy)

    def hold(self, outcome: Outcome) -> None:
        with self._cond:
            self._since.setdefault(outcome.run_id, time.monotonic())
            self._held.setdefault(outcome.run_id, []).append(outcome)
            self._wake()
            if self._keep is None:
                self._keep = self._write_of()

    def hold_close(self, run_id: str, close: Close) -> None:
        """Hold the run's end (after its outcomes) for the next PENDING of this process to commit."""
        with self._cond:
            self._since.setdefault(run_id, time.monotonic())
            self._closes[run_id] = close
            self._wake()
            if self._keep is None:
                self._keep = self._write_of()

    def _wake(self) -> None:
        """Start the flusher, or wake it if it waits with nothing held.

        A flusher waiting for a held outcome's deadline is not woken: a newer one's
        deadline is later, and a thread switch per durable call costs a worker more
        than the call's own statement.
        """
        self._ending = False
        if self._flusher is None or not self._flusher.is_alive():
            self._flusher = threading.Thread(target=self._loop, name="durable_nb-pg-flush", daemon=True)
            self._flusher.start()
        elif self._idle:
            self._cond.notify_all()

    def take_closing(self) -> list[Closing]:
        """Every held run end with its outcomes, for the caller to commit with its own write.

        The runs stay busy (a reopen waits in :meth:`take`) until the caller calls
        :meth:`committed` or :meth:`put_back_closing`.
        """
        if not self._closes:
            return []
        with self._cond:
            closing = []
            for run_id in [r for r in self._closes if r not in self._busy]:
                closing.append((self._held.pop(run_id, []), self._closes.pop(run_id)))
                self._since.pop(run_id, None)
                self._busy.add(run_id)
            return closing

    def committed(self, closing: list[Closing]) -> None:
        """The run ends taken by :meth:`take_closing` are durable."""
        if closing:
            with self._cond:
                self._busy.difference_update(closed_runs(closing))
                self._cond.notify_all()

    def put_back_closing(self, closing: list[Closing]) -> None:
        """The caller's write failed: hold them again."""
        if closing:
            with self._cond:
                now = time.monotonic()
                for outcomes, close in closing:
                    run_id = close[2]
                    self._held[run_id] = outcomes + self._held.get(run_id, [])
                    self._closes[run_id] = close
                    self._since.setdefault(run_id, now)
                    self._busy.discard(run_id)
                self._cond.notify_all()

    def take(self, run_id: str) -> list[Outcome]:
        """The run's held outcomes, for the caller to commit with its own write (or put back)."""
        with self._cond:
            while run_id in self._busy:
                self._cond.wait()
            self._since.pop(run_id, None)
            return self._held.pop(run_id, [])

    def put_back(self, run_id: str, outcomes: list[Outcome]) -> None:
        """The caller's write failed: keep them for the next one (nothing is lost while the process lives)."""
        if outcomes:
            with self._cond:
                self._held[run_id] = outcomes + self._held.get(run_id, [])
                self._since.setdefault(run_id, time.monotonic())
                self._cond.notify_all()

    def flush_run(self, run_id: str) -> None:
        if run_id in self._held or run_id in self._closes or run_id in self._busy:
            outcomes = self.take(run_id)
            with self._cond:
                close = self._closes.pop(run_id, None)
            closing = [] if close is None else [(outcomes, close)]
            if outcomes or closing:
                try:
                    self._write()([] if closing else outcomes, closing)
                except BaseException:
                    if closing:
                        self.put_back_closing(closing)
                    else:
                        self.put_back(run_id, outcomes)
                    raise

    def flush(self, older_than: float | None = None) -> None:
        """Commit every held outcome now (a durable boundary), or those held since before ``older_than``."""
        if not self:
            return
        with self._cond:
            while self._busy:
                self._cond.wait()
            if older_than is None:
                batch, self._held = self._held, {}
                closes, self._closes = self._closes, {}
                self._since.clear()
            else:
                old = [r for r, t in self._since.items() if t <= older_than]
                batch = {r: self._held.pop(r) for r in old if r in self._held}
                closes = {r: self._closes.pop(r) for r in old if r in self._closes}
                for r in old:
                    del self._since[r]
            self._busy.update(batch)
            self._busy.update(closes)
        closing = [(batch.pop(r, []), close) for r, close in closes.items()]
        try:
            outcomes = [o for items in batch.values() for o in items]
            if outcomes or closing:
                self._write()(outcomes, closing)
        except BaseException:
            self.put_back_closing(closing)
            with self._cond:
                now = time.monotonic()
                for run_id, items in batch.items():
                    self._held[run_id] = items + self._held.get(run_id, [])
                    self._since.setdefault(run_id, now)
            raise
        finally:
            with self._cond:
                self._busy.difference_update(batch)
                self._busy.difference_update(closes)
                self._cond.notify_all()

    def _write(self) -> Callable[[list[Outcome], list[Closing]], None]:
        write = self._write_of()
        if write is None:  # cannot happen while something is held (_keep): nothing to commit
            raise ReferenceError("the PostgresStore was collected")
        return write

    def end(self) -> None:
        """The store was closed: an idle flusher ends now. Why: it waited 5 s first, so a service opening and
        closing a store per request (2,000 times) kept ~60 idle threads; a later hold starts a new one."""
        with self._cond:
            flusher = self._flusher
            self._ending = True
            self._cond.notify_all()
        if flusher is not None and flusher is not threading.current_thread():
            flusher.join(timeout=1.0)  # still committing (the server is slow): it ends after, by itself

    def _loop(self) -> None:
        """Commit outcomes held for FLUSH_DELAY seconds with no next write to carry them.

        With nothing held it lets go of the store (:attr:`_keep`) before it waits: a
        store the user dropped is collected then, and this thread ends with it (else
        after 5 s idle).
        """
        while True:
            with self._cond:
                keep = None
                if not self._held and not self._closes:
                    keep, self._keep = self._keep, None
            del keep  # outside the lock: the store's finalizer may run here
            with self._cond:
                if self._write_of() is None:  # collected: nothing can be held any more
                    self._flusher = None
                    return
                if not self._held and not self._closes and self._ending:
                    self._flusher = None
                    return
                if not self._held and not self._closes:
                    self._idle = True
                    try:
                        woken = self._cond.wait(timeout=5.0)
                    finally:
                        self._idle = False
                    if not woken and not self._held and not self._closes:
                        self._flusher = None
                        return
                    continue
                oldest = min(self._since.values(), default=time.monotonic())
                wait = oldest + FLUSH_DELAY - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
            try:
                self.flush(older_than=time.monotonic() - FLUSH_DELAY)
            except Exception:
                time.sleep(FLUSH_DELAY * 10)  # server down: still held; the next write reports it
