"""``await ctx.durable_execute_async(...)``: the same rules, off the event loop."""

from __future__ import annotations

import asyncio
import collections
import threading

import pytest

import durable_nb as dnb
from durable_nb import Origin, Status

ran: collections.Counter[str] = collections.Counter()


def slow_charge(order: str) -> dict:
    ran["charge"] += 1
    ran[f"thread:{threading.current_thread() is threading.main_thread()}"] += 1
    return {"order": order}


async def async_lookup() -> dict:
    ran["lookup"] += 1
    return {"order": "o1", "reconciled": True}


@pytest.fixture(autouse=True)
def _reset():
    ran.clear()


def test_async_call_runs_off_the_loop_and_replays(store):
    runner = dnb.LocalRunner(store)

    async def action(order, ctx):
        return await ctx.durable_execute_async(slow_charge, order)

    assert asyncio.run(runner.run_async(action, "o1", run_id="a")) == {"order": "o1"}
    assert ran["thread:False"] == 1  # ran in an executor thread
    assert asyncio.run(runner.run_async(action, "o1", run_id="a")) == {"order": "o1"}
    assert ran["charge"] == 1
    assert [(c.status, c.origin) for c in store.calls("a")] == [(Status.SUCCEEDED, Origin.EXECUTED)]


def test_nothing_is_written_until_the_call_is_awaited(store):
    async def main():
        with dnb.LocalRunner(store).context("lazy") as ctx:
            pending = ctx.durable_execute_async(slow_charge, "o1")
            assert store.calls("lazy") == [] and ran["charge"] == 0
            await pending
            assert len(store.calls("lazy")) == 1

    asyncio.run(main())


def test_a_call_never_awaited_writes_nothing_and_raises_no_never_awaited_warning(store):
    """Flink Agents lets an action fire a durable_execute_async and not await it ("will NOT be
    recorded"): nothing runs or is written, and Python must not warn about a coroutine of ours."""
    import gc
    import warnings

    async def main():
        with dnb.LocalRunner(store).context("fire") as ctx:
            ctx.durable_execute_async(slow_charge, "forgotten")
            task = asyncio.create_task(ctx.durable_execute_async(slow_charge, "as a task"))
            return await task

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert asyncio.run(main()) == {"order": "as a task"}
        gc.collect()
    assert [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)] == []
    assert [c.status for c in store.calls("fire")] == [Status.SUCCEEDED] and ran["charge"] == 1


def test_async_reconciler_recovers_a_pending_call(store):
    runner = dnb.LocalRunner(store)

    async def action(order, ctx):
        return await ctx.durable_execute_async(slow_charge, order, reconciler=async_lookup)

    with dnb.inject_crash(call=f"{__name__}.slow_charge", point="after_call"), pytest.raises(dnb.SimulatedCrash):
        asyncio.run(runner.run_async(action, "o1", run_id="r"))
    assert [c.status for c in store.calls("r")] == [Status.PENDING]
    assert asyncio.run(runner.run_async(action, "o1", run_id="r"))["reconciled"] is True
    assert asyncio.run(runner.run_async(action, "o1", run_id="r"))["reconciled"] is True
    assert (ran["charge"], ran["lookup"]) == (1, 1)
    assert store.calls("r")[0].origin is Origin.RECONCILED


def test_async_failure_is_persisted_and_replayed(store):
    def boom():
        ran["boom"] += 1
        raise RuntimeError("provider down")

    async def action(_, ctx):
        return await ctx.durable_execute_async(boom)

    runner = dnb.LocalRunner(store)
    for _ in range(2):
        with pytest.raises(RuntimeError, match="provider down"):
            asyncio.run(runner.run_async(action, None, run_id="f"))
    assert ran["boom"] == 1 and store.calls("f")[0].status is Status.FAILED


