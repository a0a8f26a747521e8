"""DESIGN.md read literally: the names, signatures and values it fixes, one clause per test.

Why a file of its own: the behaviour behind each clause is proved where it lives
(test_replay.py, test_durability.py, ...); what those tests take for granted is
the wording itself (a parameter's name and default, a name importable as
``dnb.X``, the columns of ``to_pandas``). Users copy those from the contract,
so a rename that every behavioural test survives must still fail here.
"""

from __future__ import annotations

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
