"""PostgresStore's tables, how they are created and checked, and what a connection failure says.

The journal's tables live in the database the DSN names (its ``current_schema()``,
``public`` unless ``options=-csearch_path=...`` says otherwise), like a SQLite
journal owns its file: a database that holds other tables, or tables named like
ours with other columns, is refused with :class:`JournalFormatError` and left
unchanged. Creation runs in one transaction under a transaction-level advisory
lock, so several processes opening a new journal at once (Flink workers) create
it once; the version row is written in that same transaction.
"""

from __future__ import annotations

import getpass
import os
import re
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import JournalFormatError
from . import postgres_sql as q

if TYPE_CHECKING:
    import psycopg

SCHEMA_VERSION = 1
APP_ID = "durable_nb"
# pg_advisory_xact_lock key for schema creation: "durable_nb" folded into 63 bits.
SCHEMA_LOCK_KEY = 0x64757261626C655F

TABLES: dict[str, str] = {
    "meta": "key text PRIMARY KEY, value text NOT NULL",
    "runs": (
        "run_id text PRIMARY KEY, status text NOT NULL, created_at double precision NOT NULL, "
        "updated_at double precision NOT NULL, attempts integer NOT NULL DEFAULT 0, owner text, "
        "n_discarded integer NOT NULL DEFAULT 0, parent_run_id text, forked_at integer"
    ),
    "calls": (
        "seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, run_id text NOT NULL, idx integer NOT NULL, "
        "call_id text NOT NULL, args_digest text NOT NULL, status text NOT NULL, origin text, payload bytea, "
        "payload_format text, result_preview text, error_preview text, started_at double precision NOT NULL, "
        "finished_at double precision, prompt text, UNIQUE (run_id, idx)"
    ),
    "discarded": (
        "seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, run_id text NOT NULL, idx integer NOT NULL, "
        "call_id text NOT NULL, args_digest text NOT NULL, status text NOT NULL, origin text, "
        "result_preview text, error_preview text, started_at double precision NOT NULL, "
        "finished_at double precision, discarded_at double precision NOT NULL, reason text NOT NULL"
    ),
}
# Run ids by prefix (a cell's attempts, runids.attempts): LIKE 'prefix%' can scan the primary key only
# in a database whose collation is "C"; this one serves it under any collation.
PREFIX_INDEX = "CREATE INDEX IF NOT EXISTS runs_by_prefix ON runs (run_id text_pattern_ops)"
INDEXES = (
    # Only PENDING rows: what the ReconcilePanel lists; keeps each commit to one small index page.
    "CREATE INDEX calls_pending ON calls (seq) WHERE status = 'PENDING'",
    "CREATE INDEX discarded_by_run ON discarded (run_id, seq)",
    PREFIX_INDEX,
)


def _columns(spec: str) -> set[str]:
    words = (part.split()[0] for part in spec.split(", "))
    return {w for w in words if w.isidentifier() and not w.isupper()}


COLUMNS = {table: _columns(spec) for table, spec in TABLES.items()}


@dataclass(frozen=True)
class Target:
    """Where a DSN points, for messages (never the password)."""

    host: str
    port: str
    dbname: str
    user: str

    @classmethod
    def of(cls, d: Mapping[str, Any]) -> Target:
        """Where the parsed DSN ``d`` (:func:`parse_dsn`) points, libpq's environment defaults filled in."""
        user = str(d.get("user") or os.environ.get("PGUSER") or getpass.getuser())
        return cls(
            str(d.get("host") or os.environ.get("PGHOST") or "localhost"),
            str(d.get("port") or os.environ.get("PGPORT") or "5432"),
            str(d.get("dbname") or os.environ.get("PGDATABASE") or user),
            user,
        )

    def __str__(self) -> str:
        return f"database {self.dbname!r} on {self.host}:{self.port} (user {self.user!r})"


