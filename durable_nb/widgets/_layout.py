"""Rows of controls that wrap onto a second line instead of hiding a control.

Why: an ipywidgets ``HBox`` does not wrap, it squeezes and then overflows. In a 1024-px window
with JupyterLab's file browser open, ``JournalView``'s filter row pushed **Refresh** and **Live**
past the right edge of the output area (clipped, 20 px wide: live mode could not be switched
on), and ``ReconcilePanel`` cut "Re-execute later" to "Re-execute la…".
"""

from __future__ import annotations

from collections.abc import Sequence

import ipywidgets as W


def row(children: Sequence[W.Widget]) -> W.HBox:
    """An ``HBox`` of ``children`` that wraps when the output area is too narrow for all of them."""
    return W.HBox(list(children), layout=W.Layout(flex_flow="row wrap"))
