"""Run leases: a run is open in at most one live context at a time, and every write is fenced.

All lease logic lives here:

* **Owner ids** (:func:`new_owner`): ``host:pid:create_time:nonce``, one per context.
* **Liveness** (:func:`owner_is_alive`): a context of this process is alive until it
  ends (:func:`end_owner`); another local process is alive while ``psutil`` finds
  its pid with the same create time (a reused pid is another process). Owners on
  another host cannot be checked from here: :func:`owner_is_alive` answers
  ``False`` for them (SQLite journals live on one machine) and stores that span
  machines (PostgreSQL) decide liveness themselves, by their own lock, via
  :meth:`Store.run_is_open`.
* **Holding without writing** (:class:`FileLocks`): a SQLite store holds a run with
  an OS byte-range lock on the journal file (open-file-description locks, so a
  kill releases them and nothing is fsynced to take one). Replays of finished
  runs therefore write nothing.
* **Take-over and fencing** (:class:`Lease`): the state a store keeps for one
  open context. The journal's ``runs.attempts`` counter is the fencing token: the
  first write of a context requires it unchanged since the open, and every later
  write requires ``runs.owner`` to still be this context, checked inside the
  store's write transaction; otherwise :class:`~durable_nb.errors.LeaseLostError`
  and nothing is written.

Over 400 lines because these four are one lease: owner ids, liveness, OS locks and fencing read each other's state.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import socket
import struct
import threading
import time
import weakref
from dataclasses import dataclass
from typing import Any, ClassVar

import psutil

# ---------------------------------------------------------------- owner ids and liveness

_HOST = socket.gethostname()
_live_nonces: set[str] = set()
_start_cache: dict[int, str] = {}
_prefix_cache: dict[int, str] = {}


def current_pid() -> int:
    """This process's pid, cached (``os.getpid`` is a system call) and renewed in forked children."""
    return _pid[0]


_pid = [os.getpid()]


FORK_WAIT = 10.0
"""Seconds a fork waits for this process's write transactions to end (then it forks anyway, as before)."""
_gate = threading.Condition(threading.Lock())
_writing = [0, 0]
"""Write turns held in this process, and whether a fork waits for them (new ones wait for the fork)."""


def _before_fork() -> None:
    """No fork inside a write transaction: the child's SQLite copied the parent's connection holding the WAL
    write lock, saw it held by a connection of its own process for ever, and every write of the child hung."""
    _gate.acquire()
    _writing[1] = 1
    deadline = time.monotonic() + FORK_WAIT
    while _writing[0] and (left := deadline - time.monotonic()) > 0:
        _gate.wait(left)


def _after_fork_in_parent() -> None:
    _writing[1] = 0
    _gate.notify_all()
    _gate.release()


def _renew_in_child() -> None:
    """A forked child: its pid, the locks anew (one copied locked by another thread hung the child), and
    its copies of the parent's lock descriptors closed. Their open-file-description locks (the parent's
    runs and write turn) are the parent's: a copy kept them held after the parent was killed, so the
    child's first write waited for ever on the parent's write turn, and other processes on its runs.
    Closing is safe now: a child holds no POSIX lock yet (SQLite's would go with any close)."""
    global _gate
    _pid[0], FileLocks._all_lock = os.getpid(), threading.Lock()
    _gate, _writing[:] = threading.Condition(threading.Lock()), [0, 0]
    FileLocks._pins, FileLocks._unpins = {}, []  # the parent's connections: their copies here are never closed
    parked = [fd for fds in FileLocks._parked.values() for fd in fds]
    FileLocks._parked = {}
    for files in FileLocks._all.values():
        fd, files._fd = files._fd, None
        if fd is not None:
            parked.append(fd)
    for fd in parked:
        with contextlib.suppress(OSError):
            os.close(fd)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_renew_in_child)
_nonces = itertools.count(1)


def _process_start(pid: int) -> str:
    """Process create time (psutil), to tell a reused pid apart; "?" if the process is gone."""
    try:
        return f"{psutil.Process(pid).create_time():.2f}"
    except (psutil.Error, OSError):
        return "?"


def new_owner() -> str:
    """A lease owner string for a context about to open a run."""
    nonce = f"{next(_nonces):x}"  # unique in this process; pid and create time tell processes apart
    _live_nonces.add(nonce)  # one set operation: atomic, no lock needed (a context is opened per map record)
    pid = current_pid()  # renewed after fork: a forked child is another owner
    prefix = _prefix_cache.get(pid)
    if prefix is None:
        start = _start_cache.get(pid)
        if start is None:
            start = _start_cache[pid] = _process_start(pid)
        prefix = _prefix_cache[pid] = f"{_HOST}:{pid}:{start}:"
    return prefix + nonce


