"""The replay rules of DESIGN.md, one test per rule, on MemoryStore and SqliteStore.

Every test asserts the journal (status, origin, index, call id) and how many
times the function and the reconciler ran (``Counter``s), because "it returned
the right value" alone cannot tell a replay from a re-execution.
"""

from __future__ import annotations

import builtins
import collections
import sys
import warnings

import pytest

import durable_nb as dnb
from durable_nb import Origin, RunStatus, Status
from durable_nb.journal import digest as _digest


class Ledger:
    """Counts real executions per name, and can be told to fail."""

    def __init__(self) -> None:
        self.ran: collections.Counter[str] = collections.Counter()

    def charge(self, order: str, amount: int) -> dict:
        self.ran["charge"] += 1
        return {"order": order, "charged": amount}

    def receipt(self, charge: dict) -> str:
        self.ran["receipt"] += 1
        return f"receipt for {charge['order']}"

    def boom(self, x: int) -> int:
        self.ran["boom"] += 1
        raise ValueError(f"card declined {x}")

    def lookup(self) -> dict:
        self.ran["lookup"] += 1
        return {"order": "o1", "charged": 10, "found": True}


def charge_card(order: str, amount: int) -> dict:
    return {"order": order, "charged": amount}


def send_receipt(order: str, text: str) -> str:
    return text


def summary(store: dnb.Store, run_id: str) -> list[tuple]:
    return [(c.index, c.call_id.rsplit(".", 1)[-1], c.status.value, c.origin and c.origin.value)
            for c in store.calls(run_id)]


def place_order(ledger: Ledger):
    def action(order: str, ctx: dnb.RunnerContext) -> str:
        ch = ctx.durable_execute(ledger.charge, order, 10, reconciler=ledger.lookup)
        return ctx.durable_execute(ledger.receipt, ch)
    return action


def test_first_run_journals_each_call_as_succeeded_executed(store):
    ledger = Ledger()
    out = dnb.LocalRunner(store).run(place_order(ledger), "o1", run_id="r1")
    assert out == "receipt for o1"
    assert summary(store, "r1") == [(0, "charge", "SUCCEEDED", "EXECUTED"), (1, "receipt", "SUCCEEDED", "EXECUTED")]
    assert store.run("r1").status is RunStatus.COMPLETED
    assert store.calls("r1")[0].result() == {"order": "o1", "charged": 10}
    assert store.calls("r1")[0].result_preview == "{'charged': 10, 'order': 'o1'}"
    assert ledger.ran == {"charge": 1, "receipt": 1}


def test_succeeded_calls_replay_without_running_the_function(store):
    ledger = Ledger()
    runner = dnb.LocalRunner(store)
    runner.run(place_order(ledger), "o1", run_id="r1")
    assert runner.run(place_order(ledger), "o1", run_id="r1") == "receipt for o1"
    assert ledger.ran == {"charge": 1, "receipt": 1}
    assert store.run("r1").attempts == 1  # attempts counts the opens that wrote something: a replay writes nothing
    assert [c.status for c in store.calls("r1")] == [Status.SUCCEEDED, Status.SUCCEEDED]


def test_failed_call_replays_its_exception_without_running_again(store):
    ledger = Ledger()
    runner = dnb.LocalRunner(store)

    def action(x, ctx):
        return ctx.durable_execute(ledger.boom, x)

    for _ in range(2):
        with pytest.raises(ValueError, match="card declined 7"):
            runner.run(action, 7, run_id="f")
    assert ledger.ran["boom"] == 1
    (rec,) = store.calls("f")
    assert (rec.status, rec.origin) == (Status.FAILED, Origin.EXECUTED)
    assert rec.error_preview == "ValueError: card declined 7"
    assert isinstance(rec.error(), ValueError)
    assert store.run("f").status is RunStatus.FAILED


def test_action_that_catches_a_replayed_failure_continues_the_same_way(store):
    ledger = Ledger()
    runner = dnb.LocalRunner(store)

    def action(x, ctx):
        try:
            ctx.durable_execute(ledger.boom, x)
        except ValueError:
            return ctx.durable_execute(ledger.charge, "fallback", 1)

    assert runner.run(action, 1, run_id="c") == runner.run(action, 1, run_id="c")
    assert ledger.ran == {"boom": 1, "charge": 1}


@pytest.mark.parametrize("point", ["before_call", "after_call"])
def test_pending_call_with_reconciler_is_reconciled_not_reexecuted(store, point):
    ledger = Ledger()
    runner = dnb.LocalRunner(store)
    action = place_order(ledger)
    call_id = f"{__name__}.Ledger.charge"
    with dnb.inject_crash(call=call_id, point=point), pytest.raises(dnb.SimulatedCrash):
        runner.run(action, "o1", run_id="r1")
    assert summary(store, "r1") == [(0, "charge", "PENDING", None)]
    assert store.run("r1").status is RunStatus.RUNNING
    assert ledger.ran["charge"] == (1 if point == "after_call" else 0)

    assert runner.run(action, "o1", run_id="r1") == "receipt for o1"
    assert ledger.ran["lookup"] == 1
    assert ledger.ran["charge"] == (1 if point == "after_call" else 0)  # never re-executed
    assert summary(store, "r1") == [(0, "charge", "SUCCEEDED", "RECONCILED"), (1, "receipt", "SUCCEEDED", "EXECUTED")]
    assert store.calls("r1")[0].result()["found"] is True

    # A third run replays the reconciled outcome: the reconciler does not run again.
    runner.run(action, "o1", run_id="r1")
    assert ledger.ran["lookup"] == 1 and ledger.ran["receipt"] == 1


