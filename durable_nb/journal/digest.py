"""Argument digests that are equal for equal arguments in any process.

A digest decides whether a journaled call is "the same call" after a restart,
so it cannot depend on anything a new process changes: string hashing (set
order), object addresses, dict insertion order. Arguments are encoded
canonically (type tag + content, containers recursively, dict items and set
members sorted by their encoding) and hashed with BLAKE2b-128.

Fallbacks, in order, for objects the canonical encoder does not know:

1. ``pickle`` (protocol 4), then ``cloudpickle`` for notebook-defined functions
   and classes;
2. if the object cannot be pickled at all (a client holding a lock or a socket),
   the digest covers only its type's ``module.qualname``. Two such objects of the
   same type digest equal, which is what a recovery needs: the "same" client
   object is a new instance after a restart. The user is warned once per type.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import pickle
import warnings
from collections.abc import Callable
from typing import Any

import cloudpickle

from ..errors import UnpicklableArgumentWarning

_warned_types: set[str] = set()
_MAX_DEPTH = 64


def type_name(obj: Any) -> str:
    t = type(obj)
    return f"{t.__module__}.{t.__qualname__}"


def _encode_pickled(obj: Any, out: list[bytes]) -> None:
    try:
        data = pickle.dumps(obj, protocol=4)
    except Exception:
        try:
            data = cloudpickle.dumps(obj, protocol=4)
        except Exception as exc:
            name = type_name(obj)
            if name not in _warned_types:
                _warned_types.add(name)
                warnings.warn(
                    f"durable_nb: an argument of type {name} cannot be pickled ({type(exc).__name__}); "
                    f"it is digested by its type name only, so any two {name} objects count as equal "
                    f"arguments. Pass plain data (ids, dicts) if the call depends on its contents.",
                    UnpicklableArgumentWarning,
                    stacklevel=5,
                )
            out.append(b"?" + name.encode() + b";")
            return
    out.append(b"p%d:" % len(data))
    out.append(data)


def _encode(obj: Any, out: list[bytes], depth: int = 0) -> None:
    t = type(obj)
    if obj is None:
        out.append(b"N")
    elif t is bool:
        out.append(b"T" if obj else b"F")
    elif t is int:
        out.append(b"i%d;" % obj)
    elif t is str:
        data = obj.encode("utf-8", "surrogatepass")
        out.append(b"s%d:" % len(data))
        out.append(data)
    elif t is float:
        out.append(b"f" + obj.hex().encode() + b";")
    elif t is bytes:
        out.append(b"b%d:" % len(obj))
        out.append(obj)
    elif depth > _MAX_DEPTH:
        _encode_pickled(obj, out)
    elif t is tuple or t is list:
        out.append(b"(%d:" % len(obj) if t is tuple else b"[%d:" % len(obj))
        for item in obj:
            _encode(item, out, depth + 1)
    elif t is dict:
        items = sorted(_encoded(k, depth) + _encoded(v, depth) for k, v in obj.items())
        out.append(b"{%d:" % len(items))
        out.extend(items)
    elif t is set or t is frozenset:
        members = sorted(_encoded(m, depth) for m in obj)
        out.append((b"<%d:" if t is set else b"|%d:") % len(members))
        out.extend(members)
    elif isinstance(obj, enum.Enum):
        out.append(b"e" + type_name(obj).encode() + b";")
        _encode(obj.value, out, depth + 1)
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out.append(b"d" + type_name(obj).encode() + b";")
        for f in dataclasses.fields(obj):
            _encode(f.name, out, depth + 1)
            _encode(getattr(obj, f.name), out, depth + 1)
    elif t.__module__.startswith("pandas"):
        _encode_pandas(obj, out)
    elif t.__module__ == "numpy" and hasattr(obj, "tobytes") and hasattr(obj, "dtype"):
        out.append(b"n" + str(obj.dtype).encode() + repr(getattr(obj, "shape", ())).encode() + b";")
        out.append(obj.tobytes())
    else:
        _encode_pickled(obj, out)


def _encode_pandas(obj: Any, out: list[bytes]) -> None:
    import pandas as pd

    if isinstance(obj, (pd.DataFrame, pd.Series, pd.Index)):
        # hash_pandas_object is content-based and seed-fixed: stable across processes.
        hashed = pd.util.hash_pandas_object(obj, index=not isinstance(obj, pd.Index))
        out.append(b"P" + type(obj).__name__.encode() + b";")
        if isinstance(obj, pd.DataFrame):
            _encode([str(c) for c in obj.columns], out)
            _encode([str(d) for d in obj.dtypes], out)
        else:
            _encode([str(obj.name), str(obj.dtype)], out)
        out.append(hashed.to_numpy().tobytes())
    else:
        _encode_pickled(obj, out)


def _encoded(obj: Any, depth: int) -> bytes:
    parts: list[bytes] = []
    _encode(obj, parts, depth + 1)
    return b"".join(parts)


def digest(args: tuple[Any, ...], kwargs: dict[str, Any], salt: bytes = b"") -> str:
    """Hex digest of a call's arguments; ``salt`` adds a function fingerprint."""
    parts: list[bytes] = [salt]
    _encode(args, parts)
    if kwargs:
        _encode(kwargs, parts)
    return hashlib.blake2b(b"".join(parts), digest_size=16).hexdigest()


