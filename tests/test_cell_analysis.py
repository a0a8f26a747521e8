"""What a cell reads and binds, how its inputs are digested, and how its outputs are recorded."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
import time
import types
from typing import Any, ClassVar

import pytest

from durable_nb.notebook.cell import (
    OutputRecorder,
    analyze,
    input_digest,
    pack_namespace,
    replay_outputs,
    select_inputs,
    source_fingerprint,
    split_last_expression,
    unpack_namespace,
    value_token,
)


def reads(src: str) -> list[str]:
    return list(analyze(textwrap.dedent(src)).reads)


def binds(src: str) -> list[str]:
    return list(analyze(textwrap.dedent(src)).binds)


def test_a_name_assigned_from_itself_is_read_first() -> None:
    assert reads("x = x + 1") == ["x"]
    assert binds("x = x + 1") == ["x"]


def test_augmented_assignment_reads_and_binds() -> None:
    assert reads("total += price") == ["total", "price"]
    assert binds("total += price") == ["total"]


def test_names_read_after_assignment_are_not_inputs() -> None:
    assert reads("a = 1\nb = a + c") == ["c"]


def test_a_name_only_one_branch_binds_is_an_input_when_read_after_the_if() -> None:
    """``flag`` false: ``r = a`` reads the notebook's ``a``, so a changed ``a`` must re-run the cell."""
    assert reads("if flag:\n    a = 100\nr = a") == ["flag", "a"]
    assert reads("if flag:\n    a = 1\nelse:\n    a = 2\nr = a") == ["flag"]
    assert reads("a = 0\nif flag:\n    a = 1\nr = a") == ["flag"]
    assert reads("if flag:\n    a = 1\n    r = a") == ["flag"]
    assert reads("for x in xs:\n    last = x\nr = last") == ["xs"]  # a loop is taken to run its body
    assert binds("if flag:\n    a = 100\nr = a") == ["a", "r"]


def test_a_name_not_every_case_of_a_match_binds_is_an_input_when_read_after_it() -> None:
    """As for ``if``: with no case matching, ``print(y)`` reads the notebook's ``y``."""
    assert reads("match x:\n    case 1:\n        y = 1\nprint(y)") == ["x", "print", "y"]
    assert reads("match x:\n    case 1:\n        y = 1\n    case _:\n        y = 2\nprint(y)") == ["x", "print"]
    capture = "match x:\n    case [a]:\n        y = a\n    case other:\n        y = other\nprint(y)"
    assert reads(capture) == ["x", "print"]
    assert reads("match x:\n    case _ if x > 1:\n        y = 1\nprint(y)") == ["x", "print", "y"]


def test_a_try_body_is_taken_to_run_like_a_loop_body() -> None:
    """The retry idiom (``try: charge_id = ...; break / except ...: pass``, then ``print(charge_id)``) must
    not make the cell's own last output an input of its next run: that run would be a new version and
    charge again. Like a loop, a ``try`` body is taken to run."""
    retry = ("for attempt in range(3):\n    try:\n        charge_id = pay()\n        break\n"
             "    except ConnectionError:\n        pass\nprint(charge_id)")
    assert reads(retry) == ["range", "pay", "ConnectionError", "print"]
    assert reads("try:\n    v = f()\nexcept E:\n    v = None\nprint(v)") == ["f", "E", "print"]


def test_tuple_star_and_nested_targets_are_bound() -> None:
    assert binds("(a, (b, *c)), d[0], e.f = t") == ["a", "b", "c"]
    assert reads("(a, (b, *c)), d[0], e.f = t") == ["t", "d", "e"]


def test_for_with_import_def_class_bind_names() -> None:
    src = """
    for i, row in enumerate(rows):
        acc = row
    with open(path) as fh, lock:
        pass
    import os.path, numpy as np
    from json import dumps as js
    def f(): pass
    class K: pass
    """
    assert binds(src) == ["i", "row", "acc", "fh", "os", "np", "js", "f", "K"]
    assert reads(src) == ["enumerate", "rows", "open", "path", "lock"]


def test_function_bodies_read_globals_but_not_their_locals() -> None:
    src = """
    def total(items, rate=default_rate):
        subtotal = sum(items)
        return subtotal * rate + fee(tax)
    """
    assert reads(src) == ["default_rate", "sum", "fee", "tax"]
    assert binds(src) == ["total"]


def test_comprehension_variables_are_local_and_walrus_escapes() -> None:
    src = "ys = [y for x in xs if (y := x * k)]"
    assert reads(src) == ["xs", "k"]
    assert binds(src) == ["y", "ys"]


def test_lambda_parameters_are_not_reads() -> None:
    assert reads("f = lambda order: lookup(order)") == ["lookup"]


