"""Where Flink jobs run: Java, the gateway JVM, shipping code to workers, and the job's configuration.

Over 400 lines because the environment, the store's spec and the shipping of code are one job's setup.

The job (what runs per record) is :mod:`.flink_job`; this module prepares its ground:

* :func:`check_java` - Flink 2.x needs Java 11+; a clear :class:`FlinkSetupError` otherwise.
* :func:`gateway` - PyFlink's one JVM per process, started once, its stdout in a log folder.
* :func:`prepare` - what every durable job needs on its environment, whoever
  built it: Python workers as processes started with this interpreter
  (``sys.executable``), and a copy of the ``durable_nb`` package attached with
  ``python.files``, so workers need no install of their own beyond apache-flink.
* :func:`environment` - the mini-cluster, or a running cluster through the public
  remote settings (``execution.target: remote``, ``rest.address``, ``rest.port``).
* :class:`StoreSpec` - how a worker reopens the store; SQLite is refused for a cluster
  on other machines (its WAL is not safe on network filesystems: use PostgreSQL).
* :func:`user_modules_by_value` - ship the user's own modules inside the job (private PyFlink: :mod:`.compat`).
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import os
import pickle
import re
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cloudpickle

from ..errors import DurableError
from ..journal.store import Store
from ..journal.usercode import is_user_module
from . import compat, flink_scratch

__all__ = ["EnvOptions", "FlinkJobError", "FlinkSetupError", "StoreSpec", "check_java", "environment", "gateway",
           "prepare", "store_spec", "user_modules_by_value"]

#: Flink 2.x runs on Java 11, 17 and 21.
MIN_JAVA = 11
INSTALL_HINT = "FlinkRunner needs apache-flink: pip install 'durable_nb[flink]'"
#: Prefix of a setup problem a worker raises; found again in the Java trace by the client.
SETUP_MARKER = "durable_nb-flink-setup:"
#: Bytes of results Flink's collect sink carries back in one batch, so the largest row: at its 2 MB default
#: a bigger result failed the whole job (every row lost); a row over this is a FAILED row (flink_worker).
COLLECT_MAX = 256 << 20
_PG_HINT = (
    "A SQLite journal is for one machine (its WAL is not safe on a network filesystem, so a shared "
    "disk is no answer): journal in PostgreSQL, e.g. "
    "FlinkRunner(dnb.PostgresStore('postgresql://user@db-host:5432/journal'), jobmanager=...)."
)


class FlinkSetupError(DurableError):
    """Flink cannot run these actions here: Java missing or too old, or a store the workers cannot reach."""


class FlinkJobError(DurableError):
    """The Flink job failed for good (its restart attempts were used up); the cause is in the message."""


# ---------------------------------------------------------------- Java and PyFlink


def require_pyflink() -> None:
    try:
        import pyflink
    except ImportError:
        raise ImportError(INSTALL_HINT) from None
    # PyFlink's modules (and Apache Beam, which PyFlink imports when a job is built)
    # emit deprecation warnings about their own internals at import time; they say
    # nothing about the user's code, so they are imported here, quietly, once.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import pyflink.datastream
        import pyflink.fn_execution  # noqa: F401


def _java_executable() -> str | None:
    """The java PyFlink will launch: ``$JAVA_HOME/bin/java``, else ``java`` on PATH."""
    home = os.environ.get("JAVA_HOME")
    if home:
        candidate = Path(home) / "bin" / "java"
        return str(candidate) if candidate.exists() else None
    return shutil.which("java")


@functools.cache
def _java_version(java: str) -> tuple[int, str]:
    proc = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60)
    text = (proc.stderr or "") + (proc.stdout or "")
    match = re.search(r'version "(\d+)(?:\.(\d+))?', text)
    if not match:
        raise FlinkSetupError(f"could not read the Java version from `{java} -version`: {text.strip()[:200]!r}")
    major = int(match.group(1))
    if major == 1 and match.group(2):  # "1.8.0_392" is Java 8
        major = int(match.group(2))
    return major, text.strip().splitlines()[0]


def check_java() -> str:
    """Return the java executable Flink will use; raise :class:`FlinkSetupError` if it is missing or < 11."""
    java = _java_executable()
    if java is None:
        where = f"JAVA_HOME={os.environ['JAVA_HOME']!r} has no bin/java" if os.environ.get("JAVA_HOME") \
            else "no `java` on PATH and JAVA_HOME is not set"
        raise FlinkSetupError(
            f"FlinkRunner needs Java {MIN_JAVA}+ ({where}). Install a JDK/JRE 17 "
            f"(e.g. `apt-get install openjdk-17-jre-headless`) or point JAVA_HOME at one."
        )
    major, banner = _java_version(java)
    if major < MIN_JAVA:
        raise FlinkSetupError(
            f"FlinkRunner needs Java {MIN_JAVA}+, but {java} is {banner!r}. Install Java 17 and put it "
            f"first on PATH or set JAVA_HOME."
        )
    return java


def log_dir() -> str:
    """Where the client JVM writes Flink's logs: FLINK_LOG_DIR, else a per-user temp folder (0700).

    The temp folder's name is predictable and the temp folder is shared: another local user could
    create it first (or a symlink by that name) and read, or redirect through planted symlinks,
    what the JVM writes there. A folder by that name that is not a real folder of this user is
    not used: a new private one is, with a warning.
    """
    if os.environ.get("FLINK_LOG_DIR"):
        os.makedirs(os.environ["FLINK_LOG_DIR"], exist_ok=True)
        return os.environ["FLINK_LOG_DIR"]
    uid = os.getuid() if hasattr(os, "getuid") else 0
    path = os.path.join(tempfile.gettempdir(), f"durable_nb-flink-logs-{uid}")
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    st = os.lstat(path)
    if not hasattr(os, "getuid") or (stat.S_ISDIR(st.st_mode) and st.st_uid == uid):
        if stat.S_IMODE(st.st_mode) & 0o077:
            os.chmod(path, 0o700)  # made 0755 by an older durable_nb: its logs stay this user's
        return path
    private = tempfile.mkdtemp(prefix=f"durable_nb-flink-logs-{uid}-")
    warnings.warn(
        f"{path} is not a folder of this user (another user or a symlink put it there), so Flink's logs go "
        f"to {private} instead. Remove it, or set FLINK_LOG_DIR to a folder of yours.", UserWarning, stacklevel=2)
    return private


_gateway_lock = threading.Lock()


def gateway() -> Any:
    """PyFlink's one JVM per process, started with its stdout in the log folder, not the notebook.

    ipykernel forwards whatever the kernel's file descriptor 1 receives into the
    notebook, and PyFlink's launcher lets the JVM inherit it; pointing fd 1 at a
    log file just while the JVM is spawned keeps Flink's output out of cells.
    Every job of the process (FlinkRunner, ``durable_process``, plain PyFlink)
    then shares this JVM. Its temp folder (``java.io.tmpdir``, where Flink's local
    mode writes) is one this process removes at exit, with the JVM stopped first
    (:mod:`.flink_scratch`): the mini-cluster's files outlived every session otherwise.
    """
    require_pyflink()
    import pyflink.java_gateway as jg

    with _gateway_lock:
        if not compat.gateway_started():
            check_java()
            logs = log_dir()
            os.environ["FLINK_LOG_DIR"] = logs
            launching = "PYFLINK_GATEWAY_PORT" not in os.environ  # else the JVM that started us: not ours
            sys.stdout.flush()
            saved = os.dup(1)
            try:
                with open(os.path.join(logs, "client-jvm.out"), "ab") as sink:
                    os.dup2(sink.fileno(), 1)
                    with flink_scratch.jvm_tmpdir() if launching else contextlib.nullcontext():
                        jg.get_gateway()
            finally:
                os.dup2(saved, 1)
                os.close(saved)
            if launching:
                flink_scratch.adopt_jvm(jg.get_gateway())
    return jg.get_gateway()


@functools.cache
def _checkpoint_dir() -> str:
    return flink_scratch.folder("durable_nb-checkpoints-")  # removed at exit, as the ship folder


@functools.cache
def shipped_package() -> str:
    """A folder holding a copy of this ``durable_nb`` package, attached to jobs with ``python.files``.

    Flink puts the attached folder on the workers' ``sys.path``, so the package
    must sit *inside* it. Copied once per process, so every job of this session
    ships the code the notebook runs; removed when the process exits (:mod:`.flink_scratch`),
    when no job of this process can still need it.
    """
    here = Path(__file__).resolve().parent.parent  # the durable_nb package
    dest = Path(flink_scratch.folder("durable_nb-ship-", shipped=True))
    shutil.copytree(here, dest / "durable_nb", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return str(dest)


def flink_python_jar() -> str:
    """The flink-python jar: TaskManagers of a plain cluster lack Flink's Python runtime without it."""
    from .flink_cluster import flink_home

    jars = sorted((flink_home() / "opt").glob("flink-python*.jar"))
    if not jars:
        raise FlinkSetupError(f"no flink-python jar in {flink_home() / 'opt'}; reinstall apache-flink")
    return str(jars[0])


