"""How ``map`` turns records into runs; shared by LocalRunner and FlinkRunner.

A record's run id is ``"{action}/{key}#{seq}"``: the action's id, the record's key
and the number of earlier records with the same key (Flink keeps that number in
keyed state). Mapping the same records again therefore reopens the same runs and
replays them, on either runner.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from ..journal.callid import call_identity

Key = str | Callable[[Any], Any] | None


def action_name(action: Callable[..., Any]) -> str:
    return call_identity(action)[0]


def run_id_for(action: str, key: Any, seq: int) -> str:
    return f"{action}/{key}#{seq}"


def key_name(key: Key) -> str:
    return key if isinstance(key, str) else "key"


def records_of(records: Any) -> list[Any]:
    """A list of records from a DataFrame (rows as dicts), a list, or any iterable."""
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - pandas is a dependency
        pd = None
    if pd is not None and isinstance(records, pd.DataFrame):
        return records.to_dict("records")
    if isinstance(records, (str, bytes, dict)):
        raise TypeError(
            f"map expects a DataFrame or a list of records, got a {type(records).__name__}; "
            f"wrap a single record in a list."
        )
    return list(records)


def key_of(record: Any, key: Key, position: int) -> Any:
    if key is None:
        return position
    if callable(key):
        return key(record)
    try:
        return record[key]
    except (KeyError, TypeError, IndexError):
        raise KeyError(
            f"map(key={key!r}): record {position} has no field {key!r} ({str(record)[:80]!r}); "
            f"pass key= the name of a field every record has, or a function of the record."
        ) from None


def keyed(records: Iterable[Any], key: Key) -> Iterator[tuple[Any, int, Any]]:
    """``(key, seq, record)`` for each record, seq counting earlier records with that key."""
    seen: dict[Any, int] = {}
    for position, record in enumerate(records):
        k = key_of(record, key, position)
        seq = seen.get(k, 0)
        seen[k] = seq + 1
        yield k, seq, record
