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

Group commit needs nothing here: each thread writes on its own connection and
PostgreSQL flushes the WAL of concurrent commits together.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from .postgres_sql import Outcome

FLUSH_DELAY = 0.02
"""Seconds an outcome may wait for a next write to carry it before it is committed on its own."""


class HeldOutcomes:
    """Outcomes not committed yet, per run; ``write(outcomes)`` commits a list in one transaction."""

    def __init__(self, write: Callable[[list[Outcome]], None]) -> None:
        self._write = write
        self._cond = threading.Condition(threading.Lock())
        self._held: dict[str, list[Outcome]] = {}
        self._busy: set[str] = set()  # runs whose outcomes are being committed by flush()
        self._since: dict[str, float] = {}  # run_id -> when its oldest held outcome was held
        self._flusher: threading.Thread | None = None

    def __bool__(self) -> bool:
        return bool(self._held) or bool(self._busy)

    def hold(self, outcome: Outcome) -> None:
        with self._cond:
            self._since.setdefault(outcome.run_id, time.monotonic())
            self._held.setdefault(outcome.run_id, []).append(outcome)
            if self._flusher is None or not self._flusher.is_alive():
                self._flusher = threading.Thread(target=self._loop, name="durable_nb-pg-flush", daemon=True)
                self._flusher.start()
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
        if run_id in self._held or run_id in self._busy:
            outcomes = self.take(run_id)
            if outcomes:
                try:
                    self._write(outcomes)
                except BaseException:
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
                self._since.clear()
            else:
                old = [r for r, t in self._since.items() if t <= older_than]
                batch = {r: self._held.pop(r) for r in old if r in self._held}
                for r in old:
                    del self._since[r]
            self._busy.update(batch)
        try:
            outcomes = [o for items in batch.values() for o in items]
            if outcomes:
                self._write(outcomes)
        except BaseException:
            with self._cond:
                now = time.monotonic()
                for run_id, items in batch.items():
                    self._held[run_id] = items + self._held.get(run_id, [])
                    self._since.setdefault(run_id, now)
            raise
        finally:
            with self._cond:
                self._busy.difference_update(batch)
                self._cond.notify_all()

    def _loop(self) -> None:
        """Commit outcomes held for FLUSH_DELAY seconds with no next write to carry them."""
        while True:
            with self._cond:
                if not self._held:
                    if not self._cond.wait(timeout=5.0) and not self._held:
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
