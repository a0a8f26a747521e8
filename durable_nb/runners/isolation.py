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
import types
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


_NO_STATE = (types.ModuleType, type, types.FunctionType, types.BuiltinFunctionType, types.MethodType)


def isolated_together(values: dict[str, T], shared: list[str] | None = None) -> dict[str, T]:
    """:func:`isolated` for several named values at once: two names holding one object get one copy.

    For the notebook's ``%%durable --dry``: the cell's inputs, which its body may change in place.
    Copied with one memo (``raw = df`` stays one frame), each on its own try: a value that cannot be
    copied (a module, ``import numpy as np``, read by almost every cell) is passed as it is without
    making every other input a copy of its own, which split ``raw`` from ``df`` in the dry body.
    ``shared`` gets the names passed as they are that hold state a body can change (a generator, an
    open file, a connection; not a module, class or function): the caller says so.
    """
    memo: dict[int, Any] = {}
    tried = [memo]  # every memo kept alive until the end: ids in them must not be reused meanwhile
    out: dict[str, T] = {}
    for name, value in values.items():
        trial = dict(memo)  # a failed copy may leave half-built copies in its memo: they must not be shared
        tried.append(trial)
        try:
            out[name] = copy.deepcopy(value, trial)
        except Exception:
            out[name] = value
            if shared is not None and not isinstance(value, _NO_STATE):
                shared.append(name)
            continue
        memo = trial
    return out
