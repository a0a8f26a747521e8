"""Argument digests: equal arguments digest equal in every process, different ones differ."""

from __future__ import annotations

import builtins
import collections
import dataclasses
import enum
import io
import json
import os
import subprocess
import sys
import textwrap
import threading
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from durable_nb.errors import UnpicklableArgumentWarning
from durable_nb.journal.digest import digest, digest_value

SAMPLE = textwrap.dedent(
    """
    import json, sys
    import pandas as pd
    from durable_nb.journal.digest import digest
    values = [
        ((), {}),
        ((1, 2.5, "s", b"b", None, True), {}),
        (({"b": 1, "a": {"x", "y", "z"}},), {"k": frozenset({"p", "q"})}),
        ((pd.DataFrame({"a": [1, 2], "b": ["x", "y"]}),), {}),
        (([("nested", [1, {"d": 2}])],), {"flag": False}),
    ]
    print(json.dumps([digest(a, k) for a, k in values]))
    """
)


def run_in_fresh_process(seed: str) -> list[str]:
    env = {**os.environ, "PYTHONHASHSEED": seed}
    out = subprocess.run([sys.executable, "-c", SAMPLE], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_digests_are_stable_across_processes_with_different_hash_seeds():
    assert run_in_fresh_process("1") == run_in_fresh_process("2") == run_in_fresh_process("random")


def test_dict_order_and_set_order_do_not_matter():
    assert digest(({"a": 1, "b": 2},), {}) == digest(({"b": 2, "a": 1},), {})
    assert digest_value({3, 1, 2}) == digest_value({1, 2, 3})
    assert digest((), {"x": 1, "y": 2}) == digest((), {"y": 2, "x": 1})


def test_types_are_part_of_the_digest():
    values = [1, 1.0, True, "1", b"1", (1,), [1], {1}, frozenset({1}), None]
    assert len({digest_value(v) for v in values}) == len(values)


def test_args_and_kwargs_are_distinguished():
    assert digest((1,), {}) != digest((), {"x": 1})
    assert digest((1, 2), {}) != digest((2, 1), {})


def test_dataframes_digest_by_content():
    a = pd.DataFrame({"x": [1, 2, 3]})
    assert digest_value(a) == digest_value(a.copy())
    assert digest_value(a) != digest_value(pd.DataFrame({"x": [1, 2, 4]}))
    assert digest_value(a) != digest_value(pd.DataFrame({"y": [1, 2, 3]}))


def test_a_categorical_digests_its_categories_and_their_order():
    # Was: only the values and str(dtype) ("category") were digested, so after
    # ``reorder_categories(..., ordered=True)`` a durable call replayed the result of the old order.
    sizes = pd.Series(["S", "M", "L", "S"])
    plain = sizes.astype("category")
    ranked = sizes.astype(pd.CategoricalDtype(["S", "M", "L"], ordered=True))
    unordered = sizes.astype(pd.CategoricalDtype(["S", "M", "L"]))
    assert plain.sort_values().tolist() != ranked.sort_values().tolist()
    assert len({digest_value(v) for v in (plain, ranked, unordered)}) == 3
    assert digest_value(pd.DataFrame({"size": plain})) != digest_value(pd.DataFrame({"size": ranked}))
    indexed = pd.DataFrame({"n": [1, 2]}, index=pd.CategoricalIndex(["a", "b"], categories=["b", "a"]))
    assert digest_value(indexed) != digest_value(indexed.set_axis(pd.CategoricalIndex(["a", "b"])))
    # the default categories (what astype makes) digest as before: journals written before keep matching
    assert digest_value(plain) == digest_value(sizes.astype(pd.CategoricalDtype(["L", "M", "S"])))
    assert digest_value(plain) == "8d0f2b77300066e0935d665c1837e9a1"


def test_a_filtered_categorical_frame_digests_as_journals_written_before_it():
    # Was: categories in sorted order that the values do not all use (what ``astype("category")`` then a
    # filter makes) counted as set by hand, so a call journaled before categories were digested did not
    # match after the upgrade: discarded and executed again (a second charge). The digests of 07208f4.
    orders = pd.DataFrame({"size": ["S", "M", "L", "S"], "n": [1, 2, 3, 4]}).astype({"size": "category"})
    small = orders[orders["size"] != "L"]
    assert digest_value(small) == "d9ec24be4ae05adbb9fb8f1d8c052e54"
    assert digest_value(small["size"]) == "97f11a141e3ebe95e73023a5f04592b5"
    assert digest_value(small.set_index("size")) == "b68bddd8f45e7ec11b07d78e32f55fe0"
    wider = pd.Series(["S", "M", "L", "S"]).astype(pd.CategoricalDtype(["L", "M", "S", "XL"]))
    assert digest_value(wider) == "8d0f2b77300066e0935d665c1837e9a1"


def test_pandas_values_that_are_not_frames_digest_by_their_pickle():
    # A Categorical array, a Timestamp or a Period are pandas values with no index: digesting one must not look
    # for the categorical settings of frames (it raised AttributeError, so the durable call failed).
    values = [pd.Categorical(["a", "b"]), pd.Categorical(["a", "b"], categories=["b", "a"], ordered=True),
              pd.Timestamp("2020-01-01", tz="UTC"), pd.Period("2020-01", freq="M"), pd.Interval(0, 1)]
    assert len({digest_value(v) for v in values}) == len(values)


class Color(enum.Enum):
    RED = 1


@dataclasses.dataclass
class Order:
    id: str
    tags: set


def test_dataclasses_and_enums_digest_by_value():
    assert digest_value(Order("a", {"x", "y"})) == digest_value(Order("a", {"y", "x"}))
    assert digest_value(Order("a", set())) != digest_value(Order("b", set()))
    assert digest_value(Color.RED) == digest_value(Color(1))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=20,
)


