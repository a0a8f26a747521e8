"""``%%durable`` and its line magics: the IPython glue, nothing else.

The magic parses its arguments, checks them (misuse is a ``UsageError`` that
shows an example), and delegates: a cell to :func:`durable_nb.notebook.kernel.run_cell`,
``--map`` to :func:`durable_nb.notebook.kernel.run_map`. The rooms behind it:

- :mod:`~durable_nb.notebook.cell`: what a cell reads and binds; :mod:`~durable_nb.notebook.outputs`:
  what it shows;
- :mod:`~durable_nb.notebook.outcome`: :class:`CellOutcome`, what call 0 of a cell's run journals;
- :mod:`~durable_nb.notebook.perform`: the cell performed as a durable call (kernel and Flink
  workers alike; no IPython import);
- :mod:`~durable_nb.notebook.runids`: how cells are named in the journal;
- :mod:`~durable_nb.notebook.kernel`: replay, perform, recover and restore in the kernel.

Over 400 lines because each magic's argparse declarations (the help ``%%durable?`` shows) and the
refusals that name the fix sit beside the magic they describe.
"""

from __future__ import annotations

import argparse
import difflib
import os
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from IPython.core import magic_arguments
from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class, no_var_expand

from ..errors import DurableError, RunBusyError
from ..journal.replay import check_reconciler
from ..journal.store import Store
from ..stores import DEFAULT_PATH, default_store, file_of, open_store, reopened
from ..stores.dsn import mask_dsn
from . import inputs
from .inline_magics import has_top_level_await
from .kernel import run_cell, run_map
from .perform import CellAction, CellRun, ParsedCell
from .runids import cell_runs, latest_run_of
from .timetravel import adopt_fork, cell_inputs_digest, run_dry, run_fork, run_prune

if TYPE_CHECKING:
    from IPython.core.interactiveshell import InteractiveShell


def _strip_quotes(text: str) -> str:
    """Magic lines are split non-POSIX, so ``--reconciler "lambda: f()"`` keeps its quotes."""
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def _parse_line(magic: Callable[..., Any], line: str, label: str, example: str) -> argparse.Namespace:
    """The magic's line parsed; argparse's refusal gets the magic's name, the option meant, and an example.

    Why: argparse says only "unrecognized arguments: --rerrun" or "the following arguments
    are required: name", which names neither the magic nor the fix; and an unquoted
    ``--reconciler lambda: lookup(42)`` splits into several words whose refusal does not
    say that the expression needs quotes.
    """
    try:
        args = magic_arguments.parse_argstring(magic, line)
    except UsageError as exc:
        message = str(exc)
    else:  # quoted as one word (a run id holding '#', an age): every value, as --store and --key always were
        for option, value in vars(args).items():
            if isinstance(value, str) and option != "reconciler":  # an expression: _reconciler reads its quotes
                setattr(args, option, _strip_quotes(value))
        return args
    if "--reconciler" in line and "unrecognized arguments" in message:
        raise UsageError(
            f"{label}: {message}. An expression with spaces after --reconciler must be quoted as one "
            f"word: %%durable charge --reconciler \"lambda: lookup(42)\""
        )
    words = message.split("unrecognized arguments: ", 1)[1].split() if "unrecognized arguments: " in message else []
    hints = "".join(f" ({hint})" if (hint := _belongs_elsewhere(label, w, line)) else
                    f" (did you mean {meant}?)" if (meant := _meant_option(magic, w)) else "" for w in words)
    asked = [w for w in words if w in ("-h", "--help")]
    helps = f" (help is {label}?, not {asked[0]})" if asked else ""
    raise UsageError(f"{label}: {message}{hints}{helps}. Example: {example}; {label}? lists every option")


_OTHER_MAGICS = {"--at": ("%durable_fork", "2"), "--run": ("%durable_fork", "RUN_ID"),
                 "--older-than": ("%durable_prune", "30d"), "--keep-last": ("%durable_prune", "100"),
                 "--include-pending": ("%durable_prune", "")}


