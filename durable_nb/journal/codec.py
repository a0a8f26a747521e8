"""Payload encoding and the text previews stored beside payloads.

Payloads are pickles: plain ``pickle`` for builtin scalars (fast, and what most
calls return), ``cloudpickle`` for everything else so that classes and functions
defined in a notebook travel by value. Both load with :func:`pickle.loads`.

A class of ``__main__`` (the notebook) is journaled by value *and* by name
(:class:`_Pickler`): loading it gives the class of that name the notebook
defines now if there is one, else the copy as before. A function likewise, when
the notebook's function of that name is the same function (same code, defaults and
captured values). So after a
kernel restart a replayed result or exception is an instance of the class the
notebook defines again (``except PaymentDeclined`` and ``isinstance`` keep
working; a copy would be another class), and a process that never defined the
class, or a replayed cell that defines it itself, still loads the copy.
Previews are produced once, at write time, so nothing that displays a journal
ever needs to unpickle it.

Over 400 lines because the loaders a payload names (``_rebuild_exception``,
``_main_class_or``, ...) must stay at these names for every journal already
written, and the pickler that chooses them (an exception with its chain, a
memoryview, a notebook's classes) belongs beside them.
"""

from __future__ import annotations

import copyreg
import dataclasses
import inspect
import io
import operator
import pickle
import re
import reprlib
import sys
import types
from collections.abc import Callable
from typing import Any

import cloudpickle

from .fingerprint import fingerprint_code

FORMAT = "pickle"
PREVIEW_LIMIT = 200

_SCALARS = frozenset({int, float, str, bytes, bool, type(None), complex})

_repr = reprlib.Repr()
_repr.maxstring = PREVIEW_LIMIT
_repr.maxother = PREVIEW_LIMIT
_repr.maxlist = _repr.maxtuple = _repr.maxset = _repr.maxdict = 12
_repr.maxlevel = 4


NOT_FOUND: Any = object()
"""What :func:`found_by_name` returns when the name leads nowhere (None may be what a name holds)."""


def found_by_name(root: Any, qualname: str) -> Any:
    """``root.<qualname>``, dotted names followed attribute by attribute (``Outer.Inner``), or :data:`NOT_FOUND`.

    How pickle finds a class or function again by its module and qualified name: a payload names what it
    needs that way (:func:`missing_global`), and an object that cannot be found so travels by value.
    """
    try:
        for part in qualname.split("."):
            root = getattr(root, part)
    except Exception:
        return NOT_FOUND
    return root


def _main_attr(qualname: str) -> Any:
    """``__main__.<qualname>`` now, or None."""
    target = found_by_name(sys.modules.get("__main__"), qualname)
    return None if target is NOT_FOUND else target


_DATACLASS_MARKERS = {
    type(dataclasses._FIELD): None,  # type: ignore[attr-defined]  # _FIELD, _FIELD_CLASSVAR, _FIELD_INITVAR: .name
    type(dataclasses.MISSING): "MISSING",
    type(dataclasses.KW_ONLY): "KW_ONLY",
}


def _marker_by_name(marker: Any) -> tuple[Any, tuple[Any, str]]:
    return getattr, (dataclasses, _DATACLASS_MARKERS[type(marker)] or marker.name)


for _marker_type in _DATACLASS_MARKERS:
    # ``dataclasses``' markers, which it compares by identity, pickled by name (as cloudpickle 3 does): a copy
    # (cloudpickle 2, which apache-flink pins, copies them with a notebook's dataclass) makes
    # ``dataclasses.fields()`` of the loaded class empty, so ``asdict`` fails on a replayed result, every
    # instance digests alike, and a Flink worker runs the action on records without fields. Registered with
    # copyreg, which every cloudpickle pickler consults: PyFlink's own (the job's functions) too.
    copyreg.pickle(_marker_type, _marker_by_name)


