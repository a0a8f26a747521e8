"""``store.prune``: retention by age, count and status; unfinished runs stay; SQLite gives space back."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import pytest

import durable_nb as dnb
from durable_nb import RunStatus


def work(x: int) -> int:
    return x * 2


def fails(x: int) -> int:
    raise ValueError(f"bad {x}")


def ok(x: int, ctx: dnb.RunnerContext) -> int:
    return ctx.durable_execute(work, x)


def bad(x: int, ctx: dnb.RunnerContext) -> int:
    return ctx.durable_execute(fails, x)


def make_runs(store: dnb.Store, spec: str) -> list[str]:
    """One run per letter, in order: C completed, F failed, P crashed (RUNNING with a PENDING call)."""
    runner = dnb.LocalRunner(store)
    ids = []
    for i, kind in enumerate(spec):
        rid = f"{kind}{i}"
        ids.append(rid)
        if kind == "C":
            runner.run(ok, i, run_id=rid)
        elif kind == "F":
            with pytest.raises(ValueError):
                runner.run(bad, i, run_id=rid)
        else:
            with dnb.inject_crash(call=f"{__name__}.work", point="after_call"), pytest.raises(dnb.SimulatedCrash):
                runner.run(ok, i, run_id=rid)
        time.sleep(0.002)  # distinct updated_at, so "most recent" is well defined
    return ids


def ids(records: list[dnb.RunRecord]) -> list[str]:
    return [r.run_id for r in records]


def remaining(store: dnb.Store) -> list[str]:
    return sorted(r.run_id for r in store.runs())


def test_keep_last_keeps_the_most_recent_runs_and_returns_the_removed_oldest_first(store):
    make_runs(store, "CCCCC")
    removed = store.prune(keep_last=2)
    assert ids(removed) == ["C0", "C1", "C2"]
    assert all(isinstance(r, dnb.RunRecord) and r.status is RunStatus.COMPLETED for r in removed)
    assert remaining(store) == ["C3", "C4"]
    assert store.calls("C0") == [] and store.run("C0") is None
    assert store.count_calls() == 2


def test_keep_last_zero_keeps_none(store):
    make_runs(store, "CCF")
    assert ids(store.prune(keep_last=0)) == ["C0", "C1", "F2"]
    assert store.runs() == []


def test_keep_last_takes_a_numpy_integer_as_fork_takes_one(store):
    """A count computed with numpy or read from a DataFrame (``numpy.int64``) was refused as not an int."""
    import numpy as np

    make_runs(store, "CCC")
    with pytest.raises(ValueError, match="keep_last must be >= 0"):
        store.prune(keep_last=np.int64(-1))
    with pytest.raises(TypeError, match="keep_last must be an int"):
        store.prune(keep_last=np.float64(1.0))
    assert ids(store.prune(keep_last=np.int64(1))) == ["C0", "C1"]
    assert remaining(store) == ["C2"]


def test_older_than_compares_the_last_update(store):
    make_runs(store, "CC")
    assert store.prune(older_than=timedelta(days=30)) == []
    assert ids(store.prune(older_than=timedelta(0))) == ["C0", "C1"]


def test_status_filters_by_run_status_given_as_text_or_enum(store):
    make_runs(store, "CFCF")
    assert ids(store.prune(status="FAILED")) == ["F1", "F3"]
    assert ids(store.prune(status=RunStatus.COMPLETED, dry_run=True)) == ["C0", "C2"]


def test_filters_combine(store):
    make_runs(store, "CFCFC")
    # outside the 2 most recent (F3, C4) AND completed: only C0 and C2
    assert ids(store.prune(keep_last=2, status="COMPLETED")) == ["C0", "C2"]
    assert remaining(store) == ["C4", "F1", "F3"]
    assert store.prune(keep_last=0, status="COMPLETED", older_than=timedelta(days=1)) == []


def test_unfinished_runs_stay_unless_include_pending(store):
    make_runs(store, "CPC")
    runner = dnb.LocalRunner(store)
    new_id = runner.fork("C0", at=1)  # a fork starts RUNNING
    waiting_calls = []

    def asks(_: object, ctx: dnb.RunnerContext) -> str:
        waiting_calls.append(1)
        return ctx.durable_input("go?")

    with pytest.raises(dnb.AwaitingInput):
        runner.run(asks, None, run_id="W")
    assert store.run("W").status is RunStatus.WAITING
    assert ids(store.prune(keep_last=0)) == ["C0", "C2"]
    assert remaining(store) == sorted(["P1", new_id, "W"])
    assert sorted(ids(store.prune(keep_last=0, include_pending=True))) == sorted(["P1", new_id, "W"])
    assert store.runs() == [] and store.pending() == []


def test_dry_run_returns_the_same_runs_and_removes_nothing(store):
    make_runs(store, "CFC")
    before = store.runs()
    planned = store.prune(keep_last=1, dry_run=True)
    assert store.runs() == before
    assert planned == store.prune(keep_last=1)
    assert remaining(store) == ["C2"]


def test_the_discarded_history_of_a_pruned_run_goes_too(store):
    def other(x: int) -> int:
        return x

    def changed(x: int, ctx: dnb.RunnerContext) -> int:
        return ctx.durable_execute(other, x)

    make_runs(store, "C")
    with pytest.warns(dnb.NonDeterminismWarning):
        dnb.LocalRunner(store).run(changed, 0, run_id="C0")
    assert len(store.discarded("C0")) == 1
    store.prune(keep_last=0)
    assert store.discarded() == []


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"keep_last": -1}, ValueError, "keep_last must be >= 0"),
        ({"keep_last": "3"}, TypeError, "keep_last must be an int"),
        ({"keep_last": True}, TypeError, "keep_last must be an int"),
        ({"older_than": 30}, TypeError, "timedelta"),
        ({"older_than": timedelta(days=-1)}, ValueError, "must not be negative"),
        ({"status": "DONE"}, ValueError, "status must be"),
        ({"status": []}, ValueError, "non-empty collection"),
        ({"status": 3}, ValueError, "status must be"),
        ({"include_pending": "no"}, TypeError, "include_pending must be True or False"),
        ({"include_pending": 1}, TypeError, "include_pending must be True or False"),
        ({"dry_run": 0}, TypeError, "dry_run must be True or False"),
    ],
)
def test_bad_arguments_are_refused_before_anything_is_removed(store, kwargs, error, match):
    make_runs(store, "CC")
    with pytest.raises(error, match=match):
        store.prune(**kwargs)
    assert remaining(store) == ["C0", "C1"]


def test_pruning_sqlite_gives_the_space_back(tmp_path: Path):
    path = tmp_path / "journal.db"
    store = dnb.SqliteStore(path)

    def big(i: int) -> bytes:
        return bytes([i % 256]) * 200_000

    def action(i: int, ctx: dnb.RunnerContext) -> int:
        return len(ctx.durable_execute(big, i))

    runner = dnb.LocalRunner(store)
    for i in range(20):
        runner.run(action, i, run_id=f"r{i}")
    store._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    full = path.stat().st_size
    assert len(store.prune(keep_last=2)) == 18
    assert path.stat().st_size < full / 3
    assert runner.run(action, 19, run_id="r19") == 200_000
    store.close()


def test_a_run_open_in_a_live_context_is_never_removed(store):
    make_runs(store, "C")
    with dnb.LocalRunner(store).context("live") as ctx:
        ctx.durable_execute(work, 1)
        removed = store.prune(keep_last=0, include_pending=True)
        assert ids(removed) == ["C0"]
        assert ctx.durable_execute(work, 2) == 4
    assert remaining(store) == ["live"]
    assert [c.status.value for c in store.calls("live")] == ["SUCCEEDED", "SUCCEEDED"]


HOLDER = """
import sys, time
import durable_nb as dnb
store = dnb.SqliteStore(sys.argv[1])
with dnb.LocalRunner(store).context("C0") as ctx:
    print("open", flush=True)
    sys.stdin.readline()
