"""Double clicks and narrow windows, in a real JupyterLab 4 + Chromium (the demo notebook of ``widgets_demo.py``).

A person double-clicks buttons out of habit and works in a laptop-sized window with the file browser open.
Both came out wrong only in the page:

* a double click sends two click messages that the kernel handles one after the other, so **Step**'s second
  click performed the next call too (order-3's receipt sent before anyone saw the reconcile);
* an ``HBox`` does not wrap: at 1024 px JournalView's **Refresh** and **Live** sat past the output area's
  right edge, 20 px wide, and the panel's "Re-execute later" read "Re-execute la…".

Run: ``.venv/bin/python -m pytest tests/browser/test_widget_clicks_browser.py -v``.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect
from widgets_demo import EXPECT, write_demo_notebook  # tests/browser is on sys.path (rootdir)

import durable_nb

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]

# Every control of a widget output: its label, whether it lies past the output area's right edge, whether
# its label is cut. And every .dnb part wider than its box: whether it scrolls (or its last columns are lost).
_LAYOUT_JS = """() => {
  const out = [];
  for (const el of document.querySelectorAll(
      '.jp-OutputArea-output button, .jp-OutputArea-output input, .jp-OutputArea-output select')) {
    const area = el.closest('.jp-OutputArea-output').getBoundingClientRect();
    const r = el.getBoundingClientRect();
    if (r.right > area.right + 1 || el.scrollWidth > el.clientWidth + 1)
      out.push('control ' + (el.textContent.trim() || el.placeholder || el.tagName));
  }
  for (const el of document.querySelectorAll('.jp-OutputArea-output .dnb')) {
    if (el.scrollWidth > el.clientWidth + 1 && !['auto', 'scroll'].includes(getComputedStyle(el).overflowX))
      out.push('part ' + el.textContent.slice(0, 40));
  }
  return out;
}"""


def _button(scope, text: str):
    return scope.locator("button.jupyter-button").filter(has_text=re.compile(rf"^\s*{re.escape(text)}\s*$"))


def _calls(journal) -> dict[str, tuple[str, str | None]]:
    store = durable_nb.SqliteStore(journal)
    try:
        return {f"{c.run_id}#{c.index}": (c.status.value, c.origin.value if c.origin else None)
                for run in store.runs() for c in store.calls(run.run_id)}
    finally:
        store.close()


def test_double_clicks_act_once_and_a_narrow_window_hides_no_control(jupyter_server, open_notebook):
    journal = jupyter_server.root_dir / "clicks_demo.db"
    write_demo_notebook(jupyter_server.root_dir / "clicks_demo.ipynb", journal)
    nb = open_notebook("clicks_demo.ipynb", viewport={"width": 1024, "height": 3000})  # file browser open
    nb.run_all()
    cells = nb.page.locator(".jp-Notebook .jp-Cell")
    panel = cells.nth(3).locator(".dnb-reconcile-panel")
    stepper = cells.nth(4).locator(".dnb-replay-stepper")
    expect(stepper.locator(".dnb-position")).to_have_text(EXPECT["position_start"])
    assert nb.page.evaluate(_LAYOUT_JS) == []

    _button(stepper, "Step").dblclick()  # the second click must not send order-3's receipt
    expect(stepper.locator(".dnb-message")).to_contain_text("second click of a double click on Step was ignored")
    expect(stepper.locator(".dnb-message")).to_contain_text(EXPECT["message_after_step"])
    expect(stepper.locator(".dnb-position")).to_have_text(EXPECT["position_after_step"])
    nb.wait_idle()
    calls = _calls(journal)
    assert calls["order-3#0"] == ("SUCCEEDED", "RECONCILED") and "order-3#1" not in calls, calls

    _button(panel.locator('.dnb-pending-widget:has([data-call="order-2#0"])'), "Reconcile").dblclick()
    expect(panel.locator(".dnb-message")).to_contain_text("order-2 #0 is already SUCCEEDED · RECONCILED")
    nb.wait_idle()
    assert _calls(journal)["order-2#0"] == ("SUCCEEDED", "RECONCILED")
    assert nb.page.evaluate(_LAYOUT_JS) == []  # nor after the redraws the clicks caused
    assert nb.page_errors == [], nb.page_errors
