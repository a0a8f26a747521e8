"""A journal handed over by someone else: looking at it must not run the code its pickles hold.

The journal is made with the public API (results, errors, an answered ``durable_input``, a fork,
a ``%%durable`` cell's outputs, a crashed call), then every payload is replaced with sqlite3 by a
pickle whose loading creates a marker file. Every path a person uses just to look (listing, pandas,
widgets and their HTML, the line magics, pruning, forking, a read-only open) must leave no marker;
``record.result()`` and a replay are the explicit, trusted loads and do create it (which proves the
payloads are hostile).
"""

from __future__ import annotations

import os
import pickle
import sqlite3
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ipywidgets as W
import pytest
from shell_harness import run

import durable_nb as dnb

pytestmark = pytest.mark.timeout(120)


@dnb.durable(name="charge")
def charge(order: int) -> int:
    return order * 10


@dnb.durable(name="refuse")
def refuse(order: int) -> None:
    raise ValueError(f"card declined for {order}")


def place(order: int, ctx: dnb.RunnerContext) -> int:
    amount = ctx.durable_execute(charge, order)
    try:
        ctx.durable_execute(refuse, order)
    except ValueError:
        pass
    return amount


def approve(order: int, ctx: dnb.RunnerContext) -> Any:
    ctx.durable_execute(charge, order)
    return ctx.durable_input("Refund?", choices=["yes", "no"])


class _Marker:
    """Loading it runs ``os.system``-like code: here it only creates ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.path,))


@pytest.fixture
def hostile(tmp_path: Path, ip: Any) -> Iterator[tuple[Path, Path]]:
    """``(journal, marker)``: a journal of every kind of record, each payload a pickle that creates ``marker``."""
    path, marker = tmp_path / "journal.db", tmp_path / "unpickled"
    store = dnb.SqliteStore(path)
    runner = dnb.LocalRunner(store)
    runner.run(place, 1, run_id="order-1")
    for run_id in ("approve-1", "approve-2"):
        with pytest.raises(dnb.AwaitingInput):
            runner.run(approve, 2, run_id=run_id)
    store.answer("approve-1", 1, "yes")
    with dnb.inject_crash(call="charge", point="after_call"), pytest.raises(dnb.SimulatedCrash):
        runner.run(place, 3, run_id="crashed")
    runner.fork("order-1", at=1, new_run_id="order-1-fork")
    magics = ip.find_cell_magic("durable").__self__
    saved = magics._store
    try:
        ip.run_line_magic("durable_store", str(path))
        ip.user_ns["x"] = 5
        run(ip, "cellname", "y = x + 1\nprint('hello', y)")
        store.close()
        conn = sqlite3.connect(path)
        with conn:
            conn.execute("UPDATE calls SET payload = ?", (pickle.dumps(_Marker(marker)),))
        conn.close()
        assert not marker.exists()
        yield path, marker
    finally:
        magics._store = saved
        ip.user_ns.pop("x", None)
        ip.user_ns.pop("y", None)


def _html_of(widget: W.Widget) -> str:
    """Every string value a widget tree holds (what the browser would receive)."""
    out = [widget.value] if isinstance(getattr(widget, "value", None), str) else []
    for child in getattr(widget, "children", ()):
        if isinstance(child, W.Widget):
            out.append(_html_of(child))
    return "\n".join(out)


@pytest.mark.parametrize("read_only", [False, True])
def test_listing_pandas_and_pruning_a_hostile_journal_unpickle_nothing(hostile, read_only):
    path, marker = hostile
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        store = dnb.SqliteStore(path, read_only=read_only)
    try:
        runs = store.runs()
        assert {r.run_id for r in runs} >= {"order-1", "approve-1", "crashed", "order-1-fork"}
        repr(store), repr(runs)
        for r in runs:
            calls = store.calls(r.run_id)
            repr(calls), [str(c) for c in calls], store.call(r.run_id, 0), store.run(r.run_id)
        store.to_pandas(), store.to_pandas(run_id="order-1"), store.pending(), store.waiting()
        store.discarded(), store.query_calls(), store.run_ids_with_prefix("order")
        store.runs_with_prefix("order"), store.runs_with_prefix("cell:")
        store.prune(keep_last=0, include_pending=True, dry_run=True)
        if not read_only:
            store.fork("cell:" + store.run_ids_with_prefix("cell:cellname:")[0][5:], at=1)
            store.answer("approve-2", 1, "no")
            store.prune(keep_last=0, include_pending=True)
            assert store.runs() == []
    finally:
        store.close()
    assert not marker.exists()


def test_the_widgets_of_a_hostile_journal_unpickle_nothing(hostile):
    from durable_nb.widgets import JournalView, ReconcilePanel, ReplayStepper

    path, marker = hostile
    store = dnb.SqliteStore(path)
    try:
        view = JournalView(store)
        for i in range(len(view.records)):  # a person selects each call: its detail is drawn
            view.selector.value = i
        view.fork.button.click()
        html = _html_of(view) + repr(view.to_pandas())
        panel = ReconcilePanel(store)
        assert panel.rows
        panel.input("approve-2", 1).answer_button.click()
        stepper = ReplayStepper(store, "order-1", place, 1)
        html += _html_of(panel) + _html_of(stepper)
        assert "order-1" in html
        stepper.close(), panel.close(), view.close()
    finally:
        store.close()
    assert not marker.exists()


def test_the_line_magics_on_a_hostile_journal_unpickle_nothing(hostile, ip):
    path, marker = hostile
    ip.run_line_magic("durable_store", str(path))
    ip.run_line_magic("durable_journal", "")
    ip.run_line_magic("durable_prune", "--keep-last 0 --include-pending --dry-run")
    ip.run_line_magic("durable_fork", "cellname --at 1")
    run(ip, "cellname --dry", "y = x + 1\nprint('hello', y)")  # finished: "replays as a whole", loads nothing
    ip.run_line_magic("durable_prune", "--keep-last 0 --include-pending")
    assert not marker.exists()


def test_result_and_a_replay_are_the_trusted_loads_that_do_run_it(hostile):
    path, marker = hostile
    store = dnb.SqliteStore(path)
    try:
        store.calls("order-1")[0].result()
        assert marker.exists()
        os.remove(marker)
        with pytest.raises(Exception):  # noqa: B017 - what the hostile payload gives back is no outcome
            dnb.LocalRunner(store).run(place, 1, run_id="order-1")
        assert marker.exists()
    finally:
        store.close()


def test_an_owner_written_into_the_journal_is_shown_escaped_and_cut():
    """A run's owner is journal text: its host went into RunBusyError and busy map rows as written, so
    ANSI escapes in it cleared or recoloured the terminal of whoever ran the map, at any length."""
    from durable_nb.journal.lease import describe_owner

    shown = describe_owner("\x1b[2J\x1b[31mevil" + "x" * 5000 + ":123:0:1")
    assert shown.startswith("process 123 on \\x1b[2J\\x1b[31mevil") and shown.endswith("...")
    assert "\x1b" not in shown and len(shown) < 300
    assert describe_owner("host-a:123:0:1") == "process 123 on host-a"  # what durable_nb writes reads as before
    assert "\x07" not in describe_owner("\x07not an owner") and describe_owner(None) == "another process"
