"""``FlinkRunner`` and ``durable_process``: durable actions as a keyed PyFlink job.

Over 400 lines because FlinkRunner and durable_process share its checks and job stages.

Thin on purpose, like :mod:`durable_nb.runners.local`: this module decides only
*where* actions run (Flink task slots, in Python worker processes) and *how they
reach the store* (reopened once per worker). Every replay decision is made by
:mod:`durable_nb.journal.replay` through the ``RunnerContext`` each action gets
from :func:`~durable_nb.journal.context.open_run`. The ground the job runs on
(Java, the gateway, shipping code, configuration) is
:mod:`durable_nb.runners.flink_env`.

The job ``FlinkRunner.map`` builds::

    FileSource(records file), parallelism 1          # one text line per record, checkpointed offset
      -> key_by(the line's key field)                 # keys computed in the notebook
      -> KeyedProcessFunction, parallelism p          # seq = ValueState per key
           run_id = run_id_for(action, key, seq)      # the same ids LocalRunner.map uses
           open_run(store, run_id) -> action(record, ctx)
      -> execute_and_collect                          # back to the notebook, deduplicated

Why it is shaped this way:

* Records reach the workers through a *source*, not inside the job graph: the
  notebook writes them (pickled, base64, one per line) to a file under
  ``records_dir`` and a FLIP-27 ``FileSource`` streams it. Worker memory then
  does not grow with the number of records or tasks. The file must be readable
  by the JobManager and TaskManagers: a temp folder is right for the local
  mini-cluster and a cluster on this machine; for a cluster on other machines pass
  ``records_dir=`` a folder they all mount (the records are written once and only
  read, so a network filesystem is fine for them - unlike a SQLite journal), or
  read your own source (Kafka, files in object storage, a database) with
  :func:`durable_process`.
* The per-key sequence number lives in Flink keyed state, and the source position
  is checkpointed with it (FileSource is a FLIP-27 source; on recovery it skips
  the lines before the checkpoint). A job restored from a checkpoint therefore
  reprocesses each record under the same run id, and its durable calls replay.
* The source has parallelism 1 so that every key sees its records in input order,
  attempt after attempt: that is what makes ``seq`` deterministic.
* The collect sink is exactly-once with checkpointing on, and the notebook keeps
  the first row per record anyway: each record comes back once whatever failed over.
* One store per worker, opened in ``open()``, and a record's run end is not a
  durable boundary of its own: the worker flushes held-back journal writes at the
  end of each Flink bundle, and Flink ends a bundle before every checkpoint
  barrier, so what a checkpoint covers (and the rows it releases to the
  notebook) is durable. A first-time record costs one commit, its PENDING.
  What runs in the worker is :mod:`durable_nb.runners.flink_worker`.
* ``concurrency=N`` splits the KeyedProcessFunction in two, chained in the same
  worker: one counts ``seq``, then Flink's async I/O runs up to N records at once
  (each key's records still in order); see :mod:`durable_nb.runners.flink_concurrent`.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cloudpickle

from ..errors import warn_at_user_code
from ..journal import faults
from ..journal.context import check_open_run_id
from ..journal.history import check_flag
from ..journal.records import RunStatus
from ..journal.store import Store
from ..stores import open_store
from . import compat, map_warnings, worker_warnings
from .flink_concurrent import check_concurrency, durable_stage, positive_int
from .flink_env import (
    SETUP_MARKER,
    EnvOptions,
    FlinkJobError,
    FlinkSetupError,
    check_java,
    environment,
    is_this_machine,
    log_dir,
    parse_jobmanager,
    prepare,
    remote_host,
    require_pyflink,
    store_spec,
    user_modules_by_value,
)
from .flink_wait import collected
from .flink_worker import (
    KeyText,
    MapJob,
    Shipped,
    StreamJob,
    line_key,
    map_element,
    stream_element,
    write_records,
)
from .local import Action, check_action, check_strict, default_run_id
from .mapping import GroupedKey, Key, action_name, key_name, key_of, keys_of, records_of
from .progress import MapProgress
from .rows import MapRow

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["FlinkJobError", "FlinkRunner", "FlinkSetupError", "check_java", "durable_process"]


def durable_process(stream: Any, action: Action, *, key: Key, store: Any, strict: bool = False,
                    concurrency: int = 1, parallelism: int | None = None) -> Any:
    """Put a durable action into any PyFlink DataStream; return the DataStream of its results.

    ``key_by(key)`` then a KeyedProcessFunction that runs ``action(record, ctx)``
    in a durable run per record, with the run ids and replay rules of
    :class:`FlinkRunner` (``run_id_for(action, key, seq)``, ``seq`` counted per key in
    Flink keyed state, so a job restored from a checkpoint replays its calls). Each
    output element is a :class:`~durable_nb.runners.rows.MapRow`
    ``(key, run_id, status, result, error)``; an action that raises gives a FAILED row,
    a crash fails the task (Flink restarts it and the journal replays).

    Args:
        stream: any DataStream (any source). Its records must be picklable.
        action: ``action(record, ctx)``, as for ``FlinkRunner.map``.
        key: a field name of the records, a function of a record, or a ``KeySelector`` (its ``get_key`` alone).
        store: a :class:`Store` or URL the workers can reach (a ``PostgresStore`` for a
            cluster on other machines, a SQLite file for the local mini-cluster).
        strict: a replay mismatch raises ``NonDeterminismError`` instead of discarding.
        concurrency: records run at once in each parallel instance, as
            ``FlinkRunner(concurrency=...)``: each key's records still one after
            another, in order. For actions that wait on a model or an API.
        parallelism: of the durable operator(s); None keeps the environment's. With
            ``concurrency > 1`` the stage is two chained operators: set it here, not on
            the returned stream (a different parallelism there is refused when the job
            is built, because it would split a key's records between instances).

    Run ids count the records of each key in the order they reach this operator:
    for ids that are stable across attempts (and equal to ``LocalRunner.map``'s), feed
    it from a parallelism-1 stream or a source that keeps each key's records in order
    (a Kafka partition per key, for instance), and checkpoint that source.

    The environment gets what durable actions need (:func:`~durable_nb.runners.flink_env.prepare`:
    worker interpreter and the shipped ``durable_nb`` package). Build it with
    :func:`durable_nb.flink.environment` for Python workers as processes on the local
    mini-cluster; a default local environment runs them in threads of this process.
    """
    from pyflink.common import Types

    check_action(action, sync=False)  # runs in a worker, where no event loop runs
    check_strict(strict)
    if key is None:
        raise ValueError("durable_process needs key=: a field name of the records or a function of a record")
    key = _key_function(key)
    check_concurrency(concurrency)
    if parallelism is not None:
        positive_int("parallelism", parallelism, "instances of the durable stage; None keeps the environment's")
    faults.warn_out_of_reach("durable_process")  # an inject_crash around the build reaches no worker
    with compat.process_workers():  # a new env wrapper starts loopback workers in this process otherwise
        env = stream.get_execution_environment()
    resolved = open_store(store)
    job = StreamJob(action, action_name(action), key, store_spec(resolved, remote_host=remote_host(env)), strict)
    check_shippable("durable_process", f"the action {job.name!r}", action)  # before PyFlink's bare error
    if callable(key):
        check_shippable("durable_process", f"the key function {getattr(key, '__qualname__', key)!r}", key)
    prepare(env)  # configures the env fetched above: no new env wrapper, so no loopback workers to keep out
    _warn_unrewound(stream)
    with user_modules_by_value():  # the action and key function are pickled here
        keyed = stream.key_by(KeyText(key), key_type=Types.STRING())
        return durable_stage(keyed, stream_element, job, concurrency, parallelism).name(f"durable {job.name}")


def _key_function(key: Any) -> Key:
    """A PyFlink ``KeySelector`` as the function of a record it stands for; any other key as given.

    Why: ``key_by`` takes one, so a PyFlink user passes one here too; it is not callable (its
    ``get_key`` is), and was read as a field name: every record failed the job with "no field".
    """
    from pyflink.datastream.functions import KeySelector

    return key.get_key if isinstance(key, KeySelector) else key


def _warn_unrewound(stream: Any) -> None:
    """Say so when the stream comes from a source a failover would send again from its start."""
    try:
        names = compat.sources_that_do_not_rewind(stream)
    except Exception:  # the graph could not be read (another PyFlink): nothing to say
        return
    if names:
        warn_at_user_code(
            f"durable_process: the source {', '.join(map(repr, names))} keeps no position in Flink's checkpoints "
            f"(PyFlink's from_collection is such a source): after a failover it sends every element again "
            f"while keyed state keeps the count of those already processed, so they come back as new runs "
            f"(key#1) and their durable calls run again. Read a source that rewinds with the checkpoint "
            f"(FileSource, Kafka) when the pipeline must survive a failover.", UserWarning)


# ---------------------------------------------------------------- the runner


class FlinkRunner:
    """Runs actions as a PyFlink keyed job; the journal makes failover replay, not redo.

    Args:
        store: a :class:`Store` (not a ``MemoryStore``: workers are other processes),
            a URL/path for :func:`open_store`, or None for ``.durable/journal.db``.
            A cluster on other machines needs a ``PostgresStore``.
        parallelism: parallel instances of the action operator (task slots used).
        checkpoint_interval_ms: how often Flink checkpoints the source position and
            the per-key sequence numbers; records after the last checkpoint are
            reprocessed on failover (and replay from the journal).
        jobmanager: ``"host:port"`` of a running cluster's REST endpoint (or its web UI's
            ``"http://host:port"``); None runs
            a local mini-cluster inside this process's JVM.
        strict: a replay mismatch raises ``NonDeterminismError`` (a FAILED row)
            instead of discarding the rest of the run.
        progress: show a progress bar (``tqdm.auto``) on ``map`` (off by default): records done,
            replayed, failed, and the rate.
        restart_attempts: fixed-delay restarts before the job fails for good.
        restart_delay_ms: pause between restarts.
        python_executable: the interpreter Flink starts workers with; this one
            (``sys.executable``) by default, right for a cluster sharing this machine.
        records_dir: where ``map`` writes its records file for the source; a temp
            folder by default. The JobManager and TaskManagers must be able to read it.
        concurrency: records run at once in each parallel instance (Flink async I/O
            and a thread pool in the worker); records of one key still run one after
            another, in order. 1 (the default) runs them one after another; more pays
            for actions that wait on a model or an API.
    """

    def __init__(
        self,
        store: Store | str | os.PathLike[str] | None = None,
        parallelism: int = 2,
        checkpoint_interval_ms: int = 500,
        jobmanager: str | None = None,
        *,
        strict: bool = False,
        progress: bool = False,
        restart_attempts: int = 3,
        restart_delay_ms: int = 500,
        python_executable: str | None = None,
        records_dir: str | os.PathLike[str] | None = None,
        concurrency: int = 1,
    ) -> None:
        require_pyflink()
        check_java()
        positive_int("parallelism", parallelism, "parallel instances of the action, task slots used")
        self.concurrency = check_concurrency(concurrency)
        positive_int("checkpoint_interval_ms", checkpoint_interval_ms, "milliseconds between checkpoints, >= 10")
        if checkpoint_interval_ms < 10:
            raise ValueError(f"checkpoint_interval_ms must be >= 10, got {checkpoint_interval_ms}")
        check_strict(strict)
        check_flag("progress", progress)
        if jobmanager is not None and not isinstance(jobmanager, str):
            raise TypeError(f"jobmanager must be 'host:port' (a str) or None for the local mini-cluster, "
                            f"got {type(jobmanager).__name__} {jobmanager!r}")
        # "" (an unset environment variable) is refused by parse_jobmanager, not read as "the mini-cluster".
        address = parse_jobmanager(jobmanager) if jobmanager is not None else None
        self.store = open_store(store)
        self.jobmanager = jobmanager
        """``"host:port"`` of the cluster's REST endpoint, or None for a local mini-cluster."""
        remote = address[0] if address is not None and not is_this_machine(address[0]) else None
        self._store_spec = store_spec(self.store, remote_host=remote)
        self.parallelism = parallelism
        self.checkpoint_interval_ms = checkpoint_interval_ms
        self.strict = strict
        self.progress = progress
        self.restart_attempts = restart_attempts
        self.restart_delay_ms = restart_delay_ms
        # Absolute: the source reads it as a file:// URI, and the JobManager and TaskManagers would
        # resolve a relative folder against their own working folders ("recs" failed with a ValueError).
        self.records_dir = Path(records_dir).expanduser().absolute() if records_dir is not None else None
        if self.records_dir is not None and not self.records_dir.is_dir():
            raise FlinkSetupError(f"FlinkRunner: records_dir {str(self.records_dir)!r} is not a folder; pass a "
                                  f"folder that exists and that the JobManager and TaskManagers can read.")
        self._options = EnvOptions(
            checkpoint_interval_ms, restart_attempts, restart_delay_ms,
            python_executable or EnvOptions.python_executable, address,
        )
        self.python_executable = self._options.python_executable
        self.reexecuted: list[tuple[str, int, str]] = []
        """``(run_id, index, call_id)`` of the durable calls the last ``map`` or ``run`` executed again: in flight
        (PENDING) when a worker died, with no reconciler, so what they do may have been done twice. Why: the
        workers' own words reach Flink's log only; the notebook's ``--runner flink`` cells say "ran again"."""

    def __repr__(self) -> str:
        where = f"jobmanager={self.jobmanager!r}" if self.jobmanager else "mini-cluster"
        more = f", concurrency={self.concurrency}" if self.concurrency != 1 else ""
        return f"FlinkRunner({self.store!r}, parallelism={self.parallelism}{more}, {where})"

    # -- public API -------------------------------------------------------------

    def map(
        self, action: Action, records: Any, *, key: Key = None, progress: bool | None = None
    ) -> pd.DataFrame:
        """One run per record, as a Flink job; a DataFrame ``[key, run_id, status, result, error]`` in input order.

        Run ids are the ones ``LocalRunner.map`` uses, so a map started on one
        runner recovers on the other. A record whose action raises is a FAILED
        row; a crash fails the task and Flink restores it from the last
        checkpoint, where its durable calls replay from the journal.
        ``progress`` (default: the runner's) shows records done / replayed / failed.
        """
        from ..journal.frames import map_frame

        check_action(action, sync=False)
        if progress is not None:  # before the job: progress="no" would show a bar
            check_flag("progress", progress)
        faults.warn_out_of_reach("FlinkRunner")
        items = records_of(records, key)
        keys = keys_of(items, key)
        name = action_name(action)
        if not items:
            return map_frame(key_name(key), [])
        # A GroupedKey's groups run in one worker each, in input order (AgentRunner: one key's memory).
        groups = [key_of(record, key.group, i) for i, record in enumerate(items)] \
            if isinstance(key, GroupedKey) else None
        job = MapJob(action, name, self._store_spec, self.strict)
        show = self.progress if progress is None else progress
        shipped = self._execute(job, items, keys, f"durable_nb map {name}", show, groups)
        return map_frame(key_name(key), [MapRow.from_wire(keys[i], s.wire) for i, s in enumerate(shipped)])

    def run(self, action: Action, value: Any = None, *, run_id: str | None = None) -> Any:
        """Run ``action(value, ctx)`` as one run in a Flink job; return its result or raise its exception.

        As with ``LocalRunner.run``, the default run id derives from the action and
        the input, so running it again (on either runner) replays the journal.
        """
        check_action(action, sync=False)
        faults.warn_out_of_reach("FlinkRunner")
        rid = run_id if run_id is not None else default_run_id(action, value)
        check_open_run_id(rid)  # before the job: "" named another run in the worker
        job = MapJob(action, action_name(action), self._store_spec, self.strict, run_id=rid)
        # No record key (ctx.key is None), as in LocalRunner.run: the run id is not a key.
        (shipped,) = self._execute(job, [value], [None], f"durable_nb run {rid}", False)
        row = MapRow.from_wire(None, shipped.wire)
        if row.status is RunStatus.COMPLETED:
            return row.result
        if row.exception is not None:
            raise row.exception
        raise FlinkJobError(f"run {rid!r} ended {row.status.value} in Flink: {row.error}")

    # -- the job ---------------------------------------------------------------

    def _execute(self, job: MapJob, records: list[Any], keys: list[Any], job_name: str,
                 show: bool, groups: list[Any] | None = None) -> list[Shipped]:
        self.reexecuted = []
        check_shippable("FlinkRunner", f"the action {job.name!r}", job.action)  # before Flink's Java stack trace
        folder = Path(tempfile.mkdtemp(prefix="durable_nb-records-", dir=self.records_dir))
        path = folder / f"{uuid.uuid4().hex}.txt"
        try:
            with user_modules_by_value():  # records, the action and its helpers: the user's modules by value
                write_records(path, records, keys, groups)
                stream = self._build(job, path)
            shipped = _collect(stream, job_name, len(records), self.restart_attempts, show, self._options.address)
            self.reexecuted = [(s.wire[0], index, call_id) for s in shipped for index, call_id in s.again]
            return shipped
        finally:
            path.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                folder.rmdir()

    def _build(self, job: MapJob, path: Path) -> Any:
        from pyflink.common import Types, WatermarkStrategy
        from pyflink.datastream.connectors.file_system import FileSource, StreamFormat

        env = environment(self._options)
        env.set_parallelism(1)  # source and key selector: one ordered stream (see module docstring)
        source = FileSource.for_record_stream_format(StreamFormat.text_line_format(), path.as_uri()).build()
        keyed = (
            env.from_source(source, WatermarkStrategy.no_watermarks(), "records").set_parallelism(1)
            .key_by(line_key, key_type=Types.STRING())
        )
        return durable_stage(keyed, map_element, job, self.concurrency, self.parallelism).name(job.name)


def _collect(stream: Any, job_name: str, n: int, attempts: int, show: bool,
             rest: tuple[str, int] | None = None) -> list[Shipped]:
    """Run the job and gather one outcome per record (the first, whatever failed over); ``rest``: the cluster's."""
    rows: dict[int, Shipped] = {}
    bar = MapProgress(n, job_name, enabled=show)
    try:
        for wire in collected(stream, job_name, rest):  # Ctrl-C while it waits cancels the job (see flink_wait)
            shipped = Shipped(*wire)
            if shipped.index not in rows:
                rows[shipped.index] = shipped
                bar.record(shipped.status, replayed=shipped.replayed)
    except Exception as exc:
        raise job_error(exc, job_name, attempts, rest) from exc
    finally:
        bar.close()
    missing = [i for i in range(n) if i not in rows]
    if missing:
        raise FlinkJobError(f"{job_name}: the job ended without results for records {missing[:10]}")
    with map_warnings.summed() as warned:  # one per record of a kind would flood the notebook
        for shipped in rows.values():
            if shipped.warned:
                warned.run_id = shipped.wire[0]
                worker_warnings.warn_again(shipped.warned)
    return [rows[i] for i in range(n)]


def check_shippable(who: str, what: str, value: Any) -> None:
    """A ``TypeError`` naming ``what`` (the action, the key function) when it cannot be pickled for the workers.

    Why here: PyFlink pickles functions itself while the job graph is built, and its
    bare ``cannot pickle '_thread.lock' object`` names neither the function nor the fix.
    """
    with user_modules_by_value():
        try:
            size = len(cloudpickle.dumps(value))
        except Exception as exc:
            raise TypeError(
                f"{who}: {what} cannot be pickled to ship it to the Flink workers "
                f"({type(exc).__name__}: {exc}). Keep open files, connections and locks out of its closure "
                f"and globals; open them inside the function instead."
            ) from exc
        if size > SHIP_WARN:
            _warn_large(who, what, value, size)


SHIP_WARN = 32 << 20
"""Above this pickled size a function is warned about: 150 MB ran the client JVM out of heap."""


def _warn_large(who: str, what: str, value: Any, size: int) -> None:
    """Name the big values a function carries: Flink's bare ``OutOfMemoryError: Java heap space`` named none.

    Why: the function travels inside the job graph, which the client JVM copies into every
    operator's configuration on each job; a large object it closes over costs seconds per job
    and, past the JVM's heap, fails the job with an error that names neither it nor the fix.
    """
    code = getattr(value, "__code__", None)
    cells = dict(zip(code.co_freevars, value.__closure__ or (), strict=False)) if code is not None else {}
    held = {name: cell.cell_contents for name, cell in cells.items() if cell.cell_contents is not None}
    scope = getattr(value, "__globals__", {})
    held.update({name: scope[name] for name in getattr(code, "co_names", ()) if name in scope})
    sizes = {}
    for name, obj in held.items():
        with contextlib.suppress(Exception):
            sizes[name] = len(cloudpickle.dumps(obj))
    big = [f"{name!r} ({n / 2**20:.0f} MB)" for name, n in sorted(sizes.items(), key=lambda kv: -kv[1])[:3]
           if n > size // 4]
    warn_at_user_code(
        f"{who}: {what} pickles to {size / 2**20:.0f} MB" + (f", mostly {', '.join(big)}" if big else "")
        + ": it travels inside the job graph, copied by the client JVM on every job (seconds each; past its "
        "heap the job fails with java.lang.OutOfMemoryError: Java heap space). Load large data inside the "
        "action instead (once per worker: a functools.cache'd loader), or pass it in the records.", UserWarning)


def job_error(exc: Exception, job_name: str, attempts: int, rest: tuple[str, int] | None = None) -> Exception:
    """Turn a Py4J/Java failure into one readable error; setup problems keep their own class.

    On a cluster (``rest``) the workers' logs are the TaskManagers', seen from its web UI: this
    machine's ``FLINK_LOG_DIR`` holds only the client's.
    """
    text = str(exc)
    setup = compat.marked_message(text, SETUP_MARKER)
    if setup:
        return FlinkSetupError(setup)
    cause = compat.failure_cause(text) if text.strip() else type(exc).__name__
    logs = (f"the TaskManagers' logs, in the cluster's web UI (http://{rest[0]}:{rest[1]})" if rest is not None
            else os.environ.get("FLINK_LOG_DIR", log_dir()))
    return FlinkJobError(
        f"Flink job {job_name!r} failed (after up to {attempts} restart(s)): {cause[:500].rstrip('.')}. "
        f"Flink's logs: {logs}"
    )
