"""Widgets on one journal stay in step: a write from one redraws the others."""

from __future__ import annotations

import html
import re

import pytest
from test_widgets_stepper import crashed, place_order

import durable_nb as dnb


def text(value: str) -> str:
    value = re.sub(r"<style>.*?</style>", "", value, flags=re.S)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", value)).split())


@pytest.fixture(autouse=True)
def _reset() -> None:
    import test_widgets_stepper

    test_widgets_stepper.ran.clear()


def test_a_step_that_settles_a_call_removes_it_from_the_reconcile_panel(store):
    crashed(store)
    panel = dnb.ReconcilePanel(store)
    view = dnb.JournalView(store)
    assert "1 PENDING call" in text(panel.header.value)
    stepper = dnb.ReplayStepper(store, "order-1", place_order, 1, journal_view=False)
    stepper.step_button.click()
    stepper.step_button.click()  # the reconciler settles charge_card
    assert store.call("order-1", 1).origin is dnb.Origin.RECONCILED
    assert panel.rows == [] and "0 PENDING calls" in text(panel.header.value)
    assert "RECONCILED" in text(view.table.value)


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_a_reconcile_in_the_panel_redraws_a_journal_view_opened_on_the_same_journal(tmp_path, request, kind):
    def opened() -> dnb.Store:  # another store object on the same journal each time
        if kind == "postgres":
            return dnb.PostgresStore(request.getfixturevalue("pg_dsn"))
        return dnb.SqliteStore(tmp_path / "j.db")

    store = opened()
    crashed(store)
    view = dnb.JournalView(opened())
    assert "PENDING" in text(view.table.value)
    panel = dnb.ReconcilePanel(store, reconcilers={"charge_card": lambda: "ch_by_hand"})
    panel.row("order-1", 1).reconcile_button.click()
    assert "'ch_by_hand'" in text(view.table.value)


def test_a_widget_that_cannot_read_the_journal_does_not_fail_another_widgets_write(store, monkeypatch):
    def approve(_, ctx):
        return ctx.durable_input("Refund?", choices=["yes", "no"])

    with pytest.raises(dnb.AwaitingInput):
        dnb.LocalRunner(store).run(approve, None, run_id="ask")
    panel = dnb.ReconcilePanel(store)
    prompt = panel.input("ask", 0)
    other = dnb.ReconcilePanel(store)
    other_prompt = other.input("ask", 0)
    real_call = store.call

    def lost(*args, **kwargs):
        raise dnb.JournalUnavailableError("db", "read", None, "the server went away", "")

    monkeypatch.setattr(other, "store", type("Lost", (), {"journal_key": store.journal_key, "count_calls": lost,
                                                          "call": lost})())
    monkeypatch.setattr(other_prompt, "store", other.store)
    assert prompt.answer("yes")  # the answer is journaled and said, whatever the other panel's journal does
    assert "answered" in text(prompt.message.value)
    assert "could not read the journal" in text(other_prompt.message.value)
    assert real_call("ask", 0).origin is dnb.Origin.RESOLVED