def _belongs_elsewhere(label: str, word: str, line: str) -> str | None:
    """An option of a line magic given to ``%%durable``: that magic, with an example, not the nearest option.

    Why: ``%%durable charge --at 2`` said "did you mean --map?", the wrong fix for a user who meant to fork.
    """
    if label != "%%durable" or word not in _OTHER_MAGICS:
        return None
    other, value = _OTHER_MAGICS[word]
    first = (line.split() or ["charge"])[0]
    name = f"{first if first.isidentifier() else 'charge'} " if other == "%durable_fork" else ""
    return f"{word} belongs to {other}: {other} {name}{word} {value}".rstrip()


def _meant_option(magic: Callable[..., Any], word: str) -> str | None:
    """The option a mistyped ``--word`` most likely meant: one it extends (``--dry-run``), else the closest."""
    if not word.startswith("--") or word in ("--help",):
        return None
    word = word.split("=", 1)[0]
    parser = magic.parser  # type: ignore[attr-defined]  # set by IPython's @magic_arguments
    options = [o for action in parser._actions for o in action.option_strings]
    extended = [o for o in options if word.startswith(o)]
    return max(extended, key=len) if extended else next(iter(difflib.get_close_matches(word, options, n=1)), None)


def _cache_key(url: str) -> str:
    """The key of the store ``url`` opens among the notebook's: a relative file path with the working directory.

    Why: ``--store rel.db`` after ``%cd B`` is B/rel.db, as a restarted kernel opens it there; keyed by
    its text alone it stayed the journal first opened in A, so after a restart the cell found no record
    in B/rel.db and ran again.
    """
    text = url.strip()
    path = file_of(text)  # as open_store reads it: "date=2024-01-01.db" is a file, "host=x dbname=y" a DSN
    relative = path is not None and not os.path.isabs(os.path.expanduser(path))
    return f"{os.getcwd()}\0{text}" if relative else text


