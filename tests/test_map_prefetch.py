"""A ``map`` on SqliteStore reads its runs in chunks, locked ahead, and never replays from a stale chunk.

The rule kept: a run's recorded calls are read while its lease is held. The chunk's
runs are OS-locked before the chunk is read (other processes get RunBusyError), and
a commit of this process after the read makes the chunk stale, so the run is read
again. Real files, real subprocesses; nothing is mocked.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import durable_nb as dnb
from durable_nb.journal.lease import new_owner

CALLS: list[int] = []
BEFORE: dict[int, Callable[[], None]] = {}
"""What the action does first for a record id (the same action, so the same run ids)."""


def work(record: dict[str, int]) -> int:
    CALLS.append(record["id"])
    return record["id"] * 10


def action(record: dict[str, int], ctx: dnb.RunnerContext) -> int:
    hook = BEFORE.get(record["id"])
    if hook is not None:
        hook()
    return ctx.durable_execute(work, record)


@pytest.fixture(autouse=True)
def _fresh() -> Iterator[None]:
    CALLS.clear()
    BEFORE.clear()
    yield
    BEFORE.clear()


RECORDS = [{"id": i} for i in range(600)]  # more than two chunks


def run_ids(store: dnb.Store) -> dict[int, str]:
    return {int(r.run_id.split("/")[-1].split("#")[0]): r.run_id for r in store.runs()}


# A process that tries to take each run given on the command line and prints "free" or "busy".
PROBE = textwrap.dedent(
    """
    import sys
    import durable_nb as dnb
    from durable_nb.journal.lease import new_owner
    store = dnb.SqliteStore(sys.argv[1])
    for rid in sys.stdin.read().split():
        owner = new_owner()
        try:
            store.open_run(rid, owner)
        except dnb.RunBusyError:
            print("busy", flush=True)
        else:
            store.close_run(rid, owner, None)
            print("free", flush=True)
    """
)


def probe(path: Path, ids: list[str]) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(path)], input="\n".join(ids), capture_output=True, text=True, timeout=60,
        check=True,
    )
    return out.stdout.split()


def test_a_replayed_map_returns_the_recorded_rows_runs_nothing_and_writes_nothing(tmp_path):
    path = tmp_path / "j.db"
    store = dnb.SqliteStore(path)
    first = dnb.LocalRunner(store).map(action, RECORDS, key="id")
    store.close()
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    CALLS.clear()
    again = dnb.SqliteStore(path)
    second = dnb.LocalRunner(again).map(action, RECORDS, key="id")
    assert CALLS == []
    assert second.equals(first)
    assert list(second["result"]) == [i * 10 for i in range(600)]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
    again.close()


@pytest.mark.parametrize("writer", ["this store object", "another store object"])
def test_a_run_changed_in_this_process_after_its_chunk_was_read_is_read_again(tmp_path, writer):
    path = tmp_path / "j.db"
    store = dnb.SqliteStore(path)
    dnb.LocalRunner(store).map(action, RECORDS, key="id")
    ids = run_ids(store)
    other = store if writer == "this store object" else dnb.SqliteStore(path)
    BEFORE[0] = lambda: other.delete_run(ids[1])  # the chunk holding record 1 has been read by now
    CALLS.clear()
    df = dnb.LocalRunner(store).map(action, RECORDS, key="id")
    assert CALLS == [1]  # its journal was gone: executed again, not replayed from the chunk
    assert list(df["result"]) == [i * 10 for i in range(600)]
    assert [c.status for c in store.calls(ids[1])] == [dnb.Status.SUCCEEDED]


@pytest.mark.timeout(120)
def test_runs_a_map_has_locked_ahead_are_busy_for_other_processes_until_it_has_passed_them(tmp_path):
    path = tmp_path / "j.db"
    store = dnb.SqliteStore(path)
    dnb.LocalRunner(store).map(action, RECORDS, key="id")
    ids = run_ids(store)
    seen: list[str] = []
    BEFORE[3] = lambda: seen.extend(probe(path, [ids[10], ids[200]]))  # not opened yet, but already held
    dnb.LocalRunner(store).map(action, RECORDS, key="id")
    assert seen == ["busy", "busy"]
    assert probe(path, [ids[i] for i in (0, 10, 200, 599)]) == ["free"] * 4  # all given back at the end


@pytest.mark.timeout(120)
def test_a_first_map_gives_back_its_first_chunk_once_it_has_passed_it(tmp_path):
    """A map that writes reads one chunk, then every run on its own; the first chunk's 255 locks were
    given back only when the map returned, so for a long map (an hour of LLM calls) another kernel found
    runs it finished long ago busy: RunBusyError, RUNNING rows in its own map of the same records."""
    path = tmp_path / "j.db"
    store = dnb.SqliteStore(path)
    seen: list[str] = []
    BEFORE[400] = lambda: seen.extend(probe(path, [run_ids(store)[i] for i in (10, 254, 300)]))
    df = dnb.LocalRunner(store).map(action, RECORDS, key="id")
    assert seen == ["free"] * 3
    assert (df["status"] == "COMPLETED").all()
    executed = list(CALLS)
    assert executed == [r["id"] for r in RECORDS]  # each record once


@pytest.mark.timeout(120)
def test_a_run_another_process_holds_is_a_running_row_and_the_others_replay(tmp_path):
    path = tmp_path / "j.db"
    store = dnb.SqliteStore(path)
    dnb.LocalRunner(store).map(action, RECORDS, key="id")
    ids = run_ids(store)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(path), ids[7]], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "open\n"
        CALLS.clear()
        df = dnb.LocalRunner(store).map(action, RECORDS, key="id")
        assert CALLS == []
        assert df["status"][7] == "RUNNING" and "is running now in " in df["error"][7]
        assert (df.drop(index=7)["status"] == "COMPLETED").all()
    finally:
        assert holder.stdin is not None
        holder.stdin.write("\n")
        holder.stdin.flush()
        holder.wait(timeout=30)


HOLD = textwrap.dedent(
    """
    import sys
    import durable_nb as dnb
    from durable_nb.journal.lease import new_owner
    store = dnb.SqliteStore(sys.argv[1])
    owner = new_owner()
    store.open_run(sys.argv[2], owner)
    print("open", flush=True)
    sys.stdin.readline()
    store.close_run(sys.argv[2], owner, None)
    """
)


@pytest.mark.timeout(120)
def test_giving_back_locks_in_bulk_keeps_the_runs_still_open_here_locked(tmp_path):
    path = tmp_path / "j.db"
    store = dnb.SqliteStore(path)
    dnb.LocalRunner(store).map(action, RECORDS, key="id")
    ids = run_ids(store)
    other, owner = dnb.SqliteStore(path), new_owner()
    other.open_run(ids[5], owner)  # open here, in another store object
    try:
        df = dnb.LocalRunner(store).map(action, RECORDS, key="id")
        assert df["status"][5] == "RUNNING"
        assert probe(path, [ids[4], ids[5], ids[6], ids[300]]) == ["free", "busy", "free", "free"]
    finally:
        other.close_run(ids[5], owner, None)
    assert probe(path, [ids[5]]) == ["free"]


@pytest.mark.timeout(120)
def test_a_map_stopped_by_a_crash_gives_back_the_locks_it_took_ahead(tmp_path):
    path = tmp_path / "j.db"
    store = dnb.SqliteStore(path)
    dnb.LocalRunner(store).map(action, RECORDS, key="id")
    ids = run_ids(store)

    def crash() -> None:
        raise KeyboardInterrupt

    BEFORE[2] = crash
    with pytest.raises(KeyboardInterrupt):
        dnb.LocalRunner(store).map(action, RECORDS, key="id")
    assert probe(path, [ids[1], ids[2], ids[3], ids[100]]) == ["free"] * 4
