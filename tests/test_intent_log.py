"""The intent log of a ``"call"`` SqliteStore: frames, their safety, what readers see, and its lifetime.

Killed processes are in ``tests/kill/test_kill_intent_log.py``; these are the
in-process rules: a frame holds plain values only and a hostile one runs nothing,
a torn last frame is not one, a reader of this process sees every durable call at
once, large payloads are synced commits, threads share appends, the log is
truncated and removed.
"""

from __future__ import annotations

import os
import pickle
import shutil
import sqlite3
import struct
import subprocess
import sys
import threading
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest

import durable_nb as dnb
from durable_nb.errors import JournalFormatError
from durable_nb.stores import sqlite_intent, sqlite_logfile
from durable_nb.stores.sqlite_frames import decode, encode


@pytest.fixture
def lagging(monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLite is not written from the log by the applier thread during the test."""
    monkeypatch.setattr(sqlite_intent, "DELAY", 600.0)


def logs(db: Path) -> list[Path]:
    return sorted(db.parent.glob(f"{db.name}-log.*"))


def raw_count(db: Path, run_id: str) -> int:
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute("SELECT count(*) FROM calls WHERE run_id = ?", (run_id,)).fetchone()[0])
    finally:
        conn.close()


def raw_status(db: Path, run_id: str) -> str | None:
    conn = sqlite3.connect(db)
    try:
        row = conn.execute("SELECT status FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        return None if row is None else str(row[0])
    finally:
        conn.close()


def test_a_frame_round_trips_plain_values_including_lone_surrogates() -> None:
    ops = [("pending", "run-\udcff", "owner", 3, "mod.f", "d1g", 1.5), ("outcome", "r", "o", 0, "SUCCEEDED",
            "EXECUTED", b"\x80\x05payload", "'ok'", None, 2.25)]
    data = encode(7, 123, ops) + encode(8, 124, ops[:1])
    assert decode(data, "log") == [(7, 123, ops), (8, 124, ops[:1])]


def test_a_torn_last_frame_is_not_a_frame_but_damage_before_another_frame_is_an_error() -> None:
    first, second = encode(1, 1, [("close", "r", "o", None, 1.0, 0)]), encode(2, 2, [("close", "r", "o", None, 2.0, 1)])
    assert [f[0] for f in decode(first + second[:-3], "log")] == [1]  # cut inside the last frame
    assert [f[0] for f in decode(first + second[:5], "log")] == [1]  # cut inside its header
    broken = bytearray(first + second)
    broken[12] ^= 0xFF  # inside the first frame's body: its checksum fails and a frame follows
    with pytest.raises(JournalFormatError, match="damaged at byte 0.*Move the log away|move the log away"):
        decode(bytes(broken), "j.db-log.1.ab")
    # The log is zero-filled ahead of its frames: zeros end them, and a torn frame before zeros is a torn tail.
    zeros = bytes(4096)
    assert [f[0] for f in decode(first + second + zeros, "log")] == [1, 2]
    assert [f[0] for f in decode(first + second[:-3] + zeros, "log")] == [1]
    torn_first_page = first + bytes(len(second) - 3) + second[-3:] + zeros  # only the frame's tail hit the disk
    assert [f[0] for f in decode(torn_first_page, "log")] == [1]
    with pytest.raises(JournalFormatError, match="damaged at byte 0"):
        decode(bytes(broken) + zeros, "j.db-log.1.ab")


def test_frames_overwrite_zeros_so_an_append_does_not_grow_the_file(tmp_path: Path, lagging: None) -> None:
    """An fdatasync that must also commit a new file size waits on the filesystem's journal: appends must not."""
    db = tmp_path / "j.db"
    store = dnb.SqliteStore(db)
    try:
        with dnb.LocalRunner(store).context("r") as ctx:
            ctx.durable_execute(str, 0)
            (log,) = logs(db)
            size = log.stat().st_size
            assert size == sqlite_logfile.FILL
            for i in range(1, 20):
                ctx.durable_execute(str, i)
            assert log.stat().st_size == size
            written = log.read_bytes()
            assert len(written.rstrip(b"\0")) > 19 * 40 and [f[0] for f in decode(written, str(log))] == list(
                range(1, 21))
        # Frames past the zero-filled part grow the file by another FILL, then overwrite zeros again.
        big = "x" * (sqlite_intent.LARGE - 100)
        with dnb.LocalRunner(store).context("s") as ctx:
            for i in range(12):
                ctx.durable_execute(str.upper, big + str(i))
        assert log.stat().st_size % sqlite_logfile.FILL == 0 and log.stat().st_size > size
        assert [c.result() for c in store.calls("s")] == [(big + str(i)).upper() for i in range(12)]
    finally:
        store.close()


def test_a_hostile_frame_naming_a_function_is_refused_and_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (Path.touch, (str(marker),))  # type: ignore[return-value]

    body = pickle.dumps((1, 1, [("close", "r", "o", Evil(), 1.0, 0)]), 5)
    frame = struct.pack("<II", len(body), zlib.crc32(body)) + body
    with pytest.raises(JournalFormatError, match="not durable_nb's"):
        decode(frame, "log")
    assert not marker.exists()


def test_reads_in_this_process_see_every_durable_call_before_sqlite_is_written_from_the_log(
    tmp_path: Path, lagging: None
) -> None:
    db = tmp_path / "j.db"
    store = dnb.SqliteStore(db)
    with dnb.LocalRunner(store).context("r") as ctx:
        for i in range(5):
            ctx.durable_execute(str, i)
        assert raw_count(db, "r") <= 1, "SQLite was written from the log: the test proves nothing"
        other = dnb.SqliteStore(db)  # another store object of this process on the same file
        try:
            assert [c.status for c in other.calls("r")][:4] == [dnb.Status.SUCCEEDED] * 4
        finally:
            other.close()
    assert [c.status for c in store.calls("r")] == [dnb.Status.SUCCEEDED] * 5
    assert raw_count(db, "r") == 5
    store.close()
    assert logs(db) == [], "closing the last store object of the file removes its log"
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("SELECT count(*) FROM meta WHERE key LIKE 'intent_log:%'").fetchone()[0] == 0
    finally:
        conn.close()


def test_a_read_only_store_of_this_process_sees_the_run_a_writer_of_it_just_ended(
    tmp_path: Path, lagging: None
) -> None:
    """A read-only view applies dead writers' logs and leaves a live one to its writer: a writer in the same
    kernel had just ended a run whose frames were still in its log, and a read-only store (or a JournalView
    of ``?mode=ro``) did not show it; one opened before the writer read the file as it was, for ever."""
    db = tmp_path / "j.db"
    with dnb.SqliteStore(db) as first:
        dnb.LocalRunner(first).run(lambda x, ctx: ctx.durable_execute(abs, x), 0, run_id="r0")
    before = dnb.SqliteStore(db, read_only=True)  # no writer yet: it reads the file as a complete one
    assert [r.run_id for r in before.runs()] == ["r0"]
    store = dnb.SqliteStore(db)
    runner = dnb.LocalRunner(store)
    for i in (1, 2):
        runner.run(lambda x, ctx: ctx.durable_execute(abs, x), -i, run_id=f"r{i}")
        assert raw_status(db, f"r{i}") != "COMPLETED", "SQLite was written from the log: the test proves nothing"
        after = dnb.SqliteStore(db, read_only=True)
        for viewer in (before, after):
            assert [r.run_id for r in viewer.runs()] == [f"r{n}" for n in range(i + 1)]
            assert [c.result() for c in viewer.calls(f"r{i}")] == [i]
        after.close()
    before.close()
    store.close()


def test_a_large_result_is_a_synced_commit_not_a_frame(tmp_path: Path, lagging: None) -> None:
    db = tmp_path / "j.db"
    store = dnb.SqliteStore(db)
    try:
        with dnb.LocalRunner(store).context("r") as ctx:
            ctx.durable_execute(str, 1)
            ctx.durable_execute(str, 2)  # a log exists from here on
            big = ctx.durable_execute(bytes, sqlite_intent.LARGE + 1)
            (log,) = logs(db)
            size = log.stat().st_size
            ctx.durable_execute(str, 3)  # carries the large outcome: a synced commit
            assert log.stat().st_size == size
            assert raw_count(db, "r") == 4, "the synced commit applied the log first, then wrote its own"
        assert store.calls("r")[2].result() == big
    finally:
        store.close()


def test_threads_share_appends_and_every_call_is_journaled(tmp_path: Path, lagging: None) -> None:
    db = tmp_path / "j.db"
    store = dnb.SqliteStore(db)
    runner = dnb.LocalRunner(store)
    with runner.context("warm") as ctx:  # the first commit of a store is a synced transaction; then the log
        ctx.durable_execute(str, 0)
        ctx.durable_execute(str, 1)
    (log,) = logs(db)
    before = len(decode(log.read_bytes(), str(log)))
    start = threading.Barrier(8)

    def worker(t: int) -> None:
        with runner.context(f"t{t}") as ctx:
            start.wait()
            for i in range(50):
                ctx.durable_execute(str, i)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    frames = decode(log.read_bytes(), str(log))[before:]
    pendings = sum(op[0] == "pending" for _, _, ops in frames for op in ops)
    assert pendings == 8 * 50
    assert len(frames) <= pendings  # one fdatasync per frame; group commit only ever shares them
    for t in range(8):
        assert [c.status for c in store.calls(f"t{t}")] == [dnb.Status.SUCCEEDED] * 50
    store.close()


def test_an_applied_log_is_truncated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lagging: None) -> None:
    monkeypatch.setattr(sqlite_intent, "TRUNCATE_AT", 4096)
    db = tmp_path / "j.db"
    store = dnb.SqliteStore(db)
    try:
        with dnb.LocalRunner(store).context("r") as ctx:
            for i in range(200):
                ctx.durable_execute(str, i)
        store.calls("r")  # a read applies everything
        (log,) = logs(db)
        written = len(log.read_bytes().rstrip(b"\0"))
        assert written < 4096 + 2048, "the log keeps growing after its frames were applied"
        assert log.stat().st_size <= 2 * sqlite_logfile.FILL, "the file keeps growing after its frames were applied"
        assert [c.status for c in store.calls("r")] == [dnb.Status.SUCCEEDED] * 200
        with dnb.LocalRunner(store).context("s") as ctx:
            for i in range(200):
                ctx.durable_execute(str, i)
    finally:
        store.close()  # applies the last frames (and truncates on the way) before removing the log
    assert logs(db) == []
    assert raw_count(db, "s") == 200