@given(json_values)
def test_a_deep_copy_digests_equal(value):
    assert digest_value(value) == digest_value(json.loads(json.dumps(value)))


@given(json_values, json_values)
def test_different_json_values_digest_different(a, b):
    if json.dumps(a, sort_keys=True) != json.dumps(b, sort_keys=True):
        assert digest_value(a) != digest_value(b)


def _compiled(src: str, filename: str) -> dict:
    ns: dict = {"__name__": "__main__"}  # as a notebook defines them
    exec(compile(src, filename, "exec"), ns)
    return ns


def test_notebook_functions_and_lambdas_count_by_code_not_by_the_kernel_that_compiled_them():
    """A kernel compiles each cell in /tmp/ipykernel_<pid>/...: a lambda's cloudpickle bytes held that name, so
    after a restart a call taking it was another call (its recovery charged again). A notebook function was
    pickled by name only, so an edited one inside a container digested as before (a stale replay)."""
    src = "f = lambda s: s.upper()\ndef double(x):\n    return 2 * x\nsteps = {'d': double, 'f': f}\n"
    first = _compiled(src, "/tmp/ipykernel_101/2817.py")
    again = _compiled("\n\n" + src, "/tmp/ipykernel_202/9350.py")  # another kernel, other line numbers
    edited = _compiled(src.replace("2 * x", "3 * x").replace("upper", "lower"), "/tmp/ipykernel_202/1.py")
    for name in ("f", "double", "steps"):
        assert digest_value(first[name]) == digest_value(again[name]), name
        assert digest_value(first[name]) != digest_value(edited[name]), name
    import functools

    assert digest_value(functools.partial(first["f"], 1)) == digest_value(functools.partial(again["f"], 1))
    assert digest_value(functools.partial(first["f"], 1)) != digest_value(functools.partial(edited["f"], 1))
    cyclic = _compiled("box = []\ndef g(x=box):\n    return x\nbox.append(g)\n", "/tmp/k/1.py")
    assert digest_value(cyclic["g"]) == digest_value(_compiled("box = []\ndef g(x=box):\n    return x\n"
                                                                "box.append(g)\n", "/tmp/k/2.py")["g"])
    assert digest_value(json.dumps) == digest_value(json.dumps)  # a library function still counts by name


_COPY_SIDE = """
import pickle, sys, dataclasses
from durable_nb.journal.digest import digest_value
from durable_nb.runners.mapping import key_text
order, customer, key = pickle.loads(sys.stdin.buffer.read())
print(dataclasses.asdict(order), digest_value(order), digest_value(customer), key_text(customer), key_text(key))
"""

