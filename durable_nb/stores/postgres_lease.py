"""PostgresStore's run leases: session-level advisory locks on one connection per store and process.

Liveness across machines cannot come from pids (:mod:`durable_nb.journal.lease`
checks those on one host only). PostgreSQL gives a better signal: a session-level
advisory lock is held until its session ends, and a session ends when its process
dies, however it dies. So a store holds every run it has open as an advisory lock
on one dedicated connection:

* a process killed with SIGKILL closes its sockets, its backend sees the end of
  the connection at once and the locks go with it;
* a machine that vanishes (power, network) is noticed by TCP keepalives, which
  this connection asks the *server* to send after 10 s idle, every 5 s, 3 tries
  (plus ``tcp_user_timeout`` 25 s for unacknowledged writes): its locks are free
  within 30 s, and another machine takes the run over.

The lock says who may take a run over; the journal's ``runs.owner`` column
(checked inside every write transaction, see :class:`~durable_nb.journal.lease.Lease`)
is the fence, so a context whose lock was lost (its lease connection broke) and
whose run was taken over writes nothing.

A context whose lock was lost but whose run was *not yet* taken over must not go
on either: its next PENDING would pass the fence, and another process could then
take the run (its lock is free) and execute that call a second time. So before
every PENDING the store asks :meth:`AdvisoryLocks.ensure`: after any sign that the
server may have restarted (a connection of the store broke, or a thread opened its
first one) the lease session is checked with one round trip, and a lock lost with
it is taken again, or the context has lost its run. A server that ends idle
sessions (``idle_session_timeout``) would end the lease session while a long call
runs, unnoticed until it is used again: every session of the store turns that
setting off for itself (``PostgresStore._connect``).

A session the server ended while the store was idle (a restart between two cells)
is noticed by the next lock taken on it, which is then taken again on a new
session (:meth:`AdvisoryLocks._lock`): a dead session holds no lock, so that is
what the call would have done anyway, and the user's next call just works.

Checking before the next PENDING is too late while a call runs: another process
finding the run's lock free takes the run over and runs that PENDING call again
while the first still runs it. So while the store holds runs a watcher thread
looks at the lease session's socket four times a second (no statement, no round
trip) and, once the server ended the session (``pg_terminate_backend``, a restart), takes every
held lock back on a new session, retrying until the server answers
(:meth:`AdvisoryLocks._watch_session`). A taker that finds a claimed run's lock
free waits :data:`RELOCK_GRACE` for that before taking the run over, unless it
can see the holder is gone (``PostgresStore.open_run``).
"""

from __future__ import annotations

import contextlib
import hashlib
import select
import threading
import time
from collections.abc import Callable
from typing import Any

from . import postgres_sql as q

# Server-side keepalives of the lease connection: a dead client host frees its locks within 30 s.
LEASE_SETTINGS = (
    "SET tcp_keepalives_idle = 10",
    "SET tcp_keepalives_interval = 5",
    "SET tcp_keepalives_count = 3",
    "SET tcp_user_timeout = 25000",
)


RELOCK_GRACE = 2.0
"""Seconds a live holder's watcher has to take back a lock its session lost (it needs milliseconds)."""
_RETRY = 0.1
"""Seconds between the watcher's attempts to reach a server that is restarting."""
_WATCH_EVERY = 0.25
"""Seconds between the watcher's looks at the lease session: well within :data:`RELOCK_GRACE`."""


def readable(fd: int) -> bool:
    """Whether the server sent something on ``fd``, without waiting.

    ``poll``, not ``select``: select refuses a descriptor numbered 1024 or more (a kernel with
    many files and sockets open), and the watcher took that refusal for an ended session: it
    closed the live lease session four times a second, freeing the runs' locks each time.
    """
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(fd, select.POLLIN | select.POLLERR | select.POLLHUP)
        return bool(poller.poll(0))
    return bool(select.select([fd], [], [], 0)[0])  # Windows: no poll, and no such limit on socket numbers


def told(conn: Any) -> bool:
    """Whether the server sent the idle session ``conn`` something unasked (the message ending it), or may have:
    a connection without a socket (closed meanwhile) is as good as ended."""
    try:
        return readable(conn.fileno())
    except Exception:
        return True


