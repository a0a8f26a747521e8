"""PostgreSQL connection strings as durable_nb reads and shows them, without psycopg.

Why a module of its own: ``open_store`` must tell a libpq DSN from a file path
before the optional psycopg extra is imported (as a file name, a key=value DSN
would put its password on disk), and every message, ``repr`` and widget that
names a store must show its DSN with the secrets masked, whoever builds it.
"""

from __future__ import annotations

import difflib
import re
from urllib.parse import unquote

KEYWORDS = (
    "host", "hostaddr", "port", "dbname", "user", "password", "passfile", "require_auth", "channel_binding",
    "connect_timeout", "client_encoding", "options", "application_name", "fallback_application_name",
    "keepalives", "keepalives_idle", "keepalives_interval", "keepalives_count", "tcp_user_timeout",
    "replication", "gssencmode", "sslmode", "requiressl", "sslcompression", "sslcert", "sslkey", "sslpassword",
    "sslcertmode", "sslrootcert", "sslcrl", "sslcrldir", "sslsni", "requirepeer", "ssl_min_protocol_version",
    "ssl_max_protocol_version", "krbsrvname", "gsslib", "gssdelegation", "service", "target_session_attrs",
    "load_balance_hosts", "sslnegotiation",
)
"""libpq's connection keywords (PostgreSQL 17): a string starting ``keyword=`` is a DSN, not a path."""

LIBPQ_KEYWORDS = re.compile(r"\s*(" + "|".join(KEYWORDS) + r")\s*=", re.IGNORECASE)
SECRETS = frozenset({"password", "sslpassword"})
_KV_SECRET = re.compile(r"\b(\w*pass\w*|pwd)(\s*=\s*)('(?:[^'\\]|\\.)*'?|(?:\\.|[^\s\\])*\\?)", re.IGNORECASE)
"""A secret keyword and its value: quoted (backslash escapes inside), or bare (``se\\ cret``: escaped spaces).
Misspelt ones too (``passwd=``, ``pass=``, ``pwd=``): libpq refuses them, and the refusal shows the DSN."""
_KV_START = re.compile(r"\s*\w+\s*=")


def mask_dsn(text: str) -> str:
    """``text`` with every password in it shown as ``***``: a URL's ``user:PASSWORD@`` and its
    ``password=``/``sslpassword=`` parameters, or those keywords of a key=value string. Masks
    too much rather than too little (anything between ``user:`` and the last ``@``)."""
    if "://" not in text:
        if "@" in text and not _KV_START.match(text):  # a URL without its '//' (or scheme): user:PASSWORD@host
            creds, _, rest = _QUERY_SECRET.sub(_masked_parameter, text).rpartition("@")
            return f"{creds.split(':', 1)[0]}:***@{rest}" if ":" in creds else creds + _ + rest
        return _KV_SECRET.sub(lambda m: m.group(1) + m.group(2) + "***", text)
    scheme, rest = text.split("://", 1)
    # Query secrets first: libpq reads a raw '@' in a query value (?password=Se@cret), which the last '@' below
    # would take for the end of the credentials, showing the password as part of the user name.
    masked = _QUERY_SECRET.sub(_masked_parameter, rest)
    head = masked.partition("?")[0]
    if "@" in rest and "@" not in masked and ":" in head and "/" not in head:
        masked = head.split(":", 1)[0] + ":***" + masked[len(head):]  # user:pa?password=x@h: a password's start
    creds, at, rest = masked.rpartition("@")  # a password may hold a raw '?' or '/': mask up to the last '@'
    shown = f"{creds.split(':', 1)[0]}:***@" if at and ":" in creds else (f"{creds}@" if at else "")
    before, q, query = rest.partition("?")
    if q:
        pairs = query.split("&")
        query = "&".join(
            f"{pair.split('=', 1)[0]}=***" if unquote(pair.split("=", 1)[0]).strip().lower() in SECRETS else pair
            for pair in pairs
        )
    return f"{scheme}://{shown}{before}{q}{query}"


_QUERY_SECRET = re.compile(r"([?&])([^=&?#]*)=([^&]*)")
"""A URL query parameter, its value up to the next '&' (a raw '@' or '?' included)."""


def _masked_parameter(m: re.Match[str]) -> str:
    """A query parameter as shown: its value ``***`` when it is a secret (a percent-encoded key too)."""
    return f"{m.group(1)}{m.group(2)}=***" if unquote(m.group(2)).strip().lower() in SECRETS else m.group(0)


