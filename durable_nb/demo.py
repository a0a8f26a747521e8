"""A crash and its recovery, for real: ``python -m durable_nb.demo``.

A worker process charges three orders through ``LocalRunner.map`` on the embedded
journal (``.durable/journal.db``). While the second charge is in flight (the
payment went through, its outcome is not journaled yet) the demo kills the worker
with SIGKILL. Recovery then replays the first order, reconciles the second from
the payment provider's ledger and executes the third: every payment and e-mail
happens exactly once.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import durable_nb as dnb

HERE = Path(".durable")
ORDERS = [{"id": "o1", "amount": 30}, {"id": "o2", "amount": 45}, {"id": "o3", "amount": 12}]


def _append(path: Path, line: str) -> None:
    with open(path, "a") as fh:
        fh.write(line + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


class Payments:
    """Stands in for a payment provider: its ledger file is the source of truth."""

    def __init__(self, folder: Path, slow_order: str | None = None) -> None:
        self.ledger = folder / "payments.log"
        self.mail = folder / "emails.log"
        self.slow_order = slow_order

    def charge_card(self, order_id: str, amount: int) -> dict:
        _append(self.ledger, f"{order_id} {amount}")
        if order_id == self.slow_order:
            time.sleep(30)  # the bank is slow: the worker dies here
        return {"order": order_id, "charged": amount}

    def lookup(self, order_id: str) -> dict:
        """The reconciler: ask the provider what happened to an in-flight charge."""
        for line in _lines(self.ledger):
            oid, amount = line.split()
            if oid == order_id:
                return {"order": order_id, "charged": int(amount), "reconciled": True}
        raise LookupError(f"no payment for {order_id}")

    def send_receipt(self, order_id: str, charge: dict) -> str:
        _append(self.mail, f"receipt {order_id} {charge['charged']}")
        return f"receipt sent for {order_id}"


def place_order(payments: Payments):
    def action(order: dict, ctx: dnb.RunnerContext) -> str:
        charge = ctx.durable_execute(
            payments.charge_card, order["id"], order["amount"],
            reconciler=lambda: payments.lookup(order["id"]),
        )
        return ctx.durable_execute(payments.send_receipt, order["id"], charge)

    return action


def _worker(folder: Path) -> None:
    payments = Payments(folder, slow_order="o2")
    dnb.LocalRunner().map(dnb.durable(name=f"demo.{folder.name}")(place_order(payments)), ORDERS, key="id")


def _show(title: str, store: dnb.Store, prefix: str) -> None:
    import pandas as pd

    df = store.to_pandas()
    df = df[df["run_id"].str.startswith(prefix)]
    df = df.assign(run_id=df["run_id"].str.slice(len(prefix)), call_id=df["call_id"].str.rsplit(".", n=1).str[-1])
    with pd.option_context("display.width", 120, "display.max_colwidth", 40):
        print(f"\n{title}\n" + df[["run_id", "index", "call_id", "status", "origin", "result_preview"]]
              .to_string(index=False))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(Path(args.worker))
        return 0

    # The store first: it creates .durable private (0700, journals hold pickles); mkdir would not.
    store = dnb.open_store()  # the embedded default: .durable/journal.db
    folder = HERE / f"demo-{time.strftime('%Y%m%d-%H%M%S')}"
    folder.mkdir(parents=True, exist_ok=True)
    action_name = f"demo.{folder.name}"
    print(f"durable_nb demo: journal {getattr(store, 'path', store)}, side-effect ledgers in {folder}/")

    worker = subprocess.Popen([sys.executable, "-m", "durable_nb.demo", "--worker", str(folder)])
    ledger = folder / "payments.log"
    deadline = time.time() + 60
    while not any(line.startswith("o2 ") for line in _lines(ledger)):
        if worker.poll() is not None or time.time() > deadline:
            print("demo: the worker ended before the crash point", file=sys.stderr)
            return 1
        time.sleep(0.02)
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait()
    print(f"\n1. worker {worker.pid} charged o1, started charging o2 and was killed with SIGKILL "
          f"(exit {worker.returncode}).")
    _show("   journal after the crash:", store, action_name + "/")

    payments = Payments(folder)
    runner = dnb.LocalRunner(store)
    result = runner.map(dnb.durable(name=action_name)(place_order(payments)), ORDERS, key="id")
    print("\n2. recovery with LocalRunner().map(...): o1 replays, o2 is reconciled, o3 runs.")
    print(result[["id", "status", "result"]].to_string(index=False))
    _show("   journal after recovery:", store, action_name + "/")

    charges, mails = _lines(ledger), _lines(folder / "emails.log")
    print(f"\n3. side effects: {len(charges)} payments {charges}, {len(mails)} e-mails.")
    once = sorted(c.split()[0] for c in charges) == ["o1", "o2", "o3"] and len(mails) == 3
    print("   every payment and every e-mail happened exactly once." if once else "   DUPLICATES FOUND")
    again = runner.map(dnb.durable(name=action_name)(place_order(payments)), ORDERS, key="id")
    print(f"\n4. running the job again replays it from the journal: {len(_lines(ledger))} payments, "
          f"results equal: {again['result'].tolist() == result['result'].tolist()}.")
    return 0 if once else 1


if __name__ == "__main__":
    sys.exit(main())
