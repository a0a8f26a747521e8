"""Several processes writing one SqliteStore at once, and one run opened twice at once.

Real processes (``sys.executable``) on one real journal file: SQLite's locking and
the run leases are what is under test, so nothing here is simulated.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import durable_nb as dnb

PROCESSES = 4
CALLS = 500

# A worker: opens the store, says "ready", waits for "go" on stdin, then either makes
# CALLS durable calls in its own run ("calls") or opens a shared run and holds it
# until told to leave ("hold").
WORKER = textwrap.dedent(
    """
    import sys
    import durable_nb as dnb

    mode, db, run = sys.argv[1], sys.argv[2], sys.argv[3]

    @dnb.durable(name="work")
    def work(run, i):
        return f"{run}:{i}:{i * 7}"

    store = dnb.SqliteStore(db)
    runner = dnb.LocalRunner(store)
    print("ready", flush=True)
    sys.stdin.readline()
    if mode == "calls":
        n = int(sys.argv[4])
        with runner.context(run) as ctx:
            out = [ctx.durable_execute(work, run, i) for i in range(n)]
        assert out == [work(run, i) for i in range(n)]
        print("done", flush=True)
    else:
        try:
            with runner.context(run) as ctx:
                print("open", flush=True)
                sys.stdin.readline()
                ctx.durable_execute(work, run, 0)
        except dnb.RunBusyError as exc:
            assert exc.run_id == run
            print("busy", flush=True)
    """
)


def worker(*args: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", WORKER, *args],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line == "ready\n", (line, proc.communicate(timeout=30))
    return proc


def tell(proc: subprocess.Popen[str], line: str = "go") -> None:
    assert proc.stdin is not None
    proc.stdin.write(line + "\n")
    proc.stdin.flush()


def expected(run: str, i: int) -> str:
    return f"{run}:{i}:{i * 7}"


@pytest.mark.timeout(240)
def test_four_processes_append_to_one_journal_and_every_record_lands_in_order(tmp_path: Path) -> None:
    db = tmp_path / "journal.db"
    runs = [f"proc-{p}" for p in range(PROCESSES)]
    procs = [worker("calls", str(db), run, str(CALLS)) for run in runs]
    for proc in procs:  # all ready: start them together
        tell(proc)
    for proc in procs:
        out, err = proc.communicate(timeout=200)
        assert proc.returncode == 0, err
        assert out == "done\n"

    store = dnb.SqliteStore(db)
    try:
        for run in runs:
            calls = store.calls(run)
            assert [c.index for c in calls] == list(range(CALLS))
            assert all(c.status is dnb.Status.SUCCEEDED and c.origin is dnb.Origin.EXECUTED for c in calls)
            assert [c.result() for c in calls] == [expected(run, i) for i in range(CALLS)]
            assert store.run(run).status is dnb.RunStatus.COMPLETED
            assert store.count_calls(run_id=run) == CALLS
        assert store.count_calls() == PROCESSES * CALLS
        # Journal order (seq) holds every call once, and each run's calls in index order.
        # (How much the runs interleave depends on the scheduler, so it is not asserted.)
        order = [(c.run_id, c.index) for c in store.query_calls()]
        assert len(set(order)) == PROCESSES * CALLS
        for run in runs:
            assert [i for r, i in order if r == run] == list(range(CALLS))
    finally:
        store.close()
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        conn.close()


@pytest.mark.timeout(60)
def test_a_run_held_open_by_one_process_is_busy_for_another(tmp_path: Path) -> None:
    db = tmp_path / "journal.db"
    holder = worker("hold", str(db), "shared")
    tell(holder)
    assert holder.stdout is not None and holder.stdout.readline() == "open\n"

    other = worker("hold", str(db), "shared")
    tell(other)
    out, err = other.communicate(timeout=30)
    assert (other.returncode, out) == (0, "busy\n"), err
    # The refused process wrote nothing to the run.
    store = dnb.SqliteStore(db)
    try:
        assert store.calls("shared") == []
        assert store.run("shared") is None  # holding a run open costs no write; the refused one wrote nothing
    finally:
        store.close()

    tell(holder, "leave")
    _, err = holder.communicate(timeout=30)
    assert holder.returncode == 0, err

    # Once the holder has finished, the run opens again from another process.
    again = worker("hold", str(db), "shared")
    tell(again)
    assert again.stdout is not None and again.stdout.readline() == "open\n"
    tell(again, "leave")
    _, err = again.communicate(timeout=30)
    assert again.returncode == 0, err
    store = dnb.SqliteStore(db)
    try:
        assert store.run("shared").attempts == 1  # the second open only replayed: it wrote nothing
        assert [c.status for c in store.calls("shared")] == [dnb.Status.SUCCEEDED]
    finally:
        store.close()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("attempt", range(5))
def test_two_processes_racing_for_one_run_one_gets_it_the_other_run_busy(tmp_path: Path, attempt: int) -> None:
    db = tmp_path / "journal.db"
    dnb.SqliteStore(db).close()  # created up front, so the race is for the run, not the file
    a, b = worker("hold", str(db), "race"), worker("hold", str(db), "race")
    tell(a)
    tell(b)
    assert a.stdout is not None and b.stdout is not None
    first = {a.stdout.readline(), b.stdout.readline()}
    assert first == {"open\n", "busy\n"}
    for proc in (a, b):
        if proc.poll() is None:
            tell(proc, "leave")
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
    store = dnb.SqliteStore(db)
    try:
        assert store.run("race").attempts == 1
        assert len(store.calls("race")) == 1
    finally:
        store.close()


@pytest.mark.timeout(60)
def test_deleting_a_run_another_process_is_writing_names_that_process(tmp_path: Path) -> None:
    """``%durable_forget`` from a second kernel said "open in a live context of another process", where a
    second kernel running the cell is told "process 4242 on host": which kernel to wait for, or stop."""
    db = tmp_path / "journal.db"
    script = textwrap.dedent(
        """
        import sys
        import durable_nb as dnb
        with dnb.LocalRunner(dnb.SqliteStore(sys.argv[1])).context("shared") as ctx:
            ctx.durable_execute(abs, -1)
            print("open", flush=True)
            sys.stdin.readline()
        """
    )
    holder = subprocess.Popen([sys.executable, "-c", script, str(db)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    store = dnb.SqliteStore(db)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "open\n"
        with pytest.raises(dnb.RunBusyError) as refused:
            store.delete_run("shared")
        assert refused.value.owner.startswith(f"process {holder.pid} on ")
    finally:
        tell(holder, "leave")
        holder.wait(timeout=30)
        store.close()
    assert holder.returncode == 0
