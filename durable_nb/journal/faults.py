"""Fault points inside the replay engine, and ``inject_crash`` built on them.

The replay engine announces each instant at which a crash matters
(:data:`POINTS`); a hook may raise there. ``inject_crash`` raises
:class:`SimulatedCrash`, which writes nothing, so the journal it leaves is
exactly what ``kill -9`` at that instant leaves. The SIGKILL tests register a
hook that kills the process at the same points, which is how that equality is
proven.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

from ..errors import SimulatedCrash, warn_at_user_code
from .callid import call_identity

#: Public points: PENDING is durable and the function has not run / the function
#: ran and its outcome is not durable yet.
PUBLIC_POINTS = ("before_call", "after_call")
#: Every point the engine announces; ``before_pending_commit`` is for kill tests.
POINTS = ("before_pending_commit", *PUBLIC_POINTS)

Hook = Callable[[str, str], None]
_hooks: list[Hook] = []
_lock = threading.Lock()
_injections: list[str] = []  # what the active inject_crash blocks crash, for runners whose calls run elsewhere


def fire(point: str, call_id: str) -> None:
    """Called by the replay engine; a no-op unless a hook is installed."""
    if _hooks:
        for hook in list(_hooks):
            hook(point, call_id)


def active_injections() -> list[str]:
    """The active ``inject_crash`` blocks (``"call=... point=..."``), newest last.

    Hooks live in this process: a runner whose actions run in other processes
    (Flink workers) asks this to say that those blocks will crash nothing there.
    """
    with _lock:
        return list(_injections)


def warn_out_of_reach(runner: str) -> None:
    """Warn that the active ``inject_crash`` blocks cannot crash the actions ``runner`` runs in other processes.

    Without it, ``with dnb.inject_crash(...): FlinkRunner(...).map(...)`` crashes
    nothing, silently, and a failover demo "recovers" a job that never failed.
    """
    active = active_injections()
    if active:
        warn_at_user_code(
            f"{', '.join(active)} is active, but {runner} runs the actions in Flink worker processes, which "
            f"it does not reach: no durable call of this job will crash. To provoke a failover, make the "
            f"action itself fail on its first attempt in the worker (raise dnb.SimulatedCrash, or end the "
            f"worker process with os._exit), or crash the run on LocalRunner and recover it on {runner}.",
            UserWarning,
        )


def add_hook(hook: Hook) -> None:
    with _lock:
        _hooks.append(hook)


def remove_hook(hook: Hook) -> None:
    with _lock:
        if hook in _hooks:
            _hooks.remove(hook)


def inject_crash(
    call: str | Callable[..., object], point: str = "after_call", times: int | None = None
) -> AbstractContextManager[None]:
    """Make the durable call with id ``call`` raise :class:`SimulatedCrash` at ``point``.

    ``call`` is a call id (``"mymodule.charge_card"``) or the function itself.
    ``before_call``: PENDING is persisted and the function has not run.
    ``after_call``: the function ran (its side effect happened) and its outcome is
    not persisted: the case reconcilers exist for. Every matching call crashes
    while the block is active (recover after it); ``times=N`` limits that to the
    first N, so that a recovery inside the same block can proceed. Arguments are
    checked here, at the call, not when the block is entered.
    """
    if point not in PUBLIC_POINTS:
        raise ValueError(f"inject_crash: point must be one of {PUBLIC_POINTS}, got {point!r}")
    if callable(call):
        call = call_identity(call)[0]  # the id durable_execute journals it under
    if not isinstance(call, str) or not call:
        raise TypeError(
            f"inject_crash: call must be a call id string such as 'mymodule.charge_card' (or the function), "
            f"got {call!r}"
        )
    if times is not None and (not isinstance(times, int) or times < 1):
        raise ValueError(f"inject_crash: times must be at least 1 (or None for every call), got {times!r}")
    return _crashing(call, point, times)


@contextmanager
def _crashing(call: str, point: str, times: int | None) -> Iterator[None]:
    remaining = [times]
    crashed = [False]
    near: list[str] = []  # ids of calls that ran whose last name parts are ``call``: a short name was meant

    def hook(at: str, call_id: str) -> None:
        if at == point and call_id == call and (remaining[0] is None or remaining[0] > 0):
            if remaining[0] is not None:
                remaining[0] -= 1
            crashed[0] = True
            raise SimulatedCrash(call_id, point)
        if at == point and call_id.endswith("." + call) and call_id not in near:
            near.append(call_id)

    what = f"inject_crash(call={call!r}, point={point!r})"
    add_hook(hook)
    with _lock:
        _injections.append(what)
    try:
        yield
    finally:
        remove_hook(hook)
        with _lock:
            _injections.remove(what)
        if near and not crashed[0]:
            # inject_crash(call="charge_card") for a call journaled as "__main__.charge_card" crashed nothing,
            # silently: the tutorial or test then "recovers" a run that never crashed.
            warn_at_user_code(
                f"inject_crash(call={call!r}) crashed nothing: no durable call has that id, but "
                f"{', '.join(map(repr, near))} ran. Call ids are module.qualname: pass the full id, the "
                f"function itself (inject_crash(call=charge_card)), or name it with @dnb.durable(name={call!r}).",
                UserWarning,
            )
