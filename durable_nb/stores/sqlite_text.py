"""Text that SQLite cannot take as UTF-8: lone surrogates (non-UTF-8 file names, bytes decoded with
``surrogateescape``) in run ids, map keys, exception messages.

SQLite stores TEXT as UTF-8, and ``sqlite3`` refuses a ``str`` holding a lone
surrogate (``UnicodeEncodeError``). Such a string is bound as a BLOB of its
``surrogatepass`` encoding instead: exact and reversible (a BLOB never equals a
TEXT, so no other run id can collide with it), and :func:`text` turns it back
into the same ``str`` when read. Every connection of :class:`SqliteStore` is a
:class:`Connection`, so every statement (also the time-travel ones) gets this.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import Any

from ..journal.lease import FileLocks
from .bad_rows import BadRow


def _exact(value: str) -> str | bytes:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogatepass")
    return value


def bindable(params: Any) -> Any:
    """``params`` with every unencodable ``str`` replaced by its exact BLOB form."""
    if isinstance(params, dict):
        return {k: _exact(v) if v.__class__ is str and not v.isascii() else v for k, v in params.items()}
    for p in params:
        if p.__class__ is str and not p.isascii():
            return tuple(_exact(v) if v.__class__ is str else v for v in params)
    return params


def text(value: Any) -> Any:
    """A value read from a TEXT column: a BLOB written by :func:`bindable` becomes its ``str`` again.

    A BLOB no store wrote (bytes typed in with ``sqlite3``, a damaged page) that is not even
    ``surrogatepass`` UTF-8 is read with ``surrogateescape``: its bad bytes become lone surrogates the
    widgets show as escapes, where a ``UnicodeDecodeError`` made a whole journal unreadable.
    """
    if value.__class__ is bytes:
        try:
            return value.decode("utf-8", "surrogatepass")
        except UnicodeDecodeError:
            return value.decode("utf-8", "surrogateescape")
    return value


def hand_typed(run_id: str) -> bytes | None:
    """The bytes of a TEXT run id a lenient read (:func:`lenient_text`) turns into ``run_id``; None if none can.

    Why: a hand edit (``UPDATE runs SET run_id = CAST(X'68ff' AS TEXT)``) leaves a TEXT id that is not UTF-8,
    read as ``'h\\udcff'``; bound again, that ``str`` becomes the BLOB this store writes for it (``68 ed b3 bf``),
    which never equals the stored ``68 ff``: the run's calls were not found and ran again under a second run
    shown with the same id. Only ids holding U+DC80..U+DCFF can be such reads, so every other id costs one check.
    """
    if run_id.isascii() or not any("\udc80" <= ch <= "\udcff" for ch in run_id):
        return None
    try:
        raw = run_id.encode("utf-8", "surrogateescape")
        raw.decode("utf-8")
    except UnicodeEncodeError:  # other lone surrogates too: a BLOB id of this store, never a lenient read
        return None
    except UnicodeDecodeError:
        return raw
    return None  # valid UTF-8 (e.g. '\udcc3\udca9' is b'\xc3\xa9'): a TEXT holding it reads as 'é', not as this


def run_is(run_id: str, column: str = "run_id") -> tuple[str, tuple[Any, ...]]:
    """A read's condition on ``column`` for ``run_id``: also the hand-typed TEXT a lenient read showed as it.

    So ``store.calls(id)`` of an id ``store.runs()`` listed finds its calls, where it found nothing; opening
    the run is refused instead (:func:`refuse_hand_typed`), as a write could only bind the other form.
    """
    raw = hand_typed(run_id)
    if raw is None:
        return f"{column} = ?", (run_id,)
    return f"{column} IN (?, CAST(? AS TEXT))", (run_id, raw)


_HAND_TYPED = (
    "SELECT EXISTS (SELECT 1 FROM runs WHERE run_id = CAST(?1 AS TEXT)) "
    "OR EXISTS (SELECT 1 FROM calls WHERE run_id = CAST(?1 AS TEXT)) "
    "OR EXISTS (SELECT 1 FROM discarded WHERE run_id = CAST(?1 AS TEXT))"
)


def refuse_hand_typed(conn: sqlite3.Connection, run_id: str, lineage: bool) -> None:
    """:class:`~.bad_rows.BadRow` if the journal holds ``run_id`` as hand-typed TEXT that is not UTF-8.

    Refused, not matched: this store can only bind such an id as its BLOB, so the run's calls were not found
    and executed again. The fix names the statements that store the id the way this store writes it, which
    keeps the same ``str`` id (what ``store.runs()`` shows) and every journaled call (``lineage``: the journal
    has ``runs.parent_run_id``, schema 2).
    """
    raw = hand_typed(run_id)
    if raw is None or not conn.execute(_HAND_TYPED, (raw,)).fetchone()[0]:
        return
    new, old = f"X'{_exact(run_id).hex()}'", f"CAST(X'{raw.hex()}' AS TEXT)"  # type: ignore[union-attr]
    columns = [("runs", "run_id"), ("calls", "run_id"), ("discarded", "run_id")]
    fix = "; ".join(f"UPDATE {t} SET {c} = {new} WHERE {c} = {old}"
                    for t, c in columns + ([("runs", "parent_run_id")] if lineage else []))
    raise BadRow(
        f"run {run_id!r} has an id typed in as TEXT that is not UTF-8 (bytes {raw.hex(' ')}): durable_nb "
        f"reads it, but a run or write under it would not find its calls and would run them again",
        fix,
    )


def _lenient(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def lenient_text(exc: sqlite3.OperationalError, conns: Iterable[sqlite3.Connection]) -> bool:
    """After "Could not decode to UTF-8": read TEXT on ``conns`` with ``surrogateescape`` from now on; False for
    any other error.

    SQLite keeps whatever bytes a hand edit put in a TEXT column (``CAST(x'ff' AS TEXT)``) and ``sqlite3``
    then refused every read of that row, so one bad preview made a whole journal unreadable. Only a journal
    that holds such bytes pays for decoding in Python; the bad bytes become lone surrogates, which the
    widgets show as escapes.
    """
    if "Could not decode to UTF-8" not in str(exc):
        return False
    changed = False
    for conn in conns:
        if conn.text_factory is not _lenient:
            conn.text_factory, changed = _lenient, True
    return changed


class Connection(sqlite3.Connection):
    """A connection whose statements accept strings with lone surrogates (and that unpins its journal file)."""

    pinned: tuple[int, int, int] | None = None
    """The journal file this connection pinned (:func:`.sqlite_file.connect`), unpinned once it is closed."""

    def close(self) -> None:
        super().close()
        key, self.pinned = self.pinned, None
        if key is not None:
            FileLocks.unpin(key)

    def close_in_finalizer(self) -> None:
        """:meth:`close` for a store's finalizer: it takes no lock (see :meth:`FileLocks.unpin_later`)."""
        super().close()
        key, self.pinned = self.pinned, None
        FileLocks.unpin_later(key)

    def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
        # sqlite3 refuses such a string while binding, before the statement runs: nothing
        # happened, so binding again with the exact BLOB form is safe (and most statements,
        # all-encodable, pay nothing for the check).
        try:
            return super().execute(sql, parameters)
        except UnicodeEncodeError:
            return super().execute(sql, bindable(parameters))

    def executemany(self, sql: str, seq_of_parameters: Iterable[Any], /) -> sqlite3.Cursor:
        return super().executemany(sql, (bindable(p) for p in seq_of_parameters))


