"""A demo notebook of the three widgets, for the real-browser tests.

``write_demo_notebook(path, journal_path)`` writes a notebook whose first cell
builds a fresh journal at ``journal_path`` (any old file there is removed) with:

* ``order-1`` COMPLETED: ``charge_card`` -> ``'ch_1'``, then ``fetch_note`` whose
  result preview is the hostile ``'<img src=x onerror=alert(1)>'``;
* ``order-2`` and ``order-3`` crashed after ``charge_card`` ran, so each has one
  PENDING call (``inject_crash(call="charge_card", point="after_call")``).

Cells 2-4 each display one widget (one widget per cell, so a test can scope its
locators to the cell's output area): ``JournalView(store)``, ``ReconcilePanel``
(a ``charge_card`` reconciler returning ``'ch_<order>'``), ``ReplayStepper`` for
``order-3``. The widgets' HTML values render inside ``.widget-html-content``.

What a browser test can rely on (see :data:`EXPECT`):

Scoping
    The root widgets carry DOM classes ``dnb-journal-view``, ``dnb-reconcile-panel``,
    ``dnb-replay-stepper`` (the stepper contains its own ``dnb-journal-view``), and each
    panel row ``dnb-pending-widget``. The panel has two rows, so its buttons are not
    unique: scope them, e.g.
    ``.dnb-pending-widget:has([data-call="order-2#0"]) button:has-text("Reconcile")``.

JournalView (cell 2)
    ``.dnb-page`` reads "page 1 of 1 · calls 1–4 of 4". The row
    ``tr.dnb-call[data-call="order-1#1"] .dnb-preview`` shows the literal text
    ``'<img src=x onerror=alert(1)>'``; no ``img`` element exists in any
    ``.widget-html-content`` and no dialog opens (listen with ``page.on("dialog")``).
ReconcilePanel (cell 3)
    Buttons "Reconcile", "Re-execute later", "Resolve" (+ a text box with
    placeholder "Python literal, e.g. {'ok': True}") per row, rows in journal
    order: order-2 first, then order-3. ``.dnb-pending-row[data-call="order-2#0"] .dnb-state``
    reads "PENDING"; after the first "Reconcile" click it reads
    "SUCCEEDED · RECONCILED" and ``.dnb-outcome`` reads "'ch_2'". "Re-execute later"
    makes ``.dnb-state`` read "will re-execute on next recovery"; "Resolve" with
    ``42`` makes it "SUCCEEDED · RESOLVED". ``.dnb-message`` echoes the last action.
ReplayStepper (cell 4)
    Buttons "Step", "Back", "Run to end". ``.dnb-position`` reads
    "position 0 of 1 calls · next: call 0"; after "Step":
    "position 1 of 1 calls · next: call 1 send_receipt → execute" and
    ``.dnb-message`` contains "call 0 charge_card: reconcile → SUCCEEDED · RECONCILED: 'ch_3'";
    after "Run to end": "position 2 of 2 calls · the action has finished"; after
    "Back": "... viewing the past (performed up to 2)". ``.dnb-back-note`` warns that
    Back undoes nothing. The stepper's own JournalView follows below it.

Run the ReplayStepper before "Reconcile"-ing order-3 in the panel if a test wants the
"reconcile" decision (the panel settling it first turns the step into a "replay").
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HOSTILE = "<img src=x onerror=alert(1)>"

BUTTONS = ("Reconcile", "Re-execute later", "Resolve", "Step", "Back", "Run to end")

EXPECT = {
    "page": "page 1 of 1 · calls 1–4 of 4",
    "hostile_preview": repr(HOSTILE),
    "pending_state": "PENDING",
    "reconciled_state": "SUCCEEDED · RECONCILED",
    "reconciled_outcome": "'ch_2'",
    "left_state": "will re-execute on next recovery",
    "resolved_state": "SUCCEEDED · RESOLVED",
    "position_start": "position 0 of 1 calls · next: call 0",
    "position_after_step": "position 1 of 1 calls · next: call 1 send_receipt → execute",
    "message_after_step": "call 0 charge_card: reconcile → SUCCEEDED · RECONCILED: 'ch_3'",
    "position_at_end": "position 2 of 2 calls · the action has finished",
    "position_after_back": "viewing the past (performed up to 2)",
}

_SETUP = '''\
import os
from pathlib import Path

import durable_nb as dnb

JOURNAL = Path({journal!r})
for suffix in ("", "-wal", "-shm"):  # a fresh journal on every run of the notebook
    Path(str(JOURNAL) + suffix).unlink(missing_ok=True)
store = dnb.SqliteStore(JOURNAL)
runner = dnb.LocalRunner(store)
HOSTILE = {hostile!r}


@dnb.durable(name="charge_card")
def charge_card(order_id):
    return f"ch_{{order_id}}"


@dnb.durable(name="fetch_note")
def fetch_note(order_id):
    return HOSTILE  # a result whose preview is markup: must show as text


@dnb.durable(name="send_receipt")
def send_receipt(order_id, charge):
    return f"receipt for {{charge}}"


def place_order(order_id, ctx):
    charge = ctx.durable_execute(charge_card, order_id, reconciler=lambda: f"ch_{{order_id}}")
    if order_id == 1:
        return ctx.durable_execute(fetch_note, order_id)
    return ctx.durable_execute(send_receipt, order_id, charge)


runner.run(place_order, 1, run_id="order-1")
for order_id in (2, 3):
    try:
        with dnb.inject_crash(call="charge_card", point="after_call"):
            runner.run(place_order, order_id, run_id=f"order-{{order_id}}")
    except dnb.SimulatedCrash:
        pass
print("pending:", [(c.run_id, c.index) for c in store.pending()])
'''


def write_demo_notebook(path: str | os.PathLike[str], journal_path: str | os.PathLike[str]) -> Path:
    """Write the demo notebook to ``path``; its first cell (re)builds the journal at ``journal_path``.

    Returns the notebook path. The journal is built by the kernel, not here, so the
    action and reconciler functions exist in the kernel the widgets run in.
    """
    path = Path(path)
    journal = str(Path(journal_path).absolute())
    cells = [
        new_markdown_cell("durable_nb widgets demo (written by tests/browser/widgets_demo.py)"),
        new_code_cell(_SETUP.format(journal=journal, hostile=HOSTILE)),
        new_code_cell("view = dnb.JournalView(store)\nview"),
        new_code_cell(
            'panel = dnb.ReconcilePanel(store, reconcilers={"charge_card": '
            'lambda record: "ch_" + record.run_id.split("-")[1]})\npanel'
        ),
        new_code_cell('stepper = dnb.ReplayStepper(store, "order-3", place_order, 3)\nstepper'),
    ]
    nb = new_notebook(cells=cells, metadata={
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    })
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))
    return path


if __name__ == "__main__":  # python tests/browser/widgets_demo.py OUT.ipynb JOURNAL.db
    import sys

    out = write_demo_notebook(sys.argv[1], sys.argv[2])
    print(json.dumps({"notebook": str(out), "expect": EXPECT}, ensure_ascii=False, indent=1))