def test_reconciler_exception_is_persisted_failed_reconciled_and_replayed(store):
    runner = dnb.LocalRunner(store)
    counts = collections.Counter()

    def reconcile():
        counts["reconcile"] += 1
        raise LookupError("payment provider has no record")

    def action(_, ctx):
        return ctx.durable_execute(charge_card, "o1", 5, reconciler=reconcile)

    with dnb.inject_crash(call=f"{__name__}.charge_card", point="after_call"), pytest.raises(dnb.SimulatedCrash):
        runner.run(action, None, run_id="r")
    for _ in range(2):
        with pytest.raises(LookupError, match="no record"):
            runner.run(action, None, run_id="r")
    assert counts["reconcile"] == 1
    (rec,) = store.calls("r")
    assert (rec.status, rec.origin) == (Status.FAILED, Origin.RECONCILED)


def test_pending_call_without_reconciler_is_executed_again(store):
    runner = dnb.LocalRunner(store)
    ran = collections.Counter()

    def send_email(to):
        ran["send"] += 1
        return f"sent to {to}"

    def action(to, ctx):
        return ctx.durable_execute(send_email, to)

    with dnb.inject_crash(call=f"{__name__}.{action.__qualname__.rsplit('.', 1)[0]}.send_email",
                          point="after_call"), pytest.raises(dnb.SimulatedCrash):
        runner.run(action, "a@b", run_id="e")
    assert ran["send"] == 1
    assert runner.run(action, "a@b", run_id="e") == "sent to a@b"
    assert ran["send"] == 2  # at-least-once
    assert summary(store, "e") == [(0, "send_email", "SUCCEEDED", "EXECUTED")]


def test_mismatch_discards_the_rest_records_it_and_warns_once(store):
    runner = dnb.LocalRunner(store)
    ledger = Ledger()

    def v1(_, ctx):
        ctx.durable_execute(ledger.charge, "o1", 10)
        ctx.durable_execute(ledger.receipt, {"order": "o1"})
        ctx.durable_execute(ledger.receipt, {"order": "o2"})

    def v2(_, ctx):  # same first call, then different arguments, then a new call
        ctx.durable_execute(ledger.charge, "o1", 10)
        ctx.durable_execute(ledger.charge, "o1", 99)
        ctx.durable_execute(ledger.receipt, {"order": "o3"})

    runner.run(v1, None, run_id="m")
    with pytest.warns(dnb.NonDeterminismWarning, match="not deterministic") as caught:
        runner.run(v2, None, run_id="m")
    assert len(caught) == 1
    assert ledger.ran == {"charge": 2, "receipt": 3}
    assert summary(store, "m") == [(0, "charge", "SUCCEEDED", "EXECUTED"), (1, "charge", "SUCCEEDED", "EXECUTED"),
                                   (2, "receipt", "SUCCEEDED", "EXECUTED")]
    dropped = store.discarded("m")
    assert [(d.index, d.call_id.rsplit(".", 1)[-1]) for d in dropped] == [(1, "receipt"), (2, "receipt")]
    assert "Ledger.receipt here, the action called" in dropped[0].reason
    assert store.run("m").n_discarded == 2


def test_calls_the_action_no_longer_reaches_are_discarded_at_the_end(store):
    runner = dnb.LocalRunner(store)

    def long(_, ctx):
        return [ctx.durable_execute(charge_card, str(i), i) for i in range(3)]

    def short(_, ctx):
        return [ctx.durable_execute(charge_card, "0", 0)]

    runner.run(long, None, run_id="s")
    with pytest.warns(dnb.NonDeterminismWarning, match="finished before reaching"):
        runner.run(short, None, run_id="s")
    assert [c.index for c in store.calls("s")] == [0]
    assert [d.index for d in store.discarded("s")] == [1, 2]


def test_a_context_that_makes_no_call_leaves_the_run_as_it_was(store):
    """Looking at a run (a ``with`` block, an action returning early) must not discard its calls:
    the next recovery would then repeat their side effects."""
    ledger = Ledger()
    runner = dnb.LocalRunner(store)
    runner.run(place_order(ledger), "o1", run_id="done")
    with runner.context("done") as ctx:
        assert [c.status for c in ctx.journal.calls] == [Status.SUCCEEDED, Status.SUCCEEDED]
    runner.run(lambda order, ctx: "cached", "o1", run_id="done")
    assert store.discarded("done") == [] and store.run("done").status is RunStatus.COMPLETED
    assert runner.run(place_order(ledger), "o1", run_id="done") == "receipt for o1"
    assert ledger.ran == {"charge": 1, "receipt": 1}

    with pytest.raises(dnb.SimulatedCrash), dnb.inject_crash(call=f"{__name__}.Ledger.receipt", point="before_call"):
        runner.run(place_order(ledger), "o2", run_id="crashed")
    with runner.context("crashed"):
        pass
    assert store.run("crashed").status is RunStatus.RUNNING
    assert [c.status for c in store.calls("crashed")] == [Status.SUCCEEDED, Status.PENDING]


def test_keyboard_interrupt_leaves_the_call_pending_and_is_not_persisted_failed(store):
    runner = dnb.LocalRunner(store)

    def interrupted():
        raise KeyboardInterrupt

    def action(_, ctx):
        return ctx.durable_execute(interrupted)

    with pytest.raises(KeyboardInterrupt):
        runner.run(action, None, run_id="k")
    assert summary(store, "k") == [(0, "interrupted", "PENDING", None)]
    assert store.run("k").status is RunStatus.RUNNING


def test_pending_is_durable_before_the_function_runs(store):
    seen = []

    def look(_, ctx):
        def probe():
            seen.append([(c.index, c.status) for c in ctx.store.calls(ctx.run_id)])
            return 1
        return ctx.durable_execute(probe)

    dnb.LocalRunner(store).run(look, None, run_id="p")
    assert seen == [[(0, Status.PENDING)]]


