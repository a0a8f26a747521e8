"""DESIGN.md read literally: the names, signatures and values it fixes, one clause per test.

Why a file of its own: the behaviour behind each clause is proved where it lives
(test_replay.py, test_durability.py, ...); what those tests take for granted is
the wording itself (a parameter's name and default, a name importable as
``dnb.X``, the columns of ``to_pandas``). Users copy those from the contract,
so a rename that every behavioural test survives must still fail here.
"""

from __future__ import annotations

import functools
import importlib
import inspect
from pathlib import Path
from typing import Any

import pytest

import durable_nb as dnb
from durable_nb import Origin, RunStatus, Status

EMPTY = inspect.Parameter.empty
POS = inspect.Parameter.POSITIONAL_OR_KEYWORD
KW = inspect.Parameter.KEYWORD_ONLY

# Every name DESIGN.md uses as ``dnb.X`` or lists as importable from durable_nb.
CONTRACT_NAMES = [
    "SqliteStore", "MemoryStore", "PostgresStore", "open_store", "LocalRunner", "FlinkRunner",
    "RunnerContext", "durable", "current_context", "JournalView", "ReplayStepper", "ReconcilePanel",
    "SimulatedCrash", "inject_crash", "AwaitingInput", "DurableError", "Decision", "NonDeterminismError",
    "LeaseLostError", "RunBusyError", "UnserializableResultWarning", "UnserializableResultError",
]

CALL_RECORD_FIELDS = ["run_id", "index", "call_id", "args_digest", "status", "origin", "result_preview",
                      "error_preview", "started_at", "finished_at"]


def params(obj: Any) -> list[tuple[str, Any, Any]]:
    """``(name, kind, default)`` of each parameter, ``self`` left out."""
    return [(p.name, p.kind, p.default) for p in inspect.signature(obj).parameters.values() if p.name != "self"]


def starts_with(obj: Any, expected: list[tuple[str, Any, Any]]) -> None:
    """The contract's parameters come first, as written; later keyword-only extras are the code's own."""
    got = params(obj)
    assert got[: len(expected)] == expected, f"{obj.__qualname__}{inspect.signature(obj)}"
    assert all(kind is KW for _, kind, _ in got[len(expected):]), f"{obj.__qualname__}: extras must be keyword-only"


@pytest.mark.parametrize("name", CONTRACT_NAMES)
def test_every_name_the_contract_uses_is_importable_from_durable_nb(name: str) -> None:
    assert getattr(dnb, name) is not None
    assert name in dnb.__all__


@pytest.mark.flink  # deselected on the default install's leg of ./dev test
def test_the_flink_and_flink_agents_names_are_where_the_contract_puts_them() -> None:
    pytest.importorskip("pyflink")
    assert callable(importlib.import_module("durable_nb.flink").durable_process)
    pytest.importorskip("flink_agents")
    assert inspect.isclass(importlib.import_module("durable_nb.flink_agents").AgentRunner)


def test_runner_signatures_are_the_contracts() -> None:
    starts_with(dnb.LocalRunner, [("store", POS, None)])
    interval = inspect.signature(dnb.FlinkRunner).parameters["checkpoint_interval_ms"].default  # "=..." in the text
    assert isinstance(interval, int) and interval > 0
    starts_with(dnb.FlinkRunner, [("store", POS, None), ("parallelism", POS, 2),
                                  ("checkpoint_interval_ms", POS, interval), ("jobmanager", POS, None)])
    assert "strict" in inspect.signature(dnb.LocalRunner).parameters
    assert "strict" in inspect.signature(dnb.FlinkRunner).parameters
    starts_with(dnb.LocalRunner.run, [("action", POS, EMPTY), ("value", POS, None), ("run_id", KW, None)])
    for runner in (dnb.LocalRunner, dnb.FlinkRunner):
        assert [p[:2] for p in params(runner.map)] == [("action", POS), ("records", POS), ("key", KW), ("progress", KW)]
    assert params(dnb.LocalRunner.context)[0][0] == "run_id"
    assert params(dnb.LocalRunner.fork)[:2] == [("run_id", POS, EMPTY), ("at", POS, EMPTY)]


