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

The bound names are pickled by :mod:`.namespace`.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .namespace import pack_namespace, pack_value, unpack_namespace
from .outputs import Output, RecordedResult

OUTCOME_FORMAT = 1
"""Version of the payload dict :meth:`CellOutcome.to_payload` writes."""

#: Renders a result that cannot be pickled as ``(mime data, metadata)``, the way the shell would show it.
Formatter = Callable[[Any], tuple[dict[str, Any], dict[str, Any]]]


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
    changed: tuple[str, ...] = ()
    """Inputs the cell changed in place, among ``values``: a replay puts their state into the notebook's
    objects (:func:`~.in_place.update_in_place`), so that other names holding them see it too."""

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
            "changed": list(self.changed),
        }

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> CellOutcome:
        """Read a journaled outcome back (format 1, as every version so far wrote it)."""
        return cls(
            values=dict(payload["values"]), modules=dict(payload["modules"]), skipped=dict(payload["skipped"]),
            deletes=tuple(payload["deletes"]), outputs=tuple(payload["outputs"]),
            result=_result_from_payload(payload["result"]), star_imports=tuple(payload.get("star_imports", ())),
            changed=tuple(payload.get("changed", ())),
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
    changed: tuple[str, ...] = (),
) -> CellOutcome:
    """The outcome of a body that ran in ``ns``; ``fmt=None`` leaves the result out (a cell ending in ``;``).

    ``changed``: inputs the cell changed in place (``df["score"] = ...``, ``model.fit(X)``). They are
    journaled as the cell left them, so that a replay in a new kernel restores what the first run
    left, as it does for the names the cell binds; one that cannot be pickled is in ``skipped``, like
    a bound name, so that the cell warns and a replay says it did not restore it.
    """
    packed = pack_namespace(binds + changed, ns)
    cell_result = None if fmt is None else pack_result(last, result, packed.values, packed.skipped, fmt)
    return CellOutcome(
        values=packed.values, modules=packed.modules, skipped=packed.skipped,
        deletes=tuple(n for n in deletes if n not in ns), outputs=tuple(outputs), result=cell_result,
        star_imports=star_imports, changed=tuple(n for n in changed if n in packed.values),
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
