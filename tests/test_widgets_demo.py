"""The browser demo notebook keeps its promises headlessly: every EXPECT text appears after its click.

The real-browser test (tests/browser/) relies on these texts; checking them here
catches drift without starting JupyterLab.
"""

from __future__ import annotations

import html
import re
import sys
from pathlib import Path
from typing import Any

import nbformat

sys.path.insert(0, str(Path(__file__).parent / "browser"))
from widgets_demo import BUTTONS, EXPECT, write_demo_notebook


def text(value: str) -> str:
    value = re.sub(r"<style>.*?</style>", "", value, flags=re.S)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", value)).split())


def test_demo_notebook_shows_what_the_browser_test_expects(tmp_path: Path) -> None:
    nb_path = write_demo_notebook(tmp_path / "demo.ipynb", tmp_path / "journal.db")
    nb = nbformat.read(nb_path, as_version=4)
    ns: dict[str, Any] = {}
    for cell in nb.cells:
        if cell.cell_type == "code":
            exec(compile(cell.source, str(nb_path), "exec"), ns)
    view, panel, stepper = ns["view"], ns["panel"], ns["stepper"]
    try:
        assert EXPECT["page"] in text(view.page_label.value)
        assert "<img" not in view.table.value
        assert EXPECT["hostile_preview"] in text(view.table.value)
        assert re.search(r'data-call="order-1#1">.*?dnb-preview[^>]*>&#x27;&lt;img src=x onerror=alert\(1\)&gt;',
                         view.table.value)

        descriptions = {panel.rows[0].reconcile_button.description, panel.rows[0].reexecute_button.description,
                        panel.rows[0].resolve_button.description, stepper.step_button.description,
                        stepper.back_button.description, stepper.run_button.description}
        assert descriptions == set(BUTTONS)

        assert text(stepper.position_label.value) == EXPECT["position_start"]
        stepper.step_button.click()
        assert text(stepper.position_label.value) == EXPECT["position_after_step"]
        assert EXPECT["message_after_step"] in text(stepper.message.value)
        stepper.run_button.click()
        assert text(stepper.position_label.value) == EXPECT["position_at_end"]
        stepper.back_button.click()
        assert EXPECT["position_after_back"] in text(stepper.position_label.value)

        (order2,) = panel.rows  # the stepper settled order-3: the panel redrew without it
        assert order2.record.run_id == "order-2" and order2.state == EXPECT["pending_state"]
        order2.reexecute_button.click()
        assert EXPECT["left_state"] in text(order2.info.value)
        order2.reconcile_button.click()
        assert f"{EXPECT['reconciled_state']} {EXPECT['reconciled_outcome']}" in text(order2.info.value)
    finally:
        ns["store"].close()