@pytest.mark.flink  # deselected on the default install's leg of ./dev test
def test_durable_process_and_agent_runner_signatures_are_the_contracts() -> None:
    pytest.importorskip("pyflink")
    from durable_nb.flink import durable_process

    starts_with(durable_process, [("stream", POS, EMPTY), ("action", POS, EMPTY), ("key", KW, EMPTY),
                                  ("store", KW, EMPTY), ("strict", KW, False)])
    pytest.importorskip("flink_agents")
    from durable_nb.flink_agents import AgentRunner

    starts_with(AgentRunner, [("agent", POS, EMPTY), ("runner", POS, None)])
    assert params(AgentRunner.run)[:2] == [("input", POS, EMPTY), ("key", KW, None)]
    assert params(AgentRunner.map)[:2] == [("inputs", POS, EMPTY), ("key", KW, None)]


@pytest.mark.parametrize("store_class", ["SqliteStore", "MemoryStore", "PostgresStore"])
def test_prune_fork_and_answer_have_the_contracts_signature_on_every_store(store_class: str) -> None:
    cls = getattr(dnb, store_class)
    assert params(cls.prune) == [("older_than", KW, None), ("keep_last", KW, None), ("status", KW, None),
                                 ("include_pending", KW, False), ("dry_run", KW, False)]
    assert params(cls.fork)[:2] == [("run_id", POS, EMPTY), ("at", POS, EMPTY)]
    assert [p[0] for p in params(cls.answer)] == ["run_id", "index", "value"]
    assert [p[0] for p in params(cls.to_pandas)] == ["run_id"]


def test_store_constructors_take_what_the_contract_gives_them() -> None:
    assert params(dnb.SqliteStore)[0][0] == "path"
    assert ("durability", KW, "call") in params(dnb.SqliteStore)
    assert params(dnb.PostgresStore)[0] == ("dsn", POS, EMPTY)
    assert ("durability", KW, "call") in params(dnb.PostgresStore)
    assert params(dnb.MemoryStore) == []


def test_context_and_widget_signatures_are_the_contracts() -> None:
    assert params(dnb.RunnerContext.durable_input) == [("prompt", POS, EMPTY), ("choices", KW, None)]
    starts_with(dnb.JournalView, [("store", POS, EMPTY), ("run_id", POS, None)])
    assert params(dnb.ReconcilePanel)[:2] == [("store", POS, EMPTY), ("reconcilers", POS, None)]
    assert params(dnb.durable) == [("func", inspect.Parameter.POSITIONAL_ONLY, None), ("name", KW, None)]
    assert [p[0] for p in params(dnb.inject_crash)][:2] == ["call", "point"]


def test_the_error_classes_are_what_the_contract_says_they_are() -> None:
    assert issubclass(dnb.SimulatedCrash, BaseException) and not issubclass(dnb.SimulatedCrash, Exception)
    assert issubclass(dnb.AwaitingInput, dnb.DurableError)
    assert issubclass(dnb.UnserializableResultWarning, Warning)
    assert issubclass(dnb.UnserializableResultError, Exception)


def test_the_status_origin_and_decision_values_are_the_contracts_words() -> None:
    assert [s.value for s in RunStatus] == ["RUNNING", "COMPLETED", "FAILED", "WAITING"]
    assert [s.value for s in Status] == ["PENDING", "SUCCEEDED", "FAILED"]
    assert [o.value for o in Origin] == ["EXECUTED", "RECONCILED", "RESOLVED"]
    assert {d.name for d in dnb.Decision} >= {"REPLAY", "RECONCILE", "EXECUTE", "MISMATCH"}


def test_a_call_record_has_the_contracts_fields_and_to_pandas_one_column_each(tmp_path: Path) -> None:
    store = dnb.SqliteStore(tmp_path / "j.db")
    try:
        with dnb.LocalRunner(store).context("r") as ctx:
            ctx.durable_execute(abs, -2)
        record = store.calls("r")[0]
        assert [getattr(record, f) is not None for f in CALL_RECORD_FIELDS].count(False) == 1  # error_preview
        assert record.result() == 2 and record.index == 0 and record.run_id == "r"
        assert list(store.to_pandas().columns) == CALL_RECORD_FIELDS
        assert list(dnb.MemoryStore().to_pandas().columns) == CALL_RECORD_FIELDS
        assert isinstance(store.runs(), list) and isinstance(store.calls("r"), list)
    finally:
        store.close()


@pytest.mark.parametrize("level", ["call", "transition", "relaxed"])
def test_each_durability_level_is_accepted(tmp_path: Path, level: str) -> None:
    dnb.SqliteStore(tmp_path / "j.db", durability=level).close()


