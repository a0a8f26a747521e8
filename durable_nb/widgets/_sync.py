"""Keep the widgets on one journal in step with each other.

When a widget writes (a Step of the ReplayStepper, a Reconcile in the
ReconcilePanel) every other live widget on the same journal redraws at once,
so the screen never shows a call as PENDING that the journal already settled.
Changes made outside the widgets show up through ``JournalView``'s live mode or
a Refresh.
"""

from __future__ import annotations

import weakref
from typing import Any, Protocol

from ..journal.store import Store


class _Refreshable(Protocol):
    store: Store

    def refresh(self) -> None: ...


_widgets: weakref.WeakSet[Any] = weakref.WeakSet()


def _key(store: Store) -> object:
    """Store objects opened separately on one journal (a SQLite file, a PostgreSQL schema) are one journal."""
    return store.journal_key


def watch(widget: _Refreshable) -> None:
    _widgets.add(widget)


def unwatch(widget: object) -> None:
    """A closed widget redraws no more: its refresh would reopen the store its ``close()`` closed."""
    _widgets.discard(widget)


def changed(store: Store, source: object) -> None:
    """Tell the other widgets on ``store``'s journal to redraw.

    Called by a click handler *after* its write: another widget that cannot read the
    journal now (its own connection lost) must not turn that click into a failure, so
    its error is left to its own next refresh.
    """
    key = _key(store)
    for widget in list(_widgets):
        if widget is not source and _key(widget.store) == key:
            try:
                widget.refresh()
            except Exception:  # that widget shows it when it is refreshed next
                continue
