"""A forked child's SQLite locks: the child takes the journal's reader locks SQLite believes it holds.

Why: SQLite keeps one table per process of the files it has open and of the POSIX locks it holds on them.
A forked child gets a copy of its parent's table, but not the locks (POSIX locks are never inherited). A
connection the child opens on a journal its parent had open finds the file in the table, counts the
parent's reader locks as its own and takes none: the child reads and writes the journal holding no
``SHARED`` lock on the file and no lock on its ``-shm``. Once the parent closed its last connection (or
died), nothing showed the child: the parent's close, or any other process's, checkpointed and deleted the
``-wal`` the child was writing, and the child's acknowledged calls went into a deleted file (14 of 20
SUCCEEDED calls lost under ``"transition"``); a later opener truncated the ``-shm`` under it (SIGBUS).

So a process notes every journal its stores connect to; in a forked child, before a store's first
connection to a journal the parent had, the child takes, on descriptors of its own that it never closes
(closing one would drop the process's locks on the file), the two reader locks of SQLite's locking
protocol (``os_unix.c``): ``SHARED`` (510 bytes from ``PENDING_BYTE + 2`` of the database file) and the
``-shm``'s DMS byte (128). Other processes then see a reader, as they would see the parent.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

PENDING_BYTE = 0x40000000
SHARED_FIRST, SHARED_SIZE = PENDING_BYTE + 2, 510
SHM_DMS = 128
WAIT = 60.0
"""Seconds to wait for a lock another process holds exclusively (a checkpoint): SQLite's busy timeout."""

_lock = threading.Lock()
_seen: set[str] = set()
"""Journals this process connected to (and, in a forked child, its parent's)."""
_inherited: set[str] = set()
"""Journals the parent had open at the fork: SQLite's table lists them, without this process's locks."""
_held: set[str] = set()
"""Journals whose reader locks this forked child took (once each; the descriptors holding them stay open)."""


def connecting(path: Path) -> None:
    """Before a connection to ``path``: note it; in a forked child, take the locks SQLite believes it holds."""
    key = os.fspath(path)
    if key in _seen and key not in _inherited:
        return  # the common case, without the lock
    with _lock:
        _seen.add(key)
        if key in _inherited and key not in _held:
            _take(key)
            _held.add(key)


def _take(key: str) -> None:
    """SHARED on the database file and the ``-shm``'s DMS byte, read locks on descriptors of this process
    that nothing closes (a close would drop the process's locks on the file); a forked grandchild keeps
    copies of them open as well."""
    import fcntl

    for name, start, size in ((key, SHARED_FIRST, SHARED_SIZE), (f"{key}-shm", SHM_DMS, 1)):
        try:
            fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue  # no -shm: the parent had no WAL open, SQLite opens it (with its lock) itself
        deadline = time.monotonic() + WAIT
        while True:
            try:
                fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB, size, start, os.SEEK_SET)
                break
            except OSError:
                if time.monotonic() > deadline:
                    break  # as before: unprotected, not stuck
                time.sleep(0.005)


def _in_child() -> None:
    global _lock, _inherited, _held
    _lock = threading.Lock()  # a copy taken locked by another thread would hang the child
    _inherited = _inherited | _seen
    _held = set()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_in_child)