def test_runs_read_ahead_in_a_chunk_include_transitions_not_yet_written_into_sqlite(
    tmp_path: Path, lagging: None
) -> None:
    db = tmp_path / "j.db"
    store = dnb.SqliteStore(db)
    runner = dnb.LocalRunner(store)
    ids = [f"r{i}" for i in range(6)]
    executed: list[str] = []

    def count(i: int) -> str:
        executed.append(str(i))
        return str(i)

    def action(_: object, ctx: dnb.RunnerContext) -> list[str]:
        return [ctx.durable_execute(count, i) for i in range(3)]

    try:
        runner.run(action, None, run_id="first")
        store.calls("first")  # a read: everything so far is in SQLite
        for rid in ids:  # each of these runs is in the log only
            runner.run(action, None, run_id=rid)
        assert raw_count(db, ids[0]) == 0, "SQLite was written from the log: the test proves nothing"
        executed.clear()
        with store.prefetch(["first", *ids]):  # what a map does: one chunk read for all seven runs, at "first"
            runner.run(action, None, run_id="first")  # replays, writes nothing: the chunk stays in use
            for rid in ids:
                assert runner.run(action, None, run_id=rid) == ["0", "1", "2"]
        assert executed == [], "a finished call ran again"
        assert all(r.attempts == 1 for r in store.runs()), "a replay wrote (took the run again)"
    finally:
        store.close()


