"""Journals opened through a symlink: their real path, and the intent logs older versions left beside the link.

A journal's companions (``-log.<pid>.<token>``, ``-counters``) live beside the journal *file*, so every
process finds them whichever path it was given; :class:`~durable_nb.stores.sqlite.SqliteStore` opens
the real path (:func:`real_path`). Versions before that wrote them beside the path given, a symlink in
another folder maybe: :func:`adopt_logs_beside` brings a dead process's log from there.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from pathlib import Path

from ..errors import JournalWriteError, warn_at_user_code
from . import sqlite_frames
from .sqlite_file import logs_beside
from .sqlite_logfile import sync_folder


def real_path(given: Path) -> Path:
    """``given`` with its symlinks resolved; as given when they loop (opening it then names the problem)."""
    try:
        return given.resolve()
    except (OSError, RuntimeError):  # a symlink loop: RuntimeError before Python 3.13
        return given


def adopt_logs_beside(link: Path, real: Path) -> None:
    """Move the intent logs a dead process left beside ``link`` (a symlink to ``real``) beside ``real``.

    Why: before the store resolved symlinks, a process that opened a journal through a symlink in another
    folder wrote its log there (``<link>-log.<pid>.<token>``), registered in the journal by file name. A store
    now looks beside the real file only: such a log, left by a crash before an upgrade, would count as gone
    (its registration dropped, unapplied) and the acknowledged calls it holds would run again. Moved under
    the same name beside the real file, it is where :func:`sqlite_frames.log_path` looks, and is applied as
    any dead process's log. A log whose writer still lives (a process of an older durable_nb writing now) is
    left where it is, with a warning.
    """
    moved = False
    for log in logs_beside(link):
        target = real.with_name(log.name)
        try:
            if target.exists() and os.path.samefile(log, target):
                continue  # already beside the real file (a symlinked folder, a link of the same folder)
            fd = sqlite_frames.open_log(log)
        except OSError:
            continue
        try:
            alive = sqlite_frames.writer_alive(fd)
        finally:
            os.close(fd)
        if alive or target.exists():
            warn_at_user_code(
                f"an intent log of a running process ({log}) sits beside the symlink {link}, where an older "
                f"durable_nb wrote it; this one opens the journal at its real path {real} and does not see it. "
                f"Open the journal with one durable_nb version at a time.", UserWarning)
            continue
        try:
            os.replace(log, target)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise JournalWriteError(
                    f"could not move the intent log {log} (left beside the symlink {link} by an older durable_nb "
                    f"and holding acknowledged calls) beside the journal {real} ({exc}); move it there by hand "
                    f"under the same name before opening the journal."
                ) from None
            shutil.copyfile(log, target)  # another filesystem: copied, synced, then removed
            with open(target, "rb+") as copied:
                os.fsync(copied.fileno())
            log.unlink()
        moved = True
    if moved:
        sqlite_frames.Counters(real).close()  # a reader applies dead logs only where the counters exist
        with contextlib.suppress(OSError):
            sync_folder(real.parent)
