"""durable_nb's per-record warnings inside one ``map``, summed up: the first shown, then one summary.

Why: a warning that names its run (``NonDeterminismWarning`` for each record of a second batch
whose keys reuse the first batch's run ids, ``UnserializableResultWarning``, ...) has a text of
its own per record, so Python's filter shows every one: 5,000 records, 5,000 warnings in the
notebook. Inside :func:`summed`, the records that gave the first warning of a kind show theirs as
they are; later records' warnings of that kind are counted, and the map ends with one warning of
the same category saying how many more records got it, with a few of their run ids and the fix.
A kind is a category and the warning's text without its run id, so a later record's warning
that says something else (another call, another type that cannot be journaled) is shown too, up
to :data:`EXAMPLES` texts a category: texts that differ per record (a digest) cannot flood.

One mechanism for every map: ``LocalRunner.map`` (and ``%%durable --map`` on it) gives the
warnings here; ``FlinkRunner.map`` gives them here again from the rows its workers send
(:mod:`.worker_warnings`). Decided in ``warnings.showwarning``, after the filters: a warning
a filter turns into an error (pytest's ``filterwarnings``, ``-W error``) is raised as before, one
a filter ignores is never counted. Per map: a context variable set once; per record: one
attribute store (:attr:`Summary.run_id`); nothing per warning beyond a dict lookup.
"""

from __future__ import annotations

import contextvars
import warnings
from typing import Any

from .. import errors

EXAMPLES = 3
"""How many of the summed records' run ids the summary names, and how many texts a category shows."""

FIXES: dict[type[Warning], str] = {
    # Two causes, both common: the action was edited since those runs, or a new batch reuses old keys.
    errors.NonDeterminismWarning: (
        "If the action was changed since those runs, that is the recovery of a changed action: each run's journal "
        "from its first differing call on was discarded and the calls ran again (strict=True refuses instead). "
        "Otherwise this batch's keys may be an earlier batch's: a record's run id is action/key#seq, so a new "
        "batch whose keys an earlier batch used gets that batch's runs, and its calls do not match them. Key each "
        "batch's records by what is new in it (an order id), or give the batch an action name of its own; to run "
        "old runs afresh, fork them (store.fork) or drop them first (store.prune, %durable_forget)."
    ),
    errors.UnserializableResultWarning: "Return plain data from durable calls to journal their results.",
    errors.ChangedInputWarning: "Return the change instead of changing a value in place.",
    errors.CancelledAwaitWarning: "Put the timeout inside the durable function (its TimeoutError is journaled).",
}


_summary: contextvars.ContextVar[Summary | None] = contextvars.ContextVar("durable_nb_map_warnings", default=None)


class Summary:
    """The warnings of one map: per category, the run that showed it, and the later runs that got it."""

    __slots__ = ("_kinds", "_outer", "_token", "run_id")

    def __init__(self, outer: Summary | None = None) -> None:
        self.run_id: str | None = None
        """The run of the record being applied: the map sets it before each record (one attribute store)."""
        self._outer = outer
        """The map this one runs inside (a map in an action of another map's record), if any."""
        # A nested map counts in the outermost map's tally, which alone gives the summaries: its own
        # first-of-a-kind for every outer record showed one warning (and one summary) per outer record.
        self._kinds: dict[type[Warning], _Kind] = {} if outer is None else outer._kinds
        self._token: contextvars.Token[Summary | None] | None = None

    def __enter__(self) -> Summary:
        self._token = _summary.set(self)
        return self

    def __exit__(self, *exc: object) -> None:
        """Give the summaries (a class, not a generator: the warning points past durable_nb's frames, at the map)."""
        if self._token is not None:
            _summary.reset(self._token)
            self._token = None
        if self._outer is None:
            self.give()

    def take(self, category: type[Warning], text: str = "") -> bool:
        """Whether to hold this warning back: a later record's warning of a kind already shown."""
        if category.__module__ != errors.__name__:
            return False  # the user's own warnings, and Python's, are the user's to filter
        kind = self._kinds.get(category)
        if kind is None:
            kind = self._kinds[category] = _Kind(self.run_id)
        said = text.replace(self.run_id, "") if self.run_id else text
        if self.run_id == kind.first:
            kind.texts.add(said)
            return False  # the first record's warnings of a category are all shown
        if said not in kind.texts and len(kind.texts) < EXAMPLES:
            kind.texts.add(said)  # news: another call, another type
            return False
        if not kind.later or kind.later[-1] != self.run_id:
            kind.later.append(self.run_id or "?")
        return True

    def give(self) -> None:
        """One warning per category whose later records were held back: how many, which, and the fix."""
        for category, kind in self._kinds.items():
            later = kind.later
            if not later:
                continue
            examples = ", ".join(map(repr, later[:EXAMPLES])) + (", ..." if len(later) > EXAMPLES else "")
            fix = FIXES.get(category, "The first one, above, says why and what to do.")
            errors.warn_at_user_code(
                f"durable_nb: {len(later)} more record(s) of this map gave a {category.__name__} like one "
                f"shown above (runs {examples}); only the first of each is shown. {fix}", category)


class _Kind:
    """One category's warnings in a map: the record that showed it first, the texts shown, the runs held back."""

    __slots__ = ("first", "later", "texts")

    def __init__(self, first: str | None) -> None:
        self.first = first
        self.texts: set[str] = set()
        """Texts (without their run id) shown by later records: each new one is shown once."""
        self.later: list[str] = []


def _hook(shown: Any) -> Any:
    def hold_back(message: Any, category: type[Warning], *args: Any, **kwargs: Any) -> None:
        summary = _summary.get()
        if summary is not None and summary.take(category, str(message)):
            return
        shown(message, category, *args, **kwargs)

    hold_back.durable_nb_summing = True  # type: ignore[attr-defined]
    return hold_back


def summed() -> Summary:
    """Inside: durable_nb's warnings of records after the first of a kind are held back and summed up at the end.

    The hook is put into ``warnings.showwarning`` whenever it is not there (a ``catch_warnings``
    block, pytest's per test, puts back what it found when it ends). A map inside another map's
    record counts in the outer map's summary, under its own records' run ids.
    """
    if not getattr(warnings.showwarning, "durable_nb_summing", False):
        warnings.showwarning = _hook(warnings.showwarning)
    return Summary(_summary.get())
