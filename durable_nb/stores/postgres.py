"""A journal in PostgreSQL, shared by many machines: Flink clusters, several kernels.

Same contract as :class:`SqliteStore`. What is different, and why:

* **Leases** are session-level advisory locks (:mod:`.postgres_lease`): they die
  with their connection, so a run left by a process killed on any machine is
  taken over at once (within 30 s when the whole machine vanished). The journal's
  ``runs.owner``/``runs.attempts`` columns fence every write, inside its statement.
* **Commits.** Every write is one statement where it can be (the fence is part
  of it), so a durable call costs one round trip and one WAL flush per
  transition. Under ``durability="call"`` (the default) an outcome is held back
  and committed in the same statement as the next call's PENDING, the run's end,
  any read, :meth:`flush`, or within 20 ms (:mod:`.postgres_commit`); inside a
  durable boundary (a map, a Flink worker) the run's end rides with the next
  PENDING of the process too, so a record costs one commit; concurrent
  commits from many connections share WAL flushes (PostgreSQL's own group commit).
  ``"transition"`` commits every outcome on its own; ``"relaxed"`` is ``"call"``
  with ``synchronous_commit = off``: a killed client leaves what ``"call"`` leaves,
  but a crash of the *server* (or its machine) may lose the last few hundred
  milliseconds of commits.
* **Replays write nothing**: opening a finished run takes the lock and reads; the
  run row is claimed (``attempts`` + 1, ``owner``) by the first write.

Connections: one per thread (writes), one per store and process for leases;
reconnected after a failure, and before a statement when the server ended the idle
session (a restart, ``pg_terminate_backend``). A server that is down or refuses raises
:class:`JournalUnavailableError` naming host, port, database and what to do; it keeps
no psycopg error in its ``__context__`` (a failed connection's holds the password).

Over 400 lines because it is the whole Store protocol (twenty methods of a few
statements each, read and write, leases, time travel); everything that is not a
method of the protocol lives beside it: the SQL (:mod:`.postgres_sql`), schema and
connection errors (:mod:`.postgres_schema`), advisory locks (:mod:`.postgres_lease`)
and held-back outcomes (:mod:`.postgres_commit`).
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

from ..errors import JournalFormatError, JournalUnavailableError, LeaseLostError, RunBusyError, check_run_id
from ..journal import codec
from ..journal.history import (
    FreshHead,
    PruneRule,
    check_fork,
    fork_id_taken,
    fork_number,
    fork_prefix,
    fork_row,
    fork_seq_key,
    forks_issued,
    number_kept,
    prune_batches,
)
from ..journal.lease import Lease, describe_lock_holder, describe_owner, owner_gone, owner_is_alive
from ..journal.queries import calls_where, check_call_index, check_page, check_prefix
from ..journal.records import CallRecord, DiscardedCall, Origin, Outcome, RunRecord, RunStatus, Status
from ..journal.store import Store
from . import postgres_sql as q
from .bad_rows import BadRow, in_order, journal_error, member
from .dsn import mask_dsn, refuse_foreign, without_parameter
from .postgres_commit import Closing, HeldOutcomes, closed_runs
from .postgres_lease import RELOCK_GRACE, AdvisoryLocks, told
from .postgres_schema import (
    Target,
    connect_hint,
    create_or_check,
    dropped_search_path,
    parse_dsn,
    role_name,
    sql_name,
    unpinned_session,
    wrong_encoding,
)

try:
    import psycopg
    from psycopg.pq import TransactionStatus
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "PostgresStore needs psycopg 3: pip install 'durable_nb[postgres]'"
    ) from exc

DURABILITY = ("call", "transition", "relaxed")
IDLE = TransactionStatus.IDLE

FORK_ATTEMPTS = 5
"""Transactions a fork with a generated id tries before giving up (another parent's fork may take an id)."""
POOLED = (
    "the DSN leads to a connection pooler in transaction or statement pooling mode (PgBouncer's pool_mode = "
    "transaction or statement, a managed database's 'transaction pooler' port), which gives each transaction "
    "whichever server session is free",
    "A run's lease is a session-level advisory lock: through such a pool another kernel is given the session "
    "holding it, takes the run while it runs and executes its calls a second time. Point the DSN at a pool in "
    "session mode (PgBouncer: pool_mode = session for this database; a managed database's 'session pooler') "
    "or at the server itself (its own host and port). Nothing was written.",
)
"""Reason and hint of the error refusing a pool that does not keep a client's server session (see unpinned_session)."""
HOLD_MAX = 2**20
"""Larger outcomes are committed at once, not held: held ones ride together in one statement, which
must stay under PostgreSQL's 1 GiB message limit (a large payload's own round trip costs little extra)."""


class PostgresStore(Store):
    """A journal in a PostgreSQL database (tables created on first use).

    ``dsn`` is a libpq URL or key=value string, e.g.
    ``postgresql://user:password@db-host:5432/journal``. Picklable (Flink workers
    reconnect with the same DSN); ``repr`` hides the password. Loading a journal
    unpickles nothing.
    """

    max_payload = 2**30 - 1 - 2**20
    """PostgreSQL takes no message (statement and parameters) over 1 GiB; 1 MiB is left for the rest."""

    def __init__(self, dsn: str, *, durability: str = "call") -> None:
        if not isinstance(dsn, str):
            raise TypeError(f"PostgresStore needs a DSN string like 'postgresql://user@host/db', got "
                            f"{type(dsn).__name__} {mask_dsn(repr(dsn))[:200]}"
                            + ("; a path is a SQLite journal's: dnb.SqliteStore(path)"
                               if isinstance(dsn, os.PathLike) else ""))
        refuse_foreign(dsn)
        if durability not in DURABILITY:
            raise ValueError(
                f"durability must be one of {', '.join(map(repr, DURABILITY))}, got {durability!r}: 'call' (default, "
                f"the outcome of a call committed with the next call), 'transition' (every transition committed on "
                f"its own), 'relaxed' (synchronous_commit off: survives a process crash, not a server crash)."
            )
        self._conninfo = parse_dsn(dsn)  # parsed once: every connection is made from the same DSN
        self.dsn = dsn
        self.durability = durability
        self.target = Target.of(self._conninfo)
        self._reset()
        try:
            with self._guard("open the journal"):
                self._refuse_unfit()
                self.schema, self._one_trip_open = create_or_check(self._conn, str(self.target))
        except BaseException:
            conn = getattr(self._local, "conn", None)
            if conn is not None:
                conn.close()  # a refused database keeps no connection of ours open
            raise
        self._locks = self._new_locks()
        self._watch()

    def _new_locks(self) -> AdvisoryLocks:
        # Weak callbacks: the store's parts hold no reference to it (see _watch).
        return AdvisoryLocks(_weakly(self._lease_connect), f"{self.target.dbname}.{self.schema}",
                             self._one_trip_open, dropped=_weakly(self._connections_stale))

    def _watch(self) -> None:
        """Close this process's connections (lease session included) when the store is collected.

        A notebook re-runs ``store = dnb.PostgresStore(dsn)`` and drops the old store
        without ``close()``: its sessions counted against the server's ``max_connections``
        until a full garbage collection found the store's reference cycles (its lease
        and held-outcome helpers called back into it), and the held-outcome flusher kept
        it 5 s more. Now nothing but the user (and held outcomes not yet committed) keeps
        a store, so the old one's sessions end when ``store`` is bound again.
        """
        old = getattr(self, "_finalizer", None)
        if old is not None:
            old.detach()  # a forked child: the parent's connections are the parent's to close
        self._finalizer = weakref.finalize(self, _close_connections, self._all_conns, self._locks, self._pid)
        self._finalizer.atexit = False  # at exit the process's sockets close anyway

    @classmethod
    def from_url(cls, url: str) -> PostgresStore:
        """``open_store("postgresql://...?durability=transition")``: the DSN, with durability as a URL parameter."""
        dsn, levels = without_parameter(url, "durability")
        return cls(dsn, durability=levels[-1] if levels else "call")

    def _reset(self) -> None:
        """Per-process state (a forked child starts with none of its parent's)."""
        self._pid = os.getpid()
        self._local = threading.local()
        self._all_conns: list[tuple[threading.Thread, Any]] = []  # (thread it serves, connection)
        self._cond = threading.Condition(threading.Lock())
        self._leases: dict[str, Lease] = {}  # owner -> lease
        self._by_run: dict[str, str] = {}  # run_id -> owner open in this store
        self._open_status: dict[str, RunStatus | None] = {}  # owner -> run status at open
        self._unsure: dict[str, int] = {}  # owner -> index of a PENDING whose commit was not acknowledged
        self._outcomes = HeldOutcomes(self._write_held)
        self._boundary = 0  # open durable boundaries: a run's end inside one is held (postgres_commit)
        self._epoch = 0  # bumped when a connection is found lost: every thread's older one may be dead too
        if hasattr(self, "_locks"):
            self._locks = self._new_locks()
            self._watch()

    @property
    def journal_key(self) -> object:
        t = self.target
        return ("postgresql", t.host, t.port, t.dbname, self.schema)

    def __repr__(self) -> str:
        extra = "" if self.durability == "call" else f", durability={self.durability!r}"
        return f"PostgresStore({mask_dsn(self.dsn)!r}{extra})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (_reopen, (self.dsn, self.durability))

    # -- connections --------------------------------------------------------------------

    def _lease_connect(self) -> Any:
        return self._connect(register=False)  # lives as long as the store, whichever thread made it

    def _connect(self, register: bool = True) -> Any:
        # client_encoding: a SQL_ASCII database (no locale at initdb) otherwise speaks SQL_ASCII, and psycopg
        # hands its text back as bytes: current_schema() read as "b'public'" hid the journal from its next open.
        defaults: dict[str, Any] = {"connect_timeout": 10, "application_name": "durable_nb", "keepalives": 1,
                    "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 3,
                    "client_encoding": "UTF8"}
        extra = {k: v for k, v in defaults.items() if k not in self._conninfo}
        with self._guard("connect"):
            conn = psycopg.connect(self.dsn, autocommit=True, **extra)
            if self.durability == "relaxed":
                conn.execute("SET synchronous_commit = off")
            # A journal's sessions sit idle while durable calls run (the lease session holds the runs'
            # locks all along): a server set to end idle sessions (idle_session_timeout, PostgreSQL 14+)
            # would fail every call longer than it, and free the run to another process meanwhile.
            with contextlib.suppress(psycopg.errors.UndefinedObject):  # an older server has no such setting
                conn.execute("SET idle_session_timeout = 0")
            # The fences are statements written for read committed (PostgreSQL's default). A server or database
            # defaulting to serializable (or repeatable read) failed concurrent writes of different runs with
            # "could not serialize access", reported as a lost connection.
            conn.execute("SET default_transaction_isolation = 'read committed'")
        if not register:
            return conn
        with self._cond:
            # A connection whose thread ended is closed here, so short-lived threads do not leak them.
            ended = [c for t, c in self._all_conns if not t.is_alive()]
            self._all_conns[:] = [(t, c) for t, c in self._all_conns if t.is_alive() and not c.closed]
            self._all_conns.append((threading.current_thread(), conn))
        for old in ended:
            with contextlib.suppress(Exception):
                old.close()
        return conn

    @property
    def _conn(self) -> Any:
        if self._pid != os.getpid():
            self._reset()
        local = self._local
        conn = getattr(local, "conn", None)
        if conn is not None and not conn.closed and conn.info.transaction_status == IDLE and told(conn):
            # The server sent this idle session something unasked: the message ending it (a restart,
            # pg_terminate_backend). The next statement would fail on it though nothing was sent yet
            # (the first read after a restart failed): replace it, and every thread's with it.
            with contextlib.suppress(Exception):
                conn.close()
            self._connections_stale()
        if conn is not None and local.epoch != self._epoch and conn.info.transaction_status == IDLE:
            # Another connection of this store was found lost since this one was made (a server
            # restart ends them all): start afresh rather than fail the next call on it as well.
            with contextlib.suppress(Exception):
                conn.close()
        if conn is None or conn.closed or conn.broken:
            # A lost connection, or a thread's first one: the server may have restarted since the
            # lease session was last used, and that session with it (checked before the next PENDING).
            self._suspect_leases()
            local.epoch = self._epoch
            conn = local.conn = self._connect()
        return conn

    def _connections_stale(self) -> None:
        """A connection was lost: each thread replaces its own before its next statement outside a transaction."""
        self._epoch += 1

    def _suspect_leases(self) -> None:
        locks = getattr(self, "_locks", None)  # None while the store is being made
        if locks is not None:
            locks.suspect()

    @contextlib.contextmanager
    def _guard(self, doing: str, run_id: str | None = None) -> Iterator[None]:
        """Turn a lost or refused connection into JournalUnavailableError (the next call reconnects).

        The error raised keeps no psycopg error as its ``__context__``: ``from None`` only hides the
        context from tracebacks, and a failed connection's error keeps its libpq connection, whose
        ``info`` holds the DSN's password, for any error reporter or debugger walking the chain.
        """
        outer = sys.exc_info()[1]  # what the caller was handling (its context stays reachable, as before)
        if isinstance(outer, psycopg.Error):  # a store's own retry after a lost session: not that one either
            outer = None
        try:
            yield
        except Exception as exc:
            err = self._translated(exc, doing, run_id)
            if err is None:
                raise
        else:
            return
        _raise_alone(err, outer)  # outside the except clause: this frame keeps no reference to psycopg's error

    def _translated(self, exc: Exception, doing: str, run_id: str | None) -> Exception | None:
        """What :meth:`_guard` raises instead of ``exc`` (checked in this order); None: ``exc`` itself."""
        if isinstance(exc, JournalUnavailableError):
            if run_id is None or exc.run_id is not None:
                return None
            return JournalUnavailableError(exc.where, doing, run_id, exc.reason, exc.hint)
        if isinstance(exc, BadRow):  # a row typed in by hand: where, and the statement that fixes it
            return self._bad_row(exc)
        if isinstance(exc, (psycopg.DataError, UnicodeEncodeError)):
            if isinstance(exc, psycopg.DataError) and "NUL" not in str(exc):
                return None
            return ValueError(unstorable(f"{doing}{'' if run_id is None else f' (run {run_id!r})'}"))
        if isinstance(exc, psycopg.errors.UndefinedFunction):  # ``text = integer``: a run id that is not a str
            try:
                if run_id is not None:
                    check_run_id(run_id, empty_ok=True)
            except TypeError as wrong:
                return wrong
            return None
        reason = " ".join(str(exc).split())
        if isinstance(exc, psycopg.errors.ProgramLimitExceeded):  # an OperationalError, but no lost connection
            return ValueError(
                f"PostgreSQL refused to {doing}{'' if run_id is None else f' (run {run_id[:80]!r}...)'}: {reason}. "
                f"Run ids and call ids are index keys there: keep them under a few kilobytes (a key "
                f"derived from a record should be its id, not the record). Nothing was written."
            )
        if isinstance(exc, psycopg.errors.ReadOnlySqlTransaction):  # a standby, or read-only by default
            return JournalUnavailableError(str(self.target), doing, run_id, reason, self._read_only_hint())
        if isinstance(exc, psycopg.errors.InsufficientPrivilege):
            return JournalUnavailableError(str(self.target), doing, run_id, reason, self._grant_hint())
        if isinstance(exc, (psycopg.errors.QueryCanceled, psycopg.errors.LockNotAvailable)):
            # The session lives: nothing to reconnect, no lease to doubt.
            hint = (f"PostgreSQL cancelled the statement (statement_timeout or lock_timeout is set for this database "
                    f"or user, or someone cancelled it); the connection is fine and nothing of that statement was "
                    f"written. The journal's statements are short: a long one waited for a lock another session "
                    f"holds on the journal's tables. Let the journal's user wait: ALTER ROLE "
                    f"{role_name(self.target.user)} SET statement_timeout = 0 (and lock_timeout), then call again.")
            return JournalUnavailableError(str(self.target), doing, run_id, reason, hint)
        if isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError)):
            if doing == "connect":
                hint = connect_hint(reason, self.target)
            else:
                self._suspect_leases()
                self._connections_stale()
                hint = ("The connection was lost (the server restarted, or the network failed); the next "
                        "call reconnects.")
            return JournalUnavailableError(str(self.target), doing, run_id, reason, hint)
        return None

    def _grant_hint(self) -> str:
        """What to grant a user the server refused a statement of the journal's."""
        user, db, schema = role_name(self.target.user), role_name(self.target.dbname), sql_name(self._schema_named())
        owner = (f"make it the schema's owner (ALTER SCHEMA {schema} OWNER TO {user}) or " if schema != "public"
                 else f"make it the database's owner (CREATE DATABASE {db} OWNER {user}) or ")
        return (f"Let user {self.target.user!r} create and write the journal's tables: {owner}GRANT CREATE, USAGE "
                f"ON SCHEMA {schema} TO {user} (PostgreSQL 15 no longer lets every user create tables in public). "
                f"If another user created the tables, GRANT USAGE ON SCHEMA {schema} TO {user} and "
                f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schema} TO {user} (or "
                f"make {self.target.user!r} their owner).")

    def _refuse_unfit(self) -> None:
        """Refuse, before anything is written, a DSN whose sessions cannot hold leases or a journal's text."""
        if unpinned_session(self._conn, self._lease_connect):
            raise JournalUnavailableError(str(self.target), "open the journal", None, *POOLED)
        dropped = dropped_search_path(self._conn, self._conninfo.get("options"))
        if dropped is not None:
            raise JournalUnavailableError(str(self.target), "open the journal", None, *self._path_refusal(*dropped))
        encoding = wrong_encoding(self._conn)
        if encoding is not None:
            raise JournalUnavailableError(str(self.target), "open the journal", None, *self._encoding_refusal(encoding))

    def _path_refusal(self, asked: str, got: str, database: str) -> tuple[str, str]:
        """Reason and hint when the DSN's search_path did not reach the session (see dropped_search_path)."""
        return (f"the session's search_path is {got!r}, not the {asked!r} the DSN's options ask for: a connection "
                f"pooler between dropped them (PgBouncer's ignore_startup_parameters = options), and the journal "
                f"would go to another schema",
                f"Set the schema on the role instead, which a pooler passes on: ALTER ROLE "
                f"{role_name(self.target.user)} IN DATABASE {role_name(database)} SET search_path = "
                f"{asked} (then drop options from the DSN), or point the DSN at the server itself. Nothing was "
                f"written.")

    def _encoding_refusal(self, encoding: str) -> tuple[str, str]:
        """Reason and hint when the database's encoding cannot hold a journal's text (see wrong_encoding)."""
        db = role_name(self.target.dbname)
        return (f"the database is encoded in {encoding}, which cannot hold most text a journal keeps (arguments, "
                f"results and error messages of calls, run ids)",
                f"Keep the journal in a UTF8 database: CREATE DATABASE {role_name(self.target.dbname + '_utf8')} "
                f"ENCODING 'UTF8' TEMPLATE template0 (pick any name), and point the DSN at it instead of {db}. "
                f"Nothing was written.")

    def _read_only_hint(self) -> str:
        """What to do when the server lets the journal's sessions only read (replays of finished runs still work)."""
        user, db = role_name(self.target.user), role_name(self.target.dbname)
        return (f"The server lets this session only read: it is a standby (a read replica; point the DSN at the "
                f"primary), or default_transaction_read_only is on (ALTER DATABASE {db} SET "
                f"default_transaction_read_only = off, or ALTER ROLE {user} SET default_transaction_read_only = "
                f"off). Replays of finished runs need no write and work meanwhile.")

    def _bad_row(self, exc: BadRow) -> JournalFormatError:
        schema = self._schema_named()
        fix = exc.fix(None if schema == "public" else sql_name(schema))
        return journal_error(str(self.target), exc, f"psql on that database: {fix}" if fix else None)

    def _schema_named(self) -> str:
        """The journal's schema, for a hint: known once the journal is open, else asked (``public`` if that fails)."""
        schema = getattr(self, "schema", None)
        if schema is None:
            with contextlib.suppress(Exception):  # a refused statement left the connection usable
                row = self._conn.execute("SELECT current_schema()").fetchone()
                schema = row[0] if row else None
        return str(schema or "public")

    def close(self) -> None:
        """Commit held-back outcomes, then close every connection (open runs lose their leases).

        In a forked child the store's connections are its parent's sessions (a child
        closing them ended them, and the parent's run locks with them): it drops them.
        """
        if self._pid != os.getpid():
            self._reset()
        with contextlib.suppress(Exception):
            self.flush()
        self._outcomes.end()
        with self._cond:
            conns = [c for _, c in self._all_conns]
            self._all_conns.clear()
            self._leases.clear()
            self._by_run.clear()
            self._cond.notify_all()
        self._locks.close()
        for conn in conns:
            with contextlib.suppress(Exception):
                conn.close()
        self._local = threading.local()

    # -- reading (every read commits held-back outcomes first: what it shows is durable) ---

    def runs(self) -> list[RunRecord]:
        self.flush()
        with self._guard("read runs"):
            return [q.run_record(r) for r in self._conn.execute(q.RUN_SELECT + " ORDER BY r.created_at, r.run_id")]

    def newest_runs(self, n: int) -> tuple[list[RunRecord], int]:
        self.flush()
        with self._guard("read runs"):
            total = int(self._conn.execute("SELECT count(*) FROM runs").fetchone()[0])
            rows = self._conn.execute(q.RUN_SELECT + " ORDER BY r.created_at DESC, r.run_id DESC LIMIT %s",
                                      (max(0, n),)).fetchall()
        return [q.run_record(r) for r in reversed(rows)], total

    def run(self, run_id: str) -> RunRecord | None:
        self.flush()
        with self._guard("read a run", run_id):
            row = self._conn.execute(q.RUN_SELECT + " WHERE r.run_id = %s", (run_id,)).fetchone()
            return q.run_record(row) if row else None

    def run_ids_with_prefix(self, prefix: str) -> list[str]:
        check_prefix(prefix)
        if codec.sendable(prefix) != prefix:  # a NUL character or a lone surrogate: no stored id holds one
            return []
        self.flush()
        with self._guard("read run ids"):
            return sorted(r[0] for r in self._conn.execute(q.RUN_IDS_LIKE, (q.like_prefix(prefix),)))

    def runs_with_prefix(self, prefix: str) -> list[RunRecord]:
        check_prefix(prefix)
        if codec.sendable(prefix) != prefix:  # as run_ids_with_prefix: no stored id holds one
            return []
        self.flush()
        with self._guard("read runs"):
            rows = self._conn.execute(q.RUNS_LIKE, (q.like_prefix(prefix),)).fetchall()
        return sorted((q.run_record(r) for r in rows), key=lambda r: r.run_id)

    def calls(self, run_id: str) -> list[CallRecord]:
        self.flush()
        with self._guard("read calls", run_id):
            return [q.call_record(r, True) for r in self._conn.execute(q.CALLS_OF_RUN, (run_id,))]

    def call(self, run_id: str, index: int) -> CallRecord | None:
        index = check_call_index(index)  # type: ignore[assignment]
        if index is None:
            return None
        self.flush()
        with self._guard("read a call", run_id):
            row = self._conn.execute(q.ONE_CALL, (run_id, index)).fetchone()
            return q.call_record(row, True) if row else None

    def discarded(self, run_id: str | None = None) -> list[DiscardedCall]:
        self.flush()
        sql, params = q.DISCARDED, ()
        if run_id is not None:
            sql, params = sql + " WHERE run_id = %s", (run_id,)  # type: ignore[assignment]
        with self._guard("read discarded calls", run_id):
            return [q.discarded_record(r) for r in self._conn.execute(sql + " ORDER BY seq", params)]

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
        self.flush()
        offset, limit = check_page(offset, limit)
        where, params = calls_where(run_id, status, call_id, "%s", not_call_id)
        sql = f"SELECT {q.CALL_COLS} FROM calls{where} ORDER BY seq LIMIT %s OFFSET %s"
        with self._guard("query calls", run_id):
            return [q.call_record(r) for r in self._conn.execute(sql, [*params, limit, offset])]

    def count_calls(
        self, *, run_id: str | None = None, status: Status | str | None = None, call_id: str | None = None,
        not_call_id: str | None = None,
    ) -> int:
        self.flush()
        where, params = calls_where(run_id, status, call_id, "%s", not_call_id)
        with self._guard("count calls", run_id):
            row = self._conn.execute(f"SELECT count(*) FROM calls{where}", params).fetchone()
        return int(row[0])

    # -- leases -------------------------------------------------------------------------------

    def open_run(self, run_id: str, owner: str, *, steal: bool = False) -> list[CallRecord]:
        """Take the run's advisory lock and read its calls; writes only to take it over (a crash, steal=True)."""
        if codec.sendable(run_id) != run_id:  # a NUL character or a lone surrogate
            raise ValueError(unstorable(f"the run id {run_id!r}", "a map's run ids come from its keys, so pass "
                                        "key= a function that returns clean text"))  # before the lock: no undo
        if self._pid != os.getpid():
            self._reset()
        with self._cond:
            holder = self._by_run.get(run_id)
            if holder is not None and not steal and owner_is_alive(holder):
                raise RunBusyError(run_id, describe_owner(holder))
        self._outcomes.flush_run(run_id)
        with self._guard("open the run", run_id):
            locked, rows = self._locks.lock_and_open(run_id)
            if locked and not steal and holder is None and self._holder_may_come_back(run_id, rows):
                locked, rows = self._locks.lock_and_open(run_id)
            if not locked and not steal:
                row = self._conn.execute("SELECT owner FROM runs WHERE run_id = %s", (run_id,)).fetchone()
                raise RunBusyError(run_id, describe_owner(row[0] if row else None) + " (it holds the run's lock)")
            try:
                if not locked:  # steal=True from a live holder: read it here; _load takes it over
                    rows = self._conn.execute(q.OPEN_RUN, (run_id,)).fetchall()
                run_row = rows[0][:3] if rows and rows[0][0] is not None else None
                calls = [r[3:] for r in rows if r[3] is not None]
                return self._load(run_id, owner, holder, steal, run_row, calls, locked)
            except BaseException:
                with self._cond:
                    still_ours = self._by_run.get(run_id) in (None, holder)
                if still_ours and holder is None:
                    self._locks.unlock(run_id)
                raise

    def _holder_may_come_back(self, run_id: str, rows: list[Any]) -> bool:
        """Whether the run is claimed by a context that may live on, its lock lost with its session: then
        unlock and wait :data:`~postgres_lease.RELOCK_GRACE` for its lease watcher to take the lock back.

        Why: a server restart (or an ended session) frees the locks of live contexts too;
        taking such a run over would run its PENDING call again while the holder still
        runs it. A holder this host sees ended is taken over at once (the usual recovery).
        """
        claimed_by = rows[0][1] if rows and rows[0][0] is not None else None
        if claimed_by is None or owner_gone(claimed_by):
            return False
        self._locks.unlock(run_id)
        time.sleep(RELOCK_GRACE)
        return True

    def _load(self, run_id: str, owner: str, holder: str | None, steal: bool, run_row: Any,
              call_rows: list[Any], locked: bool) -> list[CallRecord]:
        """The lease and the run's calls, read under its lock (``run_row``, ``call_rows``: read with it)."""
        conn = self._conn
        lease = Lease(run_id, owner, None if run_row is None else int(run_row[0]), os_locked=locked)
        status = None if run_row is None else member(RunStatus, run_row[2], "runs", "status", run_id, None)
        # Records made before the lease is registered: a row no one writes (BadRow) leaves the run unlocked.
        if steal or (run_row is not None and run_row[1] is not None):
            # Someone claimed it and never closed it (a crash), or we steal it from a live holder:
            # take it over now (its writes are fenced off from here), and read the calls after the
            # take-over in the same transaction, so nothing it wrote is missed (and a BadRow undoes it).
            with conn.transaction():
                conn.execute(q.TAKE_OVER, {"run": run_id, "now": time.time(), "owner": owner})
                calls = in_order(run_id, [q.call_record(r, True) for r in conn.execute(q.CALLS_OF_RUN, (run_id,))])
            lease.wrote = True
        else:
            calls = in_order(run_id, [q.call_record(r, True) for r in call_rows])
        with self._cond:
            if holder is not None and holder in self._leases:
                self._leases[holder].lost = "the run was taken over (steal=True) by another context"
            self._leases[owner] = lease
            self._by_run[run_id] = owner
            self._open_status[owner] = status
        return calls

    def _lease(self, run_id: str, owner: str | None) -> Lease:
        """The live lease of ``owner`` (default: the context holding ``run_id`` here), or LeaseLostError."""
        with self._cond:
            owner = owner or self._by_run.get(run_id)
            lease = self._leases.get(owner) if owner else None
        if lease is None or lease.run_id != run_id:
            raise LeaseLostError(run_id, describe_owner(owner), "its context ended (the run was closed)")
        if lease.lost:
            raise LeaseLostError(run_id, describe_owner(lease.owner), lease.lost)
        return lease

    def _lost(self, lease: Lease, reason: str) -> LeaseLostError:
        lease.lost = reason
        return LeaseLostError(lease.run_id, describe_owner(lease.owner), reason)

    def _claim(self, conn: Any, lease: Lease, status: str = "RUNNING") -> None:
        """The first write of a context: take the run row if nobody wrote since the open."""
        now = time.time()
        if lease.seen_attempts is None:
            cur = conn.execute(q.CLAIM_NEW, (lease.run_id, status, now, now, lease.owner))
        else:
            cur = conn.execute(q.CLAIM, (status, now, lease.owner, lease.run_id, lease.seen_attempts))
        if cur.rowcount != 1:
            raise self._lost(lease, "another context wrote to the run after this one opened it")
        lease.wrote = True

    @staticmethod
    def _claim_then_pending(lease: Lease, pending: tuple[Any, ...]) -> tuple[str, tuple[Any, ...]]:
        now = time.time()
        if lease.seen_attempts is None:
            return q.CLAIM_NEW_THEN_PENDING, (lease.run_id, "RUNNING", now, now, lease.owner, *pending)
        return q.CLAIM_THEN_PENDING, ("RUNNING", now, lease.owner, lease.run_id, lease.seen_attempts, *pending)

    def close_run(self, run_id: str, owner: str, status: RunStatus | None) -> None:
        """Commit held-back outcomes and the final status in one transaction, then release the lock."""
        with self._cond:
            lease = self._leases.pop(owner, None)
            at_open = self._open_status.pop(owner, None)
            self._unsure.pop(owner, None)
            if self._by_run.get(run_id) == owner:
                del self._by_run[run_id]
        if lease is None:
            return
        held = self._outcomes.take(run_id)
        hold_lock = False
        try:
            value = None if status is None else RunStatus(status).value
            if lease.lost or (not lease.wrote and not held and (value is None or value == at_open)):
                return  # nothing to write: a replay, or a crash before any write
            close = (value, time.time(), run_id, owner)
            if self._boundary > 0 and lease.wrote and self.durability != "transition":
                # Inside a durable boundary: the end (and the last outcome) rides with the next
                # PENDING of this process; the lock is kept until it is durable (postgres_commit).
                self._outcomes.put_back(run_id, held)
                self._outcomes.hold_close(run_id, close)
                hold_lock = True
                return
            with self._guard("close the run", run_id):
                conn = self._conn
                if lease.wrote and len(held) <= 1:  # one statement, one round trip
                    if held:
                        conn.execute(q.COMPLETE_THEN_CLOSE, (run_id, owner, *held[0].values(), *close))
                    else:
                        conn.execute(q.CLOSE, close)
                    return
                with conn.transaction():
                    if not lease.wrote:
                        self._claim(conn, lease, value or "RUNNING")
                    self._write_closing([], [(held, close)])
        except LeaseLostError:
            return  # someone else took the run meanwhile: this context's end writes nothing
        except BaseException:
            # Server down: the outcomes stay held (fenced by their owner, which the journal still
            # names), so the next open of this run in this process commits them before reading.
            self._outcomes.put_back(run_id, held)
            raise
        finally:
            with self._cond:
                reopened = run_id in self._by_run
            if not reopened and not hold_lock:
                self._locks.unlock(run_id)

    # -- writing --------------------------------------------------------------------------------

    def append_pending(
        self, run_id: str, index: int, call_id: str, args_digest: str, started_at: float, *, owner: str | None = None
    ) -> None:
        """One statement where it can be: held outcomes, run ends held in a boundary, claim and PENDING."""
        lease = self._lease(run_id, owner)
        self._check_lock(lease, index)
        if lease.owner in self._unsure:
            self._settle_unsure(lease, index)
        held = self._outcomes.take(run_id)
        closing = self._outcomes.take_closing()
        pending = (run_id, index, call_id, args_digest, started_at, run_id, lease.owner)
        claiming = not lease.wrote
        try:
            with self._guard(f"write call {index}", run_id):
                conn = self._conn
                if lease.wrote and len(held) <= 1:
                    sql, params = (q.PENDING, pending) if not held else (
                        q.COMPLETE_THEN_PENDING, (run_id, lease.owner, *held[0].values(), *pending[:5]))
                    ok = conn.execute(*q.with_closing(closing, sql, params)).rowcount == 1
                elif not held:  # the context's first write: claim the run in the same statement
                    sql, params = self._claim_then_pending(lease, pending[:5])
                    ok = conn.execute(*q.with_closing(closing, sql, params)).rowcount == 1
                else:
                    with conn.transaction():
                        if not lease.wrote:
                            self._claim(conn, lease)
                        self._write_closing(held, closing)
                        ok = conn.execute(q.PENDING, pending).rowcount == 1
        except BaseException as exc:
            self._outcomes.put_back(run_id, held)
            self._outcomes.put_back_closing(closing)
            if isinstance(exc, JournalUnavailableError):
                with self._cond:
                    self._unsure.setdefault(lease.owner, index)
            raise
        if closing:  # durable: their runs' locks go with this process's next lock (or the boundary's end)
            self._outcomes.committed(closing)
            self._locks.release_later(closed_runs(closing))
        if not ok:
            raise self._lost(lease, "another context wrote to the run after this one opened it" if claiming
                             else "another context took the run over")
        lease.wrote = True

    def _check_lock(self, lease: Lease, index: int) -> None:
        """Before a write of a context holding the run's lock: the lock is still held (taken back on a new session
        if the server ended the lease session, as a restart does, since the watcher last looked)."""
        if lease.os_locked and not self._locks.surely_held(lease.run_id):
            with self._guard(f"write call {index}", lease.run_id):
                locked = self._locks.ensure(lease.run_id)
            if not locked:
                raise self._lost(lease, "its lock went with its connection (the server restarted?) and another "
                                 "process holds the run now")

    def _settle_unsure(self, lease: Lease, index: int) -> None:
        """Undo a PENDING that may have committed although its write failed (the connection was lost
        after the server committed, before the answer came back).

        Why: the context forgot that call (its function never ran), and the error told the user
        that the next call reconnects. A retry writes the same index again, which the committed
        row refused as a duplicate key, again and again; a first write (the claim) that committed
        made the retry's claim look like another context's. Under the run's fence: a row at
        or after that index is only that PENDING, never run, so it goes.
        """
        since = self._unsure[lease.owner]
        with self._guard(f"write call {index}", lease.run_id), self._conn.transaction():
            row = self._conn.execute("SELECT owner FROM runs WHERE run_id = %s FOR UPDATE", (lease.run_id,)).fetchone()
            if row is not None and row[0] == lease.owner:
                lease.wrote = True  # the claim committed
                self._conn.execute("DELETE FROM calls WHERE run_id = %s AND idx >= %s AND status = 'PENDING'",
                                   (lease.run_id, since))
        with self._cond:
            self._unsure.pop(lease.owner, None)

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
        row = q.Outcome(run_id, index, Status(outcome.status).value, Origin(origin).value, outcome.payload,
                        outcome.result_preview, outcome.error_preview, finished_at, owner)
        if owner is None:  # from outside any run (ReconcilePanel, answer): unfenced, committed now
            self.flush()
            sql = q.COMPLETE_IF_PENDING if only_if_pending else q.COMPLETE
            with self._guard(f"write call {index}", run_id), self._conn.transaction():
                written: bool = self._conn.execute(sql, row.values()).rowcount == 1
                if written:  # the run's last activity: a prune that read it before keeps it (sqlite._TOUCH_RUN)
                    self._conn.execute(q.TOUCH_RUN, (finished_at, run_id))
                return written
        lease = self._lease(run_id, owner)
        if self.durability != "transition" and lease.wrote and len(outcome.payload or b"") <= HOLD_MAX:
            self._outcomes.hold(row)
            return True
        self._check_lock(lease, index)
        with self._guard(f"write call {index}", run_id):
            conn = self._conn
            if lease.wrote:
                ok = conn.execute(q.COMPLETE_FENCED, row.fenced()).rowcount == 1
            else:
                with conn.transaction():
                    self._claim(conn, lease)
                    ok = conn.execute(q.COMPLETE_FENCED, row.fenced()).rowcount == 1
        if not ok:
            raise self._lost(lease, "another context took the run over")
        return True

    def discard_from(self, run_id: str, index: int, reason: str, at: float, *, owner: str | None = None) -> None:
        lease = self._lease(run_id, owner)
        held = self._outcomes.take(run_id)
        try:
            with self._guard("discard calls", run_id), self._conn.transaction():
                conn = self._conn
                if not lease.wrote:
                    self._claim(conn, lease)
                self._write_closing(held, [])
                if conn.execute(q.FENCE, (run_id, lease.owner)).fetchone() is None:
                    raise self._lost(lease, "another context took the run over")
                n = conn.execute(q.DISCARD_COPY, (at, reason, run_id, index)).rowcount
                conn.execute("DELETE FROM calls WHERE run_id = %s AND idx >= %s", (run_id, index))
                conn.execute("UPDATE runs SET n_discarded = n_discarded + %s WHERE run_id = %s", (n, run_id))
        except BaseException:
            self._outcomes.put_back(run_id, held)
            raise

    def delete_run(self, run_id: str) -> None:
        """Refused (:class:`RunBusyError`) while a live context holds the run; its lock keeps one out meanwhile."""
        check_run_id(run_id, empty_ok=True)
        self._outcomes.flush_run(run_id)
        with self._guard("delete the run", run_id), self._conn.transaction():
            if self._locked_elsewhere(self._conn, run_id):  # who: as SqliteStore and open_run tell it
                row = self._conn.execute("SELECT owner FROM runs WHERE run_id = %s", (run_id,)).fetchone()
                raise RunBusyError(run_id, describe_lock_holder(row[0] if row else None) + " (it holds the run's lock)")
            for table in ("calls", "discarded", "runs"):
                self._conn.execute(f"DELETE FROM {table} WHERE run_id = %s", (run_id,))

    # -- time travel --------------------------------------------------------------------------

    def _fork(self, run_id: str, at: int, new_run_id: str | None, now: float, head: FreshHead | None = None) -> str:
        """Forks of one parent take turns (its row locked FOR UPDATE), so two kernels never pick the same
        generated id; an id another parent's fork took meanwhile is refused (explicit) or skipped (generated)."""
        self.flush()
        for _attempt in range(FORK_ATTEMPTS):
            try:
                with self._guard("fork the run", run_id), self._conn.transaction():
                    return self._fork_in(self._conn, run_id, at, new_run_id, now, head)
            except psycopg.errors.UniqueViolation:
                if new_run_id is not None:  # committed by another client after this one's check: as if before
                    raise fork_id_taken(run_id, new_run_id) from None
        raise RuntimeError(f"could not fork run {run_id!r}: every generated id was taken meanwhile; fork again")

    def _fork_in(
        self, conn: Any, run_id: str, at: int, new_run_id: str | None, now: float, head: FreshHead | None
    ) -> str:
        exists = conn.execute("SELECT 1 FROM runs WHERE run_id = %s FOR UPDATE", (run_id,)).fetchone() is not None
        parent = [q.call_record(r, True) for r in conn.execute(q.CALLS_OF_RUN, (run_id,))] if exists else None

        def taken(rid: str) -> bool:
            return conn.execute("SELECT 1 FROM runs WHERE run_id = %s", (rid,)).fetchone() is not None

        key = fork_seq_key(run_id)  # the last number given (history.py): a pruned fork's id is not given again
        kept = conn.execute(q.META_VALUE, (key,)).fetchone()
        existing = conn.execute(q.RUN_IDS_LIKE, (q.like_prefix(fork_prefix(run_id)[0]),))
        issued = forks_issued(run_id, kept and kept[0], (r[0] for r in existing))
        new_id = check_fork(run_id, at, new_run_id, parent, taken, repr(self), head, issued)
        number = fork_number(run_id, new_id)
        if number is not None and number > issued:
            conn.execute(q.KEEP_META, (key, str(number)))
        parent_run_id, forked_at, attempts = fork_row(head, run_id, at)
        conn.execute(q.FORK_RUN, (new_id, now, now, attempts, parent_run_id, forked_at))
        conn.execute(q.FORK_CALLS, (new_id, run_id, at))
        if head is not None:
            conn.execute(q.REOPEN_FIRST, (head.call_id, head.args_digest, now, new_id))  # same transaction
        return new_id

    def _kept(self, key: str) -> Any:
        self.flush()
        with self._guard("read the journal's numbers"):
            row = self._conn.execute(q.META_VALUE, (key,)).fetchone()
        return None if row is None else row[0]

    def _keep(self, key: str, number: int) -> None:
        """The key's row is made if missing, then locked (FOR UPDATE): two clients keeping numbers at once take
        turns, the second reading the first's once it committed (READ COMMITTED)."""
        with self._guard("keep a run's number"), self._conn.transaction():
            self._conn.execute(q.MAKE_META, (key,))
            row = self._conn.execute(q.LOCK_META, (key,)).fetchone()
            if number > number_kept(row[0]):
                self._conn.execute(q.KEEP_META, (key, str(number)))

    def _prune(self, rule: PruneRule, now: float) -> list[RunRecord]:
        """Select, then delete in transactions of at most ``history.PRUNE_BATCH`` runs.

        Each deleted run's advisory lock is held by its transaction until the delete
        commits (no context can open it meanwhile); PostgreSQL's lock table holds only
        ``max_locks_per_transaction`` x connections locks, so one transaction over tens
        of thousands of old runs failed with "out of shared memory" and removed nothing.
        """
        self.flush()
        with self._guard("prune runs"), self._conn.transaction():
            runs = [q.run_record(r) for r in self._conn.execute(q.RUN_SELECT)]
            pending = {r[0] for r in self._conn.execute("SELECT DISTINCT run_id FROM calls WHERE status = 'PENDING'")}
        # Whether a live context holds a run is asked under the batch's locks below (select asks it last).
        selected = rule.select(runs, pending, now, lambda r: False)
        removed: list[RunRecord] = []
        for i, batch in enumerate(prune_batches(selected)):
            # A failed batch leaves the ones before it committed: the error says so (not "nothing removed").
            doing = "prune runs" if not i else (
                f"prune runs ({len(removed)} of the {len(selected)} selected were removed before this; "
                f"prune again to remove the rest)")
            with self._guard(doing), self._conn.transaction():
                removed += self._prune_batch(self._conn, rule, batch)
        return removed

    def _prune_batch(self, conn: Any, rule: PruneRule, batch: list[RunRecord]) -> list[RunRecord]:
        """Inside a transaction: lock the free runs of ``batch``, read them again, delete those unchanged."""
        batch = [r for r in batch if not self._locked_elsewhere(conn, r.run_id)]
        # Read again now that their locks are this transaction's (no context can open them until it
        # ends): a run written since the first read (run again, or a PENDING call gained) stays.
        ids = [r.run_id for r in batch]
        fresh = {r[0]: q.run_record(r) for r in conn.execute(q.RUN_SELECT + " WHERE r.run_id = ANY(%s)", (ids,))}
        pending = {r[0] for r in conn.execute(
            "SELECT DISTINCT run_id FROM calls WHERE status = 'PENDING' AND run_id = ANY(%s)", (ids,))}
        chosen = [r for r in batch if fresh.get(r.run_id) == r and (rule.include_pending or r.run_id not in pending)]
        ids = [r.run_id for r in chosen]
        for table in ("calls", "discarded", "runs"):
            conn.execute(f"DELETE FROM {table} WHERE run_id = ANY(%s)", (ids,))
        return chosen

    def run_is_open(self, run_id: str) -> bool:
        """Whether a live context on any machine holds the run (its advisory lock is taken).

        Looked up in ``pg_locks``, not tried as :meth:`_locked_elsewhere` does inside a prune or a
        delete (which must keep the run closed until they commit): a try-lock holds the lock for a
        moment, and a process opening the run then (a recovery, while JournalView refreshes) would
        be told the run is busy.
        """
        if self._locks.holds(run_id):
            return True
        key = self._locks.key(run_id)
        with self._guard("check a run's lease", run_id):
            got = self._conn.execute(q.LOCK_HELD, (key >> 32 & 0xFFFFFFFF, key & 0xFFFFFFFF)).fetchone()
        return bool(got and got[0])

    def _locked_elsewhere(self, conn: Any, run_id: str) -> bool:
        """Whether a live context (any machine) holds the run: its advisory lock is taken."""
        if self._locks.holds(run_id):
            return True
        got = conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (self._locks.key(run_id),)).fetchone()
        return not (got and got[0])

    def set_lineage(self, run_id: str, parent_run_id: str, forked_at: int) -> None:
        self._outcomes.flush_run(run_id)
        with self._guard("record a fork's parent", run_id), self._conn.transaction():
            self._conn.execute(
                "UPDATE runs SET parent_run_id = %s, forked_at = %s WHERE run_id = %s",
                (parent_run_id, forked_at, run_id),
            )

    def set_prompt(self, run_id: str, index: int, prompt: str) -> None:
        lease = self._lease(run_id, None)
        self._outcomes.flush_run(run_id)
        with self._guard("store a prompt", run_id), self._conn.transaction() as tx:
            if not lease.wrote:  # a recovery's first write can be the prompt (crash before it was stored)
                self._claim(tx.connection, lease)
            ok = self._conn.execute(q.SET_PROMPT, (prompt, run_id, index, run_id, lease.owner)).rowcount == 1
        if not ok:
            raise self._lost(lease, "another context took the run over")

    # -- held-back outcomes (durability "call"/"relaxed", see postgres_commit) ------------------

    def flush(self) -> None:
        """Commit every held-back outcome and run end now (a durable boundary), and release their runs."""
        self._outcomes.flush()
        if self._locks.releasing:  # every read flushes: no guard to enter when there is nothing to release
            with self._guard("release finished runs"):
                self._locks.release_now()

    @contextlib.contextmanager
    def boundary(self) -> Iterator[None]:
        with self._cond:
            self._boundary += 1
        try:
            yield
        finally:
            with self._cond:
                self._boundary -= 1
            self.flush()

    def _write_held(self, outcomes: list[q.Outcome], closing: list[Closing]) -> None:
        """Commit held outcomes and run ends in one transaction, then release those runs' locks."""
        run_id = outcomes[0].run_id if outcomes else closing[0][1][2]
        with self._guard("write held-back outcomes", run_id):
            with self._conn.transaction():
                self._write_closing(outcomes, closing)
            if closing:
                self._locks.release_later(closed_runs(closing))
                self._locks.release_now()

    def _write_closing(self, outcomes: list[q.Outcome], closing: list[Closing]) -> None:
        """Inside the caller's transaction: outcomes, then each held run end after its outcomes.

        Each is fenced by its own owner: a context whose run was taken over meanwhile
        writes nothing (dropped, as a crash would drop it).
        """
        conn = self._conn
        for outcome in outcomes:
            conn.execute(q.COMPLETE_FENCED, outcome.fenced())
        for run_outcomes, close in closing:
            for outcome in run_outcomes:
                conn.execute(q.COMPLETE_FENCED, outcome.fenced())
            conn.execute(q.CLOSE, close)