def end_owner(owner: str) -> None:
    """Mark a lease as ended in this process (its context exited, even by a crash)."""
    _live_nonces.discard(owner.rsplit(":", 1)[-1])


def parse_owner(owner: str) -> tuple[str, int, str, str] | None:
    try:
        host, pid_text, start, nonce = owner.rsplit(":", 3)
        return host, int(pid_text), start, nonce
    except ValueError:
        return None


def owner_is_alive(owner: str | None) -> bool:
    """Whether the context holding ``owner`` on this host can still write (False for other hosts)."""
    if not owner:
        return False
    parts = parse_owner(owner)
    if parts is None:
        return False
    host, pid, start, nonce = parts
    if host != _HOST:
        return False  # not checkable here; multi-host stores answer with their own locks
    if pid == current_pid():
        return nonce in _live_nonces
    return _process_start(pid) == start


def owner_gone(owner: str) -> bool:
    """Whether the context holding ``owner`` surely ended: checkable on this host only (False elsewhere).

    Why: a run whose lock is free is not proof that its holder is gone when the
    lock lives on a server session, which a server restart ends under a live holder.
    """
    parts = parse_owner(owner)
    return parts is not None and parts[0] == _HOST and not owner_is_alive(owner)


def describe_owner(owner: str | None) -> str:
    """Who an owner string names, for messages (``RunBusyError``, a busy map row).

    The owner is read from the journal, which anyone may have written: its text is shown with control
    characters escaped and cut at 200 characters, so a hand-written owner cannot move a terminal's cursor,
    recolour its output or flood the message.
    """
    parts = parse_owner(owner) if owner else None
    return f"process {parts[1]} on {_shown(parts[0])}" if parts else (_shown(owner) if owner else "another process")


def _shown(text: str) -> str:
    """``text`` as it is when printable and short, else escaped (``\\x1b``) and cut, marked with an ellipsis."""
    if len(text) <= 200 and text.isprintable():
        return text
    cut = text[:200]
    return cut.encode("unicode_escape").decode("ascii") + ("..." if len(text) > 200 else "")


def describe_lock_holder(recorded: str | None) -> str:
    """Who holds a run's lock, told from the owner its run row records (the last context that wrote it).

    A recovery holds the lock from its open but claims the row only with its first
    write, so meanwhile the row still names the context before it: after a crash, a
    killed process. Naming that one sends the user after a process that is gone.
    """
    parts = parse_owner(recorded) if recorded else None
    if parts is not None and parts[0] == _HOST and not owner_is_alive(recorded):
        return "another process, a recovery that has not written to the run yet"
    return describe_owner(recorded)


# ---------------------------------------------------------------- one open context


@dataclass
class Lease:
    """What a store remembers about one open context (keyed by its owner string)."""

    run_id: str
    owner: str
    seen_attempts: int | None
    """``runs.attempts`` when the run was opened (None: the run did not exist)."""
    wrote: bool = False
    """Whether this context has written (taken the run in the journal) yet."""
    lost: str | None = None
    """Why this context may no longer write (taken over, closed), or None."""
    os_locked: bool = False
    """Whether this context holds the run's OS lock (released when it closes)."""
    seen_status: str | None = None
    """The run's status when it was opened: closing with the same status writes nothing."""
    dirty: bool = False
    """Whether a write was committed or held back for this context."""
    exclusive: bool = False
    """Whether no other context of any process can write the run while this one is open (its OS lock is
    this process's and it was not stolen): its transitions may go through a SQLite store's intent log."""


# ---------------------------------------------------------------- OS locks, no fsync

_FLOCK = struct.Struct("hhqqi4x")
"""struct flock: l_type, l_whence (short); l_start, l_len (off_t); l_pid (int) + padding."""
_LOCK_BASE = 1 << 40  # far above SQLite's own lock bytes (around 1 GiB)
_LOCK_SPAN = 1 << 40
_WRITER_BYTE = _LOCK_BASE - 1
"""The byte a writer of the file holds from ``BEGIN IMMEDIATE`` to ``COMMIT`` (see :meth:`FileLocks.begin_write`)."""


