"""What a ``%%durable`` cell reads and binds: the analysis behind the magic.

A cell is one durable call. Its *arguments* are the values of the names it reads
from the notebook namespace before assigning them; its *result* is the names it
binds at top level plus everything it printed and displayed, in order. This
module finds the names from the cell's syntax tree (:mod:`.cell_inputs` digests
their values); what the cell shows is recorded by :mod:`.outputs`, and
:mod:`.outcome` packs both into the journaled outcome. It knows nothing about
runs or the replay rules, and imports no IPython.

The output recorder and the namespace payloads used to live here; they are
re-exported under their old names (:class:`OutputRecorder`, :func:`replay_outputs`,
:func:`pack_namespace`, :func:`unpack_namespace` ...).
"""

from __future__ import annotations

import ast
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

from .cell_inputs import input_digest, select_inputs, value_token
from .inline_magics import expand_magics, expanded_reads
from .namespace import PackedNamespace, pack_namespace, pack_value, unpack_namespace
from .outputs import WIDGET_VIEW_MIME, Output, OutputRecorder, RecordedResult, replay_outputs

__all__ = [  # with the names re-exported from .cell_inputs, .outputs and .outcome
    "WIDGET_VIEW_MIME", "CellAnalysis", "Output", "OutputRecorder", "PackedNamespace", "RecordedResult", "analyze",
    "input_digest", "pack_namespace", "pack_value", "replay_outputs", "select_inputs",
    "source_fingerprint", "split_last_expression", "unpack_namespace", "value_token",
]

# ---------------------------------------------------------------- syntax analysis

_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)
_COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)


@dataclass(frozen=True)
class CellAnalysis:
    """Names a cell reads before binding them, and names it binds at top level."""

    reads: tuple[str, ...]
    """Free names in the order first read; builtins included (the caller filters by namespace)."""
    binds: tuple[str, ...]
    """Names bound at top level, in order: assignments, for/with targets, imports, def, class."""
    deletes: tuple[str, ...] = ()
    """Names the cell ``del``-etes at top level."""
    star_imports: tuple[str, ...] = ()
    """Modules the cell imports ``*`` from at top level (restored by importing them again)."""
    global_binds: tuple[str, ...] = ()
    """Names a function the cell defines declares ``global``: an output if the cell rebinds them (calls it)."""


def _target_names(node: ast.AST) -> Iterator[str]:
    """Names bound by an assignment target (tuples, starred; attributes/subscripts bind nothing)."""
    if isinstance(node, ast.Name):
        yield node.id
    elif isinstance(node, (ast.Tuple, ast.List)):
        for elt in node.elts:
            yield from _target_names(elt)
    elif isinstance(node, ast.Starred):
        yield from _target_names(node.value)


def _import_names(node: ast.Import | ast.ImportFrom) -> Iterator[str]:
    for alias in node.names:
        if alias.name == "*":
            continue
        yield alias.asname or alias.name.split(".")[0]


def _scope_locals(node: ast.AST) -> set[str]:
    """Names local to a function, lambda, class body or comprehension (not descending into nested scopes)."""
    names: set[str] = set()
    declared_outer: set[str] = set()
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
        a = node.args
        for arg in [*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg]:
            if arg is not None:
                names.add(arg.arg)
        body: list[ast.AST] = [node.body] if isinstance(node, ast.Lambda) else list(node.body)
    elif isinstance(node, ast.ClassDef):
        body = list(node.body)
    elif isinstance(node, _COMPREHENSIONS):
        for gen in node.generators:
            names.update(_target_names(gen.target))
        return names
    else:  # pragma: no cover - only called on scopes
        return names

    stack = list(body)
    while stack:
        sub = stack.pop()
        if isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(sub.name)
            stack.extend(sub.decorator_list)
            continue  # its body is its own scope
        if isinstance(sub, (ast.Lambda, *_COMPREHENSIONS)):
            continue
        if isinstance(sub, (ast.Global, ast.Nonlocal)):
            declared_outer.update(sub.names)
        elif isinstance(sub, ast.Name) and isinstance(sub.ctx, (ast.Store, ast.Del)):
            names.add(sub.id)
        elif isinstance(sub, (ast.Import, ast.ImportFrom)):
            names.update(_import_names(sub))
        elif isinstance(sub, (ast.ExceptHandler, ast.MatchAs, ast.MatchStar)) and sub.name:
            names.add(sub.name)
        elif isinstance(sub, ast.MatchMapping) and sub.rest:
            names.add(sub.rest)
        stack.extend(ast.iter_child_nodes(sub))
    return names - declared_outer


