"""Give a live notebook object the state a replayed cell journaled for it, without replacing the object.

A ``%%durable`` cell that changed an input in place (``model.fit(X)``, ``df["score"] = ...``)
journals it as the cell left it. Binding the name to the unpickled copy on replay would
leave every other reference to the object as it was before the cell: ``pipeline =
Pipeline([("clf", clf)])`` holds an unfitted ``clf`` after the restart, a fitted one
after the first run. So the copy's state goes into the object the notebook already
holds (the one the cell's inputs were digested from, so it is the cell's input as
the first run saw it), and the name keeps that object.

The journaled state itself may hold the copy (a tree node's ``parent``, a ``pipe`` that
is a changed input too and holds ``clf``, ``results = {"model": clf}`` bound by the cell):
:func:`update_all_in_place` copies it once more with the copies mapped to the live objects,
so that what held the object in the first run holds it again.
"""

from __future__ import annotations

import collections
import copy
import copyreg
import sys
from collections.abc import Callable
from typing import Any

_NEWOBJ = (getattr(copyreg, "__newobj__", None), getattr(copyreg, "__newobj_ex__", None))  # untyped in typeshed

Remap = Callable[[Any], Any]
"""Makes what goes into the live object: the journaled state, its copies of the changed inputs replaced."""

Apply = Callable[[Remap], bool]
"""Puts the state into the live object (checked beforehand); False when its own ``__setstate__`` refused it."""


def update_in_place(live: Any, new: Any) -> bool:
    """Make ``live`` hold ``new``'s state; False (``live`` untouched) when that cannot be done safely.

    Why only for the same type, checked before anything changes: a half-updated object
    would be worse than a stale alias; the caller then binds the name to ``new`` as before.
    """
    apply = _plan(live, new)
    return apply is not None and apply(_as_is)


def update_all_in_place(pairs: dict[str, tuple[Any, Any]], others: dict[str, Any]) -> dict[str, Any]:
    """Each ``name: (live, new)`` that can take its state updated in place; returns ``others`` remapped.

    The returned mapping has every name: the updated ones bound to their live object, the
    others (names the cell bound, changed inputs that could not be updated) to their value
    with the updated copies inside it replaced by the live objects.
    """
    plans = {name: (live, new, _plan(live, new)) for name, (live, new) in pairs.items()}
    if all(apply is None for _, _n, apply in plans.values()):
        return {**others, **{name: new for name, (_, new, _a) in plans.items()}}
    # what stays as it was unpickled: a frame in a dict stays the frame, a copy bound to its name stays that copy
    memo: dict[int, Any] = {id(value): value for value in others.values() if _data_only(value)}
    memo.update({id(new): new if apply is None else live for live, new, apply in plans.values()})
    result: dict[str, Any] = {}

    def remap(value: Any) -> Any:
        if _data_only(value):
            return value
        try:
            return copy.deepcopy(value, memo)
        except Exception:  # a value that refuses a copy keeps the copies it holds: as before this pass
            return value

    for name, (live, new, apply) in plans.items():
        updated = apply is not None and apply(remap)
        if not updated:  # its own __setstate__ refused: the name, and what holds the copy, keep the copy
            memo[id(new)] = new
        result[name] = live if updated else new
    for name, value in others.items():
        result[name] = memo[id(value)] if id(value) in memo else remap(value)
    return result


def _as_is(value: Any) -> Any:
    return value


def _data_only(value: Any) -> bool:
    """Arrays and pandas objects: their state holds data, not the notebook's objects, and copying it is costly."""
    numpy = sys.modules.get("numpy")
    if numpy is not None and isinstance(value, numpy.ndarray) and value.dtype != object:
        return True
    pandas = sys.modules.get("pandas")
    return pandas is not None and isinstance(value, pandas.core.generic.NDFrame | pandas.Index)


