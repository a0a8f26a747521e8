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


@pytest.fixture
def frame_digests(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many times a pandas object is digested (one entry per digest of one)."""
    from durable_nb.journal import digest_frames

    seen: list[int] = []
    real = digest_frames.encode_pandas

    def counted(obj: object, out: list[bytes], depth: int) -> None:
        seen.append(len(obj))  # type: ignore[arg-type]
        real(obj, out, depth)

    monkeypatch.setattr(digest_frames, "encode_pandas", counted)
    return seen


def count_rows(frame: object, customer: object = None) -> int:
    return len(frame)  # type: ignore[arg-type]


def test_a_mismatch_digests_arguments_once_when_none_is_an_instance_of_the_user_s_class(frame_digests, helpers):
    """The earlier digest is the same where no argument holds such an instance: asking it on every mismatch
    digested a large frame a second time (~0.4 s for 1e6 rows), a cost every changed argument paid."""
    import asyncio

    import pandas as pd

    runner = dnb.LocalRunner(dnb.MemoryStore())
    frames = [pd.DataFrame({"amount": [1, 2, 3]}), pd.DataFrame({"amount": [1, 2, 4]})]

    def action(frame: pd.DataFrame, ctx: dnb.RunnerContext) -> int:
        return ctx.durable_execute(count_rows, frame)

    async def action_async(frame: pd.DataFrame, ctx: dnb.RunnerContext) -> int:
        return await ctx.durable_execute_async(count_rows, frame)

    for act, run_id in ((action, "sync"), (action_async, "async")):
        counts = []
        for frame in frames:  # the second run mismatches its journal: it executes, as the first did
            frame_digests.clear()
            with pytest.warns(dnb.NonDeterminismWarning) if frame is frames[1] else _nothing():
                if act is action:
                    runner.run(act, frame, run_id=run_id)
                else:
                    asyncio.run(runner.run_async(act, frame, run_id=run_id))
            counts.append(len(frame_digests))
        assert counts[1] == counts[0], (run_id, counts)
    frame_digests.clear()  # with an instance of the user's class among them, the earlier digest is asked
    with pytest.warns(dnb.NonDeterminismWarning), runner.context("sync") as ctx:
        ctx.durable_execute(count_rows, frames[0], helpers.Customer("ann", 10))
    assert len(frame_digests) == counts[0] + 1


def test_a_new_version_of_a_cell_digests_a_frame_it_reads_once_more_at_most(frame_digests, ip, tmp_path):
    """A cell's inputs were all digested again as an earlier durable_nb did, whenever no run was found under
    their digest (every first run, every edit): a cell reading a large frame paid its digest twice."""
    import pandas as pd
    from shell_harness import run

    ip.user_ns["orders_frame"] = pd.DataFrame({"amount": range(5)})
    cell = "total_amount = int(orders_frame['amount'].sum())"
    run(ip, f"frames_once --store {tmp_path / 'j.db'}", cell)
    frame_digests.clear()
    _, log = run(ip, f"frames_once --store {tmp_path / 'j.db'}", cell)
    assert "replayed cell" in log.text()
    replayed = len(frame_digests)  # its inputs' digest, found
    frame_digests.clear()
    ip.user_ns["orders_frame"] = pd.DataFrame({"amount": range(6)})
    run(ip, f"frames_once --rerun --store {tmp_path / 'j.db'}", cell)  # executes, its digest not looked up
    executed = len(frame_digests)
    frame_digests.clear()
    ip.user_ns["orders_frame"] = pd.DataFrame({"amount": range(7)})
    run(ip, f"frames_once --store {tmp_path / 'j.db'}", cell)  # a new version: looked up, not found, executed
    assert ip.user_ns["total_amount"] == 21
    assert replayed == 1 and len(frame_digests) == executed, (replayed, executed, frame_digests)


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None
