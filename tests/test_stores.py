"""Store behaviour users rely on: opening files safely, URLs, queries, pickling."""

from __future__ import annotations

import hashlib
import os
import pickle
import sqlite3
from pathlib import Path

import pytest

import durable_nb as dnb
from durable_nb import Status
from durable_nb.journal.records import Outcome


def fill(store: dnb.Store, runs: int = 3, calls: int = 4) -> None:
    runner = dnb.LocalRunner(store)
    for r in range(runs):
        with runner.context(f"r{r}") as ctx:
            for i in range(calls):
                ctx.durable_execute(pow, r, i)


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_file_that_is_not_sqlite_is_refused_and_left_unchanged(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("my precious notes\n" * 100)
    before = file_digest(path)
    with pytest.raises(dnb.JournalFormatError, match="not a durable_nb journal"):
        dnb.SqliteStore(path)
    assert file_digest(path) == before
    assert not Path(str(path) + "-wal").exists()


def test_another_sqlite_database_is_refused_and_left_unchanged(tmp_path):
    path = tmp_path / "app.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE users (id INTEGER)")
    conn.commit()
    conn.close()
    before = file_digest(path)
    with pytest.raises(dnb.JournalFormatError, match="tables: users"):
        dnb.SqliteStore(path)
    assert file_digest(path) == before


def test_a_journal_from_a_newer_version_is_refused_and_left_unchanged(tmp_path):
    path = tmp_path / "j.db"
    fill(dnb.SqliteStore(path))
    conn = sqlite3.connect(path)
    conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    before = file_digest(path)
    with pytest.raises(dnb.JournalFormatError, match="version 99.*Upgrade"):
        dnb.SqliteStore(path)
    assert file_digest(path) == before


def test_journal_survives_reopening_with_payloads(tmp_path):
    path = tmp_path / "j.db"
    fill(dnb.SqliteStore(path))
    again = dnb.SqliteStore(path)
    assert [r.run_id for r in again.runs()] == ["r0", "r1", "r2"]
    assert [c.result() for c in again.calls("r2")] == [1, 2, 4, 8]
    assert again.run("r1").n_calls == 4


