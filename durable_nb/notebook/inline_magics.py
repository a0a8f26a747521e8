"""Magics inside a ``%%durable`` cell, and top-level ``await``: what the cell analysis must see.

IPython turns ``%%time`` / ``%time stmt`` into ``get_ipython().run_cell_magic('time',
'', 'x = 1\\n')``: the code runs in the notebook namespace, but its assignments are
hidden in a string, so the analysis saw no output names and a replay restored
nothing (issue 9). :func:`expand_magics` inlines the bodies of the magics that run
their code in the user namespace (``time``, ``capture``, ``prun``), for the
analysis only; the cell itself runs unchanged. ``%%capture NAME`` binds ``NAME``.

A cell with top-level ``await`` cannot be performed as a durable call (its body
runs as a function call, not as an IPython coroutine cell), and compiling it fails
only after the call was journaled. :func:`has_top_level_await` lets the magic refuse
it before anything is written.
"""

from __future__ import annotations

import ast
import re
import string
from collections.abc import Iterator

#: Magics whose body runs in the user namespace, so its assignments are the cell's.
INLINE_MAGICS = frozenset({"time", "capture", "prun"})


def expand_magics(tree: ast.Module) -> ast.Module:
    """``tree`` with top-level ``time``/``capture``/``prun`` magic calls replaced by their parsed bodies."""
    body: list[ast.stmt] = []
    changed = False
    for stmt in tree.body:
        inlined = _inline(stmt)
        if inlined is None:
            body.append(stmt)
        else:
            body.extend(inlined)
            changed = True
    return ast.Module(body=body, type_ignores=[]) if changed else tree


def _inline(stmt: ast.stmt) -> list[ast.stmt] | None:
    """The statements a magic call statement runs in the user namespace, or None if it is not one."""
    value = stmt.value if isinstance(stmt, (ast.Expr, ast.Assign)) else None
    call = _magic_call(value)
    if call is None:
        return None
    kind, name, args = call
    if name not in INLINE_MAGICS:
        return None
    if kind == "run_cell_magic" and len(args) == 3:
        line, code = args[1], args[2]
    elif kind == "run_line_magic" and len(args) == 2:
        line, code = "", args[1]
    else:
        return None
    statements = _parse(code if not (kind == "run_line_magic" and name == "prun") else _strip_options(code))
    if name == "capture" and kind == "run_cell_magic":
        target = next((word for word in line.split() if not word.startswith("-")), None)
        if target is not None and target.isidentifier():
            statements.append(ast.Assign(targets=[ast.Name(target, ast.Store())], value=ast.Constant(None)))
    if isinstance(stmt, ast.Assign):  # x = %time f()
        statements.append(ast.Assign(targets=stmt.targets, value=ast.Constant(None)))
    return [ast.fix_missing_locations(s) for s in statements]


def _magic_call(node: ast.AST | None) -> tuple[str, str, list[str]] | None:
    """``("run_cell_magic", name, [str args])`` for ``get_ipython().run_cell_magic(...)`` with literal args."""
    if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
        return None
    owner = node.func.value
    if node.func.attr not in ("run_cell_magic", "run_line_magic") or not (
        isinstance(owner, ast.Call) and isinstance(owner.func, ast.Name) and owner.func.id == "get_ipython"
    ):
        return None
    if not all(isinstance(a, ast.Constant) and isinstance(a.value, str) for a in node.args) or not node.args:
        return None
    args = [a.value for a in node.args]  # type: ignore[attr-defined]
    return node.func.attr, args[0], args


def _strip_options(line: str) -> str:
    words = line.split()
    while words and words[0].startswith("-"):
        words = words[2:] if words[0] in ("-s", "-l", "-T", "-D") else words[1:]
    return " ".join(words)


def _parse(code: str) -> list[ast.stmt]:
    """The body's statements (IPython syntax transformed when IPython is there); [] if it does not parse."""
    try:
        from IPython.core.inputtransformer2 import TransformerManager

        code = TransformerManager().transform_cell(code)
    except Exception:
        pass
    try:
        return expand_magics(ast.parse(code)).body
    except SyntaxError:
        return []


#: IPython's calls whose string arguments it expands with ``{expr}`` and ``$name`` from the user namespace.
_EXPANDING = frozenset({"system", "getoutput", "run_line_magic", "run_cell_magic"})
_DOLLAR_NAME = re.compile(r"(?<!\$)\$([A-Za-z_]\w*)")


def expanded_reads(node: ast.Call) -> list[ast.expr]:
    """The expressions IPython evaluates in ``!cmd {url}`` / ``x = !ls $folder`` / ``%magic {arg}`` when it runs.

    They hide in the string IPython passes to ``get_ipython().system(...)`` (``getoutput``,
    ``run_line_magic``; a cell magic's line), so the analysis saw no read: after ``url``
    changed, the cell replayed the old download. Expressions that do not parse are left out.
    """
    func = node.func
    if not (isinstance(func, ast.Attribute) and func.attr in _EXPANDING and isinstance(func.value, ast.Call)
            and isinstance(func.value.func, ast.Name) and func.value.func.id == "get_ipython"):
        return []
    texts = [a.value for a in node.args[:2] if isinstance(a, ast.Constant) and isinstance(a.value, str)]
    if func.attr.startswith("run_"):
        texts = texts[1:2]  # the magic's line, not its name (nor a cell magic's body)
    found: list[ast.expr] = []
    for text in texts:
        sources = [field for _, field, _, _ in _format_fields(text) if field]
        sources += _DOLLAR_NAME.findall(text)
        for source in sources:
            try:
                found.append(ast.parse(source, mode="eval").body)
            except SyntaxError:
                continue
    return found


def _format_fields(text: str) -> list[tuple[str, str | None, str | None, str | None]]:
    try:
        return list(string.Formatter().parse(text))
    except ValueError:  # a lone brace: IPython leaves such a string as it is
        return []


def has_top_level_await(tree: ast.Module) -> bool:
    """Whether the cell awaits outside any ``async def`` (``await``, ``async for/with``, async comprehensions)."""
    return any(True for _ in _top_level_awaits(tree))


def _top_level_awaits(node: ast.AST) -> Iterator[ast.AST]:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.AsyncFunctionDef, ast.FunctionDef, ast.Lambda, ast.ClassDef)):
            continue  # await there is the function's own (or a SyntaxError Python reports itself)
        if isinstance(child, (ast.Await, ast.AsyncFor, ast.AsyncWith)) or (
            isinstance(child, ast.comprehension) and child.is_async
        ):
            yield child
        yield from _top_level_awaits(child)
