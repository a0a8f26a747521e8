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


INSTANCES = Path(__file__).parent / "journals" / "instances.db"
"""Written by durable_nb 3ba488c (tests/journals/make_instances.py): calls and a cell taking instances of the
user's classes, journaled before such instances digested by their state."""


@pytest.fixture
def helpers(monkeypatch: pytest.MonkeyPatch) -> object:
    """The notebook's helpers module the journal was written with, imported under the same name."""
    monkeypatch.syspath_prepend(str(GOLDEN.parent))
    import golden_helpers

    golden_helpers.CALLS.clear()
    return golden_helpers


@pytest.fixture
def instances(tmp_path: Path) -> dnb.SqliteStore:
    copy = tmp_path / "instances.db"
    shutil.copy(INSTANCES, copy)
    return dnb.SqliteStore(copy)


def test_calls_taking_instances_of_the_user_s_classes_replay_after_the_upgrade(helpers, instances):
    h = helpers
    runner = dnb.LocalRunner(instances)
    with runner.context("instance-ok") as ctx:
        got = ctx.durable_execute(h.charge_customer, h.Customer("ann", 10), [h.Point(1, 2)])
    assert got == {"customer": "ann", "charged": 10, "at": [(1, 2)]}
    with runner.context("instance-pending") as ctx:  # its PENDING is this call: reconciled, not run again
        ctx.durable_execute(h.charge_customer, h.Customer("bob", 20), [h.Point(3, 4)], reconciler=lambda: "found")
    assert h.CALLS == []
    assert [(c.status, c.origin) for c in instances.calls("instance-pending")] == [(Status.SUCCEEDED,
                                                                                    Origin.RECONCILED)]
    assert not any(r.n_discarded for r in instances.runs())
    report = runner.dry_run(lambda _, ctx: ctx.durable_execute(h.charge_customer, h.Customer("ann", 10),
                                                               [h.Point(1, 2)]), None, run_id="instance-ok")
    assert report.stopped_at is None
    with pytest.warns(dnb.NonDeterminismWarning), runner.context("instance-ok") as ctx:  # other arguments: another call
        ctx.durable_execute(h.charge_customer, h.Customer("ann", 11), [h.Point(1, 2)])
    assert h.CALLS == ["charge ann"]


def test_a_cell_reading_an_instance_of_the_user_s_class_replays_after_the_upgrade(helpers, instances, ip):
    from shell_harness import run

    ip.run_cell("import durable_nb as dnb\nimport golden_helpers\ncust = golden_helpers.Customer('cy', 30)")
    ip.user_ns.pop("paid", None)
    from make_instances import CELL

    _, log = run(ip, f"pay --store {instances.path}", CELL)
    assert helpers.CALLS == []
    assert "replayed cell 'pay'" in log.text()
    assert ip.user_ns["paid"] == {"customer": "cy", "charged": 30, "at": [(1, 2)]}
    assert [r.run_id for r in instances.runs() if r.run_id.startswith("cell:pay")] == ["cell:pay:f9405ec096651b18"]
