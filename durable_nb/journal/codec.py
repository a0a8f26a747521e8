"""Payload encoding and the text previews stored beside payloads.

Payloads are pickles: plain ``pickle`` for builtin scalars (fast, and what most
calls return), ``cloudpickle`` for everything else so that classes and functions
defined in a notebook travel by value. Both load with :func:`pickle.loads`.
Previews are produced once, at write time, so nothing that displays a journal
ever needs to unpickle it.
"""

from __future__ import annotations

import pickle
import reprlib
from typing import Any

import cloudpickle

FORMAT = "pickle"
PREVIEW_LIMIT = 200

_SCALARS = frozenset({int, float, str, bytes, bool, type(None), complex})

_repr = reprlib.Repr()
_repr.maxstring = PREVIEW_LIMIT
_repr.maxother = PREVIEW_LIMIT
_repr.maxlist = _repr.maxtuple = _repr.maxset = _repr.maxdict = 12
_repr.maxlevel = 4


def dumps(obj: Any) -> bytes:
    """Pickle ``obj``; raises whatever pickling raises (callers turn it into a clear error)."""
    if type(obj) in _SCALARS:
        return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return cloudpickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)


def loads(data: bytes) -> Any:
    return pickle.loads(data)


def _clip(text: str) -> str:
    if len(text) > PREVIEW_LIMIT:
        return text[: PREVIEW_LIMIT - 1] + "…"
    return text


def preview(obj: Any) -> str:
    """A bounded one-line ``repr`` that never raises."""
    t = type(obj)
    # Fast path, same text as reprlib: these reprs are single-line and reprlib only
    # shortens ints beyond 40 digits and strings beyond PREVIEW_LIMIT characters.
    if t is bool or t is float or obj is None or (t is int and -(10**30) < obj < 10**30):
        return repr(obj)
    if t is str and len(obj) <= 64:
        text = repr(obj)
        if len(text) <= PREVIEW_LIMIT and text.isprintable() and " " not in text:
            return text
    try:
        text = _repr.repr(obj)
    except Exception as exc:  # a broken __repr__ must not break the journal
        text = f"<{type(obj).__qualname__}: repr failed: {type(exc).__name__}>"
    return _clip(" ".join(text.split()))


def error_preview(exc: BaseException) -> str:
    """``Type: message``, bounded, never raises."""
    try:
        message = str(exc)
    except Exception:
        message = "<str() failed>"
    text = f"{type(exc).__qualname__}: {message}" if message else type(exc).__qualname__
    return _clip(" ".join(text.split()))
