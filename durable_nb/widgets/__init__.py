"""The notebook widgets: look at a journal, step through a recovery, reconcile by hand.

Core ipywidgets 8 only (no front-end build), so they render in JupyterLab,
Notebook 7 and VS Code alike. Importing ``durable_nb`` does not import this
package; ``dnb.JournalView`` and friends load it on first use.

Every widget reads previews, never payloads, and escapes every string it shows
(:mod:`durable_nb.widgets._html`).

Rooms: the widget classes are controllers (``journal_view.py``, ``replay_stepper.py``,
``reconcile_panel.py`` and the parts they embed); the HTML they show comes from
pure record→HTML functions (``render_journal.py``, ``_html.py``); a live mode's
polling thread is ``_poll.Poller``; ``_close.py`` closes the models a widget made and the
store it opened; ``_sync.py`` tells the other widgets on the
same store to redraw after a write.
"""

from __future__ import annotations

from .journal_view import JournalView
from .reconcile_panel import ReconcilePanel
from .replay_stepper import ReplayStepper

__all__ = ["JournalView", "ReconcilePanel", "ReplayStepper"]
