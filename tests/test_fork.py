"""``store.fork`` / ``runner.fork``: a new run from a prefix of another, on every store.

Each test asserts the journal of both runs and how often each side effect ran
(``Counter``), because "the fork returned the right value" cannot tell a replayed
call from a re-executed one.
"""

from __future__ import annotations

import collections
from pathlib import Path

import pytest

import durable_nb as dnb
from durable_nb import Origin, RunStatus, Status

ran: collections.Counter[str] = collections.Counter()


def charge(order: str, amount: int) -> dict:
    ran["charge"] += 1
    return {"order": order, "charged": amount}


def reserve(order: str) -> str:
    ran["reserve"] += 1
    return f"slot-{order}"


def notify(order: str, slot: str) -> str:
    ran["notify"] += 1
    return f"mail {order} {slot}"


def declined(order: str) -> None:
    ran["declined"] += 1
    raise ValueError(f"card declined for {order}")


def place_order(order: str, ctx: dnb.RunnerContext) -> str:
    c = ctx.durable_execute(charge, order, 10)
    slot = ctx.durable_execute(reserve, c["order"])
    return ctx.durable_execute(notify, order, slot)


@pytest.fixture(autouse=True)
def _fresh_counter() -> None:
    ran.clear()


def shape(store: dnb.Store, run_id: str) -> list[tuple]:
    return [(c.index, c.call_id.rsplit(".", 1)[-1], c.status.value, c.origin and c.origin.value,
             c.result_preview) for c in store.calls(run_id)]


def test_fork_copies_the_first_calls_with_outcomes_payloads_and_lineage(store):
    runner = dnb.LocalRunner(store)
    runner.run(place_order, "o1", run_id="r1")
    before = shape(store, "r1")
    new_id = store.fork("r1", at=2)
    assert new_id == "r1.fork-1"
    assert shape(store, new_id) == before[:2]
    original, fork = store.calls("r1"), store.calls(new_id)
    assert [c.payload for c in fork] == [c.payload for c in original[:2]]
    assert fork[1].result() == "slot-o1"
    rec = store.run(new_id)
    assert rec is not None
    assert (rec.parent_run_id, rec.forked_at, rec.status, rec.n_calls) == ("r1", 2, RunStatus.RUNNING, 2)
    assert store.run("r1").parent_run_id is None and store.run("r1").forked_at is None
    assert shape(store, "r1") == before


def test_running_the_fork_replays_the_copies_and_executes_from_the_fork_point(store):
    runner = dnb.LocalRunner(store)
    runner.run(place_order, "o1", run_id="r1")
    new_id = runner.fork("r1", 2)
    out = runner.run(place_order, "o1", run_id=new_id)
    assert out == "mail o1 slot-o1"
    assert ran == {"charge": 1, "reserve": 1, "notify": 2}
    assert [c.origin for c in store.calls(new_id)] == [Origin.EXECUTED] * 3
    assert store.run(new_id).status is RunStatus.COMPLETED
    assert store.calls(new_id)[2].started_at > store.calls("r1")[2].started_at
    assert len(store.calls("r1")) == 3


def test_forking_at_zero_gives_an_empty_run_and_at_the_end_a_full_copy(store):
    runner = dnb.LocalRunner(store)
    runner.run(place_order, "o1", run_id="r1")
    empty = store.fork("r1", at=0)
    full = store.fork("r1", at=3, new_run_id="copy")
    assert (empty, full) == ("r1.fork-1", "copy")
    assert store.calls(empty) == []
    assert shape(store, full) == shape(store, "r1")
    runner.run(place_order, "o1", run_id=full)
    assert ran == {"charge": 1, "reserve": 1, "notify": 1}


