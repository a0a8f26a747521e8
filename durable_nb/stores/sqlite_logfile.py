"""The intent log's file: frames written over zeros, each made durable by one ``fdatasync``; and removing the
files of logs no process writes (:func:`sweep_orphans`).

Why zeros: the file is zero-filled ``FILL`` bytes ahead of its frames, and "truncating"
it zeroes what was written. An ``fdatasync`` then flushes data only; an append that
grows the file also makes ext4 commit its journal, which on a busy machine waits for a
kernel thread to be scheduled (measured in a Flink worker: 205 µs per fdatasync
appending, 147 µs overwriting). A zero header ends the frames (:func:`.sqlite_frames.decode`).

Every failure leaves no frame that was not acknowledged, and never one hidden behind zeros:
a short write is an error, a frame whose write failed is zeroed (or cut off), and a file that
cannot be zeroed is emptied instead; one that cannot even be emptied takes no more frames.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import sqlite3
import time
from pathlib import Path

from ..errors import JournalFormatError
from .sqlite_frames import PREFIX, claimed, open_log, registered, try_lock, writer_alive

_log = logging.getLogger("durable_nb")

NEW = ".new"
"""Suffix of a log being created: it gets its name once locked, so a log named and unlocked is a dead one's."""
FILL = 64 << 10
"""Bytes of zeros written ahead of the frames at a time (the file grows, and its size is synced, once per FILL)."""


def sync_folder(folder: Path) -> None:
    """fsync a folder: the names created or moved into it are durable (a file's own fsync does not say so)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LogFile:
    """One process's log file: created locked (its writer lives while the lock holds), frames appended in place."""

    def __init__(self, path: Path) -> None:
        self.path = path
        new = path.with_name(path.name + NEW)
        self.fd = os.open(new, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        self._named = False
        self.size = 0
        """Where the next frame goes: the bytes before it are frames, the bytes after it zeros."""
        self.filled = 0
        """The file's size: zeros up to here are on disk, so writing frames before it changes no metadata."""
        self.broken = False
        """It could be neither zeroed nor emptied: no more frames may go in (they could hide behind zeros)."""
        try:
            try:
                if not try_lock(self.fd):
                    raise OSError(f"could not lock the new intent log {path}")
                os.rename(new, path)  # the log's name appears locked: see sweep_orphans
                self._named = True
            finally:
                with contextlib.suppress(OSError):
                    os.unlink(new)
            sync_folder(path.parent)  # the log's name is durable before any frame in it counts
            self._fill(FILL)
        except BaseException:  # e.g. a full disk: no log file is left behind (the caller commits to SQLite)
            self.remove()
            raise

    def append(self, frame: bytes) -> None:
        """Write ``frame`` after the last one and make it durable; if that raises, nothing of it stays."""
        end = self.size + len(frame)
        try:
            if end > self.filled:
                self._fill((end // FILL + 1) * FILL - self.filled, sync=False)  # synced with the frame
            self._write(frame, self.size)
            os.fdatasync(self.fd)
        except BaseException:  # a frame cut short must not sit in front of the next one
            self._erase(self.size, len(frame))
            raise
        self.size = end

    def reset(self, *, shrink_above: int) -> None:
        """Start again at the beginning (every frame is applied and synced in SQLite); a file grown past
        ``shrink_above`` gives its space back."""
        try:
            if self.filled > shrink_above:
                raise OSError("shrink")
            self._write(bytes(self.size), 0)
            os.fdatasync(self.fd)
        except OSError:
            # Emptied instead (the next append fills it again). Half zeroed, the log would end at its
            # first zero header and hide frames appended after its old ones: no more appends then.
            try:
                os.ftruncate(self.fd, 0)
            except OSError:
                self.broken = True
                raise
            self.filled = 0
        self.size = 0

    def remove(self) -> None:
        if self._named:
            with contextlib.suppress(OSError):
                os.unlink(self.path)
        self.forget()

    def forget(self) -> None:
        """Close the descriptor (and so drop the writer's lock); call once."""
        with contextlib.suppress(OSError):
            os.close(self.fd)

    def _write(self, data: bytes, at: int) -> None:
        """All of ``data`` at ``at``, or OSError: a short write (a disk filling up) must not count as a frame."""
        written = os.pwrite(self.fd, data, at)
        if written != len(data):
            raise OSError(errno.ENOSPC, f"wrote {written} of {len(data)} bytes to the intent log {self.path}")

    def _fill(self, n: int, *, sync: bool = True) -> None:
        """Zeros after the file's end: frames written over them grow nothing."""
        self._write(bytes(n), self.filled)
        if sync:
            os.fdatasync(self.fd)
        self.filled += n

    def _erase(self, at: int, n: int) -> None:
        """Zero a frame whose write failed (the next frame goes there); cut the file there if even that fails."""
        try:
            self._write(bytes(n), at)
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, at)
                self.filled = at


ORPHAN_AGE = 60.0
"""Seconds since an unlocked, unregistered log was last written (or created) before :func:`sweep_orphans` takes it
for a dead process's: an older version's writer leaves its new log unlocked for the moment between creating
and locking it (a process descheduled there on a busy machine, for far less than this)."""


def sweep_orphans(journal: Path, conn: sqlite3.Connection) -> None:
    """Delete the logs beside ``journal`` that no process writes and no registration names (best effort).

    Why: a process killed while creating its log (or after removing its registration, before its file;
    or a daemon thread starting a log during interpreter exit) leaves a file that
    :class:`.sqlite_frames.Watch` never sees, as it looks at registrations only: each stayed forever.
    Such a file holds nothing to apply (a frame is acknowledged only after its log's registration
    committed, and a registration is removed only once its frames are applied). Safe against live
    writers: a log gets its name already locked (:class:`.LogFile`), and the registrations are read
    *after* the locks were seen free,
    so a writer that registered and then died is seen registered. ``conn`` must be outside a transaction.
    A file younger than :data:`ORPHAN_AGE` stays: older versions (a journal is shared while users upgrade one
    kernel at a time) create their log under its final name and lock it just after; removed in between, the
    log they then wrote was found by no one, and the calls it acknowledged were lost at their kill.
    """
    name = re.compile(re.escape(journal.name) + r"-log\.[0-9]+\.[0-9a-f]{8}(?:\.new)?")
    try:
        found = [n for n in os.listdir(journal.parent) if name.fullmatch(n)]
    except OSError:
        return
    free = []
    for n in found:
        try:
            fd = open_log(journal.with_name(n))
        except OSError:
            continue
        try:
            st = os.fstat(fd)
            young = time.time() - st.st_mtime < ORPHAN_AGE  # a clock set back: young too
            if not young and not writer_alive(fd):
                free.append(n)
        except OSError:
            continue
        finally:
            os.close(fd)
    if not free:
        return
    try:
        known = {key[len(PREFIX):] for key, _ in registered(conn, journal)}
    except (sqlite3.Error, JournalFormatError):
        return
    for n in free:
        if n not in known and not claimed(journal, n, found):
            _log.debug("durable_nb: removing %s, an intent log no process writes or registers", n)
            with contextlib.suppress(OSError):
                os.unlink(journal.with_name(n))
