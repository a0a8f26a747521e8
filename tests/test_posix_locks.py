"""SQLite's POSIX locks on a journal are the process's: no descriptor of the file may close under them.

Closing *any* descriptor of a file drops every classic POSIX lock the process holds on it, SQLite's
included (SQLite guards its own descriptors with its inode table; it cannot know about durable_nb's).
A connection whose locks vanished is invisible to other processes: one of them, closing, believes it is
the last connection, checkpoints and deletes the ``-wal`` and ``-shm`` under it. Evidence is taken from
``/proc/locks`` (the locks this pid holds on the journal and its ``-shm``) and from real processes.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from descriptors import descriptors_on

import durable_nb as dnb

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/locks"), reason="reads the locks in /proc/locks")

SHARED = "1073741826"
"""The first byte of SQLite's SHARED range on the database file (PENDING_BYTE + 2)."""
DMS = "128"
"""The ``-shm`` byte every connection with the WAL index open holds a read lock on."""


def _job(x: int, ctx: dnb.RunnerContext) -> int:
    return ctx.durable_execute(abs, x)


def _locks(path: Path) -> set[str]:
    """This process's POSIX locks on the journal and its ``-shm``: ``db:<first byte>``, ``shm:<first byte>``."""
    names = {}
    for name, file in (("db", path), ("shm", Path(f"{path}-shm"))):
        if file.exists():
            names[file.stat().st_ino] = name
    found = set()
    with open("/proc/locks") as fh:
        for line in fh:
            fields = line.replace(" -> ", " ").split()
            if fields[1] != "POSIX" or fields[4] != str(os.getpid()):
                continue
            ino = int(fields[5].rsplit(":", 1)[1])
            if ino in names:
                found.add(f"{names[ino]}:{fields[6]}")
    return found


_OTHER = """
import sys, durable_nb as dnb
def job(x, ctx): return ctx.durable_execute(abs, x)
store = dnb.SqliteStore(sys.argv[1])
dnb.LocalRunner(store).run(job, -2, run_id=sys.argv[2])
store.close()
if sys.argv[3:]:
    print("wrote", flush=True)
    sys.stdin.readline()
    dnb.LocalRunner(store).run(job, -3, run_id=sys.argv[2] + "-again")
    store.close()
"""


