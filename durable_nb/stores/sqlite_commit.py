"""Group commit and held-back outcomes for :class:`~durable_nb.stores.sqlite.SqliteStore`.

Why: an fsync costs hundreds of microseconds, the rest of a durable call tens.
So the store pays as few fsyncs as the rules allow:

* **Group commit.** Every write is an *op* (a function run inside a write
  transaction). A caller queues its op; the first caller that finds nobody
  committing becomes the leader, runs every queued op in one ``BEGIN IMMEDIATE``
  ... ``COMMIT`` (one fsync), and wakes the others. Each caller returns only
  after the transaction holding its own op committed. An op that fails (a lost
  lease) is set aside, its caller gets the error, and the others commit.
* **Held-back ops** (durability ``"call"``). The outcome of call k need only be
  durable before the next side effect (call k+1's PENDING), the run's end or a
  durable boundary. :meth:`Committer.hold` keeps such an op in memory; the next
  commit of *any* op of this store carries it (so the next PENDING commits it),
  :meth:`Committer.flush` commits it now, and a daemon thread flushes it after
  :attr:`Committer.delay` seconds when nothing else comes. A kill before that
  leaves the call PENDING: exactly what a kill just before the outcome's own
  commit leaves under ``"transition"``.
* **Queue, then wait** (:meth:`Committer.queue`, :meth:`Committer.wait`): a PENDING
  is queued in index order under the journal's lock and waited for outside it, so
  calls gathered in one context share a commit.
* **A write turn** (``turn``: the file's ``FileLocks``) orders processes writing
  one journal by a blocking OS lock, not SQLite's sleeping busy handler.
* **Through the intent log** (``via_log``, durability ``"call"``): a batch whose ops
  are all transitions of runs this process holds is appended to the log
  (:mod:`.sqlite_intent`) instead: one fdatasync, SQLite written later. Any other
  batch is a synced transaction, which first applies what the log holds
  (``on_begin``).

Over 400 lines because the queue, the held-back ops, their flusher and the log
path share one lock and one protocol for waiting callers; split, each part would
have to reach into the others' state.
"""

from __future__ import annotations

import atexit
import logging
import os
import sqlite3
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol

Op = Callable[[sqlite3.Connection, list[Callable[[], None]]], Any]
"""``op(conn, after)``: do the writes; append to ``after`` what must happen once they committed."""
ViaLog = Callable[[list[Op]], "list[BaseException | None] | None"]
"""Append the ops to the intent log: each op's error (None: durable), or None if they must be a transaction."""


class WriteTurn(Protocol):
    """Waits for and gives back the file's write turn around one write transaction."""

    def begin_write(self) -> None: ...

    def end_write(self) -> None: ...

_log = logging.getLogger("durable_nb")
_live: weakref.WeakSet[Committer] = weakref.WeakSet()


at_exit: list[Callable[[], None]] = []
"""What runs at exit once every held-back write is committed (the intent logs are applied and removed)."""


@atexit.register
def _flush_at_exit() -> None:
    """A normal interpreter exit is a durable boundary: commit what is still held back.

    Not a forked child's copies of its parent's committers: their held ops are the parent's to commit
    (under its leases), and one copied while the parent's flusher was inside its commit names a carrier
    thread the child does not have, so :meth:`Committer.flush` waited for it forever (the child never exited).
    """
    pid = os.getpid()
    for committer in list(_live):
        if committer.pid != pid:
            continue
        try:
            committer.flush()
        except Exception as exc:
            _log.warning("durable_nb: could not flush held-back journal writes at exit: %s", exc)
    for hook in at_exit:
        hook()


