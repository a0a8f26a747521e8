"""``FlinkRunner``: the same durable actions, run as a keyed PyFlink job.

Thin on purpose, like :mod:`durable_nb.runners.local`: this module decides only
*where* actions run (Flink task slots, in Python worker processes) and *how they
reach the store* (the journal file, reopened in each worker). Every replay
decision is made by ``_replay`` through the ``RunnerContext`` each action gets
from :func:`durable_nb._context.open_run`.

The job::

    NumberSequenceSource(0..n-1), parallelism 1      # a checkpointed position, not a list
      -> key_by(keys[i])                              # keys computed in the notebook
      -> KeyedProcessFunction, parallelism p          # seq = ValueState per key
           run_id = run_id_for(action, key, seq)      # the same ids LocalRunner.map uses
           open_run(store, run_id) -> action(record, ctx)
      -> execute_and_collect                          # back to the notebook, deduplicated

Why it is shaped this way:

* The per-key sequence number lives in Flink keyed state, and the source position
  is checkpointed with it (``NumberSequenceSource`` is a FLIP-27 source; the legacy
  ``from_collection`` source restarts from its first element while keyed state is
  restored, which shifts every sequence number). A job restored from a checkpoint
  therefore reprocesses each record under the same run id, and its durable calls
  replay from the journal instead of running again.
* The source has parallelism 1 so that every key sees its records in input order,
  attempt after attempt: that is what makes ``seq`` deterministic.
* The collect sink is exactly-once with checkpointing on, and the notebook keeps
  the first row per record anyway: each record comes back once whatever failed over.
* Python workers run as separate processes (``process`` mode, ``python.executable``
  = this interpreter) even on the local mini-cluster, so a crashing action is a
  failed task that Flink restarts, never a dead notebook kernel.
* Records and the action travel inside the job (cloudpickled), and a copy of the
  ``durable_nb`` package is attached with ``python.files``, so workers need no
  install of their own beyond ``apache-flink``.
"""

from __future__ import annotations

import contextlib
import functools
import os
import pickle
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cloudpickle

from ..errors import DurableError, RunBusyError
from ..journal import codec
from ..journal.context import open_run
from ..journal.store import Store
from ..stores import open_store
from .local import Action, call_action, check_action, default_run_id
from .mapping import Key, action_name, key_name, key_of, records_of, run_id_for

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["FlinkJobError", "FlinkRunner", "FlinkSetupError", "check_java"]

#: Flink 2.x runs on Java 11, 17 and 21.
MIN_JAVA = 11
#: How long a worker waits for a run still leased by an attempt Flink is cancelling.
BUSY_WAIT_S = 60.0
_INSTALL_HINT = "FlinkRunner needs apache-flink: pip install 'durable_nb[flink]'"
_MARKER = "durable_nb-flink-setup:"


class FlinkSetupError(DurableError):
    """Flink cannot run these actions here: Java missing or too old, or a store the workers cannot reach."""


class FlinkJobError(DurableError):
    """The Flink job failed for good (its restart attempts were used up); the cause is in the message."""


# ---------------------------------------------------------------- environment checks


def _require_pyflink() -> None:
    try:
        import pyflink
    except ImportError:
        raise ImportError(_INSTALL_HINT) from None
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


def _log_dir() -> str:
    """Where the client JVM writes Flink's logs: FLINK_LOG_DIR, else a per-user temp folder."""
    path = os.environ.get("FLINK_LOG_DIR") or os.path.join(
        tempfile.gettempdir(), f"durable_nb-flink-logs-{os.getuid() if hasattr(os, 'getuid') else 0}"
    )
    os.makedirs(path, exist_ok=True)
    return path


_gateway_lock = threading.Lock()


def _gateway() -> Any:
    """PyFlink's one JVM per process, started with its stdout in the log folder, not the notebook.

    ipykernel forwards whatever the kernel's file descriptor 1 receives into the
    notebook, and PyFlink's launcher lets the JVM inherit it; pointing fd 1 at a
    log file just while the JVM is spawned keeps Flink's output out of cells.
    """
    _require_pyflink()
    import pyflink.java_gateway as jg

    with _gateway_lock:
        if jg._gateway is None:
            check_java()
            log_dir = _log_dir()
            os.environ["FLINK_LOG_DIR"] = log_dir
            sys.stdout.flush()
            saved = os.dup(1)
            try:
                with open(os.path.join(log_dir, "client-jvm.out"), "ab") as sink:
                    os.dup2(sink.fileno(), 1)
                    jg.get_gateway()
            finally:
                os.dup2(saved, 1)
                os.close(saved)
    return jg.get_gateway()


