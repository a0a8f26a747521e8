"""``runner.dry_run``: every recorded call replayed, the first one that would not named, nothing run or written.

"Nothing written" is proven on SQLite by the bytes of the journal file and its
WAL, and on every store by the run records (attempts, status, updated_at) and the
calls; "nothing executed" by counters on the functions and the reconcilers.
"""

from __future__ import annotations

import asyncio
import collections
from pathlib import Path
from typing import Any

import pytest

import durable_nb as dnb
from durable_nb import Decision, Status

ran: collections.Counter[str] = collections.Counter()


def charge(order: str, amount: int) -> dict:
    ran["charge"] += 1
    return {"order": order, "charged": amount}


def lookup() -> dict:
    ran["lookup"] += 1
    return {"order": "o1", "charged": 10}


def notify(order: str) -> str:
    ran["notify"] += 1
    return f"mail {order}"


def place_order(order: str, ctx: dnb.RunnerContext) -> str:
    c = ctx.durable_execute(charge, order, 10, reconciler=lookup)
    return ctx.durable_execute(notify, c["order"])


def place_order_edited(order: str, ctx: dnb.RunnerContext) -> str:
    c = ctx.durable_execute(charge, order, 12, reconciler=lookup)  # the amount was edited
    return ctx.durable_execute(notify, c["order"])


@pytest.fixture(autouse=True)
def _fresh_counter() -> None:
    ran.clear()


def snapshot(store: dnb.Store) -> tuple:
    runs = [(r.run_id, r.status, r.attempts, r.updated_at, r.n_calls, r.n_discarded) for r in store.runs()]
    calls = [(c.run_id, c.index, c.status, c.origin, c.finished_at)
             for r in store.runs() for c in store.calls(r.run_id)]
    return runs, calls, store.discarded()


def test_a_finished_run_replays_entirely_and_nothing_runs(store):
    runner = dnb.LocalRunner(store)
    runner.run(place_order, "o1", run_id="r1")
    ran.clear()
    before = snapshot(store)
    report = runner.dry_run(place_order, "o1", run_id="r1")
    assert isinstance(report, dnb.DryRunReport)
    assert (report.stopped_at, report.decision, report.recorded, report.call_id) == (None, None, None, None)
    assert report.replayed == 2 and report.unreached == 0 and report.error is None
    assert report.result_preview == "'mail o1'"
    assert ran == {}
    assert snapshot(store) == before


def test_an_edited_action_stops_at_the_first_mismatch_with_both_digests(store):
    runner = dnb.LocalRunner(store)
    runner.run(place_order, "o1", run_id="r1")
    ran.clear()
    before = snapshot(store)
    report = runner.dry_run(place_order_edited, "o1", run_id="r1")
    recorded = store.calls("r1")[0]
    assert report.stopped_at == 0 and report.decision is Decision.MISMATCH
    assert report.recorded == recorded
    assert report.call_id == recorded.call_id == f"{__name__}.charge"
    assert report.args_digest != recorded.args_digest
    assert "rule 2" in report.rule
    assert ran == {}  # neither the function nor the reconciler
    assert snapshot(store) == before


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_pending_call_with_a_reconciler_would_reconcile_and_the_reconciler_does_not_run(store, kind):
    action = place_order if kind == "sync" else place_order_async
    runner = dnb.LocalRunner(store)
    with dnb.inject_crash(call=f"{__name__}.charge", point="after_call"), pytest.raises(dnb.SimulatedCrash):
        runner.run(action, "o1", run_id="r1")
    ran.clear()
    before = snapshot(store)
    report = (runner.dry_run(action, "o1", run_id="r1") if kind == "sync"
              else asyncio.run(runner.dry_run_async(action, "o1", run_id="r1")))
    assert (report.stopped_at, report.decision, report.replayed) == (0, Decision.RECONCILE, 0)
    assert report.recorded is not None and report.recorded.status is Status.PENDING
    assert ran == {}
    assert snapshot(store) == before


def test_a_pending_call_without_a_reconciler_would_re_execute(store):
    def action(order: str, ctx: dnb.RunnerContext) -> str:
        return ctx.durable_execute(notify, order)

    runner = dnb.LocalRunner(store)
    with dnb.inject_crash(call=f"{__name__}.notify", point="before_call"), pytest.raises(dnb.SimulatedCrash):
        runner.run(action, "o1", run_id="r1")
    report = runner.dry_run(action, "o1", run_id="r1")
    assert (report.stopped_at, report.decision) == (0, Decision.REEXECUTE)
    assert ran == {}


