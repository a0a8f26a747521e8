"""A real kernel is SIGKILLed inside a %%durable cell; a new kernel runs the notebook again.

The cell makes two durable calls. The first appends to a ledger file; the second
appends to the ledger, writes a marker file, then sleeps, and the test kills the
kernel process while it sleeps. The new kernel re-executes the cell (its record
is PENDING): the first call replays, the second is reconciled from the ledger
(not run again), and every variable is back. A third kernel replays the whole
cell without running it.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import nbformat
import pytest
from jupyter_client.manager import KernelManager

pytestmark = [pytest.mark.kill, pytest.mark.timeout(240)]

SETUP = """\
%load_ext durable_nb
%durable_store sqlite:///{dir}/journal.db
import time
import durable_nb as dnb

LEDGER = "{dir}/ledger.txt"
MARKER = "{dir}/marker"

def write(line):
    with open(LEDGER, "a") as fh:
        fh.write(line + "\\n")
        fh.flush()
        os.fsync(fh.fileno())

def charge(amount):
    write(f"charge {{amount}}")
    return f"ch-{{amount}}"

def ship(charge_id):
    write(f"ship {{charge_id}}")
    open(MARKER, "w").close()
    time.sleep(120)  # the test kills the kernel here
    return f"parcel-for-{{charge_id}}"

def find_shipment():
    # the reconciler: what did ship() do before the crash? read the ledger
    lines = [l.split()[1] for l in open(LEDGER).read().splitlines() if l.startswith("ship ")]
    return f"parcel-for-{{lines[-1]}}"
"""

CELL = """\
%%durable order
ctx = dnb.current_context()
charge_id = ctx.durable_execute(charge, 42)
parcel = ctx.durable_execute(ship, charge_id, reconciler=find_shipment)
print("shipped", parcel)
"""

CHECK = "print(repr((charge_id, parcel, ctx.run_id if 'ctx' in dir() else None)))"


def make_notebook(directory: Path) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("import os\n" + SETUP.format(dir=directory)),
        nbformat.v4.new_code_cell(CELL),
    ]
    nbformat.write(nb, directory / "order.ipynb")
    return nb


class Kernel:
    """A real ipykernel in ``cwd``, driven through jupyter_client."""

    def __init__(self, cwd: Path) -> None:
        self.km = KernelManager(kernel_name="python3")
        self.km.start_kernel(cwd=str(cwd))
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=60)

    @property
    def pid(self) -> int:
        return int(self.km.provisioner.process.pid)  # type: ignore[union-attr]

    def run(self, code: str, timeout: float = 60) -> tuple[str, list[dict[str, Any]], dict[str, Any]]:
        """Execute and return (stdout+stderr text, display outputs, reply content)."""
        text: list[str] = []
        rich: list[dict[str, Any]] = []

        def hook(msg: dict[str, Any]) -> None:
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream":
                text.append(content["text"])
            elif kind in ("display_data", "execute_result"):
                rich.append(content["data"])
            elif kind == "error":
                text.append("\n".join(content["traceback"]))

        reply = self.kc.execute_interactive(code, output_hook=hook, timeout=timeout)
        return "".join(text), rich, reply["content"]

    def start(self, code: str) -> str:
        return str(self.kc.execute(code))

    def kill(self) -> None:
        os.kill(self.pid, signal.SIGKILL)
        self.close()

    def close(self) -> None:
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)


def run_notebook(kernel: Kernel, nb: nbformat.NotebookNode) -> list[str]:
    outs = []
    for cell in nb.cells:
        text, _, reply = kernel.run(cell.source)
        assert reply["status"] == "ok", text
        outs.append(text)
    return outs


def wait_for(path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} did not appear within {timeout}s")
        time.sleep(0.05)


def test_killed_kernel_recovers_the_cell_in_a_new_kernel(tmp_path: Path) -> None:
    nb = make_notebook(tmp_path)
    ledger, marker = tmp_path / "ledger.txt", tmp_path / "marker"

    first = Kernel(tmp_path)
    try:
        text, _, reply = first.run(nb.cells[0].source)
        assert reply["status"] == "ok", text
        first.start(nb.cells[1].source)
        wait_for(marker, timeout=60)
    finally:
        first.kill()
    assert ledger.read_text().splitlines() == ["charge 42", "ship ch-42"]
    with sqlite3.connect(tmp_path / "journal.db") as db:
        tables = {name for (name,) in db.execute("select name from sqlite_master where type='table'")}
    assert tables  # the journal survived the kill

    second = Kernel(tmp_path)
    try:
        outs = run_notebook(second, nb)
        assert outs[1] == (
            "↻ durable: recovering cell 'order': its last attempt did not finish; "
            "its durable calls replay or reconcile\nshipped parcel-for-ch-42\n"
        )
        text, _, _ = second.run(CHECK)
        assert "('ch-42', 'parcel-for-ch-42'" in text
        journal, _, _ = second.run(
            "from durable_nb.notebook.magics import magics_of\n"
            "s = magics_of(get_ipython()).store\n"
            "[r] = [r for r in s.runs() if r.run_id.startswith('cell:order:')]\n"
            "print([(c.call_id, c.status.value, c.origin.value) for c in s.calls(r.run_id)], r.attempts)"
        )
    finally:
        second.close()
    # the first call ran once in all, the second was reconciled, not run again
    assert ledger.read_text().splitlines() == ["charge 42", "ship ch-42"]
    assert journal.strip() == (
        "[('cell:order', 'SUCCEEDED', 'EXECUTED'), ('__main__.charge', 'SUCCEEDED', 'EXECUTED'), "
        "('__main__.ship', 'SUCCEEDED', 'RECONCILED')] 2"
    )

    third = Kernel(tmp_path)
    try:
        outs = run_notebook(third, nb)
        assert outs[1].startswith("↺ durable: replayed cell 'order' recorded ")
        assert outs[1].endswith("(use --rerun to execute)\nshipped parcel-for-ch-42\n")
        text, _, _ = third.run("print(repr((charge_id, parcel)))")
        assert text.strip() == "('ch-42', 'parcel-for-ch-42')"
    finally:
        third.close()
    assert ledger.read_text().splitlines() == ["charge 42", "ship ch-42"]


DEFINES = """\
%%durable helpers
import dataclasses

