"""The embedded journal: one SQLite file in WAL mode, every transition fsynced.

Why these settings:

* ``journal_mode=WAL``: a commit appends to the WAL and needs one fsync; readers
  (the journal widget) never block the writer.
* ``synchronous=FULL``: in WAL mode NORMAL does not fsync at commit, so a power
  loss could drop the last transitions. FULL makes each commit durable before
  ``commit`` returns, which is the contract ("durable before the code after it runs").
* ``busy_timeout``: several processes (a notebook, Flink workers, a second kernel)
  write one file; a writer waits for the lock instead of failing.
* ``BEGIN IMMEDIATE`` for writes: take the write lock up front, so a read-then-write
  transaction (lease checks) cannot be upgraded into a deadlock.

Opening validates before it writes: a file that is not SQLite, a SQLite file that
is not a journal, or a journal from a newer version raise
:class:`JournalFormatError` and the file is not modified.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import JournalFormatError, RunBusyError
from ..journal.lease import describe_owner, end_owner, owner_is_alive
from ..journal.records import CallRecord, DiscardedCall, Origin, RunRecord, RunStatus, Status
from ..journal.store import Store, check_status

SCHEMA_VERSION = 1
APP_ID = "durable_nb"

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE runs (
    run_id      TEXT PRIMARY KEY,
    status      TEXT NOT NULL,
    created_at  REAL NOT NULL,
    updated_at  REAL NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    owner       TEXT,
    n_discarded INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE calls (
    seq            INTEGER PRIMARY KEY,   -- journal order across runs (rowid)
    run_id         TEXT NOT NULL,
    idx            INTEGER NOT NULL,
    call_id        TEXT NOT NULL,
    args_digest    TEXT NOT NULL,
    status         TEXT NOT NULL,
    origin         TEXT,
    payload        BLOB,
    payload_format TEXT,
    result_preview TEXT,
    error_preview  TEXT,
    started_at     REAL NOT NULL,
    finished_at    REAL,
    UNIQUE (run_id, idx)
);
-- Only PENDING rows: what the ReconcilePanel lists. A partial index keeps each commit to
-- one small index page (an index over every status or call id costs page writes on the
-- hot path, and filtering 100,000 calls by those scans in milliseconds anyway).
CREATE INDEX calls_pending ON calls (seq) WHERE status = 'PENDING';
CREATE TABLE discarded (
    seq            INTEGER PRIMARY KEY,
    run_id         TEXT NOT NULL,
    idx            INTEGER NOT NULL,
    call_id        TEXT NOT NULL,
    args_digest    TEXT NOT NULL,
    status         TEXT NOT NULL,
    origin         TEXT,
    result_preview TEXT,
    error_preview  TEXT,
    started_at     REAL NOT NULL,
    finished_at    REAL,
    discarded_at   REAL NOT NULL,
    reason         TEXT NOT NULL
);
CREATE INDEX discarded_by_run ON discarded (run_id, seq);
"""

_CALL_COLS = "run_id, idx, call_id, args_digest, status, origin, result_preview, error_preview, started_at, finished_at"


def _create_schema(conn: sqlite3.Connection) -> None:
    """Tables and the schema version in one transaction (the caller's), so a crash leaves neither."""
    for statement in _SCHEMA.split(";"):
        if statement.strip():
            conn.execute(statement)
    conn.executemany(
        "INSERT INTO meta VALUES (?, ?)", [("app", APP_ID), ("schema_version", str(SCHEMA_VERSION))]
    )


# Dict lookups instead of Enum(value) calls: opening a run builds one record per call.
_STATUS = {s.value: s for s in Status}
_ORIGIN = {o.value: o for o in Origin}


def _call(row: tuple[Any, ...], payload: bytes | None = None) -> CallRecord:
    return CallRecord(
        row[0], row[1], row[2], row[3], _STATUS.get(row[4]) or Status(row[4]),
        (_ORIGIN.get(row[5]) or Origin(row[5])) if row[5] else None,
        row[6], row[7], row[8], row[9], payload,
    )


