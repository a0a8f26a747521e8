"""What a user installs: the sdist and the wheel hold the package, its license and nothing else; Binder
installs what the tutorials import.

The distributions are built the way ``python -m build`` does (the sdist, then the wheel from the sdist),
without build isolation so no index is needed: ``build`` and ``setuptools>=77`` come with the ``test``
extra. The tutorials themselves run under nbval (``./dev test``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

import durable_nb as dnb

ROOT = Path(__file__).resolve().parent.parent
PACKAGE_FILES = sorted(
    str(p.relative_to(ROOT)) for p in (ROOT / "durable_nb").rglob("*") if p.suffix in (".py", ".typed")
)


def _can_build() -> str | None:
    """Why the distributions cannot be built here without an index, or None."""
    try:
        import build  # noqa: F401
        import setuptools
    except ImportError as exc:
        return f"{exc.name} is missing"
    if int(setuptools.__version__.split(".")[0]) < 77:
        return f"setuptools {setuptools.__version__} < 77 (pyproject's license = 'Apache-2.0' needs 77)"
    return None


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(sdist, wheel) built from a copy of the checkout (a build writes egg-info next to the sources)."""
    reason = _can_build()
    if reason is not None:
        message = f"cannot build the distributions: {reason}; pip install -e '.[test]'"
        if os.environ.get("CI"):  # ./dev test installs the test extra: a skip there would hide a broken sdist
            pytest.fail(message)
        pytest.skip(message)
    tmp = tmp_path_factory.mktemp("dist")
    ignore = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".durable",
                                    ".*_cache", ".bench_tmp", ".ipynb_checkpoints")
    shutil.copytree(ROOT, tmp / "src", ignore=ignore)
    out = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(tmp / "out"),
                          str(tmp / "src")], capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    (sdist,), (wheel,) = (tmp / "out").glob("*.tar.gz"), (tmp / "out").glob("*.whl")
    return sdist, wheel


def test_the_version_in_pyproject_is_the_package_version() -> None:
    version = re.search(r'(?m)^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text())
    assert version is not None and version.group(1) == dnb.__version__


def test_the_wheel_holds_every_module_py_typed_and_the_license_and_nothing_else(dists: tuple[Path, Path]) -> None:
    names = zipfile.ZipFile(dists[1]).namelist()
    info = f"durable_nb-{dnb.__version__}.dist-info/"
    assert sorted(n for n in names if not n.startswith(info)) == PACKAGE_FILES
    assert info + "licenses/LICENSE" in names
    metadata = zipfile.ZipFile(dists[1]).read(info + "METADATA").decode()
    assert f"Version: {dnb.__version__}\n" in metadata
    assert "License-Expression: Apache-2.0" in metadata and "License-File: LICENSE" in metadata
    for extra in ("flink", "postgres", "flink-agents", "bench"):
        assert f"Provides-Extra: {extra}\n" in metadata
    assert f"pip install dist/{dists[1].name}`" in (ROOT / "README.md").read_text()  # the name the README gives


def test_the_sdist_holds_the_package_license_and_readme_but_no_half_test_tree(dists: tuple[Path, Path]) -> None:
    # setuptools adds tests/test_*.py on its own, without conftest.py, the harnesses or tests/journals:
    # a test tree that cannot run. The tests live in the repository.
    with tarfile.open(dists[0]) as tar:
        names = sorted(n.split("/", 1)[1] for n in tar.getnames() if "/" in n)
    assert [n for n in names if n.startswith("tests")] == []
    assert {"LICENSE", "README.md", "pyproject.toml", "PKG-INFO"} <= set(names)
    assert set(PACKAGE_FILES) <= set(names)


def _tutorial_imports() -> set[str]:
    """Top-level modules the tutorials import, the standard library left out (a cell may hold magics or a
    top-level await, so lines are read, not parsed)."""
    found: set[str] = set()
    for notebook in (ROOT / "notebooks").glob("*.ipynb"):
        for cell in json.loads(notebook.read_text())["cells"]:
            if cell["cell_type"] == "code":
                found.update(re.findall(r"(?m)^\s*(?:from|import)\s+(\w+)", "".join(cell["source"])))
    return found - set(sys.stdlib_module_names)


def test_binder_installs_what_the_tutorials_import() -> None:
    try:
        from durable_nb.flink_agents import INSTALL_HINT as hint
    except ImportError as exc:  # the default install has no Flink Agents; the error carries the very same hint
        hint = str(exc).split("Install it with: ", 1)[1]
    binder = ROOT / "binder"
    requirements = [line.split("#")[0].strip() for line in (binder / "requirements.txt").read_text().splitlines()]
    assert [r for r in requirements if r.lstrip("-e ").startswith(".")] == ["-e .[flink]"]  # pyflink, Java below
    assert any(p.startswith("openjdk-") for p in (binder / "apt.txt").read_text().split())
    post_build = " ".join((binder / "postBuild").read_text().replace('"', "'").split())
    # Binder installs Flink Agents' minimal set exactly as the package's own install hint says.
    minimal = hint.split("the minimal set: ", 1)[1].split(" && ")
    assert minimal[0].replace("pip install 'durable_nb[flink]' ", "pip install --quiet ") in post_build
    assert minimal[1].replace("pip install", "pip install --quiet") in post_build
    provided = {"durable_nb", "pandas", "pyflink", "flink_agents", "pydantic", "IPython", "ipywidgets"}
    assert _tutorial_imports() <= provided, "a tutorial imports what binder/ does not install"