def without_parameter(url: str, name: str) -> tuple[str, list[str]]:
    """The URL without its query parameter ``name``, and that parameter's values (decoded).

    Done on the raw text, not by parsing and rebuilding the URL: a rebuilt
    ``postgresql:///db`` loses its ``//`` and a space written ``%20`` comes back
    as ``+``, which libpq does not read as a space.
    """
    head, q, query = url.partition("?")
    if not q:
        return url, []
    kept, values = [], []
    for pair in query.split("&"):
        key, _, value = pair.partition("=")
        if unquote(key) == name:
            values.append(unquote(value))
        else:
            kept.append(pair)
    return (f"{head}?{'&'.join(kept)}" if kept else head), values


UNKNOWN_KEYWORD = (
    "a key is not one of libpq's keywords (host, port, dbname, user, password, sslmode, connect_timeout, options, "
    "application_name, ...): check the spelling of each key, and quote a value holding spaces: password='...'")
"""The hint of libpq's "invalid connection option", whose name is not shown: it may be a piece of a password."""
_EXAMPLE = "'postgresql://user@host:5432/db' (or key=value pairs: 'host=... dbname=... user=...')"


def refuse_foreign(dsn: str) -> None:
    """A ValueError naming what ``dsn`` is instead of a PostgreSQL DSN, and what to pass, before libpq reads it.

    Why: libpq reads a path, ``sqlite:///x.db``, ``memory://`` or ``mysql://...`` as a key=value string with
    a missing '=', and the refusal said "cannot read the DSN: missing; percent-encode ... a password", which
    sent the user to their password. Nothing here shows a password: the DSN is shown masked, or not at all.
    """
    text = dsn.strip()
    if not text:
        from ..errors import EmptyDsnError

        raise EmptyDsnError(
            f"PostgresStore({dsn!r}): the DSN is empty; pass a PostgreSQL DSN such as {_EXAMPLE}, or "
            f"'postgresql://' for libpq's defaults (PGHOST, PGUSER, PGDATABASE...). A journal file is "
            f"dnb.SqliteStore('journal.db'), one in memory dnb.MemoryStore()."
        )
    if _KV_START.match(text):
        return  # key=value pairs (a value may hold '://': sslrootcert=...): libpq reads them, naming a wrong key
    scheme, sep, _ = text.partition("://")
    scheme = scheme.lower()
    if sep and scheme in ("postgresql", "postgres"):
        if dsn.startswith(("postgresql://", "postgres://")):
            return
        raise ValueError(  # libpq reads a URL only from its first character, and only in lower case
            f"PostgresStore: {mask_dsn(text)!r}: libpq reads a URL only when it starts exactly 'postgresql://' "
            f"or 'postgres://' (lower case, nothing before it): write it so, or open it with dnb.open_store(url), "
            f"which does that for you."
        )
    shown = mask_dsn(text)
    raise ValueError(f"PostgresStore: {shown!r} {_what_instead(text, scheme if sep else '')}")


def _what_instead(text: str, scheme: str) -> str:
    """What ``text`` (no PostgreSQL DSN; ``scheme`` is its URL scheme, '' when it has none) is, and the fix."""
    if scheme in ("sqlite", "file") or (not scheme and text.lower().startswith(("sqlite:", "file:"))):
        return ("is the URL of a SQLite journal, not a PostgreSQL DSN: open it with dnb.open_store(url) (which "
                "reads every kind of store URL) or dnb.SqliteStore(path).")
    if scheme == "memory" or (not scheme and text.lower().startswith("memory:")):
        return "is a memory store's URL, not a PostgreSQL DSN: use dnb.MemoryStore() or dnb.open_store('memory://')."
    if scheme.startswith(("postgresql+", "postgres+")):
        return f"is a SQLAlchemy URL: drop the driver suffix '+...', e.g. {_EXAMPLE}."
    if scheme.startswith("jdbc:"):
        return f"is a JDBC URL: drop 'jdbc:' (and write user and password as libpq reads them), e.g. {_EXAMPLE}."
    if text.lower().startswith("postgres") and not scheme:
        return f"is not a URL libpq reads: a PostgreSQL URL starts 'postgresql://', e.g. {_EXAMPLE}."
    if scheme:
        near = difflib.get_close_matches(scheme, ["postgresql", "postgres"], n=1, cutoff=0.6)
        if near:
            return f"has the URL scheme {scheme!r}: did you mean '{near[0]}://'? E.g. {_EXAMPLE}."
        return (f"is a {scheme!r} URL, not a PostgreSQL one: PostgresStore takes {_EXAMPLE}. durable_nb's other "
                f"journals are SQLite files (dnb.SqliteStore(path), open_store('sqlite:///journal.db')) and "
                f"dnb.MemoryStore(); dnb.open_store(url) reads every kind of store URL.")
    if "@" in text:
        return f"looks like a URL without its scheme: write it as {_EXAMPLE}."
    return (f"is neither a URL nor key=value pairs: a journal file (a path) is dnb.SqliteStore(path) or "
            f"dnb.open_store(path); a PostgreSQL DSN is {_EXAMPLE}, a database of that name 'postgresql:///NAME'.")