def parse_dsn(dsn: str) -> dict[str, Any]:
    """The DSN's keywords; a ValueError, password never shown, for one libpq cannot read (psycopg's own
    error may quote it)."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    from .dsn import UNKNOWN_KEYWORD, mask_dsn

    try:
        parsed, error = conninfo_to_dict(dsn), ""
    except psycopg.ProgrammingError as exc:
        parsed, error = {}, str(exc)
    if error:  # raised outside the except: psycopg's error, which may quote the password, is not kept as context
        reason = error.split('"', 1)[0].strip().rstrip(":")  # what follows may be a piece of the password
        hint = UNKNOWN_KEYWORD if reason == "invalid connection option" else (  # its name may be a password's piece
            "percent-encode special characters of a password in a URL (urllib.parse.quote(password, "
            "safe='')), or write key=value pairs: host=... dbname=... user=... password='...'")
        if "query parameter" in reason:
            reason = error.strip()  # the parameter's name (libpq's message ends in a newline)
            hint = ("URL parameters are libpq's keywords (sslmode=, connect_timeout=, ...); "
                    "a schema is chosen with options=-csearch_path%3Dname")
            if '"durability"' in reason:  # open_store reads it from the URL; the constructor takes an argument
                hint = ("durability is no libpq keyword: PostgresStore(dsn, durability='transition'), or "
                        "open_store('postgresql://...?durability=transition'), which reads it from the URL")
        raise ValueError(f"PostgresStore: cannot read the DSN {mask_dsn(dsn)!r}: {reason}; {hint}")
    if "://" in dsn and _split_password(parsed, dsn):
        # libpq ends a URL's user:password at the first '@' or '/': a raw one in the password puts the rest of
        # it into the host, port or database name, which every message would then show.
        raise ValueError(
            f"PostgresStore: cannot read the DSN {mask_dsn(dsn)!r}: its host, port or database name holds what "
            f"looks like the rest of a password ('@' or '/' in it). Percent-encode special characters of a "
            f"password in a URL (urllib.parse.quote(password, safe='')), or write key=value pairs: host=... "
            f"dbname=... user=... password='...'"
        )
    return parsed


def _split_password(parsed: Mapping[str, Any], dsn: str) -> bool:
    """Whether libpq split a URL inside its password: a host with '@', a port that is no number (a password's
    first part, ``user:pa/ss@``), or a database name with '@' where no user was read (``user:12/34@host``).

    Only a raw '@' before the query can be such a split: ``%40`` (a percent-encoded '@' in a database name or
    a socket folder) and ``?dbname=a@b`` are what the user wrote, and libpq reads them as written.
    """
    host, port, dbname = str(parsed.get("host") or ""), str(parsed.get("port") or ""), str(parsed.get("dbname") or "")
    raw = dsn.split("?", 1)[0]
    if "@" in host and raw.count("@") >= 2:
        return True
    if "@" in _url_host(dsn):  # the same split, its host then replaced by ``?host=/socket/folder``
        return True
    if port and not all(p.strip().isdigit() or not p.strip() for p in port.split(",")):
        return True
    return ("@" in dbname and "user" not in parsed and "password" not in parsed
            and "@" in raw.split("://", 1)[-1].partition("/")[2])


def _url_host(url: str) -> str:
    """The host part of a URL as libpq finds it: after the user (and password), which libpq ends at the first
    '@' or '/', up to the next '/' or '?'; '' when the URL has no user."""
    rest = url.split("://", 1)[-1]
    end = min((i for i in (rest.find("@"), rest.find("/")) if i >= 0), default=-1)
    if end < 0 or rest[end] != "@":
        return ""
    return re.split(r"[/?]", rest[end + 1:], maxsplit=1)[0]


def connect_hint(message: str, target: Target) -> str:
    """What to do about a failed connection, from the server's or libpq's message.

    The names the message quotes (host, database, user) are taken out before matching
    words in it: a host ``db.invalid`` made a name that does not resolve a "malformed DSN".
    Only quoted, as libpq and psycopg write them: user ``u`` or ``auth`` taken out bare left
    "password athentication failed" (or database ``data``: "base ... does not exist"), and
    the hint sent the user after a server that was up.
    """
    text = message.lower()
    for name in {target.host, target.dbname, target.user} - {""}:
        for quote in "\"'":
            text = text.replace(f"{quote}{name.lower()}{quote}", quote * 2)
    if "too many clients" in text or "too many connections" in text or "connection slots are reserved" in text:
        # The server is up and the credentials are right: its (or the role's, or the database's) limit is hit.
        return (f"the server has no connection left for user {target.user!r} on {target.dbname!r}. A PostgresStore "
                f"keeps one connection per thread that uses it plus one for its runs' leases, in every process "
                f"(each kernel, each Flink worker): close stores no longer used (store.close()), run fewer threads "
                f"or processes at once (a lower parallelism), or raise the limit (max_connections in "
                f"postgresql.conf, ALTER ROLE {role_name(target.user)} CONNECTION LIMIT n, ALTER DATABASE "
                f"{role_name(target.dbname)} CONNECTION LIMIT n); then run the action again.")
    if "unsupported startup parameter" in text:  # PgBouncer's word for the DSN's options=...
        return (f"a connection pooler (PgBouncer) at {target.host}:{target.port} refuses a parameter of the DSN "
                f"(options=..., unless its ignore_startup_parameters lists it). Drop options from the DSN and set the "
                f"schema on the role instead (ALTER ROLE {role_name(target.user)} IN DATABASE "
                f"{role_name(target.dbname)} SET search_path = name), or point the DSN at the server itself.")
    if "ssl negotiation" in text or "gssapi negotiation" in text or "expected authentication request" in text:
        # Checked before "authentication" and "invalid": libpq's "received invalid response to SSL
        # negotiation" (or "expected authentication request from server, but received H") is a port that
        # answers, but not as PostgreSQL does (a web server, an SSH daemon): the DSN is well formed and
        # no password was tried.
        return (f"something that is not PostgreSQL answers at {target.host}:{target.port}: check the port (and "
                f"host) in the DSN; PostgreSQL's default port is 5432.")
    if any(w in text for w in ("starting up", "shutting down", "recovery mode", "not yet accepting connections",
                                "terminating connection")):
        # The server runs but takes no session now: a restart, crash recovery, a standby catching up, or
        # pg_terminate_backend. "Is a server running? Start one" sent the user after a second server.
        return (f"The server at {target.host}:{target.port} runs but is not taking sessions now (it is restarting, "
                f"recovering after a crash, or an administrator ended this session): wait until it accepts "
                f"connections, then run the action again (what was committed replays).")
    if "password authentication failed" in text or "no password supplied" in text or "authentication" in text:
        return (f"the server refused user {target.user!r}: check the user and password in the DSN "
                f"(postgresql://USER:PASSWORD@{target.host}:{target.port}/{target.dbname}).")
    if "does not exist" in text and "database" in text:
        createdb = " ".join(shlex.quote(a) for a in ("-h", target.host, "-p", target.port, "-U", target.user))
        return (f"create the database first: createdb {createdb} {shlex.quote(target.dbname)} (or CREATE DATABASE "
                f"{role_name(target.dbname)}), or point the DSN at an existing one.")
    if "permission denied" in text or "not permitted" in text or "pg_hba" in text:
        return "the server does not let this user connect here: check pg_hba.conf and the role's privileges."
    if "invalid" in text or "syntax" in text or "missing" in text:
        return ("The DSN itself is malformed: write postgresql://USER:PASSWORD@HOST:PORT/DATABASE (the port a "
                "number) or host=... port=... dbname=... user=...")
    return (f"Is a PostgreSQL server running and reachable at {target.host}:{target.port}? Start one (from a "
            f"checkout of durable_nb: `./dev pg`, which prints a DSN), or fix host and port in the DSN.")


def dropped_search_path(conn: psycopg.Connection[Any], options: str | None) -> tuple[str, str, str] | None:
    """``(asked, got, database)`` when the DSN's ``options`` set a search_path the session does not have.

    ``database`` is the server's name of it (a pooler's alias may differ); None when the path arrived.

    A connection pooler may drop the options startup parameter (PgBouncer's
    ``ignore_startup_parameters = options``, set because it refuses the parameter otherwise): the
    journal then went to the role's default schema (public), another notebook's journal maybe,
    whose runs of the same ids it replayed. One round trip, only when the DSN names a search_path.
    """
    # The last one: the server applies them in order (options built by appending name it twice).
    found = re.findall(r"(?:-c\s*|--)search_path=((?:\\.|\S)+)", options or "")
    if not found:
        return None
    asked = re.sub(r"\\(.)", r"\1", found[-1])
    # set_config (local to this statement) spells the asked path as the server would have: compared alike.
    row = conn.execute("SELECT current_setting('search_path'), set_config('search_path', %s, true), "
                       "current_database()", (asked,)).fetchone()
    return None if row is None or row[0] == row[1] else (asked, str(row[0]), str(row[2]))


def wrong_encoding(conn: psycopg.Connection[Any]) -> str | None:
    """The database's encoding if it cannot hold every text a journal keeps, else None.

    A journal keeps whatever text its calls see (argument and result previews, error messages,
    run ids): a LATIN1 (or any other single-language) database refused the first that did not fit,
    and every later statement of the store carried that held outcome again and failed alike. UTF8
    holds all of it; SQL_ASCII keeps the bytes it is given (the sessions speak UTF8 to it).
    """
    encoding = conn.info.parameter_status("server_encoding") or "UTF8"
    return None if encoding.upper() in ("UTF8", "SQL_ASCII") else encoding


def unpinned_session(conn: psycopg.Connection[Any], connect: Callable[[], psycopg.Connection[Any]]) -> bool:
    """Whether ``conn`` goes through a pooler that hands each statement whichever server session is free.

    PgBouncer in transaction or statement pooling (and managed "transaction poolers") does that:
    a run's lease, a session-level advisory lock, then stays on a server session that the next
    client is given, and that client's lock on the same run is granted (locks are re-entrant
    within a session), so a second kernel ran a PENDING call again while the first still ran it.
    A pooler shows as a backend pid unlike the server's (it makes its own up); behind one, a
    second client's statement is given our server session (or ours another) unless ours is pinned
    to us. One round trip when nothing is in between.
    """
    pid = conn.execute("SELECT pg_backend_pid()").fetchone()
    if pid is None or pid[0] == conn.info.backend_pid:
        return False  # talking to the server itself
    with connect() as other:
        theirs = other.execute("SELECT pg_backend_pid()").fetchone()
    again = conn.execute("SELECT pg_backend_pid()").fetchone()
    return bool(theirs == pid or again != pid)


def create_or_check(conn: psycopg.Connection[Any], where: str) -> tuple[str, bool]:
    """Create the journal tables if the schema is empty, else check them.

    Returns ``current_schema()`` and whether the journal has the function that
    opens a run in one round trip (:data:`postgres_sql.CREATE_LOCK_OPEN`; added to
    a journal made before it, when the role may create it). Runs in one
    transaction under an advisory lock; a wrong database is refused before
    anything is written (the transaction writes nothing and rolls back).
    """
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK_KEY,))
        schema = conn.execute("SELECT current_schema()").fetchone()
        if schema is None or schema[0] is None:
            raise JournalFormatError(_no_schema(conn, where))
        name = str(schema[0])
        tables = _tables(conn, name)
        if not tables:
            for table, spec in TABLES.items():
                conn.execute(f"CREATE TABLE {table} ({spec})")
            for statement in INDEXES:
                conn.execute(statement)
            conn.execute(
                "INSERT INTO meta VALUES ('app', %s), ('schema_version', %s)", (APP_ID, str(SCHEMA_VERSION))
            )
            conn.execute(q.CREATE_LOCK_OPEN)
            return name, True
        _check(conn, name, tables, where)
        return name, _complete(conn)


def role_name(name: str) -> str:
    """A role or database name in double quotes as SQL writes it: ``"`` doubled, so a pasted hint names it.

    Why: hints wrote ``ALTER ROLE "{user}"``; a name holding ``"`` (``ALTER ROLE "a"b"``) made the statement a
    syntax error, or another statement (a name is any text the DSN gives). Always quoted, so case is kept.
    """
    return '"' + name.replace('"', '""') + '"'


def sql_name(name: str) -> str:
    """``name`` as SQL writes it: a plain lower-case identifier as is, anything else in double quotes."""
    return name if re.fullmatch(r"[a-z_][a-z0-9_]*", name) else '"' + name.replace('"', '""') + '"'


def _no_schema(conn: psycopg.Connection[Any], where: str) -> str:
    """Why ``current_schema()`` is NULL: no schema of the search_path exists, or the user may not use those
    that do (PostgreSQL leaves a schema without USAGE out of the path, so both look alike)."""
    row = conn.execute("SELECT current_user, current_setting('search_path')").fetchone()
    user, path = (str(row[0]), str(row[1])) if row else ("", "")
    names = [part.strip().strip('"').replace("$user", user) for part in path.split(",") if part.strip()]
    found = conn.execute(
        "SELECT nspname FROM pg_namespace WHERE nspname = ANY(%s) AND NOT has_schema_privilege(oid, 'USAGE')",
        (names,),
    ).fetchall()
    refused = [str(r[0]) for r in found]
    if refused:
        schema, role = sql_name(refused[0]), sql_name(user)
        return (f"{where} may not use schema {refused[0]!r}, which its search_path {path!r} names: the user lacks "
                f"USAGE on it, so PostgreSQL leaves it out of the path. GRANT USAGE, CREATE ON SCHEMA {schema} TO "
                f"{role} (or ALTER SCHEMA {schema} OWNER TO {role}), or point options=-csearch_path in the DSN at "
                f"a schema it may use.")
    return (f"{where} has no schema to hold a journal (search_path {path!r} names none that exists); "
            f"create the schema or fix options=-csearch_path in the DSN.")


def _complete(conn: psycopg.Connection[Any]) -> bool:
    """Add what a journal made before them lacks; whether it has the one-round-trip open.

    The prefix index and the function (:data:`postgres_sql.CREATE_LOCK_OPEN`) are created where
    missing, each in a savepoint: a role that may not create them does without (a scan of the runs
    for a prefix, two round trips to open a run), as does one that may not execute the function
    (EXECUTE revoked from PUBLIC: its mere existence sent every open into 'permission denied').
    """
    row = conn.execute("SELECT f IS NOT NULL, coalesce(has_function_privilege(f, 'EXECUTE'), false), to_regclass("
                       "'runs_by_prefix') IS NOT NULL FROM to_regprocedure(%s) AS f", (q.LOCK_OPEN_SIGNATURE,))
    has_open, may_run, has_index = (bool(v) for v in row.fetchone() or (False, False, False))
    if not has_index:
        _try(conn, PREFIX_INDEX)
    return may_run if has_open else _try(conn, q.CREATE_LOCK_OPEN)


def _try(conn: psycopg.Connection[Any], statement: str) -> bool:
    """Run ``statement`` in a savepoint; False (and nothing changed) if it is refused."""
    try:
        with conn.transaction():  # a savepoint: a refusal leaves the checks above as they were
            conn.execute(statement)
    except Exception:  # e.g. no CREATE privilege on the schema, not the table's owner
        return False
    return True


def _tables(conn: psycopg.Connection[Any], schema: str) -> dict[str, set[str]]:
    rows = conn.execute(
        "SELECT c.relname, a.attname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped "
        "WHERE n.nspname = %s AND c.relkind IN ('r', 'p', 'v', 'm', 'f')",
        (schema,),
    ).fetchall()
    out: dict[str, set[str]] = {}
    for table, column in rows:
        out.setdefault(table, set()).add(column)
    return out


def _check(conn: psycopg.Connection[Any], schema: str, tables: dict[str, set[str]], where: str) -> None:
    hint = ("Point the DSN at a durable_nb journal, or at a new empty database (CREATE DATABASE journal) "
            "to create one; nothing was changed.")
    ours = set(TABLES)
    meta: dict[str, str] = {}
    if "meta" in tables and tables["meta"] >= COLUMNS["meta"]:
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    if meta.get("app") != APP_ID:
        raise JournalFormatError(
            f"{where} (schema {schema!r}) holds tables but is not a durable_nb journal "
            f"(tables: {', '.join(sorted(tables))}). {hint}"
        )
    version = int(meta.get("schema_version", "0"))
    if version > SCHEMA_VERSION:
        raise JournalFormatError(
            f"{where} holds journal schema version {version}, newer than this durable_nb understands "
            f"({SCHEMA_VERSION}). Upgrade durable_nb (pip install -U durable_nb); nothing was changed."
        )
    for table in sorted(ours):
        missing = COLUMNS[table] - tables.get(table, set())
        if missing:
            raise JournalFormatError(
                f"{where} is marked as a durable_nb journal but its table {table!r} lacks columns "
                f"{', '.join(sorted(missing))}: it was changed by something else. {hint}"
            )
