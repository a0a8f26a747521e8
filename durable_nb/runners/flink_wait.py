"""Waiting for a Flink job's rows so that Ctrl-C (a kernel interrupt) stops the job promptly.

Why this exists: ``execute_and_collect`` hands rows back through Py4J, a blocking
socket read in the thread that iterates. CPython runs signal handlers only in the
main thread, but a process-directed SIGINT may be delivered to any thread that does
not block it (POSIX leaves the choice to the kernel; a script or a Jupyter kernel
has several threads). When another thread takes it, the C handler only sets a flag,
and a main thread blocked in that read waits for the next row or the end of the job:
Ctrl-C was ignored for as long as a record took. Here the read runs in a helper
thread, and the main thread waits on a queue with a short timeout, so it returns to
the interpreter (which runs a pending handler) several times a second.

On ``KeyboardInterrupt`` (or any other exception in the waiting thread) the job is
cancelled by closing the collect iterator (Flink cancels a job whose collect
iterator is closed) and the interrupt goes on. The journal needs nothing more:
calls in flight stay PENDING and the next map replays, reconciles or re-executes
them by the replay rules.

On a running cluster the job is cancelled only once none of its tasks is still
starting (or after ``START_WAIT_S``): Flink 2.3's collect sink, cancelled while it
deploys or initializes, throws a NullPointerException in its ``close()``
(FLINK-39330) that the TaskManager treats as fatal. One Ctrl-C right after a job
was submitted shut down the TaskManager, and every other job it ran with it.
"""

from __future__ import annotations

import contextlib
import json
import queue
import threading
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

from . import compat

POLL_S = 0.1
"""Seconds the main thread waits for a row before it looks at pending signals again."""
CANCEL_WAIT_S = 10.0
"""Seconds an interrupted wait gives the helper thread to see the job cancelled."""
START_WAIT_S = 30.0
"""Seconds a cancel waits for a cluster job's tasks to finish starting (see the module docstring)."""
STARTING = ("CREATED", "SCHEDULED", "DEPLOYING", "INITIALIZING")
"""Task states before RUNNING: the collect sink is not safe to cancel in them on a cluster."""
ENDED = ("FINISHED", "CANCELED", "FAILED", "SUSPENDED")
"""Job states after which there is nothing left to wait for."""

_ROW, _END, _ERROR = "row", "end", "error"


class _Collector(threading.Thread):
    """Runs ``execute_and_collect`` and its blocking reads; hands each row (or the error) to the main thread."""

    def __init__(self, stream: Any, job_name: str, rest: tuple[str, int] | None = None) -> None:
        super().__init__(name=f"durable_nb collect {job_name}", daemon=True)
        self.stream = stream
        self.job_name = job_name
        self.rest = rest
        self.items: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._iterator: Any = None
        self._cancelled = False

    def run(self) -> None:
        try:
            iterator = self.stream.execute_and_collect(self.job_name)
            with self._lock:
                self._iterator = iterator
                cancelled = self._cancelled
            with iterator as rows:  # closing cancels the job if it still runs
                if cancelled:  # interrupted while the job was being submitted
                    self._before_cancel(iterator)
                else:
                    for wire in rows:
                        self.items.put((_ROW, wire))
        except BaseException as exc:  # handed to the main thread, which raises it there
            self.items.put((_ERROR, exc))
        else:
            self.items.put((_END, None))

    def cancel(self) -> None:
        """Close the iterator (Flink cancels the job) and give the thread a bounded time to end.

        The close runs in a thread of its own: on a cluster it first waits (up to ``START_WAIT_S``,
        silently) for the job's tasks to start, and a second Ctrl-C meanwhile stopped that wait in
        this thread before the close, so the job ran on in the cluster. Now it only ends this wait.
        """
        with self._lock:
            self._cancelled = True
            iterator = self._iterator
        if iterator is not None and self.is_alive():
            threading.Thread(target=self._close, args=(iterator,), name=f"durable_nb cancel {self.job_name}",
                             daemon=True).start()
        # Interrupted while the job was being submitted, this thread waits for its tasks to start.
        deadline = time.monotonic() + CANCEL_WAIT_S + (START_WAIT_S if self.rest is not None else 0.0)
        while self.is_alive() and time.monotonic() < deadline:
            self.join(POLL_S)  # back to the interpreter between polls: a second Ctrl-C ends the wait at once

    def _close(self, iterator: Any) -> None:
        """Cancel the job: wait for its tasks to start (on a cluster), then close its collect iterator."""
        try:
            self._before_cancel(iterator)
        finally:
            with contextlib.suppress(Exception):  # the job may have ended meanwhile; the interrupt matters
                iterator.close()

    def _before_cancel(self, iterator: Any) -> None:
        """Before the job is cancelled: on a cluster, wait until its tasks have started (module docstring)."""
        if self.rest is not None:
            wait_until_started(self.rest, compat.collect_job_id(iterator))


def wait_until_started(rest: tuple[str, int], job_id: str | None) -> None:
    """Return once the job runs and none of its tasks is starting (or it ended, or ``START_WAIT_S`` passed).

    Asks the cluster's REST API (``/jobs/<id>``). A job still initializing, or restarting, waits too.
    """
    if job_id is None:
        return
    host, port = rest
    host = f"[{host}]" if ":" in host else host  # an IPv6 address, as parse_jobmanager left it
    deadline = time.monotonic() + START_WAIT_S
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://{host}:{port}/jobs/{job_id}", timeout=5) as resp:
                job = json.load(resp)
        except Exception:  # the cluster does not answer: cancelling is all that is left
            return
        counts = job.get("status-counts") or {}
        if job.get("state") in ENDED:
            return
        # Before RUNNING (INITIALIZING, RESTARTING) its tasks are about to start: their counts say nothing yet.
        if job.get("state") == "RUNNING" and not any(counts.get(state) for state in STARTING):
            return
        time.sleep(POLL_S)


def collected(stream: Any, job_name: str, rest: tuple[str, int] | None = None) -> Iterator[Any]:
    """The rows of ``stream.execute_and_collect(job_name)``; an interrupt while waiting cancels the job.

    Errors of the job are raised here, in the caller's thread, as they would be by
    iterating ``execute_and_collect`` directly. ``rest``: ``(host, port)`` of the
    cluster the job runs on, to cancel it only once its tasks have started.
    """
    collector = _Collector(stream, job_name, rest)
    collector.start()
    finished = False
    try:
        while True:
            kind, value = _next_item(collector.items)  # a pending SIGINT raises KeyboardInterrupt in there
            if kind != _ROW:
                break
            yield value
        finished = True
        if kind == _ERROR:
            raise value
    finally:
        if not finished:  # interrupted (or the caller stopped early): the job must not run on
            collector.cancel()


def _next_item(items: queue.SimpleQueue[tuple[str, Any]]) -> tuple[str, Any]:
    """The next item, returning to the interpreter every ``POLL_S`` so that a pending SIGINT is raised.

    A loop of its own: on CPython 3.11 a KeyboardInterrupt raised at the ``continue`` of
    an ``except queue.Empty:`` inside ``collected``'s try/finally skipped the finally,
    so the job was never cancelled (raised here, it reaches ``collected`` at this call).
    """
    while True:
        try:
            return items.get(timeout=POLL_S)
        except queue.Empty:
            pass
