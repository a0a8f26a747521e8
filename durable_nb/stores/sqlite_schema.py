"""The SQLite journal's schema: one ordered list of migrations, and the checks made at open.

A journal file says what it is with two SQLite header fields:

* ``PRAGMA application_id`` = :data:`APPLICATION_ID` (``"dnbj"``): this file is a
  durable_nb journal (``file(1)`` and other tools read it too);
* ``PRAGMA user_version`` = the schema version: the number of the last migration
  applied.

Journals written before versioning (schema 1, ``tests/journals/v1.db``) carry
neither; they are recognised by their ``meta`` table (``app = durable_nb``,
``schema_version = 1``).

**Adding a migration**: append ``(N, "SQL; SQL; ...")`` to :data:`MIGRATIONS`
(never edit or reorder an existing entry). Each migration runs in the same
transaction that records its version (``user_version`` and ``meta``), so a crash
leaves either the old schema or the new one. Migrations run at the first *write*
through a store (see :func:`migrate`), never when a journal is only read, so a
read-only journal stays viewable; read paths must therefore cope with every
version from 1 up: :func:`has_column` tells them what a file has.
"""

from __future__ import annotations

import sqlite3
from functools import cache

APP_NAME = "durable_nb"
APPLICATION_ID = int.from_bytes(b"dnbj", "big")
"""``PRAGMA application_id`` of every durable_nb journal (0x646e626a)."""