def lock_offset(run_id: str) -> int:
    """The byte of the journal file that stands for ``run_id`` (64-bit hash: no collisions in practice)."""
    h = hashlib.blake2b(run_id.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return _LOCK_BASE + int.from_bytes(h, "big") % _LOCK_SPAN


class FileLocks:
    """The process-wide lease state of one journal file, and exclusive per-run OS locks on its bytes.

    One per file and process (:meth:`of`), shared by every store object on the file:
    ``holders`` (run -> owner) and ``leases`` (owner -> :class:`Lease`) exclude two
    contexts of this process; open-file-description locks (Linux ``F_OFD_SETLK``),
    released by the OS when the process dies, exclude other processes. Where OFD
    locks are missing :attr:`available` is False and only this process is excluded.

    The descriptor is closed only when no store object of this process uses the file
    any more (:meth:`release`) and no SQLite connection of this process is open on it
    (:meth:`pin`): closing *any* descriptor of a file drops every POSIX lock the process
    holds on it, SQLite's included, and an SQLite connection whose locks vanished can
    delete a WAL another process is writing. A writable store's close dropped a read-only
    store's lock so: another process's close then found itself the last connection,
    checkpointed and deleted the ``-wal`` and ``-shm`` under it, and this process's next
    writes went to the new WAL through the deleted ``-shm`` (database disk image is malformed).
    """

    _all: ClassVar[dict[tuple[int, int, int], FileLocks]] = {}
    _all_lock: ClassVar[threading.Lock] = threading.Lock()
    _pins: ClassVar[dict[tuple[int, int, int], int]] = {}
    """SQLite connections of this process open on each file (:meth:`pin`), read-only ones too."""
    _parked: ClassVar[dict[tuple[int, int, int], list[int]]] = {}
    """Descriptors of a pinned file whose close waits for its last connection (:meth:`read_head`)."""
    _unpins: ClassVar[list[tuple[int, int, int]]] = []
    """Pins of connections a finalizer closed, given back by the next :meth:`pin` (:meth:`unpin_later`)."""

    @classmethod
    def pin(cls, path: str | os.PathLike[str]) -> tuple[int, int, int] | None:
        """Before an SQLite connection to ``path`` opens: no descriptor of the file closes until :meth:`unpin`.

        Returns the key to unpin with (None: no such file yet; SQLite creates none for a reader)."""
        cls.unpin_deferred()
        try:
            st = os.stat(path)
        except OSError:
            return None
        key = (current_pid(), st.st_dev, st.st_ino)
        with cls._all_lock:
            cls._pins[key] = cls._pins.get(key, 0) + 1
        return key

    @classmethod
    def unpin_later(cls, key: tuple[int, int, int] | None) -> None:
        """:meth:`unpin` from a finalizer (a store collected without ``close()``), done by the next :meth:`pin`
        or :meth:`unpin_deferred`. Why: the GC runs a finalizer in whichever thread it interrupts, maybe one
        holding ``_all_lock`` (any allocation in :meth:`of` can start it), which is not re-entrant: it hung."""
        if key is not None:
            cls._unpins.append(key)  # list.append is atomic: no lock taken in a finalizer

    @classmethod
    def unpin_deferred(cls) -> None:
        """Give back the pins :meth:`unpin_later` left (call with no lock of durable_nb's held)."""
        while cls._unpins:
            try:
                key = cls._unpins.pop()
            except IndexError:  # another thread took the last one
                return
            cls.unpin(key)

    @classmethod
    def unpin(cls, key: tuple[int, int, int] | None) -> None:
        """After that connection closed: the last one closes what waited for it (a released descriptor)."""
        if key is None:
            return
        with cls._all_lock:
            n = cls._pins.get(key, 0) - 1
            if n > 0:
                cls._pins[key] = n
                return
            cls._pins.pop(key, None)
            for fd in cls._parked.pop(key, []):
                with contextlib.suppress(OSError):
                    os.close(fd)
            it = cls._all.get(key)
            if it is not None and it.users <= 0:
                it._close_unused()

    @classmethod
    def read_head(cls, path: str | os.PathLike[str], size: int) -> bytes:
        """The first ``size`` bytes of ``path``, never closing a descriptor under a connection of this process:
        through the file's lock descriptor if open, else a descriptor whose close waits for the last pin."""
        st = os.stat(path)
        with cls._all_lock:
            key = (current_pid(), st.st_dev, st.st_ino)
            it = cls._all.get(key)
            kept = [fd for fd in (it._fd if it is not None else None, *cls._parked.get(key, ())) if fd is not None]
            if kept:
                return os.pread(kept[0], size, 0)
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        try:
            st = os.fstat(fd)
            key = (current_pid(), st.st_dev, st.st_ino)
            return os.pread(fd, size, 0)
        finally:
            with cls._all_lock:
                if cls._pins.get(key):
                    cls._parked.setdefault(key, []).append(fd)
                else:
                    os.close(fd)

    @classmethod
    def of(cls, path: str, *, create: bool = False) -> FileLocks:
        """The shared state of ``path`` (opened read-write, created ``0600`` if asked; OSError if it cannot be)."""
        flags = os.O_RDWR | getattr(os, "O_CLOEXEC", 0)
        with cls._all_lock:
            fd = None
            try:
                st = os.stat(path)
            except FileNotFoundError:
                if not create:
                    raise
                fd = os.open(path, flags | os.O_CREAT, 0o600)
                st = os.fstat(fd)
            key = (current_pid(), st.st_dev, st.st_ino)
            it = cls._all.get(key)
            if it is None:
                it = cls._all[key] = cls(os.open(path, flags) if fd is None else fd, key)
            it.users += 1
            return it

    def __init__(self, fd: int, key: tuple[int, int, int]) -> None:
        import fcntl

        self._fcntl = fcntl
        self._key = key
        self.available = hasattr(fcntl, "F_OFD_SETLK")
        self._fd: int | None = fd
        self.users = 0
        self.lock = threading.Lock()
        self.holders: dict[str, str] = {}
        self.leases: dict[str, Lease] = {}
        self.counts: dict[str, int] = {}
        self._offsets: dict[str, int] = {}
        self.writes = 0
        """Commits to the file by this process (every store object on it): what a prefetch checks."""
        self.committers: weakref.WeakSet[Any] = weakref.WeakSet()
        """The committers of the store objects that opened runs here: one holding a closed run's writes back (a
        map's boundary) is flushed by another store object opening that run, which reads the file without them."""
        self._writer = threading.RLock()  # re-entrant: a write inside a write transaction must not hang
        self._depth = 0

    def begin_write(self) -> None:
        """Wait for the file's write turn: an in-process lock, then a blocking OS lock on :data:`_WRITER_BYTE`.

        Why: SQLite makes a writer that finds the file busy sleep and poll (1 ms,
        then 2, 5, 10 ms...), while a commit takes tens of microseconds. Processes
        that write one journal (Flink's Python workers) lost more time in those
        sleeps than in their own commits. A blocking lock hands the turn over the
        moment the holder commits. It only orders durable_nb's own writers; SQLite's
        locking still decides, and a writer that is not durable_nb is met with its
        busy timeout as before. Call :meth:`end_write` after ``COMMIT``/``ROLLBACK``.
        """
        self._writer.acquire()
        self._depth += 1
        if self._depth > 1:
            return
        counted = False
        try:
            with _gate:  # not while a fork waits (see _before_fork)
                while _writing[1]:
                    _gate.wait()
                _writing[0] += 1
                counted = True
            if self.available and self._fd is not None:
                try:
                    fcntl = self._fcntl
                    arg = _FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, _WRITER_BYTE, 1, 0)
                    fcntl.fcntl(self._fd, fcntl.F_OFD_SETLKW, arg)
                except OSError:
                    pass  # no OS lock: SQLite's busy handling alone, as without this
        except BaseException:
            # KeyboardInterrupt in a wait (a kernel interrupted behind another process's write turn): the
            # caller never calls end_write, so the turn is given back here, or it stayed counted (every
            # later fork waited FORK_WAIT) and held (every other thread's write hung).
            self._depth -= 1
            if counted:
                self._give_back()
            self._writer.release()
            raise

    def end_write(self) -> None:
        """Give the write turn back (after ``COMMIT`` or ``ROLLBACK``)."""
        self._depth -= 1
        try:
            if self._depth == 0:
                self._give_back()
        finally:
            self._writer.release()

    def _give_back(self) -> None:
        """The OS lock released (harmless when not taken) and the turn no longer counted."""
        try:
            if self.available and self._fd is not None:
                with contextlib.suppress(OSError):
                    self._op(self._fcntl.F_UNLCK, _WRITER_BYTE)
        finally:
            with _gate:
                _writing[0] -= 1
                _gate.notify_all()

    def wrote(self) -> None:
        """Count one commit to the file by this process (no lock: a prefetch only asks whether it moved,
        and two racing increments still move it)."""
        self.writes += 1

    def _op(self, kind: int, offset: int, length: int = 1) -> bool:
        assert self._fd is not None
        arg = _FLOCK.pack(kind, os.SEEK_SET, offset, length, 0)
        try:
            self._fcntl.fcntl(self._fd, self._fcntl.F_OFD_SETLK, arg)
        except (BlockingIOError, PermissionError):
            return False
        return True

    def try_lock(self, run_id: str) -> bool:
        """Take the run's OS lock (counted; call under :attr:`lock`); False if another process holds it."""
        n = self.counts.get(run_id, 0)
        if n == 0 and self.available and self._fd is not None:
            offset = lock_offset(run_id)
            if not self._op(self._fcntl.F_WRLCK, offset):
                return False
            self._offsets[run_id] = offset
        self.counts[run_id] = n + 1
        return True

    def try_lock_many(self, run_ids: list[str]) -> list[str]:
        """:meth:`try_lock` of each run not held by a context of this process; returns those locked."""
        locked = []
        counts, holders, offsets = self.counts, self.holders, self._offsets
        fd, fcntl = self._fd, self._fcntl
        os_locks = self.available and fd is not None
        for run_id in run_ids:
            if run_id in holders:
                continue
            n = counts.get(run_id, 0)
            if n == 0 and os_locks:
                offset = lock_offset(run_id)
                try:
                    fcntl.fcntl(fd, fcntl.F_OFD_SETLK, _FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, offset, 1, 0))
                except (BlockingIOError, PermissionError):
                    continue
                offsets[run_id] = offset
            counts[run_id] = n + 1
            locked.append(run_id)
        return locked

    def deleted(self) -> bool:
        """Whether the file was deleted (its folder removed) since it was opened: SQLite would go on writing
        the unlinked file, and everything written would vanish with the last descriptor."""
        if self._fd is None:
            return False
        try:
            return os.fstat(self._fd).st_nlink == 0
        except OSError:
            return False

    def moved_from(self, path: str | os.PathLike[str]) -> bool:
        """Whether ``path`` names this file no more (it was renamed or moved away, maybe another file put there):
        SQLite goes on writing the file, but its WAL and a new connection's file are found by the old name."""
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return True
        except OSError:
            return False
        return (st.st_dev, st.st_ino) != self._key[1:]

    def held_elsewhere(self, run_id: str) -> bool:
        """Whether another process holds the run's OS lock now (a live context there has it open)."""
        if not self.available or self._fd is None:
            return False
        fcntl = self._fcntl
        probe = _FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, lock_offset(run_id), 1, 0)
        try:
            found = fcntl.fcntl(self._fd, fcntl.F_OFD_GETLK, probe)
        except OSError:
            return False
        return bool(_FLOCK.unpack(found)[0] != fcntl.F_UNLCK)

    def unlock(self, run_id: str) -> None:
        """Give back one count of the run's OS lock (call under :attr:`lock`)."""
        n = self.counts.get(run_id, 0) - 1
        if n > 0:
            self.counts[run_id] = n
            return
        self.counts.pop(run_id, None)
        offset = self._offsets.pop(run_id, None)
        if offset is not None and self._fd is not None:
            self._op(self._fcntl.F_UNLCK, offset)

    def unlock_many(self, run_ids: list[str]) -> None:
        """:meth:`unlock` of each run, with fewer system calls (call under :attr:`lock`).

        The freed locks go in one unlock per gap between the locks still held, when
        that is fewer calls than one per run: an unlock of a range not locked is a no-op.
        """
        freed = []
        for run_id in run_ids:
            n = self.counts.get(run_id, 0) - 1
            if n > 0:
                self.counts[run_id] = n
                continue
            self.counts.pop(run_id, None)
            offset = self._offsets.pop(run_id, None)
            if offset is not None:
                freed.append(offset)
        if not freed or self._fd is None:
            return
        kept = sorted(self._offsets.values())
        if len(kept) + 1 >= len(freed):
            for offset in freed:
                self._op(self._fcntl.F_UNLCK, offset)
            return
        start = _LOCK_BASE
        for end in [*kept, _LOCK_BASE + _LOCK_SPAN]:
            if end > start:
                self._op(self._fcntl.F_UNLCK, start, end - start)
            start = end + 1

    def release(self) -> None:
        """One store object stopped using the file; the last one closes the descriptor if no run is held and
        no connection of this process is open on the file (else the last :meth:`unpin` closes it)."""
        with FileLocks._all_lock:
            self.users -= 1
            if self.users <= 0:
                self._close_unused()

    def _close_unused(self) -> None:
        """Close the descriptor of a file no store object uses (call under ``_all_lock``), unless it must stay."""
        if self.holders or self.counts or self._fd is None or FileLocks._pins.get(self._key):
            return  # kept in _all: a store opened meanwhile reuses it (a second descriptor's close drops locks)
        FileLocks._all.pop(self._key, None)
        with contextlib.suppress(OSError):
            os.close(self._fd)
        self._fd = None
        for fd in FileLocks._parked.pop(self._key, []):
            with contextlib.suppress(OSError):
                os.close(fd)
