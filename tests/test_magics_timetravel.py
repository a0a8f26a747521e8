"""Time travel on ``%%durable`` cells through a real IPython shell: --dry, --strict, %durable_fork, %durable_prune.

Counters in this module prove how often a cell's durable calls really ran; the
journal is read back with the store after every step.
"""

from __future__ import annotations

import collections
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from IPython.core.error import UsageError
from shell_harness import _Log, _Stream, run

import durable_nb as dnb
from durable_nb.errors import UnpicklableArgumentWarning
from durable_nb.journal import context as journal_context
from durable_nb.notebook.magics import DurableMagics, magics_of

RAN: collections.Counter[str] = collections.Counter()
AMOUNT = {"value": 10}


def charge(order_id: int, amount: int) -> str:
    RAN["charge"] += 1
    return f"ch_{order_id}_{amount}"


def send_receipt(charge_id: str) -> str:
    RAN["send_receipt"] += 1
    return f"receipt for {charge_id}"


def amount() -> int:
    """Read at run time, not an input of the cell: changing it makes a recovery non-deterministic."""
    return AMOUNT["value"]


ORDER = """\
ctx = dnb.current_context()
c = ctx.durable_execute(charge, 1, amount())
r = ctx.durable_execute(send_receipt, c)
print(r)
"""
EDITED = ORDER.replace("print(r)", "print('edited:', r)")


@pytest.fixture
def magics(ip: Any, store: dnb.Store) -> Iterator[DurableMagics]:
    m = magics_of(ip)
    assert m is not None
    saved_store, saved_ns = m._store, dict(ip.user_ns)
    m.store = store
    RAN.clear()
    AMOUNT["value"] = 10
    ip.user_ns.update(charge=charge, send_receipt=send_receipt, amount=amount, dnb=dnb)
    yield m
    m._store = saved_store
    m._forks.clear()
    ip.user_ns.clear()
    ip.user_ns.update(saved_ns)


def line(ip: Any, magic: str, text: str) -> tuple[Any, _Log]:
    import sys

    log = _Log()
    out = sys.stdout
    sys.stdout = _Stream(log, "stdout")
    try:
        result = ip.run_line_magic(magic, text)
    finally:
        sys.stdout = out
    return result, log


def crash_in_receipt(ip: Any) -> None:
    with pytest.raises(dnb.SimulatedCrash), dnb.inject_crash(call=f"{__name__}.send_receipt", point="before_call"):
        run(ip, "order", ORDER)


def cell_runs(store: dnb.Store) -> list[dnb.RunRecord]:
    return [r for r in store.runs() if r.run_id.startswith("cell:order:")]


