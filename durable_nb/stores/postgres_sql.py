"""PostgresStore's SQL statements and row mappers, in one place.

Every write that must be fenced names the run's owner inside the statement
(``... FROM runs WHERE run_id = %s AND owner = %s FOR SHARE``): the row lock makes
a concurrent take-over wait until this write commits, and a write after the
take-over matches no row, so it writes nothing (the caller raises LeaseLostError).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..journal.records import CallRecord, DiscardedCall, Origin, RunRecord, RunStatus, Status, decode_prompt
from .bad_rows import member

CALL_COLS = (
    "run_id, idx, call_id, args_digest, status, origin, result_preview, error_preview, started_at, finished_at, prompt"
)
RUN_SELECT = (
    "SELECT r.run_id, r.status, r.created_at, r.updated_at, r.attempts, r.owner, r.n_discarded, "
    "(SELECT count(*) FROM calls c WHERE c.run_id = r.run_id), r.parent_run_id, r.forked_at FROM runs r"
)
# LIKE, not a range: a range compares in the database's collation, where (outside "C") the ids that
# start with a prefix need not lie between two strings. A literal prefix lets the planner scan an
# index: the primary key in a "C" database, else runs_by_prefix (text_pattern_ops, postgres_schema).
RUN_IDS_LIKE = "SELECT run_id FROM runs WHERE run_id LIKE %s"
RUNS_LIKE = RUN_SELECT + " WHERE r.run_id LIKE %s"


def like_prefix(prefix: str) -> str:
    """The ``LIKE`` pattern of the strings that start with ``prefix`` (``\\``, ``%``, ``_`` escaped)."""
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


CALLS_OF_RUN = f"SELECT {CALL_COLS}, payload FROM calls WHERE run_id = %s ORDER BY idx"
# A run at its open, in one statement: its row (attempts, owner, status; NULLs if none) on every row,
# then its calls in index order (a run without calls: one row of NULL call columns).
OPEN_RUN = (
    f"SELECT r.attempts, r.owner, r.status, {', '.join('c.' + c.strip() for c in CALL_COLS.split(','))}, c.payload "
    "FROM (SELECT %s::text AS run_id) AS k LEFT JOIN runs r ON r.run_id = k.run_id "
    "LEFT JOIN calls c ON c.run_id = k.run_id ORDER BY c.idx"
)
# OPEN_RUN after the run's advisory lock, in one round trip: a server-side function (created with the
# journal; a journal whose role may not create it is opened with two round trips instead). Why a
# function: one statement reads with the snapshot it started with, which may predate the lock (so
# miss what the lock's last holder committed); each statement of a VOLATILE function takes a fresh
# one (the lock connection reads committed, see postgres_lease). No rows: the lock is held elsewhere.
LOCK_OPEN_FUNCTION = "durable_nb_lock_open_v1"
LOCK_OPEN_SIGNATURE = f"{LOCK_OPEN_FUNCTION}(bigint,bigint[],text)"
CREATE_LOCK_OPEN = (
    f"CREATE OR REPLACE FUNCTION {LOCK_OPEN_FUNCTION}(p_key bigint, p_release bigint[], p_run text) "
    "RETURNS TABLE (o_attempts integer, o_owner text, o_status text, o_run_id text, o_idx integer, "
    "o_call_id text, o_args_digest text, o_call_status text, o_origin text, o_result_preview text, "
    "o_error_preview text, o_started_at double precision, o_finished_at double precision, o_prompt text, "
    "o_payload bytea) LANGUAGE plpgsql VOLATILE AS $fn$\nBEGIN\n"
    "  PERFORM pg_advisory_unlock(k) FROM unnest(p_release) AS k;\n"
    "  IF pg_try_advisory_lock(p_key) THEN\n"
    f"    RETURN QUERY {OPEN_RUN.replace('%s::text', 'p_run')};\n"
    "  END IF;\n"
    "END\n$fn$"
)
LOCK_OPEN = f"SELECT * FROM {LOCK_OPEN_FUNCTION}(%s::bigint, %s::bigint[], %s::text)"
ONE_CALL = f"SELECT {CALL_COLS}, payload FROM calls WHERE run_id = %s AND idx = %s"
DISCARDED = (
    "SELECT run_id, idx, call_id, args_digest, status, origin, result_preview, error_preview, started_at, "
    "finished_at, discarded_at, reason FROM discarded"
)

_FENCE_ROW = "SELECT 1 FROM runs WHERE run_id = %s AND owner = %s FOR SHARE"
FENCE = _FENCE_ROW

# -- leases
TAKE_OVER = (
    "INSERT INTO runs AS r (run_id, status, created_at, updated_at, attempts, owner) "
    "VALUES (%(run)s, 'RUNNING', %(now)s, %(now)s, 1, %(owner)s) ON CONFLICT (run_id) DO UPDATE "
    "SET status = 'RUNNING', updated_at = %(now)s, attempts = r.attempts + 1, owner = %(owner)s"
)
CLAIM_NEW = (
    "INSERT INTO runs (run_id, status, created_at, updated_at, attempts, owner) VALUES (%s, %s, %s, %s, 1, %s) "
    "ON CONFLICT (run_id) DO NOTHING"
)
CLAIM = (
    "UPDATE runs SET status = %s, updated_at = %s, attempts = attempts + 1, owner = %s "
    "WHERE run_id = %s AND attempts = %s AND owner IS NULL"
)
# The first write of a context and its PENDING in one statement: no claim, no call.
_INSERT_PENDING_FROM = (
    "INSERT INTO calls (run_id, idx, call_id, args_digest, status, started_at) "
    "SELECT %s, %s, %s, %s, 'PENDING', %s FROM claim"
)
CLAIM_THEN_PENDING = f"WITH claim AS ({CLAIM} RETURNING 1) {_INSERT_PENDING_FROM}"
CLAIM_NEW_THEN_PENDING = f"WITH claim AS ({CLAIM_NEW} RETURNING 1) {_INSERT_PENDING_FROM}"
CLOSE = (
    "UPDATE runs SET status = coalesce(%s, status), updated_at = %s, owner = NULL WHERE run_id = %s AND owner = %s"
)

# -- calls
PENDING = (
    "INSERT INTO calls (run_id, idx, call_id, args_digest, status, started_at) "
    "SELECT %s, %s, %s, %s, 'PENDING', %s FROM runs WHERE run_id = %s AND owner = %s FOR SHARE"
)
_SET_OUTCOME = (
    "UPDATE calls SET status = %s, origin = %s, payload = %s, payload_format = 'pickle', result_preview = %s, "
    "error_preview = %s, finished_at = %s WHERE run_id = %s AND idx = %s"
)
COMPLETE = _SET_OUTCOME
TOUCH_RUN = "UPDATE runs SET updated_at = greatest(updated_at, %s) WHERE run_id = %s"
COMPLETE_FENCED = f"{_SET_OUTCOME} AND EXISTS ({_FENCE_ROW})"
COMPLETE_IF_PENDING = f"{_SET_OUTCOME} AND status = 'PENDING'"
# Outcome k and PENDING k+1 in one statement: one round trip, one commit, one fence.
COMPLETE_THEN_PENDING = (
    f"WITH fence AS ({_FENCE_ROW}), done AS ({_SET_OUTCOME} AND EXISTS (SELECT 1 FROM fence) RETURNING 1) "
    "INSERT INTO calls (run_id, idx, call_id, args_digest, status, started_at) "
    "SELECT %s, %s, %s, %s, 'PENDING', %s FROM fence"
)
# The last outcome and the run's end in one statement (both fenced by the owner).
# The row lock comes first (the fence CTE): a FOR SHARE evaluated after this same statement's
# UPDATE of the run row would not see the row at all, and the outcome would be dropped.
COMPLETE_THEN_CLOSE = (
    "WITH fence AS (SELECT 1 FROM runs WHERE run_id = %s AND owner = %s FOR UPDATE), "
    f"done AS ({_SET_OUTCOME} AND EXISTS (SELECT 1 FROM fence) RETURNING 1) "
    f"{CLOSE} AND EXISTS (SELECT 1 FROM fence)"
)


def with_closing(closing: list[Any], sql: str, params: tuple[Any, ...]) -> tuple[str, tuple[Any, ...]]:
    """``sql`` preceded, in the same statement, by the held ends of other runs (``HeldOutcomes.take_closing``).

    Each run: a row-lock fence on its owner, its held outcomes, its close, as
    data-modifying CTEs (all run, whatever the main statement returns): a map's
    record end rides with the next record's PENDING in one round trip and one
    commit. A run taken over meanwhile matches no fence and writes nothing.
    """
    if not closing:
        return sql, params
    ctes: list[str] = []
    values: list[Any] = []
    for n, (outcomes, close) in enumerate(closing):
        ctes.append(f"f{n} AS (SELECT 1 FROM runs WHERE run_id = %s AND owner = %s FOR UPDATE)")
        values += [close[2], close[3]]
        for m, outcome in enumerate(outcomes):
            ctes.append(f"o{n}_{m} AS ({_SET_OUTCOME} AND EXISTS (SELECT 1 FROM f{n}) RETURNING 1)")
            values += outcome.values()
        ctes.append(f"c{n} AS ({CLOSE} AND EXISTS (SELECT 1 FROM f{n}) RETURNING 1)")
        values += close
    head = "WITH " + ", ".join(ctes)
    body = ", " + sql[len("WITH "):] if sql.startswith("WITH ") else " " + sql
    return head + body, (*values, *params)


SET_PROMPT = f"UPDATE calls SET prompt = %s WHERE run_id = %s AND idx = %s AND EXISTS ({_FENCE_ROW})"
DISCARD_COPY = (
    "INSERT INTO discarded (run_id, idx, call_id, args_digest, status, origin, result_preview, error_preview, "
    "started_at, finished_at, discarded_at, reason) SELECT run_id, idx, call_id, args_digest, status, origin, "
    "result_preview, error_preview, started_at, finished_at, %s, %s FROM calls "
    "WHERE run_id = %s AND idx >= %s ORDER BY idx"
)

# -- time travel
FORK_RUN = (
    "INSERT INTO runs (run_id, status, created_at, updated_at, attempts, owner, n_discarded, parent_run_id, "
    "forked_at) VALUES (%s, 'RUNNING', %s, %s, %s, NULL, 0, %s, %s)"
)
KEEP_META = "INSERT INTO meta (key, value) VALUES (%s, %s) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value"
META_VALUE = "SELECT value FROM meta WHERE key = %s"
MAKE_META = "INSERT INTO meta (key, value) VALUES (%s, '0') ON CONFLICT (key) DO NOTHING"
LOCK_META = "SELECT value FROM meta WHERE key = %s FOR UPDATE"
FORK_CALLS = (
    "INSERT INTO calls (run_id, idx, call_id, args_digest, status, origin, payload, payload_format, "
    "result_preview, error_preview, started_at, finished_at, prompt) SELECT %s, idx, call_id, args_digest, "
    "status, origin, payload, payload_format, result_preview, error_preview, started_at, finished_at, prompt "
    "FROM calls WHERE run_id = %s AND idx < %s ORDER BY idx"
)
REOPEN_FIRST = (
    "UPDATE calls SET call_id = %s, args_digest = %s, status = 'PENDING', origin = NULL, payload = NULL, "
    "payload_format = NULL, result_preview = NULL, error_preview = NULL, started_at = %s, finished_at = NULL, "
    "prompt = NULL WHERE run_id = %s AND idx = 0"
)
"""Call 0 of a cell's fork (``history.FreshHead``): begun afresh, PENDING, in the fork's transaction."""


@dataclass(frozen=True)
class Outcome:
    """A call's terminal outcome on its way to the journal (held back under durability "call")."""

    run_id: str
    index: int
    status: str
    origin: str
    payload: bytes
    result_preview: str | None
    error_preview: str | None
    finished_at: float
    owner: str | None = None
    """The context that wrote it: a held-back outcome is fenced with its own owner when committed."""

    def values(self) -> tuple[Any, ...]:
        """Parameters of ``_SET_OUTCOME``."""
        return (self.status, self.origin, self.payload, self.result_preview, self.error_preview,
                self.finished_at, self.run_id, self.index)

    def fenced(self) -> tuple[Any, ...]:
        """Parameters of ``COMPLETE_FENCED``."""
        return (*self.values(), self.run_id, self.owner)