def _raise_alone(err: BaseException, outer: BaseException | None) -> NoReturn:
    """Raise ``err`` with ``outer`` as its (hidden) ``__context__``, not psycopg's error Python would set."""
    try:
        raise err
    finally:
        err.__context__, err.__suppress_context__ = outer, True


def unstorable(what: str, fix: str = "") -> str:
    """Why text with a NUL character or a lone surrogate cannot reach PostgreSQL, and what to do."""
    return (f"{what}: PostgreSQL's text type cannot hold NUL characters (\\x00) or lone surrogates, and the text "
            f"has one. Nothing was written. Use text without them{'; ' + fix if fix else ''}.")


def _weakly(method: Callable[..., Any]) -> Callable[..., Any]:
    """``method`` called through a weak reference to its store (a collected store's parts are not called)."""
    ref = weakref.WeakMethod(method)

    def call(*args: Any) -> Any:
        bound = ref()
        if bound is None:
            raise ReferenceError("the PostgresStore was collected")
        return bound(*args)

    return call


def _close_connections(conns: list[tuple[threading.Thread, Any]], locks: AdvisoryLocks, pid: int) -> None:
    """A collected store's finalizer: close its connections, unless this is a forked child (they are the parent's)."""
    if pid != os.getpid():
        return
    for _, conn in list(conns):
        with contextlib.suppress(Exception):
            conn.close()
    locks.close()


def _reopen(dsn: str, durability: str) -> PostgresStore:
    return PostgresStore(dsn, durability=durability)
