"""Time travel in a real JupyterLab 4 + Chromium: **Fork from here**, and answering a ``durable_input``.

The notebook (written by the test) builds a fresh SQLite journal with a finished
three-call run ``r`` and shows a ``JournalView`` on it with call 2 selected; a
second cell runs an action that asks ``ctx.durable_input("Refund <b>120</b> EUR?",
choices=["yes", "no"])``, so with ``%load_ext durable_nb`` the input widget appears
in that cell's output. The test then

1. clicks **Fork from here** and checks the page (the message names the new run, the
   view switched to it and shows its parent) and the journal, read by this process
   with its own ``SqliteStore``: a fork of ``r`` at call 2 holding copies of calls 0-1;
2. clicks **yes** in the input widget and checks the widget and the journal (the input
   call SUCCEEDED with origin RESOLVED, the run still WAITING);
3. runs the fork and the answered action again in the kernel and checks that the fork
   executed only call 2, and that the refund ran once and the run COMPLETED.

Run: ``.venv/bin/python -m pytest tests/browser/test_timetravel_browser.py -v``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import expect

import durable_nb

pytestmark = [pytest.mark.browser, pytest.mark.timeout(240)]

PROMPT = "Refund <b>120</b> EUR?"

_SETUP = '''\
%load_ext durable_nb
from pathlib import Path
import durable_nb as dnb

JOURNAL = Path({journal!r})
for suffix in ("", "-wal", "-shm"):
    Path(str(JOURNAL) + suffix).unlink(missing_ok=True)
store = dnb.SqliteStore(JOURNAL)
runner = dnb.LocalRunner(store)


@dnb.durable(name="step")
def step(i):
    return f"s{{i}}"


@dnb.durable(name="refund")
def refund(amount):
    return f"refunded {{amount}}"


def three_steps(_, ctx):
    return [ctx.durable_execute(step, i) for i in range(3)]


def approve(amount, ctx):
    answer = ctx.durable_input({prompt!r}, choices=["yes", "no"])
    return ctx.durable_execute(refund, amount) if answer == "yes" else "refused"


runner.run(three_steps, None, run_id="r")
'''

_VIEW = '''\
view = dnb.JournalView(store, run_id="r")
view.selector.value = 2  # call 2: "Fork from here" keeps calls 0 and 1
view'''

_ASK = '''\
try:
    runner.run(approve, 120, run_id="refund-1")
except dnb.AwaitingInput as waiting:
    print("waiting for input at call", waiting.index)'''


def _store(journal: Path) -> durable_nb.SqliteStore:
    return durable_nb.SqliteStore(journal)


def _kernel_exec(page, code: str) -> None:
    """Run ``code`` in the notebook's kernel (not in a cell) and wait until it finished."""
    page.evaluate(
        """async (code) => {
            const k = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
            const future = k.requestExecute({code, stop_on_error: true});
            const reply = await future.done;
            if (reply.content.status !== 'ok') throw new Error(reply.content.ename + ': ' + reply.content.evalue);
        }""",
        code,
    )


def test_fork_from_here_and_answer_a_durable_input(jupyter_server, open_notebook, write_notebook):
    journal = jupyter_server.root_dir / "timetravel.db"
    write_notebook("timetravel.ipynb", _SETUP.format(journal=str(journal), prompt=PROMPT), _VIEW, _ASK)
    nb = open_notebook("timetravel.ipynb", viewport={"width": 1280, "height": 2400})
    page = nb.page
    nb.run_all()
    cells = page.locator(".jp-Notebook .jp-Cell")
    view = cells.nth(1).locator(".dnb-journal-view").first
    ask = cells.nth(2)

    # --- Fork from here --------------------------------------------------------------------
    fork = view.locator(".dnb-fork")
    fork.locator("button.jupyter-button").filter(has_text=re.compile(r"^\s*Fork from here\s*$")).click()
    new_run = fork.locator(".dnb-message .dnb-new-run")
    expect(new_run).to_have_text("r.fork-1")
    expect(fork.locator(".dnb-lineage")).to_contain_text("forked from r at call 2")
    expect(view.locator('tr.dnb-call[data-call="r.fork-1#1"]')).to_have_count(1)
    nb.wait_idle()
    store = _store(journal)
    try:
        run = store.run("r.fork-1")
        assert run is not None and (run.parent_run_id, run.forked_at) == ("r", 2)
        assert [(c.index, c.status.value, c.result_preview) for c in store.calls("r.fork-1")] == [
            (0, "SUCCEEDED", "'s0'"), (1, "SUCCEEDED", "'s1'"),
        ]
        assert len(store.calls("r")) == 3  # the original is untouched
    finally:
        store.close()

    # --- the durable_input widget, shown by the notebook hook -------------------------------------
    prompt = ask.locator(".dnb-input-prompt")
    expect(prompt.locator(".dnb-prompt")).to_have_text(PROMPT)  # markup in the prompt shows as text
    expect(prompt.locator(".dnb-state")).to_have_text("WAITING")
    assert ask.locator(".widget-html-content b b").count() == 0  # no <b> from the prompt itself
    expect(ask.locator(".jp-OutputArea-output").last).to_contain_text("waiting for input at call 0")
    prompt.locator("button.jupyter-button").filter(has_text=re.compile(r"^\s*yes\s*$")).click()
    expect(prompt.locator(".dnb-state")).to_have_text("ANSWERED")
    expect(prompt.locator(".dnb-outcome")).to_have_text("'yes'")
    nb.wait_idle()
    store = _store(journal)
    try:
        answered = store.call("refund-1", 0)
        assert answered is not None
        assert (answered.status.value, answered.origin.value, answered.result_preview) == (
            "SUCCEEDED", "RESOLVED", "'yes'")
        assert store.run("refund-1").status.value == "WAITING"  # until it runs again
    finally:
        store.close()

    # --- both go on when run again ---------------------------------------------------------------
    _kernel_exec(page, 'assert runner.run(three_steps, None, run_id="r.fork-1") == ["s0", "s1", "s2"]')
    _kernel_exec(page, 'assert runner.run(approve, 120, run_id="refund-1") == "refunded 120"')
    store = _store(journal)
    try:
        fork_calls = store.calls("r.fork-1")
        assert [(c.index, c.status.value) for c in fork_calls] == [(0, "SUCCEEDED"), (1, "SUCCEEDED"),
                                                                  (2, "SUCCEEDED")]
        assert fork_calls[2].started_at > fork_calls[1].finished_at  # call 2 executed in the fork, later
        refund_calls = store.calls("refund-1")
        assert [(c.call_id, c.status.value, c.origin.value) for c in refund_calls] == [
            ("durable_nb.durable_input", "SUCCEEDED", "RESOLVED"), ("refund", "SUCCEEDED", "EXECUTED"),
        ]
        assert store.run("refund-1").status.value == "COMPLETED"
    finally:
        store.close()
    nb.screenshot("timetravel_after.png")
    assert nb.dialogs == [], nb.dialogs
    assert nb.page_errors == [], nb.page_errors
