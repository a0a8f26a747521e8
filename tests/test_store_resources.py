"""What a long-lived kernel or service keeps of the stores it used: threads, connections, descriptors.

A notebook re-runs ``store = dnb.SqliteStore(...)`` and drops the old object without
``close()``; a service calls one store from a new thread per request. Neither may
grow the process's threads or open files with each cycle.
"""

from __future__ import annotations

import gc
import os
import sqlite3
import threading
import time
import weakref
from pathlib import Path

import pytest
from descriptors import descriptors_on, needs_proc

import durable_nb as dnb


def _job(x: int, ctx: dnb.RunnerContext) -> int:
    return ctx.durable_execute(abs, x)


def _flushers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "durable_nb-flush"]


def _until(done: object, seconds: float = 30.0) -> None:
    """Wait for ``done()`` (the flusher ends a while after its last held write); the test asserts after."""
    end = time.monotonic() + seconds
    while not done() and time.monotonic() < end:  # type: ignore[operator]
        time.sleep(0.05)


def test_a_store_dropped_without_close_is_collected_with_its_flusher_and_connections(tmp_path: Path) -> None:
    """The flusher thread slept forever holding the committer, which holds the store: every store a notebook
    dropped kept a thread and its SQLite connections (descriptors, page cache) until the kernel died."""
    before = len(_flushers())
    refs, conns = [], []
    for i in range(5):
        store = dnb.SqliteStore(tmp_path / "j.db")
        with dnb.LocalRunner(store).context(f"r{i}") as ctx:
            ctx.durable_execute(str, 1)
            ctx.durable_execute(str, 2)  # its outcome is held back: the flusher starts
        refs.append(weakref.ref(store))
        conns.append(store._conn)
        del store, ctx
    _until(lambda: len(_flushers()) <= before)
    gc.collect()
    assert len(_flushers()) <= before
    assert [r() for r in refs] == [None] * 5
    for conn in conns:  # closed when its store was collected (this Python's sqlite3 leaves them open)
        with pytest.raises(Exception, match="closed"):
            conn.execute("SELECT 1")


@needs_proc
def test_a_store_used_from_a_new_thread_each_time_keeps_no_connection_per_ended_thread(tmp_path: Path) -> None:
    """One connection per thread, kept until ``close()``: a service calling a long-lived store from a new
    thread per request gained a connection (descriptors, page cache) per request."""
    db = tmp_path / "j.db"
    store = dnb.SqliteStore(db)
    runner = dnb.LocalRunner(store)
    try:
        runner.run(lambda v, ctx: ctx.durable_execute(str, v), 0, run_id="r0")
        for i in range(1, 41):
            t = threading.Thread(target=runner.run, args=(lambda v, ctx: ctx.durable_execute(str, v), i),
                                 kwargs={"run_id": f"r{i}"})
            t.start()
            t.join()
        assert descriptors_on(db) < 20
        assert len(store.runs()) == 41
    finally:
        store.close()


def _appliers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "durable_nb-apply"]


def _logs_under(folder: Path) -> list[object]:
    from durable_nb.stores.sqlite_intent import IntentLog

    return [log for log in list(IntentLog._all.values()) if str(log.path).startswith(str(folder))]


