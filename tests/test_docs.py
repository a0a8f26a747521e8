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
