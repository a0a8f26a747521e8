"""The intent log: a ``"call"`` commit of a SqliteStore is one append and one fdatasync.

Why: SQLite's statements and ``COMMIT`` (~25 µs of CPU) sat on the caller's path
before every function could run. Here the caller appends the commit's
*transitions* (a PENDING, a held-back outcome, a run taken or closed) as one frame
to a log of its own and fdatasyncs it; an applier thread writes them into SQLite
a few milliseconds later, in batches, without fsync. The log is the durable copy
until a synced commit makes SQLite's file durable.

The rules (frames and applying them: :mod:`.sqlite_frames`):

* **One log per process and journal** (``<journal>-log.<pid>.<token>``), registered
  in ``meta`` with its last applied frame; a frame is applied in the transaction
  that moves that number: exactly once, whoever applies it.
* **Only runs this process holds under its OS lock** go through the log; any other
  write is a synced commit that first applies this process's frames (in order).
* **A run's OS lock is released once its frames are applied** (the close's frame
  carries the unlock): whoever opens the run next reads it whole.
* **A dead process's log** (its lock on the file is gone) is applied by the next
  process that reads, opens a run or writes, before anything else; after a power
  loss every log is dead and what SQLite lost is applied again, in written order.
* **A steal** bumps a counter in ``<journal>-counters`` and applies every log before it reads the
  run; a writer that finds the counter moved after its fdatasync checks its runs
  (``LeaseLostError`` before the function runs), and the applier drops the
  transitions of a context whose run is no longer its own, as a crash would.
* **The log is truncated** after a synced commit made what it held durable; its file
  (:mod:`.sqlite_logfile`) is written over zeros, so a sync flushes data only.
"""
from __future__ import annotations

import contextlib
import itertools
import logging
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar

from ..errors import JournalFormatError
from ..journal.lease import FileLocks, current_pid
from . import sqlite_commit
from .sqlite_frames import LOGS, PREFIX, STEALS, Counters, Op, apply_frames, encode
from .sqlite_logfile import LogFile, sweep_orphans

_log = logging.getLogger("durable_nb")

DELAY = 0.003
"""Seconds the applier waits to gather frames into one SQLite transaction."""
BATCH_DELAY = 0.05
"""The same inside a durable boundary (a map, a Flink bundle), whose end applies every frame anyway.

Why: a Flink worker appends ~700 frames a second, so 3 ms gathered ~6 frames per
transaction and applying cost ~70 µs of the worker's CPU per record; every
transaction also empties the page cache of the worker's reading connection."""
LARGE = 8 << 10
"""Payload bytes above which a commit is a synced SQLite transaction, not a frame: a large result costs
far more than a sync to write, and written twice (log and journal) it would need twice the disk."""
MANY = 32
"""Transitions above which a commit is a synced SQLite transaction: its one fsync is shared by that many
calls already, and through the log each would be encoded, written and applied in addition."""
TRUNCATE_AT = 256 << 10
"""Bytes after which an applied log is truncated (after a synced commit); an idle one is truncated too.
The log holds a second copy of each payload until then: it must stay small on a small disk."""
REAP_EVERY = 5.0
"""Seconds an idle applier sleeps between looks for store objects collected without ``close()`` (:func:`reap`)."""


# ---------------------------------------------------------------- this process's log


class LogClosed(Exception):
    """The log was closed (its store object closed) while another thread was about to append."""


