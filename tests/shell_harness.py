"""Drives ``%%durable`` through a real IPython shell and records what cells write, in order.

Shared by tests/test_magics.py and tests/flink/test_cell_on_flink.py.
"""

from __future__ import annotations

import atexit
import os
import sys
from pathlib import Path
from typing import Any

from IPython.core.displaypub import DisplayPublisher
from IPython.testing import globalipapp


class _Log:
    """One ordered list of what a cell wrote: streams (merged when adjacent) and display bundles."""

    def __init__(self) -> None:
        self.items: list[tuple[str, Any]] = []
        self.published: list[dict[str, Any]] = []
        """Every display message as the kernel would send it: data, metadata, transient, update."""

    def stream(self, name: str, text: str) -> None:
        if self.items and self.items[-1][0] == name:
            self.items[-1] = (name, self.items[-1][1] + text)
        else:
            self.items.append((name, text))

    def text(self, name: str = "stdout") -> str:
        return "".join(t for k, t in self.items if k == name)

    def kinds(self) -> list[str]:
        return [k if k != "display" else "display:" + ",".join(sorted(v)) for k, v in self.items]


class _Stream:
    def __init__(self, log: _Log, name: str) -> None:
        self.log, self.name = log, name

    def write(self, text: str) -> int:
        self.log.stream(self.name, text)
        return len(text)

    def flush(self) -> None:
        pass


class _Publisher(DisplayPublisher):
    log: _Log

    def publish(self, data: Any, metadata: Any = None, *args: Any, **kwargs: Any) -> None:
        self.log.published.append({"data": dict(data), "metadata": dict(metadata or {}),
                                   "transient": dict(kwargs.get("transient") or {}),
                                   "update": bool(kwargs.get("update"))})
        if not kwargs.get("update"):
            self.log.items.append(("display", dict(data)))

    def clear_output(self, wait: bool = False) -> None:
        self.log.items.clear()


_removed_at_exit: set[Path] = set()


def start_shell() -> Any:
    """The test shell with durable_nb loaded, formatting every MIME type as a kernel does."""
    # the module attribute: after the first start it is the shell's own get_ipython, whichever test file started it
    shell = globalipapp.get_ipython()
    # IPython's test config puts the history in a NamedTemporaryFile(delete=False) it never removes
    hist = Path(shell.history_manager.hist_file)
    if hist.name.endswith("test_hist.sqlite") and hist not in _removed_at_exit:
        _removed_at_exit.add(hist)
        atexit.unregister(shell.atexit_operations)  # run by _remove, first: it closes the history
        atexit.register(_remove, shell, hist, os.getpid())
    # a terminal shell formats text/plain only; a kernel formats every MIME type
    shell.display_formatter.active_types = shell.display_formatter.format_types
    shell.extension_manager.load_extension("durable_nb")
    return shell


def _remove(shell: Any, hist: Path, owner: int) -> None:
    """IPython's own exit hook (it closes the history), then the removal of the history's file."""
    if os.getpid() == owner:  # a forked child's exit: its parent's shell still writes there
        shell.atexit_operations()
        hist.unlink(missing_ok=True)


def run(ip: Any, line: str, cell: str, log: _Log | None = None) -> tuple[Any, _Log]:
    """Run ``%%durable line`` with ``cell``; what it writes goes to ``log`` (kept when the cell raises)."""
    log = log if log is not None else _Log()
    pub = _Publisher()
    pub.log = log
    saved_pub, out, err = ip.display_pub, sys.stdout, sys.stderr
    ip.display_pub, sys.stdout, sys.stderr = pub, _Stream(log, "stdout"), _Stream(log, "stderr")
    try:
        result = ip.run_cell_magic("durable", line, cell)
    finally:
        ip.display_pub, sys.stdout, sys.stderr = saved_pub, out, err
    return result, log
