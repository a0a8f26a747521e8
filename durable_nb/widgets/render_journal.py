"""The journal as HTML: pure functions from records to escaped HTML strings.

What :class:`~durable_nb.widgets.journal_view.JournalView` draws, kept apart from
the widget so it can be read and tested without ipywidgets or a store: records
in, one HTML string out, every journal string through
:func:`durable_nb.widgets._html.esc`. Payloads are never unpickled; only the
previews stored at write time are shown.

Stable hooks (for browser tests): the page label is ``.dnb-page`` ("page 1 of 3 ·
calls 1–50 of 120"); each call row is ``tr.dnb-call`` with ``data-call="RUN#INDEX"``
and a ``.dnb-status-STATUS`` cell whose text is ``STATUS`` or ``STATUS · ORIGIN``;
timeline bars are ``.dnb-bar.dnb-status-STATUS`` (``.dnb-origin-RECONCILED`` /
``.dnb-origin-RESOLVED`` outlined; discarded ones ``.dnb-status-DISCARDED``).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

from ..journal.records import CallRecord, DiscardedCall, RunRecord
from ._html import STATUS_COLORS, esc, fmt_duration, fmt_time, page, seconds, status_cell, table, td


def page_label(page_index: int, page_count: int, page_size: int, shown: int, total: int) -> str:
    """"page 2 of 3 · calls 51–100 of 120"."""
    first = page_index * page_size
    return page(
        f'<span class="dnb-page">page {page_index + 1:,} of {page_count:,} · calls '
        f"{first + 1 if shown else 0:,}–{first + shown:,} of {total:,}</span>"
    )


def status_note(read_at: str, live: bool, n_runs: int) -> str:
    """The line under the view: when the store was read, and whether live mode is on."""
    return page(f'<div class="dnb-note">read {esc(read_at)} UTC{" · live" if live else ""}; {n_runs:,} runs</div>')


def read_error(exc: BaseException) -> str:
    """Shown instead of raising when the store cannot be read (a locked or removed file)."""
    return page(f'<div class="dnb-message dnb-error">could not read the journal: '
                f"{esc(type(exc).__name__)}: {esc(exc)}</div>")


def unreadable_rows(rows: Sequence[Any]) -> str:
    """The page's rows the store refuses to read (``_readable.Unreadable``), each with the store's reason."""
    return "".join(page(f'<div class="dnb-unreadable-row dnb-error">row {esc(r.position)} of this view cannot be '
                        f"read: {esc(r.reason)}</div>") for r in rows)


def calls_table(records: Sequence[CallRecord]) -> str:
    """One row per call of the page."""
    rows = []
    for r in records:
        preview = r.result_preview if r.result_preview is not None else r.error_preview
        rows.append(
            f'<tr class="dnb-call" data-call="{esc(r.run_id)}#{esc(r.index)}">'
            + td(r.run_id) + td(r.index) + td(r.call_id)
            + status_cell(r.status.value, r.origin.value if r.origin else None)
            + td(preview, "dnb-preview", title=preview)
            + td(fmt_time(r.started_at)) + td(fmt_duration(r.started_at, r.finished_at))
            + "</tr>"
        )
    return page(table(["run", "#", "call id", "status", "result / error", "started (UTC)", "took"], rows,
                      empty="no calls match the filters"))


def timeline(records: Sequence[CallRecord], discarded: Sequence[DiscardedCall]) -> str:
    """The page's calls (and the discarded calls of the runs on it) as bars on one time axis."""
    items: list[tuple[CallRecord | DiscardedCall, str]] = [(r, r.status.value) for r in records]
    shown_runs = {r.run_id for r in records}
    items += [(d, "DISCARDED") for d in discarded if d.run_id in shown_runs]
    if not items:
        return page('<div class="dnb-note">no calls on this page</div>')
    # Times that are not numbers (a hand edit) stay off the axis; their bars sit at its left edge.
    times = [t for r, _ in items for t in (seconds(r.started_at), seconds(r.finished_at)) if t is not None] or [0.0]
    t0, t1 = min(times), max(times)
    lanes = [_lane(r, status, t0, t1) for r, status in items]
    legend = " ".join(
        f'<span style="color:{c}">■</span> {esc(s.lower())}' for s, c in STATUS_COLORS.items()
    ) + " · ⟲R reconciled (blue outline) · ✎ resolved by hand (dashed) · ✗ discarded by a mismatch"
    header = (f'<div class="dnb-note">{esc(fmt_time(t0))} → {esc(fmt_time(t1))} UTC '
              f"({esc(fmt_duration(t0, t1))}) · {legend}</div>")
    return page(header + f"<table style='width:100%'>{''.join(lanes)}</table>")


def _lane(r: CallRecord | DiscardedCall, status: str, t0: float, t1: float) -> str:
    span = max(t1 - t0, 1e-6)
    start = seconds(r.started_at)
    start = t0 if start is None else start
    end = seconds(r.finished_at) if r.finished_at is not None else t1  # in flight: open to the right
    end = start if end is None else end
    left = 100.0 * (start - t0) / span
    width = max(0.4, 100.0 * (end - start) / span)
    width = min(width, 100.0 - left) if left < 100 else 0.4
    origin = r.origin.value if r.origin else ""
    what = "no outcome on record (in flight when it stopped)" if status == "PENDING" else (
        f"discarded: {r.reason}" if isinstance(r, DiscardedCall) else f"{status} · {origin}")
    tip = f"{r.run_id} #{r.index} {r.call_id}: {what}; {fmt_duration(r.started_at, r.finished_at)}"
    mark = {"RECONCILED": " ⟲R", "RESOLVED": " ✎", "": ""}.get(origin, "")
    return (
        f'<tr><td class="dnb-label" title="{esc(tip)}">{esc(r.run_id)} #{esc(r.index)} {esc(r.call_id)}'
        f"{esc(mark)}{' ✗' if status == 'DISCARDED' else ''}</td>"
        f'<td style="width:70%"><div class="dnb-lane"><div class="dnb-bar dnb-status-{esc(status)}'
        f'{" dnb-origin-" + esc(origin) if origin else ""}" title="{esc(tip)}" '
        f'style="left:{left:.2f}%;width:{width:.2f}%;background-color:{STATUS_COLORS[status]}">'
        f"</div></div></td></tr>"
    )