class IntentLog:
    """This process's log of one journal: the file, what is appended but not applied, the applier thread."""

    _all: ClassVar[dict[tuple[int, int, int], IntentLog]] = {}
    _all_lock: ClassVar[threading.Lock] = threading.Lock()
    exited: ClassVar[bool] = False
    """Set by :func:`close_all` at exit: no log is started after the logs were closed."""

    @classmethod
    def of(cls, journal: Path, files: FileLocks, connect: Callable[[], sqlite3.Connection]) -> IntentLog:
        """This process's open log of the file, or a new one; OSError once :func:`close_all` ran at exit."""
        key = files._key
        with cls._all_lock:
            if cls.exited:  # a daemon thread writing during exit: a log started now would outlive the
                raise OSError("the interpreter is exiting")  # process unregistered; a synced commit instead
            log = cls._all.get(key)
            if log is None or log.closed:
                log = cls._all[key] = cls(journal, files, connect)
            return log

    @classmethod
    def existing(cls, files: FileLocks) -> IntentLog | None:
        log = cls._all.get(files._key)  # the key holds the pid: a forked child never finds its parent's log
        return None if log is None or log.closed else log

    def __init__(self, journal: Path, files: FileLocks, connect: Callable[[], sqlite3.Connection]) -> None:
        self._pid = current_pid()
        self.journal = journal
        self.files = files
        self._connect = connect
        self._conn: sqlite3.Connection | None = None
        name = f"{journal.name}-log.{self._pid}.{secrets.token_hex(4)}"
        self.path = journal.with_name(name)
        self.key = PREFIX + name
        self.closed = False
        self._seq = itertools.count(1)
        self._append_lock = threading.RLock()  # close() drains, and draining may truncate
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._pending: list[tuple[int, int, list[Op]]] = []
        self.pending_runs: dict[str, int] = {}
        self._apply_lock = threading.Lock()
        self._asleep = False
        self._gather = DELAY
        self._thread: threading.Thread | None = None
        self.file = LogFile(self.path)
        try:
            self.counters = Counters(journal)
            self._steals_seen = self.counters.value(STEALS)
            self.register()
        except BaseException:  # the file goes too: the caller commits to SQLite instead
            self.file.remove()
            raise
        sweep_orphans(journal, self._connection())  # once per process and journal: the first logged write

    def _connection(self) -> sqlite3.Connection:
        """The log's own connection (applier, synced commits), closed with the log, never left to the GC:
        a connection closed after the file's lock descriptor could drop locks SQLite relies on."""
        conn = self._conn
        if conn is None:
            conn = self._conn = self._connect()
        return conn

    def register(self) -> None:
        """A synced commit: the log's row exists before a frame of it can be acknowledged."""
        with self._transaction(synced=True) as conn:
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, '0')", (self.key,))
        self.counters.bump(LOGS)

    @contextmanager
    def _transaction(self, *, synced: bool) -> Iterator[sqlite3.Connection]:
        """One write transaction on the log's connection, in the file's write turn; synced or not."""
        conn = self._connection()
        conn.execute(f"PRAGMA synchronous = {'FULL' if synced else 'NORMAL'}")
        with sqlite_commit.write_transaction(conn, self.files):
            yield conn

    # -- appending (the caller's path) ----------------------------------------------------

    def append(self, ops: list[Op], *, batch: bool = False) -> bool:
        """Make ``ops`` durable; False if a steal happened meanwhile (the caller must check its runs).

        ``batch``: the caller is inside a durable boundary; the applier waits :data:`BATCH_DELAY`.

        Raises :class:`LogClosed` (nothing written) once the log was closed: append to a new one.
        """
        with self._append_lock:
            if self.closed or self.file.broken:
                raise LogClosed(self.path)
            seq = next(self._seq)
            self.file.append(encode(seq, time.monotonic_ns(), ops))
            self._gather = max(DELAY, BATCH_DELAY) if batch else DELAY
            with self._lock:
                self._pending.append((seq, 0, ops))
                runs = self.pending_runs
                for op in ops:
                    run_id = op[1]
                    runs[run_id] = runs.get(run_id, 0) + 1
                if self._thread is None:
                    self._thread = threading.Thread(target=self._loop, name="durable_nb-apply", daemon=True)
                    self._thread.start()
                elif self._asleep:
                    self._cond.notify()
            steals = self.counters.value(STEALS)
            if steals == self._steals_seen:
                return True
            self._steals_seen = steals
            return False

    @property
    def pending(self) -> bool:
        return bool(self._pending)

    # -- applying ---------------------------------------------------------------------------

    def apply_in(self, conn: sqlite3.Connection) -> Callable[[], None] | None:
        """Inside a write transaction of this process: apply every pending frame; call the result once committed."""
        batch = list(self._pending)
        if not batch:
            return None
        if not apply_frames(conn, self.key, batch):
            raise JournalFormatError(
                f"the intent log {self.path} is no longer registered in {self.journal} (its row was removed while "
                f"this process was writing). Its last transitions were not applied; run the action again to "
                f"recover them."
            )
        return lambda: self._applied(batch)

    def _applied(self, batch: list[tuple[int, int, list[Op]]]) -> None:
        """After the transaction that applied ``batch`` committed: forget it, release the runs it closed."""
        unlock = []
        with self._cond:
            # Pending frames are in sequence order: the ones up to the batch's last are applied now.
            # Some may be forgotten already (the thread and a synced commit both applied them).
            last = batch[-1][0]
            n = 0
            for seq, _, _ in self._pending:
                if seq > last:
                    break
                n += 1
            gone, self._pending = self._pending[:n], self._pending[n:]
            runs = self.pending_runs
            for _, _, ops in gone:
                for op in ops:
                    run_id = op[1]
                    left = runs.get(run_id, 0) - 1
                    if left > 0:
                        runs[run_id] = left
                    else:
                        runs.pop(run_id, None)
                    if op[0] == "close" and op[5]:
                        unlock.append(run_id)
            self._cond.notify_all()
        if unlock:
            files = self.files
            with files.lock:
                for run_id in unlock:
                    files.unlock(run_id)

    def drain(self) -> None:
        """Apply every pending frame now (a read, or a synced commit, must see them)."""
        while self._pending:
            self._apply_batch()

    def _apply_batch(self) -> None:
        with self._apply_lock:
            if not self._pending:
                return
            with self._transaction(synced=False) as conn:  # the log is the durable copy
                done = self.apply_in(conn)
            if done is not None:
                done()
        if self.file.size >= TRUNCATE_AT:
            self._truncate()

    def _truncate(self) -> None:
        """Everything applied is made durable in SQLite by one synced commit; then the log starts again.

        Locks in one order everywhere: appending, then applying.
        """
        with self._append_lock, self._apply_lock:
            if self._pending or not self.file.size or self.closed:
                return
            with self._transaction(synced=True) as conn:
                conn.execute("UPDATE meta SET value = value WHERE key = ?", (self.key,))
            self.file.reset(shrink_above=2 * TRUNCATE_AT)  # a log grown while the applier lagged gives space back

    def _loop(self) -> None:
        """Apply frames ``DELAY`` after they come (in batches); truncate the log once idle; then sleep, waking
        every :data:`REAP_EVERY` to release what collected store objects left (its own log's last one too)."""
        idle = 0.0
        failing = False  # a full disk fails every retry: warn once, not several times a second until it is freed
        while True:
            with self._cond:
                if self.closed:
                    return
                if self._pending:
                    idle, work = 0.0, self._apply_later
                elif self.file.size and idle >= 0.1:
                    work = self._truncate
                elif idle >= 1.0 and _dropped:
                    work = reap  # collected stores' files (see dropped): this one's own log too
                elif idle >= 1.0:
                    self._asleep = True
                    self._cond.wait(REAP_EVERY)
                    self._asleep = False
                    idle = 1.0 if _dropped else 0.0
                    continue
                else:
                    self._cond.wait(DELAY)
                    idle += DELAY
                    continue
            try:
                work()
                failing = False
            except Exception as exc:  # e.g. disk full: the frames stay in the log; a read reports it
                (_log.debug if failing else _log.warning)(
                    "durable_nb: could not apply the intent log %s to the journal (retrying quietly): %s",
                    self.path, exc)
                failing = True
                time.sleep(DELAY * 50)

    def _apply_later(self) -> None:
        time.sleep(self._gather)  # more frames come meanwhile: one transaction for all
        self._apply_batch()


    # -- closing ------------------------------------------------------------------------------

    def close(self) -> None:
        """Apply everything, make it durable with one synced commit, then remove the log and its row."""
        if self.closed or self._pid != current_pid():
            return
        with self._append_lock:  # no frame may land in a log being removed: a later append starts a new log
            if self.closed:  # closed meanwhile by another thread (a store's close(), reap, close_all at exit)
                return
            self.drain()
            with self._transaction(synced=True) as conn:
                conn.execute("DELETE FROM meta WHERE key = ?", (self.key,))
            self.counters.bump(LOGS)
            with self._cond:
                self.closed = True
                self._cond.notify_all()
            self.file.remove()
        self.counters.close()
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
            self._conn = None
        with IntentLog._all_lock:  # a closed log is never used again: kept, one per journal ever closed stayed
            if IntentLog._all.get(self.files._key) is self:
                del IntentLog._all[self.files._key]


