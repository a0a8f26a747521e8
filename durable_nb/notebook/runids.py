"""How ``%%durable`` cells are named in the journal: call ids and run ids.

A cell ``%%durable NAME`` is run ``cell:NAME:<digest16>``, the digest covering the
cell's code and the values it reads; call 0 of that run (call id ``cell:NAME``)
is the cell itself. ``--rerun`` never overwrites history: it opens
``cell:NAME:<digest16>#2`` (then ``#3`` ...), and later replays use the newest.
``--map`` runs are ``cell:NAME/<key>#<seq>`` (see :mod:`durable_nb.runners.mapping`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..journal.records import RunRecord
    from ..journal.store import Store


def cell_call_id(name: str) -> str:
    """Call id of the cell's own journal entry (index 0 of its run)."""
    return f"cell:{name}"


def cell_run_base(name: str, digest: str) -> str:
    """Run id of the first attempt of one version (code and inputs) of a cell."""
    return f"cell:{name}:{digest[:16]}"


def attempts(store: Store, base: str) -> tuple[str | None, str]:
    """The newest existing run of a cell version (``base``, ``base#2`` ...), and the id a rerun would use.

    One lookup of the run ids starting with ``base`` (an index range): a prune may have removed
    any of the attempts (``%durable_prune --keep-last 1``, ``--status FAILED``), and the cell must
    still replay the newest kept one, and a rerun must take a number after it, never a used one.
    """
    found = (_attempt(run_id, base) for run_id in store.run_ids_with_prefix(base))
    latest = max((k for k in found if k is not None), default=0)
    if latest == 0:
        return None, base
    return _attempt_id(base, latest), _attempt_id(base, latest + 1)


def _attempt(run_id: str, base: str) -> int | None:
    """1 for ``base``, n for ``base#n``, None for any other run (a fork ``base#2.fork-1``, ``base#02``)."""
    if run_id == base:
        return 1
    number = run_id[len(base) + 1:] if run_id.startswith(f"{base}#") else ""
    ok = number.isascii() and number.isdigit() and not number.startswith("0") and number != "1"
    return int(number) if ok else None


def _attempt_id(base: str, n: int) -> str:
    return base if n == 1 else f"{base}#{n}"


def belongs_to(run_id: str, name: str) -> bool:
    """Whether a run is one of cell ``name``'s (any version, rerun or ``--map`` record)."""
    return run_id.startswith((f"cell:{name}:", f"cell:{name}/"))


def cell_runs(store: Store, name: str) -> list[RunRecord]:
    """Every run of cell ``name`` (those :func:`belongs_to` accepts), oldest first.

    Two prefix lookups (an index range each), not a scan of :meth:`Store.runs`: the store may
    hold 100,000 runs of other cells and actions, and a magic on one cell need not read them.
    """
    runs = store.runs_with_prefix(f"cell:{name}:") + store.runs_with_prefix(f"cell:{name}/")
    return sorted(runs, key=lambda r: r.created_at)


def latest_run_of(store: Store, name: str) -> str | None:
    """The run of cell ``name`` written last, or None if the cell never ran in this store."""
    runs = cell_runs(store, name)
    return max(runs, key=lambda r: r.updated_at).run_id if runs else None
