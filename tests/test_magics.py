"""``%%durable`` driven through a real IPython shell.

Counters defined in this module prove how often a cell body (and the durable
calls inside it) really ran; they are functions of a real module, so they enter
a cell's digest by name and do not change its inputs as they count.
"""

from __future__ import annotations

import collections
import shutil
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cloudpickle
import pandas as pd
import pytest
from IPython.core.error import UsageError
from shell_harness import _Log, _Stream, run

import durable_nb as dnb
from durable_nb.notebook.magics import CellAction, DurableMagics, magics_of

RAN: collections.Counter[str] = collections.Counter()
LEDGER: list[str] = []


def tick(name: str) -> None:
    RAN[name] += 1


def charge(order_id: int, amount: int) -> str:
    RAN["charge"] += 1
    LEDGER.append(f"charge {order_id}")
    return f"ch_{order_id}_{amount}"


def send_receipt(charge_id: str) -> str:
    RAN["send_receipt"] += 1
    return f"receipt for {charge_id}"


def lookup_charge(order_id: int) -> str:
    RAN["lookup"] += 1
    return f"ch_{order_id}_found"


# ---------------------------------------------------------------- harness


@pytest.fixture
def magics(ip: Any, store: dnb.Store) -> Iterator[DurableMagics]:
    """The loaded magics, on a fresh store per test; the user namespace is restored afterwards."""
    m = magics_of(ip)
    assert m is not None
    saved_store, saved_ns = m._store, dict(ip.user_ns)
    m.store = store
    RAN.clear()
    LEDGER.clear()
    ip.user_ns.update(tick=tick, charge=charge, send_receipt=send_receipt, lookup_charge=lookup_charge, dnb=dnb)
    yield m
    m._store = saved_store
    ip.user_ns.clear()
    ip.user_ns.update(saved_ns)


def restart(ip: Any, *names: str) -> None:
    """What a kernel restart does to the cell's variables."""
    for name in names:
        ip.user_ns.pop(name, None)


def cell_runs(store: dnb.Store, name: str) -> list[dnb.RunRecord]:
    return [r for r in store.runs() if r.run_id.startswith(f"cell:{name}:")]


# ---------------------------------------------------------------- execute, then replay

CALC = """\
from IPython.display import HTML, display
tick("calc")
print("computing", n)
display(HTML("<b>total</b>"))
print("to stderr", file=sys.stderr)
total = n * 10
parts, (first, *rest) = [n, n], (1, 2, 3)
for i in range(2):
    pass
total + 1
"""


def test_first_run_executes_binds_outputs_and_journals_the_cell(ip: Any, magics: DurableMagics) -> None:
    ip.user_ns.update(n=4, sys=sys)
    result, log = run(ip, "calc", CALC)
    assert result == 41
    assert RAN["calc"] == 1
    assert (ip.user_ns["total"], ip.user_ns["parts"], ip.user_ns["first"], ip.user_ns["rest"], ip.user_ns["i"]) == (
        40, [4, 4], 1, [2, 3], 1)
    assert log.kinds() == ["stdout", "display:text/html,text/plain", "stderr"]
    [run_rec] = cell_runs(magics.store, "calc")
    assert run_rec.status is dnb.RunStatus.COMPLETED
    [cell] = magics.store.calls(run_rec.run_id)
    assert (cell.index, cell.call_id, cell.status, cell.origin) == (
        0, "cell:calc", dnb.Status.SUCCEEDED, dnb.Origin.EXECUTED)


def test_restart_replays_the_cell_without_running_its_body(ip: Any, magics: DurableMagics) -> None:
    ip.user_ns.update(n=4, sys=sys)
    _, first = run(ip, "calc", CALC)
    restart(ip, "total", "parts", "first", "rest", "i", "HTML", "display")

    result, replayed = run(ip, "calc", CALC)

    assert RAN["calc"] == 1
    assert result == 41
    assert ip.user_ns["total"] == 40 and ip.user_ns["rest"] == [2, 3]
    assert ip.user_ns["HTML"].__name__ == "HTML"
    notice, *rest = replayed.items
    assert notice[0] == "stdout"
    assert notice[1].startswith("↺ durable: replayed cell 'calc' recorded ")
    assert "UTC (use --rerun to execute)" in notice[1]
    # same outputs, same order, same MIME types, as after the first run
    replayed_body = [("stdout", notice[1].split("\n", 1)[1]), *rest]
    assert replayed_body == first.items
    assert len(cell_runs(magics.store, "calc")) == 1


def test_changed_input_runs_the_cell_again_in_a_new_run(ip: Any, magics: DurableMagics) -> None:
    ip.user_ns.update(n=4, sys=sys)
    run(ip, "calc", CALC)
    ip.user_ns["n"] = 5
    result, _ = run(ip, "calc", CALC)
    assert result == 51 and RAN["calc"] == 2
    assert len(cell_runs(magics.store, "calc")) == 2  # the old record stays in history
    ip.user_ns["n"] = 4
    result, _ = run(ip, "calc", CALC)
    assert result == 41 and RAN["calc"] == 2  # back to recorded inputs: replayed


def test_editing_a_notebook_helper_invalidates_the_cell(ip: Any, magics: DurableMagics) -> None:
    ip.run_cell("def helper(x):\n    return x + 1\n")
    cell = 'tick("h")\ny = helper(1)\n'
    run(ip, "uses_helper", cell)
    run(ip, "uses_helper", cell)
    assert RAN["h"] == 1 and ip.user_ns["y"] == 2
    ip.run_cell("def helper(x):\n    return x + 100\n")
    run(ip, "uses_helper", cell)
    assert RAN["h"] == 2 and ip.user_ns["y"] == 101


def test_comment_and_whitespace_edits_do_not_invalidate_the_cell(ip: Any, magics: DurableMagics) -> None:
    run(ip, "c", 'tick("c")\nx = 1\n')
    run(ip, "c", '# a comment\ntick( "c" )\n\nx = 1   # same code\n')
    assert RAN["c"] == 1


def test_rerun_executes_again_and_keeps_the_old_record(ip: Any, magics: DurableMagics) -> None:
    cell = 'tick("r")\nx = 1\n'
    run(ip, "r", cell)
    run(ip, "r --rerun", cell)
    assert RAN["r"] == 2
    ids = sorted(r.run_id for r in cell_runs(magics.store, "r"))
    assert len(ids) == 2 and ids[1] == ids[0] + "#2"
    run(ip, "r", cell)  # replays the newest
    assert RAN["r"] == 2


@pytest.mark.parametrize("kept", [2, 3, 12])
def test_a_rerun_kept_by_a_prune_that_removed_older_attempts_still_replays(
    ip: Any, magics: DurableMagics, kept: int
) -> None:
    """``%durable_prune --keep-last 1`` keeps the newest attempt (``#2`` or ``#3``) and removes the first:
    running the cell again must replay the kept one, not run a new attempt (and repeat its side effects)."""
    cell = 'tick("r")\nx = 1\n'
    run(ip, "r", cell)
    for _ in range(kept - 1):
        run(ip, "r --rerun", cell)
    removed = magics.store.prune(keep_last=1)
    assert len(removed) == kept - 1
    assert [r.run_id.rsplit("#", 1)[-1] for r in cell_runs(magics.store, "r")] == [str(kept)]
    run(ip, "r", cell)
    assert RAN["r"] == kept and len(cell_runs(magics.store, "r")) == 1
    run(ip, "r --rerun", cell)  # the next attempt after the kept one
    assert sorted(int(r.run_id.rsplit("#", 1)[-1]) for r in cell_runs(magics.store, "r")) == [kept, kept + 1]


def test_an_attempt_removed_between_kept_ones_is_looked_past(ip: Any, magics: DurableMagics) -> None:
    cell = 'tick("r")\nx = 1\n'
    run(ip, "r", cell)
    run(ip, "r --rerun", cell)
    run(ip, "r --rerun", cell)
    [second] = [r.run_id for r in cell_runs(magics.store, "r") if r.run_id.endswith("#2")]
    magics.store.delete_run(second)  # as %durable_prune --status FAILED does to a failed attempt
    run(ip, "r", cell)
    assert RAN["r"] == 3  # replayed #3, the newest
    run(ip, "r --rerun", cell)
    assert sorted(r.run_id.rsplit("#", 1)[-1] for r in cell_runs(magics.store, "r"))[:2] == ["3", "4"]


def test_imports_functions_and_classes_are_restored(ip: Any, magics: DurableMagics) -> None:
    cell = "import json as js\nfrom os import path\ndef double(v):\n    return 2 * v\nclass Box:\n    size = 3\n"
    run(ip, "defs", cell)
    restart(ip, "js", "path", "double", "Box")
    run(ip, "defs", cell)
    assert ip.user_ns["js"].dumps([1]) == "[1]"
    assert ip.user_ns["double"](4) == 8 and ip.user_ns["Box"].size == 3
    assert ip.user_ns["path"].join("a", "b") == "a/b"


