"""The embedded journal: one SQLite file in WAL mode, one fsync per durable call.

Why these settings:

* ``journal_mode=WAL``: a commit appends to the WAL and needs one fsync; readers
  (the journal widget) never block the writer.
* ``synchronous=FULL`` (durability ``"call"`` and ``"transition"``): in WAL mode
  NORMAL does not fsync at commit, so a power loss could drop the last
  transitions. ``"relaxed"`` uses NORMAL: it survives a process crash, not a
  power loss.
* ``busy_timeout``: several processes (a notebook, Flink workers, a second kernel)
  write one file; a writer waits for the lock instead of failing.
* ``BEGIN IMMEDIATE`` for writes: take the write lock up front, so a read-then-write
  transaction (lease checks) cannot be upgraded into a deadlock.

Commits (:mod:`.sqlite_commit`): concurrent writes share one commit (group
commit); under ``"call"`` an outcome is held back until the next write, a run's
end, a boundary (:meth:`SqliteStore.boundary`, :meth:`SqliteStore.flush`) or a
short delay. Leases (:mod:`durable_nb.journal.lease`): a run is held by an OS
lock on the journal file and an owner table in this process, so opening a run
and replaying it writes nothing; the first write takes the run in the journal
(fenced by ``runs.attempts``) and every later write is fenced by ``runs.owner``.

Opening validates before it writes (:mod:`.sqlite_file`); the schema and its
migrations are in :mod:`.sqlite_schema` and run at the first write. A ``map``
reads its runs ahead in chunks, under their OS locks (:mod:`.sqlite_prefetch`).

Over 400 lines because the store protocol's reads, leases and writes share one
connection scheme and one fence; what could live apart (commits, prefetch, file
checks, schema, text binding, time travel, read-only views) is in the ``sqlite_*`` modules.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import (
    JournalFormatError,
    JournalReadOnlyError,
    JournalWriteError,
    LeaseLostError,
    RunBusyError,
    check_run_id,
    warn_at_user_code,
)
from ..journal.lease import (
    FileLocks,
    Lease,
    current_pid,
    describe_lock_holder,
    describe_owner,
    end_owner,
    owner_is_alive,
)
from ..journal.queries import calls_where, check_call_index, check_page, check_prefix
from ..journal.records import CallRecord, DiscardedCall, Origin, Outcome, RunRecord, RunStatus, Status, decode_prompt
from ..journal.store import Store
from . import sqlite_file, sqlite_fork, sqlite_frames, sqlite_intent, sqlite_links, sqlite_schema, sqlite_view
from .bad_rows import BadRow, in_order, member
from .sqlite_commit import Committer, Op
from .sqlite_frames import LOGS, STEALS, Watch
from .sqlite_intent import IntentLog, LogClosed
from .sqlite_prefetch import Prefetch
from .sqlite_text import Connection, hand_typed, lenient_text, prefix_where, refuse_hand_typed, run_is, text
from .sqlite_timetravel import SqliteTimeTravel, delete_runs

if TYPE_CHECKING:
    import pandas as pd

_log = logging.getLogger("durable_nb")
SCHEMA_VERSION = sqlite_schema.LATEST
DURABILITY = ("call", "transition", "relaxed")
FLUSH_DELAY = 0.02
"""Seconds a held-back outcome waits for the next commit before the flusher commits it."""
_CAN_LOG = hasattr(os, "fdatasync") and hasattr(__import__("fcntl"), "F_OFD_SETLK")
"""Where the intent log works (Linux): elsewhere ``"call"`` commits are synced SQLite transactions."""

_CALL_COLS = "run_id, idx, call_id, args_digest, status, origin, result_preview, error_preview, started_at, finished_at"

# Opening a run: (run_id, attempts, status) of the run, then its calls (payloads included), index order.
_OPEN_COLS = (
    "r.run_id, r.attempts, r.status, c.idx, c.call_id, c.args_digest, c.status, c.origin, c.result_preview, "
    "c.error_preview, c.started_at, c.finished_at, c.payload FROM runs r LEFT JOIN calls c ON c.run_id = r.run_id"
)
_OPEN_SELECT = f"SELECT {_OPEN_COLS} WHERE r.run_id = ? ORDER BY c.idx"
_OPEN_SELECT_MANY = "SELECT " + _OPEN_COLS + " WHERE r.run_id IN ({}) ORDER BY r.run_id, c.idx"
"""The same for a chunk of runs (:mod:`.sqlite_prefetch`); ``{}`` takes the placeholders."""
_TOUCH_RUN = "UPDATE runs SET updated_at = max(updated_at, ?) WHERE run_id = ?"
"""An outcome written from outside the run (``store.answer``, ReconcilePanel) is the run's last activity:
``prune --older-than`` keeps it, and a prune that read the run before sees it changed and keeps it."""

# Dict lookups instead of Enum(value) calls: opening a run builds one record per call.
_STATUS = {s.value: s for s in Status}
_ORIGIN = {o.value: o for o in Origin}
_RUN_STATUS = {s.value for s in RunStatus}


def _call(row: tuple[Any, ...], payload: bytes | None = None, prompt: str | None = None, left_out: bool = False,
          ) -> CallRecord:
    return CallRecord(
        text(row[0]), row[1], text(row[2]), row[3],
        _STATUS.get(row[4]) or member(Status, row[4], "calls", "status", row[0], row[1]),
        (_ORIGIN.get(row[5]) or member(Origin, row[5], "calls", "origin", row[0], row[1])) if row[5] else None,
        text(row[6]), text(row[7]), row[8], row[9], payload, *(_NO_PROMPT if prompt is None else decode_prompt(prompt)),
        left_out,
    )


_NO_PROMPT = (None, None)


def _opened(run_id: str, r: tuple[Any, ...]) -> CallRecord:
    """A call from an ``_OPEN_SELECT`` row: :func:`_call` inlined, the hot path of opening a run."""
    call_id, result_preview, error_preview = r[4], r[8], r[9]
    return CallRecord(
        run_id, r[3], call_id if call_id.__class__ is str else text(call_id), r[5],
        _STATUS.get(r[6]) or member(Status, r[6], "calls", "status", run_id, r[3]),
        (_ORIGIN.get(r[7]) or member(Origin, r[7], "calls", "origin", run_id, r[3])) if r[7] else None,
        result_preview if result_preview.__class__ is not bytes else text(result_preview),
        error_preview if error_preview.__class__ is not bytes else text(error_preview),
        r[10], r[11], r[12],
    )


def _seen(run_id: str, rows: list[tuple[Any, ...]]) -> tuple[Any, Any]:
    """The run's attempts and status from ``_OPEN_SELECT`` rows; a status no one writes is a BadRow, as in
    :meth:`SqliteStore.runs` (a replay overwrote it with its own, hiding the edit)."""
    if not rows:
        return None, None
    status = rows[0][2]
    return rows[0][1], status if status in _RUN_STATUS else member(RunStatus, status, "runs", "status", run_id, None)


def _calls_where(run_id: str | None, status: Status | str | None, call_id: str | None, not_call_id: str | None,
                 ) -> tuple[str, list[Any]]:
    """:func:`calls_where` with :func:`.sqlite_text.run_is` for a run id a lenient read showed (hand-typed)."""
    if run_id is None or hand_typed(run_id) is None:
        return calls_where(run_id, status, call_id, "?", not_call_id)
    where, params = calls_where(None, status, call_id, "?", not_call_id)
    clause, ids = run_is(run_id)
    return (" WHERE " + clause + (" AND " + where[len(" WHERE "):] if where else "")), [*ids, *params]


_Read = TypeVar("_Read", bound=Callable[..., Any])


def _explains_damage(read: _Read) -> _Read:
    """A read of a damaged file raises :func:`.sqlite_file.damaged`'s error, which says what to do."""

    @functools.wraps(read)
    def reading(self: SqliteStore, *args: Any, **kwargs: Any) -> Any:
        try:
            try:
                return read(self, *args, **kwargs)
            except sqlite3.OperationalError as exc:
                if not lenient_text(exc, [c for _, c in self._conns]):
                    raise
                return read(self, *args, **kwargs)  # a read writes nothing: once more, bad bytes read as escapes
        except sqlite3.DatabaseError as exc:
            raise sqlite_file.damaged(self.path, exc) or exc from exc
        except BadRow as exc:
            raise sqlite_file.bad_row(self.path, exc) from None

    return reading  # type: ignore[return-value]


