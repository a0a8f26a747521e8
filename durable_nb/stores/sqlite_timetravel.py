"""SqliteStore's time-travel writes: fork, prune (with space reclaimed), durable_input prompts, issued numbers.

Kept beside ``sqlite.py`` (the commit machinery and reads) as a mixin: the rules
are :mod:`durable_nb.journal.history`'s; here they run inside one ``BEGIN
IMMEDIATE`` transaction each, so a check and the write it allows cannot be
separated by another process's write. Needs schema version 2 (``runs.parent_run_id``,
``runs.forked_at``, ``calls.prompt``), which the store's first write migrates to.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

from ..journal.history import (
    FreshHead,
    PruneRule,
    check_fork,
    fork_number,
    fork_prefix,
    fork_row,
    fork_seq_key,
    forks_issued,
    number_kept,
    prune_batches,
)
from ..journal.records import CallRecord, RunRecord, Status
from .sqlite_text import hand_typed, text

# Columns a fork copies (everything but seq, which orders the journal, and run_id).
_COPIED = (
    "idx, call_id, args_digest, status, origin, payload, payload_format, result_preview, error_preview, "
    "started_at, finished_at, prompt"
)

REOPEN_FIRST = (
    "UPDATE calls SET call_id = ?, args_digest = ?, status = 'PENDING', origin = NULL, payload = NULL, "
    "payload_format = NULL, result_preview = NULL, error_preview = NULL, started_at = ?, finished_at = NULL, "
    "prompt = NULL WHERE run_id = ? AND idx = 0"
)
"""Call 0 of a cell's fork: begun afresh (``history.FreshHead``), the cell open as a crash leaves it."""

RECLAIM_FRACTION = 4
"""VACUUM after a prune when at least 1/RECLAIM_FRACTION of the file's pages are free."""
RECLAIM_WAIT_MS = 2000
"""How long the VACUUM waits for other connections; past that it is skipped (the next prune retries)."""


class SqliteTimeTravel:
    """Mixed into :class:`SqliteStore`; uses its ``_write()`` transactions and ``_conn``."""

    if TYPE_CHECKING:  # provided by SqliteStore
        @property
        def _conn(self) -> sqlite3.Connection: ...

        def _write(self) -> AbstractContextManager[sqlite3.Connection]: ...

        def _read(self) -> sqlite3.Connection: ...

        def runs(self) -> list[RunRecord]: ...

        def query_calls(self, *, status: Status | str | None = None) -> list[CallRecord]: ...

        def flush(self) -> None: ...

        def _kept_out(self, run_ids: Sequence[str]) -> AbstractContextManager[set[str]]: ...

        def run_is_open(self, run_id: str) -> bool: ...

        def _open_as_read(self, run: RunRecord) -> bool: ...

        def _refuse_hand_typed(self, run_id: str, owner: str | None) -> None: ...

    def _fork(self, run_id: str, at: int, new_run_id: str | None, now: float, head: FreshHead | None = None) -> str:
        if hand_typed(run_id) is not None:  # said so, not "no run" of an id store.runs() lists
            self._refuse_hand_typed(run_id, None)
        with self._write() as conn:
            def exists(rid: str) -> bool:
                return conn.execute("SELECT 1 FROM runs WHERE run_id = ?", (rid,)).fetchone() is not None

            calls = None
            if exists(run_id):
                calls = [
                    CallRecord(run_id, idx, call_id, "", Status(status), None, None, None, 0.0, None)
                    for idx, call_id, status in conn.execute(
                        "SELECT idx, call_id, status FROM calls WHERE run_id = ? ORDER BY idx", (run_id,)
                    )
                ]
            issued = _forks_issued(conn, run_id)
            new_id = check_fork(run_id, at, new_run_id, calls, exists, repr(self), head, issued)
            number = fork_number(run_id, new_id)
            if number is not None and number > issued:  # kept in meta: never given again, even once pruned
                _set_meta(conn, fork_seq_key(run_id), number)
            parent, forked_at, attempts = fork_row(head, run_id, at)
            conn.execute(
                "INSERT INTO runs (run_id, status, created_at, updated_at, attempts, parent_run_id, forked_at) "
                "VALUES (?, 'RUNNING', ?, ?, ?, ?, ?)",
                (new_id, now, now, attempts, parent, forked_at),
            )
            conn.execute(
                f"INSERT INTO calls (run_id, {_COPIED}) SELECT ?, {_COPIED} FROM calls "
                f"WHERE run_id = ? AND idx < ? ORDER BY idx",
                (new_id, run_id, at),
            )
            if head is not None:  # the same transaction: no fork is ever seen with its call 0 copied
                conn.execute(REOPEN_FIRST, (head.call_id, head.args_digest, now, new_id))
        return new_id

    def _kept(self, key: str) -> object:
        return _meta_value(self._read(), key)

    def _keep(self, key: str, number: int) -> None:
        with self._write() as conn:  # BEGIN IMMEDIATE: read and write with no other writer between them
            if number > number_kept(_meta_value(conn, key)):
                _set_meta(conn, key, number)

    def _prune(self, rule: PruneRule, now: float) -> list[RunRecord]:
        """Select, then delete in transactions of at most ``history.PRUNE_BATCH`` runs.

        Each batch's runs are OS-locked until its delete commits. Linux keeps a file's
        record locks in one list that every lock call walks, so locking all of tens of
        thousands of selected runs at once made a prune quadratic (80,000 runs: 3 minutes).
        """
        with_pending = {c.run_id for c in self.query_calls(status=Status.PENDING)}
        selected = rule.select(self.runs(), with_pending, now, self._open_as_read)
        chosen: list[RunRecord] = []
        for batch in prune_batches(selected):
            chosen += self._prune_batch(rule, batch)
        if chosen:
            self._reclaim()
        return chosen

    def _prune_batch(self, rule: PruneRule, selected: list[RunRecord]) -> list[RunRecord]:
        """In one transaction: delete those of ``selected`` still free, unchanged and without PENDING calls."""
        with self._kept_out([r.run_id for r in selected]) as free, self._write() as conn:
            # Checked again under the write lock: a run written since the selection (run
            # again: status or updated_at changed) or that gained a PENDING call stays, and so
            # does one a live context holds; the run's OS lock keeps any context out until the
            # delete commits. Read a few hundred runs per query, not two queries per run: the
            # write lock (every writer of the file waits) is held for the whole batch.
            state, pending = _prune_state(conn, [r.run_id for r in selected if r.run_id in free])
            chosen = [
                run for run in selected
                if run.run_id in free and state.get(run.run_id) == (run.status.value, run.updated_at)
                and (rule.include_pending or run.run_id not in pending)
            ]
            delete_runs(conn, [r.run_id for r in chosen])
        return chosen

    def _reclaim(self) -> None:
        """Give freed pages back to the file system once they are a good part of the file.

        A delete only moves pages to SQLite's free list; ``VACUUM`` rewrites the file
        without them and the TRUNCATE checkpoint empties the WAL. Skipped, not failed,
        when another connection keeps the database busy: the next prune retries.
        """
        self.flush()  # nothing held back: VACUUM needs no open transaction on this connection
        conn = self._conn
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
        total = conn.execute("PRAGMA page_count").fetchone()[0]
        if not free or free * RECLAIM_FRACTION < total:
            return
        # A short wait: writers elsewhere must not be held up by housekeeping for long.
        conn.execute(f"PRAGMA busy_timeout = {RECLAIM_WAIT_MS}")
        try:
            conn.execute("VACUUM")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.OperationalError:
            return
        finally:
            conn.execute("PRAGMA busy_timeout = 60000")

    def set_lineage(self, run_id: str, parent_run_id: str, forked_at: int) -> None:
        """Record that ``run_id`` is a fork of ``parent_run_id`` at ``forked_at`` (see :meth:`Store.set_lineage`)."""
        with self._write() as conn:
            conn.execute(
                "UPDATE runs SET parent_run_id = ?, forked_at = ? WHERE run_id = ?", (parent_run_id, forked_at, run_id)
            )

    def set_prompt(self, run_id: str, index: int, prompt: str) -> None:
        """Store a waiting ``durable_input``'s question: widgets show it unpickling nothing (``Store.set_prompt``)."""
        with self._write() as conn:
            conn.execute("UPDATE calls SET prompt = ? WHERE run_id = ? AND idx = ?", (prompt, run_id, index))