"""


def test_a_run_another_process_holds_open_without_writing_is_never_removed(tmp_path: Path):
    """A context in another process that has only replayed holds the run by its OS lock alone."""
    import subprocess
    import sys

    path = tmp_path / "j.db"
    store = dnb.SqliteStore(path)
    make_runs(store, "CC")
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "open\n"
        assert store.run_is_open("C0") and not store.run_is_open("C1")
        assert ids(store.prune(keep_last=0)) == ["C1"]
        assert remaining(store) == ["C0"]
        with pytest.raises(dnb.RunBusyError, match="another process"):
            store.delete_run("C0")
    finally:
        holder.communicate("\n", timeout=60)
    assert holder.returncode == 0
    assert not store.run_is_open("C0")
    assert ids(store.prune(keep_last=0)) == ["C0"]
    store.close()


def two_stores(kind: str, tmp_path, request) -> tuple[dnb.Store, dnb.Store]:
    """Two stores on one journal (two kernels), closed after the test."""
    if kind == "postgres":
        dsn = request.getfixturevalue("pg_dsn")
        store, other = dnb.PostgresStore(dsn), dnb.PostgresStore(dsn)
    else:
        store, other = dnb.SqliteStore(tmp_path / "j.db"), dnb.SqliteStore(tmp_path / "j.db")
    request.addfinalizer(store.close)
    request.addfinalizer(other.close)
    return store, other


def between_read_and_select(monkeypatch, meanwhile) -> None:
    """Run ``meanwhile()`` once, after the next prune read the runs and before it looks at any of them."""
    from durable_nb.journal import history

    select = history.PruneRule.select

    def first(self, *args, **kwargs):
        monkeypatch.setattr(history.PruneRule, "select", select)
        meanwhile()
        return select(self, *args, **kwargs)

    monkeypatch.setattr(history.PruneRule, "select", first)


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_a_run_written_by_another_kernel_after_prune_read_it_stays(kind, tmp_path, request, monkeypatch):
    """Another kernel runs an edited action on an old run between prune's read of the runs and its
    delete: the run is fresh now (a call was just executed), so it must stay."""
    store, other = two_stores(kind, tmp_path, request)

    def longer(x: int, ctx: dnb.RunnerContext) -> int:
        return ok(x, ctx) + ctx.durable_execute(work, x + 1)

    dnb.LocalRunner(store).run(ok, 1, run_id="old")
    time.sleep(0.3)

    def rerun() -> None:
        dnb.LocalRunner(other).run(longer, 1, run_id="old")
        other.flush()

    between_read_and_select(monkeypatch, rerun)
    assert store.prune(older_than=timedelta(seconds=0.2)) == []
    assert [c.index for c in store.calls("old")] == [0, 1]


def asks(x: int, ctx: dnb.RunnerContext) -> bool:
    ctx.durable_execute(work, x)
    return ctx.durable_input("refund?", choices=["yes", "no"]) == "yes"


def waiting_run(store: dnb.Store, run_id: str) -> None:
    with pytest.raises(dnb.AwaitingInput):
        dnb.LocalRunner(store).run(asks, 1, run_id=run_id)


def test_an_answer_is_activity_so_a_just_answered_run_is_not_older_than(store):
    """``store.answer`` (and a ReconcilePanel outcome) writes the run from outside it: the run was last
    updated then, so ``older_than`` must not take it for an old run and delete the answer with it."""
    waiting_run(store, "w")
    time.sleep(0.3)
    store.answer("w", 1, "yes")
    assert store.prune(older_than=timedelta(seconds=0.2), include_pending=True) == []
    assert dnb.LocalRunner(store).run(asks, 1, run_id="w") is True


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_a_run_answered_by_another_kernel_after_prune_read_it_stays(kind, tmp_path, request, monkeypatch):
    """A WAITING run is answered between prune's read and its delete: the acknowledged answer must not go."""
    store, other = two_stores(kind, tmp_path, request)
    waiting_run(store, "w")
    between_read_and_select(monkeypatch, lambda: other.answer("w", 1, "yes"))
    assert store.prune(status="WAITING", include_pending=True) == []
    assert dnb.LocalRunner(store).run(asks, 1, run_id="w") is True


