"""JournalView on real stores: what it shows, how it pages, filters, goes live, and never unpickles."""

from __future__ import annotations

import collections
import contextlib
import html
import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from descriptors import descriptors_on, needs_proc

import durable_nb as dnb

HOSTILE = "<img src=x onerror=alert(1)>"


def text(value: str) -> str:
    """What a person reads: the HTML without the style sheet and tags, entities decoded."""
    value = re.sub(r"<style>.*?</style>", "", value, flags=re.S)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", value)).split())


@dnb.durable(name="charge_card")
def charge_card(order: int) -> str:
    return f"ch_{order}"


@dnb.durable(name="send_receipt")
def send_receipt(order: int, charge: str) -> str:
    return f"receipt for {charge}"


def place_order(order: int, ctx: dnb.RunnerContext) -> str:
    charge = ctx.durable_execute(charge_card, order, reconciler=lambda: f"ch_{order}_found")
    return ctx.durable_execute(send_receipt, order, charge)


def crashed_journal(store: dnb.Store) -> None:
    """order-1 completed; order-2 crashed after charge_card ran, leaving it PENDING."""
    runner = dnb.LocalRunner(store)
    runner.run(place_order, 1, run_id="order-1")
    with pytest.raises(dnb.SimulatedCrash), dnb.inject_crash(call="charge_card", point="after_call"):
        runner.run(place_order, 2, run_id="order-2")


def many_calls(store: dnb.Store, n: int, run_id: str = "bulk") -> None:
    @dnb.durable(name="step")
    def step(i: int) -> int:
        return i

    with dnb.LocalRunner(store).context(run_id) as ctx:
        for i in range(n):
            ctx.durable_execute(step, i)


def test_table_shows_each_call_with_status_origin_and_preview(store: dnb.Store) -> None:
    crashed_journal(store)
    view = dnb.JournalView(store)
    shown = text(view.table.value)
    assert "order-1" in shown and "order-2" in shown
    assert shown.count("SUCCEEDED · EXECUTED") == 2
    assert "PENDING" in shown
    assert "'receipt for ch_1'" in shown
    assert 'data-call="order-2#0"' in view.table.value
    assert "dnb-status-PENDING" in view.table.value
    assert "page 1 of 1 · calls 1–3 of 3" in text(view.page_label.value)
    runs = text(view.runs_table.value)
    assert "COMPLETED" in runs and "RUNNING" in runs


def test_pages_fetch_only_the_visible_page(store: dnb.Store) -> None:
    many_calls(store, 120)
    asked: list[dict[str, Any]] = []
    query = store.query_calls

    def spy(**kwargs: Any) -> list[dnb.CallRecord]:
        asked.append(kwargs)
        return query(**kwargs)

    store.query_calls = spy  # type: ignore[method-assign]
    view = dnb.JournalView(store, page_size=50)
    assert "page 1 of 3 · calls 1–50 of 120" in text(view.page_label.value)
    assert view.prev_button.disabled and not view.next_button.disabled
    view.next_button.click()
    assert "page 2 of 3 · calls 51–100 of 120" in text(view.page_label.value)
    assert [r.index for r in view.records] == list(range(50, 100))
    view.last_button.click()
    assert "page 3 of 3 · calls 101–120 of 120" in text(view.page_label.value)
    assert view.next_button.disabled and view.last_button.disabled
    view.prev_button.click()
    view.first_button.click()
    assert view.page_index == 0
    assert asked and all(kw["limit"] == 50 for kw in asked)
    assert [kw["offset"] for kw in asked] == [0, 50, 100, 50, 0]


def test_filters_by_run_status_and_call_id(store: dnb.Store) -> None:
    crashed_journal(store)
    view = dnb.JournalView(store)
    view.status_filter.value = "PENDING"
    assert [(r.run_id, r.index) for r in view.records] == [("order-2", 0)]
    assert "calls 1–1 of 1" in text(view.page_label.value)
    view.status_filter.value = ""
    view.call_filter.value = "send_receipt"
    assert [r.call_id for r in view.records] == ["send_receipt"]
    view.call_filter.value = ""
    view.run_filter.value = "order-2"
    assert {r.run_id for r in view.records} == {"order-2"}
    assert "order-1" in view.run_filter.options and "order-2" in view.run_filter.options
    assert len(view.to_pandas()) == 1
    view.status_filter.value = "FAILED"
    assert "no calls match the filters" in text(view.table.value)