def test_star_imports_and_globals_a_function_sets_are_outputs_too(ip: Any, magics: DurableMagics) -> None:
    """``from math import *`` binds names no assignment shows, and ``global total`` in a function the cell
    calls binds ``total``: a replay must restore them (a later cell uses ``sqrt``)."""
    cell = "from math import *\ndef bump():\n    global total\n    total = 5\nbump()\nroot = sqrt(16)\n"
    run(ip, "star", cell)
    assert len(cell_runs(magics.store, "star")) == 1
    run(ip, "star", cell)  # again in the same kernel: sqrt is bound now, but the cell binds it itself
    assert len(cell_runs(magics.store, "star")) == 1
    restart(ip, "sqrt", "pi", "bump", "total", "root")
    _, log = run(ip, "star", cell)
    assert "replayed cell" in log.text()
    assert ip.user_ns["sqrt"](9) == 3 and ip.user_ns["total"] == 5 and ip.user_ns["root"] == 4
    import math
    assert ip.user_ns["sqrt"] is math.sqrt  # imported again, not a copy

    defines_only = "def reset():\n    global counter\n    counter = 0\n"  # never called here
    ip.user_ns["counter"] = 7
    run(ip, "defs_only", defines_only)
    ip.user_ns["counter"] = "user value"
    run(ip, "defs_only", defines_only)  # replays: must not put back a counter it never set
    assert ip.user_ns["counter"] == "user value"


def test_trailing_semicolon_shows_no_result(ip: Any, magics: DurableMagics) -> None:
    result, _ = run(ip, "quiet", "x = 5\nx + 1;\n")
    assert result is None
    result, _ = run(ip, "quiet", "x = 5\nx + 1;\n")
    assert result is None


def test_deleted_names_are_deleted_again_on_replay(ip: Any, magics: DurableMagics) -> None:
    cell = "tmp = 1\nkeep = tmp + 1\ndel tmp\n"
    run(ip, "d", cell)
    ip.user_ns["tmp"] = "stale"
    run(ip, "d", cell)
    assert "tmp" not in ip.user_ns and ip.user_ns["keep"] == 2


# ---------------------------------------------------------------- rich outputs


PNG = (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00\x1f\x15\xc4\x89"
       b"\x00\x00\x00\rIDATx\x9cc\xf8\x0f\x00\x00\x01\x01\x00\x05\x18\xd8N\x00\x00\x00\x00IEND\xaeB`\x82")


def test_outputs_replay_in_recorded_order_with_their_mime_types(ip: Any, magics: DurableMagics) -> None:
    ip.user_ns.update(PNG=PNG, sys=sys)
    cell = (
        "from IPython.display import HTML, Image, display\n"
        "display(HTML('<i>first</i>'))\n"
        "print('one')\n"
        "print('err', file=sys.stderr)\n"
        "display(Image(data=PNG, format='png'))\n"
        "print('two')\n"
    )
    _, first = run(ip, "rich", cell)
    assert first.kinds() == ["display:text/html,text/plain", "stdout", "stderr", "display:image/png,text/plain",
                             "stdout"]
    _, again = run(ip, "rich", cell)
    assert again.kinds() == ["stdout", *first.kinds()]
    assert again.items[1:] == first.items


def test_widget_views_are_stripped_on_replay(ip: Any, magics: DurableMagics) -> None:
    cell = (
        "from IPython.display import display\n"
        "display({'application/vnd.jupyter.widget-view+json': {'model_id': 'abc', 'version_major': 2,"
        " 'version_minor': 0}, 'text/plain': 'Button()'}, raw=True)\n"
    )
    _, first = run(ip, "w", cell)
    assert "application/vnd.jupyter.widget-view+json" in first.items[0][1]
    _, again = run(ip, "w", cell)
    assert again.items[1] == ("display", {"text/plain": "Button()"})


def test_a_widget_replays_as_the_text_of_its_final_state_not_the_one_it_was_shown_with(
    ip: Any, magics: DurableMagics
) -> None:
    """A progress bar shown at 0% and driven to 100% replays as 100% (its model died with the kernel)."""
    cell = (
        "import ipywidgets\n"
        "from IPython.display import display\n"
        "bar = ipywidgets.IntProgress(value=0, max=5)\n"
        "display(bar)\n"
        "bar.value = 5\n"
        "del bar\n"
    )
    _, first = run(ip, "progress", cell)
    assert first.items[0][1]["text/plain"] == "IntProgress(value=0, max=5)"  # as shown live
    _, again = run(ip, "progress", cell)
    assert again.items[1] == ("display", {"text/plain": "IntProgress(value=5, max=5)"})


def test_a_widget_whose_repr_fails_at_the_end_of_the_cell_shows_no_traceback_and_keeps_its_shown_text(
    ip: Any, magics: DurableMagics
) -> None:
    """Re-reading a widget's text when the cell ends is durable_nb's doing: a failing repr there is not the user's."""
    cell = (
        "import ipywidgets\n"
        "from IPython.display import display\n"
        "class Fragile(ipywidgets.IntProgress):\n"
        "    broken = False\n"
        "    def __repr__(self):\n"
        "        if self.broken:\n"
        "            raise RuntimeError('repr broke')\n"
        "        return 'Fragile(ok)'\n"
        "bar = Fragile(value=0, max=5)\n"
        "display(bar)\n"
        "bar.broken = True\n"
        "print('done')\n"
        "del bar, Fragile\n"
    )
    _, first = run(ip, "fragile", cell)
    assert "repr broke" not in str(first.items)  # no traceback after a cell that succeeded
    assert first.kinds() == ["display:application/vnd.jupyter.widget-view+json,text/plain", "stdout"]
    _, again = run(ip, "fragile", cell)
    assert again.items[1] == ("display", {"text/plain": "Fragile(ok)"})


def test_display_updates_and_clear_output_replay_their_final_state(ip: Any, magics: DurableMagics) -> None:
    cell = (
        "from IPython.display import display, clear_output\n"
        "print('gone')\n"
        "clear_output()\n"
        "h = display('v1', display_id=True)\n"
        "h.update('v2')\n"
    )
    run(ip, "upd", cell)
    _, again = run(ip, "upd", cell)
    assert [v["text/plain"] for k, v in again.items if k == "display"] == ["'v2'"]
    assert "gone" not in again.text()


def test_a_replayed_display_keeps_its_display_id_so_a_later_update_redraws_it(
    ip: Any, magics: DurableMagics
) -> None:
    """After a restart, ``update_display(..., display_id=h.display_id)`` in a later cell must find the output."""
    cell = (
        "from IPython.display import display\n"
        "h = display('v1', display_id=True)\n"
        "h.update('v2')\n"
        "display('fixed', display_id='status')\n"
        "display('no id')\n"
    )
    _, first = run(ip, "ids", cell)
    shown = [m for m in first.published if not m["update"]]
    ids = [m["transient"].get("display_id") for m in shown]
    assert ids[1:] == ["status", None] and ids[0]
    restart(ip, "h")
    _, again = run(ip, "ids", cell)
    assert [(m["data"]["text/plain"], m["transient"], m["update"]) for m in again.published] == [
        ("'v2'", {"display_id": ids[0]}, False), ("'fixed'", {"display_id": "status"}, False),
        ("'no id'", {}, False),
    ]
    assert ip.user_ns["h"].display_id == ids[0]  # the restored handle updates the replayed output


def test_an_update_of_another_cells_display_replays_as_that_update(ip: Any, magics: DurableMagics) -> None:
    """A durable cell that redraws a status line shown above must redraw it on replay too, not drop it."""
    cell = "from IPython.display import update_display\nupdate_display('loaded 3 files', display_id='status')\n"
    _, first = run(ip, "status", cell)
    assert [m["update"] for m in first.published] == [True]
    _, again = run(ip, "status", cell)
    assert [(m["data"], m["transient"], m["update"]) for m in again.published] == [
        ({"text/plain": "'loaded 3 files'"}, {"display_id": "status"}, True)
    ]


def test_clear_output_wait_clears_only_when_the_next_output_arrives(ip: Any, magics: DurableMagics) -> None:
    """As in the frontend: a cell ending in ``clear_output(wait=True)`` still shows its last output."""
    cell = (
        "from IPython.display import clear_output\n"
        "for i in range(3):\n"
        "    clear_output(wait=True)\n"
        "    print('step', i)\n"
        "clear_output(wait=True)\n"
    )
    run(ip, "wait", cell)
    _, again = run(ip, "wait", cell)
    assert again.text().endswith("(use --rerun to execute)\nstep 2\n")


