"""JournalView in live mode follows a FlinkRunner job while it runs (on the same journal file)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import _orders
import pytest

import durable_nb as dnb
from durable_nb.runners.flink_job import FlinkRunner

pytestmark = pytest.mark.flink


@pytest.mark.timeout(180)
def test_journal_view_shows_a_running_flink_job_live(flink: None, tmp_path: Path) -> None:
    store = dnb.SqliteStore(tmp_path / "journal.db")
    n = 40
    action = _orders.make_action(tmp_path, delay=0.05)  # ~2 durable calls per record, slow enough to watch
    view = dnb.JournalView(dnb.SqliteStore(tmp_path / "journal.db"), live=True, interval=0.05)
    seen: list[int] = []
    result: dict[str, object] = {}

    def job() -> None:
        result["df"] = FlinkRunner(store, parallelism=2).map(action, _orders.orders(n), key="id")

    worker = threading.Thread(target=job)
    worker.start()
    try:
        while worker.is_alive():
            seen.append(view.total)  # redrawn by the view's own polling thread, not by this loop
            time.sleep(0.02)
    finally:
        worker.join()
    time.sleep(0.3)  # one more poll after the job's last commit
    view.stop_live()
    assert len(result["df"]) == n  # type: ignore[arg-type]
    in_between = sorted({t for t in seen if 0 < t < 2 * n})
    assert len(in_between) >= 3, f"the live view never showed the job in progress: {sorted(set(seen))}"
    assert seen == sorted(seen), "the live count went backwards"
    assert view.total == store.count_calls() == 2 * n
    assert "SUCCEEDED" in view.table.value
    view.close()
    store.close()