def test_run_id_argument_starts_filtered(store: dnb.Store) -> None:
    crashed_journal(store)
    view = dnb.JournalView(store, run_id="order-1")
    assert {r.run_id for r in view.records} == {"order-1"}
    assert repr(view) == f"JournalView({store!r}, run_id='order-1')"


def test_a_run_id_or_page_size_of_the_wrong_type_is_refused_naming_it(store: dnb.Store) -> None:
    """``run_id=5`` failed with "object of type 'int' has no len()", ``run_id=b'..'`` showed an empty view,
    ``page_size="50"`` failed comparing str and int; a numpy page size is an int."""
    import numpy as np

    crashed_journal(store)
    for bad in (5, b"order-1"):
        with pytest.raises(TypeError, match="a run id is a str"):
            dnb.JournalView(store, run_id=bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="page_size must be an int"):
        dnb.JournalView(store, page_size="50")  # type: ignore[arg-type]
    assert dnb.JournalView(store, run_id="order-1", page_size=np.int64(1)).page_size == 1


def test_detail_shows_the_selected_call(store: dnb.Store) -> None:
    crashed_journal(store)
    view = dnb.JournalView(store)
    view.selector.value = 1
    detail = text(view.detail.value)
    rec = store.calls("order-1")[1]
    assert rec.args_digest in detail
    assert "send_receipt" in detail and "'receipt for ch_1'" in detail and "EXECUTED" in detail
    view.selector.value = 2
    assert "no outcome yet" in text(view.detail.value)


def test_timeline_marks_status_reconciled_and_discarded_calls(store: dnb.Store) -> None:
    crashed_journal(store)
    runner = dnb.LocalRunner(store)
    runner.run(place_order, 2, run_id="order-2")  # recovery: charge_card is reconciled

    @dnb.durable(name="refund")
    def refund(order: int) -> str:
        return "refunded"

    def changed(order: int, ctx: dnb.RunnerContext) -> str:
        return ctx.durable_execute(refund, order)

    with pytest.warns(dnb.NonDeterminismWarning):
        runner.run(changed, 1, run_id="order-1")  # a different call at index 0: mismatch
    view = dnb.JournalView(store)
    timeline = view.timeline.value
    assert "dnb-bar dnb-status-SUCCEEDED dnb-origin-RECONCILED" in timeline
    assert timeline.count("dnb-bar dnb-status-DISCARDED") == 2
    assert "discarded: expected charge_card here, the action called refund" in html.unescape(timeline)  # tooltip
    discarded = text(view.discarded_table.value)
    assert "charge_card" in discarded and "send_receipt" in discarded
    runs = text(view.runs_table.value)
    assert "order-1" in runs


def test_run_ids_and_messages_with_lone_surrogates_or_nul_render_as_utf_8_text(sqlite_store: dnb.Store) -> None:
    """Widget state travels to the browser as UTF-8, which has no bytes for a lone surrogate (a non-UTF-8
    file name, as os.listdir returns it) or a readable NUL: every widget shows them as escapes."""
    odd = "caf\udce9-\ud800-nul\x00-\u202egnp.csv"  # and a right-to-left override (it would show reversed)

    def load(name: str) -> None:
        raise FileNotFoundError(f"no such file: {name}")

    def action(name: str, ctx: dnb.RunnerContext) -> None:
        with contextlib.suppress(FileNotFoundError):
            ctx.durable_execute(load, name)
        ctx.durable_execute(charge_card, 7)

    with pytest.raises(dnb.SimulatedCrash), dnb.inject_crash(call="charge_card", point="after_call"):
        dnb.LocalRunner(sqlite_store).run(action, odd, run_id=f"load-{odd}")
    view = dnb.JournalView(sqlite_store)
    panel = dnb.ReconcilePanel(sqlite_store)
    stepper = dnb.ReplayStepper(sqlite_store, f"load-{odd}", action, odd)
    view.selector.value = 0
    rendered = [view.table.value, view.timeline.value, view.runs_table.value, view.detail.value,
                panel.rows[0].info.value, stepper.plan_table.value, stepper.position_label.value]
    for value in rendered:
        value.encode("utf-8")  # strict: raises on a lone surrogate
        assert "\x00" not in value
    assert "load-caf\\udce9-\\ud800-nul\\x00-\\u202egnp.csv" in html.unescape(view.runs_table.value)
    # Not only HTML: every value of every widget inside (options, labels, captions) must travel as UTF-8.
    for widget in (view, panel, stepper):
        for part in _descendants(widget):
            json.dumps(part.get_state(), ensure_ascii=False).encode("utf-8")
    assert "\u202e" not in "".join(rendered)
    [shown] = [o for o in view.run_filter.options if o.startswith("load-")]
    view.run_filter.value = shown  # picking the run's (escaped) option filters by the run itself
    assert {r.run_id for r in view.records} == {f"load-{odd}"}


