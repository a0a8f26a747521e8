"""Journal backends, and ``open_store`` which picks one from a URL or path.

Backends persist what the replay rules tell them to and nothing else:
:mod:`.sqlite` (embedded default), :mod:`.memory` (tests, demos), :mod:`.postgres`
(many machines; loaded only for a ``postgresql://`` URL, psycopg is an optional extra).
"""

from __future__ import annotations

import difflib
import os
import threading
import urllib.parse
from pathlib import Path

from ..journal.store import Store
from .dsn import LIBPQ_KEYWORDS, mask_dsn
from .memory import MemoryStore
from .sqlite import SqliteStore

__all__ = ["DEFAULT_PATH", "MemoryStore", "SqliteStore", "default_store", "open_store"]

# ---------------------------------------------------------------- opening stores

DEFAULT_PATH = Path(".durable") / "journal.db"
_defaults: dict[str, Store] = {}
_defaults_lock = threading.Lock()


def _renew_lock_in_child() -> None:
    """A fork while another thread opened the default store copied this lock locked: the child's
    ``open_store()`` waited for ever."""
    global _defaults_lock
    _defaults_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_renew_lock_in_child)


def default_store() -> Store:
    """The embedded default: ``.durable/journal.db`` under the working directory."""
    path = str((Path.cwd() / DEFAULT_PATH).resolve())
    with _defaults_lock:
        store = _defaults.get(path)
        store = _defaults[path] = SqliteStore(path) if store is None else reopened(store)
        return store


def reopened(store: Store) -> Store:
    """``store``, or a new store on its file's path (same settings) if that file was deleted while it was open.

    Why: a deleted journal refuses every later run and says to open the store again, but the default store
    and the notebook's stores are cached by path: after ``rm -rf .durable`` opening again returned the same
    store, and only a kernel restart let the notebook journal anything.
    """
    if isinstance(store, SqliteStore) and store._deleted():
        return SqliteStore(store.path, durability=store.durability, read_only=store._forced_ro)
    return store


def open_store(url: str | os.PathLike[str] | Store | None = None) -> Store:
    """Open a store from ``sqlite:///path``, a plain path, ``memory://``, ``postgresql://…``, or None (default)."""
    if url is None:
        return default_store()
    if isinstance(url, Store):
        return url
    text = os.fspath(url) if isinstance(url, str | os.PathLike) else None
    if not isinstance(text, str):
        # A runner (or a context) handed to a widget where its store goes: say which attribute to pass.
        held = "" if not isinstance(getattr(url, "store", None), Store) else (
            f" A {type(url).__name__} is not a store: pass its .store instead (runner.store).")
        shown = " ".join(repr(url).split())  # a DataFrame's repr runs over many lines
        raise TypeError(
            f"open_store expects a URL or path string (or a Store), got {type(url).__name__} {shown[:120]}; "
            f"e.g. open_store('sqlite:///journal.db') or open_store('memory://').{held}"
        )
    text = _normalized(text)
    if text.startswith("memory:") and not text.startswith("memory://"):
        raise ValueError(
            f"open_store: {url!r} is not a memory URL; write 'memory://' (or 'memory://name' for a named "
            f"store). A file of that name would be 'sqlite:///{text}'."
        )
    if text.startswith(("postgresql:", "postgres:")) and not _is_postgres(text):
        # It became a SQLite file named "postgres:..." in the working directory. Not echoed: it may hold a password.
        raise ValueError(
            f"open_store: a URL starting {text.partition(':')[0] + ':'!r} without '//' is not a PostgreSQL URL; "
            f"write 'postgresql://user@host:5432/db' (a file of such a name: 'sqlite:///name')."
        )
    if text.startswith("memory://"):
        name = text[len("memory://") :]
        return MemoryStore.named(name) if name else MemoryStore()
    if text.startswith(("sqlite:", "file:")):
        return _sqlite_from_url(text)
    if _is_postgres(text):
        from .postgres import PostgresStore  # psycopg: the optional extra durable_nb[postgres]

        # A libpq "host=... dbname=..." string too: as a file name it would put the password on disk.
        return PostgresStore.from_url(text) if "://" in text else PostgresStore(text)
    if "://" in text:
        shown = mask_dsn(text)
        scheme = text.partition("://")[0].lower()
        dialect = " (drop the SQLAlchemy driver suffix '+...')" if scheme.partition("+")[2] else ""
        near = difflib.get_close_matches(scheme, sorted(_SCHEMES - {"file"}), n=1)
        if near and not dialect:  # 'sqlte://', 'memroy://', 'postgressql://': a typo, not another kind of store
            dialect = f" (did you mean '{near[0]}:{'///' if near[0] == 'sqlite' else '//'}'?)"
        raise ValueError(
            f"open_store: unsupported URL {shown!r}{dialect}; use 'sqlite:///path/to/journal.db', "
            f"a plain file path, 'memory://', or 'postgresql://user@host:5432/db'."
        )
    if not text.strip():
        raise ValueError(
            "open_store: the URL is empty; pass 'sqlite:///journal.db' (relative to the working directory), "
            "'sqlite:////abs/path/journal.db', a file path, 'memory://', or None for .durable/journal.db."
        )
    return SqliteStore(text)