def test_a_subprocess_started_after_a_log_was_closed_gets_its_descriptors(tmp_path: Path) -> None:
    """A forked child closes its parent's live logs; a closed log's descriptor number belongs to someone else.

    (Found launching the PyFlink gateway, which passes ``preexec_fn``, after a store had been closed:
    the child closed the pipe it was about to exec with.)
    """
    for i in range(3):
        store = dnb.SqliteStore(tmp_path / f"j{i}.db")
        with dnb.LocalRunner(store).context("r") as ctx:
            ctx.durable_execute(str, 1)
        store.close()
        done = subprocess.run([sys.executable, "-c", "import sys; print(sys.stdin.read())"], input="fine",
                              capture_output=True, text=True, preexec_fn=lambda: None, check=True, timeout=60)
        assert done.stdout.strip() == "fine"


def _registering(db: Path, *names: str, value: str = "0") -> None:
    """Register ``names`` as intent logs in ``db``'s meta table, as a journal from someone else could."""
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        for name in names:
            conn.execute("INSERT INTO meta (key, value) VALUES (?, ?)", (f"intent_log:{name}", value))
    finally:
        conn.close()


def test_a_registration_naming_no_log_file_never_deletes_that_file(tmp_path: Path) -> None:
    """A log found dead is read and deleted: a received journal registering its own name, or a file beside it,
    made a plain ``runs()`` delete the journal itself and the user's file (the journal lost, a file lost)."""
    db = tmp_path / "j.db"
    store = dnb.SqliteStore(db)
    with dnb.LocalRunner(store).context("r") as ctx:
        ctx.durable_execute(str, 1)
    store.close()
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    _registering(db, "notes.txt", "j.db")
    (tmp_path / "j.db-counters").touch()  # readers look for dead logs once it exists
    store = dnb.SqliteStore(db)
    try:
        assert [r.run_id for r in store.runs()] == ["r"]
        assert dnb.LocalRunner(store).run(lambda v, ctx: ctx.durable_execute(str, v), 2, run_id="s") == "2"
    finally:
        store.close()
    assert notes.read_text() == "mine"
    assert db.exists()


