"""Frames of the intent log (:mod:`.sqlite_intent`) and how their transitions are written into SQLite.

A frame is ``(sequence number, CLOCK_MONOTONIC ns, transitions)``, pickled, behind
its length and a CRC32. Loading one uses an unpickler that refuses every class and
function, so applying a log (a dead process's, at the next open) never runs code
from it, whoever wrote the file. A transition is written exactly as the synced path
writes it, and only while its context still owns the run (the fence the synced path
checks in the same transaction). A log's writer holds an OS lock on it while it
lives (:class:`Watch` asks): a log whose lock is free belongs to a dead process.

Over 400 lines because a frame's format, how it is applied and which registered logs a reader applies
(whose writer died, which journal they belong to) are read together; the file itself is :mod:`.sqlite_logfile`.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import logging
import mmap
import os
import pickle
import re
import sqlite3
import stat
import struct
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ..errors import JournalFormatError, JournalWriteError
from ..journal.lease import _FLOCK
from .sqlite_file import connect, is_sqlite

_log = logging.getLogger("durable_nb")

PREFIX = "intent_log:"
"""``meta`` keys of registered logs: ``intent_log:<file name>`` -> last applied sequence number."""

Op = tuple[Any, ...]
"""A transition: ``(kind, run_id, owner, ...)``; kinds ``take``, ``pending``, ``outcome``, ``close``."""

_HEAD = struct.Struct("<II")  # body length, crc32 of the body
_PROBE = _FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, 0, 1, 0)
"""The lock a log's writer holds while it lives: taken with F_OFD_SETLK, asked for with F_OFD_GETLK."""
_dumps = pickle.dumps


# ---------------------------------------------------------------- frames


def encode(seq: int, ts: int, ops: Sequence[Op]) -> bytes:
    """One frame: length, checksum, then ``(seq, ts, ops)`` pickled (plain values only: :class:`_PlainValues`)."""
    body = _dumps((seq, ts, ops), 5)
    return _HEAD.pack(len(body), zlib.crc32(body)) + body


class _PlainValues(pickle.Unpickler):
    """Loads tuples, lists, str, bytes, numbers and None; any class or function is refused.

    Pickle runs code only through the globals it looks up (``find_class``): with none,
    loading a frame cannot run code, whoever wrote the file.
    """

    def find_class(self, module: str, name: str) -> Any:
        raise ValueError(f"a frame may not name {module}.{name}")


_SCALARS = (str, bytes, int, float, type(None))


def _decode_body(body: bytes) -> tuple[int, int, list[Op]]:
    seq, ts, ops = _PlainValues(io.BytesIO(body)).load()
    if not (isinstance(seq, int) and isinstance(ts, int) and isinstance(ops, list)):
        raise ValueError("not a frame")
    for op in ops:
        if not (isinstance(op, tuple) and len(op) >= 3 and all(isinstance(v, _SCALARS) for v in op)):
            raise ValueError("not a transition")
    return seq, ts, ops


def decode(data: bytes, where: str) -> list[tuple[int, int, list[Op]]]:
    """Every complete frame of a log; a torn last frame (a write cut by a crash) is not one.

    The frames end at the first zero header (the log is zero-filled ahead of them). A
    frame's pickle ends with ``STOP`` (``.``), never a zero byte, so the written part
    of the file is what remains once its trailing zeros are stripped.
    """
    frames = []
    pos = 0
    end = len(data.rstrip(b"\0"))
    while pos < end:
        if end - pos < _HEAD.size:
            break  # torn header: the last write never finished
        size, crc = _HEAD.unpack_from(data, pos)
        if size == 0:
            break  # zeros: no frame was written here (a torn frame whose first page never reached the disk)
        body = data[pos + _HEAD.size:pos + _HEAD.size + size]
        if len(body) < size:
            break  # torn body
        if zlib.crc32(body) != crc:
            if pos + _HEAD.size + size >= end:
                break  # the last frame, torn inside
            raise JournalFormatError(
                f"the intent log {where} is damaged at byte {pos} (a frame fails its checksum and frames follow "
                f"it). Nothing was applied from it. Keep a copy of the journal and the log, then move the log "
                f"away to open the journal without its last transitions."
            )
        try:
            frames.append(_decode_body(body))
        except (ValueError, TypeError, EOFError, pickle.UnpicklingError) as exc:
            raise JournalFormatError(
                f"the intent log {where} has a frame that is not durable_nb's ({exc}) at byte {pos}. Move the "
                f"log away to open the journal without it."
            ) from None
        pos += _HEAD.size + size
    return frames


