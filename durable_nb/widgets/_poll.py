"""A widget's live mode: one daemon thread calling ``tick()`` every ``interval`` seconds until stopped.

Kept apart from the widgets so the thread's life cycle (start once, stop and
join, stop from inside a tick) is written once. The tick must only assign trait
values (ipywidgets forwards changes made from any thread); it must never write
to an ``Output`` with ``with out:``, which would land in whatever cell is running.
"""

from __future__ import annotations

import threading
from collections.abc import Callable


class Poller:
    """Calls ``tick`` from a background thread every ``interval`` seconds while started."""

    def __init__(self, tick: Callable[[], None], name: str, interval: float = 1.0) -> None:
        self.tick = tick
        self.name = name
        self.interval = interval
        """Seconds between ticks; read before every wait, so a change applies from the next one."""
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    @property
    def alive(self) -> bool:
        """Whether the polling thread is running."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> bool:
        """Start the thread; False (and nothing started) if it is already running."""
        if self.alive:
            return False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(self._stop,), name=self.name, daemon=True)
        self._thread.start()
        return True

    def stop(self) -> None:
        """Stop the thread and wait for it (at most one tick); safe from inside a tick."""
        thread = self._thread
        self._stop.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=10)
        self._thread = None

    def _run(self, stop: threading.Event) -> None:
        while not stop.wait(self.interval):
            self.tick()
