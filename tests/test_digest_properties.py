"""Digests, property-based: equal in every process whatever ``PYTHONHASHSEED``, different for different values.

Generated nested values (containers, sets and frozensets at any depth,
dataclasses, objects with ``__dict__`` or ``__slots__``, ``SimpleNamespace``,
``Counter``, numpy arrays of many dtypes including ``object``, DataFrames with
mixed object columns, ``Decimal``, tz-aware datetimes, NaN, -0.0) are pickled to
child processes started with three different hash seeds; each child digests all
of them in one go (one process per seed keeps this fast), and every digest must
equal the parent's. A set unpickled under another seed iterates in another
order, and an object array holds other pointers, so this is the real test.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import decimal
import json
import os
import pickle
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from durable_nb.journal.digest import digest, digest_value


@dataclasses.dataclass
class Box:
    item: Any


@dataclasses.dataclass(frozen=True)
class Tagged:
    name: str
    tags: frozenset


class Plain:
    def __init__(self, item: Any) -> None:
        self.item = item

    def __eq__(self, other: object) -> bool:
        return type(other) is Plain and same(self.item, other.item)  # type: ignore[attr-defined]


class Slotted:
    __slots__ = ("item", "tags")

    def __init__(self, item: Any, tags: set) -> None:
        self.item = item
        self.tags = tags


# ---------------------------------------------------------------- strategies

texts = st.text(max_size=6)
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), texts, st.binary(max_size=4),
    st.decimals(allow_nan=False, allow_infinity=False, places=3),
    st.datetimes(timezones=st.none() | st.timezones()),
    st.sampled_from([float("nan"), -0.0, 0.0]),
)
hashables = st.one_of(texts, st.integers(), st.tuples(texts, st.integers()))
numpy_dtypes = st.sampled_from(
    ["int8", "int64", "uint16", "float32", "float64", "complex128", "bool", "U4", "S3", "datetime64[s]",
     "timedelta64[ms]"]
)
numeric_arrays = numpy_dtypes.flatmap(
    lambda dt: hnp.arrays(dtype=np.dtype(dt), shape=hnp.array_shapes(min_dims=0, max_dims=2, max_side=3))
)
object_arrays = st.lists(scalars | st.sets(texts, max_size=3), max_size=4).map(
    lambda items: np.array([*items, None], dtype=object)[:-1] if items else np.empty(0, dtype=object)
)
frames = st.lists(
    st.tuples(st.integers(-3, 3), st.one_of(st.integers(0, 2), st.sampled_from(["0", "1", "2", "None"]), st.none(),
                                              st.just(float("nan")), st.lists(st.integers(0, 2), max_size=2),
                                              st.dictionaries(texts, st.integers(0, 2), max_size=2))),
    max_size=4,
).map(lambda rows: pd.DataFrame({"n": [r[0] for r in rows], "mixed": pd.Series([r[1] for r in rows], dtype=object)}))


def _containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.lists(children, max_size=3),
        st.lists(children, max_size=3).map(tuple),
        st.dictionaries(texts, children, max_size=3),
        st.sets(hashables, max_size=4),
        st.frozensets(hashables, max_size=4),
        children.map(Box),
        children.map(Plain),
        st.builds(Slotted, children, st.sets(texts, max_size=3)),
        st.builds(Tagged, texts, st.frozensets(texts, max_size=3)),
        st.dictionaries(st.sampled_from("abcd"), children, max_size=3).map(lambda d: types.SimpleNamespace(**d)),
        st.dictionaries(texts, st.integers(0, 5), max_size=3).map(collections.Counter),
    )


values = st.recursive(scalars | numeric_arrays | object_arrays | frames, _containers, max_leaves=12)

ISSUE_VALUES = [
    types.SimpleNamespace(tags={"vip", "eu", "new", "b2b"}),
    collections.Counter({"apple": 3, "pear": 1, "fig": 2, "kiwi": 5}),
    Box({"x", "y", "z", "w"}),
    Plain({"alpha", "beta", "gamma"}),
    Slotted(1, {"s1", "s2", "s3"}),
    np.array(["a", 1, None, {"k"}], dtype=object),
    pd.DataFrame({"a": [1, "1", None, "None"], "b": [[1, 2], {"k": 1}, {"s", "t"}, 3.5]}),
    decimal.Decimal("-0.00"),
    datetime.datetime(2024, 3, 31, 2, 30, tzinfo=datetime.timezone(datetime.timedelta(hours=2))),
    [float("nan"), -0.0, {"k": frozenset({"p", "q", "r"})}],
]


# ---------------------------------------------------------------- exact sameness (what "different" means)


def same(a: Any, b: Any) -> bool:
    """Equal and of the same types all the way down (NaN equals NaN, -0.0 differs from 0.0)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return a.hex() == b.hex()
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (set, frozenset, decimal.Decimal, datetime.datetime)):
        return pickle.dumps(a) == pickle.dumps(b) if not isinstance(a, (set, frozenset)) else _same_set(a, b)
    if isinstance(a, np.ndarray):
        if a.dtype != b.dtype or a.shape != b.shape:
            return False
        return same(a.tolist(), b.tolist()) if a.dtype.hasobject else a.tobytes() == b.tobytes()
    if isinstance(a, pd.DataFrame):
        return list(a.columns) == list(b.columns) and all(
            same(a[c].to_numpy(), b[c].to_numpy()) for c in a.columns
        )
    if isinstance(a, (Box, Tagged, types.SimpleNamespace)):
        return same(vars(a) if not isinstance(a, Tagged) else (a.name, a.tags),
                    vars(b) if not isinstance(b, Tagged) else (b.name, b.tags))
    if isinstance(a, Slotted):
        return same((a.item, a.tags), (b.item, b.tags))
    return bool(a == b)


