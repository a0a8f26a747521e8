"""A process that ran durable Flink jobs leaves nothing in the temp folder once it exits.

Each test runs a fresh Python process, since what is tested is its exit.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import durable_nb

ROOT = str(Path(durable_nb.__file__).resolve().parent.parent)


def _child_env(tmp: Path, **more: str) -> dict[str, str]:
    env = {**os.environ, "TMPDIR": str(tmp), "PYTHONPATH": ROOT, **more}
    env.pop("JVM_ARGS", None)
    return env


@contextlib.contextmanager
def _kernel_after_a_flink_map(tmp_path: Path) -> Iterator[tuple[Any, Path]]:
    """A real Jupyter kernel, its temp folder ``tmp_path/tmp``, that has run one FlinkRunner map; killed after."""
    from jupyter_client.manager import KernelManager

    tmp = tmp_path / "tmp"
    tmp.mkdir()
    manager = KernelManager(kernel_name="python3")
    manager.start_kernel(env=_child_env(tmp, FLINK_LOG_DIR=str(tmp_path / "logs")), cwd=str(tmp_path))
    client = manager.client()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=60)
        reply = client.execute_interactive(textwrap.dedent("""
            import durable_nb as dnb

            def absolute(x, ctx):
                return ctx.durable_execute(abs, -x)

            df = dnb.FlinkRunner(dnb.SqliteStore("journal.db"), parallelism=1).map(absolute, [1, 2])
            assert list(df["result"]) == [1, 2], df
        """), timeout=200, output_hook=lambda msg: None)
        assert reply["content"]["status"] == "ok", reply["content"]
        yield manager, tmp
    finally:
        client.stop_channels()
        if manager.has_kernel:
            manager.shutdown_kernel(now=True)


@pytest.mark.flink
@pytest.mark.timeout(240)
def test_a_process_that_ran_a_flink_map_leaves_nothing_in_the_temp_folder_after_it_exits(
    tmp_path: Path, java: None
) -> None:
    # Flink's own files (the mini-cluster's folder, its 24 MB RPC jar, one zip of the package per job)
    # and ours (the package copy, the checkpoints) outlived every session, ~25 MB each.
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    code = textwrap.dedent("""
        import sys
        import durable_nb as dnb
        from durable_nb.runners.flink_env import gateway

        def absolute(x, ctx):
            return ctx.durable_execute(abs, -x)

        df = dnb.FlinkRunner(dnb.SqliteStore(sys.argv[1]), parallelism=1).map(absolute, [1, 2, 3])
        assert list(df["result"]) == [1, 2, 3], df
        print(gateway().jvm.java.lang.System.getProperty("java.io.tmpdir"))
    """)
    env = _child_env(tmp, FLINK_LOG_DIR=str(tmp_path / "logs"))  # the logs folder stays on purpose
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "journal.db")], capture_output=True,
                         text=True, timeout=200, env=env, cwd=tmp_path)

    assert out.returncode == 0, out.stderr[-3000:]
    assert sorted(p.name for p in tmp.iterdir()) == []
    jvm_tmp = Path(out.stdout.strip().splitlines()[-1])
    assert jvm_tmp.is_relative_to(tmp), f"Flink wrote to {jvm_tmp}, outside the temp folder watched here"
    assert "Traceback" not in out.stderr, out.stderr[-3000:]  # no Py4J noise from the JVM stopped at exit


def test_a_forked_child_leaves_its_parents_temp_folders_alone(tmp_path: Path) -> None:
    code = textwrap.dedent("""
        import os, sys
        from durable_nb.runners import flink_scratch

        path = flink_scratch.folder("durable_nb-ship-", shipped=True)
        pid = os.fork()
        if pid == 0:
            mine = flink_scratch.folder("durable_nb-child-")
            print(mine, flush=True)
            sys.exit(0)  # a normal exit: atexit hooks run in the child
        os.waitpid(pid, 0)
        print(path, os.path.isdir(path), flush=True)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env=_child_env(tmp_path))

    assert out.returncode == 0, out.stderr
    child_folder, parent_line = out.stdout.strip().splitlines()
    parent_folder, existed = parent_line.rsplit(" ", 1)
    assert existed == "True", "the child's exit removed its parent's folder"
    assert not Path(child_folder).exists() and not Path(parent_folder).exists()


@pytest.mark.flink
@pytest.mark.timeout(240)
def test_a_jupyter_kernel_shut_down_after_a_flink_map_exits_in_time_and_leaves_nothing_in_the_temp_folder(
    tmp_path: Path, java: None,
) -> None:
    # ipykernel terminates its children before it exits and waited seconds for the JVM (in Flink's
    # shutdown hooks); Jupyter waits 2.5 s, then SIGTERMed the kernel: no exit hook ran, ~25 MB stayed.
    import time

    with _kernel_after_a_flink_map(tmp_path) as (manager, tmp):
        assert list(tmp.iterdir()), "the map wrote nothing to the temp folder: nothing tested"
        start = time.monotonic()
        manager.shutdown_kernel(now=False)
        took = time.monotonic() - start
    assert sorted(p.name for p in tmp.iterdir()) == []
    assert took < manager.shutdown_wait_time / 2, f"Jupyter had to SIGTERM the kernel ({took:.1f} s)"