@functools.cache
def _shipped_package() -> str:
    """A folder holding a copy of this ``durable_nb`` package, attached to jobs with ``python.files``.

    Flink puts the attached folder on the workers' ``sys.path``, so the package
    must sit *inside* it. Copied once per process, so every job of this session
    ships the code the notebook runs.
    """
    here = Path(__file__).resolve().parent
    dest = Path(tempfile.mkdtemp(prefix="durable_nb-ship-"))
    shutil.copytree(here, dest / "durable_nb", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return str(dest)


def _flink_python_jar() -> str:
    from .flink_cluster import flink_home

    jars = sorted((flink_home() / "opt").glob("flink-python*.jar"))
    if not jars:
        raise FlinkSetupError(f"no flink-python jar in {flink_home() / 'opt'}; reinstall apache-flink")
    return str(jars[0])


# ---------------------------------------------------------------- the store, seen from a worker


@dataclass(frozen=True)
class _StoreSpec:
    """How a worker reopens the notebook's store: a SQLite path, or a pickled store object."""

    sqlite_path: str | None
    pickled: bytes | None
    client_host: str

    def open(self) -> Store:
        if self.sqlite_path is not None:
            from ..stores.sqlite import SqliteStore

            # Unpickling a SqliteStore would *create* an empty journal on a worker that
            # cannot see the notebook's file: durable in name only. Refuse instead.
            if not os.path.exists(self.sqlite_path):
                raise RuntimeError(
                    f"{_MARKER} the journal {self.sqlite_path} (created on {self.client_host}) does not "
                    f"exist on Flink worker {socket.gethostname()}; the store must be on a filesystem "
                    f"that every TaskManager sees under the same path."
                )
            return SqliteStore(self.sqlite_path)
        assert self.pickled is not None
        store: Store = pickle.loads(self.pickled)
        return store


def _store_spec(store: Store) -> _StoreSpec:
    from ..stores.memory import MemoryStore
    from ..stores.sqlite import SqliteStore

    if isinstance(store, MemoryStore):
        raise FlinkSetupError(
            "FlinkRunner cannot use a MemoryStore: it lives in this process, and Flink runs actions in "
            "worker processes that would each journal into their own, forgotten, copy. Use "
            "SqliteStore('path/journal.db') (or open_store('sqlite:///path')) on a filesystem the "
            "TaskManagers share."
        )
    if isinstance(store, SqliteStore):
        return _StoreSpec(str(store.path), None, socket.gethostname())
    try:
        return _StoreSpec(None, cloudpickle.dumps(store), socket.gethostname())
    except Exception as exc:
        raise FlinkSetupError(
            f"FlinkRunner: the store {store!r} cannot be pickled to reach the Flink workers ({exc})."
        ) from exc


# ---------------------------------------------------------------- what runs in a worker


@dataclass(frozen=True)
class _Job:
    """Everything a worker needs, shipped once inside the job graph."""

    action: Action
    name: str
    records: list[Any]
    keys: list[Any]
    store: _StoreSpec
    run_id: str | None = None
    """Set for ``FlinkRunner.run``: the one record's explicit run id."""


@contextlib.contextmanager
def _open_run_when_free(store: Store, run_id: str, key: Any) -> Iterator[Any]:
    """``open_run``, waiting while an attempt Flink is cancelling still holds the run's lease.

    After a failover the old attempt's Python worker may still be finishing the
    same record; Flink gives the key to the new attempt, the lease makes it wait
    for the old one rather than interleave journal writes. A lease still held
    after ``BUSY_WAIT_S`` fails the task, and Flink's restart strategy tries again.
    """
    deadline = time.monotonic() + BUSY_WAIT_S
    with contextlib.ExitStack() as stack:
        while True:
            try:
                ctx = stack.enter_context(open_run(store, run_id, key=key))
                break
            except RunBusyError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        yield ctx


_Row = tuple[int, str, str, "bytes | None", "str | None"]


def _process_record(job: _Job, store: Store, index: int, seq: int) -> _Row:
    """One record in a worker: open its run, call the action, report ``(index, run_id, status, payload, error)``.

    An ``Exception`` from the action is the record's FAILED row (``open_run``
    records the run FAILED, as with LocalRunner). Anything else (a crash, a lease
    still busy, a store error) propagates and fails the task: Flink restores it
    from the last checkpoint and the journal replays what was done.
    """
    key = job.keys[index]
    run_id = job.run_id or run_id_for(job.name, key, seq)
    failure: Exception | None = None
    try:
        with _open_run_when_free(store, run_id, key) as ctx:
            try:
                result = call_action(job.action, job.records[index], ctx)
            except Exception as exc:
                failure = exc
                raise
    except Exception as exc:
        if exc is not failure:
            raise
        try:
            payload: bytes | None = cloudpickle.dumps(exc)
        except Exception:
            payload = None  # the notebook still gets the text preview
        return index, run_id, "FAILED", payload, codec.error_preview(exc)
    try:
        return index, run_id, "COMPLETED", codec.dumps(result), None
    except Exception as exc:
        return index, run_id, "FAILED", None, (
            f"the action's result ({type(result).__name__}) cannot be pickled to return it from Flink: {exc}"
        )


def _make_process_function(job: _Job) -> Any:
    """The KeyedProcessFunction; built here because pyflink is imported lazily."""
    from pyflink.common import Types
    from pyflink.datastream import KeyedProcessFunction
    from pyflink.datastream.state import ValueStateDescriptor

    class DurableActionProcess(KeyedProcessFunction):  # type: ignore[misc]
        """seq per key in ValueState; one durable run per record."""

        def __init__(self, job: _Job) -> None:
            self.job = job

        def open(self, runtime_context: Any) -> None:
            self.seq = runtime_context.get_state(ValueStateDescriptor("durable_nb_seq", Types.LONG()))
            self.store = self.job.store.open()

        def close(self) -> None:
            store = getattr(self, "store", None)
            if store is not None:
                store.close()

        def process_element(self, value: int, ctx: Any) -> Iterator[Any]:
            seq = self.seq.value() or 0
            # Updated before the action runs: keyed state is only persisted with a
            # checkpoint, whose barrier comes after this record is fully processed.
            self.seq.update(seq + 1)
            yield _process_record(self.job, self.store, int(value), int(seq))

    return DurableActionProcess(job)


# ---------------------------------------------------------------- the runner


class FlinkRunner:
    """Runs actions as a PyFlink keyed job; the journal makes failover replay, not redo.

    Args:
        store: a :class:`Store` (not a ``MemoryStore``: workers are other processes),
            a URL/path for :func:`open_store`, or None for ``.durable/journal.db``.
        parallelism: parallel instances of the action operator (task slots used).
        checkpoint_interval_ms: how often Flink checkpoints the source position and
            the per-key sequence numbers; records after the last checkpoint are
            reprocessed on failover (and replay from the journal).
        jobmanager: ``"host:port"`` of a running cluster's REST endpoint; None runs
            a local mini-cluster inside this process's JVM.
        restart_attempts: fixed-delay restarts before the job fails for good.
        restart_delay_ms: pause between restarts.
        python_executable: the interpreter Flink starts workers with; this one
            (``sys.executable``) by default, which is right for a local or loopback
            cluster sharing this machine's environment.
    """

    def __init__(
        self,
        store: Store | str | os.PathLike[str] | None = None,
        parallelism: int = 2,
        checkpoint_interval_ms: int = 500,
        jobmanager: str | None = None,
        *,
        restart_attempts: int = 3,
        restart_delay_ms: int = 500,
        python_executable: str | None = None,
    ) -> None:
        _require_pyflink()
        check_java()
        if parallelism < 1:
            raise ValueError(f"parallelism must be >= 1, got {parallelism}")
        if checkpoint_interval_ms < 10:
            raise ValueError(f"checkpoint_interval_ms must be >= 10, got {checkpoint_interval_ms}")
        self.store = open_store(store)
        self._store_spec = _store_spec(self.store)
        self.parallelism = parallelism
        self.checkpoint_interval_ms = checkpoint_interval_ms
        self.jobmanager = jobmanager
        """``"host:port"`` of the cluster's REST endpoint, or None for a local mini-cluster."""
        self._address = _parse_jobmanager(jobmanager) if jobmanager else None
        self.restart_attempts = restart_attempts
        self.restart_delay_ms = restart_delay_ms
        self.python_executable = python_executable or sys.executable

    def __repr__(self) -> str:
        where = f"jobmanager={self.jobmanager!r}" if self.jobmanager else "mini-cluster"
        return f"FlinkRunner({self.store!r}, parallelism={self.parallelism}, {where})"

    # -- public API -------------------------------------------------------------

    def map(self, action: Action, records: Any, *, key: Key = None) -> pd.DataFrame:
        """One run per record, as a Flink job; a DataFrame ``[key, run_id, status, result, error]`` in input order.

        Run ids are the ones ``LocalRunner.map`` uses, so a map started on one
        runner recovers on the other. A record whose action raises is a FAILED
        row; a crash fails the task and Flink restores it from the last
        checkpoint, where its durable calls replay from the journal.
        """
        from ..journal.frames import map_frame

        check_action(action)
        items = records_of(records)
        keys = [key_of(record, key, position) for position, record in enumerate(items)]
        name = action_name(action)
        if not items:
            return map_frame(key_name(key), [])
        job = _Job(action, name, items, keys, self._store_spec)
        rows = self._execute(job, f"durable_nb map {name}")
        return map_frame(
            key_name(key),
            [(keys[i], rid, status, _load(payload) if status == "COMPLETED" else None, error)
             for i, (rid, status, payload, error) in enumerate(rows)],
        )

    def run(self, action: Action, value: Any = None, *, run_id: str | None = None) -> Any:
        """Run ``action(value, ctx)`` as one run in a Flink job; return its result or raise its exception.

        As with ``LocalRunner.run``, the default run id derives from the action and
        the input, so running it again (on either runner) replays the journal.
        """
        check_action(action)
        rid = run_id if run_id is not None else default_run_id(action, value)
        job = _Job(action, action_name(action), [value], [rid], self._store_spec, run_id=rid)
        ((_rid, status, payload, error),) = self._execute(job, f"durable_nb run {rid}")
        if status == "COMPLETED":
            return _load(payload)
        exc = _load(payload) if payload is not None else None
        if isinstance(exc, BaseException):
            raise exc
        raise FlinkJobError(f"run {rid!r} failed in Flink: {error}")

    # -- the job ---------------------------------------------------------------

    def _environment(self) -> Any:
        from pyflink.common import Configuration
        from pyflink.datastream import StreamExecutionEnvironment

        gateway = _gateway()
        conf = Configuration()
        conf.set_string("restart-strategy.type", "fixed-delay")
        conf.set_string("restart-strategy.fixed-delay.attempts", str(self.restart_attempts))
        conf.set_string("restart-strategy.fixed-delay.delay", f"{self.restart_delay_ms} ms")
        conf.set_string("execution.checkpointing.interval", f"{self.checkpoint_interval_ms} ms")
        conf.set_string("python.executable", self.python_executable)
        conf.set_string("python.client.executable", sys.executable)
        if self._address is None:
            # Workers as processes even on the mini-cluster (PyFlink's default there is
            # "loopback": actions in threads of this very process). Read at construction.
            with _env_var("_python_worker_execution_mode", "process"):
                env = StreamExecutionEnvironment.get_execution_environment(conf)
        else:
            host, port = self._address
            _probe_jobmanager(host, port)
            jars = gateway.new_array(gateway.jvm.String, 1)
            jars[0] = _flink_python_jar()  # TaskManagers of a plain cluster lack the Python runtime jar
            j_env_class = gateway.jvm.org.apache.flink.streaming.api.environment.StreamExecutionEnvironment
            j_env = j_env_class.createRemoteEnvironment(host, port, conf._j_configuration, jars)
            with _env_var("_python_worker_execution_mode", "process"):
                env = StreamExecutionEnvironment(j_env)
        env.set_parallelism(1)  # source and key selector: one ordered stream (see module docstring)
        env.add_python_file(_shipped_package())
        return env

    def _execute(self, job: _Job, job_name: str) -> list[tuple[str, str, bytes | None, str | None]]:
        with _user_modules_by_value():
            return self._execute_shipped(job, job_name)

    def _execute_shipped(self, job: _Job, job_name: str) -> list[tuple[str, str, bytes | None, str | None]]:
        from pyflink.common import Types, WatermarkStrategy
        from pyflink.datastream.connectors.number_seq import NumberSequenceSource

        _check_picklable(job)
        env = self._environment()
        keys = [repr(k) for k in job.keys]  # Flink partitions by this text; run ids use the key itself
        source = env.from_source(
            NumberSequenceSource(0, len(job.records) - 1), WatermarkStrategy.no_watermarks(), "records"
        ).set_parallelism(1)
        results = (
            source.key_by(lambda i: keys[i], key_type=Types.STRING())
            .process(_make_process_function(job), output_type=Types.PICKLED_BYTE_ARRAY())
            .name(job.name)
            .set_parallelism(self.parallelism)
        )
        rows: dict[int, tuple[str, str, bytes | None, str | None]] = {}
        try:
            with results.execute_and_collect(job_name) as collected:
                for index, rid, status, payload, error in collected:
                    rows.setdefault(index, (rid, status, payload, error))  # each record once
        except Exception as exc:
            raise _job_error(exc, job_name, self.restart_attempts) from exc
        missing = [i for i in range(len(job.records)) if i not in rows]
        if missing:
            raise FlinkJobError(f"{job_name}: the job ended without results for records {missing[:10]}")
        return [rows[i] for i in range(len(job.records))]


# ---------------------------------------------------------------- helpers


def _load(payload: bytes | None) -> Any:
    return None if payload is None else codec.loads(payload)


def _parse_jobmanager(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"jobmanager must be 'host:port' of the cluster's REST endpoint, got {text!r}")
    return host, int(port)


def _probe_jobmanager(host: str, port: int) -> None:
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


@contextlib.contextmanager
def _env_var(name: str, value: str) -> Iterator[None]:
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


def _installed_roots() -> tuple[str, ...]:
    import site
    import sysconfig

    roots = {sys.prefix, sys.base_prefix, sys.exec_prefix, *site.getsitepackages(), site.getusersitepackages()}
    roots.update(p for p in sysconfig.get_paths().values() if p)
    roots.add(str(Path(__file__).resolve().parent))  # durable_nb travels as a package (python.files)
    return tuple(os.path.join(os.path.realpath(r), "") for r in roots if r)


@contextlib.contextmanager
def _user_modules_by_value() -> Iterator[None]:
    """Ship the user's own modules' code inside the job while it is being built.

    Workers import installed packages themselves, but not a ``helpers.py`` next to
    the notebook, nor a test module: cloudpickle would pickle their functions by
    reference and the workers would fail with ``ModuleNotFoundError``. Every
    imported module whose file lies outside the interpreter's installation is
    registered for pickling by value until the job graph is built, then unregistered,
    so journal payloads written by this process are unaffected.
    """
    roots = _installed_roots()
    registered = []
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None)
        if not path or name == "__main__" or not path.endswith(".py"):
            continue
        if os.path.realpath(path).startswith(roots) or _by_value_already(module):
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


