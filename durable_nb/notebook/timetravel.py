"""Time travel on notebook cells: ``%%durable --dry``, ``%durable_fork``, ``%durable_prune``.

A ``%%durable NAME`` cell is run ``cell:NAME:<digest16>`` (``#2``, ``#3`` ... for
reruns, see :mod:`.runids`), whose call 0 is the cell itself and whose calls 1, 2
... are the ``durable_execute`` calls its body makes. That shape decides how the
journal-level time-travel tools apply to a cell:

* **Dry replay** (:func:`dry_cell`). A cell whose record is finished replays as a
  whole (nothing runs); a cell with no record of this version would execute. A
  cell that died mid-way (call 0 PENDING) would run its body again, so the body is
  run against :class:`~durable_nb.journal.timetravel.DryJournal` from call 1 on,
  in a *copy* of the notebook namespace with its printed output swallowed: the
  report names the first inner call that would not replay, and neither the
  notebook's variables nor the journal change.
* **Fork** (:func:`fork_cell`). ``store.fork`` copies a prefix of a run verbatim,
  call 0 included, and a copied, finished call 0 would make the cell replay as a
  whole. A cell fork therefore keeps call 0 *open* (PENDING, as a crash leaves it)
  and copies calls ``1..K-1`` with their recorded outcomes, all in one transaction
  (``store.fork_reopened``: a kernel killed meanwhile leaves no half fork). The fork
  gets the id a ``--rerun`` of that cell version would get, so the next run of the
  unchanged cell reopens it: its body runs again, calls ``1..K-1`` replay, ``K`` on
  execute. If the cell is edited before it runs, :func:`adopt_fork` moves the same
  prefix to the new version's run, so an edit after the fork point keeps what came
  before it. Either way the fork
  records its parent, as ``store.fork`` does.
* **Retention** (:func:`parse_age`) is ``store.prune`` with notebook spellings.

Over 400 lines because the three tools read one cell shape (call 0 the cell, its calls after it) and a dry
report must say what a run of *this* cell does in each of its states (finished, FAILED, crashed, forked,
edited); split apart, each would re-derive that shape.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import re
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any, NamedTuple

from IPython.core.error import UsageError

from ..errors import AwaitingInput, NonDeterminismError, RunBusyError
from ..journal import codec
from ..journal.digest import digests_as_before
from ..journal.history import FreshHead
from ..journal.records import RunRecord, RunStatus, Status
from ..journal.replay import Decision, decide
from ..journal.store import Store
from ..journal.timetravel import DryRunReport, DryStep, dry_run
from ..runners.isolation import isolated_together
from .cell import source_fingerprint
from .cell_inputs import input_digest, input_tokens, select_inputs
from .perform import ParsedCell
from .perform import run_body as perform_run_body
from .runids import belongs_to, cell_call_id, cell_run_base, keep_attempt, latest_attempt, new_attempt
from .unfinished import refusal, unfinished_run

_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks", "": "days"}


def parse_age(text: str) -> timedelta:
    """``30d``, ``12h``, ``45m``, ``90s``, ``2w`` (a bare number is days) as a timedelta."""
    match = _AGE.match(text)
    if match is None:
        raise ValueError(f"cannot read {text!r} as an age; write a number and a unit: 30d, 12h, 45m, 90s, 2w")
    try:
        return timedelta(**{_UNITS[match.group(2)]: float(match.group(1))})
    except OverflowError:
        raise ValueError(f"{text!r} is longer than any journal is old; e.g. 3650d is ten years") from None


# -- fork ------------------------------------------------------------------------------------


def unrun_fork(store: Store, run: RunRecord) -> bool:
    """A cell fork nothing has run yet: call 0 PENDING, opened only to be built (``adopt_fork``'s test too)."""
    if run.parent_run_id is None or run.attempts > 1:
        return False
    first = store.call(run.run_id, 0)
    return first is not None and first.status is Status.PENDING


def cell_source_run(store: Store, name: str, run_id: str | None = None) -> RunRecord:
    """The run a cell fork starts from: ``run_id`` (one of the cell's), else the cell's latest run that ran.

    A fork not run yet is passed over: it holds a prefix of its parent, and the
    user forking again means the run they saw run, whose calls the journal shows.
    """
    if run_id is not None:
        run = store.run(run_id)
        if run is None or not belongs_to(run_id, name):
            raise ValueError(f"run {run_id!r} is not a run of cell {name!r}; %durable_journal {name} lists them")
        return run
    runs = store.runs_with_prefix(f"cell:{name}:")  # not --map records (cell:NAME/...): no cell to fork
    if not runs:
        raise ValueError(f"no record of cell {name!r} in {store!r}: run the cell first, then fork it")
    ran = [r for r in runs if not unrun_fork(store, r)] or runs
    return max(ran, key=lambda r: (r.updated_at, r.created_at))


def fork_cell(store: Store, name: str, at: int, run_id: str | None = None) -> tuple[str, RunRecord]:
    """Fork cell ``name``'s latest run (or ``run_id``) so its next run continues from call ``at``.

    Returns the new run id and the run whose calls it keeps. ``at`` counts as the journal shows
    it: call 0 is the cell, so ``at=1`` keeps none of its inner calls and ``at=3``
    keeps calls 1 and 2. Refused (``ValueError``, nothing written): ``at`` outside
    ``1..number of calls``, or a PENDING call among the kept ones.
    """
    source = cell_source_run(store, name, run_id)
    calls = store.calls(source.run_id)
    if not calls or calls[0].call_id != cell_call_id(name):
        raise ValueError(f"run {source.run_id!r} is not a plain %%durable {name} cell run (a --map record?); "
                         f"fork it with store.fork({source.run_id!r}, at=...) and run the action on the fork")
    if not 1 <= at <= len(calls):
        # A cell without durable calls inside said "--at 1 keeps none of its calls, --at 1 keeps them all".
        where = (f"--at 1 keeps none of its calls, --at {len(calls)} keeps them all" if len(calls) > 1 else
                 "it made no durable calls inside, so --at 1, which runs the whole cell again, is the only one")
        raise ValueError(f"--at {at} is outside 1..{len(calls)} for run {source.run_id!r} (call 0 is the cell "
                         f"itself; {where})")
    if store.run_is_open(source.run_id):  # its PENDING call K is not a crash's: it may be running right now
        # Not always another kernel: this one holds it while a `with runner.context(...)` on it is left open.
        raise ValueError(
            f"run {source.run_id!r} is running now (a live context holds it: the cell running in another kernel, "
            f"or in this one from a thread, or a `with runner.context({source.run_id!r})` left open here); call "
            f"{at} and later may still be executing there, and the fork would run them again. Let it finish "
            f"(close that context, or stop that kernel), then fork.")
    kept = calls[1:at]
    for rec in kept:
        if rec.status is Status.PENDING:
            raise ValueError(
                f"call {rec.index} ({rec.call_id}) of run {source.run_id!r} is PENDING: copying it would let two "
                f"runs recover the same side effect. Fork at --at {rec.index}, or settle it first "
                f"(run the cell again, or ReconcilePanel).")
    base = source.run_id.split("#", 1)[0]
    new_id = new_attempt(store, base)
    keep_attempt(store, base, new_id)  # before the fork is made: a fork is never a pruned attempt's id
    parent = source
    if unrun_fork(store, source):  # its kept calls are its parent's: the lineage names the run that made them
        parent = store.run(source.parent_run_id) or source  # type: ignore[arg-type]
    # One transaction (call 0 open, the kept calls, the lineage): a kernel killed while forking
    # leaves no half fork, whose next run would execute again calls the fork was to replay.
    store.fork_reopened(source.run_id, at, new_id, FreshHead(cell_call_id(name), calls[0].args_digest, parent.run_id))
    return new_id, parent


def superseded_forks(store: Store, name: str, new_id: str, pending: str | None) -> list[str]:
    """Forks of cell ``name`` that can no longer run once ``new_id`` exists: the cell's pending fork
    (``pending``, replaced) and earlier unrun forks of the same cell version (the next run reopens the
    latest attempt, ``new_id``). Left, each would stay RUNNING with call 0 PENDING, a recovery nobody needs.
    """
    base = new_id.split("#", 1)[0]
    # The version's attempts by their prefix (an index range), and the pending fork by its id: not every run.
    candidates = [r for r in store.runs_with_prefix(base) if r.run_id.split("#", 1)[0] == base]
    if pending is not None and all(r.run_id != pending for r in candidates) \
            and (held := store.run(pending)) is not None:
        candidates.append(held)
    return [run.run_id for run in sorted(candidates, key=lambda r: r.created_at)
            if run.run_id != new_id and belongs_to(run.run_id, name) and unrun_fork(store, run)]


def adopt_fork(store: Store, name: str, fork_id: str, args_digest: str) -> str | None:
    """Move a pending cell fork to the cell's current version; the run id the cell will reopen.

    Nothing to do (returns ``fork_id``) when the fork already is the current
    version's latest run. Returns None when the fork is gone or has run already
    (it is no longer just a prefix): the cell then runs as usual. :class:`RunBusyError`,
    nothing left written, when a live context holds the fork (another kernel running the
    unedited cell reopens it): the copy and the fork would both go on from the fork
    point, executing its calls twice.
    """
    base = cell_run_base(name, args_digest)
    latest = latest_attempt(store, base)
    if latest == fork_id:
        return fork_id
    calls = store.calls(fork_id)
    run = store.run(fork_id)
    if run is None or not unrun_fork(store, run):
        return None
    if store.run_is_open(fork_id):
        raise _fork_busy(name, fork_id)
    target = new_attempt(store, base)
    keep_attempt(store, base, target)
    head = FreshHead(cell_call_id(name), args_digest, run.parent_run_id, run.forked_at)
    store.fork_reopened(fork_id, len(calls), target, head)  # whole or not at all, as in fork_cell
    try:
        store.delete_run(fork_id)  # killed before this: an unrun fork of the old version, reopened only by it
    except RunBusyError:  # opened since the check above: one of the two may go on, the one already running
        store.delete_run(target)
        raise _fork_busy(name, fork_id) from None
    return target


def _fork_busy(name: str, fork_id: str) -> RunBusyError:
    return RunBusyError(fork_id, "a live context", (
        f"%%durable {name}: the fork {fork_id!r} of this cell is running now (the unedited cell in another "
        f"kernel, or a `with runner.context({fork_id!r})` left open here); moving it to the edited cell would "
        f"let both go on from the fork point and execute its calls twice. Nothing was run or written: run this "
        f"cell again once that run has finished (it then continues from the fork if that run did not)."))


# -- dry replay ---------------------------------------------------------------------------------


_FAILED_REPLAY = "the cell's record is FAILED: it replays as a whole, raising the recorded error again; nothing runs"


def dry_cell(
    store: Store, name: str, args_digest: str, run_id: str | None, run_body: Callable[[dict[str, Any]], Any],
    namespace: dict[str, Any], has_reconciler: bool, *, same_version: bool = True, inputs: tuple[str, ...] = (),
    strict: bool = False,
) -> DryRunReport:
    """What running cell ``name`` now would do with run ``run_id``, with nothing executed and nothing written.

    ``run_id`` is the run the cell would reopen (None: no record at all); with
    ``same_version=False`` it is a run of another version of the cell (or a pending
    fork), and only the calls inside the body are compared. ``run_body(ns)`` runs
    the cell's statements in ``ns`` (a copy of ``namespace``, the cell's ``inputs`` copied too: changed in
    place, ``orders.append(...)``, they would make the real run after it a new run that executes again).
    ``strict``: report what a ``--strict`` run refuses, as a strict runner's ``dry_run`` does.
    """
    call_id = cell_call_id(name)
    recorded = store.call(run_id, 0) if run_id is not None else None
    if recorded is None:
        step = DryStep(0, Decision.EXECUTE, call_id, args_digest, None)
        return DryRunReport(run_id or cell_run_base(name, args_digest), 0, Decision.EXECUTE, None, call_id,
                            args_digest, step.rule + " (no record of this cell)", 0, steps=(step,))
    assert run_id is not None
    decision = decide(recorded, call_id, recorded.args_digest, has_reconciler) if same_version else None
    if decision is Decision.REPLAY:
        step = DryStep(0, Decision.REPLAY, call_id, recorded.args_digest, recorded)
        failed = recorded.status is Status.FAILED  # a run raises the recorded error again: said, as dry_run does
        return DryRunReport(run_id, None, None, None, None, None, _FAILED_REPLAY if failed else
                            "the cell's record is finished: it replays as a whole (names, outputs); nothing runs",
                            1, result_preview=recorded.result_preview, steps=(step,),
                            error=(recorded.error_preview or "the recorded error") if failed else None)
    if decision is Decision.RECONCILE:
        step = DryStep(0, Decision.RECONCILE, call_id, recorded.args_digest, recorded)
        return DryRunReport(run_id, 0, Decision.RECONCILE, recorded, call_id, recorded.args_digest, step.rule, 0,
                            steps=(step,))

    shared: list[str] = []

    def body(ctx: Any) -> Any:
        ctx.journal.cursor = 1  # call 0 is the cell itself: its body runs again; check the calls inside it
        shared.clear()
        ns = {**namespace, **isolated_together({n: namespace[n] for n in inputs if n in namespace}, shared)}
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            return run_body(ns)

    report = dry_run(store, run_id, body, strict=strict)
    if shared:  # what the body did to these (next(gen), fh.read()) the notebook's own objects kept
        print(f"--dry: {', '.join(shared)} cannot be copied, so the dry body used the notebook's own "
              f"object{'s' if len(shared) > 1 else ''}: what it consumed or changed there (next(gen), "
              "fh.read()) stays changed, and the real run sees it.")
    return report


def dry_target(store: Store, name: str, args_digest: str, pending_fork: str | None) -> tuple[str | None, bool]:
    """The run a ``--dry`` cell is compared with, and whether it is a run of the cell's current version.

    The pending fork if there is one; else the latest run of this version; else the
    cell's latest plain run of another version (what ``%durable_fork`` would start from).
    """
    latest = latest_attempt(store, cell_run_base(name, args_digest))
    if pending_fork is not None and store.run(pending_fork) is not None:
        return pending_fork, latest == pending_fork
    if latest is not None:
        return latest, True
    try:
        return cell_source_run(store, name).run_id, False
    except ValueError:
        return None, False


def fork_hint(name: str, report: DryRunReport, same_version: bool) -> str | None:
    """The line telling how to keep what replays when the report is about another version of the cell."""
    if same_version:
        return None
    at = report.stopped_at if report.stopped_at is not None else 1 + report.replayed
    head = (f"durable: compared with run {report.run_id!r} of cell {name!r} (no record of this version: a run "
            f"now would start a new run and execute every call)")
    if at < 2:
        return head
    return f"{head}; to keep calls 1..{at - 1} of that run: %durable_fork {name} --at {at}"


# -- a cell body stopped by the journal, not failed ------------------------------------------------


class _CellStopped(BaseException):
    """Carries an exception out of ``Journal.perform`` for call 0 without journaling it as the cell's failure."""

    def __init__(self, exc: Exception) -> None:
        super().__init__(exc)
        self.exc = exc


def stoppable(body: Callable[[], Any]) -> Callable[[], Any]:
    """The cell body, with the journal's own stops passed through instead of recorded as the cell's outcome.

    A body stopped by an unanswered ``durable_input`` (:class:`AwaitingInput`) or by
    strict mode (:class:`NonDeterminismError`) did not fail: recording that as call
    0's outcome would make every later run of the cell replay the stop. Call 0
    stays PENDING instead, as after a crash, so the next run of the cell runs the
    body again and its calls replay up to the answer (or the fixed call).
    """

    def run() -> Any:
        __tracebackhide__ = True
        try:
            return body()
        except (AwaitingInput, NonDeterminismError) as exc:
            raise _CellStopped(exc) from None

    return run


@contextlib.contextmanager
def unwrap_stopped() -> Iterator[None]:
    """Inside ``open_run``: re-raise the original stop, so the run closes WAITING (input) or FAILED (strict)."""
    __tracebackhide__ = True
    try:
        yield
    except _CellStopped as stopped:
        raise stopped.exc from None


# -- what the magics call (parsed arguments in, printed lines out) --------------------------------


class CellInputs(NamedTuple):
    """What :func:`cell_inputs` finds: the values the cell reads, their digest (with its code's), each value's
    token, and the names of those holding an instance of the user's class (:func:`recorded_digest`)."""

    values: dict[str, Any]
    digest: str
    tokens: dict[str, Any]
    by_state: frozenset[str]


def cell_inputs(shell: Any, cell: ParsedCell) -> CellInputs:
    """The notebook values the cell reads, the digest of its code and those values (its args digest), and
    each value's token (:func:`~.cell_inputs.input_tokens`, to tell afterwards which changed in place)."""
    inputs = select_inputs(cell.analysis.reads, shell.user_ns, shell.user_ns_hidden, cell.analysis.star_imports)
    by_state: set[str] = set()
    tokens = input_tokens(inputs, user_module(shell), by_state)
    return CellInputs(inputs, input_digest(source_fingerprint(cell.tree), inputs, tokens=tokens), tokens,
                      frozenset(by_state))


def recorded_digest(store: Store, shell: Any, cell: ParsedCell, found: CellInputs) -> str:
    """The digest the cell's record is under: its inputs' digest, or the one an earlier durable_nb gave them.

    Why: a cell reading an instance of the user's class (``cust = Customer(...)`` from a helpers module)
    was recorded under the digest its pickle gave (:func:`~durable_nb.journal.digest.digests_as_before`);
    found only there, it replays (or recovers) instead of running its side effects once more after the upgrade.
    Only the inputs holding such an instance are digested again: every other one (a large frame) gives the
    same token, and digesting it twice made every new version of the cell cost twice its digest.
    """
    args_digest = found.digest
    if not found.by_state or latest_attempt(store, cell_run_base(cell.name, args_digest)) is not None:
        return args_digest
    with digests_as_before():
        again = input_tokens({name: found.values[name] for name in found.by_state}, user_module(shell))
    earlier = input_digest(source_fingerprint(cell.tree), found.values, tokens={**found.tokens, **again})
    if earlier != args_digest and latest_attempt(store, cell_run_base(cell.name, earlier)) is not None:
        return earlier
    return args_digest


def user_module(shell: Any) -> str:
    """The name of the module the notebook's functions and classes say they come from."""
    return getattr(shell.user_module, "__name__", "__main__")


def cell_inputs_digest(shell: Any, cell: ParsedCell) -> str:
    """The cell's input digest (:func:`cell_inputs`)."""
    return cell_inputs(shell, cell).digest


def run_dry(
    shell: Any, cell: ParsedCell, store: Store, has_reconciler: bool, pending_fork: str | None, *, strict: bool = False
) -> DryRunReport:
    """``%%durable NAME --dry``: the report (the cell's result); a hint line when comparing with another version.

    ``--dry --strict`` reports what a ``--strict`` run would refuse (it was refused as a combination, so a
    strict cell could not be checked before its run raised). Against a run of another version strict mode
    changes nothing: a run now starts a new run of its own.
    """
    name = cell.name
    read = cell_inputs(shell, cell)
    inputs, args_digest = read.values, recorded_digest(store, shell, cell, read)
    run_id, same = dry_target(store, name, args_digest, pending_fork)
    filename = f"<durable cell {name} (dry)>"
    report = dry_cell(store, name, args_digest, run_id,
                      lambda ns: perform_run_body(cell.tree, filename, ns)[1], dict(shell.user_ns), has_reconciler,
                      same_version=same, inputs=tuple(inputs), strict=strict and (same or run_id == pending_fork))
    if not same and run_id != pending_fork and report.stopped_at is None and report.error is None:
        # Every call of the other version's run matched; this version still has no run of its own,
        # so a run now executes the cell: say where a fork of that run would go on executing.
        at = 1 + report.replayed
        report = dataclasses.replace(
            report, stopped_at=at, decision=Decision.EXECUTE, call_id=cell_call_id(name), args_digest=args_digest,
            rule=(f"no record of this version: a run now starts a new run and executes the cell; after "
                  f"%durable_fork {name} --at {at}, calls 1..{at - 1} of run {report.run_id!r} replay and the "
                  f"body runs on from there"),
        )
    elif not same and run_id != pending_fork and report.error is None and report.decision is not None:
        # The comparison stopped early; its rule is about that run ("would be discarded"), which a run now
        # leaves alone: say what a run does, then what the comparison found.
        stop = report.stopped_at
        report = dataclasses.replace(report, rule=(
            f"no record of this version: a run now starts a new run and executes the cell (run "
            f"{report.run_id!r} is left as it is); compared with that run, "
            + (f"calls 1..{stop - 1} would replay and " if stop and stop > 1 else "")
            + f"call {stop} would not ({report.decision.value}: {report.rule})"))
    hint = None if run_id == pending_fork else fork_hint(name, report, same)
    if hint:
        print(hint)
    if not same and run_id != pending_fork:  # what the run after this dry one meets first
        found = unfinished_run(store, name, cell_run_base(name, args_digest))
        if found is not None:
            print("durable: a run of this version now is refused:\n" + refusal(name, *found))
    return report


def run_fork(store: Store, name: str, at: int, run_id: str | None, forks: dict[str, str]) -> str:
    """``%durable_fork NAME --at K``: fork, remember the fork for the cell, say what happens next."""
    try:
        new_id, source = fork_cell(store, name, at, run_id)
    except ValueError as exc:
        raise UsageError(f"%durable_fork {name} --at {at}: {exc}") from None
    replaced = superseded_forks(store, name, new_id, forks.get(name))
    for old in replaced:
        store.delete_run(old)
    forks[name] = new_id
    kept = "none of its calls" if at == 1 else f"calls 1..{at - 1}"
    then = "executes its calls from call 1 on" if at == 1 else f"replays them and executes from call {at} on"
    print(f"durable: forked cell {name!r}: run {new_id!r} keeps {kept} of {source.run_id!r}; the next run of "
          f"the cell {then}"
          + "".join(f"\n  replaces fork {old!r}, which never ran (removed)" for old in replaced))
    return new_id


PRUNE_LISTED = 20
"""Runs ``%durable_prune`` names one per line; it counts the rest."""


def run_prune(store: Store, args: Any) -> list[RunRecord]:
    """``%durable_prune ...``: ``store.prune`` with the parsed options; prints what went (or would go)."""
    if args.older_than is None and args.keep_last is None and args.status is None:
        raise UsageError("%durable_prune: give at least one of --older-than AGE, --keep-last N, --status S "
                         "(e.g. %durable_prune --older-than 30d --dry-run); with none it would remove every run")
    statuses = None if args.status is None else [s.strip().upper() for s in args.status.split(",")]
    if statuses is not None and not all(statuses):  # "--status=" is no filter: it would remove every finished run
        raise UsageError(f"%durable_prune --status {args.status!r}: name one or more statuses, comma-separated "
                         f"({', '.join(s.value for s in RunStatus)}), e.g. --status COMPLETED,FAILED")
    if statuses is not None and set(statuses) <= {"RUNNING", "WAITING"} and not args.include_pending:
        # store.prune keeps such runs without include_pending, as the contract says: "removed 0 runs" hid why
        raise UsageError(f"%durable_prune --status {args.status}: RUNNING and WAITING runs stay unless you add "
                         f"--include-pending (nothing would recover them once removed)")
    try:
        older = parse_age(args.older_than) if args.older_than is not None else None
        status: Any = statuses if statuses is None or len(statuses) > 1 else statuses[0]  # prune takes several too
        removed = store.prune(older_than=older, keep_last=args.keep_last, status=status,
                              include_pending=args.include_pending, dry_run=args.dry_run)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"%durable_prune: {exc}") from None
    verb = "would remove" if args.dry_run else "removed"
    # Listed up to PRUNE_LISTED: a prune of a map's 100,000 runs printed 100,000 lines into the notebook.
    more = len(removed) - PRUNE_LISTED
    print(f"durable: {verb} {len(removed)} run{'' if len(removed) == 1 else 's'}"
          + "".join(f"\n  {codec.shown(r.run_id)}  {r.status.value}" for r in removed[:PRUNE_LISTED])  # ids are data
          + (f"\n  ... and {more} more (the list this magic returns holds every one)" if more > 0 else ""))
    return removed