class _Pickler(cloudpickle.Pickler):  # type: ignore[misc]
    """cloudpickle, with the classes and functions ``__main__`` defines by value and by name (module docstring)."""

    def __init__(self, file: Any, protocol: int | None = None, *, members: dict[int, Any] | None = None) -> None:
        super().__init__(file, protocol=protocol)
        self._members = {} if members is None else members  # id(exception) -> what :meth:`_member` chose

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, BaseException):
            reduced = self._exception(obj)
            if reduced is not None:
                return reduced
        if type(obj) is memoryview:
            reduced = _memoryview_reduction(obj)
            if reduced is not None:
                return reduced
        if type(obj) is types.CodeType and _DROPS_FILE_NAMES:
            make, args = self.dispatch_table[types.CodeType](obj)
            return _code_in_file, (obj.co_filename, make, args)
        reduced = super().reducer_override(obj)
        # Also a copy this process rebuilt (a Flink worker runs the notebook's classes as copies): the
        # notebook that loads the row gets its own class back.
        if not (isinstance(obj, type | types.FunctionType) and obj.__module__ == "__main__"
                and isinstance(reduced, tuple) and len(reduced) == 6 and "<" not in obj.__qualname__
                and not hasattr(obj, "__wrapped__")):  # a wrapper's fingerprint cannot see the wrapped body
            return reduced
        # cloudpickle's own by-value reduction (skeleton, then state), each step wrapped to prefer the
        # class (or the same function) the notebook defines at load time: the memo still makes
        # self-references resolve.
        make, args, state, items, pairs, set_state = reduced
        if isinstance(obj, type):
            return _main_class_or, (obj.__qualname__, make, *args), (set_state, state), items, pairs, _set_unless_main
        return (_main_function_or, (obj.__qualname__, fingerprint_code(obj), make, *args), (set_state, state),
                items, pairs, _set_unless_main)

    def _exception(self, exc: BaseException) -> tuple[Any, ...] | None:
        """An exception's reduction with its chain in its state, or None to leave it to pickle's default.

        Pickle's default keeps ``args`` and ``__dict__``: ``__cause__``, ``__context__`` and
        ``__suppress_context__`` (what ``raise ... from ...`` and ``raise`` in an ``except`` set, and what
        the traceback shows as "The above exception was the direct cause ..."), and AttributeError's and
        NameError's ``name``, were lost, so the replay after a restart raised the error without the one
        behind it. They go into the state ``BaseException.__setstate__`` sets, as ``__dict__`` does (a
        journal an older durable_nb reads loads them the same way).
        """
        cls = type(exc)
        make: Callable[..., Any]
        args: tuple[Any, ...]
        state: dict[str, Any] | None
        if _default_exception_pickle(cls):
            # An exception inside a result (``gather(..., return_exceptions=True)``) or a cell's names: pickle's
            # default ``cls(*exc.args)`` fails to *load* for an ``__init__(self, a, b)`` or a keyword-only one,
            # which journaled a SUCCEEDED call that no recovery could replay. Same state, a loader that copes.
            # The attributes go as the state pickle sets once the exception exists (``BaseException.__setstate__``,
            # as pickle's default does), not as an argument of its loader: an exception an attribute refers back
            # to (``exc.me = exc``, ``exc.pair = (exc, 1)``) pickled as before instead of recursing to the limit.
            make, args, state = _rebuild_exception, (cls, exc.args, {}), _attributes(exc)
        elif isinstance(exc, OSError) and _os_error_with_own_init(type(exc)):
            # The same for an OSError subclass with an ``__init__`` of its own: pickle's ``cls(errno, strerror,
            # filename)`` fails to load ``NotFound(path)``. Built as OSError builds it, ``__init__`` not called.
            make, args, state = _rebuild_os_error, (cls, exc.__reduce__()[1]), _attributes(exc)
        elif cls.__setstate__ is BaseException.__setstate__:  # its own __reduce__ (OSError, ImportError, ...)
            reduced = exc.__reduce_ex__(pickle.HIGHEST_PROTOCOL)
            if isinstance(reduced, tuple) and len(reduced) > 3 and all(x is None for x in reduced[3:]):
                reduced = reduced[:3]  # ``(cls, args, state, None, None)``: the same reduction, spelled out
            if not (isinstance(reduced, tuple) and len(reduced) in (2, 3)
                    and (len(reduced) == 2 or reduced[2] is None or isinstance(reduced[2], dict))):
                return None
            make, args, state = reduced[0], reduced[1], reduced[2] if len(reduced) == 3 else None
        else:
            return None
        return make, args, {**(state or {}), **_chain_state(exc, self._member)} or None

    def _member(self, exc: BaseException) -> Any:
        """A cause or context as it can be journaled: itself, else its class, args and picklable attributes
        (as :func:`dumps_exception` keeps a failure), else None; decided once per exception for the whole pickle.

        Why: an unpicklable cause (an attribute holding a lock) must lose only what cannot be pickled, not make
        the exception, or a result holding it, unpicklable. Counted as picklable while its own trial runs, so
        a chain that refers back ends (the real pickle's memo resolves it).
        """
        key = id(exc)
        if key not in self._members:
            self._members[key] = exc
            try:
                _Pickler(io.BytesIO(), protocol=pickle.HIGHEST_PROTOCOL, members=self._members).dump(exc)
            except Exception:  # RecursionError too: a chain deeper than pickle can go loses its far end
                self._members[key] = None  # while its own chain is decided: one that refers back ends
                try:
                    self._members[key] = _degraded(exc, self._member)
                    dumps(self._members[key])
                except Exception:
                    self._members[key] = None
        return self._members[key]