def test_a_garbled_registration_is_a_journal_error_naming_the_row(tmp_path: Path) -> None:
    db = tmp_path / "j.db"
    dnb.SqliteStore(db).close()
    _registering(db, "j.db-log.1.abcdef01", value="lots")
    (tmp_path / "j.db-counters").touch()
    store = dnb.SqliteStore(db)
    try:
        with pytest.raises(JournalFormatError, match=r"intent_log:j\.db-log\.1\.abcdef01.*'lots'.*DELETE FROM meta"):
            store.runs()
    finally:
        store.close()


def test_a_dead_process_log_this_user_cannot_read_names_it_and_the_fixes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another user's log (0600, as every log is created) made runs() fail with a bare PermissionError."""
    db = tmp_path / "j.db"
    dnb.SqliteStore(db).close()
    name = "j.db-log.1.abcdef01"
    (tmp_path / name).write_bytes(b"\0" * 64)
    _registering(db, name)
    (tmp_path / "j.db-counters").touch()
    real_open = os.open

    def denied(path: object, *args: object, **kwargs: object) -> int:
        if str(path).endswith(name):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", denied)
    store = dnb.SqliteStore(db)
    try:
        with pytest.raises(dnb.JournalWriteError, match=rf"intent log .*{name}.*cannot be read.*read_only=True"):
            store.runs()
    finally:
        store.close()
    viewer = dnb.SqliteStore(db, read_only=True)
    try:
        assert viewer.runs() == []
    finally:
        viewer.close()