@pytest.mark.parametrize(("bad", "message"), [  # Flink Agents' own messages (its tests match on them)
    (lambda x: x, "reconciler must be a callable that takes no arguments"),
    (42, "reconciler must be callable"),
    (lambda x, y=1: x, "reconciler must be a callable that takes no arguments"),
])
def test_reconciler_that_needs_arguments_is_a_type_error_before_anything_is_written(store, bad, message):
    runner = dnb.LocalRunner(store)
    ran = []
    with runner.context("t") as ctx, pytest.raises(TypeError, match=message):
        ctx.durable_execute(ran.append, 1, reconciler=bad)
    assert ran == [] and store.calls("t") == []


def test_reconciler_is_keyword_only_and_never_forwarded(store):
    received = {}

    def f(*args, **kwargs):
        received.update(args=args, kwargs=kwargs)
        return 1

    with dnb.LocalRunner(store).context("kw") as ctx:
        ctx.durable_execute(f, 1, 2, reconciler=lambda: 0, flag=True)
    assert received == {"args": (1, 2), "kwargs": {"flag": True}}


def test_two_lambdas_with_the_same_default_id_do_not_replay_each_other(store):
    runner = dnb.LocalRunner(store)
    with runner.context("l") as ctx:
        assert ctx.durable_execute(lambda: "charge") == "charge"
    with pytest.warns(dnb.NonDeterminismWarning), runner.context("l") as ctx:
        assert ctx.durable_execute(lambda: "refund") == "refund"
    (rec,) = store.calls("l")
    assert rec.call_id.endswith("<lambda>") and rec.result() == "refund"


def test_a_closure_over_data_changed_in_any_way_replays_when_its_run_is_run_again(store):
    """Captured containers count by type: how they change (heapq.heappush, an alias, a helper, another
    closure filling them) cannot be told from the code, and a replay does not change them again."""
    import heapq

    ran: list[int] = []

    def act(values: list[int], ctx: dnb.RunnerContext) -> list[int]:
        heap: list[int] = []
        seen: list[int] = []

        def push(v: int) -> int:
            ran.append(v)
            heapq.heappush(heap, v)
            alias = seen
            alias.append(v)
            return heap[0]

        def report() -> int:
            ran.append(-1)
            return len(seen)

        return [ctx.durable_execute(push, v) for v in values] + [ctx.durable_execute(report)]

    runner = dnb.LocalRunner(store)
    with warnings.catch_warnings():
        warnings.simplefilter("error", dnb.NonDeterminismWarning)
        assert runner.run(act, [3, 1, 2], run_id="heap") == [3, 1, 1, 3]
        assert runner.run(act, [3, 1, 2], run_id="heap") == [3, 1, 1, 3]  # replayed as a whole
    assert ran == [3, 1, 2, -1]


def test_a_closure_keeps_its_identity_while_the_data_it_changes_itself_grows(store):
    def memoized():
        seen: dict[int, int] = {}
        log: list[int] = []

        def square(x: int) -> int:
            log.append(x)
            if x not in seen:
                seen[x] = x * x
            return seen[x]
        return square

    square = memoized()
    runner = dnb.LocalRunner(store)
    with runner.context("memo") as ctx:
        assert ctx.durable_execute(square, 3) == 9
    square(4)  # its own cache and log changed since
    with warnings.catch_warnings(), runner.context("memo") as ctx:
        warnings.simplefilter("error", dnb.NonDeterminismWarning)
        assert ctx.durable_execute(square, 3) == 9  # replayed, not a mismatch


def test_two_closures_from_one_factory_do_not_replay_each_other(store):
    def sender(channel):
        def send(msg):
            return f"{channel}:{msg}"
        return send

    runner = dnb.LocalRunner(store)
    with runner.context("c") as ctx:
        ctx.durable_execute(sender("email"), "hi")
    with pytest.warns(dnb.NonDeterminismWarning), runner.context("c") as ctx:
        assert ctx.durable_execute(sender("sms"), "hi") == "sms:hi"
    with runner.context("c") as ctx:  # the same closure again replays
        assert ctx.durable_execute(sender("sms"), "hi") == "sms:hi"
    assert len(store.discarded("c")) == 1


def test_durable_decorator_gives_a_stable_explicit_id(store):
    @dnb.durable(name="payments.charge")
    def charge(x):
        return x

    with dnb.LocalRunner(store).context("d") as ctx:
        ctx.durable_execute(charge, 1)
    assert store.calls("d")[0].call_id == "payments.charge"
    assert charge(5) == 5  # not wrapped
    with pytest.raises(TypeError, match="cannot name builtin_function_or_method 'len'.*plain function"):
        dnb.durable(name="length")(len)


def test_default_call_id_is_module_qualname(store):
    with dnb.LocalRunner(store).context("q") as ctx:
        ctx.durable_execute(charge_card, "x", 1)
        ctx.durable_execute(Ledger().charge, "x", 1)
    assert [c.call_id for c in store.calls("q")] == [f"{__name__}.charge_card", f"{__name__}.Ledger.charge"]


class _AnswersEveryName:
    """A proxy's method (``xmlrpc.client.ServerProxy(...).charge``): ``__getattr__`` answers every name."""

    def __getattr__(self, name):
        return _AnswersEveryName()

    def __call__(self, x):
        return x * 2


