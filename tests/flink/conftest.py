"""Fixtures for the Flink tests: one PyFlink JVM for the whole session.

Every FlinkRunner job in this process goes through PyFlink's single gateway JVM;
the ``flink`` fixture starts it once (and skips the suite cleanly when
apache-flink or Java is missing) so that no test pays the JVM start twice.
"""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def java() -> None:
    """PyFlink and Java 11+ are here: skipped (failed in CI) otherwise. For tests whose jobs run in a child process."""
    # Locally a machine without Flink skips these; in CI (CI=true) that would be a
    # skipped test counted as passing, so it fails instead.
    give_up = pytest.fail if os.environ.get("CI") else pytest.skip
    try:
        import pyflink  # noqa: F401
    except ImportError:
        give_up("apache-flink is not installed: pip install 'durable_nb[flink]'")
    from durable_nb.runners.flink_env import FlinkSetupError, check_java

    try:
        check_java()
    except FlinkSetupError as exc:
        give_up(str(exc))


@pytest.fixture(scope="session")
def flink(java: None) -> None:
    """The PyFlink gateway JVM, started once per test session."""
    from durable_nb.runners.flink_env import gateway

    gateway()
