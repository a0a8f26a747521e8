"""SIGKILL while SQLite lags the intent log: what was acknowledged is only in the log, and nothing is lost.

Under ``"call"`` a SqliteStore makes a commit durable by appending it to its
process's intent log; SQLite is written a few milliseconds later. These children
run with ``--apply-delay 600``, so SQLite is never written from the log before the
kill: the journal file alone holds at most the first commit. The next process
that reads or opens the run must apply the dead log first (exactly once), a process
that had the journal open before the kill too, and a steal from a live process
must apply the victim's log and stop the victim before its next side effect.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import child as child_mod  # child.py beside this file
import pytest
from checks import CALLS, EXPECTED, SPECIAL, assert_recovered, assert_recovered_by_child, integrity, ledger_counts

import durable_nb as dnb
from durable_nb.journal.context import open_run

pytestmark = pytest.mark.kill

CHILD = Path(__file__).with_name("child.py")
RUN = "order-9"
LAG = ("--apply-delay", "600")


def command(db: Path, ledger: Path, *extra: str) -> list[str]:
    return [sys.executable, str(CHILD), "--db", str(db), "--ledger", str(ledger), "--run", RUN,
            "--calls", str(CALLS), "--special", str(SPECIAL), *extra]


def logs(db: Path) -> list[Path]:
    return sorted(db.parent.glob(f"{db.name}-log.*"))


def raw_calls(db: Path) -> int:
    """Calls of the run in the journal file itself, read without durable_nb (no log applied)."""
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute("SELECT count(*) FROM calls WHERE run_id = ?", (RUN,)).fetchone()[0])
    finally:
        conn.close()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("point", list(EXPECTED))
def test_a_kill_with_every_transition_still_in_the_log_loses_none_and_recovers_exactly_once(
    tmp_path: Path, point: str
) -> None:
    db, ledger = tmp_path / "journal.db", tmp_path / "ledger.txt"
    n_effects, special_status, recovered_origin = EXPECTED[point]
    held_back = point == "before_pending_commit"

    killed = subprocess.run(command(db, ledger, "--kill", point, *LAG), capture_output=True, text=True, timeout=60)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert integrity(db) == "ok"
    assert len(logs(db)) == 1, "the child's log must be left behind"
    assert raw_calls(db) <= 1, "SQLite was written from the log: the test proves nothing"

    store = dnb.SqliteStore(db)
    try:
        calls = store.calls(RUN)  # a read applies the dead process's log first
        n_ok = SPECIAL - 1 if held_back else SPECIAL
        assert [c.status for c in calls[:n_ok]] == [dnb.Status.SUCCEEDED] * n_ok
        assert [c.result() for c in calls[:n_ok]] == [child_mod.result(i) for i in range(n_ok)]
        if held_back:
            assert len(calls) == SPECIAL and calls[-1].status is dnb.Status.PENDING
        elif special_status is None:
            assert len(calls) == SPECIAL
        else:
            assert len(calls) == SPECIAL + 1 and calls[SPECIAL].status is special_status
        assert store.run(RUN).status is dnb.RunStatus.RUNNING
        assert child_mod.ledger_lines(ledger) == [str(i) for i in range(n_effects)]
    finally:
        store.close()
    assert logs(db) == [], "an applied dead log is removed"
    assert raw_calls(db) == len(calls), "the log's transitions are in the journal file now"

    recovered = subprocess.run(command(db, ledger, *LAG), capture_output=True, text=True, timeout=60)
    assert recovered.returncode == 0, recovered.stderr
    assert_recovered_by_child(db, ledger, RUN, recovered.stdout, recovered_origin, held_back)


@pytest.mark.timeout(60)
def test_a_process_that_had_the_journal_open_before_the_kill_applies_the_dead_log_before_it_recovers(
    tmp_path: Path,
) -> None:
    db, ledger = tmp_path / "journal.db", tmp_path / "ledger.txt"
    store = dnb.SqliteStore(db)  # open (and written) before the child starts, kept open across the kill
    try:
        dnb.LocalRunner(store).run(lambda _, ctx: ctx.durable_execute(str, 1), None, run_id="before")
        assert store.runs()[0].run_id == "before"
        killed = subprocess.run(command(db, ledger, "--kill", "after_call", *LAG), capture_output=True,
                                text=True, timeout=60)
        assert killed.returncode == -signal.SIGKILL, killed.stderr
        assert raw_calls(db) <= 1

        child_mod.LEDGER, child_mod.ACK, child_mod.KILL_POINT = ledger, None, None
        out = dnb.LocalRunner(store).run(child_mod.make_action(CALLS, SPECIAL), None, run_id=RUN)
        assert out == [child_mod.result(i) for i in range(CALLS)]
        assert ledger_counts(ledger) == {str(i): 1 for i in range(CALLS)}
        calls = store.calls(RUN)
        assert_recovered(calls, dnb.Origin.RECONCILED, held_back=False)
    finally:
        store.close()
    assert logs(db) == []


@pytest.mark.timeout(60)
def test_a_steal_from_a_live_process_applies_its_log_and_stops_it_before_its_next_side_effect(
    tmp_path: Path,
) -> None:
    db, ledger = tmp_path / "journal.db", tmp_path / "ledger.txt"
    proc = subprocess.Popen(command(db, ledger, "--pause-after", "2", *LAG), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        assert proc.stdout.readline() == "ready\n"
        assert proc.stdout.readline() == "paused\n"  # calls 0 and 1 done, their transitions in its log
        time.sleep(0.3)  # its flusher appends call 1's held-back outcome within 20 ms
        assert raw_calls(db) <= 1
        store = dnb.SqliteStore(db)
        try:
            with pytest.raises(dnb.RunBusyError):
                dnb.LocalRunner(store).context(RUN).__enter__()
            with open_run(store, RUN, steal=True) as ctx:
                assert [c.status for c in ctx.journal.calls] == [dnb.Status.SUCCEEDED] * 2
                proc.stdin.write("go\n")
                proc.stdin.flush()
                _, err = proc.communicate(timeout=60)
                assert proc.returncode != 0 and "LeaseLostError" in err, err
                assert child_mod.ledger_lines(ledger) == ["0", "1"], "the victim ran a side effect after the steal"
                assert [c.status for c in store.calls(RUN)] == [dnb.Status.SUCCEEDED] * 2
        finally:
            store.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


@pytest.mark.timeout(60)
def test_a_journal_written_through_a_symlink_in_another_folder_loses_nothing_when_opened_by_its_real_path(
    tmp_path: Path,
) -> None:
    """The intent log and the counters live beside the journal *file*, whichever path named it: a process
    that opens the real path must find (and apply) the log of one that wrote through a symlink elsewhere."""
    (tmp_path / "real").mkdir()
    (tmp_path / "links").mkdir()
    db, ledger = tmp_path / "real" / "journal.db", tmp_path / "ledger.txt"
    link = tmp_path / "links" / "alias.db"
    dnb.SqliteStore(db).close()
    link.symlink_to(db)

    killed = subprocess.run(command(link, ledger, "--kill", "after_call", *LAG), capture_output=True, text=True,
                            timeout=60)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert raw_calls(db) <= 1

    recovered = subprocess.run(command(db, ledger, *LAG), capture_output=True, text=True, timeout=60)
    assert recovered.returncode == 0, recovered.stderr
    assert_recovered_by_child(db, ledger, RUN, recovered.stdout, dnb.Origin.RECONCILED, held_back=False)
    assert integrity(db) == "ok"
    assert list((tmp_path / "links").iterdir()) == [link], "nothing of the journal's may live beside the symlink"


@pytest.mark.timeout(60)
def test_a_log_an_older_version_left_beside_a_symlink_in_another_folder_is_applied_when_opened_through_it(
    tmp_path: Path,
) -> None:
    """Before symlinks were resolved, a process that opened the journal through a symlink in another folder
    wrote its intent log beside the symlink (registered by file name). After an upgrade the store opens the
    real path: that log, left by a crash, must still be applied, not counted as gone (its calls ran again)."""
    (tmp_path / "real").mkdir()
    (tmp_path / "links").mkdir()
    db, ledger = tmp_path / "real" / "journal.db", tmp_path / "ledger.txt"
    killed = subprocess.run(command(db, ledger, "--kill", "after_call", *LAG), capture_output=True, text=True,
                            timeout=60)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert raw_calls(db) <= 1 and len(logs(db)) == 1
    # What an older durable_nb writing through links/journal.db left: its log and counters beside the link.
    link = tmp_path / "links" / "journal.db"
    link.symlink_to(db)
    for companion in [*logs(db), tmp_path / "real" / "journal.db-counters"]:
        companion.rename(tmp_path / "links" / companion.name)

    store = dnb.SqliteStore(link)
    try:
        calls = store.calls(RUN)  # a read applies the dead process's log first
        assert [c.status for c in calls[:SPECIAL]] == [dnb.Status.SUCCEEDED] * SPECIAL
        assert [c.result() for c in calls[:SPECIAL]] == [child_mod.result(i) for i in range(SPECIAL)]
    finally:
        store.close()
    assert not list((tmp_path / "links").glob("journal.db-log.*")) and not logs(db)

    recovered = subprocess.run(command(link, ledger, *LAG), capture_output=True, text=True, timeout=60)
    assert recovered.returncode == 0, recovered.stderr
    assert_recovered_by_child(db, ledger, RUN, recovered.stdout, dnb.Origin.RECONCILED, held_back=False)
    assert integrity(db) == "ok"


@pytest.mark.timeout(60)
def test_a_read_only_view_built_while_a_writer_applies_the_dead_log_still_shows_its_calls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by the SIGKILL soak: a read-only view copied the journal, then another process applied the
    killed writer's log (and removed it) before the view read that log: the view had neither (0 of 4
    acknowledged calls). A log gone meanwhile is in the journal: the view is built again."""
    from durable_nb.stores import sqlite_view

    db, ledger = tmp_path / "journal.db", tmp_path / "ledger.txt"
    killed = subprocess.run(command(db, ledger, "--kill", "in_call", *LAG), capture_output=True, text=True, timeout=60)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert len(logs(db)) == 1 and raw_calls(db) <= 1
    real = sqlite_view.apply_logs
    raced: list[bool] = []

    def writer_applies_first(conn, journal, keys, *, remove):  # type: ignore[no-untyped-def]
        if not raced:  # between the view's copy and its read of the log: a writer applies and removes it
            raced.append(True)
            writer = dnb.SqliteStore(db)
            writer.calls(RUN)
            writer.close()
            assert logs(db) == []
        return real(conn, journal, keys, remove=remove)

    monkeypatch.setattr(sqlite_view, "apply_logs", writer_applies_first)
    viewer = dnb.SqliteStore(db, read_only=True)
    try:
        calls = viewer.calls(RUN)
    finally:
        viewer.close()
    assert raced
    assert [c.status for c in calls] == [dnb.Status.SUCCEEDED] * SPECIAL + [dnb.Status.PENDING]