def _descendants(widget):
    import ipywidgets as W

    yield widget
    for child in getattr(widget, "children", ()):
        if isinstance(child, W.Widget):
            yield from _descendants(child)


def test_hostile_preview_is_escaped_and_no_payload_is_unpickled(store: dnb.Store, tmp_path: Path) -> None:
    flag = tmp_path / "unpickled"  # unpickling the result creates this file

    class Bomb:
        def __reduce__(self) -> tuple[Any, ...]:
            return (flag.touch, ())

        def __repr__(self) -> str:
            return HOSTILE

    @dnb.durable(name="hostile")
    def hostile() -> Bomb:
        return Bomb()

    class BombCause(Exception):  # its payload runs code when unpickled, as the result's does
        def __reduce__(self) -> tuple[Any, ...]:
            return (flag.touch, ())

    @dnb.durable(name="hostile_error")
    def hostile_error() -> None:
        raise ValueError(HOSTILE)

    @dnb.durable(name="hostile_chain")
    def hostile_chain() -> None:
        try:
            raise BombCause(HOSTILE)
        except BombCause as exc:
            raise KeyError(HOSTILE) from exc

    def action(_: Any, ctx: dnb.RunnerContext) -> None:
        ctx.durable_execute(hostile)
        with contextlib.suppress(ValueError):
            ctx.durable_execute(hostile_error)
        with contextlib.suppress(KeyError):
            ctx.durable_execute(hostile_chain)
        ctx.durable_execute(charge_card, 7)

    with pytest.raises(dnb.SimulatedCrash), dnb.inject_crash(call="charge_card", point="after_call"):
        dnb.LocalRunner(store).run(action, None, run_id=HOSTILE)
    flag.unlink(missing_ok=True)  # the writer's own check that the failure loads back ran BombCause's code

    view = dnb.JournalView(store)
    panel = dnb.ReconcilePanel(store)
    stepper = dnb.ReplayStepper(store, HOSTILE, action, None)
    for i in range(len(view.records)):
        view.selector.value = i
        assert "<img" not in view.detail.value
    rendered = [view.table.value, view.timeline.value, view.runs_table.value, view.page_label.value,
                panel.rows[0].info.value, stepper.plan_table.value, stepper.position_label.value]
    assert not flag.exists(), "rendering unpickled a payload"
    for value in rendered:
        assert "<img" not in value
    assert "&lt;img src=x onerror=alert(1)&gt;" in view.table.value
    assert "ValueError: &lt;img src=x onerror=alert(1)&gt;" in view.table.value
    assert ".BombCause: &lt;img src=x onerror=alert(1)&gt;)" in view.table.value  # the cause, escaped
    previews = [c.error_preview for c in store.calls(HOSTILE)] + store.to_pandas()["error_preview"].tolist()
    assert [p for p in previews if isinstance(p, str) and p.endswith(f".BombCause: {HOSTILE})")] == [  # nan: pandas 3
        f"KeyError: {HOSTILE!r} (from {BombCause.__qualname__}: {HOSTILE})"] * 2
    assert not flag.exists(), "previewing the journal unpickled a payload"
    assert "&lt;img src=x onerror=alert(1)&gt;" in panel.rows[0].info.value  # the run id
    assert "<img" not in view.table.value and "<img" not in stepper.plan_table.value

    store.calls(HOSTILE)[0].result()  # the explicit, trusted act does unpickle: the test can see it
    assert flag.exists()


