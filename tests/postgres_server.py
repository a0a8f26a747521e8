"""A real PostgreSQL server for tests, benchmarks and ``./dev pg``: Debian's binaries, a temp folder.

``PostgresServer().start()`` runs ``initdb`` in a fresh folder and ``pg_ctl start``
on 127.0.0.1 and a free port, with password (scram) authentication on TCP, so that
tests can also check what a wrong password does. ``initdb`` and ``pg_ctl`` refuse to
run as root: as root they run as the ``postgres`` user (``runuser``), and the folder
is created under /tmp (reachable by that user) and handed to it.

The binaries are found in ``$PG_BIN``, on ``PATH``, or in Debian's
``/usr/lib/postgresql/<version>/bin`` (``apt-get install postgresql``).

    python tests/postgres_server.py [--dir FOLDER] [--port N]   # start one, print its DSN
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

USER = "postgres"
PASSWORD = "durable"
INSTALL_HINT = "install PostgreSQL's server (Debian: apt-get install postgresql) or set PG_BIN to its bin folder"


def find_bin() -> Path | None:
    """The folder holding ``initdb`` and ``pg_ctl``, or None when PostgreSQL is not installed."""
    env = os.environ.get("PG_BIN")
    if env and (Path(env) / "initdb").exists():
        return Path(env)
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).resolve().parent  # Debian links only a few tools into PATH
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3].split(".")[0])
    )
    return Path(found[-1]).parent if found else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    """One PostgreSQL cluster in its own folder; ``dsn(db)`` names a database on it."""

    def __init__(self, folder: str | os.PathLike[str] | None = None, port: int | None = None) -> None:
        bindir = find_bin()
        if bindir is None:
            raise RuntimeError(f"PostgreSQL server binaries (initdb, pg_ctl) not found: {INSTALL_HINT}")
        self.bin = bindir
        self.as_root = os.geteuid() == 0
        self._own_folder = folder is None
        self.folder = Path(folder) if folder else Path(tempfile.mkdtemp(prefix="durable_nb_pg_", dir="/tmp"))
        self.folder.mkdir(parents=True, exist_ok=True)
        self.data = self.folder / "data"
        self._fixed_port = port is not None
        self.port = port or free_port()
        self.host = "127.0.0.1"

    # -- commands -------------------------------------------------------------------

    def _cmd(self, *argv: str) -> list[str]:
        tool = [str(self.bin / argv[0]), *argv[1:]]
        return ["runuser", "-u", USER, "--", *tool] if self.as_root else tool

    def _run(self, *argv: str) -> None:
        proc = subprocess.run(self._cmd(*argv), capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            log = self.folder / "server.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"{' '.join(argv[:2])} failed ({proc.returncode}): {proc.stderr or proc.stdout}\n{tail}")

    def _chown(self) -> None:
        if self.as_root:
            shutil.chown(self.folder, USER, USER)
            for path in self.folder.iterdir():
                if path.is_file():
                    shutil.chown(path, USER, USER)

    # -- life cycle -----------------------------------------------------------------------

    def start(self) -> PostgresServer:
        """``initdb`` (first time only) and start; returns when the server accepts connections."""
        if not (self.data / "PG_VERSION").exists():
            pwfile = self.folder / "pwfile"
            pwfile.write_text(PASSWORD + "\n")
            self._chown()
            self._run("initdb", "-D", str(self.data), "-U", USER, "-E", "UTF8", "--locale=C",
                      "--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={pwfile}")
            pwfile.unlink()
        for attempt in range(3):
            try:
                self._run("pg_ctl", "-D", str(self.data), "-l", str(self.folder / "server.log"), "-w", "-t", "60",
                          "-o", self._options(), "start")
                self._fixed_port = True  # DSNs handed out name this port: a restart keeps it
                return self
            except RuntimeError:
                if self._fixed_port or attempt == 2:
                    raise
                self.port = free_port()  # another process took the free port meanwhile
        return self

    def _options(self) -> str:
        # Loopback only; the unix socket lives in our folder (the Debian default /var/run/postgresql
        # may be missing or another cluster's). Durability settings stay at their defaults
        # (fsync on, synchronous_commit on): the tests and benchmarks measure the real thing.
        return (f"-p {self.port} -c listen_addresses={self.host} -c unix_socket_directories={self.folder} "
                f"-c max_connections=200 -c shared_buffers=64MB")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast``: disconnect clients; ``immediate``: like a crash, recovery on start)."""
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def restart(self, mode: str = "fast") -> None:
        self.stop(mode)
        self.start()

    def cleanup(self) -> None:
        """Stop, and remove the folder if this object created it."""
        with contextlib.suppress(Exception):
            self.stop("immediate")
        if self._own_folder:
            shutil.rmtree(self.folder, ignore_errors=True)

    # -- databases --------------------------------------------------------------------------

    def dsn(self, dbname: str = "postgres", *, password: str = PASSWORD) -> str:
        return f"postgresql://{USER}:{password}@{self.host}:{self.port}/{dbname}"

    def admin(self, sql: str) -> None:
        """Run one statement as the superuser, outside a transaction (CREATE/DROP DATABASE)."""
        import psycopg

        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(sql)  # type: ignore[arg-type]

    def create_database(self, name: str) -> str:
        """A fresh empty database; returns its DSN."""
        self.admin(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def drop_database(self, name: str) -> None:
        self.admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main(argv: list[str] | None = None) -> int:
    """``./dev pg``: start a server (kept running) and print its DSN."""
    parser = argparse.ArgumentParser(description="Start a local PostgreSQL server for durable_nb journals.")
    parser.add_argument("--dir", help="folder for the cluster (kept, reused on the next start)")
    parser.add_argument("--port", type=int, default=55432)
    parser.add_argument("--db", default="durable_nb", help="database created for the journal")
    parser.add_argument("--stop", action="store_true", help="stop the server started before")
    args = parser.parse_args(argv)
    if args.dir is None and os.geteuid() != 0:
        args.dir = str(Path(".durable") / "postgres")
    # As root the cluster belongs to the postgres user: a folder under /tmp, which it can reach.
    folder = args.dir or "/tmp/durable_nb_pg"
    server = PostgresServer(folder, args.port)
    if args.stop:
        running = (server.data / "postmaster.pid").exists()
        server.stop()
        print(f"dev pg: {'stopped the server' if running else 'no server runs'} in {server.data}", file=sys.stderr)
        return 0
    if (server.data / "postmaster.pid").exists():
        print(f"dev pg: a server already runs in {server.data}", file=sys.stderr)
    else:
        server.start()
    with contextlib.suppress(Exception):
        server.admin(f'CREATE DATABASE "{args.db}"')
    where = f"{server.data} on {server.host}:{server.port}"
    print(f"PostgreSQL {server.bin.parent.name} running in {where}", file=sys.stderr)
    print(f"stop it with: {' '.join(server._cmd('pg_ctl', '-D', str(server.data), 'stop'))}", file=sys.stderr)
    print(server.dsn(args.db))
    return 0


if __name__ == "__main__":
    sys.exit(main())
