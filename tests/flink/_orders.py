"""The order-placing action the Flink tests run, with a real side-effect ledger.

``charge_card`` is the side effect: it appends one line to a ledger file and
fsyncs it, so the file is the ground truth of what happened, whatever process
died afterwards. ``reconcile_charge`` is its reconciler: it reads the ledger, as a
payment provider's "find charge by order id" would, and charges only if nothing is there. ``render_receipt`` is the
second durable call, without a reconciler (expensive but side-effect free); its
executions are counted in a separate work log.

Workers cannot import this test module: FlinkRunner ships it by value.
"""

from __future__ import annotations

import functools
import itertools
import os
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _append(path: str, line: str) -> None:
    with open(path, "a") as fh:
        fh.write(line + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def charge_card(ledger: str, order_id: int, amount: float, crash_flag: str, crash_at: int | None,
                delay: float) -> str:
    if delay:
        time.sleep(delay)
    _append(ledger, f"charge {order_id} {amount}")
    if order_id == crash_at and not os.path.exists(crash_flag):
        # The side effect happened, its outcome is not journaled yet: die like kill -9.
        _append(crash_flag, f"crashed in pid {os.getpid()}")
        os._exit(17)
    return f"ch_{order_id}"


def timed_charge(times: str, ledger: str, order_id: int, amount: float, crash_flag: str, crash_at: int | None,
                 delay: float) -> str:
    """``charge_card``, then one line ``order_id pid start end`` (wall clock) in ``times``: where and when it ran."""
    start = time.time()
    charge = charge_card(ledger, order_id, amount, crash_flag, crash_at, delay)
    _append(times, f"{order_id} {os.getpid()} {start} {time.time()}")
    return charge


def reconcile_charge(ledger: str, order_id: int, amount: float) -> str:
    """Reconciler: find the charge by order id, as a payment API would; make it if it never happened.

    A call is PENDING whether the crash came before or after the side effect, so
    both cases occur (a failover also cancels the other task mid-call).
    """
    for line in Path(ledger).read_text().splitlines():
        kind, oid, _amount = line.split()
        if kind == "charge" and int(oid) == order_id:
            return f"ch_{order_id}"
    _append(ledger, f"charge {order_id} {amount}")
    return f"ch_{order_id}"


def render_receipt(work_log: str, order_id: int, charge: str) -> str:
    _append(work_log, f"receipt {order_id}")
    return f"receipt for {order_id}: {charge}"


def make_action(tmp: Path, crash_at: int | None = None, delay: float = 0.0,
                timed: bool = False) -> Callable[[Any, Any], Any]:
    """``place_order(order, ctx)`` writing its ledger and logs under ``tmp`` (``timed``: and ``times.txt``)."""
    ledger, work_log, flag = str(tmp / "ledger.txt"), str(tmp / "work.txt"), str(tmp / "crashed.flag")
    for path in (ledger, work_log):
        Path(path).touch()
    charge_fn = functools.partial(timed_charge, str(tmp / "times.txt")) if timed else charge_card

    def place_order(order: dict[str, Any], ctx: Any) -> dict[str, Any]:
        charge = ctx.durable_execute(
            charge_fn, ledger, order["id"], order["amount"], flag, crash_at, delay,
            reconciler=functools.partial(reconcile_charge, ledger, order["id"], order["amount"]),
        )
        receipt = ctx.durable_execute(render_receipt, work_log, order["id"], charge)
        return {"charge": charge, "receipt": receipt}

    return place_order


def orders(n: int) -> list[dict[str, Any]]:
    """``n`` orders from 7 customers: keyed by customer, each run id carries a per-key sequence number."""
    return [{"id": i, "customer": f"c{i % 7}", "amount": round(10 + i * 0.5, 2)} for i in range(n)]


def charge_times(tmp: Path) -> dict[int, tuple[int, float, float]]:
    """From ``times.txt``: order id -> (worker pid, start, end) of its charge."""
    spans = {}
    for line in (tmp / "times.txt").read_text().splitlines():
        order_id, pid, start, end = line.split()
        spans[int(order_id)] = (int(pid), float(start), float(end))
    return spans


def check_concurrent_and_in_key_order(tmp: Path, n: int, customers: int = 7) -> None:
    """Records of different keys ran at once in one worker process; each key's one after another, in order."""
    spans = charge_times(tmp)
    assert len(spans) >= n - 10, "most charges ran in the worker and logged their times"
    overlapping = [(a, b) for a, b in itertools.combinations(sorted(spans), 2)
                   if spans[a][0] == spans[b][0] and spans[a][1] < spans[b][2] and spans[b][1] < spans[a][2]]
    assert overlapping, "no two records ever ran at once in one worker: concurrency had no effect"
    for customer in range(customers):
        ran = [i for i in range(customer, n, customers) if i in spans]
        for earlier, later in itertools.pairwise(ran):
            assert spans[earlier][2] <= spans[later][1], f"orders {earlier} and {later} of one key overlapped"


def ledger_counts(tmp: Path) -> Counter[str]:
    return Counter((tmp / "ledger.txt").read_text().splitlines())


def check_exactly_once(df: Any, tmp: Path, n: int) -> None:
    """The result has one row per order, in input order, and the ledger one charge per order."""
    assert len(df) == n
    assert set(df["status"]) == {"COMPLETED"}, df[df["status"] != "COMPLETED"].head().to_dict("records")
    assert list(df["result"]) == [
        {"charge": f"ch_{i}", "receipt": f"receipt for {i}: ch_{i}"} for i in range(n)
    ]
    counts = ledger_counts(tmp)
    assert len(counts) == n, f"{n - len(counts)} orders never charged"
    twice = {line: c for line, c in counts.items() if c != 1}
    assert not twice, f"charged more than once: {twice}"
