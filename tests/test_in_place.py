"""A replay's state for an input the cell changed goes into the notebook's object, or nothing changes."""

from __future__ import annotations

import collections
import pickle
from typing import Any

import numpy as np
import pandas as pd
import pytest

from durable_nb.notebook.in_place import update_in_place


def _copy(value: Any) -> Any:
    return pickle.loads(pickle.dumps(value))


class _Slots:
    __slots__ = ("a", "b")


class _Tagged(list):  # type: ignore[type-arg]
    __slots__ = ("source",)


class _Plain:
    def __init__(self) -> None:
        self.weights: list[float] | None = None
        self.cache = {"x": 1}


def test_the_object_takes_the_journaled_state_and_stays_the_same_object() -> None:
    frame = pd.DataFrame({"x": [1, 2]})
    new_frame = _copy(frame)
    new_frame["score"] = new_frame["x"] * 2
    assert update_in_place(frame, new_frame) and list(frame["score"]) == [2, 4]

    model, fitted = _Plain(), _Plain()
    fitted.weights = [1.0]
    del fitted.cache  # an attribute the cell deleted is gone, as it was after the first run
    assert update_in_place(model, fitted) and vars(model) == {"weights": [1.0]}

    slots, new_slots = _Slots(), _Slots()
    slots.a, new_slots.a, new_slots.b = 1, 2, 3
    assert update_in_place(slots, new_slots) and (slots.a, slots.b) == (2, 3)

    array = np.zeros(3)
    assert update_in_place(array, np.arange(3.0)) and list(array) == [0.0, 1.0, 2.0]

    counts = collections.Counter(a=1)
    assert update_in_place(counts, collections.Counter(a=2)) and counts == {"a": 2}  # set, not added


def test_a_container_subclass_takes_its_slots_too() -> None:
    """``class Orders(list)`` with ``__slots__``: the attribute the cell set is part of what it left."""
    orders, new_orders = _Tagged(), _Tagged([1])
    orders.source, new_orders.source = "csv", "api"
    assert update_in_place(orders, new_orders) and (list(orders), orders.source) == ([1], "api")


@pytest.mark.parametrize("live, new", [
    (1, 2), ("a", "b"), ((1,), (2,)),               # immutable: built from constructor arguments
    ([1], (1,)),                                    # another type
    (np.zeros(2), np.zeros(3)),                     # another shape
    (collections.deque([1], maxlen=1), collections.deque([2], maxlen=2)),
])
def test_what_cannot_take_the_state_is_left_as_it_was(live: Any, new: Any) -> None:
    before = _copy(live)
    assert not update_in_place(live, new)
    assert type(live) is type(before) and repr(live) == repr(before)


class _Gridded:
    """Built from an array (``__getnewargs__``), as some scientific classes are: its ``__bool__`` raises."""

    def __new__(cls, grid: Any = None) -> _Gridded:
        return object.__new__(cls)

    def __init__(self, grid: Any) -> None:
        self.grid, self.fitted = grid, False

    def __getnewargs__(self) -> tuple[Any, ...]:
        return (self.grid,)


def test_an_object_built_from_an_array_argument_is_left_as_it_was_instead_of_failing_the_replay() -> None:
    """``any(args)`` on the constructor arguments asked an array for its truth: ValueError out of the replay."""
    live = _Gridded(np.arange(3))
    new = _copy(live)
    new.fitted = True
    assert not update_in_place(live, new)
    assert live.fitted is False
