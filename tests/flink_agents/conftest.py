"""Fixtures for the Flink Agents tests: a ledger of side effects, agents on a real store.

Each test module starts with the same guard: without flink-agents installed it skips on a
developer's machine and FAILS in CI (CI=true), where a skipped suite would count as passing
(as tests/flink/conftest.py does for Flink).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Path]:
    """Where the agents' stand-in side effects append one line each."""
    import _fa_agents

    path = tmp_path / "ledger.txt"
    _fa_agents.LEDGER.update(path=path, hold=None, die=None)
    yield path
    _fa_agents.LEDGER.update(path=None, hold=None, die=None)