def _irrefutable(case: ast.match_case) -> bool:
    """``case _:`` or ``case name:`` without a guard: the match cannot fall through it."""
    pattern = case.pattern
    while isinstance(pattern, ast.MatchAs) and pattern.pattern is not None:
        pattern = pattern.pattern
    return case.guard is None and isinstance(pattern, ast.MatchAs) and pattern.pattern is None


class _Analyzer(ast.NodeVisitor):
    """Walks statements in evaluation order, so ``x = x + 1`` reads ``x`` and ``for x in ...: x`` does not."""

    def __init__(self) -> None:
        self.bound: set[str] = set()
        self.reads: dict[str, None] = {}
        self.binds: dict[str, None] = {}
        self.deletes: dict[str, None] = {}
        self.star_imports: dict[str, None] = {}
        self.global_binds: dict[str, None] = {}
        self.scopes: list[tuple[set[str], bool]] = []  # (locals, is_comprehension)

    # -- names ----------------------------------------------------------------

    def _load(self, name: str) -> None:
        if any(name in local for local, _ in self.scopes):
            return
        if name not in self.bound:
            self.reads.setdefault(name, None)

    def _store(self, name: str) -> None:
        if self.scopes:
            return  # bound in a nested scope: not a cell output
        self.bound.add(name)
        self.binds.setdefault(name, None)
        self.deletes.pop(name, None)

    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Load):
            self._load(node.id)
        elif isinstance(node.ctx, ast.Store):
            self._store(node.id)
        elif not self.scopes:  # del x at top level
            self._load(node.id)
            self.bound.discard(node.id)
            self.binds.pop(node.id, None)
            self.deletes.setdefault(node.id, None)

    def visit_Call(self, node: ast.Call) -> None:
        self.generic_visit(node)
        for expression in expanded_reads(node):  # !cmd {url}: IPython reads url when the call runs
            self.visit(expression)

    # -- statements in evaluation order ----------------------------------------------

    def visit_Assign(self, node: ast.Assign) -> None:
        self.visit(node.value)
        for target in node.targets:
            self.visit(target)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if node.value is not None:
            self.visit(node.value)
            self.visit(node.target)
        elif not isinstance(node.target, ast.Name):
            self.visit(node.target)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        if isinstance(node.target, ast.Name):
            self._load(node.target.id)
            self.visit(node.value)
            self._store(node.target.id)
        else:
            self.visit(node.value)
            self.visit(node.target)

    def visit_NamedExpr(self, node: ast.NamedExpr) -> None:
        self.visit(node.value)
        # := inside a comprehension binds in the enclosing (here: the cell's) scope
        if all(is_comp for _, is_comp in self.scopes):
            saved, self.scopes = self.scopes, []
            self._store(node.target.id)
            self.scopes = saved
        else:
            self.visit(node.target)

    def visit_If(self, node: ast.If) -> None:
        """A name only one branch binds is not bound after the ``if``: a later read may read the notebook's value.

        ``if flag: a = 100`` then ``r = a`` reads the notebook's ``a`` whenever ``flag``
        is false, so ``a`` is an input. Loops are taken to run their body (a name a
        loop binds is not an input after it), or every cell with a loop would make
        its own last output an input of its next run.
        """
        self.visit(node.test)
        before = set(self.bound)
        for stmt in node.body:
            self.visit(stmt)
        after_body, self.bound = self.bound, before
        for stmt in node.orelse:
            self.visit(stmt)
        self.bound = after_body & self.bound

    def visit_Match(self, node: ast.Match) -> None:
        """As for ``if``: a name only some cases bind (or no case, when none matches) is read after it."""
        self.visit(node.subject)
        before = set(self.bound)
        ways = []
        for case in node.cases:
            self.bound = set(before)
            self.visit(case.pattern)
            if case.guard is not None:
                self.visit(case.guard)
            for stmt in case.body:
                self.visit(stmt)
            ways.append(self.bound)
        catch_all = any(_irrefutable(case) for case in node.cases)
        self.bound = set.intersection(*ways) if catch_all else set.intersection(before, *ways)

    def _visit_for(self, node: ast.For | ast.AsyncFor) -> None:
        self.visit(node.iter)
        self.visit(node.target)
        for stmt in [*node.body, *node.orelse]:
            self.visit(stmt)

    visit_For = visit_AsyncFor = _visit_for

    def _visit_with(self, node: ast.With | ast.AsyncWith) -> None:
        for item in node.items:
            self.visit(item.context_expr)
            if item.optional_vars is not None:
                self.visit(item.optional_vars)
        for stmt in node.body:
            self.visit(stmt)

    visit_With = visit_AsyncWith = _visit_with

    def visit_Import(self, node: ast.Import) -> None:
        for name in _import_names(node):
            self._store(name)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        for name in _import_names(node):
            self._store(name)
        if not self.scopes and node.level == 0 and node.module and any(a.name == "*" for a in node.names):
            self.star_imports.setdefault(node.module, None)

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
        if node.type is not None:
            self.visit(node.type)
        # ``except E as e`` unbinds e at the end of the handler: not an output
        temporary = bool(node.name) and not self.scopes and node.name not in self.bound
        if temporary:
            self.bound.add(node.name)  # type: ignore[arg-type]
        for stmt in node.body:
            self.visit(stmt)
        if temporary:
            self.bound.discard(node.name)  # type: ignore[arg-type]

    def visit_MatchAs(self, node: ast.MatchAs) -> None:
        if node.pattern is not None:
            self.visit(node.pattern)
        if node.name:
            self._store(node.name)

    def visit_MatchStar(self, node: ast.MatchStar) -> None:
        if node.name:
            self._store(node.name)

    def visit_MatchMapping(self, node: ast.MatchMapping) -> None:
        self.generic_visit(node)
        if node.rest:
            self._store(node.rest)

    # -- nested scopes ---------------------------------------------------------------

    def _visit_function(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        for dec in node.decorator_list:
            self.visit(dec)
        self._visit_arguments(node.args)
        if node.returns is not None:
            self.visit(node.returns)
        # Free names of the body are read when the function runs; counting them as
        # reads of the cell is the safe side (a changed global invalidates the cell).
        self.scopes.append((_scope_locals(node), False))
        for stmt in node.body:
            self.visit(stmt)
        self.scopes.pop()
        self._store(node.name)
        if not self.scopes:  # ``global x`` in it: the cell binds x if it calls it (known once it ran)
            for sub in ast.walk(node):
                if isinstance(sub, ast.Global):
                    self.global_binds.update(dict.fromkeys(sub.names))

    visit_FunctionDef = visit_AsyncFunctionDef = _visit_function

    def _visit_arguments(self, args: ast.arguments) -> None:
        for default in [*args.defaults, *args.kw_defaults]:
            if default is not None:
                self.visit(default)
        for arg in [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]:
            if arg is not None and arg.annotation is not None:
                self.visit(arg.annotation)

    def visit_Lambda(self, node: ast.Lambda) -> None:
        self._visit_arguments(node.args)
        self.scopes.append((_scope_locals(node), False))
        self.visit(node.body)
        self.scopes.pop()

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        for expr in [*node.decorator_list, *node.bases, *(k.value for k in node.keywords)]:
            self.visit(expr)
        self.scopes.append((_scope_locals(node), False))
        for stmt in node.body:
            self.visit(stmt)
        self.scopes.pop()
        self._store(node.name)

    def _visit_comprehension(self, node: ast.ListComp | ast.SetComp | ast.DictComp | ast.GeneratorExp) -> None:
        # The first iterable is evaluated in the enclosing scope.
        first, *rest = node.generators
        self.visit(first.iter)
        self.scopes.append((_scope_locals(node), True))
        for cond in first.ifs:
            self.visit(cond)
        for gen in rest:
            self.visit(gen.iter)
            for cond in gen.ifs:
                self.visit(cond)
        if isinstance(node, ast.DictComp):
            self.visit(node.key)
            self.visit(node.value)
        else:
            self.visit(node.elt)
        self.scopes.pop()

    visit_ListComp = visit_SetComp = visit_DictComp = visit_GeneratorExp = _visit_comprehension

    def visit_Global(self, node: ast.Global) -> None:  # meaningless at top level
        return


def analyze(source: str | ast.Module) -> CellAnalysis:
    """Read and bound names of a cell's (already IPython-transformed) Python source."""
    tree = ast.parse(source) if isinstance(source, str) else source
    tree = expand_magics(tree)  # %%time / %time / %%capture bodies bind the cell's names (issue 9)
    walker = _Analyzer()
    for stmt in tree.body:
        walker.visit(stmt)
    return CellAnalysis(tuple(walker.reads), tuple(walker.binds), tuple(walker.deletes), tuple(walker.star_imports),
                        tuple(n for n in walker.global_binds if n not in walker.binds))


def split_last_expression(tree: ast.Module) -> tuple[ast.Module, ast.Expression | None]:
    """The cell without its last statement if that is an expression, and that expression.

    The expression's value is the cell's result, as IPython shows ``Out[n]``.
    """
    body = list(tree.body)
    if body and isinstance(body[-1], ast.Expr):
        last = body.pop()
        assert isinstance(last, ast.Expr)
        expr = ast.Expression(last.value)
        ast.copy_location(expr, last)
        return ast.Module(body=body, type_ignores=[]), expr
    return ast.Module(body=body, type_ignores=[]), None


def source_fingerprint(tree: ast.Module) -> str:
    """Digest of the cell's code, blind to comments and formatting."""
    return hashlib.blake2b(ast.dump(tree, include_attributes=False).encode(), digest_size=16).hexdigest()
