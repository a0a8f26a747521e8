"""What identifies a lambda or a closure: its code, and the values it captures.

Why a module of its own: a function's identity is not an argument digest. Lambdas
and closures share a default call id (``mod.<lambda>``, ``mod.factory.<locals>.f``),
so the replay rules mix this fingerprint into the argument digest; the notebook
layer uses it to tell an edited helper from the one a cell was recorded with, and
the codec to recognise a notebook function it pickled. It reads bytecode (which
free variables a closure rebinds or changes in place), once per code object.
"""

from __future__ import annotations

import dis
import enum
import functools
import hashlib
from collections.abc import Callable
from typing import Any

from .digest import _encode, type_name


def fingerprint_code(func: Callable[..., Any]) -> bytes:
    """Identity of an anonymous function: its code, defaults and captured values.

    Lambdas and closures share a default id (``mod.<lambda>``, ``mod.factory.<locals>.f``);
    this fingerprint keeps two of them from replaying each other's results. Captured
    immutable values (``make_sender("sms")``) count by value, and so does captured
    plain data (a record: dicts, lists and sets of plain values, up to
    :data:`CAPTURED_BY_VALUE` items) that the closure only reads: ``lambda:
    charge(order["id"])`` is another call for another order, as the same call with
    the order as its argument would be. Other objects (a client), and containers
    the closure changes itself (a cache it writes to), count only by type, so the
    closure keeps its identity as they change. Variables the closure rebinds itself
    (``nonlocal count; count += 1``) are its state, not its inputs: only their
    names take part, so calling it does not change its identity.
    """
    parts: list[bytes] = []
    code = getattr(func, "__code__", None)
    own_state: frozenset[str] = frozenset()
    changed: frozenset[str] = frozenset()
    if code is not None:
        encoded, own_state, changed = _code_facts(code)
        parts.append(encoded)
    defaults = getattr(func, "__defaults__", None)
    if defaults:
        _encode(defaults, parts)
    kwdefaults = getattr(func, "__kwdefaults__", None)
    if kwdefaults:
        _encode(kwdefaults, parts)
    closure = getattr(func, "__closure__", None)
    if closure:
        names = code.co_freevars if code is not None else ()
        for position, cell in enumerate(closure):
            if position < len(names) and names[position] in own_state:
                parts.append(b"<state>" + names[position].encode())
                continue
            try:
                value = cell.cell_contents
            except ValueError:  # an empty cell (variable not bound yet)
                parts.append(b"<empty>")
                continue
            if _is_plain_value(value):
                _encode(value, parts)
            elif (position >= len(names) or names[position] not in changed) and _is_plain_data(value):
                parts.append(b"d")
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


@functools.lru_cache(maxsize=4096)
def _code_facts(code: Any) -> tuple[bytes, frozenset[str], frozenset[str]]:
    """A code object's encoding, the free variables it rebinds, and those it may change in place.

    Cached per code object: a closure is fingerprinted on every durable call, and
    reading its bytecode costs more than the rest of the fingerprint.
    """
    parts: list[bytes] = []
    _encode_code(code, parts, 0)
    free = set(code.co_freevars)
    return b"".join(parts), frozenset(_rebound(code) & free), frozenset(_changed_in_place(code) & free)


CAPTURED_BY_VALUE = 10_000
"""Items (counted through nested containers) up to which captured plain data counts by value."""

_MUTATORS = frozenset({
    "append", "extend", "insert", "remove", "pop", "popitem", "clear", "update", "setdefault", "add",
    "discard", "sort", "reverse", "__setitem__", "__delitem__", "intersection_update", "difference_update",
    "symmetric_difference_update", "__iadd__", "__ior__",
})


def _is_plain_data(value: Any) -> bool:
    """A dict, list or set holding only plain values (nested up to 4 deep), at most CAPTURED_BY_VALUE items."""
    budget = [CAPTURED_BY_VALUE]

    def plain(v: Any, depth: int) -> bool:
        if _is_plain_value(v):
            return True
        if depth >= 4 or type(v) not in (dict, list, set, tuple, frozenset):
            return False
        budget[0] -= len(v)
        if budget[0] < 0:
            return False
        items = [x for kv in v.items() for x in kv] if type(v) is dict else v
        return all(plain(x, depth + 1) for x in items)

    return type(value) in (dict, list, set) and plain(value, 0)


def _changed_in_place(code: Any, depth: int = 0) -> set[str]:
    """Free variables a function (or one nested in it) may change in place: a mutating method called on
    one, or any item or attribute assignment in the function (then every free variable it reads counts)."""
    loaded: set[str] = set()
    names: set[str] = set()
    stores_items = False
    previous = None
    for ins in dis.get_instructions(code):
        if ins.opname == "LOAD_DEREF" and isinstance(ins.argval, str):
            loaded.add(ins.argval)
        elif (ins.opname in ("LOAD_METHOD", "LOAD_ATTR") and ins.argval in _MUTATORS and previous is not None
              and previous.opname == "LOAD_DEREF"):
            names.add(previous.argval)
        elif ins.opname in ("STORE_SUBSCR", "DELETE_SUBSCR", "STORE_ATTR", "DELETE_ATTR"):
            stores_items = True
        previous = ins
    if stores_items:
        names |= loaded
    if depth < 8:
        for const in code.co_consts:
            if hasattr(const, "co_code"):
                names |= _changed_in_place(const, depth + 1) & set(const.co_freevars)
    return names


def _rebound(code: Any, depth: int = 0) -> set[str]:
    """Free variables a function (or a function nested in it) assigns or deletes."""
    names = {
        ins.argval for ins in dis.get_instructions(code)
        if ins.opname in ("STORE_DEREF", "DELETE_DEREF") and isinstance(ins.argval, str)
    }
    if depth < 8:
        for const in code.co_consts:
            if hasattr(const, "co_code"):
                names |= _rebound(const, depth + 1) & set(const.co_freevars)
    return names


def _encode_code(code: Any, out: list[bytes], depth: int) -> None:
    out.append(code.co_code)
    out.append(repr(code.co_names).encode())
    for const in code.co_consts:
        if hasattr(const, "co_code"):
            if depth < 8:
                _encode_code(const, out, depth + 1)
        else:
            _encode(const, out)