def test_except_name_is_neither_read_nor_output() -> None:
    src = "try:\n    x = 1\nexcept ValueError as err:\n    print(err)\n"
    assert reads(src) == ["ValueError", "print"]
    assert binds(src) == ["x"]


def test_match_captures_are_bound() -> None:
    src = "match cmd:\n    case [first, *others]:\n        pass\n    case {'k': v, **more}:\n        pass\n"
    assert binds(src) == ["first", "others", "v", "more"]


def test_del_is_recorded_and_unbinds() -> None:
    result = analyze("tmp = 1\nkeep = tmp\ndel tmp\n")
    assert result.binds == ("keep",) and result.deletes == ("tmp",)


def test_class_body_names_do_not_leak_to_the_cell() -> None:
    assert reads("class A(Base):\n    x = 1\n    y = x + other\n") == ["Base", "other"]


def test_split_last_expression() -> None:
    body, last = split_last_expression(ast.parse("a = 1\na + 1"))
    assert len(body.body) == 1 and last is not None
    body, last = split_last_expression(ast.parse("a = 1"))
    assert last is None


def test_source_fingerprint_ignores_comments_and_formatting() -> None:
    assert source_fingerprint(ast.parse("x=1 # hi\n\n")) == source_fingerprint(ast.parse("x = 1"))
    assert source_fingerprint(ast.parse("x = 1")) != source_fingerprint(ast.parse("x = 2"))


# ---------------------------------------------------------------- inputs


def test_names_ipython_expands_in_shell_commands_and_magic_lines_are_reads() -> None:
    """``out = !curl {url}`` read ``url`` only inside the string IPython expands when the command runs: after
    ``url`` changed, the cell replayed the old download."""
    from IPython.core.inputtransformer2 import TransformerManager

    def reads_of(cell: str) -> list[str]:
        return [n for n in analyze(TransformerManager().transform_cell(cell)).reads if n != "get_ipython"]

    assert reads_of("out = !curl -o {target} {url} $folder\n") == ["target", "url", "folder"]
    assert reads_of("!echo {len(items)} $$HOME {{literal}}\n") == ["len", "items"]
    assert reads_of("%cd $workdir\n") == ["workdir"]
    assert reads_of("url = 'x'\n!curl {url}\n") == []  # bound by the cell first
    assert reads_of("!echo {\n") == []  # not a format string: IPython runs it as it is


def test_ipythons_last_result_holding_an_array_or_a_frame_is_an_input_too() -> None:
    """Telling a result from IPython's initial ``""`` compared with ``!=``: a DataFrame or an array in ``_``
    raised "truth value ... is ambiguous" and the cell never ran."""
    import numpy as np
    import pandas as pd

    for value in (np.arange(3), pd.DataFrame({"a": [1, 2]})):
        assert list(select_inputs(("_",), {"_": value}, {"_": value})) == ["_"]


def test_a_notebook_class_whose_settings_the_cell_changed_is_reported_as_changed_in_place() -> None:
    """``Stats.runs += 1`` in the cell makes the class another input next time, as ``orders.append`` does to a
    list: the cell runs again then, and the user is told now (ChangedInputWarning), not left to find out."""
    from durable_nb.notebook.cell_inputs import changed_in_place, input_tokens

    stats = _notebook_function_in("class Stats:\n    runs = 0\n", "Stats", "<no source>")
    inputs = {"Stats": stats, "n": 1}
    tokens = input_tokens(inputs)
    assert changed_in_place(inputs, tokens, inputs) == []
    stats.runs += 1
    assert changed_in_place(inputs, tokens, inputs) == ["Stats"]


def test_ipythons_last_results_are_inputs_when_read_and_its_own_objects_are_not() -> None:
    """``z = _ * 2`` replayed the value recorded with another ``_``: IPython's history names were never inputs."""
    out: dict[int, Any] = {7: 42}
    ns = {"_": 50, "_7": 42, "Out": out, "_oh": out, "_i7": "6 * 7"}
    hidden = dict(ns)  # IPython pushes them all as its own names
    assert select_inputs(("_", "_7", "Out", "_oh", "_i7"), ns, hidden) == {"_": 50, "_7": 42}
    assert select_inputs(("_",), {"_": ""}, {"_": ""}) == {}  # nothing displayed yet: IPython's initial value


def test_select_inputs_skips_builtins_hidden_and_missing_names() -> None:
    ns = {"a": 1, "print": print, "get_ipython": object(), "len": 5}
    hidden = {"get_ipython": ns["get_ipython"]}
    assert select_inputs(("a", "print", "get_ipython", "missing", "len"), ns, hidden) == {"a": 1, "len": 5}


def test_modules_and_library_functions_count_by_name() -> None:
    assert value_token(json) == ("module", "json")
    assert value_token(json.dumps) == ("ref", "json.dumps")
    assert value_token(len) == ("ref", "builtins.len")


