"""What another local user can reach: files durable_nb makes in shared folders (the temp folder).

The "other user" is real: ``nobody``, through ``runuser`` (these tests run as root; they skip with
the reason where ``runuser`` or root is missing).
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

import durable_nb as dnb
from durable_nb.runners import flink_env

OTHER = "nobody"


def need_other() -> None:
    if os.geteuid() != 0 or shutil.which("runuser") is None:
        pytest.skip("needs root and runuser to act as another local user")


def as_other(*argv: str) -> None:
    """Run ``argv`` as another local user."""
    need_other()
    subprocess.run(["runuser", "-u", OTHER, "--", *argv], check=True)


@pytest.fixture
def shared_tmp(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A temp folder shared by every user, as /tmp is (1777), used as this process's temp folder.

    Not under pytest's tmp_path: that one is private to this user, the other could not reach it.
    """
    shared = Path(tempfile.mkdtemp(prefix="dnb-shared-tmp-"))
    shared.chmod(0o1777)
    monkeypatch.setattr(tempfile, "tempdir", str(shared))
    monkeypatch.delenv("FLINK_LOG_DIR", raising=False)
    yield shared
    shutil.rmtree(shared)


def test_flink_logs_do_not_go_to_a_folder_another_user_planted_in_the_temp_folder(shared_tmp: Path) -> None:
    trap = shared_tmp / "trap"
    name = shared_tmp / f"durable_nb-flink-logs-{os.getuid()}"
    as_other("mkdir", "-m", "0777", str(trap))
    as_other("ln", "-s", str(trap), str(name))
    with pytest.warns(UserWarning, match="not a folder of this user"):
        logs = Path(flink_env.log_dir())
    assert logs.resolve().parent == shared_tmp.resolve() and logs.resolve() != trap.resolve()
    assert logs.stat().st_uid == os.getuid() and stat.S_IMODE(logs.stat().st_mode) == 0o700


def test_flink_logs_do_not_go_to_a_real_folder_another_user_made_first(shared_tmp: Path) -> None:
    name = shared_tmp / f"durable_nb-flink-logs-{os.getuid()}"
    as_other("mkdir", "-m", "0777", str(name))
    with pytest.warns(UserWarning, match="not a folder of this user"):
        logs = Path(flink_env.log_dir())
    assert logs != name and logs.stat().st_uid == os.getuid()


def test_the_flink_logs_folder_is_private_and_an_older_open_one_is_made_private(shared_tmp: Path) -> None:
    logs = Path(flink_env.log_dir())
    assert stat.S_IMODE(logs.stat().st_mode) == 0o700
    logs.chmod(0o755)  # as an older durable_nb made it
    assert Path(flink_env.log_dir()) == logs and stat.S_IMODE(logs.stat().st_mode) == 0o700


def _action(x: int, ctx: dnb.RunnerContext) -> int:
    return ctx.durable_execute(abs, x)


def test_a_counters_symlink_another_user_planted_beside_the_journal_is_refused_and_its_target_kept(
    shared_tmp: Path,
) -> None:
    target = shared_tmp / "mine.txt"  # a file of this user the link names
    target.write_bytes(b"IMPORTANT-DATA-LINE-1\n")
    folder = shared_tmp / ".durable"
    as_other("mkdir", "-m", "0777", str(folder))
    as_other("ln", "-s", str(target), str(folder / "journal.db-counters"))
    with pytest.warns(UserWarning, match="another local user can change the journal"), \
            pytest.raises(dnb.JournalWriteError, match="-counters is a symlink"):
        store = dnb.SqliteStore(folder / "journal.db")
        dnb.LocalRunner(store).run(_action, -1, run_id="r")
    assert target.read_bytes() == b"IMPORTANT-DATA-LINE-1\n"


def test_a_journal_in_a_folder_another_user_can_write_warns_at_open(shared_tmp: Path) -> None:
    folder = shared_tmp / ".durable"
    as_other("mkdir", "-m", "0777", str(folder))
    with pytest.warns(UserWarning, match=r"belongs to another user .*pickles.*replay"):
        dnb.SqliteStore(folder / "journal.db").close()


def test_a_journal_another_user_planted_in_a_sticky_shared_folder_warns_at_open(shared_tmp: Path) -> None:
    """The temp folder's sticky bit keeps others from replacing this user's files, not from creating one first."""
    private = Path(tempfile.mkdtemp(dir=shared_tmp))
    store = dnb.SqliteStore(private / "made.db")
    dnb.LocalRunner(store).run(_action, -1, run_id="r")
    store.close()
    need_other()
    planted = shared_tmp / "journal.db"
    shutil.copyfile(private / "made.db", planted)
    shutil.chown(planted, OTHER)
    planted.chmod(0o666)
    with pytest.warns(UserWarning, match="journal.db belongs to another user"):
        dnb.SqliteStore(planted, read_only=True).close()


def test_a_journal_in_a_folder_of_this_user_opens_without_a_warning(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        store = dnb.SqliteStore(tmp_path / ".durable" / "journal.db")
        dnb.LocalRunner(store).run(_action, -1, run_id="r")
        store.close()
        dnb.SqliteStore(tmp_path / ".durable" / "journal.db").close()


def test_a_group_writable_folder_whose_group_holds_only_this_user_opens_without_a_warning(tmp_path: Path) -> None:
    """umask 002 (Debian, Ubuntu: every user has a group of their own) makes project folders 0775: no one else."""
    if not hasattr(os, "geteuid"):
        pytest.skip("no uids")
    folder = tmp_path / "project"
    folder.mkdir()
    os.chown(folder, -1, os.getegid() if os.geteuid() else 0)
    folder.chmod(0o775)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        store = dnb.SqliteStore(folder / "orders.db")
        dnb.LocalRunner(store).run(_action, -1, run_id="r")
        store.close()
        dnb.SqliteStore(folder / "orders.db").close()


def test_a_group_writable_folder_whose_group_has_another_member_warns_naming_them(tmp_path: Path) -> None:
    need_other()
    import pwd

    folder = tmp_path / "shared"
    folder.mkdir()
    os.chown(folder, -1, pwd.getpwnam(OTHER).pw_gid)
    folder.chmod(0o775)
    with pytest.warns(UserWarning, match=rf"can be written by its group \(gid \d+: .*{OTHER}"):
        dnb.SqliteStore(folder / "orders.db").close()


def test_a_dead_sessions_flink_folder_of_another_user_is_never_reclaimed(shared_tmp: Path) -> None:
    """A new Flink session removes the stale scratch folders of dead durable_nb processes: this user's only."""
    from durable_nb.runners import flink_scratch

    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    theirs, mine = (shared_tmp / f"durable_nb-ship-{int(done.stdout)}-{who}" for who in ("theirs", "mine"))
    as_other("mkdir", "-m", "0777", str(theirs))
    mine.mkdir()
    flink_scratch.reclaim_stale()
    assert theirs.is_dir() and not mine.exists()