def test_live_mode_follows_a_runner_in_a_background_thread(sqlite_store: dnb.SqliteStore) -> None:
    view = dnb.JournalView(sqlite_store, page_size=10)
    assert view.total == 0
    gate = threading.Event()

    @dnb.durable(name="slow")
    def slow(i: int) -> int:
        gate.wait(0.01)
        return i

    def work() -> None:
        with dnb.LocalRunner(sqlite_store).context("live") as ctx:
            for i in range(30):
                ctx.durable_execute(slow, i)

    view.start_live(0.02)
    assert view.live and view.live_toggle.value
    worker = threading.Thread(target=work)
    worker.start()
    seen = set()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not (view.total == 30 and view.records[-1].status.value == "SUCCEEDED"):
        seen.add(view.total)
        time.sleep(0.01)
    worker.join()
    assert view.total == 30
    assert len(seen) > 1, "the view should have shown intermediate states"
    assert "· live" in view.status_line.value
    view.live_toggle.value = False  # the toggle stops the poller, like stop_live()
    assert not view.live
    view.live_toggle.value = True
    assert view.live
    view.close()
    assert not view.live


def test_to_pandas_returns_every_matching_call_not_just_the_page(store: dnb.Store) -> None:
    many_calls(store, 75)
    view = dnb.JournalView(store, page_size=10)
    frame = view.to_pandas()
    assert len(frame) == 75 and list(frame["index"]) == list(range(75))
    assert "payload" not in frame.columns


def test_importing_durable_nb_does_not_import_ipywidgets() -> None:
    code = "import sys, durable_nb; assert 'ipywidgets' not in sys.modules; durable_nb.JournalView; " \
           "assert 'ipywidgets' in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("kind", ["memory", "sqlite"])  # PostgreSQL refuses such a run id: tests/test_postgres.py
def test_a_hostile_megabyte_of_run_id_stays_kilobytes_of_widget_state(kind: str, tmp_path: Path) -> None:
    store = dnb.MemoryStore() if kind == "memory" else dnb.SqliteStore(tmp_path / "j.db")
    huge = "R" * 1_000_000
    dnb.LocalRunner(store).run(lambda v, ctx: ctx.durable_execute(charge_card, v), 1, run_id=huge)
    view = dnb.JournalView(store)
    view.selector.value = 0
    state = sum(len(json.dumps(w.get_state(), ensure_ascii=False)) for w in _descendants(view))
    assert state < 200_000
    assert "…" in view.table.value


def test_long_run_ids_offer_short_distinct_options_in_the_run_filter() -> None:
    """1,000 runs keyed by long texts (a map over documents) offered their whole ids, 10 kB each: a 10 MB option
    list. Options are short now, two ids with one beginning stay two options, and picking one filters by its run;
    a whole id typed in still filters by that id."""
    store = dnb.MemoryStore()
    runner = dnb.LocalRunner(store)
    ids = [f"{'doc text ' * 1000}{k}" for k in range(300)]
    for run_id in ids:
        runner.run(lambda v, ctx: ctx.durable_execute(charge_card, v), 1, run_id=run_id)
    view = dnb.JournalView(store)
    options = view.run_filter.options
    assert len(options) == len(set(options)) == 300
    assert sum(len(o) for o in options) < 100_000  # was 300 x 9,000 characters
    view.run_filter.value = options[0]  # the newest run: the last one written
    assert {r.run_id for r in view.records} == {ids[-1]}
    view.run_filter.value = ids[7]
    assert {r.run_id for r in view.records} == {ids[7]}
    view.close()


def test_every_bidirectional_control_shows_as_an_escape() -> None:
    """Unicode's Bidi_Control set: the Arabic letter mark (U+061C) reorders text like the marks U+200E/F."""
    from durable_nb.widgets._html import esc, label

    controls = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
    for c in controls:
        assert c not in esc(f"run-{c}-1") and c not in label(f"run-{c}-1")
    assert esc("a\u061cb") == "a\\u061cb"