def close_all() -> None:
    """At a normal exit (after the held-back writes were appended): apply and remove every log of this process."""
    with IntentLog._all_lock:
        IntentLog.exited = True
    for log in list(IntentLog._all.values()):
        try:
            log.close()
        except Exception as exc:
            _log.warning("durable_nb: could not apply the intent log %s at exit (the next open will): %s",
                         log.path, exc)


_dropped: list[FileLocks] = []
"""Files of store objects collected without ``close()``, not yet released (see :func:`reap`)."""


def dropped(box: list[FileLocks | None], pid: int) -> None:
    """A store object was collected without ``close()`` (its finalizer): have its file released by :func:`reap`.

    Why not release it here: a finalizer runs in whichever thread the GC interrupts, maybe one inside
    ``FileLocks``' or a log's lock, which are not re-entrant. Why at all: nothing else released it, so
    a kernel that dropped stores on many journals (one per test's temp folder, per day, per job) kept each
    one's log, its applier thread and ~7 descriptors until it died.
    """
    files = box[0]
    if files is not None and pid == current_pid():
        _dropped.append(files)  # list.append is atomic: no lock taken in a finalizer


def reap() -> None:
    """Release the files of collected store objects; the last user of a file closes its log (as ``close()`` does).

    Called when a store object is made (a top-level call: no lock of ours is held), so what dropped stores
    keep is bounded by the stores dropped since the last one was made."""
    FileLocks.unpin_deferred()  # their connections' pins: a finalizer closed them without taking a lock
    while _dropped:
        try:
            files = _dropped.pop()
        except IndexError:  # another thread took the last one
            return
        log = IntentLog.existing(files)
        if log is not None and files.users <= 1:
            try:
                log.close()
            except Exception as exc:  # the log stays open, as a failed close() leaves its store open
                _log.warning("durable_nb: could not close the intent log %s of a collected store: %s", log.path, exc)
                continue  # released, the file's next FileLocks kept its runs locked under this log (RunBusyError)
        files.release()


def _forget_in_child() -> None:
    """A forked child does not own its parent's logs: close them, so the parent's death shows.

    The registry's lock is made anew: a fork while another thread started a log (it holds the lock
    through a synced commit) copied it locked, and the child's first logged write waited for ever."""
    IntentLog._all_lock = threading.Lock()
    for log in IntentLog._all.values():
        if not log.closed:  # a closed log's descriptor number may belong to something else by now
            log.file.forget()
        log.closed = True
    IntentLog._all = {}
    _dropped.clear()  # the parent's files: its own finalizers release them


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)
sqlite_commit.at_exit.append(close_all)
