"""Run leases: a run is open in at most one live context at a time.

The owner string written when a run is opened names host, pid, process start
time and a nonce; a lease whose process is gone (``kill -9``) or whose context
ended is stale and is taken over silently, a live one raises ``RunBusyError``.
All lease logic (owner ids, liveness, take-over, release) lives here.
"""

from __future__ import annotations

import os
import socket
import threading
import uuid

# ---------------------------------------------------------------- run leases

_HOST = socket.gethostname()
_live_nonces: set[str] = set()
_live_lock = threading.Lock()


def _process_start(pid: int) -> str:
    """Start time of a process (clock ticks since boot), to tell a reused pid apart."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
        return stat.rsplit(b")", 1)[1].split()[19].decode()
    except (OSError, IndexError):
        return "?"


_start_cache: dict[int, str] = {}


def new_owner() -> str:
    """A lease owner string for a context about to open a run."""
    nonce = uuid.uuid4().hex[:12]
    with _live_lock:
        _live_nonces.add(nonce)
    pid = os.getpid()  # not cached at import: a forked child is another owner
    start = _start_cache.get(pid)
    if start is None:
        start = _start_cache[pid] = _process_start(pid)
    return f"{_HOST}:{pid}:{start}:{nonce}"


def end_owner(owner: str) -> None:
    """Mark a lease as ended in this process (its context exited, even by a crash)."""
    with _live_lock:
        _live_nonces.discard(owner.rsplit(":", 1)[-1])


def owner_is_alive(owner: str | None) -> bool:
    """Whether the context holding ``owner`` can still write to its run."""
    if not owner:
        return False
    try:
        host, pid_text, start, nonce = owner.rsplit(":", 3)
        pid = int(pid_text)
    except ValueError:
        return False
    if host != _HOST:
        return True  # cannot check another machine: assume alive, be safe
    if pid == os.getpid():
        with _live_lock:
            return nonce in _live_nonces
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return _process_start(pid) == start


def describe_owner(owner: str) -> str:
    parts = owner.rsplit(":", 3)
    return f"process {parts[1]} on {parts[0]}" if len(parts) == 4 else owner