_V1 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE runs (
    run_id      TEXT PRIMARY KEY,
    status      TEXT NOT NULL,
    created_at  REAL NOT NULL,
    updated_at  REAL NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    owner       TEXT,
    n_discarded INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE calls (
    seq            INTEGER PRIMARY KEY,   -- journal order across runs (rowid)
    run_id         TEXT NOT NULL,
    idx            INTEGER NOT NULL,
    call_id        TEXT NOT NULL,
    args_digest    TEXT NOT NULL,
    status         TEXT NOT NULL,
    origin         TEXT,
    payload        BLOB,
    payload_format TEXT,
    result_preview TEXT,
    error_preview  TEXT,
    started_at     REAL NOT NULL,
    finished_at    REAL,
    UNIQUE (run_id, idx)
);
-- Only PENDING rows: what the ReconcilePanel lists. A partial index keeps each commit to
-- one small index page (an index over every status or call id costs page writes on the
-- hot path, and filtering 100,000 calls by those scans in milliseconds anyway).
CREATE INDEX calls_pending ON calls (seq) WHERE status = 'PENDING';
CREATE TABLE discarded (
    seq            INTEGER PRIMARY KEY,
    run_id         TEXT NOT NULL,
    idx            INTEGER NOT NULL,
    call_id        TEXT NOT NULL,
    args_digest    TEXT NOT NULL,
    status         TEXT NOT NULL,
    origin         TEXT,
    result_preview TEXT,
    error_preview  TEXT,
    started_at     REAL NOT NULL,
    finished_at    REAL,
    discarded_at   REAL NOT NULL,
    reason         TEXT NOT NULL
);
CREATE INDEX discarded_by_run ON discarded (run_id, seq);
INSERT INTO meta VALUES ('app', 'durable_nb'), ('schema_version', '1');
"""

# Time travel (forks, durable_input): lineage of a forked run, the WAITING run status
# (a status is free text, so WAITING needs no DDL) and the question of a durable_input.
_V2 = """
ALTER TABLE runs ADD COLUMN parent_run_id TEXT;
ALTER TABLE runs ADD COLUMN forked_at INTEGER;
ALTER TABLE calls ADD COLUMN prompt TEXT;
"""

MIGRATIONS: list[tuple[int, str]] = [
    (1, _V1),
    (2, _V2),
]
"""Every schema change, in order: ``(version, SQL script)``. Append only."""

LATEST = MIGRATIONS[-1][0]


def statements(script: str) -> list[str]:
    """A migration script split into statements (no ``;`` inside literals in these scripts)."""
    out = []
    for part in script.split(";"):
        lines = [ln for ln in part.splitlines() if not ln.strip().startswith("--")]
        if "\n".join(lines).strip():
            out.append(part)
    return out


def migrate(conn: sqlite3.Connection, current: int) -> int:
    """Apply every migration after ``current`` inside the caller's open write transaction.

    Records each version with it (``user_version``, ``application_id``, ``meta``), so
    the transaction that commits the changes also commits the version. Returns the
    new version.
    """
    for version, script in MIGRATIONS:
        if version <= current:
            continue
        for statement in statements(script):
            conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {int(version)}")
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(version),))
        current = version
    return current


@cache
def promised(version: int) -> dict[str, frozenset[str]]:
    """Tables and their columns a journal of ``version`` must have (built from MIGRATIONS)."""
    mem = sqlite3.connect(":memory:")
    try:
        mem.execute("BEGIN")
        migrate(mem, 0) if version == LATEST else _migrate_to(mem, version)
        return _columns(mem)
    finally:
        mem.close()


def _migrate_to(conn: sqlite3.Connection, target: int) -> None:
    for version, script in MIGRATIONS:
        if version > target:
            break
        for statement in statements(script):
            conn.execute(statement)


def _columns(conn: sqlite3.Connection) -> dict[str, frozenset[str]]:
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    return {t: frozenset(_column_names(conn, t)) for t in tables}


def _column_names(conn: sqlite3.Connection, table: str) -> list[str]:
    """A table's columns, its name bound as a parameter.

    Why bound: the names come from the file (a table of the user's own, or someone else's journal), and
    one holding both quote characters made ``PRAGMA table_info({name!r})`` an SQL syntax error, so the
    whole journal "could not be read".
    """
    return [r[0] for r in conn.execute("SELECT name FROM pragma_table_info(?)", (table,))]


def detect_version(conn: sqlite3.Connection) -> tuple[int | None, str | None]:
    """``(version, problem)`` of an open database, read without writing.

    ``(0, None)``: an empty database (no schema objects at all): it may become a journal.
    ``(None, reason)``: not a journal, or a journal whose version is garbled.
    ``(v, None)``: a journal of schema ``v`` (possibly newer than :data:`LATEST`).
    """
    app_id = conn.execute("PRAGMA application_id").fetchone()[0]
    user_version = conn.execute("PRAGMA user_version").fetchone()[0]
    objects = {(r[0], r[1]) for r in conn.execute("SELECT type, name FROM sqlite_master")}
    if app_id == APPLICATION_ID:
        if user_version < 1:
            return None, f"its schema version (PRAGMA user_version = {user_version}) is garbled"
        meta_version = _meta_version(conn) if ("table", "meta") in objects else None
        if meta_version is not None and meta_version != user_version:
            newest = max(meta_version, user_version)
            if newest > LATEST:
                return newest, None
            return None, (
                f"its schema version is garbled (PRAGMA user_version = {user_version}, "
                f"table meta says {meta_version})"
            )
        return user_version, None
    if app_id != 0:
        return None, f"it belongs to another application (PRAGMA application_id = {app_id:#x})"
    if not objects:
        if user_version != 0:  # an application that versions its schema claimed it; durable_nb never sets only this
            return None, f"it is an empty database of another application (PRAGMA user_version = {user_version})"
        return 0, None
    if ("table", "meta") not in objects:
        kinds: dict[str, list[str]] = {}
        for kind, name in sorted(objects):
            kinds.setdefault(kind, []).append(name)
        names = "; ".join(f"{kind}s: {', '.join(found)}" for kind, found in kinds.items())
        return None, f"it is an SQLite database of something else ({names})"
    try:
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    except sqlite3.DatabaseError as exc:
        return None, f"its meta table is unreadable ({exc})"
    if meta.get("app") != APP_NAME:
        return None, "its meta table belongs to another application"
    text = str(meta.get("schema_version", ""))
    if not text.isdigit() or int(text) < 1:
        return None, f"its schema version ({text!r} in table meta) is garbled"
    return int(text), None


def _meta_version(conn: sqlite3.Connection) -> int | None:
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    except sqlite3.DatabaseError:
        return None
    text = str(row[0]) if row else ""
    return int(text) if text.isdigit() else -1


def missing(conn: sqlite3.Connection, version: int) -> list[str]:
    """Tables/columns the schema ``version`` promises that the database lacks."""
    have = _columns(conn)
    out = []
    for table, cols in promised(version).items():
        if table not in have:
            out.append(f"table {table}")
            continue
        out.extend(f"column {table}.{c}" for c in sorted(cols - have[table]))
    return out


def has_column(conn: sqlite3.Connection, table: str, column: str) -> bool:
    return column in _column_names(conn, table)
