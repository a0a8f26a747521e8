"""The digest of plain arguments (scalars, lists, tuples, dicts, sets of them), the common case, fast.

:func:`encode_plain` gives exactly the bytes :func:`durable_nb.journal.digest._encode`
gives for plain data, so digests do not depend on which path made them (the
golden-journal tests hold both to the journals written before it existed). Why a
separate path: for plain data the general encoder's back-reference memo and
fallbacks are pure overhead, and a replayed ``map`` record spent more time
digesting its arguments than reading its journal.
"""

from __future__ import annotations

from typing import Any

MAX_DEPTH = 64
"""Containers nested deeper than this are digested from their pickle (by the general encoder)."""


class NotPlain(Exception):
    """Raised by :func:`encode_plain` on anything but plain data: the general encoder takes over."""


def encode_plain(obj: Any, out: list[bytes], depth: int) -> None:
    """:func:`_encode` of plain data only (scalars, lists, tuples, dicts, sets of them), byte for byte.

    Why: most arguments are plain (ids, records as dicts), and for them the general
    encoder's back-reference memo and fallbacks are pure overhead (a replayed ``map``
    record spent more time digesting than reading its journal). Anything else raises
    :class:`NotPlain` and the whole digest is made again by :func:`_encode`.
    """
    t = type(obj)
    if t is str:
        data = obj.encode("utf-8", "surrogatepass")
        out.append(b"s%d:" % len(data))
        out.append(data)
    elif t is int:
        out.append(b"i%d;" % obj)
    elif obj is None:
        out.append(b"N")
    elif t is bool:
        out.append(b"T" if obj else b"F")
    elif t is float:
        out.append(b"f" + obj.hex().encode() + b";")
    elif t is bytes:
        out.append(b"b%d:" % len(obj))
        out.append(obj)
    elif depth > MAX_DEPTH:
        raise NotPlain
    elif t is dict:
        items = []
        for k, v in obj.items():  # str keys with str/int values in one format: records are dicts of them
            tv = type(v)
            if type(k) is str:
                kd = k.encode("utf-8", "surrogatepass")
                if tv is str:
                    vd = v.encode("utf-8", "surrogatepass")
                    items.append(b"s%d:%bs%d:%b" % (len(kd), kd, len(vd), vd))
                    continue
                if tv is int:
                    items.append(b"s%d:%bi%d;" % (len(kd), kd, v))
                    continue
                part = [b"s%d:" % len(kd), kd]
            else:
                part = []
                encode_plain(k, part, depth + 1)
            encode_plain(v, part, depth + 1)
            items.append(b"".join(part))
        items.sort()
        out.append(b"{%d:" % len(items))
        out.extend(items)
    elif t is tuple or t is list:
        out.append(b"(%d:" % len(obj) if t is tuple else b"[%d:" % len(obj))
        for item in obj:
            encode_plain(item, out, depth + 1)
    elif t is set or t is frozenset:
        _encode_members(obj, out, depth, b"<%d:" if t is set else b"|%d:")
    else:
        raise NotPlain


def _encode_members(obj: Any, out: list[bytes], depth: int, head: bytes) -> None:
    """A set's members, each encoded on its own and sorted (set order varies by process)."""
    members = []
    for m in obj:
        part: list[bytes] = []
        encode_plain(m, part, depth + 1)
        members.append(b"".join(part))
    members.sort()
    out.append(head % len(members))
    out.extend(members)
