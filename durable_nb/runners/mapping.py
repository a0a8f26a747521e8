"""How ``map`` turns records into runs; shared by LocalRunner, FlinkRunner and ``%%durable --map``.

A record's run id is ``"{action}/{key}#{seq}"``: the action's id, the record's key
as text (:func:`key_text`) and the number of earlier records whose key has the same
text (Flink keeps that number in keyed state). Mapping the same records again
therefore reopens the same runs and replays them, on either runner.

Keys that print alike never share a run (issue 9): ``key_text`` is injective
across types. ``str`` keys and ``int``/``float``/``bool``/``None``/``tuple`` keys
keep the plain text they always had (existing journals keep replaying), except a
``str`` that reads like one of those (``"1"``, ``"None"``, ``"nan"``, ``"(a, b)"``) or
starts with a quote, ``~`` or ``(``, which is written as its ``repr`` (``'1'``).
numpy scalars count as the Python value they hold. Any other type is tagged
``~module.Type:text``. A missing key (None, NaN, ``pd.NA``)
is a run of its own: each such record gets the next ``seq`` (``…/nan#0``,
``…/nan#1``), never a shared run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from ..errors import NonDeterminismWarning, warn_at_user_code
from ..journal.callid import call_identity
from ..journal.frames import MAP_COLUMNS

Key = str | Callable[[Any], Any] | None


def action_name(action: Callable[..., Any]) -> str:
    """The action's id, the first part of its run ids; one holding ``/``, or a lambda's, is warned about.

    Why: ``shop/eu`` with the key ``c`` and ``shop`` with the key ``eu/c`` both make
    ``shop/eu/c#0``, so one action could replay the other's calls. A warning, not an error:
    a name that held ``/`` until now names the runs its journal already has. Every lambda of a
    module has the same name: a second lambda over the same keys took the first one's runs over,
    and the first one mapped again repeated its side effects. Not made unique by the lambda's
    code: editing it would then start every record's run afresh.
    """
    name = call_identity(action)[0]
    if "/" in name:  # shown once per place by Python's default filter
        warn_at_user_code(
            f"durable_nb: the action's name {name!r} holds '/', which run ids put between the action's name and "
            f"the record's key ({name}/KEY#SEQ): another action, named {name.split('/')[0]!r} say, could make the "
            f"same run ids and replay this one's calls. Name it without '/' (@dnb.durable(name="
            f"{name.replace('/', '.')!r})) before its journal holds runs you need.", UserWarning)
    if name.endswith("<lambda>"):  # every lambda of a module: the same name
        module = name[: -len(".<lambda>")]
        warn_at_user_code(
            f"durable_nb: the action is a lambda, so its runs are named {name}/KEY#SEQ, as are those of every "
            f"other lambda action in {module}: a second lambda mapped (or run) over the same keys takes these "
            f"runs over (its calls do not match, so theirs are discarded), and mapping this one again repeats its "
            f"side effects. Name the action: def charge_all(record, ctx): ..., or "
            f"dnb.durable(name='charge_all')(lambda record, ctx: ...).", UserWarning)
    return name


def run_id_for(action: str, key: Any, seq: int) -> str:
    """The run id of the ``seq``-th record whose key reads as ``key_text(key)``."""
    return f"{action}/{key_text(key)}#{seq}"


_PLAIN_TYPES = (int, float, bool, type(None), tuple)


def key_text(key: Any) -> str:
    """A key as it appears in run ids: readable, and different for keys of different types."""
    if type(key).__module__ == "numpy" and hasattr(key, "item"):
        key = key.item()  # np.int64(5) is the key 5, as in pandas (and as run ids always had it)
    t = type(key)
    if t is str:
        return key if _plain_str(key) else repr(key)
    if t is tuple or t is set or t is frozenset:
        ordered = _ordered_repr(key)
        return ordered if t is tuple else f"~builtins.{t.__qualname__}:{ordered}"
    if t in _PLAIN_TYPES:
        return str(key)
    text = str(key) if t.__repr__ is not object.__repr__ or t.__str__ is not object.__str__ else None
    if text is None:  # the default repr holds an address: digest the value instead
        from ..journal.digest import digest_value

        text = digest_value(key)[:16]
    return f"~{t.__module__}.{t.__qualname__}:{text}"


def _ordered_repr(value: Any) -> str:
    """``repr`` of a tuple or set key with the members of sets of text sorted: their order changes with
    ``PYTHONHASHSEED``. Equal to ``repr`` for every other key, so those run ids are as they always were.
    """
    t = type(value)
    if t is tuple:
        inner = ", ".join(_ordered_repr(v) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    if (t is set or t is frozenset) and _seeded(value):
        members = ", ".join(sorted(_ordered_repr(v) for v in value))
        if t is set:
            return f"{{{members}}}" if members else "set()"
        return f"frozenset({{{members}}})" if members else "frozenset()"
    return repr(value)


def _seeded(value: Any, depth: int = 0) -> bool:
    """Whether a set's order follows ``PYTHONHASHSEED``: it holds a str or bytes (at any depth).

    Sets of numbers keep their own order, as run ids always had it: sorting them too
    would rename runs journaled before (and run their calls again).
    """
    if isinstance(value, (str, bytes)):
        return True
    if isinstance(value, (tuple, frozenset, set)) and depth < 20:
        return any(_seeded(v, depth + 1) for v in value)
    return False


def _plain_str(text: str) -> bool:
    """Whether a str key can keep its plain text without reading as another type's key."""
    if not text:
        return True
    first = text[0]
    if first in "'\"~(" or text in ("None", "True", "False"):
        return False
    if not (first.isdecimal() or first.isspace() or first in "+-.iInN"):
        return True  # float() would refuse it: skip raising and catching its ValueError (a map's hot path)
    try:
        float(text)  # "1", "1.0", "nan", "inf", " 2 ", "1_000" read as numbers
    except ValueError:
        return True
    return False


