"""``%%durable`` and its line magics: a notebook cell as one durable call.

A cell ``%%durable NAME`` becomes run ``cell:NAME:<digest16>``, where the digest
covers the cell's code and the values of the names it reads. Call 0 of that run
(call id ``cell:NAME``) is the cell itself: PENDING while the body runs, then
SUCCEEDED with the names the cell bound and its ordered outputs, or FAILED with
its exception. The ``durable_execute`` calls the body makes land after it
(indices 1, 2, ...), so recovering a cell that died mid-way re-executes the body
and those calls replay or reconcile by the usual rules.

Every decision goes through :mod:`durable_nb._replay` (``decide``/``replay`` to
look before opening a run, ``Journal.begin/succeed/fail`` to perform). A cell
whose record is terminal is answered from a read of the journal alone: no lease,
no write, the body does not run.

``--rerun`` does not overwrite history: it opens ``cell:NAME:<digest16>#2``
(then ``#3`` ...), and later replays use the newest of them.
"""

from __future__ import annotations

import argparse
import ast
import builtins
import datetime as _dt
import types
import warnings
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from IPython.core import magic_arguments
from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class, no_var_expand

from ._callid import durable as _durable_name
from ._cell import (
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
from ._context import open_run
from ._records import CallRecord
from ._replay import Decision, check_reconciler, decide, replay
from ._store import Store, default_store, open_store
from .errors import UnpicklableOutputWarning

if TYPE_CHECKING:
    import pandas as pd
    from IPython.core.interactiveshell import InteractiveShell

OUTCOME_FORMAT = 1
FLINK_HINT = "pip install 'durable_nb[flink]'"
_MAP_RESERVED = ("record", "ctx")


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
        help="where --map runs the cell: in this kernel (local) or as a PyFlink job (flink)",
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
        return self._run_cell(name, source, tree, analysis, store, reconciler, rerun=args.rerun)

    def _check_combination(self, args: argparse.Namespace) -> None:
        if args.map_var is None:
            if args.key is not None:
                raise UsageError("%%durable: --key only makes sense with --map VAR. Example: "
                                 "%%durable enrich --map orders --key id")
            if args.runner == "flink":
                raise UsageError("%%durable: --runner flink runs a cell per record and needs --map VAR. "
                                 "Example: %%durable enrich --map orders --key id --runner flink")
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
        if outcome["skipped"]:
            warnings.warn(
                f"durable_nb: cell {name!r}: "
                + ", ".join(f"{n} ({why})" for n, why in outcome["skipped"].items())
                + " cannot be pickled and were left out of the journal; the cell's other outputs are "
                "journaled, and a replay will not restore these names. Keep live objects (open files, "
                "connections) out of durable cells, or recreate them in a cell of their own.",
                UnpicklableOutputWarning,
                stacklevel=2,
            )
        if step.decision is Decision.RECONCILE:
            restored = sorted(outcome["values"]) + sorted(outcome["modules"])
            print(f"↻ durable: reconciled cell {name!r} with --reconciler; restored: "
                  f"{', '.join(restored) or 'nothing'}")
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
        if last is None or result is None:
            return None
        if isinstance(last.body, ast.Name) and last.body.id in values:
            return ("name", last.body.id)  # do not journal a big value twice
        try:
            return pack_value(result)
        except Exception as exc:
            skipped["the cell's result"] = f"{type(result).__name__}: {type(exc).__name__}"
            data, metadata = self.shell.display_formatter.format(result)  # type: ignore[union-attr]
            return ("recorded", data, metadata)

    def _reconcile(self, name: str, reconciler: Callable[[], Any]) -> dict[str, Any]:
        values = reconciler()
        if not isinstance(values, Mapping) or not all(isinstance(k, str) and k.isidentifier() for k in values):
            raise TypeError(
                f"%%durable {name} --reconciler must return the cell's outputs as a dict "
                f"{{variable name: value}}, got {type(values).__name__}"
            )
        packed = pack_namespace(list(values), values)
        self.shell.user_ns.update({k: v for k, v in values.items() if k not in packed.skipped})  # type: ignore[union-attr]
        return {
            "format": OUTCOME_FORMAT, "values": packed.values, "modules": packed.modules,
            "skipped": packed.skipped, "deletes": [], "outputs": [], "result": None,
        }

    def _replay(self, name: str, recorded: CallRecord) -> Any:
        """Restore a finished cell from its record: variables, outputs in order, result or exception."""
        __tracebackhide__ = True
        shell = self.shell
        assert shell is not None
        notice = f"↺ durable: replayed cell {name!r} recorded {_utc(recorded.finished_at)} (use --rerun to execute)"
        try:
            outcome = replay(recorded)
        except Exception:
            print(notice.replace("replayed cell", "replayed the failure of cell"))
            raise
        restored, failed = unpack_namespace(outcome["values"], outcome["modules"])
        shell.user_ns.update(restored)
        for gone in outcome["deletes"]:
            shell.user_ns.pop(gone, None)
        lost = {**outcome["skipped"], **failed}
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
            from ._runner_local import LocalRunner

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
            from .widgets import JournalView
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


def _flink_runner(store: Store) -> Any:
    try:
        from ._runner_flink import FlinkRunner

        return FlinkRunner(store)
    except ImportError as exc:
        raise UsageError(
            f"%%durable --runner flink needs PyFlink, which is not installed here ({exc}). "
            f"Install it with: {FLINK_HINT}"
        ) from None


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


__all__ = ["CellAction", "DurableMagics", "load", "magics_of", "unload"]
