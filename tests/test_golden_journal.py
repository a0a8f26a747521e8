"""A journal written by schema version 1 (tests/journals/v1.db) keeps opening, replaying and recovering."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import durable_nb as dnb
from durable_nb import Origin, RunStatus, Status

GOLDEN = Path(__file__).parent / "journals" / "v1.db"


@dnb.durable(name="golden.charge")
def charge(order_id: str, amount: int) -> dict:
    raise AssertionError("a journaled charge must not run again")


@dnb.durable(name="golden.refuse")
def refuse(order_id: str) -> None:
    raise AssertionError("a journaled failure must not run again")


@pytest.fixture
def golden(tmp_path: Path) -> dnb.SqliteStore:
    copy = tmp_path / "v1.db"
    shutil.copy(GOLDEN, copy)
    return dnb.SqliteStore(copy)


def test_golden_journal_reads_as_written(golden):
    assert {r.run_id: r.status for r in golden.runs()} == {
        "golden-ok": RunStatus.COMPLETED, "golden-failed": RunStatus.COMPLETED, "golden-pending": RunStatus.RUNNING,
    }
    (ok,) = golden.calls("golden-ok")
    assert (ok.call_id, ok.status, ok.origin, ok.result()) == (
        "golden.charge", Status.SUCCEEDED, Origin.EXECUTED, {"order": "o1", "charged": 10},
    )
    assert golden.calls("golden-failed")[0].error_preview == "PermissionError: card blocked for o2"


def test_golden_journal_replays_and_recovers(golden):
    runner = dnb.LocalRunner(golden)
    with runner.context("golden-ok") as ctx:
        assert ctx.durable_execute(charge, "o1", 10) == {"order": "o1", "charged": 10}
    with runner.context("golden-failed") as ctx, pytest.raises(PermissionError, match="blocked"):
        ctx.durable_execute(refuse, "o2")
    with runner.context("golden-pending") as ctx:
        got = ctx.durable_execute(charge, "o3", 30, reconciler=lambda: {"order": "o3", "charged": 30})
    assert got == {"order": "o3", "charged": 30}
    assert golden.calls("golden-pending")[0].origin is Origin.RECONCILED
