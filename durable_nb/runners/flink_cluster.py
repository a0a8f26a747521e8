"""A standalone Flink cluster on 127.0.0.1, started from the ``apache-flink`` wheel itself.

Why this exists: failover is only proven when a TaskManager *process* dies, and a
mini-cluster lives inside the client's JVM. The ``apache-flink`` wheel already
ships Flink's ``bin/jobmanager.sh`` / ``bin/taskmanager.sh`` and every jar they
need, so a real cluster needs no download: this module writes a configuration
into a temporary folder (``FLINK_CONF_DIR``; nothing is written into the wheel),
starts each process in the foreground with ``start-foreground`` (the scripts
``exec`` the JVM, so the pid we hold *is* the JVM), and stops every process it
started by that pid. It is meant for tests and tutorials::

    from durable_nb.flink_cluster import StandaloneCluster

    with StandaloneCluster() as cluster:                 # JobManager + one TaskManager
        runner = FlinkRunner(store, jobmanager=cluster.jobmanager)
        ...
        cluster.kill_taskmanager(cluster.taskmanagers[0])   # SIGKILL, like a lost machine
        cluster.start_taskmanager()

Only processes started by this object are ever signalled, each by its pid.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import psutil

__all__ = ["StandaloneCluster", "flink_home"]


def flink_home() -> Path:
    """The folder of the installed ``pyflink`` package: it holds ``bin/``, ``lib/``, ``opt/``, ``conf/``."""
    try:
        import pyflink
    except ImportError:
        raise ImportError(
            "the Flink cluster helper needs apache-flink: pip install 'durable_nb[flink]'"
        ) from None
    return Path(pyflink.__file__).resolve().parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _descendants(pid: int) -> list[int]:
    """Pids of every live process below ``pid`` (the Python workers a TaskManager spawned)."""
    try:
        return [child.pid for child in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs; a zombie (exited, not reaped) is not alive for our purposes."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class StandaloneCluster:
    """A JobManager and TaskManagers on loopback, each a real process started from the wheel's scripts.

    Args:
        slots: task slots per TaskManager (a job with ``parallelism=2`` needs 2).
        workdir: where the configuration, logs and pid files go; a fresh temporary
            folder (removed by :meth:`stop`) when None.
        taskmanager_memory: ``taskmanager.memory.process.size`` of each TaskManager.
        jobmanager_memory: ``jobmanager.memory.process.size``.
        config: extra Flink options written into ``config.yaml`` (flat keys).
    """

    def __init__(
        self,
        *,
        slots: int = 2,
        workdir: str | os.PathLike[str] | None = None,
        taskmanager_memory: str = "1200m",
        jobmanager_memory: str = "1000m",
        config: dict[str, Any] | None = None,
    ) -> None:
        self.slots = slots
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="dnb-flink-"))
        self.conf_dir = self.workdir / "conf"
        self.log_dir = self.workdir / "log"
        self.rest_port = _free_port()
        self.rpc_port = _free_port()
        self._taskmanager_memory = taskmanager_memory
        self._jobmanager_memory = jobmanager_memory
        self._extra = dict(config or {})
        self._procs: dict[int, subprocess.Popen[bytes]] = {}
        self.jobmanager_pid: int | None = None
        self.taskmanagers: list[int] = []
        """Pids of the TaskManagers started by this object and not stopped yet."""
        self.taskmanager_dirs: dict[int, Path] = {}
        """Each TaskManager's own working folder (current directory and ``io.tmp.dirs``), by pid."""
        self._worker_pids: set[int] = set()

    # -- addresses ------------------------------------------------------------

    @property
    def jobmanager(self) -> str:
        """``"127.0.0.1:<rest port>"``: what ``FlinkRunner(jobmanager=...)`` takes."""
        return f"127.0.0.1:{self.rest_port}"

    def __repr__(self) -> str:
        return f"StandaloneCluster(jobmanager={self.jobmanager!r}, taskmanagers={self.taskmanagers})"

    # -- configuration --------------------------------------------------------

    def _write_config(self) -> None:
        home = flink_home()
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for name in ("log4j-console.properties", "log4j.properties", "log4j-cli.properties",
                     "logback-console.xml", "logback.xml"):
            src = home / "conf" / name
            if src.exists():
                shutil.copy(src, self.conf_dir / name)
        options: dict[str, Any] = {
            # The wheel's config carries the --add-opens flags Flink needs on Java 17.
            "env.java.opts.all": _wheel_java_opts(home),
            # Pid files and logs in our folder, never in the wheel or a shared /tmp.
            "env.pid.dir": str(self.workdir),
            "env.log.dir": str(self.log_dir),
            "jobmanager.bind-host": "127.0.0.1",
            "jobmanager.rpc.address": "127.0.0.1",
            "jobmanager.rpc.port": self.rpc_port,
            "jobmanager.memory.process.size": self._jobmanager_memory,
            "jobmanager.execution.failover-strategy": "region",
            "taskmanager.bind-host": "127.0.0.1",
            "taskmanager.host": "127.0.0.1",
            "taskmanager.numberOfTaskSlots": self.slots,
            "taskmanager.memory.process.size": self._taskmanager_memory,
            "rest.address": "127.0.0.1",
            "rest.bind-address": "127.0.0.1",
            "rest.port": self.rest_port,
            # A SIGKILLed TaskManager is noticed in seconds, not the default 50 s.
            "heartbeat.interval": 1000,
            "heartbeat.timeout": 6000,
            # Job results stay queryable briefly after a job ends (execute_and_collect reads them).
            **self._extra,
        }
        lines = [f"{key}: {json.dumps(value) if isinstance(value, str) else value}"
                 for key, value in options.items()]
        (self.conf_dir / "config.yaml").write_text("\n".join(lines) + "\n")

    def _spawn(self, script: str, name: str, *, cwd: Path | None = None, args: tuple[str, ...] = ()) -> int:
        env = dict(os.environ, FLINK_CONF_DIR=str(self.conf_dir), FLINK_LOG_DIR=str(self.log_dir))
        out = open(self.log_dir / f"{name}.out", "ab")  # noqa: SIM115 - owned by the child
        try:
            proc = subprocess.Popen(
                ["bash", str(flink_home() / "bin" / script), "start-foreground", *args],
                env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=cwd,
                # Its own session: a Ctrl-C in the notebook does not reach the cluster.
                start_new_session=True,
            )
        finally:
            out.close()
        self._procs[proc.pid] = proc
        return proc.pid

    # -- lifecycle ------------------------------------------------------------

    def start(self, taskmanagers: int = 1, timeout: float = 120.0) -> StandaloneCluster:
        """Start the JobManager and ``taskmanagers`` TaskManagers; wait until they have registered."""
        from .flink_env import check_java

        check_java()
        self._write_config()
        self.jobmanager_pid = self._spawn("jobmanager.sh", "jobmanager")
        try:
            for _ in range(taskmanagers):
                self.start_taskmanager(wait=False)
            self.wait_for_taskmanagers(taskmanagers, timeout=timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def start_taskmanager(self, *, wait: bool = True, timeout: float = 120.0) -> int:
        """Start one more TaskManager; with ``wait``, return once the JobManager counts it."""
        expected = len(self.taskmanagers) + 1
        name = f"taskmanager-{len(self._procs)}"
        # Each TaskManager works in a folder of its own (its current directory and its
        # io.tmp.dirs, where Python workers unpack the job's files), as on separate machines.
        folder = self.workdir / name
        folder.mkdir(parents=True, exist_ok=True)
        pid = self._spawn("taskmanager.sh", name, cwd=folder, args=(f"-Dio.tmp.dirs={folder}",))
        self.taskmanagers.append(pid)
        self.taskmanager_dirs[pid] = folder
        if wait:
            self.wait_for_taskmanagers(expected, timeout=timeout)
        return pid

    def overview(self) -> dict[str, Any]:
        """The JobManager's REST ``/overview`` (TaskManagers, slots, jobs running)."""
        return self._rest("/overview")

    def jobs(self) -> list[dict[str, Any]]:
        """``/jobs/overview``: every job with its state, on the REST API."""
        return list(self._rest("/jobs/overview").get("jobs", []))

    def failures(self, job_id: str) -> list[dict[str, Any]]:
        """The job's failure history (``/jobs/<id>/exceptions``): one entry per failover, newest first."""
        history = self._rest(f"/jobs/{job_id}/exceptions").get("exceptionHistory") or {}
        return list(history.get("entries", []))

    def _rest(self, path: str) -> dict[str, Any]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.rest_port}{path}", timeout=5) as resp:
            return dict(json.load(resp))

    def wait_for_taskmanagers(self, count: int, timeout: float = 120.0) -> None:
        """Block until ``count`` TaskManagers are registered (the JobManager's view)."""
        deadline = time.monotonic() + timeout
        seen = -1
        while time.monotonic() < deadline:
            self._check_processes()
            try:
                seen = int(self.overview().get("taskmanagers", 0))
            except (OSError, urllib.error.URLError, ValueError):
                seen = -1
            if seen == count:
                return
            time.sleep(0.2)
        raise TimeoutError(
            f"Flink cluster at {self.jobmanager}: {count} TaskManager(s) expected, {seen} registered "
            f"after {timeout:.0f} s; see the logs in {self.log_dir}"
        )

    def _check_processes(self) -> None:
        for pid, proc in self._procs.items():
            if proc.poll() is not None and (pid == self.jobmanager_pid or pid in self.taskmanagers):
                raise RuntimeError(
                    f"Flink process {pid} exited with code {proc.returncode} while starting; "
                    f"see {self.log_dir} (is Java 11+ installed and are the ports free?)"
                )

    def kill_taskmanager(self, pid: int, sig: int = signal.SIGKILL) -> None:
        """Signal one TaskManager (SIGKILL by default: a lost machine) and reap it.

        The Python workers it had spawned are remembered and stopped by pid in
        :meth:`stop` if they outlive it.
        """
        if pid not in self.taskmanagers:
            raise ValueError(f"{pid} is not a running TaskManager of this cluster ({self.taskmanagers})")
        self._worker_pids.update(_descendants(pid))
        os.kill(pid, sig)
        self._procs[pid].wait(timeout=60)
        self.taskmanagers.remove(pid)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop every process this object started, by pid: SIGTERM, then SIGKILL after ``timeout``.

        TaskManagers first (they stop their Python workers), then the JobManager,
        then any Python worker a killed TaskManager left behind. Idempotent.
        """
        order = [*self.taskmanagers, *([self.jobmanager_pid] if self.jobmanager_pid else [])]
        for pid in order:
            self._worker_pids.update(_descendants(pid))
        for pid in order:
            proc = self._procs.get(pid)
            if proc is None or proc.poll() is not None:
                continue
            os.kill(pid, signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.kill(pid, signal.SIGKILL)
                proc.wait(timeout=timeout)
        for proc in self._procs.values():  # reap everything we started, killed ones included
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=timeout)
        for pid in sorted(self._worker_pids):
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        self._worker_pids.clear()
        self.taskmanagers.clear()
        self.jobmanager_pid = None
        if self._own_workdir and os.environ.get("DURABLE_NB_KEEP_FLINK_LOGS") != "1":
            shutil.rmtree(self.workdir, ignore_errors=True)

    def started_pids(self) -> list[int]:
        """Every pid this object has started (running or not): what tests check is gone after ``stop``."""
        return list(self._procs)

    def __enter__(self) -> StandaloneCluster:
        if self.jobmanager_pid is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _wheel_java_opts(home: Path) -> str:
    """``env.java.opts.all`` from the wheel's own config.yaml (the JVM flags Flink needs)."""
    import yaml  # a dependency of apache-flink

    with open(home / "conf" / "config.yaml") as fh:
        data = yaml.safe_load(fh) or {}
    node: Any = data
    for part in ("env", "java", "opts", "all"):
        node = node.get(part) if isinstance(node, dict) else None
    if node is None:
        node = data.get("env.java.opts.all", "")
    return str(node)