# ---------------------------------------------------------------- failures and recovery


def test_a_failing_cell_is_recorded_failed_and_replays_its_exception(ip: Any, magics: DurableMagics) -> None:
    cell = 'tick("f")\nx = 1 / 0\n'
    with pytest.raises(ZeroDivisionError):
        run(ip, "boom", cell)
    [rec] = cell_runs(magics.store, "boom")
    assert rec.status is dnb.RunStatus.FAILED
    assert magics.store.calls(rec.run_id)[0].status is dnb.Status.FAILED
    with pytest.raises(ZeroDivisionError):
        run(ip, "boom", cell)
    assert RAN["f"] == 1
    with pytest.raises(ZeroDivisionError):
        run(ip, "boom --rerun", cell)
    assert RAN["f"] == 2


def test_replayed_failure_says_it_was_replayed(ip: Any, magics: DurableMagics) -> None:
    cell = "raise ValueError('bad input')\n"
    with pytest.raises(ValueError):
        run(ip, "bad", cell)
    log = _Log()
    saved = sys.stdout
    sys.stdout = _Stream(log, "stdout")
    try:
        with pytest.raises(ValueError, match="bad input"):
            ip.run_cell_magic("durable", "bad", cell)
    finally:
        sys.stdout = saved
    assert "replayed the failure of cell 'bad'" in log.text()


def test_a_replayed_failure_shows_what_the_cell_printed_and_where_in_the_cell_it_raised(
    ip: Any, magics: DurableMagics
) -> None:
    ip.user_ns["sys"] = sys
    cell = 'tick("f")\nprint("charged 42")\nprint("careful", file=sys.stderr)\nraise ValueError("bad thing")\n'
    with pytest.raises(ValueError):
        run(ip, "boom", cell)
    log = _Log()
    with pytest.raises(ValueError, match="bad thing") as replayed:
        run(ip, "boom", cell, log)
    assert RAN["f"] == 1
    assert log.items == [("stdout", f"{log.items[0][1].splitlines()[0]}\ncharged 42\n"), ("stderr", "careful\n")]
    assert "replayed the failure of cell 'boom'" in log.text()
    [note] = replayed.value.__notes__
    assert note.startswith("Raised in cell 'boom' when it ran:\n  <durable cell boom>, line 4")
    assert 'raise ValueError("bad thing")' in note


PAY = """\
ctx = dnb.current_context()
charge_id = ctx.durable_execute(charge, order_id, 30, reconciler=lambda: lookup_charge(order_id))
receipt = ctx.durable_execute(send_receipt, charge_id)
print(receipt)
"""


def test_cell_body_sees_its_own_run_as_current_context(ip: Any, magics: DurableMagics) -> None:
    run(ip, "who", "rid = dnb.current_context().run_id\n")
    assert ip.user_ns["rid"].startswith("cell:who:")
    assert dnb.current_context() is None


INTERRUPTS: list[int] = []


def interrupt_once() -> None:
    """Ctrl-C the first time it is called."""
    if not INTERRUPTS:
        INTERRUPTS.append(1)
        raise KeyboardInterrupt


def test_keyboard_interrupt_leaves_the_cell_pending_and_the_next_run_recovers(
    ip: Any, magics: DurableMagics
) -> None:
    INTERRUPTS.clear()
    ip.user_ns.update(order_id=7, interrupt_once=interrupt_once)
    cell = PAY.replace("print(receipt)", "interrupt_once()\nprint(receipt)")
    with pytest.raises(KeyboardInterrupt):
        run(ip, "pay", cell)
    [rec] = cell_runs(magics.store, "pay")
    calls = magics.store.calls(rec.run_id)
    assert [(c.call_id, c.status) for c in calls] == [
        ("cell:pay", dnb.Status.PENDING),
        ("test_magics.charge", dnb.Status.SUCCEEDED),
        ("test_magics.send_receipt", dnb.Status.SUCCEEDED),
    ]
    _, log = run(ip, "pay", cell)
    assert RAN["charge"] == 1 and RAN["send_receipt"] == 1  # both replayed inside the re-executed body
    recovering, printed = log.text().splitlines()
    assert recovering.startswith("↻ durable: recovering cell 'pay': its last attempt did not finish")
    assert printed == "receipt for ch_7_30"
    assert magics.store.calls(rec.run_id)[0].status is dnb.Status.SUCCEEDED


def test_a_crashed_cell_that_rebinds_its_input_recovers_the_same_run(ip: Any, magics: DurableMagics) -> None:
    """``order = dict(order, ...)`` ran before the crash: the next run must see the old ``order`` again,
    or it would be a new run whose durable calls charge a second time."""
    INTERRUPTS.clear()
    ip.user_ns.update(order={"id": 5, "amount": 10}, interrupt_once=interrupt_once)
    cell = ("order = dict(order, amount=order['amount'] + 1)\n"
            "c = dnb.current_context().durable_execute(charge, order['id'], order['amount'])\n"
            "interrupt_once()\n")
    with pytest.raises(KeyboardInterrupt):
        run(ip, "rebind", cell)
    assert ip.user_ns["order"] == {"id": 5, "amount": 10}  # as before the cell ran
    _, log = run(ip, "rebind", cell)
    assert "recovering cell 'rebind'" in log.text()
    assert LEDGER == ["charge 5"] and ip.user_ns["c"] == "ch_5_11"
    assert len(cell_runs(magics.store, "rebind")) == 1


def crash_pay(ip: Any, order_id: int, call_id: str) -> None:
    """Run the PAY cell for ``order_id`` and crash it just after ``call_id`` ran (its outcome not journaled)."""
    ip.user_ns["order_id"] = order_id
    with dnb.inject_crash(call=call_id, point="after_call"), pytest.raises(dnb.SimulatedCrash):
        run(ip, "pay", PAY)


def test_a_cell_that_crashed_mid_way_recovers_through_its_inner_reconciler(
    ip: Any, magics: DurableMagics
) -> None:
    crash_pay(ip, 9, "test_magics.charge")
    assert LEDGER == ["charge 9"] and "receipt" not in ip.user_ns

    _, log = run(ip, "pay", PAY)

    assert LEDGER == ["charge 9"]  # not charged twice
    assert RAN["lookup"] == 1 and RAN["send_receipt"] == 1
    assert ip.user_ns["charge_id"] == "ch_9_found"
    assert log.text().endswith("replay or reconcile\nreceipt for ch_9_found\n")
    [rec] = cell_runs(magics.store, "pay")
    calls = magics.store.calls(rec.run_id)
    assert [(c.call_id, c.origin) for c in calls] == [
        ("cell:pay", dnb.Origin.EXECUTED),
        ("test_magics.charge", dnb.Origin.RECONCILED),
        ("test_magics.send_receipt", dnb.Origin.EXECUTED),
    ]
    restart(ip, "charge_id", "receipt", "ctx")
    run(ip, "pay", PAY)
    assert ip.user_ns["receipt"] == "receipt for ch_9_found" and RAN["send_receipt"] == 1


def test_a_recovered_cell_says_which_durable_call_ran_again_for_want_of_a_reconciler(
    ip: Any, magics: DurableMagics
) -> None:
    """The recovery line says the cell's durable calls "replay or reconcile"; one that was in flight when the
    kernel died and has no reconciler runs again (at-least-once), and nothing on screen said that the
    receipt (a payment, an e-mail) had just been sent twice."""
    crash_pay(ip, 6, "test_magics.send_receipt")
    assert RAN["send_receipt"] == 1
    _, log = run(ip, "pay", PAY)
    assert RAN["charge"] == 1 and RAN["send_receipt"] == 2  # the rules: at-least-once without a reconciler
    text = log.text()
    assert "replay or reconcile\nreceipt for ch_6_30\n  ran again: call 2 (test_magics.send_receipt) of cell " \
           "'pay' was in flight when its last attempt stopped and has no reconciler, so it executed again" in text
    assert "reconciler= to look up what it did instead" in text
    restart(ip, "charge_id", "receipt", "ctx")
    _, replayed = run(ip, "pay", PAY)
    assert "ran again" not in replayed.text() and RAN["send_receipt"] == 2  # not part of the cell's output