# ---------------------------------------------------------------- the environment


@dataclass(frozen=True)
class EnvOptions:
    """What a durable job's environment is configured with."""

    checkpoint_interval_ms: int = 500
    restart_attempts: int = 3
    restart_delay_ms: int = 500
    python_executable: str = sys.executable
    """The interpreter Flink starts workers with: this one, right for a cluster sharing this machine."""
    address: tuple[str, int] | None = None
    """``(host, rest port)`` of a running cluster, or None for the local mini-cluster."""


def environment(options: EnvOptions) -> Any:
    """A StreamExecutionEnvironment for ``options``, prepared by :func:`prepare`.

    A running cluster is reached through Flink's public remote-execution settings:
    ``execution.target: remote``, ``rest.address``, ``rest.port`` (applied with
    ``configure``: ``get_execution_environment`` itself resets the target to local).
    """
    from pyflink.common import Configuration
    from pyflink.datastream import StreamExecutionEnvironment

    gateway()
    conf = Configuration()
    conf.set_string("restart-strategy.type", "fixed-delay")
    conf.set_string("restart-strategy.fixed-delay.attempts", str(options.restart_attempts))
    conf.set_string("restart-strategy.fixed-delay.delay", f"{options.restart_delay_ms} ms")
    conf.set_string("execution.checkpointing.interval", f"{options.checkpoint_interval_ms} ms")
    conf.set_string("collect-sink.batch-size.max", f"{COLLECT_MAX}b")  # 2 MB by default: see COLLECT_MAX
    if options.address is None:
        # Checkpoints in files, not in the JobManager's memory (capped at 5 MB a state):
        # a map over a million keys keeps a million sequence numbers. A cluster keeps its own setting.
        conf.set_string("execution.checkpointing.dir", Path(_checkpoint_dir()).as_uri())
    with compat.process_workers():
        env = StreamExecutionEnvironment.get_execution_environment(conf)
    if options.address is not None:
        host, port = options.address
        probe_jobmanager(host, port)
        remote = Configuration()
        remote.set_string("execution.target", "remote")
        remote.set_string("rest.address", host)
        remote.set_string("rest.port", str(port))
        env.configure(remote)
        env.add_jars(Path(flink_python_jar()).as_uri())
    prepare(env, options.python_executable)
    return env


