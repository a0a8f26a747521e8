"""A plain ``%%durable NAME --runner flink`` cell: the body runs as a one-record FlinkRunner job.

Driven through a real IPython shell. ``charge`` and ``append`` write files, the
ground truth of what ran in the worker: ``ledger.txt`` for the durable call,
``body.txt`` for the cell body itself. FlinkRunner ships this module to the
workers by value.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from IPython.core.error import UsageError
from shell_harness import _Log, run

import durable_nb as dnb
from durable_nb.notebook.magics import DurableMagics, magics_of
from durable_nb.runners import flink_job as _runner_flink

pytestmark = pytest.mark.flink


def append(path: str, line: str) -> None:
    with open(path, "a") as fh:
        fh.write(line + "\n")


def charge(ledger: str, order_id: int) -> str:
    append(ledger, f"charge {order_id}")
    return f"ch_{order_id}"


# ---------------------------------------------------------------- harness (tests/shell_harness.py)


@pytest.fixture
def magics(ip: Any, tmp_path: Path) -> Iterator[DurableMagics]:
    """The loaded magics on a fresh SQLite journal; the user namespace is restored afterwards."""
    m = magics_of(ip)
    assert m is not None
    saved_store, saved_ns = m._store, dict(ip.user_ns)
    store = dnb.SqliteStore(tmp_path / "journal.db")
    m.store = store
    ip.user_ns.update(dnb=dnb, sys=sys, charge=charge, append=append,
                      ledger=str(tmp_path / "ledger.txt"), body_log=str(tmp_path / "body.txt"))
    yield m
    m._store = saved_store
    ip.user_ns.clear()
    ip.user_ns.update(saved_ns)
    store.close()


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


# ---------------------------------------------------------------- tests

PAY = """\
append(body_log, "ran")
print("charging", order_id)
print("careful", file=sys.stderr)
charge_id = dnb.current_context().durable_execute(charge, ledger, order_id)
receipt = f"receipt for {charge_id}"
charges.append(charge_id)  # an input changed in place: it comes back from the worker
receipt.upper()
"""


@pytest.mark.timeout(180)
def test_cell_runs_on_flink_then_replays_without_a_job(
    flink: None, ip: Any, magics: DurableMagics, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ip.user_ns.update(order_id=7, charges=[])

    with pytest.warns(dnb.ChangedInputWarning, match="'charges' in place"):
        result, log = run(ip, "pay --runner flink", PAY)

    assert result == "RECEIPT FOR CH_7"
    assert (ip.user_ns["charge_id"], ip.user_ns["receipt"], ip.user_ns["charges"]) == (
        "ch_7", "receipt for ch_7", ["ch_7"])  # as the local runner leaves them
    assert log.items == [("stdout", "charging 7\n"), ("stderr", "careful\n")]
    assert lines(tmp_path / "body.txt") == ["ran"] and lines(tmp_path / "ledger.txt") == ["charge 7"]
    store = magics.store
    [run_rec] = store.runs()
    assert run_rec.run_id.startswith("cell:pay:") and len(run_rec.run_id) == len("cell:pay:") + 16
    assert run_rec.status is dnb.RunStatus.COMPLETED
    calls = store.calls(run_rec.run_id)
    assert [(c.index, c.status) for c in calls] == [(0, dnb.Status.SUCCEEDED), (1, dnb.Status.SUCCEEDED)]
    assert calls[0].call_id == "cell:pay" and calls[1].call_id.endswith(".charge")

    # A restarted kernel: the same cell replays from the journal alone, no job, no body.
    for gone in ("charge_id", "receipt"):
        ip.user_ns.pop(gone)
    ip.user_ns["charges"] = []  # the cell above it ran again
    monkeypatch.setattr(_runner_flink.FlinkRunner, "run", _refuse)
    result, again = run(ip, "pay --runner flink", PAY)

    assert result == "RECEIPT FOR CH_7"
    assert (ip.user_ns["charge_id"], ip.user_ns["receipt"], ip.user_ns["charges"]) == (
        "ch_7", "receipt for ch_7", ["ch_7"])
    (kind, text), *rest = again.items
    assert kind == "stdout" and text.startswith("↺ durable: replayed cell 'pay' recorded ")
    assert [("stdout", text.split("\n", 1)[1]), *rest] == log.items  # same outputs, same order
    assert lines(tmp_path / "body.txt") == ["ran"] and lines(tmp_path / "ledger.txt") == ["charge 7"]
    assert [c.finished_at for c in store.calls(run_rec.run_id)] == [c.finished_at for c in calls]
    # the local runner reads the same record
    ip.user_ns["charges"] = []
    run(ip, "pay", PAY)
    assert lines(tmp_path / "body.txt") == ["ran"]


@pytest.mark.timeout(180)
def test_a_cell_on_flink_warns_only_about_inputs_it_changed_in_place(
    flink: None, ip: Any, magics: DurableMagics
) -> None:
    """``count = count + 1`` rebinds an input, as the kernel sees it: no ChangedInputWarning (warnings are
    errors here). ``charges.append(...)`` does change one, and the kernel's object takes the worker's change,
    so a name holding the same list (``seen``) sees it as it would on the local runner."""
    charges: list[str] = []
    ip.user_ns.update(order_id=8, count=1, tags=["a"], charges=charges, seen=charges)
    cell = "count = count + 1\ntags = tags + ['b']\ncharges.append('ch')\n"

    with pytest.warns(dnb.ChangedInputWarning) as caught:
        run(ip, "rebind --runner flink", cell)

    assert ["changed its input 'charges' in place" in str(w.message) for w in caught] == [True]
    assert (ip.user_ns["count"], ip.user_ns["tags"]) == (2, ["a", "b"])
    assert ip.user_ns["charges"] is charges and ip.user_ns["seen"] == ["ch"]


@pytest.mark.timeout(180)
def test_a_map_cell_on_flink_that_changes_an_input_in_place_says_the_notebook_does_not_get_it(
    flink: None, ip: Any, magics: DurableMagics
) -> None:
    """On --runner local ``seen.append(...)`` fills the notebook's list; in the workers it fills their copies."""
    seen: list[int] = []
    ip.user_ns.update(items=[{"id": 1}, {"id": 2}], seen=seen)

    lost = r"'seen' in place, in a Flink worker's copy.*\(in a Flink worker\)"
    with pytest.warns(dnb.ChangedInputWarning) as caught:  # each worker's first record warns: one, + a summary
        frame, _log = run(ip, "collect --map items --key id --runner flink",
                          "seen.append(record['id'])\nrecord['id']\n")
    assert any(re.search(lost, str(w.message), re.S) for w in caught), [str(w.message) for w in caught]

    assert frame["result"].tolist() == [1, 2] and ip.user_ns["seen"] is seen and seen == []


