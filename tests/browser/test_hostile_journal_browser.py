"""Someone else's journal is data, not code: the three widgets and ``%durable_journal`` in a real Chromium.

The notebook's first cell builds a journal whose every string a person can put there holds markup
that would set ``window.__pwned`` if it ran: run ids (one of 10,000 characters), call ids, result and
error previews, a ``durable_input`` prompt and its choices, a fork's id, a discarded call's reason;
then edits rows by hand with ``sqlite3`` the way a hostile or damaged file would have them: a call
index typed in as markup (SQLite keeps text in an INTEGER column), ``started_at = 'garbage'``, a
preview of bytes that are not UTF-8, and on every finished call a payload whose unpickling creates
a marker file. The test then clicks every enabled widget button, every tab and every select option,
and checks that no script ran, no dialog opened, no payload was unpickled (the marker never appears)
and the long run id left every button on screen.

Run: ``.venv/bin/python -m pytest tests/browser/test_hostile_journal_browser.py -v``.
"""

from __future__ import annotations

import time
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook
from playwright.sync_api import TimeoutError as PlaywrightTimeout

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

VIEWPORT = {"width": 1280, "height": 3000}

_PICK = """(s, k) => {
  if (s.disabled || k >= s.options.length) return;
  s.selectedIndex = k;
  s.dispatchEvent(new Event('change', {bubbles: true}));
}"""

_BUILD = r'''
import io, pickle, sqlite3
from pathlib import Path
import durable_nb as dnb

JOURNAL, MARKER = Path({journal!r}), Path({marker!r})
X = '<img src=x onerror="window.__pwned=1">'
Q = '" onmouseover="window.__pwned=2" x="'
S = '</style><script>window.__pwned=3</script><style>'
J = 'javascript:window.__pwned=4'
B = '\u202egnp.exe\u2066'
RUN = "run" + X + Q + S + B
LONG = "L" * 10_000 + X


class Bomb:  # unpickling it creates MARKER: no widget may ever do that to draw
    def __reduce__(self):
        return (io.open, (str(MARKER), "w"))


@dnb.durable(name="call" + X + Q + S)
def hostile_call(i):
    return X + S + J + B


@dnb.durable(name="boom" + X)
def boom():
    raise ValueError(X + Q + S)


def action(v, ctx):
    ctx.durable_execute(hostile_call, 1, reconciler=lambda: X)
    try:
        ctx.durable_execute(boom)
    except ValueError:
        pass
    return ctx.durable_input("prompt" + X + Q + S + B, choices=[X, Q, S, J])


def pending(v, ctx):
    return ctx.durable_execute(hostile_call, v, reconciler=lambda: X)


store = dnb.SqliteStore(JOURNAL)
runner = dnb.LocalRunner(store)
try:
    runner.run(action, 1, run_id=RUN)
except dnb.AwaitingInput:
    pass
for rid in (LONG, "pend" + X, "idx" + X):
    try:
        with dnb.inject_crash(call="call" + X + Q + S, point="after_call"):
            runner.run(pending, 1, run_id=rid)
    except dnb.SimulatedCrash:
        pass
runner.run(lambda v, ctx: ctx.durable_execute(hostile_call, 2), 1, run_id="done" + Q)
store.fork("done" + Q, 1, new_run_id="fork" + S + X)
store.flush()
with sqlite3.connect(JOURNAL) as conn:  # what a hand edit (or a hostile sender) leaves in the file
    conn.execute("UPDATE calls SET payload = ? WHERE status = 'SUCCEEDED'", (pickle.dumps(Bomb()),))
    conn.execute("UPDATE calls SET idx = ? WHERE run_id = ?", ('"><img src=x onerror=window.__pwned=9>', "idx" + X))
    conn.execute("UPDATE calls SET started_at = 'garbage' || ? WHERE run_id = ? AND idx = 1", (X, RUN))
    conn.execute("UPDATE calls SET result_preview = CAST(x'ff3c696d67' AS TEXT) WHERE run_id = ? AND idx = 0",
                 ("done" + Q,))
    conn.execute("INSERT INTO discarded (run_id, idx, call_id, args_digest, status, origin, result_preview, "
                 "error_preview, started_at, finished_at, discarded_at, reason) VALUES (?,0,?,?,'SUCCEEDED',NULL,?,?,"
                 "1.0,2.0,3.0,?)", (RUN, "d" + X, "dig" + Q, X, S, "why" + X + S))
conn.close()
print("journal built")
'''


