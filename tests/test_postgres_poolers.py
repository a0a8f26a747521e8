"""PostgresStore behind PgBouncer, as operations teams put one in front of a shared server.

A run's lease is a session-level advisory lock, so it needs one server session per client for as
long as the client lives: session pooling keeps that, transaction and statement pooling hand
each transaction whichever server session is free. Through a transaction pool a second kernel
was given the session holding a running run's lock, took the run and ran its call again.

Skipped where PgBouncer is not installed (Debian: apt-get install pgbouncer; ``./dev test``
installs it).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from test_postgres_faults import refused_while_held

import durable_nb as dnb

pytestmark = pytest.mark.timeout(120)


def _pgbouncer() -> str | None:
    return shutil.which("pgbouncer") or next((p for p in ("/usr/sbin/pgbouncer",) if os.access(p, os.X_OK)), None)


class PgBouncer:
    """One PgBouncer in front of the test server, every database passed through in one pool mode."""

    def __init__(self, binary: str, server: Any, mode: str, ignore: str = "extra_float_digits") -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="durable_nb_pgbouncer_", dir="/tmp"))
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        from postgres_server import PASSWORD, USER

        (self.folder / "users.txt").write_text(f'"{USER}" "{PASSWORD}"\n')
        (self.folder / "pgbouncer.ini").write_text(
            f"[databases]\n* = host={server.host} port={server.port}\n"
            f"[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {self.port}\nunix_socket_dir =\n"
            f"auth_type = scram-sha-256\nauth_file = {self.folder}/users.txt\npool_mode = {mode}\n"
            f"default_pool_size = 10\nlogfile = {self.folder}/pgbouncer.log\n"
            f"ignore_startup_parameters = {ignore}\n")
        argv = [binary, str(self.folder / "pgbouncer.ini")]
        if os.geteuid() == 0:  # PgBouncer refuses to run as root
            shutil.chown(self.folder, USER, USER)
            for path in self.folder.iterdir():
                shutil.chown(path, USER, USER)
            argv = ["runuser", "-u", USER, "--", *argv]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return
            time.sleep(0.05)
        raise RuntimeError(f"pgbouncer did not start: {(self.folder / 'pgbouncer.log').read_text()[-2000:]}")

    def dsn(self, direct: str) -> str:
        """``direct`` (a DSN of the test server) through this PgBouncer."""
        head, db = direct.rsplit("/", 1)
        return f"{head.rsplit(':', 1)[0]}:{self.port}/{db}"

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture(scope="module")
def pgbouncer(pg_server: Any) -> Iterator[Callable[[str], PgBouncer]]:
    """``pgbouncer(mode)``: a PgBouncer in that pool mode in front of the session's server (one per mode);
    ``pgbouncer(mode, ignore)`` one that drops those startup parameters (PgBouncer's ignore_startup_parameters)."""
    binary = _pgbouncer()
    if binary is None:
        pytest.skip("PgBouncer is not installed (Debian: apt-get install pgbouncer)")
    started: dict[tuple[str, str], PgBouncer] = {}

    def start(mode: str, ignore: str = "extra_float_digits") -> PgBouncer:
        if (mode, ignore) not in started:
            started[mode, ignore] = PgBouncer(binary, pg_server, mode, ignore)
        return started[mode, ignore]

    yield start
    for bouncer in started.values():
        bouncer.stop()


@pytest.mark.parametrize("mode", ["transaction", "statement"])
def test_a_dsn_through_a_pool_that_does_not_keep_sessions_is_refused_naming_the_pool_mode(pgbouncer, pg_dsn, mode):
    """A transaction pool opened the journal: a second kernel was given the session holding a running
    run's lock, took the run and ran its PENDING call again (statement pooling failed as a lost connection)."""
    with pytest.raises(dnb.JournalUnavailableError) as err:
        dnb.PostgresStore(pgbouncer(mode).dsn(pg_dsn))
    text = str(err.value)
    assert "transaction or statement pooling" in text and "pool_mode = session" in text
    assert "connection was lost" not in text
    with psycopg.connect(pg_dsn) as conn:  # nothing was written
        assert conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone() == (0,)


HOLDER = """
import os, sys, time
import durable_nb as dnb
dsn, release, effects = sys.argv[1:4]

@dnb.durable(name="charge")
def charge(i):
    with open(effects, "a") as f:
        f.write(f"A:{i}\\n")
    if i == 0:
        print("inside", flush=True)
        while not os.path.exists(release):
            time.sleep(0.01)
    return i

dnb.LocalRunner(dnb.PostgresStore(dsn)).run(lambda _, ctx: [ctx.durable_execute(charge, i) for i in range(2)],
                                            None, run_id="order")
print("done", flush=True)
"""


def test_through_a_session_pool_a_second_process_is_refused_a_running_run(pgbouncer, pg_dsn, tmp_path):
    """What the refusal must not stop: a session pool keeps each client's server session, so the lease holds."""
    dsn = pgbouncer("session").dsn(pg_dsn)
    effects, release = tmp_path / "effects", tmp_path / "release"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, dsn, str(release), str(effects)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "inside", holder.communicate()

    refused_while_held(dsn, holder, effects, release, 2)


def test_a_pool_that_drops_the_dsns_search_path_is_refused_not_given_another_schemas_journal(pgbouncer, pg_dsn):
    """PgBouncer told to ignore the options parameter opened the journal in public, not in the schema the DSN
    named: a notebook meant to have its own journal shared (and replayed) another's runs of the same ids."""
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA team_a")
    dsn = pgbouncer("session", "extra_float_digits,options").dsn(pg_dsn) + "?options=-csearch_path%3Dteam_a"
    with pytest.raises(dnb.JournalUnavailableError) as err:
        dnb.PostgresStore(dsn)
    text = str(err.value)
    assert "not the 'team_a' the DSN's options ask for" in text and "ignore_startup_parameters" in text
    assert f'IN DATABASE "{pg_dsn.rsplit("/", 1)[1]}" SET search_path = team_a' in text
    with psycopg.connect(pg_dsn) as conn:  # nothing was written, in either schema
        found = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname IN ('public', 'team_a')").fetchone()
        assert found == (0,)


def test_a_pool_that_refuses_the_options_parameter_says_so_not_that_no_server_runs(pgbouncer, pg_dsn):
    with pytest.raises(dnb.JournalUnavailableError) as err:
        dnb.PostgresStore(pgbouncer("session").dsn(pg_dsn) + "?options=-csearch_path%3Dteam_a")
    text = str(err.value)
    assert "connection pooler (PgBouncer)" in text and "SET search_path = name" in text
    assert "Is a PostgreSQL server running" not in text
