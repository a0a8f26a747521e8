"""What a ``%%durable`` cell leaves in the journal: :class:`CellOutcome`, typed.

Call 0 of a cell's run (call id ``cell:NAME``) succeeds with one outcome: the
names the cell bound (each pickled on its own), the names it deleted, what it
printed and displayed in order, and its result. The kernel, a Flink worker and a
``--reconciler`` all build the same :class:`CellOutcome`; replay and the Flink
path restore from it with the same code.

The journal stores :meth:`CellOutcome.to_payload`, a plain dict of builtins
(format 1), not the dataclass: a journal written by this version stays readable
whatever this module's classes are called later, and journals written before the
dataclass existed replay unchanged (:meth:`CellOutcome.from_payload`).

The bound names are pickled together (:func:`pack_namespace`), so a replay
restores shared objects as shared; one value that cannot be pickled (an open
file) is left out with a reason and the others are kept; a bound
:class:`~durable_nb.journal.context.RunnerContext` (``ctx = dnb.current_context()``)
is left out, as it means nothing outside its run.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import io
import linecache
import os
import pickle
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..journal import codec
from ..journal.context import RunnerContext
from ..journal.digest import type_name
from .outputs import Output, RecordedResult

OUTCOME_FORMAT = 1
"""Version of the payload dict :meth:`CellOutcome.to_payload` writes."""

#: Renders a result that cannot be pickled as ``(mime data, metadata)``, the way the shell would show it.
Formatter = Callable[[Any], tuple[dict[str, Any], dict[str, Any]]]


# ---------------------------------------------------------------- names, each pickled on its own


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
    try:
        for value in values.values():
            _refuse_open_file(value)
        blob = _together(values)
    except Exception:  # one of them cannot be pickled (or loaded): find which, then the others together
        alone: dict[str, bytes] = {}
        for name, value in list(values.items()):
            try:
                alone[name] = _loadable(name, pack_value(value)[1])
            except Exception as exc:
                packed.skipped[name] = f"{type_name(value)}: {type(exc).__name__}"
                del values[name]
        if not values:
            return packed
        try:
            blob = _together(values)
        except Exception:  # only together (a value reaching an unpicklable one through another): alone
            packed.values.update(alone)
            return packed
    for name in values:
        packed.values[name] = blob
    return packed


def _together(values: dict[str, Any]) -> bytes:
    """One pickle of ``values``, with :data:`SHARED` in front; raises if a new kernel could not load it.

    Why the trial load: a value pickled by reference to a name the same cell binds (an
    ``lru_cache`` function, a ``NewType``) cannot be loaded in a new kernel, where that name
    is restored by this very pickle; alone, only that name would be lost, together every one.
    """
    blob = codec.dumps((values, _sources(values.values())))
    if blob.find(b"__main__") != -1:  # only then can it refer to the notebook's names
        _FreshKernel(io.BytesIO(blob), set(values)).load()
    return SHARED + blob


def _loadable(name: str, blob: bytes) -> bytes:
    """``blob``, if a new kernel could load it: an ``lru_cache`` function pickles by reference to its own name,
    which that kernel would not have. Journaled anyway, it was lost only at the replay, with no warning."""
    if blob.find(b"__main__") != -1:
        _FreshKernel(io.BytesIO(blob), {name}).load()
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


# ---------------------------------------------------------------- the outcome


@dataclass(frozen=True)
class NamedResult:
    """The result is the value of a name the cell bound (``df`` as last line): not journaled twice."""

    name: str

    def restore(self, restored: Mapping[str, Any]) -> tuple[Any, str | None]:
        return restored.get(self.name), None


@dataclass(frozen=True)
class PickledResult:
    """The result, pickled."""

    data: bytes

    def restore(self, restored: Mapping[str, Any]) -> tuple[Any, str | None]:
        values, failed = unpack_namespace({"_": self.data}, {})
        return values.get("_"), failed.get("_")


@dataclass(frozen=True)
class ModuleResult:
    """The result is a module, journaled by name."""

    module: str

    def restore(self, restored: Mapping[str, Any]) -> tuple[Any, str | None]:
        values, failed = unpack_namespace({}, {"_": self.module})
        return values.get("_"), failed.get("_")


@dataclass(frozen=True)
class DisplayedResult:
    """A result that could not be pickled: how it was displayed, shown again as a :class:`RecordedResult`."""

    data: dict[str, Any]
    metadata: dict[str, Any]

    def restore(self, restored: Mapping[str, Any]) -> tuple[Any, str | None]:
        return RecordedResult(self.data, self.metadata), None


CellResult = NamedResult | PickledResult | ModuleResult | DisplayedResult


@dataclass(frozen=True)
class CellOutcome:
    """The outcome of one execution (or reconciliation) of a cell, as journaled in call 0."""

    values: dict[str, bytes] = field(default_factory=dict)
    """Bound name -> pickle (of that value, or of several names together: see :func:`pack_namespace`)."""
    modules: dict[str, str] = field(default_factory=dict)
    """Bound name -> module name (modules are journaled by name)."""
    skipped: dict[str, str] = field(default_factory=dict)
    """Name (or "the cell's result") -> why it could not be journaled."""
    deletes: tuple[str, ...] = ()
    """Names the cell deleted."""
    outputs: tuple[Output, ...] = ()
    """stdout, stderr and display outputs, in the order they appeared."""
    result: CellResult | None = None
    """The value of the cell's last expression; None when there is none, it was None, or the cell ended in ``;``."""
    star_imports: tuple[str, ...] = ()
    """Modules the cell imported ``*`` from: a replay imports them again (their objects are not copies)."""

    def summary(self) -> str:
        """What the journal view shows for the cell's call: names, outputs, what was left out (never bytes)."""
        names = self.restorable
        parts = [f"cell outputs: {', '.join(names) if names else 'no names'}"]
        if self.outputs:
            parts.append(f"{len(self.outputs)} printed/displayed")
        if self.skipped:
            parts.append(f"not journaled: {', '.join(self.skipped)}")
        return "; ".join(parts)

    @property
    def restorable(self) -> list[str]:
        """Every name a restore brings back, sorted (values, then modules)."""
        return sorted(self.values) + sorted(self.modules)

    def to_payload(self) -> dict[str, Any]:
        """The journaled form: a dict of builtins only (see the module docstring)."""
        return {
            "format": OUTCOME_FORMAT, "values": dict(self.values), "modules": dict(self.modules),
            "skipped": dict(self.skipped), "deletes": list(self.deletes), "outputs": list(self.outputs),
            "result": _result_payload(self.result), "star_imports": list(self.star_imports),
        }

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> CellOutcome:
        """Read a journaled outcome back (format 1, as every version so far wrote it)."""
        return cls(
            values=dict(payload["values"]), modules=dict(payload["modules"]), skipped=dict(payload["skipped"]),
            deletes=tuple(payload["deletes"]), outputs=tuple(payload["outputs"]),
            result=_result_from_payload(payload["result"]), star_imports=tuple(payload.get("star_imports", ())),
        )