def prepare(env: Any, python_executable: str | None = None) -> Any:
    """Make ``env`` able to run durable actions: worker interpreter and the shipped package.

    Idempotent enough to call on a user's environment: ``python.files`` gains the
    same folder each time. Returns ``env``.
    """
    from pyflink.common import Configuration

    conf = Configuration()
    conf.set_string("python.executable", python_executable or sys.executable)
    conf.set_string("python.client.executable", sys.executable)
    env.configure(conf)
    env.add_python_file(shipped_package())
    return env


def parse_jobmanager(text: str) -> tuple[str, int]:
    """``(host, port)`` of ``"host:port"`` or of the web UI's ``"http://host:port/"``: read as ``host:port``, that
    URL's host was ``"http://localhost"``, no loopback name, and a SQLite journal was refused as "on another machine".
    """
    where = text.strip()
    scheme, sep, rest = where.partition("://")
    if sep:
        if scheme.lower() != "http":
            raise ValueError(f"jobmanager must be 'host:port' of the cluster's REST endpoint (or its "
                             f"http:// address), got {text!r}")
        where = rest.rstrip("/")
    host, sep, port = where.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"jobmanager must be 'host:port' of the cluster's REST endpoint, got {text!r}")
    return host.strip("[]"), int(port)


def is_this_machine(host: str) -> bool:
    """Whether ``host`` names this machine (loopback or its own name): a cluster that shares our disk.

    A name other than ``localhost`` and this machine's own is looked up: an alias in ``/etc/hosts``
    (``127.0.0.1 runsc``, ``localhost.localdomain``) named this machine and was refused a SQLite
    journal as "another machine". The job's client resolves the name anyway to reach the cluster.
    """
    host = host.strip().strip("[]")  # "[::1]", as a URL or rest.address may bracket it
    if host.rstrip(".").lower() in {name.lower() for name in ("localhost", socket.gethostname(), socket.getfqdn())}:
        return True  # host names are case-insensitive
    try:
        addresses = [ipaddress.ip_address(host)]
    except ValueError:
        addresses = _resolved(host)
    if not addresses:
        return False
    # One of this machine's own interface addresses (a cluster started with its LAN address) is this machine too;
    # a link-local one is compared without its "%interface" scope, on either side.
    import psutil

    own = {a.address.split("%")[0] for addrs in psutil.net_if_addrs().values() for a in addrs}
    return all(_own_address(address, own) for address in addresses)