def lock_key(namespace: str, run_id: str) -> int:
    """The advisory lock key of a run: a signed 64-bit hash of schema and run id (no collisions in practice)."""
    raw = hashlib.blake2b(f"{namespace}\0{run_id}".encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(raw, "big", signed=True)


class AdvisoryLocks:
    """The run locks one store holds in this process, on its own connection.

    Advisory locks are re-entrant within a session, so two contexts of this
    process are told apart by the store, not by the lock; this class keeps each
    run locked at most once and forgets every lock when its connection breaks.
    """

    def __init__(self, connect: Callable[[], Any], namespace: str, one_trip_open: bool = False,
                 dropped: Callable[[], None] = lambda: None) -> None:
        self._connect = connect
        self._on_dropped = dropped
        """Told when the server ended a session this class had used (its other connections may be dead too)."""
        self._dropped = False
        """The last failed statement found its session ended by the server, not refused by it."""
        self._namespace = namespace
        self._one_trip_open = one_trip_open
        """The journal has :data:`postgres_sql.LOCK_OPEN_FUNCTION`: :meth:`lock_and_open` takes one round trip."""
        self._conn: Any = None
        self._held: set[str] = set()
        self._release: set[str] = set()
        """Held runs whose contexts ended and whose ends are durable: unlocked with the next lock taken."""
        self._suspect = False
        """A connection of the store broke: the lease session may have died with the server."""
        self._regain: set[str] = set()
        """Runs held on a session that died: the watcher takes their locks back on a new one."""
        self._watcher: threading.Thread | None = None
        """The one thread watching the lease session; a thread that is no longer it ends (see :meth:`close`)."""
        self._mu = threading.Lock()

    @property
    def _live(self) -> bool:
        """Whether the lease session is open as far as this process knows (a dead one is noticed when used)."""
        conn = self._conn
        return conn is not None and not conn.closed and not conn.broken

    def _connection(self) -> Any:
        conn = self._conn
        if not self._live:
            self._regain |= self._held - self._release  # still open here: the watcher takes them back
            self._held.clear()  # a new session holds nothing
            self._release.clear()
            conn = self._conn = self._connect()
            for statement in LEASE_SETTINGS:
                with contextlib.suppress(Exception):  # tcp_user_timeout needs PostgreSQL 12
                    conn.execute(statement)
            # The one-round-trip open reads after the lock within one statement: only read committed
            # gives its read a snapshot taken after the lock (whatever the server's default).
            conn.execute("SET default_transaction_isolation = 'read committed'")
        return conn

    def key(self, run_id: str) -> int:
        """The run's advisory lock key in this journal (its database and schema)."""
        return lock_key(self._namespace, run_id)

    def holds(self, run_id: str) -> bool:
        with self._mu:
            return run_id in self._held and run_id not in self._release and self._live

    def suspect(self) -> None:
        """A connection of the store was lost (the server may have restarted): check the lease session next."""
        self._suspect = True

    def surely_held(self, run_id: str) -> bool:
        """The run is locked and nothing suggests the session died: :meth:`ensure` has nothing to do.

        Read without the mutex (set membership and flags, atomic under the GIL): it is
        asked before every PENDING, and a wrong "no" only costs :meth:`ensure`'s check.
        The lease socket is looked at too (one poll, no statement): a restart over between
        two of the watcher's looks left a session that seemed live, and the write went out on
        the store's dead sessions, failing with JournalUnavailableError.
        """
        return not self._suspect and run_id in self._held and self._live and not told(self._conn)

    def ensure(self, run_id: str) -> bool:
        """Whether this session holds the run's lock now, taking it again if the session was lost.

        Called before a PENDING of a context that opened the run under its lock. A
        lock taken again is only a right to try: the write's owner fence still
        refuses it if another context took the run over in between.
        """
        with self._mu:
            if self._live and (self._suspect or told(self._conn)):
                now, self._suspect = self._suspect, False
                self._check_session(self._conn, now=now)  # a session the server lost fails here
            if run_id in self._held and self._live:
                return True
        return self.try_lock(run_id)

    def try_lock(self, run_id: str) -> bool:
        """Take the run's lock unless another session holds it (True if held now)."""
        return self.lock_and_read(run_id, None)[0]

    def lock_and_open(self, run_id: str) -> tuple[bool, list[Any]]:
        """:meth:`lock_and_read` of the run's :data:`~postgres_sql.OPEN_RUN` rows: one round trip when the
        journal has :data:`~postgres_sql.LOCK_OPEN_FUNCTION`, whose read is a statement of its own too."""
        return self._lock(run_id, (q.OPEN_RUN, (run_id,)), one_trip=self._one_trip_open)

    def lock_and_read(self, run_id: str, read: tuple[str, tuple[Any, ...]] | None) -> tuple[bool, list[Any]]:
        """Take the run's lock, then run ``read`` (if locked): two round trips; ``(locked, rows)``.

        Why here: a record of a map (or a Flink worker) opens one run after another,
        and round trips are most of what a replayed record costs. Runs released with
        :meth:`release_later` are unlocked in the lock's own statement. The read is a
        statement of its own, after the lock was granted, so its snapshot holds
        everything the lock's previous holder committed. (psycopg's pipeline mode
        would save the second round trip but costs more than it saves here.)
        """
        return self._lock(run_id, read, one_trip=False)

    def _lock(self, run_id: str, read: tuple[str, tuple[Any, ...]] | None, *, one_trip: bool) -> tuple[bool, list[Any]]:
        with self._mu:
            used = self._live  # a session that served before: the server may have ended it since (a restart)
            self._dropped = False
            try:
                return self._lock_on(self._connection(), run_id, read, one_trip)
            except Exception:
                if not (used and self._dropped):
                    raise
            # The server ended the session since its last use: it holds no lock any more, so taking the
            # lock on a new session is what this call would have done (a server still down fails to connect).
            self._on_dropped()
            return self._lock_on(self._connection(), run_id, read, one_trip)

    def _lock_on(self, conn: Any, run_id: str, read: tuple[str, tuple[Any, ...]] | None,
                 one_trip: bool) -> tuple[bool, list[Any]]:
        if run_id in self._held:
            self._release.discard(run_id)
            return True, self._read(conn, read)
        release = [self.key(r) for r in self._release]
        key = self.key(run_id)
        if one_trip:  # read is OPEN_RUN: the function locks, then reads (no rows: not locked)
            rows = self._take(conn, q.LOCK_OPEN, (key, release, run_id))
            if rows:
                self._hold(run_id)
            return bool(rows), rows
        if release:
            rows = self._take(conn, "SELECT pg_try_advisory_lock(%s), (SELECT count(pg_advisory_unlock(k)) "
                              "FROM unnest(%s::bigint[]) AS k)", (key, release))
        else:
            rows = self._take(conn, "SELECT pg_try_advisory_lock(%s)", (key,))
        if not (rows and rows[0][0]):
            return False, []
        self._hold(run_id)
        return True, self._read(conn, read)

    def _hold(self, run_id: str) -> None:
        """Count the run as locked on the lease session, and have that session watched (under the mutex)."""
        self._held.add(run_id)
        self._regain.discard(run_id)
        if self._watcher is None:
            self._watcher = threading.Thread(target=self._watch_session, name="durable_nb lease watcher", daemon=True)
            self._watcher.start()

    def _watch_session(self) -> None:
        """The watcher thread: every :data:`_WATCH_EVERY` s, see whether the server ended the lease session;
        if so, take the locks back.

        It looks, under the mutex, for something the server sent the idle session unasked (the
        message that ends a session). It polls rather than waits on the socket: a wait woke at
        the answer to every lock statement (one per record of a map), which cost a map ~10%.
        It ends when the store holds no run (the next lock starts another), or when the store is
        closed: a store used again after ``close()`` gets a watcher of its own with its next lock.
        """
        me = threading.current_thread()
        while True:
            with self._mu:
                if self._watcher is not me:
                    return  # closed meanwhile (a later lock may have started another)
                if not (self._held - self._release or self._regain):
                    self._watcher = None
                    return
                if not self._regain:
                    self._check_session(self._conn)
                if self._regain or (not self._live and self._held - self._release):
                    self._take_back()
                again = bool(self._regain)
            time.sleep(_RETRY if again else _WATCH_EVERY)  # again: the server is not back yet

    def _check_session(self, conn: Any, *, now: bool = False) -> None:
        """Read what the server sent the idle lease session (under the mutex): an ended session breaks here,
        and the store is told its other sessions may be gone too. ``now``: ask the server even if it sent nothing.
        """
        if not self._live:
            return
        try:
            if not now and not readable(conn.fileno()):
                return  # nothing came unasked
            conn.execute("SELECT 1")
        except Exception:
            broken = conn.broken
            with contextlib.suppress(Exception):
                conn.close()
            if broken:
                self._on_dropped()  # the server ended it: the store's other sessions may be gone too

    def _take_back(self) -> None:
        """Lock every run the lost session held, on a new session (under the mutex; fails quietly, retried).

        A run another session locked meanwhile is not taken back: its context finds
        out at its next write (:meth:`ensure` fails, LeaseLostError), and a taker that
        waited :data:`RELOCK_GRACE` finds the lock held and refuses the run.
        """
        try:
            conn = self._connection()
            runs = sorted(self._regain)
            rows = conn.execute("SELECT pg_try_advisory_lock(k) FROM unnest(%s::bigint[]) WITH ORDINALITY AS t(k, n) "
                                "ORDER BY n", ([self.key(r) for r in runs],)).fetchall()
        except Exception:
            return
        for run_id, (locked,) in zip(runs, rows, strict=True):
            if locked:
                self._held.add(run_id)
        self._regain.clear()

    def _read(self, conn: Any, read: tuple[str, tuple[Any, ...]] | None) -> list[Any]:
        """The rows of ``read`` (none without one), on the lock's session."""
        if read is None:
            return []
        try:
            rows: list[Any] = conn.execute(*read).fetchall()
        except Exception:
            self._dropped = conn.broken
            raise
        return rows

    def _take(self, conn: Any, statement: str, params: tuple[Any, ...]) -> list[Any]:
        """Run the statement that tries a run's lock and unlocks the released runs (forgotten here); its rows."""
        try:
            rows: list[Any] = conn.execute(statement, params).fetchall()
        except Exception:
            self._dropped = conn.broken
            with contextlib.suppress(Exception):
                conn.close()  # unsure what it holds now: dropping the session drops every lock
            raise
        self._held.difference_update(self._release)
        self._release.clear()
        return rows

    def release_later(self, run_ids: list[str]) -> None:
        """These runs' contexts ended and their ends are durable: unlock with the next lock (or :meth:`release_now`)."""
        with self._mu:
            self._release.update(r for r in run_ids if r in self._held)

    @property
    def releasing(self) -> bool:
        """Whether runs given to :meth:`release_later` are still locked."""
        return bool(self._release)

    def release_now(self) -> None:
        """Unlock every run given to :meth:`release_later` (a durable boundary: other processes may take them)."""
        with self._mu:
            if not self._release:
                return
            release = list(self._release)
            self._held.difference_update(release)
            self._release.clear()
            self._unlock(release)

    def _unlock(self, run_ids: list[str]) -> None:
        """Unlock these runs now (call under the mutex); a broken connection has released them already."""
        if not self._live:
            return
        conn = self._conn
        try:
            conn.execute("SELECT pg_advisory_unlock(k) FROM unnest(%s::bigint[]) AS k",
                         ([self.key(r) for r in run_ids],))
        except Exception:
            with contextlib.suppress(Exception):
                conn.close()  # unsure what it holds now: dropping the session drops every lock

    def unlock(self, run_id: str) -> None:
        """Release the run's lock; a broken connection has released it already."""
        with self._mu:
            self._regain.discard(run_id)
            if run_id not in self._held:
                return
            self._held.discard(run_id)
            self._release.discard(run_id)
            self._unlock([run_id])

    def close(self) -> None:
        with self._mu:
            # The watcher ends. Not a flag that stays: a store is used again after close() (it reconnects),
            # and a closed flag kept every later watcher from starting, so a lock lost while a later
            # run's call ran was never taken back and another process could run that call again.
            self._watcher = None
            self._held.clear()
            self._release.clear()
            self._regain.clear()
            if self._conn is not None:
                with contextlib.suppress(Exception):
                    self._conn.close()
            self._conn = None