def test_a_journal_with_a_timestamp_out_of_range_opens_and_shows_it(sqlite_store: dnb.SqliteStore) -> None:
    # A journal is data (maybe someone else's, maybe damaged): one started_at of 1e300 made the view's
    # constructor raise OverflowError, so nothing of the journal could be looked at.
    crashed_journal(sqlite_store)
    sqlite_store.flush()  # every transition in the SQLite file, not only in the intent log
    import sqlite3

    with contextlib.closing(sqlite3.connect(sqlite_store.path)) as conn, conn:
        conn.execute("UPDATE calls SET started_at = 1e300 WHERE run_id = 'order-1' AND idx = 0")
    view = dnb.JournalView(sqlite_store)
    shown = text(view.table.value)
    assert "1e+300 (not a time)" in shown and "order-2" in shown
    view.selector.value = 0
    assert "1e+300 (not a time)" in text(view.detail.value)


def _hand_edit(store: dnb.SqliteStore, *statements: tuple[str, tuple[Any, ...]]) -> None:
    store.flush()  # every transition in the SQLite file, not only in the intent log
    import sqlite3

    with contextlib.closing(sqlite3.connect(store.path)) as conn, conn:
        for sql, params in statements:
            conn.execute(sql, params)


def test_a_call_index_typed_in_by_hand_is_text_on_the_page_not_markup(sqlite_store: dnb.SqliteStore) -> None:
    # SQLite keeps text in an INTEGER column: an idx of '"><img onerror=...>' went into data-call="run#..."
    # unescaped and ran in the browser (JournalView table, timeline, detail; ReconcilePanel; InputPrompt).
    crashed_journal(sqlite_store)
    with pytest.raises(dnb.AwaitingInput):
        dnb.LocalRunner(sqlite_store).run(lambda _, ctx: ctx.durable_input("ok?"), None, run_id="ask")
    bad = '"><img src=x onerror=alert(1)>'
    _hand_edit(sqlite_store, ("UPDATE calls SET idx = ? WHERE run_id = 'order-2' AND idx = 0", (bad,)),
               ("UPDATE calls SET idx = ? WHERE run_id = 'ask' AND idx = 0", (bad + "2",)))
    view = dnb.JournalView(sqlite_store)
    panel = dnb.ReconcilePanel(sqlite_store)
    shown = [view.table.value, view.timeline.value]
    for i in range(len(view.records)):
        view.selector.value = i
        shown.append(view.detail.value)
    shown += [row.info.value for row in panel.rows] + [w.info.value for w in panel.inputs]
    assert sum(bad in html.unescape(v) for v in shown) >= 5  # each place shows the index, as text
    for value in shown:
        assert "<img" not in value, value


def test_times_and_lineage_typed_in_as_text_show_as_not_a_time_instead_of_raising(
        sqlite_store: dnb.SqliteStore) -> None:
    # started_at = 'garbage' made the view's constructor raise TypeError (fmt_duration, the timeline's
    # axis); forked_at = 'x' made picking any call of the fork raise TypeError out of the selector.
    crashed_journal(sqlite_store)
    fork = sqlite_store.fork("order-1", 1)
    _hand_edit(sqlite_store, ("UPDATE calls SET started_at = 'garbage' WHERE run_id = 'order-1' AND idx = 0", ()),
               ("UPDATE calls SET finished_at = 'later' WHERE run_id = 'order-1' AND idx = 1", ()),
               ("UPDATE runs SET forked_at = 'x' WHERE run_id = ?", (fork,)))
    view = dnb.JournalView(sqlite_store)
    assert "'garbage' (not a time)" in text(view.table.value) and "order-2" in text(view.table.value)
    assert "order-1 #0" in text(view.timeline.value)
    view.run_filter.value = fork
    view.selector.value = 0
    assert "forked from order-1 at call x" in text(view.fork.lineage.value)
    assert "could not" not in text(view.status_line.value)


