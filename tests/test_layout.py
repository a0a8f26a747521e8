"""The package layout is the architecture: sub-packages import each other only downward, without cycles.

The order is README's Layout table (lowest first)::

    errors < journal < stores < runners < widgets < notebook < top level

``top level`` is ``durable_nb/__init__.py`` and the modules and packages that put
the layers together (``flink.py``, ``flink_agents/``, ``demo.py``,
``flink_cluster.py``). A module may import its own layer and any layer below it;
``journal`` therefore imports ``errors`` only. ``notebook`` sits above ``widgets``
because ``%durable_journal`` shows a ``JournalView``.

Every import counts for the layering, wherever it is written: at module level,
inside a function (lazy imports), or under ``if TYPE_CHECKING:``. The cycle check
looks at imports that run when a module is imported (module level, not under
``TYPE_CHECKING``): a function-level import runs after every module it names has
finished importing, so a cycle through one cannot fail an import.

Sizes: a module over 400 lines says why in its docstring (the words "400 lines"
and a reason); a function over 60 lines is listed in :data:`LONG_FUNCTIONS`,
which names functions waiting to be split (it may only shrink).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "durable_nb"

LAYERS = ["errors", "journal", "stores", "runners", "widgets", "notebook", "top"]
"""Lowest first; ``top`` is everything not named here (see the module docstring)."""

MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60

#: Functions over MAX_FUNCTION_LINES lines, by "module:qualname", waiting to be split by their owners.
LONG_FUNCTIONS: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Import:
    importer: str
    imported: str
    line: int
    runs_at_import: bool
    """Module level and not under ``if TYPE_CHECKING:``: it runs when the importer is imported."""


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer_of(module: str) -> str:
    parts = module.split(".")
    if len(parts) >= 2 and parts[1] in LAYERS:
        return parts[1]
    return "top"


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _resolve(importer: str, is_package: bool, node: ast.ImportFrom, known: dict[str, Path]) -> Iterator[str]:
    """Modules of the package a ``from ... import ...`` names (a name that is a submodule counts as that module)."""
    if node.level:
        base = importer.split(".") if is_package else importer.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    if not (target == "durable_nb" or target.startswith("durable_nb.")):
        return
    for alias in node.names:
        sub = f"{target}.{alias.name}"
        yield sub if sub in known else target


def imports_of(module: str, path: Path, known: dict[str, Path]) -> Iterator[Import]:
    tree = ast.parse(path.read_text(), str(path))
    is_package = path.name == "__init__.py"

    def walk(node: ast.AST, at_import: bool) -> Iterator[Import]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                for alias in child.names:
                    if alias.name == "durable_nb" or alias.name.startswith("durable_nb."):
                        yield Import(module, alias.name, child.lineno, at_import)
            elif isinstance(child, ast.ImportFrom):
                for target in _resolve(module, is_package, child, known):
                    yield Import(module, target, child.lineno, at_import)
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                yield from walk(child, False)
            elif isinstance(child, ast.If) and _is_type_checking(child.test):
                for stmt in child.body:
                    yield from walk(ast.Module(body=[stmt], type_ignores=[]), False)
                for stmt in child.orelse:
                    yield from walk(ast.Module(body=[stmt], type_ignores=[]), at_import)
            else:
                yield from walk(child, at_import)

    yield from walk(tree, True)


def all_imports() -> list[Import]:
    known = modules()
    return [imp for name, path in known.items() for imp in imports_of(name, path, known)]


def test_sub_packages_import_only_their_own_layer_or_the_layers_below() -> None:
    upward = [
        f"{imp.importer}:{imp.line} imports {imp.imported} ({layer_of(imp.importer)} -> {layer_of(imp.imported)})"
        for imp in all_imports()
        if LAYERS.index(layer_of(imp.imported)) > LAYERS.index(layer_of(imp.importer))
    ]
    assert not upward, "imports against the layering (lowest first: " + " < ".join(LAYERS) + "):\n" + "\n".join(
        upward)


def test_the_journal_layer_imports_nothing_but_errors_and_itself() -> None:
    outside = [
        f"{imp.importer}:{imp.line} imports {imp.imported}"
        for imp in all_imports()
        if layer_of(imp.importer) == "journal" and layer_of(imp.imported) not in ("journal", "errors")
    ]
    assert not outside, "\n".join(outside)


def test_modules_do_not_import_each_other_in_a_cycle() -> None:
    graph: dict[str, set[str]] = {}
    for imp in all_imports():
        if imp.runs_at_import and imp.imported != imp.importer:
            graph.setdefault(imp.importer, set()).add(imp.imported)
    cycles = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join([*path[path.index(nxt):], nxt]))
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for start in sorted(graph):
        if start not in state:
            visit(start, [start])
    # A package's __init__ importing its own submodules is not a cycle when they do not import it back.
    assert not cycles, "import cycles (module-level imports):\n" + "\n".join(cycles)


def test_the_layer_checks_see_lazy_and_type_checking_imports() -> None:
    """The walker itself: a function-level and a TYPE_CHECKING import are found, and flagged as not run at import."""
    known = modules()
    found = {(i.imported, i.runs_at_import)
             for i in imports_of("durable_nb", PACKAGE / "__init__.py", known)}
    assert ("durable_nb.notebook.magics", False) in found  # load_ipython_extension's lazy import
    assert ("durable_nb.journal.context", True) in found


def _docstring_says_why(path: Path) -> bool:
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    return "400 lines" in doc


def test_long_modules_say_why_in_their_docstring() -> None:
    long = [
        f"{name} ({len(path.read_text().splitlines())} lines)"
        for name, path in modules().items()
        if len(path.read_text().splitlines()) > MAX_MODULE_LINES and not _docstring_says_why(path)
    ]
    assert not long, (f"modules over {MAX_MODULE_LINES} lines whose docstring does not say why "
                      f"(split them by job, or write 'Over 400 lines because ...'):\n" + "\n".join(long))


def long_functions() -> dict[str, int]:
    found: dict[str, int] = {}
    for name, path in modules().items():
        tree = ast.parse(path.read_text())

        def walk(node: ast.AST, prefix: str, module: str = name) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    qual = f"{prefix}{child.name}"
                    length = (child.end_lineno or child.lineno) - child.lineno + 1
                    if length > MAX_FUNCTION_LINES:
                        found[f"{module}:{qual}"] = length
                    walk(child, f"{qual}.")
                elif isinstance(child, ast.ClassDef):
                    walk(child, f"{prefix}{child.name}.")
                else:
                    walk(child, prefix)

        walk(tree, "")
    return found


def test_no_function_is_longer_than_60_lines_unless_listed_for_splitting() -> None:
    new = {f: n for f, n in long_functions().items() if f not in LONG_FUNCTIONS}
    assert not new, f"functions over {MAX_FUNCTION_LINES} lines (split them):\n" + "\n".join(
        f"{f}: {n} lines" for f, n in sorted(new.items()))


@pytest.mark.parametrize("module", ["durable_nb.notebook.perform", "durable_nb.notebook.outcome",
                                    "durable_nb.notebook.outputs", "durable_nb.notebook.cell"])
def test_what_flink_workers_import_for_a_cell_does_not_import_ipython(module: str) -> None:
    import subprocess
    import sys

    code = f"import sys, {module}; print('IPython' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