def test_sqlite_uses_wal_and_full_sync(sqlite_store):
    conn = sqlite_store._conn
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_open_store_urls(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert isinstance(dnb.open_store("memory://"), dnb.MemoryStore)
    assert dnb.open_store("memory://shared") is dnb.open_store("memory://shared")
    assert dnb.open_store("sqlite:///a.db").path == tmp_path / "a.db"
    assert dnb.open_store(f"sqlite:///{tmp_path}/b.db").path == tmp_path / "b.db"
    assert dnb.open_store(str(tmp_path / "c.db")).path == tmp_path / "c.db"
    assert dnb.open_store().path == tmp_path / ".durable" / "journal.db"
    with pytest.raises(ValueError, match="unsupported URL 'redis://x'.*sqlite:///.*postgresql://"):
        dnb.open_store("redis://x")


def test_a_misspelt_store_url_or_a_runner_where_a_store_goes_names_the_fix(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for url, meant in [("sqlte:///a.db", "sqlite:///"), ("memroy://", "memory://"), ("postgressql://h/db", "postgresql://")]:
        with pytest.raises(ValueError, match=f"did you mean '{meant}'"):
            dnb.open_store(url)
    runner = dnb.LocalRunner(dnb.MemoryStore())
    with pytest.raises(TypeError, match=r"got LocalRunner .*pass its .store instead \(runner.store\)"):
        dnb.open_store(runner)  # what a widget does with what it is given: dnb.JournalView(runner)
    with pytest.raises(TypeError) as err:
        dnb.open_store(runner.store.to_pandas())
    assert "\n" not in str(err.value)  # a DataFrame's repr ran over many lines of the message
    assert list(tmp_path.iterdir()) == []


def test_local_runner_defaults_to_the_embedded_journal_under_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runner = dnb.LocalRunner()
    runner.run(lambda x, ctx: ctx.durable_execute(abs, x), -3, run_id="d")
    assert (tmp_path / ".durable" / "journal.db").exists()
    assert dnb.SqliteStore(tmp_path / ".durable" / "journal.db").calls("d")[0].result() == 3


def test_sqlite_store_pickles_to_the_same_file_and_memory_store_refuses(sqlite_store):
    fill(sqlite_store, runs=1)
    clone = pickle.loads(pickle.dumps(sqlite_store))
    assert clone.path == sqlite_store.path and len(clone.calls("r0")) == 4
    with pytest.raises(TypeError, match="use SqliteStore"):
        pickle.dumps(dnb.MemoryStore())


def test_query_and_count_page_through_calls_in_journal_order(store):
    fill(store, runs=3, calls=4)
    page = store.query_calls(offset=5, limit=3)
    assert [(c.run_id, c.index) for c in page] == [("r1", 1), ("r1", 2), ("r1", 3)]
    assert all(c.payload is None for c in page)
    assert store.count_calls() == 12
    assert store.count_calls(run_id="r2", status="SUCCEEDED") == 4
    assert store.count_calls(call_id="builtins.pow") == 12
    assert store.count_calls(status=Status.PENDING) == 0
    with pytest.raises(ValueError, match="status must be one of"):
        store.count_calls(status="DONE")


@pytest.mark.parametrize("page, error", [
    ({"offset": -1}, ValueError), ({"limit": -1}, ValueError), ({"offset": 1.5}, TypeError),
    ({"limit": "2"}, TypeError), ({"offset": True}, TypeError),
])
def test_a_page_no_store_can_read_is_refused_alike_by_every_store(store, page, error):
    """A negative offset was SQLite's 0, memory's slice from the end and a raw psycopg error on PostgreSQL;
    a float offset made SQLite call its journal damaged."""
    import numpy as np

    fill(store, runs=1, calls=3)
    with pytest.raises(error, match=f"query_calls\\({next(iter(page))}=...\\)"):
        store.query_calls(**page)
    assert [c.index for c in store.query_calls(offset=np.int64(1), limit=None)] == [1, 2]


def test_pending_lists_in_flight_calls_across_runs(store):
    runner = dnb.LocalRunner(store)
    for rid in ("a", "b"):
        with dnb.inject_crash(call="builtins.abs", point="after_call"), pytest.raises(dnb.SimulatedCrash), \
                runner.context(rid) as ctx:
            ctx.durable_execute(abs, -1)
    assert [(c.run_id, c.status) for c in store.pending()] == [("a", Status.PENDING), ("b", Status.PENDING)]


def test_complete_call_only_if_pending_does_not_overwrite_an_outcome(store):
    fill(store, runs=1, calls=1)
    changed = store.complete_call(
        "r0", 0, Outcome(Status.SUCCEEDED, pickle.dumps(5), "5"), origin=dnb.Origin.RESOLVED, finished_at=0.0,
        only_if_pending=True,
    )
    assert changed is False and store.calls("r0")[0].result() == 1


def test_delete_run_forgets_it(store):
    fill(store, runs=2, calls=2)
    store.delete_run("r0")
    assert [r.run_id for r in store.runs()] == ["r1"] and store.calls("r0") == []


def test_delete_run_refuses_a_run_a_live_context_holds(store):
    fill(store, runs=1, calls=1)
    with dnb.LocalRunner(store).context("r0") as ctx:  # replays only: holds the run without writing
        with pytest.raises(dnb.RunBusyError):
            store.delete_run("r0")
        assert ctx.journal.calls and len(store.calls("r0")) == 1
    store.delete_run("r0")
    assert store.runs() == []


def test_record_result_on_the_wrong_status_says_what_to_check(store):
    runner = dnb.LocalRunner(store)
    with dnb.inject_crash(call="builtins.abs", point="before_call"), pytest.raises(dnb.SimulatedCrash), \
            runner.context("p") as ctx:
        ctx.durable_execute(abs, -1)
    (rec,) = store.calls("p")
    with pytest.raises(ValueError, match="PENDING, it has no result"):
        rec.result()
    with pytest.raises(ValueError, match="PENDING, it has no error"):
        rec.error()


def test_record_read_without_its_payload_says_how_to_read_it(store):
    with dnb.LocalRunner(store).context("q") as ctx:
        ctx.durable_execute(abs, -1)
    (listed,) = store.query_calls(run_id="q")
    with pytest.raises(ValueError, match=r"without its payload.*store\.call\('q', 0\)"):
        listed.result()
    assert store.call("q", 0).result() == 1


def test_previews_are_bounded_text(store):
    with dnb.LocalRunner(store).context("big") as ctx:
        ctx.durable_execute(lambda: "x" * 100_000)
        ctx.durable_execute(lambda: list(range(10_000)))
    previews = [c.result_preview for c in store.calls("big")]
    assert all(len(p) <= 200 for p in previews)
    assert previews[1].startswith("[0, 1, 2")


def test_an_empty_existing_file_becomes_a_journal(tmp_path):
    path = tmp_path / "empty.db"
    path.touch()
    fill(dnb.SqliteStore(path), runs=1, calls=1)
    assert os.path.getsize(path) > 0


class _NulRepr:
    def __repr__(self) -> str:
        return "NulRepr<a\x00b>"


def _fails_with_nul() -> None:
    raise ValueError("bad byte \x00 in header \udcff")


def test_nul_characters_and_lone_surrogates_in_results_and_errors_are_journaled_on_every_store(store):
    """PostgreSQL's text holds neither: previews escape them; payloads keep the values; the store stays usable."""

    def action(_: object, ctx: dnb.RunnerContext) -> object:
        try:
            ctx.durable_execute(_fails_with_nul)
        except ValueError as exc:
            caught = str(exc)
        return caught, ctx.durable_execute(_NulRepr), ctx.durable_execute(str, "x\udcff")

    runner = dnb.LocalRunner(store)
    caught, value, text = runner.run(action, run_id="odd-text")
    assert caught == "bad byte \x00 in header \udcff" and isinstance(value, _NulRepr) and text == "x\udcff"
    failed, nul_repr, surrogate = store.calls("odd-text")
    assert failed.error_preview == "ValueError: bad byte \\x00 in header \\udcff"
    assert str(failed.error()) == "bad byte \x00 in header \udcff"
    assert nul_repr.result_preview == "NulRepr<a\\x00b>" and surrogate.result() == "x\udcff"
    assert store.run("odd-text").status is dnb.RunStatus.COMPLETED
    assert len(store.to_pandas()) == 3  # every read still works: nothing was left held that cannot be written
    assert runner.run(action, run_id="odd-text")[0] == caught  # and it replays


def test_a_result_too_large_for_the_journal_stays_pending_with_a_warning_and_nothing_else_breaks(store):
    """A store's payload limit (SQLite's blob limit, PostgreSQL's 1 GiB message): checked before anything is held."""
    store.max_payload = 1_000  # the real limits are ~1 GB; the rule is the same
    runner = dnb.LocalRunner(store)

    def action(_: object, ctx: dnb.RunnerContext) -> int:
        big = ctx.durable_execute(bytes, 5_000)
        return len(big) + ctx.durable_execute(len, "after")

    with pytest.warns(dnb.UnserializableResultWarning, match=r"bytes that cannot be journaled \(its pickle is "
                      r"5,0\d\d bytes, more than the 1,000"):
        assert runner.run(action, run_id="big") == 5_005
    assert [c.status for c in store.calls("big")] == [Status.PENDING, Status.SUCCEEDED]
    assert store.run("big").status is dnb.RunStatus.COMPLETED and len(store.to_pandas()) == 2
    with pytest.raises(dnb.UnserializableResultError, match="more than the 1,000"):
        dnb.LocalRunner(store, strict=True).run(action, run_id="strict")


def test_a_run_id_that_is_not_a_str_is_a_type_error_on_every_store(store):
    """An int (a row number, a key) found nothing on SQLite and raised a raw driver error on PostgreSQL."""
    dnb.LocalRunner(store).run(lambda v, ctx: ctx.durable_execute(str, v), 5, run_id="5")
    for read in (lambda: store.calls(5), lambda: store.run(5), lambda: store.to_pandas(run_id=5),
                 lambda: store.waiting(5)):
        with pytest.raises(TypeError, match="a run id is a str") as err:
            read()
        assert isinstance(err.value, ValueError)  # one check (errors.check_run_id): as runner.run refuses it
    assert len(store.calls("5")) == 1


def test_a_run_id_that_is_not_a_str_is_a_type_error_at_run_context_and_fork_too(store):
    """runner.run/context/dry_run and store.fork said ValueError for run_id=5 where the store's reads say
    TypeError: now both (a TypeError that is a ValueError too), naming the type and the fix; nothing written."""
    runner = dnb.LocalRunner(store)
    runner.run(lambda v, ctx: ctx.durable_execute(str, v), 5, run_id="5")
    before = (store.runs(), store.calls("5"))
    refusals = (lambda: runner.run(lambda v, ctx: v, 1, run_id=5), lambda: runner.context(b"5").__enter__(),
                lambda: runner.dry_run(lambda v, ctx: v, 1, run_id=5.0), lambda: store.fork(5, at=0),
                lambda: store.fork("5", at=0, new_run_id=6))
    for refuse in refusals:
        with pytest.raises(TypeError, match="must be a non-empty string, got (int|bytes|float) .*a run id is a str") \
                as err:
            refuse()
        assert isinstance(err.value, ValueError)
    with pytest.raises(ValueError, match="got ''; name the run"):
        runner.run(lambda v, ctx: v, 1, run_id="")
    assert (store.runs(), store.calls("5")) == before


def test_a_numpy_str_run_id_is_kept_as_a_plain_str_on_every_store(store):
    """An id read from a numpy array (``numpy.str_``) was kept as one by MemoryStore (SQLite returned str)."""
    import numpy as np

    ids = np.array(["np-run", "np-fork"])
    runner = dnb.LocalRunner(store)
    assert runner.run(lambda v, ctx: ctx.durable_execute(str, v), 5, run_id=ids[0]) == "5"
    assert store.fork("np-run", at=1, new_run_id=ids[1]) == "np-fork"
    assert sorted((type(r.run_id), r.run_id) for r in store.runs()) == [(str, "np-fork"), (str, "np-run")]
    assert {type(c.run_id) for rid in ("np-run", "np-fork") for c in store.calls(rid)} == {str}
    assert runner.run(lambda v, ctx: ctx.durable_execute(str, v), 5, run_id=ids[1]) == "5"


def test_store_call_takes_an_index_read_from_to_pandas_and_refuses_one_that_is_no_int_on_every_store(store):
    """SQLite found no call for a ``numpy.int64`` index (the 'index' column of ``to_pandas()``) and call 0
    for ``'0'``; the memory store did the opposite: one read, two answers."""
    fill(store, runs=1, calls=2)
    index = store.to_pandas(run_id="r0")["index"].iloc[1]
    assert store.call("r0", index) == store.calls("r0")[1]
    for wrong in ("1", 1.0, True, None):
        with pytest.raises(TypeError, match=r"store.call\(run_id, index\) takes the call's index as an int"):
            store.call("r0", wrong)  # type: ignore[arg-type]
    assert store.call("r0", -1) is None and store.call("r0", 2**70) is None and store.call("r0", 2) is None


def test_delete_run_given_a_run_id_that_is_no_str_is_refused_alike_on_every_store(store):
    """An int deleted nothing, silently, on the memory store and failed with "'int' object has no attribute
    'encode'" on SQLite."""
    fill(store, runs=1, calls=1)
    with pytest.raises(TypeError, match="run_id must be a string, got int 0"):
        store.delete_run(0)  # type: ignore[arg-type]
    assert [r.run_id for r in store.runs()] == ["r0"]


def test_a_str_enum_run_id_names_the_run_by_its_value_on_every_store(store):
    """A ``(str, Enum)`` member is a str whose ``str()`` is ``'Kind.A'``: converting run ids with ``str()``
    journaled a new run under that name, so the run journaled under its value was not found and its calls
    ran again, and ``store.run(member)`` did not find the run just written."""
    import enum

    class Kind(str, enum.Enum):
        A = "order-a"
        B = "order-b"

    ran = []

    def charge(v):
        ran.append(v)
        return v

    runner = dnb.LocalRunner(store)
    runner.run(lambda v, ctx: ctx.durable_execute(charge, v), 5, run_id="order-a")
    assert runner.run(lambda v, ctx: ctx.durable_execute(charge, v), 5, run_id=Kind.A) == 5
    assert ran == [5]
    assert store.fork(Kind.A, at=1, new_run_id=Kind.B) == "order-b"
    assert sorted(r.run_id for r in store.runs()) == ["order-a", "order-b"]
    assert store.run(Kind.A).status is dnb.RunStatus.COMPLETED


PREFIX_IDS = [
    "a", "A", "ab", "aB", "a%", "a%b", "a_", "a_b", "axb", "a\\", "a\\b", "a\\\\", "e", "ea", "é", "éa", "f",
    "cell:g:0123", "cell:g:0123#2", "cell:g:0123#11", "cell:g:01234", "\ud7ff", "\ud7ffz", "\ue000",
    "\U0010ffff", "\U0010ffffx",
]
PREFIXES = ["", "a", "A", "a%", "a_", "a\\", "a\\\\", "e", "é", "cell:g:0123", "cell:g:0123#", "cell:g:0123#1",
            "\ud7ff", "\U0010ffff", "zzz", "a\udc80", "\x00"]


def test_run_ids_with_prefix_match_exactly_on_every_store(store):
    """A prefix is literal text (``%``, ``_`` and ``\\`` are no wildcards, case counts, ``é`` is not ``e``) and
    the ids come in code point order; a lone surrogate in an id (which SQLite keeps as a BLOB) is found too."""
    assert store.run_ids_with_prefix("a") == []  # a new journal
    ids = PREFIX_IDS + ([] if isinstance(store, dnb.PostgresStore) else ["a\udc80", "a\udc80b"])
    runner = dnb.LocalRunner(store)
    for run_id in ids:
        runner.run(lambda v, ctx: ctx.durable_execute(str, v), 1, run_id=run_id)
    for prefix in PREFIXES:
        assert store.run_ids_with_prefix(prefix) == sorted(i for i in ids if i.startswith(prefix)), prefix
    with pytest.raises(TypeError, match="a run-id prefix is a str"):
        store.run_ids_with_prefix(None)


def test_runs_with_prefix_are_the_records_of_the_ids_with_that_prefix_on_every_store(store):
    """What a magic on one cell reads instead of every run: the same records ``runs()`` gives, for exactly the
    ids ``run_ids_with_prefix`` gives (``%``, ``_``, ``\\`` literal; a prefix that is itself a run id)."""
    assert store.runs_with_prefix("") == []
    ids = PREFIX_IDS + ([] if isinstance(store, dnb.PostgresStore) else ["a\udc80", "a\udc80b"])
    runner = dnb.LocalRunner(store)
    for run_id in ids:
        runner.run(lambda v, ctx: ctx.durable_execute(str, v), 1, run_id=run_id)
    store.fork("a_b", at=1, new_run_id="a_b.fork-1")  # lineage comes along
    every = {r.run_id: r for r in store.runs()}
    for prefix in [*PREFIXES, "a_b"]:
        found = store.runs_with_prefix(prefix)
        assert [r.run_id for r in found] == sorted(i for i in every if i.startswith(prefix)), prefix
        assert found == [every[r.run_id] for r in found], prefix
    assert store.runs_with_prefix("a_b")[-1].parent_run_id == "a_b"
    with pytest.raises(TypeError, match="a run-id prefix is a str"):
        store.runs_with_prefix(None)


@pytest.mark.parametrize("store", ["sqlite", "postgres"], indirect=True)  # a MemoryStore has no query plan
def test_run_ids_with_prefix_read_an_index_not_every_run(store):
    """A cell looks up its attempts at every run: on a journal of many runs that must be an index range."""
    dnb.LocalRunner(store).run(lambda v, ctx: ctx.durable_execute(str, v), 1, run_id="a")
    if isinstance(store, dnb.SqliteStore):
        from durable_nb.stores.sqlite_text import prefix_where

        for prefix in ("cell:g:0123", "a\udc80"):
            where, params = prefix_where(prefix)
            for select in ("SELECT run_id FROM runs", store._run_select):  # the ids, and runs_with_prefix's records
                plan = store._read().execute("EXPLAIN QUERY PLAN " + select + where, params).fetchall()
                assert any("SEARCH" in row[-1] for row in plan) and not any("SCAN" in row[-1] for row in plan), plan
        return
    from durable_nb.stores import postgres_sql as q

    with store._conn.transaction():
        store._conn.execute("SET LOCAL enable_seqscan = off")
        store._conn.execute("SET LOCAL enable_bitmapscan = off")
        plans = [[r[0] for r in store._conn.execute("EXPLAIN " + sql, (q.like_prefix("cell:g:0123"),))]
                 for sql in (q.RUN_IDS_LIKE, q.RUNS_LIKE)]
        store._conn.execute("SET LOCAL enable_seqscan = on")
    for plan in plans:
        assert "Index" in plan[0] and "Index Cond" in plan[1], plan


def test_newest_runs_are_the_tail_of_runs_and_their_count(store: dnb.Store) -> None:
    """What a viewer reads instead of every run: the same records, in the same order, as ``runs()[-n:]``."""
    runner = dnb.LocalRunner(store)
    for i in range(7):
        with runner.context(f"run-{i}") as ctx:
            ctx.durable_execute(len, "x" * i)
    store.fork("run-2", at=1)
    every = store.runs()
    assert store.newest_runs(3) == (every[-3:], 8)
    assert store.newest_runs(100) == (every, 8)
    assert store.newest_runs(0) == ([], 8)


def test_to_pandas_shares_one_str_per_call_id_on_every_store(store: dnb.Store) -> None:
    """A map's million calls have one call id: a str object per row was ~50 MiB of repeats in the frame."""
    fill(store, runs=3, calls=2)
    frame = store.to_pandas()
    assert list(frame["call_id"]) == [c.call_id for c in store.query_calls()]
    assert len({id(v) for v in frame["call_id"]}) == 1


def test_sqlite_to_pandas_reads_rows_into_the_frame_without_a_list_of_every_call(sqlite_store, monkeypatch) -> None:
    """``to_pandas()`` of a 1,000,000-call journal held every ``CallRecord`` (and the SQLite rows) beside the
    frame: 1.1 GiB at peak for a 450 MiB frame. It builds the frame from the query's rows as they come, and
    gives the frame ``calls_frame(query_calls())`` gives, for every run or one."""
    from durable_nb.journal.frames import calls_frame

    fill(sqlite_store, runs=3, calls=3)
    sqlite_store.fork("r1", at=1)
    expected = calls_frame(sqlite_store.query_calls())
    expected_one = calls_frame(sqlite_store.query_calls(run_id="r2"))
    monkeypatch.setattr(dnb.SqliteStore, "query_calls", lambda self, **kw: pytest.fail("read a list of every call"))
    import pandas as pd

    pd.testing.assert_frame_equal(sqlite_store.to_pandas(), expected)
    pd.testing.assert_frame_equal(sqlite_store.to_pandas(run_id="r2"), expected_one)
    assert sqlite_store.to_pandas(run_id="nope").empty


def test_memory_store_sorts_only_the_calls_a_query_asks_for() -> None:
    """A ReconcilePanel (PENDING calls) or a live JournalView on a MemoryStore of 1,000,000 calls sorted every
    call of the store, holding the lock the map's writes wait on, to find the few that match (3 s per refresh
    at 300,000). Calls the filter leaves out are never put in order."""
    store = dnb.MemoryStore()
    fill(store, runs=4, calls=3)
    with pytest.raises(dnb.SimulatedCrash), dnb.inject_crash(call="builtins.pow", point="before_call"), \
            dnb.LocalRunner(store).context("crashed") as ctx:
        ctx.durable_execute(pow, 2, 2)
    compared: list[int] = []

    class Seq(int):
        def __lt__(self, other: object) -> bool:
            compared.append(int(self))
            return int(self) < int(other)  # type: ignore[call-overload]

    for run in store._runs.values():
        run.seqs[:] = [Seq(s) for s in run.seqs]
    pending_seq = store._runs["crashed"].seqs[0]
    assert [c.run_id for c in store.query_calls(status="PENDING")] == ["crashed"]
    assert store.count_calls(status="PENDING") == 1
    assert set(compared) <= {pending_seq}
    compared.clear()
    assert store.count_calls() == 13 and compared == []  # a count puts nothing in order
    assert len(store.query_calls(status="SUCCEEDED")) == 12 and store.query_calls(status="SUCCEEDED") == sorted(
        store.query_calls(status="SUCCEEDED"), key=lambda c: (c.run_id, c.index))
