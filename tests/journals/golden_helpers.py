"""A notebook's helpers module (not installed): the classes and functions tests/journals/instances.db journaled.

Imported by tests/test_golden_journal.py under this same name, as the notebook that wrote the journal did.
"""

from __future__ import annotations

import collections

CALLS: list[str] = []
"""Every real call of a function below (a replayed call adds nothing)."""

Point = collections.namedtuple("Point", "x y")


class Customer:
    """A plain class of the user's: an instance pickles by its class's name, with its ``__dict__``."""

    def __init__(self, name: str, limit: int) -> None:
        self.name, self.limit = name, limit


def charge_customer(customer: Customer, where: list) -> dict:
    CALLS.append(f"charge {customer.name}")
    return {"customer": customer.name, "charged": customer.limit, "at": list(where)}