def _chain_state(exc: BaseException, member_of: Callable[[BaseException], Any]) -> dict[str, Any]:
    """What pickle's default leaves out of an exception and ``setattr`` can restore (:meth:`_Pickler._exception`).

    ``__suppress_context__`` comes last: setting ``__cause__`` sets it to True.
    """
    state: dict[str, Any] = {}
    if isinstance(exc, AttributeError | NameError) and "name" not in getattr(exc, "__dict__", {}) \
            and isinstance(exc.name, str):
        state["name"] = exc.name  # not AttributeError.obj: the object itself (a whole DataFrame, a client)
    for name in ("__cause__", "__context__"):
        member = getattr(exc, name)
        kept = None if member is None else member_of(member)
        if kept is not None:
            state[name] = kept
    if state.get("__cause__") is not None or state.get("__context__") is not None or exc.__suppress_context__:
        state["__suppress_context__"] = exc.__suppress_context__
    return state


def _attributes(exc: BaseException) -> dict[str, Any] | None:
    """An exception's ``__dict__`` and the values of its class's ``__slots__`` (None: neither has any).

    Why the slots: pickle's default keeps ``args`` and ``__dict__`` only, and rebuilds with ``cls(*args)``:
    ``self.code`` of ``__slots__ = ("code",)`` replayed as whatever ``__init__`` made of the message
    (``code == "declined"`` instead of ``51``), silently. ``BaseException.__setstate__`` sets them back.
    """
    state = getattr(exc, "__dict__", None)
    names = [n for n in copyreg._slotnames(type(exc)) if n not in ("__dict__", "__weakref__")]  # type: ignore[attr-defined]
    if not names:
        return state
    slots = {n: getattr(exc, n) for n in names if hasattr(exc, n)}
    return {**slots, **(state or {})} or None


def _memoryview_reduction(view: memoryview) -> tuple[Any, ...] | None:
    """A memoryview as a memoryview of a copy of its bytes, with its format, shape and writability.

    cloudpickle journals one as ``bytes``: the replay returned another type (no ``.format``, ``.tolist()``
    of the items, ``.cast``). Loads with builtins only. None (cloudpickle's bytes, as before) for a view
    ``cast`` cannot rebuild (a numpy structured format).
    """
    data = view.tobytes()
    base = data if view.readonly else bytearray(data)
    if view.format == "B" and view.ndim == 1:
        return memoryview, (base,)
    try:
        memoryview(base).cast(view.format, view.shape)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return None
    return operator.methodcaller("cast", view.format, view.shape), (memoryview(base),)


def _default_exception_pickle(cls: type[BaseException]) -> bool:
    """Whether ``cls`` pickles the default way: ``__reduce__``, ``__reduce_ex__``, ``__setstate__`` not its own."""
    return (cls.__reduce__ is BaseException.__reduce__ and cls.__reduce_ex__ is BaseException.__reduce_ex__
            and cls.__setstate__ is BaseException.__setstate__)


def _os_error_with_own_init(cls: type[OSError]) -> bool:
    """Whether ``cls`` pickles as OSError does (its ``__reduce__``) but has a Python ``__init__`` of its own."""
    return (cls.__reduce__ is OSError.__reduce__ and cls.__reduce_ex__ is BaseException.__reduce_ex__
            and cls.__setstate__ is BaseException.__setstate__
            and isinstance(inspect.getattr_static(cls, "__init__"), types.FunctionType))


def _rebuild_os_error(cls: type[OSError], args: tuple[Any, ...]) -> OSError:
    """An OSError subclass from ``OSError.__reduce__``'s arguments (errno, strerror, filename, ...), as OSError
    itself builds and parses them: its own ``__init__`` may take other arguments (the attributes it set come
    back as the pickle's state)."""
    exc = OSError.__new__(cls, *args)
    OSError.__init__(exc, *args)
    return exc