def prefix_where(prefix: str) -> tuple[str, tuple[Any, ...]]:
    """The ``WHERE`` of the run ids that start with ``prefix``: ranges the primary key's index serves.

    Why ranges, not ``LIKE``: SQLite's ``LIKE`` ignores ASCII case and uses no index on a
    BINARY column. TEXT compares as its UTF-8 bytes (as code points), so the ids starting
    with ``prefix`` lie in ``[prefix, prefix_end)``; ids held as BLOBs (a lone surrogate,
    :func:`bindable`) sort after every TEXT and need a range of bytes of their own.
    """
    low = prefix.encode("utf-8", "surrogatepass")
    high = low.rstrip(b"\xff")
    blob = "run_id >= ?" if not high else "run_id >= ? AND run_id < ?"
    params: tuple[Any, ...] = (low,) if not high else (low, high[:-1] + bytes([high[-1] + 1]))
    if isinstance(_exact(prefix), bytes):  # a lone surrogate: no TEXT id starts with it
        return f" WHERE {blob}", params
    end = _text_end(prefix)
    within = "run_id >= ? AND typeof(run_id) = 'text'" if end is None else "run_id >= ? AND run_id < ?"
    return f" WHERE ({within}) OR ({blob})", (prefix,) + (() if end is None else (end,)) + params


def _text_end(prefix: str) -> str | None:
    """The least text above every text that starts with ``prefix`` (None: none, e.g. for ``""``).

    The last character below U+10FFFF goes up by one; the surrogates, which no TEXT holds, are skipped.
    """
    head = prefix.rstrip(chr(0x10FFFF))
    if not head:
        return None
    up = ord(head[-1]) + 1
    return head[:-1] + chr(0xE000 if 0xD800 <= up <= 0xDFFF else up)