def _refuse(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("a replay started a Flink job")


CRASHY = """\
append(body_log, "ran")
print("before the charge")
charge_id = dnb.current_context().durable_execute(charge, ledger, order_id)
if not os.path.exists(flag):
    append(flag, "crashed")
    os._exit(17)  # the worker dies after the charge is journaled, the cell still PENDING
total = 1 / divisor
"""


@pytest.mark.timeout(180)
def test_worker_crash_recovers_with_inner_calls_replayed_and_a_failing_cell_replays_its_exception(
    flink: None, ip: Any, magics: DurableMagics, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    ip.user_ns.update(order_id=3, divisor=0, os=os, flag=str(tmp_path / "crashed.flag"))
    # Every transition committed on its own: the charge's outcome is durable before the
    # worker dies right after it (under the default "call" durability it would be held
    # back until the next durable boundary, and the charge, with no reconciler, re-run).
    magics.store = dnb.SqliteStore(tmp_path / "transition.db", durability="transition")

    log = _Log()
    with pytest.raises(ZeroDivisionError) as raised:
        run(ip, "risky --runner flink", CRASHY, log)
    assert log.items == [("stdout", "before the charge\n")]  # printed in the worker, shown here

    # Flink restarted the crashed task: the body ran twice, the charge once (replayed on the worker).
    assert lines(tmp_path / "crashed.flag") == ["crashed"]
    assert lines(tmp_path / "body.txt") == ["ran", "ran"] and lines(tmp_path / "ledger.txt") == ["charge 3"]
    assert "Raised in the Flink worker" in "".join(getattr(raised.value, "__notes__", []))
    store = magics.store
    [run_rec] = store.runs()
    assert run_rec.status is dnb.RunStatus.FAILED and run_rec.attempts == 2
    assert [(c.call_id.split(".")[-1], c.status) for c in store.calls(run_rec.run_id)] == [
        ("cell:risky", dnb.Status.FAILED), ("charge", dnb.Status.SUCCEEDED)
    ]

    monkeypatch.setattr(_runner_flink.FlinkRunner, "run", _refuse)
    replayed = _Log()
    with pytest.raises(ZeroDivisionError):
        run(ip, "risky --runner flink", CRASHY, replayed)
    assert replayed.text().startswith("↺ durable: replayed the failure of cell 'risky' recorded ")
    assert replayed.text().endswith("\nbefore the charge\n")
    assert lines(tmp_path / "body.txt") == ["ran", "ran"]


def charge_in_flight(ledger: str, order_id: int, flag: str) -> str:
    """The worker dies inside the charge the first time: the call stays PENDING and, with no reconciler,
    executes again when Flink restarts the task."""
    import os

    append(ledger, f"charge {order_id}")
    if not os.path.exists(flag):
        append(flag, "crashed")
        os._exit(17)
    return f"ch_{order_id}"


@pytest.mark.timeout(240)
def test_a_call_in_flight_when_a_worker_died_says_ran_again_in_the_notebook_as_on_the_local_runner(
    flink: None, ip: Any, magics: DurableMagics, tmp_path: Path
) -> None:
    """A plain cell and a ``--map`` cell: the worker ships the calls it executed again with the record's row."""
    ip.user_ns.update(order_id=4, items=[{"id": 6}], charge_in_flight=charge_in_flight,
                      flag=str(tmp_path / "cell.flag"), map_flag=str(tmp_path / "map.flag"))
    magics.store = dnb.SqliteStore(tmp_path / "transition.db", durability="transition")  # PENDING is durable

    result, log = run(ip, "inflight --runner flink",
                      "dnb.current_context().durable_execute(charge_in_flight, ledger, order_id, flag)\n")
    assert result == "ch_4" and lines(tmp_path / "ledger.txt") == ["charge 4", "charge 4"]
    assert re.search(r"ran again: call 1 \(\S*charge_in_flight\) of cell 'inflight' was in flight", log.text()), \
        log.items

    frame, log = run(ip, "paid --map items --key id --runner flink", "dnb.current_context().durable_execute("
                     "charge_in_flight, ledger, record['id'], map_flag)\n")
    assert frame["result"].tolist() == ["ch_6"] and lines(tmp_path / "ledger.txt")[2:] == ["charge 6", "charge 6"]
    assert re.search(r"ran again: call 0 \(\S*charge_in_flight\) of run '[^']+' of cell 'paid' was in flight",
                     log.text()), log.items


@pytest.mark.timeout(60)
def test_a_memory_store_is_a_usage_error_before_any_job(flink: None, ip: Any, magics: DurableMagics) -> None:
    magics.store = dnb.MemoryStore()
    with pytest.raises(UsageError, match="cannot use a MemoryStore"):
        run(ip, "mem --runner flink", "x = 1\n")
    assert magics.store.runs() == []


@pytest.mark.timeout(60)
@pytest.mark.filterwarnings("ignore::durable_nb.errors.UnpicklableArgumentWarning")  # the digest's own notice
def test_an_unpicklable_input_is_named_before_any_job(flink: None, ip: Any, magics: DurableMagics) -> None:
    import threading

    ip.user_ns["lock"] = threading.Lock()
    with pytest.raises(UsageError, match="the cell reads 'lock'"):
        run(ip, "locked --runner flink", "held = lock.locked()\n")
    assert magics.store.runs() == []


@pytest.mark.timeout(60)
@pytest.mark.filterwarnings("ignore::durable_nb.errors.UnpicklableArgumentWarning")
def test_a_map_cell_reading_an_unpicklable_value_is_a_usage_error_naming_it_before_any_job(
    flink: None, ip: Any, magics: DurableMagics
) -> None:
    """As for a plain cell: the notebook name that cannot travel, not FlinkRunner's TypeError about 'cell:NAME'."""
    import threading

    ip.user_ns.update(lock=threading.Lock(), items=[{"id": 1}, {"id": 2}])
    with pytest.raises(UsageError, match="the cell reads 'lock'"):
        run(ip, "locked --map items --key id --runner flink", "lock.locked()\n")
    assert magics.store.runs() == []