@pytest.mark.parametrize("how", ["blob", "text"])
def test_a_preview_of_bytes_that_are_not_utf_8_shows_as_escapes_and_the_journal_stays_readable(
        sqlite_store: dnb.SqliteStore, how: str) -> None:
    # Bytes typed in with sqlite3 (a BLOB, or CAST(x'ff' AS TEXT)) made every read of the calls raise
    # (UnicodeDecodeError, sqlite3 "Could not decode to UTF-8"): no widget could show any of the journal.
    crashed_journal(sqlite_store)
    value = "x'ff3c696d67'" if how == "blob" else "CAST(x'ff3c696d67' AS TEXT)"
    _hand_edit(sqlite_store, (f"UPDATE calls SET result_preview = {value} WHERE run_id = 'order-1' AND idx = 0", ()))
    view = dnb.JournalView(sqlite_store)
    assert "could not" not in text(view.status_line.value)
    assert "\\udcff<img" in text(view.table.value) and "order-2" in text(view.table.value)
    assert "<img" not in view.table.value
    assert [r.record.run_id for r in dnb.ReconcilePanel(sqlite_store).rows] == ["order-2"]


REMOTE_HOLDER = """
import sys, time
import durable_nb.journal.lease as lease
lease._HOST = "taskmanager-7"  # its owner ids name another machine, as a Flink worker's do
import durable_nb as dnb

def slow(i):
    if i == 1:
        print("holding", flush=True)
        time.sleep(120)
    return i

store = dnb.PostgresStore(sys.argv[1])
dnb.LocalRunner(store).run(lambda _, ctx: [ctx.durable_execute(slow, i) for i in range(3)], None, run_id="remote")
"""