def _notebook_function(src: str, name: str) -> Any:
    ns: dict[str, Any] = {"__name__": "__main__"}
    exec(compile(src, "<cell>", "exec"), ns)
    return ns[name]


def test_notebook_functions_count_by_code() -> None:
    f1 = _notebook_function("def helper(x):\n    return x + 1\n", "helper")
    f1_again = _notebook_function("def helper(x):\n    return x + 1\n", "helper")
    f2 = _notebook_function("def helper(x):\n    return x + 2\n", "helper")
    fp = "code"
    assert input_digest(fp, {"helper": f1}) == input_digest(fp, {"helper": f1_again})
    assert input_digest(fp, {"helper": f1}) != input_digest(fp, {"helper": f2})


def test_notebook_functions_count_by_their_defaults_and_captured_values_too() -> None:
    """Before, by their source only: ``scale = make_scaler(3)`` after ``make_scaler(2)``, or ``def g(x, k=K)``
    run again after ``K = 3``, replayed the cell recorded with the old function."""
    import linecache

    def defined(src: str, name: str, filename: str) -> Any:
        linecache.cache[filename] = (len(src), None, src.splitlines(True), filename)  # as IPython keeps cells
        return _notebook_function_in(src, name, filename)

    maker = "def make_scaler(k):\n    def scale(x):\n        return k * x\n    return scale\n"
    two = defined(maker + "scale = make_scaler(2)\n", "scale", "<cell-1>")
    two_again = defined(maker + "scale = make_scaler(2)\n", "scale", "<cell-2>")
    three = defined(maker + "scale = make_scaler(3)\n", "scale", "<cell-3>")
    assert input_digest("c", {"scale": two}) == input_digest("c", {"scale": two_again})
    assert input_digest("c", {"scale": two}) != input_digest("c", {"scale": three})
    g2 = defined("K = 2\ndef g(x, k=K):\n    return k * x\n", "g", "<cell-4>")
    g3 = defined("K = 3\ndef g(x, k=K):\n    return k * x\n", "g", "<cell-5>")
    assert input_digest("c", {"g": g2}) != input_digest("c", {"g": g3})
    plain = defined("def h(x):\n    return x\n", "h", "<cell-6>")
    assert value_token(plain)[0] == "source" and len(value_token(plain)) == 3  # unchanged for plain helpers


def test_a_notebook_class_counts_by_its_immutable_settings_too() -> None:
    """``Settings.rate = 3`` after the class was defined with ``rate = 2``: the cell replayed the old result."""
    import linecache

    src = "class Settings:\n    rate = 2\n    registry = {}\n"
    for filename in ("<no source>", "<cell-settings>"):  # without and with the source IPython keeps
        if filename != "<no source>":
            linecache.cache[filename] = (len(src), None, src.splitlines(True), filename)
        cls = _notebook_function_in(src, "Settings", filename)
        before = input_digest("c", {"Settings": cls})
        cls.registry["seen"] = 1  # mutable state does not count
        assert input_digest("c", {"Settings": cls}) == before
        cls.rate = 3
        assert input_digest("c", {"Settings": cls}) != before
        cls.rate = 2
        assert input_digest("c", {"Settings": cls}) == before


def _notebook_function_in(src: str, name: str, filename: str) -> Any:
    ns: dict[str, Any] = {"__name__": "__main__"}
    exec(compile(src, filename, "exec"), ns)
    return ns[name]


def test_notebook_functions_restored_in_a_new_kernel_digest_as_the_live_ones_did() -> None:
    """cloudpickle 3.1 journals code as ``<dynamic-code>``; the restored function's source (kept beside it in the
    journal) must still be found under the old cell file, or every cell reading it runs again after a restart."""
    import linecache

    filename = "/nonexistent/ipykernel_1/1234.py"  # a cell file of the kernel that recorded the cell
    src = ("def price(n):\n    def cents(m):\n        return m * 100\n    return cents(n)\n\n"
           "discount = lambda a: a - 1\n")
    linecache.cache[filename] = (len(src), None, src.splitlines(True), filename)
    ns: dict[str, Any] = {"__name__": "__main__"}
    exec(compile(src, filename, "exec"), ns)
    live = {name: value_token(ns[name]) for name in ("price", "discount")}
    assert live["price"][0] == "source"
    packed = pack_namespace(["price", "discount"], ns)
    del linecache.cache[filename]  # a new kernel: only the journal knows the cell's text
    restored, failed = unpack_namespace(packed.values, packed.modules)
    assert not failed
    assert {name: value_token(restored[name]) for name in live} == live
    nested = next(c for c in restored["price"].__code__.co_consts if isinstance(c, types.CodeType))
    assert (restored["price"].__code__.co_filename, nested.co_filename) == (filename, filename)
    assert restored["price"](2) == 200