def cell_runs_of(store: dnb.Store, name: str) -> list[dnb.RunRecord]:
    return [r for r in store.runs() if r.run_id.startswith(f"cell:{name}:")]


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def two_kernels(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[list[dnb.Store]]:
    """Two store objects on one journal, as two kernels have (one MemoryStore.named journal in one process)."""
    if request.param == "memory":
        name = f"two-kernels-{tmp_path.name}"
        yield [dnb.MemoryStore.named(name), dnb.MemoryStore.named(name)]
        return
    if request.param == "postgres":
        dsn = request.getfixturevalue("pg_dsn")
        clients: list[dnb.Store] = [dnb.PostgresStore(dsn), dnb.PostgresStore(dsn)]
    else:
        clients = [dnb.SqliteStore(tmp_path / "journal.db"), dnb.SqliteStore(tmp_path / "journal.db")]
    yield clients
    for client in clients:
        client.close()


def snapshot(store: dnb.Store) -> Any:
    return [(r.run_id, r.status, r.attempts, r.n_calls) for r in store.runs()], store.to_pandas().to_dict("records")


def test_fork_from_here_on_a_cell_run_names_the_magic_that_forks_it(ip: Any, magics: DurableMagics) -> None:
    """JournalView's Fork from here on a cell's run made a store fork the cell never reopens: the next run of
    the cell replayed its record, and the fork (said to "execute call 2 and later") stayed RUNNING forever."""
    import html
    import re

    run(ip, "order", ORDER)
    [source] = cell_runs(magics.store)
    view = dnb.JournalView(magics.store, run_id=source.run_id)
    view.selector.value = next(i for i, r in enumerate(view.records) if r.index == 2)
    runs_before = len(magics.store.runs())
    assert view.fork.fork() is None
    said = " ".join(html.unescape(re.sub(r"<[^>]+>", " ", view.fork.message.value.split("</style>")[-1])).split())
    assert len(magics.store.runs()) == runs_before  # nothing written
    suggested = re.search(r"%durable_fork (.+?) in the notebook", said)
    assert suggested is not None and suggested.group(1) == f"order --at 2 --run {source.run_id}"
    line(ip, "durable_fork", suggested.group(1))  # what it says to do does what it says
    RAN.clear()
    run(ip, "order", ORDER)
    assert dict(RAN) == {"send_receipt": 1}
    view.selector.value = next(i for i, r in enumerate(view.records) if r.index == 0)
    assert view.fork.fork() is None and "--rerun" in view.fork.message.value


# -- --dry ----------------------------------------------------------------------------------------


def test_dry_on_a_finished_cell_says_it_replays_and_runs_nothing(ip: Any, magics: DurableMagics) -> None:
    run(ip, "order", ORDER)
    before, ran = snapshot(magics.store), dict(RAN)
    report, _ = run(ip, "order --dry", ORDER)
    assert isinstance(report, dnb.DryRunReport)
    assert report.stopped_at is None and "replays as a whole" in report.rule
    assert snapshot(magics.store) == before and dict(RAN) == ran


def test_dry_on_a_failed_cell_says_the_replay_raises_its_error_again(ip: Any, magics: DurableMagics) -> None:
    """It said only "replays as a whole (names, outputs); nothing runs"; the run then raised the recorded error."""
    failing = ORDER.replace("print(r)", "raise ValueError('receipt lost')")
    with pytest.raises(ValueError, match="receipt lost"):
        run(ip, "order", failing)
    report, _ = run(ip, "order --dry", failing)
    assert report.stopped_at is None and report.error == "ValueError: receipt lost"
    assert "FAILED" in report.rule and "raised ValueError: receipt lost" in repr(report)
    ran = dict(RAN)
    with pytest.raises(ValueError, match="receipt lost"):  # what the report said: nothing runs, the error again
        run(ip, "order", failing)
    assert dict(RAN) == ran


def test_dry_on_a_finished_cell_shows_why_it_replays_not_all_1_calls(ip: Any, magics: DurableMagics) -> None:
    """What the user sees is the report's repr: it read "all 1 calls replay" for a cell whose journal shows
    three calls, and left out the rule that says the cell replays as a whole."""
    run(ip, "order", ORDER)
    report, _ = run(ip, "order --dry", ORDER)
    shown = repr(report).splitlines()
    assert shown[0].endswith(": 1 call replays; nothing would run")
    assert "replays as a whole (names, outputs)" in shown[1]


def test_dry_on_a_crashed_cell_names_the_first_call_that_would_not_replay(
    ip: Any, magics: DurableMagics, tmp_path: Path
) -> None:
    crash_in_receipt(ip)
    ip.user_ns.pop("r", None)
    before, ran = snapshot(magics.store), dict(RAN)
    files = {p: p.read_bytes() for p in tmp_path.glob("journal.db*")}
    report, log = run(ip, "order --dry", ORDER)
    assert (report.stopped_at, report.decision) == (2, dnb.Decision.REEXECUTE)
    assert report.recorded.call_id.endswith("send_receipt") and report.replayed == 1
    assert snapshot(magics.store) == before and dict(RAN) == ran  # nothing ran, nothing written
    assert {p: p.read_bytes() for p in tmp_path.glob("journal.db*")} == files
    assert "r" not in ip.user_ns  # the body ran in a copy of the namespace
    assert log.text() == ""  # and what it printed was swallowed


def test_dry_on_a_crashed_cell_that_changes_an_input_in_place_leaves_the_input_and_the_next_run_alone(
    ip: Any, magics: DurableMagics
) -> None:
    """A dry run that appended to the notebook's list would make the real run after it read other inputs,
    open a new run and charge again: the very thing the report said would replay."""
    cell = "orders.append('o1')\n" + ORDER
    ip.user_ns["orders"] = []
    with pytest.raises(dnb.SimulatedCrash), pytest.warns(dnb.ChangedInputWarning), \
            dnb.inject_crash(call=f"{__name__}.send_receipt", point="before_call"):
        run(ip, "order", cell)
    orders: list[str] = []
    ip.user_ns["orders"] = orders  # the kernel restarted and the cells above ran again

    report, _ = run(ip, "order --dry", cell)

    assert (report.stopped_at, report.replayed) == (2, 1) and orders == []
    with pytest.warns(dnb.ChangedInputWarning):
        _, log = run(ip, "order", cell)
    assert "recovering cell 'order'" in log.text() and orders == ["o1"]
    assert RAN["charge"] == 1 and len(cell_runs(magics.store)) == 1


def test_dry_on_an_edited_cell_compares_with_its_latest_run_and_names_the_fork(
    ip: Any, magics: DurableMagics
) -> None:
    crash_in_receipt(ip)
    AMOUNT["value"] = 99  # the edit changes what call 1 is called with
    report, log = run(ip, "order --dry", EDITED)
    assert (report.stopped_at, report.decision) == (1, dnb.Decision.MISMATCH)
    assert "compared with run" in log.text()
    # the rule says what a run now does (the comparison's "would be discarded" is about a run it leaves alone)
    assert report.rule.startswith("no record of this version: a run now starts a new run and executes the cell")
    AMOUNT["value"] = 10
    report, log = run(ip, "order --dry", EDITED)
    assert (report.stopped_at, report.decision) == (2, dnb.Decision.REEXECUTE)
    assert "%durable_fork order --at 2" in log.text()
    assert RAN == {"charge": 1}


def test_dry_on_an_edited_cell_whose_calls_all_match_says_a_run_executes_it(ip: Any, magics: DurableMagics) -> None:
    run(ip, "order", ORDER)
    report, log = run(ip, "order --dry", EDITED)
    assert (report.stopped_at, report.decision) == (3, dnb.Decision.EXECUTE) and report.replayed == 2
    assert "nothing would run" not in repr(report) and "executes the cell" in report.rule
    assert "%durable_fork order --at 3" in log.text()
    assert RAN == {"charge": 1, "send_receipt": 1}


def test_dry_cannot_be_combined_with_rerun_or_map(ip: Any, magics: DurableMagics) -> None:
    with pytest.raises(UsageError, match="--dry"):
        run(ip, "order --dry --rerun", ORDER)
    with pytest.raises(UsageError, match="--dry"):
        run(ip, "order --dry --map rows", ORDER)


def test_dry_strict_reports_the_mismatch_a_strict_run_refuses(ip: Any, magics: DurableMagics) -> None:
    """``--dry --strict`` was refused ("--dry executes nothing"), so a strict cell could not be checked
    before its real run raised; a strict runner's ``dry_run`` reports the refusal, and so does the cell."""
    crash_in_receipt(ip)
    AMOUNT["value"] = 99  # call 1 (the charge) now has other arguments
    before, ran = snapshot(magics.store), dict(RAN)
    report, _ = run(ip, "order --dry --strict", ORDER)
    assert (report.stopped_at, report.decision, report.strict, report.refused) == (1, dnb.Decision.MISMATCH, True, True)
    assert "refused" in str(report)
    loose, _ = run(ip, "order --dry", ORDER)
    assert not loose.refused  # without --strict the run would discard and go on
    assert snapshot(magics.store) == before and dict(RAN) == ran  # nothing ran, nothing written
    with pytest.raises(dnb.NonDeterminismError):  # what the report said
        run(ip, "order --strict", ORDER)


# -- --strict ---------------------------------------------------------------------------------------


def test_strict_raises_on_a_mismatch_and_discards_nothing(ip: Any, magics: DurableMagics) -> None:
    crash_in_receipt(ip)
    AMOUNT["value"] = 99
    with pytest.raises(dnb.NonDeterminismError) as info:
        run(ip, "order --strict", ORDER)
    assert info.value.index == 1
    [cell_run] = cell_runs(magics.store)
    assert len(magics.store.calls(cell_run.run_id)) == 3
    assert magics.store.discarded() == []
    assert RAN == {"charge": 1}
    # Without --strict the same recovery discards and goes on (with a warning).
    with pytest.warns(dnb.NonDeterminismWarning):
        run(ip, "order", ORDER)
    assert RAN == {"charge": 2, "send_receipt": 1}


# -- %durable_fork ---------------------------------------------------------------------------------


def test_fork_makes_the_next_run_of_the_cell_continue_from_call_k(ip: Any, magics: DurableMagics) -> None:
    run(ip, "order", ORDER)
    assert RAN == {"charge": 1, "send_receipt": 1}
    [original] = cell_runs(magics.store)
    new_id, log = line(ip, "durable_fork", "order --at 2")
    assert new_id == original.run_id + "#2"
    assert "keeps calls 1..1" in log.text()
    calls = magics.store.calls(new_id)
    assert [(c.index, c.status.value) for c in calls] == [(0, "PENDING"), (1, "SUCCEEDED")]
    assert calls[1].result_preview == "'ch_1_10'"
    forked = magics.store.run(new_id)
    assert (forked.parent_run_id, forked.forked_at) == (original.run_id, 2)  # the fork shows its parent
    _, log = run(ip, "order", ORDER)
    assert RAN == {"charge": 1, "send_receipt": 2}  # charge replayed from the copy, the receipt ran again
    assert "receipt for ch_1_10" in log.text()
    assert magics.store.run(new_id).status.value == "COMPLETED"
    assert len(magics.store.calls(original.run_id)) == 3  # the original is untouched
    _, log = run(ip, "order", ORDER)  # and now the fork is the cell's record: it replays
    assert "replayed cell" in log.text() and RAN == {"charge": 1, "send_receipt": 2}


def test_a_fork_at_1_says_the_next_run_executes_every_call_not_that_it_replays_them(
    ip: Any, magics: DurableMagics
) -> None:
    run(ip, "order", ORDER)
    _, log = line(ip, "durable_fork", "order --at 1")
    assert "keeps none of its calls" in log.text() and "executes its calls from call 1 on" in log.text()
    assert "replays them" not in log.text()
    run(ip, "order", ORDER)
    assert RAN == {"charge": 2, "send_receipt": 2}  # as it said: nothing kept, every call ran again


def test_forking_again_before_the_cell_runs_replaces_the_first_fork(ip: Any, magics: DurableMagics) -> None:
    """A user who changes their mind (--at 3, then --at 2) gets one fork, from the run that ran; no orphan
    RUNNING fork with call 0 PENDING is left for ReconcilePanel to offer."""
    run(ip, "order", ORDER)
    [original] = cell_runs(magics.store)
    first, _ = line(ip, "durable_fork", "order --at 3")
    second, log = line(ip, "durable_fork", "order --at 2")
    assert f"replaces fork {first!r}, which never ran (removed)" in log.text()
    assert f"keeps calls 1..1 of {original.run_id!r}" in log.text()  # forked from the run that ran
    assert magics.store.run(first) is None
    forked = magics.store.run(second)
    assert (forked.parent_run_id, forked.forked_at) == (original.run_id, 2)
    _, log = run(ip, "order", ORDER)
    assert RAN == {"charge": 1, "send_receipt": 2}  # from call 2 on, as the second fork says
    assert {r.run_id: r.status.value for r in cell_runs(magics.store)} == {
        original.run_id: "COMPLETED", second: "COMPLETED"}


def test_forking_the_pending_fork_itself_names_the_run_that_made_the_calls(ip: Any, magics: DurableMagics) -> None:
    run(ip, "order", ORDER)
    [original] = cell_runs(magics.store)
    first, _ = line(ip, "durable_fork", "order --at 3")
    second, log = line(ip, "durable_fork", f"order --at 2 --run {first}")
    assert magics.store.run(first) is None and f"of {original.run_id!r}" in log.text()
    assert magics.store.run(second).parent_run_id == original.run_id  # not the removed fork


def test_fork_then_edit_moves_the_kept_calls_to_the_edited_cell(ip: Any, magics: DurableMagics) -> None:
    crash_in_receipt(ip)
    line(ip, "durable_fork", "order --at 2")
    _, log = run(ip, "order", EDITED)
    assert "edited: receipt for ch_1_10" in log.text()
    assert RAN == {"charge": 1, "send_receipt": 1}
    finished = [r for r in cell_runs(magics.store) if r.status.value == "COMPLETED"]
    assert len(finished) == 1 and not finished[0].run_id.endswith("#2")  # the edited version's own run
    assert finished[0].parent_run_id is not None and finished[0].forked_at == 2  # lineage moved with the fork
    assert len(cell_runs(magics.store)) == 2  # the crashed original and the edited run; the fork moved


_HOLD_RUN = """
import sys, time, pathlib, durable_nb as dnb
store = dnb.SqliteStore(sys.argv[1])
with dnb.LocalRunner(store).context(sys.argv[2]):  # the unedited cell, reopening the fork, in another kernel
    pathlib.Path(sys.argv[3]).touch()
    while not pathlib.Path(sys.argv[4]).exists():
        time.sleep(0.01)
store.close()
"""


@pytest.mark.parametrize("store", ["sqlite"], indirect=True)
def test_an_edited_cell_does_not_move_a_fork_another_kernel_is_running(
    ip: Any, magics: DurableMagics, tmp_path: Path
) -> None:
    """Kernel A forks the cell and edits it; kernel B, running the unedited cell, has reopened the fork. A's
    run copied the fork to the edited version, then failed removing the fork (RunBusyError about a run it
    never named): B's fork and A's copy both went on from the fork point, executing its calls twice."""
    import subprocess
    import sys

    crash_in_receipt(ip)
    fork_id, _ = line(ip, "durable_fork", "order --at 2")
    opened, done = tmp_path / "opened", tmp_path / "done"
    other = subprocess.Popen([sys.executable, "-c", _HOLD_RUN, str(magics.store.path), fork_id,  # type: ignore[attr-defined]
                              str(opened), str(done)])
    try:
        for _ in range(3000):
            if opened.exists() or other.poll() is not None:
                break
            time.sleep(0.01)
        assert opened.exists()
        before = sorted(r.run_id for r in cell_runs(magics.store))
        with pytest.raises(dnb.RunBusyError, match="the fork .* is running now .* Nothing was run or written"):
            run(ip, "order", EDITED)
        assert sorted(r.run_id for r in cell_runs(magics.store)) == before  # no second copy of the fork
        assert RAN == {"charge": 1}
    finally:
        done.touch()
        other.wait(60)
    _, log = run(ip, "order", EDITED)  # once B is gone, the fork still goes on, in the edited cell
    assert "edited: receipt for ch_1_10" in log.text()
    assert RAN == {"charge": 1, "send_receipt": 1}


@pytest.mark.parametrize("store", ["sqlite"], indirect=True)
def test_a_fork_another_kernel_reopens_while_the_edited_cell_copies_it_is_left_to_that_kernel(
    ip: Any, magics: DurableMagics, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same race, with kernel B reopening the fork after A checked it and before A removed it: A's copy
    is removed again (one of the two goes on from the fork point, B's), and A's cell says why."""
    import subprocess
    import sys

    crash_in_receipt(ip)
    fork_id, _ = line(ip, "durable_fork", "order --at 2")
    store = magics.store
    opened, done = tmp_path / "opened", tmp_path / "done"
    procs: list[subprocess.Popen[bytes]] = []
    copy = store.fork_reopened

    def copy_while_b_opens(*args: Any) -> str:
        procs.append(subprocess.Popen([sys.executable, "-c", _HOLD_RUN, str(store.path), fork_id,  # type: ignore[attr-defined]
                                       str(opened), str(done)]))
        for _ in range(3000):
            if opened.exists():
                break
            time.sleep(0.01)
        return copy(*args)

    monkeypatch.setattr(store, "fork_reopened", copy_while_b_opens)
    before = sorted(r.run_id for r in cell_runs(store))
    try:
        with pytest.raises(dnb.RunBusyError, match="the fork .* is running now"):
            run(ip, "order", EDITED)
        assert opened.exists() and sorted(r.run_id for r in cell_runs(store)) == before
    finally:
        done.touch()
        for proc in procs:
            proc.wait(60)


def test_forking_a_run_another_kernel_is_running_is_refused(ip: Any, magics: DurableMagics) -> None:
    """Kernel B runs the cell, kernel A forks it at the call B is executing: A's next run of the cell
    executed that call again while B's was still running (two shipments), told it was "recovering"."""
    run(ip, "order", ORDER)
    [original] = cell_runs(magics.store)
    # the other kernel's live context
    with dnb.LocalRunner(magics.store).context(original.run_id), \
            pytest.raises(UsageError, match="is running now .* Let it finish"):
        line(ip, "durable_fork", "order --at 2")
    assert [r.run_id for r in cell_runs(magics.store)] == [original.run_id]  # nothing written
    new_id, _ = line(ip, "durable_fork", "order --at 2")  # once it has finished
    assert new_id == original.run_id + "#2"


def test_forking_a_run_this_kernel_holds_open_names_that_way_out_too(ip: Any, magics: DurableMagics) -> None:
    """A `with runner.context(run_id)` left open in this kernel holds the run as another kernel would: the
    refusal said only "another kernel is running the cell ... stop that kernel", sending the user after a
    kernel that does not exist (or telling them to stop their own)."""
    run(ip, "order", ORDER)
    [original] = cell_runs(magics.store)
    with dnb.LocalRunner(magics.store).context(original.run_id), pytest.raises(UsageError) as refused:
        line(ip, "durable_fork", "order --at 2")
    assert f"a `with runner.context({original.run_id!r})` left open here" in str(refused.value)
    assert "close that context" in str(refused.value)


class _ReadsNoEveryRun(dnb.MemoryStore):
    """A journal on which a magic about one cell may not read every run (``runs()``): on 100,000 runs of other
    cells and actions, ``%durable_journal``, ``%durable_fork`` and ``%durable_forget`` took 0.4-0.9 s each."""

    def runs(self) -> list[dnb.RunRecord]:
        raise AssertionError("read every run of the store to find one cell's runs")

    def newest_runs(self, n: int) -> tuple[list[dnb.RunRecord], int]:  # the JournalView's run filter: its own read
        every = dnb.MemoryStore.runs(self)
        return every[-n:] if n > 0 else [], len(every)


@pytest.mark.parametrize("store", ["memory"], indirect=True)  # the magics' store is replaced below
def test_magics_on_one_cell_find_its_runs_by_prefix_and_never_those_of_a_cell_whose_name_extends_it(
    ip: Any, magics: DurableMagics
) -> None:
    store = magics.store = _ReadsNoEveryRun()
    for name in ("orde", "order", "order2", "order_b"):  # each a prefix of the next, or an extension of "order"
        run(ip, name, ORDER)
    ip.user_ns["recs"] = [{"id": "a"}, {"id": "b"}]
    run(ip, "order --map recs --key id", "ctx.durable_execute(charge, record['id'], 1)\n")
    others = {name: store.run_ids_with_prefix(f"cell:{name}:") for name in ("orde", "order2", "order_b")}
    [original] = store.run_ids_with_prefix("cell:order:")
    first, _ = line(ip, "durable_fork", "order --at 3")
    second, log = line(ip, "durable_fork", "order --at 2")
    assert store.run(second).parent_run_id == original and store.run(first) is None  # the first fork replaced
    assert f"replaces fork {first!r}" in log.text()
    view, _ = line(ip, "durable_journal", "order")
    assert view.filters["run_id"] == second  # the cell's run written last
    view.close()
    _, log = line(ip, "durable_forget", "order")
    assert "forgot cell 'order' (4 runs)" in log.text()  # the run, its fork and the two --map records
    assert store.run_ids_with_prefix("cell:order:") == store.run_ids_with_prefix("cell:order/") == []
    assert {name: store.run_ids_with_prefix(f"cell:{name}:") for name in others} == others
    assert all(len(ids) == 1 for ids in others.values())


def test_fork_usage_errors_name_the_fix(ip: Any, magics: DurableMagics) -> None:
    with pytest.raises(UsageError, match="run the cell first"):
        line(ip, "durable_fork", "order --at 1")
    run(ip, "order", ORDER)
    with pytest.raises(UsageError, match=r"outside 1\.\.3"):
        line(ip, "durable_fork", "order --at 7")
    with pytest.raises(UsageError, match="must be a cell name"):
        line(ip, "durable_fork", "1abc --at 1")
    with pytest.raises(UsageError):
        line(ip, "durable_fork", "order")  # --at is required
    assert len(cell_runs(magics.store)) == 1


def test_fork_outside_the_calls_of_a_cell_without_inner_calls_names_the_one_fork_point(
        ip: Any, magics: DurableMagics) -> None:
    """It said "--at 1 keeps none of its calls, --at 1 keeps them all"."""
    run(ip, "plain", "total = 1 + 1\n")
    with pytest.raises(UsageError, match=r"outside 1\.\.1 .*made no durable calls inside, so --at 1.*only one"):
        line(ip, "durable_fork", "plain --at 2")


# -- attempt ids ------------------------------------------------------------------------------------

LEDGER: collections.Counter[str] = collections.Counter()
SETTLES = {"ok": True}


def pay(run_id: str) -> str:
    """A payment provider whose ledger is keyed by the run id, as the idempotency keys of real ones are."""
    LEDGER[run_id] += 1
    return f"paid {run_id}"


def settle() -> None:
    if not SETTLES["ok"]:
        raise RuntimeError("settlement refused")


PAY = "ctx = dnb.current_context()\npaid = ctx.durable_execute(pay, ctx.run_id)\nsettle()\n"


def test_a_pruned_or_forgotten_attempts_id_is_never_given_to_a_fork_a_rerun_or_a_new_run(
    ip: Any, magics: DurableMagics
) -> None:
    """A ledger keyed by ``ctx.run_id`` showed two charges under one id: ``%durable_fork`` (and ``--rerun``) took
    the number after the newest *existing* attempt, so once ``%durable_prune --status FAILED`` removed the failed
    ``#2`` the next fork was ``#2`` again; after ``%durable_forget`` the cell ran again under its first id."""
    LEDGER.clear()
    SETTLES["ok"] = True
    ip.user_ns.update(pay=pay, settle=settle)
    run(ip, "pay", PAY)
    [first] = [r.run_id for r in cell_runs_of(magics.store, "pay")]
    SETTLES["ok"] = False
    made = []
    for how in ("fork", "fork", "rerun", "rerun"):
        if how == "fork":
            line(ip, "durable_fork", "pay --at 1")
        with pytest.raises(RuntimeError, match="settlement refused"):
            run(ip, "pay --rerun" if how == "rerun" else "pay", PAY)
        made += [r.run_id for r in magics.store.prune(status="FAILED")]
    assert made == [f"{first}#{n}" for n in (2, 3, 4, 5)]
    line(ip, "durable_forget", "pay")
    SETTLES["ok"] = True
    run(ip, "pay", PAY)  # the cell's record is forgotten: it runs again, under an id never used
    assert [r.run_id for r in cell_runs_of(magics.store, "pay")] == [f"{first}#6"]
    assert dict(LEDGER) == {first: 1, **{f"{first}#{n}": 1 for n in range(2, 7)}}  # one charge per id


def test_two_kernels_starting_one_attempt_at_once_take_one_id(two_kernels: list[dnb.Store]) -> None:
    """A kept attempt number whose run a live context holds, not yet written, is another kernel starting that
    attempt: taken again, the second kernel meets the first's run (RunBusyError, then a replay) rather than
    running an attempt of its own, as when numbers were not kept. Once the run is gone, the number is not given."""
    from durable_nb.notebook.runids import keep_attempt, new_attempt

    a, b = two_kernels
    base = "cell:pay:0123456789abcdef"
    assert new_attempt(a, base) == new_attempt(b, base) == base
    with dnb.LocalRunner(a).context(base) as ctx:  # kernel A opened it and kept its number; nothing written yet
        keep_attempt(a, base, base)
        assert new_attempt(b, base) == base
        with pytest.raises(dnb.RunBusyError), dnb.LocalRunner(b).context(base):
            pass
        ctx.durable_execute(str, 1)
    assert new_attempt(b, base) == f"{base}#2"  # a --rerun now
    a.delete_run(base)  # %durable_forget, or a prune
    assert new_attempt(b, base) == f"{base}#2"  # not the forgotten run's id


def test_a_journal_from_before_attempt_numbers_were_kept_replays_and_goes_on_after_its_newest(
    ip: Any, magics: DurableMagics, tmp_path: Path
) -> None:
    """Its cells replay their newest attempt; a rerun takes the number after it (a pruned one in between is
    not known to such a journal, as before)."""
    import sqlite3

    path = tmp_path / "old.db"
    magics.store = dnb.SqliteStore(path)
    try:
        run(ip, "order", ORDER)
        run(ip, "order --rerun", ORDER)
        run(ip, "order --rerun", ORDER)
        [first, second, third] = sorted(r.run_id for r in cell_runs(magics.store))
        magics.store.delete_run(second)
        magics.store.close()
        with sqlite3.connect(path) as conn:  # as a journal written by an older durable_nb: no number kept
            conn.execute("DELETE FROM meta WHERE key LIKE 'issued:%'")
        conn.close()
        magics.store = dnb.SqliteStore(path)
        RAN.clear()
        _, log = run(ip, "order", ORDER)
        assert "replayed cell" in log.text() and not RAN
        run(ip, "order --rerun", ORDER)
        assert sorted(r.run_id for r in cell_runs(magics.store)) == [first, third, f"{first}#4"]
    finally:
        magics.store.close()


# -- an edited cell whose earlier version did not finish -------------------------------------------


def test_an_edited_cell_whose_last_run_crashed_is_refused_and_a_fork_carries_the_charge_over(
    ip: Any, magics: DurableMagics
) -> None:
    """The edited cell is a new version with a new run id: it executed every call again (charged twice) while
    the crashed run, the one whose calls replay, stayed behind, and nothing said so. Refused before the body runs,
    naming each way on; the fork it names keeps the charge."""
    crash_in_receipt(ip)
    before = snapshot(magics.store)
    _, dry = run(ip, "order --dry", EDITED)  # a dry run says so too
    assert "durable: a run of this version now is refused:\n%%durable order: this cell changed" in dry.text()
    with pytest.raises(UsageError) as refused:
        run(ip, "order", EDITED)
    said = str(refused.value)
    assert RAN == {"charge": 1} and snapshot(magics.store) == before  # nothing ran, nothing written
    [crashed] = cell_runs(magics.store)
    assert f"since its last run {crashed.run_id!r}, which did not finish" in said
    assert f"call 1 ({__name__}.charge) SUCCEEDED, call 2 ({__name__}.send_receipt) PENDING" in said
    for way in ("undo the edit and run the cell", "%durable_fork order --at 2", "%%durable order --rerun",
                "%durable_forget order"):
        assert way in said
    assert "another notebook's cell named 'order'" in said and "give this cell another name" in said
    line(ip, "durable_fork", "order --at 2")
    _, log = run(ip, "order", EDITED)
    assert "edited: receipt for ch_1_10" in log.text() and RAN == {"charge": 1, "send_receipt": 1}


def test_a_fork_the_kernel_forgot_in_a_restart_is_not_passed_over_by_the_edited_cell(
    ip: Any, magics: DurableMagics
) -> None:
    """``%durable_fork order --at 2``, a kernel restart (the magics forget the pending fork), then the edited
    cell: it did not take the fork's kept charge over and charged again. Refused; forking again works."""
    run(ip, "order", ORDER)
    line(ip, "durable_fork", "order --at 2")
    magics._forks.clear()  # the restart
    with pytest.raises(UsageError, match="is a fork that has not run yet, holding durable calls"):
        run(ip, "order", EDITED)
    line(ip, "durable_fork", "order --at 2")
    _, log = run(ip, "order", EDITED)
    assert "edited: receipt for ch_1_10" in log.text() and RAN == {"charge": 1, "send_receipt": 2}


def test_an_edited_cell_goes_on_with_rerun_and_is_not_refused_again_for_the_run_it_went_past(
    ip: Any, magics: DurableMagics
) -> None:
    crash_in_receipt(ip)
    run(ip, "order --rerun", EDITED)  # the user read the refusal and goes on, knowingly
    assert RAN == {"charge": 2, "send_receipt": 1}
    run(ip, "order", EDITED.replace("edited:", "again:"))  # the latest run finished: nothing to refuse
    assert RAN == {"charge": 3, "send_receipt": 2}


def test_undoing_the_edit_recovers_the_crashed_run(ip: Any, magics: DurableMagics) -> None:
    crash_in_receipt(ip)
    with pytest.raises(UsageError):
        run(ip, "order", EDITED)
    _, log = run(ip, "order", ORDER)
    assert "recovering cell 'order'" in log.text() and RAN == {"charge": 1, "send_receipt": 1}


def test_an_edited_cell_on_flink_is_refused_before_any_job(ip: Any, magics: DurableMagics) -> None:
    crash_in_receipt(ip)
    with pytest.raises(UsageError, match="did not finish"):
        run(ip, "order --runner flink", EDITED)
    assert RAN == {"charge": 1}


def test_an_edited_cell_waiting_for_an_answer_is_refused(ip: Any, magics: DurableMagics) -> None:
    cell = """\
c = dnb.current_context().durable_execute(charge, 1, amount())
answer = dnb.current_context().durable_input("Send the receipt?", choices=["yes", "no"])
"""
    with pytest.raises(dnb.AwaitingInput):
        run(ip, "approve", cell)
    with pytest.raises(UsageError, match=r"is waiting for an answer \(durable_input\)"):
        run(ip, "approve", cell.replace("Send the receipt?", "Send it?"))
    assert RAN == {"charge": 1}


def test_an_edited_cell_is_not_refused_when_its_last_run_made_no_durable_call_or_raised(
    ip: Any, magics: DurableMagics
) -> None:
    """Only a run whose durable calls a new version would repeat is worth stopping for: a cell interrupted
    before its first call, or one that raised (a bug fixed by an edit: its run is finished), runs as before."""
    with pytest.raises(KeyboardInterrupt):
        run(ip, "slow", "raise KeyboardInterrupt\n")
    run(ip, "slow", "x = 1\n")
    assert ip.user_ns["x"] == 1
    with pytest.raises(ZeroDivisionError):
        run(ip, "order", ORDER + "1 / 0\n")
    run(ip, "order", ORDER)
    assert RAN == {"charge": 2, "send_receipt": 2}


def test_an_edited_cell_is_not_refused_for_a_run_another_kernel_is_running(ip: Any, magics: DurableMagics) -> None:
    crash_in_receipt(ip)
    [crashed] = cell_runs(magics.store)
    with dnb.LocalRunner(magics.store).context(crashed.run_id):  # the other kernel's live context: not a crash
        run(ip, "order", EDITED)
    assert RAN == {"charge": 2, "send_receipt": 1}


# -- %durable_prune ---------------------------------------------------------------------------------


def test_prune_dry_run_then_prune(ip: Any, magics: DurableMagics) -> None:
    crash_in_receipt(ip)  # a cell run with PENDING calls: stays
    runner = dnb.LocalRunner(magics.store)
    for i in range(3):
        runner.run(lambda v, ctx: v, i, run_id=f"old-{i}")
    removed, log = line(ip, "durable_prune", "--status COMPLETED --keep-last 1 --dry-run")
    assert [r.run_id for r in removed] == ["old-0", "old-1"]
    assert "would remove 2 runs" in log.text()
    assert len(magics.store.runs()) == 4
    removed, log = line(ip, "durable_prune", "--status COMPLETED --keep-last 1")
    assert "removed 2 runs" in log.text()
    assert [r.run_id for r in magics.store.runs()][-1] == "old-2"
    line(ip, "durable_prune", "--older-than 0d --include-pending")
    assert len(magics.store.runs()) == 0


def test_prune_of_many_runs_lists_twenty_and_counts_the_rest(ip: Any, magics: DurableMagics) -> None:
    """Pruning a 20,000-record map's runs printed 20,000 lines into the cell's output."""
    runner = dnb.LocalRunner(magics.store)
    for i in range(25):
        runner.run(lambda v, ctx: v, i, run_id=f"old-{i:02}")
    removed, log = line(ip, "durable_prune", "--status COMPLETED --dry-run")
    assert len(removed) == 25
    printed = log.text().splitlines()
    assert printed[0] == "durable: would remove 25 runs" and len(printed) == 22
    assert printed[-1] == "  ... and 5 more (the list this magic returns holds every one)"


def test_prune_lists_odd_run_ids_as_escapes(ip: Any, magics: DurableMagics) -> None:
    """A lone surrogate (a non-UTF-8 file name) in a run id failed the printed list; a right-to-left
    override displayed another id than the one removed."""
    surrogate = "" if isinstance(magics.store, dnb.PostgresStore) else "\ud800"  # PostgreSQL refuses those ids
    odd = f"order-{surrogate}-\u202egnp.exe"
    dnb.LocalRunner(magics.store).run(lambda v, ctx: v, 1, run_id=odd)
    removed, log = line(ip, "durable_prune", "--status COMPLETED --dry-run")
    assert [r.run_id for r in removed] == [odd]
    printed = log.text()
    printed.encode("utf-8")  # what a kernel sends the notebook
    assert f"order-{surrogate.encode('unicode_escape').decode()}-\\u202egnp.exe" in printed


def test_prune_usage_errors(ip: Any, magics: DurableMagics) -> None:
    with pytest.raises(UsageError, match="at least one"):
        line(ip, "durable_prune", "")
    with pytest.raises(UsageError, match="30d"):
        line(ip, "durable_prune", "--older-than soon")
    with pytest.raises(UsageError, match="longer than any journal is old"):
        line(ip, "durable_prune", "--older-than 99999999999d")
    with pytest.raises(UsageError, match="status"):
        line(ip, "durable_prune", "--status DONE")
    with pytest.raises(UsageError, match="include-pending"):  # "removed 0 runs" hid why
        line(ip, "durable_prune", "--status WAITING")


def test_option_values_quoted_as_one_word_are_read_without_their_quotes(ip: Any, magics: DurableMagics) -> None:
    """Magic lines split non-POSIX: ``--older-than '30d'``, ``--status 'COMPLETED'`` and ``--run '<id>'`` (a
    run id quoted because it holds ``#``) kept their quotes and were refused, while ``--store``/``--key`` and
    ``%durable_fork 'NAME'`` took quotes off."""
    run(ip, "order", ORDER)
    [first] = cell_runs(magics.store)
    fork, _ = line(ip, "durable_fork", f"order --at 2 --run '{first.run_id}'")
    assert magics.store.run(fork).parent_run_id == first.run_id
    removed, _ = line(ip, "durable_prune", "--older-than '0d' --status \"COMPLETED\" --dry-run")
    assert [r.run_id for r in removed] == [first.run_id]
    run(ip, "'order'", ORDER)  # the fork, run under the cell's name given quoted
    assert RAN == {"charge": 1, "send_receipt": 2}
    with pytest.raises(UsageError, match="name one or more statuses"):
        line(ip, "durable_prune", "--status ''")


@pytest.mark.parametrize("status", ["--status=", "--status ,", "--status=,,"])
def test_an_empty_status_is_refused_not_taken_as_no_filter(ip: Any, magics: DurableMagics, status: str) -> None:
    """``--status=`` passed the "at least one filter" check and then filtered nothing: every finished run went."""
    dnb.LocalRunner(magics.store).run(lambda v, ctx: v, 1, run_id="kept")
    with pytest.raises(UsageError, match="name one or more statuses"):
        line(ip, "durable_prune", status)
    assert [r.run_id for r in magics.store.runs()] == ["kept"]


# -- durable_input in a cell, and the hook ------------------------------------------------------------


def test_loading_the_extension_registers_the_input_hook(ip: Any) -> None:
    from durable_nb.notebook.inputs import show_input

    hook = journal_context.set_input_hook(None)
    journal_context.set_input_hook(hook)
    assert hook is show_input


def test_durable_input_in_a_cell_waits_then_goes_on_from_the_answer(ip: Any, magics: DurableMagics) -> None:
    cell = """\
answer = dnb.current_context().durable_input("Charge 10 EUR?", choices=["yes", "no"])
c = dnb.current_context().durable_execute(charge, 1, amount()) if answer == "yes" else None
print("answer:", answer, c)
"""
    with pytest.raises(dnb.AwaitingInput) as info:
        run(ip, "approve", cell)
    run_id = info.value.run_id
    assert magics.store.run(run_id).status.value == "WAITING"
    assert [c.status.value for c in magics.store.calls(run_id)] == ["PENDING", "PENDING"]  # the cell stays open
    with pytest.raises(dnb.AwaitingInput):  # unanswered: asking again, nothing else happens
        run(ip, "approve", cell)
    magics.store.answer(run_id, 1, "yes")
    _, log = run(ip, "approve", cell)
    assert "answer: yes ch_1_10" in log.text()
    assert RAN == {"charge": 1}
    assert magics.store.run(run_id).status.value == "COMPLETED"
    _, log = run(ip, "approve", cell)
    assert "replayed cell" in log.text() and RAN == {"charge": 1}


def test_dry_keeps_two_names_of_one_input_one_object_when_the_cell_also_reads_a_module(
    ip: Any, magics: DurableMagics
) -> None:
    """``math`` (a module, which cannot be copied) among the inputs must not make ``alias`` and ``orders``
    two copies: the body would see ``len(alias) == 0`` after ``orders.append``, unlike the real run, and the
    report would name a mismatch at the charge that the real run replays."""
    import math

    cell = (
        "orders.append('o1')\nctx = dnb.current_context()\n"
        "c = ctx.durable_execute(charge, 1, math.floor(len(alias)))\nr = ctx.durable_execute(send_receipt, c)\n"
    )
    ip.user_ns.update(math=math)
    ip.user_ns["orders"] = ip.user_ns["alias"] = []
    with pytest.raises(dnb.SimulatedCrash), pytest.warns(dnb.ChangedInputWarning), \
            dnb.inject_crash(call=f"{__name__}.send_receipt", point="before_call"):
        run(ip, "order", cell)
    ip.user_ns["orders"] = ip.user_ns["alias"] = []  # the kernel restarted and the cells above ran again

    report, _ = run(ip, "order --dry", cell)

    assert (report.stopped_at, report.replayed) == (2, 1), report.rule


def test_dry_names_the_inputs_it_could_not_copy_since_the_real_run_sees_what_the_body_did_to_them(
    ip: Any, magics: DurableMagics
) -> None:
    """A generator cannot be copied: the dry body consumes the notebook's own, so the real run after it reads
    other values. Said in one line naming it (not the module the cell also reads, which has nothing to consume)."""
    import math

    cell = "n = next(ids)\nm = math.floor(n)\n" + ORDER
    ip.user_ns.update(math=math, ids=(i for i in range(10)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnpicklableArgumentWarning)  # the generator, digested by its type
        with pytest.raises(dnb.SimulatedCrash), \
                dnb.inject_crash(call=f"{__name__}.send_receipt", point="before_call"):
            run(ip, "order", cell)
        report, log = run(ip, "order --dry", cell)

    assert (report.stopped_at, report.replayed) == (2, 1), report.rule
    note = log.text()
    assert "--dry: ids cannot be copied" in note and "math" not in note
    assert next(ip.user_ns["ids"]) == 2  # the note is true: the dry body took 1