def _write(path: Path, journal: Path, marker: Path) -> None:
    cells = [
        new_code_cell(_BUILD.format(journal=str(journal), marker=str(marker))),
        new_code_cell("view = dnb.JournalView(store)\nview"),
        new_code_cell("dnb.JournalView(store, run_id=LONG)"),
        new_code_cell('dnb.ReconcilePanel(store, reconcilers={"call" + X + Q + S: lambda: X + S})'),
        new_code_cell("dnb.ReplayStepper(store, LONG, pending, 1)"),
        new_code_cell(f"%load_ext durable_nb\n%durable_store sqlite:///{journal}\n%durable_journal"),
    ]
    nb = new_notebook(cells=cells, metadata={
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    })
    nbformat.write(nb, str(path))


def _assert_nothing_ran(nb, marker: Path) -> None:
    assert nb.page.evaluate("() => window.__pwned") is None
    assert nb.dialogs == [], nb.dialogs
    assert nb.page.locator(".jp-OutputArea-output img, .jp-OutputArea-output script").count() == 0
    assert not marker.exists(), "a payload was unpickled to draw a widget"


def test_a_hostile_journal_runs_no_script_unpickles_nothing_and_keeps_the_controls_on_screen(
        jupyter_server, open_notebook):
    journal = jupyter_server.root_dir / "hostile.db"
    marker = jupyter_server.root_dir / "UNPICKLED"
    _write(jupyter_server.root_dir / "hostile.ipynb", journal, marker)
    nb = open_notebook("hostile.ipynb", viewport=VIEWPORT)
    page = nb.page
    page.evaluate("() => window.jupyterapp.shell.collapseLeft()")
    nb.run_all()
    outputs = page.locator(".jp-OutputArea-output")
    assert "journal built" in nb.output_text()
    page.locator(".dnb-journal-view").first.wait_for()
    page.locator(".dnb-reconcile-panel").wait_for()
    page.locator(".dnb-replay-stepper").wait_for()
    assert outputs.locator(".dnb-journal-view").count() >= 4  # two views, the stepper's, the magic's
    assert "Traceback" not in nb.output_text()
    text = nb.output_text()
    assert 'onerror=window.__pwned=9>' in text  # the index typed in as markup, shown as text
    assert "\\udcff<img" in text  # the bytes that are not UTF-8, shown as escapes
    _assert_nothing_ran(nb, marker)

    # The 10,000-character run id leaves every control on screen (none pushed off to the right).
    width = VIEWPORT["width"]
    for box in (b.bounding_box() for b in outputs.locator("button.jupyter-button, select, input").all()):
        if box is not None:
            assert box["x"] + box["width"] <= width, box

    # Every tab, every option, every enabled button: nothing runs, nothing is unpickled.
    for tab in page.locator(".jp-OutputArea-output .lm-TabBar-tab").all():
        tab.click()
    for tab in page.locator(".jp-OutputArea-output .lm-TabBar-tab").filter(has_text="Calls").all():
        tab.click()  # back to the tables with the call selectors
    for select in outputs.locator("select").all():
        for k in range(8):  # as a person picks: the change event; a pick can redraw the list, so k is re-checked
            select.evaluate(_PICK, k)
            nb.wait_idle()
    clicked, deadline = 0, time.monotonic() + 120
    buttons = outputs.locator("button.jupyter-button")
    for i in range(buttons.count()):
        if time.monotonic() > deadline:
            break
        button = buttons.nth(i)
        if button.is_visible() and button.is_enabled():
            try:
                button.click(timeout=3000)
            except PlaywrightTimeout:  # an earlier click disabled it (an input answered, a run ended)
                continue
            nb.wait_idle()
            clicked += 1
    assert clicked >= 10, clicked
    print(f"clicked {clicked} buttons")
    for tab in page.locator(".jp-OutputArea-output .lm-TabBar-tab").all():
        tab.click()
    page.mouse.move(5, 5)
    for row in outputs.locator("tr:visible").all()[:200]:
        row.hover(timeout=2000)  # the onmouseover payload in a title or data attribute would fire here
    _assert_nothing_ran(nb, marker)
    assert nb.page_errors == [], nb.page_errors