def _own_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address, own: set[str]) -> bool:
    mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:127.0.0.1 is 127.0.0.1
    if mapped is not None:
        address = mapped
    return address.is_loopback or address.is_unspecified or str(address).split("%")[0] in own


def _resolved(name: str) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """The addresses ``name`` resolves to; none if it does not resolve (then it is no name of this machine)."""
    if not name or any(c.isspace() or c in "%/" for c in name):
        return []
    try:
        infos = socket.getaddrinfo(name, None)
    except (OSError, UnicodeError):
        return []
    return [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]


def remote_host(env: Any) -> str | None:
    """The host of the cluster ``env`` submits to (``execution.target: remote``) if it is another machine, else None."""
    try:
        target, host = compat.configured(env, "execution.target"), compat.configured(env, "rest.address")
    except Exception:  # the options could not be read (another PyFlink): nothing to refuse
        return None
    remote = (target or "").lower() == "remote"  # Flink picks its remote executor ignoring case
    return host if remote and host and not is_this_machine(host) else None


def probe_jobmanager(host: str, port: int) -> None:
    """Fail in seconds with the address in the message, not after Flink's client retries for a minute."""
    import json
    import urllib.request

    url = f"http://{host}:{port}/overview"
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            json.load(resp)
    except Exception as exc:
        raise FlinkSetupError(
            f"no Flink JobManager answers at {host}:{port} ({type(exc).__name__}: {exc}); jobmanager= "
            f"takes the host and REST port of a running cluster (rest.port, 8081 by default)."
        ) from exc


# ---------------------------------------------------------------- the store, seen from a worker


@dataclass(frozen=True)
class StoreSpec:
    """How a worker reopens the notebook's store: a SQLite path, or a pickled store object."""

    sqlite_path: str | None
    """The journal file of a SqliteStore, checked before the store is reopened."""
    pickled: bytes = field(repr=False)  # it holds the DSN, password included
    """The store itself (its path or DSN and its settings, such as ``durability``)."""
    client_host: str

    def open(self) -> Store:
        # Unpickling a SqliteStore would *create* an empty journal on a worker that
        # cannot see the notebook's file: durable in name only. Refuse instead.
        if self.sqlite_path is not None and not os.path.exists(self.sqlite_path):
            raise RuntimeError(
                f"{SETUP_MARKER} the journal {self.sqlite_path} (created on {self.client_host}) does not "
                f"exist on Flink worker {socket.gethostname()}. {_PG_HINT}"
            )
        store: Store = pickle.loads(self.pickled)
        return store


