"""The tutorials leave nothing behind: a scratch folder a tutorial makes is removed by its last cell.

Why: every tutorial keeps its journal in ``tempfile.mkdtemp(prefix="dnb-")`` so each run starts clean,
and nothing removed it: each ``./dev test`` (the tutorials run under nbval) and each reader's Run All
left folders in /tmp. Read statically, as nbval runs the cells: the last code cell must remove the
folder, and its stored output (``False``, the folder no longer exists) is what nbval checks it against.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))
SCRATCH = re.compile(r"(?m)^(\w+)\s*=\s*(?:Path\()?tempfile\.mkdtemp\(")


def _code_cells(notebook: Path) -> list[dict[str, object]]:
    cells = json.loads(notebook.read_text())["cells"]
    return [c for c in cells if c["cell_type"] == "code"]


def test_every_tutorial_is_checked() -> None:
    assert len(NOTEBOOKS) >= 7


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_a_tutorial_removes_its_scratch_folder_in_its_last_cell(notebook: Path) -> None:
    cells = _code_cells(notebook)
    folders = [m.group(1) for c in cells for m in SCRATCH.finditer("".join(c["source"]))]  # type: ignore[arg-type]
    if not folders:
        pytest.skip("makes no scratch folder")
    last = cells[-1]
    source = "".join(last["source"])  # type: ignore[arg-type]
    for folder in folders:
        assert f"shutil.rmtree({folder})" in source, f"{notebook.name}: the last cell does not remove {folder}"
    # the stored output nbval compares: the folder is gone when the cell ran
    assert last["execution_count"] is not None
    shown = [o["data"]["text/plain"] for o in last["outputs"] if o["output_type"] == "execute_result"]  # type: ignore[attr-defined]
    assert shown == [["False"]] or shown == ["False"], f"{notebook.name}: the last cell should show the folder is gone"
