"""Which function a journal entry belongs to: call ids and ``@durable``.

The default id is ``module.qualname``: readable in the journal and stable across
restarts. Names that do not identify one function (``<lambda>``, anything under
``<locals>``, a ``functools.partial``) get a fingerprint of the code and the
captured values mixed into the argument digest, so two lambdas at the same
journal position, or two closures from one factory, never replay each other's
results; the visible call id stays ``module.qualname``.
"""

from __future__ import annotations

import functools
import types
from collections.abc import Callable
from typing import Any, TypeVar, overload

from .digest import _encoded
from .fingerprint import fingerprint_code

F = TypeVar("F", bound=Callable[..., Any])

_ATTR = "__durable_name__"


@overload
def durable(func: F, /) -> F: ...
@overload
def durable(*, name: str | None = None) -> Callable[[F], F]: ...


def durable(func: F | None = None, /, *, name: str | None = None) -> F | Callable[[F], F]:
    """Give a function a stable, explicit call id (``@durable(name="charge")``).

    The function is returned unchanged (it is not wrapped): calling it directly
    stays a plain call, and only ``ctx.durable_execute`` journals it. An explicit
    name survives renames and moves of the function, and opts it out of the code
    fingerprint, so editing its body does not invalidate journaled calls.
    """
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise ValueError(f"durable(name=...) must be a non-empty string, got {name!r}")

    def mark(f: F) -> F:
        if isinstance(f, str):  # @dnb.durable("charge"): the name given where the function goes
            raise TypeError(f"@durable takes the name as a keyword: write @dnb.durable(name={f!r}), not "
                            f"@dnb.durable({f!r})")
        if not callable(f):
            raise TypeError(f"@durable decorates a function, got {type(f).__name__}")
        try:
            setattr(f, _ATTR, name or default_call_id(f))
        except (AttributeError, TypeError):  # builtins, bound methods: no attributes of their own
            raise TypeError(
                f"@durable cannot name {type(f).__name__} {getattr(f, '__qualname__', f)!r}: it takes no "
                f"attributes. Name a plain function that calls it instead, e.g. "
                f"@durable(name={name or 'charge'!r}) def charge(*args): return target(*args); for a method, "
                f"decorate it in its class body."
            ) from None
        return f

    return mark(func) if func is not None else mark


def explicit_name(func: Callable[..., Any]) -> str | None:
    """The id ``@durable(name=...)`` gave ``func``, or None; only ever a str.

    Why not plain ``getattr(func, "__durable_name__")``: an object whose ``__getattr__``
    answers every name (an ``xmlrpc`` proxy's method, an RPC stub) returned an object,
    which the SQLite intent log could not encode, and the journal then refused to
    open. A callable instance takes the name from its own attributes, its class's
    ``__call__`` (decorated in the class body), or else its decorated class: the id
    such instances always journaled under (dropping it discarded their recorded calls
    and ran them again).
    """
    if isinstance(func, _NAMED_BY_ATTR):
        name = getattr(func, _ATTR, None)
    else:
        own = getattr(func, "__dict__", None)
        name = own.get(_ATTR) if isinstance(own, dict) else None
        if name is None:
            name = _instance_name(type(func))
    return name if isinstance(name, str) else None


_NAMED_BY_ATTR = (types.FunctionType, types.MethodType, type, functools.partial)


def _instance_name(cls: type) -> Any:
    """The name of ``cls``'s own ``__call__`` (the first in its MRO), else of ``cls``; read from the classes'
    dicts: no instance ``__getattr__`` answers, and no AttributeError raised and caught on every durable call."""
    mro = cls.__mro__
    for k in mro:
        attrs = k.__dict__
        if "__call__" in attrs:
            call = attrs["__call__"]
            own = getattr(call, "__dict__", None)  # a function's: its attributes
            name = own.get(_ATTR) if isinstance(own, dict) else getattr(call, _ATTR, None)
            if name is not None:
                return name
            break
    for k in mro:
        if _ATTR in k.__dict__:
            return k.__dict__[_ATTR]
    return None


def default_call_id(func: Callable[..., Any]) -> str:
    target: Any = func
    while isinstance(target, functools.partial):
        target = target.func
    module = getattr(target, "__module__", None)
    qualname = getattr(target, "__qualname__", None)
    if not (module is None or isinstance(module, str)) or not (qualname is None or isinstance(qualname, str)):
        qualname = None  # a proxy whose __getattr__ answers every name: named by its class
    if qualname is None:  # a callable instance
        cls = type(target)
        module, qualname = cls.__module__, f"{cls.__qualname__}.__call__"
    return f"{module}.{qualname}"


def call_identity(func: Callable[..., Any]) -> tuple[str, bytes]:
    """``(call_id, salt)`` where ``salt`` goes into the argument digest (empty when not needed)."""
    if type(func) is types.FunctionType:  # explicit_name's and default_call_id's answers, inline (every durable call)
        explicit = getattr(func, _ATTR, None)
        if isinstance(explicit, str):
            return explicit, b""
        call_id = f"{func.__module__}.{func.__qualname__}"
        return call_id, (fingerprint_code(func) if "<" in call_id else b"")
    explicit = explicit_name(func)
    if explicit is not None:
        return explicit, b""
    call_id = default_call_id(func)
    if isinstance(func, functools.partial):
        salt = _encoded((func.args, func.keywords), 0)
        inner = func.func
        while isinstance(inner, functools.partial):
            salt += _encoded((inner.args, inner.keywords), 0)
            inner = inner.func
        if "<" in call_id:
            salt += fingerprint_code(inner)
        return call_id, salt
    if "<" in call_id:  # <lambda>, <locals>, <genexpr>: not unique by name
        return call_id, fingerprint_code(func)
    return call_id, b""