def test_default_fork_ids_count_up(store):
    dnb.LocalRunner(store).run(place_order, "o1", run_id="r1")
    assert [store.fork("r1", at=1) for _ in range(3)] == ["r1.fork-1", "r1.fork-2", "r1.fork-3"]
    assert store.fork("r1.fork-2", at=1) == "r1.fork-2.fork-1"
    assert store.run("r1.fork-2.fork-1").parent_run_id == "r1.fork-2"


def test_a_recorded_failure_is_copied_and_replayed_as_the_same_exception(store):
    def action(order: str, ctx: dnb.RunnerContext) -> str:
        try:
            ctx.durable_execute(declined, order)
        except ValueError:
            return ctx.durable_execute(reserve, order)
        return "unreachable"

    runner = dnb.LocalRunner(store)
    runner.run(action, "o2", run_id="r2")
    new_id = store.fork("r2", at=1)
    assert store.calls(new_id)[0].status is Status.FAILED
    assert runner.run(action, "o2", run_id=new_id) == "slot-o2"
    assert ran == {"declined": 1, "reserve": 2}


def test_fork_refuses_an_unknown_run(store):
    with pytest.raises(dnb.RunNotFoundError, match="no run 'nope'") as info:
        store.fork("nope", at=0)
    assert isinstance(info.value, KeyError) and isinstance(info.value, dnb.DurableError)
    assert store.runs() == []


@pytest.mark.parametrize("at", [-1, 4, 100])
def test_fork_refuses_an_index_out_of_range(store, at):
    dnb.LocalRunner(store).run(place_order, "o1", run_id="r1")
    with pytest.raises(ValueError, match=r"must be in 0\.\.3"):
        store.fork("r1", at=at)
    assert [r.run_id for r in store.runs()] == ["r1"]


def test_fork_refuses_a_non_integer_index(store):
    dnb.LocalRunner(store).run(place_order, "o1", run_id="r1")
    with pytest.raises(TypeError, match="call index"):
        store.fork("r1", at="2")  # type: ignore[arg-type]


def test_fork_takes_an_index_read_from_a_dataframe(store):
    """``store.to_pandas()`` gives numpy integers: forking at the failed call it shows must not be a TypeError."""
    dnb.LocalRunner(store).run(place_order, "o1", run_id="r1")
    at = store.to_pandas(run_id="r1")["index"].iloc[1]
    assert type(at).__module__ == "numpy"
    new_id = store.fork("r1", at=at)
    assert store.run(new_id).forked_at == 1 and type(store.run(new_id).forked_at) is int
    assert len(store.calls(new_id)) == 1
    with pytest.raises(TypeError, match="call index"):
        store.fork("r1", at=True)


def test_fork_refuses_an_existing_new_run_id(store):
    runner = dnb.LocalRunner(store)
    runner.run(place_order, "o1", run_id="r1")
    runner.run(place_order, "o2", run_id="r2")
    before = shape(store, "r2")
    with pytest.raises(ValueError, match="a run with that id exists"):
        store.fork("r1", at=1, new_run_id="r2")
    assert shape(store, "r2") == before
    assert store.run("r2").parent_run_id is None


@pytest.fixture(params=["sqlite", "postgres"])
def two_clients(request: pytest.FixtureRequest, tmp_path: Path):
    """Two store objects on one journal, as two kernels (or machines) have."""
    if request.param == "postgres":
        dsn = request.getfixturevalue("pg_dsn")
        clients = [dnb.PostgresStore(dsn), dnb.PostgresStore(dsn)]
    else:
        clients = [dnb.SqliteStore(tmp_path / "journal.db"), dnb.SqliteStore(tmp_path / "journal.db")]
    yield clients
    for client in clients:
        client.close()