def test_a_sqlite_prune_of_many_runs_locks_them_a_batch_at_a_time(tmp_path, monkeypatch):
    """Linux walks a file's whole list of record locks at every lock call: a prune that locked all of
    80,000 selected runs at once took 3 minutes (20,000: 5 s). It locks and deletes a batch at a time."""
    from durable_nb.journal import history
    from durable_nb.journal.lease import FileLocks

    store = dnb.SqliteStore(tmp_path / "j.db")
    dnb.LocalRunner(store).map(ok, list(range(30)))
    monkeypatch.setattr(history, "PRUNE_BATCH", 8)
    most = [0]
    try_lock = FileLocks.try_lock

    def counting(self: FileLocks, run_id: str) -> bool:
        got = try_lock(self, run_id)
        most[0] = max(most[0], len(self.counts))
        return got

    monkeypatch.setattr(FileLocks, "try_lock", counting)
    assert len(store.prune(keep_last=2)) == 28
    assert 0 < most[0] <= 8
    assert len(store.runs()) == 2
    store.close()


def test_a_sqlite_prune_reads_the_runs_once_and_checks_a_batch_in_a_few_queries(tmp_path, monkeypatch):
    """A prune of 1,000,000 runs read each run's row again (``run_is_open``) to learn its owner, then ran two
    queries per run under the write lock (43 s, writers waiting on every batch). The selection answers from
    the records it read; a batch's re-check reads its runs a few hundred per query."""
    from durable_nb.stores import sqlite_text

    store = dnb.SqliteStore(tmp_path / "j.db")
    dnb.LocalRunner(store).map(ok, list(range(40)))
    make_runs(store, "P")  # a crashed run: its PENDING call keeps it
    monkeypatch.setattr(dnb.SqliteStore, "run", lambda self, run_id: pytest.fail(f"run({run_id!r}) read again"))
    statements: list[str] = []
    execute = sqlite_text.Connection.execute

    def counting(self: sqlite_text.Connection, sql: str, parameters: object = (), /) -> object:
        statements.append(sql)
        return execute(self, sql, parameters)

    monkeypatch.setattr(sqlite_text.Connection, "execute", counting)
    assert len(store.prune(keep_last=0, dry_run=True)) == 40
    removed = store.prune(keep_last=0)
    assert len(removed) == 40
    assert len(statements) < 40  # not one (or two) per run
    monkeypatch.undo()
    assert [r.run_id for r in store.runs()] == ["P0"]
    store.close()


