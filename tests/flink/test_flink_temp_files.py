"""A process that ran durable Flink jobs leaves nothing in the temp folder once it exits.

Each test runs a fresh Python process, since what is tested is its exit.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import durable_nb

ROOT = str(Path(durable_nb.__file__).resolve().parent.parent)


def _child_env(tmp: Path, **more: str) -> dict[str, str]:
    env = {**os.environ, "TMPDIR": str(tmp), "PYTHONPATH": ROOT, **more}
    env.pop("JVM_ARGS", None)
    return env


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
        assert list(tmp.iterdir()), "the map wrote nothing to the temp folder: nothing tested"
        start = time.monotonic()
        manager.shutdown_kernel(now=False)
        took = time.monotonic() - start
    finally:
        client.stop_channels()
        if manager.has_kernel:
            manager.shutdown_kernel(now=True)
    assert sorted(p.name for p in tmp.iterdir()) == []
    assert took < manager.shutdown_wait_time / 2, f"Jupyter had to SIGTERM the kernel ({took:.1f} s)"