def test_async_bad_reconciler_is_a_type_error_at_the_call(store):
    with dnb.LocalRunner(store).context("t") as ctx, pytest.raises(TypeError, match="no arguments"):
        ctx.durable_execute_async(slow_charge, "o", reconciler=lambda order: order)
    assert store.calls("t") == []


def test_an_async_reconciler_of_a_sync_call_is_refused_before_anything_is_written(store):
    """``durable_execute`` would journal the coroutine object, never running the reconciler."""
    with dnb.LocalRunner(store).context("t") as ctx, pytest.raises(TypeError, match="durable_execute_async"):
        ctx.durable_execute(slow_charge, "o", reconciler=async_lookup)
    assert store.calls("t") == [] and ran["charge"] == 0


def test_gathered_async_calls_keep_the_order_they_were_started_in(store):
    async def action(_, ctx):
        return await asyncio.gather(*(ctx.durable_execute_async(slow_charge, f"o{i}") for i in range(5)))

    runner = dnb.LocalRunner(store)
    first = asyncio.run(runner.run_async(action, None, run_id="g"))
    again = asyncio.run(runner.run_async(action, None, run_id="g"))
    assert first == again == [{"order": f"o{i}"} for i in range(5)]
    assert ran["charge"] == 5


def test_current_context_holds_inside_the_executor_thread(store):
    seen = []

    def probe():
        seen.append(dnb.current_context().run_id)
        return 1

    async def action(_, ctx):
        return await ctx.durable_execute_async(probe)

    asyncio.run(dnb.LocalRunner(store).run_async(action, None, run_id="cv"))
    assert seen == ["cv"]


def test_sync_run_of_an_async_action_outside_a_loop_works(store):
    async def action(order, ctx):
        return await ctx.durable_execute_async(slow_charge, order)

    assert dnb.LocalRunner(store).run(action, "o5", run_id="s") == {"order": "o5"}


def drive(coro):
    """Drive a coroutine as Flink Agents does: ``coro.send(None)`` until it stops, no asyncio loop."""
    while True:
        try:
            coro.send(None)
        except StopIteration as done:
            return done.value


def test_flink_agents_style_driving_without_an_event_loop_works(store):
    """Flink Agents drives async actions with coro.send(None) and no asyncio loop; same code runs here."""

    async def action(order, ctx):
        first = await ctx.durable_execute_async(slow_charge, order)
        second = await ctx.durable_execute_async(slow_charge, order + "-b")
        return [first, second]

    for _ in range(2):
        with dnb.LocalRunner(store).context("drive") as ctx:
            assert drive(action("o7", ctx)) == [{"order": "o7"}, {"order": "o7-b"}]
    assert ran["charge"] == 2



async def fetch_quote(order: str) -> str:
    """An async client's request: it awaits asyncio (a sleep here), which needs a running loop."""
    await asyncio.sleep(0.001)
    ran["quote"] += 1
    return f"quote-{order}"


async def find_quote(order: str) -> str:
    await asyncio.sleep(0.001)
    return f"found-{order}"


def test_a_coroutine_function_awaited_in_an_action_driven_without_a_loop_runs_on_a_loop_of_its_own(store):
    """Flink Agents' way of driving (coro.send(None), no loop): a durable coroutine function that awaits
    asyncio gets a loop of its own in a worker thread, instead of "no running event loop" journaled as
    its outcome (and replayed forever); its reconciler too."""

    async def action(order, ctx):
        return await ctx.durable_execute_async(fetch_quote, order, reconciler=lambda: find_quote(order))

    runner = dnb.LocalRunner(store)
    for _ in range(2):  # executed, then replayed
        with runner.context("quote") as ctx:
            assert drive(action("o8", ctx)) == "quote-o8"
    assert ran["quote"] == 1
    assert [(c.status, c.origin) for c in store.calls("quote")] == [(Status.SUCCEEDED, Origin.EXECUTED)]

    with dnb.inject_crash(call=fetch_quote, point="after_call"), pytest.raises(dnb.SimulatedCrash), \
            runner.context("quote-2") as ctx:
        drive(action("o9", ctx))
    with runner.context("quote-2") as ctx:  # recovered by the async reconciler, on a loop of its own too
        assert drive(action("o9", ctx)) == "found-o9"
    assert [(c.status, c.origin) for c in store.calls("quote-2")] == [(Status.SUCCEEDED, Origin.RECONCILED)]