@magics_class
class DurableMagics(Magics):
    """``%%durable``, ``%durable_journal``, ``%durable_forget``, ``%durable_store``, ``%durable_fork``,
    ``%durable_prune``.

    State is the notebook's store; the journal itself holds everything else, so
    a restarted kernel that loads the extension again sees all earlier cells.
    """

    def __init__(self, shell: InteractiveShell | None = None) -> None:
        super().__init__(shell)
        self._home = os.getcwd()
        """The working directory when durable_nb was loaded: the notebook's folder, as a kernel starts there."""
        self._store: Store | None = None
        self._opened: dict[str, Store] = {}
        self._forks: dict[str, str] = {}
        """Cell name -> run made by ``%durable_fork`` that the cell's next run continues from."""

    # -- stores ---------------------------------------------------------------------

    @property
    def store(self) -> Store:
        """The notebook's store: ``%durable_store URL``, else ``.durable/journal.db`` under the working directory
        when a cell first needs it (DESIGN.md), with a warning when that is not where durable_nb was loaded.

        Why the warning: a ``%cd data`` run before the notebook's first durable cell puts its journal
        in data/; after a restart, cells run before the ``%cd`` open the notebook folder's journal and
        find no record there, so a cell that charged in one journal charges again in the other. Moving
        the default to the load folder would do the same to every notebook that always ran ``%cd``
        first (its journal is in data/), so the journal stays where it is and the user is told.
        """
        if self._store is None:
            self._store = default_store()
            _warn_if_not_home(self._home)
        else:
            self._store = reopened(self._store)
        return self._store

    @store.setter
    def store(self, store: Store) -> None:
        self._store = store

    def _open(self, url: str) -> Store:
        url = _strip_quotes(url)
        key = _cache_key(url)
        store = self._opened.get(key)
        if store is not None:
            store = self._opened[key] = reopened(store)  # a journal deleted meanwhile: a new one at its path
        else:
            try:
                store = open_store(url)
            # DurableError: a directory, not a journal; ImportError: psycopg missing, the message names the extra
            except (ValueError, TypeError, OSError, ImportError, DurableError) as exc:
                raise UsageError(f"%durable: cannot open store {mask_dsn(url)!r}: {exc}") from None
            self._opened[key] = store
        return store

    # -- %%durable ------------------------------------------------------------------

    @magic_arguments.magic_arguments("%durable")  # IPython writes "%" before it: the usage shows %%durable
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
        "worker, or with --map one run per record). flink needs a store the workers can reach (SQLite on this "
        "machine, PostgreSQL across machines; not memory://); the cell's names, printed output and result "
        "come back to the notebook when the job ends",
    )
    @magic_arguments.argument(
        "--rerun", action="store_true",
        help="execute in a new run even if a record exists (its durable calls execute again too), or though "
        "an earlier version's run did not finish; the old record stays in the journal",
    )
    @magic_arguments.argument(
        "--map", metavar="VAR", dest="map_var",
        help="run the cell once per record of the DataFrame or list VAR, with `record` and `ctx` bound",
    )
    @magic_arguments.argument("--key", metavar="COL", help="with --map: the field that keys each record's run")
    @magic_arguments.argument(
        "--concurrency", metavar="N", type=int,
        help="with --map and --runner flink: records run at once in each Flink worker (each key's records "
        "still in order); for cells that wait on a model or an API",
    )
    @magic_arguments.argument(
        "--progress", action="store_true",
        help="with --map: show a progress bar (records done, replayed, failed)",
    )
    @magic_arguments.argument(
        "--dry", action="store_true",
        help="dry replay: report the first durable call the cell would not replay (a dnb.DryRunReport); "
        "nothing is executed and nothing is written, the notebook's variables do not change",
    )
    @magic_arguments.argument(
        "--strict", action="store_true",
        help="strict mode: a replay mismatch raises NonDeterminismError instead of discarding the rest of the "
        "cell's journal (with --dry: the report says what it would refuse)",
    )
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
        args = _parse_line(self.durable, line, "%%durable", "%%durable charge")
        name: str = args.name
        if not name.isidentifier():
            raise UsageError(
                f"%%durable: NAME must be an identifier, got {name!r}. Example: %%durable charge_card"
            )
        self._check_combination(args)
        reconciler = self._reconciler(args.reconciler) if args.reconciler else None
        store = self._open(args.store) if args.store else self.store
        parsed = self._parse_cell(name, cell)
        if has_top_level_await(parsed.tree):  # refused before anything is journaled (issue 9)
            raise UsageError(
                f"%%durable {name}: the cell uses top-level `await`, which a durable cell cannot run (it is "
                f"performed as one call, not as an IPython coroutine cell). Await in a plain cell and use the "
                f"result here, or move the awaits into an action run with `await runner.run_async(...)`. "
                f"Nothing was journaled."
            )
        if args.dry:
            return run_dry(self.shell, parsed, store, reconciler is not None, self._forks.get(name),
                           strict=args.strict)
        if args.map_var:
            key = _strip_quotes(args.key) if args.key else None
            concurrency = 1 if args.concurrency is None else args.concurrency
            return run_map(self.shell, parsed, store, args.map_var, key=key, runner=args.runner,
                           progress=args.progress, strict=args.strict, concurrency=concurrency)
        fork = None if args.rerun else self._forks.pop(name, None)
        if fork is not None:  # %durable_fork NAME: the cell, maybe edited since, continues from the fork
            try:
                adopt_fork(store, name, fork, cell_inputs_digest(self.shell, parsed))
            except RunBusyError:
                self._forks[name] = fork  # still pending: the next run of the cell moves it
                raise
        return run_cell(self.shell, parsed, store, reconciler, rerun=args.rerun, runner=args.runner,
                        strict=args.strict)

    def _parse_cell(self, name: str, cell: str) -> ParsedCell:
        """The cell parsed; a syntax error points at the cell's line as a run's traceback does.

        ``ast.parse`` named the file ``<unknown>`` and the traceback went on through
        ast.py: the line the error names is the one IPython shows as ``Cell In[N]``.
        """
        __tracebackhide__ = True
        source = self.shell.transform_cell(cell)  # type: ignore[union-attr]
        try:
            return ParsedCell.parse(name, source)
        except SyntaxError as exc:
            exc.filename = self.shell.compile.cache(source, self.shell.execution_count)  # type: ignore[union-attr]
            raise exc.with_traceback(None) from None

    def _check_combination(self, args: argparse.Namespace) -> None:
        for flag, value in (("--store", args.store), ("--reconciler", args.reconciler), ("--key", args.key)):
            if value is not None and not _strip_quotes(value).strip():  # `--store=` is not "no --store"
                raise UsageError(f"%%durable: {flag} needs a value, got an empty one; give one, or leave {flag} out. "
                                 f"Example: %%durable charge --store sqlite:///journal.db")
        if args.dry:
            for flag, value in (("--rerun", args.rerun), ("--map", args.map_var)):  # --strict: what it refuses
                if value:
                    raise UsageError(f"%%durable: --dry cannot be combined with {flag} (--dry executes nothing "
                                     f"and writes nothing). Example: %%durable charge --dry")
        if args.map_var is None:
            for flag, value in (("--key", args.key), ("--progress", args.progress),
                                ("--concurrency", args.concurrency is not None)):
                if value:
                    raise UsageError(f"%%durable: {flag} only makes sense with --map VAR. Example: "
                                     f"%%durable enrich --map orders --key id --progress")
            return
        if not args.map_var.isidentifier():
            raise UsageError(f"%%durable: --map takes a variable name, got {args.map_var!r}. "
                             f"Example: %%durable enrich --map orders")
        if args.concurrency is not None and args.runner != "flink":
            raise UsageError("%%durable: --concurrency sets how many records run at once in each Flink worker; "
                             "add --runner flink. Example: %%durable enrich --map orders --runner flink "
                             "--concurrency 8")
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
        run_id = latest_run_of(store, name) if name else None
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
        runs = [r.run_id for r in cell_runs(store, name)]
        for done, run_id in enumerate(runs):
            try:
                store.delete_run(run_id)
            except RunBusyError as exc:  # its text is about two recoveries; here the cell is simply running
                before = f" ({done} of its other runs already forgotten)" if done else ""
                raise UsageError(f"%durable_forget {name}: run {run_id!r} is running now (open in {exc.owner})"
                                 f"{before}. Let it finish (or stop it), then forget again.") from None
        print(f"durable: forgot cell {name!r} ({len(runs)} run{'s' if len(runs) != 1 else ''})")

    @magic_arguments.magic_arguments()
    @magic_arguments.argument("name", help="the cell's durable name: %%durable_fork charge --at 2")
    @magic_arguments.argument(
        "--at", type=int, required=True, metavar="K",
        help="the call to continue from, as the journal numbers it (call 0 is the cell itself): calls 1..K-1 "
        "are kept and replay, call K and later execute on the cell's next run",
    )
    @magic_arguments.argument(
        "--run", metavar="RUN_ID", dest="run_id",
        help="fork this run of the cell instead of its latest one (see %%durable_journal NAME)",
    )
    @line_magic
    def durable_fork(self, line: str) -> str:
        """Make the next run of cell NAME continue from call K of its latest run: ``%durable_fork NAME --at K``.

        The cell's run is forked (the original stays as it was): calls before K keep
        their recorded outcomes and replay, the cell's body runs again, and call K on
        execute. Returns the new run id.
        """
        args = _parse_line(self.durable_fork, line, "%durable_fork", "%durable_fork charge --at 2")
        name = _strip_quotes(args.name)
        if not name.isidentifier():
            raise UsageError(f"%durable_fork: NAME must be a cell name, got {name!r}. "
                             f"Example: %durable_fork charge --at 2")
        return run_fork(self.store, name, args.at, args.run_id, self._forks)

    @magic_arguments.magic_arguments()
    @magic_arguments.argument(
        "--older-than", metavar="AGE", dest="older_than",
        help="only runs last updated longer ago than AGE: 30d, 12h, 45m, 90s, 2w (a bare number is days)",
    )
    @magic_arguments.argument(
        "--keep-last", metavar="N", type=int, dest="keep_last",
        help="keep the N most recently updated runs of the store whatever the other filters say (0 keeps none)",
    )
    @magic_arguments.argument(
        "--status", metavar="S",
        help="only runs with this status: COMPLETED, FAILED, RUNNING, WAITING (comma-separated for several)",
    )
    @magic_arguments.argument(
        "--include-pending", action="store_true", dest="include_pending",
        help="also remove RUNNING and WAITING runs and runs with PENDING calls (nothing will recover them)",
    )
    @magic_arguments.argument(
        "--dry-run", action="store_true", dest="dry_run",
        help="only list the runs that would be removed; write nothing",
    )
    @line_magic
    def durable_prune(self, line: str) -> Any:
        """Remove old runs from the notebook's store: ``%durable_prune --older-than 30d --keep-last 100``.

        The filters combine (``store.prune``); runs still in flight stay unless
        ``--include-pending``. Returns the removed runs (``RunRecord`` list).
        """
        args = _parse_line(self.durable_prune, line, "%durable_prune", "%durable_prune --older-than 30d --dry-run")
        return run_prune(self.store, args)

    @line_magic
    def durable_store(self, line: str) -> None:
        """Choose the notebook's store: ``%durable_store sqlite:///path.db``; without an argument, show it."""
        url = line.strip()
        if url.startswith("-"):  # as a file name it would open a journal named '--store x'
            raise UsageError(f"%durable_store takes a URL, not an option: got {url!r} (options such as --store belong "
                             f"to %%durable). Example: %durable_store sqlite:///journal.db")
        if " #" in url:  # IPython passes a line magic its comment too: the journal would be 'x.db # mine'
            raise UsageError(f"%durable_store {mask_dsn(url)}: a comment after the URL would be part of it (a journal "
                             f"file named after it); put the comment on a line of its own")
        if url:
            self._store = self._open(url)
        print(f"durable: store {self.store!r}")


