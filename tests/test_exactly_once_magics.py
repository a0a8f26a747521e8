"""``%%durable`` with the inputs of issue 9, driven through a real IPython shell (tests/shell_harness.py).

What a user relies on: the cell's variables come back on replay, bad usage is a
``UsageError`` naming the fix (never a traceback, never a journaled failure), and
nothing is journaled for a cell that is refused.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from IPython.core.error import UsageError
from shell_harness import run

import durable_nb as dnb
from durable_nb.notebook.magics import DurableMagics, magics_of

RAN: collections.Counter[str] = collections.Counter()


def tick(name: str) -> None:
    RAN[name] += 1


def send_email(to: str) -> str:
    RAN["email"] += 1
    return f"sent to {to}"


@pytest.fixture
def magics(ip: Any, tmp_path: Path) -> Iterator[DurableMagics]:
    """The loaded magics on a fresh SQLite journal; the user namespace is restored afterwards."""
    m = magics_of(ip)
    assert m is not None
    saved_store, saved_ns = m._store, dict(ip.user_ns)
    m.store = dnb.SqliteStore(tmp_path / "journal.db")
    RAN.clear()
    ip.user_ns.update(tick=tick, send_email=send_email, dnb=dnb)
    yield m
    m._store = saved_store
    ip.user_ns.clear()
    ip.user_ns.update(saved_ns)


def test_a_time_magic_inside_a_durable_cell_keeps_the_cells_variables_on_replay(ip, magics):
    cell = "%%time\ntick('timed')\ntotal = 41 + 1\n"
    run(ip, "timed", cell)
    assert ip.user_ns["total"] == 42
    ip.user_ns.pop("total")  # a kernel restart
    _, log = run(ip, "timed", cell)
    assert "replayed" in log.text()
    assert ip.user_ns["total"] == 42 and RAN["timed"] == 1


def test_a_time_line_magic_inside_a_durable_cell_keeps_its_assignment_on_replay(ip, magics):
    cell = "%time first = 5\nsecond = first + 1\n"
    run(ip, "timed_line", cell)
    ip.user_ns.pop("first")
    ip.user_ns.pop("second")
    run(ip, "timed_line", cell)
    assert (ip.user_ns["first"], ip.user_ns["second"]) == (5, 6)


@pytest.mark.parametrize("value", [42, None, 3.5])
def test_map_over_something_that_is_not_records_is_a_usage_error_naming_the_fix(ip, magics, value):
    ip.user_ns["orders"] = value
    with pytest.raises(UsageError, match=r"--map orders.*DataFrame or a list.*\[orders\]"):
        run(ip, "enrich --map orders", "tick('mapped')\n")
    assert RAN["mapped"] == 0
    assert magics.store.runs() == []


def test_store_pointing_at_a_directory_is_a_usage_error(ip, magics, tmp_path: Path):
    with pytest.raises(UsageError, match=r"cannot open store.*directory"):
        run(ip, f"cell --store {tmp_path}", "tick('stored')\n")
    assert RAN["stored"] == 0


def test_a_cell_with_top_level_await_is_refused_before_anything_is_journaled(ip, magics):
    with pytest.raises(UsageError, match=r"top-level .?await.*Nothing was journaled"):
        run(ip, "awaiting", "import asyncio\nawait asyncio.sleep(0)\ndone = True\n")
    assert magics.store.runs() == []
    assert "done" not in ip.user_ns


def test_a_cell_reading_a_frame_with_list_and_dict_cells_replays(ip, magics):
    ip.user_ns["baskets"] = pd.DataFrame({"items": [[1, 2], {"sku": "a"}], "n": [1, 2]})
    cell = "tick('basket')\ncount = len(baskets)\n"
    run(ip, "basket", cell)
    ip.user_ns.pop("count")
    run(ip, "basket", cell)
    assert ip.user_ns["count"] == 2 and RAN["basket"] == 1


def test_map_keys_that_print_alike_get_runs_of_their_own_in_a_cell(ip, magics):
    ip.user_ns["people"] = pd.DataFrame({"k": [1, "1", None, "None"], "who": ["a", "b", "c", "d"]})
    cell = "out = dnb.current_context().durable_execute(send_email, record['who'])\nout\n"
    frame = run(ip, "mail --map people --key k", cell)[0]
    assert frame["run_id"].nunique() == 4 and RAN["email"] == 4
    run(ip, "mail --map people --key k", cell)
    assert RAN["email"] == 4


def test_a_durable_cell_is_a_run_so_the_calls_inside_it_are_journaled(ip, magics):
    cell = "receipt = dnb.current_context().durable_execute(send_email, 'ann')\n"
    run(ip, "mailer", cell)
    (cell_run,) = [r for r in magics.store.runs() if r.run_id.startswith("cell:mailer:")]
    calls = magics.store.calls(cell_run.run_id)
    assert [c.call_id.rsplit(".", 1)[-1] for c in calls] == ["cell:mailer", "send_email"]
    assert RAN["email"] == 1 and ip.user_ns["receipt"] == "sent to ann"