def test_a_cell_edited_after_it_crashed_is_refused_before_it_charges_again(ip: Any, magics: DurableMagics) -> None:
    """Found in real kernels: killed mid-cell with the charge in flight, the user removed a sleep from the
    cell and ran it again; the edit made a new version, a new run, and the charge was made again without a
    word (ledger ['charge 1', 'charge 1']). Refused before the body runs; undoing the edit recovers."""
    slow = "tick('sleep')\n" + PAY
    ip.user_ns["order_id"] = 1
    with dnb.inject_crash(call="test_magics.charge", point="after_call"), pytest.raises(dnb.SimulatedCrash):
        run(ip, "pay", slow)
    with pytest.raises(UsageError, match=r"call 1 \(test_magics.charge\) PENDING.* Nothing was run"):
        run(ip, "pay", PAY)  # the sleep removed
    assert LEDGER == ["charge 1"] and RAN["sleep"] == 1
    _, log = run(ip, "pay", slow)
    assert "recovering cell 'pay'" in log.text() and LEDGER == ["charge 1"] and RAN["lookup"] == 1


def test_a_recovered_map_says_which_record_call_ran_again_for_want_of_a_reconciler(
    ip: Any, magics: DurableMagics
) -> None:
    """A recovered plain cell says which call ran again (at-least-once); a --map record's did so silently."""
    ip.user_ns["orders"] = [{"id": 1}, {"id": 2}]
    cell = "ctx.durable_execute(charge, record['id'], 5)\n"
    with dnb.inject_crash(call="test_magics.charge", point="after_call"), pytest.raises(dnb.SimulatedCrash):
        run(ip, "paid --map orders --key id", cell)
    _, log = run(ip, "paid --map orders --key id", cell)
    assert LEDGER == ["charge 1", "charge 1", "charge 2"]
    assert ("  ran again: call 0 (test_magics.charge) of run 'cell:paid/1#0' of cell 'paid' was in flight when its "
            "last attempt stopped and has no reconciler, so it executed again") in log.text()
    _, replayed = run(ip, "paid --map orders --key id", cell)
    assert "ran again" not in replayed.text() and len(LEDGER) == 3


def test_a_cell_reconciler_of_the_wrong_shape_is_not_journaled_and_a_fixed_one_recovers(
    ip: Any, magics: DurableMagics
) -> None:
    crash_pay(ip, 4, "cell:pay")
    with pytest.raises(UsageError, match="must return the cell's outputs as a dict.*a fixed --reconciler"):
        run(ip, 'pay --reconciler "lambda: 5"', PAY)  # the magic's argument is wrong: no traceback
    [rec] = cell_runs(magics.store, "pay")
    assert magics.store.calls(rec.run_id)[0].status is dnb.Status.PENDING  # not FAILED forever
    run(ip, "pay --reconciler \"lambda: {'receipt': 'from ledger'}\"", PAY)
    assert ip.user_ns["receipt"] == "from ledger" and RAN["charge"] == 1


def test_cell_reconciler_recovers_the_outputs_instead_of_running_the_body(ip: Any, magics: DurableMagics) -> None:
    crash_pay(ip, 3, "cell:pay")
    assert RAN["charge"] == 1
    restart(ip, "charge_id", "receipt")
    ip.user_ns["recover"] = lambda: {"charge_id": "ch_3_found", "receipt": "from ledger"}

    _, log = run(ip, "pay --reconciler recover", PAY)

    assert RAN["charge"] == 1 and RAN["send_receipt"] == 1  # the body did not run again
    assert ip.user_ns["receipt"] == "from ledger"
    assert "reconciled cell 'pay'" in log.text()
    [rec] = cell_runs(magics.store, "pay")
    calls = magics.store.calls(rec.run_id)
    assert calls[0].origin is dnb.Origin.RECONCILED and len(calls) == 3  # inner history kept
    assert magics.store.discarded() == []
    restart(ip, "charge_id", "receipt")
    run(ip, 'pay --reconciler "lambda: {}"', PAY)  # terminal now: replayed, reconciler unused
    assert ip.user_ns["receipt"] == "from ledger"


def test_reconciler_is_ignored_while_nothing_is_pending(ip: Any, magics: DurableMagics) -> None:
    run(ip, "x --reconciler \"lambda: {'x': 0}\"", 'tick("x")\nx = 1\n')
    assert RAN["x"] == 1 and ip.user_ns["x"] == 1


def test_a_cells_journal_entry_previews_its_outputs_as_text_not_pickles(ip: Any, magics: DurableMagics) -> None:
    ip.user_ns["order_id"] = 2
    run(ip, "pay", PAY)
    [rec] = cell_runs(magics.store, "pay")
    preview = magics.store.calls(rec.run_id)[0].result_preview
    assert preview == "cell outputs: charge_id, receipt; 1 printed/displayed"


def test_unpicklable_outputs_are_left_out_with_a_warning_and_named_on_replay(
    ip: Any, magics: DurableMagics, tmp_path: Path
) -> None:
    ip.user_ns["path"] = str(tmp_path / "data.txt")
    Path(ip.user_ns["path"]).write_text("hello")
    cell = "with open(path) as fh:\n    data = fh.read()\nimport threading\nlock = threading.Lock()\n"
    with pytest.warns(dnb.UnpicklableOutputWarning, match=r"fh \(_io.TextIOWrapper.*lock \(_thread.lock"):
        run(ip, "files", cell)
    restart(ip, "fh", "data", "lock", "threading")
    _, log = run(ip, "files", cell)
    assert ip.user_ns["data"] == "hello" and "threading" in ip.user_ns
    assert "fh" not in ip.user_ns and "lock" not in ip.user_ns
    assert "not restored: fh (_io.TextIOWrapper" in log.text() and "lock (_thread.lock" in log.text()


def test_cell_warnings_name_the_cell_not_durable_nbs_source(ip: Any, magics: DurableMagics, tmp_path: Path) -> None:
    """The warning pointed at durable_nb/notebook/magics.py, so the notebook showed that path and the magic's
    own line ``return run_cell(self.shell, ...)`` under it; and one name "cannot be journaled and were left out"."""
    ip.user_ns["path"] = str(tmp_path / "w.txt")
    ip.user_ns["orders"] = [1]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run(ip, "warned", "fh = open(path, 'w')\norders.append(2)\n")
    ip.user_ns["fh"].close()
    kinds = {type(w.message): w for w in caught}
    assert set(kinds) == {dnb.UnpicklableOutputWarning, dnb.ChangedInputWarning}
    for w in caught:
        assert w.filename == "<durable cell warned>", w.filename
    text = str(kinds[dnb.UnpicklableOutputWarning].message)
    assert "cannot be journaled and was left out" in text and "will not restore this name" in text


def test_a_file_still_open_for_reading_is_left_out_not_journaled_as_a_copy(
    ip: Any, magics: DurableMagics, tmp_path: Path
) -> None:
    ip.user_ns["path"] = str(tmp_path / "data.txt")
    Path(ip.user_ns["path"]).write_text("hello")
    with pytest.warns(dnb.UnpicklableOutputWarning, match=r"reader \(_io.TextIOWrapper"):
        run(ip, "reader", "reader = open(path)\nfirst = reader.read(2)\n")
    ip.user_ns["reader"].close()
    restart(ip, "reader", "first")
    _, log = run(ip, "reader", "reader = open(path)\nfirst = reader.read(2)\n")
    assert ip.user_ns["first"] == "he" and "reader" not in ip.user_ns
    assert "not restored: reader (_io.TextIOWrapper" in log.text()


def test_unpicklable_result_is_shown_again_from_its_recorded_output(ip: Any, magics: DurableMagics) -> None:
    cell = "import threading\nthreading.Lock()\n"
    with pytest.warns(dnb.UnpicklableOutputWarning, match="the cell's result"):
        run(ip, "lockres", cell)
    result, _ = run(ip, "lockres", cell)
    assert "unlocked _thread.lock" in repr(result)


def test_a_cell_that_changes_its_input_in_place_is_warned_that_running_it_again_executes_it_again(
    ip: Any, magics: DurableMagics
) -> None:
    ip.user_ns.update(orders=[{"id": 1, "amount": 5}], charge=charge, limit=10, pricing={"fee": 1})
    cell = ("for o in orders:\n    o['charge'] = dnb.current_context().durable_execute(charge, o['id'], o['amount'])\n"
            "fee = pricing['fee'] + limit\n")
    ip.user_ns["dnb"] = dnb
    with pytest.warns(dnb.ChangedInputWarning, match=r"changed its input 'orders' in place.*executes again"):
        run(ip, "annotate", cell)
    assert RAN["charge"] == 1
    # What the warning says: run again, the changed input is another version of the cell (it executes)...
    run(ip, "annotate", cell)
    assert RAN["charge"] == 2
    run(ip, "annotate", cell)  # ...until the inputs stop changing (this time they came out as they went in)
    assert RAN["charge"] == 2
    # Rebinding instead of changing in place: no warning, and running it again replays.
    rebinding = "orders2 = [dict(o, charge=dnb.current_context().durable_execute(charge, o['id'], o['amount'])) " \
                "for o in orders]\n"
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", dnb.ChangedInputWarning)
        run(ip, "rebind", rebinding)
        run(ip, "rebind", rebinding)
    assert RAN["charge"] == 3