@dataclasses.dataclass
class Order:
    id: str
    amount: int

def price(n):
    return n * 10

discount = lambda amount: amount - 1
pricing = {"fn": price, "round": discount}
order = Order("o1", 4)
"""

PAYS = """\
%%durable pay_{which}
ctx = dnb.current_context()
charged_{which} = ctx.durable_execute(charge, {expression})
"""

GATHERS = "%%durable gather\npipeline = [price, discount]\n"  # another cell's functions, in a list

USES = {  # each reads values the helpers cell defined, as a new kernel restores them
    "function": "price(4)",
    "list_from_another_cell": "pipeline[0](pipeline[1](3))",
    "lambda": "discount(40)",
    "dict_of_functions": 'pricing["fn"](pricing["round"](5))',
    "dataclass_instance": "order.amount * 100",
}


def test_values_a_durable_cell_defines_replay_in_a_new_kernel_and_the_cells_reading_them_do_not_run_again(
    tmp_path: Path,
) -> None:
    """Run All after a restart: the cell defining functions, a lambda, a dict of functions and a dataclass
    instance replays, so the cells reading them get restored objects; those must digest as the live ones
    did (else they run again and charge again) and be what the cell left: the dict holds *the* restored
    function, the instance's class *is* the restored class, with its fields."""
    setup = "import os\n" + SETUP.format(dir=tmp_path)
    cells = [setup, DEFINES, GATHERS] + [PAYS.format(which=w, expression=e) for w, e in USES.items()]
    ledger = tmp_path / "ledger.txt"
    for attempt in range(2):
        kernel = Kernel(tmp_path)
        try:
            outs = [kernel.run(cell) for cell in cells]
            for text, _, reply in outs:
                assert reply["status"] == "ok", text
            replayed = [text.startswith("↺ durable: replayed cell") for text, _, _ in outs[1:]]
            assert replayed == [attempt == 1] * len(replayed), [t for t, _, _ in outs]
            text, _, _ = kernel.run(
                "print(pricing['fn'] is price, pricing['round'] is discount, type(order) is Order, "
                "pipeline[0] is price, [f.name for f in dataclasses.fields(order)], dataclasses.asdict(order), "
                "charged_function, charged_list_from_another_cell, charged_lambda, charged_dict_of_functions, "
                "charged_dataclass_instance)"
            )
            assert text.strip() == ("True True True True ['id', 'amount'] {'id': 'o1', 'amount': 4} "
                                    "ch-40 ch-20 ch-39 ch-40 ch-400")
        finally:
            kernel.close()
    assert ledger.read_text().splitlines() == ["charge 40", "charge 20", "charge 39", "charge 40", "charge 400"]