def test_a_run_another_machine_is_writing_shows_as_open_on_postgresql(pg_dsn: str) -> None:
    """The lease column asked whether the recorded owner's pid lives on this machine: a run a TaskManager on
    another host was writing looked like a crashed one. The store's own lock (PostgreSQL's) knows."""
    holder = subprocess.Popen([sys.executable, "-c", REMOTE_HOLDER, pg_dsn], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        store = dnb.PostgresStore(pg_dsn)
        assert store.run_is_open("remote")
        view = dnb.JournalView(store)
        assert "open in a live context" in text(view.runs_table.value)
        holder.kill()
        holder.wait(30)
        deadline = time.monotonic() + 30
        while store.run_is_open("remote"):  # the server ends the killed client's session
            assert time.monotonic() < deadline
            time.sleep(0.05)
        view.refresh()
        assert "RUNNING" in text(view.runs_table.value)  # crashed mid-run: waiting for a recovery
        assert "open in a live context" not in text(view.runs_table.value)
        store.close()
    finally:
        holder.kill()
        holder.wait(30)


# -- closing: every model, the thread, the store it opened -------------------------------

def open_models() -> collections.Counter[str]:
    """The widget models open in this kernel, by class (ipywidgets keeps each one until it is closed)."""
    from ipywidgets.widgets import widget

    return collections.Counter(type(w).__name__ for w in widget._instances.values())


def test_close_leaves_no_widget_model_open(sqlite_store: dnb.SqliteStore) -> None:
    # Widget.close() closes one model: the buttons' Layout and ButtonStyle, the HTMLs' styles stayed (~50).
    many_calls(sqlite_store, 3)
    before = open_models()
    view = dnb.JournalView(sqlite_store, page_size=2)
    view.go_to_page(1)
    view.fork.button.click()  # a fork: the view switches run and redraws
    view.close()
    assert open_models() - before == collections.Counter()


@needs_proc
def test_a_view_closes_the_store_it_opened_from_a_path_and_not_one_passed_in(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    with dnb.SqliteStore(path) as store:
        many_calls(store, 2)
    fds = descriptors_on(tmp_path)
    for _ in range(3):
        view = dnb.JournalView(str(path), live=True, interval=0.01)
        view.close()
    assert descriptors_on(tmp_path) == fds  # each view left its connections and lock files open (~6 descriptors)
    store = dnb.SqliteStore(path)
    try:
        view = dnb.JournalView(store)
        view.close()
        assert store.count_calls() == 2  # still the caller's, open
    finally:
        store.close()


@needs_proc
def test_a_closed_view_is_not_redrawn_by_another_widgets_write(tmp_path: Path) -> None:
    # A closed view stayed registered for redraws: the next write elsewhere reopened the store it had closed.
    path = tmp_path / "journal.db"
    with dnb.SqliteStore(path) as store:
        many_calls(store, 2)
    closed = dnb.JournalView(str(path))
    closed.close()
    fds = descriptors_on(tmp_path)
    other = dnb.JournalView(str(path))
    other.fork.button.click()  # writes, then tells the widgets on this journal to redraw
    other.close()
    assert descriptors_on(tmp_path) == fds


def test_a_live_view_nobody_refers_to_lets_its_thread_end() -> None:
    # The polling thread held its widget: a view ipywidgets let go of would still have polled (and kept its store
    # open) for the life of the kernel. An open widget is not let go (ipywidgets' registry keeps it, and the page
    # may show it), so this checks the poller on its own.
    from durable_nb.widgets._poll import Poller

    class Owner:
        ticks = 0

        def tick(self) -> None:
            Owner.ticks += 1

    owner = Owner()
    poller = Poller(owner.tick, "test-poller", 0.01)
    poller.start()
    deadline = time.monotonic() + 10
    while Owner.ticks == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    thread = poller._thread
    assert thread is not None and Owner.ticks > 0
    del owner
    thread.join(10)
    assert not thread.is_alive()


@needs_proc
def test_a_closed_view_reads_nothing_and_refuses_to_go_live(tmp_path: Path) -> None:
    # A user holding a closed view (or the JournalView of a closed ReplayStepper) and calling refresh() reopened the
    # store its close() had closed, for good; start_live() polled that store forever for a view no page can show.
    path = tmp_path / "journal.db"
    with dnb.SqliteStore(path) as store:
        many_calls(store, 2)
    fds = descriptors_on(tmp_path)
    stepper = dnb.ReplayStepper(str(path), "bulk", lambda v, ctx: ctx.durable_execute(str, v), 1)
    for view in (dnb.JournalView(str(path)), stepper.journal_view):
        (stepper if view is stepper.journal_view else view).close()
        view.refresh()
        view.go_to_page(1)
        with pytest.raises(RuntimeError, match="closed"):
            view.start_live()
        assert view._poller._thread is None
    assert descriptors_on(tmp_path) == fds


@pytest.mark.parametrize("widget", ["JournalView", "ReconcilePanel"])
def test_a_viewer_given_a_path_with_no_journal_says_so_and_creates_nothing(tmp_path: Path, widget: str) -> None:
    # A mistyped path showed "no runs yet" and left an empty journal (and its folders) where it pointed.
    missing = tmp_path / "no-such-dir" / "jounral.db"
    for given in (str(missing), missing, f"sqlite:///{missing}"):
        with pytest.raises(FileNotFoundError, match=rf"{widget}: no journal at '{re.escape(str(missing))}'"):
            getattr(dnb, widget)(given)
    assert list(tmp_path.iterdir()) == []
    path = tmp_path / "journal.db"
    dnb.SqliteStore(path).close()
    getattr(dnb, widget)(str(path)).close()  # an existing journal, even an empty one, opens as before


def test_a_view_keeps_only_the_runs_it_shows_and_the_lineage_of_forks_of_older_runs(
    store: dnb.Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It kept every ``RunRecord`` of the journal (~480 MiB per open view of 1,000,000 runs, and page flips
    slowed by the garbage collector walking them) although it shows at most ``RUN_OPTIONS_LIMIT``."""
    from durable_nb.widgets import journal_view

    monkeypatch.setattr(journal_view, "RUN_OPTIONS_LIMIT", 4)
    monkeypatch.setattr(journal_view, "RUNS_SHOWN", 3)
    runner = dnb.LocalRunner(store)
    for order in range(10):
        runner.run(place_order, order, run_id=f"order-{order}")
    fork = store.fork("order-0", at=1)  # the newest run; its parent is the oldest
    view = dnb.JournalView(store)
    assert len(view.runs) == 4 and view.n_runs == 11
    assert view.runs[-1].run_id == fork
    assert "11 runs" in text(view.status_line.value)
    shown = text(view.runs_table.value)
    assert "forked from order-0 at call 1" in shown and "no longer in the journal" not in shown
    assert len(view.run_filter.options) == 4
    if isinstance(store, dnb.SqliteStore):  # it reads the runs it shows, not every run
        every: list[int] = []
        runs = store.runs
        monkeypatch.setattr(store, "runs", lambda: every.append(1) or runs())
        view.refresh()
        assert every == [] and len(view.runs) == 4 and view.n_runs == 11
    store.delete_run("order-0")
    view.refresh()
    assert "forked from order-0 (no longer in the journal) at call 1" in text(view.runs_table.value)
