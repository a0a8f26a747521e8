"""Which notebook values are a ``%%durable`` cell's inputs, and the one digest of them and its code.

The cell's run id comes from this digest (:mod:`.runids`), so it decides when a
cell replays and when it runs again. :mod:`.cell` finds the names; this module
goes from names to values to a digest that is equal in every process.
"""

from __future__ import annotations

import builtins
import importlib
import inspect
import sys
import types
from collections.abc import Mapping
from typing import Any

from ..journal.digest import digest_value, noting_user_instances
from ..journal.fingerprint import fingerprint_code, is_plain_value
from ..runners.isolation import immutable


def is_output_history(name: str) -> bool:
    """IPython's ``_``, ``__``, ``___`` and ``_5``: earlier results, which a cell reading them computes with.

    IPython keeps them among its own (hidden) names, updated after every displayed
    result, so the rule for its own objects would leave them out.
    """
    return name in ("_", "__", "___") or (name[:1] == "_" and name[1:].isdigit())


def _nothing_yet(value: Any) -> bool:
    """IPython's ``_`` before any result: ``""`` (compared by type first: a DataFrame's ``==`` is an array)."""
    return type(value) is str and value == ""


def _is_notebook_defined(obj: Any, user_module: str) -> bool:
    module = getattr(obj, "__module__", None)
    return module in (None, "__main__", user_module)


def value_token(value: Any, user_module: str = "__main__") -> Any:
    """What stands for one input value in the cell's digest.

    Modules count by name, and so do functions and classes imported from
    modules (their code is the library's business). Functions and classes
    defined in the notebook count by their source, so editing a helper the cell
    calls invalidates the cell; a function's defaults and captured values count
    too (as a closure's do in a call's identity), and so do a class's attributes
    holding immutable values (``Settings.rate = 3``). Everything else counts by value.
    """
    if isinstance(value, types.ModuleType):
        return ("module", value.__name__)
    if isinstance(value, (types.FunctionType, type)):
        if not _is_notebook_defined(value, user_module):
            return ("ref", f"{value.__module__}.{value.__qualname__}")
        token: tuple[Any, ...]
        try:
            token = ("source", value.__qualname__, inspect.getsource(value))
        except (OSError, TypeError):
            if isinstance(value, types.FunctionType):
                return ("code", value.__qualname__, fingerprint_code(value))  # defaults and captures included
            methods = sorted(
                (k, fingerprint_code(v)) for k, v in vars(value).items() if isinstance(v, types.FunctionType)
            )
            token = ("class", value.__qualname__, tuple(methods))
        if isinstance(value, type):
            settings = _class_settings(value)  # Settings.rate = 3 after the class was defined with rate = 2
            return (*token, settings) if settings else token
        if value.__defaults__ or value.__kwdefaults__ or value.__closure__:
            # make_scaler(3) after make_scaler(2), or def g(k=K) after K changed: same source, another function
            return (*token, fingerprint_code(value))
        return token
    if isinstance(value, (types.BuiltinFunctionType, types.MethodWrapperType)):
        return ("ref", f"{getattr(value, '__module__', '')}.{value.__qualname__}")
    return ("value", digest_value(value))


def _class_settings(cls: type) -> tuple[tuple[str, Any], ...]:
    """A notebook class's own attributes that hold immutable values (str, numbers, tuples of them), by name.

    Like what a closure captures: settings count by value; mutable state (a registry, a cache) does not.
    """
    return tuple(sorted((k, v) for k, v in vars(cls).items() if not k.startswith("__") and is_plain_value(v)))


def input_tokens(
    inputs: Mapping[str, Any], user_module: str = "__main__", by_state: set[str] | None = None
) -> dict[str, Any]:
    """Each input's :func:`value_token`, by name.

    ``by_state``: gets the names of the inputs holding an instance of the user's class, the only ones whose
    token an earlier durable_nb gave otherwise (:func:`~durable_nb.journal.digest.digests_as_before`).
    """
    if by_state is None:
        return {name: value_token(inputs[name], user_module) for name in inputs}
    tokens = {}
    for name in inputs:
        with noting_user_instances() as met:
            tokens[name] = value_token(inputs[name], user_module)
        if met[0]:
            by_state.add(name)
    return tokens


def input_digest(
    code_fingerprint: str, inputs: Mapping[str, Any], user_module: str = "__main__",
    tokens: Mapping[str, Any] | None = None,
) -> str:
    """One digest of the cell's code and input values: equal in any process for equal inputs."""
    if tokens is None:
        tokens = input_tokens(inputs, user_module)
    return digest_value((code_fingerprint, [(name, tokens[name]) for name in sorted(inputs)]))


def changed_in_place(
    inputs: Mapping[str, Any], tokens: Mapping[str, Any], ns: Mapping[str, Any], user_module: str = "__main__"
) -> list[str]:
    """The inputs still bound to the same object whose value changed since ``tokens`` were taken.

    Why: the cell's run id comes from its inputs, so a cell that changed one in
    place (``order["charge"] = ...``) is another version of itself the next time it
    runs, and executes again with its durable calls. Modules and library functions
    count by name, so they are left out; a notebook class whose settings the cell
    changed (``Stats.runs += 1``) is another input next time, as a changed dict is.
    """
    changed = []
    for name, before in tokens.items():
        value = inputs[name]
        if ns.get(name) is not value or before[0] in ("module", "ref") or immutable(type(value)):
            continue
        if value_token(value, user_module) != before:
            changed.append(name)
    return changed


def changed_values(changed: list[str], tokens: Mapping[str, Any], binds: tuple[str, ...]) -> tuple[str, ...]:
    """The inputs changed in place that a replay restores: values, not the notebook's classes or functions.

    Why not those: a restored class would be another class than the one the notebook's instances
    have (``Stats.runs += 1`` leaves the class where it is). A name the cell also binds is an output already.
    """
    return tuple(n for n in changed if tokens[n][0] == "value" and n not in binds)


def select_inputs(reads: tuple[str, ...], ns: Mapping[str, Any], hidden: Mapping[str, Any],
                  star_imports: tuple[str, ...] = ()) -> dict[str, Any]:
    """The read names that resolve in the notebook namespace (builtins and IPython's own objects left out).

    A name the cell's own ``from m import *`` binds to the very value it has now is not an input: the
    cell binds it before reading it (else its second run in a kernel would digest another input set).
    """
    inputs: dict[str, Any] = {}
    modules = [sys.modules[m] for m in star_imports if m in sys.modules]
    for name in reads:
        if name not in ns:
            continue
        value = ns[name]
        if name in hidden and hidden[name] is value and not (is_output_history(name) and not _nothing_yet(value)):
            continue
        if hasattr(builtins, name) and getattr(builtins, name) is value:
            continue
        if any(getattr(m, name, ABSENT) is value for m in modules):
            continue
        inputs[name] = value
    return inputs


ABSENT = object()
"""Stands for a name that is not bound (in the notebook, in a module)."""


def star_values(module: str) -> dict[str, Any]:
    """What ``from module import *`` binds, imported now (nothing if it cannot be imported any more)."""
    try:
        mod = importlib.import_module(module)
    except Exception:
        return {}
    names = getattr(mod, "__all__", None)
    if names is None:
        names = [n for n in vars(mod) if not n.startswith("_")]
    return {n: getattr(mod, n) for n in names if isinstance(n, str) and hasattr(mod, n)}