@pytest.mark.parametrize("level", ["fsync", "", "CALL", None, 1])
def test_a_durability_the_contract_does_not_name_is_refused(tmp_path: Path, level: Any) -> None:
    with pytest.raises((ValueError, TypeError)):
        dnb.SqliteStore(tmp_path / "j.db", durability=level)
    assert not (tmp_path / "j.db").exists()


def absolute(x: int, ctx: dnb.RunnerContext) -> int:
    return ctx.durable_execute(abs, x)


def test_map_progress_is_drawn_by_tqdm_auto(monkeypatch: pytest.MonkeyPatch) -> None:
    tqdm_auto = pytest.importorskip("tqdm.auto")
    made: list[int] = []

    class Bar(tqdm_auto.tqdm):  # type: ignore[misc,name-defined]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            made.append(kwargs.get("total"))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(tqdm_auto, "tqdm", Bar)
    frame = dnb.LocalRunner(dnb.MemoryStore()).map(absolute, [-1, -2], progress=True)
    assert made == [2] and list(frame["result"]) == [1, 2]


@pytest.mark.flink  # needs apache-flink (the [flink] extra): deselected on the default install's leg of ./dev test
def test_flink_runner_defaults_to_the_embedded_journal_under_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    runner = dnb.FlinkRunner()
    assert isinstance(runner.store, dnb.SqliteStore)
    assert runner.store.path == tmp_path / ".durable" / "journal.db"


def lookup() -> int:
    raise KeyboardInterrupt


@pytest.mark.parametrize("awaited", [False, True])
def test_a_reconciler_interrupted_by_a_base_exception_leaves_the_call_pending(awaited: bool) -> None:
    """"BaseExceptions ... are never persisted as FAILED": a reconciler's no more than the function's."""
    import asyncio

    store = dnb.MemoryStore()
    runner = dnb.LocalRunner(store)
    with dnb.inject_crash(call=abs, point="after_call"), pytest.raises(dnb.SimulatedCrash), runner.context("r") as ctx:
        ctx.durable_execute(abs, -1)

    async def recover(ctx: dnb.RunnerContext) -> Any:
        return await ctx.durable_execute_async(abs, -1, reconciler=lookup)

    with pytest.raises(KeyboardInterrupt), runner.context("r") as ctx:
        if awaited:
            asyncio.run(recover(ctx))
        else:
            ctx.durable_execute(abs, -1, reconciler=lookup)
    assert [(c.status, c.origin) for c in store.calls("r")] == [(Status.PENDING, None)]
    with runner.context("r") as ctx:  # the next recovery reconciles it after all
        assert ctx.durable_execute(abs, -1, reconciler=lambda: 1) == 1
    assert [(c.status, c.origin) for c in store.calls("r")] == [(Status.SUCCEEDED, Origin.RECONCILED)]



def _public_callables() -> list[tuple[str, Any]]:
    """Every public function, method and property durable_nb defines behind ``dnb.__all__`` and the contract's
    other modules (``durable_nb.flink.durable_process``, ``durable_nb.flink_agents.AgentRunner``)."""
    named = {name: getattr(dnb, name) for name in dnb.__all__}
    named["flink.durable_process"] = importlib.import_module("durable_nb.flink").durable_process
    named["errors.check_run_id"] = importlib.import_module("durable_nb.errors").check_run_id
    found: list[tuple[str, Any]] = []
    for name, obj in named.items():
        if not inspect.isclass(obj):
            found.append((name, obj))
            continue
        if "__init__" in vars(obj):
            found.append((f"{name}.__init__", obj.__init__))
        for attr in dir(obj):
            owner = next((k for k in obj.__mro__ if attr in vars(k)), None)
            if attr.startswith("_") or owner is None or not owner.__module__.startswith("durable_nb"):
                continue
            raw = vars(owner)[attr]
            if isinstance(raw, property):
                found.append((f"{name}.{attr}", raw))
            elif inspect.isfunction(getattr(raw, "__func__", raw)):
                found.append((f"{name}.{attr}", getattr(obj, attr)))
    return found


def test_every_public_function_and_method_is_typed_and_documented() -> None:
    """STYLE: a public name says what it takes and returns (annotations) and why (its docstring, inherited
    from the method it implements if need be); ``help(dnb.X.y)`` is where a user reads it."""
    missing = []
    for qualname, obj in _public_callables():
        if not inspect.getdoc(obj):
            missing.append(f"{qualname}: no docstring")
        func = obj.fget if isinstance(obj, property) else obj
        sig = inspect.signature(func)
        missing += [f"{qualname}: {p.name} not annotated" for p in sig.parameters.values()
                    if p.name not in ("self", "cls") and p.annotation is EMPTY]
        if sig.return_annotation is EMPTY and not qualname.endswith("__init__"):
            missing.append(f"{qualname}: no return annotation")
    assert not missing, "\n".join(missing)