_NOTEBOOK_SIDE = """
import dataclasses, os, subprocess, sys
import cloudpickle
import durable_nb  # registers how dataclasses' markers pickle
from durable_nb.journal.digest import digest_value
from durable_nb.runners.mapping import key_text

@dataclasses.dataclass
class Order:
    id: int
    amount: float

class Customer:
    def __init__(self, name):
        self.name = name

order, customer, key = Order(1, 10.0), Customer("ann"), ("k", frozenset({"a", "b", "c", "d"}))
print(dataclasses.asdict(order), digest_value(order), digest_value(customer), key_text(customer), key_text(key))
env = dict(os.environ, PYTHONHASHSEED="7")
sys.stdout.flush()
blob = cloudpickle.dumps((order, customer, key))
subprocess.run([sys.executable, "-c", sys.argv[1]], input=blob, env=env, check=True)
"""


def test_a_process_holding_copies_of_the_notebooks_classes_digests_and_names_runs_as_the_notebook_does():
    """A Flink worker gets a notebook's classes as cloudpickle copies. A dataclass copy had no fields
    (cloudpickle 2 copied dataclasses' markers: ``asdict`` gave ``{}`` and every record digested alike, so
    an edited record replayed the old charge), an instance of a plain class digested from other bytes
    (pickle by value there, by name in the notebook), and a frozenset key's run id followed the hash seed."""
    env = dict(os.environ, PYTHONHASHSEED="3", PYTHONPATH=os.pathsep.join(sys.path))
    out = subprocess.run([sys.executable, "-c", _NOTEBOOK_SIDE, _COPY_SIDE], capture_output=True, text=True,
                         env=env, check=True).stdout.splitlines()
    assert len(out) == 2 and out[0] == out[1], out
    assert out[0].startswith("{'id': 1, 'amount': 10.0} ")
    assert "frozenset({'a', 'b', 'c', 'd'})" in out[0]


def test_an_unpicklable_object_of_a_notebook_class_still_counts_by_its_type():
    """Notebook classes now digest by their state; one that cannot be pickled (a client holding a lock and a
    session id) must keep counting by type, or each new session would make a recovery another call."""
    import threading
    import uuid
    import warnings

    ns = _compiled("class Client:\n    def __init__(self, session, lock):\n        self.session = session\n"
                   "        self.lock = lock\n", "/tmp/ipykernel_7/1.py")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = ns["Client"](uuid.uuid4().hex, threading.Lock())
        b = ns["Client"](uuid.uuid4().hex, threading.Lock())
        assert digest_value(a) == digest_value(b)
        assert digest_value([a, 1]) == digest_value([b, 1])


@pytest.mark.timeout(60)
def test_a_notebook_object_graph_with_back_links_digests_and_stays_equal_for_equal_graphs():
    """A tree whose nodes point back to their parent: the canonical walk unrolled every cycle, exponentially
    (three children never finished); such a graph keeps its pickle digest."""
    src = ("class Node:\n    def __init__(self, name, parent=None):\n        self.name, self.parent = name, parent\n"
           "        self.children = []\n        if parent is not None:\n            parent.children.append(self)\n")
    ns = _compiled(src, "/tmp/ipykernel_3/1.py")

    def tree(leaf: str) -> object:
        root = ns["Node"]("root")
        for i in range(6):
            child = ns["Node"](f"c{i}", root)
            for j in range(3):
                ns["Node"](f"{leaf}{i}{j}", child)
        return root

    assert digest_value(tree("x")) == digest_value(tree("x"))
    assert digest_value(tree("x")) != digest_value(tree("y"))


def test_a_lambda_argument_counts_by_the_immutable_globals_it_reads():
    """``lambda r: r["amount"] > limit`` after ``limit = 10``: the call replayed the result for ``limit = 100``
    (pickled by value, the lambda had carried ``limit``; its code fingerprint alone did not)."""
    ns = _compiled("limit = 100\nabove = lambda r: r['amount'] > limit\n", "/tmp/ipykernel_4/1.py")
    before = digest_value(ns["above"])
    ns["limit"] = 10
    assert digest_value(ns["above"]) != before
    ns["limit"] = 100
    assert digest_value(ns["above"]) == before
    ns["cache"] = {}  # a mutable global it does not read, or reads, does not count
    assert digest_value(ns["above"]) == before
    # an attribute it reads is not a global of that name (co_names lists both): r.status, global status
    ns2 = _compiled("status = 'A'\nok = lambda r: r.status == 'ok'\n", "/tmp/ipykernel_4/2.py")
    before = digest_value(ns2["ok"])
    ns2["status"] = "B"
    assert digest_value(ns2["ok"]) == before