_started, _release = threading.Event(), threading.Event()


def _charge_slowly(order: str) -> str:
    _started.set()
    _release.wait(10)
    ran["charge"] += 1
    return f"ch_{order}"


def test_a_call_whose_await_times_out_is_journaled_when_its_thread_ends_so_a_retry_replays_it(store):
    """``asyncio.wait_for`` cancels the await, not the thread: the charge still happens. Left PENDING, a
    retry right after reconciled it before the charge landed (its lookup found nothing: None journaled)."""
    runner = dnb.LocalRunner(store)
    _started.clear()
    _release.clear()
    reconciled: list[str] = []

    def lookup() -> str | None:
        reconciled.append("lookup")
        return None  # nothing charged yet, as a payment provider would answer

    async def action(order, ctx):
        return await asyncio.wait_for(ctx.durable_execute_async(_charge_slowly, order, reconciler=lookup), 0.05)

    async def main():
        threading.Timer(0.3, _release.set).start()
        with pytest.raises(TimeoutError), pytest.warns(UserWarning, match=r"await of call 0, .*_charge_slowly was "
                                                                 r"cancelled .* waiting for it to end"):
            await runner.run_async(action, "o7", run_id="timeout")
        return await runner.run_async(action, "o7", run_id="timeout")

    assert asyncio.run(main()) == "ch_o7"
    assert ran["charge"] == 1 and reconciled == []
    [call] = store.calls("timeout")
    assert (call.status, call.origin) == (Status.SUCCEEDED, Origin.EXECUTED)


def _fallback(order: str) -> str:
    ran["fallback"] += 1
    return f"fallback_{order}"


def test_an_action_going_on_after_a_cancelled_await_is_told_a_replay_may_take_the_other_branch(store):
    """``except TimeoutError: fallback``: the timed-out call's outcome is journaled, so a replay gets it at the
    await at once and goes the other way (the fallback discarded, what follows it run again): said at the
    first run, with the fix, while the user can still move the timeout into the function."""
    runner = dnb.LocalRunner(store)
    _started.clear()
    _release.clear()

    async def action(order, ctx):
        try:
            return await asyncio.wait_for(ctx.durable_execute_async(_charge_slowly, order), 0.05)
        except TimeoutError:
            return await ctx.durable_execute_async(_fallback, order)

    threading.Timer(0.3, _release.set).start()
    with pytest.warns(UserWarning) as caught:
        assert runner.run(action, "o11", run_id="went-on") == "fallback_o11"
    [went_on] = [w for w in caught if "goes on to" in str(w.message)]
    assert "'_fallback' after the await of call 0 (" in str(went_on.message)
    assert "Put the timeout inside the durable function" in str(went_on.message)
    assert went_on.filename == __file__  # points at the action's line, not at durable_nb


def test_a_second_cancellation_stops_waiting_and_leaves_the_call_pending(store):
    runner = dnb.LocalRunner(store)
    _started.clear()
    _release.clear()

    async def action(order, ctx):
        return await ctx.durable_execute_async(_charge_slowly, order)

    async def main():
        task = asyncio.ensure_future(runner.run_async(action, "o8", run_id="twice"))
        await asyncio.get_running_loop().run_in_executor(None, _started.wait, 5)
        with pytest.warns(UserWarning, match="Cancel again to stop waiting"):
            task.cancel()
            await asyncio.sleep(0.05)
        assert not task.done()  # waiting for the charge's thread
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        [call] = store.calls("twice")
        assert call.status is Status.PENDING and ran["charge"] == 0  # as a crash leaves it: recovery reconciles
        _release.set()

    asyncio.run(main())