def test_a_run_taken_by_a_synced_commit_is_not_taken_again_by_the_next_frame(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by the SIGKILL fuzzer (8 threads recovering runs): a recovery's first write, a reconciled outcome
    held back, was committed by another thread's synced transaction (a dead process's log applied at an
    open), which takes the run. The next commit went through the log before that transaction had marked
    the context as having taken its run, so its frame took the run again with the stale attempts count;
    applying it found the run already taken and dropped the frame: the run stayed RUNNING, its later calls
    were missing while their side effects had happened (a recovery would do them twice)."""
    from durable_nb.stores import sqlite as sqlite_mod

    monkeypatch.setattr(sqlite_mod, "FLUSH_DELAY", 600.0)  # the held outcome waits for a commit to carry it
    db = tmp_path / "journal.db"
    store = dnb.SqliteStore(db)
    runner = dnb.LocalRunner(store)
    effects: list[int] = []

    @dnb.durable(name="t.charge")
    def charge(i: int) -> int:
        effects.append(i)
        return i * 10

    with dnb.inject_crash(call="t.charge", point="after_call"), pytest.raises(dnb.SimulatedCrash):
        runner.run(lambda _, ctx: ctx.durable_execute(charge, 0), None, run_id="r")  # call 0 left PENDING

    committed, go_on = threading.Event(), threading.Event()
    on_commit = store._committer._on_commit

    def slow_hooks() -> None:  # the other thread's transaction committed; its hooks come after this
        committed.set()
        go_on.wait(1.0)
        on_commit()

    with runner.context("r") as ctx:
        assert ctx.durable_execute(charge, 0, reconciler=lambda: 0) == 0  # reconciled, held back
        monkeypatch.setattr(store._committer, "_on_commit", slow_hooks)
        other = threading.Thread(target=store.delete_run, args=("unrelated",))  # a synced transaction
        other.start()
        assert committed.wait(10)
        monkeypatch.setattr(store._committer, "_on_commit", on_commit)
        assert ctx.durable_execute(charge, 1, reconciler=lambda: 10) == 10  # through the log
    go_on.set()
    other.join(10)
    store.close()

    store = dnb.SqliteStore(db)
    try:
        assert store.run("r").status is dnb.RunStatus.COMPLETED
        calls = store.calls("r")
        assert [(c.index, c.status, c.origin) for c in calls] == [
            (0, dnb.Status.SUCCEEDED, dnb.Origin.RECONCILED), (1, dnb.Status.SUCCEEDED, dnb.Origin.EXECUTED)]
        assert effects == [0, 1]
    finally:
        store.close()


def test_a_log_left_unregistered_by_a_dead_process_is_removed_by_the_next_writer(tmp_path: Path) -> None:
    """A process killed while creating its log (or a daemon thread starting one during exit) left a file no
    registration names: readers look for dead logs through registrations, so each such file stayed forever.
    A live log (locked) that is not registered yet is another process's, about to register: it stays."""
    db = tmp_path / "j.db"
    dnb.SqliteStore(db).close()
    orphan, new = tmp_path / "j.db-log.999999.0badf00d", tmp_path / "j.db-log.999998.0badf00d.new"
    for path in (orphan, new):
        path.write_bytes(bytes(sqlite_logfile.FILL))
        os.utime(path, (1, 1))  # left long ago: see the test below for a fresh one
    live = tmp_path / "j.db-log.999997.0badf00d"
    live.write_bytes(b"")
    fd = os.open(live, os.O_RDWR)
    try:
        assert sqlite_logfile.try_lock(fd)  # an open file description of its own: as another process holds it
        store = dnb.SqliteStore(db)
        try:
            with dnb.LocalRunner(store).context("r") as ctx:
                ctx.durable_execute(str, 1)
            assert not orphan.exists() and not new.exists()
            assert live.exists()
        finally:
            store.close()
    finally:
        os.close(fd)
    assert [p.name for p in logs(db)] == [live.name]


def test_a_log_an_older_version_is_creating_is_not_removed_before_it_is_locked(tmp_path: Path) -> None:
    """Versions before the ``.new`` name (users upgrade one kernel at a time, so they share journals with this
    one) create their log under its final name, O_EXCL, and lock it just after. A writer of this version whose
    first logged write came in between removed it as a dead process's orphan: the older writer then locked,
    registered and appended to a file no one else could find, and every call it acknowledged was lost at its
    kill (the next reader found the registered log gone and dropped it)."""
    db = tmp_path / "j.db"
    dnb.SqliteStore(db).close()
    older = tmp_path / "j.db-log.999996.0badf00d"
    fd = os.open(older, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)  # as the older LogFile does
    try:
        store = dnb.SqliteStore(db)
        try:
            with dnb.LocalRunner(store).context("r") as ctx:
                ctx.durable_execute(str, 1)  # this process's first logged write: it sweeps orphans
        finally:
            store.close()
        assert sqlite_logfile.try_lock(fd)  # the older writer goes on: locks, then registers
        assert older.exists(), "the older version's log was removed while it was being created"
    finally:
        os.close(fd)