_STATUS = {s.value: s for s in Status}
_ORIGIN = {o.value: o for o in Origin}


def call_record(row: tuple[Any, ...], with_payload: bool = False) -> CallRecord:
    """A row of ``calls`` (``CALL_COLS``, then the payload); :class:`.bad_rows.BadRow` for a value no one writes."""
    prompt, choices = decode_prompt(row[10])
    return CallRecord(
        row[0], row[1], row[2], row[3],
        _STATUS.get(row[4]) or member(Status, row[4], "calls", "status", row[0], row[1]),
        (_ORIGIN.get(row[5]) or member(Origin, row[5], "calls", "origin", row[0], row[1])) if row[5] else None,
        row[6], row[7], row[8], row[9], bytes(row[11]) if with_payload and row[11] is not None else None,
        prompt, choices, not with_payload,
    )


def run_record(row: tuple[Any, ...]) -> RunRecord:
    status = member(RunStatus, row[1], "runs", "status", row[0], None)
    return RunRecord(row[0], status, row[2], row[3], row[4], row[7], row[6], row[5], row[8], row[9])


def discarded_record(r: tuple[Any, ...]) -> DiscardedCall:
    return DiscardedCall(
        r[0], r[1], r[2], r[3], member(Status, r[4], "discarded", "status", r[0], r[1]),
        member(Origin, r[5], "discarded", "origin", r[0], r[1]) if r[5] else None,
        r[6], r[7], r[8], r[9], r[10], r[11],
    )


LOCK_HELD = (
    "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1 "
    "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
    "AND classid = %s::bigint::oid AND objid = %s::bigint::oid)"
)
"""Whether some session holds a run's advisory lock (its 64-bit key as pg_locks shows it: high and low halves)."""
