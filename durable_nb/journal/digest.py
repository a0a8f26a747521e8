"""Argument digests that are equal for equal arguments in any process.

A digest decides whether a journaled call is "the same call" after a restart,
so it cannot depend on anything a new process changes: string hashing (set
order), object addresses, dict insertion order. Arguments are encoded
canonically (type tag + content, containers recursively, dict items and set
members sorted by their encoding) and hashed with BLAKE2b-128.

Fallbacks, in order, for objects the canonical encoder does not know:

1. ``pickle`` (protocol 4), then ``cloudpickle`` for notebook-defined classes.
   A lambda, a nested function or a notebook-defined function counts by its name
   and :func:`~durable_nb.journal.fingerprint.fingerprint_code` (code, defaults,
   captured values), at any depth: pickle would hold a notebook function by name
   only, cloudpickle a lambda with its file name, which a kernel restart changes;
2. if the object cannot be pickled at all (a client holding a lock or a socket),
   the digest covers only its type's ``module.qualname``. Two such objects of the
   same type digest equal, which is what a recovery needs: the "same" client
   object is a new instance after a restart. The user is warned once per type.

Type-sensitive and seed-free everywhere (issue 9). A pickle is only as stable as
the order it meets set members in, and a hash of a pandas object column only as
type-sensitive as ``str()``. So, while keeping every digest that was already right
(journals written before keep matching: no digest version is needed; a call taking a
notebook function or an instance of a notebook class was not the same in every
process, and one journaled before counts as another call once):

* an instance of a notebook's or a helper module's class (:mod:`.usercode`), and an
  object whose pickle would
  hold one, a set, a frozenset, an order-free mapping
  (``Counter``, ``defaultdict``), a numpy object array or an object-typed pandas
  column, at any depth (``SimpleNamespace``, ``__dict__``, ``__slots__``), is
  encoded canonically from its ``__reduce_ex__(4)`` (class name, args, state,
  items; sets sorted by encoding) instead of its pickle bytes;
* numpy arrays with ``dtype.hasobject`` encode their elements, never their
  (pointer) bytes;
* DataFrames/Series/Indexes keep the seed-fixed ``hash_pandas_object`` digest
  when every label is a ``str`` and every object column holds only ``str``
  (the cases where it is exact); otherwise labels and object columns are encoded
  element by element (``1`` and ``"1"``, ``None`` and ``"None"`` differ; list and
  dict cells digest instead of raising ``unhashable type``).

Over 400 lines because the canonical encoder is one mutual recursion (containers,
user objects, functions, the walk that decides which objects need it); pandas
objects, plain data and function fingerprints, which it only calls, live apart.

Pandas objects: :mod:`durable_nb.journal.digest_frames`. Floats digest by their
exact bits (``-0.0`` differs from ``0.0``; every NaN is the same NaN). What
identifies a lambda or closure: :mod:`durable_nb.journal.fingerprint`.
"""

from __future__ import annotations

import collections
import contextlib
import contextvars
import dataclasses
import enum
import hashlib
import io
import pickle
import sys
import types
from collections.abc import Callable, Iterator
from typing import Any

import cloudpickle

from ..errors import UnpicklableArgumentWarning, warn_at_user_code
from .digest_plain import MAX_DEPTH, NotPlain, encode_plain
from .usercode import is_user_class

_warned_types: set[str] = set()
_MAX_DEPTH = MAX_DEPTH


def type_name(obj: Any) -> str:
    t = type(obj)
    return f"{t.__module__}.{t.__qualname__}"


_ATOMS = frozenset({bool, int, float, str, bytes, complex, type(None)})
_GLOBALS = (type, types.FunctionType, types.BuiltinFunctionType, types.MethodType, types.ModuleType)


def _needs_canonical(obj: Any, depth: int = 0) -> bool:
    """Whether ``obj``'s pickle could differ for equal values (set order) or confuse types.

    Walks what pickle would walk (``__reduce_ex__(4)``), each object once; False keeps
    the pickle digest. A cyclic object keeps it too (pickle's memo handles cycles, a
    canonical walk would not end).
    """
    walk = _Walk()
    return walk.needs(obj, depth, False) and not walk.cyclic


