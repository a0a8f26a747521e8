"""Tell the second click of a double click from a new click, by the browser's own clock.

Why: a double click on a widget button sends two click messages. The kernel handles them one
after the other, so the second one arrives after the first one's work is done and looks like a
fresh click: a double click on the ReplayStepper's **Step** performed two calls of the recovery
(the second one, a real side effect, before the person had seen the first one's outcome). The
front end stamps every message with the time it made it (``header.date``), which queueing in the
kernel does not change: two clicks of one double click are a few milliseconds apart, two clicks
a person means are at least a reaction time apart.

A click made from code (``button.click()`` in a cell, a test, or the click handler of another widget) is
not the page's click message for this button, so it is never taken for a double click: only a comm message
addressed to the button itself (its ``comm_id``) counts.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

DOUBLE_CLICK_S = 0.5
"""Clicks on one button sent less than this apart are one double click (the usual desktop default)."""


def _sent_at(button: Any) -> datetime | None:
    """When the page sent the click on ``button`` being handled; None when the click does not come from the page
    for this button (a person's own button whose handler clicks Step twice ran both under its one message)."""
    try:
        import IPython

        kernel = getattr(IPython.get_ipython(), "kernel", None)
        parent = kernel.get_parent() if kernel is not None else None
    except Exception:  # no kernel, or one without get_parent: nothing to compare
        return None
    if not isinstance(parent, dict) or parent.get("msg_type") != "comm_msg":
        return None
    content = parent.get("content")
    if not isinstance(content, dict) or content.get("comm_id") != getattr(button, "model_id", None):
        return None
    date = (parent.get("header") or {}).get("date")
    if isinstance(date, str):
        try:
            date = datetime.fromisoformat(date.replace("Z", "+00:00"))
        except ValueError:
            return None
    return date if isinstance(date, datetime) else None


class ClickGuard:
    """One button's last click time; :meth:`second_of_double` says whether this click repeats it."""

    def __init__(self) -> None:
        self._last: datetime | None = None

    def second_of_double(self, button: Any) -> bool:
        """True for the second click of a double click on ``button`` (it should do nothing)."""
        sent = _sent_at(button)
        if sent is None:
            return False
        last, self._last = self._last, sent
        try:
            return last is not None and timedelta(0) <= sent - last < timedelta(seconds=DOUBLE_CLICK_S)
        except TypeError:  # one naive, one aware date: not comparable, so not a double click
            return False