def _plan(live: Any, new: Any) -> Apply | None:
    """How to put ``new``'s state into ``live``; None when it cannot be done safely (nothing changed yet)."""
    if live is new or type(live) is not type(new):
        return None
    numpy = sys.modules.get("numpy")
    if numpy is not None and isinstance(live, numpy.ndarray):
        if live.shape != new.shape or live.dtype != new.dtype or not live.flags.writeable or live.base is not None:
            return None

        def array(remap: Remap) -> bool:
            live[...] = new
            return _same_attrs(live, new, remap)
        return array
    if isinstance(live, collections.deque) and live.maxlen != new.maxlen:
        return None
    if isinstance(live, list | bytearray | set | dict | collections.deque):
        return lambda remap: _same_items(live, new, remap) and _same_attrs(live, new, remap)
    return _object_plan(live, new)


def _same_items(live: Any, new: Any, remap: Remap) -> bool:
    """A container's items, replaced (not added to: ``Counter.update`` adds)."""
    if isinstance(live, dict):
        if isinstance(live, collections.defaultdict):
            live.default_factory = new.default_factory
        items = remap(list(new.items()))
        live.clear()
        for key, value in items:
            live[key] = value
        return True
    values = remap(list(new))
    if isinstance(live, list | bytearray):
        live[:] = values
    elif isinstance(live, collections.deque):
        live.clear()
        live.extend(values)
    else:
        live.clear()
        live.update(values)
    return True


def _same_attrs(live: Any, new: Any, remap: Remap) -> bool:
    """A container subclass's own attributes (``class Orders(list)`` with ``.source``, or in ``__slots__``)."""
    if hasattr(new, "__dict__") and hasattr(live, "__dict__"):
        state = remap(dict(new.__dict__))
        live.__dict__.clear()
        live.__dict__.update(state)
    for name in _slot_names(type(new)):
        if hasattr(new, name):
            setattr(live, name, remap(getattr(new, name)))
        elif hasattr(live, name):
            delattr(live, name)
    return True


def _slot_names(cls: type) -> list[str]:
    """The ``__slots__`` a class and its bases declare (not ``__dict__``/``__weakref__``)."""
    names: list[str] = []
    for klass in cls.__mro__:
        slots = vars(klass).get("__slots__", ())
        for name in (slots,) if isinstance(slots, str) else slots:
            if name not in ("__dict__", "__weakref__") and name not in names:
                names.append(name)
    return names


def _object_plan(live: Any, new: Any) -> Apply | None:
    """An instance rebuilt by pickle's default protocol (``__newobj__`` and a state): that state, set on ``live``.

    Classes with ``__setstate__`` (a DataFrame, a scikit-learn estimator) get it through their own
    method; others get their ``__dict__`` replaced and their slots set, as ``copy`` would build them.
    """
    try:
        reduced = new.__reduce_ex__(4)
    except Exception:
        return None
    if not isinstance(reduced, tuple) or len(reduced) < 2 or reduced[0] not in _NEWOBJ:
        return None
    args = reduced[1]  # (cls,) or (cls, (), {}): built empty, then given its state, which live can take
    # by length, not truth: an argument's own __bool__ may raise (an array from __getnewargs__)
    empty = len(args) == 1 or (reduced[0] is _NEWOBJ[1] and len(args) == 3 and not len(args[1]) and not len(args[2]))
    if not args or args[0] is not type(live) or not empty or any(part is not None for part in reduced[3:5]):
        return None  # built from constructor arguments (an int, a str subclass): not changeable in place
    state = reduced[2] if len(reduced) > 2 else None
    setstate = getattr(live, "__setstate__", None)
    if setstate is not None:

        def own(remap: Remap) -> bool:
            try:
                setstate(remap(state))
            except Exception:  # its __setstate__ expects a fresh object: the name gets the copy
                return False
            return True
        return own
    slots: dict[str, Any] = {}
    if isinstance(state, tuple) and len(state) == 2:
        state, slots = state[0], state[1] or {}
    if (state is not None and not isinstance(state, dict)) or (state and not hasattr(live, "__dict__")):
        return None

    def default(remap: Remap) -> bool:
        attrs, slot_values = remap((state or {}, slots))
        if hasattr(live, "__dict__"):
            live.__dict__.clear()
            live.__dict__.update(attrs)
        for name, value in slot_values.items():
            setattr(live, name, value)
        return True
    return default
