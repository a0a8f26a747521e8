"""Journals edited by hand or damaged row by row: a value durable_nb never writes is a JournalFormatError
naming the row and the fix, never a bare ValueError, and a run whose calls are renumbered is not replayed.

Replay pairs the action's calls with the journal's by position, so a run whose indices are not 0, 1, 2...
would match the wrong records: a good record discarded and its side effect executed again.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

import durable_nb as dnb


def journal(tmp_path: Path, *edits: str) -> tuple[Path, list[str]]:
    """A journal with run 'r' (two calls, both journaled), then ``edits`` applied with plain sqlite3."""
    path = tmp_path / "j.db"
    ran: list[str] = []
    store = dnb.SqliteStore(path)
    dnb.LocalRunner(store).run(action(ran), "o", run_id="r")
    store.close()
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        for edit in edits:
            conn.execute(edit)
    finally:
        conn.close()
    ran.clear()
    return path, ran


def action(ran: list[str]):
    def charge(order: str, step: int) -> str:
        ran.append(f"{order}{step}")
        return f"charged {order}{step}"

    charge = dnb.durable(name="charge")(charge)

    def place(order: str, ctx: dnb.RunnerContext) -> str:
        ctx.durable_execute(charge, order, 0)
        return ctx.durable_execute(charge, order, 1)

    return place


@pytest.mark.parametrize(("edit", "match"), [
    ("UPDATE calls SET status = 'DONE' WHERE idx = 0",
     r"call 0 of run 'r' has status 'DONE'.*UPDATE calls SET status = 'PENDING' WHERE run_id = 'r' AND idx = 0"),
    ("UPDATE calls SET origin = 'MAGIC' WHERE idx = 1", r"call 1 of run 'r' has origin 'MAGIC'.*SET origin = NULL"),
])
def test_a_call_with_a_status_or_origin_no_one_writes_names_the_row_and_releases_the_run(tmp_path, edit, match):
    path, ran = journal(tmp_path, edit)
    before = path.read_bytes()
    store = dnb.SqliteStore(path)
    try:
        for read in (lambda: store.calls("r"), store.to_pandas):
            with pytest.raises(dnb.JournalFormatError, match=match):
                read()
        for _ in range(2):  # the second attempt is refused for the same reason, not RunBusyError (lease kept)
            with pytest.raises(dnb.JournalFormatError, match=match):
                dnb.LocalRunner(store).run(action(ran), "o", run_id="r")
    finally:
        store.close()
    assert ran == []
    assert path.read_bytes() == before


def test_a_run_with_a_status_no_one_writes_names_the_row(tmp_path):
    path, _ = journal(tmp_path, "UPDATE runs SET status = 'WEIRD'")
    store = dnb.SqliteStore(path)
    try:
        with pytest.raises(dnb.JournalFormatError, match=r"run 'r' has status 'WEIRD'.*SET status = 'FAILED'"):
            store.runs()
    finally:
        store.close()


@pytest.mark.parametrize("edit", [
    "UPDATE calls SET idx = -1 WHERE idx = 1",  # negative: sorted first, so call 0 met call 1's record
    "UPDATE calls SET idx = 7 WHERE idx = 1",  # a gap
])
def test_a_run_whose_calls_were_renumbered_is_refused_not_replayed_by_position(tmp_path, edit):
    path, ran = journal(tmp_path, edit)
    store = dnb.SqliteStore(path)
    try:
        with pytest.raises(dnb.JournalFormatError, match=r"run 'r' has its calls at indices .* instead of 0 to 1"):
            dnb.LocalRunner(store).run(action(ran), "o", run_id="r")
        assert len(store.calls("r")) == 2, "viewing still shows the run as it is"
    finally:
        store.close()
    assert ran == [], "no journaled side effect ran again"
    assert store.discarded("r") == []