def _forks_issued(conn: sqlite3.Connection, run_id: str) -> int:
    """Inside the fork's write transaction: the last fork number of ``run_id`` given (``history.forks_issued``)."""
    existing = [text(r[0]) for r in conn.execute(
        "SELECT run_id FROM runs WHERE run_id >= ? AND run_id < ?", fork_prefix(run_id))]
    return forks_issued(run_id, _meta_value(conn, fork_seq_key(run_id)), existing)


def _meta_value(conn: sqlite3.Connection, key: str) -> object:
    """The ``meta`` value kept under ``key`` as stored (None: none): a fork's or a cell attempt's last number."""
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return None if row is None else row[0]


def _set_meta(conn: sqlite3.Connection, key: str, number: int) -> None:
    """Inside the caller's write transaction: keep ``number`` under ``key`` (the caller checked it is higher)."""
    conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, str(number)))


_STATE_CHUNK = 256
"""Runs whose state one query of a prune's batch reads (well under SQLite's bound-parameter limit)."""


def _prune_state(conn: sqlite3.Connection, run_ids: Sequence[str]) -> tuple[dict[str, tuple[object, object]], set[str]]:
    """Inside the prune's write transaction: ``(status, updated_at)`` of each of ``run_ids`` that exists, and those
    of them with a PENDING call. Ids read back go through :func:`.sqlite_text.text`: an id with a lone surrogate
    is stored as a BLOB and read as bytes, which matched no run (the dry run listed it, the prune kept it)."""
    state: dict[str, tuple[object, object]] = {}
    pending: set[str] = set()
    for start in range(0, len(run_ids), _STATE_CHUNK):
        chunk = list(run_ids[start:start + _STATE_CHUNK])
        marks = ", ".join("?" * len(chunk))
        for rid, status, updated in conn.execute(
                f"SELECT run_id, status, updated_at FROM runs WHERE run_id IN ({marks})", chunk):
            state[text(rid)] = (status, updated)
        pending.update(text(r[0]) for r in conn.execute(
            f"SELECT DISTINCT run_id FROM calls WHERE status = 'PENDING' AND run_id IN ({marks})", chunk))
    return state, pending


def delete_runs(conn: sqlite3.Connection, run_ids: Iterable[str]) -> None:
    """Inside the caller's write transaction: the runs, their calls and their discarded history."""
    ids = [(r,) for r in run_ids]
    for table in ("calls", "discarded", "runs"):
        conn.executemany(f"DELETE FROM {table} WHERE run_id = ?", ids)