class _Walk:
    def __init__(self) -> None:
        # Holding what it saw, by id: the item lists and state dicts ``__reduce_ex__`` makes are freed
        # once walked, and a later one given a freed id counted as seen, so the set behind it was missed
        # and the object digested by its pickle, in PYTHONHASHSEED's set order (a recovery re-executed).
        self.seen: dict[int, Any] = {}
        self.path: set[int] = set()
        self.cyclic = False

    def needs(self, obj: Any, depth: int, inside: bool) -> bool:
        t = type(obj)
        if t in _ATOMS or depth > _MAX_DEPTH:
            return False
        if _bound_to_object(obj):  # as its object on its own: a method of an exactly hashed frame keeps its pickle
            return self.needs(obj.__self__, depth + 1, False)
        if isinstance(obj, _GLOBALS):
            return _by_code(obj) or _by_value(obj)
        if id(obj) in self.path:
            self.cyclic = True
            return False
        if id(obj) in self.seen:
            return False
        self.seen[id(obj)] = obj
        self.path.add(id(obj))
        try:
            return self._needs(obj, t, depth, inside)
        finally:
            self.path.discard(id(obj))

    def _needs(self, obj: Any, t: type, depth: int, inside: bool) -> bool:
        if isinstance(obj, (set, frozenset)):
            return True
        if is_user_class(t) and _by_state():
            # An instance of a notebook's (or a helper module's) class: pickle holds its class by name
            # in the notebook, but a process running a copy of the class (a Flink worker) can only
            # pickle it by value, with a tracker id that changes with the notebook's process. Walked to
            # the end all the same: a cycle through it (a tree's parent links) keeps the pickle digest.
            with contextlib.suppress(Exception):
                for part in _reduced_parts(obj.__reduce_ex__(4)):
                    self.needs(part, depth + 1, True)
            return True
        if t is list or t is tuple:
            if _ATOMS.issuperset(map(type, obj)):  # a column of numbers or strings: at C speed
                return False
            return any(self.needs(x, depth + 1, True) for x in obj)
        if t is dict:
            if _ATOMS.issuperset(map(type, obj)) and _ATOMS.issuperset(map(type, obj.values())):
                return False
            return any(self.needs(x, depth + 1, True) for item in obj.items() for x in item)
        if isinstance(obj, dict) and not isinstance(obj, collections.OrderedDict):
            return True  # Counter, defaultdict: equal whatever their order
        if t.__module__ == "numpy" and hasattr(obj, "dtype"):
            return bool(getattr(obj.dtype, "hasobject", False))
        if t.__module__.startswith("pandas") and not _by_value(t):  # (itertuples' rows are walked on)
            # A frame's pickle follows its internal block layout, not just its content.
            from .digest_frames import is_frame, pandas_exact

            return (inside and is_frame(obj)) or not pandas_exact(obj)
        try:
            reduced = obj.__reduce_ex__(4)
        except Exception:
            return False
        if isinstance(reduced, str):
            return False
        return any(self.needs(part, depth + 1, True) for part in _reduced_parts(reduced))


def _reduced_parts(reduced: tuple[Any, ...]) -> list[Any]:
    """``[args, state, listitems, dictitems]`` of a ``__reduce_ex__`` value (iterators listed)."""
    parts: list[Any] = [reduced[1] if len(reduced) > 1 else (), reduced[2] if len(reduced) > 2 else None]
    parts.append(None if len(reduced) < 4 or reduced[3] is None else list(reduced[3]))
    parts.append(None if len(reduced) < 5 or reduced[4] is None else list(reduced[4]))
    return parts


