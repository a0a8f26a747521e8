"""durable_nb's warnings given in a Flink worker, carried to the notebook with the record's row.

Why: a worker is another process; a warning it gives (``UnserializableResultWarning``,
``NonDeterminismWarning``, ...) would only reach Flink's log, while the same map on
``LocalRunner`` shows it in the notebook. :func:`collecting` gathers them per record
(a context variable: records running at once in threads keep theirs apart) through a
``warnings.showwarning`` hook the worker installs once; :func:`warn_again` gives them
in the notebook, under their own class.
"""

from __future__ import annotations

import contextlib
import contextvars
import warnings
from collections.abc import Iterator
from typing import Any

from .. import errors

Relayed = tuple[tuple[str, str], ...]
"""``(warning class name, message)`` of each warning a record's run gave."""

_collected: contextvars.ContextVar[list[tuple[str, str]] | None] = contextvars.ContextVar(
    "durable_nb_worker_warnings", default=None)
_installed = False


def install() -> None:
    """Send durable_nb's warnings given while :func:`collecting` to the record instead of the log (once per process)."""
    global _installed
    if _installed:
        return
    shown = warnings.showwarning

    def relay(message: Any, category: type[Warning], *args: Any, **kwargs: Any) -> None:
        sink = _collected.get()
        if sink is not None and category.__module__ == errors.__name__:
            sink.append((category.__name__, str(message)))
            return
        shown(message, category, *args, **kwargs)

    warnings.showwarning = relay
    _installed = True


@contextlib.contextmanager
def collecting() -> Iterator[list[tuple[str, str]]]:
    """The warnings given inside, as ``(class name, message)``."""
    sink: list[tuple[str, str]] = []
    token = _collected.set(sink)
    try:
        yield sink
    finally:
        _collected.reset(token)


def warn_again(relayed: Relayed) -> None:
    """Give a worker's warnings in this process, each under its durable_nb class."""
    for name, message in relayed:
        category = getattr(errors, name, None)
        if not (isinstance(category, type) and issubclass(category, Warning)):
            category = UserWarning
        # At the user's map line: a fixed stacklevel pointed at durable_nb's own frames (FlinkRunner._execute).
        errors.warn_at_user_code(f"{message} (in a Flink worker)", category)