class SqliteStore(Store):
    """A journal in one SQLite file (created with its folder if missing).

    Safe to share between threads (one connection per thread) and processes
    (SQLite locking); picklable, so Flink workers reopen the same file.
    Loading a journal unpickles nothing; :meth:`CallRecord.result` does, and a
    journal from someone else can run code when you call it.
    """

    def __init__(self, path: str | os.PathLike[str] = Path(".durable") / "journal.db") -> None:
        self.path = Path(path).expanduser().absolute()
        self._local = threading.local()
        self._validate_or_create()

    def __repr__(self) -> str:
        return f"SqliteStore({str(self.path)!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (str(self.path),))

    # -- connections ----------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=60.0, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout = 60000")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        return conn

    @property
    def _conn(self) -> sqlite3.Connection:
        local = self._local
        conn: sqlite3.Connection | None = getattr(local, "conn", None)
        # A forked child (multiprocessing, Flink workers) must not reuse the parent's handle.
        if conn is None or local.pid != os.getpid():
            conn = local.conn = self._connect()
            local.pid = os.getpid()
        return conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def _validate_or_create(self) -> None:
        if self.path.exists() and self.path.stat().st_size > 0:
            self._validate_existing()
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._write() as conn:
            # Another process may have created it between our check and our lock.
            if conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0:
                _create_schema(conn)
        if not self._is_journal():
            self._validate_existing()

    def _is_journal(self) -> bool:
        try:
            rows = dict(self._conn.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.DatabaseError:
            return False
        return rows.get("app") == APP_ID

    def _validate_existing(self) -> None:
        """Check an existing file read-only, so a wrong file is never modified."""
        hint = (
            "Pass the path of a durable_nb journal, or a new path to create one "
            "(the default is .durable/journal.db)."
        )
        try:
            ro = sqlite3.connect(f"{self.path.as_uri()}?mode=ro", uri=True)
            try:
                tables = {r[0] for r in ro.execute("SELECT name FROM sqlite_master WHERE type='table'")}
                meta = dict(ro.execute("SELECT key, value FROM meta").fetchall()) if "meta" in tables else {}
            finally:
                ro.close()
        except sqlite3.DatabaseError as exc:
            raise JournalFormatError(f"{self.path} is not a durable_nb journal ({exc}). {hint}") from None
        if meta.get("app") != APP_ID:
            if not tables:
                with self._write() as conn:
                    _create_schema(conn)
                return
            raise JournalFormatError(
                f"{self.path} is an SQLite database but not a durable_nb journal "
                f"(tables: {', '.join(sorted(tables))}). {hint}"
            )
        version = int(meta.get("schema_version", "0"))
        if version > SCHEMA_VERSION:
            raise JournalFormatError(
                f"{self.path} has journal schema version {version}, newer than this durable_nb "
                f"understands ({SCHEMA_VERSION}). Upgrade durable_nb (pip install -U durable_nb); "
                f"the file was not changed."
            )

    # -- reading ----------------------------------------------------------------

    def _run_record(self, row: tuple[Any, ...]) -> RunRecord:
        return RunRecord(row[0], RunStatus(row[1]), row[2], row[3], row[4], row[7], row[6], row[5])

    _RUN_SELECT = (
        "SELECT r.run_id, r.status, r.created_at, r.updated_at, r.attempts, r.owner, r.n_discarded, "
        "(SELECT count(*) FROM calls c WHERE c.run_id = r.run_id) FROM runs r"
    )

    def runs(self) -> list[RunRecord]:
        rows = self._conn.execute(self._RUN_SELECT + " ORDER BY r.created_at, r.rowid").fetchall()
        return [self._run_record(r) for r in rows]

    def run(self, run_id: str) -> RunRecord | None:
        row = self._conn.execute(self._RUN_SELECT + " WHERE r.run_id = ?", (run_id,)).fetchone()
        return self._run_record(row) if row else None

    def calls(self, run_id: str) -> list[CallRecord]:
        rows = self._conn.execute(
            f"SELECT {_CALL_COLS}, payload FROM calls WHERE run_id = ? ORDER BY idx", (run_id,)
        ).fetchall()
        return [_call(r, r[10]) for r in rows]

    def call(self, run_id: str, index: int) -> CallRecord | None:
        row = self._conn.execute(
            f"SELECT {_CALL_COLS}, payload FROM calls WHERE run_id = ? AND idx = ?", (run_id, index)
        ).fetchone()
        return _call(row, row[10]) if row else None

    def discarded(self, run_id: str | None = None) -> list[DiscardedCall]:
        sql = f"SELECT {_CALL_COLS}, discarded_at, reason FROM discarded"
        params: tuple[Any, ...] = ()
        if run_id is not None:
            sql += " WHERE run_id = ?"
            params = (run_id,)
        rows = self._conn.execute(sql + " ORDER BY seq", params).fetchall()
        return [
            DiscardedCall(
                r[0], r[1], r[2], r[3], Status(r[4]), Origin(r[5]) if r[5] else None,
                r[6], r[7], r[8], r[9], r[10], r[11],
            )
            for r in rows
        ]

    @staticmethod
    def _where(run_id: str | None, status: Status | str | None, call_id: str | None) -> tuple[str, list[Any]]:
        clauses, params = [], []
        if run_id is not None:
            clauses.append("run_id = ?")
            params.append(run_id)
        st = check_status(status)
        if st is not None:
            # Inlined, not bound: the planner only uses the partial PENDING index for a
            # literal. Safe: check_status admits only the three enum values.
            clauses.append(f"status = '{st}'")
        if call_id is not None:
            clauses.append("call_id = ?")
            params.append(call_id)
        return (" WHERE " + " AND ".join(clauses) if clauses else ""), params

    def query_calls(
        self,
        *,
        run_id: str | None = None,
        status: Status | str | None = None,
        call_id: str | None = None,
        offset: int = 0,
        limit: int | None = None,
    ) -> list[CallRecord]:
        where, params = self._where(run_id, status, call_id)
        sql = f"SELECT {_CALL_COLS} FROM calls{where} ORDER BY seq LIMIT ? OFFSET ?"
        rows = self._conn.execute(sql, [*params, -1 if limit is None else limit, offset]).fetchall()
        return [_call(r) for r in rows]

    def count_calls(
        self, *, run_id: str | None = None, status: Status | str | None = None, call_id: str | None = None
    ) -> int:
        where, params = self._where(run_id, status, call_id)
        return int(self._conn.execute(f"SELECT count(*) FROM calls{where}", params).fetchone()[0])

    # -- writing ----------------------------------------------------------------

    def open_run(self, run_id: str, owner: str, *, steal: bool = False) -> list[CallRecord]:
        import time

        now = time.time()
        with self._write() as conn:
            row = conn.execute("SELECT owner FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            if row is None:
                conn.execute(
                    "INSERT INTO runs (run_id, status, created_at, updated_at, attempts, owner) "
                    "VALUES (?, 'RUNNING', ?, ?, 1, ?)",
                    (run_id, now, now, owner),
                )
            else:
                if not steal and row[0] and owner_is_alive(row[0]):
                    end_owner(owner)
                    raise RunBusyError(run_id, describe_owner(row[0]))
                conn.execute(
                    "UPDATE runs SET status = 'RUNNING', updated_at = ?, attempts = attempts + 1, owner = ? "
                    "WHERE run_id = ?",
                    (now, owner, run_id),
                )
            rows = conn.execute(
                f"SELECT {_CALL_COLS}, payload FROM calls WHERE run_id = ? ORDER BY idx", (run_id,)
            ).fetchall()
        return [_call(r, r[10]) for r in rows]

    def close_run(self, run_id: str, owner: str, status: RunStatus | None) -> None:
        import time

        with self._write() as conn:
            conn.execute(
                "UPDATE runs SET status = coalesce(?, status), updated_at = ?, owner = NULL "
                "WHERE run_id = ? AND owner = ?",
                (None if status is None else RunStatus(status).value, time.time(), run_id, owner),
            )

    # append_pending and complete_call are one statement each: in autocommit mode that
    # statement is its own transaction, takes the write lock up front exactly like
    # BEGIN IMMEDIATE (busy handler included) and is fsynced before execute returns.
    # Skipping the explicit BEGIN/COMMIT saves two round trips on the hottest path.

    def append_pending(self, run_id: str, index: int, call_id: str, args_digest: str, started_at: float) -> None:
        self._conn.execute(
            "INSERT INTO calls (run_id, idx, call_id, args_digest, status, started_at) "
            "VALUES (?, ?, ?, ?, 'PENDING', ?)",
            (run_id, index, call_id, args_digest, started_at),
        )

    def complete_call(
        self,
        run_id: str,
        index: int,
        *,
        status: Status,
        origin: Origin,
        payload: bytes,
        result_preview: str | None,
        error_preview: str | None,
        finished_at: float,
        only_if_pending: bool = False,
    ) -> bool:
        sql = (
            "UPDATE calls SET status = ?, origin = ?, payload = ?, payload_format = 'pickle', "
            "result_preview = ?, error_preview = ?, finished_at = ? WHERE run_id = ? AND idx = ?"
        )
        if only_if_pending:
            sql += " AND status = 'PENDING'"
        cur = self._conn.execute(
            sql,
            (Status(status).value, Origin(origin).value, payload, result_preview, error_preview,
             finished_at, run_id, index),
        )
        return cur.rowcount == 1

    def discard_from(self, run_id: str, index: int, reason: str, at: float) -> None:
        with self._write() as conn:
            cur = conn.execute(
                f"INSERT INTO discarded ({_CALL_COLS}, discarded_at, reason) "
                f"SELECT {_CALL_COLS}, ?, ? FROM calls WHERE run_id = ? AND idx >= ? ORDER BY idx",
                (at, reason, run_id, index),
            )
            conn.execute("DELETE FROM calls WHERE run_id = ? AND idx >= ?", (run_id, index))
            conn.execute(
                "UPDATE runs SET n_discarded = n_discarded + ? WHERE run_id = ?", (cur.rowcount, run_id)
            )

    def delete_run(self, run_id: str) -> None:
        with self._write() as conn:
            for table in ("calls", "discarded", "runs"):
                conn.execute(f"DELETE FROM {table} WHERE run_id = ?", (run_id,))
