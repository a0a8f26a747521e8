"""Short-term memory per key, as Flink Agents' keyed state: each input's writes count once.

Flink Agents keeps an agent's short-term memory in Flink keyed state: the memory an
input sees is what the key's earlier inputs left, and a restore from a checkpoint
rewinds it. Here memory lives in the process, so the same must hold when a run is
run again in that process (a replayed map, a recovery, ``run`` of an input once
more): each run starts from the memory it first started from, not from what it
wrote itself the last time (then its actions would see other values, its durable
calls would not match, and the journal would be discarded and the calls repeated).

* A run seen for the first time starts from the memory the key's latest run left
  (an earlier input run again in between does not rewind it).
* A run seen before starts from the memory its first attempt started from: kept
  for a key's first run always, for the last :data:`SNAPSHOTS` runs otherwise, as long as
  they fit in :data:`SNAPSHOT_BYTES`. Without that copy, a run next in line after the last
  one that finished starts from the current memory.
* Those copies are pickled bytes, not deep copies: a memory that grows with every input
  (a chat history) made each run deep-copy it twice and keep one copy, so 1,000 inputs of
  one key took 4 s and 318 MB, 4,000 took 74 s and 3.1 GB. Pickling is a C-level copy,
  several times smaller and faster, and the byte budget bounds what is kept.
* A run that finishes makes its memory the key's; one that does not leaves it as it
  found it (as a Flink restore would).
* Without a key (``AgentRunner.run(input)``) each run has a memory of its own, as
  Flink Agents' local runner gives every unkeyed input a key of its own.
* The memory belongs to the agent's journal in the process (:func:`memory_of`), not to
  one ``AgentRunner`` object: a notebook cell that builds the runner again must not
  start the inputs it already ran from an empty memory (their calls would not match,
  and a charge would be made again).
"""

from __future__ import annotations

import collections
import contextlib
import copy
import pickle
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..runners.mapping import key_text

if TYPE_CHECKING:
    from ..journal.store import Store

SNAPSHOTS = 10_000
"""Runs whose starting memory is kept (beyond each key's first run), newest first."""

SNAPSHOT_BYTES = 64 * 2**20
"""Pickled bytes of those starting memories kept at most; the oldest are dropped first."""

_Frozen = bytes | dict[str, Any]


def _freeze(memory: dict[str, Any]) -> _Frozen:
    """A private copy of ``memory``, as pickled bytes: compact, and made in C.

    Flink Agents only accepts memory values made of None, bool, int, float, str, list
    and dict, which always pickle; a value changed in place into one that does not (a
    lambda appended to a list read from memory) falls back to a deep copy.
    """
    try:
        return pickle.dumps(memory, pickle.HIGHEST_PROTOCOL)
    except Exception:
        return copy.deepcopy(memory)


def _thaw(frozen: _Frozen) -> dict[str, Any]:
    """A new working memory from a frozen one (the frozen copy stays as it is)."""
    return pickle.loads(frozen) if isinstance(frozen, bytes) else copy.deepcopy(frozen)


@dataclass
class _Key:
    current: dict[str, Any] = field(default_factory=dict)
    """The memory the key's inputs have left so far."""
    order: dict[str, int] = field(default_factory=dict)
    """Run id -> its position among the key's runs, in the order first seen."""
    done: int = -1
    """Position of the run whose memory ``current`` is."""
    latest: dict[str, Any] = field(default_factory=dict)
    """The memory the key's latest run (by position) left when it finished: where a new run starts."""
    latest_done: int = -1
    """Position of that run."""
    first: _Frozen | None = None
    """The memory the key's first run started from."""


class MemoryByKey:
    """The short-term memory of every key one agent has seen in this process."""

    def __init__(self, snapshots: int = SNAPSHOTS, snapshot_bytes: int | None = None) -> None:
        self._keys: dict[Any, _Key] = {}
        self._started: collections.OrderedDict[tuple[Any, str], _Frozen] = collections.OrderedDict()
        self._snapshots = snapshots
        self._snapshot_bytes = SNAPSHOT_BYTES if snapshot_bytes is None else snapshot_bytes
        self._kept_bytes = 0

    @contextlib.contextmanager
    def for_run(self, key: Any, run_id: str) -> Iterator[dict[str, Any]]:
        """The memory run ``run_id`` of ``key`` works on; it becomes the key's when the run finishes."""
        name = ("run", run_id) if key is None else ("key", key_text(key))  # as run ids tell keys apart
        state = self._keys.setdefault(name, _Key())
        position = state.order.get(run_id)
        start: _Frozen | None
        if position is None:
            position = state.order[run_id] = len(state.order)
            start = _freeze(state.latest)
            if position == 0:
                state.first = start
            else:
                self._keep(name, run_id, start)
        else:
            start = state.first if position == 0 else self._started.get((name, run_id))
            if start is None and position == state.done + 1:
                start = _freeze(state.current)  # next in line after the last run that finished: where it started
            if start is None:
                raise RuntimeError(
                    f"AgentRunner: run {run_id!r} (key {key!r}) ran before in this process, and the short-term "
                    f"memory it started from is no longer kept (the last {self._snapshots:,} runs' are, up to "
                    f"{self._snapshot_bytes / 2**20:.3g} MB). Run the key's inputs again from its first one (map "
                    f"them all), or in a new process."
                )
        memory = _thaw(start)  # a run that does not finish leaves the key's memory as it found it
        yield memory
        state.current, state.done = memory, position
        if position >= state.latest_done:  # an earlier input run again does not rewind what a new input sees
            state.latest, state.latest_done = memory, position

    def _keep(self, name: Any, run_id: str, snapshot: _Frozen) -> None:
        # A deep-copied fallback counts as no bytes: only the count bounds those (rare) copies.
        self._started[(name, run_id)] = snapshot
        self._kept_bytes += _size(snapshot)
        while self._started and (len(self._started) > self._snapshots or self._kept_bytes > self._snapshot_bytes):
            self._kept_bytes -= _size(self._started.popitem(last=False)[1])


def _size(frozen: _Frozen) -> int:
    return len(frozen) if isinstance(frozen, bytes) else 0


_BY_JOURNAL: dict[tuple[object, str], MemoryByKey] = {}
_BY_STORE: weakref.WeakKeyDictionary[Store, dict[str, MemoryByKey]] = weakref.WeakKeyDictionary()


def memory_of(store: Store, name: str) -> MemoryByKey:
    """The short-term memory of the agent runs named ``name`` in ``store``'s journal, in this process.

    Store objects on one journal (a file, a database) share it, so a runner built again
    (a cell run twice, a new ``SqliteStore`` on the same file) goes on where the last one
    was, unless the journal has no run of the agent any more (pruned, or a new file at
    the same path): then its inputs start over, and so does their memory. A store with no
    place of its own (``MemoryStore``: its key is the object's id, which a later store may
    reuse) keeps it for as long as that store object lives.
    """
    journal = store.journal_key
    if journal == id(store):
        return _BY_STORE.setdefault(store, {}).setdefault(name, MemoryByKey())
    memory = _BY_JOURNAL.get((journal, name))
    if memory is None or not store.run_ids_with_prefix(f"{name}/"):  # run ids: mapping.run_id_for
        memory = _BY_JOURNAL[(journal, name)] = MemoryByKey()
    return memory