def digest_value(obj: Any) -> str:
    """Digest of one value (cell inputs, closure contents)."""
    return digest((obj,), {})


def fingerprint_code(func: Callable[..., Any]) -> bytes:
    """Identity of an anonymous function: its code, defaults and captured values.

    Lambdas and closures share a default id (``mod.<lambda>``, ``mod.factory.<locals>.f``);
    this fingerprint keeps two of them from replaying each other's results. Captured
    immutable values (``make_sender("sms")``) count by value, captured mutable objects
    only by type, so a closure over a client or a cache keeps its identity as they change.
    """
    parts: list[bytes] = []
    code = getattr(func, "__code__", None)
    if code is not None:
        _encode_code(code, parts, 0)
    defaults = getattr(func, "__defaults__", None)
    if defaults:
        _encode(defaults, parts)
    kwdefaults = getattr(func, "__kwdefaults__", None)
    if kwdefaults:
        _encode(kwdefaults, parts)
    closure = getattr(func, "__closure__", None)
    if closure:
        for cell in closure:
            try:
                value = cell.cell_contents
            except ValueError:  # an empty cell (variable not bound yet)
                parts.append(b"<empty>")
                continue
            if _is_plain_value(value):
                _encode(value, parts)
            elif callable(value) and hasattr(value, "__qualname__"):
                parts.append(f"{getattr(value, '__module__', '')}.{value.__qualname__}".encode())
            else:
                # Mutable state (a client, a cache, a counter) changes while the function
                # stays "the same function": only its type takes part.
                parts.append(b"t" + type_name(value).encode())
    return hashlib.blake2b(b"".join(parts), digest_size=8).digest()


_PLAIN = (str, int, float, bool, bytes, type(None), complex)


def _is_plain_value(value: Any, depth: int = 0) -> bool:
    """Immutable scalars and tuples/frozensets of them: what configures a closure."""
    if isinstance(value, (*_PLAIN, enum.Enum)):
        return True
    if isinstance(value, (tuple, frozenset)) and depth < 4:
        return all(_is_plain_value(v, depth + 1) for v in value)
    return False


def _encode_code(code: Any, out: list[bytes], depth: int) -> None:
    out.append(code.co_code)
    out.append(repr(code.co_names).encode())
    for const in code.co_consts:
        if hasattr(const, "co_code"):
            if depth < 8:
                _encode_code(const, out, depth + 1)
        else:
            _encode(const, out)
