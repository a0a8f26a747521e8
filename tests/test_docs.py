"""Docs that cannot drift: public names are documented, magic options explained, quick start true."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import durable_nb as dnb

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_every_public_name_has_a_docstring_and_is_in_the_readme():
    missing_doc, missing_readme = [], []
    for name in dnb.__all__:
        obj = getattr(dnb, name)
        if (inspect.isclass(obj) or inspect.isfunction(obj)) and not (obj.__doc__ or "").strip():
            missing_doc.append(name)
        if not re.search(rf"\b{re.escape(name)}\b", README):
            missing_readme.append(name)
    assert missing_doc == [], f"add docstrings to: {missing_doc}"
    assert missing_readme == [], f"mention in README.md: {missing_readme}"


def test_every_magic_option_has_help():
    from durable_nb.notebook.magics import DurableMagics

    for name, method in inspect.getmembers(DurableMagics, inspect.isfunction):
        parser = getattr(method, "parser", None)
        if parser is None:
            continue
        for action in parser._actions:
            if action.dest != "help":
                assert action.help, f"%{name}: option {action.option_strings or action.dest} has no help="


def test_readme_quick_start_is_two_commands_that_ci_runs():
    block = README.split("## Quick start", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in block.strip().splitlines()]
    assert commands == ["./dev demo", "./dev test"]
    assert "exec ./dev test" in (ROOT / ".ci" / "run").read_text()


def test_importing_the_package_loads_neither_flink_nor_widgets():
    import subprocess
    import sys

    code = "import sys, durable_nb; print(sorted(m for m in ('pyflink', 'ipywidgets', 'IPython') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
