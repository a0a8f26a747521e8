"""Run leases: one live context per run, take-over, and every write fenced (issue 9, issue 10).

A stale context (its lease taken over, or its ``with`` block ended) must never
overwrite what a newer context journaled: it gets ``LeaseLostError`` and writes
nothing. Holding a lease costs no write, so a replay leaves the file untouched.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

import durable_nb as dnb
from durable_nb import Origin, Status
from durable_nb.journal.context import open_run
from durable_nb.journal.lease import new_owner, owner_is_alive
from durable_nb.journal.replay import identify


def charge(order: str) -> str:
    return f"charged {order}"


def test_a_stolen_run_refuses_the_late_completion_of_the_old_context(store):
    """A has a call PENDING; B steals and reconciles it; A's late outcome is refused, B's record stays."""
    with open_run(store, "order-1") as a:
        step = a.journal.begin(*identify(charge, ("o1",), {}), False)  # PENDING durable, the function "runs"...
        assert store.calls("order-1")[0].status is Status.PENDING
        with open_run(store, "order-1", steal=True) as b:
            got = b.durable_execute(charge, "o1", reconciler=lambda: "found in the ledger")
        # ... and A's function returns only now.
        with pytest.raises(dnb.LeaseLostError, match="order-1") as lost:
            a.journal.succeed(step, "charged twice")
        assert "Nothing was written" in str(lost.value)
    assert got == "found in the ledger"
    (rec,) = store.calls("order-1")
    assert (rec.status, rec.origin, rec.result()) == (Status.SUCCEEDED, Origin.RECONCILED, "found in the ledger")


def test_a_stolen_run_refuses_every_new_call_of_the_old_context(store):
    with open_run(store, "order-2") as a:
        a.durable_execute(charge, "o1")
        with open_run(store, "order-2", steal=True) as b:
            b.durable_execute(charge, "o1")
            with pytest.raises(dnb.LeaseLostError, match="taken over"):
                a.durable_execute(charge, "o2")
    assert [c.args_digest for c in store.calls("order-2")] == [store.calls("order-2")[0].args_digest]


def test_a_context_used_after_its_with_block_is_refused_and_writes_nothing(store):
    runner = dnb.LocalRunner(store)
    with runner.context("late") as ctx:
        ctx.durable_execute(charge, "o1")
    before = store.calls("late")
    with pytest.raises(dnb.LeaseLostError, match="with. block has ended"):
        ctx.durable_execute(charge, "o2")
    assert store.calls("late") == before


def test_a_store_write_with_an_ended_owner_is_refused(store):
    owner = new_owner()
    store.open_run("gone", owner)
    store.append_pending("gone", 0, "f", "d", 0.0, owner=owner)
    store.close_run("gone", owner, None)
    with pytest.raises(dnb.LeaseLostError, match="ended"):
        store.append_pending("gone", 1, "f", "d", 0.0, owner=owner)
    assert len(store.calls("gone")) == 1


def test_lease_lost_error_names_run_and_owner_and_pickles():
    import pickle

    err = dnb.LeaseLostError("r1", "process 1 on h", "the run was taken over")
    again = pickle.loads(pickle.dumps(err))
    assert (again.run_id, again.owner) == ("r1", "process 1 on h")
    assert "r1" in str(again) and "Open the run again" in str(again)


def test_opening_a_busy_run_in_this_process_is_refused_until_it_closes(store):
    runner = dnb.LocalRunner(store)
    with runner.context("busy"), pytest.raises(dnb.RunBusyError), runner.context("busy"):
        pass
    with runner.context("busy") as ctx:
        ctx.durable_execute(charge, "o1")


def test_owners_of_this_process_are_alive_until_they_end_and_other_hosts_are_not_assumed_alive():
    owner = new_owner()
    assert owner_is_alive(owner)
    from durable_nb.journal.lease import end_owner

    end_owner(owner)
    assert not owner_is_alive(owner)
    assert not owner_is_alive("some-other-host:1:123.00:abcdef")


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_replaying_a_finished_run_writes_nothing_to_the_journal(tmp_path):
    path = tmp_path / "j.db"
    store = dnb.SqliteStore(path)
    runner = dnb.LocalRunner(store)
    runner.run(lambda _, ctx: ctx.durable_execute(charge, "o1"), None, run_id="done")
    store.close()
    wal = Path(f"{path}-wal")
    assert not wal.exists()  # checkpointed into the file at close
    before = file_digest(path)
    again = dnb.SqliteStore(path)
    assert dnb.LocalRunner(again).run(lambda _, ctx: ctx.durable_execute(charge, "o1"), None, run_id="done") == (
        "charged o1"
    )
    assert file_digest(path) == before
    assert not wal.exists() or wal.stat().st_size == 0  # SQLite may create an empty WAL to read: no frame
    assert again.run("done").attempts == 1  # only the open that wrote counts
    again.close()


HOLDER = textwrap.dedent(
    """
    import sys
    import durable_nb as dnb
    store = dnb.SqliteStore(sys.argv[1])
    with dnb.LocalRunner(store).context("held"):
        print("open", flush=True)
        sys.stdin.readline()
    """
)


@pytest.mark.timeout(60)
def test_a_run_held_by_a_live_process_without_any_write_is_busy_here(tmp_path):
    path = tmp_path / "j.db"
    dnb.SqliteStore(path).close()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "open\n"
        store = dnb.SqliteStore(path)
        with pytest.raises(dnb.RunBusyError, match="held"), dnb.LocalRunner(store).context("held"):
            pass
        assert store.run("held") is None  # neither the holder nor the refused open wrote anything
    finally:
        assert holder.stdin is not None
        holder.stdin.write("\n")
        holder.stdin.flush()
        holder.wait(timeout=30)
    with dnb.LocalRunner(store).context("held") as ctx:  # the holder is gone: free again
        ctx.durable_execute(charge, "o1")


CRASHER = textwrap.dedent(
    """
    import os, sys
    import durable_nb as dnb
    store = dnb.open_store(sys.argv[1])
    print(os.getpid(), flush=True)
    with dnb.LocalRunner(store).context("held") as ctx:
        ctx.durable_execute(os._exit, 9)  # killed inside a durable call: PENDING, the row names this process
    """
)


def busy_message_while_a_recovery_holds_a_crashed_run(url: str) -> tuple[str, str]:
    """(the dead process's pid, the RunBusyError a third process gets while a second one recovers the run)."""
    crashed = subprocess.run([sys.executable, "-c", CRASHER, url], capture_output=True, text=True, timeout=60)
    dead = crashed.stdout.split()[0]
    holder = subprocess.Popen([sys.executable, "-c", HOLDER.replace("dnb.SqliteStore", "dnb.open_store"), url],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "open\n"  # opened, nothing written
        with pytest.raises(dnb.RunBusyError) as busy, dnb.LocalRunner(dnb.open_store(url)).context("held"):
            pass
    finally:
        assert holder.stdin is not None
        holder.stdin.write("\n")
        holder.stdin.flush()
        holder.wait(timeout=30)
    return dead, str(busy.value)


@pytest.mark.timeout(60)
def test_a_run_busy_with_a_recovery_does_not_name_the_killed_process_it_recovers(tmp_path):
    """Two kernels recovering a cell a third one died in: the refused one was told the run "is already
    open by process P", P being the killed kernel (still named by the run's row), not the recovering one."""
    dead, message = busy_message_while_a_recovery_holds_a_crashed_run(str(tmp_path / "j.db"))
    assert f"process {dead} " not in message
    assert "already open by another process, a recovery" in message


def test_a_killed_holder_releases_its_run_with_its_process(tmp_path):
    path = tmp_path / "j.db"
    dnb.SqliteStore(path).close()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None and holder.stdout.readline() == "open\n"
    holder.kill()
    holder.wait(timeout=30)
    store = dnb.SqliteStore(path)
    with dnb.LocalRunner(store).context("held") as ctx:
        assert ctx.durable_execute(charge, "o1") == "charged o1"


def test_sixteen_threads_sharing_one_store_each_get_their_own_run(sqlite_store):
    runner = dnb.LocalRunner(sqlite_store)
    out: dict[int, list[str]] = {}

    def work(k: int) -> None:
        out[k] = runner.run(lambda _, ctx: [ctx.durable_execute(charge, f"{k}-{i}") for i in range(5)], None,
                            run_id=f"t{k}")

    threads = [threading.Thread(target=work, args=(k,)) for k in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert out == {k: [f"charged {k}-{i}" for i in range(5)] for k in range(16)}
    assert all(len(sqlite_store.calls(f"t{k}")) == 5 for k in range(16))
