"""``JournalView``: the journal as a table and a timeline, with filters, paging and a live mode.

Why it is built this way:

* **Only the visible page is fetched.** Each refresh asks the store for one page
  (``query_calls(offset=, limit=)``) and a count (``count_calls``), never for the
  whole journal, so a journal of 100,000 calls opens and pages as fast as a
  small one (``benchmarks/bench_widgets.py``).
* **One escaped HTML value per part** (table, timeline, runs, detail), not a
  widget per cell: 50 rows are one string, and every journal string goes through
  :func:`durable_nb.widgets._html.esc`. Payloads are never unpickled; the view
  shows the previews stored at write time.
* **Live mode is a polling thread** that reads the store and assigns trait values
  under ``hold_sync`` (ipywidgets forwards trait changes made from any thread);
  it never writes to an ``Output`` with ``with out:``, which would land in
  whatever cell is running.

Rooms: this module is the controller (widgets, filters, paging, reading the
store); the HTML comes from pure functions in
:mod:`durable_nb.widgets.render_journal` (its docstring lists the stable CSS
hooks browser tests use), and the polling thread is a
:class:`durable_nb.widgets._poll.Poller`.

Over 400 lines because filters, paging, live mode and the run filter's labels share one lock and one redraw.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import ipywidgets as W

from ..errors import check_run_id
from ..journal.queries import as_int
from ..journal.records import CallRecord, DiscardedCall, RunRecord, Status
from ..journal.store import Store
from . import render_journal as render
from ._close import close_children, close_own_store, open_own
from ._html import fmt_time, label
from ._layout import row
from ._poll import Poller
from ._readable import Unreadable, readable_calls
from ._sync import changed, unwatch, watch
from .fork_control import ForkControl

if TYPE_CHECKING:
    import pandas as pd

ALL = ""
RUN_OPTIONS_LIMIT = 1000
"""At most this many run ids are offered as suggestions (newest first); any id can be typed."""
RUN_LABEL_CHARS = 160  # characters of a run option at most (_run_label); any id can be typed
RUNS_SHOWN = 200
DISCARDED_SHOWN = 200


def _checked_args(run_id: object, page_size: object) -> int:
    """The page size as an int, once both arguments are checked: ``run_id=5`` failed with "object of type
    'int' has no len()", ``run_id=b'..'`` showed nothing, ``page_size="50"`` failed comparing str and int."""
    if run_id is not None:
        check_run_id(run_id, empty_ok=True)
    size = as_int(page_size)
    if size is None:
        raise TypeError(f"page_size must be an int (rows per page), got {type(page_size).__name__} {page_size!r}")
    if size < 1:
        raise ValueError(f"page_size must be at least 1, got {size}")
    return size