def test_a_run_does_not_close_while_a_call_of_a_cancelled_gather_still_runs(store):
    """A cancelled ``gather`` settles at once; the action returned and its run was COMPLETED with the
    call PENDING while the charge went on, its outcome then refused: the run now waits for it."""
    runner = dnb.LocalRunner(store)

    async def action(order, ctx):
        _started.clear()
        _release.clear()
        gathered = asyncio.gather(ctx.durable_execute_async(_charge_slowly, order), asyncio.sleep(5))
        await asyncio.get_running_loop().run_in_executor(None, _started.wait, 5)
        gathered.cancel()
        threading.Timer(0.2, _release.set).start()
        try:
            await gathered
        except asyncio.CancelledError:
            return "gave up"

    with pytest.warns(UserWarning, match="waiting for it to end"):
        assert runner.run(action, "o9", run_id="sync-door") == "gave up"

    async def main():
        return await runner.run_async(action, "o10", run_id="async-door")

    with pytest.warns(UserWarning, match="waiting for it to end"):
        assert asyncio.run(main()) == "gave up"
    for run_id, order in (("sync-door", "o9"), ("async-door", "o10")):
        [call] = store.calls(run_id)
        assert (call.status, call.result_preview) == (Status.SUCCEEDED, repr(f"ch_{order}"))
        assert store.run(run_id).status is dnb.RunStatus.COMPLETED
    assert ran["charge"] == 2


def test_a_durable_function_that_cannot_be_started_at_interpreter_shutdown_stays_pending(store, monkeypatch):
    """A Flink attempt being cancelled shuts its worker's interpreter down while a record's action still
    runs: no thread pool takes new work, so the function never started. That ``RuntimeError`` was journaled
    as the call's FAILED outcome (origin EXECUTED), and every later attempt replayed it: a charge never made,
    reported failed for good."""
    import concurrent.futures.thread

    runner = dnb.LocalRunner(store)

    async def action(order, ctx):
        return await ctx.durable_execute_async(slow_charge, order)

    from durable_nb.journal.replay import Journal

    wait_durable = Journal.wait_durable

    def then_shut_down(journal, *args):  # the call's PENDING is durable, then the interpreter shuts down
        wait_durable(journal, *args)
        monkeypatch.setattr(concurrent.futures.thread, "_shutdown", True)  # what interpreter shutdown sets

    monkeypatch.setattr(Journal, "wait_durable", then_shut_down)
    with pytest.raises(BaseException, match="cannot schedule new futures"):
        runner.run(action, "o1", run_id="shutdown")
    monkeypatch.undo()
    assert ran["charge"] == 0
    assert [c.status for c in store.calls("shutdown")] == [Status.PENDING]  # not the function's outcome
    assert runner.run(action, "o1", run_id="shutdown") == {"order": "o1"}  # the next attempt runs it
    assert ran["charge"] == 1


def test_async_call_is_digested_with_the_arguments_it_runs_with(store):
    """Was: digested when ``durable_execute_async`` was called, not when awaited. An action that changed a
    list in between (``batch.clear()`` after ``tasks.append(...)``) journaled values the function never saw,
    and a ChangedInputWarning blamed the durable function (here ``len``) for changing its arguments."""
    import warnings

    runner = dnb.LocalRunner(store)

    async def action(_, ctx):
        batch = ["a"]
        pending = ctx.durable_execute_async(len, batch)
        batch.append("b")
        return await pending

    with warnings.catch_warnings():
        warnings.simplefilter("error", dnb.ChangedInputWarning)
        assert asyncio.run(runner.run_async(action, None, run_id="late")) == 2
    [call] = store.calls("late")
    assert call.args_digest == dnb.journal.digest.digest((["a", "b"],), {})
    assert asyncio.run(runner.run_async(action, None, run_id="late")) == 2
    assert store.calls("late")[0].origin is Origin.EXECUTED
