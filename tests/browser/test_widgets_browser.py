"""The three widgets in a real JupyterLab 4 + Chromium, against a real journal.

One test, one kernel: it opens the demo notebook of ``widgets_demo.py`` (a journal with
two PENDING ``charge_card`` calls and a hostile ``<img onerror>`` result preview), then

1. checks the hostile preview is shown as text and ran nothing;
2. clicks "Step" in the ReplayStepper (order-3) and checks the page (position, message, the
   stepper's own journal view) and the store (order-3 call 0 SUCCEEDED/RECONCILED);
3. clicks "Reconcile" on the order-2 row of the ReconcilePanel and checks the page (state,
   outcome, the refreshed JournalView) and the store (order-2 call 0 SUCCEEDED/RECONCILED);
4. clicks "Run to end" and checks order-3 completed, its last call EXECUTED.

The store is read from the test process with its own ``SqliteStore``, so "the store changed"
means the kernel's writes really reached the file. Screenshots land in ``artifacts/``;
``widgets_readme.png`` (the three output areas after the clicks) is the README's picture
(``docs/widgets.png``).

Run: ``.venv/bin/python -m pytest tests/browser/test_widgets_browser.py -v``.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from playwright.sync_api import expect
from widgets_demo import EXPECT, HOSTILE, write_demo_notebook  # tests/browser is on sys.path (rootdir)

import durable_nb
from durable_nb import RunStatus

pytestmark = [pytest.mark.browser, pytest.mark.timeout(240)]

ARTIFACTS_DIR = Path(__file__).resolve().parent / "artifacts"

# Tall enough that JupyterLab's windowed notebook renders all five cells without scrolling,
# so the crop of the three output areas is one picture.
VIEWPORT = {"width": 1280, "height": 4000}

# Cells of the demo notebook: 0 markdown, 1 setup, 2 JournalView, 3 ReconcilePanel, 4 ReplayStepper.
CELL_VIEW, CELL_PANEL, CELL_STEPPER = 2, 3, 4


def _calls(journal: Path) -> dict[str, tuple[str, str | None, str | None]]:
    """``{"run#i": (status, origin, result_preview)}`` read by a fresh store in this process."""
    store = durable_nb.SqliteStore(journal)
    try:
        return {
            f"{c.run_id}#{c.index}": (
                c.status.value,
                c.origin.value if c.origin else None,
                c.result_preview,
            )
            for run in store.runs()
            for c in store.calls(run.run_id)
        }
    finally:
        store.close()


def _run_status(journal: Path, run_id: str) -> RunStatus:
    store = durable_nb.SqliteStore(journal)
    try:
        run = store.run(run_id)
        assert run is not None, run_id
        return run.status
    finally:
        store.close()


def _button(scope, text: str):
    """The widget button inside ``scope`` labelled exactly ``text`` (strict: one match or fail)."""
    return scope.locator("button.jupyter-button").filter(has_text=re.compile(rf"^\s*{re.escape(text)}\s*$"))


def _crop_outputs(page, cells, path: Path, bottom=None) -> Path:
    """Screenshot the page clipped to the union of the widget cells' output areas.

    ``bottom`` (a locator) cuts the picture at that element's top edge instead.
    """
    page.evaluate("() => document.activeElement && document.activeElement.blur()")  # no focus ring
    boxes = [cells.nth(i).locator(".jp-OutputArea").bounding_box() for i in (CELL_VIEW, CELL_PANEL, CELL_STEPPER)]
    assert all(boxes), boxes
    x0 = min(b["x"] for b in boxes)
    y0 = min(b["y"] for b in boxes)
    x1 = max(b["x"] + b["width"] for b in boxes)
    y1 = max(b["y"] + b["height"] for b in boxes)
    if bottom is not None:
        y1 = bottom.bounding_box()["y"] - 4
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path), clip={"x": x0, "y": y0, "width": x1 - x0, "height": y1 - y0})
    return path


def test_widgets_reconcile_step_and_hostile_preview(jupyter_server, open_notebook):
    t0 = time.monotonic()
    journal = jupyter_server.root_dir / "widgets_demo.db"
    write_demo_notebook(jupyter_server.root_dir / "widgets_demo.ipynb", journal)
    nb = open_notebook("widgets_demo.ipynb", viewport=VIEWPORT)
    t_open = time.monotonic()
    page = nb.page
    page.evaluate("() => window.jupyterapp.shell.collapseLeft()")  # no file browser: wider outputs and picture
    nb.run_all()
    cells = page.locator(".jp-Notebook .jp-Cell")
    view = cells.nth(CELL_VIEW).locator(".dnb-journal-view").first
    panel = cells.nth(CELL_PANEL).locator(".dnb-reconcile-panel")
    stepper = cells.nth(CELL_STEPPER).locator(".dnb-replay-stepper")
    outputs = page.locator(".jp-OutputArea-output")

    # --- all three widgets rendered, in their starting state --------------------------------
    expect(view.locator(".dnb-page")).to_have_text(EXPECT["page"])
    row2 = panel.locator('.dnb-pending-row[data-call="order-2#0"]')
    expect(row2.locator(".dnb-state")).to_have_text(EXPECT["pending_state"])
    expect(stepper.locator(".dnb-position")).to_have_text(EXPECT["position_start"])
    t_rendered = time.monotonic()

    before = _calls(journal)
    assert before["order-2#0"][:2] == ("PENDING", None), before
    assert before["order-3#0"][:2] == ("PENDING", None), before
    assert before["order-1#1"] == ("SUCCEEDED", "EXECUTED", repr(HOSTILE)), before
    nb.screenshot("widgets_before.png")

    # --- the hostile preview is text, not markup ----------------------------------------------
    preview = view.locator('tr.dnb-call[data-call="order-1#1"] .dnb-preview')
    expect(preview).to_have_text(EXPECT["hostile_preview"])
    assert HOSTILE in nb.output_text()
    assert outputs.locator("img").count() == 0
    assert page.locator('img[src="x"]').count() == 0

    # --- Step: the stepper performs call 0 of order-3 (a reconcile) ---------------------------
    page_before = nb.output_text()
    _button(stepper, "Step").click()
    expect(stepper.locator(".dnb-position")).to_have_text(EXPECT["position_after_step"])
    expect(stepper.locator(".dnb-message")).to_contain_text(EXPECT["message_after_step"])
    # The stepper's own JournalView shows the performed step.
    expect(stepper.locator('tr.dnb-call[data-call="order-3#0"] .dnb-status')).to_have_text("SUCCEEDED · RECONCILED")
    nb.wait_idle()
    after_step = _calls(journal)
    assert after_step["order-3#0"] == ("SUCCEEDED", "RECONCILED", "'ch_3'"), after_step
    assert after_step["order-2#0"][:2] == ("PENDING", None), after_step  # untouched so far
    # The other widgets on the journal redrew by themselves: the panel no longer offers order-3.
    expect(panel.locator('.dnb-pending-row[data-call="order-3#0"]')).to_have_count(0)
    expect(view.locator('tr.dnb-call[data-call="order-3#0"] .dnb-status')).to_have_text("SUCCEEDED · RECONCILED")

    # --- Reconcile: the panel settles order-2's PENDING charge ---------------------------------
    widget2 = panel.locator('.dnb-pending-widget:has([data-call="order-2#0"])')
    _button(widget2, "Reconcile").click()
    expect(row2.locator(".dnb-state")).to_have_text(EXPECT["reconciled_state"])
    expect(row2.locator(".dnb-outcome")).to_have_text(EXPECT["reconciled_outcome"])
    nb.wait_idle()
    after_reconcile = _calls(journal)
    assert after_reconcile["order-2#0"] == ("SUCCEEDED", "RECONCILED", "'ch_2'"), after_reconcile

    # The top JournalView redrew after the Reconcile too: both settled calls, no Refresh pressed.
    expect(view.locator('tr.dnb-call[data-call="order-2#0"] .dnb-status')).to_have_text("SUCCEEDED · RECONCILED")
    expect(view.locator('tr.dnb-call[data-call="order-3#0"] .dnb-status')).to_have_text("SUCCEEDED · RECONCILED")
    nb.wait_idle()
    assert nb.output_text() != page_before
    shot_after = nb.screenshot("widgets_after.png")
    crop = _crop_outputs(page, cells, ARTIFACTS_DIR / "widgets_after_outputs.png")
    # The README picture: the same, without the stepper's own JournalView (it repeats the table above).
    _crop_outputs(page, cells, ARTIFACTS_DIR / "widgets_readme.png", bottom=stepper.locator(".dnb-journal-view"))

    # --- Run to end: order-3 finishes, its receipt call really executes ------------------------
    _button(stepper, "Run to end").click()
    expect(stepper.locator(".dnb-position")).to_have_text(EXPECT["position_at_end"])
    nb.wait_idle()
    at_end = _calls(journal)
    assert at_end["order-3#1"][:2] == ("SUCCEEDED", "EXECUTED"), at_end
    assert _run_status(journal, "order-3") is RunStatus.COMPLETED
    nb.screenshot("widgets_end.png")

    # --- nothing hostile ran, anywhere, during all of it ---------------------------------------
    expect(preview).to_have_text(EXPECT["hostile_preview"])
    assert outputs.locator("img").count() == 0
    assert page.locator('img[src="x"]').count() == 0
    assert nb.dialogs == [], nb.dialogs
    assert nb.page_errors == [], nb.page_errors
    for shot in (shot_after, crop):
        assert shot.stat().st_size > 10_000, shot
    print(
        f"open+idle {t_open - t0:.1f}s, run-all+render {t_rendered - t_open:.1f}s, "
        f"clicks+checks+shots {time.monotonic() - t_rendered:.1f}s"
    )