def test_a_proxy_whose_getattr_answers_every_name_gets_a_str_call_id_and_the_journal_stays_readable(store):
    """Its ``__durable_name__`` was the proxy object itself: the SQLite intent log could not encode it and
    the journal then refused to open (JournalFormatError) for every later run."""
    runner = dnb.LocalRunner(store)
    assert runner.run(lambda x, ctx: ctx.durable_execute(_AnswersEveryName(), x), 2, run_id="proxy") == 4
    assert runner.run(lambda x, ctx: ctx.durable_execute(_AnswersEveryName(), x), 2, run_id="proxy") == 4
    [rec] = store.calls("proxy")
    assert rec.call_id == f"{__name__}._AnswersEveryName.__call__"
    assert (rec.status, store.run("proxy").status) == (Status.SUCCEEDED, RunStatus.COMPLETED)


class _NamedCall:
    @dnb.durable(name="named-call")
    def __call__(self, x):
        return x


@dnb.durable(name="named-class")
class _NamedClass:
    def __call__(self, x):
        return ("called", x)


def test_a_callable_instance_takes_its_name_from_its_decorated_call_else_from_its_decorated_class(store):
    """Decorating ``__call__`` in the class body (as the @durable error message advises) was ignored.
    An instance of a decorated class keeps the class's id: the id its calls were always journaled under."""
    with dnb.LocalRunner(store).context("inst") as ctx:
        ctx.durable_execute(_NamedCall(), 1)
        ctx.durable_execute(_NamedClass)
        ctx.durable_execute(_NamedClass(), 2)
    assert [c.call_id for c in store.calls("inst")] == ["named-call", "named-class", "named-class"]


def test_an_instance_of_a_decorated_class_replays_the_calls_journaled_under_the_class_name(store):
    """Its calls are journaled as ``named-class``; a release that named them ``...._NamedClass.__call__``
    instead found every recorded call mismatched, discarded it and ran it again (a payment made twice)."""
    ran = []

    @dnb.durable(name="named-class")  # what the journal holds for `_NamedClass()(7)`, written as before
    def as_journaled(x):
        ran.append(x)
        return ("called", x)

    runner = dnb.LocalRunner(store)
    with runner.context("old") as ctx:
        ctx.durable_execute(as_journaled, 7)
    with runner.context("old") as ctx:
        assert ctx.durable_execute(_NamedClass(), 7) == ("called", 7)
    assert ran == [7] and store.discarded("old") == []


def test_unserializable_result_warns_returns_the_value_and_leaves_pending(store):
    import threading

    runner = dnb.LocalRunner(store)
    lock = threading.Lock()

    def open_lock():
        return lock

    with pytest.warns(dnb.errors.UnserializableResultWarning, match=r"open_lock.*index 1.*_thread.lock"), \
            runner.context("u") as ctx:
        ctx.durable_execute(charge_card, "a", 1)
        assert ctx.durable_execute(open_lock) is lock
    assert [c.status for c in store.calls("u")] == [Status.SUCCEEDED, Status.PENDING]
    assert store.calls("u")[0].result() == {"order": "a", "charged": 1}


def test_unserializable_result_in_strict_mode_raises_and_leaves_pending(store):
    import threading

    runner = dnb.LocalRunner(store)

    def open_lock():
        return threading.Lock()

    with pytest.raises(dnb.UnserializableResultError, match=r"open_lock.*index 1.*_thread.lock") as err, \
            runner.context("u") as ctx:
        ctx.journal.strict = True
        ctx.durable_execute(charge_card, "a", 1)
        ctx.durable_execute(open_lock)
    assert (err.value.index, err.value.type_name) == (1, "_thread.lock")
    assert [c.status for c in store.calls("u")] == [Status.SUCCEEDED, Status.PENDING]


def test_unpicklable_argument_is_digested_by_type_and_warns_once(store, monkeypatch):
    import threading

    class Client:
        def __init__(self):
            self.lock = threading.Lock()

    def use(client, n):
        return n

    monkeypatch.setattr(_digest, "_warned_types", set())  # "once" is per process
    runner = dnb.LocalRunner(store)
    with pytest.warns(dnb.UnpicklableArgumentWarning, match="Client") as caught, runner.context("a") as ctx:
        ctx.durable_execute(use, Client(), 1)
        ctx.durable_execute(use, Client(), 2)
    assert len(caught) == 1
    with runner.context("a") as ctx:  # new client objects after a "restart" replay
        assert ctx.durable_execute(use, Client(), 1) == 1
        assert ctx.durable_execute(use, Client(), 2) == 2
    assert store.run("a").n_discarded == 0


def test_an_exception_with_an_unpicklable_attribute_replays_as_its_class(store):
    import threading

    class Weird(Exception):
        def __init__(self):
            super().__init__("weird failure")
            self.lock = threading.Lock()

    def fail():
        raise Weird

    runner = dnb.LocalRunner(store)
    with runner.context("w") as ctx, pytest.raises(Weird):
        ctx.durable_execute(fail)
    with runner.context("w") as ctx, pytest.raises(Weird, match="weird failure") as replayed:
        ctx.durable_execute(fail)
    assert not hasattr(replayed.value, "lock")  # only the attribute that cannot be pickled is lost


class Declined(Exception):
    """An exception whose ``__init__`` does not take its own ``args`` back (like httpx's HTTPStatusError)."""

    def __init__(self, order: str, code: int) -> None:
        super().__init__(f"{order} declined ({code})")
        self.order, self.code = order, code


def settle_all() -> list:
    """What ``asyncio.gather(..., return_exceptions=True)`` gives: results and exceptions, returned."""
    return ["paid", Declined("o2", 51)]