# ---------------------------------------------------------------- applying


def apply_frames(conn: sqlite3.Connection, key: str, frames: Iterable[tuple[int, int, list[Op]]]) -> bool:
    """Inside a write transaction: apply one log's frames after its applied number, and move that number.

    False if the log is not registered (already recovered and removed by someone else).
    """
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    if row is None:
        return False
    applied = {key: int(row[0])}
    if _apply(conn, ((key, seq, ops) for seq, _ts, ops in frames), applied):
        conn.execute("UPDATE meta SET value = ? WHERE key = ?", (str(applied[key]), key))
    return True


def _apply(conn: sqlite3.Connection, frames: Iterable[tuple[str, int, list[Op]]], applied: dict[str, int]) -> bool:
    """Apply, in the order given, each frame after its log's number in ``applied`` (moved on); False: none was.

    A frame of a log missing from ``applied`` (not registered) is skipped. One fence for all:
    a context's run is checked once per transaction.
    """
    fence: dict[str, bool] = {}
    moved = False
    for key, seq, ops in frames:
        last = applied.get(key)
        if last is None or seq <= last:
            continue
        for op in ops:
            apply_op(conn, op, fence)
        applied[key] = seq
        moved = True
    return moved


def apply_op(conn: sqlite3.Connection, op: Op, fence: dict[str, bool]) -> None:
    """One transition, as the synced path writes it; a context whose run is no longer its own writes nothing."""
    kind, run_id, owner = op[0], op[1], op[2]
    if kind == "take":
        seen, now = op[3], op[4]
        if seen is None:
            took = conn.execute(
                "INSERT INTO runs (run_id, status, created_at, updated_at, attempts, owner) "
                "VALUES (?, 'RUNNING', ?, ?, 1, ?) ON CONFLICT (run_id) DO NOTHING",
                (run_id, now, now, owner),
            ).rowcount == 1
        else:
            took = conn.execute(
                "UPDATE runs SET status = 'RUNNING', updated_at = ?, attempts = attempts + 1, owner = ? "
                "WHERE run_id = ? AND attempts = ?",
                (now, owner, run_id, seen),
            ).rowcount == 1
        fence[owner] = took
        if not took:
            _log.debug("durable_nb: run %r was taken over before its transitions were applied", run_id)
        return
    ok = fence.get(owner)
    if ok is None:
        row = conn.execute("SELECT owner FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        ok = fence[owner] = row is not None and row[0] == owner
    if not ok:
        return
    if kind == "pending":
        conn.execute(
            "INSERT INTO calls (run_id, idx, call_id, args_digest, status, started_at) "
            "VALUES (?, ?, ?, ?, 'PENDING', ?)",
            op[1:2] + op[3:],
        )
    elif kind == "outcome":
        conn.execute(
            "UPDATE calls SET status = ?, origin = ?, payload = ?, payload_format = 'pickle', result_preview = ?, "
            "error_preview = ?, finished_at = ? WHERE run_id = ? AND idx = ?",
            (*op[4:], run_id, op[3]),
        )
    elif kind == "close":
        conn.execute(
            "UPDATE runs SET status = coalesce(?, status), updated_at = ?, owner = NULL WHERE run_id = ? AND owner = ?",
            (op[3], op[4], run_id, owner),
        )
        fence[owner] = False  # closed: nothing of this context may follow
    else:
        raise JournalFormatError(f"the intent log holds an unknown transition {kind!r}: written by a newer durable_nb?")


_LOG_NAME = re.compile(r"[^/\\\0]+-log\.[0-9]+\.[0-9a-f]{8}")
"""What :class:`~.sqlite_intent.IntentLog` names a log (``<journal>-log.<pid>.<token>``); any journal name,
since a journal moved with its logs keeps their names."""


def registered(conn: sqlite3.Connection, journal: Path) -> list[tuple[str, int]]:
    """The logs of ``journal`` registered in its ``meta`` and their applied numbers.

    A registration that does not name a log file is skipped: a log found dead is read and then *deleted*,
    so a journal from someone else registering ``intent_log:notes.txt`` (or the journal's own name) made
    the next reader delete that file. So is one naming another journal's log (:func:`_foreign`).
    """
    out = []
    for key, value in conn.execute(
        "SELECT key, value FROM meta WHERE key >= ? AND key < ?", (PREFIX, PREFIX[:-1] + ";")
    ):
        if not (isinstance(key, str) and _LOG_NAME.fullmatch(key[len(PREFIX):])):
            _log.debug("durable_nb: %r in table meta names no intent log: ignored", key)
            continue
        if _foreign(journal, key[len(PREFIX):]):
            _log.debug("durable_nb: %r in %s is another journal's intent log (a copy's): ignored", key, journal)
            continue
        if not (isinstance(value, int) or (isinstance(value, str) and value.isdigit())):
            raise JournalFormatError(
                f"the intent log registration {key!r} in table meta holds {value!r}, not the number of its last "
                f"applied frame: the journal was edited by hand or damaged. Nothing was applied or written. "
                f"Restore it from a backup, or delete that row (sqlite3 JOURNAL \"DELETE FROM meta WHERE key = "
                f"'{key}'\") to open it without what that log holds."
            )
        out.append((key, int(value)))
    return out


def _foreign(journal: Path, name: str) -> bool:
    """Whether the log ``name`` belongs to another journal: one beside ``journal``, named in ``name``.

    A copy of a journal (``cp``, SQLite's backup) carries its registrations: once the original's writer
    died, the copy's first reader applied the original's log to the copy and deleted it, and the original
    lost the acknowledged calls it held. A journal renamed with its logs keeps them, even once a new journal
    was created at its old name (``mv j.db old.db`` after a crash, then the default store): that one does not
    register the log, the original of a copy does.
    """
    owner = _OWNER.sub("", name)
    if owner == journal.name:
        return False
    other = journal.with_name(owner)
    try:
        if os.path.samefile(other, journal):
            return False
    except OSError:  # no such file: this journal, renamed with its logs
        return False
    return registers(other, PREFIX + name)


def registers(journal: Path, key: str) -> bool:
    """Whether the file ``journal`` is a journal registering the log ``key``; True when that cannot be read.

    Read-only, never written. Why True: a reader applies and deletes the logs it takes for its own, so a log
    whose journal cannot be told is left alone (it stays on disk; the journal that registers it applies it).
    A database without a ``meta`` table (another application's) registers nothing. Only a plain file is asked:
    the name comes from the journal's ``meta`` (someone else's journal), and SQLite's open of a FIFO blocks
    forever.
    """
    try:
        if not stat.S_ISREG(os.stat(journal).st_mode):
            return True
        conn = connect(journal, f"{journal.absolute().as_uri()}?mode=ro", uri=True, timeout=1.0)
    except (sqlite3.Error, ValueError, OSError):
        return True
    try:
        if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchone() is None:
            return False
        return conn.execute("SELECT 1 FROM meta WHERE key = ?", (key,)).fetchone() is not None
    except sqlite3.Error:
        return True
    finally:
        conn.close()


_OWNER = re.compile(r"-log\.[0-9]+\.[0-9a-f]{8}\Z")


def claimed(journal: Path, name: str, logs: list[str]) -> bool:
    """Whether another journal beside ``journal`` registers the log ``name`` (then it is no orphan).

    Why: ``mv j.db old.db`` once the kernel writing it died leaves its log named ``j.db-log.*``; a new ``j.db``
    (the default store makes one) found that log free and unregistered, and deleted old.db's acknowledged calls.
    """
    try:
        with os.scandir(journal.parent) as entries:
            files = {e.name: e.path for e in entries if e.name not in {journal.name, *logs} and e.is_file()}
    except OSError:
        return True
    # Not the -wal, -shm or -journal of a database (this journal's above all): no journal, and opening one
    # to read its header dropped, at its close, this process's SQLite locks on it (the -shm's DMS byte).
    side = {f"{db}{suffix}" for db in [journal.name, *files] for suffix in ("-wal", "-shm", "-journal")}
    others = [p for n, p in files.items() if n not in side]
    return any(is_sqlite(p) and registers(Path(p), PREFIX + name) for p in others)


def log_path(journal: Path, key: str) -> Path:
    return journal.with_name(key[len(PREFIX):])


class NotALog(OSError):
    """A file named like an intent log that is no plain file (a FIFO, a device, a folder): durable_nb made none."""


def open_log(path: Path | str) -> int:
    """A read-only descriptor of the log file at ``path``; OSError when there is none (:class:`NotALog` too).

    Why non-blocking, never through a symlink, and only a plain file: the names come from the folder and
    from the journal's ``meta`` (someone else's journal, a shared folder; a tar keeps FIFOs and symlinks),
    and a FIFO named like a log made every read of the journal block forever in ``open``, a link to a
    device (``/dev/zero``) in ``read``. durable_nb writes its logs as plain files and links none.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOFOLLOW)
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
        raise NotALog(errno.ELOOP, "a symlink, not a plain file", str(path)) from None
    try:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            return fd
    except BaseException:
        os.close(fd)
        raise
    os.close(fd)
    raise NotALog(errno.EINVAL, "not a plain file", str(path))


def read_log(path: Path) -> bytes:
    """The bytes of the log file at ``path`` (see :func:`open_log`)."""
    with os.fdopen(open_log(path), "rb") as fh:
        return fh.read()


def apply_logs(conn: sqlite3.Connection, journal: Path, keys: Sequence[str], *, remove: bool) -> list[Path]:
    """Inside a write transaction: apply these logs (dead ones, or all for a steal) in the order written.

    With ``remove``, their registrations go too; returns the files to delete once committed.
    """
    frames: list[tuple[int, int, str, int, list[Op]]] = []
    files = []
    for key in keys:
        path = log_path(journal, key)
        try:
            data = read_log(path)
        except FileNotFoundError:
            data = b""
        except OSError as exc:
            raise unreadable(journal, path, exc) from None
        files.append(path)
        frames.extend((ts, seq, key, i, ops) for i, (seq, ts, ops) in enumerate(decode(data, str(path))))
    frames.sort(key=lambda f: (f[0], f[2], f[3]))  # by time written; one log's frames keep their order
    applied: dict[str, int] = {k: v for k, v in registered(conn, journal) if k in keys}
    _apply(conn, ((key, seq, ops) for _ts, seq, key, _, ops in frames), applied)
    for key, value in applied.items():
        if remove:
            conn.execute("DELETE FROM meta WHERE key = ?", (key,))
        else:
            conn.execute("UPDATE meta SET value = ? WHERE key = ?", (str(value), key))
    return files if remove else []


def unreadable(journal: Path, path: Path, exc: OSError) -> JournalWriteError:
    """A registered log this process cannot read (another user's, a permission changed): what to do."""
    if isinstance(exc, NotALog):
        return JournalWriteError(
            f"the intent log {path} registered in the journal {journal} is not a plain file (durable_nb writes "
            f"its logs as plain files, so someone else put it there): it holds no calls. Move it away to open the "
            f"journal, and check who can write the folder {journal.parent}. Nothing was written."
        )
    return JournalWriteError(
        f"the intent log {path} of the journal {journal} cannot be read ({exc.strerror}): it holds the last "
        f"calls of a process that wrote the journal, which every reader must apply first. Give this user "
        f"read and write access to it (it belongs to whoever ran that process), or open the journal "
        f"read-only to view it without those calls: dnb.SqliteStore({str(journal)!r}, read_only=True). "
        f"Nothing was written."
    )


# ---------------------------------------------------------------- whose writer is gone


def writer_alive(fd: int) -> bool:
    """Whether a live process holds the writer's lock of the log open at ``fd`` (asked, not taken)."""
    try:
        probe = fcntl.fcntl(fd, fcntl.F_OFD_GETLK, _PROBE)
    except OSError:
        return True  # cannot tell: treat it as alive, never as a log to take over
    return bool(_FLOCK.unpack(probe)[0] != fcntl.F_UNLCK)


def try_lock(fd: int) -> bool:
    try:
        fcntl.fcntl(fd, fcntl.F_OFD_SETLK, _PROBE)
    except (BlockingIOError, PermissionError):
        return False
    return True


STEALS, LOGS = 0, 8
"""Offsets of the two counters in ``<journal>-counters``."""
_I64 = struct.Struct("<q")


class Counters:
    """``<journal>-counters``: two numbers every process of the journal maps (a shared page, no fsync).

    ``STEALS`` goes up with each steal (under the write turn); ``LOGS`` with each log
    registered, removed or recovered, so :class:`Watch` reads the registrations again
    only when they changed, for the price of a memory read per open.
    """

    def __init__(self, journal: Path) -> None:
        # Never through a symlink: durable_nb makes none, and one planted in a folder others can write
        # (a shared .durable/) made the counters overwrite bytes of whatever file it named.
        try:
            fd = os.open(f"{journal}-counters", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
            raise JournalWriteError(
                f"{journal}-counters is a symlink; durable_nb never makes one, so whoever can write the folder "
                f"{journal.parent} planted it (and could change the journal too). Check the folder, remove the "
                f"link, and keep journals in a folder only you can write."
            ) from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):  # a FIFO: a bare "[Errno 22] Invalid argument" from ftruncate
                raise JournalWriteError(
                    f"{journal}-counters is not a plain file; durable_nb makes it as one, so whoever can write the "
                    f"folder {journal.parent} put it there. Check the folder, remove it, and keep journals in a "
                    f"folder only you can write."
                )
            if st.st_size < 16:
                os.ftruncate(fd, 16)
            self._map = mmap.mmap(fd, 16)
        finally:
            os.close(fd)

    def value(self, slot: int) -> int:
        return int(_I64.unpack_from(self._map, slot)[0])

    def bump(self, slot: int) -> None:
        _I64.pack_into(self._map, slot, self.value(slot) + 1)

    def close(self) -> None:
        with contextlib.suppress(BufferError, ValueError):
            self._map.close()


class Watch:
    """The other logs of a journal, each with a descriptor kept open to ask whether its writer still lives."""

    def __init__(self, journal: Path) -> None:
        self._journal = journal
        self._fds: dict[str, int] = {}
        self._keys: list[str] = []
        self._epoch: int | None = None
        self._others: tuple[int | None, str | None, list[str]] = (None, None, [])
        """``(epoch, own, the other keys)``: worked out again only when one of the first two moved."""
        self.counters = Counters(journal)

    def quiet(self, own: str | None) -> bool:
        """No other log registered, as last read, and the registrations did not change since."""
        keys = self._keys
        return (not keys or (len(keys) == 1 and keys[0] == own)) and not self._fds and \
            _I64.unpack_from(self.counters._map, LOGS)[0] == self._epoch

    def dead(self, conn: sqlite3.Connection, own: str | None) -> list[str]:
        """Registered logs whose writer is gone (its lock on the log is free), or whose file is gone.

        The registrations are read again only when ``LOGS`` moved (read first: a registration
        committed meanwhile moves it again). A log registered after this process locked a run
        cannot hold that run's transitions, so the count read now is recent enough.
        """
        epoch = self.counters.value(LOGS)
        if epoch != self._epoch:
            self._keys, self._epoch = [k for k, _ in registered(conn, self._journal)], epoch
        seen_epoch, seen_own, keys = self._others
        if seen_epoch != epoch or seen_own != own:
            keys = [k for k in self._keys if k != own]
            self._others = (epoch, own, keys)
            self._forget(set(keys))
        if not keys:
            return []
        fds = self._fds
        dead = []
        for key in keys:
            fd = fds.get(key)
            if fd is None:
                path = log_path(self._journal, key)
                try:
                    fd = fds[key] = open_log(path)
                except FileNotFoundError:
                    dead.append(key)
                    continue
                except OSError as exc:
                    raise unreadable(self._journal, path, exc) from None
            arg = fcntl.fcntl(fd, fcntl.F_OFD_GETLK, _PROBE)
            if _FLOCK.unpack(arg)[0] == fcntl.F_UNLCK:
                dead.append(key)
        return dead

    def _forget(self, keep: set[str]) -> None:
        """Close the descriptors of logs no longer registered."""
        for gone in [k for k in self._fds if k not in keep]:
            with contextlib.suppress(OSError):
                os.close(self._fds.pop(gone))

    def close(self) -> None:
        self._forget(set())
        self.counters.close()
