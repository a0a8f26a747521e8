"""PostgreSQL connection strings as durable_nb reads and shows them, without psycopg.

Why a module of its own: ``open_store`` must tell a libpq DSN from a file path
before the optional psycopg extra is imported (as a file name, a key=value DSN
would put its password on disk), and every message, ``repr`` and widget that
names a store must show its DSN with the secrets masked, whoever builds it.
"""

from __future__ import annotations

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
_KV_SECRET = re.compile(r"\b(password|sslpassword)(\s*=\s*)('(?:[^'\\]|\\.)*'?|(?:\\.|[^\s\\])*\\?)",
                        re.IGNORECASE)
"""A secret keyword and its value: quoted (backslash escapes inside), or bare (``se\\ cret``: escaped spaces)."""


def mask_dsn(text: str) -> str:
    """``text`` with every password in it shown as ``***``: a URL's ``user:PASSWORD@`` and its
    ``password=``/``sslpassword=`` parameters, or those keywords of a key=value string. Masks
    too much rather than too little (anything between ``user:`` and the last ``@``)."""
    if "://" not in text:
        return _KV_SECRET.sub(lambda m: m.group(1) + m.group(2) + "***", text)
    scheme, rest = text.split("://", 1)
    creds, at, rest = rest.rpartition("@")  # a password may hold a raw '?' or '/': mask up to the last '@'
    shown = f"{creds.split(':', 1)[0]}:***@" if at and ":" in creds else (f"{creds}@" if at else "")
    before, q, query = rest.partition("?")
    if q:
        pairs = query.split("&")
        query = "&".join(
            f"{pair.split('=', 1)[0]}=***" if unquote(pair.split("=", 1)[0]).strip().lower() in SECRETS else pair
            for pair in pairs
        )
    return f"{scheme}://{shown}{before}{q}{query}"


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
