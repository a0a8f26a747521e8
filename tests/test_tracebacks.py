"""A failing durable call's traceback in IPython shows the user's frames, not durable_nb's machinery.

Why it matters: a notebook user reads the traceback top to bottom to find their
bug; a dozen frames of the journal (perform, scoped, lambda, call_action) between
their action and their function hide it. IPython leaves out frames that set
``__tracebackhide__`` (and says how many it skipped).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import durable_nb as dnb
from durable_nb.notebook.magics import magics_of

ANSI = re.compile(r"\x1b\[[0-9;]*m")

HELPER = "def helper(x):\n    return 1 / x\n"


@pytest.fixture
def shown(ip: Any, tmp_path: Path) -> Iterator[list[str]]:
    """Each traceback IPython shows, as plain text; the user namespace and store are restored afterwards."""
    texts: list[str] = []
    m = magics_of(ip)
    assert m is not None
    saved_store, saved_ns, saved_show = m._store, dict(ip.user_ns), ip._showtraceback
    m.store = dnb.SqliteStore(tmp_path / "cells.db")
    ip.user_ns.update(dnb=dnb, journal_path=str(tmp_path / "runs.db"))

    def capture(etype: Any, value: Any, stb: list[str]) -> None:
        texts.append(ANSI.sub("", "\n".join(stb)))

    ip._showtraceback = capture
    try:
        yield texts
    finally:
        ip._showtraceback = saved_show
        m._store = saved_store
        ip.user_ns.clear()
        ip.user_ns.update(saved_ns)


def only_user_frames(text: str) -> None:
    assert "ZeroDivisionError" in text
    assert "return 1 / x" in text  # the user's own failing line
    assert "skipping hidden" in text
    internal = [line for line in text.splitlines() if "durable_nb" in line and "File " in line]
    assert internal == [], f"durable_nb frames shown to the user:\n{text}"


def test_a_failing_durable_cell_shows_the_cell_and_the_helper_only(ip: Any, shown: list[str]) -> None:
    ip.run_cell(HELPER)
    ip.run_cell("%%durable tb_cell\ny = helper(0)\n")
    assert len(shown) == 1
    only_user_frames(shown[0])
    assert "y = helper(0)" in shown[0]


@pytest.mark.parametrize(("setup", "run", "shown_line"), [
    ("def act(x, ctx):\n    return ctx.durable_execute(helper, x)\n",
     "dnb.LocalRunner(dnb.SqliteStore(journal_path)).run(act, 0, run_id='tb-sync')\n",
     "return ctx.durable_execute(helper, x)"),
    ("async def act(x, ctx):\n    return await ctx.durable_execute_async(helper, x)\n",
     "await dnb.LocalRunner(dnb.SqliteStore(journal_path)).run_async(act, 0, run_id='tb-async')\n",
     "await ctx.durable_execute_async(helper, x)"),
], ids=["sync", "async"])
def test_a_failing_durable_call_shows_the_action_and_the_function_only(
    ip: Any, shown: list[str], setup: str, run: str, shown_line: str
) -> None:
    ip.run_cell(HELPER + setup)
    ip.run_cell(run)
    assert len(shown) == 1
    only_user_frames(shown[0])
    assert shown_line in shown[0]