def key_name(key: Key) -> str:
    """The result frame's key column: the field's name, or ``key`` (a function, or a name the frame uses itself)."""
    return key if isinstance(key, str) and key not in MAP_COLUMNS else "key"


def records_of(records: Any, key: Key = None) -> list[Any]:
    """A list of records from a DataFrame (rows as dicts), a list, or any iterable (a set only with a key).

    Why not a set without a key: its order changes from one process to the next, and
    without a key a record's run id is its position, so after a restart records would
    take other records' runs (replaying their results, or running again).
    """
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - pandas is a dependency
        pd = None
    if pd is not None and isinstance(records, pd.DataFrame):
        if isinstance(key, str) and key not in records.columns and key in records.index.names:
            raise KeyError(
                f"map(key={key!r}): {key!r} is the DataFrame's index, not a column, and a record is one row's "
                f"columns (the index is not part of it). Make the index a column first: df = df.reset_index()."
            )
        return records.to_dict("records")
    if isinstance(records, (str, bytes, dict)) or not _iterable(records):
        raise TypeError(
            f"map expects a DataFrame or a list of records, got {type(records).__name__} "
            f"({str(records)[:40]!r}); wrap a single record in a list: [record]."
        )
    if key is None and isinstance(records, set | frozenset):
        raise TypeError(
            f"map over a {type(records).__name__} needs a key: a set's order changes from one process to the "
            f"next, and without a key each record's run id is its position, so after a restart records would "
            f"take other records' runs. Pass key= (for a set of plain values, key=lambda r: r) or map over "
            f"sorted(...) instead."
        )
    return list(records)


def _iterable(obj: Any) -> bool:
    try:
        iter(obj)
    except TypeError:
        return False
    return True


def key_of(record: Any, key: Key, position: int) -> Any:
    if key is None:
        return position
    if callable(key):
        try:
            return key(record)
        except Exception as exc:  # the user's own error, with which record it failed on
            where = f"record {position}" if position >= 0 else "a record"
            exc.add_note(f"raised by the key function {getattr(key, '__qualname__', key)!r} on {where}: "
                         f"{str(record)[:80]}")
            raise
    try:
        return record[key]
    except (KeyError, TypeError, IndexError, ValueError, AttributeError):  # PyFlink's Row: ValueError, AttributeError
        where = f"record {position}" if position >= 0 else "a record"
        if isinstance(key, str) and not isinstance(record, dict) and hasattr(record, key):
            # A dataclass or an object: the field is there, but key= names are looked up by indexing.
            raise KeyError(
                f"map(key={key!r}): {where} is a {type(record).__name__}, whose {key!r} is an attribute, and "
                f"key= a name reads record[{key!r}]: {str(record)[:80]}. Pass key=lambda r: r.{key} "
                f"(or operator.attrgetter({key!r})) instead."
            ) from None
        names = list(record) if isinstance(record, dict) else getattr(record, "_fields", None)  # a Row, a namedtuple
        fields = f" (its fields: {', '.join(map(str, list(names)[:20]))})" if names else ""
        raise KeyError(
            f"map(key={key!r}): {where} has no field {key!r}{fields}: {str(record)[:80]}. "
            f"Pass key= the name of a field every record has, or a function of the record."
        ) from None