def store_spec(store: Store, *, remote_host: str | None = None) -> StoreSpec:
    """The spec workers reopen ``store`` from; ``remote_host``: the cluster is on another machine."""
    from ..stores.memory import MemoryStore
    from ..stores.sqlite import SqliteStore

    if isinstance(store, MemoryStore):
        raise FlinkSetupError(
            "FlinkRunner cannot use a MemoryStore: it lives in this process, and Flink runs actions in "
            "worker processes that would each journal into their own, forgotten, copy. Use "
            "SqliteStore('path/journal.db') on this machine's mini-cluster, or a PostgresStore for a "
            "cluster."
        )
    if isinstance(store, SqliteStore) and remote_host is not None:
        raise FlinkSetupError(
            f"FlinkRunner: the cluster at {remote_host} runs on another machine, and the journal "
            f"{store.path} is a SQLite file on this one. {_PG_HINT}"
        )
    if isinstance(store, SqliteStore) and store.read_only:
        # Every record's run would fail to open in the workers: a job failed after its restarts, 12 s later.
        raise FlinkSetupError(
            f"FlinkRunner: the journal {store.path} is open read-only ({store.read_only}): no worker could "
            f"journal a run in it. Open it writable: dnb.SqliteStore({str(store.path)!r})."
        )
    loopback = _machine_local_db_host(store) if remote_host is not None else None
    if loopback is not None:
        raise FlinkSetupError(
            f"FlinkRunner: the cluster at {remote_host} runs on another machine, and the journal {store!r} is "
            f"reached at {loopback!r}, which on each TaskManager is that machine itself: its workers would not "
            f"reach this PostgreSQL (or would journal into another one). Name the database server by an address "
            f"the TaskManagers reach, e.g. dnb.PostgresStore('postgresql://user@db-host:5432/journal')."
        )
    path = str(store.path) if isinstance(store, SqliteStore) else None
    try:
        return StoreSpec(path, cloudpickle.dumps(store), socket.gethostname())
    except Exception as exc:
        raise FlinkSetupError(
            f"FlinkRunner: the store {store!r} cannot be pickled to reach the Flink workers ({exc})."
        ) from exc


def _machine_local_db_host(store: Store) -> str | None:
    """The host of a PostgresStore's DSN that names the machine it is read on (loopback, a socket folder), or None.

    Why: workers reopen the store from its DSN on their own machine, so ``localhost`` there is not the
    notebook's database; a SQLite file on a remote cluster was refused, this one failed every task later.
    """
    target = getattr(store, "target", None)
    if target is None or not any(c.__name__ == "PostgresStore" for c in type(store).__mro__):  # psycopg unloaded
        return None
    for host in _connected_hosts(str(target.host), str(getattr(store, "dsn", ""))):
        host = host.strip().strip("[]")
        if not host or host.startswith(("/", "@")) or host.rstrip(".").lower() == "localhost":
            return host or "localhost"
        try:
            if ipaddress.ip_address(host.split("%")[0]).is_loopback:
                return host
        except ValueError:
            continue
    return None


def _connected_hosts(hosts: str, dsn: str) -> list[str]:
    """The addresses libpq connects to: each ``hostaddr`` given, else its ``host`` (paired by position).

    Why: ``host`` only names the server (TLS, auth) where a ``hostaddr`` is given: ``hostaddr=10.0.0.5``
    alone (host: ``localhost`` by default) was refused, and ``host=db hostaddr=127.0.0.1`` let through.
    """
    try:
        from psycopg.conninfo import conninfo_to_dict

        addrs = str(conninfo_to_dict(dsn).get("hostaddr") or "").split(",")
    except Exception:  # not readable here: the host alone, as before
        addrs = []
    names = hosts.split(",")
    return [addrs[i].strip() if i < len(addrs) and addrs[i].strip() else names[min(i, len(names) - 1)]
            for i in range(max(len(names), len(addrs)))]


# ---------------------------------------------------------------- the user's code, by value


def pickled_by_value(module_name: str) -> bool:
    """Whether cloudpickle already ships ``module_name`` (or a parent package) by value."""
    registered = cloudpickle.list_registry_pickle_by_value()
    parts = module_name.split(".")
    return any(".".join(parts[:i]) in registered for i in range(1, len(parts) + 1))


@contextlib.contextmanager
def user_modules_by_value() -> Iterator[None]:
    """Ship the user's own modules' code inside the job while it is being built.

    Workers import installed packages themselves, but not a ``helpers.py`` next to
    the notebook, nor a test module: cloudpickle would pickle their functions by
    reference and the workers would fail with ``ModuleNotFoundError``. Every
    imported module whose file lies outside the interpreter's installation is
    registered for pickling by value until the job graph is built, then unregistered,
    so journal payloads written by this process are unaffected.
    """
    registered = []
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None)
        if not path or name == "__main__" or not path.endswith(".py"):
            continue
        if not is_user_module(name) or pickled_by_value(name):
            continue
        try:
            cloudpickle.register_pickle_by_value(module)
        except ValueError:  # a module object not (or no longer) in sys.modules under its own name
            continue
        registered.append(module)
    try:
        yield
    finally:
        for module in registered:
            with contextlib.suppress(ValueError):
                cloudpickle.unregister_pickle_by_value(module)

