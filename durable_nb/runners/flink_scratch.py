"""The temporary folders of this process's Flink jobs, removed when the process exits.

Why: every process that ran a durable Flink job left, for good, its copy of the package
(``durable_nb-ship-*``), its checkpoints, and the mini-cluster's own files in the temp folder
(a 24 MB ``flink-rpc-akka*.jar`` and a ``minicluster_*`` folder, as the JVM dies with the
Python process while the mini-cluster is still shutting down, plus one
``flink-distributed-cache-*`` zip of the package per job): about 25 MB per kernel session.

* :func:`folder` - a temp folder of this process, removed at its normal exit.
* :func:`jvm_tmpdir` - while durable_nb launches PyFlink's gateway JVM, its ``java.io.tmpdir``
  (where Flink's local mode writes all of the above) is such a folder; an explicit
  ``-Djava.io.tmpdir`` of the user's (``JVM_ARGS``, ``FLINK_ENV_JAVA_OPTS``, ``env.java.opts.all``)
  comes later on the java command line and wins.
* At exit the JVM durable_nb launched is stopped first (it would die anyway when this process
  exits, since it reads our pipe; stopping it here lets the folders go once it is gone), then the folders go.
  A JVM this process did not launch (``PYFLINK_GATEWAY_PORT``: ``flink run`` started us) is left
  alone; only the zips Flink made of our package in its temp folder are removed.
* A Jupyter kernel asked to shut down does all of that first (:func:`_hook_kernel_shutdown`).
* A forked child forgets them: its exit must not remove its parent's folders.
* A process killed (SIGKILL, as nbval ends its kernels; SIGTERM) runs no exit code: the first folder
  of the next session reclaims such stale folders (:func:`reclaim_stale`). Each folder's name holds
  its process's pid and the process holds an ``flock`` on it while it lives, so a folder is removed
  only when it is of these kinds, this user's, its pid is gone and nothing holds its lock.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import shutil
import stat
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # Windows: no flock, so no folder is ever proven stale
    fcntl = None  # type: ignore[assignment]

__all__ = ["adopt_jvm", "folder", "jvm_tmpdir", "reclaim_stale"]

_lock = threading.Lock()
_folders: list[str] = []
_held: list[int] = []  # the flocked descriptors of our folders: held while this process lives
_ship_names: list[str] = []
_jvm_pid: int | None = None
_registered = False
#: Seconds the JVM gets to run its shutdown hooks at exit before it is killed (see :func:`_stop`).
_GRACE_S = 0.5


def folder(prefix: str, *, shipped: bool = False) -> str:
    """A new temp folder, removed when this process exits normally.

    ``shipped``: the folder is attached to jobs as ``python.files``, which Flink zips per job
    into ``flink-distributed-cache-*/<name>.zip`` in the JVM's temp folder.
    """
    global _registered
    with _lock:
        if not _registered:
            reclaim_stale()
            atexit.register(_clean, os.getpid())
            _registered = True
    path = tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-")
    held = _hold(path)
    with _lock:
        _folders.append(path)
        if held is not None:
            _held.append(held)
        if shipped:
            _ship_names.append(Path(path).name + ".zip")
    return path


@contextlib.contextmanager
def jvm_tmpdir() -> Iterator[None]:
    """While PyFlink launches its gateway JVM: ``java.io.tmpdir`` in a folder of this process.

    PyFlink's launcher puts ``JVM_ARGS`` first on the java command line (whitespace-split, so
    a folder whose path has a space is not offered: Flink then writes to the default).
    """
    path = folder("durable_nb-jvm-")
    old = os.environ.get("JVM_ARGS")
    if any(c.isspace() for c in path):
        yield
        return
    os.environ["JVM_ARGS"] = f"-Djava.io.tmpdir={path} {old or ''}".strip()
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("JVM_ARGS", None)
        else:
            os.environ["JVM_ARGS"] = old


def adopt_jvm(gateway: Any) -> None:
    """Stop the gateway's JVM at exit if it is a child of this process (durable_nb launched it)."""
    global _jvm_pid
    import psutil

    try:
        pid = int(gateway.jvm.java.lang.ProcessHandle.current().pid())
        if psutil.Process(pid).ppid() == os.getpid():
            _jvm_pid = pid
    except Exception:  # no pid to stop: the folders are removed all the same
        _jvm_pid = None
    _hook_kernel_shutdown()


def _hook_kernel_shutdown() -> None:
    """In a Jupyter kernel: stop the JVM and remove the folders when the kernel is asked to shut down.

    Why: ipykernel answers a shutdown request by terminating its child processes, waiting for them,
    before it exits; the JVM spends seconds in Flink's shutdown hooks, and Jupyter, which waits 2.5 s
    for a kernel to exit, then sent the kernel SIGTERM: the exit hook never ran, the JVM outlived the
    kernel, and the ~25 MB of each session stayed in the temp folder. ``do_shutdown`` is ipykernel's
    documented place for what a kernel does when its frontend shuts it down.
    """
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    kernel = getattr(shell, "kernel", None)
    original = getattr(kernel, "do_shutdown", None)
    if original is None or getattr(original, "_durable_nb", False):
        return
    if type(kernel).__module__.startswith("ipykernel.inprocess"):
        return  # its shutdown does not end this process, whose later jobs need the JVM
    owner = os.getpid()

    def do_shutdown(restart: bool) -> Any:
        _clean(owner)
        return original(restart)

    do_shutdown._durable_nb = True  # type: ignore[attr-defined]
    kernel.do_shutdown = do_shutdown  # type: ignore[union-attr]


