"""``%%durable`` and its line magics: a notebook cell as one durable call.

A cell ``%%durable NAME`` becomes run ``cell:NAME:<digest16>``, where the digest
covers the cell's code and the values of the names it reads. Call 0 of that run
(call id ``cell:NAME``) is the cell itself: PENDING while the body runs, then
SUCCEEDED with the names the cell bound and its ordered outputs, or FAILED with
its exception. The ``durable_execute`` calls the body makes land after it
(indices 1, 2, ...), so recovering a cell that died mid-way re-executes the body
and those calls replay or reconcile by the usual rules.

Every decision goes through :mod:`durable_nb._replay` (``decide``/``replay`` to
look before opening a run, ``Journal.begin`` and ``Journal.perform`` to perform). A cell
whose record is terminal is answered from a read of the journal alone: no lease,
no write, the body does not run.

``--rerun`` does not overwrite history: it opens ``cell:NAME:<digest16>#2``
(then ``#3`` ...), and later replays use the newest of them.

``--runner flink`` (without ``--map``) keeps all of the above and moves only the
body: the kernel looks at the journal exactly as for a local cell (a terminal
record replays without starting Flink), and otherwise ships the cell's source and
the values it reads (:class:`CellRun`) to ``FlinkRunner.run`` under the same run
id. The worker opens the run, journals call 0 through the same ``Journal``, runs
the body with ``dnb.current_context()`` bound to the run and returns the outcome
it journaled; the kernel restores names, shows outputs and the result from that
outcome, the same code that replays a record. The kernel never opens the run
itself, so it never competes with the worker for the run's lease.
"""

from __future__ import annotations

import argparse
import ast
import builtins
import contextlib
import datetime as _dt
import linecache
import traceback
import types
import warnings
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from IPython.core import magic_arguments
from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class, no_var_expand

from ..errors import UnpicklableOutputWarning
from ..journal.callid import durable as _durable_name
from ..journal.context import open_run
from ..journal.records import CallRecord
from ..journal.replay import Decision, Step, check_reconciler, decide, replay
from ..journal.store import Store
from ..stores import default_store, open_store
from .cell import (
    CellAnalysis,
    OutputRecorder,
    RecordedResult,
    analyze,
    input_digest,
    pack_namespace,
    pack_value,
    replay_outputs,
    select_inputs,
    source_fingerprint,
    split_last_expression,
    unpack_namespace,
)

if TYPE_CHECKING:
    import pandas as pd
    from IPython.core.interactiveshell import InteractiveShell

OUTCOME_FORMAT = 1
FLINK_HINT = "pip install 'durable_nb[flink]'"
_MAP_RESERVED = ("record", "ctx")
#: Attribute of an exception raised by a cell in a Flink worker: what the cell printed before it.
WORKER_OUTPUTS = "_durable_nb_outputs"


def cell_call_id(name: str) -> str:
    """Call id of the cell's own journal entry (index 0 of its run)."""
    return f"cell:{name}"


def cell_run_base(name: str, digest: str) -> str:
    return f"cell:{name}:{digest[:16]}"