def test_a_result_holding_an_exception_replays(store):
    # Was: journaled SUCCEEDED (it pickles), then every recovery raised RecordDecodeError (it did not load).
    runner = dnb.LocalRunner(store)
    first = runner.run(lambda v, ctx: ctx.durable_execute(settle_all), run_id="gather")
    replayed = runner.run(lambda v, ctx: ctx.durable_execute(settle_all), run_id="gather")
    assert [type(x) for x in replayed] == [type(x) for x in first] == [str, Declined]
    assert (replayed[1].order, replayed[1].code, str(replayed[1])) == ("o2", 51, "o2 declined (51)")
    assert store.calls("gather")[0].status is Status.SUCCEEDED


linked_runs: list[int] = []


def linked_failures() -> list:
    """Exceptions an attribute refers back to (a library's ``exc.error = exc``, an ``(exc, attempt)`` pair)."""
    linked_runs.append(1)
    own, paired = Declined("o3", 7), ValueError("retry")
    own.error, paired.last = own, (paired, 2)
    return [own, paired]


def test_a_result_holding_an_exception_that_refers_to_itself_is_journaled_and_replays(store):
    # Was: the exception's attributes went as an argument of its loader, so pickling recursed back into it
    # (PicklingError: the call's result could not be journaled, it ran again at each recovery).
    linked_runs.clear()
    runner = dnb.LocalRunner(store)
    runner.run(lambda v, ctx: ctx.durable_execute(linked_failures), run_id="linked")
    own, paired = runner.run(lambda v, ctx: ctx.durable_execute(linked_failures), run_id="linked")
    assert linked_runs == [1] and store.calls("linked")[0].status is Status.SUCCEEDED
    assert type(own) is Declined and own.error is own and (own.order, own.code) == ("o3", 7)
    assert type(paired) is ValueError and paired.last[0] is paired and paired.args == ("retry",)


class NotFound(OSError):
    """An OSError subclass with an ``__init__`` of its own (pickle's default loads ``cls(errno, strerror, path)``)."""

    def __init__(self, path: str) -> None:
        super().__init__(2, "no such order file", path)
        self.path = path


def gather_os_errors() -> list:
    return [NotFound("/orders/o7.json")]


def test_a_result_holding_an_os_error_with_its_own_init_replays(store):
    # Was: journaled SUCCEEDED, then every recovery raised RecordDecodeError (the loader called cls(*args)).
    runner = dnb.LocalRunner(store)
    runner.run(lambda v, ctx: ctx.durable_execute(gather_os_errors), run_id="os")
    [missing] = runner.run(lambda v, ctx: ctx.durable_execute(gather_os_errors), run_id="os")
    assert type(missing) is NotFound and (missing.errno, missing.filename, missing.path) == (2, "/orders/o7.json",
                                                                                               "/orders/o7.json")
    assert str(missing) == "[Errno 2] no such order file: '/orders/o7.json'"


@pytest.mark.skipif(sys.version_info < (3, 11), reason="exception groups are Python 3.11's")
def test_a_result_holding_an_exception_group_with_its_own_new_replays(store):
    class Many(builtins.ExceptionGroup):  # type: ignore[misc,name-defined]
        """A group whose ``__new__`` fixes the message (pickle's default loads ``cls(message, errors)``)."""

        def __new__(cls, errors):  # type: ignore[no-untyped-def]
            return super().__new__(cls, "several orders failed", errors)

        def __init__(self, errors) -> None:  # type: ignore[no-untyped-def]
            super().__init__("several orders failed", errors)

    runner = dnb.LocalRunner(store)
    runner.run(lambda v, ctx: ctx.durable_execute(lambda: [Many([ValueError("o8")])]), run_id="group")
    [group] = runner.run(lambda v, ctx: ctx.durable_execute(lambda: [Many([ValueError("o8")])]), run_id="group")
    assert type(group).__name__ == "Many" and str(group) == "several orders failed (1 sub-exception)"
    assert [type(e) for e in group.exceptions] == [ValueError]


def test_a_result_whose_own_loading_code_fails_names_that_code_not_a_class_to_reinstall(store):
    # A class the notebook defines travels by value: the error named 'type.Exception' as the class to make
    # importable again (a module name the pickle fetched from its memo was paired with the wrong name).
    class Refund(Exception):
        def __init__(self, order: str) -> None:
            super().__init__(order)

        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (Refund, ("o9", "extra"))  # loads as Refund("o9", "extra"): a TypeError

    runner = dnb.LocalRunner(store)
    runner.run(lambda v, ctx: ctx.durable_execute(lambda: [Refund("o9")]), run_id="bad-reduce")
    with pytest.raises(dnb.RecordDecodeError) as err:
        runner.run(lambda v, ctx: ctx.durable_execute(lambda: [Refund("o9")]), run_id="bad-reduce")
    assert err.value.class_name is None, str(err.value)
    assert "loading code" in str(err.value) and "type." not in str(err.value)


class _OtherPandas:
    """Pickles as pandas 3 pickles a ``str`` column's dtype, which pandas 2's ``StringDtype`` cannot load."""

    def __reduce__(self):  # type: ignore[no-untyped-def]
        import pandas as pd

        return (pd.StringDtype, ("python", float("nan"), "a third argument neither pandas takes"))


def test_a_result_pickled_by_another_pandas_names_the_call_the_versions_and_the_fix(store):
    # Was: "the loading code of one of them fails. Fix that loading code" for a frame journaled under pandas 3
    # and replayed under pandas 2 (a Flink job's environment), and record.result() raised the bare TypeError.
    import pandas as pd

    runner = dnb.LocalRunner(store)
    runner.run(lambda v, ctx: ctx.durable_execute(lambda: [_OtherPandas()]), run_id="upgraded")
    before = store.calls("upgraded")
    with pytest.raises(dnb.RecordDecodeError) as err:
        runner.run(lambda v, ctx: ctx.durable_execute(lambda: [_OtherPandas()]), run_id="upgraded")
    text = str(err.value)
    assert f"pandas {pd.__version__}" in err.value.packages and f"pandas {pd.__version__}" in text, text
    assert "call 0" in text and "other versions" in text and "store.fork('upgraded', at=0)" in text
    with pytest.raises(dnb.RecordDecodeError, match="other versions of .*pandas"):
        store.calls("upgraded")[0].result()
    assert store.calls("upgraded") == before