def _result_payload(result: CellResult | None) -> tuple[Any, ...] | None:
    if result is None:
        return None
    if isinstance(result, NamedResult):
        return ("name", result.name)
    if isinstance(result, PickledResult):
        return ("pickle", result.data)
    if isinstance(result, ModuleResult):
        return ("module", result.module)
    return ("recorded", result.data, result.metadata)


def _result_from_payload(packed: tuple[Any, ...] | list[Any] | None) -> CellResult | None:
    if packed is None:
        return None
    kind = packed[0]
    if kind == "name":
        return NamedResult(packed[1])
    if kind == "pickle":
        return PickledResult(packed[1])
    if kind == "module":
        return ModuleResult(packed[1])
    if kind == "recorded":
        return DisplayedResult(packed[1], packed[2])
    raise ValueError(f"unknown cell result kind {kind!r} in a journaled cell outcome; "
                     f"it was written by a newer durable_nb: upgrade durable_nb to replay it")


def pack_result(
    last: ast.Expression | None, result: Any, values: Mapping[str, bytes], skipped: dict[str, str], fmt: Formatter
) -> CellResult | None:
    """How a cell's result is journaled; one that cannot be pickled is noted in ``skipped`` and kept as displayed."""
    if last is None or result is None:
        return None
    if isinstance(last.body, ast.Name) and last.body.id in values:
        return NamedResult(last.body.id)  # do not journal a big value twice
    try:
        kind, data = pack_value(result)
    except Exception as exc:
        skipped["the cell's result"] = f"{type(result).__name__}: {type(exc).__name__}"
        shown, metadata = fmt(result)
        return DisplayedResult(shown, metadata)
    return ModuleResult(data) if kind == "module" else PickledResult(data)


def executed_outcome(
    binds: tuple[str, ...],
    deletes: tuple[str, ...],
    ns: Mapping[str, Any],
    outputs: list[Output],
    last: ast.Expression | None,
    result: Any,
    fmt: Formatter | None,
    star_imports: tuple[str, ...] = (),
) -> CellOutcome:
    """The outcome of a body that ran in ``ns``; ``fmt=None`` leaves the result out (a cell ending in ``;``)."""
    packed = pack_namespace(binds, ns)
    cell_result = None if fmt is None else pack_result(last, result, packed.values, packed.skipped, fmt)
    return CellOutcome(
        values=packed.values, modules=packed.modules, skipped=packed.skipped,
        deletes=tuple(n for n in deletes if n not in ns), outputs=tuple(outputs), result=cell_result,
        star_imports=star_imports,
    )


def reconciled_outcome(name: str, values: Any) -> CellOutcome:
    """The outcome a ``--reconciler``'s dict ``{name: value}`` is journaled as."""
    if not isinstance(values, Mapping):
        raise TypeError(
            f"%%durable {name} --reconciler must return the cell's outputs as a dict "
            f"{{variable name: value}}, got {type(values).__name__}"
        )
    bad = [k for k in values if not (isinstance(k, str) and k.isidentifier())]
    if bad:
        raise TypeError(
            f"%%durable {name} --reconciler returned a dict whose keys must be variable names; "
            f"{', '.join(map(repr, bad[:5]))} {'is' if len(bad) == 1 else 'are'} not"
        )
    packed = pack_namespace(list(values), values)
    return CellOutcome(values=packed.values, modules=packed.modules, skipped=packed.skipped)