def _strip_quotes(text: str) -> str:
    """Magic lines are split non-POSIX, so ``--reconciler "lambda: f()"`` keeps its quotes."""
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def _utc(ts: float | None) -> str:
    if ts is None:
        return "at an unknown time"
    return _dt.datetime.fromtimestamp(ts, _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S UTC")


class CellAction:
    """A ``%%durable --map`` cell as an action ``action(record, ctx)``.

    Holds the cell's source and the notebook values it reads (not code objects),
    so it cloudpickles to Flink workers; each call executes the cell in a fresh
    namespace with ``record`` and ``ctx`` bound. Its result is the value of the
    cell's last expression, else a dict of the names the cell assigned.
    """

    def __init__(self, name: str, source: str, env: dict[str, Any], binds: tuple[str, ...]) -> None:
        self.name = name
        self.source = source
        self.env = env
        self.binds = binds

    def __repr__(self) -> str:
        return f"<CellAction cell:{self.name}>"

    def __call__(self, record: Any, ctx: Any) -> Any:
        __tracebackhide__ = True  # IPython leaves this frame out of tracebacks
        filename = f"<durable cell {self.name}>"
        body, last = split_last_expression(ast.parse(self.source))
        ns: dict[str, Any] = {"__builtins__": builtins, "__name__": "__main__", **self.env}
        ns["record"] = record
        ns["ctx"] = ctx
        exec(compile(body, filename, "exec"), ns)
        if last is not None:
            return eval(compile(last, filename, "eval"), ns)
        return {
            n: ns[n] for n in self.binds
            if n in ns and n not in _MAP_RESERVED and not isinstance(ns[n], types.ModuleType)
        }


class CellRun:
    """A plain ``%%durable NAME --runner flink`` cell as the one-record action ``action(None, ctx)``.

    Built in the kernel, cloudpickled with the cell's source and the notebook
    values it reads, called in a Flink worker inside the cell's run (which
    ``FlinkRunner.run`` opens there). It does in the worker what
    ``DurableMagics._run_cell`` does in the kernel: call 0 (``cell:NAME``) goes
    through ``Journal.begin`` and ``Journal.perform``, so the body's
    ``durable_execute`` calls (1, 2, ...) replay or reconcile by the usual rules.
    It returns ``(decision, outcome)``: the decision taken for call 0 (None if the
    record was already terminal) and the outcome dict that was journaled.
    Only stdout and stderr are recorded there: a worker has no display
    publisher, so ``display(obj)`` prints ``repr(obj)`` and rich MIME output is lost.
    """

    def __init__(
        self,
        name: str,
        source: str,
        env: dict[str, Any],
        analysis: CellAnalysis,
        args_digest: str,
        quiet: bool,
        reconciler: Callable[[], Any] | None = None,
    ) -> None:
        self.name = name
        self.source = source
        self.env = env
        self.binds = analysis.binds
        self.deletes = analysis.deletes
        self.args_digest = args_digest
        self.quiet = quiet
        self.reconciler = reconciler

    def __repr__(self) -> str:
        return f"<CellRun cell:{self.name}>"

    def __call__(self, _value: Any, ctx: Any) -> tuple[Decision | None, dict[str, Any] | None]:
        journal = ctx.journal
        step = journal.begin(cell_call_id(self.name), self.args_digest, self.reconciler is not None)
        if not isinstance(step, Step):  # finished by another attempt since the kernel looked
            journal.keep_rest()
            return None, None
        if step.decision is Decision.RECONCILE:
            journal.keep_rest()
            reconciler = self.reconciler
            assert reconciler is not None
            return step.decision, journal.perform(step, lambda: _reconciled(self.name, reconciler())[0])
        return step.decision, journal.perform(step, self._execute)

    def _execute(self) -> dict[str, Any]:
        """Run the body in a fresh namespace, recording what it prints; the outcome ``_run_cell`` journals."""
        filename = f"<durable cell {self.name}>"
        linecache.cache[filename] = (len(self.source), None, self.source.splitlines(True), filename)
        body, last = split_last_expression(ast.parse(self.source))
        ns: dict[str, Any] = {"__builtins__": builtins, "__name__": "__main__", **self.env}
        recorder = OutputRecorder(None)
        result = None
        try:
            with recorder.streams():
                exec(compile(body, filename, "exec"), ns)
                if last is not None:
                    result = eval(compile(last, filename, "eval"), ns)
        except Exception as exc:
            _attach_worker_details(exc, recorder.outputs, filename)
            raise
        packed = pack_namespace(self.binds, ns)
        return {
            "format": OUTCOME_FORMAT,
            "values": packed.values,
            "modules": packed.modules,
            "skipped": packed.skipped,
            "deletes": [n for n in self.deletes if n not in ns],
            "outputs": recorder.outputs,
            "result": None if self.quiet else _pack_result(
                last, result, packed.values, packed.skipped, lambda r: ({"text/plain": repr(r)}, {})
            ),
        }


def _attach_worker_details(exc: Exception, outputs: list[Any], filename: str) -> None:
    """Keep what a failing cell printed, and where in the cell it failed, on the exception itself.

    Both travel with the pickled exception to the kernel (and into the FAILED
    record): the kernel shows the outputs, and the traceback from the worker
    (which pickling drops) is added as a note.
    """
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename != filename:
        tb = tb.tb_next
    lines = traceback.format_tb(tb) if tb is not None else []
    with contextlib.suppress(Exception):
        setattr(exc, WORKER_OUTPUTS, list(outputs))
        exc.add_note("Raised in the Flink worker running the cell:\n" + "".join(lines).rstrip())


def _pack_result(
    last: ast.Expression | None,
    result: Any,
    values: Mapping[str, bytes],
    skipped: dict[str, str],
    fmt: Callable[[Any], tuple[dict[str, Any], dict[str, Any]]],
) -> tuple[Any, ...] | None:
    """How a cell's result is journaled; ``fmt`` renders one that cannot be pickled."""
    if last is None or result is None:
        return None
    if isinstance(last.body, ast.Name) and last.body.id in values:
        return ("name", last.body.id)  # do not journal a big value twice
    try:
        return pack_value(result)
    except Exception as exc:
        skipped["the cell's result"] = f"{type(result).__name__}: {type(exc).__name__}"
        data, metadata = fmt(result)
        return ("recorded", data, metadata)


def _reconciled(name: str, values: Any) -> tuple[dict[str, Any], Mapping[str, Any]]:
    """The outcome a ``--reconciler`` result is journaled as, and the values themselves."""
    if not isinstance(values, Mapping) or not all(isinstance(k, str) and k.isidentifier() for k in values):
        raise TypeError(
            f"%%durable {name} --reconciler must return the cell's outputs as a dict "
            f"{{variable name: value}}, got {type(values).__name__}"
        )
    packed = pack_namespace(list(values), values)
    return {
        "format": OUTCOME_FORMAT, "values": packed.values, "modules": packed.modules,
        "skipped": packed.skipped, "deletes": [], "outputs": [], "result": None,
    }, values


@magics_class
class DurableMagics(Magics):
    """``%%durable``, ``%durable_journal``, ``%durable_forget``, ``%durable_store``.

    State is the notebook's store; the journal itself holds everything else, so
    a restarted kernel that loads the extension again sees all earlier cells.
    """

    def __init__(self, shell: InteractiveShell | None = None) -> None:
        super().__init__(shell)
        self._store: Store | None = None
        self._opened: dict[str, Store] = {}

    # -- stores ---------------------------------------------------------------------

    @property
    def store(self) -> Store:
        """The notebook's store: ``%durable_store URL``, else ``.durable/journal.db`` under the cwd."""
        if self._store is None:
            self._store = default_store()
        return self._store

    @store.setter
    def store(self, store: Store) -> None:
        self._store = store

    def _open(self, url: str) -> Store:
        url = _strip_quotes(url)
        store = self._opened.get(url)
        if store is None:
            try:
                store = open_store(url)
            except (ValueError, TypeError, OSError) as exc:
                raise UsageError(f"%durable: cannot open store {url!r}: {exc}") from None
            self._opened[url] = store
        return store

    # -- %%durable ------------------------------------------------------------------

    @magic_arguments.magic_arguments()
    @magic_arguments.argument("name", help="the cell's durable name, an identifier: %%%%durable charge")
    @magic_arguments.argument(
        "--reconciler", metavar="EXPR",
        help="expression giving a zero-argument callable that returns the cell's outputs as a dict "
        "{name: value}; it replaces the body when an earlier attempt died mid-way",
    )
    @magic_arguments.argument("--store", metavar="URL", help="journal for this cell (default: the notebook's store)")
    @magic_arguments.argument(
        "--runner", choices=("local", "flink"), default="local",
        help="where the cell runs: in this kernel (local), or as a PyFlink job (flink: one run on one "
        "worker, or with --map one run per record). flink needs a SQLite store the workers can reach; the "
        "cell's names, printed output and result come back to the notebook when the job ends",
    )
    @magic_arguments.argument(
        "--rerun", action="store_true",
        help="execute in a new run even if a record exists (its durable calls execute again too); "
        "the old record stays in the journal",
    )
    @magic_arguments.argument(
        "--map", metavar="VAR", dest="map_var",
        help="run the cell once per record of the DataFrame or list VAR, with `record` and `ctx` bound",
    )
    @magic_arguments.argument("--key", metavar="COL", help="with --map: the field that keys each record's run")
    @no_var_expand
    @cell_magic
    def durable(self, line: str, cell: str) -> Any:
        """Make this cell a durable call: run it once, replay it after a restart.

        A cell whose inputs (the values of the names it reads, and its code) are
        unchanged and whose record is finished is not executed again: its
        variables are restored and its output is shown again. A cell that died
        mid-way runs again with ``dnb.current_context()`` bound to its run, so its
        ``ctx.durable_execute`` calls replay or reconcile.
        """
        __tracebackhide__ = True
        args = magic_arguments.parse_argstring(self.durable, line)
        name: str = args.name
        if not name.isidentifier():
            raise UsageError(
                f"%%durable: NAME must be an identifier, got {name!r}. Example: %%durable charge_card"
            )
        self._check_combination(args)
        reconciler = self._reconciler(args.reconciler) if args.reconciler else None
        store = self._open(args.store) if args.store else self.store
        source = self.shell.transform_cell(cell)  # type: ignore[union-attr]
        tree = ast.parse(source)
        analysis = analyze(tree)
        if args.map_var:
            return self._run_map(name, args, source, analysis, store)
        return self._run_cell(name, source, tree, analysis, store, reconciler, rerun=args.rerun,
                              runner=args.runner)

    def _check_combination(self, args: argparse.Namespace) -> None:
        if args.map_var is None:
            if args.key is not None:
                raise UsageError("%%durable: --key only makes sense with --map VAR. Example: "
                                 "%%durable enrich --map orders --key id")
            return
        if not args.map_var.isidentifier():
            raise UsageError(f"%%durable: --map takes a variable name, got {args.map_var!r}. "
                             f"Example: %%durable enrich --map orders")
        for flag, value in (("--reconciler", args.reconciler), ("--rerun", args.rerun)):
            if value:
                raise UsageError(f"%%durable: {flag} cannot be combined with --map (each record is its own run; "
                                 f"pass reconciler= to ctx.durable_execute inside the cell instead).")

    def _reconciler(self, expr: str) -> Callable[[], Any]:
        expr = _strip_quotes(expr)
        try:
            value = self.shell.ev(expr)  # type: ignore[union-attr]
        except Exception as exc:
            raise UsageError(
                f"%%durable: --reconciler {expr!r} could not be evaluated ({type(exc).__name__}: {exc}). "
                f"Give a zero-argument callable from the notebook, e.g. --reconciler \"lambda: lookup(42)\"."
            ) from None
        try:
            check_reconciler(value)
        except TypeError as exc:
            raise UsageError(f"%%durable: --reconciler {expr!r}: {exc}") from None
        return value  # type: ignore[no-any-return]

    # -- one cell, one durable call -------------------------------------------------------

    def _run_cell(
        self,
        name: str,
        source: str,
        tree: ast.Module,
        analysis: CellAnalysis,
        store: Store,
        reconciler: Callable[[], Any] | None,
        *,
        rerun: bool,
        runner: str = "local",
    ) -> Any:
        __tracebackhide__ = True
        shell = self.shell
        assert shell is not None
        inputs = select_inputs(analysis.reads, shell.user_ns, shell.user_ns_hidden)
        user_module = getattr(shell.user_module, "__name__", "__main__")
        args_digest = input_digest(source_fingerprint(tree), inputs, user_module)
        call_id = cell_call_id(name)
        latest, following = _attempts(store, cell_run_base(name, args_digest))

        if latest is not None and not rerun:
            calls = store.calls(latest)
            recorded = calls[0] if calls else None
            if decide(recorded, call_id, args_digest, reconciler is not None) is Decision.REPLAY:
                assert recorded is not None
                return self._replay(name, recorded)
        run_id = following if (rerun and latest is not None) or latest is None else latest
        if runner == "flink":
            return self._run_on_flink(name, source, analysis, store, reconciler, inputs, args_digest, run_id)

        with open_run(store, run_id) as ctx:
            journal = ctx.journal
            step = journal.begin(call_id, args_digest, reconciler is not None)
            if isinstance(step, CallRecord):  # another kernel finished it since we looked
                journal.keep_rest()
                return self._replay(name, step)
            if step.decision is Decision.RECONCILE:
                journal.keep_rest()
            elif step.decision is Decision.REEXECUTE:
                # said before the body runs, so it is not part of the cell's recorded output
                print(f"↻ durable: recovering cell {name!r}: its last attempt did not finish; "
                      f"its durable calls replay or reconcile")
            quiet = False
            result = None
            if step.decision is Decision.RECONCILE:
                assert reconciler is not None
                outcome = journal.perform(step, lambda: self._reconcile(name, reconciler))
            else:
                quiet = bool(shell.displayhook.semicolon_at_end_of_expression(source))
                executed: list[Any] = []

                def body() -> Any:
                    cell_outcome, value = self._execute(name, source, tree, analysis, quiet)
                    executed.append(value)
                    return cell_outcome

                outcome = journal.perform(step, body)
                result = executed[0]
        _warn_skipped(name, outcome["skipped"])
        if step.decision is Decision.RECONCILE:
            _say_reconciled(name, outcome)
        return None if quiet else result

    def _run_on_flink(
        self,
        name: str,
        source: str,
        analysis: CellAnalysis,
        store: Store,
        reconciler: Callable[[], Any] | None,
        inputs: dict[str, Any],
        args_digest: str,
        run_id: str,
    ) -> Any:
        """Execute (or recover) the cell as a one-record job on FlinkRunner, then restore what it journaled.

        The run is opened by the worker only; the kernel reads the journal and
        restores the names, outputs and result from the outcome the worker returns.
        """
        __tracebackhide__ = True
        shell = self.shell
        assert shell is not None
        _check_shippable(name, inputs)
        quiet = bool(shell.displayhook.semicolon_at_end_of_expression(source))
        action = _durable_name(name=cell_call_id(name))(
            CellRun(name, source, inputs, analysis, args_digest, quiet, reconciler)
        )
        flink = _flink_runner(store, parallelism=1)
        try:
            decision, outcome = flink.run(action, None, run_id=run_id)
        except Exception as exc:
            replay_outputs(shell, getattr(exc, WORKER_OUTPUTS, None) or [])
            raise
        if decision is None or outcome is None:  # another kernel finished it meanwhile
            return self._replay(name, store.calls(run_id)[0])
        if decision is Decision.REEXECUTE:
            print(f"↻ durable: recovered cell {name!r} on Flink: its last attempt did not finish; "
                  f"its durable calls replayed or reconciled")
        _warn_skipped(name, outcome["skipped"], flink=True)
        result = self._restore(outcome, notice=None)
        if decision is Decision.RECONCILE:
            _say_reconciled(name, outcome)
        return None if quiet else result

    def _execute(
        self, name: str, source: str, tree: ast.Module, analysis: CellAnalysis, quiet: bool
    ) -> tuple[dict[str, Any], Any]:
        """Run the body in the notebook namespace while recording its outputs in order."""
        __tracebackhide__ = True
        shell = self.shell
        assert shell is not None
        filename = shell.compile.cache(source, shell.execution_count)  # tracebacks show the cell's lines
        body, last = split_last_expression(tree)
        glob, ns = shell.user_global_ns, shell.user_ns
        recorder = OutputRecorder(shell)
        result = None
        with recorder.recording():
            exec(shell.compile(body, filename, "exec"), glob, ns)
            if last is not None:
                result = eval(shell.compile(last, filename, "eval"), glob, ns)
        packed = pack_namespace(analysis.binds, ns)
        outcome: dict[str, Any] = {
            "format": OUTCOME_FORMAT,
            "values": packed.values,
            "modules": packed.modules,
            "skipped": packed.skipped,
            "deletes": [n for n in analysis.deletes if n not in ns],
            "outputs": recorder.outputs,
            "result": None if quiet else self._pack_result(last, result, packed.values, packed.skipped),
        }
        return outcome, result

    def _pack_result(
        self, last: ast.Expression | None, result: Any, values: Mapping[str, bytes], skipped: dict[str, str]
    ) -> tuple[Any, ...] | None:
        return _pack_result(last, result, values, skipped, self.shell.display_formatter.format)  # type: ignore[union-attr]

    def _reconcile(self, name: str, reconciler: Callable[[], Any]) -> dict[str, Any]:
        outcome, values = _reconciled(name, reconciler())
        self.shell.user_ns.update({k: v for k, v in values.items() if k not in outcome["skipped"]})  # type: ignore[union-attr]
        return outcome

    def _replay(self, name: str, recorded: CallRecord) -> Any:
        """Restore a finished cell from its record: variables, outputs in order, result or exception."""
        __tracebackhide__ = True
        shell = self.shell
        assert shell is not None
        notice = f"↺ durable: replayed cell {name!r} recorded {_utc(recorded.finished_at)} (use --rerun to execute)"
        try:
            outcome = replay(recorded)
        except Exception as exc:
            print(notice.replace("replayed cell", "replayed the failure of cell"))
            replay_outputs(shell, getattr(exc, WORKER_OUTPUTS, None) or [])  # a failure recorded on Flink
            raise
        return self._restore(outcome, notice=notice)

    def _restore(self, outcome: dict[str, Any], *, notice: str | None) -> Any:
        """Bring a journaled outcome into the notebook: names, deletions, outputs in order, the result.

        ``notice`` is the replay line; None when the outcome was just produced by a
        Flink worker (its unpicklable names were already warned about).
        """
        shell = self.shell
        assert shell is not None
        restored, failed = unpack_namespace(outcome["values"], outcome["modules"])
        shell.user_ns.update(restored)
        for gone in outcome["deletes"]:
            shell.user_ns.pop(gone, None)
        lost = {**outcome["skipped"], **failed} if notice is not None else failed
        if notice is not None:
            print(notice)
        if lost:
            print("  not restored: " + ", ".join(f"{n} ({why})" for n, why in lost.items()))
        replay_outputs(shell, outcome["outputs"])
        packed = outcome["result"]
        if packed is None:
            return None
        kind = packed[0]
        if kind == "name":
            return restored.get(packed[1])
        if kind == "recorded":
            return RecordedResult(packed[1], packed[2])
        restored_result, failed_result = unpack_namespace({"_": packed[1]} if kind == "pickle" else {},
                                                          {"_": packed[1]} if kind == "module" else {})
        if failed_result:
            print(f"  not restored: the cell's result ({failed_result['_']})")
        return restored_result.get("_")

    # -- %%durable --map ------------------------------------------------------------------

    def _run_map(
        self, name: str, args: argparse.Namespace, source: str, analysis: CellAnalysis, store: Store
    ) -> pd.DataFrame:
        shell = self.shell
        assert shell is not None
        if args.map_var not in shell.user_ns:
            raise UsageError(f"%%durable {name} --map {args.map_var}: no variable {args.map_var!r} in the "
                             f"notebook; define the DataFrame or list of records first.")
        records = shell.user_ns[args.map_var]
        reads = tuple(n for n in analysis.reads if n not in _MAP_RESERVED)
        env = select_inputs(reads, shell.user_ns, shell.user_ns_hidden)
        action = _durable_name(name=cell_call_id(name))(CellAction(name, source, env, analysis.binds))
        if args.runner == "flink":
            runner: Any = _flink_runner(store)
        else:
            from ..runners.local import LocalRunner

            runner = LocalRunner(store)
        frame = runner.map(action, records, key=args.key)
        shell.user_ns[name] = frame
        return frame

    # -- line magics --------------------------------------------------------------------

    @line_magic
    def durable_journal(self, line: str) -> Any:
        """Show the journal: ``%durable_journal`` (every run) or ``%durable_journal NAME`` (one cell).

        Displays ``dnb.JournalView`` when the widgets are available, else a DataFrame
        of calls (``store.to_pandas()``).
        """
        name = _strip_quotes(line.strip())
        if name and not name.isidentifier():
            raise UsageError(f"%durable_journal: NAME must be a cell name, got {name!r}. "
                             f"Example: %durable_journal charge")
        store = self.store
        run_id = _latest_run_of(store, name) if name else None
        if name and run_id is None:
            print(f"durable: no record of cell {name!r} in {store!r}")
            return None
        try:
            from ..widgets import JournalView
        except ImportError:
            return store.to_pandas(run_id=run_id)
        return JournalView(store, run_id=run_id)

    @line_magic
    def durable_forget(self, line: str) -> None:
        """Forget a cell's records (every input version and rerun): ``%durable_forget NAME``.

        The next run of the cell executes it as if it never ran.
        """
        name = _strip_quotes(line.strip())
        if not name.isidentifier():
            raise UsageError(f"%durable_forget: give the cell's name, got {name!r}. Example: %durable_forget charge")
        store = self.store
        runs = [r.run_id for r in store.runs() if _belongs_to(r.run_id, name)]
        for run_id in runs:
            store.delete_run(run_id)
        print(f"durable: forgot cell {name!r} ({len(runs)} run{'s' if len(runs) != 1 else ''})")

    @line_magic
    def durable_store(self, line: str) -> None:
        """Choose the notebook's store: ``%durable_store sqlite:///path.db``; without an argument, show it."""
        url = line.strip()
        if url:
            self._store = self._open(url)
        print(f"durable: store {self.store!r}")


def _attempts(store: Store, base: str) -> tuple[str | None, str]:
    """The newest existing run of a cell version (``base``, ``base#2`` ...), and the id a rerun would use."""
    if store.run(base) is None:
        return None, base
    latest, n = base, 2
    while store.run(f"{base}#{n}") is not None:
        latest, n = f"{base}#{n}", n + 1
    return latest, f"{base}#{n}"


def _belongs_to(run_id: str, name: str) -> bool:
    return run_id.startswith((f"cell:{name}:", f"cell:{name}/"))


def _latest_run_of(store: Store, name: str) -> str | None:
    runs = [r for r in store.runs() if _belongs_to(r.run_id, name)]
    return max(runs, key=lambda r: r.updated_at).run_id if runs else None


def _flink_runner(store: Store, **options: Any) -> Any:
    """A FlinkRunner on the cell's store; what keeps it from running here is a UsageError, before any job."""
    try:
        from ..runners.flink_job import FlinkRunner, FlinkSetupError

        try:
            return FlinkRunner(store, **options)
        except FlinkSetupError as exc:
            raise UsageError(f"%%durable --runner flink: {exc}") from None
    except ImportError as exc:
        raise UsageError(
            f"%%durable --runner flink needs PyFlink, which is not installed here ({exc}). "
            f"Install it with: {FLINK_HINT}"
        ) from None


def _check_shippable(name: str, inputs: Mapping[str, Any]) -> None:
    """Name the notebook value that cannot travel to a Flink worker, before a job is built."""
    import cloudpickle

    try:
        cloudpickle.dumps(dict(inputs))
        return
    except Exception:
        pass
    for var, value in inputs.items():
        try:
            cloudpickle.dumps(value)
        except Exception as exc:
            raise UsageError(
                f"%%durable {name} --runner flink: the cell reads {var!r} ({type(value).__name__}), which "
                f"cannot be pickled to ship it to the Flink worker ({type(exc).__name__}: {exc}). Create it "
                f"inside the cell, or run this cell with --runner local."
            ) from None


def _warn_skipped(name: str, skipped: Mapping[str, str], *, flink: bool = False) -> None:
    if not skipped:
        return
    where = ("could not come back from the Flink worker and were left out of the journal; the cell's other "
             "outputs are restored and journaled, and a replay will not restore these names either"
             if flink else
             "were left out of the journal; the cell's other outputs are journaled, and a replay will not "
             "restore these names")
    warnings.warn(
        f"durable_nb: cell {name!r}: "
        + ", ".join(f"{n} ({why})" for n, why in skipped.items())
        + f" cannot be pickled and {where}. Keep live objects (open files, "
        "connections) out of durable cells, or recreate them in a cell of their own.",
        UnpicklableOutputWarning,
        stacklevel=3,
    )


def _say_reconciled(name: str, outcome: Mapping[str, Any]) -> None:
    restored = sorted(outcome["values"]) + sorted(outcome["modules"])
    print(f"↻ durable: reconciled cell {name!r} with --reconciler; restored: {', '.join(restored) or 'nothing'}")


_magics: dict[int, DurableMagics] = {}


def load(ipython: Any) -> None:
    """Register the magics on a shell (``%load_ext durable_nb``)."""
    magics = DurableMagics(ipython)
    _magics[id(ipython)] = magics
    ipython.register_magics(magics)


def unload(ipython: Any) -> None:
    """Remove the magics (``%unload_ext durable_nb``)."""
    _magics.pop(id(ipython), None)
    table = ipython.magics_manager.magics
    for kind, names in (("cell", ("durable",)), ("line", ("durable_journal", "durable_forget", "durable_store"))):
        for magic in names:
            table[kind].pop(magic, None)


def magics_of(ipython: Any) -> DurableMagics | None:
    """The loaded magics of a shell (tests and tools use it to reach the notebook's store)."""
    return _magics.get(id(ipython))


__all__ = ["CellAction", "CellRun", "DurableMagics", "load", "magics_of", "unload"]
