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
  for a key's first run always, for the last :data:`SNAPSHOTS` runs otherwise. Without
  that copy, a run next in line after the last one that finished starts from the current memory.
* A run that finishes makes its memory the key's; one that does not leaves it as it
  found it (as a Flink restore would).
* Without a key (``AgentRunner.run(input)``) each run has a memory of its own, as
  Flink Agents' local runner gives every unkeyed input a key of its own.
"""

from __future__ import annotations

import collections
import contextlib
import copy
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ..runners.mapping import key_text

SNAPSHOTS = 10_000
"""Runs whose starting memory is kept (beyond each key's first run), newest first."""


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
    first: dict[str, Any] | None = None
    """The memory the key's first run started from."""


class MemoryByKey:
    """The short-term memory of every key one agent has seen in this process."""

    def __init__(self, snapshots: int = SNAPSHOTS) -> None:
        self._keys: dict[Any, _Key] = {}
        self._started: collections.OrderedDict[tuple[Any, str], dict[str, Any]] = collections.OrderedDict()
        self._snapshots = snapshots

    @contextlib.contextmanager
    def for_run(self, key: Any, run_id: str) -> Iterator[dict[str, Any]]:
        """The memory run ``run_id`` of ``key`` works on; it becomes the key's when the run finishes."""
        name = ("run", run_id) if key is None else ("key", key_text(key))  # as run ids tell keys apart
        state = self._keys.setdefault(name, _Key())
        position = state.order.get(run_id)
        if position is None:
            position = state.order[run_id] = len(state.order)
            start = state.latest
            snapshot = copy.deepcopy(start)
            if position == 0:
                state.first = snapshot
            else:
                self._keep(name, run_id, snapshot)
        else:
            start = state.first if position == 0 else self._started.get((name, run_id))  # type: ignore[assignment]
            if start is None and position == state.done + 1:
                start = state.current  # next in line after the last run that finished: where it started
            if start is None:
                raise RuntimeError(
                    f"AgentRunner: run {run_id!r} (key {key!r}) ran before in this process, and the short-term "
                    f"memory it started from is no longer kept (the last {self._snapshots:,} runs' are). Run the "
                    f"key's inputs again from its first one (map them all), or in a new process."
                )
        memory = copy.deepcopy(start)  # a run that does not finish leaves the key's memory as it found it
        yield memory
        state.current, state.done = memory, position
        if position >= state.latest_done:  # an earlier input run again does not rewind what a new input sees
            state.latest, state.latest_done = memory, position

    def _keep(self, name: Any, run_id: str, snapshot: dict[str, Any]) -> None:
        self._started[(name, run_id)] = snapshot
        while len(self._started) > self._snapshots:
            self._started.popitem(last=False)