# -- sentences the file above did not read yet -----------------------------------------------------------------


def test_to_pandas_has_the_same_columns_and_dtypes_whether_or_not_it_finds_calls(store: dnb.Store) -> None:
    """``store.to_pandas()`` "one row per call, all runs (or run_id=...)": a filter matching nothing is the
    same table with no rows. Was: ``index`` came back as ``object`` for an empty result and ``int64``
    otherwise, so ``df["index"] + 1`` or a ``concat`` with a non-empty frame changed type on an empty run."""
    with dnb.LocalRunner(store).context("r") as ctx:
        ctx.durable_execute(abs, -2)
    full, empty = store.to_pandas(run_id="r"), store.to_pandas(run_id="no-such-run")
    assert list(empty.columns) == list(full.columns) == CALL_RECORD_FIELDS and empty.empty
    assert empty.dtypes.to_dict() == full.dtypes.to_dict()
    assert str(full["index"].dtype) == "int64"
    assert dnb.JournalView(store, "no-such-run").to_pandas().dtypes.to_dict() == full.dtypes.to_dict()


class _NeedsAnArgument:
    def __call__(self, order_id: str) -> int:
        return 1


def _kw_only(*, order_id: str) -> int:
    return 1


@pytest.mark.parametrize("reconciler", [lambda order_id: 1, _NeedsAnArgument(), _kw_only, 5, "lookup"],
                         ids=["lambda-arg", "callable-object-arg", "keyword-only-arg", "int", "str"])
def test_a_reconciler_that_cannot_be_called_without_arguments_is_a_type_error_before_anything_is_written(
    store: dnb.Store, reconciler: Any
) -> None:
    """"A reconciler must be callable with no arguments; anything else is a TypeError at the call, before
    anything is written", on every store, for the sync and the async call alike."""
    import asyncio

    ran: list[int] = []
    with dnb.LocalRunner(store).context("r") as ctx:
        with pytest.raises(TypeError):
            ctx.durable_execute(ran.append, 1, reconciler=reconciler)
        with pytest.raises(TypeError):  # at the call, not at the await
            ctx.durable_execute_async(ran.append, 1, reconciler=reconciler)
        assert asyncio.run(_awaited(ctx.durable_execute_async(abs, -1, reconciler=lambda: 1))) == 1
    assert ran == [] and [(c.index, c.call_id) for c in store.calls("r")] == [(0, "builtins.abs")]


async def _awaited(pending: Any) -> Any:
    return await pending


def test_durable_execute_async_writes_nothing_until_awaited_and_forwards_no_reconciler(store: dnb.Store) -> None:
    import asyncio

    def echo(*args: Any, **kwargs: Any) -> tuple[Any, Any]:
        return args, kwargs

    with dnb.LocalRunner(store).context("r") as ctx:
        pending = ctx.durable_execute_async(echo, 1, reconciler=lambda: None, y=2)
        assert store.calls("r") == []
        assert asyncio.run(_awaited(pending)) == ((1,), {"y": 2})
        assert ctx.durable_execute(echo, 3, reconciler=lambda: None, z=4) == ((3,), {"z": 4})
    assert [c.status for c in store.calls("r")] == [Status.SUCCEEDED, Status.SUCCEEDED]


def test_strict_mode_names_run_index_and_both_calls_and_discards_nothing(store: dnb.Store) -> None:
    """Strict mode: "rule 2 raises NonDeterminismError (run, index, recorded and current call) instead of
    discarding"."""
    def action(flip: bool, ctx: dnb.RunnerContext) -> Any:
        ctx.durable_execute(abs, -1)
        return ctx.durable_execute(round if flip else abs, -2)

    dnb.LocalRunner(store).run(action, False, run_id="r")
    before = store.calls("r")
    with pytest.raises(dnb.NonDeterminismError) as refused:
        dnb.LocalRunner(store, strict=True).run(action, True, run_id="r")
    err = refused.value
    assert (err.run_id, err.index, err.recorded_call_id, err.call_id) == ("r", 1, "builtins.abs", "builtins.round")
    assert store.calls("r") == before and store.discarded("r") == []