def _code_in_file(filename: str, make: Any, args: tuple[Any, ...]) -> types.CodeType:
    """At load: cloudpickle's copy of a code object, with the file name it had (see :data:`_DROPS_FILE_NAMES`)."""
    code: types.CodeType = make(*args)
    return code.replace(co_filename=filename)


def _drops_file_names() -> bool:
    """Whether this cloudpickle journals a function's code without its file name (3.1 writes ``<dynamic-code>``).

    Why it matters: a notebook function restored in a new kernel is digested by its source
    (``cell_inputs.value_token``), which ``inspect`` finds through the code's file name (the old
    kernel's cell file, whose text the journal keeps beside it). Without it every cell reading a
    function another cell defined ran again after a restart, repeating its side effects.
    Where cloudpickle keeps the name (2.x, which apache-flink pins), payloads stay as they were.
    """
    code = (lambda: None).__code__
    copy: types.CodeType = pickle.loads(cloudpickle.dumps(code))
    return copy.co_filename != code.co_filename


_DROPS_FILE_NAMES = _drops_file_names()


def _main_class_or(qualname: str, make: Any, *args: Any) -> Any:
    """At load: ``__main__``'s class of that name, else cloudpickle's copy (``make(*args)``)."""
    target = _main_attr(qualname)
    return target if isinstance(target, type) else make(*args)


def _main_function_or(qualname: str, fingerprint: bytes, make: Any, *args: Any) -> Any:
    """At load: ``__main__``'s function of that name if it is the same function (code, defaults, captured
    values), else cloudpickle's copy. Why: a list holding a helper another cell defined must hold *the*
    helper after a replay, as it did live, or the cells reading the list digest it differently."""
    target = _main_attr(qualname)
    if isinstance(target, types.FunctionType) and fingerprint_code(target) == fingerprint:
        return target
    return make(*args)


def _set_unless_main(obj: Any, packed: tuple[Any, Any]) -> Any:
    """At load: fill the copy's attributes (cloudpickle's setter), never those of the notebook's own object."""
    set_state, state = packed
    return obj if _main_attr(obj.__qualname__) is obj else set_state(obj, state)


def dumps(obj: Any) -> bytes:
    """Pickle a result, an exception or a cell's output; raises whatever pickling raises (callers explain it)."""
    if type(obj) in _SCALARS:
        return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    buffer = io.BytesIO()
    _Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(obj)
    return buffer.getvalue()


def loads(data: bytes) -> Any:
    return pickle.loads(data)


def dumps_exception(exc: BaseException) -> bytes:
    """Pickle an exception so that loading it gives an instance of its class.

    The plain pickle of an exception is ``cls(*exc.args)`` plus its ``__dict__``:
    a custom ``__init__(self, code, detail)`` that passes a message to
    ``super().__init__`` fails to load (``TypeError``), and one unpicklable
    attribute makes the whole pickle fail. So the exception is kept as it is when
    it round-trips, and otherwise as class + args + the attributes that pickle,
    rebuilt by :func:`_rebuild_exception`. Raises if not even the class pickles.
    """
    try:
        data = dumps(exc)
        if type(pickle.loads(data)) is type(exc):
            return data
    except Exception:
        pass
    data = dumps(_degraded(exc, _Pickler(io.BytesIO())._member))
    pickle.loads(data)  # must load now, or the caller falls back to a RecordedError
    return data


def dumps_exception_bare(exc: BaseException) -> bytes:
    """``exc`` as its class and args alone (no attributes, no cause or context): for a payload the store cannot hold.

    Why: a replay must still raise the class the first run raised (``except ValueError:`` takes the same branch)
    when what made the pickle too large is an attribute or a member of its chain (a context holding a DataFrame).
    """
    return dumps(_ExceptionPayload(type(exc), tuple(_picklable_or_repr(a) for a in exc.args), {}))


def _degraded(exc: BaseException, member_of: Callable[[BaseException], Any] | None = None) -> _ExceptionPayload:
    """What of ``exc`` pickles: its class, its args (a preview for those that do not), its picklable attributes,
    and its cause and context as ``member_of`` keeps them (:meth:`_Pickler._member`)."""
    args = tuple(_picklable_or_repr(a) for a in exc.args)
    state = {}
    for name, value in (_attributes(exc) or {}).items():
        try:
            dumps(value)
        except Exception:
            continue  # dropped: only this attribute is lost on replay
        state[name] = value
    if member_of is not None:
        state.update(_chain_state(exc, member_of))
    return _ExceptionPayload(type(exc), args, state)