class _Model:
    """Stands for an estimator a cell fits in place (``model.fit(X)``)."""

    def __init__(self) -> None:
        self.weights: list[float] | None = None


def test_a_replay_after_a_restart_restores_the_inputs_the_cell_changed_in_place(
    ip: Any, magics: DurableMagics
) -> None:
    """``df["score"] = ...`` and ``model.fit(X)`` are how notebooks compute: the first run left the
    column and the fitted model, so a replay (earlier cells run again, this one replays) must too."""
    import pandas as pd

    cell = ("tick('score')\ndf['score'] = df['x'] * 2\nmodel.weights = [1.5]\nseen.append(len(df))\n"
            "settings['done'] = True\nn = len(seen)\n")

    def earlier_cells() -> None:  # what re-running the notebook's cells above this one binds
        ip.user_ns.update(df=pd.DataFrame({"x": [1, 2]}), model=_Model(), seen=[], settings={})

    earlier_cells()
    with pytest.warns(dnb.ChangedInputWarning, match=r"'df', 'model', 'seen', 'settings' in place.*restores"):
        run(ip, "fit", cell)
    first = {k: ip.user_ns[k] for k in ("df", "model", "seen", "settings")}
    restart(ip, "df", "model", "seen", "settings", "n")
    earlier_cells()

    _, log = run(ip, "fit", cell)

    assert RAN["score"] == 1 and "replayed cell 'fit'" in log.text()
    assert list(ip.user_ns["df"]["score"]) == [2, 4] and ip.user_ns["df"].equals(first["df"])
    assert ip.user_ns["model"].weights == [1.5]
    assert (ip.user_ns["seen"], ip.user_ns["settings"], ip.user_ns["n"]) == ([2], {"done": True}, 1)


def test_a_replay_puts_a_changed_input_into_the_object_other_names_hold(ip: Any, magics: DurableMagics) -> None:
    """``pipeline`` holding ``model``, ``raw = df``: in the first run they saw the change the cell made to
    the object, so after a restart and a replay they must too (not a fitted ``model`` beside an
    unfitted pipeline step)."""
    import pandas as pd

    cell = ("tick('alias')\nmodel.weights = [2.0]\ndf['score'] = df['x'] * 2\nseen.append(1)\n"
            "counts['a'] += 1\nfitted = model\n")

    def earlier_cells() -> None:
        model, df = _Model(), pd.DataFrame({"x": [1, 2]})
        ip.user_ns.update(model=model, pipeline={"steps": [model]}, df=df, raw=df, seen=[],
                          counts=collections.Counter())

    earlier_cells()
    with pytest.warns(dnb.ChangedInputWarning):
        run(ip, "alias", cell)
    restart(ip, "model", "pipeline", "df", "raw", "seen", "counts", "fitted")
    earlier_cells()
    seen = ip.user_ns["seen"]

    _, log = run(ip, "alias", cell)

    ns = ip.user_ns
    assert RAN["alias"] == 1 and "replayed cell 'alias'" in log.text()
    assert ns["pipeline"]["steps"][0] is ns["model"] and ns["model"].weights == [2.0]
    assert ns["fitted"] is ns["model"]  # bound to the changed input in the first run: the same object again
    assert ns["raw"] is ns["df"] and list(ns["raw"]["score"]) == [2, 4]
    assert ns["seen"] is seen and seen == [1]
    assert ns["counts"] == collections.Counter(a=1)


class _Pipe:
    """Stands for a pipeline holding an estimator (``make_pipeline(scaler, clf)``)."""

    def __init__(self, steps: list[Any]) -> None:
        self.steps = steps
        self.parent: Any = None


def test_a_replay_keeps_what_held_a_changed_input_in_the_first_run_holding_it(
    ip: Any, magics: DurableMagics
) -> None:
    """The journaled state holds the cell's copy of a changed input: ``pipe`` (changed too) holding
    ``clf``, a child whose ``parent`` is the input, ``results`` bound by the cell. After the replay
    they must hold the notebook's own objects, as in the first run, not a copy no other name sees."""
    import random

    cell = ("tick('held')\npipe.steps[0].weights = [1.0]\nprint(clf.weights)\nrng.random()\n"
            "child = _Pipe([])\nchild.parent = pipe\npipe.steps.append(child)\n"
            "frame = pd.DataFrame({'a': [1]})\nresults = {'model': clf, 'rng': rng, 'frame': frame}\n")

    def earlier_cells() -> None:
        clf = _Model()
        ip.user_ns.update(clf=clf, pipe=_Pipe([clf]), rng=random.Random(1), pd=pd, _Pipe=_Pipe)

    earlier_cells()
    with pytest.warns(dnb.ChangedInputWarning):
        run(ip, "held", cell)
    restart(ip, "clf", "pipe", "rng", "child", "frame", "results")
    earlier_cells()

    _, log = run(ip, "held", cell)

    ns = ip.user_ns
    assert RAN["held"] == 1 and "replayed cell 'held'" in log.text()
    assert ns["pipe"].steps[0] is ns["clf"] and ns["clf"].weights == [1.0]
    assert ns["pipe"].steps[1] is ns["child"] and ns["child"].parent is ns["pipe"]
    assert ns["results"]["model"] is ns["clf"] and ns["results"]["rng"] is ns["rng"]
    assert ns["results"]["frame"] is ns["frame"]


def test_a_changed_input_that_cannot_be_pickled_is_named_as_not_restored(ip: Any, magics: DurableMagics) -> None:
    """The cell's warning says a replay restores a changed input; one that cannot be journaled must not be
    passed over in silence, neither when the cell runs nor when it replays."""
    import threading

    cell = "tick('locked')\nbox.append(5)\nm = 1\n"
    ip.user_ns["box"] = [threading.Lock()]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dnb.UnpicklableArgumentWarning)  # the lock is digested by its type
        with pytest.warns(dnb.UnpicklableOutputWarning, match="box"), pytest.warns(dnb.ChangedInputWarning):
            run(ip, "locked", cell)
        restart(ip, "box", "m")
        ip.user_ns["box"] = [threading.Lock()]
        _, log = run(ip, "locked", cell)

    assert RAN["locked"] == 1 and ip.user_ns["m"] == 1
    assert "not restored: box (" in log.text()


def test_a_notebook_class_the_cell_changed_is_not_replaced_by_a_replay(ip: Any, magics: DurableMagics) -> None:
    ip.run_cell("class Counter:\n    runs = 0\n")
    ip.run_cell("c = Counter()")
    cell = "tick('count')\nCounter.runs += 1\nk = Counter.runs\n"
    with pytest.warns(dnb.ChangedInputWarning, match="'Counter'"):
        run(ip, "count", cell)
    ip.run_cell("Counter.runs = 0")
    restart(ip, "k")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run(ip, "count", cell)
    assert RAN["count"] == 1 and ip.user_ns["k"] == 1
    assert isinstance(ip.user_ns["c"], ip.user_ns["Counter"])  # still the notebook's class


# ---------------------------------------------------------------- usage errors


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("calc --bogus", "unrecognized arguments: --bogus"),
        ("'a b'", "NAME must be an identifier"),
        ("{n}", "NAME must be an identifier, got '{n}'"),  # @no_var_expand: no substitution
        ("calc --reconciler 42", "reconciler must be callable"),
        ('calc --reconciler "lambda order: order"', "no arguments"),
        ("calc --reconciler nowhere", "could not be evaluated (NameError"),
        ("calc --reconciler lambda: lookup(1)", "unrecognized arguments: lookup(1). An expression with spaces"),
        ("calc --key id", "--key only makes sense with --map"),
        ("calc --concurrency 4", "--concurrency only makes sense with --map"),
        ("calc --map rows --concurrency 4", "add --runner flink"),
        ("calc --map rows --runner flink --concurrency many", "argument --concurrency: invalid int value"),
        ("calc --runner spark", "invalid choice"),
        ("calc --map rows --rerun", "--rerun cannot be combined with --map"),
        ("calc --map missing_var", "no variable 'missing_var'"),
        ("calc --store ftp://x", "cannot open store"),
        # an empty value was read as "not given": the cell journaled in the notebook's store, or keyed by position
        ("calc --store=", "--store needs a value, got an empty one"),
        ("calc --reconciler=", "--reconciler needs a value, got an empty one"),
        ("calc --map rows --key=", "--key needs a value, got an empty one"),
        # argparse's own words named neither the magic nor the fix
        ("calc --rerrun", "%%durable: unrecognized arguments: --rerrun (did you mean --rerun?)"),
        ("calc --dry-run", "unrecognized arguments: --dry-run (did you mean --dry?)"),
        ("calc --help", "(help is %%durable?, not --help)"),
        # an option of another magic: difflib's nearest (--map for --at) was the wrong fix
        ("calc --at 2", "unrecognized arguments: --at 2 (--at belongs to %durable_fork: %durable_fork calc --at 2)"),
        ("calc --older-than 30d", "(--older-than belongs to %durable_prune: %durable_prune --older-than 30d)"),
        ("", "%%durable: the following arguments are required: name. Example: %%durable charge"),
        ("--rerun", "the following arguments are required: name. Example: %%durable charge"),
    ],
)
def test_usage_errors_are_raised_before_anything_runs(
    ip: Any, magics: DurableMagics, line: str, message: str
) -> None:
    ip.user_ns.update(n=1, rows=[1])
    with pytest.raises(UsageError, match=_escape(message)):
        run(ip, line, 'tick("usage")\n')
    assert RAN["usage"] == 0 and magics.store.runs() == []


