"""How ``%%durable`` cells are named in the journal: call ids and run ids.

A cell ``%%durable NAME`` is run ``cell:NAME:<digest16>``, the digest covering the
cell's code and the values it reads; call 0 of that run (call id ``cell:NAME``)
is the cell itself. ``--rerun`` never overwrites history: it opens
``cell:NAME:<digest16>#2`` (then ``#3`` ...), and later replays use the newest.
An attempt number is never given twice in a journal (:func:`new_attempt`).
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


def latest_attempt(store: Store, base: str) -> str | None:
    """The newest existing run of a cell version (``base``, ``base#2`` ...): the one the cell replays or recovers.

    One lookup of the run ids starting with ``base`` (an index range): a prune may have removed
    any of the attempts (``%durable_prune --keep-last 1``, ``--status FAILED``), and the cell must
    still replay the newest kept one.
    """
    latest = _highest(store, base)
    return None if latest == 0 else _attempt_id(base, latest)


def new_attempt(store: Store, base: str) -> str:
    """The id a new attempt of a cell version takes (a first run, ``--rerun``, a fork); writes nothing.

    Never one used before in this journal, even when its run was pruned or forgotten since: a ledger
    or a reconciler keyed by ``ctx.run_id`` would take the new attempt's charge for the old one's. So
    the number comes after the newest existing attempt and after the highest one the journal kept
    (:func:`keep_attempt`). One exception: a kept attempt with no run yet that a live context holds is
    another kernel starting this very attempt; it is taken again, so that the second kernel meets the
    first's run (``RunBusyError``, then a replay), as two kernels did before numbers were kept.
    """
    highest, kept = _highest(store, base), store.last_number(_sequence(base))
    if kept > highest and store.run_is_open(_attempt_id(base, kept)):
        return _attempt_id(base, kept)
    return _attempt_id(base, max(highest, kept) + 1)


def keep_attempt(store: Store, base: str, run_id: str) -> None:
    """Keep ``run_id``'s attempt number in the journal: :func:`new_attempt` never gives it again.

    A cell's run keeps it once the run is held (opened), or on Flink once the job that held it ended:
    a kept number whose run neither exists nor is held is taken for a pruned one's, so kept any sooner
    a second kernel starting the same attempt would run one of its own. A fork keeps it before it is
    made (nothing meets a fork's run; a fork that fails leaves a gap, never a reuse).
    """
    number = _attempt(run_id, base)
    if number is not None:
        store.keep_number(_sequence(base), number)


def _sequence(base: str) -> str:
    """The sequence (:meth:`Store.keep_number`) of a cell version's attempt numbers."""
    return f"{base}#"


def _highest(store: Store, base: str) -> int:
    """The highest attempt number among the existing runs of ``base`` (0: none)."""
    found = (_attempt(run_id, base) for run_id in store.run_ids_with_prefix(base))
    return max((k for k in found if k is not None), default=0)


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