def test_a_result_naming_a_function_its_package_no_longer_has_blames_the_version_not_an_install(
        store, monkeypatch):
    # Was: "Make cloudpickle.cloudpickle._class_setstate importable again (restore or re-install its module)"
    # for a notebook class journaled under cloudpickle 3 and replayed under 2.2.1, whose module is installed.
    import cloudpickle

    def gone():  # type: ignore[no-untyped-def]
        return None

    gone.__module__, gone.__qualname__ = "cloudpickle.cloudpickle", "_dnb_gone"
    monkeypatch.setattr(cloudpickle.cloudpickle, "_dnb_gone", gone, raising=False)

    class Made:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (gone, ())

    runner = dnb.LocalRunner(store)
    runner.run(lambda v, ctx: ctx.durable_execute(lambda: [Made()]), run_id="downgraded")
    monkeypatch.undo()
    with pytest.raises(dnb.RecordDecodeError) as err:
        runner.run(lambda v, ctx: ctx.durable_execute(lambda: [Made()]), run_id="downgraded")
    text = str(err.value)
    assert err.value.class_name == "cloudpickle.cloudpickle._dnb_gone", text
    assert f"cloudpickle {cloudpickle.__version__}" in text and "re-install" not in text, text


def test_run_opened_twice_at_once_is_refused(store):
    runner = dnb.LocalRunner(store)
    with runner.context("busy") as ctx:
        ctx.durable_execute(charge_card, "a", 1)
        with pytest.raises(dnb.RunBusyError, match="busy"), runner.context("busy"):
            pass
    with runner.context("busy") as ctx:  # released after the first context closed
        assert ctx.durable_execute(charge_card, "a", 1)["charged"] == 1


def test_a_crash_leaves_the_run_running_but_releases_its_lease(store):
    runner = dnb.LocalRunner(store)
    with dnb.inject_crash(call=f"{__name__}.charge_card", point="before_call"), \
            pytest.raises(dnb.SimulatedCrash), runner.context("x") as ctx:
        ctx.durable_execute(charge_card, "a", 1)
    assert (store.run("x").status, store.run("x").owner) == (RunStatus.RUNNING, None)
    with runner.context("x") as ctx:
        ctx.durable_execute(charge_card, "a", 1)
    assert store.run("x").status is RunStatus.COMPLETED


def test_current_context_is_the_open_run(store):
    assert dnb.current_context() is None
    with dnb.LocalRunner(store).context("cc") as ctx:
        assert dnb.current_context() is ctx
        assert ctx.run_id == "cc"
    assert dnb.current_context() is None


def test_map_runs_one_run_per_record_and_replays_on_the_second_map(store):
    ledger = Ledger()
    runner = dnb.LocalRunner(store)
    orders = [{"id": "a"}, {"id": "b"}, {"id": "a"}]

    def action(order, ctx):
        return ctx.durable_execute(ledger.charge, order["id"], 3)["order"]

    df = runner.map(action, orders, key="id")
    assert list(df["id"]) == ["a", "b", "a"]
    assert list(df["result"]) == ["a", "b", "a"]
    assert list(df["status"]) == ["COMPLETED"] * 3
    assert df["run_id"].is_unique
    runner.map(action, orders, key="id")
    assert ledger.ran["charge"] == 3


def test_map_reports_a_failing_record_as_a_failed_row(store):
    def action(x, ctx):
        return ctx.durable_execute(lambda: 1 / x)

    df = dnb.LocalRunner(store).map(action, [1, 0, 2])
    assert list(df["status"]) == ["COMPLETED", "FAILED", "COMPLETED"]
    assert "ZeroDivisionError" in df["error"][1]


def test_run_without_run_id_recovers_the_same_input(store):
    ledger = Ledger()
    runner = dnb.LocalRunner(store)
    runner.run(place_order(ledger), "o9")
    runner.run(place_order(ledger), "o9")
    runner.run(place_order(ledger), "o10")
    assert ledger.ran["charge"] == 2 and len(store.runs()) == 2


def test_to_pandas_has_one_row_per_call(store):
    ledger = Ledger()
    runner = dnb.LocalRunner(store)
    runner.run(place_order(ledger), "o1", run_id="r1")
    runner.run(place_order(ledger), "o2", run_id="r2")
    df = store.to_pandas()
    assert list(df["run_id"]) == ["r1", "r1", "r2", "r2"]
    assert list(store.to_pandas(run_id="r2")["index"]) == [0, 1]
    assert str(df["started_at"].dtype).startswith("datetime64")


def test_an_action_failing_before_it_reaches_recorded_calls_keeps_them(store):
    runner = dnb.LocalRunner(store)
    ledger = Ledger()
    flaky = {"fail": False}

    def action(_, ctx):
        if flaky["fail"]:
            raise ConnectionError("config server down")
        return ctx.durable_execute(ledger.charge, "o1", 10)

    runner.run(action, None, run_id="t")
    flaky["fail"] = True
    with pytest.raises(ConnectionError):
        runner.run(action, None, run_id="t")
    assert store.run("t").status is RunStatus.FAILED
    assert summary(store, "t") == [(0, "charge", "SUCCEEDED", "EXECUTED")]
    flaky["fail"] = False
    runner.run(action, None, run_id="t")
    assert ledger.ran["charge"] == 1