@pytest.mark.timeout(60)
def test_a_dataclass_graph_with_parent_links_digests():
    """The dataclass branch walked parent links to the depth limit, branching: a root, a child and two
    grandchildren never finished (before this round too)."""
    ns = _compiled("import dataclasses\n@dataclasses.dataclass(eq=False)\nclass Node:\n    name: str\n"
                   "    parent: object = None\n    children: list = dataclasses.field(default_factory=list)\n",
                   "/tmp/ipykernel_6/1.py")

    def tree(leaf: str) -> object:
        root = ns["Node"]("root")
        for i in range(4):
            child = ns["Node"](f"c{i}", root)
            root.children.append(child)
            child.children = [ns["Node"](f"{leaf}{i}{j}", child) for j in range(3)]
        return root

    assert digest_value(tree("x")) == digest_value(tree("x")) != digest_value(tree("y"))


def test_text_inside_a_users_object_digests_by_value_not_by_object_identity():
    """Plain data inside a user's object went as pickle bytes for speed: equal strings that were one object
    (literals) or two (parsed from JSON), and dicts in another order, digested differently. Only lists of
    numbers go as bytes now."""
    ns = _compiled("class Order:\n    def __init__(self, tags, meta):\n        self.tags, self.meta = tags, meta\n",
                   "/tmp/ipykernel_7/2.py")
    literal = ns["Order"](["vip", "vip"], {"p": 1, "q": 2})
    parsed = ns["Order"](json.loads('["vip", "vip"]'), {"q": 2, "p": 1})
    assert digest_value(literal) == digest_value(parsed)


def test_a_memoising_default_does_not_change_a_functions_identity():
    """``def price(sku, _cache={})``: defaults counted by value, so each call that filled the cache made the
    function (a cell's input, or a lambda's call id) another one, and the cell ran again every time."""
    import warnings

    from durable_nb.journal.fingerprint import fingerprint_code

    ns = _compiled("import threading\nLOCK = threading.Lock()\ndef price(sku, _cache={}, lock=LOCK, n=2):\n"
                   "    _cache[sku] = 1\n    return n\n", "/tmp/ipykernel_5/1.py")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a lock as a default is not "an argument that cannot be pickled"
        before = fingerprint_code(ns["price"])
        ns["price"]("a")
        assert fingerprint_code(ns["price"]) == before
    ns["price"].__defaults__ = ({}, ns["LOCK"], 3)  # an immutable default still counts by value
    assert fingerprint_code(ns["price"]) != before


def test_set_keys_of_numbers_keep_the_run_ids_they_always_had():
    """Sorting every set's members renamed runs keyed by sets of numbers (their order never followed the hash
    seed): a map over the same records ran their calls again. Only sets holding text are sorted."""
    from durable_nb.runners.mapping import key_text

    for members in ({9, 10}, {1, 9, 17}, {3.5, -2, 100}, {(1, 2), (3, 4)}):
        key = frozenset(members)
        assert key_text(key) == f"~builtins.frozenset:{key!r}"
        assert key_text((0, key)) == repr((0, key))
    assert key_text(frozenset({"b", "a"})) == "~builtins.frozenset:frozenset({'a', 'b'})"


class _Declined(Exception):
    pass


@pytest.mark.parametrize("exc", [KeyError("kk"), _Declined("card"), FileNotFoundError(2, "gone", "f.csv")])
def test_an_exception_digests_the_same_once_its_empty_dict_was_read(exc: BaseException) -> None:
    before = digest_value(exc)
    exc.__dict__  # noqa: B018  # created on first access (journaling an exception reads it)
    assert digest_value(exc) == before


