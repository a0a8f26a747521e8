"""FlinkRunner.map with keys that print alike (issue 9): a run each, the same run ids as LocalRunner.map."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

import durable_nb as dnb
from durable_nb.runners.flink_job import FlinkRunner

pytestmark = pytest.mark.flink


def _mail(ledger: str, who: str) -> str:
    with open(ledger, "a") as fh:
        fh.write(who + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    return f"sent to {who}"


def _send(record: dict, ctx: dnb.RunnerContext) -> str:
    return ctx.durable_execute(_mail, record["ledger"], record["who"])


@pytest.mark.timeout(180)
def test_flink_map_gives_keys_that_print_alike_runs_of_their_own(flink: None, tmp_path: Path) -> None:
    ledger = str(tmp_path / "ledger.txt")
    keys = [1, "1", None, "None", float("nan"), float("nan"), None, "bad\ud800"]  # a lone surrogate (bad JSON)
    records = [{"k": k, "who": f"p{i}", "ledger": ledger} for i, k in enumerate(keys)]
    store = dnb.SqliteStore(tmp_path / "journal.db")
    first = FlinkRunner(store, parallelism=2).map(_send, records, key="k")
    assert first["run_id"].nunique() == len(records)
    assert sorted(Path(ledger).read_text().split()) == sorted(r["who"] for r in records)
    local = dnb.LocalRunner(store).map(_send, records, key="k")  # replays the Flink runs: nothing is sent again
    assert list(local["run_id"]) == list(first["run_id"])
    assert list(local["result"]) == [f"sent to p{i}" for i in range(len(records))]
    assert len(Path(ledger).read_text().split()) == len(records)
    store.close()


@pytest.mark.timeout(120)
def test_a_key_postgresql_cannot_hold_is_a_failed_row_not_a_job_retried_until_it_fails(
    flink: None, tmp_path: Path, pg_dsn: str
) -> None:
    """The run id is refused the same way on every attempt: its record's row says why, as on LocalRunner."""
    ledger = str(tmp_path / "ledger.txt")
    store = dnb.PostgresStore(pg_dsn)
    records = ["ann\x00", "bob"]
    df = FlinkRunner(store, parallelism=1).map(lambda who, ctx: ctx.durable_execute(_mail, ledger, who), records,
                                               key=lambda who: who)
    assert list(df["status"]) == ["FAILED", "COMPLETED"]
    assert "text type cannot hold" in df["error"][0]
    assert Path(ledger).read_text() == "bob\n"
    local = dnb.LocalRunner(store).map(lambda who, ctx: ctx.durable_execute(_mail, ledger, who), records,
                                       key=lambda who: who)
    assert list(local["status"]) == ["FAILED", "COMPLETED"] and Path(ledger).read_text() == "bob\n"


@dataclasses.dataclass
class Order:  # this test module travels to the workers by value, as a notebook's classes do
    id: int
    amount: float
    tags: frozenset


def _charge(ledger: str, order: Order) -> float:
    return float(_mail(ledger, f"{order.id}:{order.amount}").split(":")[1])


def _place(order: Order, ctx: dnb.RunnerContext) -> dict:
    return {"charged": ctx.durable_execute(_charge, ORDER_LEDGER[0], order), "fields": dataclasses.asdict(order)}


ORDER_LEDGER: list[str] = []


@pytest.mark.timeout(180)
def test_records_of_the_users_dataclass_and_set_keys_run_and_replay_as_on_local_runner(
    flink: None, tmp_path: Path
) -> None:
    """A worker's copy of the user's dataclass had no fields (``asdict`` gave ``{}`` and every order
    digested alike: an edited amount replayed the old charge), and a frozenset key's run id followed
    the worker's hash seed."""
    ORDER_LEDGER[:] = [str(tmp_path / "charges.txt")]
    orders = [Order(i, 10.0 * i, frozenset({f"t{i}", "vip", "eu"})) for i in (1, 2)]
    store = dnb.SqliteStore(tmp_path / "journal.db")
    flink = FlinkRunner(store, parallelism=2).map(_place, orders, key=lambda o: o.tags)
    local = dnb.LocalRunner(store).map(_place, orders, key=lambda o: o.tags)  # Flink's runs, replayed
    assert list(flink["result"]) == list(local["result"]) == [
        {"charged": 10.0 * i, "fields": {"id": i, "amount": 10.0 * i, "tags": frozenset({f"t{i}", "vip", "eu"})}}
        for i in (1, 2)
    ]
    assert list(flink["run_id"]) == list(local["run_id"])
    assert Path(ORDER_LEDGER[0]).read_text().split() == ["1:10.0", "2:20.0"]  # nothing charged twice
    edited = [dataclasses.replace(orders[0], amount=99.0)]
    with pytest.warns(dnb.NonDeterminismWarning):  # another argument: not the old charge replayed
        again = FlinkRunner(store, parallelism=1).map(_place, edited, key=lambda o: o.tags)
    assert again["result"][0]["charged"] == 99.0
    store.close()
