"""The one escaper and the small HTML vocabulary every widget draws with.

A journal may come from someone else, and its previews are arbitrary text: a
result whose preview is ``<img src=x onerror=alert(1)>`` must show as text. The
HTML widget of ipywidgets sets ``innerHTML`` without sanitizing, so every string
that reaches the page goes through :func:`esc` here, and nowhere else builds
markup from journal text. Markup is built only from constants and ``esc(...)``.

Widgets draw from the text previews stored at write time and never unpickle a
payload: nothing here touches ``CallRecord.payload``.

Stable hooks for browser tests: every widget's HTML carries ``dnb-*`` classes
(``dnb-status-PENDING``, ``dnb-state``, ``dnb-message``...) documented in the
widget modules; the text inside them is plain and stable.
"""

from __future__ import annotations

import datetime as _dt
import html
import math
from collections.abc import Iterable, Sequence

from ..journal import codec

#: Colour per call status (and for discarded calls), shared by tables and timelines.
STATUS_COLORS = {
    "PENDING": "#f0ad4e",
    "SUCCEEDED": "#5cb85c",
    "FAILED": "#d9534f",
    "DISCARDED": "#9e9e9e",
}

#: One style sheet, emitted once per HTML value, so class names carry the look. ``.dnb`` scrolls sideways: a
#: table wider than the output area (the journal table at 1024 px with the file browser open) lost its last columns.
STYLE = """<style>
.dnb{overflow-x:auto}
.dnb table{border-collapse:collapse;font-size:12px;font-family:var(--jp-code-font-family,monospace)}
.dnb th,.dnb td{border-bottom:1px solid #ddd;padding:2px 6px;text-align:left;vertical-align:top}
.dnb th{background:#f5f5f5}
.dnb .dnb-status{font-weight:bold}
.dnb .dnb-status-PENDING{color:#b36b00}.dnb .dnb-status-SUCCEEDED{color:#2e7d32}
.dnb .dnb-status-FAILED{color:#c62828}.dnb .dnb-status-DISCARDED{color:#757575}
.dnb .dnb-discarded td{color:#757575;text-decoration:line-through}
.dnb .dnb-current{background:#e3f2fd}
.dnb .dnb-preview{max-width:32em;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.dnb .dnb-note{color:#555;font-style:italic}
.dnb .dnb-error{color:#c62828}
.dnb .dnb-ok{color:#2e7d32}
.dnb .dnb-lane{position:relative;height:14px;margin:1px 0;background:#fafafa}
.dnb .dnb-bar{position:absolute;top:1px;height:12px;border-radius:2px;min-width:2px}
.dnb .dnb-bar.dnb-origin-RECONCILED{outline:2px solid #1565c0}
.dnb .dnb-bar.dnb-origin-RESOLVED{outline:2px dashed #6a1b9a}
.dnb .dnb-bar.dnb-status-PENDING{background-image:repeating-linear-gradient(45deg,transparent 0 4px,#fff8 4px 8px)}
.dnb .dnb-bar.dnb-status-DISCARDED{opacity:.6;
 background-image:repeating-linear-gradient(-45deg,transparent 0 3px,#0004 3px 5px)}
.dnb .dnb-label{font-size:11px;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
</style>"""


def label(value: object, limit: int = 200) -> str:
    """Journal text for a widget's plain-text value (an option, a button caption): sendable, bounded.

    Not HTML, so not escaped; but widget state travels as UTF-8, so lone surrogates and NUL
    characters are written as escapes (:func:`~durable_nb.journal.codec.sendable`), and a
    hostile megabyte of run id must not become a megabyte of widget state.
    """
    text = codec.shown(str(value))
    return text if len(text) <= limit else text[: limit - 1] + "…"


ESC_LIMIT = 10_000
"""Characters of one journal string a widget shows: a hostile megabyte of run id stays ten kilobytes."""


def esc(value: object) -> str:
    """Escape any value for HTML text and attribute positions (``None`` shows as empty).

    Lone surrogates (a non-UTF-8 file name in a run id) and NUL characters are shown
    as escapes (:func:`~durable_nb.journal.codec.sendable`): widget state travels as UTF-8.
    Longer than :data:`ESC_LIMIT`, it is cut (ending in "…").
    """
    if value is None:
        return ""
    return html.escape(label(value, ESC_LIMIT), quote=True)


def fmt_time(ts: float | None) -> str:
    """UTC wall-clock time with milliseconds; UTC so that saved outputs mean the same everywhere."""
    if ts is None:
        return ""
    try:
        return _dt.datetime.fromtimestamp(ts, tz=_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    except (OverflowError, OSError, ValueError, TypeError):  # a journal is data: one odd value must not stop a view
        return f"{ts!r} (not a time)"


def seconds(ts: object) -> float | None:
    """``ts`` as a finite number of seconds, or None: a hand-edited journal can hold text where a time goes
    (``started_at = 'garbage'``), and arithmetic on it raised out of a redraw."""
    if isinstance(ts, (int, float)) and not isinstance(ts, bool) and math.isfinite(ts):
        return float(ts)
    return None


def fmt_duration(start: float | None, end: float | None) -> str:
    """"12.3 ms" / "4.56 s"; empty when either end is missing or not a time (:func:`fmt_time` shows which)."""
    start, end = seconds(start), seconds(end)
    if start is None or end is None:
        return ""
    took = max(0.0, end - start)
    return f"{took * 1000:.1f} ms" if took < 1 else f"{took:.2f} s"


def status_cell(status: str, origin: str | None = None) -> str:
    """``<td>`` with the status coloured by class, plus the origin when there is one."""
    text = status if not origin else f"{status} · {origin}"
    return f'<td class="dnb-status dnb-status-{esc(status)}">{esc(text)}</td>'


def td(value: object, cls: str | None = None, title: object = None) -> str:
    """A table cell holding escaped text."""
    attrs = f' class="{esc(cls)}"' if cls else ""
    if title is not None:
        attrs += f' title="{esc(title)}"'
    return f"<td{attrs}>{esc(value)}</td>"


def table(headers: Sequence[str], rows: Iterable[str], empty: str = "nothing to show") -> str:
    """A table from escaped header names and pre-built ``<tr>`` rows (built with :func:`td`)."""
    body = "".join(rows)
    if not body:
        return f'<div class="dnb-note">{esc(empty)}</div>'
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def page(*parts: str, cls: str = "") -> str:
    """Wrap pre-escaped parts in the ``dnb`` root with the style sheet: one HTML value per widget part."""
    extra = f" {esc(cls)}" if cls else ""
    return f'{STYLE}<div class="dnb{extra}">{"".join(parts)}</div>'


def message(text: str, kind: str = "note") -> str:
    """A one-line message (``kind`` is ``note``, ``ok`` or ``error``) inside a ``dnb-message`` div."""
    return page(f'<div class="dnb-message dnb-{esc(kind)}">{esc(text)}</div>')