def _same_set(a: Any, b: Any) -> bool:
    return len(a) == len(b) and all(any(same(x, y) for y in b) for x in a)


# ---------------------------------------------------------------- the properties


CHILD = """
import json, pickle, sys
from durable_nb.journal.digest import digest_value
values = pickle.loads(open(sys.argv[1], "rb").read())
print(json.dumps([digest_value(v) for v in values]))
"""


def digests_in_child(path: Path, seed: str) -> list[str]:
    tests_dir = str(Path(__file__).parent)
    env = {**os.environ, "PYTHONHASHSEED": seed,
           "PYTHONPATH": os.pathsep.join([tests_dir, os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", CHILD, str(path)], env=env, capture_output=True, text=True,
                         check=True, timeout=240)
    return json.loads(out.stdout)


def test_generated_values_digest_equal_in_processes_with_three_other_hash_seeds(tmp_path: Path):
    collected: list[Any] = []

    @settings(max_examples=250, database=None, deadline=None, suppress_health_check=list(HealthCheck))
    @given(values)
    def collect(value: Any) -> None:
        collected.append(value)

    collect()
    batch = ISSUE_VALUES + collected
    expected = [digest_value(v) for v in batch]
    path = tmp_path / "values.pickle"
    path.write_bytes(pickle.dumps(batch))
    for seed in ("0", "1", "4242"):
        got = digests_in_child(path, seed)
        mismatched = [repr(batch[i])[:120] for i, (x, y) in enumerate(zip(expected, got, strict=True)) if x != y]
        assert not mismatched, f"PYTHONHASHSEED={seed} digests differ for: {mismatched[:5]}"


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(values, values)
def test_values_of_different_types_or_content_digest_differently(a: Any, b: Any):
    if not same(a, b):
        assert digest_value(a) != digest_value(b)


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(values)
def test_a_pickled_copy_digests_equal(value: Any):
    assert digest_value(pickle.loads(pickle.dumps(value))) == digest_value(value)


plain_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text() | st.binary(),
    lambda inner: st.lists(inner, max_size=4) | st.tuples(inner, inner)
    | st.dictionaries(st.text(max_size=8) | st.integers(), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(plain_values)
def test_the_fast_path_for_plain_data_gives_the_general_encoders_bytes(value: Any):
    """Digests must not depend on which path made them (``digest_plain`` is only a shortcut)."""
    from durable_nb.journal import digest as general
    from durable_nb.journal.digest_plain import encode_plain

    fast: list[bytes] = []
    encode_plain(value, fast, 1)
    slow: list[bytes] = []
    token = general._memo.set({})
    try:
        general._encode(value, slow, 1)
    finally:
        general._memo.reset(token)
    assert b"".join(fast) == b"".join(slow)


# ---------------------------------------------------------------- the cases of issue 9, by name


def test_mixed_object_columns_are_type_sensitive_and_list_cells_digest():
    ones = pd.DataFrame({"id": [1, 2], "v": [1, "x"]})
    strings = pd.DataFrame({"id": [1, 2], "v": ["1", "x"]})
    assert digest_value(ones) != digest_value(strings)
    assert digest_value(pd.Series([None, "a"])) != digest_value(pd.Series(["None", "a"]))
    assert digest_value(np.array([1, "a"], dtype=object)) != digest_value(np.array(["1", "a"], dtype=object))
    listy = pd.DataFrame({"items": [[1, 2], {"sku": "a"}]})
    assert digest_value(listy) == digest_value(listy.copy(deep=True))
    assert digest_value(listy) != digest_value(pd.DataFrame({"items": [[1, 3], {"sku": "a"}]}))
    assert digest_value(pd.DataFrame({1: [1]})) != digest_value(pd.DataFrame({"1": [1]}))


def test_sets_inside_objects_digest_by_content_not_by_order():
    assert digest_value(types.SimpleNamespace(tags={"a", "b", "c"})) == digest_value(
        types.SimpleNamespace(tags={"c", "b", "a"}))
    assert digest_value(collections.Counter(a=1, b=2)) == digest_value(collections.Counter(b=2, a=1))
    assert digest_value(collections.Counter(a=1)) != digest_value({"a": 1})
    assert digest_value(Slotted(1, {"x", "y"})) != digest_value(Slotted(1, {"x", "z"}))


#: Digests written by durable_nb before issue 9 (computed with the previous digest.py): the values it
#: already digested right keep their digest, so journals written before keep matching.
LEGACY = [
    (((), {}), "b13836b4229a60dbfa9e009147ed7271"),
    (((1, 2.5, "s", b"b", None, True), {}), "26668ce09ec3f7e79fecda8b00c55934"),
    ((({"b": 1, "a": {"x", "y", "z"}},), {"k": frozenset({"p", "q"})}), "b813b5601d8721f9b5dba78d8741f5f0"),
    (((pd.DataFrame({"a": [1, 2], "b": ["x", "y"]}),), {}), "bf6366ddc15e7e8140381fdcdf2099db"),
    (((pd.Series([1.5, 2.5], name="s"),), {}), "193efcd22746e5ced21c84d8a3d1ff98"),
    ((([("nested", [1, {"d": 2}])],), {"flag": False}), "a724f9f531c66447652c37ed0bd46d02"),
    (((decimal.Decimal("1.10"), datetime.datetime(2020, 1, 2, tzinfo=datetime.timezone.utc)), {}),
     "103e66eec42275f387e1c8448d98c211"),
    (((types.SimpleNamespace(a=1, b="x"),), {}), "11f14da6fac969ed29fb5367f7683e0f"),
    (((collections.OrderedDict(a=1),), {}), "e9db1356afc2fb65814c9c22b598cfcc"),
    (((np.arange(5), np.array([1.5, -0.0]), np.array(["a", "b"])), {}), "945a5a675d19a9df6692ec35b8031cbf"),
    ((("o1", 10), {}), "1f912989e1f07214a1260b4b5b35c340"),
    (((float("nan"), -0.0, 0.0), {}), "5c9a2deaa85642545a4ee2f02c56da08"),
]


def test_digests_that_were_right_before_are_unchanged():
    for (args, kwargs), expected in LEGACY:
        assert digest(args, kwargs) == expected, args
