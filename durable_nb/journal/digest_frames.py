"""Digests of pandas objects (DataFrame, Series, Index); see :mod:`durable_nb.journal.digest`.

``hash_pandas_object`` is content-based and seed-fixed, but it hashes object
columns through ``str()``: exact only when those hold nothing but ``str``. Such
frames keep that digest (journals written before keep matching); any other frame
is digested label by label and, for object columns, element by element.

Pandas 3 gives the same data other dtypes (``str`` for text, ``datetime64[us]`` for
parsed dates); :func:`as_pandas2` turns them back into pandas 2's before digesting,
so a journal outlives a pandas upgrade (and a Flink job on pandas 2 reads a
notebook's journal written on pandas 3).
"""

from __future__ import annotations

from typing import Any

from . import digest as _d


def encode_pandas(obj: Any, out: list[bytes], depth: int = 0) -> None:
    import pandas as pd

    if not isinstance(obj, (pd.DataFrame, pd.Series, pd.Index)):
        _d._encode_pickled(obj, out, depth)  # a Categorical, Timestamp, ...: its pickle holds its categories
        return
    obj = as_pandas2(obj)
    if pandas_exact(obj):
        # hash_pandas_object is content-based and seed-fixed: stable across processes,
        # and exact here (str labels, object columns of str only). Kept as it was, so
        # journals written before keep matching.
        hashed = pd.util.hash_pandas_object(obj, index=not isinstance(obj, pd.Index))
        out.append(b"P" + type(obj).__name__.encode() + b";")
        if isinstance(obj, pd.DataFrame):
            _d._encode([str(c) for c in obj.columns], out)
            _d._encode([str(d) for d in obj.dtypes], out)
        else:
            _d._encode([str(obj.name), str(obj.dtype)], out)
        out.append(hashed.to_numpy().tobytes())
    else:
        out.append(b"Q" + type(obj).__name__.encode() + b";")
        if isinstance(obj, pd.DataFrame):
            _d._encode(list(obj.columns), out, depth + 1)
            _d._encode([str(d) for d in obj.dtypes], out)
            _encode_labels(obj.index, out, depth)
            for i in range(obj.shape[1]):
                _encode_values(obj.iloc[:, i], out, depth)
        elif isinstance(obj, pd.Series):
            _d._encode([obj.name, str(obj.dtype)], out, depth + 1)
            _encode_labels(obj.index, out, depth)
            _encode_values(obj, out, depth)
        else:
            _encode_labels(obj, out, depth)
    settings = _category_settings(obj)
    if settings:
        out.append(b"K")
        _d._encode(settings, out, depth + 1)


def as_pandas2(obj: Any) -> Any:
    """``obj`` with pandas 3's default dtypes turned into the ones pandas 2 gives the same data (a copy).

    Why: pandas 3 reads text into the ``str`` dtype (pandas 2: ``object``) and parses dates to
    ``datetime64[us]`` (pandas 2: ``[ns]``), and both dtype name and hash went into the digest: after a
    pandas upgrade (or between a notebook on pandas 3 and a Flink job on pandas 2) every call taking such a
    frame was a mismatch, discarded and executed again (a second charge). Text becomes ``object`` with NaN for
    missing values (pandas 3 keeps no ``None``; NaN is what ``read_csv`` gives on pandas 2); a datetime or
    timedelta in ``us`` becomes ``ns`` where that is exact. ``s`` and ``ms`` stay: both pandas give them only
    when asked (``astype``, numpy's arrays), and turned into ``ns`` such a frame no longer digested as on
    pandas 2. A no-op on pandas 2 (which never names a dtype ``str`` and whose digests stay as they are), and
    on any frame with neither.
    """
    import pandas as pd

    if _PANDAS2 or isinstance(obj, pd.MultiIndex):
        return obj
    if isinstance(obj, pd.Index):
        return _pandas2_values(obj)
    index = obj.index if isinstance(obj.index, pd.MultiIndex) else _pandas2_values(obj.index)
    if isinstance(obj, pd.Series):
        values = _pandas2_values(obj)  # astype keeps name and index
        return values if index is obj.index else values.set_axis(index)
    columns = [obj.iloc[:, i] for i in range(obj.shape[1])]
    changed = {i: v for i, column in enumerate(columns) if (v := _pandas2_values(column)) is not column}
    if not changed and index is obj.index:
        return obj
    copy = obj.copy(deep=False)
    copy.index = index
    for i, values in changed.items():
        copy.isetitem(i, values)
    return copy