class JournalView(W.VBox):
    """Runs and their calls: a paged table, a timeline, filters, call detail, live refresh.

    Args:
        store: a :class:`~durable_nb.Store`, or anything :func:`~durable_nb.open_store` takes.
        run_id: show only this run (the run filter can be changed in the widget).
        page_size: calls per page; each page is one store query.
        live: start in live mode (see :meth:`start_live`).
        interval: live-mode polling period in seconds.

    The widget only reads the store. ``refresh()`` re-reads it; ``to_pandas()``
    returns every call matching the current filters (not just the visible page).
    """

    _closed = False  # set by close(): a closed view reads nothing more and cannot go live
    unreadable: tuple[Unreadable, ...] = ()
    """Rows of the visible page the store refuses to read (a status typed in by hand), shown under the table."""

    def __init__(
        self,
        store: Store | str | os.PathLike[str],
        run_id: str | None = None,
        *,
        page_size: int = 50,
        live: bool = False,
        interval: float = 1.0,
    ) -> None:
        page_size = _checked_args(run_id, page_size)
        self.store = open_own(self, store, existing=True)
        self.page_size = page_size
        self._poller = Poller(self._poll_tick, "durable_nb-journal-view", interval)
        self.page_index = 0
        """Zero-based page shown."""
        self.total = 0
        """Calls matching the filters at the last refresh."""
        self.records: list[CallRecord] = []
        """The calls on the visible page (no payloads)."""
        self.runs: list[RunRecord] = []
        """The newest runs at the last refresh (at most ``RUN_OPTIONS_LIMIT``: what the view shows and offers)."""
        self.n_runs = 0
        """How many runs the journal held at the last refresh."""
        self._parents: dict[str, RunRecord] = {}  # parents of shown runs older than ``runs``: their lineage
        self._open_runs: set[str] = set()  # shown runs a live context holds (any machine, on PostgreSQL)
        self.discarded: list[DiscardedCall] = []
        self._lock = threading.RLock()
        self._tls = threading.local()  # .quiet: this thread is assigning traits, observers stand still
        self._run_ids: tuple[str, ...] = ()
        self._runs_read_at = 0.0
        self._runs_cost = 0.0

        self._build_controls(run_id)
        self.fork = ForkControl(self.store, on_forked=self._on_forked)
        """Lineage of the selected call's run and its **Fork from here** button."""
        self.tabs = W.Tab(
            children=[
                W.VBox([self.table, self.selector, self.detail, self.fork]),
                self.timeline,
                self.runs_table,
                self.discarded_table,
            ],
            titles=("Calls", "Timeline", "Runs", "Discarded"),
        )
        super().__init__(
            [
                row([self.run_filter, self.status_filter, self.call_filter, self.refresh_button,
                     self.live_toggle]),
                row([self.first_button, self.prev_button, self.next_button, self.last_button,
                     self.page_label]),
                self.tabs,
                self.status_line,
            ]
        )
        self.add_class("dnb-journal-view")  # DOM class: lets browser tests scope their locators
        self._wire()
        self.refresh()
        watch(self)
        if live:
            self.start_live(interval)

    def _build_controls(self, run_id: str | None) -> None:
        """The filters, paging buttons and HTML parts; laid out by ``__init__``."""
        self._run_by_label: dict[str, str] = {_run_label(run_id): run_id} if run_id else {}
        self.run_filter = W.Combobox(
            value=_run_label(run_id) if run_id else ALL, placeholder="all runs (type a run id)", description="run",
            ensure_option=False, continuous_update=False, layout=W.Layout(width="260px"),
        )
        self.status_filter = W.Dropdown(
            options=[("any", ALL)] + [(s.value, s.value) for s in Status], value=ALL,
            description="status", layout=W.Layout(width="180px"),
        )
        self.call_filter = W.Text(
            value="", placeholder="call id (exact)", description="call id",
            continuous_update=False, layout=W.Layout(width="240px"),
        )
        self.refresh_button = W.Button(description="Refresh", icon="refresh", layout=W.Layout(width="auto"))
        self.live_toggle = W.ToggleButton(value=False, description="Live", tooltip="poll the store",
                                          layout=W.Layout(width="70px"))
        self.first_button = W.Button(description="First", layout=W.Layout(width="60px"))
        self.prev_button = W.Button(description="Prev", layout=W.Layout(width="60px"))
        self.next_button = W.Button(description="Next", layout=W.Layout(width="60px"))
        self.last_button = W.Button(description="Last", layout=W.Layout(width="60px"))
        self.page_label = W.HTML()
        self.selector = W.Dropdown(options=[], description="call", layout=W.Layout(width="420px"))
        self.table = W.HTML()
        self.timeline = W.HTML()
        self.runs_table = W.HTML()
        self.discarded_table = W.HTML()
        self.detail = W.HTML()
        self.status_line = W.HTML()

    def _wire(self) -> None:
        """Connect the controls to the controller."""
        for widget in (self.run_filter, self.status_filter, self.call_filter):
            widget.observe(self._on_filter, names="value")
        self.selector.observe(self._on_select, names="value")
        self.live_toggle.observe(self._on_live_toggle, names="value")
        self.refresh_button.on_click(self._clicked(self.refresh))
        self.first_button.on_click(self._clicked(lambda: self.go_to_page(0)))
        self.prev_button.on_click(self._clicked(lambda: self.go_to_page(self.page_index - 1)))
        self.next_button.on_click(self._clicked(lambda: self.go_to_page(self.page_index + 1)))
        self.last_button.on_click(self._clicked(lambda: self.go_to_page(self.page_count - 1)))

    def _clicked(self, then: Callable[[], None]) -> Callable[[Any], None]:
        """A button's handler: a person's click (refresh, a page) makes the call then shown theirs to fork."""
        def handler(_button: Any) -> None:
            self.fork.picked()
            then()
        return handler

    @property
    def _quiet(self) -> bool:
        # Thread-local: the live poller's redraw must not swallow a filter change the
        # user makes in the kernel thread at the same moment.
        return bool(getattr(self._tls, "quiet", False))

    @_quiet.setter
    def _quiet(self, value: bool) -> None:
        self._tls.quiet = value

    def __repr__(self) -> str:
        # ipywidgets' default repr lists every child's state, timestamps included: saved
        # notebook outputs would change on every run.
        return f"JournalView({self.store!r}, run_id={self.filters['run_id']!r})"

    # -- filters and paging ------------------------------------------------------

    @property
    def filters(self) -> dict[str, Any]:
        """The store query the view shows: ``run_id``, ``status``, ``call_id`` (None = any)."""
        return {
            "run_id": self._run_by_label.get(self.run_filter.value, self.run_filter.value.strip()) or None,
            "status": self.status_filter.value or None,
            "call_id": self.call_filter.value.strip() or None,
        }

    @property
    def page_count(self) -> int:
        """Pages of ``page_size`` calls under the current filters, at least 1 (an empty journal shows one page)."""
        return max(1, -(-self.total // self.page_size))

    def go_to_page(self, index: int) -> None:
        """Show page ``index`` (clamped to the pages that exist); fetches only that page and the count."""
        with self._lock:
            self.page_index = max(0, index)
            self._refresh(with_runs=False)

    def _on_filter(self, change: dict[str, Any]) -> None:
        if self._quiet:
            return
        self.fork.picked()  # a person chose another run (or status, call id) to look at
        with self._lock:
            self.page_index = 0
            self._refresh(with_runs=False)

    def _on_select(self, change: dict[str, Any]) -> None:
        if not self._quiet:
            self.detail.value = render.call_detail(self.selected)
            self._point_fork(picked=True)

    def _point_fork(self, picked: bool = False) -> None:
        rec = self.selected
        self.fork.show(rec, self.store.run(rec.run_id) if rec is not None else None, picked=picked)

    def _on_forked(self, new_id: str) -> None:
        """After **Fork from here**: show the new run, and let the other widgets on this journal redraw."""
        self._run_by_label[_run_label(new_id)] = new_id
        self.run_filter.value = _run_label(new_id)  # observed: re-reads the page
        self.refresh()
        changed(self.store, source=self)

    @property
    def selected(self) -> CallRecord | None:
        """The call chosen in the call selector (on the visible page), if any."""
        i = self.selector.value
        return self.records[i] if isinstance(i, int) and i < len(self.records) else None

    # -- reading the store ---------------------------------------------------------

    def refresh(self) -> None:
        """Re-read the visible page, the counts and the runs from the store, and redraw (nothing once closed).

        Safe to call from any thread (live mode calls it from its poller); errors reading the store are shown
        in the widget instead of raised into a callback."""
        self._refresh(with_runs=True)

    def _refresh(self, with_runs: bool) -> None:
        # Paging and filtering re-read only the page and the count: the run list does not
        # change when the user pages, and reading it is the one cost that grows with the
        # number of runs (100,000 one-call runs from a map take ~0.5 s in SQLite).
        with self._lock:
            if self._closed:  # its models are gone from the page; a read would reopen the store close() closed
                return
            try:
                self._fetch(with_runs)
            except Exception as exc:  # a locked/removed file must not kill the poller
                self.status_line.value = render.read_error(exc)
                return
            self._draw()

    def _fetch(self, with_runs: bool) -> None:
        flt = self.filters
        self.total = self.store.count_calls(**flt)
        self.page_index = min(self.page_index, self.page_count - 1)
        read = readable_calls(self.store, **flt, offset=self.page_index * self.page_size, limit=self.page_size)
        self.records = [r for r in read if isinstance(r, CallRecord)]
        self.unreadable = tuple(r for r in read if isinstance(r, Unreadable))
        if with_runs:
            started = time.perf_counter()
            self._keep_runs()
            # The store knows if a run's owner lives, even on another machine (PostgreSQL: its lock).
            is_open = self.store.run_is_open
            self._open_runs = {r.run_id for r in self.runs[-RUNS_SHOWN:] if r.owner and is_open(r.run_id)}
            self._runs_read_at = time.monotonic()
            self._runs_cost = time.perf_counter() - started
        self.discarded = self.store.discarded(flt["run_id"])[-DISCARDED_SHOWN:]

    def _keep_runs(self) -> None:
        """Read and keep the newest runs and the parents their lineage names, not the whole list.

        Why: the view shows at most ``RUN_OPTIONS_LIMIT`` runs; reading and holding every ``RunRecord``
        took 4 s and kept ~480 MiB per open view of a 1,000,000-run journal (a ``%durable_journal`` in
        each cell adds one), which also slowed every page flip through the garbage collector."""
        tail, self.n_runs = self.store.newest_runs(max(RUNS_SHOWN, RUN_OPTIONS_LIMIT))
        known = {r.run_id for r in tail}
        wanted = {r.parent_run_id for r in tail[-RUNS_SHOWN:] if r.parent_run_id is not None} - known
        parents = {p: self.store.run(p) for p in sorted(wanted)}
        self._parents = {p: r for p, r in parents.items() if r is not None}
        self.runs = tail

    def _draw(self) -> None:
        selected = self.selector.value
        options = [(label(f"{r.run_id} #{r.index}  {r.call_id}  [{r.status.value}]", 400), i)
                   for i, r in enumerate(self.records)]
        run_ids = tuple(r.run_id for r in reversed(self.runs[-RUN_OPTIONS_LIMIT:]))
        self._quiet = True
        try:
            with self.hold_sync():
                if run_ids != self._run_ids:
                    self._run_ids = run_ids
                    shown = {_run_label(r): r for r in run_ids}
                    self.run_filter.options = tuple(shown)
                    current = self.run_filter.value  # a label filters by its run, the one typed in too
                    if current in self._run_by_label:
                        shown.setdefault(current, self._run_by_label[current])
                    self._run_by_label = shown
                keep = selected if isinstance(selected, int) and selected < len(options) else (0 if options else None)
                if list(self.selector.options) != options:
                    self.selector.options = options
                self.selector.value = keep
                self.page_label.value = render.page_label(
                    self.page_index, self.page_count, self.page_size, len(self.records), self.total)
                self.first_button.disabled = self.prev_button.disabled = self.page_index == 0
                self.next_button.disabled = self.last_button.disabled = self.page_index >= self.page_count - 1
                self.table.value = render.calls_table(self.records) + render.unreadable_rows(self.unreadable)
                self.timeline.value = render.timeline(self.records, self.discarded)
                self.runs_table.value = render.runs_table(self.runs, RUNS_SHOWN, self._open_runs, self._parents)
                self.discarded_table.value = render.discarded_table(self.discarded)
                self.detail.value = render.call_detail(self.selected)
                self._point_fork()
                self.status_line.value = render.status_note(fmt_time(time.time()), self.live, self.n_runs)
        finally:
            self._quiet = False

    # -- live mode -----------------------------------------------------------------

    @property
    def interval(self) -> float:
        """Live-mode polling period in seconds."""
        return self._poller.interval

    @interval.setter
    def interval(self, value: float) -> None:
        self._poller.interval = value

    @property
    def live(self) -> bool:
        """Whether the polling thread is running."""
        return self._poller.alive

    def start_live(self, interval: float | None = None) -> None:
        """Refresh every ``interval`` seconds from a background thread until :meth:`stop_live`.

        Lets you watch a runner working in another thread or process; the kernel
        stays free for other cells.
        """
        with self._lock:
            if self._closed:
                raise RuntimeError("this JournalView was closed (or the widget showing it): make a new one to watch")
            if interval is not None:
                self.interval = interval
            if self._poller.start():
                self._set_toggle(True)

    def stop_live(self) -> None:
        """Stop the polling thread and wait for it (at most one refresh)."""
        self._poller.stop()
        self._set_toggle(False)

    def _poll_tick(self) -> None:
        # Re-read the run list at most every 10x what reading it costs, so a journal of
        # 100,000 runs does not keep a core busy; the page and counts follow every tick.
        stale = time.monotonic() - self._runs_read_at >= 10 * self._runs_cost
        self._refresh(with_runs=stale)

    def _set_toggle(self, value: bool) -> None:
        self._quiet = True
        try:
            self.live_toggle.value = value
        finally:
            self._quiet = False

    def _on_live_toggle(self, change: dict[str, Any]) -> None:
        if self._quiet:
            return
        if change["new"]:
            self.start_live()
        else:
            self.stop_live()

    def close(self) -> None:
        """Stop live mode, close the widget, every widget it made and the store it opened from a path or URL
        (a store passed in is the caller's and stays open)."""
        # Also called by ipywidgets' __del__, possibly on an instance whose __init__ failed.
        self._closed = True
        unwatch(self)
        if getattr(self, "live_toggle", None) is not None:
            self.stop_live()
        close_children(self)
        super().close()
        close_own_store(self)

    # -- export ------------------------------------------------------------------------

    def to_pandas(self) -> pd.DataFrame:
        """Every call matching the current filters (all pages) as a DataFrame, without payloads."""
        from ..journal.frames import calls_frame

        return calls_frame(self.store.query_calls(**self.filters))


def _run_label(run_id: str) -> str:
    """How the run filter shows a run id (sendable, bounded); ``_run_by_label`` maps it back. A long id is cut and
    tagged with a hash of the whole id, so ids with one beginning stay apart: 1,000 options of 10,000-character
    run ids (``map(key=...)`` over documents) were a 10 MB option list."""
    if len(run_id) <= RUN_LABEL_CHARS:
        return label(run_id, RUN_LABEL_CHARS)
    digest = hashlib.sha256(run_id.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return label(run_id, RUN_LABEL_CHARS - 16) + f" [{digest}]"