def _picklable_or_repr(value: Any) -> Any:
    try:
        dumps(value)
    except Exception:
        return preview(value)
    return value


class _ExceptionPayload:
    """Pickles as a call to :func:`_rebuild_exception` (loading never needs this class)."""

    def __init__(self, cls: type[BaseException], args: tuple[Any, ...], state: dict[str, Any]) -> None:
        self.reduced = (_rebuild_exception, (cls, args, state))

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return self.reduced


_HEAPTYPE = 1 << 9
"""``Py_TPFLAGS_HEAPTYPE``: a class made by a ``class`` statement (or at run time), not a builtin one."""


def _rebuild_exception(cls: type[BaseException], args: tuple[Any, ...], state: dict[str, Any]) -> BaseException:
    """``cls(*args)`` when its ``__init__`` accepts them, else ``cls.__new__`` with args set; then attributes."""
    try:
        exc = cls(*args)
    except Exception:
        # Built by the nearest builtin class, without the class's own ``__new__`` and ``__init__`` (either may
        # take other arguments: ``ExceptionGroup`` subclasses whose ``__new__`` fixes the message).
        exc = next(c for c in cls.__mro__ if not c.__flags__ & _HEAPTYPE).__new__(cls, *args)
    exc.args = args
    for name, value in state.items():
        try:
            setattr(exc, name, value)
        except Exception:
            exc.__dict__[name] = value
    return exc


def not_a_pickle(data: bytes) -> str | None:
    """Why ``data`` is no pickle at all (bytes typed in by hand, a torn copy), or None when it is one.

    Asked only after loading ``data`` failed (replaying valid payloads never pays for it), so that such
    bytes are not blamed on a class or its loading code.
    """
    import pickletools

    if not data:
        return "its payload is empty (0 bytes), not a pickle"
    try:
        for _ in pickletools.genops(data):
            pass
    except Exception as exc:
        return f"its payload ({len(data):,} bytes, starting {bytes(data[:12])!r}) is not a pickle ({exc})"
    return None


def missing_global(data: bytes) -> str | None:
    """The first ``module.qualname`` a pickle refers to that cannot be imported now (for error messages)."""
    import importlib

    for name in _globals_named(data):
        module, _, qualname = name.partition(" ")
        try:
            found = found_by_name(importlib.import_module(module), qualname)
        except Exception:
            found = NOT_FOUND
        if found is NOT_FOUND:
            return f"{module}.{qualname}"
    return None


def packages_named(data: bytes) -> list[str]:
    """``name version`` of each installed package (not the standard library's, not the user's) a pickle names.

    Why: a payload pickled by another version of pandas or cloudpickle (a journal written before an upgrade,
    or by a Flink job's environment) may not load with the one installed here, and the loader's own error
    (``StringDtype.__init__() takes ... arguments``) names neither the package nor the mismatch.
    """
    from importlib import metadata

    from .usercode import is_user_module

    found: dict[str, str] = {}
    for name in _globals_named(data):
        top = name.partition(" ")[0].partition(".")[0]
        if top in found or top in sys.stdlib_module_names or top in sys.builtin_module_names or is_user_module(top):
            continue
        try:
            found[top] = f"{top} {metadata.version(top)}"
        except Exception:  # a module no distribution of that name installs: no version to name
            continue
    return list(found.values())


def _globals_named(data: bytes) -> list[str]:
    """``"module qualname"`` of every global (class, function) a pickle refers to, in order."""
    import pickletools

    names: list[str] = []
    memo: dict[int, Any] = {}
    pushed: list[Any] = []  # what the last operations pushed (a str, else None); memo operations push nothing
    try:
        for op, arg, _pos in pickletools.genops(data):
            if op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8"):
                pushed.append(str(arg))
            elif op.name in ("BINGET", "LONG_BINGET", "GET"):  # a module name met before comes from the memo
                pushed.append(memo.get(int(str(arg))))
            elif op.name == "MEMOIZE":
                memo[len(memo)] = pushed[-1] if pushed else None
            elif op.name in ("BINPUT", "LONG_BINPUT", "PUT"):
                memo[int(str(arg))] = pushed[-1] if pushed else None
            elif op.name == "STACK_GLOBAL":
                if len(pushed) >= 2 and isinstance(pushed[-2], str) and isinstance(pushed[-1], str):
                    names.append(f"{pushed[-2]} {pushed[-1]}")
                pushed.append(None)
            else:
                if op.name in ("GLOBAL", "INST"):
                    names.append(str(arg))
                pushed.append(None)
            del pushed[:-2]
    except Exception:
        pass
    return names