def _bound_to_object(obj: Any) -> bool:
    """A method bound to an object (not a class or module): it counts by that object, not as a global.

    Why: its pickle holds the object, sets in the hash seed's order included, so ``callback=customer.notify``
    digested otherwise in every kernel (its recovery executed again); and unpicklable (a client holding a
    lock), it counted by its type alone, so ``client.charge`` and ``client.refund`` were the same argument.
    """
    return type(obj) is types.MethodType and not isinstance(obj.__self__, (type, types.ModuleType))


def _by_code(obj: Any) -> bool:
    """A function that counts by its code (:mod:`.fingerprint`), not by its name.

    A lambda, a nested function or one the notebook (``__main__``) defines: pickle
    holds the latter by name only (an edited helper would replay the old call), and
    cloudpickle holds the others with their file name, which a kernel restart
    changes (``/tmp/ipykernel_<pid>/...``), turning a recovery into a mismatch.
    """
    return type(obj) is types.FunctionType and (obj.__module__ == "__main__" or "<" in obj.__qualname__)


def _by_value(obj: Any) -> bool:
    """A class that cannot be found by its name (``itertuples``' ``Pandas`` namedtuple, a class made in a function).

    Why: pickle refuses it, and cloudpickle holds it by value with a tracker id new in every process, so a
    call passed an ``itertuples()`` row digested otherwise after a restart: its recovery executed it again.
    Encoded canonically instead, the class counts by its name (no digest that was stable before changes).
    """
    from .codec import found_by_name  # imported here: codec imports this module (through fingerprint)

    return isinstance(obj, type) and found_by_name(sys.modules.get(obj.__module__), obj.__qualname__) is not obj


def _encode_function(obj: Any, out: list[bytes]) -> None:
    from .fingerprint import fingerprint_code, read_settings  # imported here: it imports this module

    if _seen_again(obj, out):  # a function among its own defaults
        return
    out.append(b"F" + _global_name(obj) + b";")
    out.append(fingerprint_code(obj))
    settings = read_settings(obj)
    if settings:
        _encode(settings, out)


def _global_name(obj: Any) -> bytes:
    return f"{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', type(obj).__qualname__)}".encode()


_Memo = dict[int, tuple[int, Any]]
_memo: contextvars.ContextVar[_Memo | None] = contextvars.ContextVar("durable_nb_digest_memo", default=None)


def _encode_reduced(obj: Any, out: list[bytes], depth: int) -> None:
    """Canonical encoding of an object from its ``__reduce_ex__(4)``: class, args, state, items.

    An object met again in the same digest is a back-reference (as in pickle's memo), so
    shared sub-objects cost their size once.
    """
    if _seen_again(obj, out):
        return
    reduced = _reduce(obj)
    args, state, listitems, dictitems = _reduced_parts(reduced)
    parts: list[bytes] = [b"R" + _global_name(reduced[0]) + b";(%d:" % len(args)]
    for part in (*args, state, listitems):
        if isinstance(part, _GLOBALS) and not _by_code(part) and not _bound_to_object(part):
            parts.append(b"g" + _global_name(part) + b";")
        else:
            _encode(part, parts, depth + 1)
    if dictitems is None:
        parts.append(b"N")
    elif isinstance(obj, collections.OrderedDict):
        _encode(dictitems, parts, depth + 1)
    else:
        items = sorted(_encoded(k, depth) + _encoded(v, depth) for k, v in dictitems)
        parts.append(b"{%d:" % len(items))
        parts.extend(items)
    out.extend(parts)


def _reduce(obj: Any) -> Any:
    """``obj.__reduce_ex__(4)``, without an exception's empty ``__dict__`` (as before anything read it).

    Why: an exception creates its ``__dict__`` on first access, and its built-in ``__reduce__`` includes it
    once it exists. Journaling an exception reads it, so an exception a call returned digested otherwise
    than its replay (a NonDeterminismWarning at every recovery of the call it was passed to), and one passed
    to a call that raised ``from`` it "changed in place" (a ChangedInputWarning). Only the built-in (C)
    reductions: a ``__reduce__`` of the user's own returned what it returns before this commit too.
    """
    reduced = obj.__reduce_ex__(4)
    if (isinstance(obj, BaseException) and isinstance(reduced, tuple) and len(reduced) == 3 and reduced[2] == {}
            and type(obj).__reduce_ex__ is BaseException.__reduce_ex__
            and isinstance(type(obj).__reduce__, types.MethodDescriptorType)):
        return reduced[:2]
    return reduced


