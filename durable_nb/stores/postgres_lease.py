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
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections.abc import Callable
from typing import Any

# Server-side keepalives of the lease connection: a dead client host frees its locks within 30 s.
LEASE_SETTINGS = (
    "SET tcp_keepalives_idle = 10",
    "SET tcp_keepalives_interval = 5",
    "SET tcp_keepalives_count = 3",
    "SET tcp_user_timeout = 25000",
)


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

    def __init__(self, connect: Callable[[], Any], namespace: str) -> None:
        self._connect = connect
        self._namespace = namespace
        self._conn: Any = None
        self._held: set[str] = set()
        self._mu = threading.Lock()

    def _connection(self) -> Any:
        conn = self._conn
        if conn is None or conn.closed or conn.broken:
            self._held.clear()  # a new session holds nothing
            conn = self._conn = self._connect()
            for statement in LEASE_SETTINGS:
                with contextlib.suppress(Exception):  # tcp_user_timeout needs PostgreSQL 12
                    conn.execute(statement)
        return conn

    def holds(self, run_id: str) -> bool:
        with self._mu:
            conn = self._conn
            return run_id in self._held and conn is not None and not conn.closed and not conn.broken

    def try_lock(self, run_id: str) -> bool:
        """Take the run's lock unless another session holds it (True if held now)."""
        with self._mu:
            conn = self._connection()
            if run_id in self._held:
                return True
            row = conn.execute("SELECT pg_try_advisory_lock(%s)", (lock_key(self._namespace, run_id),)).fetchone()
            if row and row[0]:
                self._held.add(run_id)
                return True
            return False

    def unlock(self, run_id: str) -> None:
        """Release the run's lock; a broken connection has released it already."""
        with self._mu:
            if run_id not in self._held:
                return
            self._held.discard(run_id)
            conn = self._conn
            if conn is None or conn.closed or conn.broken:
                return
            try:
                conn.execute("SELECT pg_advisory_unlock(%s)", (lock_key(self._namespace, run_id),))
            except Exception:
                with contextlib.suppress(Exception):
                    conn.close()  # unsure what it holds now: dropping the session drops every lock

    def close(self) -> None:
        with self._mu:
            self._held.clear()
            if self._conn is not None:
                with contextlib.suppress(Exception):
                    self._conn.close()
            self._conn = None