def test_async_action_from_a_running_loop_is_refused_before_the_run_is_touched(store):
    import asyncio

    runner = dnb.LocalRunner(store)

    async def action(_, ctx):
        return await ctx.durable_execute_async(abs, -1)

    async def inside_a_notebook_cell():
        with pytest.raises(RuntimeError, match="run_async"):
            runner.run(action, None, run_id="nb")

    asyncio.run(inside_a_notebook_cell())
    assert store.run("nb") is None


def test_an_action_that_cannot_take_input_and_ctx_is_refused_before_any_run_is_touched(store):
    """``runner.run(lambda order: ...)``: a TypeError naming action(input, ctx), not one FAILED run per record."""
    runner = dnb.LocalRunner(store)

    def one_parameter(order):
        return order

    for call in (lambda: runner.run(one_parameter, 1, run_id="r"), lambda: runner.map(one_parameter, [1, 2]),
                 lambda: runner.dry_run(one_parameter, 1, run_id="r")):
        with pytest.raises(TypeError, match=r"action\(input, ctx\).*one_parameter.*\(order\)"):
            call()
    assert store.runs() == []
    runner.run(lambda order, ctx, *rest, extra=None: order, 1, run_id="ok")  # what binds two arguments runs
    runner.run(print, 1, run_id="builtin")  # and what has no signature to read is left to run


def test_a_decorated_action_is_judged_by_the_signature_that_gets_called(store):
    """A ``functools.wraps`` decorator that supplies ctx or adds an argument runs; its wrapped function's
    signature (what ``inspect.signature`` reports by default) is not what the runner calls."""
    import functools

    def ctx_aware(f):
        @functools.wraps(f)
        def wrapper(order, ctx):
            return f(order)
        return wrapper

    def with_retries(f):
        @functools.wraps(f)
        def wrapper(order, ctx):
            return f(order, ctx, 3)
        return wrapper

    @ctx_aware
    def plain(order):
        return order * 2

    @with_retries
    def three(order, ctx, retries):
        return order + retries

    runner = dnb.LocalRunner(store)
    assert runner.run(plain, 1, run_id="plain") == 2
    assert runner.run(three, 1, run_id="three") == 4
    assert runner.map(plain, [1, 2])["result"].tolist() == [2, 4]


