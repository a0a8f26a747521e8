"""Progress of a ``map``: records done, replayed and failed (and running elsewhere), and the rate (``tqdm.auto``).

``tqdm.auto`` draws a notebook widget in Jupyter and a text bar in a terminal.
The counters are plain integers; the bar is redrawn at most every ``REFRESH_S``
seconds, so a 50,000 records/s replay does not pay for drawing.
:class:`ReplayCounter` tells whether a run only replayed (a journal observer).
"""

from __future__ import annotations

import time
from typing import Any

from ..journal.replay import Decision, Planned

REFRESH_S = 0.2
"""Seconds between two redraws of the bar."""
CHECK_EVERY = 32
"""Records between two looks at the clock (reading it per record costs more than the record on a replay)."""


class ReplayCounter:
    """A ``Journal.observer`` that notes whether any call of the run did more than replay."""

    def __init__(self) -> None:
        self.performed = False
        """True once a call was executed, re-executed, reconciled or mismatched."""
        self.replayed_any = False
        """True once a call was replayed."""
        self.reexecuted: list[tuple[int, str]] = []
        """``(index, call_id)`` of the calls that executed again: in flight (PENDING) when an attempt died, and no
        reconciler. A Flink worker ships them with the record's row, so the notebook can say "ran again"."""

    def __call__(self, planned: Planned, call_id: str) -> None:
        if planned.decision is Decision.REPLAY:
            self.replayed_any = True
        else:
            self.performed = True
            if planned.decision is Decision.REEXECUTE:
                self.reexecuted.append((planned.index, call_id))

    @property
    def replayed(self) -> bool:
        """The run made durable calls and every one replayed (a run with no durable call did not replay)."""
        return self.replayed_any and not self.performed


class MapProgress:
    """Counts records as they finish; ``enabled=False`` makes every method a no-op apart from counting."""

    def __init__(self, total: int, desc: str = "map", *, enabled: bool = True) -> None:
        self.total = total
        self.done = self.replayed = self.failed = self.elsewhere = 0
        self._bar: Any = None
        self._pending = 0
        self._countdown = 1
        self._last = 0.0
        if enabled and total:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, desc=desc, unit="rec", leave=True, dynamic_ncols=True)

    def add(self, row: Any, *, replayed: bool = False) -> None:
        """One record finished: ``row`` is its MapRow (or anything with a ``status``)."""
        self.record(getattr(row, "status", row), replayed=replayed)

    def record(self, status: Any, *, replayed: bool = False) -> None:
        """One record finished with run status ``status`` (``COMPLETED``/``FAILED``/``WAITING``; ``RUNNING``: its run
        is held by another process, nothing ran here, and the bar says how many, as it says the failed ones)."""
        self.done += 1
        if replayed:
            self.replayed += 1
        if status == "FAILED":  # RunStatus is a str enum: equal to its name
            self.failed += 1
        elif status == "RUNNING":
            self.elsewhere += 1
        if self._bar is None:
            return
        self._pending += 1
        self._countdown -= 1
        if self._countdown <= 0 or self.done == self.total:
            self._countdown = CHECK_EVERY
            now = time.monotonic()
            if now - self._last >= REFRESH_S or self.done == self.total:
                self._flush(now)

    def _flush(self, now: float) -> None:
        elsewhere = f" running elsewhere={self.elsewhere}" if self.elsewhere else ""
        self._bar.set_postfix_str(f"replayed={self.replayed} failed={self.failed}{elsewhere}", refresh=False)
        self._bar.update(self._pending)
        self._pending = 0
        self._last = now

    def close(self) -> None:
        if self._bar is not None:
            if self._pending:
                self._flush(time.monotonic())
            self._bar.close()
            self._bar = None

    def __enter__(self) -> MapProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
