"""Each run gets its own copy of its input, as on Flink, where every record is serialized.

Why: an action that changes its record in place (``rec["charge"] = ctx.durable_execute(...)``)
would otherwise change the caller's list or dict. Running the map again, or
``runner.run(action, order)`` without a run id, would then see other arguments
(or derive another run id) and execute the side effects again instead of
replaying them. ``FlinkRunner`` never changes the caller's records; ``LocalRunner``
behaves the same.
"""

from __future__ import annotations

import copy
import datetime
import decimal
import fractions
import uuid
from collections.abc import Iterable
from typing import Any, TypeVar, cast

T = TypeVar("T")

_FROZEN: set[type] = {
    str, int, float, bool, type(None), bytes, complex, range, datetime.date, datetime.datetime, datetime.time,
    datetime.timedelta, datetime.timezone, decimal.Decimal, fractions.Fraction, uuid.UUID,
}
"""Types whose values cannot change; extended with the scalar types met (see :func:`immutable`)."""
_CHANGEABLE: set[type] = set()
"""Types met whose values can change."""

_SCALAR_MODULES = ("numpy", "pandas._libs")
"""Scalars of these (numpy's int64, pandas' Timestamp, NaT) cannot change either; their arrays and frames can."""


def immutable(t: type) -> bool:
    """Whether values of type ``t`` cannot change in place (learned once per type)."""
    if t in _FROZEN:
        return True
    if t in _CHANGEABLE:
        return False
    frozen = (t.__module__ or "").startswith(_SCALAR_MODULES) and not hasattr(t, "__setitem__")
    (_FROZEN if frozen else _CHANGEABLE).add(t)
    return frozen


def _flat(items: Iterable[Any]) -> bool:
    """Whether every item is immutable (a set operation in C for the types met before: a map's hot path)."""
    types = set(map(type, items))
    return types <= _FROZEN or all(immutable(t) for t in types)


def isolated(value: T) -> T:
    """``value`` itself if nothing in it can change, a copy otherwise (the caller's object is never handed out).

    Flat records (a dict, list or tuple of scalars: the usual map record) are copied
    shallowly, which is all they need; anything else deeply. A value that cannot be
    copied (it holds a lock or a connection) is passed as it is, as it always was.
    """
    v: Any = value
    t = type(v)
    if t in _FROZEN:
        return value
    if t is dict:
        if _flat(v.values()):
            return cast(T, dict(v))
    elif t is list or t is tuple:
        if _flat(v):
            return value if t is tuple else cast(T, list(v))
    elif immutable(t):
        return value
    try:
        return copy.deepcopy(value)
    except Exception:
        return value


def isolated_together(values: dict[str, T]) -> dict[str, T]:
    """:func:`isolated` for several named values at once: two names holding one object get one copy.

    For the notebook's ``%%durable --dry``: the cell's inputs, which its body may change in place.
    Copied together when that works (``raw = df`` stays one frame); else each as :func:`isolated` does.
    """
    try:
        return copy.deepcopy(values)
    except Exception:
        return {name: isolated(value) for name, value in values.items()}