def test_a_run_held_by_a_live_context_is_reported_busy_since_its_pending_call_may_be_running(store):
    """The journal alone shows call 0 PENDING, "would reconcile", while it is running in another thread;
    a real run now raises RunBusyError: the report says the run is held."""
    runner = dnb.LocalRunner(store)
    with runner.context("held") as ctx:
        ctx.durable_execute(notify, "o1")
        report = runner.dry_run(place_order, "o1", run_id="held")
        with pytest.raises(dnb.RunBusyError):
            runner.run(place_order, "o1", run_id="held")
    assert report.busy and "open in a live context now" in repr(report) and ran == {"notify": 1}
    assert not runner.dry_run(place_order, "o1", run_id="held").busy  # the context ended


def test_a_call_beyond_the_journal_would_execute(store):
    def longer(order: str, ctx: dnb.RunnerContext) -> str:
        place_order(order, ctx)
        return ctx.durable_execute(notify, "again")

    runner = dnb.LocalRunner(store)
    runner.run(place_order, "o1", run_id="r1")
    ran.clear()
    report = runner.dry_run(longer, "o1", run_id="r1")
    assert (report.stopped_at, report.decision, report.recorded, report.replayed) == (2, Decision.EXECUTE, None, 2)
    assert report.call_id == f"{__name__}.notify"
    assert ran == {}
    frame = report.to_pandas()
    assert list(frame["decision"]) == ["replay", "replay", "execute"]
    assert list(frame["index"]) == [0, 1, 2]
    assert frame["recorded_call_id"].isna().tolist() == [False, False, True]  # None on pandas 2, nan on 3


def test_a_dry_run_of_an_action_making_no_call_has_an_int_index_column(store):
    # Was: object, as calls_frame's was for an empty run: concatenating it with a report of calls changed types.
    report = dnb.LocalRunner(store).dry_run(lambda order, ctx: order, "o1", run_id="none")
    frame = report.to_pandas()
    assert frame.empty and str(frame["index"].dtype) == "int64"


def test_an_action_that_stops_early_reports_the_unreached_calls(store):
    def shorter(order: str, ctx: dnb.RunnerContext) -> dict:
        return ctx.durable_execute(charge, order, 10, reconciler=lookup)

    runner = dnb.LocalRunner(store)
    runner.run(place_order, "o1", run_id="r1")
    report = runner.dry_run(shorter, "o1", run_id="r1")
    assert report.stopped_at is None and report.unreached == 1
    assert "never reached" in repr(report)


def test_a_strict_runners_dry_run_reports_a_mismatch_as_refused_not_as_a_call_that_runs_again(store):
    dnb.LocalRunner(store).run(place_order, "o1", run_id="r1")
    strict = dnb.LocalRunner(store, strict=True)
    report = strict.dry_run(place_order_edited, "o1", run_id="r1")
    with pytest.raises(dnb.NonDeterminismError):  # what the dry run must predict
        strict.run(place_order_edited, "o1", run_id="r1")
    assert (report.stopped_at, report.decision, report.strict, report.refused) == (0, Decision.MISMATCH, True, True)
    shown = repr(report)
    assert "refused" in shown and "NonDeterminismError" in shown and "executed (strict" not in shown
    assert "discarded and the call executed" not in report.rule
    lenient = dnb.LocalRunner(store).dry_run(place_order_edited, "o1", run_id="r1")
    assert not lenient.refused and "would mismatch" in repr(lenient)
    assert ran == {"charge": 1, "notify": 1}  # the first run only


def test_a_strict_runners_dry_run_reports_unreached_calls_as_refused(store):
    def shorter(order: str, ctx: dnb.RunnerContext) -> dict:
        return ctx.durable_execute(charge, order, 10, reconciler=lookup)

    dnb.LocalRunner(store).run(place_order, "o1", run_id="r1")
    report = dnb.LocalRunner(store, strict=True).dry_run(shorter, "o1", run_id="r1")
    assert report.stopped_at is None and report.unreached == 1 and report.refused
    assert report.result_preview is None and report.error and report.error.startswith("NonDeterminismError")
    assert "strict mode refuses" in repr(report) and "would be discarded" not in repr(report)


def test_an_unknown_run_stops_at_call_zero_and_is_not_created(store):
    report = dnb.LocalRunner(store).dry_run(place_order, "o1", run_id="never")
    assert (report.stopped_at, report.decision) == (0, Decision.EXECUTE)
    assert store.runs() == [] and ran == {}


