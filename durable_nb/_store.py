"""The store protocol every journal backend implements, and ``open_store``.

A store only persists and reads; it never decides what a recovery does (that is
``_replay``). Each write method is one durable transition: when it returns, the
change is committed (for ``SqliteStore``: fsynced to the WAL).

Run leases: a run is open in at most one live context at a time. The owner
string written by ``open_run`` names host, pid, process start time and a nonce;
a lease whose process is gone (``kill -9``) or whose context ended is stale and
is taken over silently, a live one raises :class:`RunBusyError`.
"""

from __future__ import annotations

import abc
import os
import socket
import threading
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._records import CallRecord, DiscardedCall, Origin, RunRecord, RunStatus, Status

if TYPE_CHECKING:
    import pandas as pd

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


# ---------------------------------------------------------------- the protocol


class Store(abc.ABC):
    """Where journals live. See :class:`SqliteStore` and :class:`MemoryStore`."""

    # -- reading ------------------------------------------------------------

    @abc.abstractmethod
    def runs(self) -> list[RunRecord]:
        """Every run, oldest first."""

    @abc.abstractmethod
    def run(self, run_id: str) -> RunRecord | None:
        """One run, or None if it was never opened."""

    @abc.abstractmethod
    def calls(self, run_id: str) -> list[CallRecord]:
        """The run's live calls in index order (discarded ones excluded), payloads included."""

    @abc.abstractmethod
    def discarded(self, run_id: str | None = None) -> list[DiscardedCall]:
        """Calls dropped by non-determinism mismatches, oldest first."""

    @abc.abstractmethod
    def query_calls(
        self,
        *,
        run_id: str | None = None,
        status: Status | str | None = None,
        call_id: str | None = None,
        offset: int = 0,
        limit: int | None = None,
    ) -> list[CallRecord]:
        """Calls across runs in journal order (the order they were first written), no payloads.

        This is what viewers page through: it never loads payloads.
        """

    @abc.abstractmethod
    def count_calls(
        self, *, run_id: str | None = None, status: Status | str | None = None, call_id: str | None = None
    ) -> int:
        """How many calls :meth:`query_calls` would return without offset/limit."""

    def call(self, run_id: str, index: int) -> CallRecord | None:
        """One call with its payload, or None."""
        for rec in self.calls(run_id):
            if rec.index == index:
                return rec
        return None

    def pending(self) -> list[CallRecord]:
        """Every PENDING call across runs: the calls a crash left in flight."""
        return self.query_calls(status=Status.PENDING)

    def to_pandas(self, run_id: str | None = None) -> pd.DataFrame:
        """One row per call (all runs, or one), without payloads."""
        from ._frames import calls_frame

        return calls_frame(self.query_calls(run_id=run_id))

    # -- writing: the vocabulary of the replay engine -------------------------

    @abc.abstractmethod
    def open_run(self, run_id: str, owner: str, *, steal: bool = False) -> list[CallRecord]:
        """Take the run's lease (creating the run if new), mark it RUNNING, return its calls.

        Raises :class:`RunBusyError` if a live context holds the run, unless ``steal``.
        """

    @abc.abstractmethod
    def close_run(self, run_id: str, owner: str, status: RunStatus | None) -> None:
        """Record the run's final status (None: keep it) and release its lease, if ``owner`` still holds it."""

    @abc.abstractmethod
    def append_pending(self, run_id: str, index: int, call_id: str, args_digest: str, started_at: float) -> None:
        """Persist a new PENDING call at ``index`` (durable before the function runs)."""

    @abc.abstractmethod
    def complete_call(
        self,
        run_id: str,
        index: int,
        *,
        status: Status,
        origin: Origin,
        payload: bytes,
        result_preview: str | None,
        error_preview: str | None,
        finished_at: float,
        only_if_pending: bool = False,
    ) -> bool:
        """Persist a call's terminal outcome; returns False if ``only_if_pending`` and it was not."""

    @abc.abstractmethod
    def discard_from(self, run_id: str, index: int, reason: str, at: float) -> None:
        """Move calls ``index..`` of the run to the discarded history."""

    @abc.abstractmethod
    def delete_run(self, run_id: str) -> None:
        """Forget a run and its calls entirely (``%durable_forget``)."""

    def close(self) -> None:
        """Release connections; the store can still be reopened."""

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def check_status(status: Status | str | None) -> str | None:
    if status is None:
        return None
    try:
        return Status(status).value
    except ValueError:
        raise ValueError(
            f"status must be one of {[s.value for s in Status]}, got {status!r}"
        ) from None


# ---------------------------------------------------------------- opening stores

DEFAULT_PATH = Path(".durable") / "journal.db"
_defaults: dict[str, Store] = {}
_defaults_lock = threading.Lock()


def default_store() -> Store:
    """The embedded default: ``.durable/journal.db`` under the working directory."""
    from ._store_sqlite import SqliteStore

    path = str((Path.cwd() / DEFAULT_PATH).resolve())
    with _defaults_lock:
        store = _defaults.get(path)
        if store is None:
            store = _defaults[path] = SqliteStore(path)
        return store


def open_store(url: str | os.PathLike[str] | Store | None = None) -> Store:
    """Open a store from ``sqlite:///path``, a plain path, ``memory://``, or None (the default)."""
    from ._store_memory import MemoryStore
    from ._store_sqlite import SqliteStore

    if url is None:
        return default_store()
    if isinstance(url, Store):
        return url
    text = os.fspath(url)
    if not isinstance(text, str):
        raise TypeError(f"open_store expects a URL or path string, got {type(url).__name__}")
    if text.startswith("memory://"):
        name = text[len("memory://") :]
        return MemoryStore.named(name) if name else MemoryStore()
    if text.startswith("sqlite:///"):
        return SqliteStore(text[len("sqlite:///") :] or DEFAULT_PATH)
    if "://" in text:
        raise ValueError(
            f"open_store: unsupported URL {text!r}; use 'sqlite:///path/to/journal.db', "
            f"a plain file path, or 'memory://'."
        )
    return SqliteStore(text)
