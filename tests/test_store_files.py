"""The journal file as users meet it (issue 9): odd text, odd URLs, permissions, read-only
filesystems, a full disk, damaged or foreign files, and schema versions.

Real files only: read-only filesystems and a full disk are real tmpfs mounts (root
is needed to mount; those tests skip with the reason otherwise), an immutable file
is a real ``chattr +i``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import durable_nb as dnb
from durable_nb import Status
from durable_nb.stores import sqlite_schema

GOLDEN = Path(__file__).parent / "journals" / "v1.db"


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def siblings(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir() if p.name.startswith(path.name + "-"))


@contextlib.contextmanager
def tmpfs(where: Path, size: str) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (the CI machines have it)")
    where.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def remount(where: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(where)], check=True)


def fill(mnt: Path) -> Path:
    """Fill the filesystem at ``mnt`` with a file of zeros (returned) until a write fails."""
    filler = mnt / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    with contextlib.suppress(OSError):
        while True:
            os.write(fd, b"\0" * 4096)
    os.close(fd)
    return filler


def charge(order: str) -> str:
    return f"charged {order}"


@dnb.durable(name="golden.charge")
def golden_charge(order_id: str, amount: int) -> dict:
    raise AssertionError("a journaled charge must not run again")


# ---------------------------------------------------------------- odd text


def test_lone_surrogates_in_run_ids_map_keys_and_messages_are_journaled(sqlite_store):
    odd = "caf\udce9.csv"  # a non-UTF-8 file name, as os.listdir returns it

    def fail(name: str) -> None:
        raise FileNotFoundError(f"no such file: {name}")

    runner = dnb.LocalRunner(sqlite_store)
    with runner.context(f"load-{odd}") as ctx:
        assert ctx.durable_execute(charge, odd) == f"charged {odd}"
        with pytest.raises(FileNotFoundError):
            ctx.durable_execute(fail, odd)
    df = runner.map(lambda rec, ctx: ctx.durable_execute(charge, rec["name"]), [{"name": odd}, {"name": "x"}],
                    key="name")
    assert list(df["status"]) == ["COMPLETED", "COMPLETED"]

    again = dnb.SqliteStore(sqlite_store.path)
    calls = again.calls(f"load-{odd}")
    assert [c.status for c in calls] == [Status.SUCCEEDED, Status.FAILED]
    assert "caf\\udce9.csv" in calls[1].error_preview  # previews are text any journal (and a browser) holds
    assert odd in str(calls[1].error())  # the exception itself keeps the name
    assert f"load-{odd}" in [r.run_id for r in again.runs()]
    with dnb.LocalRunner(again).context(f"load-{odd}") as ctx:  # replays, nothing runs again
        assert ctx.durable_execute(charge, odd) == f"charged {odd}"
        with pytest.raises(FileNotFoundError, match="no such file"):
            ctx.durable_execute(fail, odd)


# ---------------------------------------------------------------- URLs


def test_open_store_parses_urls_as_urls(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert dnb.open_store("sqlite:///my%20journal.db").path == tmp_path / "my journal.db"
    assert dnb.open_store(f"sqlite:///{tmp_path}/abs.db").path == tmp_path / "abs.db"
    assert dnb.open_store("sqlite:relative.db").path == tmp_path / "relative.db"
    ro = dnb.open_store("sqlite:///relative.db?mode=ro")
    assert ro.path == tmp_path / "relative.db" and ro.read_only
    assert dnb.open_store("file:relative.db?mode=ro").read_only
    assert dnb.open_store("sqlite:///relaxed.db?durability=relaxed").durability == "relaxed"
    with pytest.raises(dnb.JournalReadOnlyError, match="no journal at .*missing.db.*mode=ro"):
        dnb.open_store("file:missing.db?mode=ro")
    with pytest.raises(ValueError, match="unsupported query parameter cache"):
        dnb.open_store("sqlite:///x.db?cache=shared")
    with pytest.raises(ValueError, match="URL is empty.*sqlite:///journal.db"):
        dnb.open_store("")
    with pytest.raises(ValueError, match="names a host"):
        dnb.open_store("sqlite://server/j.db")
    assert dnb.open_store("SQLite:///upper.db").path == tmp_path / "upper.db"  # schemes ignore case
    assert isinstance(dnb.open_store("MEMORY://"), dnb.MemoryStore)
    with pytest.raises(ValueError, match="not a memory URL; write 'memory://'"):
        dnb.open_store("memory:")
    for postgres_like in ("postgres:", "postgresql:j", "Postgres:/db", "postgresql:u:secret@h/db"):
        with pytest.raises(ValueError, match="without '//' is not a PostgreSQL URL; write 'postgresql://") as err:
            dnb.open_store(postgres_like)  # it made a SQLite file of that name in the working directory
        assert "secret" not in str(err.value)
    for memory_like in (":memory:", "sqlite:///:memory:"):  # sqlite3's and SQLAlchemy's in-memory database
        with pytest.raises(ValueError, match="in memory use dnb.MemoryStore"):
            dnb.open_store(memory_like)
    with pytest.raises(TypeError, match="got int 123"):
        dnb.open_store(123)  # type: ignore[arg-type]
    with pytest.raises(dnb.JournalUnavailableError, match="127.0.0.1:1"):  # a libpq DSN goes to PostgreSQL
        dnb.open_store("host=127.0.0.1 port=1 user=x password=secret dbname=j connect_timeout=2")
    # No file was ever created under a literal odd name.
    assert not [p for p in os.listdir(tmp_path) if "?" in p or ":" in p or "%" in p]


def test_durability_is_validated_with_the_choices():
    with pytest.raises(ValueError, match="durability must be one of 'call', 'transition', 'relaxed'"):
        dnb.SqliteStore("x.db", durability="fast")


# ---------------------------------------------------------------- permissions


def test_new_journals_are_private_to_their_user(tmp_path):
    old = os.umask(0o022)
    try:
        store = dnb.SqliteStore(tmp_path / ".durable" / "journal.db")
        dnb.LocalRunner(store).run(lambda _, ctx: ctx.durable_execute(charge, "o1"), None, run_id="r")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / ".durable").stat().st_mode) == 0o700
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    for name in siblings(store.path):
        assert stat.S_IMODE((store.path.parent / name).stat().st_mode) & 0o077 == 0


def test_a_path_that_is_not_text_or_cannot_name_a_file_is_refused_naming_the_fix(tmp_path):
    """pathlib's errors ("expected str, bytes or os.PathLike object", "embedded null byte", a bare OSError
    File name too long) named neither the argument nor what to pass."""
    for bad in (None, 5, b"journal.db"):
        with pytest.raises(TypeError, match=r"SqliteStore\(path\) takes the journal file's path as a str"):
            dnb.SqliteStore(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="cannot hold a NUL character"):
        dnb.SqliteStore(tmp_path / "a\x00b.db")
    with pytest.raises(ValueError, match="File name too long. Choose a shorter path"):
        dnb.open_store(str(tmp_path / ("x" * 10_000)))
    assert os.listdir(tmp_path) == []


def test_a_directory_path_is_refused_naming_the_fix(tmp_path):
    with pytest.raises(dnb.JournalFormatError, match=r"is a directory.*journal\.db"):
        dnb.SqliteStore(tmp_path)


# ---------------------------------------------------------------- foreign and damaged files


def make_db(path: Path, *statements: str) -> None:
    conn = sqlite3.connect(path)
    for s in statements:
        conn.execute(s)
    conn.commit()
    conn.close()


@pytest.mark.parametrize(
    "statements, match",
    [
        (["CREATE TABLE t (x)", "CREATE VIEW only_a_view AS SELECT 1"], "views: only_a_view"),
        (["CREATE VIEW v AS SELECT 1 AS x"], "views: v"),
        (["PRAGMA application_id = 1234"], "another application"),
    ],
)
def test_sqlite_files_of_something_else_are_never_modified(tmp_path, statements, match):
    path = tmp_path / "other.db"
    make_db(path, *statements)
    before = file_digest(path)
    with pytest.raises(dnb.JournalFormatError, match=match):
        dnb.SqliteStore(path)
    assert file_digest(path) == before
    assert siblings(path) == []  # no -wal / -shm left behind


def journal_copy(tmp_path: Path) -> Path:
    path = tmp_path / "j.db"
    store = dnb.SqliteStore(path)
    dnb.LocalRunner(store).run(lambda _, ctx: ctx.durable_execute(charge, "o1"), None, run_id="r")
    store.close()
    return path


def test_a_journal_missing_a_promised_column_is_refused_at_open(tmp_path):
    path = journal_copy(tmp_path)
    make_db(path, "ALTER TABLE calls DROP COLUMN prompt")
    before = file_digest(path)
    with pytest.raises(dnb.JournalFormatError, match="version 2 but lacks column calls.prompt"):
        dnb.SqliteStore(path)
    assert file_digest(path) == before


def test_a_journal_missing_a_table_is_refused_at_open(tmp_path):
    path = journal_copy(tmp_path)
    make_db(path, "DROP TABLE discarded")
    with pytest.raises(dnb.JournalFormatError, match="lacks table discarded"):
        dnb.SqliteStore(path)


@pytest.mark.parametrize("name", ["notes'", 'a"b', "x'\"y", "t\\'); --"])
def test_a_journal_with_an_extra_table_of_any_name_opens(tmp_path, name):
    """A table of one's own in the journal file (quotes in its name) is not the journal's concern.

    The schema check read each table's columns with ``PRAGMA table_info({name!r})``: a name holding both
    quotes made Python's repr an SQL syntax error, and the journal "could not be read" at all.
    """
    path = journal_copy(tmp_path)
    quoted = '"' + name.replace('"', '""') + '"'
    make_db(path, f"CREATE TABLE {quoted} (a)")
    for read_only in (True, False):
        store = dnb.SqliteStore(path, read_only=read_only)
        try:
            assert store.runs()
        finally:
            store.close()


@pytest.mark.parametrize(
    "statement", ["PRAGMA user_version = 0", "UPDATE meta SET value = 'two' WHERE key = 'schema_version'"]
)
def test_a_garbled_schema_version_is_refused_at_open(tmp_path, statement):
    path = journal_copy(tmp_path)
    make_db(path, statement)
    with pytest.raises(dnb.JournalFormatError, match="garbled"):
        dnb.SqliteStore(path)


def test_new_journals_carry_application_id_and_user_version(tmp_path):
    path = journal_copy(tmp_path)
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA application_id").fetchone()[0] == sqlite_schema.APPLICATION_ID
        assert conn.execute("PRAGMA user_version").fetchone()[0] == sqlite_schema.LATEST
    finally:
        conn.close()


def test_a_database_without_tables_gets_the_schema_at_open_and_read_only_says_there_is_no_journal(tmp_path):
    # What a process killed while creating a journal leaves (the WAL switch wrote SQLite's header, the schema
    # never committed), and what another process sees while one creates it: every read and run failed with
    # "no such table: runs" (tests/kill/test_kill_create.py kills a real creator).
    path = tmp_path / "journal.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.close()
    assert path.stat().st_size > 0
    with pytest.raises(dnb.JournalReadOnlyError, match="no journal in .*journal.db yet.*mode=ro"):
        dnb.open_store(f"sqlite:///{path}?mode=ro")
    store = dnb.SqliteStore(path)
    assert store.runs() == [] and store.to_pandas().empty
    out = dnb.LocalRunner(store).run(lambda _, ctx: ctx.durable_execute(charge, "o1"), None, run_id="r")
    assert out == "charged o1"
    store.close()
    assert [r.run_id for r in dnb.open_store(f"sqlite:///{path}?mode=ro").runs()] == ["r"]


@pytest.mark.parametrize(
    ("pragmas", "match"),
    [
        (["VACUUM"], "empty SQLite database .*rollback-journal mode"),  # `sqlite3 other.db VACUUM`
        (["PRAGMA user_version = 7"], r"empty database of another application \(PRAGMA user_version = 7\)"),
        (["PRAGMA journal_mode = WAL", "PRAGMA user_version = 3"], r"another application.*user_version = 3"),
    ],
)
@pytest.mark.parametrize("read_only", [False, True])
def test_another_applications_empty_database_is_refused_not_turned_into_a_journal(tmp_path, pragmas, match,
                                                                                   read_only):
    # Only a database a journal's creation leaves (WAL mode, nothing else set) gets the schema at open; the
    # schema at open first made every empty database of another application a journal, its user_version lost.
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    for pragma in pragmas:
        conn.execute(pragma)
    conn.close()
    before = file_digest(path)
    with pytest.raises(dnb.JournalFormatError, match=match + ".*not changed"):
        dnb.SqliteStore(path, read_only=read_only)
    assert file_digest(path) == before
    assert siblings(path) == []


def test_an_old_journal_is_migrated_at_the_first_write_never_on_a_read(tmp_path):
    path = tmp_path / "v1.db"
    shutil.copy(GOLDEN, path)
    before = file_digest(path)
    store = dnb.SqliteStore(path)
    assert len(store.runs()) == 3 and store.calls("golden-ok")[0].result()["order"] == "o1"
    with dnb.LocalRunner(store).context("golden-ok") as ctx:  # a replay that writes nothing
        assert ctx.durable_execute(golden_charge, "o1", 10) == {"order": "o1", "charged": 10}
    store.close()
    assert file_digest(path) == before
    store = dnb.SqliteStore(path)
    dnb.LocalRunner(store).run(lambda _, ctx: ctx.durable_execute(charge, "o9"), None, run_id="new")
    store.close()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == sqlite_schema.LATEST
        assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == str(
            sqlite_schema.LATEST
        )
    finally:
        conn.close()
    assert {r.run_id for r in dnb.SqliteStore(path).runs()} == {"golden-ok", "golden-failed", "golden-pending", "new"}


def test_a_damaged_journal_says_it_is_damaged_and_how_to_recover(tmp_path):
    path = tmp_path / "j.db"
    store = dnb.SqliteStore(path)
    dnb.LocalRunner(store).run(lambda _, ctx: ctx.durable_execute(charge, "o1"), None, run_id="r")
    store.close()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = DELETE")  # every page in the main file, none left in a WAL
    (root,) = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'runs'").fetchone()
    (page,) = conn.execute("PRAGMA page_size").fetchone()
    conn.close()
    with open(path, "r+b") as fh:  # the runs table's page made unreadable, as a bad copy or disk leaves it
        fh.seek((root - 1) * page)
        fh.write(b"\x00" * 16)  # no valid b-tree page type
    damaged = dnb.SqliteStore(path)
    with pytest.raises(dnb.JournalFormatError, match=r"j\.db is damaged.*malformed.*\.recover"):
        damaged.runs()
    with pytest.raises(dnb.JournalFormatError, match="is damaged"):
        dnb.LocalRunner(damaged).run(lambda _, ctx: ctx.durable_execute(charge, "o1"), None, run_id="r")
    damaged.close()


def test_a_truncated_journal_says_it_is_a_damaged_journal_not_some_other_file(tmp_path):
    """A torn copy (a download cut short) read "is not a durable_nb journal ... pass the path of a journal"."""
    path = tmp_path / "j.db"
    store = dnb.SqliteStore(path)
    dnb.LocalRunner(store).run(lambda _, ctx: ctx.durable_execute(charge, "o1"), None, run_id="r")
    store.close()
    cut = tmp_path / "cut.db"
    cut.write_bytes(path.read_bytes()[:4096])
    with pytest.raises(dnb.JournalFormatError, match=r"the journal .*cut\.db is damaged.*\.recover"):
        dnb.SqliteStore(cut)
    assert siblings(cut) == []


# ---------------------------------------------------------------- read-only journals


def test_an_immutable_journal_opens_read_only_for_viewing(tmp_path):
    path = journal_copy(tmp_path)
    if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available here")
    try:
        store = dnb.SqliteStore(path)
        assert store.read_only and "immutable" in store.read_only
        assert [r.run_id for r in store.runs()] == ["r"]
        assert len(store.to_pandas()) == 1
        with pytest.raises(dnb.JournalReadOnlyError, match=r"read-only.*immutable.*run 'r'"):
            dnb.LocalRunner(store).run(lambda _, ctx: ctx.durable_execute(charge, "o1"), None, run_id="r")
        empty = tmp_path / "empty.db"
        empty.touch()
        subprocess.run(["chattr", "+i", str(empty)], check=True)
        try:
            with pytest.raises(dnb.JournalReadOnlyError, match=r"empty\.db.*immutable"):
                dnb.SqliteStore(empty)
        finally:
            subprocess.run(["chattr", "-i", str(empty)], check=True)
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


def test_a_journal_on_a_read_only_filesystem_is_viewable_and_refuses_writes_saying_why(tmp_path):
    with tmpfs(tmp_path / "mnt", "4m") as mnt:
        path = journal_copy(mnt)
        remount(mnt, "ro")
        before = file_digest(path)
        store = dnb.SqliteStore(path)
        assert store.read_only and "read-only filesystem" in store.read_only
        assert [c.result() for c in store.calls("r")] == ["charged o1"]
        assert list(store.to_pandas()["run_id"]) == ["r"]
        with (
            pytest.raises(dnb.JournalReadOnlyError, match=r"read-only filesystem.*run 'r'.*-log\.\* files.*writable"),
            dnb.LocalRunner(store).context("r"),
        ):
            pass
        with pytest.raises(dnb.JournalReadOnlyError, match=r"cannot create the journal .*new\.db.*read-only.*writable"):
            dnb.SqliteStore(mnt / "sub" / "new.db")
        store.close()
        assert file_digest(path) == before
        remount(mnt, "rw")


def test_a_killed_kernel_s_last_calls_show_read_only_and_the_advised_copy_does_not_run_them_again(tmp_path):
    """A kernel killed while its last calls were in its intent log only, then its disk read-only (ext4's
    errors=remount-ro, a read-only share): the read-only view lacked the whole run, and the writable copy the
    refusal advised (SQLite's backup API) left the log behind, so recovering the copy charged the card again."""
    effects = tmp_path / "effects.txt"
    with tmpfs(tmp_path / "mnt", "4m") as mnt:
        db = mnt / "j.db"
        kernel = f"""
import os, durable_nb as dnb
from durable_nb.stores import sqlite_intent
sqlite_intent.DELAY = 600.0  # SQLite is not written from the log before the kill
def charge(i):
    with open({str(effects)!r}, "a") as f:
        f.write(f"{{i}}\\n")
    return f"charged {{i}}"
with dnb.LocalRunner(dnb.SqliteStore({str(db)!r})).context("order") as ctx:
    for i in range(3):
        ctx.durable_execute(charge, i)
    os.kill(os.getpid(), 9)
"""
        subprocess.run([sys.executable, "-c", kernel], timeout=120, check=False)
        assert effects.read_text().split() == ["0", "1", "2"]
        remount(mnt, "ro")
        before = {p.name: file_digest(p) for p in mnt.iterdir()}
        store = dnb.SqliteStore(db)
        assert store.read_only
        calls = store.calls("order")
        assert [c.status for c in calls] == [Status.SUCCEEDED, Status.SUCCEEDED, Status.PENDING]
        assert [c.result() for c in calls[:2]] == ["charged 0", "charged 1"]
        assert [r.run_id for r in store.runs()] == ["order"] and len(store.to_pandas()) == 3

        def action(_: object, ctx: dnb.RunnerContext) -> list[str]:
            return [ctx.durable_execute(charge_effect, i) for i in range(3)]

        def charge_effect(i: int) -> str:
            with open(effects, "a") as f:
                f.write(f"{i}\n")
            return f"charged {i}"

        charge_effect.__qualname__ = charge_effect.__name__ = "charge"
        charge_effect.__module__ = "__main__"
        with pytest.raises(dnb.JournalReadOnlyError) as err:
            dnb.LocalRunner(store).run(action, None, run_id="order")
        assert "j.db-log.* files" in str(err.value)
        store.close()
        assert {p.name: file_digest(p) for p in mnt.iterdir()} == before

        folder = tmp_path / "copy"  # the copy the refusal describes
        folder.mkdir()
        for p in mnt.iterdir():
            if p.name == "j.db" or p.name == "j.db-wal" or p.name.startswith("j.db-log."):
                shutil.copy(p, folder / p.name)
        copy = dnb.SqliteStore(folder / "j.db")
        assert dnb.LocalRunner(copy).run(action, None, run_id="order") == ["charged 0", "charged 1", "charged 2"]
        copy.close()
        assert effects.read_text().split() == ["0", "1", "2", "2"], "only the PENDING call may run again"
        remount(mnt, "rw")


# ---------------------------------------------------------------- a full disk


def test_a_full_disk_names_journal_run_and_call_releases_the_lease_and_loses_nothing(tmp_path):
    with tmpfs(tmp_path / "mnt", "600k") as mnt:
        path = mnt / "j.db"
        store = dnb.SqliteStore(path)
        filler = fill(mnt)  # then give a little room back
        os.truncate(filler, max(0, filler.stat().st_size - 160_000))

        def big(i: int) -> bytes:
            return os.urandom(30_000) + bytes([i])

        made: list[int] = []

        def action(_: object, ctx: dnb.RunnerContext) -> None:
            for i in range(100):
                ctx.durable_execute(big, i)
                made.append(i)

        with pytest.raises(dnb.JournalWriteError) as err:
            dnb.LocalRunner(store).run(action, None, run_id="fill")
        text = str(err.value)
        assert str(path) in text and "run 'fill'" in text and "call " in text and "Free disk space" in text
        assert made, "the disk filled before the first call: make the tmpfs bigger"

        filler.unlink()  # space again: the same process recovers its own run, nothing was lost
        calls = store.calls("fill")
        assert all(c.status is Status.SUCCEEDED for c in calls[:-1])
        assert len([c for c in calls if c.status is Status.SUCCEEDED]) >= len(made) - 1
        done = dnb.LocalRunner(store).run(lambda _, ctx: [ctx.durable_execute(big, i) for i in range(3)], None,
                                          run_id="fill-2")
        assert len(done) == 3
        n = len(calls)  # recover the run in this process (not RunBusyError: the lease was released)
        out = dnb.LocalRunner(store).run(lambda _, ctx: [ctx.durable_execute(big, i) for i in range(n)], None,
                                         run_id="fill")
        assert [o[-1] for o in out] == list(range(n))
        assert [c.result() for c in store.calls("fill")][: len(made) - 1] == out[: len(made) - 1]
        store.close()


def test_a_full_disk_while_the_intent_log_grows_loses_no_acknowledged_call(tmp_path):
    """Small calls go through the intent log, which is zero-filled ahead of its frames: when the next fill
    finds the disk full, the call fails with JournalWriteError and every call acknowledged before stays."""
    with tmpfs(tmp_path / "mnt", "2m") as mnt:
        path = mnt / "j.db"
        store = dnb.SqliteStore(path)
        with dnb.LocalRunner(store).context("warm") as ctx:
            ctx.durable_execute(str, 0)  # the schema, the WAL and the log exist before the disk fills
        filler = fill(mnt)

        made: list[int] = []

        def action(_: object, ctx: dnb.RunnerContext) -> None:
            for i in range(100_000):
                ctx.durable_execute(str, i)
                made.append(i)

        with pytest.raises(dnb.JournalWriteError, match="Free disk space"):
            dnb.LocalRunner(store).run(action, None, run_id="small")
        assert len(made) > 50, "the log's zero-filled part should have taken calls before the disk was needed"

        filler.unlink()
        calls = store.calls("small")
        done = [c for c in calls if c.status is Status.SUCCEEDED]
        assert len(done) >= len(made) - 1 and [c.result() for c in done] == [str(i) for i in range(len(done))]
        store.close()
        again = dnb.SqliteStore(path)  # a fresh store reads the same: nothing acknowledged was lost
        assert [c.status for c in again.calls("small")][: len(done)] == [Status.SUCCEEDED] * len(done)
        out = dnb.LocalRunner(again).run(lambda _, ctx: [ctx.durable_execute(str, i) for i in range(len(made))],
                                         None, run_id="small")
        assert out == [str(i) for i in range(len(made))]
        again.close()


def test_a_full_disk_is_warned_about_once_not_several_times_a_second_until_it_is_freed(tmp_path, caplog):
    """After the JournalWriteError, the applier and the flusher retried every 0.1-0.15 s, each retry a WARNING:
    a notebook cell's output filled with the same red line until the disk was freed."""
    with tmpfs(tmp_path / "mnt", "2m") as mnt:
        store = dnb.SqliteStore(mnt / "j.db")
        with dnb.LocalRunner(store).context("warm") as ctx:
            ctx.durable_execute(str, 0)
        filler = fill(mnt)
        with caplog.at_level("WARNING", logger="durable_nb"), pytest.raises(dnb.JournalWriteError):
            dnb.LocalRunner(store).map(lambda r, ctx: [ctx.durable_execute(str, (r, i)) for i in range(5)],
                                       list(range(3000)))
        with caplog.at_level("WARNING", logger="durable_nb"):
            time.sleep(1.5)
        retries = [r for r in caplog.records if r.name == "durable_nb" and "could not" in r.getMessage()]
        assert 1 <= len(retries) <= 2, [r.getMessage() for r in retries]
        filler.unlink()
        store.close()
        assert [r.run_id for r in dnb.SqliteStore(mnt / "j.db").runs()][:1] == ["warm"]


def counting_action(effects: list[int]) -> Callable[[int, dnb.RunnerContext], list[int]]:
    """An action making ``n`` durable calls, each side effect appended to ``effects``."""

    def effect(i: int) -> int:
        effects.append(i)
        return i

    def action(n: int, ctx: dnb.RunnerContext) -> list[int]:
        return [ctx.durable_execute(effect, i) for i in range(n)]

    return action


@pytest.mark.parametrize("durability", ["call", "transition"])
def test_a_journal_deleted_while_open_is_refused_at_the_next_run_not_written_into_the_void(tmp_path, durability):
    """``rm -rf .durable`` while a kernel runs: SQLite would go on writing the unlinked file, every call
    "durable" until the process ends and then gone. The next run is refused, naming the path and the fix."""
    folder = tmp_path / ".durable"
    store = dnb.SqliteStore(folder / "journal.db", durability=durability)
    runner = dnb.LocalRunner(store)
    effects: list[int] = []
    action = counting_action(effects)

    assert runner.run(action, 2, run_id="before") == [0, 1]
    shutil.rmtree(folder)
    with pytest.raises(dnb.JournalWriteError) as err:
        runner.run(action, 2, run_id="after")
    text = str(err.value)
    assert str(folder / "journal.db") in text and "deleted" in text and "SqliteStore(" in text
    assert effects == [0, 1], "no side effect may run against a deleted journal"
    store.close()

    fresh = dnb.SqliteStore(folder / "journal.db", durability=durability)  # the fix the message names
    assert dnb.LocalRunner(fresh).run(action, 2, run_id="after") == [0, 1]
    assert [r.run_id for r in fresh.runs()] == ["after"]
    fresh.close()


def test_a_journal_renamed_while_open_is_refused_at_the_next_run_and_moving_it_back_loses_nothing(tmp_path):
    """``mv journal.db archive.db`` while a kernel runs: SQLite went on writing the renamed file while its WAL
    stayed under the old name (archive.db opened empty: every acknowledged run lost from it), and a connection
    of another thread created a new empty journal.db (a bare 'no such table: runs')."""
    store = dnb.SqliteStore(tmp_path / "journal.db")
    runner = dnb.LocalRunner(store)
    effects: list[int] = []
    action = counting_action(effects)

    assert runner.run(action, 2, run_id="before") == [0, 1]
    os.rename(tmp_path / "journal.db", tmp_path / "archive.db")
    with pytest.raises(dnb.JournalWriteError, match="renamed or moved while this store had it open") as err:
        runner.run(action, 2, run_id="after")
    assert str(tmp_path / "journal.db") in str(err.value) and "Move the file back" in str(err.value)
    assert effects == [0, 1] and not (tmp_path / "journal.db").exists()

    os.rename(tmp_path / "archive.db", tmp_path / "journal.db")  # the fix the message names
    assert runner.run(action, 2, run_id="after") == [0, 1]
    store.close()
    again = dnb.SqliteStore(tmp_path / "journal.db")
    assert [r.run_id for r in again.runs()] == ["before", "after"]
    again.close()


def test_a_journal_opened_through_a_symlink_is_the_real_file_with_its_companions_beside_it(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "links").mkdir()
    real = tmp_path / "real" / "j.db"
    dnb.SqliteStore(real).close()
    link = tmp_path / "links" / "alias.db"
    link.symlink_to(real)
    store = dnb.SqliteStore(link)
    assert store.path == real
    dnb.LocalRunner(store).run(lambda _, ctx: ctx.durable_execute(str, 1), None, run_id="r")
    assert sorted(p.name for p in (tmp_path / "links").iterdir()) == ["alias.db"]
    assert any(p.name.startswith("j.db-log.") for p in (tmp_path / "real").iterdir())
    store.close()


def test_a_journal_with_several_hard_links_is_opened_with_a_warning_naming_the_risk(tmp_path):
    # A hard link has no one real path: a crashed process's intent log sits beside the link it opened,
    # where a process opening the other link does not look. The user must hear it when opening.
    real = tmp_path / "j.db"
    dnb.SqliteStore(real).close()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dnb.SqliteStore(real).close()  # one link: no warning
    os.link(real, tmp_path / "other.db")
    with pytest.warns(UserWarning, match=r"2 hard links: open it through one path only") as caught:
        dnb.SqliteStore(real).close()
    assert caught[0].filename == __file__, "the warning points at the user's line"


def test_a_map_asks_once_whether_its_journal_was_deleted_not_once_per_record(tmp_path, monkeypatch):
    """An fstat per run open cost a replayed map ~10% of its throughput; one per map (boundary) is enough, and
    a map started after the journal was deleted is still refused."""
    from durable_nb.journal.lease import FileLocks

    asked: list[int] = []
    deleted = FileLocks.deleted
    monkeypatch.setattr(FileLocks, "deleted", lambda self: asked.append(1) or deleted(self))
    folder = tmp_path / ".durable"
    store = dnb.SqliteStore(folder / "journal.db")
    runner = dnb.LocalRunner(store)

    def action(i: int, ctx: dnb.RunnerContext) -> int:
        return ctx.durable_execute(abs, i)

    assert list(runner.map(action, list(range(50)))["result"]) == list(range(50))
    assert list(runner.map(action, list(range(50)))["result"]) == list(range(50))  # replayed
    assert len(asked) == 2
    shutil.rmtree(folder)
    refused = runner.map(action, list(range(5)))
    assert list(refused["status"]) == ["FAILED"] * 5 and all("deleted" in e for e in refused["error"])
    store.close()


def test_a_journal_path_in_a_symlink_loop_is_a_journal_error_naming_the_path(tmp_path):
    (tmp_path / "a.db").symlink_to(tmp_path / "b.db")
    (tmp_path / "b.db").symlink_to(tmp_path / "a.db")
    with pytest.raises(dnb.DurableError) as err:  # was a bare RuntimeError('Symlink loop ...') from Path.resolve
        dnb.SqliteStore(tmp_path / "a.db")
    assert str(tmp_path / "a.db") in str(err.value) and "symbolic links" in str(err.value)


def test_the_default_store_after_its_folder_was_removed_is_a_new_journal_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``default_store()`` is cached by path: after ``rm -rf .durable`` it returned the store of the deleted
    file, which refuses every run (JournalWriteError), so ``LocalRunner()`` could not run until a restart."""
    monkeypatch.chdir(tmp_path)
    first = dnb.LocalRunner()
    first.run(lambda v, ctx: ctx.durable_execute(str, v), 1, run_id="a")
    shutil.rmtree(tmp_path / ".durable")
    with pytest.raises(dnb.JournalWriteError, match="was deleted"):
        first.run(lambda v, ctx: ctx.durable_execute(str, v), 2, run_id="b")
    again = dnb.LocalRunner()
    assert again.run(lambda v, ctx: ctx.durable_execute(str, v), 2, run_id="b") == "2"
    assert [r.run_id for r in again.store.runs()] == ["b"]
    again.store.close()
    first.store.close()


def test_a_full_disk_at_fork_prune_forget_or_close_is_a_journal_write_error_naming_the_fix(tmp_path):
    """fork, prune and delete_run write in a transaction of their own, and close() commits the held-back
    outcome: on a full disk each raised a bare sqlite3.OperationalError('database or disk is full'), naming
    neither the journal nor the fix, while a durable call's write said both. Nothing is lost either way."""
    with tmpfs(tmp_path / "mnt", "2m") as mnt:
        path = mnt / "j.db"
        store = dnb.SqliteStore(path)
        runner = dnb.LocalRunner(store)
        for k in range(3):
            runner.run(lambda _, ctx, k=k: [ctx.durable_execute(str, (k, i)) for i in range(3)], None, run_id=f"r{k}")
        store.flush()
        open_run = runner.context("open")
        ctx = open_run.__enter__()
        store.flush()
        filler = fill(mnt)
        for write in (lambda: store.fork("r1", at=2), lambda: store.prune(keep_last=0),
                      lambda: store.delete_run("r0")):
            with pytest.raises(dnb.JournalWriteError, match=rf"{path}.*disk is full.*Free disk space"):
                write()
        filler.unlink()
        ctx.durable_execute(os.urandom, 20_000)  # too large for the intent log: held back for SQLite itself
        filler = fill(mnt)
        with pytest.raises(dnb.JournalWriteError, match=rf"{path}.*disk is full.*Free disk space"):
            store.close()
        filler.unlink()
        open_run.__exit__(None, None, None)
        store.close()
        again = dnb.SqliteStore(path)
        assert [r.run_id for r in again.runs()] == ["r0", "r1", "r2", "open"]
        assert [c.status for c in again.calls("open")] == [Status.SUCCEEDED]
        assert sqlite3.connect(path).execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        again.close()


def test_a_lock_timeout_at_fork_or_forget_is_a_journal_write_error_naming_the_lock_not_the_disk(tmp_path):
    """A write transaction held by another connection (a sqlite3 shell, a DB browser) past the busy timeout
    made fork and delete_run raise a JournalWriteError saying "Check the disk and the file": the disk was
    fine, the fix is to end the other transaction."""
    store = dnb.SqliteStore(tmp_path / "j.db")
    runner = dnb.LocalRunner(store)
    runner.run(lambda _, ctx: ctx.durable_execute(str, 1), None, run_id="r0")
    store.flush()
    store._conn.execute("PRAGMA busy_timeout = 100")  # not the 60 s a test would wait
    other = sqlite3.connect(tmp_path / "j.db", isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    for write in (lambda: store.fork("r0", at=0), lambda: store.delete_run("r0")):
        with pytest.raises(dnb.JournalWriteError, match="database is locked") as raised:
            write()
        assert "disk" not in str(raised.value) and "write lock" in str(raised.value)
    other.execute("ROLLBACK")
    other.close()
    store.delete_run("r0")
    assert store.runs() == []
    store.close()