def test_a_write_after_the_logs_were_closed_at_exit_starts_no_log(tmp_path: Path) -> None:
    """At exit the logs are closed after the held-back writes; a daemon thread still writing then started a
    new log, which the exiting interpreter left half made (unregistered) beside the journal."""
    db = tmp_path / "j.db"
    script = (
        "import sys, durable_nb as dnb\n"
        "from durable_nb.stores import sqlite_intent\n"
        "store = dnb.SqliteStore(sys.argv[1])\n"
        "runner = dnb.LocalRunner(store)\n"
        "with runner.context('a') as ctx:\n"
        "    ctx.durable_execute(str, 1)\n"
        "sqlite_intent.close_all()  # what the exit hook does, before the daemon thread's next call\n"
        "with runner.context('b') as ctx:\n"
        "    ctx.durable_execute(str, 2)\n"
        "import glob\n"
        "print(len(glob.glob(sys.argv[1] + '-log.*')))\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(db)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0"]
    store = dnb.SqliteStore(db)
    try:
        assert [len(store.calls(r)) for r in ("a", "b")] == [1, 1]
    finally:
        store.close()


def test_a_copy_beside_the_journal_leaves_the_journal_s_dead_log_to_the_journal(tmp_path: Path) -> None:
    """A backup (SQLite's backup API, or ``cp``) carries the journal's log registrations. Once the kernel writing
    the journal was killed, the copy's first reader applied the journal's log to the copy and deleted it: the
    journal lost the run the log held (its acknowledged charge would run again), the copy gained calls made after it."""
    db, copy = tmp_path / "j.db", tmp_path / "copy.db"
    kernel = f"""
import os, sqlite3, durable_nb as dnb
from durable_nb.stores import sqlite_intent
sqlite_intent.DELAY = 600.0  # SQLite is not written from the log before the kill
store = dnb.SqliteStore({str(db)!r})
for run in ("first", "second"):
    with dnb.LocalRunner(store).context(run) as ctx:
        ctx.durable_execute(str, run)
store.flush()
src, dst = sqlite3.connect({str(db)!r}), sqlite3.connect({str(copy)!r})
src.backup(dst)
dst.close(); src.close()
with dnb.LocalRunner(store).context("order") as ctx:
    ctx.durable_execute(str, "charge")
    os.kill(os.getpid(), 9)
"""
    subprocess.run([sys.executable, "-c", kernel], timeout=120, check=False)
    assert raw_count(db, "order") == 0 and len(logs(db)) == 1  # the charge is in the killed kernel's log only
    backup = dnb.SqliteStore(copy)
    try:
        dnb.LocalRunner(backup).run(lambda v, ctx: ctx.durable_execute(str, v), 1, run_id="look")
        assert [r.run_id for r in backup.runs()] == ["first", "second", "look"]
    finally:
        backup.close()
    assert len(logs(db)) == 1
    store = dnb.SqliteStore(db)
    try:
        assert [c.status for c in store.calls("order")] == [dnb.Status.PENDING]
    finally:
        store.close()


@pytest.mark.parametrize("moved", [False, True])
def test_a_journal_without_its_counters_file_still_applies_a_killed_kernel_s_log(tmp_path: Path, moved: bool) -> None:
    """``cp j.db j.db-wal j.db-log.* elsewhere/`` after a kill (or ``rm j.db-counters``, 16 bytes that look
    disposable): reads looked for dead logs only where ``-counters`` exists, so the killed kernel's acknowledged
    calls were skipped and its charges ran again."""
    db, effects = tmp_path / "j.db", tmp_path / "effects.txt"
    kernel = f"""
import os, durable_nb as dnb
from durable_nb.stores import sqlite_intent
sqlite_intent.DELAY = 600.0  # SQLite is not written from the log before the kill
def charge(i):
    with open({str(effects)!r}, "a") as f:
        f.write(f"{{i}}\\n")
    return i
with dnb.LocalRunner(dnb.SqliteStore({str(db)!r})).context("order") as ctx:
    for i in range(3):
        ctx.durable_execute(charge, i)
    os.kill(os.getpid(), 9)
"""
    subprocess.run([sys.executable, "-c", kernel], timeout=120, check=False)
    assert raw_count(db, "order") == 0 and len(logs(db)) == 1
    if moved:
        (tmp_path / "elsewhere").mkdir()
        for p in [db, tmp_path / "j.db-wal", *logs(db)]:
            if p.exists():
                shutil.copy(p, tmp_path / "elsewhere" / p.name)
        db = tmp_path / "elsewhere" / "j.db"
    else:
        (tmp_path / "j.db-counters").unlink(missing_ok=True)
    store = dnb.SqliteStore(db)
    try:
        assert [c.status for c in store.calls("order")] == [dnb.Status.SUCCEEDED] * 2 + [dnb.Status.PENDING]

        def charge(i: int) -> int:
            with open(effects, "a") as f:
                f.write(f"{i}\n")
            return i

        charge.__module__, charge.__qualname__ = "__main__", "charge"
        with dnb.LocalRunner(store).context("order") as ctx:
            assert [ctx.durable_execute(charge, i) for i in range(3)] == [0, 1, 2]
    finally:
        store.close()
    assert effects.read_text().split() == ["0", "1", "2", "2"], "only the PENDING call may run again"