@pytest.mark.parametrize("run_id", ["", 5])
def test_a_run_id_run_refuses_is_refused_by_dry_run_with_the_same_error(store, run_id):
    """dry_run predicted "call 0 would execute" for run_id="" that run refuses (and another error class for 5)."""
    runner = dnb.LocalRunner(store)
    with pytest.raises(ValueError) as refused:
        runner.run(place_order, "o1", run_id=run_id)
    for dry in (lambda: runner.dry_run(place_order, "o1", run_id=run_id),
                lambda: asyncio.run(runner.dry_run_async(place_order, "o1", run_id=run_id))):
        with pytest.raises(ValueError) as info:
            dry()
        assert type(info.value) is type(refused.value) and str(info.value) == str(refused.value)
    assert store.runs() == [] and ran == {}


def test_a_sync_action_returning_a_coroutine_inside_an_event_loop_is_refused_as_run_refuses_it(store):
    """dry_run reported "every call replays" with asyncio's own error, where run refuses and names the async door."""
    def action(order: str, ctx: dnb.RunnerContext) -> Any:
        return place_order_async(order, ctx)

    runner = dnb.LocalRunner(store)
    runner.run(action, "o1", run_id="r1")
    ran.clear()

    async def in_a_loop() -> None:
        with pytest.raises(RuntimeError, match=r"inside a running event loop.*await runner\.run_async"):
            runner.run(action, "o1", run_id="r2")
        before = snapshot(store)
        with pytest.raises(RuntimeError, match=r"inside a running event loop.*await runner\.dry_run_async"):
            runner.dry_run(action, "o1", run_id="r1")
        assert (await runner.dry_run_async(action, "o1", run_id="r1")).replayed == 2
        assert snapshot(store) == before

    asyncio.run(in_a_loop())
    assert ran == {}
    assert runner.dry_run(action, "o1", run_id="r1").replayed == 2  # outside a loop it is awaited


def test_a_replayed_exception_the_action_does_not_catch_is_reported(store):
    def fails(order: str) -> None:
        raise ValueError(f"declined {order}")

    def action(order: str, ctx: dnb.RunnerContext) -> None:
        ctx.durable_execute(fails, order)

    runner = dnb.LocalRunner(store)
    with pytest.raises(ValueError):
        runner.run(action, "o1", run_id="r1")
    report = runner.dry_run(action, "o1", run_id="r1")
    assert report.stopped_at is None and report.replayed == 1
    assert report.error == "ValueError: declined o1"


def test_an_async_action_is_dry_run_too(store):
    async def action(order: str, ctx: dnb.RunnerContext) -> str:
        c = await ctx.durable_execute_async(charge, order, 10, reconciler=lookup)
        return await ctx.durable_execute_async(notify, c["order"])

    runner = dnb.LocalRunner(store)
    runner.run(action, "o1", run_id="r1")
    ran.clear()
    before = snapshot(store)
    assert runner.dry_run(action, "o1", run_id="r1").stopped_at is None
    report = asyncio.run(runner.dry_run_async(place_order_edited, "o1", run_id="r1"))
    assert (report.stopped_at, report.decision) == (0, Decision.MISMATCH)
    assert ran == {}
    assert snapshot(store) == before


async def place_order_async(order: str, ctx: dnb.RunnerContext) -> str:
    c = await ctx.durable_execute_async(charge, order, 10, reconciler=lookup)
    return await ctx.durable_execute_async(notify, c["order"])


async def place_order_async_edited(order: str, ctx: dnb.RunnerContext) -> str:
    c = await ctx.durable_execute_async(charge, order, 12, reconciler=lookup)
    return await ctx.durable_execute_async(notify, c["order"])


async def place_order_async_longer(order: str, ctx: dnb.RunnerContext) -> str:
    await place_order_async(order, ctx)
    return await ctx.durable_execute_async(notify, "again")