@contextmanager
def write_transaction(conn: sqlite3.Connection, turn: WriteTurn | None) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` in the file's write turn; ``COMMIT`` at the end, ``ROLLBACK`` on any error."""
    if turn is not None:
        turn.begin_write()
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    finally:
        if turn is not None:
            turn.end_write()


class _Retry(Exception):
    """One op failed and was set aside: run the transaction again without it."""


class _Failed(Exception):
    """Nothing could commit; every caller has its error."""


class _Waiter:
    __slots__ = ("done", "error", "op", "result")

    def __init__(self, op: Op | None) -> None:
        self.op = op
        self.done = False
        self.result: Any = None
        self.error: BaseException | None = None


class Committer:
    """One per store object and process: the queue of writes and the held-back ops."""

    def __init__(
        self,
        connect: Callable[[], sqlite3.Connection],
        on_begin: Callable[[sqlite3.Connection, list[Callable[[], None]]], None],
        delay: float = 0.02,
        on_commit: Callable[[], None] | None = None,
        turn: WriteTurn | None = None,
        via_log: ViaLog | None = None,
    ) -> None:
        self._turn = turn
        self._via_log = via_log
        self._connect = connect
        self._on_begin = on_begin
        self._on_commit = on_commit
        self.delay = delay
        lock = self._lock = threading.Lock()  # `with self._lock` where no wait: Condition.__enter__ is Python
        self._cond = threading.Condition(lock)
        # The flusher waits on its own condition (same lock): a commit wakes only the callers
        # queued behind it; the flusher ticks instead of being woken by each held op (see _flush_loop).
        self._flush_cond = threading.Condition(lock)
        self._waiting = 0
        self._queue: list[_Waiter] = []
        self._carrier: threading.Thread | None = None
        """The thread committing now (None: no commit runs): the held and queued ops it took are neither held nor
        durable until it is done, so a boundary or a read of another thread waits for it (:meth:`flush`)."""
        self._held: list[tuple[str, Op]] = []
        self._held_since = 0.0
        self.held_runs: Counter[str] = Counter()
        self._flusher: threading.Thread | None = None
        self._closed = False
        self.pid = os.getpid()
        """The process that made it: a forked child's copy is its parent's (:func:`_flush_at_exit`)."""
        self.fenced: set[str] = set()
        """Lease owners already fenced in the current write transaction (one check each per commit)."""
        _live.add(self)

    # -- committing -------------------------------------------------------------------

    def run(self, op: Op | None) -> Any:
        """Commit ``op`` (and every held op) and return its result once durable."""
        return self.wait(self.queue(op))

    def queue(self, op: Op | None) -> _Waiter:
        """Queue ``op``: batches commit queued ops in queue order, so a later op is never durable first."""
        me = _Waiter(op)
        with self._lock:
            self._queue.append(me)
        return me

    def wait(self, me: _Waiter) -> Any:
        """Commit the queue (or wait for the caller that is committing it) until ``me`` is durable."""
        cond = self._cond
        with self._lock:
            while not me.done:
                if self._carrier is not None:
                    self._wait(cond)
                    continue
                self._carrier = threading.current_thread()  # before the ops leave the lists
                batch, self._queue = self._queue, []
                held, self._held = self._held, []
                cond.release()
                try:
                    self._commit(batch, held)
                finally:
                    cond.acquire()
                    self._carrier = None
                    for w in batch:
                        w.done = True
                    if self._waiting:
                        cond.notify_all()
        if me.error is not None:
            raise me.error
        return me.result

    def _commit(self, batch: list[_Waiter], held: list[tuple[str, Op]]) -> None:
        """Run the held ops and the batch in one transaction.

        No savepoints on the hot path: if one op fails (a lost lease), the transaction
        is rolled back, that op is set aside (its caller gets the error, a held op is
        dropped as a crash would drop it) and the others run again.
        """
        todo = [w for w in batch if w.op is not None]
        if self._via_log is not None and (held or todo) and self._logged(batch, held, todo):
            return
        turn = self._turn
        while True:
            after: list[Callable[[], None]] = []
            if turn is not None:
                turn.begin_write()
            try:
                self._transaction(batch, held, todo, after)
            except _Retry:
                continue
            except _Failed:
                return
            finally:
                if turn is not None:
                    turn.end_write()
            break
        self._committed(held, after)

    def _committed(self, held: list[tuple[str, Op]], after: list[Callable[[], None]]) -> None:
        """After a commit, while still the only committer: a hook marks a lease as having taken its run
        (lease.wrote); the next commit must see that, or its log frame takes the run once more with a
        stale attempts count, and applying it drops that context's transitions."""
        if self._on_commit is not None:
            self._on_commit()
        self._release(held)
        for hook in after:
            hook()

    def _logged(self, batch: list[_Waiter], held: list[tuple[str, Op]], todo: list[_Waiter]) -> bool:
        """Commit through the intent log if every op can go there; False: nothing done, use a transaction."""
        assert self._via_log is not None
        try:
            errors = self._via_log([op for _, op in held] + [w.op for w in todo])  # type: ignore[misc]
        except BaseException as exc:  # the append failed: nothing of it counts
            self._fail(batch, held, exc)
            return True
        if errors is None:
            return False
        for w, error in zip(todo, errors[len(held):], strict=True):
            w.error = error
            w.result = True
        if self._on_commit is not None:
            self._on_commit()
        self._release(held)  # a held op refused (its run was taken over) is dropped, as a crash would
        return True

    def _transaction(
        self, batch: list[_Waiter], held: list[tuple[str, Op]], todo: list[_Waiter], after: list[Callable[[], None]]
    ) -> None:
        """One attempt of :meth:`_commit`: raises _Retry without the op that failed, _Failed if nothing can commit."""
        try:
            conn = self._connect()
            conn.execute("BEGIN IMMEDIATE")
        except BaseException as exc:
            self._fail(batch, held, exc)
            raise _Failed from exc
        self.fenced.clear()
        culprit: tuple[int, _Waiter | None, Exception] | None = None
        try:
            self._on_begin(conn, after)
            for i, (_run_id, held_op) in enumerate(held):
                try:
                    held_op(conn, after)
                except Exception as exc:
                    culprit = (i, None, exc)
                    raise
            for w in todo:
                try:
                    w.result = w.op(conn, after)  # type: ignore[misc]
                except Exception as exc:
                    culprit = (-1, w, exc)
                    raise
            conn.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
            if culprit is None:
                self._fail(batch, held, exc)
                raise _Failed from exc
            index, waiter, error = culprit
            if waiter is None:  # a held outcome whose lease was lost: dropped, as a crash would
                _log.debug("durable_nb: a held-back journal write was refused: %s", error)
                self._release([held.pop(index)])
            else:
                waiter.error = error
                todo.remove(waiter)
            raise _Retry from exc

    def _apply_held(
        self, conn: sqlite3.Connection, held: list[tuple[str, Op]], after: list[Callable[[], None]], isolate: bool
    ) -> None:
        for _run_id, op in held:
            try:
                self._apply(conn, op, after, isolate)
            except Exception as exc:  # a held outcome whose lease was lost: dropped, as a crash would
                _log.debug("durable_nb: a held-back journal write was refused: %s", exc)

    @contextmanager
    def exclusive(self) -> Iterator[sqlite3.Connection]:
        """One write transaction of the caller's own (with the held ops), outside the queue."""
        cond = self._cond
        with cond:
            while self._carrier is not None:
                self._wait(cond)
            self._carrier = threading.current_thread()
            held, self._held = self._held, []
        after: list[Callable[[], None]] = []
        turn = self._turn
        try:
            try:
                with write_transaction(self._connect(), turn) as conn:
                    self.fenced.clear()
                    self._on_begin(conn, after)
                    self._apply_held(conn, held, after, True)
                    yield conn
            except BaseException:
                self._restore(held)
                raise
            self._committed(held, after)  # still the only committer, as in _commit
        finally:
            with cond:
                self._carrier = None
                if self._waiting:
                    cond.notify_all()

    def _apply(self, conn: sqlite3.Connection, op: Op, after: list[Callable[[], None]], isolate: bool) -> Any:
        if not isolate:
            return op(conn, after)
        conn.execute("SAVEPOINT op")
        mark = len(after)
        try:
            result = op(conn, after)
        except BaseException:
            self.fenced.clear()  # a fence (take) inside the op was rolled back with it
            conn.execute("ROLLBACK TO op")
            conn.execute("RELEASE op")
            del after[mark:]
            raise
        conn.execute("RELEASE op")
        return result

    def _fail(self, batch: list[_Waiter], held: list[tuple[str, Op]], exc: BaseException) -> None:
        """Nothing committed: every caller gets the error, held ops stay held (nothing lost)."""
        for w in batch:
            if w.error is None:
                w.error = exc
        self._restore(held)

    def _restore(self, held: list[tuple[str, Op]]) -> None:
        """Put ops that did not commit back in front of the held ones; the flusher tries again."""
        if not held:
            return
        with self._lock:
            if not self._held:
                self._held_since = time.monotonic()
            self._held[:0] = held
            self._start_flusher()

    def _release(self, held: list[tuple[str, Op]]) -> None:
        if not held:
            return
        with self._lock:
            for run_id, _ in held:
                self.held_runs[run_id] -= 1
                if self.held_runs[run_id] <= 0:
                    del self.held_runs[run_id]

    # -- holding back -------------------------------------------------------------------

    def hold(self, run_id: str, op: Op) -> None:
        """Keep ``op`` for the next commit; the flusher commits it within :attr:`delay` otherwise."""
        with self._lock:
            if not self._held:
                self._held_since = time.monotonic()
            self._held.append((run_id, op))
            self.held_runs[run_id] += 1
            self._start_flusher()  # a running one ticks every `delay` and finds the op itself

    def _start_flusher(self) -> None:
        """Start the flusher unless one runs (under ``_lock``)."""
        if self._flusher is None:
            self._closed = False
            self._flusher = threading.Thread(target=self._flush_loop, name="durable_nb-flush", daemon=True)
            self._flusher.start()

    def _wait(self, cond: threading.Condition) -> None:
        """Wait for the committing thread (``cond`` held), counted so that its end wakes us; uncounted
        however the wait ends (an interrupt too: a count left behind woke every later commit's waiters)."""
        self._waiting += 1
        try:
            cond.wait()
        finally:
            self._waiting -= 1

    @property
    def holding(self) -> bool:
        """Ops held or queued, or another thread's commit carrying some (the flusher's, mid-fdatasync)."""
        if self._held or self._queue:  # read before the carrier: a commit sets it before taking the ops
            return True
        carrier = self._carrier
        return carrier is not None and carrier is not threading.current_thread()

    def flush(self) -> None:
        """Commit every held (and queued, never waited for) op now (a durable boundary).

        Why it first waits for another thread's commit: the flusher may have taken the held
        ops and be inside its commit; they are no longer held but not durable yet, and a
        boundary that returned then (``map``'s) lost them to a crash right after, as a read
        that did not wait showed a finished call PENDING. Not for this thread's own commit
        (a read inside :meth:`exclusive`): that would wait for itself.
        """
        me = threading.current_thread()
        cond = self._cond
        with cond:
            while not (self._held or self._queue):
                carrier = self._carrier
                if carrier is None or carrier is me:
                    return
                self._wait(cond)
        self.run(None)

    def _flush_loop(self) -> None:
        """Commit held ops ``delay`` seconds after the first was held, unless a commit took them first.

        While writes keep coming it ticks every ``delay`` instead of being woken by
        each held op (a thread switch per durable call); after a second with nothing
        held it ends, and :meth:`hold` starts another. Why not sleep until woken: the
        thread holds the committer, which holds the store, so a store dropped without
        ``close()`` (a notebook cell run again) would keep its thread and connections forever.
        """
        cond = self._flush_cond
        me = threading.current_thread()
        idle_ticks = 0
        failing = False  # a full disk fails every retry: warn once, not several times a second until it is freed
        while True:
            with cond:
                if self._closed or self._flusher is not me:
                    return
                if not self._held:
                    if idle_ticks * self.delay >= 1.0:
                        self._flusher = None
                        return
                    idle_ticks += 1
                    cond.wait(self.delay)
                    continue
                idle_ticks = 0
                wait = self._held_since + self.delay - time.monotonic()
                if wait > 0:
                    cond.wait(wait)
                    continue
            try:
                self.flush()
                failing = False
            except Exception as exc:  # e.g. disk full: the ops stay held; the next write reports it
                (_log.debug if failing else _log.warning)(
                    "durable_nb: could not flush held-back journal writes (retrying quietly): %s", exc)
                failing = True
                time.sleep(self.delay * 5)

    def close(self) -> None:
        """Flush, then stop the flusher thread."""
        try:
            self.flush()
        finally:
            with self._cond:
                self._closed = True
                self._flusher = None
                self._flush_cond.notify_all()
