"""Journal backends, and ``open_store`` which picks one from a URL or path.

Backends persist what the replay rules tell them to and nothing else:
:mod:`.sqlite` (embedded default), :mod:`.memory` (tests, demos).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from ..journal.store import Store
from .memory import MemoryStore
from .sqlite import SqliteStore

__all__ = ["DEFAULT_PATH", "MemoryStore", "SqliteStore", "default_store", "open_store"]

# ---------------------------------------------------------------- opening stores

DEFAULT_PATH = Path(".durable") / "journal.db"
_defaults: dict[str, Store] = {}
_defaults_lock = threading.Lock()


def default_store() -> Store:
    """The embedded default: ``.durable/journal.db`` under the working directory."""
    path = str((Path.cwd() / DEFAULT_PATH).resolve())
    with _defaults_lock:
        store = _defaults.get(path)
        if store is None:
            store = _defaults[path] = SqliteStore(path)
        return store


def open_store(url: str | os.PathLike[str] | Store | None = None) -> Store:
    """Open a store from ``sqlite:///path``, a plain path, ``memory://``, or None (the default)."""
    if url is None:
        return default_store()
    if isinstance(url, Store):
        return url
    text = os.fspath(url)
    if not isinstance(text, str):
        raise TypeError(f"open_store expects a URL or path string, got {type(url).__name__}")
    if text.startswith("memory://"):
        name = text[len("memory://") :]
        return MemoryStore.named(name) if name else MemoryStore()
    if text.startswith("sqlite:///"):
        return SqliteStore(text[len("sqlite:///") :] or DEFAULT_PATH)
    if "://" in text:
        raise ValueError(
            f"open_store: unsupported URL {text!r}; use 'sqlite:///path/to/journal.db', "
            f"a plain file path, or 'memory://'."
        )
    return SqliteStore(text)