def test_an_exception_a_call_returned_or_raised_from_is_the_same_argument_on_replay() -> None:
    import warnings

    import durable_nb as dnb

    @dnb.durable(name="lookup")
    def lookup() -> KeyError:
        return KeyError("kk")

    @dnb.durable(name="wrap")
    def wrap(cause: KeyError) -> None:
        raise ValueError("lookup failed") from cause

    def action(_: None, ctx: dnb.RunnerContext) -> bool:
        missing = ctx.durable_execute(lookup)
        try:
            ctx.durable_execute(wrap, missing)
        except ValueError as exc:
            return repr(exc.__cause__) == repr(missing)  # equal, not the same object: each call has its payload
        return False

    store = dnb.MemoryStore()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a NonDeterminismWarning on replay, a ChangedInputWarning on the first run
        assert dnb.LocalRunner(store).run(action, None, run_id="r")
        assert dnb.LocalRunner(store).run(action, None, run_id="r")
    assert [c.status.value for c in store.calls("r")] == ["SUCCEEDED", "FAILED"]


class _Sentinel(Exception):
    def __reduce__(self) -> str:
        return "_SENTINEL"  # a module's singleton, pickled by its name


_SENTINEL = _Sentinel("stop")


class _OwnReduction(Exception):
    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), self.args, {}  # its own: always a state, read or not


def _self_referring() -> Exception:
    exc = _Declined("loop")
    exc.me = exc  # type: ignore[attr-defined]
    return exc


def _pickle_digest(obj: Any) -> str:
    import hashlib
    import pickle

    data = pickle.dumps(obj, protocol=4)
    return hashlib.blake2b(b"(1:p%d:" % len(data) + data, digest_size=16).hexdigest()


