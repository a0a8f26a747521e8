"""pandas views of the journal and of ``map`` results (pandas is imported lazily)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from .records import CallRecord

if TYPE_CHECKING:
    import pandas as pd

CALL_COLUMNS = [
    "run_id", "index", "call_id", "args_digest", "status", "origin",
    "result_preview", "error_preview", "started_at", "finished_at",
]
_TEXT_COLUMNS = ("run_id", "call_id", "args_digest", "status", "origin", "result_preview", "error_preview")
_UTC_NS = "datetime64[ns, UTC]"


def calls_frame(records: Iterable[CallRecord]) -> pd.DataFrame:
    """One row per call; times as UTC timestamps; payloads never included.

    ``records`` may be an iterator: each record can go as soon as its row is made (``SqliteStore.to_pandas``).
    """
    import pandas as pd

    ids: dict[str, str] = {}  # a map's million calls have a few call ids: one str each, not one per row
    rows = [
        (r.run_id, r.index, ids.setdefault(r.call_id, r.call_id), r.args_digest, r.status.value,
         r.origin.value if r.origin else None, r.result_preview, r.error_preview, r.started_at, r.finished_at)
        for r in records
    ]
    frame = pd.DataFrame.from_records(rows, columns=CALL_COLUMNS)
    # Typed, not inferred: with no rows (an empty run) pandas infers nothing, so "index" was object where a
    # found run's was int64; pandas 3 also gave text columns str (object when empty or all None) and times
    # ns (s when empty). Every frame of the journal now has the same dtypes, whatever it holds.
    text = pd.Series(["x"]).dtype  # object on pandas 2 (left as is: astype(str) would write None as 'None')
    typed: dict[str, Any] = {"index": "int64"}
    if not pd.api.types.is_object_dtype(text):  # only where pandas inferred none: astype copies every str
        typed.update({col: text for col in _TEXT_COLUMNS if frame[col].dtype != text})
    frame = frame.astype(typed)
    for col in ("started_at", "finished_at"):
        times = pd.to_datetime(frame[col], unit="s", utc=True)
        frame[col] = times if times.dtype == _UTC_NS else times.astype(_UTC_NS)
    return frame


MAP_COLUMNS = ["run_id", "status", "result", "error"]


class MapRowLike(Protocol):
    """What ``map`` rows offer (:class:`durable_nb.runners.rows.MapRow`; typed here without importing runners)."""

    def as_tuple(self) -> tuple[Any, str, str, Any, str | None]: ...


def map_frame(key_name: str, rows: Sequence[MapRowLike | tuple[Any, str, str, Any, str | None]]) -> pd.DataFrame:
    """``map`` results: one row per input record, in input order, columns ``[key_name, *MAP_COLUMNS]``."""
    import pandas as pd

    records = [r if isinstance(r, tuple) else r.as_tuple() for r in rows]
    frame = pd.DataFrame.from_records(records, columns=[key_name, *MAP_COLUMNS])
    results = [r[3] for r in records]
    dtype = frame["result"].dtype
    if (dtype.kind == "f" and not all(isinstance(v, float) for v in results if v is not None)) or (
        isinstance(dtype, pd.StringDtype) and any(v is None for v in results)
    ):
        # ints beside a failed record's None would come back as floats (1.0, nan), and pandas 3 infers text
        # results as its `str` dtype, where a None (a failed record's, or returned) becomes nan: keep the
        # values as returned, as pandas 2 always did for text
        frame["result"] = pd.Series(results, index=frame.index, dtype=object)
    return frame
