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

from ..errors import CrashNotInjectedWarning, SimulatedCrash, warn_at_user_code
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
_out_of_reach: list[str] = []  # of those, the ones already told they reach no worker (no second warning at exit)


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
        with _lock:
            _out_of_reach.extend(a for a in active if a not in _out_of_reach)
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
    ran: list[str] = []  # ids of the durable calls that executed in the block, first seen first

    def hook(at: str, call_id: str) -> None:
        if at == point and call_id == call and (remaining[0] is None or remaining[0] > 0):
            if remaining[0] is not None:
                remaining[0] -= 1
            crashed[0] = True
            raise SimulatedCrash(call_id, point)
        if call_id not in ran:
            ran.append(call_id)

    what = f"inject_crash(call={call!r}, point={point!r})"
    add_hook(hook)
    with _lock:
        _injections.append(what)
    completed = False
    try:
        yield
        completed = True
    finally:
        remove_hook(hook)
        with _lock:
            _injections.remove(what)
            told = what in _out_of_reach
            if told and what not in _injections:  # no same block still open (nested) that it speaks for
                _out_of_reach.remove(what)
        if completed and not crashed[0] and not told:  # an error leaving the block says enough on its own
            _warn_crashed_nothing(call, ran)


def _warn_crashed_nothing(call: str, ran: list[str]) -> None:
    """Warn that the block of ``inject_crash(call=call)`` crashed nothing, naming the calls that did execute.

    Why: a typo in the id, a short name for a module-qualified id, or a run that only replayed crashed
    nothing, silently; the tutorial or test then "recovered" a run that never crashed, and tested nothing.
    """
    near = [c for c in ran if c.endswith("." + call)]  # "charge_card" for a call journaled "__main__.charge_card"
    if near:
        warn_at_user_code(
            f"inject_crash(call={call!r}) crashed nothing: no durable call has that id, but "
            f"{', '.join(map(repr, near))} ran. Call ids are module.qualname: pass the full id, the "
            f"function itself (inject_crash(call=charge_card)), or name it with @dnb.durable(name={call!r}).",
            CrashNotInjectedWarning,
        )
        return
    if not ran:
        what = ("no durable call executed in the block: a call replayed from the journal does not run, so it "
                "cannot crash (crash a new run id, or a fork made before that call: store.fork(run_id, at=index))")
    else:
        shown = ", ".join(map(repr, ran[:10])) + (f" and {len(ran) - 10} more" if len(ran) > 10 else "")
        what = (f"no durable call with that id executed in the block, these did: {shown}. Pass the id a call is "
                f"journaled under (store.calls(run_id) lists them), or the function itself "
                f"(inject_crash(call=charge_card))")
    warn_at_user_code(f"inject_crash(call={call!r}) crashed nothing: {what}.", CrashNotInjectedWarning)