def test_closing_a_writable_store_keeps_a_read_only_stores_lock_so_other_processes_see_a_reader(
    tmp_path: Path,
) -> None:
    """The writable store's close closed the file's lock descriptor while a read-only store of the same
    process was open: /proc/locks lost that connection's SHARED lock. Another process's close then
    deleted the -wal and -shm under it, and this process's next writes (the closed store reopens on use)
    went to the new WAL through the deleted -shm: ``database disk image is malformed``, runs lost."""
    path = tmp_path / "j.db"
    writer = dnb.SqliteStore(path)
    dnb.LocalRunner(writer).run(_job, -1, run_id="a1")
    reader = dnb.SqliteStore(path, read_only=True)
    reader.runs()
    assert f"db:{SHARED}" in _locks(path)
    writer.close()
    kept = _locks(path)
    subprocess.run([sys.executable, "-c", _OTHER, str(path), "b1"], check=True, timeout=60)
    left = Path(f"{path}-wal").exists() and Path(f"{path}-shm").exists()
    other = subprocess.Popen([sys.executable, "-c", _OTHER, str(path), "c1", "stay"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout is not None and other.stdout.readline() == "wrote\n"
        dnb.LocalRunner(writer).run(_job, -4, run_id="a2")
    finally:
        other.communicate("\n", timeout=60)
    assert other.returncode == 0
    writer.close()
    reader.close()
    with sqlite3.connect(path) as check:
        assert check.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        runs = [r for (r,) in check.execute("SELECT run_id FROM runs ORDER BY run_id")]
    assert runs == ["a1", "a2", "b1", "c1", "c1-again"]
    assert f"db:{SHARED}" in kept, "the read-only store's SHARED lock was dropped"
    assert left, "the other process deleted the -wal and -shm under a live reader"


def test_the_lock_descriptor_closes_with_the_last_connection_on_the_file(tmp_path: Path) -> None:
    """Kept for the read-only store, not for ever: once it closes too, nothing of the journal stays open."""
    path = tmp_path / "j.db"
    writer = dnb.SqliteStore(path)
    dnb.LocalRunner(writer).run(_job, -1, run_id="a1")
    reader = dnb.SqliteStore(path, read_only=True)
    reader.runs()
    writer.close()
    assert descriptors_on(tmp_path) > 0
    reader.close()
    assert descriptors_on(tmp_path) == 0
    assert _locks(path) == set()
    again = dnb.SqliteStore(path)  # and the file opens and locks as before
    dnb.LocalRunner(again).run(_job, -2, run_id="a2")
    assert [r.run_id for r in again.runs()] == ["a1", "a2"]
    again.close()
    assert descriptors_on(tmp_path) == 0


def test_sweeping_an_orphan_log_keeps_the_sqlite_locks_on_the_shm(tmp_path: Path) -> None:
    """The sweep asks every other file in the folder whether it is a journal registering the orphan, and
    read each one's header through open-and-close: the journal's own -shm too, which dropped this process's
    DMS lock there (a later opener takes itself for the first and rebuilds the WAL index under it)."""
    path = tmp_path / "j.db"
    store = dnb.SqliteStore(path)
    dnb.LocalRunner(store).run(_job, -1, run_id="a1")
    store.close()
    orphan = tmp_path / "j.db-log.99999.deadbeef"  # a process killed while creating its log, long ago
    orphan.write_bytes(b"")
    os.utime(orphan, (time.time() - 3600,) * 2)
    store = dnb.SqliteStore(path)
    dnb.LocalRunner(store).run(_job, -2, run_id="a2")  # the first logged write sweeps
    assert not orphan.exists()
    assert {f"db:{SHARED}", f"shm:{DMS}"} <= _locks(path)
    store.close()


def test_reading_a_journals_header_keeps_the_locks_of_its_open_connections(tmp_path: Path) -> None:
    """``is_sqlite`` (and the checks of a damaged or empty file) opened and closed the journal itself."""
    from durable_nb.stores import sqlite_file

    path = tmp_path / "j.db"
    writer = dnb.SqliteStore(path)
    dnb.LocalRunner(writer).run(_job, -1, run_id="a1")
    writer.close()
    Path(f"{path}-wal").touch()  # the reader sees the WAL (mode=ro), so it takes SQLite's locks
    reader = dnb.SqliteStore(path, read_only=True)
    reader.runs()
    assert f"db:{SHARED}" in _locks(path)
    assert sqlite_file.is_sqlite(path)
    assert f"db:{SHARED}" in _locks(path)
    reader.close()
    assert descriptors_on(tmp_path) == 0


_SWEEPER = """
import os, subprocess, sys, time, durable_nb as dnb
path, other = sys.argv[1], sys.argv[2]
def job(x, ctx): return ctx.durable_execute(abs, x)
store = dnb.SqliteStore(path, durability="transition")
sweep = dnb.SqliteStore(path)
dnb.LocalRunner(sweep).run(job, 1, run_id="sweep")  # its first logged write sweeps the orphan
child = subprocess.Popen([sys.executable, "-c", other, path], stdout=subprocess.PIPE, text=True)
n, end = 0, time.monotonic() + 2
while time.monotonic() < end:
    dnb.LocalRunner(store).run(job, n, run_id=f"a{n}")
    n += 1
print(n, child.communicate()[0].strip())
store.close(); sweep.close()
"""

_OPENER = """
import sys, time, durable_nb as dnb
def job(x, ctx): return ctx.durable_execute(abs, x)
n, end = 0, time.monotonic() + 2
while time.monotonic() < end:
    store = dnb.SqliteStore(sys.argv[1], durability="transition")
    dnb.LocalRunner(store).run(job, n, run_id=f"b{n}")
    store.close()
    n += 1
print(n)
"""


def test_after_an_orphan_sweep_another_process_opening_the_journal_does_not_crash_this_one(
    tmp_path: Path,
) -> None:
    """With its DMS lock gone, a process opening the journal took itself for the first, truncated the -shm
    and rebuilt it while the sweeping process had it mapped and went on writing: that process died of
    SIGBUS (a kernel gone mid-map), every time within two seconds."""
    path = tmp_path / "j.db"
    store = dnb.SqliteStore(path)
    dnb.LocalRunner(store).run(_job, -1, run_id="init")
    store.close()
    orphan = tmp_path / "j.db-log.99999.deadbeef"
    orphan.write_bytes(b"")
    os.utime(orphan, (time.time() - 3600,) * 2)
    done = subprocess.run([sys.executable, "-c", _SWEEPER, str(path), _OPENER], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    ours, theirs = map(int, done.stdout.split())
    with sqlite3.connect(path) as check:
        assert check.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert check.execute("SELECT count(*) FROM runs").fetchone() == (ours + theirs + 2,)
