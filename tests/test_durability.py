"""Durability levels of SqliteStore (issue 10): what another reader of the file sees, and when.

A second ``SqliteStore`` on the same file stands for another process (or what a
crash would leave): it sees only what was committed. Nothing here measures time;
where the background flush is involved the test waits for it with a generous bound.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

import durable_nb as dnb
from durable_nb import RunStatus, Status
from durable_nb.stores import sqlite_commit


def other_view(path: Path, run_id: str) -> list[Status]:
    view = dnb.SqliteStore(path)
    try:
        return [c.status for c in view.calls(run_id)]
    finally:
        view.close()


def wait_for(check, timeout: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.005)
    return check()


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "journal.db"


def test_under_call_an_outcome_becomes_durable_with_the_next_pending(path):
    store = dnb.SqliteStore(path, durability="call")
    store._committer.delay = 3600.0  # no background flush in this test: only the rules' commit points
    with dnb.LocalRunner(store).context("r") as ctx:
        ctx.durable_execute(abs, -1)
        assert other_view(path, "r") == [Status.PENDING]  # what a crash now leaves: recovery reconciles
        assert [c.status for c in store.calls("r")] == [Status.SUCCEEDED]  # this store reads its own writes

        def second(x: int) -> int:
            assert other_view(path, "r") == [Status.SUCCEEDED, Status.PENDING]  # durable before f runs
            return x

        ctx.durable_execute(second, 2)
    assert other_view(path, "r") == [Status.SUCCEEDED, Status.SUCCEEDED]  # the run's end is a boundary
    assert dnb.SqliteStore(path).run("r").status is RunStatus.COMPLETED
    store.close()


def test_a_held_outcome_is_flushed_in_the_background_when_no_next_call_comes(path):
    store = dnb.SqliteStore(path)
    with dnb.LocalRunner(store).context("idle") as ctx:
        ctx.durable_execute(abs, -1)
        assert wait_for(lambda: other_view(path, "idle") == [Status.SUCCEEDED])
    store.close()


def test_under_transition_every_outcome_is_durable_when_the_call_returns(path):
    store = dnb.SqliteStore(path, durability="transition")
    with dnb.LocalRunner(store).context("t") as ctx:
        ctx.durable_execute(abs, -1)
        assert other_view(path, "t") == [Status.SUCCEEDED]
    store.close()


def test_relaxed_commits_every_transition_without_fsync(path):
    store = dnb.SqliteStore(path, durability="relaxed")
    assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    with dnb.LocalRunner(store).context("x") as ctx:
        ctx.durable_execute(abs, -1)
        assert other_view(path, "x") == [Status.SUCCEEDED]
    store.close()


def test_every_map_row_is_durable_when_the_map_returns(path):
    store = dnb.SqliteStore(path)
    store._committer.delay = 3600.0
    df = dnb.LocalRunner(store).map(lambda rec, ctx: ctx.durable_execute(abs, rec), list(range(-20, 0)))
    assert list(df["result"]) == list(range(20, 0, -1))
    view = dnb.SqliteStore(path)
    assert len(view.runs()) == 20
    assert all(r.status is RunStatus.COMPLETED and r.attempts == 1 for r in view.runs())
    assert {c.status for c in view.query_calls()} == {Status.SUCCEEDED}
    view.close()
    store.close()


def test_a_replayed_map_writes_nothing(path):
    store = dnb.SqliteStore(path)
    runner = dnb.LocalRunner(store)
    first = runner.map(lambda rec, ctx: ctx.durable_execute(abs, rec), list(range(-5, 0)))
    store.close()
    before = path.read_bytes()
    again = dnb.SqliteStore(path)
    second = dnb.LocalRunner(again).map(lambda rec, ctx: ctx.durable_execute(abs, rec), list(range(-5, 0)))
    again.close()
    assert list(second["result"]) == list(first["result"])
    assert path.read_bytes() == before


def test_concurrent_callers_each_return_only_once_their_own_transition_is_durable(path):
    """16 threads on one store share commits; inside each f, its PENDING is already on disk."""
    store = dnb.SqliteStore(path)
    runner = dnb.LocalRunner(store)
    seen: dict[int, list[Status]] = {}
    errors: list[BaseException] = []

    def work(k: int) -> None:
        def f(i: int) -> int:
            if i == 2:
                seen[k] = other_view(path, f"g{k}")
            return i

        try:
            runner.run(lambda _, ctx: [ctx.durable_execute(f, i) for i in range(4)], None, run_id=f"g{k}")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    # Inside call 2: calls 0 and 1 SUCCEEDED (carried by call 2's PENDING), call 2 PENDING.
    assert seen == {k: [Status.SUCCEEDED, Status.SUCCEEDED, Status.PENDING] for k in range(16)}
    view = dnb.SqliteStore(path)
    assert all([c.status for c in view.calls(f"g{k}")] == [Status.SUCCEEDED] * 4 for k in range(16))
    view.close()
    store.close()


def test_flush_and_boundary_make_held_outcomes_durable(path):
    store = dnb.SqliteStore(path)
    store._committer.delay = 3600.0
    with store.boundary():
        with dnb.LocalRunner(store).context("b") as ctx:
            ctx.durable_execute(abs, -1)
        assert other_view(path, "b") == [Status.PENDING]  # inside a boundary the run's end is not one
    assert other_view(path, "b") == [Status.SUCCEEDED]
    with dnb.LocalRunner(store).context("c") as ctx:
        ctx.durable_execute(abs, -1)
        store.flush()
        assert other_view(path, "c") == [Status.SUCCEEDED]
    store.close()


@pytest.mark.parametrize("reader", ["the boundary's end", "a read of this store"])
def test_a_held_outcome_the_background_flush_is_committing_is_waited_for_not_skipped(path, reader):
    """The flusher took the held outcome and is still inside its commit (an fdatasync slowed by a loaded
    disk): no longer held, not yet durable. A boundary (``map``'s return) must wait for that commit, or the
    map returns with the outcome lost to a crash right after (recovery runs the call again); so must a read
    of this store, or it shows the finished call PENDING. The test wakes the flusher when it wants it, and
    its commit waits until the main thread waits for it (10 s at most: then the assertions fail)."""
    store = dnb.SqliteStore(path)
    committer = store._committer
    committer.delay = 3600.0
    commit = committer._commit
    entered = threading.Event()
    done = threading.Event()

    def gated(batch, held):  # type: ignore[no-untyped-def]
        if threading.current_thread().name == "durable_nb-flush" and held and not entered.is_set():
            entered.set()
            deadline = time.monotonic() + 10.0
            while not committer._waiting and not done.is_set() and time.monotonic() < deadline:
                time.sleep(0.001)  # until another thread waits for this commit
        return commit(batch, held)

    def flush_in_background() -> None:
        with committer._flush_cond:
            committer.delay = 0.0
            committer._flush_cond.notify_all()
        assert entered.wait(10.0)  # the flusher took what is held and is committing it

    committer._commit = gated
    try:
        with store.boundary():
            with dnb.LocalRunner(store).context("b") as ctx:
                ctx.durable_execute(abs, -1)
                if reader == "a read of this store":
                    flush_in_background()
                    assert [c.status for c in store.calls("b")] == [Status.SUCCEEDED]
            if reader == "the boundary's end":
                flush_in_background()  # the outcome and the run's end
        assert other_view(path, "b") == [Status.SUCCEEDED]  # what a crash right after the boundary leaves
        assert [c.status for c in store.calls("b")] == [Status.SUCCEEDED]
        assert dnb.SqliteStore(path).run("b").status is RunStatus.COMPLETED
    finally:
        done.set()
        store.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_exits_although_the_parents_flusher_was_committing_at_the_fork(path):
    """A child forked while the parent's flusher was inside its commit got a copy of the committer whose
    carrier is a thread the child does not have; its normal exit (the at-exit flush) waited for that commit
    forever. The parent's held writes are the parent's to commit: the child leaves them alone."""
    store = dnb.SqliteStore(path)
    committer = store._committer
    committer.delay = 3600.0
    commit = committer._commit
    entered, release = threading.Event(), threading.Event()

    def gated(batch, held):  # type: ignore[no-untyped-def]
        if threading.current_thread().name == "durable_nb-flush" and held and not entered.is_set():
            entered.set()
            release.wait(10.0)
        return commit(batch, held)

    committer._commit = gated
    try:
        with dnb.LocalRunner(store).context("f") as ctx:
            ctx.durable_execute(abs, -1)
            with committer._flush_cond:
                committer.delay = 0.0
                committer._flush_cond.notify_all()
            assert entered.wait(10.0)  # the flusher is inside its commit
            pid = os.fork()
            if pid == 0:  # pragma: no cover - the child
                try:
                    signal.signal(signal.SIGALRM, lambda *_: os._exit(3))  # hung: report it, do not hang pytest
                    signal.alarm(5)
                    sqlite_commit._flush_at_exit()  # what its normal exit runs
                finally:
                    os._exit(0)
            release.set()
            _, status = os.waitpid(pid, 0)
            assert os.waitstatus_to_exitcode(status) == 0
            assert ctx.durable_execute(abs, -2) == 2
        assert [c.status for c in store.calls("f")] == [Status.SUCCEEDED, Status.SUCCEEDED]
    finally:
        release.set()
        store.close()


def _registry_lock(name: str) -> threading.Lock:
    from durable_nb import stores
    from durable_nb.journal.lease import FileLocks
    from durable_nb.stores.sqlite_intent import IntentLog

    return {"IntentLog": IntentLog._all_lock, "FileLocks": FileLocks._all_lock,
            "default store": stores._defaults_lock}[name]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@pytest.mark.parametrize("lock", ["IntentLog", "FileLocks", "default store"])
def test_a_child_forked_while_another_thread_held_a_registry_lock_can_write_the_journal(path, lock, monkeypatch):
    """Found by the SIGKILL soak: a child forked while another thread held a process-wide registry lock
    (starting the intent log holds it through a synced commit; opening a store, the default store) got
    it locked, with no thread left to release it: its first write or open waited for ever."""
    monkeypatch.chdir(path.parent)  # the default store's .durable folder
    store = dnb.SqliteStore(path)
    with dnb.LocalRunner(store).context("parent") as ctx:  # the parent's own log exists
        ctx.durable_execute(abs, -1)
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with _registry_lock(lock):
            held.set()
            release.wait(10.0)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(10.0)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            code = 1
            try:
                signal.signal(signal.SIGALRM, lambda *_: os._exit(3))  # hung: report it, do not hang pytest
                signal.alarm(5)
                child = dnb.open_store() if lock == "default store" else dnb.SqliteStore(path)
                with dnb.LocalRunner(child).context("child") as ctx:
                    code = 0 if [ctx.durable_execute(abs, -i) for i in range(3)] == [0, 1, 2] else 2
            finally:
                os._exit(code)
        release.set()
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        release.set()
        holder.join()
        store.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@pytest.mark.parametrize("child_store", ["its own store", "the inherited store"])
def test_a_forked_childs_acknowledged_calls_survive_the_parent_closing_its_store(path, child_store):
    """Found by the SIGKILL soak: a forked child's SQLite counted its parent's reader locks as its own and
    held none, so the parent's last close (or a killed parent's successor's) checkpointed and deleted the
    -wal the child was writing: 14 of 20 SUCCEEDED calls (durability "transition") were lost."""
    store = dnb.SqliteStore(path, durability="transition")
    with dnb.LocalRunner(store).context("parent") as ctx:  # the parent's SQLite has the journal open
        ctx.durable_execute(abs, -1)
    to_parent, from_child = os.pipe()
    to_child, from_parent = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            signal.signal(signal.SIGALRM, lambda *_: os._exit(3))
            signal.alarm(20)
            mine = dnb.SqliteStore(path, durability="transition") if child_store == "its own store" else store
            with dnb.LocalRunner(mine).context("child") as ctx:
                for i in range(10):
                    ctx.durable_execute(abs, -i)
                    if i == 2:
                        os.write(from_child, b"x")  # the parent closes its store now
                        os.read(to_child, 1)
            mine.close()
            code = 0
        finally:
            os._exit(code)
    assert os.read(to_parent, 1) == b"x"
    store.close()  # the parent's last connection: it checkpoints and deletes the -wal if no reader shows
    os.write(from_parent, b"x")
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    after = dnb.SqliteStore(path)
    try:
        assert [c.status for c in after.calls("child")] == [Status.SUCCEEDED] * 10
        assert after.run("child").status is RunStatus.COMPLETED
    finally:
        after.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_child_forked_while_another_thread_was_inside_a_write_transaction_can_write(path):
    """Found by the SIGKILL soak: the child's SQLite copied the parent's connection holding the WAL write
    lock and saw it held by a connection of its own process for ever: every write of the child hung. A fork
    now waits for the process's write transactions to end."""
    store = dnb.SqliteStore(path)
    with dnb.LocalRunner(store).context("parent") as ctx:
        ctx.durable_execute(abs, -1)
    held = threading.Event()

    def write() -> None:
        with store._write():  # a write transaction, as the flusher's or another thread's commit
            held.set()
            time.sleep(0.3)

    writer = threading.Thread(target=write)
    writer.start()
    assert held.wait(10.0)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            signal.alarm(10)  # default action: a child stuck in SQLite's busy wait (C code) dies of it
            with dnb.LocalRunner(dnb.SqliteStore(path)).context("child") as ctx:
                code = 0 if ctx.durable_execute(abs, -2) == 2 else 2
        finally:
            os._exit(code)
    writer.join()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert [c.status for c in store.calls("child")] == [Status.SUCCEEDED]
    store.close()



def test_an_interrupted_wait_for_the_write_turn_gives_the_turn_back(path, monkeypatch):
    """KeyboardInterrupt while the write turn's OS lock waited (a kernel interrupted behind another process's
    write) left the turn counted and its in-process lock held: every later fork of the process waited
    FORK_WAIT, and every other thread's write hung."""
    import fcntl
    import types

    from durable_nb.journal import lease

    store = dnb.SqliteStore(path)
    with dnb.LocalRunner(store).context("r") as ctx:
        ctx.durable_execute(abs, -1)
    files = store._shared
    assert files.available

    def interrupted(fd, cmd, arg=0):
        if cmd == fcntl.F_OFD_SETLKW:
            raise KeyboardInterrupt
        return fcntl.fcntl(fd, cmd, arg)

    monkeypatch.setattr(files, "_fcntl", types.SimpleNamespace(**{**vars(fcntl), "fcntl": interrupted}))
    with pytest.raises(KeyboardInterrupt):
        files.begin_write()
    monkeypatch.undo()
    assert lease._writing[0] == 0
    other = threading.Thread(target=lambda: store.delete_run("r"), daemon=True)  # a write of another thread
    other.start()
    other.join(10.0)
    assert not other.is_alive()
    assert store.run("r") is None
    store.close()

def test_gathered_async_calls_in_one_context_share_commits_and_each_pending_is_durable_first(path):
    """``asyncio.gather`` of durable calls in ONE context: fewer commits than calls, and inside each
    function its own PENDING is already on disk (read by another store object)."""
    import asyncio

    from durable_nb.journal.replay import identify

    store = dnb.SqliteStore(path)
    on_disk: dict[int, bool] = {}

    def f(i: int) -> int:
        digest = identify(f, (i,), {})[1]
        view = dnb.SqliteStore(path)
        try:
            on_disk[i] = any(c.args_digest == digest and c.status is Status.PENDING for c in view.calls("gathered"))
        finally:
            view.close()
        return i * 2

    async def action(_: object, ctx: dnb.RunnerContext) -> list[int]:
        return list(await asyncio.gather(*(ctx.durable_execute_async(f, i) for i in range(32))))

    commits_before = store._shared.writes
    assert asyncio.run(dnb.LocalRunner(store).run_async(action, None, run_id="gathered")) == [i * 2 for i in range(32)]
    commits = store._shared.writes - commits_before
    assert on_disk == {i: True for i in range(32)}
    assert commits < 16, f"32 gathered calls took {commits} commits: their PENDINGs were not grouped"
    assert other_view(path, "gathered") == [Status.SUCCEEDED] * 32
    # The journal replays in the order the calls were started, without running f again.
    on_disk.clear()
    assert asyncio.run(dnb.LocalRunner(store).run_async(action, None, run_id="gathered")) == [i * 2 for i in range(32)]
    assert on_disk == {}
    store.close()


def test_a_second_store_object_on_the_file_opening_a_run_whose_end_another_holds_back_replays_it(path):
    """Inside one store object's map (a boundary) a finished run's last outcome and end are held in that
    object's memory. A second store object on the file in the same process (another thread's runner)
    opened the run, read its last call as PENDING and charged again. It now commits them first."""
    charged: list[int] = []

    def charge(amount: int) -> int:
        charged.append(amount)
        return amount

    first, second = dnb.SqliteStore(path), dnb.SqliteStore(path)
    first._committer.delay = 3600.0  # the held end stays held until the boundary's end
    with first.boundary():
        assert dnb.LocalRunner(first).run(lambda _, ctx: ctx.durable_execute(charge, 7), None, run_id="order") == 7
        assert dnb.LocalRunner(second).run(lambda _, ctx: ctx.durable_execute(charge, 7), None, run_id="order") == 7
    assert charged == [7]
    assert [c.origin for c in second.calls("order")] == [dnb.Origin.EXECUTED]
    first.close()
    second.close()