def _escape(text: str) -> str:
    import re

    return re.escape(text)


def test_help_shows_the_cell_magic_as_it_is_typed(ip: Any, magics: DurableMagics) -> None:
    """``%%durable?`` showed the usage as ``%durable [--reconciler EXPR] ...``, a line magic that does not exist."""
    doc = ip.find_cell_magic("durable").__doc__
    assert "%%durable [--reconciler EXPR]" in doc
    assert "\n  %durable " not in doc


def test_durable_store_refuses_an_option_or_a_comment_instead_of_a_file_named_after_it(
    ip: Any, magics: DurableMagics, tmp_path: Path, monkeypatch: Any
) -> None:
    """``%durable_store --store x`` opened a journal file named '--store x', and ``%durable_store URL # mine`` one
    named 'URL # mine': the cells journaled there, and the journal at URL (after a restart) had none of them."""
    folder = tmp_path / "nb"
    folder.mkdir()
    monkeypatch.chdir(folder)
    before = magics.store
    with pytest.raises(UsageError, match=r"%durable_store takes a URL, not an option.*Example: %durable_store"):
        ip.run_line_magic("durable_store", "--store x")
    with pytest.raises(UsageError, match="a comment after the URL would be part of it"):
        ip.run_line_magic("durable_store", f"sqlite:///{folder}/nb.db # mine")
    assert magics.store is before and list(folder.iterdir()) == []


def test_line_magic_usage_errors_name_the_magic_and_an_example(ip: Any, magics: DurableMagics) -> None:
    with pytest.raises(UsageError, match=r"%durable_fork: the following arguments are required: --at\. "
                                         r"Example: %durable_fork charge --at 2"):
        ip.run_line_magic("durable_fork", "charge")
    with pytest.raises(UsageError, match=r"%durable_prune: unrecognized arguments: --olderthan 30d "
                                         r"\(did you mean --older-than\?\)"):
        ip.run_line_magic("durable_prune", "--olderthan 30d")


def test_a_body_that_does_not_parse_names_its_line_as_a_run_does_and_journals_nothing(
    ip: Any, magics: DurableMagics
) -> None:
    """The SyntaxError said ``File <unknown>:2``: the other tracebacks of a cell's body say ``Cell In[N], line 2``."""
    with pytest.raises(SyntaxError) as raised:
        run(ip, "broken", 'tick("broken")\ny = (\n')
    assert raised.value.filename == ip.compile.cache('tick("broken")\ny = (\n', ip.execution_count)
    assert raised.value.lineno == 2
    assert RAN["broken"] == 0 and magics.store.runs() == []


def test_name_error_message_gives_an_example(ip: Any, magics: DurableMagics) -> None:
    with pytest.raises(UsageError, match="Example: %%durable charge_card"):
        run(ip, "1abc", "x = 1\n")


# ---------------------------------------------------------------- line magics


def test_durable_forget_makes_the_next_run_execute(ip: Any, magics: DurableMagics, capsys: Any) -> None:
    cell = 'tick("g")\nx = 1\n'
    run(ip, "g", cell)
    run(ip, "g --rerun", cell)
    ip.run_line_magic("durable_forget", "g")
    assert "forgot cell 'g' (2 runs)" in capsys.readouterr().out
    assert cell_runs(magics.store, "g") == []
    run(ip, "g", cell)
    assert RAN["g"] == 3
    with pytest.raises(UsageError, match="Example: %durable_forget charge"):
        ip.run_line_magic("durable_forget", "")


def test_forgetting_a_cell_another_kernel_is_running_says_it_is_running(
    ip: Any, magics: DurableMagics, capsys: Any
) -> None:
    """The refusal read "... two recoveries of one run at once would interleave their journal writes. Wait
    for the other one to finish, or stop it first. Let it finish (or stop it), then forget.\""""
    run(ip, "g", 'tick("g")\nx = 1\n')
    [run_id] = [r.run_id for r in cell_runs(magics.store, "g")]
    # the other kernel runs the cell again
    with dnb.LocalRunner(magics.store).context(run_id), pytest.raises(UsageError) as refused:
        ip.run_line_magic("durable_forget", "g")
    message = str(refused.value)
    assert f"run {run_id!r} is running now" in message and "then forget again" in message
    assert "two recoveries" not in message
    assert [r.run_id for r in cell_runs(magics.store, "g")] == [run_id]


def test_a_cell_another_kernel_is_running_says_so_and_that_its_result_will_replay_here(
    ip: Any, magics: DurableMagics
) -> None:
    """Two notebooks in one folder share .durable/journal.db; the second to run the same cell read
    "run '...' is already open by process N on host; two recoveries of one run at once would interleave
    their journal writes", with nothing saying that it is this cell, running in the other kernel."""
    INTERRUPTS.clear()
    ip.user_ns.update(order_id=3, interrupt_once=interrupt_once)
    cell = PAY.replace("print(receipt)", "interrupt_once()\nprint(receipt)")
    with pytest.raises(KeyboardInterrupt):
        run(ip, "pay", cell)
    [rec] = cell_runs(magics.store, "pay")
    with dnb.LocalRunner(magics.store).context(rec.run_id), pytest.raises(dnb.RunBusyError) as refused:
        run(ip, "pay", cell)  # the other kernel is recovering the cell now
    message = str(refused.value)
    assert message.startswith(f"%%durable pay: this cell, with the same code and inputs (run {rec.run_id!r}), "
                              f"is running now in process ")
    assert "Nothing was run here" in message and "replays that result" in message
    assert "two recoveries" not in message and refused.value.run_id == rec.run_id
    assert RAN["charge"] == 1 and RAN["send_receipt"] == 1
    # a RunBusyError the cell's own code raises is the cell's, told as the store tells it
    HELD.append(magics.store)
    ip.user_ns["open_held"] = open_held
    with dnb.LocalRunner(magics.store).context("held"), pytest.raises(dnb.RunBusyError, match="two recoveries"):
        run(ip, "inner", "open_held()\n")


def test_a_rerun_another_kernel_is_running_does_not_say_that_running_it_again_replays(
    ip: Any, magics: DurableMagics
) -> None:
    """Two kernels on one journal ran ``%%durable pay --rerun`` at once: the second was refused with "Once it
    finishes, run this cell again: it replays that result", but that cell (still ``--rerun``) executes again
    as a new attempt, charging once more. The refusal says to drop --rerun to replay the other kernel's run;
    and a journal that is not the default SQLite file is not told as ".durable/journal.db"."""
    ip.user_ns.update(order_id=4)
    run(ip, "pay", PAY)
    [first] = cell_runs(magics.store, "pay")
    other = f"{first.run_id}#2"  # the attempt the other kernel's --rerun took, its number kept, its run held
    magics.store.keep_number(f"{first.run_id}#", 2)
    with dnb.LocalRunner(magics.store).context(other), pytest.raises(dnb.RunBusyError) as refused:
        run(ip, "pay --rerun", PAY)
    message = str(refused.value)
    assert "Nothing was run here" in message and "without --rerun" in message
    assert "run this cell again: it replays" not in message
    assert ("share .durable/journal.db" in message) == isinstance(magics.store, dnb.SqliteStore)
    assert RAN["charge"] == 1


HELD: list[dnb.Store] = []


def open_held() -> None:
    """A cell's own code opening a run that is open elsewhere."""
    with dnb.LocalRunner(HELD.pop()).context("held"):
        pass


def test_durable_store_switches_and_prints_the_store(
    ip: Any, magics: DurableMagics, tmp_path: Path, capsys: Any
) -> None:
    url = f"sqlite:///{tmp_path}/nb.db"
    ip.run_line_magic("durable_store", url)
    assert isinstance(magics.store, dnb.SqliteStore)
    run(ip, "s", "x = 1\n")
    ip.run_line_magic("durable_store", "")
    out = capsys.readouterr().out
    assert "nb.db" in out.splitlines()[-1]
    assert [r.run_id.split(":")[1] for r in dnb.SqliteStore(tmp_path / "nb.db").runs()] == ["s"]