def test_input_digest_depends_on_values_and_code() -> None:
    base = input_digest("code", {"n": 1, "rows": [1, 2]})
    assert base == input_digest("code", {"rows": [1, 2], "n": 1})
    assert base != input_digest("code", {"n": 2, "rows": [1, 2]})
    assert base != input_digest("other code", {"n": 1, "rows": [1, 2]})


def test_input_digest_is_stable_across_processes() -> None:
    script = (
        "import pandas as pd\nfrom durable_nb.notebook.cell import input_digest\n"
        "print(input_digest('fp', {'s': {'b', 'a'}, 'df': pd.DataFrame({'x': [1, 2]}), 'd': {'k': 1.5}}))"
    )
    outs = {
        subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                       env={"PYTHONHASHSEED": seed, "PATH": ""}).stdout
        for seed in ("1", "2")
    }
    assert len(outs) == 1


# ---------------------------------------------------------------- outputs


def test_pack_namespace_keeps_the_picklable_names() -> None:
    import threading

    packed = pack_namespace(["a", "lock", "mod", "absent"], {"a": [1], "lock": threading.Lock(), "mod": types})
    assert set(packed.values) == {"a"} and packed.modules == {"mod": "types"}
    assert packed.skipped["lock"].startswith("_thread.lock: TypeError")
    restored, failed = unpack_namespace(packed.values, {**packed.modules, "gone": "no_such_module_xyz"})
    assert restored["a"] == [1] and restored["mod"] is types
    assert "gone" in failed


def test_names_pickled_together_share_one_blob_that_an_older_version_cannot_mistake_for_a_value() -> None:
    import pickle

    shared = {"k": 1}
    packed = pack_namespace(["a", "b"], {"a": shared, "b": [shared]})
    assert packed.values["a"] is packed.values["b"]  # one bytes object: the journal stores it once
    with pytest.raises(pickle.UnpicklingError):  # what a version before it does with it: reports, not binds
        pickle.loads(packed.values["a"])
    restored, failed = unpack_namespace(packed.values, {})
    assert failed == {} and restored["b"][0] is restored["a"]


class _Shell:
    """Just enough of a shell for the recorder: a display publisher."""

    def __init__(self) -> None:
        from IPython.core.displaypub import DisplayPublisher

        class Pub(DisplayPublisher):
            shown: ClassVar[list[Any]] = []

            def publish(self, data: Any, metadata: Any = None, *args: Any, **kwargs: Any) -> None:
                self.shown.append(data)

        self.display_pub = Pub()


def test_recorder_keeps_one_ordered_list_and_tees(capsys: pytest.CaptureFixture[str]) -> None:
    shell = _Shell()
    recorder = OutputRecorder(shell)
    with recorder.recording():
        print("a")
        print("b")
        shell.display_pub.publish({"text/html": "<b>x</b>"}, {})
        print("err", file=sys.stderr)
        print("c")
    assert recorder.outputs == [
        ("stdout", "a\nb\n"), ("display", {"text/html": "<b>x</b>"}, {}), ("stderr", "err\n"), ("stdout", "c\n")
    ]
    captured = capsys.readouterr()
    assert captured.out == "a\nb\nc\n" and captured.err == "err\n"  # shown live
    assert shell.display_pub.shown == [{"text/html": "<b>x</b>"}]
    assert "publish" not in vars(shell.display_pub)  # restored


def test_a_loop_of_prints_is_recorded_in_linear_time() -> None:
    """8 MB printed line by line: joining each write onto the text so far copied gigabytes (a minute in a kernel)."""
    recorder = OutputRecorder(_Shell())
    line = "x" * 999 + "\n"
    start = time.perf_counter()
    with recorder.streams():
        for _ in range(8000):
            sys.stdout.write(line)
    elapsed = time.perf_counter() - start
    assert recorder.outputs == [("stdout", line * 8000)]
    assert elapsed < 1.0, f"recording 8 MB took {elapsed:.1f} s"


def test_a_replay_sends_what_was_printed_before_it_ahead_of_its_stderr(monkeypatch: pytest.MonkeyPatch) -> None:
    """A kernel sends stdout and stderr separately: the replay notice must not arrive after the cell's stderr."""
    sent: list[str] = []

    class Buffered:
        def __init__(self, name: str) -> None:
            self.name, self.pending = name, ""

        def write(self, text: str) -> int:
            self.pending += text
            return len(text)

        def flush(self) -> None:
            if self.pending:
                sent.append(f"{self.name}:{self.pending}")
            self.pending = ""

    monkeypatch.setattr(sys, "stdout", Buffered("out"))
    monkeypatch.setattr(sys, "stderr", Buffered("err"))
    print("replayed cell 'bar'")
    replay_outputs(_Shell(), [("stderr", "100%\n"), ("stdout", "done\n")])
    assert sent == ["out:replayed cell 'bar'\n", "err:100%\n", "out:done\n"]
