"""Classes a notebook (``__main__``) defines come back as themselves on replay after a restart.

Each run is a fresh interpreter, as a kernel restart is: the first journals a
result and an exception whose classes the script defines; the second replays
them, and ``except``/``isinstance`` against the classes it defined again must
hold. A copy of the class (cloudpickle's by-value form) would fail both.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = '''
import dataclasses, sys
import durable_nb as dnb

class PaymentDeclined(Exception):
    def __init__(self, code, detail):
        super().__init__(f"{code}: {detail}")
        self.code = code

@dataclasses.dataclass
class Receipt:
    amount: int

calls = []

def charge(amount):
    calls.append(amount)
    if amount < 0:
        raise PaymentDeclined(402, "no funds")
    return Receipt(amount)

def action(_, ctx):
    try:
        ctx.durable_execute(charge, -1)
        caught = None
    except PaymentDeclined as exc:
        caught = exc.code
    receipt = ctx.durable_execute(charge, 5)
    return caught, isinstance(receipt, Receipt), receipt == Receipt(5)

out = dnb.LocalRunner(dnb.SqliteStore(sys.argv[1])).run(action, None, run_id="order")
print(out, calls)
'''


def test_main_classes_replay_as_the_classes_defined_again(tmp_path: Path) -> None:
    script = tmp_path / "notebook.py"
    script.write_text(SCRIPT)
    journal = str(tmp_path / "journal.db")

    def run() -> str:
        done = subprocess.run([sys.executable, str(script), journal], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    assert run() == "(402, True, True) [-1, 5]"
    assert run() == "(402, True, True) []"  # replayed: nothing called, same classes
    # A process that never defines them (a report, a test) still loads the values, as copies.
    reader = ("import sys, durable_nb as dnb\n"
              "calls = dnb.SqliteStore(sys.argv[1]).calls('order')\n"
              "print(type(calls[0].error()).__name__, calls[0].error().code, calls[1].result())\n")
    done = subprocess.run([sys.executable, "-c", reader, journal], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "PaymentDeclined 402 Receipt(amount=5)"


CELLS = '''
import sys
from IPython.core.interactiveshell import InteractiveShell

ip = InteractiveShell.instance()
ip.run_line_magic("load_ext", "durable_nb")
ip.run_line_magic("durable_store", sys.argv[1])
ip.run_cell("class Point:\\n    def __init__(self, x):\\n        self.x = x\\n")
assert ip.run_cell("%%durable pt\\np = Point(3)\\n").success
assert ip.run_cell("%%durable own\\nclass Foo:\\n    pass\\nfoo = Foo()\\n").success
ns = ip.user_ns
print(isinstance(ns["p"], ns["Point"]), ns["p"].x, isinstance(ns["foo"], ns["Foo"]))
'''


def test_cell_outputs_of_notebook_classes_replay_as_the_classes_defined_again(tmp_path: Path) -> None:
    """``p = Point(3)`` with ``Point`` from an earlier cell: after a restart ``p`` is a ``Point`` of the
    notebook again. ``Foo``, which the replayed cell itself defines, comes back as the journaled copy, with
    ``foo`` its instance."""
    script = tmp_path / "kernel.py"
    script.write_text(CELLS)
    journal = str(tmp_path / "journal.db")

    def kernel() -> list[str]:
        done = subprocess.run([sys.executable, str(script), journal], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip().splitlines()

    assert kernel()[-1] == "True 3 True"
    second = kernel()
    assert sum("replayed cell" in line for line in second) == 2  # both cells replayed, nothing executed
    assert second[-1] == "True 3 True"
