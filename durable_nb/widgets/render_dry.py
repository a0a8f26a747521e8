"""A :class:`~durable_nb.DryRunReport` as escaped HTML: what a recovery would do, call by call.

Used by ``ReplayStepper``'s **Dry run** button (and usable on its own:
``HTML(dry_report_html(report))``). Pure: the report in, one HTML string out;
every string (call ids, digests, previews, the run id) goes through
:func:`~durable_nb.widgets._html.esc`, and no payload is unpickled (the report
holds previews only).

Stable hooks (for browser tests): the root is ``.dnb-dry``; the summary line is
``.dnb-dry-summary`` ("2 calls replay, then call 2 would mismatch" or "every call
replays"); each examined call is ``tr.dnb-dry-row`` with ``data-index`` and a
``.dnb-decision`` cell; the stop row also has class ``dnb-current``. A long report draws its last
:data:`DRY_ROWS` examined calls, and ``.dnb-dry-left-out`` says how many replayed calls before them are not drawn.
"""

from __future__ import annotations

from typing import Any

from ._html import esc, page, table, td

DRY_ROWS = 200
"""Examined calls drawn at most: the last ones, up to and including the stop. Why: every call examined was drawn,
and a dry run of a 100,000-call run made a 21 MB table for the widget to send and the browser to lay out (the
journal view pages for the same reason); the calls left out all replayed, and ``report.to_pandas()`` lists them."""

BUSY = ("; but the run is open in a live context now: running it raises RunBusyError, and a PENDING call may still "
        "be running there (dry-run it again once that context ends)")
"""What the summary adds for ``report.busy``, as the report's own text does: the Dry run button of a stepper on a
run another kernel is running showed "would reconcile" about a call that was running, and nothing else."""


def dry_summary(report: Any) -> str:
    """One line: how many calls replay, and what happens at the stop (plain text)."""
    return _decisions(report) + (BUSY if getattr(report, "busy", False) else "")


def _decisions(report: Any) -> str:
    if report.stopped_at is None:
        text = f"every call replays ({report.replayed}); nothing would run"
        if getattr(report, "unreached", 0):
            text += (f"; {report.unreached} recorded call(s) never reached: strict mode refuses the run "
                     "(NonDeterminismError)" if getattr(report, "strict", False)
                     else f"; {report.unreached} recorded call(s) never reached would be discarded")
        if getattr(report, "error", None) and not getattr(report, "refused", False):
            text += f"; the action raised {report.error}"
        return text
    would = ("be refused: a mismatch, and strict mode raises NonDeterminismError" if getattr(report, "refused", False)
             else report.decision.value)
    calls = f"{report.replayed} call{'' if report.replayed == 1 else 's'}"
    return f"{calls} replay, then call {report.stopped_at} would {would}"


def dry_report_html(report: Any) -> str:
    """The report as a table of the examined calls, the stop highlighted, with the rule that applies."""
    rows = []
    steps = report.steps[-DRY_ROWS:]
    for s in steps:
        rec = s.recorded
        current = " dnb-current" if s.index == report.stopped_at else ""
        rows.append(
            f'<tr class="dnb-dry-row{current}" data-index="{esc(s.index)}">' + td(s.index)
            + td(s.decision.value, "dnb-decision") + td(s.call_id) + td(str(s.args_digest)[:16])
            + td(rec.call_id if rec else "—") + td(rec.args_digest[:16] if rec else "—")
            + td(f"{rec.status.value}" + (f" · {rec.origin.value}" if rec and rec.origin else "") if rec else "—")
            + "</tr>"
        )
    head = (f'<div class="dnb-dry-summary"><b>dry run of {esc(report.run_id)}</b>: {esc(dry_summary(report))}'
            "</div>"
            f'<div class="dnb-note">{esc(report.rule)}</div>')
    left_out = len(report.steps) - len(steps)
    if left_out:
        first, last = report.steps[0].index, report.steps[left_out - 1].index
        head += (f'<div class="dnb-note dnb-dry-left-out">calls {first}–{last} replay and are not drawn '
                 f"({left_out:,} rows); report.to_pandas() lists every examined call</div>")
    return page(
        head + table(["#", "decision", "call id now", "args now", "call id recorded", "args recorded", "recorded"],
                     rows, empty="the action made no durable call"),
        cls="dnb-dry",
    )
