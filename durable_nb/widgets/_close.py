"""Closing a widget closes every model it made (its children, each one's ``layout`` and ``style``) and the store
it opened.

ipywidgets' ``Widget.close()`` closes one model. The models it refers to stay open
and registered in the kernel (``ipywidgets.widgets.widget._instances``) until the
kernel ends: the children of a box, and the ``Layout`` and ``Style`` every widget
makes for itself (a ``Button`` is three models). A ``JournalView`` closed that way
left about 50 models behind, a ``ReplayStepper`` 70, and a ``ReconcilePanel`` lost
its rows' models on every refresh. Every widget here closes through these helpers.

The walk follows the synced traits that hold widgets (``children``, ``layout``,
``style``, a ``Tab``'s pages), so it needs no list per widget class, and it calls
each widget's own ``close()``, so a part with resources of its own (the
``JournalView`` inside a ``ReplayStepper`` and its polling thread) releases them too.
Closing twice is harmless: ipywidgets ignores a second ``close()``.

A widget given a path or URL opens its own store (``open_store``) and closes it in
``close()``: each one left a SQLite file's connections, lock files and flusher open
(about 6 descriptors a widget). A store object passed in belongs to the caller, and
so does the process-wide default store (``None``): those stay open.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import ipywidgets as W

from ..journal.store import Store
from ..stores import file_of, open_store


def _parts(widget: W.Widget) -> Iterator[W.Widget]:
    """The widgets ``widget``'s synced traits hold (children, layout, style...)."""
    for name in widget.keys:
        value = getattr(widget, name, None)
        if isinstance(value, W.Widget):
            yield value
        elif isinstance(value, list | tuple):
            yield from (v for v in value if isinstance(v, W.Widget))


def close_children(root: W.Widget) -> None:
    """Close every widget under ``root`` (not ``root`` itself: its own ``close()`` calls this, then closes it)."""
    seen = {id(root)}
    stack = list(_parts(root))
    while stack:
        widget = stack.pop()
        if id(widget) in seen:
            continue
        seen.add(id(widget))
        stack.extend(_parts(widget))  # read before close(): a subclass's close may clear its parts
        widget.close()


def close_tree(root: W.Widget) -> None:
    """Close ``root`` and everything under it (a dropped row of a panel)."""
    close_children(root)
    root.close()


def open_own(widget: W.Widget, given: Store | str | os.PathLike[str] | None, *, existing: bool = False) -> Store:
    """``open_store(given)`` for ``widget``, remembering whether it opened a store of its own (a path or URL),
    which :func:`close_own_store` closes; a store passed in, or the default (``None``), is not its own.

    ``existing``: a path or URL must name a journal file that exists. A viewer given a mistyped path
    would otherwise create an empty journal there (its folders too) and show "no runs yet".
    """
    text = os.fspath(given) if existing and isinstance(given, str | os.PathLike) else None
    if isinstance(text, str):
        path = file_of(text)
        if path not in (None, "", ":memory:") and not os.path.exists(path):
            name = type(widget).__name__
            raise FileNotFoundError(f"{name}: no journal at {path!r} (relative paths start at {os.getcwd()!r}); "
                                    f"check the path, or pass the store itself: {name}(runner.store)")
    store = open_store(given)
    widget._own_store = given is not None and not isinstance(given, Store)
    return store


def close_own_store(widget: W.Widget) -> None:
    """Close the store ``widget`` opened itself, once (nothing for a widget whose ``__init__`` failed early)."""
    if getattr(widget, "_own_store", False):
        widget._own_store = False
        widget.store.close()
