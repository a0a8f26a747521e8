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
    """A connection whose statements accept strings with lone surrogates."""

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
