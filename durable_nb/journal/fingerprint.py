"""What identifies a lambda or a closure: its code, and the values it captures.

Why a module of its own: a function's identity is not an argument digest. Lambdas
and closures share a default call id (``mod.<lambda>``, ``mod.factory.<locals>.f``),
so the replay rules mix this fingerprint into the argument digest; the notebook
layer uses it to tell an edited helper from the one a cell was recorded with, and
the codec to recognise a notebook function it pickled. It reads bytecode (which
free variables a closure rebinds), once per code object.
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
    and default immutable values (``make_sender("sms")``) count by value, mutable objects
    (a dict, a list, a client, a cache) only by type, so a closure keeps its identity
    as they change: whether the closure or anything else changes them, and however
    (``heapq.heappush(heap, v)``, an alias, a helper), cannot be told from its code,
    and walking a large one on every call would cost milliseconds. Pass what tells
    two calls apart as an argument. Variables the closure rebinds itself
    (``nonlocal count; count += 1``) are its state, not its inputs: only their
    names take part, so calling it does not change its identity.
    """
    parts: list[bytes] = []
    code = getattr(func, "__code__", None)
    own_state: frozenset[str] = frozenset()
    if code is not None:
        encoded, own_state = _code_facts(code)
        parts.append(encoded)
    defaults = getattr(func, "__defaults__", None)
    if defaults:
        _encode_configuration(defaults, parts)
    kwdefaults = getattr(func, "__kwdefaults__", None)
    if kwdefaults:
        _encode_configuration(kwdefaults, parts)
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
            _encode_setting(value, parts)
    return hashlib.blake2b(b"".join(parts), digest_size=8).digest()


def _encode_setting(value: Any, parts: list[bytes]) -> None:
    """A captured value or a default: immutable ones by value, functions by name, anything else by type.

    Mutable state (a client, a cache, a counter, ``def price(sku, _cache={})``) changes
    while the function stays "the same function": only its type takes part.
    """
    if is_plain_value(value):
        _encode(value, parts)
    elif callable(value) and hasattr(value, "__qualname__"):
        parts.append(f"{getattr(value, '__module__', '')}.{value.__qualname__}".encode())
    else:
        parts.append(b"t" + type_name(value).encode())


def _encode_configuration(defaults: tuple[Any, ...] | dict[str, Any], parts: list[bytes]) -> None:
    """Defaults as before when all are immutable (identities journaled earlier keep matching), else each alone."""
    values = defaults.values() if isinstance(defaults, dict) else defaults
    if all(is_plain_value(v) for v in values):
        _encode(defaults, parts)
        return
    for key, value in (sorted(defaults.items()) if isinstance(defaults, dict) else enumerate(defaults)):
        _encode(key, parts)
        _encode_setting(value, parts)


def read_settings(func: Callable[..., Any]) -> list[tuple[str, Any]]:
    """The immutable global values a function's code reads (``limit`` in ``lambda r: r["amount"] > limit``).

    For a function passed as an argument: pickled by value it carried them, so a
    changed ``limit`` was another call; the fingerprint alone would replay the old
    result. Mutable globals, functions and modules are left out, as in a closure.
    """
    code = getattr(func, "__code__", None)
    namespace = getattr(func, "__globals__", None)
    if code is None or not isinstance(namespace, dict):
        return []
    return [(name, namespace[name]) for name in _global_names(code)
            if name in namespace and is_plain_value(namespace[name])]


@functools.lru_cache(maxsize=4096)
def _global_names(code: Any, depth: int = 0) -> tuple[str, ...]:
    """The names a code object (and the code nested in it) reads as globals, sorted.

    From the ``LOAD_GLOBAL``/``LOAD_NAME`` instructions, not ``co_names``, which also
    lists attributes: ``r.status`` must not make a global ``status`` part of the call.
    """
    names = _operands(code, ("LOAD_GLOBAL", "LOAD_NAME"))
    if depth < 8:
        for const in code.co_consts:
            if hasattr(const, "co_code"):
                names.update(_global_names(const, depth + 1))
    return tuple(sorted(names))


def _operands(code: Any, opnames: tuple[str, ...]) -> set[str]:
    """The names the instructions ``opnames`` of ``code`` (not of the code nested in it) name."""
    return {ins.argval for ins in dis.get_instructions(code) if ins.opname in opnames and isinstance(ins.argval, str)}


_PLAIN = (str, int, float, bool, bytes, type(None), complex)


def is_plain_value(value: Any, depth: int = 0) -> bool:
    """Immutable scalars and tuples/frozensets of them: what configures a closure."""
    if isinstance(value, (*_PLAIN, enum.Enum)):
        return True
    if isinstance(value, (tuple, frozenset)) and depth < 4:
        return all(is_plain_value(v, depth + 1) for v in value)
    return False


@functools.lru_cache(maxsize=4096)
def _code_facts(code: Any) -> tuple[bytes, frozenset[str]]:
    """A code object's encoding and the free variables it rebinds.

    Cached per code object: a closure is fingerprinted on every durable call, and
    reading its bytecode costs more than the rest of the fingerprint.
    """
    parts: list[bytes] = []
    _encode_code(code, parts, 0)
    free = set(code.co_freevars)
    return b"".join(parts), frozenset(_rebound(code) & free)


def _rebound(code: Any, depth: int = 0) -> set[str]:
    """Free variables a function (or a function nested in it) assigns or deletes."""
    names = _operands(code, ("STORE_DEREF", "DELETE_DEREF"))
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