def _pandas2_values(values: Any) -> Any:
    """One column or index as pandas 2 would hold it (see :func:`as_pandas2`), or ``values`` itself."""
    import numpy as np
    import pandas as pd

    dtype = values.dtype
    if isinstance(dtype, pd.StringDtype) and str(dtype) == "str":
        return values.astype(object)
    if isinstance(dtype, pd.CategoricalDtype):
        categories = _pandas2_values(dtype.categories)
        if categories is dtype.categories:
            return values
        return values.astype(pd.CategoricalDtype(categories, ordered=dtype.ordered))
    unit = getattr(dtype, "unit", None) if isinstance(dtype, pd.DatetimeTZDtype) else None
    if isinstance(dtype, np.dtype) and dtype.kind in "mM":
        unit = np.datetime_data(dtype)[0]
    if unit == "us":  # pandas 3's default where pandas 2 gives ns; "s" and "ms" are only ever asked for, on both
        try:  # from a coarser unit: exact, unless out of the ns range (years 1677 to 2262)
            return values.astype(str(dtype).replace(f"[{unit}", "[ns"))
        except (OverflowError, ValueError):
            return values
    return values


def _pandas_major() -> int:
    import pandas as pd

    return int(pd.__version__.split(".")[0])


_PANDAS2 = _pandas_major() < 3


def _category_settings(obj: Any) -> list[Any]:
    """The categories and order of categorical columns (and labels) where they are not the default ones.

    Why: both digests above see a categorical's values and ``str(dtype)`` ("category"), not its categories, so
    ``reorder_categories(["S", "M", "L"], ordered=True)`` left the digest as it was and the call replayed
    the result computed with the old order (``sort_values``, ``min``, ``groupby`` order all differ). Default
    ones (unordered, categories in the order ``astype("category")`` gives them) add nothing: digests journaled
    before stay the same for them. Unused ones too: ``astype("category")`` then a filter keeps every category,
    and counting the unused ones made a call journaled before with such a frame a mismatch, executed again.
    """
    import pandas as pd

    columns: list[tuple[Any, Any]] = []
    if isinstance(obj, pd.DataFrame):
        columns = [(i, obj.iloc[:, i]) for i, dtype in enumerate(obj.dtypes) if isinstance(dtype, pd.CategoricalDtype)]
    elif isinstance(obj, pd.Series):
        columns = [(0, obj)]
    index = obj if isinstance(obj, pd.Index) else obj.index
    columns += [(f"index {i}", index.get_level_values(i)) for i in range(index.nlevels)]
    settings: list[Any] = []
    for label, values in columns:
        dtype = values.dtype
        if not isinstance(dtype, pd.CategoricalDtype):
            continue
        inferred = pd.Categorical(dtype.categories).categories  # the order astype gives these categories
        if dtype.ordered or not inferred.equals(dtype.categories):
            settings.append((label, list(dtype.categories), dtype.ordered))
    return settings


def _typed_column(values: Any) -> bool:
    """Whether a column's hash is exact: not object/category typed, or only ``str`` inside.

    A nested Arrow column (list, struct, map) is not: ``hash_pandas_object`` raises on its values.
    """
    import pandas as pd

    dtype = values.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        return _typed_column(dtype.categories)
    if isinstance(dtype, pd.ArrowDtype):
        import pyarrow as pa

        return not pa.types.is_nested(dtype.pyarrow_dtype)
    if pd.api.types.is_object_dtype(dtype):
        return len(values) == 0 or pd.api.types.infer_dtype(values, skipna=False) == "string"
    return True


def is_frame(obj: Any) -> bool:
    import pandas as pd

    return isinstance(obj, (pd.DataFrame, pd.Series, pd.Index))


def pandas_exact(obj: Any) -> bool:
    """Whether ``hash_pandas_object`` (plus ``str`` labels) digests ``obj`` exactly."""
    import pandas as pd

    if isinstance(obj, pd.DataFrame):
        return (
            obj.columns.nlevels == 1 and all(type(c) is str for c in obj.columns)
            and _index_exact(obj.index) and all(_typed_column(obj.iloc[:, i]) for i in range(obj.shape[1]))
        )
    if isinstance(obj, pd.Series):
        name_ok = obj.name is None or (type(obj.name) is str and obj.name != "None")
        return name_ok and _index_exact(obj.index) and _typed_column(obj)
    if isinstance(obj, pd.Index):
        return _index_exact(obj)
    return True


def _index_exact(index: Any) -> bool:
    import pandas as pd

    return not isinstance(index, pd.MultiIndex) and _typed_column(index)


def _encode_labels(index: Any, out: list[bytes], depth: int) -> None:
    import pandas as pd

    if isinstance(index, pd.MultiIndex) or not _typed_column(index):
        out.append(b"L")
        _d._encode(list(index), out, depth + 1)
    else:
        _encode_values(pd.Series(index, copy=False), out, depth)


def _encode_values(values: Any, out: list[bytes], depth: int) -> None:
    """One column: elements one by one if object typed, else its seed-fixed hash (length-prefixed)."""
    import pandas as pd

    out.append(b"V" + str(values.dtype).encode() + b";")
    if pd.api.types.is_object_dtype(values.dtype) or not _typed_column(values):
        _d._encode(list(values), out, depth + 1)
        return
    data = pd.util.hash_pandas_object(values.reset_index(drop=True), index=False).to_numpy().tobytes()
    out.append(b"h%d:" % len(data))
    out.append(data)
