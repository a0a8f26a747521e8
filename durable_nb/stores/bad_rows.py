"""Rows no durable_nb ever writes (a journal edited by hand, or damaged), as every store reads them.

A row mapper that meets one raises :class:`BadRow` (what is wrong, and the ``UPDATE`` that makes the
row valid again); the store that read it words it with where its journal is and how to run that
statement there (:func:`journal_error`). Shared by :mod:`.sqlite` and :mod:`.postgres`, so a status
typed in by hand reads the same on both, and neither store imports the other's internals.
"""

from __future__ import annotations

import contextlib
from typing import Any, TypeVar

from ..errors import JournalFormatError
from ..journal.records import CallRecord, Origin, RunStatus, Status, misnumbered

_E = TypeVar("_E", Status, Origin, RunStatus)


class BadRow(ValueError):
    """A row holds what durable_nb never writes: :func:`journal_error` words it with the journal's place."""

    def __init__(self, what: str, update: tuple[str, str, str] | str | None) -> None:
        self.what = what
        self.update = update
        """``(table, SET clause, WHERE clause)`` of the statement that fixes the row, if one does; a ``str``:
        the statements in full (a run id to correct in every table)."""
        super().__init__(what)

    def fix(self, schema: str | None = None) -> str | None:
        """The ``UPDATE`` that fixes the row, its table in ``schema`` when one is given."""
        if self.update is None or isinstance(self.update, str):
            return self.update
        table, assign, where = self.update
        return f"UPDATE {'' if schema is None else schema + '.'}{table} SET {assign} WHERE {where}"


def _is(column: str, value: object) -> str:
    """``column`` equal to ``value`` as the row holds it, in SQL that stays one condition whatever the value.

    Why: the values come from the row, which a hand edit or a hostile journal wrote. An index typed in as
    text (SQLite keeps it in an INTEGER column) was pasted as is: ``idx = 1; DROP TABLE runs; --`` made the
    suggested fix drop the journal's runs. A run id SQLite holds as a BLOB (a str that is not UTF-8) read
    ``run_id = 'b''...'''``, matching nothing; one read leniently from a TEXT that is not UTF-8 (lone
    surrogates) may be stored either way, so both forms are named.
    """
    if value is None:
        return f"{column} IS NULL"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{column} = {int(value)}"
    if isinstance(value, bytes):
        return f"{column} = X'{value.hex()}'"
    text = str(value)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        forms = [f"X'{text.encode('utf-8', 'surrogatepass').hex()}'"]
        with contextlib.suppress(UnicodeEncodeError):
            forms.append(f"CAST(X'{text.encode('utf-8', 'surrogateescape').hex()}' AS TEXT)")
        return f"{column} IN ({', '.join(forms)})"
    return f"{column} = '" + text.replace("'", "''") + "'"


def bad_value(table: str, column: str, value: object, run_id: object, index: object, allowed: list[str]) -> BadRow:
    """A status or origin no durable_nb writes, with the ``UPDATE`` that makes the row valid again."""
    where = _is("run_id", run_id) + (f" AND {_is('idx', index)}" if table != "runs" else "")
    to = "NULL" if column != "status" else "'FAILED'" if table == "runs" else "'PENDING'"
    kind = "discarded call" if table == "discarded" else "call"
    call = f"run {run_id!r}" if table == "runs" else f"{kind} {index} of run {run_id!r}"
    return BadRow(f"{call} has {column} {value!r}, not one of {', '.join(allowed)}", (table, f"{column} = {to}", where))


def member(cls: type[_E], value: Any, table: str, column: str, run_id: Any, index: Any) -> _E:
    """``cls(value)``, or :class:`BadRow` naming the row ('DONE' typed in was a bare ValueError).

    Called only when the mappers' dict lookup missed, so a valid row costs nothing more.
    """
    try:
        return cls(value)
    except ValueError:
        raise bad_value(table, column, value, run_id, index, [m.value for m in cls]) from None


def in_order(run_id: str, calls: list[CallRecord]) -> list[CallRecord]:
    """``calls`` of a run being opened, which replay pairs with the action's calls by position.

    So their indices must be 0, 1, 2...: a row renumbered by hand (-1, a gap, a duplicate, NULL) paired the
    action's calls with the wrong records, discarding good ones and executing their side effects again.
    """
    wrong = misnumbered(run_id, calls)
    if wrong is not None:
        raise BadRow(
            f"{wrong} (`SELECT seq, idx, call_id, status FROM calls WHERE run_id = ...` shows them; seq is the "
            f"order they were journaled), and a replay pairs calls by position",
            None,
        )
    return calls


def journal_error(journal: str, exc: BadRow, correct: str | None) -> JournalFormatError:
    """The error a reader raises for ``exc``: ``journal`` says where, ``correct`` how to run its fix there."""
    how = f"or correct it with {correct}" if correct else "or run it under a new run id"
    return JournalFormatError(
        f"the journal {journal} holds a row durable_nb never writes: {exc.what}. It was edited by hand or damaged; "
        f"nothing was written by this operation. Restore it from a backup, {how}."
    )