def test_the_readme_s_copy_of_an_open_journal_holds_every_acknowledged_call(tmp_path: Path, lagging: None) -> None:
    """README, Journal files: ``cp`` of an open journal misses its WAL and intent log; flush + SQLite's backup
    API copies every call that returned, a held-back outcome included."""
    db, copy = tmp_path / "j.db", tmp_path / "backup.db"
    store = dnb.SqliteStore(db)
    try:
        runner = dnb.LocalRunner(store)
        runner.run(lambda v, ctx: [ctx.durable_execute(str, k) for k in range(3)], None, run_id="done")
        with runner.context("open") as ctx:
            ctx.durable_execute(str, "last")
            shutil.copy(db, tmp_path / "cp.db")
            store.flush()
            src = sqlite3.connect(store.path)
            src.backup(dst := sqlite3.connect(copy))
            dst.close()
            src.close()
        plain = sqlite3.connect(tmp_path / "cp.db")
        try:  # the schema and the runs are in j.db-wal still
            assert plain.execute("SELECT count(*) FROM sqlite_master WHERE name = 'calls'").fetchone() == (0,)
        finally:
            plain.close()
        backup = dnb.SqliteStore(copy)
        try:
            assert [len(backup.calls(r)) for r in ("done", "open")] == [3, 1]
            assert backup.calls("open")[0].status is dnb.Status.SUCCEEDED
        finally:
            backup.close()
    finally:
        store.close()


@pytest.mark.parametrize("new_journal_writes", [False, True])
def test_a_journal_renamed_after_its_kernel_died_keeps_its_log_when_a_new_journal_takes_its_name(
    tmp_path: Path, new_journal_writes: bool
) -> None:
    """``mv j.db old.db`` once the kernel writing it was killed (its log keeps the name ``j.db-log.*``), then a new
    ``j.db`` (the default store recreates it): old.db's reader took the log for the new j.db's (a copy's) and
    skipped it, and the new j.db's first write swept it as an orphan: the acknowledged charge was lost."""
    db, old = tmp_path / "j.db", tmp_path / "old.db"
    kernel = f"""
import os, durable_nb as dnb
from durable_nb.stores import sqlite_intent
sqlite_intent.DELAY = 600.0
store = dnb.SqliteStore({str(db)!r})
with dnb.LocalRunner(store).context("order") as ctx:
    ctx.durable_execute(str, "charge")
    os.kill(os.getpid(), 9)
"""
    subprocess.run([sys.executable, "-c", kernel], timeout=120, check=False)
    assert len(logs(db)) == 1
    for suffix in ("", "-wal", "-shm"):
        if (tmp_path / f"j.db{suffix}").exists():
            os.rename(tmp_path / f"j.db{suffix}", tmp_path / f"old.db{suffix}")
    new = dnb.SqliteStore(db)
    try:
        if new_journal_writes:
            dnb.LocalRunner(new).run(lambda v, ctx: ctx.durable_execute(str, v), 1, run_id="other")
    finally:
        new.close()
    store = dnb.SqliteStore(old)
    try:
        dnb.LocalRunner(store).run(lambda v, ctx: ctx.durable_execute(str, v), 1, run_id="look")
        assert [c.status for c in store.calls("order")] == [dnb.Status.PENDING]
    finally:
        store.close()
    assert logs(db) == []


