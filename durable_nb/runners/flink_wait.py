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
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterator
from typing import Any

POLL_S = 0.1
"""Seconds the main thread waits for a row before it looks at pending signals again."""
CANCEL_WAIT_S = 10.0
"""Seconds an interrupted wait gives the helper thread to see the job cancelled."""

_ROW, _END, _ERROR = "row", "end", "error"


class _Collector(threading.Thread):
    """Runs ``execute_and_collect`` and its blocking reads; hands each row (or the error) to the main thread."""

    def __init__(self, stream: Any, job_name: str) -> None:
        super().__init__(name=f"durable_nb collect {job_name}", daemon=True)
        self.stream = stream
        self.job_name = job_name
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
                if not cancelled:  # interrupted while the job was being submitted
                    for wire in rows:
                        self.items.put((_ROW, wire))
        except BaseException as exc:  # handed to the main thread, which raises it there
            self.items.put((_ERROR, exc))
        else:
            self.items.put((_END, None))

    def cancel(self) -> None:
        """Close the iterator (Flink cancels the job) and give the thread a bounded time to end."""
        with self._lock:
            self._cancelled = True
            iterator = self._iterator
        if iterator is not None and self.is_alive():
            with contextlib.suppress(Exception):  # the job may have ended meanwhile; the interrupt matters
                iterator.close()
        self.join(CANCEL_WAIT_S)


def collected(stream: Any, job_name: str) -> Iterator[Any]:
    """The rows of ``stream.execute_and_collect(job_name)``; an interrupt while waiting cancels the job.

    Errors of the job are raised here, in the caller's thread, as they would be by
    iterating ``execute_and_collect`` directly.
    """
    collector = _Collector(stream, job_name)
    collector.start()
    finished = False
    try:
        while True:
            try:
                kind, value = collector.items.get(timeout=POLL_S)
            except queue.Empty:
                continue  # back in the interpreter: a pending SIGINT raises KeyboardInterrupt here
            if kind == _ROW:
                yield value
                continue
            finished = True
            if kind == _ERROR:
                raise value
            return
    finally:
        if not finished:  # interrupted (or the caller stopped early): the job must not run on
            collector.cancel()