def test_a_value_a_new_kernel_cannot_load_loses_only_itself(tmp_path: Path) -> None:
    """An lru_cache function pickles by reference to its own name, which a new kernel restores from the
    very same record: together with the cell's other names it would take them all down. It is left out of
    the record with the warning an unpicklable output gets (it was journaled and lost only at the replay)."""
    setup = "import os\n" + SETUP.format(dir=tmp_path)
    cell = ("%%durable cached\nimport functools\nrate = 2\n\n@functools.lru_cache\ndef slow(n):\n"
            "    return n * rate\n\nprice = slow(5)\ntable = {'slow': slow}\n")
    for attempt in range(2):
        kernel = Kernel(tmp_path)
        try:
            for code in (setup, cell):
                text, _, reply = kernel.run(code)
                assert reply["status"] == "ok", text
            assert text.startswith("↺ durable: replayed cell") == (attempt == 1)
            if attempt == 0:  # said when recorded, not only found out at the replay
                assert "slow (functools._lru_cache_wrapper: a new kernel could not load it: __main__.slow" in text
                assert "table (builtins.dict: a new kernel could not load it" in text  # holds it: left out too
            check, _, _ = kernel.run("print(rate, price)")
            assert check.strip() == "2 10"
        finally:
            kernel.close()


def test_a_call_taking_a_lambda_replays_in_a_new_kernel_after_a_kill(tmp_path: Path) -> None:
    """A lambda argument was digested from its cloudpickle bytes, which hold the kernel's cell file name
    (``/tmp/ipykernel_<pid>/...``): the recovery in a new kernel took the journaled charge for another
    call, discarded it and charged again. A notebook function inside a container counted by name only,
    so an edited one replayed the old result."""
    setup = "import os\n" + SETUP.format(dir=tmp_path) + (
        "\ndef double(x):\n    return 2 * x\nsteps = {'d': double}\n"
        "\ndef charge(order_id, fmt, steps):\n    write(f'charge {order_id}')\n"
        "    return fmt(f'ch-{order_id}-{steps[\"d\"](order_id)}')\n"
    )
    cell = ("%%durable pay\nctx = dnb.current_context()\n"
            "charge_id = ctx.durable_execute(charge, 42, lambda s: s.upper(), steps)\n"
            "open(MARKER, 'w').close()\nif not os.path.exists(MARKER + '.done'):\n    time.sleep(30)\n")
    ledger, marker = tmp_path / "ledger.txt", tmp_path / "marker"
    first = Kernel(tmp_path)
    try:
        text, _, reply = first.run(setup)
        assert reply["status"] == "ok", text
        first.start(cell)
        wait_for(marker, timeout=60)
        time.sleep(0.5)  # past the held-back outcome's flush delay: the charge's outcome is on disk
    finally:
        first.kill()
    second = Kernel(tmp_path)
    try:
        second.run(setup)
        (tmp_path / "marker.done").touch()
        text, _, reply = second.run(cell)
        assert reply["status"] == "ok", text
        assert "NonDeterminism" not in text and "discarded" not in text, text
        check, _, _ = second.run("print(charge_id)")
        assert check.strip() == "CH-42-84"
        assert ledger.read_text().splitlines() == ["charge 42"]  # replayed, not charged again
        # the helper in the cell's input edited: the cell runs again (it replayed the old result)
        second.run("def double(x):\n    return 3 * x\nsteps = {'d': double}\n")
        text, _, reply = second.run(cell)
        check, _, _ = second.run("print(charge_id)")
        assert check.strip() == "CH-42-126", text
    finally:
        second.close()