def _exception_reducer(obj: Any) -> Any:
    return _reduce(obj) if isinstance(obj, BaseException) else NotImplemented


class _Pickler(pickle.Pickler):
    """Pickle's bytes, with every exception in them (an ExceptionGroup's members, an exception among
    another's args) reduced by :func:`_reduce`: the same object pickle meets, so its memo (an exception an
    attribute refers back to) and a reduction to a global name (a module's singleton) are pickle's own."""

    def reducer_override(self, obj: Any) -> Any:
        return _exception_reducer(obj)


class _CloudPickler(cloudpickle.Pickler):  # type: ignore[misc]
    def reducer_override(self, obj: Any) -> Any:
        reduced = _exception_reducer(obj)
        return super().reducer_override(obj) if reduced is NotImplemented else reduced


def _dumps(pickler: type[pickle.Pickler], obj: Any) -> bytes:
    buffer = io.BytesIO()
    pickler(buffer, protocol=4).dump(obj)
    return buffer.getvalue()


_vouched: contextvars.ContextVar[bool] = contextvars.ContextVar("durable_nb_digest_vouched", default=False)
"""Set while a user's object is encoded from its state: a part that cannot be pickled (its client's lock)
raises :class:`_Unpicklable` instead of counting by its type, so that the whole object counts by its type
(as the README promises a client holding a lock does), rather than by a state that changes per process."""


class _Unpicklable(Exception):
    pass


def _encode_pickled(obj: Any, out: list[bytes], depth: int = 0) -> None:
    if _needs_canonical(obj, depth):
        inside = _vouched.get()
        token = None if inside or not is_user_class(type(obj)) else _vouched.set(True)
        try:
            _encode_reduced(obj, out, depth)
            return
        except _Unpicklable:
            if inside:
                raise  # the outermost user's object decides
        except Exception:
            pass  # the pickle digest below, as before
        finally:
            if token is not None:
                _vouched.reset(token)
    try:
        data = _dumps(_Pickler, obj)
    except Exception:
        try:
            data = _dumps(_CloudPickler, obj)
        except Exception as exc:
            if _vouched.get():
                raise _Unpicklable from exc
            name = type_name(obj.__self__) + "." + obj.__name__ if _bound_to_object(obj) else type_name(obj)
            if name not in _warned_types:
                _warned_types.add(name)
                warn_at_user_code(
                    f"durable_nb: an argument of type {name} cannot be pickled ({type(exc).__name__}); "
                    f"it is digested by its type name only, so any two {name} objects count as equal "
                    f"arguments. Pass plain data (ids, dicts) if the call depends on its contents.",
                    UnpicklableArgumentWarning,
                )
            out.append(b"?" + name.encode() + b";")
            return
    out.append(b"p%d:" % len(data))
    out.append(data)


_NUMBERS = frozenset({bool, int, float, type(None)})


def _encode_numbers(obj: list[Any] | tuple[Any, ...], out: list[bytes]) -> None:
    """A list of numbers inside a user's object (a new encoding: no journaled digest changes) as pickle bytes.

    Equal in every process (pickle memoizes no number) and at C speed: a million floats walked one by
    one cost ten times as much. Text is left to the canonical walk: pickle's bytes would depend on
    whether equal strings are one object (parsed from JSON or written as literals).
    """
    data = pickle.dumps(obj, protocol=4)
    out.append(b"p%d:" % len(data))
    out.append(data)


_dataclass_path: contextvars.ContextVar[frozenset[int]] = contextvars.ContextVar(
    "durable_nb_digest_dataclass_path", default=frozenset())
