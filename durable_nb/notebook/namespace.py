"""The names a ``%%durable`` cell binds, pickled for the journal and restored from it.

Together, so that a replay restores shared objects as shared (:func:`pack_namespace`);
one value that cannot be pickled (an open file), or that a new kernel could not load
(an ``lru_cache`` function), is left out with a reason and the others are kept; a bound
``ctx = dnb.current_context()`` is left out, as it means nothing outside its run.
"""

from __future__ import annotations

import importlib
import inspect
import io
import linecache
import os
import pickle
import types
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..journal import codec
from ..journal.context import RunnerContext
from ..journal.digest import type_name


@dataclass
class PackedNamespace:
    """Cell outputs ready for the journal: name -> pickle (names pickled together share one bytes object)."""

    values: dict[str, bytes]
    modules: dict[str, str]
    skipped: dict[str, str]
    """name -> why it could not be journaled (``TypeName: reason``)."""


def pack_value(value: Any) -> tuple[str, Any]:
    """``("module", name)`` or ``("pickle", bytes)``; raises if the value cannot be pickled.

    An open file is refused although cloudpickle would pickle a text file open for
    reading (as a copy of its contents): a replay would bind a ``StringIO``, not a file.
    """
    if isinstance(value, types.ModuleType):
        return "module", value.__name__
    _refuse_open_file(value)
    return "pickle", codec.dumps(value)


SHARED = b"durable_nb.shared\n"
"""Starts a pickle of several names at once, ``({name: value}, {file name: source})``: not a pickle itself,
so a version that predates it reports those names as not restored instead of binding them to a tuple."""


def pack_namespace(names: list[str] | tuple[str, ...], ns: Mapping[str, Any]) -> PackedNamespace:
    """Pickle the output names together, each name on its own only where that fails.

    Together, so that a replay in a new kernel restores the objects as the cell left them:
    ``table = {"fn": helper}`` holds *the* ``helper``, an instance's class *is* the restored class
    (pickled one by one, each would be a copy of its own, and the next cell's inputs would digest
    differently and run it again). Every name maps to the same bytes object, which the journal's
    pickle stores once. The source of the functions among them goes along (see :func:`_sources`).
    """
    packed = PackedNamespace({}, {}, {})
    values: dict[str, Any] = {}
    for name in names:
        if name not in ns:
            continue
        value = ns[name]
        if isinstance(value, RunnerContext):
            continue  # ``ctx = dnb.current_context()``: only meaningful while the cell runs
        if isinstance(value, types.ModuleType):
            packed.modules[name] = value.__name__
        else:
            values[name] = value
    if not values:
        return packed
    binding = set(values)  # none of them exists in a new kernel until this record is loaded
    try:
        for value in values.values():
            _refuse_open_file(value)
        blob = _together(values, binding)
    except Exception:  # one of them cannot be pickled (or loaded): find which, then the others together
        alone: dict[str, bytes] = {}
        for name, value in list(values.items()):
            try:
                alone[name] = _loadable(binding, pack_value(value)[1])  # alone too: see _loadable
            except pickle.UnpicklingError as exc:  # from _loadable
                packed.skipped[name] = f"{type_name(value)}: a new kernel could not load it: {exc}"
                del values[name]
            except Exception as exc:
                packed.skipped[name] = f"{type_name(value)}: {type(exc).__name__}"
                del values[name]
        if not values:
            return packed
        try:
            blob = _together(values, binding)
        except Exception:  # only together (a value reaching an unpicklable one through another): alone
            packed.values.update(alone)
            return packed
    for name in values:
        packed.values[name] = blob
    return packed


def _together(values: dict[str, Any], binding: set[str]) -> bytes:
    """One pickle of ``values``, with :data:`SHARED` in front; raises if a new kernel could not load it."""
    return SHARED + _loadable(binding, codec.dumps((values, _sources(values.values()))))


def _loadable(names: set[str], blob: bytes) -> bytes:
    """``blob``; raises if a new kernel could not load it.

    A value pickled by reference to a name the same cell binds (an ``lru_cache`` function,
    a ``NewType``, a dict holding one) cannot be loaded in a new kernel, where that name is
    restored by this very record: together, it would take every name down; alone, it is
    left out, warned. ``names``: every name the cell binds, left out or not.
    """
    if blob.find(b"__main__") != -1:  # only then can it refer to the notebook's names
        _FreshKernel(io.BytesIO(blob), names).load()
    return blob


class _FreshKernel(pickle.Unpickler):
    """Loads as a new kernel would: the notebook's names ``restoring`` do not exist yet."""

    def __init__(self, data: io.BytesIO, restoring: set[str]) -> None:
        super().__init__(data)
        self.restoring = restoring

    def find_class(self, module: str, name: str) -> Any:
        if module == "__main__" and name.split(".")[0] in self.restoring:
            raise pickle.UnpicklingError(f"__main__.{name} would be restored by this very pickle")
        return super().find_class(module, name)


def _refuse_open_file(value: Any) -> None:
    if isinstance(value, io.IOBase) and not isinstance(value, io.StringIO | io.BytesIO):
        raise TypeError("an open file")


def _sources(values: Any) -> dict[str, str]:
    """The cell sources of the notebook functions among ``values`` (and of their classes' methods).

    Why: a cell that reads such a function digests it by its source (``cell_inputs.value_token``);
    restored in a new kernel, the function's code still names the old kernel's cell file, which
    ``inspect`` cannot find, so the digest would change and that cell would run again.
    """
    found: dict[str, str] = {}
    for value in values:
        functions = [value] if isinstance(value, types.FunctionType) else (
            [v for v in vars(value).values() if isinstance(v, types.FunctionType)] if isinstance(value, type) else [])
        for func in [inspect.unwrap(f) for f in functions] + functions:  # inspect reads the wrapped one's
            code = getattr(func, "__code__", None)
            if code is None:
                continue
            filename = code.co_filename
            if filename not in found and not os.path.exists(filename):
                lines = linecache.getlines(filename)
                if lines:
                    found[filename] = "".join(lines)
    return found


def _remember_sources(sources: Mapping[str, str]) -> None:
    """Make restored functions' sources findable by ``inspect`` (as IPython does for its cells)."""
    for filename, text in sources.items():
        if filename not in linecache.cache:
            linecache.cache[filename] = (len(text), None, text.splitlines(keepends=True), filename)


def unpack_namespace(
    values: Mapping[str, bytes], modules: Mapping[str, str]
) -> tuple[dict[str, Any], dict[str, str]]:
    """Restore journaled names; returns ``(restored, failed name -> reason)``."""
    restored: dict[str, Any] = {}
    failed: dict[str, str] = {}
    for name, module in modules.items():
        try:
            restored[name] = importlib.import_module(module)
        except Exception as exc:
            failed[name] = f"import {module} failed: {type(exc).__name__}"
    together: dict[int, dict[str, Any] | str] = {}  # a pickle of several names: loaded once (or its error)
    for name, data in values.items():
        try:
            if not data.startswith(SHARED):
                restored[name] = codec.loads(data)
                continue
            if id(data) not in together:
                try:
                    together[id(data)], sources = pickle.loads(memoryview(data)[len(SHARED):])
                    _remember_sources(sources)
                except Exception as exc:
                    together[id(data)] = f"unpickling failed: {type(exc).__name__}: {exc}"
            names = together[id(data)]
            if isinstance(names, str):
                failed[name] = names
            else:
                restored[name] = names[name]
        except Exception as exc:
            failed[name] = f"unpickling failed: {type(exc).__name__}: {exc}"
    return restored, failed
