"""The calls a widget shows, with a row no durable_nb writes kept in place as :class:`Unreadable`.

Why: a status or origin typed into a journal by hand ('BOGUS') makes the store's read of any page that holds
it raise :class:`~durable_nb.errors.JournalFormatError`. The widgets read pages, so one such row anywhere
stopped a ``ReconcilePanel`` or ``ReplayStepper`` from opening at all, and every other call with it. A
demanding user wants the widget to open, show that row (what is wrong, and the statement that fixes it,
which the store's error names) and refuse only what touches its run: opening that run refuses it anyway.

Only the failure path costs more: the page is read again in chunks, and a chunk that fails row by row, so a
10,000-call run with one bad row costs about fifty reads, not 10,000.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import JournalFormatError
from ..journal.records import CallRecord
from ..journal.store import Store

CHUNK = 200
"""Rows per re-read once a page failed: small enough that the bad chunk's row-by-row reads stay few."""


@dataclass(frozen=True)
class Unreadable:
    """A row of the query the store refused to read: its place in the query's order and the store's reason."""

    position: int
    """Offset of the row in the query's order (for one run's calls: its index, when they are numbered 0, 1...)."""
    reason: str
    """The store's :class:`JournalFormatError` text: the row, what is wrong, and how to correct it."""


def readable_calls(store: Store, *, offset: int = 0, limit: int | None = None,
                   **filters: Any) -> list[CallRecord | Unreadable]:
    """``store.query_calls(**filters, offset=offset, limit=limit)``, a row the store refuses as :class:`Unreadable`."""
    try:
        return list(store.query_calls(**filters, offset=offset, limit=limit))
    except JournalFormatError:
        pass
    total = store.count_calls(**filters)
    end = total if limit is None else min(total, offset + limit)
    out: list[CallRecord | Unreadable] = []
    for start in range(offset, end, CHUNK):
        size = min(CHUNK, end - start)
        try:
            out.extend(store.query_calls(**filters, offset=start, limit=size))
            continue
        except JournalFormatError:
            pass
        for i in range(start, start + size):
            try:
                out.extend(store.query_calls(**filters, offset=i, limit=1))
            except JournalFormatError as exc:
                out.append(Unreadable(i, str(exc)))
    return out