def sendable(text: str) -> str:
    """``text`` with NUL characters and lone surrogates written as escapes (others kept).

    PostgreSQL's text type holds neither, and UTF-8 (what Jupyter sends widgets) has no bytes for a
    lone surrogate: a non-UTF-8 file name in a run id, a NUL in an exception message.
    """
    if text.isprintable():
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")


_BIDI = re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
"""Unicode's bidirectional controls (property ``Bidi_Control``), the Arabic letter mark included."""


def visible(text: str) -> str:
    """``text`` with bidirectional controls written as escapes: a run id ``pay-\u202egnp.exe`` must not
    display reversed, as another id (a journal from someone else is data, shown as it is)."""
    return _BIDI.sub(lambda m: f"\\u{ord(m.group()):04x}", text) if _BIDI.search(text) else text


def shown(text: str) -> str:
    """Journal text as a person is shown it (HTML or plain text in a notebook): :func:`sendable` and
    :func:`visible`; widget state and display outputs travel to the browser as UTF-8."""
    return visible(sendable(text))


def clip(text: str) -> str:
    """One line (whitespace runs made one space) of at most PREVIEW_LIMIT characters, :func:`sendable`.

    A preview is for reading, not for round-tripping: every journal and every browser must take it.
    """
    text = sendable(" ".join(text.split()))
    if len(text) > PREVIEW_LIMIT:
        return text[: PREVIEW_LIMIT - 1] + "…"
    return text


def preview(obj: Any) -> str:
    """A bounded one-line ``repr`` that never raises."""
    t = type(obj)
    # Fast path, same text as reprlib: these reprs are single-line and reprlib only
    # shortens ints beyond 40 digits and strings beyond PREVIEW_LIMIT characters.
    if t is not str and _is_short_scalar(obj):
        return repr(obj)
    if t is str and len(obj) <= 64:
        text = repr(obj)
        if len(text) <= PREVIEW_LIMIT and text.isprintable() and " " not in text:
            return text
    if (t is dict or t is list or t is tuple) and _flat(obj):  # the usual result: a small record
        return clip(repr(obj))
    try:
        text = _repr.repr(obj)
    except Exception as exc:  # a broken __repr__ must not break the journal
        text = f"<{type(obj).__qualname__}: repr failed: {type(exc).__name__}>"
    return clip(text)


_PLAIN = frozenset({bool, float, type(None)})


def _is_short_scalar(value: Any) -> bool:
    """Scalars whose ``repr`` reprlib leaves as it is (see :func:`preview`'s limits)."""
    t = value.__class__
    if t is str:
        return len(value) <= 64 and value.isprintable()
    return t in _PLAIN or (t is int and -(10**30) < value < 10**30)


def _flat(obj: dict[Any, Any] | list[Any] | tuple[Any, ...]) -> bool:
    """A container reprlib would print exactly as ``repr`` does: few short scalars, a dict's keys in sorted order."""
    if len(obj) > _repr.maxdict:
        return False
    short = _is_short_scalar
    if obj.__class__ is not dict:
        return all(short(v) for v in obj)
    previous: Any = None
    for i, (k, v) in enumerate(obj.items()):
        if not (short(k) and short(v)):
            return False
        try:
            if i and not previous <= k:  # reprlib sorts a dict's keys
                return False
        except TypeError:
            return False
        previous = k
    return True


def error_preview(exc: BaseException) -> str:
    """``Type: message``, then the exception it was raised from or while handling, bounded, never raises.

    Why the one behind it: the traceback at the first run showed it ("The above exception was the direct
    cause ..."), and a wrapper's message alone (``RuntimeError: charge failed``) hides the reason.
    """
    text = _type_and_message(exc)
    try:
        if exc.__cause__ is not None:
            text += f" (from {_type_and_message(exc.__cause__)})"
        elif exc.__context__ is not None and not exc.__suppress_context__:
            text += f" (while handling {_type_and_message(exc.__context__)})"
    except Exception:
        pass
    return clip(text)


def _type_and_message(exc: BaseException) -> str:
    try:
        message = str(exc)
    except Exception:
        message = "<str() failed>"
    return f"{type(exc).__qualname__}: {message}" if message else type(exc).__qualname__