def _at_once(*forks):
    """Run the forks in threads released together; each one's new id or exception."""
    import threading

    start, out = threading.Barrier(len(forks)), [None] * len(forks)

    def go(i: int) -> None:
        start.wait()
        try:
            out[i] = forks[i]()
        except Exception as exc:
            out[i] = exc

    threads = [threading.Thread(target=go, args=(i,)) for i in range(len(forks))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def test_two_clients_forking_one_run_at_once_get_two_forks(two_clients):
    a, b = two_clients
    dnb.LocalRunner(a).run(place_order, "o1", run_id="r1")
    made = []
    for _ in range(8):
        made += _at_once(lambda: a.fork("r1", at=2), lambda: b.fork("r1", at=2))
    assert sorted(made, key=lambda m: int(str(m).rsplit("-", 1)[-1])) == [f"r1.fork-{n}" for n in range(1, 17)]
    assert all(len(a.calls(f)) == 2 for f in made)


def test_two_clients_forking_into_one_new_id_at_once_one_wins_the_other_is_told(two_clients):
    a, b = two_clients
    dnb.LocalRunner(a).run(place_order, "o1", run_id="r1")
    dnb.LocalRunner(a).run(place_order, "o2", run_id="r2")
    for n in range(6):
        out = _at_once(lambda n=n: a.fork("r1", at=1, new_run_id=f"x{n}"),
                       lambda n=n: b.fork("r2", at=2, new_run_id=f"x{n}"))
        assert sorted(map(type, out), key=str) == sorted([str, ValueError], key=str), out
        error = next(o for o in out if isinstance(o, ValueError))
        assert "a run with that id exists" in str(error)
        winner = "r1" if out[0] == f"x{n}" else "r2"
        assert a.run(f"x{n}").parent_run_id == winner
        assert len(a.calls(f"x{n}")) == (1 if winner == "r1" else 2)


def test_fork_refuses_to_copy_a_pending_call_but_can_fork_at_it(store):
    runner = dnb.LocalRunner(store)
    with dnb.inject_crash(call=f"{__name__}.reserve", point="after_call"), pytest.raises(dnb.SimulatedCrash):
        runner.run(place_order, "o1", run_id="r1")
    assert [c.status for c in store.calls("r1")] == [Status.SUCCEEDED, Status.PENDING]
    with pytest.raises(ValueError, match="call 1 .* is PENDING"):
        store.fork("r1", at=2)
    new_id = store.fork("r1", at=1)
    assert runner.run(place_order, "o1", run_id=new_id) == "mail o1 slot-o1"
    assert ran == {"charge": 1, "reserve": 2, "notify": 1}
    assert store.calls("r1")[1].status is Status.PENDING  # the original is untouched


def test_a_fork_survives_reopening_the_sqlite_file(tmp_path: Path):
    path = tmp_path / "journal.db"
    first = dnb.SqliteStore(path)
    dnb.LocalRunner(first).run(place_order, "o1", run_id="r1")
    new_id = first.fork("r1", at=2)
    first.close()
    again = dnb.SqliteStore(path)
    try:
        rec = again.run(new_id)
        assert rec is not None and (rec.parent_run_id, rec.forked_at) == ("r1", 2)
        assert dnb.LocalRunner(again).run(place_order, "o1", run_id=new_id) == "mail o1 slot-o1"
        assert ran == {"charge": 1, "reserve": 1, "notify": 2}
    finally:
        again.close()


ledger: dict[tuple[str, int], str] = {}
"""A payments ledger: (run id, call index) -> the charge made."""


def pay(key: tuple[str, int], amount: int) -> str:
    ran["charge"] += 1
    ledger[key] = f"charge {amount}"
    return ledger[key]


def action(amount: int, ctx: dnb.RunnerContext) -> str:
    key = (ctx.run_id, 0)
    return ctx.durable_execute(pay, key, amount, reconciler=lambda: ledger[key])  # did this run's charge happen?


def test_a_pruned_or_forgotten_forks_id_is_never_given_to_a_new_fork(store):
    """A ledger keyed by run id and call index must not take a new fork's charge for a pruned fork's.

    The reconciler asks the ledger whether the charge of *this* run happened. When a new fork got the
    id of a pruned one, it found the old fork's charge and the new charge was never made.
    """
    ledger.clear()
    runner = dnb.LocalRunner(store)
    runner.run(action, 10, run_id="r1")
    first = runner.fork("r1", 0)
    runner.run(action, 99, run_id=first)
    assert [r.run_id for r in store.prune(keep_last=1)] == ["r1"]  # the parent goes too: it may come back
    runner.run(action, 10, run_id="r1")
    second = runner.fork("r1", 0)
    store.delete_run(first)
    with dnb.inject_crash(call=f"{__name__}.pay", point="before_call"), pytest.raises(dnb.SimulatedCrash):
        runner.run(action, 50, run_id=second)
    with pytest.raises(KeyError, match="r1.fork-2"):  # no charge of this run in the ledger: recovery says so
        runner.run(action, 50, run_id=second)
    store.delete_run(second)
    assert [first, second, store.fork("r1", 0)] == ["r1.fork-1", "r1.fork-2", "r1.fork-3"]
    assert store.fork("r1", 0, new_run_id="r1.fork-7") == "r1.fork-7"
    store.delete_run("r1.fork-7")
    assert store.fork("r1", 0) == "r1.fork-8"  # an id of that form named by hand is not given either
    assert ran["charge"] == 3


def test_a_journal_from_before_fork_numbers_were_kept_goes_on_after_its_highest_fork(tmp_path: Path):
    """Its forks open and replay; a new fork takes a number after every fork in it (the gaps were pruned)."""
    import sqlite3

    path = tmp_path / "journal.db"
    store = dnb.SqliteStore(path)
    runner = dnb.LocalRunner(store)
    runner.run(place_order, "o1", run_id="r1")
    forks = [store.fork("r1", at=2) for _ in range(3)]
    runner.run(place_order, "o1", run_id=forks[2])
    store.delete_run(forks[0])
    store.delete_run(forks[1])
    store.close()
    with sqlite3.connect(path) as conn:  # as a journal written by an older durable_nb: no fork number kept
        conn.execute("DELETE FROM meta WHERE key LIKE 'fork_seq:%'")
    conn.close()
    again = dnb.SqliteStore(path)
    try:
        assert dnb.LocalRunner(again).run(place_order, "o1", run_id=forks[2]) == "mail o1 slot-o1"
        assert ran == {"charge": 1, "reserve": 1, "notify": 2}
        assert again.fork("r1", at=1) == "r1.fork-4"
        assert again.fork("r1.fork-3", at=1) == "r1.fork-3.fork-1"
    finally:
        again.close()


def test_a_kept_number_stays_the_highest_and_outlives_the_runs(store):
    """``keep_number`` keeps the highest number of a sequence (keeping one again or a lower one changes
    nothing), per sequence, whatever runs are pruned: what the notebook's attempt ids rely on."""
    assert store.last_number("cell:a:0123456789abcdef#") == 0
    for n in (2, 2, 1):
        store.keep_number("cell:a:0123456789abcdef#", n)
    assert store.last_number("cell:a:0123456789abcdef#") == 2
    store.keep_number("cell:a:0123456789abcdef#", 5)
    store.keep_number("cell:a:0123456789abcdef", 9)  # another sequence, a prefix of the first
    dnb.LocalRunner(store).run(place_order, "o1", run_id="r1")
    store.prune(keep_last=0)
    assert store.last_number("cell:a:0123456789abcdef#") == 5
    assert store.last_number("cell:a:0123456789abcdef") == 9
    with pytest.raises(TypeError, match="sequence must be a non-empty str"):
        store.keep_number("", 1)
    for bad in (0, -1, True, 1.5, "3"):
        with pytest.raises((ValueError, TypeError), match="number must be an integer 1 or more"):
            store.keep_number("s", bad)
    assert store.last_number("s") == 0


def test_a_number_too_long_to_read_back_is_refused_and_the_kept_ones_stay(store):
    """A number of more than 18 digits was kept, then read back as none: ``last_number`` fell to 0 and the
    attempts kept before it could be given again. Refused now, before the store is touched (a number of
    thousands of digits too, whose repr alone raises); a ``numpy.str_`` names the same sequence as its str."""
    import numpy as np

    store.keep_number("s", 3)
    for huge in (10**18, 10**30, np.uint64(2**64 - 1), 10**5000, -(10**5000)):
        with pytest.raises(ValueError, match="number must be an integer 1 or more, of at most 18 digits"):
            store.keep_number("s", huge)
    assert store.last_number("s") == 3
    store.keep_number(np.str_("s"), 10**18 - 1)  # the largest that reads back
    assert store.last_number("s") == store.last_number(np.str_("s")) == 10**18 - 1


def test_two_clients_keeping_numbers_at_once_keep_the_highest(two_clients):
    a, b = two_clients
    for n in range(1, 9):  # a fresh sequence each time: both clients may create its row at once
        _at_once(lambda n=n: a.keep_number(f"seq{n}", 2 * n), lambda n=n: b.keep_number(f"seq{n}", 2 * n - 1))
        assert a.last_number(f"seq{n}") == b.last_number(f"seq{n}") == 2 * n


def test_a_hand_edited_kept_number_counts_as_none(tmp_path: Path):
    import sqlite3

    path = tmp_path / "journal.db"
    with dnb.SqliteStore(path) as store:
        store.keep_number("s", 3)
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE meta SET value = 'three' WHERE key = 'issued:s'")
    conn.close()
    with dnb.SqliteStore(path) as again:
        assert again.last_number("s") == 0
        again.keep_number("s", 1)
        assert again.last_number("s") == 1


def test_a_fork_number_edited_by_hand_to_thousands_of_digits_does_not_stop_forks(tmp_path: Path):
    """A hand-edited ``fork_seq`` meta value (or a run named ``r1.fork-`` and 5,000 digits) failed every fork of
    the run with Python's "Exceeds the limit (4300 digits) for integer string conversion"."""
    import sqlite3

    path = tmp_path / "journal.db"
    with dnb.SqliteStore(path) as store:
        dnb.LocalRunner(store).run(place_order, "o1", run_id="r1")
        assert store.fork("r1", at=1) == "r1.fork-1"
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE meta SET value = ? WHERE key = 'fork_seq:r1'", ("9" * 5000,))
    conn.close()
    with dnb.SqliteStore(path) as store:
        assert store.fork("r1", at=1) == "r1.fork-2"  # not a number a store gives: the forks in the journal count
    memory = dnb.MemoryStore()
    dnb.LocalRunner(memory).run(place_order, "o1", run_id="r1")
    memory.fork("r1", at=1, new_run_id="r1.fork-" + "7" * 5000)
    assert memory.fork("r1", at=1) == "r1.fork-1"


@pytest.mark.parametrize("store", ["memory", "sqlite"], indirect=True)  # PostgreSQL refuses such an id at open
def test_a_run_id_with_a_lone_surrogate_forks_again_and_keeps_its_lineage(store):
    """A run id from a non-UTF-8 file name (SQLite keeps it as a BLOB): the fork's parent_run_id read back as
    bytes, and the second fork of the run failed with "sqlite3.DatabaseError: another row available"."""
    runner = dnb.LocalRunner(store)
    parent = "order-\udcff"
    runner.run(place_order, "o1", run_id=parent)
    first, second = store.fork(parent, 1), store.fork(parent, 2)
    assert (first, second) == (f"{parent}.fork-1", f"{parent}.fork-2")
    assert store.run(first).parent_run_id == parent and store.run(second).parent_run_id == parent
    ran.clear()
    runner.run(place_order, "o1", run_id=second)
    assert ran == {"notify": 1}  # calls 0 and 1 replay