@pytest.mark.parametrize(("edited", "stop"), [
    (place_order_async_edited, (0, Decision.MISMATCH, 0)),
    (place_order_async_longer, (2, Decision.EXECUTE, 2)),
])
def test_an_async_action_that_would_not_replay_stops_there_and_runs_and_writes_nothing(store, edited, stop):
    """The async door (durable_execute_async) stops like the sync one: a dry run that fell through
    to the real rules would execute the function and, on a mismatch, discard the finished journal."""
    runner = dnb.LocalRunner(store)
    runner.run(place_order_async, "o1", run_id="r1")
    ran.clear()
    before = snapshot(store)
    report = runner.dry_run(edited, "o1", run_id="r1")
    assert (report.stopped_at, report.decision, report.replayed) == stop
    assert report.error is None
    assert ran == {}
    assert snapshot(store) == before
    runner.run(place_order_async, "o1", run_id="r1")  # the original action still replays entirely
    assert ran == {}


async def place_order_in_a_task_group(order: str, ctx: dnb.RunnerContext) -> str:
    async with asyncio.TaskGroup() as tg:  # type: ignore[attr-defined]  # Python 3.11+
        charged = tg.create_task(ctx.durable_execute_async(charge, order, 10, reconciler=lookup))
        mailed = tg.create_task(ctx.durable_execute_async(notify, order))
    return f"{charged.result()['charged']} {mailed.result()}"


async def place_order_in_a_task_group_edited(order: str, ctx: dnb.RunnerContext) -> str:
    async with asyncio.TaskGroup() as tg:  # type: ignore[attr-defined]
        tg.create_task(ctx.durable_execute_async(charge, order, 10, reconciler=lookup))
        tg.create_task(ctx.durable_execute_async(notify, order + "!"))  # the mail was edited
    return "done"


@pytest.mark.skipif(not hasattr(asyncio, "TaskGroup"), reason="asyncio.TaskGroup is Python 3.11+")
@pytest.mark.parametrize("door", ["sync", "async"])
def test_a_call_in_a_task_group_that_would_not_replay_is_reported_not_raised(store, door):
    """A TaskGroup wraps what its task raised in a BaseExceptionGroup: the dry stop in such a group used to
    escape dry_run (an "unhandled errors in a TaskGroup" traceback) instead of the report of that call."""
    runner = dnb.LocalRunner(store)
    runner.run(place_order_in_a_task_group, "o1", run_id="r1")
    ran.clear()
    before = snapshot(store)
    if door == "sync":
        report = runner.dry_run(place_order_in_a_task_group_edited, "o1", run_id="r1")
    else:
        report = asyncio.run(runner.dry_run_async(place_order_in_a_task_group_edited, "o1", run_id="r1"))
    assert (report.stopped_at, report.decision, report.replayed) == (1, Decision.MISMATCH, 1)
    assert report.error is None
    assert ran == {}
    assert snapshot(store) == before


@pytest.mark.parametrize("door", ["sync", "async"])
def test_a_dry_run_made_inside_a_durable_call_still_executes_nothing(door):
    """A durable function that dry-runs another run (a check before a batch): its calls are plain calls of
    the outer one only for a real run of that call, so the dry run must still stop at them. Inside the
    call it used to run every function for real and report "nothing would run"."""
    store = dnb.MemoryStore()
    runner = dnb.LocalRunner(store)
    runner.run(place_order, "o1", run_id="r1")
    ran.clear()

    def journal_of_r1() -> list:
        return [(c.index, c.status, c.origin, c.finished_at) for c in store.calls("r1")]

    before = journal_of_r1()

    def check() -> tuple:
        report = runner.dry_run(place_order_edited, "o1", run_id="r1")
        return report.stopped_at, report.decision

    async def check_async() -> tuple:
        report = await runner.dry_run_async(place_order_async_longer, "o1", run_id="r1")
        return report.stopped_at, report.decision

    async def outer_async(_: Any, ctx: dnb.RunnerContext) -> tuple:
        return await ctx.durable_execute_async(check_async)

    if door == "sync":
        verdict = runner.run(lambda _, ctx: ctx.durable_execute(check), None, run_id="checker")
        assert verdict == (0, Decision.MISMATCH)
    else:
        assert runner.run(outer_async, None, run_id="checker") == (2, Decision.EXECUTE)
    assert ran == {}
    assert journal_of_r1() == before and store.discarded("r1") == []


def test_the_default_run_id_is_the_one_run_uses(store):
    runner = dnb.LocalRunner(store)
    runner.run(place_order, "o1")
    assert runner.dry_run(place_order, "o1").replayed == 2
    assert runner.dry_run(place_order, "o2").stopped_at == 0


