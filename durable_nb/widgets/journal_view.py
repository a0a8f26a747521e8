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

Stable hooks (for browser tests): the page label is ``.dnb-page`` ("page 1 of 3 ·
calls 1–50 of 120"); each call row is ``tr.dnb-call`` with ``data-call="RUN#INDEX"``
and a ``.dnb-status-STATUS`` cell whose text is ``STATUS`` or ``STATUS · ORIGIN``;
timeline bars are ``.dnb-bar.dnb-status-STATUS`` (``.dnb-origin-RECONCILED`` /
``.dnb-origin-RESOLVED`` outlined; discarded ones ``.dnb-status-DISCARDED``).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import ipywidgets as W

from ..journal.lease import owner_is_alive
from ..journal.records import CallRecord, DiscardedCall, RunRecord, Status
from ..journal.store import Store
from ..stores import open_store
from ._html import STATUS_COLORS, esc, fmt_duration, fmt_time, page, status_cell, table, td
from ._sync import watch

if TYPE_CHECKING:
    import pandas as pd

ALL = ""
RUN_OPTIONS_LIMIT = 1000
"""At most this many run ids are offered as suggestions (newest first); any id can be typed."""
RUNS_SHOWN = 200
DISCARDED_SHOWN = 200


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

    def __init__(
        self,
        store: Store | str | os.PathLike[str],
        run_id: str | None = None,
        *,
        page_size: int = 50,
        live: bool = False,
        interval: float = 1.0,
    ) -> None:
        if page_size < 1:
            raise ValueError(f"page_size must be at least 1, got {page_size}")
        self.store = open_store(store)
        self.page_size = page_size
        self.interval = interval
        self.page_index = 0
        """Zero-based page shown."""
        self.total = 0
        """Calls matching the filters at the last refresh."""
        self.records: list[CallRecord] = []
        """The calls on the visible page (no payloads)."""
        self.runs: list[RunRecord] = []
        self.discarded: list[DiscardedCall] = []
        self._lock = threading.RLock()
        self._tls = threading.local()  # .quiet: this thread is assigning traits, observers stand still
        self._live_thread: threading.Thread | None = None
        self._live_stop = threading.Event()
        self._run_ids: tuple[str, ...] = ()
        self._runs_read_at = 0.0
        self._runs_cost = 0.0

        self.run_filter = W.Combobox(
            value=run_id or ALL, placeholder="all runs (type a run id)", description="run",
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
        self.refresh_button = W.Button(description="Refresh", icon="refresh", layout=W.Layout(width="90px"))
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
        self.tabs = W.Tab(
            children=[
                W.VBox([self.table, self.selector, self.detail]),
                self.timeline,
                self.runs_table,
                self.discarded_table,
            ],
            titles=("Calls", "Timeline", "Runs", "Discarded"),
        )
        super().__init__(
            [
                W.HBox([self.run_filter, self.status_filter, self.call_filter, self.refresh_button,
                        self.live_toggle]),
                W.HBox([self.first_button, self.prev_button, self.next_button, self.last_button,
                        self.page_label]),
                self.tabs,
                self.status_line,
            ]
        )
        self.add_class("dnb-journal-view")  # DOM class: lets browser tests scope their locators
        for widget in (self.run_filter, self.status_filter, self.call_filter):
            widget.observe(self._on_filter, names="value")
        self.selector.observe(self._on_select, names="value")
        self.live_toggle.observe(self._on_live_toggle, names="value")
        self.refresh_button.on_click(lambda _: self.refresh())
        self.first_button.on_click(lambda _: self.go_to_page(0))
        self.prev_button.on_click(lambda _: self.go_to_page(self.page_index - 1))
        self.next_button.on_click(lambda _: self.go_to_page(self.page_index + 1))
        self.last_button.on_click(lambda _: self.go_to_page(self.page_count - 1))
        self.refresh()
        watch(self)
        if live:
            self.start_live(interval)

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
            "run_id": self.run_filter.value.strip() or None,
            "status": self.status_filter.value or None,
            "call_id": self.call_filter.value.strip() or None,
        }

    @property
    def page_count(self) -> int:
        return max(1, -(-self.total // self.page_size))

    def go_to_page(self, index: int) -> None:
        """Show page ``index`` (clamped to the pages that exist); fetches only that page and the count."""
        with self._lock:
            self.page_index = max(0, index)
            self._refresh(with_runs=False)

    def _on_filter(self, change: dict[str, Any]) -> None:
        if self._quiet:
            return
        with self._lock:
            self.page_index = 0
            self._refresh(with_runs=False)

    def _on_select(self, change: dict[str, Any]) -> None:
        if not self._quiet:
            self.detail.value = self._render_detail()

    # -- reading the store ---------------------------------------------------------

    def refresh(self) -> None:
        """Re-read the visible page, the counts and the runs from the store, and redraw.

        Safe to call from any thread (live mode calls it from its poller); errors
        reading the store are shown in the widget instead of raised into a callback.
        """
        self._refresh(with_runs=True)

    def _refresh(self, with_runs: bool) -> None:
        # Paging and filtering re-read only the page and the count: the run list does not
        # change when the user pages, and reading it is the one cost that grows with the
        # number of runs (100,000 one-call runs from a map take ~0.5 s in SQLite).
        with self._lock:
            try:
                self._fetch(with_runs)
            except Exception as exc:  # a locked/removed file must not kill the poller
                self.status_line.value = page(
                    f'<div class="dnb-message dnb-error">could not read the journal: '
                    f"{esc(type(exc).__name__)}: {esc(exc)}</div>"
                )
                return
            self._draw()

    def _fetch(self, with_runs: bool) -> None:
        flt = self.filters
        self.total = self.store.count_calls(**flt)
        self.page_index = min(self.page_index, self.page_count - 1)
        self.records = self.store.query_calls(**flt, offset=self.page_index * self.page_size,
                                              limit=self.page_size)
        if with_runs:
            started = time.perf_counter()
            self.runs = self.store.runs()
            self._runs_read_at = time.monotonic()
            self._runs_cost = time.perf_counter() - started
        self.discarded = self.store.discarded(flt["run_id"])[-DISCARDED_SHOWN:]

    def _draw(self) -> None:
        selected = self.selector.value
        options = [(f"{r.run_id} #{r.index}  {r.call_id}  [{r.status.value}]", i) for i, r in enumerate(self.records)]
        run_ids = tuple(r.run_id for r in reversed(self.runs[-RUN_OPTIONS_LIMIT:]))
        self._quiet = True
        try:
            with self.hold_sync():
                if run_ids != self._run_ids:
                    self._run_ids = run_ids
                    self.run_filter.options = run_ids
                keep = selected if isinstance(selected, int) and selected < len(options) else (0 if options else None)
                if list(self.selector.options) != options:
                    self.selector.options = options
                self.selector.value = keep
                first = self.page_index * self.page_size
                self.page_label.value = page(
                    f'<span class="dnb-page">page {self.page_index + 1:,} of {self.page_count:,} · calls '
                    f"{first + 1 if self.records else 0:,}–{first + len(self.records):,} of {self.total:,}</span>"
                )
                self.first_button.disabled = self.prev_button.disabled = self.page_index == 0
                self.next_button.disabled = self.last_button.disabled = self.page_index >= self.page_count - 1
                self.table.value = self._render_table()
                self.timeline.value = self._render_timeline()
                self.runs_table.value = self._render_runs()
                self.discarded_table.value = self._render_discarded()
                self.detail.value = self._render_detail()
                live = " · live" if self.live else ""
                self.status_line.value = page(
                    f'<div class="dnb-note">read {esc(fmt_time(time.time()))} UTC{live}; '
                    f"{len(self.runs):,} runs</div>"
                )
        finally:
            self._quiet = False

    # -- rendering (pure: records in, escaped HTML out) ---------------------------

    def _render_table(self) -> str:
        rows = []
        for r in self.records:
            rows.append(
                f'<tr class="dnb-call" data-call="{esc(r.run_id)}#{r.index}">'
                + td(r.run_id) + td(r.index) + td(r.call_id)
                + status_cell(r.status.value, r.origin.value if r.origin else None)
                + td(r.result_preview if r.result_preview is not None else r.error_preview, "dnb-preview",
                     title=r.result_preview if r.result_preview is not None else r.error_preview)
                + td(fmt_time(r.started_at)) + td(fmt_duration(r.started_at, r.finished_at))
                + "</tr>"
            )
        return page(table(["run", "#", "call id", "status", "result / error", "started (UTC)", "took"], rows,
                          empty="no calls match the filters"))

    def _render_timeline(self) -> str:
        items: list[tuple[CallRecord | DiscardedCall, str]] = [(r, r.status.value) for r in self.records]
        shown_runs = {r.run_id for r in self.records}
        items += [(d, "DISCARDED") for d in self.discarded if d.run_id in shown_runs]
        if not items:
            return page('<div class="dnb-note">no calls on this page</div>')
        t0 = min(r.started_at for r, _ in items)
        t1 = max(max(r.started_at, r.finished_at or r.started_at) for r, _ in items)
        span = max(t1 - t0, 1e-6)
        lanes = []
        for r, status in items:
            end = r.finished_at if r.finished_at is not None else t1  # in flight: open to the right
            left = 100.0 * (r.started_at - t0) / span
            width = max(0.4, 100.0 * (end - r.started_at) / span)
            width = min(width, 100.0 - left) if left < 100 else 0.4
            origin = r.origin.value if r.origin else ""
            what = "no outcome on record (in flight when it stopped)" if status == "PENDING" else (
                f"discarded: {r.reason}" if isinstance(r, DiscardedCall) else f"{status} · {origin}")
            tip = f"{r.run_id} #{r.index} {r.call_id}: {what}; {fmt_duration(r.started_at, r.finished_at)}"
            mark = {"RECONCILED": " ⟲R", "RESOLVED": " ✎", "": ""}.get(origin, "")
            lanes.append(
                f'<tr><td class="dnb-label" title="{esc(tip)}">{esc(r.run_id)} #{r.index} {esc(r.call_id)}'
                f"{esc(mark)}{' ✗' if status == 'DISCARDED' else ''}</td>"
                f'<td style="width:70%"><div class="dnb-lane"><div class="dnb-bar dnb-status-{esc(status)}'
                f'{" dnb-origin-" + esc(origin) if origin else ""}" title="{esc(tip)}" '
                f'style="left:{left:.2f}%;width:{width:.2f}%;background-color:{STATUS_COLORS[status]}">'
                f"</div></div></td></tr>"
            )
        legend = " ".join(
            f'<span style="color:{c}">■</span> {esc(s.lower())}' for s, c in STATUS_COLORS.items()
        ) + " · ⟲R reconciled (blue outline) · ✎ resolved by hand (dashed) · ✗ discarded by a mismatch"
        header = (f'<div class="dnb-note">{esc(fmt_time(t0))} → {esc(fmt_time(t1))} UTC '
                  f"({esc(fmt_duration(t0, t1))}) · {legend}</div>")
        return page(header + f"<table style='width:100%'>{''.join(lanes)}</table>")

    def _render_runs(self) -> str:
        shown = self.runs[-RUNS_SHOWN:][::-1]
        rows = [
            f'<tr class="dnb-run" data-run="{esc(r.run_id)}">' + td(r.run_id)
            + td(r.status.value, f"dnb-run-{r.status.value}")
            + td(r.attempts) + td(r.n_calls) + td(r.n_discarded)
            + td("open in a live context" if owner_is_alive(r.owner) else "")
            + td(fmt_time(r.created_at)) + td(fmt_time(r.updated_at)) + "</tr>"
            for r in shown
        ]
        note = (f'<div class="dnb-note">newest {len(shown):,} of {len(self.runs):,} runs; '
                f"type a run id in the run filter to see any run</div>" if len(self.runs) > len(shown) else "")
        return page(note + table(["run", "status", "attempts", "calls", "discarded", "lease", "created (UTC)",
                                  "updated (UTC)"], rows, empty="no runs yet"))

    def _render_discarded(self) -> str:
        rows = [
            '<tr class="dnb-discarded-row">' + td(d.run_id) + td(d.index) + td(d.call_id)
            + status_cell(d.status.value, d.origin.value if d.origin else None)
            + td(d.result_preview if d.result_preview is not None else d.error_preview, "dnb-preview")
            + td(d.reason) + td(fmt_time(d.discarded_at)) + "</tr>"
            for d in self.discarded
        ]
        return page(
            '<div class="dnb-note">calls dropped because a recovery met a different call at their position '
            "(the action was not deterministic); kept here, no longer part of their run</div>"
            + table(["run", "#", "call id", "status then", "result / error", "why", "discarded (UTC)"], rows,
                    empty="no discarded calls")
        )

    def _render_detail(self) -> str:
        i = self.selector.value
        if not isinstance(i, int) or i >= len(self.records):
            return page('<div class="dnb-note">select a call to see its detail</div>')
        r = self.records[i]
        fields: Sequence[tuple[str, object]] = [
            ("run", r.run_id), ("index", r.index), ("call id", r.call_id), ("args digest", r.args_digest),
            ("status", r.status.value), ("origin", r.origin.value if r.origin else "— (no outcome yet)"),
            ("result preview", r.result_preview), ("error preview", r.error_preview),
            ("started (UTC)", fmt_time(r.started_at)), ("finished (UTC)", fmt_time(r.finished_at)),
            ("took", fmt_duration(r.started_at, r.finished_at)),
        ]
        rows = "".join(f"<tr><th>{esc(k)}</th>{td(v)}</tr>" for k, v in fields)
        return page(f'<table class="dnb-detail" data-call="{esc(r.run_id)}#{r.index}">{rows}</table>'
                    '<div class="dnb-note">previews were written with the call; the payload is not loaded '
                    "(record.result() unpickles it, for trusted journals only)</div>")

    # -- live mode -----------------------------------------------------------------

    @property
    def live(self) -> bool:
        """Whether the polling thread is running."""
        return self._live_thread is not None and self._live_thread.is_alive()

    def start_live(self, interval: float | None = None) -> None:
        """Refresh every ``interval`` seconds from a background thread until :meth:`stop_live`.

        Lets you watch a runner working in another thread or process; the kernel
        stays free for other cells.
        """
        with self._lock:
            if interval is not None:
                self.interval = interval
            if self.live:
                return
            self._live_stop = threading.Event()
            stop = self._live_stop
            self._live_thread = threading.Thread(
                target=self._poll, args=(stop,), name="durable_nb-journal-view", daemon=True
            )
            self._live_thread.start()
            self._set_toggle(True)

    def stop_live(self) -> None:
        """Stop the polling thread and wait for it (at most one refresh)."""
        thread = self._live_thread
        self._live_stop.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=10)
        self._live_thread = None
        self._set_toggle(False)

    def _poll(self, stop: threading.Event) -> None:
        while not stop.wait(self.interval):
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
        """Stop live mode and close the widget and its children."""
        self.stop_live()
        for child in self._all_children():
            child.close()
        super().close()

    def _all_children(self) -> list[W.Widget]:
        found: list[W.Widget] = []
        stack: list[W.Widget] = list(self.children)
        while stack:
            w = stack.pop()
            found.append(w)
            stack.extend(getattr(w, "children", ()))
        return found

    # -- export ------------------------------------------------------------------------

    def to_pandas(self) -> pd.DataFrame:
        """Every call matching the current filters (all pages) as a DataFrame, without payloads."""
        from ..journal.frames import calls_frame

        return calls_frame(self.store.query_calls(**self.filters))
