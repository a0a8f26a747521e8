"""What the stores' read queries take, checked alike on every store, and the ``WHERE`` of a calls query.

Why a module of its own: SQLite, PostgreSQL and memory stores each read a bad offset, prefix or
status their own way (one clamped, one sliced from the end, one passed a raw driver error on);
one check here gives every store the same error naming the argument and the fix.
"""

from __future__ import annotations

import operator
from typing import Any

from .records import Status


def as_int(value: Any) -> int | None:
    """``value`` as a plain int if it is an integer (a numpy one too, not a bool), else None.

    Why: indexes and counts read from ``store.to_pandas()`` are ``numpy.int64``; fork's ``at``,
    answer's ``index``, prune's ``keep_last``, a page's offset and limit and a view's page size take
    them alike.
    """
    if isinstance(value, bool):
        return None
    try:
        return operator.index(value)
    except TypeError:
        return None


def check_call_index(index: Any) -> int | None:
    """``store.call``'s index as a plain int (a numpy one too), or None for one no call can have (negative, or
    past 64 bits); a TypeError naming the fix for what is no integer.

    Why: SQLite found no call for a ``numpy.int64`` index (the 'index' column of ``store.to_pandas()``) and
    found call 0 for ``'0'``, where the memory store did the opposite: the same read said "no such call" on
    one store and returned it on another.
    """
    number = as_int(index)
    if number is None:
        raise TypeError(f"store.call(run_id, index) takes the call's index as an int (CallRecord.index, or the "
                        f"'index' column of store.to_pandas()), got {type(index).__name__} {index!r:.200}")
    return number if 0 <= number < 2**63 else None


def check_prefix(prefix: object) -> None:
    """A run-id prefix is a str, like a run id."""
    if not isinstance(prefix, str):
        raise TypeError(f"a run-id prefix is a str (e.g. 'order-'), got {type(prefix).__name__} {prefix!r:.200}")


def check_page(offset: Any, limit: Any) -> tuple[int, int | None]:
    """``query_calls``'s offset and limit (None: none) as ints: each store read bad ones its own way, or failed."""
    def whole(name: str, value: Any) -> int:
        number = as_int(value)  # numpy ints too
        if number is None or number < 0:
            raise (TypeError if number is None else ValueError)(
                f"query_calls({name}=...) takes an int of at least 0 (or None), got {type(value).__name__} {value!r}")
        return number
    return whole("offset", 0 if offset is None else offset), None if limit is None else whole("limit", limit)


def check_status(status: Status | str | None) -> str | None:
    if status is None:
        return None
    try:
        return Status(status).value
    except ValueError:
        raise ValueError(
            f"status must be one of {[s.value for s in Status]}, got {status!r}"
        ) from None


def calls_where(
    run_id: str | None, status: Status | str | None, call_id: str | None, mark: str, not_call_id: str | None = None
) -> tuple[str, list[Any]]:
    """The ``WHERE`` of a filtered calls query (``mark``: the driver's placeholder, ``?`` or ``%s``)."""
    clauses, params = [], []
    if run_id is not None:
        clauses.append(f"run_id = {mark}")
        params.append(run_id)
    st = check_status(status)
    if st is not None:
        # Inlined, not bound: the planners only use the partial PENDING index for a literal.
        # Safe: check_status admits only the three enum values.
        clauses.append(f"status = '{st}'")
    if call_id is not None:
        clauses.append(f"call_id = {mark}")
        params.append(call_id)
    if not_call_id is not None:
        clauses.append(f"call_id <> {mark}")
        params.append(not_call_id)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params