def test_the_report_renders_escaped(store):
    @dnb.durable(name="<script>alert(1)</script>")
    def odd(x: int) -> int:
        return x

    def action(x: int, ctx: dnb.RunnerContext) -> int:
        return ctx.durable_execute(odd, x)

    report = dnb.LocalRunner(store).dry_run(action, 1, run_id="r<1>")
    text = repr(report)
    assert "call 0 would execute" in text and "<script>alert(1)</script>" in text
    rendered = report._repr_html_()
    assert "<script>" not in rendered and "&lt;script&gt;" in rendered and "r&lt;1&gt;" not in text


def test_a_dry_run_leaves_the_sqlite_file_byte_for_byte_unchanged(tmp_path: Path):
    path = tmp_path / "journal.db"
    store = dnb.SqliteStore(path)
    runner = dnb.LocalRunner(store)
    runner.run(place_order, "o1", run_id="r1")
    with dnb.inject_crash(call=f"{__name__}.charge", point="after_call"), pytest.raises(dnb.SimulatedCrash):
        runner.run(place_order, "o2", run_id="r2")
    store.close()
    files = sorted(p for p in tmp_path.iterdir())
    before = {p.name: p.read_bytes() for p in files}
    again = dnb.SqliteStore(path)
    try:
        ran.clear()
        reports = [
            dnb.LocalRunner(again).dry_run(action, order, run_id=rid)
            for action, order, rid in [(place_order, "o1", "r1"), (place_order_edited, "o1", "r1"),
                                       (place_order, "o2", "r2")]
        ]
        assert [r.decision for r in reports] == [None, Decision.MISMATCH, Decision.RECONCILE]
        assert ran == {}
    finally:
        again.close()
    after = {p.name: p.read_bytes() for p in sorted(tmp_path.iterdir())}
    assert after == before


class CountingStore(dnb.MemoryStore):
    """A real MemoryStore that counts every call to a method that may write."""

    WRITES = ("open_run", "close_run", "append_pending", "complete_call", "discard_from", "delete_run",
              "_fork", "_prune", "set_prompt", "flush")

    def __init__(self) -> None:
        super().__init__()
        self.writes: collections.Counter[str] = collections.Counter()

    def __getattribute__(self, name: str):  # type: ignore[no-untyped-def]
        if name in CountingStore.WRITES:
            object.__getattribute__(self, "writes")[name] += 1
        return object.__getattribute__(self, name)


def test_a_dry_run_calls_no_write_method_of_the_store():
    store = CountingStore()
    runner = dnb.LocalRunner(store)
    runner.run(place_order, "o1", run_id="r1")
    with dnb.inject_crash(call=f"{__name__}.charge", point="after_call"), pytest.raises(dnb.SimulatedCrash):
        runner.run(place_order, "o2", run_id="r2")
    assert store.writes["append_pending"] == 3  # the counter sees real writes
    store.writes.clear()
    ran.clear()
    for action, order, rid in [(place_order, "o1", "r1"), (place_order_edited, "o1", "r1"),
                               (place_order, "o2", "r2"), (place_order, "o3", "new")]:
        runner.dry_run(action, order, rid)
    assert store.writes == {} and ran == {}


@pytest.mark.parametrize("kind", ["memory", "sqlite"])  # PostgreSQL refuses such a call id: tests/test_postgres.py
def test_the_report_of_a_journal_with_odd_call_ids_displays_as_utf_8_text(kind, tmp_path):
    """A recorded call id with a lone surrogate (a non-UTF-8 file name) or a bidirectional control comes from
    the journal: the report's repr and HTML must travel to the notebook as UTF-8 (else showing it fails the
    cell) and show the controls as escapes, as the widgets do."""
    import json

    store = dnb.MemoryStore() if kind == "memory" else dnb.SqliteStore(tmp_path / "j.db")
    odd = "pay-\ud800-\u202egnp.exe-\u061c<b>"
    dnb.LocalRunner(store).run(lambda _, ctx: ctx.durable_execute(dnb.durable(name=odd)(lambda: 1)), None,
                               run_id="r")
    report = dnb.LocalRunner(store).dry_run(lambda _, ctx: ctx.durable_execute(dnb.durable(name="other")(
        lambda: 2)), None, run_id="r")
    assert report.stopped_at == 0
    for shown in (repr(report), report._repr_html_()):
        json.dumps(shown, ensure_ascii=False).encode("utf-8")  # strict: a lone surrogate raises
        assert "\u202e" not in shown and "\u061c" not in shown
        assert "\\ud800" in shown and "\\u202e" in shown
    assert "<b>" not in report._repr_html_().replace("<b>dry run", "")
