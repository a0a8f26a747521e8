"""``durable_nb.flink.durable_process``: a durable action inside the user's own PyFlink pipeline."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import _orders
import pytest

import durable_nb as dnb
from durable_nb.flink import FlinkRunner, FlinkSetupError, MapRow, durable_process, environment

pytestmark = pytest.mark.flink


def _pipeline(records: list[dict[str, Any]], action: Any, journal: Path) -> list[MapRow]:
    """A collection source of JSON lines, parsed, the durable action on 2 slots, and a collect sink."""
    from pyflink.common import Types

    env = environment(parallelism=1)  # source and parsing in one ordered stream: stable seq per key
    lines = env.from_collection([json.dumps(r) for r in records], type_info=Types.STRING())
    parsed = lines.map(json.loads, output_type=Types.PICKLED_BYTE_ARRAY())
    results = durable_process(parsed, action, key="customer", store=dnb.SqliteStore(journal))
    results.set_parallelism(2)
    with results.execute_and_collect("orders pipeline") as rows:
        return list(rows)


@pytest.mark.timeout(180)
def test_durable_process_gives_local_runner_run_ids_and_replays_on_a_second_pipeline(
    flink: None, tmp_path: Path
) -> None:
    journal = tmp_path / "journal.db"
    action = _orders.make_action(tmp_path)
    records = _orders.orders(30)

    first = _pipeline(records, action, journal)
    work_after_first = (tmp_path / "work.txt").read_text()
    again = _pipeline(records, action, journal)
    local = dnb.LocalRunner(dnb.SqliteStore(journal)).map(action, records, key="customer")

    assert all(isinstance(row, MapRow) for row in first)
    by_run = {row.run_id: row for row in first}
    assert set(by_run) == set(local["run_id"]) == {row.run_id for row in again}
    for run_id, result in zip(local["run_id"], local["result"], strict=True):
        assert by_run[run_id].status is dnb.RunStatus.COMPLETED
        assert by_run[run_id].result == result
    assert (tmp_path / "work.txt").read_text() == work_after_first, "a replay re-ran a durable call"
    assert sum(_orders.ledger_counts(tmp_path).values()) == 30


def test_a_sqlite_journal_for_a_cluster_on_another_machine_is_refused_naming_postgresql(
    flink: None, tmp_path: Path
) -> None:
    with pytest.raises(FlinkSetupError, match="PostgreSQL") as refused:
        FlinkRunner(dnb.SqliteStore(tmp_path / "journal.db"), jobmanager="flink.example.com:8081")
    assert "network filesystem" in str(refused.value)
    assert "shared filesystem" not in str(refused.value) and "every TaskManager sees" not in str(refused.value)
