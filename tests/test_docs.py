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


def test_every_repository_path_the_readme_names_exists():
    """A renamed test, module or tutorial leaves the README pointing at nothing; a new benchmark goes unlisted."""
    named = set(re.findall(r"\b((?:tests|durable_nb|benchmarks|notebooks|binder|docs)/[\w./-]*\w)", README))
    missing = sorted(p for p in named if not any(ROOT.glob(p + "*")))  # `benchmarks/bench_*.py` is a pattern
    assert missing == [], f"README.md names paths that do not exist: {missing}"
    unlisted = [b.name for b in sorted((ROOT / "benchmarks").glob("bench_*.py")) if f"`{b.name}`" not in README]
    assert unlisted == [], f"list in README.md's Layout table: {unlisted}"


def test_every_store_method_the_readme_names_exists():
    names = set(re.findall(r"`store\.(\w+)", README)) - {"py"}  # `store.py`, the module
    assert names, "the README no longer names store methods: update this test"
    assert sorted(n for n in names if not hasattr(dnb.Store, n)) == []


def test_every_magic_option_is_in_the_readme():
    """``%%durable?`` lists the options; the README must explain each one (an option nobody can find is dead)."""
    from durable_nb.notebook.magics import DurableMagics

    missing = []
    for name, method in inspect.getmembers(DurableMagics, inspect.isfunction):
        for action in getattr(getattr(method, "parser", None), "_actions", []):
            missing += [f"%{name} {o}" for o in action.option_strings
                        if o.startswith("--") and o != "--help" and not re.search(rf"`[^`]*{o}\b", README)]
    assert missing == [], f"explain in README.md: {missing}"


def test_the_strict_mode_example_in_the_readme_is_the_error_users_get():
    """The README quotes NonDeterminismError's opening words: they must stay what strict mode says."""
    lines = README.split("# dnb.NonDeterminismError: ", 1)[1].split("\n```", 1)[0].split("\n# ")
    quoted = " ".join(lines).removesuffix(" …")
    # Names and digests differ (the README's action is `shop.*`); the sentence around them may not.
    pattern = re.escape(quoted).replace("3f2a…", "[0-9a-f]+").replace("9c01…", "[0-9a-f]+")
    pattern = re.sub(r"'shop\\\.\w+'", "'[^']+'", pattern)

    def charge(order_id):
        return order_id

    def refund(order_id):
        return order_id

    def before(order, ctx):
        ctx.durable_execute(charge, order)
        return ctx.durable_execute(charge, order)

    def edited(order, ctx):
        ctx.durable_execute(charge, order)
        return ctx.durable_execute(refund, order)

    store = dnb.MemoryStore()
    dnb.LocalRunner(store).run(before, 42, run_id="order-42")
    try:
        dnb.LocalRunner(store, strict=True).run(edited, 42, run_id="order-42")
    except dnb.NonDeterminismError as exc:
        assert re.match(pattern, str(exc)), f"README.md quotes {quoted!r};\nthe error says {str(exc)!r}"
    else:
        raise AssertionError("strict mode did not raise NonDeterminismError")


def test_every_option_of_the_public_constructors_is_in_the_readme():
    """A keyword added to a runner, store, widget or helper is an option nobody finds unless the README says `name=`."""
    from durable_nb.flink import durable_process, environment

    documented_positionally = {"value", "path", "url", "func"}  # shown as `run(action, value)`, `SqliteStore(path)`
    missing = []
    for obj in (dnb.LocalRunner, dnb.FlinkRunner, dnb.SqliteStore, dnb.PostgresStore, dnb.JournalView,
                dnb.ReplayStepper, dnb.ReconcilePanel, dnb.open_store, dnb.inject_crash, dnb.durable,
                durable_process, environment):
        for p in inspect.signature(obj).parameters.values():
            optional = p.kind is p.KEYWORD_ONLY or p.default is not p.empty
            if optional and p.name not in documented_positionally and not re.search(rf"\b{p.name}=", README):
                missing.append(f"{obj.__name__}({p.name}=)")
    assert missing == [], f"explain in README.md: {missing}"


def test_every_public_name_is_explained_in_the_reference_table():
    """Mentioned somewhere is not explained: each ``__all__`` name needs a row saying what it is for."""
    reference = README.split("\n## Reference\n", 1)[1].split("\n## ", 1)[0]
    missing = [name for name in dnb.__all__ if not re.search(rf"`[^`]*\b{re.escape(name)}\b", reference)]
    assert missing == [], f"add to README.md's Reference table: {missing}"


def _top_level_names(path: Path) -> set[str]:
    """Names a module defines or imports at top level, read without importing it (pyflink stays unloaded)."""
    import ast

    names: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {t.id for t in targets if isinstance(t, ast.Name)}
        elif isinstance(node, ast.ImportFrom | ast.Import):
            names |= {a.asname or a.name.split(".")[0] for a in node.names}
    return names


def _all_of(path: Path) -> list[str]:
    import ast

    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in node.targets):
            return list(ast.literal_eval(node.value))
    raise AssertionError(f"{path} has no __all__")


def test_every_dotted_name_the_readme_gives_exists():
    """``dnb.X`` and ``durable_nb.module.X`` in the README must exist: a rename leaves users an AttributeError."""
    stale = sorted(f"dnb.{n}" for n in set(re.findall(r"\bdnb\.(\w+)", README)) if not hasattr(dnb, n))
    for dotted in set(re.findall(r"\bdurable_nb\.(\w+(?:\.\w+)*)", README)):
        parts, base = dotted.split("."), ROOT / "durable_nb"
        while parts and ((base / parts[0]).is_dir() or (base / f"{parts[0]}.py").is_file()):
            base = base / parts.pop(0)
        module = base / "__init__.py" if base.is_dir() else base.with_suffix(".py")
        if base == ROOT / "durable_nb" or (parts and parts[0] not in _top_level_names(module)):
            stale.append(f"durable_nb.{dotted}")
    assert stale == [], f"README.md names what does not exist: {stale}"


def test_the_public_names_of_the_flink_modules_are_in_the_readme():
    """``from durable_nb.flink import *`` and ``durable_nb.flink_agents`` export names users find only here."""
    missing = [f"{path.parent.name if path.name == '__init__.py' else path.stem}.{name}"
               for path in (ROOT / "durable_nb" / "flink.py", ROOT / "durable_nb" / "flink_agents" / "__init__.py")
               for name in _all_of(path) if not re.search(rf"\b{re.escape(name)}\b", README)]
    assert missing == [], f"mention in README.md: {missing}"