def file_of(url: str) -> str | None:
    """The journal file ``url`` names, as :func:`open_store` reads it (not checked, not opened), or None
    for a memory or PostgreSQL store (or a URL open_store refuses)."""
    text = _normalized(url)
    if text.startswith(("sqlite:", "file:")):
        try:
            path, _ = _url_path(text)
        except ValueError:
            return None
        return path or str(DEFAULT_PATH)
    if text.startswith(("memory:", "postgresql:", "postgres:")) or _is_postgres(text) or "://" in text:
        return None
    return text


def _normalized(text: str) -> str:
    """``text`` with a URL's scheme in lower case (schemes are case-insensitive) and a pasted URL's spaces gone."""
    if text.strip() != text and text.strip().partition(":")[0].lower() in _SCHEMES:
        text = text.strip()  # a URL pasted with a space around it (a file name would keep its spaces)
    scheme, colon, rest = text.partition(":")
    return scheme.lower() + ":" + rest if colon and scheme.lower() in _SCHEMES else text


def _is_postgres(text: str) -> bool:
    """A PostgreSQL URL, or a libpq "host=... dbname=..." string (as a file name it would put the password on disk)."""
    return text.startswith(("postgresql://", "postgres://")) or LIBPQ_KEYWORDS.match(text) is not None


_SCHEMES = frozenset({"memory", "sqlite", "file", "postgresql", "postgres"})
_SQLITE_PARAMS = {"mode": ("ro", "rw", "rwc"), "durability": ("call", "transition", "relaxed")}


def _sqlite_from_url(text: str) -> SqliteStore:
    """``sqlite:///rel.db``, ``sqlite:////abs.db``, ``sqlite:rel.db``, ``file:rel.db``, ``file:///abs.db``.

    Parsed as URLs: the path is percent-decoded (``my%20journal.db``) and the query
    says how to open it (``?mode=ro``: read-only, ``?durability=relaxed``); nothing
    after ``?`` ever becomes part of a file name.
    """
    path, query = _url_path(text)
    params = urllib.parse.parse_qs(query, keep_blank_values=True)
    for name, values in params.items():
        allowed = _SQLITE_PARAMS.get(name)
        if allowed is None or len(values) != 1 or values[0] not in allowed:
            known = "; ".join(f"{k}={'|'.join(v)}" for k, v in _SQLITE_PARAMS.items())
            raise ValueError(
                f"open_store: unsupported query parameter {name}={values} in {text!r}; supported: {known}."
            )
    if not path:
        if params or text.rstrip("/?") not in ("sqlite:", "file:"):
            raise ValueError(f"open_store: {text!r} has no file path; write e.g. 'sqlite:///journal.db?mode=ro'.")
        path = str(DEFAULT_PATH)
    mode = params.get("mode", ["rwc"])[0]
    durability = params.get("durability", ["call"])[0]
    if mode == "rw" and not Path(path).expanduser().exists():
        raise ValueError(
            f"open_store: {text!r} asks for mode=rw but there is no journal at {path}; drop mode=rw to create one."
        )
    return SqliteStore(path, durability=durability, read_only=mode == "ro")


def _url_path(text: str) -> tuple[str, str]:
    """The (percent-decoded) path and the query of a ``sqlite:`` or ``file:`` URL; ValueError for a remote host."""
    scheme, rest = text.split(":", 1)
    rest, _, query = rest.partition("?")
    if scheme == "sqlite":
        if rest.startswith("///"):
            rest = rest[3:]  # sqlite:///rel.db -> rel.db, sqlite:////abs.db -> /abs.db (SQLAlchemy's rule)
        elif rest.startswith("//"):
            raise ValueError(
                f"open_store: {text!r} names a host; a SQLite journal is a local file: use "
                f"'sqlite:///relative/journal.db' or 'sqlite:////absolute/journal.db'."
            )
    elif rest.startswith("//"):  # file://host/path: only an empty host or localhost is local
        host, _, path = rest[2:].partition("/")
        if host not in ("", "localhost"):
            raise ValueError(f"open_store: {text!r} names the host {host!r}; use file:///absolute/journal.db.")
        rest = "/" + path
    return urllib.parse.unquote(rest, errors="surrogateescape"), query