_UNREADABLE = r'''
import sqlite3
from pathlib import Path
import durable_nb as dnb

JOURNAL = Path({journal!r})
X = '<img src=x onerror="window.__pwned=1">'
Q = '" onmouseover="window.__pwned=2" x="'
S = '</style><script>window.__pwned=3</script><style>'
RID = "run" + X + Q + "\x1b[31m\u202e"


@dnb.durable(name="c" + X)
def c(i):
    return i


def act(v, ctx):
    return [ctx.durable_execute(c, i, reconciler=lambda: X) for i in range(3)]


store = dnb.SqliteStore(JOURNAL)
for rid in (RID, "p" + Q):
    try:
        with dnb.inject_crash(call="c" + X, point="after_call"):
            dnb.LocalRunner(store).run(act, 1, run_id=rid)
    except dnb.SimulatedCrash:
        pass
store.flush()
with sqlite3.connect(JOURNAL) as conn:  # a status and an origin no durable_nb writes, typed in as markup
    conn.execute("UPDATE calls SET origin = ? WHERE run_id = ?", ("O" + X + Q + S, "p" + Q))
    conn.execute("UPDATE calls SET status = ?, idx = ? WHERE run_id = ?", ("S" + X + Q + S + "\x1b[2J", "0" + X, RID))
conn.close()
print("journal built")
'''


def test_rows_no_durable_nb_writes_show_as_text_in_every_widget(jupyter_server, open_notebook):
    """The widgets show a row the store refuses to read (a status, origin and index typed in as markup) with the
    store's reason, which quotes those values and the SQL that fixes them: as text, no script run."""
    journal = jupyter_server.root_dir / "unreadable.db"
    cells = [new_code_cell(_UNREADABLE.format(journal=str(journal))), new_code_cell("dnb.JournalView(store)"),
             new_code_cell("dnb.ReconcilePanel(store)"), new_code_cell("dnb.ReplayStepper(store, RID, act, 1)")]
    nbformat.write(new_notebook(cells=cells, metadata={
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}}),
        str(jupyter_server.root_dir / "unreadable.ipynb"))
    nb = open_notebook("unreadable.ipynb", viewport=VIEWPORT)
    nb.run_all()
    page = nb.page
    page.locator(".dnb-replay-stepper").wait_for()
    text = nb.output_text()
    assert "journal built" in text and "Traceback" not in text, text[-2000:]
    assert text.count("cannot be read") >= 2 and "O<img src=x" in text and "S<img src=x" in text, text[-3000:]
    buttons = page.locator(".jp-OutputArea-output button.jupyter-button")
    for i in range(buttons.count()):
        button = buttons.nth(i)
        if button.is_visible() and button.is_enabled():
            try:
                button.click(timeout=3000)
            except PlaywrightTimeout:
                continue
            nb.wait_idle()
    for row in page.locator(".jp-OutputArea-output tr:visible, .dnb-unreadable-row").all()[:100]:
        row.hover(timeout=2000)
    assert page.evaluate("() => window.__pwned") is None
    assert page.locator(".jp-OutputArea-output img, .jp-OutputArea-output script").count() == 0
    assert nb.dialogs == [] and nb.page_errors == [], (nb.dialogs, nb.page_errors)