def test_a_sqlite_prune_deletes_runs_whose_ids_hold_lone_surrogates_and_keeps_their_pending(tmp_path):
    """A run id with a lone surrogate is stored as a BLOB; the batch re-check read it back as bytes, so the dry
    run listed the run and the prune kept it (and a PENDING call of such a run went unseen)."""
    store = dnb.SqliteStore(tmp_path / "j.db")
    runner = dnb.LocalRunner(store)
    for run_id in ("plain", "s\ud800x", "t\udcffy"):
        with runner.context(run_id) as ctx:
            ctx.durable_execute(pow, 2, 3)
    with pytest.raises(dnb.SimulatedCrash), dnb.inject_crash(call="builtins.pow", point="before_call"), \
            runner.context("p\ud801") as ctx:
        ctx.durable_execute(pow, 2, 2)
    listed = [r.run_id for r in store.prune(keep_last=0, dry_run=True)]
    assert listed == ["plain", "s\ud800x", "t\udcffy"]
    assert [r.run_id for r in store.prune(keep_last=0)] == listed
    assert [r.run_id for r in store.runs()] == ["p\ud801"]  # its PENDING call keeps it
    assert [r.run_id for r in store.prune(keep_last=0, include_pending=True)] == ["p\ud801"]
    assert store.runs() == []
    store.close()