def stable_key(record: Any, key: Key, position: int) -> Any:
    """:func:`key_of` for a single input (``AgentRunner.run``), checked by :func:`check_stable_key`."""
    first = key_of(record, key, position)
    check_stable_key(record, key, first)
    return first


def keys_of(records: list[Any], key: Key) -> list[Any]:
    """:func:`key_of` of every record, then the first one's key checked by :func:`check_stable_key`."""
    keys = [key_of(record, key, position) for position, record in enumerate(records)]
    if keys:
        check_stable_key(records[0], key, keys[0])
    return keys


def check_stable_key(record: Any, key: Key, first: Any) -> None:
    """Warn about a key function that keys ``record`` (whose key was ``first``) differently when asked again
    (``uuid.uuid4()``, a clock), with what to give instead.

    Why: a record's run id is made of its key, so such a key names a new run each time the records are
    mapped (or an input is run) again: nothing replays or recovers, and every durable call (a charge, an
    LLM request) is made again without a word. Flink Agents' own tests key a stream by ``uuid4()``
    (there a checkpoint restore, not the key, recovers an input); the intent, an input that shares
    nothing, is ``key=None`` here. Asked once more, for the first record only (such keys differ at once),
    and only after every record has its key: a key drawing from state (``next(ids)`` over a parallel list
    of ids, a ``pop``) asked twice in the middle gave every later record another record's key, and run.
    A key function that fails when asked again tells nothing: no warning, the keys stand.
    """
    if not callable(key):
        return
    try:
        again = key(record)
    except Exception:
        return
    if key_text(again) != key_text(first):
        name = getattr(key, "__qualname__", None) or repr(key)
        warn_at_user_code(
            f"the key function {name} gave the same record two different keys ({first!r}, then {again!r}): "
            f"run ids are made of the key, so each map or run of these records starts new runs, nothing "
            f"replays or recovers, and every durable call is made again. Key by a field of the record, or "
            f"give no key (key=None) for records that share nothing.", NonDeterminismWarning)


@dataclass(frozen=True)
class GroupedKey:
    """A map's key function whose records also fall into groups: FlinkRunner runs a group's records in one
    worker, one after another, in input order.

    Why: an action that keeps state per group in its process (AgentRunner's short-term memory per key,
    while each input of the key is a run of its own) must see every record of a group, in order. FlinkRunner
    partitions by the run's key otherwise, which spreads a group over the workers. Run ids still come from
    ``key`` (``seq`` counted per key in input order, as on every runner); LocalRunner, which runs every
    record in input order in one process, calls it as the key function it is.
    """

    key: Callable[[Any], Any]
    """The record's key: what names its run."""
    group: Callable[[Any], Any]
    """The record's group: the records that run in one worker, in order."""

    def __call__(self, record: Any) -> Any:
        return self.key(record)


def sequence_numbers(keys: Iterable[Any]) -> list[int]:
    """Each key's ``seq``: how many earlier keys have its text (the count :func:`keyed` makes)."""
    seen: dict[str, int] = {}
    return [_count(seen, k) for k in keys]


def _count(seen: dict[str, int], key: Any) -> int:
    text = key_text(key)  # counted by text: each NaN (never equal to itself) still gets its own seq
    seq = seen.get(text, 0)
    seen[text] = seq + 1
    return seq


def keyed(records: Iterable[Any], key: Key) -> Iterator[tuple[Any, int, Any]]:
    """``(key, seq, record)`` for each record, seq counting earlier records with that key."""
    seen: dict[str, int] = {}
    first: tuple[Any, Any] | None = None
    for position, record in enumerate(records):
        k = key_of(record, key, position)
        first = first or (record, k)
        yield k, _count(seen, k), record
    if first is not None:  # once every record has its key (check_stable_key says why)
        check_stable_key(first[0], key, first[1])