def test_a_fork_copies_the_calls_before_at_and_records_its_lineage(store: dnb.Store) -> None:
    """``store.fork("order-42", at=2)``: "calls 0..1 copied, lineage kept"; ``runner.fork(...)`` too."""
    runner = dnb.LocalRunner(store)
    runner.run(lambda _, ctx: [ctx.durable_execute(abs, -i) for i in range(3)], run_id="order-42")
    for new_id in (store.fork("order-42", at=2), runner.fork("order-42", at=2)):
        assert [(c.index, c.result()) for c in store.calls(new_id)] == [(0, 0), (1, 1)]
        run = next(r for r in store.runs() if r.run_id == new_id)
        assert (run.parent_run_id, run.forked_at) == ("order-42", 2)
    for bad in (-1, 4):
        with pytest.raises(ValueError):
            store.fork("order-42", at=bad)
    for wrong in ("2", 2.0, True, None):
        with pytest.raises(TypeError):
            store.fork("order-42", at=wrong)  # type: ignore[arg-type]


def test_awaiting_input_carries_run_index_and_prompt_and_the_answer_is_resolved(store: dnb.Store) -> None:
    def action(_: Any, ctx: dnb.RunnerContext) -> Any:
        ctx.durable_execute(abs, -1)
        return ctx.durable_input("Refund 120 EUR?", choices=["yes", "no"])

    runner = dnb.LocalRunner(store)
    with pytest.raises(dnb.AwaitingInput) as waiting:
        runner.run(action, run_id="r")
    assert isinstance(waiting.value, dnb.DurableError)
    assert (waiting.value.run_id, waiting.value.index, waiting.value.prompt) == ("r", 1, "Refund 120 EUR?")
    assert [r.status for r in store.runs()] == [RunStatus.WAITING]
    store.answer("r", 1, "yes")
    assert runner.run(action, run_id="r") == "yes"
    assert [(c.status, c.origin) for c in store.calls("r")] == [(Status.SUCCEEDED, Origin.EXECUTED),
                                                                 (Status.SUCCEEDED, Origin.RESOLVED)]


def test_a_dry_run_executes_and_writes_nothing_and_reports_the_first_call_that_would_not_replay(
    store: dnb.Store,
) -> None:
    ran: list[int] = []

    def action(n: int, ctx: dnb.RunnerContext) -> Any:
        return [ctx.durable_execute(ran.append, i) for i in range(n)]

    runner = dnb.LocalRunner(store)
    runner.run(action, 2, run_id="r")
    ran.clear()
    snapshot = (store.runs(), store.calls("r"))
    assert runner.dry_run(action, 2, run_id="r").stopped_at is None
    report = runner.dry_run(action, 3, run_id="r")
    assert (report.stopped_at, report.decision, report.recorded) == (2, dnb.Decision.EXECUTE, None)
    fresh = runner.dry_run(action, 1, run_id="never-ran")
    assert (fresh.stopped_at, fresh.decision) == (0, dnb.Decision.EXECUTE)
    assert ran == [] and (store.runs(), store.calls("r")) == snapshot


@pytest.mark.parametrize("url", ["sqlite:///{tmp}/a.db", "{tmp}/b.db", "memory://", "postgresql"])
def test_open_store_takes_each_url_form_the_contract_names(url: str, tmp_path: Path,
                                                          request: pytest.FixtureRequest) -> None:
    if url == "postgresql":
        url = request.getfixturevalue("pg_dsn")
        assert url.startswith("postgresql://")
    store = dnb.open_store(url.format(tmp=tmp_path))
    try:
        expected = {"sqlite": dnb.SqliteStore, "memory": dnb.MemoryStore, "postgresql": dnb.PostgresStore}
        assert isinstance(store, expected.get(url.partition(":")[0], dnb.SqliteStore))
        if isinstance(store, dnb.SqliteStore):
            assert store.path.parent == tmp_path
        assert dnb.LocalRunner(store).run(lambda _, ctx: ctx.durable_execute(abs, -3), run_id="r") == 3
    finally:
        store.close()


@pytest.mark.flink  # needs apache-flink (the [flink] extra): deselected on the default install's leg of ./dev test
@pytest.mark.parametrize(("option", "wrong"), [("parallelism", "2"), ("parallelism", 1.5), ("parallelism", True),
                                               ("checkpoint_interval_ms", "500"), ("concurrency", 2.0)])
