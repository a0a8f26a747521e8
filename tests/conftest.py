"""Shared fixtures: every store-level test runs on the three stores (memory, SQLite, a real PostgreSQL)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

import durable_nb as dnb


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> dnb.Store:
    """A fresh store per test: MemoryStore, SqliteStore on a new WAL file, PostgresStore on a new database."""
    if request.param == "memory":
        return dnb.MemoryStore()
    if request.param == "postgres":
        s: dnb.Store = dnb.PostgresStore(request.getfixturevalue("pg_dsn"))
    else:
        s = dnb.SqliteStore(tmp_path / "journal.db")
    request.addfinalizer(s.close)
    return s


@pytest.fixture(scope="session")
def pg_server() -> Any:
    """One real PostgreSQL server per test session (tests/postgres_server.py: initdb in /tmp, loopback, free port).

    Skipped where PostgreSQL is not installed (``./dev test`` installs it).
    """
    from postgres_server import INSTALL_HINT, PostgresServer, find_bin

    if find_bin() is None:
        if os.environ.get("CI"):  # CI installs it (./dev test): a missing server there is a failure, not a skip
            pytest.fail(f"PostgreSQL server binaries not found in CI: {INSTALL_HINT}")
        pytest.skip(f"PostgreSQL server binaries not found: {INSTALL_HINT}")
    server = PostgresServer().start()
    yield server
    server.cleanup()


_pg_databases = iter(range(1, 1_000_000))


@pytest.fixture
def pg_dsn(pg_server: Any, request: pytest.FixtureRequest) -> Any:
    """The DSN of a fresh, empty database on the session's server, dropped after the test."""
    name = f"t{next(_pg_databases)}_" + "".join(ch if ch.isalnum() else "_" for ch in request.node.name.lower())
    name = name[:63]
    dsn = pg_server.create_database(name)
    yield dsn
    try:
        pg_server.drop_database(name)
    except Exception:  # the server may be down at the end of a restart test; the session cleans up
        pass


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


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """The tutorials' kernels end SIGKILLed (nbval): their Flink scratch folders go now, not at the next session.

    The library reclaims a killed session's folders when the next one starts; the suite's last killed kernel
    has no next session, so the run would leave its ~25 MB in the temp folder.
    """
    from durable_nb.runners import flink_scratch

    flink_scratch.reclaim_stale()