"""The dataclass objects being encoded around the current one: a tree's parent link is a cycle."""


def _encode_dataclass(obj: Any, out: list[bytes], depth: int) -> None:
    """Field by field; a dataclass met again inside itself (a parent link) is a marker, not a walk
    to the depth limit, which branched exponentially (a root, a child and two grandchildren hung).

    A ``field(compare=False)`` is left out, as ``==`` leaves it out: such a field is typically when the
    object was made (``default_factory=time.time``) or a cache, and counting it made the order the
    notebook builds again after a restart another argument, so its recovery charged a second time.
    """
    path = _dataclass_path.get()
    if id(obj) in path:
        out.append(b"^" + type_name(obj).encode() + b";")
        return
    token = _dataclass_path.set(path | {id(obj)})
    try:
        out.append(b"d" + type_name(obj).encode() + b";")
        for f in dataclasses.fields(obj):
            if not f.compare:
                continue
            _encode(f.name, out, depth + 1)
            _encode(getattr(obj, f.name), out, depth + 1)
    finally:
        _dataclass_path.reset(token)


def _seen_again(obj: Any, out: list[bytes]) -> bool:
    """Whether ``obj`` was encoded before in this digest (then a back-reference is written), else remember it."""
    memo = _memo.get()
    if memo is None:
        return False
    if id(obj) in memo:
        out.append(b"@%d;" % memo[id(obj)][0])
        return True
    memo[id(obj)] = (len(memo), obj)  # holding obj: a freed temporary's id must not be reused
    return False


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
        _encode_pickled(obj, out, depth)
    elif (t is tuple or t is list) and _vouched.get() and _NUMBERS.issuperset(map(type, obj)):
        _encode_numbers(obj, out)
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
    elif _by_code(obj):
        _encode_function(obj, out)
    elif isinstance(obj, enum.Enum):
        out.append(b"e" + type_name(obj).encode() + b";")
        _encode(obj.value, out, depth + 1)
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        _encode_dataclass(obj, out, depth)
    elif t.__module__.startswith("pandas"):
        from .digest_frames import encode_pandas  # imported here: it imports this module

        encode_pandas(obj, out, depth)
    elif t.__module__ == "numpy" and hasattr(obj, "tobytes") and hasattr(obj, "dtype"):
        out.append(b"n" + str(obj.dtype).encode() + repr(getattr(obj, "shape", ())).encode() + b";")
        if obj.dtype.hasobject:  # the bytes would be element pointers: encode the elements
            out.append(b"O")
            _encode(obj.tolist(), out, depth + 1)
        else:
            out.append(obj.tobytes())
    else:
        _encode_pickled(obj, out, depth)


def _encoded(obj: Any, depth: int) -> bytes:
    """The encoding of a set member or dict item, on its own: sorted next to its siblings.

    It gets an empty back-reference memo, so that it does not depend on which sibling
    (in set order, which varies by process) was encoded first.
    """
    parts: list[bytes] = []
    memo = _memo.get()
    if memo is None or memo:
        token = _memo.set({})
        try:
            _encode(obj, parts, depth + 1)
        finally:
            _memo.reset(token)
    else:
        try:
            _encode(obj, parts, depth + 1)
        finally:
            memo.clear()
    return b"".join(parts)


def digest(args: tuple[Any, ...], kwargs: dict[str, Any], salt: bytes = b"") -> str:
    """Hex digest of a call's arguments; ``salt`` adds a function fingerprint."""
    plain = _plain_digest(args, kwargs, salt)
    return plain if plain is not None else _canonical_digest(args, kwargs, salt)


def _plain_digest(args: tuple[Any, ...], kwargs: dict[str, Any], salt: bytes) -> str | None:
    """The digest of plain data (most arguments) by a shortcut giving the same bytes (.digest_plain); else None."""
    parts: list[bytes] = [salt]
    try:
        if type(args) is not tuple:
            raise NotPlain
        parts.append(b"(%d:" % len(args))  # encode_plain's tuple branch, one call less
        for arg in args:
            encode_plain(arg, parts, 1)
        if kwargs:
            encode_plain(kwargs, parts, 0)
    except NotPlain:
        return None
    return hashlib.blake2b(b"".join(parts), digest_size=16).hexdigest()


