"""What a notebook user sees of a ``%%durable`` cell in a real kernel: its first run, then its replay.

A notebook runs in one ipykernel, then again in a new one (a restart and "run
all"). Its cells show rich outputs, redraw them by display id, clear and
reprint progress, and end in an expression. The iopub messages of the replay
must show the user what the first run left on screen, and keep the display ids
later cells redraw.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jupyter_client.manager import KernelManager

pytestmark = pytest.mark.timeout(240)

OUTPUT_TYPES = ("stream", "display_data", "update_display_data", "execute_result", "clear_output", "error")

CELLS = {
    "setup": "%load_ext durable_nb\n%durable_store sqlite:///{dir}/journal.db\n"
             "from IPython.display import display, update_display, clear_output, HTML\n"
             "display('starting', display_id='status')\n",
    "handle": "%%durable handle\nh = display(HTML('<b>v1</b>'), display_id=True)\nh.update(HTML('<b>v2</b>'))\n",
    "later": "h.update(HTML('<b>v3</b>'))\n",
    "status": "%%durable status\nupdate_display('loaded', display_id='status')\n",
    "progress": "%%durable progress\nfor i in range(3):\n    clear_output(wait=True)\n    print('step', i)\n",
    "result": "%%durable result\nimport pandas as pd\nframe = pd.DataFrame({'a': [1, 2]})\nframe\n",
}


def _session(directory: Path) -> dict[str, list[dict[str, Any]]]:
    """Every cell run in a new kernel: name -> its output messages (type, content, metadata)."""
    km = KernelManager(kernel_name="python3")
    km.start_kernel(cwd=str(directory), env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=60)
        seen: dict[str, list[dict[str, Any]]] = {}
        for name, code in CELLS.items():
            messages: list[dict[str, Any]] = []

            def hook(msg: dict[str, Any], into: list[dict[str, Any]] = messages) -> None:
                if msg["msg_type"] in OUTPUT_TYPES:
                    into.append({"type": msg["msg_type"], **msg["content"]})

            reply = kc.execute_interactive(code.replace("{dir}", str(directory)), output_hook=hook, timeout=60)
            assert reply["content"]["status"] == "ok", messages
            seen[name] = messages
        return seen
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(first run, replay in a new kernel) of the notebook."""
    directory = tmp_path_factory.mktemp("nb")
    yield _session(directory), _session(directory)


def _shown(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The messages after the replay notice (a replay's first stream line)."""
    if messages and messages[0]["type"] == "stream" and "durable: replayed" in messages[0]["text"]:
        return messages[1:]
    return messages


def test_a_replayed_display_keeps_its_id_and_a_later_cells_update_redraws_it(runs: Any) -> None:
    first, replay = runs
    [shown, _] = first["handle"]
    display_id = shown["transient"]["display_id"]
    [again] = _shown(replay["handle"])
    assert again == {**shown, "data": {**shown["data"], "text/html": "<b>v2</b>"}}  # its final state, same id
    [update] = replay["later"]  # the restored handle redraws the replayed output
    assert (update["type"], update["transient"]) == ("update_display_data", {"display_id": display_id})


def test_a_durable_cells_update_of_a_status_line_above_is_replayed(runs: Any) -> None:
    first, replay = runs
    assert _shown(replay["status"]) == first["status"]
    assert first["status"][0]["type"] == "update_display_data"


def test_a_progress_loop_replays_its_last_state_and_clear_output_keeps_wait(runs: Any) -> None:
    first, replay = runs
    assert [m["wait"] for m in first["progress"] if m["type"] == "clear_output"] == [True, True, True]
    assert [m["text"] for m in first["progress"] if m["type"] == "stream"][-1] == "step 2\n"
    assert _shown(replay["progress"]) == [{"type": "stream", "name": "stdout", "text": "step 2\n"}]


def test_a_cells_result_replays_as_the_same_execute_result(runs: Any) -> None:
    first, replay = runs
    assert _shown(replay["result"]) == first["result"]
    assert first["result"][0]["type"] == "execute_result"
    assert "text/html" in first["result"][0]["data"]