@pytest.mark.parametrize("make", [_self_referring, lambda: _SENTINEL, lambda: _OwnReduction("own")])
def test_an_exception_that_pickle_reduces_its_own_way_keeps_the_digest_of_its_pickle(
        make: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Journals written before keep matching: only a built-in reduction's empty ``__dict__`` is left out."""
    import warnings

    from durable_nb.journal import digest as digest_module

    monkeypatch.setattr(digest_module, "is_user_class", lambda cls: False)  # an installed package's exception
    exc = make()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # not "cannot be pickled ... digested by its type name only"
        assert digest_value(exc) == _pickle_digest(exc)


_GROUP = getattr(builtins, "ExceptionGroup", None)  # Python 3.11 on


@pytest.mark.parametrize("make", [
    pytest.param(lambda: _GROUP("several", [KeyError("kk"), ValueError("v")]),  # type: ignore[misc]
                 marks=pytest.mark.skipif(sys.version_info < (3, 11), reason="exception groups are Python 3.11's")),
    lambda: ValueError(KeyError("kk")),
    lambda: collections.OrderedDict(e=KeyError("kk")),
])
def test_an_exception_inside_a_pickled_argument_digests_the_same_once_its_empty_dict_was_read(make: Any) -> None:
    """An ExceptionGroup a call returned, passed to a later call, mismatched at every recovery as one exception did."""
    value, fresh = make(), make()
    inner = (*getattr(value, "args", ()), *getattr(value, "exceptions", ()), *getattr(value, "values", list)())
    for exc in (value, *inner):
        if isinstance(exc, BaseException):
            exc.__dict__  # noqa: B018  # what journaling the call that returned it does
    assert digest_value(value) == digest_value(fresh)


#: Frames as a notebook builds them, with their digests computed under pandas 2.2.3. Pandas 3 gives the
#: same data the ``str`` dtype (pandas 2: ``object``) and ``datetime64[us]`` (pandas 2: ``[ns]``): the test
#: runs under whichever pandas is installed, and a journal must outlive the upgrade either way.
PANDAS2_DIGESTS = [
    (lambda: pd.DataFrame({"a": [1, 2], "b": ["x", "y"]}), "bf6366ddc15e7e8140381fdcdf2099db"),
    (lambda: pd.Series(["x", "y"], name="s"), "ec4dbfc1b1e53a0b8a1100c434a39b5d"),
    (lambda: pd.DataFrame({"b": ["x", float("nan")]}), "1780aac1995ffd5c9ded94b442aee5c6"),
    (lambda: pd.DataFrame({"n": [1, 2]}, index=["r1", "r2"]), "f8d1c2b79ebcf152d86633d631559d4a"),
    (lambda: pd.Index(["a", "b"]), "8157c34121125f52c035f0aaa440a2ec"),
    (lambda: pd.DataFrame({"size": ["S", "M", "L", "S"], "n": [1, 2, 3, 4]}).astype({"size": "category"}),
     "b2636b944a8c76932e2e4d2711aa0c07"),
    (lambda: pd.DataFrame({"t": pd.to_datetime(["2020-01-01", "2020-01-02"]).tz_localize("Europe/Paris")}),
     "05acfe4f957ad24600c2aa874da7baaf"),
    (lambda: pd.DataFrame({"t": pd.to_datetime(["2020-01-01", "2020-01-02"])}), "c747499f9ae3453a31c5070e86d09caa"),
    (lambda: pd.Series(pd.date_range("2020-01-01", periods=3, freq="D")), "b394a33b5723b21c5354058481472687"),
    (lambda: pd.DataFrame({"id": ["o1", "o2"], "amount": [10, 20]}).iloc[0], "81d143ee58824b12932586cea66f557a"),
    (lambda: pd.read_csv(io.StringIO("id,name\n1,a\n2,\n")), "b4d2b05214115282bacc522ce588dba0"),
    # A unit asked for explicitly (or numpy's) is the same on both: pandas 3 must not turn it into ns.
    (lambda: pd.Series(np.array(["2021-01-01", "2021-01-02"], dtype="datetime64[s]")),
     "c6e591327522b921df1e0f540d611a49"),
    (lambda: pd.DataFrame({"t": np.array(["2021-01-01T10:00:00.250"], dtype="datetime64[ms]")}),
     "d3c2d8c2dd581672594965e98e471588"),
    (lambda: pd.Series(np.array([1, 2], dtype="timedelta64[s]")), "3cfb8f6b701548b198f56b2ad645381b"),
]


@pytest.mark.parametrize("make, expected", PANDAS2_DIGESTS)
def test_frames_digest_as_under_pandas_2_whatever_pandas_is_installed(make, expected):
    # Was: under pandas 3 every one of these but the categorical digested otherwise ("str" for "object",
    # datetime64[us] for [ns]), so after a pandas upgrade the calls taking them were mismatches, executed again.
    assert digest_value(make()) == expected


def test_text_and_dates_that_differ_still_digest_differently():
    frames = [pd.DataFrame({"b": ["x", "y"]}), pd.DataFrame({"b": ["x", "z"]}), pd.DataFrame({"b": ["x", None]}),
              pd.DataFrame({"b": ["x", ""]}), pd.DataFrame({"b": pd.Series(["x", "y"], dtype="string")}),
              pd.DataFrame({"b": pd.to_datetime(["2020-01-01", "2020-01-02"])}),
              pd.DataFrame({"b": pd.to_datetime(["2020-01-01", "2020-01-03"])}),
              pd.DataFrame({"b": pd.to_datetime(["2020-01-01", "2020-01-02"]).tz_localize("UTC")})]
    assert len({digest_value(f) for f in frames}) == len(frames)
    far = pd.Series(np.array(["2500-01-01"], dtype="datetime64[s]"))  # out of the ns range: digested as is
    assert digest_value(far) != digest_value(pd.Series(np.array(["2501-01-01"], dtype="datetime64[s]")))


ROWS = "import pandas as pd; from durable_nb.journal.digest import digest_value; " \
    "print(digest_value(next(pd.DataFrame({'id': ['o1'], 'amount': [10]}).itertuples(index=False))))"


def test_an_itertuples_row_digests_equal_in_every_process():
    # Was: its class (pandas' "Pandas" namedtuple) cannot be found by name, so cloudpickle held it by value
    # with a tracker id new in every process: a call passed such a row was executed again at each recovery.
    runs = {subprocess.run([sys.executable, "-c", ROWS], capture_output=True, text=True, check=True).stdout
            for _ in range(2)}
    assert len(runs) == 1
    row = next(pd.DataFrame({"id": ["o1"], "amount": [10]}).itertuples(index=False))
    assert digest_value(row) != digest_value(row._replace(amount=11))


NESTED_ORDERED = "import collections; from durable_nb.journal.digest import digest_value; " \
    "OD = collections.OrderedDict; print(digest_value(OD(a=OD(k=[1j]), b=OD(y={'p', 'q', 'r', 's'}))))"


def test_nested_ordered_dicts_holding_a_set_digest_equal_in_every_process():
    # Was: the walk deciding whether an object needs the canonical encoding remembered the ids of the
    # temporaries __reduce_ex__ makes (item lists, state dicts) without holding them; a later temporary
    # reusing a freed id counted as seen, the set behind it was missed, and the object digested by its
    # pickle, whose set order follows PYTHONHASHSEED: every recovery was a mismatch, executed again. A
    # requests.Session (its retry policy holds frozensets) passed to a call did the same.
    env = dict(os.environ)
    runs = {subprocess.run([sys.executable, "-c", NESTED_ORDERED], env={**env, "PYTHONHASHSEED": seed},
                           capture_output=True, text=True, check=True).stdout for seed in ("1", "2", "3", "4")}
    assert len(runs) == 1


@pytest.mark.pyarrow
def test_frames_with_nested_arrow_columns_digest_by_content():
    # Was: hash_pandas_object cannot hash list, struct or map values, so a call passed such a frame
    # (pd.read_parquet(..., dtype_backend="pyarrow") of nested data) raised TypeError before it ran.
    import pyarrow as pa

    kinds = {"list": (pa.list_(pa.int64()), [[1, 2], [3]], [[1, 2], [4]]),
             "struct": (pa.struct([("k", pa.int64())]), [{"k": 1}, {"k": 2}], [{"k": 1}, {"k": 3}]),
             "map": (pa.map_(pa.string(), pa.int64()), [[("k", 1)], []], [[("k", 2)], []])}
    for kind, (typ, values, other) in kinds.items():
        frame = pd.DataFrame({"a": pd.array(values, dtype=pd.ArrowDtype(typ)), "n": [1, 2]})
        changed = pd.DataFrame({"a": pd.array(other, dtype=pd.ArrowDtype(typ)), "n": [1, 2]})
        assert digest_value(frame) == digest_value(frame.copy()), kind
        assert digest_value(frame) != digest_value(changed), kind
        assert digest_value(frame["a"]) != digest_value(changed["a"]), kind


@dataclasses.dataclass(frozen=True)
class Stamped:
    id: str
    created: float = dataclasses.field(default=0.0, compare=False)
    cache: dict = dataclasses.field(default_factory=dict, compare=False, repr=False)


def test_a_dataclass_field_left_out_of_equality_is_left_out_of_the_digest():
    # Was: every field counted, so an order whose ``created`` stamp (default_factory=time.time) or cache is
    # excluded from ``==`` digested otherwise when the notebook built it again after a restart: its
    # recovery was a mismatch and the call executed again (a second charge). Equal arguments digest equal.
    first, rebuilt = Stamped("o1", created=1.0), Stamped("o1", created=2.0, cache={"k": 1})
    assert first == rebuilt
    assert digest_value(first) == digest_value(rebuilt)
    assert digest_value(first) != digest_value(Stamped("o2", created=1.0))


BOUND = "from durable_nb.journal.digest import digest_value\n" \
    "class Customer:\n    def __init__(self, tags): self.tags = tags\n    def notify(self, x): return x\n" \
    "print(digest_value(Customer({'vip', 'eu', 'new', 'b2b'}).notify))"


def test_a_bound_method_argument_digests_equal_in_every_process():
    # Was: a bound method counted as a global, its object was not walked, and the method digested by its
    # pickle, which holds the object's sets in PYTHONHASHSEED's order: a call passed callback=customer.notify
    # was a mismatch at every recovery in a new kernel, and executed again.
    runs = {subprocess.run([sys.executable, "-c", BOUND], env={**os.environ, "PYTHONHASHSEED": seed},
                           capture_output=True, text=True, check=True).stdout for seed in ("1", "2", "3")}
    assert len(runs) == 1


class _Client:
    def __init__(self) -> None:
        self.lock = threading.Lock()

    def charge(self, amount: int) -> int:
        return amount

    def refund(self, amount: int) -> int:
        return amount


def test_methods_of_an_unpicklable_client_digest_by_their_names():
    # Was: such a method counted by its type only ("builtins.method"), so callback=client.charge and
    # callback=client.refund were the same argument and a call replayed the other's result.
    client = _Client()
    with pytest.warns(UnpicklableArgumentWarning):
        charge, refund = digest_value(client.charge), digest_value(client.refund)
    assert charge != refund
    assert charge == digest_value(_Client().charge)  # a new client after a restart: the same argument