def test_another_process_can_recover_a_run_right_after_an_injected_crash(sqlite_store):
    import subprocess
    import sys
    import textwrap

    runner = dnb.LocalRunner(sqlite_store)
    with dnb.inject_crash(call=f"{__name__}.charge_card", point="after_call"), \
            pytest.raises(dnb.SimulatedCrash), runner.context("y") as ctx:
        ctx.durable_execute(charge_card, "a", 1)
    script = textwrap.dedent(f"""
        import durable_nb as dnb
        store = dnb.SqliteStore({str(sqlite_store.path)!r})
        with dnb.LocalRunner(store).context("y") as ctx:
            print(ctx.durable_execute(dnb.durable(name={__name__ + ".charge_card"!r})(lambda o, a: 0), "a", 1,
                                      reconciler=lambda: "reconciled elsewhere"))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "reconciled elsewhere"
    assert sqlite_store.calls("y")[0].origin is Origin.RECONCILED


def test_inject_crash_hits_every_matching_call_in_its_block_unless_times_limits_it(store):
    runner = dnb.LocalRunner(store)

    def action(order, ctx):
        return ctx.durable_execute(charge_card, order, 1)

    crashes = 0
    with dnb.inject_crash(call=f"{__name__}.charge_card", point="before_call"):
        for order in ("a", "b"):
            try:
                runner.run(action, order, run_id=order)
            except dnb.SimulatedCrash:
                crashes += 1
    assert crashes == 2 and [c.status for c in store.pending()] == [Status.PENDING] * 2

    with dnb.inject_crash(call=f"{__name__}.charge_card", point="before_call", times=1):
        with pytest.raises(dnb.SimulatedCrash):
            runner.run(action, "c", run_id="c")
        assert runner.run(action, "c", run_id="c") == {"order": "c", "charged": 1}  # recovered inside
    with pytest.raises(ValueError, match="times must be at least 1"), dnb.inject_crash(call="x", times=0):
        pass
    with pytest.raises(ValueError, match="point must be one of"):
        dnb.inject_crash(call="x", point="during")  # refused at the call, not when the block starts
    with dnb.inject_crash(call=charge_card, point="after_call"), pytest.raises(dnb.SimulatedCrash):
        runner.run(action, "d", run_id="d")  # the function itself names its call id
    assert store.call("d", 0).status is Status.PENDING


def test_inject_crash_with_a_short_name_that_crashed_nothing_says_the_id_to_pass(store):
    """``call="charge_card"`` for a call journaled as ``tests.test_replay.charge_card`` used to crash nothing,
    silently: the "recovery" that followed recovered a run that never crashed."""
    runner = dnb.LocalRunner(store)

    def action(order, ctx):
        return ctx.durable_execute(charge_card, order, 1)

    said = rf"inject_crash\(call='charge_card'\) crashed nothing.*'{__name__}.charge_card' ran.*pass the full id"
    with pytest.warns(dnb.CrashNotInjectedWarning, match=said), dnb.inject_crash(call="charge_card"):
        runner.run(action, "a", run_id="a")


def test_inject_crash_that_crashed_nothing_warns_at_its_end_naming_the_id_and_the_calls_that_ran(store):
    """A typo in the id, or a block around a run that only replays (a tutorial cell run twice), crashed
    nothing, silently: the test or tutorial then "recovered" a run that never crashed, and tested nothing."""
    runner = dnb.LocalRunner(store)

    def action(order, ctx):
        ctx.durable_execute(charge_card, order, 1)
        return ctx.durable_execute(send_receipt, order, "ok")

    said = (rf"inject_crash\(call='charge_crad'\) crashed nothing: no durable call with that id executed in the "
            rf"block, these did: '{__name__}.charge_card', '{__name__}.send_receipt'.*store.calls")
    with pytest.warns(dnb.CrashNotInjectedWarning, match=said) as seen, dnb.inject_crash(call="charge_crad"):
        assert runner.run(action, "a", run_id="a") == "ok"
    assert len(seen) == 1 and seen[0].filename == __file__  # at the user's `with`, once
    replayed = r"inject_crash\(call='.*charge_card'\) crashed nothing: no durable call executed.*replayed"
    with pytest.warns(dnb.CrashNotInjectedWarning, match=replayed), dnb.inject_crash(call=charge_card):
        assert runner.run(action, "a", run_id="a") == "ok"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(dnb.SimulatedCrash), dnb.inject_crash(call=charge_card):
            runner.run(action, "b", run_id="b")  # it crashed: nothing to say
        with pytest.raises(ZeroDivisionError), dnb.inject_crash(call="charge_crad"):
            raise ZeroDivisionError  # an error leaving the block says enough on its own


def test_an_inject_crash_block_already_told_it_reaches_no_flink_worker_is_not_warned_about_again() -> None:
    from durable_nb.journal import faults

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with dnb.inject_crash(call="x.charge"):
            faults.warn_out_of_reach("FlinkRunner")  # what FlinkRunner.map says at its start
            faults.warn_out_of_reach("FlinkRunner")
        with dnb.inject_crash(call="x.charge"):  # the same block again, around no Flink job: warned at its end
            pass
    assert [type(w.message) for w in seen] == [UserWarning, UserWarning, dnb.CrashNotInjectedWarning]


def _add_tax(order: dict) -> float:
    order["tax"] = round(order["amount"] * 0.2, 2)  # changes its argument in place
    return order["amount"] + order["tax"]


async def _add_tax_async(order: dict) -> float:
    return _add_tax(order)


@pytest.mark.parametrize("awaited", [False, True])
def test_a_durable_function_that_changes_its_arguments_in_place_is_warned_about(store, awaited):
    """A replay returns the result without running it, so the change is not made again: later calls that read
    the argument would see other values and execute again. The first run says so."""

    def place(order: dict, ctx: dnb.RunnerContext) -> float:
        return ctx.durable_execute(_add_tax, order)

    async def place_async(order: dict, ctx: dnb.RunnerContext) -> float:
        return await ctx.durable_execute_async(_add_tax_async, order)

    action = place_async if awaited else place
    with pytest.warns(dnb.ChangedInputWarning, match=r"durable call '.*_add_tax.*' \(run 'r', index 0\) changed its "
                      r"arguments in place.*executes again") as caught:
        assert dnb.LocalRunner(store).run(action, {"amount": 10.0}, run_id="r") == 12.0
    assert caught[0].filename == __file__  # the action's line, not contextlib's, which durable_nb's check runs in
    assert dnb.LocalRunner(store).run(action, {"amount": 10.0}, run_id="r") == 12.0  # a replay: nothing runs, no word


def test_a_notebook_function_loads_as_the_notebooks_own_only_when_it_is_the_same_function(tmp_path) -> None:
    """In a process whose __main__ defines ``price`` again: the same code loads as that very function (a
    list of helpers holds the helper); an edited one, or a wrapper whose body cannot be fingerprinted
    (functools.wraps copies the name), loads as the recorded copy, so a replay gives what was recorded."""
    import subprocess
    import sys

    record = (
        "import functools, sys\nfrom durable_nb.journal import codec\n"
        "def price(n):\n    return n * 2\n"
        "def logged(f):\n    @functools.wraps(f)\n    def inner(n):\n        return f(n)\n    return inner\n"
        "@logged\ndef fee(n):\n    return n + 1\n"
        "sys.stdout.buffer.write(codec.dumps([price, fee]))\n"
    )
    replay = (
        "import functools, pickle, sys\nblob = sys.stdin.buffer.read()\n"
        "def price(n):\n    return n * {price}\n"
        "def logged(f):\n    @functools.wraps(f)\n    def inner(n):\n        return f(n)\n    return inner\n"
        "@logged\ndef fee(n):\n    return n + 100\n"
        "p, f = pickle.loads(blob)\nprint(p is price, p(10), f is fee, f(10))\n"
    )
    blob = subprocess.run([sys.executable, "-c", record], capture_output=True, check=True).stdout
    same = subprocess.run([sys.executable, "-c", replay.format(price=2)], input=blob, capture_output=True,
                          check=True).stdout.decode().split()
    edited = subprocess.run([sys.executable, "-c", replay.format(price=3)], input=blob, capture_output=True,
                            check=True).stdout.decode().split()
    assert same == ["True", "20", "False", "11"]
    assert edited == ["False", "20", "False", "11"]


def test_a_version_mismatch_names_the_installed_versions_as_installed_and_survives_pickling():
    """The message said "pickled with other versions of cloudpickle 3.1.3, pandas 3.1.1 than those installed
    here": the versions it named are the installed ones, which read as if the payload's own were named."""
    import pickle

    err = dnb.RecordDecodeError("r", 0, "f", None, "TypeError: x", packages=("pandas 3.1.1", "cloudpickle 3.1.3"))
    text = str(err)
    assert "other versions of cloudpickle or pandas than those installed here (cloudpickle 3.1.3, pandas 3.1.1;" \
        in text, text
    again = pickle.loads(pickle.dumps(err))
    assert str(again) == text and again.packages == err.packages