def _hold(path: str) -> int | None:
    """An ``flock`` on the folder for this process's life: proof to later sessions that its owner lives."""
    if fcntl is None:
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:  # the pid in the name still guards the folder
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # a file system without flock: the pid in the name still guards the folder
        pass
    return fd


#: The folders :func:`folder` makes for Flink (``<prefix><pid>-<random>``); older durable_nb's had no pid.
_STALE = re.compile(r"durable_nb-(?:ship|checkpoints|jvm)-(\d{1,10})-[A-Za-z0-9_]+\Z")


def reclaim_stale() -> None:
    """Remove the scratch folders of this user's durable_nb processes that died without their exit hook.

    Why: a kernel SIGKILLed (nbval, ``shutdown_kernel(now=True)``, the OOM killer) or SIGTERMed left its
    ~25 MB for good. Only a folder proven stale goes: its name is one of ours with a pid, it is a real
    folder of this user, no process has that pid here and no process (one in another pid namespace
    sharing this temp folder included) holds its lock.
    """
    import psutil

    if fcntl is None:
        return
    tmp = tempfile.gettempdir()
    try:
        names = os.listdir(tmp)
    except OSError:
        return
    for name in names:
        match = _STALE.match(name)
        if match is None or psutil.pid_exists(int(match[1])):
            continue
        path = os.path.join(tmp, name)
        try:
            info = os.lstat(path)
            if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
                continue
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises while its owner lives
            if os.path.samestat(os.fstat(fd), os.lstat(path)):
                shutil.rmtree(path, ignore_errors=True)
        except OSError:
            pass
        finally:
            os.close(fd)


def _forget() -> None:
    """In a forked child: the parent's folders and JVM are not its own (nor their locks: closed, not unlocked)."""
    global _registered, _jvm_pid
    for fd in _held:
        with contextlib.suppress(OSError):
            os.close(fd)
    _held.clear()
    _folders.clear()
    _ship_names.clear()
    _jvm_pid = None
    _registered = False


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget)


def _clean(owner: int) -> None:
    """Stop the JVM we launched and remove the folders; once (a kernel's shutdown, then its exit hook)."""
    global _jvm_pid
    if os.getpid() != owner:  # a forked child inherits the hook: its exit is not its parent's
        return
    _remove_shipped_zips()  # where a user's own java.io.tmpdir put them; ours goes whole below
    if _jvm_pid is not None:
        _stop(_jvm_pid)
        _jvm_pid = None
    with _lock:
        paths, held = list(_folders), list(_held)
        _folders.clear()
        _held.clear()
        _ship_names.clear()
    for path in paths:
        shutil.rmtree(path, ignore_errors=True)
    for fd in held:
        with contextlib.suppress(OSError):
            os.close(fd)


def _stop(pid: int) -> None:
    """End the JVM and wait for it: a short grace for its shutdown hooks, then SIGKILL.

    Closing Py4J's side ends the gateway server, whose main then calls ``System.exit`` (SIGTERM too,
    should it not). The grace is short on purpose: Flink's ``FileCache`` hook waits its full 5 s for
    a cleanup task scheduled an hour ahead, all it would delete lies in our folder, and before this
    module the JVM died mid-shutdown with the process anyway (every script's exit is not held up).
    """
    import psutil

    try:
        jvm = psutil.Process(pid)
        _disconnect()
        jvm.terminate()
        try:
            jvm.wait(timeout=_GRACE_S)
        except psutil.TimeoutExpired:
            jvm.kill()
            jvm.wait(timeout=5)
    except (psutil.Error, OSError):  # already gone, or not ours to wait for
        pass


def _disconnect() -> None:
    """Tell Py4J the JVM is going: its finalizers at interpreter exit would otherwise try, and log, to reach it."""
    import pyflink.java_gateway as jg

    from . import compat

    if compat.gateway_started():
        with contextlib.suppress(Exception):
            jg.get_gateway().shutdown()


def _remove_shipped_zips() -> None:
    """Flink's per-job zips of our package, in a JVM's temp folder that is not ours to remove."""
    from . import compat

    if not _ship_names or not compat.gateway_started():
        return
    try:
        import pyflink.java_gateway as jg

        tmp = Path(str(jg.get_gateway().jvm.java.lang.System.getProperty("java.io.tmpdir")))
        for cache in tmp.glob("flink-distributed-cache-*"):
            entries = [entry.name for entry in cache.iterdir()]
            if len(entries) == 1 and entries[0] in _ship_names:
                shutil.rmtree(cache, ignore_errors=True)
    except Exception:  # the JVM is already gone: nothing more to find
        pass