def lineage(run: RunRecord | None, record: CallRecord | None = None,
            runs: Mapping[str, RunRecord | None] | None = None) -> str:
    """Plain text of a run's lineage ("forked from R at call 2; this call was copied from R #1"), or "".

    ``runs``: the journal's runs by id, when known; a parent missing there was pruned or forgotten, and one
    created after its fork is another run that got the freed id. Why: the lineage of a fork of a fork whose
    parent was pruned named the parent as if it were there, and after a new fork of the grandparent took
    the freed id (``R.fork-1`` again) it named that new run as the source of calls it never made.
    """
    parent = getattr(run, "parent_run_id", None)
    if run is None or parent is None:
        return ""
    at = getattr(run, "forked_at", None)
    gone = runs is not None and not _still_there(runs.get(parent), run)
    text = f"forked from {parent}{GONE if gone else ''} at call {at}"
    if record is not None and isinstance(at, int) and isinstance(record.index, int) and record.index < at:
        text += f"; this call was copied from {parent} #{record.index}"
    return text


GONE = " (no longer in the journal)"
"""What the lineage adds to a parent that was pruned or forgotten (or whose id a later run took)."""


def _still_there(parent: RunRecord | None, run: RunRecord) -> bool:
    """``parent`` is the run ``run`` was forked from: present, and not created after ``run``."""
    if parent is None:
        return False
    made, forked = parent.created_at, run.created_at
    if isinstance(made, int | float) and isinstance(forked, int | float):  # hand-edited journals hold text too
        return made <= forked
    return True


def runs_table(runs: Sequence[RunRecord], shown_at_most: int, open_runs: Collection[str],
               older: Mapping[str, RunRecord] | None = None) -> str:
    """The newest ``shown_at_most`` runs, newest first; ``open_runs``: the run ids a live context holds.

    ``older``: runs older than ``runs`` that the shown runs were forked from (their lineage says whether
    the parent is still there), so a caller need not keep the whole run list."""
    shown = list(runs[-shown_at_most:])[::-1]
    by_id: dict[str, RunRecord | None] = {**(older or {}), **{r.run_id: r for r in runs}}
    rows = [
        f'<tr class="dnb-run" data-run="{esc(r.run_id)}">' + td(r.run_id)
        + td(r.status.value, f"dnb-run-{r.status.value}")
        + td(r.attempts) + td(r.n_calls) + td(r.n_discarded)
        + td(lineage(r, runs=by_id), "dnb-lineage")
        + td("open in a live context" if r.run_id in open_runs else "")
        + td(fmt_time(r.created_at)) + td(fmt_time(r.updated_at)) + "</tr>"
        for r in shown
    ]
    note = (f'<div class="dnb-note">newest {len(shown):,} of {len(runs):,} runs; '
            f"type a run id in the run filter to see any run</div>" if len(runs) > len(shown) else "")
    return page(note + table(["run", "status", "attempts", "calls", "discarded", "forked from", "lease",
                              "created (UTC)",
                              "updated (UTC)"], rows, empty="no runs yet"))


def discarded_table(discarded: Sequence[DiscardedCall]) -> str:
    """Calls a recovery dropped because the action met a different call at their position."""
    rows = [
        '<tr class="dnb-discarded-row">' + td(d.run_id) + td(d.index) + td(d.call_id)
        + status_cell(d.status.value, d.origin.value if d.origin else None)
        + td(d.result_preview if d.result_preview is not None else d.error_preview, "dnb-preview")
        + td(d.reason) + td(fmt_time(d.discarded_at)) + "</tr>"
        for d in discarded
    ]
    return page(
        '<div class="dnb-note">calls dropped because a recovery met a different call at their position '
        "(the action was not deterministic); kept here, no longer part of their run</div>"
        + table(["run", "#", "call id", "status then", "result / error", "why", "discarded (UTC)"], rows,
                empty="no discarded calls")
    )


def call_detail(r: CallRecord | None) -> str:
    """Every field of one call (its previews, never its payload); a hint when none is selected."""
    if r is None:
        return page('<div class="dnb-note">select a call to see its detail</div>')
    fields: Sequence[tuple[str, object]] = [
        ("run", r.run_id), ("index", r.index), ("call id", r.call_id), ("args digest", r.args_digest),
        ("status", r.status.value), ("origin", r.origin.value if r.origin else "— (no outcome yet)"),
        ("result preview", r.result_preview), ("error preview", r.error_preview),
        ("started (UTC)", fmt_time(r.started_at)), ("finished (UTC)", fmt_time(r.finished_at)),
        ("took", fmt_duration(r.started_at, r.finished_at)),
    ]
    rows = "".join(f"<tr><th>{esc(k)}</th>{td(v)}</tr>" for k, v in fields)
    return page(f'<table class="dnb-detail" data-call="{esc(r.run_id)}#{esc(r.index)}">{rows}</table>'
                '<div class="dnb-note">previews were written with the call; the payload is not loaded '
                "(record.result() unpickles it, for trusted journals only)</div>")
