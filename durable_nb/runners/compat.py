"""Every use of a private PyFlink detail, in one place, each with the public API it stands in for.

Checked on apache-flink 2.3.0 (PyFlink 2.3.0, its pinned cloudpickle 2.2.1).
When PyFlink grows the missing public API, the shim here is the only line to
change; nothing else in durable_nb touches a private PyFlink name.

What is *not* here because a public API serves:

* Remote clusters: ``execution.target: remote`` with ``rest.address`` /
  ``rest.port`` and ``pipeline.jars`` (public configuration) replace building a
  Java ``RemoteStreamEnvironment`` from ``Configuration._j_configuration``.
* Modules already pickled by value: cloudpickle's public
  ``list_registry_pickle_by_value()`` replaces ``_is_registered_pickle_by_value``
  (see :func:`durable_nb.runners.flink_env.pickled_by_value`).
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable, Iterator
from typing import Any

#: The PyFlink version every shim below was checked against.
CHECKED_ON = "2.3.0"

_WORKER_MODE_VAR = "_python_worker_execution_mode"


def gateway_started() -> bool:
    """Whether this process already launched PyFlink's gateway JVM.

    Missing public API: PyFlink has ``get_gateway()`` (which *starts* the JVM) but
    no way to ask whether it is running; we need to know, to start it exactly once
    with its stdout pointed away from the notebook. Reads the module global
    ``pyflink.java_gateway._gateway`` (PyFlink 2.3.0).
    """
    import pyflink.java_gateway as jg

    return jg._gateway is not None


@contextlib.contextmanager
def process_workers() -> Iterator[None]:
    """Python workers as separate processes, even on the local mini-cluster, for envs built inside.

    Missing public API: on a local deployment PyFlink runs Python functions in
    "loopback" mode (threads of the client process, i.e. of the notebook kernel),
    so a crashing action would kill the kernel instead of failing a task. The
    only switch is the environment variable ``_python_worker_execution_mode``,
    read by ``StreamExecutionEnvironment.__init__`` (``_open``) in PyFlink 2.3.0
    (its own test harness, ``pyflink.testing.test_case_utils``, sets it the same way).
    """
    old = os.environ.get(_WORKER_MODE_VAR)
    os.environ[_WORKER_MODE_VAR] = "process"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(_WORKER_MODE_VAR, None)
        else:
            os.environ[_WORKER_MODE_VAR] = old


def failure_cause(java_trace: str) -> str:
    """The most useful line of a failed job's Py4J/Java error text.

    Missing public API: ``execute_and_collect`` raises a ``Py4JJavaError`` whose
    text is a Java stack trace with the Python worker's traceback embedded in it;
    PyFlink exposes no structured cause. The last ``module.Error: message`` line is
    the Python exception, else the innermost ``Caused by:``. Trace format of Flink
    2.3.0.
    """
    python_errors = re.findall(r"^(\w[\w.]*: [^\n]*)$", java_trace, re.MULTILINE)
    if python_errors and not python_errors[-1].endswith("Traceback (most recent call last):"):
        return _unwrapped_async(python_errors[-1])
    # An exception without a message (a bare KeyboardInterrupt) ends its traceback without ": ".
    bare = re.findall(r"Traceback \(most recent call last\):\n(?:[ \t][^\n]*\n)+(\w[\w.]*)$", java_trace,
                      re.MULTILINE)
    if bare:
        return bare[-1]
    if python_errors:
        return python_errors[-1]
    java_causes = re.findall(r"Caused by: ([^\n]+)", java_trace)
    if java_causes:
        return java_causes[-1]
    lines = java_trace.strip().splitlines()
    return lines[0] if lines else "unknown error"


def _unwrapped_async(line: str) -> str:
    """The error inside PyFlink's async I/O wrapper (``concurrency > 1``), as ``Type: message``.

    PyFlink 2.3 reports an ``async_invoke`` failure as ``Exception: ("Error happens inside the class
    '...' during handling input '<the record's line, base64>'", Inner('message'))``: the record's
    bytes, then the one part that says what went wrong.
    """
    inner = re.search(r"""^Exception: \("Error happens inside the class .*", (\w[\w.]*)\((['"])(.*)\2\)\)$""", line)
    return f"{inner.group(1)}: {inner.group(3)}" if inner else line


def marked_message(java_trace: str, marker: str) -> str | None:
    """The message a worker raised after ``marker`` (a setup problem), found in a Java trace.

    Missing public API: as for :func:`failure_cause`, the worker's exception only
    reaches the client as text inside the Java trace (escaped newlines included).
    """
    found = re.search(re.escape(marker) + r"\s*(.+?)(?:\\n|\n|$)", java_trace)
    return found.group(1).strip() if found else None


_bundle_callbacks: list[Callable[[], None]] = []


def on_bundle_finish(callback: Callable[[], None]) -> Callable[[], None]:
    """Call ``callback`` in this Python worker at the end of every bundle; returns the unregister function.

    Used to flush held-back journal writes (the store's durable boundary) at the
    point Flink itself treats as one: a bundle ends before every checkpoint barrier
    (the Java operator's ``prepareSnapshotPreBarrier`` waits for it), so every
    outcome of a record processed before a checkpoint is durable when the
    checkpoint completes, and so before the collect sink hands its row to the notebook.

    Missing public API: user functions get ``open``/``close`` but no bundle or
    snapshot hook. ``StatefulOperation.finish`` (module
    ``pyflink.fn_execution.datastream.process.operations``, PyFlink 2.3.0; both
    the Cython and the pure-Python Beam operations call it at each bundle's end)
    and ``AsyncOperation.finish`` (module ``...process.async_function.operation``: it
    first waits for the records still in flight, then the callbacks run) are
    wrapped once per worker process.
    """
    from pyflink.fn_execution.datastream.process import operations
    from pyflink.fn_execution.datastream.process.async_function import operation as async_operation

    for cls in (operations.StatefulOperation, async_operation.AsyncOperation):
        if not getattr(cls.finish, "_durable_nb_wrapped", False):
            cls.finish = _then_bundle_callbacks(cls.finish)
    _bundle_callbacks.append(callback)

    def unregister() -> None:
        with contextlib.suppress(ValueError):
            _bundle_callbacks.remove(callback)

    return unregister


def _then_bundle_callbacks(original: Callable[[Any], None]) -> Callable[[Any], None]:
    def finish(self: Any) -> None:
        original(self)
        for hook in list(_bundle_callbacks):
            hook()

    finish._durable_nb_wrapped = True  # type: ignore[attr-defined]
    return finish


def sources_that_do_not_rewind(stream: Any) -> list[str]:
    """The names of the sources upstream of ``stream`` that keep no position in checkpoints.

    Missing public API: a DataStream does not say where it comes from. Such a source
    (PyFlink's ``from_collection`` is an ``InputFormatSourceFunction``) starts again
    from its first element after a failover while keyed state is restored, so the
    per-key sequence numbers that name runs go on counting. Reads the Java
    transformation graph: legacy sources whose function is not a ``CheckpointedFunction``.
    """
    from pyflink.java_gateway import get_gateway

    checkpointed = get_gateway().jvm.java.lang.Class.forName(
        "org.apache.flink.streaming.api.checkpoint.CheckpointedFunction")
    found: list[str] = []
    seen: set[int] = set()
    pending = [stream._j_data_stream.getTransformation()]
    while pending:
        transformation = pending.pop()
        if transformation.getId() in seen:
            continue
        seen.add(transformation.getId())
        legacy = transformation.getClass().getSimpleName() == "LegacySourceTransformation"
        if legacy and not checkpointed.isInstance(transformation.getOperator().getUserFunction()):
            found.append(str(transformation.getName()))
        pending.extend(transformation.getInputs())
    return found


def configured(env: Any, key: str) -> str | None:
    """The value ``env`` holds for the option ``key`` (None when unset).

    Missing public API: a StreamExecutionEnvironment takes options (``configure``) but
    does not give them back. ``durable_process`` reads ``execution.target`` and
    ``rest.address`` to refuse a SQLite journal for a cluster on another machine, as
    ``FlinkRunner`` does from its ``jobmanager=``.
    """
    value = env._j_stream_execution_environment.getConfiguration().toMap().get(key)
    return None if value is None else str(value)


def collect_job_id(iterator: Any) -> str | None:
    """The id of the job an ``execute_and_collect`` iterator reads, or None when it cannot be read.

    Missing public API: PyFlink's ``CloseableIterator`` hides the ``JobClient`` that Java's
    ``executeAndCollectWithClient`` hands out. The Java ``CollectResultIterator`` keeps it in
    its fetcher (private fields ``fetcher`` and ``jobClient`` in Flink 2.3.0), read here by
    reflection. :mod:`durable_nb.runners.flink_wait` needs the id to see the job's tasks
    before it cancels the job.
    """
    try:
        fetcher = _private_field(iterator._j_closeable_iterator, "fetcher")
        return str(_private_field(fetcher, "jobClient").getJobID().toString())
    except Exception:  # another Flink, or no client yet: the caller cancels without looking
        return None


def _private_field(obj: Any, name: str) -> Any:
    field = obj.getClass().getDeclaredField(name)
    field.setAccessible(True)
    return field.get(obj)
