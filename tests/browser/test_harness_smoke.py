"""Smoke tests for the browser harness itself, independent of durable_nb's widgets.

They prove the pieces the widget tests rely on: the kernel is this venv's Python, core widgets
render and sync clicks both ways, escaped HTML shows as text without running, and - so that a
passing ``dialogs == []`` means something - the dialog detector does fire when a raw
``<img onerror>`` reaches the DOM.
"""

from __future__ import annotations

import sys
import time

import pytest
from playwright.sync_api import expect

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]

ESCAPED = "&lt;img src=x onerror=alert(1)&gt;"
RAW = "<img src=x onerror=alert(1)>"

SETUP = """\
import sys
import ipywidgets as w
print("KERNEL_PYTHON=" + sys.executable)
"""

COUNTER = """\
clicks = w.HTML(value="clicks: 0")
button = w.Button(description="Add one")
def on_click(_):
    clicks.value = f"clicks: {int(clicks.value.split(': ')[1]) + 1}"
button.on_click(on_click)
w.VBox([button, clicks])
"""


def test_counter_widget_round_trip(write_notebook, open_notebook):
    """Render a Button + HTML, click twice, see the kernel's update; escaped HTML stays inert."""
    t0 = time.monotonic()
    nb_name = write_notebook(
        "smoke_counter.ipynb",
        SETUP,
        COUNTER,
        f"w.HTML(value={ESCAPED!r})",
    )
    nb = open_notebook(nb_name)
    t_open = time.monotonic()
    nb.run_all()

    page = nb.page
    expect(page.locator(".jp-OutputArea-output").first).to_contain_text(f"KERNEL_PYTHON={sys.executable}")
    html = page.locator(".widget-html-content")
    expect(html.filter(has_text="clicks:")).to_have_text("clicks: 0")
    before = nb.output_text()

    nb.click_button("Add one")
    nb.click_button("Add one")
    expect(html.filter(has_text="clicks:")).to_have_text("clicks: 2")
    assert nb.output_text() != before

    # The escaped value is shown as the literal markup, and no <img> element was created.
    expect(html.filter(has_text="onerror")).to_have_text(RAW)
    assert page.locator(".widget-html-content img").count() == 0

    shot = nb.screenshot("harness_smoke_counter.png")
    assert shot.stat().st_size > 0
    assert nb.dialogs == [], nb.dialogs
    assert nb.page_errors == [], nb.page_errors
    print(f"open+idle {t_open - t0:.1f}s, run+clicks+shot {time.monotonic() - t_open:.1f}s")


def test_dialog_detector_catches_raw_html(write_notebook, open_notebook):
    """A raw ``<img onerror>`` in an HTML widget runs ``alert(1)``; the detector must see it.

    This is the negative control for every ``assert nb.dialogs == []`` in the widget tests.
    """
    nb_name = write_notebook("smoke_raw_html.ipynb", SETUP, f"w.HTML(value={RAW!r})")
    nb = open_notebook(nb_name)
    nb.run_all()
    nb.page.wait_for_function("() => document.querySelector('.widget-html-content img') !== null")
    deadline = time.monotonic() + 10
    while not nb.dialogs and time.monotonic() < deadline:
        nb.page.wait_for_timeout(100)  # lets Playwright dispatch the dialog event
    assert ("alert", "1") in nb.dialogs, (nb.dialogs, nb.console_errors)
