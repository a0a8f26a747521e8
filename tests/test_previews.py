"""The journal's one-line previews: a small record's fast path prints what the bounded repr prints.

The fast path (``repr`` of a small container of short scalars) exists only for
speed; a preview must not depend on which path made it, so every value here is
compared with the bounded ``reprlib`` path it short-cuts.
"""

from __future__ import annotations

from typing import Any

import pytest

from durable_nb.journal import codec

VALUES: list[Any] = [
    {"id": 17, "score": 42},
    {"b": 1, "a": 2},  # reprlib sorts a dict's keys; repr does not
    {1: "a", "b": 2},  # keys that do not sort
    {True: 1, False: 0},
    {0.5: None, 0.25: 1},
    {"k": "x" * 64},
    {"k": "x" * 65},
    {"k": "tab\there", "n": "new\nline"},
    {"a": "two  spaces"},
    {"a": "é", "b": "日本"},
    {"a": -(10**30)},
    {"a": 10**29},
    {"nested": {"a": 1}},
    [1, 2.5, None, True, "x y", "a\nb"],
    [float("nan"), float("inf")],
    ["q'\"\\" * 16],
    list(range(12)),
    list(range(13)),
    (1,),
    (),
    {},
    [],
    [[1]],
    {str(i): i for i in range(12)},
    {str(i): i for i in range(13)},
]


def bounded_repr(value: Any) -> str:
    """The general path of ``codec.preview`` (its reprlib, with its limits), without its fast paths."""
    return codec.clip(codec._repr.repr(value))


@pytest.mark.parametrize("value", VALUES, ids=[repr(v)[:40] for v in VALUES])
def test_a_preview_is_the_same_text_whichever_path_makes_it(value: Any) -> None:
    assert codec.preview(value) == bounded_repr(value)


def test_a_small_record_previews_as_its_repr_and_a_large_one_is_shortened() -> None:
    assert codec.preview({"id": 17, "score": 42}) == "{'id': 17, 'score': 42}"
    assert codec.preview(list(range(13))).endswith(", 11, ...]")


def _raised(outer: Exception, inner: Exception, *, explicit: bool = True) -> Exception:
    try:
        try:
            raise inner
        except Exception as exc:
            if explicit:
                raise outer from exc
            raise outer  # noqa: B904  # the implicit chain: "During handling of the above exception ..."
    except Exception as exc:
        return exc


def test_a_chained_failure_previews_what_its_traceback_ended_with_and_what_it_came_from() -> None:
    """The traceback at the first run showed the cause too; a preview of the wrapper alone hid the reason."""
    assert codec.error_preview(_raised(RuntimeError("charge failed"), KeyError("card"))) == (
        "RuntimeError: charge failed (from KeyError: 'card')")
    assert codec.error_preview(_raised(ValueError("bad"), OSError("disk"), explicit=False)) == (
        "ValueError: bad (while handling OSError: disk)")
    assert codec.error_preview(_raised(ValueError("bad"), OSError("disk")).with_traceback(None)) == (
        "ValueError: bad (from OSError: disk)")
    hidden = _raised(ValueError("bad"), OSError("disk"), explicit=False)
    hidden.__suppress_context__ = True  # ``raise ... from None``: the traceback showed no context
    assert codec.error_preview(hidden) == "ValueError: bad"
    long = codec.error_preview(_raised(ValueError("x" * 300), KeyError("card")))
    assert len(long) == codec.PREVIEW_LIMIT and long.startswith("ValueError: xxx")
