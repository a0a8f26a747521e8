"""Give a live notebook object the state a replayed cell journaled for it, without replacing the object.

A ``%%durable`` cell that changed an input in place (``model.fit(X)``, ``df["score"] = ...``)
journals it as the cell left it. Binding the name to the unpickled copy on replay would
leave every other reference to the object as it was before the cell: ``pipeline =
Pipeline([("clf", clf)])`` holds an unfitted ``clf`` after the restart, a fitted one
after the first run. So the copy's state goes into the object the notebook already
holds (the one the cell's inputs were digested from, so it is the cell's input as
the first run saw it), and the name keeps that object.
"""

from __future__ import annotations

import collections
import copyreg
import sys
from typing import Any

_NEWOBJ = (getattr(copyreg, "__newobj__", None), getattr(copyreg, "__newobj_ex__", None))  # untyped in typeshed


def update_in_place(live: Any, new: Any) -> bool:
    """Make ``live`` hold ``new``'s state; False (``live`` untouched) when that cannot be done safely.

    Why only for the same type, checked before anything changes: a half-updated object
    would be worse than a stale alias; the caller then binds the name to ``new`` as before.
    """
    if live is new or type(live) is not type(new):
        return False
    numpy = sys.modules.get("numpy")
    if numpy is not None and isinstance(live, numpy.ndarray):
        if live.shape != new.shape or live.dtype != new.dtype or not live.flags.writeable or live.base is not None:
            return False
        live[...] = new
        return _same_attrs(live, new)
    if isinstance(live, collections.deque):
        if live.maxlen != new.maxlen:
            return False
        live.clear()
        live.extend(new)
        return _same_attrs(live, new)
    if isinstance(live, list | bytearray):
        live[:] = new
        return _same_attrs(live, new)
    if isinstance(live, set):
        live.clear()
        live.update(new)
        return _same_attrs(live, new)
    if isinstance(live, dict):
        if isinstance(live, collections.defaultdict):
            live.default_factory = new.default_factory
        live.clear()
        for key, value in new.items():  # not update(): Counter.update adds
            live[key] = value
        return _same_attrs(live, new)
    return _same_state(live, new)


def _same_attrs(live: Any, new: Any) -> bool:
    """A container subclass's own attributes (``class Orders(list)`` with ``.source``)."""
    if hasattr(new, "__dict__") and hasattr(live, "__dict__"):
        live.__dict__.clear()
        live.__dict__.update(new.__dict__)
    return True


def _same_state(live: Any, new: Any) -> bool:
    """An instance rebuilt by pickle's default protocol (``__newobj__`` and a state): that state, set on ``live``.

    Classes with ``__setstate__`` (a DataFrame, a scikit-learn estimator) get it through their own
    method; others get their ``__dict__`` replaced and their slots set, as ``copy`` would build them.
    """
    try:
        reduced = new.__reduce_ex__(4)
    except Exception:
        return False
    if not isinstance(reduced, tuple) or len(reduced) < 2 or reduced[0] not in _NEWOBJ:
        return False
    args = reduced[1]  # (cls,) or (cls, (), {}): built empty, then given its state, which live can take
    if not args or args[0] is not type(live) or any(args[1:]) or any(part is not None for part in reduced[3:5]):
        return False  # built from constructor arguments (an int, a str subclass): not changeable in place
    state = reduced[2] if len(reduced) > 2 else None
    setstate = getattr(live, "__setstate__", None)
    if setstate is not None:
        setstate(state)
        return True
    slots: dict[str, Any] = {}
    if isinstance(state, tuple) and len(state) == 2:
        state, slots = state[0], state[1] or {}
    if state is not None and not isinstance(state, dict):
        return False
    if hasattr(live, "__dict__"):
        live.__dict__.clear()
        live.__dict__.update(state or {})
    elif state:
        return False
    for name, value in slots.items():
        setattr(live, name, value)
    return True