def test_a_flink_runner_option_of_the_wrong_type_is_a_type_error(tmp_path: Path, option: str, wrong: Any) -> None:
    """``FlinkRunner(store=None, parallelism=2, checkpoint_interval_ms=..., ...)``: a str or float where the
    contract's int goes is a TypeError as for ``strict`` and ``jobmanager`` (and still a ValueError, as it was)."""
    pytest.importorskip("pyflink")
    store = dnb.SqliteStore(tmp_path / "j.db")
    try:
        with pytest.raises(TypeError, match=f"{option} must be an int >= 1") as refused:
            dnb.FlinkRunner(store, **{option: wrong})
        assert isinstance(refused.value, ValueError)
        with pytest.raises(ValueError, match=f"{option} must be an int >= 1"):
            dnb.FlinkRunner(store, **{option: 0})
    finally:
        store.close()


def test_a_generator_function_action_is_refused_before_its_run_opens() -> None:
    """Its body ran only when its result was iterated: the run was COMPLETED with no call journaled, and the
    durable calls then made were refused (the run was closed)."""
    store = dnb.MemoryStore()

    def charge_all(order: Any, ctx: dnb.RunnerContext) -> Any:
        yield ctx.durable_execute(abs, order)

    for call in (lambda: dnb.LocalRunner(store).run(charge_all, -1, run_id="g"),
                 lambda: dnb.LocalRunner(store).map(charge_all, [-1, -2])):
        with pytest.raises(TypeError, match=r"'.*charge_all' is a generator function .*return its result"):
            call()
    assert store.runs() == []


def test_an_action_object_whose_call_is_a_generator_is_refused_and_one_returning_a_generator_is_not() -> None:
    """An instance of a class whose ``__call__`` has ``yield`` ran as the generator function did: its run
    COMPLETED with no call journaled, its result a generator whose durable calls were then refused."""
    store = dnb.MemoryStore()

    class ChargeAll:
        def __call__(self, order: Any, ctx: dnb.RunnerContext) -> Any:
            yield ctx.durable_execute(abs, order)

    def charge_all(order: Any, ctx: dnb.RunnerContext, fee: int = 0) -> Any:
        yield ctx.durable_execute(abs, order + fee)

    for action in (ChargeAll(), functools.partial(charge_all, fee=1)):
        with pytest.raises(TypeError, match=r"'.*(ChargeAll.__call__|charge_all)' is a generator function"):
            dnb.LocalRunner(store).run(action, -1, run_id="g")
    assert store.runs() == []

    def returns_one(order: Any, ctx: dnb.RunnerContext) -> Any:  # a generator as its result: its own business
        return (n for n in [ctx.durable_execute(abs, order)])

    assert list(dnb.LocalRunner(store).run(returns_one, -1, run_id="r")) == [1]


def test_a_runner_context_used_without_with_says_how_to_open_it() -> None:
    """``ctx = runner.context("r1"); ctx.durable_execute(...)`` said "'_GeneratorContextManager' object has
    no attribute 'durable_execute'"."""
    runner = dnb.LocalRunner(dnb.MemoryStore())
    with pytest.raises(AttributeError, match=r"write `with runner.context\('r1'\) as ctx:` and use "
                                             r"ctx.durable_execute inside it"):
        runner.context("r1").durable_execute(abs, -1)
    with pytest.raises(AttributeError, match="^nothing$"):
        runner.context("r1").nothing  # noqa: B018  # not a context's name: the plain error
    with runner.context("r1") as ctx:
        assert ctx.durable_execute(abs, -1) == 1
    assert runner.store.calls("r1")[0].result() == 1


def test_durable_given_its_name_positionally_says_to_pass_it_as_name() -> None:
    """``@dnb.durable("charge")`` said "@durable decorates a function, got str"."""
    with pytest.raises(TypeError, match=r"write @dnb.durable\(name='charge'\), not @dnb.durable\('charge'\)"):
        dnb.durable("charge")  # type: ignore[arg-type]


def test_a_sqlite_read_only_flag_that_is_no_bool_is_refused(tmp_path: Path) -> None:
    """``read_only="false"`` (read from a config file) was true: the journal opened read-only."""
    path = tmp_path / "j.db"
    dnb.SqliteStore(path).close()
    with pytest.raises(TypeError, match="read_only must be True or False, got str 'false'"):
        dnb.SqliteStore(path, read_only="false")  # type: ignore[arg-type]
    with pytest.raises(dnb.JournalReadOnlyError, match=r"read_only=True"):
        dnb.SqliteStore(tmp_path / "none.db", read_only=True)