def _by_value_already(module: Any) -> bool:
    check = getattr(cloudpickle.cloudpickle, "_is_registered_pickle_by_value", None)
    return bool(check(module)) if check is not None else False


def _check_picklable(job: _Job) -> None:
    """Fail in the notebook, naming the culprit, before Flink fails with a Java stack trace."""
    try:
        cloudpickle.dumps(job.action)
    except Exception as exc:
        raise TypeError(
            f"FlinkRunner: the action {job.name!r} cannot be pickled to ship it to the Flink workers "
            f"({type(exc).__name__}: {exc}). Keep open files, connections and locks out of its closure "
            f"and globals; open them inside the action instead."
        ) from exc
    try:
        cloudpickle.dumps(job.records)
    except Exception:
        for position, record in enumerate(job.records):
            try:
                cloudpickle.dumps(record)
            except Exception as exc:
                raise TypeError(
                    f"FlinkRunner: record {position} ({type(record).__name__}) cannot be pickled to ship "
                    f"it to the Flink workers ({type(exc).__name__}: {exc}). Records must be plain data."
                ) from exc
        raise


def _job_error(exc: Exception, job_name: str, attempts: int) -> Exception:
    """Turn a Py4J/Java failure into one readable error; setup problems keep their own class."""
    text = str(exc)
    setup = re.search(re.escape(_MARKER) + r"\s*(.+?)(?:\\n|\n|$)", text)
    if setup:
        return FlinkSetupError(setup.group(1).strip())
    # The Python traceback of a failed worker is embedded in the Java one; its last
    # "SomeError: message" line is the cause. Otherwise the innermost Java cause.
    python_errors = re.findall(r"^(\w[\w.]*: [^\n]*)$", text, re.MULTILINE)
    java_causes = re.findall(r"Caused by: ([^\n]+)", text)
    if python_errors:
        cause = python_errors[-1]
    elif java_causes:
        cause = java_causes[-1]
    else:
        cause = (text.strip().splitlines() or [type(exc).__name__])[0]
    return FlinkJobError(
        f"Flink job {job_name!r} failed (after up to {attempts} restart(s)): {cause[:500]}. "
        f"Flink's logs: {os.environ.get('FLINK_LOG_DIR', _log_dir())}"
    )