@needs_proc
def test_stores_dropped_without_close_on_many_journals_give_back_their_logs_threads_and_descriptors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store collected without ``close()`` closed its connections but kept its intent log (its applier thread
    asleep for ever, the log's file, connection and counters) and its file's lock descriptor: a kernel making a
    journal per test folder, day or job and dropping it grew by a thread and 7 descriptors per journal."""
    from durable_nb.stores import sqlite_intent

    monkeypatch.setattr(sqlite_intent, "REAP_EVERY", 0.2, raising=False)
    before = len(_appliers())
    for i in range(20):
        store = dnb.SqliteStore(tmp_path / f"j{i}.db")
        with dnb.LocalRunner(store).context("r") as ctx:
            ctx.durable_execute(str, 1)
            ctx.durable_execute(str, 2)
        del store, ctx

    def released() -> bool:
        gc.collect()
        return len(_appliers()) <= before and descriptors_on(tmp_path) == 0
    _until(released)
    assert len(_appliers()) <= before
    assert descriptors_on(tmp_path) == 0
    assert _logs_under(tmp_path) == []
    assert not list(tmp_path.glob("*-log.*"))  # applied and removed, as close() does
    for i in range(20):  # nothing lost: every call is in its journal
        with dnb.SqliteStore(tmp_path / f"j{i}.db") as store:
            assert [c.status.value for c in store.calls("r")] == ["SUCCEEDED", "SUCCEEDED"]


@needs_proc
def test_a_store_collected_inside_the_file_registrys_lock_does_not_hang_its_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The GC runs a dropped store's finalizer in whichever thread it interrupts, maybe one inside
    ``FileLocks.of`` (any allocation there can start it) holding ``FileLocks._all_lock``: closing the store's
    connections unpinned the file under that lock again, and the thread (a kernel's cell) hung for ever."""
    from durable_nb.journal.lease import FileLocks

    with dnb.SqliteStore(tmp_path / "j.db") as store:
        dnb.LocalRunner(store).run(_job, -1, run_id="r")
    store = dnb.SqliteStore(tmp_path / "j.db")
    assert [r.run_id for r in store.runs()] == ["r"]  # its connection pins the file
    monkeypatch.setattr(FileLocks, "_all_lock", threading.Lock())  # a hang holds this test's lock only
    gc.disable()
    try:
        del store  # garbage (the store and its committer refer to each other) until the GC below

        def collect_under_the_lock() -> None:
            with FileLocks._all_lock:
                gc.collect()
        thread = threading.Thread(target=collect_under_the_lock, daemon=True)
        thread.start()
        thread.join(10)
        assert not thread.is_alive()
    finally:
        gc.enable()
    dnb.SqliteStore(tmp_path / "j.db", read_only=True).close()  # the next store gives the pins back
    gc.collect()
    _until(lambda: descriptors_on(tmp_path) == 0)
    assert descriptors_on(tmp_path) == 0


def test_a_collected_stores_log_that_fails_to_close_keeps_its_file_so_later_runs_are_released(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The log of a collected store failed to close once (disk full); its file was released anyway, so the next
    store on the journal got a new lease state while the still open log unlocked runs in the old one: every run
    this process finished afterwards stayed locked, and other processes got RunBusyError for completed runs."""
    import subprocess
    import sys

    from durable_nb.stores import sqlite_intent

    db = tmp_path / "j.db"
    store = dnb.SqliteStore(db)
    with dnb.LocalRunner(store).context("r0") as ctx:
        ctx.durable_execute(str, 1)
    ref = weakref.ref(store)
    del store, ctx
    _until(lambda: gc.collect() >= 0 and ref() is None)  # the flusher holds it a second after its last write
    assert ref() is None
    drain = sqlite_intent.IntentLog.drain

    failed = []

    def full(self: object) -> None:
        failed.append(self)
        raise sqlite3.OperationalError("database or disk is full")
    monkeypatch.setattr(sqlite_intent.IntentLog, "drain", full)
    store = dnb.SqliteStore(db)  # reaps the collected store: its log's close fails
    monkeypatch.setattr(sqlite_intent.IntentLog, "drain", drain)
    assert failed
    try:
        with dnb.LocalRunner(store).context("x") as ctx:
            assert ctx.durable_execute(str, 2) == "2"
        store.flush()
        code = ("import durable_nb as dnb, sys\n"
                "with dnb.SqliteStore(sys.argv[1]) as s, dnb.LocalRunner(s).context('x') as ctx:\n"
                "    print(ctx.durable_execute(str, 2))\n")
        out = subprocess.run([sys.executable, "-c", code, str(db)], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr[-600:]
        assert out.stdout.split() == ["2"]
    finally:
        store.close()
    with dnb.SqliteStore(db) as store:  # the log stays open (as before stores were reaped) and loses nothing
        assert [c.status.value for c in store.calls("x")] == ["SUCCEEDED"]


def test_closed_stores_on_many_journals_leave_no_log_registered(tmp_path: Path) -> None:
    """Every closed log stayed in the process's registry of logs: one object per journal ever written."""
    for i in range(20):
        store = dnb.SqliteStore(tmp_path / f"j{i}.db")
        dnb.LocalRunner(store).run(lambda v, ctx: ctx.durable_execute(str, v), i, run_id="r")
        store.close()
    assert _logs_under(tmp_path) == []


def _sessions(dsn: str) -> int:
    """Server sessions on the database of ``dsn`` (pg_stat_activity), this probe's own excluded."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                           "AND pid <> pg_backend_pid()").fetchone()
    return int(row[0]) if row else -1


def test_a_postgres_store_dropped_without_close_ends_its_sessions(pg_dsn: str) -> None:
    """Its lease and held-outcome helpers called back into the store (reference cycles) and the flusher held it
    5 s: a notebook re-running ``store = dnb.PostgresStore(dsn)`` kept two server sessions per old store until a
    full garbage collection, and a loop of them ran the server out of connections ("too many clients")."""
    refs = []
    gc.collect()
    gc.disable()  # what only the cycle collector frees is kept: the store must go by its reference count
    try:
        for i in range(5):
            store = dnb.PostgresStore(pg_dsn)
            with dnb.LocalRunner(store).context(f"r{i}") as ctx:
                ctx.durable_execute(str, 1)
                ctx.durable_execute(str, 2)
            cm = dnb.LocalRunner(store).context(f"open{i}")
            ctx = cm.__enter__()
            ctx.durable_execute(str, 3)  # held back when the store is dropped: committed before it goes
            refs.append(weakref.ref(store))
            del store, ctx, cm
        _until(lambda: not any(r() for r in refs) and not [t for t in threading.enumerate()
                                                          if t.name == "durable_nb-pg-flush"])
        assert [r() for r in refs] == [None] * 5
        assert _sessions(pg_dsn) == 0
    finally:
        gc.enable()
    check = dnb.PostgresStore(pg_dsn)
    try:
        assert [c.status.value for c in check.calls("open4")] == ["SUCCEEDED"]
        with dnb.LocalRunner(check).context("open4"):  # its lock went with its lease session
            pass
    finally:
        check.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="forks")
def test_postgres_stores_opened_and_closed_in_a_loop_keep_no_idle_flusher(pg_dsn: str) -> None:
    """``close()`` left the held-outcome flusher waiting 5 s with nothing to do: a service opening and closing a
    store per request kept one idle thread per store closed in the last 5 s (~60 at 12 stores a second)."""
    def flushers() -> int:
        return sum(t.name == "durable_nb-pg-flush" for t in threading.enumerate())
    before = flushers()
    for i in range(10):
        store = dnb.PostgresStore(pg_dsn)
        dnb.LocalRunner(store).run(lambda v, ctx: ctx.durable_execute(str, v), i, run_id=f"r{i}")  # held: a flusher
        store.close()
        assert flushers() <= before
    with dnb.PostgresStore(pg_dsn) as store:
        assert [r.status.value for r in store.runs()] == ["COMPLETED"] * 10


def test_a_forked_child_closing_an_inherited_postgres_store_keeps_the_parents_sessions(pg_dsn: str) -> None:
    """``close()`` in a forked child closed the connections it inherited: libpq ended the parent's sessions,
    its lease session among them, and another process could open a run the parent still had open."""
    store = dnb.PostgresStore(pg_dsn)
    other = dnb.PostgresStore(pg_dsn)
    try:
        with dnb.LocalRunner(store).context("parents") as ctx:
            ctx.durable_execute(str, 1)
            store.flush()
            pid = os.fork()
            if pid == 0:  # pragma: no cover - the child
                try:
                    store.close()
                finally:
                    os._exit(0)
            os.waitpid(pid, 0)
            with pytest.raises(dnb.RunBusyError), dnb.LocalRunner(other).context("parents"):
                pass
            assert ctx.durable_execute(str, 2) == "2"
    finally:
        other.close()
        store.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_reading_the_journal_leaves_the_parents_open_transaction_alone(tmp_path: Path) -> None:
    """In a forked child every thread but the forking one looks ended: its first read closed the copies of
    the parent's other threads' connections, which rolled back a parent's write transaction in the WAL
    index both share, and the parent's commit then left a journal SQLite calls malformed."""
    db = tmp_path / "j.db"
    store = dnb.SqliteStore(db)
    inside, go = threading.Event(), threading.Event()

    def big_transaction() -> None:  # pages spill to the WAL before the commit, as a large write's do
        conn = store._conn_fn()
        conn.execute("PRAGMA cache_size = 5")
        conn.execute("CREATE TABLE scratch (x BLOB)")
        conn.execute("BEGIN IMMEDIATE")
        for _ in range(2000):
            conn.execute("INSERT INTO scratch VALUES (randomblob(500))")
        inside.set()
        go.wait(30)
        conn.execute("COMMIT")

    writer = threading.Thread(target=big_transaction)
    writer.start()
    try:
        assert inside.wait(30)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            try:
                store.calls("any")
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
    finally:
        go.set()
        writer.join()
    store.close()
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("SELECT count(*) FROM scratch").fetchone() == (2000,)
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        conn.close()