def check_path_type(path: object) -> None:
    """A journal path is text: pathlib's own errors ("expected str, bytes or os.PathLike object", "embedded
    null byte" from deep in realpath) named neither the argument nor what to pass instead."""
    text = os.fspath(path) if isinstance(path, str | os.PathLike) else None
    if not isinstance(text, str):
        raise TypeError(
            f"SqliteStore(path) takes the journal file's path as a str or pathlib.Path, got "
            f"{type(path).__name__} {path!r:.200}; e.g. SqliteStore('journal.db'), or SqliteStore() for "
            f".durable/journal.db."
        )
    if "\x00" in text:
        raise ValueError(f"SqliteStore({text!r:.200}): a file path cannot hold a NUL character; remove it.")


class SqliteStore(SqliteTimeTravel, Store):
    """A journal in one SQLite file (created with its folder if missing).

    Safe to share between threads (one connection per thread) and processes
    (SQLite locking); picklable, so Flink workers reopen the same file.
    Loading a journal unpickles nothing; :meth:`CallRecord.result` does, and a
    journal from someone else can run code when you call it.

    Args:
        path: the journal file (default ``.durable/journal.db``).
        durability: ``"call"`` (default: one fsync per call, an outcome is durable
            with the next call's PENDING, the run's end or a boundary),
            ``"transition"`` (every transition committed on its own) or
            ``"relaxed"`` (every transition committed, no fsync: survives a process
            crash, not a power loss).
        read_only: open for reading only (``?mode=ro`` in a URL); writes raise
            :class:`JournalReadOnlyError`. A journal that cannot be written is
            opened this way automatically.
    """

    max_payload = 1_000_000_000
    """SQLite's limit on one BLOB (``SQLITE_MAX_LENGTH``, as Python's builds leave it)."""

    def __init__(
        self,
        path: str | os.PathLike[str] = Path(".durable") / "journal.db",
        *,
        durability: str = "call",
        read_only: bool = False,
    ) -> None:
        if durability not in DURABILITY:
            raise ValueError(
                f"durability must be one of {', '.join(map(repr, DURABILITY))}, got {durability!r}: 'call' (default, "
                f"one fsync per call), 'transition' (every transition on its own), 'relaxed' (no fsync)."
            )
        sqlite_intent.reap()  # files of store objects dropped without close() (sqlite_intent.dropped)
        if not isinstance(read_only, bool):  # read_only="false" (a config string) opened it read-only
            raise TypeError(f"read_only must be True or False, got {type(read_only).__name__} {read_only!r}")
        check_path_type(path)
        if os.fspath(path) in (":memory:", ""):
            raise ValueError(
                f"SqliteStore({os.fspath(path)!r}): a SqliteStore is a journal file that outlives the process "
                f"(and that Flink workers share); for a journal in memory use dnb.MemoryStore() or "
                f"open_store('memory://'), for a file pass its path, e.g. SqliteStore('journal.db')."
            )
        # Symlinks resolved: the intent logs and ``-counters`` live beside the journal *file*, and every
        # process must find them there whichever path it was given (a log beside a symlink in another
        # folder is invisible to a process that opened the real path: it would drop what the log holds).
        given = Path(path).expanduser().absolute()
        self.path = sqlite_links.real_path(given)
        self.durability = durability
        self._local = threading.local()
        self._boundary = 0
        self._boundary_checked = False
        """A run open inside the current boundary (a map, a Flink bundle) asked :meth:`FileLocks.deleted`: an fstat
        per record cost ~4% of a replayed map's throughput; once per map or bundle is enough."""
        self._wal = False
        self._box: list[FileLocks | None] = [None]  # _files, also seen by the finalizer (sqlite_intent.dropped)
        self._reset_process_state()
        if given != self.path and not read_only and _CAN_LOG:
            sqlite_links.adopt_logs_beside(given, self.path)
        self._open(read_only)

    @property
    def journal_key(self) -> object:
        return ("sqlite", self.path)

    def __repr__(self) -> str:
        return f"SqliteStore({str(self.path)!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (_reopen, (str(self.path), self.durability, self._forced_ro))

    # -- opening --------------------------------------------------------------------

    def _open(self, read_only: bool) -> None:
        path = self.path
        sqlite_file.check_path(path)
        self._forced_ro = read_only
        exposed = sqlite_file.exposure(path)
        if exposed:
            warn_at_user_code(
                f"another local user can change the journal {path}: {exposed}. Its payloads are pickles, and a "
                f"replay (or record.result()) runs what they hold as you; replay it only if you trust every "
                f"user who can write there, or keep journals in a folder only you can write.", UserWarning)
        if not path.exists() or path.stat().st_size == 0:
            if read_only:
                raise JournalReadOnlyError(
                    f"there is no journal at {path} to open read-only (read_only=True, mode=ro in a URL). Check the "
                    f"path, or drop read_only=True (mode=ro) to create a new journal there."
                )
            self._files = sqlite_file.create(path)
            self.read_only: str | None = None
            self._version = 0
            self._create_schema()
            return
        links = path.stat().st_nlink
        if links > 1:
            warn_at_user_code(
                f"the journal {path} has {links} hard links: open it through one path only. Its intent logs and "
                f"-counters file live beside the path a process opens, so a process that opens another link "
                f"does not see a crashed process's log and would run its acknowledged calls again.", UserWarning)
        state = sqlite_file.inspect(path, want_read_only=read_only)
        self._version, self.read_only, self._files = state.version, state.read_only, state.files
        if not self.read_only and not os.path.exists(f"{path}-counters") and sqlite_file.logs_beside(path):
            # Copied or moved without its -counters: reads look for dead logs only where that file exists,
            # so a killed process's acknowledged calls were skipped and ran again.
            sqlite_frames.Counters(path).close()
        if self._version == 0:
            # A database with no schema at all: a process killed while creating this journal (after the
            # WAL switch wrote the header, before the schema committed), or one being created right now.
            # Reads and open_run need the tables, so the schema now, as for a new file.
            if self.read_only:
                raise JournalReadOnlyError(
                    f"there is no journal in {path} yet (an SQLite database without tables: the process creating "
                    f"it died or is still at it) to open read-only ({self.read_only}). Open it once without "
                    f"mode=ro where it can be written, which creates the journal, or check the path."
                )
            self._create_schema()

    def _create_schema(self) -> None:
        """The schema, committed now, so other processes see a journal (a no-op once another made it)."""
        try:
            with self._write():
                pass
        except (sqlite3.Error, JournalWriteError) as exc:
            cause = exc.__cause__ if isinstance(exc, JournalWriteError) and exc.__cause__ else exc
            raise JournalWriteError(
                f"could not create a journal at {self.path} ({cause}). Give a path to a new or existing journal "
                f"file in a folder you can write, e.g. SqliteStore('.durable/journal.db')."
            ) from None

    def _reset_process_state(self) -> None:
        """Per-process state; rebuilt in a forked child, which must not reuse the parent's."""
        forked = getattr(self, "_pid", None) not in (None, current_pid())
        self._pid = current_pid()
        self._local = threading.local()
        self._conns: list[tuple[threading.Thread, sqlite3.Connection]] = []
        """Every thread's connection, closed by :meth:`close`, when its thread ended, or when the store is
        collected: this Python's sqlite3 leaves a connection it collects open (its descriptor and page
        cache) while another connection of the process is open on the file."""
        finalizer = getattr(self, "_finalizer", None)
        if finalizer is not None:
            finalizer.detach()  # a forked child must not close its parent's connections
        self._finalizer = weakref.finalize(self, _collected, self._conns, current_pid(), self._box)
        self._finalizer.atexit = False  # at exit the held-back writes commit first (sqlite_commit)
        self._committer = Committer(
            self._conn_fn, self._begin, FLUSH_DELAY, self._wrote, _Turn(self),
            self._via_log if self.durability == "call" and _CAN_LOG else None,
        )
        self._joined: FileLocks | None = None
        """The file whose ``committers`` this store's committer joined (:meth:`_flush_others`)."""
        self._intent: IntentLog | None = None
        self._watch: Watch | None = None
        if forked and self._files is not None:  # the parent's descriptor and leases are not ours
            self._files = None

    @property
    def _files(self) -> FileLocks | None:
        """This store object's use of its file's :class:`FileLocks` (None: not yet, or released)."""
        return self._box[0]

    @_files.setter
    def _files(self, files: FileLocks | None) -> None:
        self._box[0] = files

    @property
    def _shared(self) -> FileLocks:
        """This process's lease state of the file, shared with every other store object on it."""
        files = self._files
        if files is None:
            files = self._files = FileLocks.of(str(self.path))
        return files

    def _wrote(self) -> None:
        """After each commit: tell this process's other readers of the file (a prefetch) it changed."""
        with contextlib.suppress(OSError):
            self._shared.wrote()

    def _here(self) -> None:
        if self._pid != current_pid():
            self._reset_process_state()

    def _begin(self, conn: sqlite3.Connection, after: list[Callable[[], None]]) -> None:
        """First in every write transaction: the schema, then this process's unapplied transitions (in order)."""
        self._migrate(conn)
        log = self._log()
        if log is not None and log.pending:
            done = log.apply_in(conn)
            if done is not None:
                after.append(done)

    def _migrate(self, conn: sqlite3.Connection) -> None:
        """Bring the schema up to date inside the first write transaction (never on a read)."""
        if self._version < SCHEMA_VERSION:
            found, problem = sqlite_schema.detect_version(conn)  # re-read under the write lock
            if found is None:
                raise JournalFormatError(f"{self.path} is not a durable_nb journal: {problem}. {sqlite_file.HINT}")
            self._version = sqlite_schema.migrate(conn, found)

    # -- connections ----------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        sqlite_fork.connecting(self.path)
        if self.read_only:
            reader: sqlite3.Connection = sqlite_file.connect(
                self.path, sqlite_file.ro_uri(self.path), uri=True, timeout=60.0, isolation_level=None,
                check_same_thread=False,
            )
            if not self._version:
                return reader
            self._local.view, self._local.view_at = sqlite_view.signature(self.path), time.monotonic()
            return sqlite_view.applied(self.path, reader)
        conn = _writer(self.path)
        if self.durability == "relaxed":
            conn.execute("PRAGMA synchronous = NORMAL")
        return conn

    def _conn_fn(self) -> sqlite3.Connection:
        """The connection writes use. WAL is switched on at the first write, not at open: switching
        rewrites the file header, and a journal that is only read must stay byte-identical."""
        conn = self._conn
        if not self._wal:
            conn.execute("PRAGMA journal_mode = WAL")
            self._wal = True
        return conn

    @property
    def _conn(self) -> sqlite3.Connection:
        local = self._local
        conn: sqlite3.Connection | None = getattr(local, "conn", None)
        # A forked child (multiprocessing, Flink workers) must not reuse the parent's handle.
        if conn is None or local.pid != current_pid():
            conn = local.conn = self._connect()
            local.pid = current_pid()
            conns = self._conns
            # Not in a forked child (until _here): every other thread looks ended there, and closing the copy of
            # a connection inside a parent's write transaction rolls it back in the WAL index the two share.
            if self._pid == current_pid():
                ended = [c for t, c in conns if not t.is_alive()]  # their thread-locals, and so these, are gone
                conns[:] = [(t, c) for t, c in conns if t.is_alive()]
                _close_connections(ended)
            conns.append((threading.current_thread(), conn))
        return conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction of the caller's own (carrying any held-back writes).

        A failed write (disk full, read-only) is a :class:`JournalWriteError` naming the journal and the
        fix, as a durable call's is: fork, prune and delete_run raised a bare ``sqlite3.OperationalError``.
        """
        self._refuse_if_read_only(None, None)
        self._here()
        self._settle(None)  # a dead process's logged transitions go first (a fork, a delete must see them)
        try:
            with self._committer.exclusive() as conn:
                yield conn
        except sqlite3.OperationalError as exc:
            raise self._write_error(exc, None, None) from exc

    def close(self) -> None:
        """Flush, close every connection of this store (all threads'), release the file; reopens on use."""
        if self._pid != current_pid():
            return
        self._committed(self._committer.close, None, None)  # a full disk: JournalWriteError, the store stays open
        log = self._log()
        if log is not None:  # the last store object on the file removes the log; any other applies it
            self._committed(log.close if log.files.users <= 1 else log.drain, None, None)
        self._intent = None
        if self._watch is not None:
            self._watch.close()
            self._watch = None
        conns = [c for _, c in self._conns]
        self._conns.clear()
        self._local = threading.local()
        _close_connections(conns)
        files, self._files = self._files, None
        if files is not None:
            files.release()  # after the connections: see FileLocks on closing descriptors

    # -- durable boundaries ----------------------------------------------------------------

    def flush(self) -> None:
        """Commit every held-back outcome now, and write the intent log into SQLite.

        The second part makes a boundary visible to other processes too: a Flink worker's
        bundle end comes before the rows it released reach the notebook, which reads SQLite.
        """
        if self._pid != current_pid():
            return
        if self._committer.holding:
            self._committed(lambda: self._committer.flush(), None, None)
        log = self._log()
        if log is not None and log.pending:
            self._committed(log.drain, None, None)

    @contextmanager
    def boundary(self) -> Iterator[None]:
        """Inside, a run's end is not a durable boundary; leaving commits everything (``map``'s return)."""
        self._boundary += 1
        self._boundary_checked = False  # its first run open asks whether the file was deleted, not each one
        try:
            yield
        finally:
            self._boundary -= 1
            self.flush()

    @contextmanager
    def prefetch(self, run_ids: Sequence[str]) -> Iterator[None]:
        """Inside, opening ``run_ids`` in this order (in this thread) reads them in chunks, locked ahead."""
        if self.read_only or self._pid != current_pid() or not self._shared.available:
            yield  # without OS locks other processes are not excluded: nothing is read ahead
            return
        local = self._local
        previous = getattr(local, "prefetch", None)
        pre = local.prefetch = Prefetch(run_ids, self._shared)
        try:
            yield
        finally:
            pre.release()
            if self._local is local:
                local.prefetch = previous

    def _read(self) -> sqlite3.Connection:
        if self._pid == current_pid():
            if self._committer.holding:
                self.flush()
            self._settle(None)
        return self._conn

    # -- the intent log (.sqlite_intent) -------------------------------------------------

    def _settle(self, run_id: str | None) -> None:
        """Before a read: dead processes' logs applied, and this process's (all, or ``run_id``'s transitions)."""
        if self.read_only:
            drained = sqlite_view.drain_own(self.path)  # a writer of this process: what it just logged
            local = self._local
            view = getattr(local, "view", None)
            if view is None or (not drained and time.monotonic() - local.view_at < sqlite_view.RECHECK):
                return
            local.view_at = time.monotonic()
            if view != sqlite_view.signature(self.path):
                # A log was applied, removed or its writer died: read the view again (a new connection).
                old, local.conn, local.view = local.conn, None, None
                self._conns[:] = [(t, c) for t, c in self._conns if c is not old]
                _close_connections([old])
            return
        if not self._version:
            return  # nothing to read yet (a new file gets its schema in its first write)
        log = self._log()
        own = None
        if log is not None:
            own = log.key
            if log.pending and (run_id is None or run_id in log.pending_runs):
                self._committed(log.drain, run_id, None)
        watch = self._watch
        if watch is None:
            if not os.path.exists(f"{self.path}-counters"):
                return  # no process ever started an intent log on this journal (reading creates nothing)
            watch = self._watched()
        elif watch.quiet(own):
            return  # the hot path of a replay: no other process's log is registered
        try:
            dead = watch.dead(self._conn, own)
        except sqlite3.DatabaseError as exc:
            raise sqlite_file.damaged(self.path, exc) or exc from exc
        if dead:
            self._recover(dead)

    def _log(self) -> IntentLog | None:
        """This process's log of the file, whichever store object on it started it (None: none open)."""
        log = self._intent
        if log is not None and not log.closed:
            return log
        return IntentLog.existing(self._files) if self._files is not None else None

    def _watched(self) -> Watch:
        watch = self._watch
        if watch is None:
            watch = self._watch = Watch(self.path)
        return watch

    def _recover(self, keys: list[str]) -> None:
        """Apply the logs of processes that died (a synced commit), then delete them."""
        relaxed = self.durability == "relaxed"
        if relaxed:  # the logs are deleted once this commits: it must be synced on every level
            self._conn.execute("PRAGMA synchronous = FULL")
        try:
            with self._committer.exclusive() as conn:  # a log recovered meanwhile is no longer registered
                gone = sqlite_frames.apply_logs(conn, self.path, keys, remove=True)
        except sqlite3.OperationalError as exc:
            raise self._write_error(exc, None, None) from exc
        finally:
            if relaxed:
                self._conn.execute("PRAGMA synchronous = NORMAL")
        self._watched().counters.bump(LOGS)
        for path in gone:
            path.unlink(missing_ok=True)

    def _via_log(self, ops: list[Op]) -> list[BaseException | None] | None:
        """The committer's log path: every op a transition of a run held exclusively, appended in one frame."""
        if len(ops) > sqlite_intent.MANY:
            return None
        frame: list[sqlite_frames.Op] = []
        taking: list[Lease] = []
        leases: list[Lease] = []
        now = 0.0
        size = 0
        for op in ops:
            intent = getattr(op, "intent", None)
            if intent is None:
                return None
            lease: Lease = op.lease  # type: ignore[attr-defined]
            if lease.lost or not lease.exclusive:
                return None
            if intent[0] == "outcome" and intent[6] is not None:
                size += len(intent[6])
                if size > sqlite_intent.LARGE:
                    return None
            if not lease.wrote and lease not in taking:
                now = now or time.time()
                frame.append(("take", lease.run_id, lease.owner, lease.seen_attempts, now))
                taking.append(lease)
            frame.append(intent)
            leases.append(lease)
        try:
            clean = self._append(frame)
        except OSError as exc:  # reported like SQLite's own errors, with the caller's run and call
            kind = {errno.ENOSPC: "database or disk is full", errno.EROFS: "attempt to write a readonly database"}
            raise sqlite3.OperationalError(f"{kind.get(exc.errno or 0, 'disk I/O error')} ({exc})") from exc
        if clean is None:
            return None
        for lease in taking:
            lease.wrote = True
        if clean:
            return [None] * len(ops)
        try:
            return self._after_steal(leases)
        except Exception as exc:  # durable already: never retried; unchecked runs count as taken over
            reason = f"the run could not be checked after a steal ({type(exc).__name__}: {exc})"
            for lease in leases:
                lease.lost = reason
            return [LeaseLostError(lease.run_id, describe_owner(lease.owner), reason) for lease in leases]

    def _append(self, frame: list[sqlite_frames.Op]) -> bool | None:
        """Append to this process's log (started if needed); None: no log here, commit a transaction."""
        for _ in range(2):
            log = self._intent
            if log is None or log.closed:
                log = self._start_log()  # starts one, or finds the one another store object started
            if log is None:
                return None
            try:
                return log.append(frame, batch=self._boundary > 0)
            except LogClosed:  # closed by another store object meanwhile: a new log
                self._intent = None
        return None

    def _start_log(self) -> IntentLog | None:
        if not self._wal or self._version < SCHEMA_VERSION or self.read_only:
            return None  # the first write (schema, WAL) is a synced transaction
        files = self._shared
        if not files.available:
            return None
        try:
            self._intent = IntentLog.of(self.path, files, functools.partial(_writer, self.path))
        except OSError as exc:
            _log.debug("durable_nb: no intent log for %s (%s): synced commits", self.path, exc)
            return None
        return self._intent

    def _after_steal(self, leases: list[Lease]) -> list[BaseException | None]:
        """A steal happened while we appended: apply our log, then keep only the runs still ours."""
        log = self._log()
        if log is not None:
            self._committed(log.drain, None, None)
        conn = self._conn
        lost: dict[str, BaseException | None] = {}
        for lease in leases:
            if lease.owner in lost:
                continue
            row = conn.execute("SELECT owner FROM runs WHERE run_id = ?", (lease.run_id,)).fetchone()
            if row is not None and row[0] == lease.owner:
                lost[lease.owner] = None
            else:
                holder = row[0] if row else None
                lease.lost = f"the run was taken over by {describe_owner(holder)}"
                lost[lease.owner] = LeaseLostError(lease.run_id, describe_owner(lease.owner), lease.lost)
        return [lost[lease.owner] for lease in leases]

    # -- reading ----------------------------------------------------------------

    def _run_record(self, row: tuple[Any, ...]) -> RunRecord:
        return RunRecord(
            text(row[0]), member(RunStatus, row[1], "runs", "status", row[0], None), row[2], row[3], row[4], row[7],
            row[6], row[5], text(row[8]), row[9],
        )

    @property
    def _run_select(self) -> str:
        lineage = "r.parent_run_id, r.forked_at" if self._version >= 2 else "NULL, NULL"
        return (
            "SELECT r.run_id, r.status, r.created_at, r.updated_at, r.attempts, r.owner, r.n_discarded, "
            f"(SELECT count(*) FROM calls c WHERE c.run_id = r.run_id), {lineage} FROM runs r"
        )

    @_explains_damage
    def runs(self) -> list[RunRecord]:
        rows = self._read().execute(self._run_select + " ORDER BY r.created_at, r.rowid").fetchall()
        return [self._run_record(r) for r in rows]

    @_explains_damage
    def newest_runs(self, n: int) -> tuple[list[RunRecord], int]:
        conn = self._read()
        total = int(conn.execute("SELECT count(*) FROM runs").fetchone()[0])
        # The n rows are chosen first, then counted: ORDER BY ... LIMIT over the whole select computed the
        # per-run count of calls for every run before sorting (100 ms, not 20, at 100,000 runs).
        newest = "SELECT rowid FROM runs ORDER BY created_at DESC, rowid DESC LIMIT ?"
        rows = conn.execute(self._run_select + f" WHERE r.rowid IN ({newest}) ORDER BY r.created_at DESC, r.rowid DESC",
                            (max(0, n),)).fetchall()
        return [self._run_record(r) for r in reversed(rows)], total

    @_explains_damage
    def run_ids_with_prefix(self, prefix: str) -> list[str]:
        check_prefix(prefix)
        where, params = prefix_where(prefix)
        rows = self._read().execute("SELECT run_id FROM runs" + where, params).fetchall()
        return sorted(text(r[0]) for r in rows)

    @_explains_damage
    def runs_with_prefix(self, prefix: str) -> list[RunRecord]:
        check_prefix(prefix)
        where, params = prefix_where(prefix)  # its bare run_id is r.run_id: the count's subquery is not in scope
        rows = self._read().execute(self._run_select + where, params).fetchall()
        return sorted((self._run_record(r) for r in rows), key=lambda r: r.run_id)

    @_explains_damage
    def run(self, run_id: str) -> RunRecord | None:
        check_run_id(run_id, empty_ok=True)
        where, params = run_is(run_id, "r.run_id")
        row = self._read().execute(self._run_select + " WHERE " + where, params).fetchone()
        return self._run_record(row) if row else None

    @property
    def _prompt_col(self) -> str:
        """``calls.prompt`` (durable_input questions) exists from schema 2 on."""
        return "prompt" if self._version >= 2 else "NULL"

    @_explains_damage
    def calls(self, run_id: str) -> list[CallRecord]:
        check_run_id(run_id, empty_ok=True)
        where, params = run_is(run_id)
        rows = self._read().execute(
            f"SELECT {_CALL_COLS}, payload, {self._prompt_col} FROM calls WHERE {where} ORDER BY idx", params
        ).fetchall()
        return [_call(r, r[10], r[11]) for r in rows]

    @_explains_damage
    def call(self, run_id: str, index: int) -> CallRecord | None:
        where, params = run_is(run_id)
        index = check_call_index(index)  # type: ignore[assignment]
        if index is None:
            return None
        row = self._read().execute(
            f"SELECT {_CALL_COLS}, payload, {self._prompt_col} FROM calls WHERE {where} AND idx = ?",
            (*params, index),
        ).fetchone()
        return _call(row, row[10], row[11]) if row else None

    @_explains_damage
    def discarded(self, run_id: str | None = None) -> list[DiscardedCall]:
        sql = f"SELECT {_CALL_COLS}, discarded_at, reason FROM discarded"
        params: tuple[Any, ...] = ()
        if run_id is not None:
            where, params = run_is(run_id)
            sql += " WHERE " + where
        rows = self._read().execute(sql + " ORDER BY seq", params).fetchall()
        return [
            DiscardedCall(
                text(r[0]), r[1], text(r[2]), r[3], member(Status, r[4], "discarded", "status", r[0], r[1]),
                member(Origin, r[5], "discarded", "origin", r[0], r[1]) if r[5] else None,
                text(r[6]), text(r[7]), r[8], r[9], r[10], text(r[11]),
            )
            for r in rows
        ]

    @_explains_damage
    def query_calls(
        self,
        *,
        run_id: str | None = None,
        status: Status | str | None = None,
        call_id: str | None = None,
        offset: int = 0,
        limit: int | None = None,
        not_call_id: str | None = None,
    ) -> list[CallRecord]:
        offset, limit = check_page(offset, limit)
        where, params = _calls_where(run_id, status, call_id, not_call_id)
        sql = f"SELECT {_CALL_COLS}, {self._prompt_col} FROM calls{where} ORDER BY seq LIMIT ? OFFSET ?"
        rows = self._read().execute(sql, [*params, -1 if limit is None else limit, offset]).fetchall()
        return [_call(r, None, r[10], True) for r in rows]

    @_explains_damage
    def to_pandas(self, run_id: str | None = None) -> pd.DataFrame:
        """One row per call, read row by row from the query (``Store.to_pandas`` held the list of every
        ``CallRecord`` and the SQLite rows besides the frame: 1,000,000 calls peaked at 1.1 GiB for a 450 MiB frame)."""
        from ..journal.frames import calls_frame

        if run_id is not None:
            check_run_id(run_id, empty_ok=True)
        where, params = _calls_where(run_id, None, None, None)
        rows = self._read().execute(f"SELECT {_CALL_COLS} FROM calls{where} ORDER BY seq", params)
        return calls_frame(_call(r) for r in rows)

    @_explains_damage
    def count_calls(
        self, *, run_id: str | None = None, status: Status | str | None = None, call_id: str | None = None,
        not_call_id: str | None = None,
    ) -> int:
        where, params = _calls_where(run_id, status, call_id, not_call_id)
        return int(self._read().execute(f"SELECT count(*) FROM calls{where}", params).fetchone()[0])

    # -- leases ---------------------------------------------------------------------------

    def run_is_open(self, run_id: str) -> bool:
        if self._locked_now(run_id):
            return True
        rec = self.run(run_id)
        return rec is not None and owner_is_alive(rec.owner)

    def _open_as_read(self, run: RunRecord) -> bool:
        """:meth:`run_is_open` with the owner taken from ``run`` (read by the caller), not read again.

        A run opened since it was read holds its OS lock, which is still asked; prune checks each run
        again under its write lock before deleting it.
        """
        return self._locked_now(run.run_id) or owner_is_alive(run.owner)

    def _locked_now(self, run_id: str) -> bool:
        """Whether a context of this process, or the OS lock of another's, holds ``run_id`` now."""
        if self._files is not None and run_id in self._files.holders:
            return True
        with contextlib.suppress(OSError):  # a context that has not written yet holds only the OS lock
            if not self.read_only and self._shared.held_elsewhere(run_id):
                return True
        return False

    def _unlock_run(self, run_id: str) -> None:
        files = self._shared
        with files.lock:
            files.unlock(run_id)

    def open_run(self, run_id: str, owner: str, *, steal: bool = False) -> list[CallRecord]:
        if self.read_only:
            self._refuse_if_read_only(run_id, None)
        if self._pid != current_pid():
            self._reset_process_state()
        if hand_typed(run_id) is not None:
            self._refuse_hand_typed(run_id, owner)
        files = self._files or self._shared
        if not (self._boundary and self._boundary_checked):
            self._refuse_if_gone(files, run_id, owner)
        if self._boundary:
            self._boundary_checked = True
        with files.lock:
            holder = files.holders.get(run_id)
            if holder is not None and not steal:
                end_owner(owner)
                raise RunBusyError(run_id, describe_owner(holder))
            locked = files.try_lock(run_id)
            if locked or steal:
                old = files.leases.get(holder) if holder is not None else None
                if old is not None:
                    old.lost = f"the run was taken over by {describe_owner(owner)} (steal=True)"
                files.holders[run_id] = owner
        if not locked and not steal:
            end_owner(owner)
            rec = self.run(run_id)
            raise RunBusyError(run_id, describe_lock_holder(rec.owner if rec else None))
        taking_over = steal and (holder is not None or not locked)
        lease = Lease(run_id, owner, None, os_locked=locked, exclusive=locked and files.available and not taking_over)
        files.leases[owner] = lease
        try:
            self._flush_others(files, run_id)
            if taking_over:
                rows = self._take_over(lease)
            else:
                # Dead processes' transitions first (_settle); then one statement, so the run row and its
                # calls are one consistent snapshot, read under the lease (a map's prefetched rows were read
                # under it too, settled, and only if nothing was written since: .sqlite_prefetch).
                if run_id in self._committer.held_runs:
                    rows = self._read().execute(_OPEN_SELECT, (run_id,)).fetchall()
                elif steal or (pre := getattr(self._local, "prefetch", None)) is None:
                    self._settle(run_id)
                    rows = self._conn.execute(_OPEN_SELECT, (run_id,)).fetchall()
                else:
                    rows = pre.rows(self._conn, run_id, _OPEN_SELECT, _OPEN_SELECT_MANY, self._settle)
                lease.seen_attempts, lease.seen_status = _seen(run_id, rows)
            # Inside the try: a row that cannot be read releases the run. ``r[4]``: a call whose idx was
            # set NULL by hand is still a call (in_order refuses it).
            return in_order(run_id, [_opened(run_id, r) for r in rows if r[3] is not None or r[4] is not None])
        except sqlite3.DatabaseError as exc:
            self._drop_lease(lease)
            raise sqlite_file.damaged(self.path, exc) or exc from exc
        except BadRow as exc:
            self._drop_lease(lease)
            raise sqlite_file.bad_row(self.path, exc) from None
        except BaseException:
            self._drop_lease(lease)
            raise

    @_explains_damage
    def _refuse_hand_typed(self, run_id: str, owner: str | None) -> None:
        """Before the lock and any write: a run id hand-typed as TEXT that is not UTF-8 is refused, its fix named
        (:func:`.sqlite_text.refuse_hand_typed`); it was opened as a new run and every call executed again."""
        try:
            refuse_hand_typed(self._read(), run_id, self._version >= 2)
        except BaseException:
            if owner is not None:
                end_owner(owner)
            raise

    def _flush_others(self, files: FileLocks, run_id: str) -> None:
        """Commit what another store object of this process holds back of ``run_id`` before it is read here.

        Why: a run whose context closed inside another store object's ``map`` keeps its end (and its last
        call's outcome) in that store's memory until the map's boundary; the OS lock kept it from other
        processes, but a second store object on the file in this process (another thread) read the run
        without them and ran its last call again.
        """
        committers = files.committers
        if self._joined is not files:  # once per file, not per run: a map opens one run per record
            committers.add(self._committer)
            self._joined = files
        if len(committers) > 1:
            for other in list(committers):
                if other is not self._committer and run_id in other.held_runs:
                    other.run(None)  # also waits for a commit of them under way in another thread

    def _refuse_if_gone(self, files: FileLocks, run_id: str, owner: str) -> None:
        """JournalWriteError if the file open here is no longer the one at :attr:`path`: deleted, SQLite would
        write a file that vanishes with the process; renamed or moved, its WAL (what was committed since the
        last checkpoint) stays behind under the old name and other connections open a new file there."""
        if files.deleted():
            end_owner(owner)
            raise JournalWriteError(
                f"the journal {self.path} was deleted (or its folder removed) while this store had it open: "
                f"anything journaled now would vanish with this process, so run {run_id!r} was not opened and "
                f"nothing was written. Restore the file, or open the store again (dnb.SqliteStore({str(self.path)!r}))"
                f" to start a new journal there."
            )
        if files.moved_from(self.path):
            end_owner(owner)
            raise JournalWriteError(
                f"the journal {self.path} was renamed or moved while this store had it open: its -wal file (what "
                f"was committed since the last checkpoint) stays beside the old name, so run {run_id!r} was not "
                f"opened and nothing was written. Move the file back to {str(self.path)!r}, then close this store "
                f"before moving the journal (with its -wal file); README: Journal files."
            )

    def _deleted(self) -> bool:
        """Whether the file this store has open was deleted since (it refuses every run: :meth:`_refuse_if_gone`)."""
        files = self._files
        return files is not None and self._pid == current_pid() and files.deleted()

    def _take_over(self, lease: Lease) -> list[tuple[Any, ...]]:
        """A steal: every process's logged transitions applied, then the run read and taken, in one transaction.

        The steal counter moves first, so a context appending to its log meanwhile finds
        out after its fdatasync and checks its run before its function runs.
        """
        self._settle(None)
        counters = self._watched().counters if _CAN_LOG else None
        own = self._log()
        with self._write() as conn:
            if counters is not None:
                counters.bump(STEALS)
            others = [k for k, _ in sqlite_frames.registered(conn, self.path) if own is None or k != own.key]
            sqlite_frames.apply_logs(conn, self.path, others, remove=False)
            rows = conn.execute(_OPEN_SELECT, (lease.run_id,)).fetchall()
            lease.seen_attempts, lease.seen_status = _seen(lease.run_id, rows)  # before the fence: BadRow undoes it
            self._fence(conn, lease, time.time())
        lease.wrote = lease.dirty = True
        return rows

    def _drop_lease(self, lease: Lease) -> None:
        files = self._files or self._shared
        with files.lock:
            files.leases.pop(lease.owner, None)
            if files.holders.get(lease.run_id) == lease.owner:
                del files.holders[lease.run_id]
            if lease.os_locked:
                lease.os_locked = False
                files.unlock(lease.run_id)

    def _lease(self, owner: str | None, run_id: str, index: int | None) -> Lease | None:
        """The writer's lease, or LeaseLostError (nothing written) if it may no longer write."""
        if self.read_only:
            self._refuse_if_read_only(run_id, index)
        if owner is None:
            return None
        if self._pid != current_pid():
            self._reset_process_state()
        lease = (self._files or self._shared).leases.get(owner)
        if lease is None:
            raise LeaseLostError(run_id, describe_owner(owner), "its context has ended (the run was closed)")
        if lease.lost:
            raise LeaseLostError(run_id, describe_owner(owner), lease.lost)
        return lease

    @staticmethod
    def _fence(conn: sqlite3.Connection, lease: Lease, now: float) -> None:
        """Inside the write transaction: take the run at the first write, then check it is still ours."""
        # A run that had no row at the open: create it, one statement; a row that appeared
        # meanwhile (another context recovered the run) makes the INSERT a no-op, checked below.
        if not lease.wrote and lease.seen_attempts is None and conn.execute(
            "INSERT INTO runs (run_id, status, created_at, updated_at, attempts, owner) "
            "VALUES (?, 'RUNNING', ?, ?, 1, ?) ON CONFLICT (run_id) DO NOTHING",
            (lease.run_id, now, now, lease.owner),
        ).rowcount == 1:
            return
        row = conn.execute("SELECT owner, attempts FROM runs WHERE run_id = ?", (lease.run_id,)).fetchone()
        if row is not None and row[0] == lease.owner:
            return
        if not lease.wrote and row is not None and row[1] == lease.seen_attempts:
            conn.execute(
                "UPDATE runs SET status = 'RUNNING', updated_at = ?, attempts = attempts + 1, owner = ? "
                "WHERE run_id = ?",
                (now, lease.owner, lease.run_id),
            )
            return
        holder = row[0] if row else None
        reason = (
            f"the run was taken over by {describe_owner(holder)}" if holder
            else "another context recovered the run meanwhile"
        )
        raise LeaseLostError(lease.run_id, describe_owner(lease.owner), reason)

    # -- writing ----------------------------------------------------------------

    def _fenced(self, lease: Lease | None, op: Op) -> Op:
        if lease is None:
            return op

        done = self._committer.fenced

        def fenced(conn: sqlite3.Connection, after: list[Callable[[], None]]) -> Any:
            if lease.owner not in done:  # one check per lease and transaction
                self._fence(conn, lease, time.time())
                done.add(lease.owner)
                after.append(lambda: setattr(lease, "wrote", True))
            return op(conn, after)

        intent = getattr(op, "intent", None)
        if intent is not None:  # what the intent log writes instead (.sqlite_intent)
            fenced.intent, fenced.lease = intent, lease  # type: ignore[attr-defined]
        return fenced

    def _submit(self, lease: Lease | None, op: Op, index: int | None, *, hold: bool = False) -> Any:
        """Commit ``op`` (fenced by ``lease``), or hold it back for the next commit."""
        if not hold:
            return self._queued(lease, op, lease.run_id if lease else None, index)()
        assert lease is not None
        lease.dirty = True
        self._committer.hold(lease.run_id, self._fenced(lease, op))
        return True

    def _queued(self, lease: Lease | None, op: Op, run_id: str | None, index: int | None) -> Callable[[], Any]:
        """Queue ``op`` (fenced by ``lease``) now; returns what waits until it committed (and its result)."""
        committer = self._committer
        queued = committer.queue(self._fenced(lease, op))
        if lease is not None:
            lease.dirty = True
        return lambda: self._committed(lambda: committer.wait(queued), run_id, index)

    def _committed(self, commit: Callable[[], Any], run_id: str | None, index: int | None) -> Any:
        try:
            return commit()
        except sqlite3.OperationalError as exc:
            raise self._write_error(exc, run_id, index) from exc
        except sqlite3.DatabaseError as exc:
            raise sqlite_file.damaged(self.path, exc) or exc from exc

    def _write_error(self, exc: sqlite3.Error, run_id: str | None, index: int | None) -> JournalWriteError:
        where = "" if run_id is None else f" (run {run_id!r}" + ("" if index is None else f", call {index}") + ")"
        text = str(exc)
        if "full" in text:
            fix = "Free disk space (or move the journal: SqliteStore('other/disk/journal.db')), then run again"
        elif "readonly" in text:
            fix = "Make the journal and its folder writable, or open it read-only to view it"
        elif "locked" in text or "busy" in text:  # the disk is fine: another connection kept its write lock
            fix = ("Another connection held the journal's write lock longer than the busy timeout (a sqlite3 shell "
                   "or a DB browser with a transaction open, a process stopped in a debugger): end that "
                   "transaction or close it, then run again")
        else:
            fix = "Check the disk and the file, then run again"
        return JournalWriteError(
            f"could not write the journal {self.path}{where}: {text}. Nothing of this write was kept; everything "
            f"journaled before it is intact and the run can be recovered. {fix}."
        )

    def _refuse_if_read_only(self, run_id: str | None, index: int | None) -> None:
        if self.read_only:
            where = "" if run_id is None else f" (run {run_id!r}" + ("" if index is None else f", call {index}") + ")"
            name = self.path.name
            raise JournalReadOnlyError(
                f"the journal {self.path} is open read-only: {self.read_only}; nothing can be written{where}. "
                f"It can still be listed (runs(), calls(), to_pandas()) and viewed. To run actions, copy it with "
                f"its {name}-wal and {name}-log.* files (those that exist) to a writable folder, keeping their "
                f"names (the -log files hold the last calls of a process that was killed: a copy without them "
                f"runs those calls again), then SqliteStore('FOLDER/{name}')."
            )

    def close_run(self, run_id: str, owner: str, status: RunStatus | None) -> None:
        lease = (self._files or self._shared).leases.get(owner) if self._pid == current_pid() and not self.read_only \
            else None
        if lease is None or lease.lost:
            if lease is not None:
                self._drop_lease(lease)
            return
        # RunStatus is a str enum: a member compares equal to its value; .value only when writing.
        value = None if status is None else status if status.__class__ is RunStatus else RunStatus(status)
        try:
            if lease.dirty or (value is not None and value != lease.seen_status):
                def op(conn: sqlite3.Connection, after: list[Callable[[], None]]) -> None:
                    conn.execute(
                        "UPDATE runs SET status = coalesce(?, status), updated_at = ?, owner = NULL "
                        "WHERE run_id = ? AND owner = ?",
                        (None if value is None else value.value, time.time(), run_id, owner),
                    )
                    if keep_lock:
                        after.append(lambda: self._unlock_run(run_id))

                hold = self.durability == "call" and self._boundary > 0
                # Held, or through the intent log: the OS lock goes once the close is committed (applied).
                keep_lock = lease.os_locked and (hold or (self.durability == "call" and lease.exclusive))
                if keep_lock:
                    lease.os_locked = False  # released when the held close commits
                op.intent = (  # type: ignore[attr-defined]
                    "close", run_id, owner, None if value is None else value.value, time.time(), int(keep_lock)
                )
                self._submit(lease, op, None, hold=hold)
        finally:
            self._drop_lease(lease)

    def append_pending(
        self, run_id: str, index: int, call_id: str, args_digest: str, started_at: float, *, owner: str | None = None
    ) -> None:
        self.queue_pending(run_id, index, call_id, args_digest, started_at, owner=owner)()

    def queue_pending(
        self, run_id: str, index: int, call_id: str, args_digest: str, started_at: float, *, owner: str | None = None
    ) -> Callable[[], None]:
        lease = self._lease(owner, run_id, index)

        def op(conn: sqlite3.Connection, after: list[Callable[[], None]]) -> None:
            conn.execute(
                "INSERT INTO calls (run_id, idx, call_id, args_digest, status, started_at) "
                "VALUES (?, ?, ?, ?, 'PENDING', ?)",
                (run_id, index, call_id, args_digest, started_at),
            )

        op.intent = ("pending", run_id, owner, index, call_id, args_digest, started_at)  # type: ignore[attr-defined]
        return self._queued(lease, op, run_id, index)

    def complete_call(
        self,
        run_id: str,
        index: int,
        outcome: Outcome,
        *,
        origin: Origin,
        finished_at: float,
        only_if_pending: bool = False,
        owner: str | None = None,
    ) -> bool:
        lease = self._lease(owner, run_id, index)
        if lease is None and hand_typed(run_id) is not None:  # the ReconcilePanel, store.answer: not "settled"
            self._refuse_hand_typed(run_id, None)
        sql = (
            "UPDATE calls SET status = ?, origin = ?, payload = ?, payload_format = 'pickle', "
            "result_preview = ?, error_preview = ?, finished_at = ? WHERE run_id = ? AND idx = ?"
        )
        if only_if_pending:
            sql += " AND status = 'PENDING'"
        status, origin_ = outcome.status, origin  # members (str enums) as the engine passes them; values bound
        params = (status.value if status.__class__ is Status else Status(status).value,
                  origin_.value if origin_.__class__ is Origin else Origin(origin_).value,
                  outcome.payload, outcome.result_preview, outcome.error_preview, finished_at, run_id, index)

        def op(conn: sqlite3.Connection, after: list[Callable[[], None]]) -> bool:
            written = conn.execute(sql, params).rowcount == 1
            if written and lease is None:  # an answer or a reconciled outcome: the run's last activity (prune)
                conn.execute(_TOUCH_RUN, (finished_at, run_id))
            return written

        hold = lease is not None and self.durability == "call" and not only_if_pending
        if hold:
            op.intent = ("outcome", run_id, owner, index, *params[:6])  # type: ignore[attr-defined]
        return bool(self._submit(lease, op, index, hold=hold))

    def discard_from(self, run_id: str, index: int, reason: str, at: float, *, owner: str | None = None) -> None:
        lease = self._lease(owner, run_id, index)

        def op(conn: sqlite3.Connection, after: list[Callable[[], None]]) -> None:
            cur = conn.execute(
                f"INSERT INTO discarded ({_CALL_COLS}, discarded_at, reason) "
                f"SELECT {_CALL_COLS}, ?, ? FROM calls WHERE run_id = ? AND idx >= ? ORDER BY idx",
                (at, reason, run_id, index),
            )
            conn.execute("DELETE FROM calls WHERE run_id = ? AND idx >= ?", (run_id, index))
            conn.execute(
                "UPDATE runs SET n_discarded = n_discarded + ? WHERE run_id = ?", (cur.rowcount, run_id)
            )

        self._submit(lease, op, index)

    def delete_run(self, run_id: str) -> None:
        """Refused (:class:`RunBusyError`) while a live context holds the run; its OS lock keeps one out meanwhile."""
        check_run_id(run_id, empty_ok=True)  # an int failed with "'int' object has no attribute 'encode'"
        self._refuse_if_read_only(run_id, None)
        with self._kept_out([run_id]) as free:
            if not free:  # the other process named as open_run names it (%durable_forget from another kernel)
                holder = self._shared.holders.get(run_id)
                rec = None if holder else self.run(run_id)
                raise RunBusyError(run_id, describe_owner(holder) if holder else
                                   describe_lock_holder(rec.owner if rec else None))
            with self._write() as conn:
                delete_runs(conn, [run_id])

    @contextmanager
    def _kept_out(self, run_ids: Sequence[str]) -> Iterator[set[str]]:
        """Those of ``run_ids`` no live context holds, each OS-locked until the block ends, so none can be opened.

        A map's read-ahead in this process does not count as holding a run: it reads
        a run changed under it again.
        """
        files = self._shared
        with files.lock:
            free = {r for r in run_ids if r not in files.holders and files.try_lock(r)}
        try:
            yield free
        finally:
            with files.lock:
                files.unlock_many(list(free))


class _Turn:
    """The store's write turn: its file's :class:`FileLocks` (looked up when used: it may be reopened)."""

    __slots__ = ("_files", "_store")

    def __init__(self, store: SqliteStore) -> None:
        self._store = store
        self._files: FileLocks | None = None

    def begin_write(self) -> None:
        try:
            files = self._store._shared
        except OSError:  # the file cannot be opened for locking: SQLite's busy handling alone
            return
        files.begin_write()
        self._files = files

    def end_write(self) -> None:
        files, self._files = self._files, None
        if files is not None:
            files.end_write()


def _writer(path: Path) -> sqlite3.Connection:
    """A connection that writes, synced (a store's own; the intent log's applier and synced commits)."""
    sqlite_fork.connecting(path)
    conn = sqlite_file.connect(path, os.fsencode(path), timeout=60.0, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout = 60000")
    conn.execute("PRAGMA synchronous = FULL")
    return conn


def _close_connections(conns: list[Any], pid: int | None = None) -> None:
    """Close connections (or ``(thread, connection)`` pairs); a store's finalizer passes the pid that opened them."""
    if pid is not None and pid != current_pid():
        return  # a forked child's copies: closing them is the parent's business
    for conn in conns:
        if isinstance(conn, tuple):
            conn = conn[1]
        with contextlib.suppress(sqlite3.Error):
            # A finalizer takes no lock: the GC may run it in a thread inside FileLocks' (it hung there).
            if pid is not None and isinstance(conn, Connection):
                conn.close_in_finalizer()
            else:
                conn.close()


def _collected(conns: list[Any], pid: int, box: list[FileLocks | None]) -> None:
    """A store object collected without ``close()``: its connections now, its file at the next store made."""
    _close_connections(conns, pid)
    sqlite_intent.dropped(box, pid)


def _reopen(path: str, durability: str, read_only: bool) -> SqliteStore:
    return SqliteStore(path, durability=durability, read_only=read_only)