def _canonical_digest(args: tuple[Any, ...], kwargs: dict[str, Any], salt: bytes) -> str:
    parts: list[bytes] = [salt]
    token = _memo.set({})
    try:
        _encode(args, parts)
        if kwargs:
            _encode(kwargs, parts)
    finally:
        _memo.reset(token)
    return hashlib.blake2b(b"".join(parts), digest_size=16).hexdigest()


_earlier: contextvars.ContextVar[bool] = contextvars.ContextVar("durable_nb_digest_earlier", default=False)
"""Set by :func:`digests_as_before`: an instance of the user's class digests by its pickle when nothing else
inside it needs the canonical walk, as every durable_nb did before such instances counted by their state."""


@contextlib.contextmanager
def digests_as_before() -> Iterator[None]:
    """Inside it, digests are the ones durable_nb gave before instances of the user's classes counted by state.

    Why: in the notebook, such an instance (``Customer`` from a helpers module next to it, a namedtuple,
    an exception class of the user's) pickled by its class's name, a stable digest, which calls and cells
    journaled then are recorded under. Without a second look under it each of them mismatched once after
    the upgrade and ran again (a charge made twice); equal pickles are equal arguments, so a record found
    under it is the same call.
    """
    token = _earlier.set(True)
    try:
        yield
    finally:
        _earlier.reset(token)


def earlier_digest(args: tuple[Any, ...], kwargs: dict[str, Any], salt: bytes = b"") -> str:
    """:func:`digest` as before instances of the user's classes counted by state (:func:`digests_as_before`)."""
    with digests_as_before():
        return digest(args, kwargs, salt)


_met: contextvars.ContextVar[list[bool] | None] = contextvars.ContextVar("durable_nb_digest_met", default=None)
"""Set by :func:`noting_user_instances`: its flag turns True when an instance of the user's class is met."""


def _by_state() -> bool:
    """Whether the instance of the user's class met now counts by its state (not inside :func:`digests_as_before`).

    Noted (:func:`noting_user_instances`): that branch is the only one where the two digests part, so a digest
    that never reached it is its own earlier digest.
    """
    met = _met.get()
    if met is not None:
        met[0] = True
    return not _earlier.get()


@contextlib.contextmanager
def noting_user_instances() -> Iterator[list[bool]]:
    """A flag, ``[True]`` once a digest inside met an instance of the user's class (else its earlier digest
    is the same: :func:`digests_as_before`)."""
    flag = [False]
    token = _met.set(flag)
    try:
        yield flag
    finally:
        _met.reset(token)


def digest_and_earlier(
    args: tuple[Any, ...], kwargs: dict[str, Any], salt: bytes = b""
) -> tuple[str, Callable[[], str] | None]:
    """:func:`digest`, and :func:`earlier_digest` to ask when its record mismatches; None when it is the same.

    Why not always the earlier digest: asked on every mismatch (a changed argument, a cell's new inputs) it
    digested every argument a second time, a 1e6-row frame ~0.4 s, where only the user's instances differ.
    """
    plain = _plain_digest(args, kwargs, salt)
    if plain is not None:  # plain data holds no instance of the user's class: a replay pays nothing more
        return plain, None
    met = [False]
    token = _met.set(met)  # not noting_user_instances(): a generator context manager costs ~1 µs
    try:
        args_digest = _canonical_digest(args, kwargs, salt)
    finally:
        _met.reset(token)
    return args_digest, ((lambda: earlier_digest(args, kwargs, salt)) if met[0] else None)


def digest_value(obj: Any) -> str:
    """Digest of one value (cell inputs, closure contents)."""
    return digest((obj,), {})
