"""Counting a test's own open descriptors: those on files under one folder (Linux's /proc/self/fd).

Why not every descriptor of the process: in the whole suite other tests' kernels, Flink's gateway and
stores closing in the background open and close descriptors meanwhile, so a process-wide count moved
by a few either way and failed tests whose own widget or store had closed everything it opened.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

needs_proc = pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts descriptors in /proc/self/fd")


def descriptors_on(folder: Path) -> int:
    """Open descriptors of this process on files under ``folder`` (a journal and its companions)."""
    prefix = str(folder)
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        n += target.startswith(prefix)
    return n
