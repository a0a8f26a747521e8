"""What a read-only SqliteStore reads: the journal with its dead writers' intent logs applied, in memory.

Why: under ``"call"`` a process's last calls are durable in its intent log (``<journal>-log.*``) until it
writes them into SQLite; after a kill the next *writer* applies them. A read-only store cannot write, so it
read the file alone: a killed kernel's acknowledged calls were missing (a whole run could be absent), on a
read-only disk for good, and a copy made from what it showed ran their side effects again. So when a dead
writer's log holds frames the journal lacks, a read-only store reads an in-memory copy of the journal with
them applied. Nothing on disk changes; a log whose writer lives is left to it (it applies it within
milliseconds; a writer of this process is asked to at once, :func:`drain_own`), and one this user cannot
read is left out (:func:`.sqlite_frames.unreadable` says so).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
from pathlib import Path

from ..errors import JournalFormatError
from ..journal.lease import current_pid
from .sqlite_file import connect, logs_beside, ro_uri
from .sqlite_frames import apply_logs, decode, log_path, open_log, registered, writer_alive
from .sqlite_intent import IntentLog

_log = logging.getLogger("durable_nb")

RECHECK = 0.05
"""Seconds between two checks of a read-only store's view (a directory scan and a stat per log): a view
in another process is a few milliseconds behind anyway, and a check on every read tripled its cost."""


def applied(journal: Path, conn: sqlite3.Connection) -> sqlite3.Connection:
    """``conn`` (a read-only connection to ``journal``), or an in-memory copy with the dead logs applied.

    A log a writer applied and removed after the copy was taken and before it was read left the copy
    without its frames, and the journal's without them too: a killed writer's acknowledged calls were
    missing from the view (soak: 0 of 4 calls). A log gone by the end is looked at again: its frames are
    in the journal now (a log is removed only after the commit that applied it).
    """
    for _ in range(10):
        keys = _unapplied(journal, conn)
        if not keys:
            return conn
        view = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False, factory=type(conn))
        try:
            conn.backup(view)
            view.execute("BEGIN")
            apply_logs(view, journal, keys, remove=True)
            view.execute("COMMIT")
        except BaseException:
            view.close()
            raise
        if all(log_path(journal, key).exists() for key in keys):
            break
        view.close()
        factory = type(conn)
        conn.close()  # read again through a new connection: the writer's close may have removed the -wal it read
        conn = connect(journal, ro_uri(journal), uri=True, timeout=60.0, isolation_level=None,
                       check_same_thread=False, factory=factory)
    else:
        return conn  # logs applied by others as fast as we look: the journal itself is the view
    conn.close()
    return view


def _unapplied(journal: Path, conn: sqlite3.Connection) -> list[str]:
    """The registered logs whose writer is gone and that hold frames after their applied number."""
    keys = []
    for key, done in registered(conn, journal):
        try:
            fd = open_log(log_path(journal, key))
        except OSError:
            continue  # gone (nothing to show), or not readable by this user: viewed without it
        try:
            if writer_alive(fd):
                continue
            with os.fdopen(os.dup(fd), "rb") as fh:
                data = fh.read()
        finally:
            os.close(fd)
        try:
            frames = decode(data, str(log_path(journal, key)))
        except JournalFormatError:
            continue  # damaged: a writer refuses it, saying how to move it away; a view goes without it
        if any(seq > done for seq, _ts, _ops in frames):
            keys.append(key)
    return keys


def signature(journal: Path) -> tuple[object, ...]:
    """What a read-only view depends on: the journal, its WAL, and each log (its size, time, writer alive).

    A view is read again when this changed: a writer that applied or removed a log, or died, changes it.
    """
    parts: list[object] = []
    for path in (journal, Path(f"{journal}-wal")):
        with contextlib.suppress(OSError):
            st = os.stat(path)
            parts.append((path.name, st.st_size, st.st_mtime_ns, st.st_ino))
    for path in logs_beside(journal):
        try:
            fd = open_log(path)
        except OSError:
            continue
        try:
            st = os.fstat(fd)
            parts.append((path.name, st.st_size, st.st_mtime_ns, writer_alive(fd)))
        finally:
            os.close(fd)
    return tuple(parts)


def drain_own(journal: Path) -> bool:
    """Apply this process's pending frames of ``journal`` now (for a read-only store); whether there were any.

    Why: a read-only view applies only dead writers' logs, and leaves a live writer's to it (it applies them
    within milliseconds). A writer in the *same* process had just ended a run: a read-only store or widget of
    the kernel read at once and did not show it. The writer is here, so its applier's transaction runs now.
    A failure (a full disk) is the writer's to report: the view reads the journal as it is.
    """
    if not IntentLog._all:
        return False  # the hot path: no writer in this process
    try:
        st = os.stat(journal)
    except OSError:
        return False
    log = IntentLog._all.get((current_pid(), st.st_dev, st.st_ino))
    if log is None or log.closed or not log.pending:
        return False
    try:
        log.drain()
    except (sqlite3.Error, OSError, JournalFormatError) as exc:
        _log.debug("durable_nb: a read-only store could not apply this process's log %s: %s", log.path, exc)
    return True
