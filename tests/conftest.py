"""Shared fixtures: every store-level test runs on both real backends."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import durable_nb as dnb


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> dnb.Store:
    """A fresh store per test: MemoryStore, and SqliteStore on a new WAL file in tmp_path."""
    if request.param == "memory":
        return dnb.MemoryStore()
    s = dnb.SqliteStore(tmp_path / "journal.db")
    request.addfinalizer(s.close)
    return s


@pytest.fixture
def sqlite_store(tmp_path: Path) -> dnb.SqliteStore:
    """A fresh SqliteStore when a test is about the file itself."""
    s = dnb.SqliteStore(tmp_path / "journal.db")
    yield s
    s.close()


@pytest.fixture(scope="session")
def ip() -> Any:
    """One real IPython shell for the session, durable_nb loaded (tests/shell_harness.py)."""
    from shell_harness import start_shell

    return start_shell()
