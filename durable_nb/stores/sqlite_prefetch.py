"""Reading the journals of many runs in one query, for :meth:`SqliteStore.open_run` inside a ``map``.

Why: a replayed record of a ``map`` cost little more than the SELECT that loaded
its run when it was opened; one query for a chunk of the map's runs costs a
fraction of that per run.

Why it keeps the lease rules: a run's recorded calls must be read while its lease
is held, so that two contexts never write one index. So a chunk is read only
after its runs' OS locks are taken (:class:`~durable_nb.journal.lease.FileLocks`,
the same per-run locks ``open_run`` takes; runs another process holds, or another
context of this process has open, are left out of the chunk). From then on no
other process can open those runs: each run is held without a gap from before its
rows were read until its context closes, exactly as if it had been opened then.
Each context takes a lock count of its own; the prefetch gives its counts back
when the ``map`` has passed them (with one system call per gap between the
locks still held, not one per run), so a run stays busy for other processes a
few milliseconds after its context closed, as a run whose end is held back does.

What is left is this process itself: another thread or store object could open
one of those runs (locks are counted per process) or write to it. Every commit
of this process to the file counts in :attr:`FileLocks.writes`; the chunk's rows
are used only if that count did not move since they were read (it is read before
the SELECT, so a racing commit makes the chunk stale, never wrong), and a run
with writes held back in the opening store object is never served from a chunk.
Otherwise the run is read on its own, as without a prefetch. A ``map`` that writes
(a first run) makes every chunk stale at once: a new chunk is read only when an
open finds the count unchanged since the previous open.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

from ..journal.lease import FileLocks
from .sqlite_text import text

CHUNK = 256
"""Runs read per prefetch query (well under SQLite's bound-parameter limit)."""


class Prefetch:
    """The map's run ids in order, the OS locks taken ahead for a chunk of them, and their rows."""

    __slots__ = ("_end", "_files", "_held", "_last", "_order", "_position", "_rows", "_stamp")

    def __init__(self, run_ids: Sequence[str], files: FileLocks) -> None:
        self._order = list(run_ids)
        self._position = {rid: i for i, rid in enumerate(self._order)}
        self._files = files
        self._held: dict[str, int] = {}
        """Runs (and their positions) whose OS lock this prefetch holds, one count each, until the map has
        passed them: their contexts take counts of their own, and the prefetch gives its own back in bulk."""
        self._rows: dict[str, list[tuple[Any, ...]]] = {}
        self._stamp = -1
        """``files.writes`` when the rows were read."""
        self._last: int | None = None
        """``files.writes`` at the previous open."""
        self._end = 0
        """Position after the last chunk."""

    def rows(
        self, conn: sqlite3.Connection, run_id: str, select_one: str, select_many: str,
        settle: Callable[[str | None], None] = lambda _: None,
    ) -> list[tuple[Any, ...]]:
        """The rows ``select_one`` returns for ``run_id`` now (call with the run's lease held).

        ``settle(run_id)`` runs before the run is read on its own, ``settle(None)`` before a
        chunk is read once its runs are locked: the store brings what it reads up to date
        there (its intent log, dead processes' logs). Rows served from a chunk need nothing
        more: their runs stayed locked since, so no other process can have written them.
        """
        stamp = self._files.writes
        if stamp != self._stamp:
            self._rows.clear()
        cached = self._rows.pop(run_id, None)
        quiet = self._last is None or stamp == self._last
        self._last = stamp
        if cached is not None:
            return cached
        start = self._position.get(run_id)
        if start is None or not quiet or (stamp == self._stamp and start < self._end):
            if self._held and start is not None:
                self._pass(start)
            settle(run_id)
            return conn.execute(select_one, (run_id,)).fetchall()  # busy at chunk time, or the journal is moving
        return self._chunk(conn, run_id, start, select_many, settle)

    def _pass(self, start: int) -> None:
        """Give back the locks of the runs before ``start``: the map has passed them.

        Why here too: a map that writes reads no chunk after its first one, and
        that chunk's locks, given back only by the next chunk, stayed held until
        the map returned (runs it finished an hour ago busy for every other
        kernel). The held runs are in map order but for runs locked late, so
        stopping at the first one ahead costs O(1) per open; a late one left
        behind goes with the next chunk or at the end.
        """
        files, held = self._files, self._held
        with files.lock:
            behind = []
            for rid, at in held.items():
                if at >= start:
                    break
                behind.append(rid)
            if behind:
                files.unlock_many(behind)
                for rid in behind:
                    del held[rid]

    def _chunk(
        self, conn: sqlite3.Connection, run_id: str, start: int, select_many: str,
        settle: Callable[[str | None], None],
    ) -> list[tuple[Any, ...]]:
        """Lock the next runs, then read them with ``run_id`` (whose lease is held) in one query."""
        files, held = self._files, self._held
        chunk = [run_id]
        with files.lock:
            behind = [rid for rid, at in held.items() if at < start]
            if behind:  # the runs of the chunks before, whose contexts have come and gone
                files.unlock_many(behind)
                for rid in behind:
                    del held[rid]
            ahead = self._order[start + 1:start + CHUNK]
            chunk.extend(rid for rid in ahead if rid in held)
            position = self._position
            for rid in files.try_lock_many([rid for rid in ahead if rid not in held]):
                held[rid] = position[rid]
                chunk.append(rid)
        self._end = start + CHUNK
        settle(None)
        stamp = files.writes  # after the locks, before the read: a commit from now on makes the rows stale
        rows: dict[str, list[tuple[Any, ...]]] = {rid: [] for rid in chunk}
        for row in conn.execute(select_many.format(", ".join("?" * len(chunk))), chunk):
            rid = row[0]
            rows[rid if rid.__class__ is str else text(rid)].append(row)
        self._rows, self._stamp = rows, stamp
        return rows.pop(run_id)

    def release(self) -> None:
        """Give back every lock still held ahead (the map ended or stopped)."""
        files = self._files
        with files.lock:
            files.unlock_many(list(self._held))
            self._held.clear()
        self._rows.clear()
