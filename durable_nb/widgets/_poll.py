"""A widget's live mode: one daemon thread calling ``tick()`` every ``interval`` seconds until stopped.

Kept apart from the widgets so the thread's life cycle (start once, stop and
join, stop from inside a tick) is written once. The tick must only assign trait
values (ipywidgets forwards changes made from any thread); it must never write
to an ``Output`` with ``with out:``, which would land in whatever cell is running.

The thread holds the widget weakly (a bound ``tick`` is kept as a ``WeakMethod``),
so the thread never keeps a widget alive: a widget ipywidgets lets go of is
collected, its ``close()`` runs (from ipywidgets' ``__del__``, closing the store it
opened) and the thread ends at its next tick. ipywidgets 8 lets go of a widget
only once it is closed: its registry and the kernel's comm manager hold every open
widget, which is what keeps a displayed one working while the page shows it. So a
live view whose name a re-run cell rebound polls until it is closed (``close()``,
``stop_live()`` or its Live toggle), as its output may still be on the page.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable


class Poller:
    """Calls ``tick`` from a background thread every ``interval`` seconds while started."""

    def __init__(self, tick: Callable[[], None], name: str, interval: float = 1.0) -> None:
        self._tick: Callable[[], Callable[[], None] | None] = (
            weakref.WeakMethod(tick) if hasattr(tick, "__self__") else (lambda: tick)  # type: ignore[arg-type]
        )
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

    @property
    def tick(self) -> Callable[[], None] | None:
        """The function called every ``interval`` seconds; None once its widget was collected."""
        return self._tick()

    def _run(self, stop: threading.Event) -> None:
        while not stop.wait(self.interval):
            tick = self._tick()
            if tick is None:  # the widget was collected without close(): nobody can see this thread's work
                return
            tick()
            del tick  # no strong reference to the widget while waiting