def test_a_cell_after_its_journal_was_deleted_journals_in_a_new_one_at_that_path(
    ip: Any, magics: DurableMagics, tmp_path: Path
) -> None:
    """``rm -rf`` of the journal's folder made every later cell fail with JournalWriteError ("open the store
    again"), and ``%durable_store`` with the same URL returned the same cached store: only a restart helped."""
    folder = tmp_path / "nb"
    url = f"sqlite:///{folder}/nb.db"
    ip.run_line_magic("durable_store", url)
    run(ip, "before", "x = 1\n")
    shutil.rmtree(folder)
    run(ip, "after", "y = 2\n")
    run(ip, f"other --store {url}", "z = 3\n")
    journal = dnb.SqliteStore(folder / "nb.db")
    try:
        assert sorted(r.run_id.split(":")[1] for r in journal.runs()) == ["after", "other"]
    finally:
        journal.close()


def test_durable_journal_shows_the_journal_view(ip: Any, magics: DurableMagics) -> None:
    run(ip, "j", "x = 1\n")
    view = ip.run_line_magic("durable_journal", "")
    assert type(view).__name__ == "JournalView"
    one = ip.run_line_magic("durable_journal", "j")
    assert one.to_pandas()["call_id"].tolist() == ["cell:j"]


def test_durable_journal_falls_back_to_a_dataframe_without_widgets(
    ip: Any, magics: DurableMagics, monkeypatch: pytest.MonkeyPatch
) -> None:
    run(ip, "j", "x = 1\n")
    monkeypatch.setitem(sys.modules, "durable_nb.widgets", None)
    frame = ip.run_line_magic("durable_journal", "")
    assert isinstance(frame, pd.DataFrame) and frame["call_id"].tolist() == ["cell:j"]


def test_store_option_journals_one_cell_elsewhere(ip: Any, magics: DurableMagics, tmp_path: Path) -> None:
    run(ip, f"elsewhere --store sqlite:///{tmp_path}/other.db", "x = 1\n")
    assert magics.store.runs() == []
    assert len(dnb.SqliteStore(tmp_path / "other.db").runs()) == 1


# ---------------------------------------------------------------- --map

MAP_CELL = """\
tick("map")
charge_id = ctx.durable_execute(charge, record["id"], record["amount"])
{"id": record["id"], "charge": charge_id, "run": ctx.run_id}
"""


def test_map_runs_the_cell_once_per_record_and_replays_on_the_second_map(ip: Any, magics: DurableMagics) -> None:
    ip.user_ns["orders"] = pd.DataFrame({"id": [1, 2, 3], "amount": [10, 20, 30]})
    frame = run(ip, "enrich --map orders --key id", MAP_CELL)[0]
    assert frame["status"].tolist() == ["COMPLETED"] * 3
    assert [r["charge"] for r in frame["result"]] == ["ch_1_10", "ch_2_20", "ch_3_30"]
    assert frame["run_id"].tolist() == ["cell:enrich/1#0", "cell:enrich/2#0", "cell:enrich/3#0"]
    assert ip.user_ns["enrich"] is frame
    again = run(ip, "enrich --map orders --key id", MAP_CELL)[0]
    assert RAN["charge"] == 3 and RAN["map"] == 6  # actions ran again, charges replayed
    assert again["result"].tolist() == frame["result"].tolist()


def test_map_usage_errors_come_before_any_run(ip: Any, magics: DurableMagics) -> None:
    ip.user_ns["orders"] = pd.DataFrame({"id": [1, 2], "amount": [10, 20]})
    with pytest.raises(UsageError, match=r"--key nosuch: .*no field 'nosuch' \(its fields: id, amount\)"):
        run(ip, "enrich --map orders --key nosuch", MAP_CELL)
    ip.user_ns["indexed"] = ip.user_ns["orders"].set_index("id")
    with pytest.raises(UsageError, match=r"--key id: map\(key='id'\): 'id' is the DataFrame's index.*reset_index\(\)"):
        run(ip, "enrich --map indexed --key id", MAP_CELL)
    with pytest.raises(UsageError, match="would replace the records it maps"):
        run(ip, "orders --map orders --key id", MAP_CELL)
    ip.user_ns["emails"] = {"a@x", "b@x"}
    with pytest.raises(UsageError, match=r"--map emails: map over a set needs a key.*next"):
        run(ip, "send --map emails", "record.upper()\n")
    assert magics.store.runs() == [] and RAN["map"] == 0
    frame = run(ip, "enrich --map orders --key 'id'", MAP_CELL)[0]  # quoted like --store and --reconciler
    assert frame["run_id"].tolist() == ["cell:enrich/1#0", "cell:enrich/2#0"]


def test_map_without_last_expression_returns_assigned_names(ip: Any, magics: DurableMagics) -> None:
    ip.user_ns["items"] = [2, 3]
    ip.user_ns["factor"] = 10
    frame = run(ip, "scale --map items", "import math\nscaled = record * factor\nroot = math.isqrt(scaled)\n")[0]
    assert frame["result"].tolist() == [{"scaled": 20, "root": 4}, {"scaled": 30, "root": 5}]


def test_map_failure_is_a_failed_row(ip: Any, magics: DurableMagics) -> None:
    ip.user_ns["items"] = [1, 0]
    frame = run(ip, "inv --map items", "1 / record\n")[0]
    assert frame["status"].tolist() == ["COMPLETED", "FAILED"]
    assert "ZeroDivisionError" in frame["error"][1]


def test_map_action_is_picklable_for_flink(ip: Any, magics: DurableMagics) -> None:
    ip.run_cell("def bump(v):\n    return v + 1\n")
    ip.user_ns["items"] = [1]
    run(ip, "p --map items", "bump(record)\n")
    action = CellAction("p", "import math\nbump(record) + math.floor(2.5)\n", {"bump": ip.user_ns["bump"]}, ())
    copy = cloudpickle.loads(cloudpickle.dumps(action))
    assert copy(1, None) == 4


def test_a_map_action_for_flink_warns_when_its_first_record_changes_an_input_in_place(
    ip: Any, magics: DurableMagics
) -> None:
    """In a Flink worker the cell changes a copy: the notebook's ``seen`` never gets the change, so it is named
    (checked on the worker's first record only). Rebinding an input, or reading it, is no such change."""
    seen: list[int] = []
    action = CellAction("m", "seen.append(record)\ntotal = total + record\nlen(limits)\n",
                        {"seen": seen, "total": 0, "limits": [1]}, ("total",), remote=True)
    shipped = cloudpickle.loads(cloudpickle.dumps(action))
    with pytest.warns(dnb.ChangedInputWarning, match=r"cell 'm' changed its input\(s\) 'seen' in place, in a Flink"):
        assert shipped(1, None) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        shipped(2, None)  # not checked again
        local = CellAction("m", "seen.append(record)\n", {"seen": seen}, ())
        local(3, None)  # in the kernel the notebook's own list changes: nothing to say
    assert seen == [3]