def _returns_in_time(fifo: Path, work: Callable[[], object]) -> object:
    """``work()``'s result or exception; fails (after unblocking it through ``fifo``) if it hangs."""
    box: dict[str, object] = {}

    def target() -> None:
        try:
            box["value"] = work()
        except Exception as exc:
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(10)
    if thread.is_alive():
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # a reader blocked in open() goes on
        thread.join(10)
        pytest.fail("reading the journal blocked on a FIFO named like an intent log")
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]


@pytest.mark.parametrize("linked", [False, True])
@pytest.mark.parametrize("registered", [False, True])
def test_a_fifo_named_like_an_intent_log_never_blocks_a_read(tmp_path: Path, registered: bool, linked: bool) -> None:
    """A received journal (a tar keeps FIFOs and symlinks) or a shared folder with ``j.db-log.1.abcdef01`` a
    FIFO, or a link to one: every read of the journal blocked forever in ``open`` (read-only views, and
    writers once it was registered)."""
    db = tmp_path / "j.db"
    store = dnb.SqliteStore(db)
    dnb.LocalRunner(store).run(lambda v, ctx: ctx.durable_execute(str, v), 1, run_id="r")
    store.close()
    fifo = tmp_path / ("elsewhere" if linked else "j.db-log.1.abcdef01")
    os.mkfifo(fifo)
    name = "j.db-log.1.abcdef01"
    if linked:
        (tmp_path / name).symlink_to(fifo)
    if registered:
        _registering(db, name)
    viewer = dnb.SqliteStore(db, read_only=True)
    try:
        assert [r.run_id for r in _returns_in_time(fifo, viewer.runs)] == ["r"]  # type: ignore[attr-defined]
    finally:
        viewer.close()
    store = dnb.SqliteStore(db)
    try:
        if registered:
            with pytest.raises(dnb.JournalWriteError, match=rf"{name} .*not a plain file.*Move it away"):
                _returns_in_time(fifo, store.runs)
        else:
            assert [r.run_id for r in _returns_in_time(fifo, store.runs)] == ["r"]  # type: ignore[attr-defined]
    finally:
        store.close()


def test_a_counters_file_that_is_a_fifo_is_refused_by_name_not_as_a_bare_oserror(tmp_path: Path) -> None:
    db = tmp_path / "j.db"
    store = dnb.SqliteStore(db)
    dnb.LocalRunner(store).run(lambda v, ctx: ctx.durable_execute(str, v), 1, run_id="r")
    store.close()
    (tmp_path / "j.db-counters").unlink(missing_ok=True)
    os.mkfifo(tmp_path / "j.db-counters")
    store = dnb.SqliteStore(db, read_only=True)  # a view does not need it
    try:
        assert [r.run_id for r in store.runs()] == ["r"]
    finally:
        store.close()
    with pytest.raises(dnb.JournalWriteError, match=r"j\.db-counters is not a plain file.*folder only you can write"):
        dnb.SqliteStore(db).runs()


def test_a_registration_naming_a_fifo_as_its_journal_never_blocks_a_read(tmp_path: Path) -> None:
    """``intent_log:evil-log.1.abcdef01`` names ``evil`` as the log's journal; asking a FIFO ``evil`` whether it
    registers the log blocked SQLite's open forever, so a read-only view of the journal never came back."""
    db = tmp_path / "j.db"
    store = dnb.SqliteStore(db)
    dnb.LocalRunner(store).run(lambda v, ctx: ctx.durable_execute(str, v), 1, run_id="r")
    store.close()
    fifo = tmp_path / "evil"
    os.mkfifo(fifo)
    _registering(db, "evil-log.1.abcdef01")
    for read_only in (True, False):
        store = dnb.SqliteStore(db, read_only=read_only)
        try:
            assert [r.run_id for r in _returns_in_time(fifo, store.runs)] == ["r"]  # type: ignore[attr-defined]
        finally:
            store.close()
