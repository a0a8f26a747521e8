"""Which code is the user's own: a notebook's, or a module next to it, rather than an installed package.

Why a module of its own: the user's classes travel by value (to Flink workers, in
journal payloads), and a process holding such a copy cannot pickle an instance by
reference, while the notebook can. The digest must encode those instances the same
way in both (:mod:`.digest`), and FlinkRunner ships exactly these modules by value.
"""

from __future__ import annotations

import functools
import os
import sys
import weakref
from pathlib import Path


@functools.lru_cache(maxsize=1)
def installed_roots() -> tuple[str, ...]:
    """The folders installed code lives in (site-packages, the interpreter's own), durable_nb's included."""
    import site
    import sysconfig

    roots = {sys.prefix, sys.base_prefix, sys.exec_prefix, *site.getsitepackages(), site.getusersitepackages()}
    roots.update(p for p in sysconfig.get_paths().values() if p)
    roots.add(str(Path(__file__).resolve().parent.parent))  # durable_nb itself travels as a package
    return tuple(os.path.join(os.path.realpath(r), "") for r in roots if r)


def is_user_module(name: str) -> bool:
    """``__main__``, a module this process cannot import (a copy's: a Flink worker), or one not installed."""
    if name == "__main__":
        return True
    module = sys.modules.get(name)
    if module is None:
        return True
    path = getattr(module, "__file__", None)
    if not path:
        return False  # builtin and frozen modules
    return not os.path.realpath(path).startswith(installed_roots())


_user_classes: weakref.WeakKeyDictionary[type, bool] = weakref.WeakKeyDictionary()


def is_user_class(cls: type) -> bool:
    """:func:`is_user_module` of a class's module, remembered per class (a digest asks for every object)."""
    try:
        return _user_classes[cls]
    except KeyError:
        found = _user_classes[cls] = is_user_module(getattr(cls, "__module__", "") or "")
        return found
    except TypeError:  # not weak-referenceable
        return is_user_module(getattr(cls, "__module__", "") or "")