def test_map_on_flink_without_pyflink_names_the_extra(
    ip: Any, magics: DurableMagics, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pyflink", None)
    ip.user_ns["items"] = [1]
    with pytest.raises(UsageError, match=r"pip install 'durable_nb\[flink\]'") as raised:
        run(ip, "f --map items --runner flink", "record\n")
    assert str(raised.value).count("pip install") == 1, raised.value  # the hint once, not twice


def test_a_postgres_store_without_psycopg_is_a_usage_error_naming_the_extra(
    ip: Any, magics: DurableMagics, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README: a missing extra is a UsageError from the magics (it was open_store's bare ImportError)."""
    monkeypatch.setitem(sys.modules, "psycopg", None)
    monkeypatch.delitem(sys.modules, "durable_nb.stores.postgres", raising=False)
    url = "postgresql://u:secret@localhost/db"
    with pytest.raises(UsageError, match=r"pip install 'durable_nb\[postgres\]'") as raised:
        ip.run_line_magic("durable_store", url)
    assert "secret" not in str(raised.value)
    with pytest.raises(UsageError, match=r"pip install 'durable_nb\[postgres\]'"):
        run(ip, f"f --store {url}", "x = 1\n")


def test_unload_removes_the_magics(ip: Any) -> None:
    ip.run_line_magic("unload_ext", "durable_nb")
    try:
        assert "durable" not in ip.magics_manager.magics["cell"]
    finally:
        ip.run_line_magic("load_ext", "durable_nb")
    assert "durable" in ip.magics_manager.magics["cell"]


@pytest.mark.flink
@pytest.mark.timeout(180)
def test_map_on_flink_runs_the_cell_as_a_job_and_replays_on_the_local_runner(
    ip: Any, sqlite_store: dnb.SqliteStore
) -> None:
    pytest.importorskip("pyflink")
    m = magics_of(ip)
    assert m is not None
    saved = m._store
    m.store = sqlite_store
    try:
        ip.run_cell("def triple(v):\n    return 3 * v\n")
        ip.user_ns["items"] = [{"id": "a", "v": 2}, {"id": "b", "v": 5}]
        cell = "ctx.durable_execute(triple, record['v'])\n"
        with pytest.raises(UsageError, match=r"concurrency must be an int >= 1 .*got 0"):
            run(ip, "tri --map items --key id --runner flink --concurrency 0", cell)
        assert sqlite_store.runs() == []
        # Two records at once in each worker: the same frame, the same run ids.
        frame = run(ip, "tri --map items --key id --runner flink --concurrency 2", cell)[0]
        assert frame["result"].tolist() == [6, 15] and frame["run_id"].tolist() == ["cell:tri/a#0", "cell:tri/b#0"]
        # same run ids on either runner: the local map replays what the Flink job journaled
        journaled = [(c.run_id, c.finished_at) for c in sqlite_store.query_calls()]
        local = run(ip, "tri --map items --key id", cell)[0]
        assert local["result"].tolist() == [6, 15]
        assert [(c.run_id, c.finished_at) for c in sqlite_store.query_calls()] == journaled  # replayed, not re-run
    finally:
        m._store = saved


def test_a_default_journal_opened_after_a_cd_says_it_is_not_where_durable_nb_was_loaded(
    ip: Any, tmp_path: Path, monkeypatch: Any
) -> None:
    """The default journal is opened under the working directory of the first cell that needs it (DESIGN.md):
    a ``%cd data`` run before that cell puts it in data/, and after a restart the cells before the ``%cd`` would
    open the notebook folder's journal and charge again. Moving it would do that to every notebook that always
    ran ``%cd`` first, so the journal stays and the first cell warns, naming both folders and the pin."""
    nb, data = tmp_path / "nb", tmp_path / "nb" / "data"
    data.mkdir(parents=True)
    before = magics_of(ip)
    saved_home, saved_ns = getattr(before, "_home", None), dict(ip.user_ns)
    ip.user_ns.update(charge=charge, dnb=dnb)
    RAN.clear()
    pay = "x = dnb.current_context().durable_execute(charge, 7, 70)\n"
    try:
        monkeypatch.chdir(nb)  # a kernel started in the notebook's folder
        ip.run_line_magic("unload_ext", "durable_nb")
        ip.run_line_magic("load_ext", "durable_nb")
        monkeypatch.chdir(data)  # %cd data, then the first durable cell
        with pytest.warns(UserWarning, match=r"default journal is .*data/\.durable/journal\.db.*not under .*nb "
                                             r"where durable_nb was loaded.*%durable_store sqlite:///"):
            run(ip, "pay", pay)
        assert (data / ".durable" / "journal.db").exists() and not (nb / ".durable").exists()
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # said once, when the journal is opened
            run(ip, "pay", pay)
        assert RAN["charge"] == 1
        m = magics_of(ip)
        assert m is not None
        m.store.close()
        monkeypatch.chdir(nb)  # loaded and run in one folder: nothing to say
        ip.run_line_magic("unload_ext", "durable_nb")
        ip.run_line_magic("load_ext", "durable_nb")
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            run(ip, "pay", pay)
        assert RAN["charge"] == 2  # a new journal in nb/: the call is new there
    finally:
        m = magics_of(ip)
        assert m is not None
        m.store.close()
        ip.run_line_magic("unload_ext", "durable_nb")
        ip.run_line_magic("load_ext", "durable_nb")
        after = magics_of(ip)
        assert after is not None
        if saved_home is not None:
            after._home = saved_home
        ip.user_ns.clear()
        ip.user_ns.update(saved_ns)


def test_a_relative_store_after_cd_is_the_journal_there_as_after_a_restart(
    ip: Any, magics: DurableMagics, tmp_path: Path, monkeypatch: Any
) -> None:
    """``--store rel.db`` in A, then ``%cd B`` and ``--store rel.db`` again: the second cell journaled in A/rel.db (the
    notebook's stores were keyed by the URL's text), so after a restart in B it found no record and charged again."""
    a, b = tmp_path / "A", tmp_path / "B"
    a.mkdir()
    b.mkdir()
    monkeypatch.chdir(a)
    run(ip, "first --store sqlite:///rel.db", "x = charge(1, 10)\n")
    monkeypatch.chdir(b)
    run(ip, "second --store sqlite:///rel.db", "y = charge(2, 20)\n")
    assert RAN["charge"] == 2
    for opened in magics._opened.values():
        opened.flush()  # what the log holds reaches the file another reader opens
    for folder, name in ((a, "first"), (b, "second")):
        with dnb.SqliteStore(folder / "rel.db", read_only=True) as journal:
            assert [r.run_id for r in journal.runs()] and all(name in r.run_id for r in journal.runs()), folder
    magics._opened.clear()  # a restart, in B
    restart(ip, "y")
    run(ip, "second --store sqlite:///rel.db", "y = charge(2, 20)\n")
    assert RAN["charge"] == 2  # replayed from B/rel.db


@pytest.mark.parametrize("url, relative", [
    ("date=2024-01-01.db", True), ("runs:v2.db", True), ("sqlite:///rel.db", True), ("sqlite:rel.db", True),
    ("file:rel.db", True), ("SQLITE:///rel.db", True), ("sqlite:/abs.db", False), ("sqlite:////abs.db", False),
    ("file:///abs.db", False), ("/abs.db", False), ("~/j.db", False), ("host=x dbname=y", False),
    ("memory://n", False), ("postgresql://u@h/db", False),
])
def test_a_store_is_keyed_with_the_working_directory_exactly_when_open_store_reads_a_relative_file(
    url: str, relative: bool, tmp_path: Path, monkeypatch: Any
) -> None:
    """A file path with '=' or ':' (``date=2024-01-01.db``, a Hive-style name) is a relative journal for open_store,
    but was keyed as a DSN or a URL by its text: after ``%cd`` the cell journaled in the first folder's file."""
    from durable_nb.notebook.magics import _cache_key

    monkeypatch.chdir(tmp_path)
    first = _cache_key(url)
    (tmp_path / "B").mkdir()
    monkeypatch.chdir(tmp_path / "B")
    assert (first != _cache_key(url)) is relative


def test_a_cells_attempts_are_only_its_own_numbered_runs() -> None:
    """Every run id starting with the cell's base is read: forks of an attempt and ids made by hand
    (``#02``, ``#²``, ``#1``) are no attempts, and none of them breaks the lookup."""
    from durable_nb.notebook.runids import latest_attempt, new_attempt

    store = dnb.MemoryStore()
    base = "cell:g:0123456789abcdef"
    assert latest_attempt(store, base) is None
    for suffix in ("#3", "#3.fork-1", "#02", "#\u00b2", "#1", "#7x", "0", ".fork-1", "#"):
        dnb.LocalRunner(store).run(lambda v, ctx: ctx.durable_execute(str, v), 1, run_id=base + suffix)
    assert latest_attempt(store, base) == f"{base}#3"
    assert new_attempt(store, base) == f"{base}#4"


def test_a_first_attempt_kept_with_many_later_ones_pruned_replays_the_newest(ip: Any, magics: DurableMagics) -> None:
    """A prune that keeps the first attempt (``--status COMPLETED`` after it FAILED) and the newest of eleven
    removes nine in between: the cell must replay the newest, and a ``--rerun`` must come after it (it took
    ``#2``, and the next run replayed ``#11`` again, not the rerun just made)."""
    cell = 'tick("g")\nx = __import__("time").perf_counter_ns()\n'
    run(ip, "g", cell)
    for _ in range(10):
        run(ip, "g --rerun", cell)
    newest = ip.user_ns["x"]
    runs = sorted(cell_runs(magics.store, "g"), key=lambda r: r.created_at)
    for middle in runs[1:-1]:
        magics.store.delete_run(middle.run_id)
    run(ip, "g", cell)
    assert RAN["g"] == 11 and ip.user_ns["x"] == newest  # replayed #11, the newest
    run(ip, "g --rerun", cell)
    rerun = ip.user_ns["x"]
    assert RAN["g"] == 12 and rerun != newest
    run(ip, "g", cell)
    assert RAN["g"] == 12 and ip.user_ns["x"] == rerun  # replays the rerun just made
    assert sorted(r.run_id.rsplit("#", 1)[-1] for r in cell_runs(magics.store, "g") if "#" in r.run_id) == ["11", "12"]