def _warn_if_not_home(home: str) -> None:
    """Say so when the default journal opens outside the folder durable_nb was loaded in (see ``store``)."""
    here = os.path.realpath(os.getcwd())
    if here == os.path.realpath(home):
        return
    path = os.path.join(here, DEFAULT_PATH)
    warnings.warn(
        f"durable_nb: the notebook's default journal is {path}, under the working directory, not under {home} "
        f"where durable_nb was loaded (a %cd ran before the first durable cell). After a restart, cells run "
        f"before that %cd would use the journal there and run their durable calls again. Pin one journal for "
        f"every session with %durable_store sqlite:///{path} as the notebook's first line.", UserWarning,
        stacklevel=2)


_magics: dict[int, DurableMagics] = {}


def load(ipython: Any) -> None:
    """Register the magics on a shell (``%load_ext durable_nb``)."""
    magics = DurableMagics(ipython)  # the default journal's folder: the working directory now (DESIGN.md)
    _magics[id(ipython)] = magics
    ipython.register_magics(magics)
    inputs.register()  # a run stopped at a durable_input shows its answer widget in the cell


def unload(ipython: Any) -> None:
    """Remove the magics (``%unload_ext durable_nb``)."""
    if _magics.pop(id(ipython), None) is not None:
        inputs.unregister()
    table = ipython.magics_manager.magics
    line_magics = ("durable_journal", "durable_forget", "durable_store", "durable_fork", "durable_prune")
    for kind, names in (("cell", ("durable",)), ("line", line_magics)):
        for magic in names:
            table[kind].pop(magic, None)


def magics_of(ipython: Any) -> DurableMagics | None:
    """The loaded magics of a shell (tests and tools use it to reach the notebook's store)."""
    return _magics.get(id(ipython))


__all__ = ["CellAction", "CellRun", "DurableMagics", "load", "magics_of", "unload"]
