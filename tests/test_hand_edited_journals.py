"""Journals edited by hand or damaged row by row: a value durable_nb never writes is a JournalFormatError
naming the row and the fix, never a bare ValueError, and a run whose calls are renumbered is not replayed.

Replay pairs the action's calls with the journal's by position, so a run whose indices are not 0, 1, 2...
would match the wrong records: a good record discarded and its side effect executed again. Every test runs
on a SQLite file and on a real PostgreSQL database (edited with sqlite3 / psycopg, as a person would).
"""

from __future__ import annotations

import pickle
import re
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import durable_nb as dnb
from durable_nb.journal.records import Outcome

pytestmark = pytest.mark.timeout(120)


class Journal:
    """Run 'r' (two calls, both journaled) in a fresh journal of one kind, then edits applied by hand."""

    def __init__(self, kind: str, place: Path | str) -> None:
        self.kind, self.place = kind, place
        self.ran: list[str] = []
        store = self.open()
        dnb.LocalRunner(store).run(action(self.ran), "o", run_id="r")
        store.close()
        self.ran.clear()

    def open(self) -> dnb.Store:
        return dnb.SqliteStore(self.place) if self.kind == "sqlite" else dnb.PostgresStore(str(self.place))

    def sql(self, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        if self.kind == "sqlite":
            conn = sqlite3.connect(self.place, isolation_level=None)
            try:
                return conn.execute(statement, params).fetchall()
            finally:
                conn.close()
        import psycopg

        with psycopg.connect(str(self.place), autocommit=True) as conn:
            cur = conn.execute(statement.replace("?", "%s"), params)
            return cur.fetchall() if cur.description else []

    def snapshot(self) -> Any:
        """What the journal holds, to prove an operation wrote nothing."""
        if self.kind == "sqlite":
            return Path(self.place).read_bytes()
        return (self.sql("SELECT * FROM runs ORDER BY run_id"), self.sql("SELECT * FROM calls ORDER BY seq"),
                self.sql("SELECT * FROM discarded ORDER BY seq"))


@pytest.fixture(params=["sqlite", "postgres"])
def made(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[..., Journal]:
    """``made(*edits)``: a :class:`Journal` on SQLite or PostgreSQL with ``edits`` applied."""
    place = tmp_path / "j.db" if request.param == "sqlite" else request.getfixturevalue("pg_dsn")

    def make(*edits: str) -> Journal:
        j = Journal(request.param, place)
        for edit in edits:
            j.sql(edit)
        return j

    return make


def journal(tmp_path: Path, *edits: str) -> tuple[Path, list[str]]:
    """A SQLite journal with run 'r', then ``edits`` applied with plain sqlite3 (file-level tests)."""
    j = Journal("sqlite", tmp_path / "j.db")
    for edit in edits:
        j.sql(edit)
    return tmp_path / "j.db", j.ran


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
def test_a_call_with_a_status_or_origin_no_one_writes_names_the_row_and_releases_the_run(made, edit, match):
    j = made(edit)
    before = j.snapshot()
    store, other = j.open(), j.open()  # other: another kernel on the same journal
    try:
        for read in (lambda: store.calls("r"), lambda: store.call("r", int(edit[-1])), store.to_pandas):
            with pytest.raises(dnb.JournalFormatError, match=match):
                read()
        for s in (store, store, other):  # refused again for the same reason, not RunBusyError (lease kept)
            with pytest.raises(dnb.JournalFormatError, match=match):
                dnb.LocalRunner(s).run(action(j.ran), "o", run_id="r")
        assert not other.run_is_open("r")
    finally:
        store.close()
        other.close()
    assert j.ran == []
    assert j.snapshot() == before


def test_the_update_the_error_names_makes_the_run_replay_again(made):
    j = made("UPDATE calls SET origin = 'MAGIC' WHERE idx = 1")
    store = j.open()
    try:
        with pytest.raises(dnb.JournalFormatError) as info:
            store.calls("r")
        fix = re.search(r"UPDATE calls SET .* AND idx = 1", str(info.value))
        assert fix is not None
        j.sql(fix.group())
        assert dnb.LocalRunner(store).run(action(j.ran), "o", run_id="r") == "charged o1"
    finally:
        store.close()
    assert j.ran == []


def test_a_run_taken_over_from_a_dead_owner_with_a_bad_row_is_left_as_it_was(made):
    j = made("UPDATE runs SET owner = 'host:1:1.0:1'", "UPDATE calls SET status = 'DONE' WHERE idx = 1")
    before = j.snapshot()
    store = j.open()
    try:
        with pytest.raises(dnb.JournalFormatError, match=r"call 1 of run 'r' has status 'DONE'"):
            dnb.LocalRunner(store).run(action(j.ran), "o", run_id="r")
        assert not store.run_is_open("r")
    finally:
        store.close()
    assert j.snapshot() == before, "the take-over (attempts + 1, owner) was undone with the refusal"


def test_a_run_with_a_status_no_one_writes_names_the_row(made):
    j = made("UPDATE runs SET status = 'WEIRD'", "UPDATE discarded SET status = 'X'")
    store = j.open()
    try:
        for read in (store.runs, lambda: store.run("r")):
            with pytest.raises(dnb.JournalFormatError, match=r"run 'r' has status 'WEIRD'.*SET status = 'FAILED'"):
                read()
        for _ in range(2):  # refused at open (a replay overwrote it), and the run released: not RunBusyError
            with pytest.raises(dnb.JournalFormatError, match=r"run 'r' has status 'WEIRD'"):
                dnb.LocalRunner(store).run(action(j.ran), "o", run_id="r")
    finally:
        store.close()


def test_a_discarded_call_with_a_status_no_one_writes_names_the_row(made):
    j = made()
    j.sql("INSERT INTO discarded (run_id, idx, call_id, args_digest, status, origin, started_at, discarded_at, "
          "reason) VALUES ('r', 1, 'charge', 'd', 'GONE', NULL, 1.0, 2.0, 'hand')")
    store = j.open()
    try:
        with pytest.raises(dnb.JournalFormatError, match=r"discarded call 1 of run 'r' has status 'GONE'.*"
                                                         r"UPDATE discarded SET status = 'PENDING'"):
            store.discarded("r")
    finally:
        store.close()


@pytest.mark.parametrize("edit", [
    "UPDATE calls SET idx = -1 WHERE idx = 1",  # negative: sorted first, so call 0 met call 1's record
    "UPDATE calls SET idx = 7 WHERE idx = 1",  # a gap: call 1 replayed the record of call 7
])
def test_a_run_whose_calls_were_renumbered_is_refused_not_replayed_by_position(made, edit):
    j = made(edit)
    before = j.snapshot()
    store = j.open()
    try:
        for _ in range(2):  # not RunBusyError the second time: the run was released
            with pytest.raises(dnb.JournalFormatError, match=r"run 'r' has its calls at indices .* instead of 0 to 1"):
                dnb.LocalRunner(store).run(action(j.ran), "o", run_id="r")
        assert len(store.calls("r")) == 2, "viewing still shows the run as it is"
        assert store.discarded("r") == []
    finally:
        store.close()
    assert j.ran == [], "no journaled side effect ran again"
    assert j.snapshot() == before


def test_a_dry_run_of_a_renumbered_run_is_refused_as_the_real_run_is(made):
    """The dry run read the calls as they are and paired them by position: 'call 0 replays, then call 1
    would mismatch', where the real run refuses the journal (and a recovery would execute the calls again)."""
    j = made("UPDATE calls SET idx = 7 WHERE idx = 1")
    store = j.open()
    try:
        with pytest.raises(dnb.JournalFormatError, match=r"run 'r' has its calls at indices 0, 7 instead of 0 to 1"):
            dnb.LocalRunner(store).dry_run(action(j.ran), "o", run_id="r")
    finally:
        store.close()
    assert j.ran == []


# ---------------------------------------------------------------- payloads that are no outcome


@pytest.mark.parametrize(("assign", "value", "index", "what"), [
    ("payload = ?", b"\xde\xad\xbe\xef", 0, r"its payload \(4 bytes, starting b'\\xde.*not a pickle \(at position 0"),
    ("payload = ?", b"charged o0", 1, r"its payload \(10 bytes, starting b'charged o0'\) is not a pickle"),
    ("payload = ?", b"", 0, r"its payload is empty \(0 bytes\), not a pickle"),
    # a torn copy: a pickle cut short
    ("payload = ?", pickle.dumps("charged o1")[:-3], 1, r"its payload \(22 bytes, starting b'\\x80.*is not a pickle"),
    ("payload = NULL", None, 0, r"it is SUCCEEDED, but the journal holds no payload for it"),
    ("status = 'FAILED', payload = ?", pickle.dumps("declined"), 1,
     r"it FAILED, but its payload holds a str \('declined'\), not an exception"),
    ("status = 'FAILED', payload = NULL", None, 1, r"it is FAILED, but the journal holds no payload for it"),
])
def test_a_payload_that_is_no_outcome_is_named_as_damage_not_blamed_on_a_class(made, assign, value, index, what):
    j = made()
    j.sql(f"UPDATE calls SET {assign} WHERE idx = {index}", () if value is None else (value,))
    before = j.snapshot()
    match = (rf"cannot load the recorded outcome of call {index} \('charge'\) of run 'r': {what}.*edited by "
             rf"hand or damaged.*Restore it from a backup, or fork the run before this call "
             rf"\(store\.fork\('r', at={index}\)\)")
    store = j.open()
    try:
        record = store.calls("r")[index]
        with pytest.raises(dnb.RecordDecodeError, match=match) as read:  # was a bare UnpicklingError, an assert
            record.result() if record.status is dnb.Status.SUCCEEDED else record.error()
        for _ in range(2):  # and the run stays free: refused again the same way, not RunBusyError
            with pytest.raises(dnb.RecordDecodeError, match=match) as replayed:
                dnb.LocalRunner(store).run(action(j.ran), "o", run_id="r")
    finally:
        store.close()
    for err in (read.value, replayed.value, pickle.loads(pickle.dumps(replayed.value))):
        assert (err.run_id, err.index, err.damage, err.class_name) == ("r", index, True, None)
        assert "loading code" not in str(err) and "importable" not in str(err) and "without its payload" not in str(err)
    assert j.ran == [], "nothing ran again"
    assert j.snapshot() == before


def test_widgets_open_on_a_row_no_one_writes_show_it_escaped_and_refuse_only_its_run(made):
    j = made("UPDATE calls SET status = '<b>BOGUS</b>' WHERE run_id = 'r' AND idx = 1")
    store = j.open()
    try:
        for rid in ("p1", "p2"):  # two calls in flight; then p1's PENDING row gets an origin typed in
            with pytest.raises(dnb.SimulatedCrash), dnb.inject_crash(call="charge", point="after_call"):
                dnb.LocalRunner(store).run(action(j.ran), "o", run_id=rid)
        j.sql("UPDATE calls SET origin = '<i>MAGIC</i>' WHERE run_id = 'p1'")
        j.ran.clear()
        panel = dnb.ReconcilePanel(store, reconcilers={"charge": lambda: "found"})
        assert [r.record.run_id for r in panel.rows] == ["p2"]
        bad = "".join(w.value for w in panel._unreadable)
        assert "run 'p1' has origin '&lt;i&gt;MAGIC" in bad.replace("&#x27;", "'") and "<i>" not in bad
        assert panel.reconcile(panel.row("p2", 0))  # the other run's call is still settled from the panel
        panel.close()

        stepper = dnb.ReplayStepper(store, "r", action(j.ran), "o")
        row = re.search(r'<tr class="[^"]*dnb-unreadable[^"]*" data-index="1">.*?</tr>', stepper.plan_table.value)
        assert row is not None and "&lt;b&gt;BOGUS" in row.group() and "<b>BOGUS" not in stepper.plan_table.value
        stepper.step()
        assert "JournalFormatError" in stepper.message.value and j.ran == []  # the run itself is refused
        assert stepper.journal_view is not None
        assert "dnb-unreadable-row" in stepper.journal_view.table.value
        assert [r.index for r in stepper.journal_view.records] == [0]
        stepper.close()
    finally:
        store.close()


HAND_TYPED_ID = ("UPDATE runs SET run_id = CAST(X'72ff' AS TEXT)", "UPDATE calls SET run_id = CAST(X'72ff' AS TEXT)")


def test_a_run_id_hand_typed_as_text_that_is_not_utf8_is_read_and_refused_not_run_again(tmp_path):
    # store.runs() read the id leniently as 'r\udcff', but that str binds as the BLOB 72 ed b3 bf: every read of
    # the run found nothing, and runner.run / a stepper's Run to end executed every call again in a second run.
    path, ran = journal(tmp_path, *HAND_TYPED_ID)
    store = dnb.SqliteStore(path)
    try:
        (rid,) = [r.run_id for r in store.runs()]
        assert rid == "r\udcff"
        assert store.run(rid).n_calls == 2 and len(store.calls(rid)) == 2 and store.call(rid, 1) is not None
        assert len(store.query_calls(run_id=rid)) == store.count_calls(run_id=rid) == 2
        before = path.read_bytes()
        with pytest.raises(dnb.JournalFormatError, match=r"run 'r\\udcff' has an id typed in as TEXT.*72 ff") as info:
            dnb.LocalRunner(store).run(action(ran), "o", run_id=rid)
        with pytest.raises(dnb.JournalFormatError, match="typed in as TEXT"):
            store.fork(rid, at=1)
        outcome = Outcome(dnb.Status.SUCCEEDED, pickle.dumps("x"), result_preview="'x'")
        with pytest.raises(dnb.JournalFormatError, match="typed in as TEXT"):  # the ReconcilePanel's write
            store.complete_call(rid, 1, outcome, origin=dnb.Origin.RESOLVED, finished_at=0.0, only_if_pending=True)
        assert ran == [] and [r.run_id for r in store.runs()] == [rid] and path.read_bytes() == before
        assert not store.run_is_open(rid)
        fix = re.search(r'sqlite3 \S+ "(UPDATE .*)"', str(info.value))
        assert fix is not None
        conn = sqlite3.connect(path)
        conn.executescript(fix.group(1))
        conn.close()
        assert dnb.LocalRunner(store).run(action(ran), "o", run_id=rid) == "charged o1"  # the same id, replayed
        assert ran == [] and [r.run_id for r in store.runs()] == [rid]
    finally:
        store.close()


@pytest.mark.parametrize(("run_id", "raw"), [
    ("r\udcff", b"r\xff"), ("\udcc3\udca9", None), ("r\ud800", None), ("r\udcff\ud800", None), ("café", None),
])
def test_only_ids_a_lenient_read_can_give_are_taken_for_hand_typed_text(run_id, raw):
    from durable_nb.stores.sqlite_text import hand_typed  # here: the module's other tests run without it

    assert hand_typed(run_id) == raw  # '\udcc3\udca9' is b'\xc3\xa9', read as 'é': never a lenient read


def _suggested_command(error: BaseException) -> str:
    """The shell command a JournalFormatError of a SQLite journal tells the user to paste."""
    found = re.search(r"correct it with sqlite3: (sqlite3 .*)\.$", str(error), re.S)
    assert found is not None, str(error)
    return found.group(1)


HOSTILE_ID = "q'\"$(touch PWNED)`touch PWNED2`!x"


@pytest.mark.parametrize("idx", ["'1; DROP TABLE runs; --'", "1"])
def test_the_pasted_fix_of_a_hostile_row_runs_that_update_and_nothing_else(tmp_path, idx):
    # The fix quoted the row's values as they were: an index typed in as text made it `... AND idx = 1; DROP TABLE
    # runs; --`, and the shell command `sqlite3 PATH "..."` ran the $(...) and `...` of a run id chosen by the
    # journal's sender in the shell of the person fixing the file.
    folder = tmp_path / "my $HOME dir"
    folder.mkdir()
    path = folder / "j.db"
    ran: list[str] = []
    with dnb.SqliteStore(path) as store:
        dnb.LocalRunner(store).run(action(ran), "o", run_id=HOSTILE_ID)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(f"UPDATE calls SET status = 'DONE', idx = {idx} WHERE idx = 1")
    conn.close()
    with dnb.SqliteStore(path) as store, pytest.raises(dnb.JournalFormatError) as info:
        store.calls(HOSTILE_ID)
    import subprocess

    subprocess.run(["bash", "-c", _suggested_command(info.value)], cwd=tmp_path, check=True, timeout=60)
    assert not (tmp_path / "PWNED").exists() and not (tmp_path / "PWNED2").exists()
    with dnb.SqliteStore(path) as store:
        assert [r.run_id for r in store.runs()] == [HOSTILE_ID]  # the runs table is still there
        assert [c.status for c in store.calls(HOSTILE_ID)] == [dnb.Status.SUCCEEDED, dnb.Status.PENDING]


def test_the_fix_of_a_bad_row_of_a_run_id_kept_as_a_blob_matches_that_row(tmp_path):
    # A run id that is not UTF-8 (a file name's bytes) is kept as a BLOB; the fix said run_id = 'b''r\xed...''',
    # which matches no row.
    rid, path, ran = "r\udcff", tmp_path / "j.db", []
    with dnb.SqliteStore(path) as store:
        dnb.LocalRunner(store).run(action(ran), "o", run_id=rid)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("UPDATE calls SET status = 'DONE' WHERE idx = 1")
    conn.close()
    with dnb.SqliteStore(path) as store:
        with pytest.raises(dnb.JournalFormatError) as info:
            store.calls(rid)
        import subprocess

        subprocess.run(["bash", "-c", _suggested_command(info.value)], check=True, timeout=60)
        assert [c.status for c in store.calls(rid)] == [dnb.Status.SUCCEEDED, dnb.Status.PENDING]