def _dead_pid() -> int:
    """The pid of a process that has exited (and been reaped): no process has it now."""
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


_KILLED_SESSION = textwrap.dedent("""
    import os, signal
    from durable_nb.runners import flink_scratch

    for kind in ("ship", "checkpoints", "jvm"):
        path = flink_scratch.folder(f"durable_nb-{kind}-")
        open(os.path.join(path, "data"), "w").close()
    os.kill(os.getpid(), signal.SIGKILL)  # as nbval ends its kernels: no exit hook runs
""")

_NEXT_SESSION = textwrap.dedent("""
    from durable_nb.runners import flink_scratch

    print(flink_scratch.folder("durable_nb-ship-"))
""")


def test_the_next_session_reclaims_the_folders_a_killed_session_left_and_only_those(tmp_path: Path) -> None:
    # a SIGKILLed process (nbval's shutdown_kernel(now=True), the OOM killer) runs no exit code: its
    # ~25 MB stayed in the temp folder for good, one set per killed kernel.
    env = _child_env(tmp_path)
    killed = subprocess.run([sys.executable, "-c", _KILLED_SESSION], env=env, timeout=60)
    assert killed.returncode == -9
    left = sorted(p.name.split("-")[1] for p in tmp_path.iterdir())
    assert left == ["checkpoints", "jvm", "ship"], "nothing left by the killed process: nothing tested"
    dead = _dead_pid()
    kept = [
        tmp_path / "durable_nb-ship-abc12345",  # an older durable_nb's (no pid): not provably dead
        tmp_path / f"durable_nb-notes-{dead}-abc12345",  # not one of our kinds
        tmp_path / f"durable_nb-checkpoints-{os.getpid()}-abc12345",  # its process lives
        tmp_path / f"durable_nb-jvm-{dead}-held",  # held by a live process (one in another pid namespace)
    ]
    for path in kept:
        path.mkdir()
    (tmp_path / f"durable_nb-ship-{dead}-file").write_text("")  # not a folder
    (tmp_path / f"durable_nb-ship-{dead}-link").symlink_to(kept[0], target_is_directory=True)
    import fcntl

    held = os.open(kept[3], os.O_RDONLY)
    fcntl.flock(held, fcntl.LOCK_EX)
    try:
        out = subprocess.run([sys.executable, "-c", _NEXT_SESSION], capture_output=True, text=True,
                             env=env, timeout=60)
    finally:
        os.close(held)

    assert out.returncode == 0, out.stderr
    assert sorted(tmp_path.iterdir()) == sorted([*kept, tmp_path / f"durable_nb-ship-{dead}-file",
                                                 tmp_path / f"durable_nb-ship-{dead}-link"])
    assert not Path(out.stdout.strip()).exists()  # the next session's own folder went at its exit


def test_a_live_sessions_folders_are_not_reclaimed_by_another_session(tmp_path: Path) -> None:
    env = _child_env(tmp_path)
    live = subprocess.Popen([sys.executable, "-c", textwrap.dedent("""
        import sys
        from durable_nb.runners import flink_scratch

        print(flink_scratch.folder("durable_nb-ship-"), flush=True)
        sys.stdin.read()
    """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    try:
        path = Path(live.stdout.readline().strip())
        other = subprocess.run([sys.executable, "-c", _NEXT_SESSION], capture_output=True, text=True,
                               env=env, timeout=60)
        assert other.returncode == 0, other.stderr
        assert path.is_dir(), "another session removed the folder of a live one"
    finally:
        live.communicate("", timeout=60)
    assert not path.exists()


@pytest.mark.flink
@pytest.mark.timeout(240)
def test_a_kernel_killed_as_nbval_ends_it_after_a_flink_map_leaves_nothing_once_a_next_session_starts(
    tmp_path: Path, java: None,
) -> None:
    # nbval ends every kernel with shutdown_kernel(now=True): SIGKILL, no exit hook, ~25 MB per notebook.
    with _kernel_after_a_flink_map(tmp_path) as (manager, tmp):
        manager.shutdown_kernel(now=True)
    assert {p.name.split("-")[1] for p in tmp.iterdir()} >= {"ship", "checkpoints", "jvm"}, "nothing tested"
    env = _child_env(tmp, FLINK_LOG_DIR=str(tmp_path / "logs"))

    out = subprocess.run([sys.executable, "-c", _NEXT_SESSION], capture_output=True, text=True, env=env,
                         timeout=60)

    assert out.returncode == 0, out.stderr
    assert sorted(p.name for p in tmp.iterdir()) == []
