"""The safe expression language of runbook conditions and argument templates.

An expression is a Python *expression* restricted to a whitelist, checked on its syntax tree before
anything runs and evaluated by a tiny interpreter (never `eval`):

- literals: numbers, strings, ``True``/``False``/``None``, lists and tuples of expressions;
- names: only the scope's roots -- ``evidence``, ``incident``, ``serving``, ``model``, ``results``, and
  ``item`` inside a ``for_each`` step;
- ``a.b`` and ``a["b"]`` read a field of a mapping (never an attribute of a Python object), ``a[0]`` and
  ``a[:3]`` index or slice a list or string; names starting with ``_`` are refused;
- comparisons (``== != < <= > >= in not in is is not``), ``and``/``or``/``not``, ``x if c else y``,
  arithmetic ``+ - * / // %`` (no ``**``: one expression must not be able to build a huge number);
- calls to the whitelisted functions only (`FUNCTIONS`), positional arguments only.

Everything else -- other calls, lambdas, comprehensions, f-strings, walrus, starred arguments -- is
refused with its position. Evaluation runs under a step budget and caps the size of what it builds.
"""

from __future__ import annotations

import ast
import operator
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

MAX_LENGTH = 1_000  # characters in one expression
MAX_DEPTH = 100  # nesting of the syntax tree (bounds the interpreter's recursion)
MAX_STEPS = 10_000  # nodes visited while evaluating
MAX_SIZE = 10_000  # elements of a built list or characters of a built string
MAX_INT = 10**30
ROOTS = frozenset({"evidence", "incident", "serving", "model", "labels", "estimated", "results", "item"})


class ExpressionError(ValueError):
    """An expression that is not allowed or cannot be evaluated.

    ``offset`` is the 0-based column it points at; ``unsafe`` says the expression reached for something
    the language forbids (a call, a private name, a lambda...) rather than merely being wrong.
    """

    def __init__(self, message: str, offset: int = 0, *, unsafe: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.offset = offset
        self.unsafe = unsafe


def _root(names: Mapping[str, Any], root: str) -> Mapping[str, Any]:
    found = names.get(root)
    return found if isinstance(found, Mapping) else {}


def _feature_list(features: Any) -> list[str]:
    """A feature name or a list of them, as a list."""
    return [features] if isinstance(features, str) else list(features or [])


def _importance(names: Mapping[str, Any], features: Any) -> float:
    """The largest importance (gain share, 0..1) of a feature or list of features in the serving model."""
    table = _root(names, "model").get("importance", {})
    return max((float(table.get(name, 0.0)) for name in _feature_list(features)), default=0.0)


def _uncovered_importance(names: Mapping[str, Any], features: Any) -> float:
    """The largest gain share a feature or list of features would still take from the model if quarantined.

    A quarantined feature is estimated from its best sibling whose source is live (not in ``features``, not
    quarantined already; `scorer.imputation`), which explains a share R^2 of its reference variance. What
    the estimate misses is counted as lost: importance x (1 - R^2); with no usable sibling, the whole
    importance. A proxy, not a measurement of the scores: it ranks a broken 30-day average with a
    well-correlated 7-day sibling (R^2 0.87) far below a broken feature the model leans on alone.
    """
    model = _root(names, "model")
    importance, surrogates = model.get("importance", {}), model.get("surrogates", {})
    chosen = _feature_list(features)
    unavailable = set(chosen) | set(_root(names, "serving").get("quarantined_features") or [])
    uncovered = []
    for name in chosen:
        usable = [float(s["r2"]) for s in surrogates.get(name, []) if s.get("source") not in unavailable]
        uncovered.append(float(importance.get(name, 0.0)) * (1.0 - max(usable, default=0.0)))
    return max(uncovered, default=0.0)


def _round(value: Any, digits: int = 0) -> Any:
    # round(5, -10**9) would compute 10**(10**9): keep the digits small.
    if not isinstance(digits, int) or not -12 <= digits <= 12:
        raise ExpressionError("round() takes between -12 and 12 digits")
    return round(value, digits)


# Functions an expression may call. Built-ins are pure; scope functions also get the scope's names.
FUNCTIONS: dict[str, Callable[..., Any]] = {
    "len": len,
    "min": min,
    "max": max,
    "any": any,
    "all": all,
    "abs": abs,
    "round": _round,
    "sum": sum,
    "sorted": sorted,
}
SCOPE_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "importance": _importance,
    "uncovered_importance": _uncovered_importance,
}
FUNCTION_NAMES = frozenset(FUNCTIONS) | frozenset(SCOPE_FUNCTIONS)

_COMPARE: dict[type[ast.cmpop], Callable[[Any, Any], Any]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
    ast.Is: operator.is_,
    ast.IsNot: operator.is_not,
}
_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {
    ast.Not: operator.not_,
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
}
_ALLOWED_NODES = (
    ast.Expression, ast.Constant, ast.Name, ast.Load, ast.Attribute, ast.Subscript, ast.Slice, ast.List,
    ast.Tuple, ast.Compare, ast.BoolOp, ast.And, ast.Or, ast.UnaryOp, ast.BinOp, ast.IfExp, ast.Call,
    *_COMPARE, *_BINARY, *_UNARY,
)  # fmt: skip
_NODE_WORDS = {
    ast.Lambda: "lambda", ast.ListComp: "comprehension", ast.SetComp: "comprehension",
    ast.DictComp: "comprehension", ast.GeneratorExp: "generator expression", ast.JoinedStr: "f-string",
    ast.NamedExpr: "assignment (:=)", ast.Starred: "starred argument", ast.Await: "await",
    ast.Yield: "yield", ast.YieldFrom: "yield", ast.Pow: "'**'", ast.Dict: "dict literal", ast.Set: "set literal",
}  # fmt: skip


@dataclass(frozen=True)
class Reference:
    """A field an expression reads: ``evidence.features`` is ``Reference("evidence", "features", col)``."""

    root: str
    field: str | None  # None when the whole root is used (``len(evidence)``, ``item``)
    offset: int


@dataclass(frozen=True)
class Checked:
    """An expression that passed the whitelist, with what it reads."""

    source: str
    tree: ast.Expression
    references: tuple[Reference, ...]
    functions: tuple[str, ...]


def check(source: str, roots: frozenset[str] | set[str] = ROOTS) -> Checked:
    """Parse an expression and refuse anything outside the whitelist, without running it.

    Args:
        source: The expression text.
        roots: The names it may use (a trigger condition may not use ``results`` or ``item``).

    Raises:
        ExpressionError: Not valid, or not allowed, with the column it starts at.
    """
    if not isinstance(source, str):
        raise ExpressionError(f"an expression must be text, got {type(source).__name__}")
    if not source.strip():
        raise ExpressionError("empty expression")
    if len(source) > MAX_LENGTH:
        raise ExpressionError(f"expression is {len(source)} characters long; the limit is {MAX_LENGTH}")
    try:
        with warnings.catch_warnings():  # e.g. "'int' object is not callable": the whitelist decides instead
            warnings.simplefilter("ignore")
            tree = ast.parse(source.strip(), mode="eval")
    except SyntaxError as error:
        text = source.strip()
        if not error.offset:  # Python points nowhere when the text simply stops
            raise ExpressionError("incomplete expression: it ends too early", len(text)) from None
        detail = "" if error.msg == "invalid syntax" else f": {error.msg}"
        raise ExpressionError(f"invalid syntax{detail}", min(error.offset - 1, len(text))) from None
    except (ValueError, RecursionError, MemoryError) as error:
        raise ExpressionError(f"cannot parse: {type(error).__name__}") from None
    references: list[Reference] = []
    functions: list[str] = []
    _check_node(tree, frozenset(roots), references, functions, depth=0)
    return Checked(source, tree, tuple(references), tuple(functions))


def _check_node(
    node: ast.AST, roots: frozenset[str], refs: list[Reference], functions: list[str], depth: int
) -> None:
    column = getattr(node, "col_offset", 0)
    if depth > MAX_DEPTH:
        raise ExpressionError(f"expression nests deeper than {MAX_DEPTH} levels", column)
    if not isinstance(node, _ALLOWED_NODES):
        word = _NODE_WORDS.get(type(node), type(node).__name__)
        raise ExpressionError(f"{word} is not allowed in a runbook expression", column, unsafe=True)
    if isinstance(node, ast.Constant) and not (
        node.value is None or isinstance(node.value, bool | int | float | str)
    ):
        raise ExpressionError(f"constant of type {type(node.value).__name__} is not allowed", column)
    if isinstance(node, ast.Name):
        if node.id not in roots:
            known = ", ".join(sorted(roots))
            raise ExpressionError(f"unknown name {node.id!r}; an expression may use {known}", column)
        refs.append(Reference(node.id, None, column))
    if isinstance(node, ast.Attribute):
        _check_node(node.value, roots, refs, functions, depth + 1)  # report the innermost offence first
        if node.attr.startswith("_"):
            where = (node.end_col_offset or len(node.attr)) - len(node.attr)
            raise ExpressionError(
                f"attribute {node.attr!r} is not allowed (names starting with '_' are private)",
                where,
                unsafe=True,
            )
        if isinstance(node.value, ast.Name):
            refs.append(Reference(node.value.id, node.attr, column))
        return
    if (
        isinstance(node, ast.Subscript)
        and isinstance(node.slice, ast.Constant)
        and isinstance(node.slice.value, str)
        and node.slice.value.startswith("_")
    ):
        raise ExpressionError(
            f"key {node.slice.value!r} is not allowed (names starting with '_' are private)",
            column,
            unsafe=True,
        )
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTION_NAMES:
            called = node.func.id if isinstance(node.func, ast.Name) else ast.unparse(node.func)
            allowed = ", ".join(sorted(FUNCTION_NAMES))
            raise ExpressionError(
                f"calling {called!r} is not allowed; functions: {allowed}", column, unsafe=True
            )
        if node.keywords:
            raise ExpressionError("keyword arguments are not allowed", column)
        functions.append(node.func.id)
        for argument in node.args:
            _check_node(argument, roots, refs, functions, depth + 1)
        return  # the function name is not a root
    field = _field_of(node)
    if field is not None:
        refs.append(Reference(field[0], field[1], column))
    for child in ast.iter_child_nodes(node):
        _check_node(child, roots, refs, functions, depth + 1)


def _field_of(node: ast.AST) -> tuple[str, str] | None:
    """(root, field) when ``node`` names a field of a root: ``evidence["x"]`` or ``"x" in evidence``.

    (``evidence.x`` is recorded where attributes are checked.)
    """
    if (
        isinstance(node, ast.Subscript)
        and isinstance(node.value, ast.Name)
        and isinstance(node.slice, ast.Constant)
        and isinstance(node.slice.value, str)
    ):
        return node.value.id, node.slice.value
    if (  # "recall" in evidence: a membership test names the field it looks for
        isinstance(node, ast.Compare)
        and len(node.ops) == 1
        and isinstance(node.ops[0], ast.In | ast.NotIn)
        and isinstance(node.left, ast.Constant)
        and isinstance(node.left.value, str)
        and isinstance(node.comparators[0], ast.Name)
    ):
        return node.comparators[0].id, node.left.value
    return None


def evaluate(expression: str | Checked, names: Mapping[str, Any], *, max_steps: int = MAX_STEPS) -> Any:
    """Evaluate an expression over a scope of plain data (mappings, lists, numbers, strings).

    Args:
        expression: The text, or the result of `check`.
        names: The roots it may read, e.g. ``{"evidence": {...}, "serving": {...}}``.
        max_steps: Budget of syntax-tree nodes visited.

    Raises:
        ExpressionError: Not allowed, a missing field, a type error, or over budget.
    """
    checked = expression if isinstance(expression, Checked) else check(expression, frozenset(names) & ROOTS)
    return _Interpreter(names, max_steps).run(checked.tree.body)


class _Interpreter:
    def __init__(self, names: Mapping[str, Any], max_steps: int) -> None:
        self.names = names
        self.steps_left = max_steps

    def run(self, node: ast.expr) -> Any:
        self.steps_left -= 1
        column = getattr(node, "col_offset", 0)
        if self.steps_left < 0:
            raise ExpressionError("expression exceeded its evaluation budget", column)
        try:
            return _bounded(self._node(node), column)
        except ExpressionError:
            raise
        except (TypeError, ValueError, ZeroDivisionError, IndexError, KeyError, OverflowError) as error:
            raise ExpressionError(f"{type(error).__name__}: {error}", column) from None

    def _node(self, node: ast.expr) -> Any:
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            if node.id not in self.names:
                raise ExpressionError(f"{node.id!r} is not available here", node.col_offset)
            return self.names[node.id]
        if isinstance(node, ast.Attribute):
            return _field(self.run(node.value), node.attr, node.col_offset)
        if isinstance(node, ast.Subscript):
            return self._subscript(node)
        if isinstance(node, ast.List | ast.Tuple):
            values = [self.run(element) for element in node.elts]
            return values if isinstance(node, ast.List) else tuple(values)
        if isinstance(node, ast.BoolOp):
            result: Any = None
            for value in node.values:  # short-circuit exactly like Python
                result = self.run(value)
                if isinstance(node.op, ast.And) != bool(result):
                    return result
            return result
        if isinstance(node, ast.UnaryOp):
            return _UNARY[type(node.op)](self.run(node.operand))
        if isinstance(node, ast.BinOp):
            left, right = self.run(node.left), self.run(node.right)
            # Only numbers, and '+' joining text or lists: "%999999999d" % 1 or "x" * 10**9 would be huge.
            joining = (
                isinstance(node.op, ast.Add)
                and type(left) is type(right)
                and isinstance(left, str | list | tuple)
            )
            if not joining and not (_is_number(left) and _is_number(right)):
                raise ExpressionError(
                    "arithmetic works on numbers ('+' also joins text or lists)", node.col_offset
                )
            return _BINARY[type(node.op)](left, right)
        if isinstance(node, ast.Compare):
            left = self.run(node.left)
            for op, comparator in zip(node.ops, node.comparators, strict=True):
                right = self.run(comparator)
                if not _COMPARE[type(op)](left, right):
                    return False
                left = right
            return True
        if isinstance(node, ast.IfExp):
            return self.run(node.body) if self.run(node.test) else self.run(node.orelse)
        if isinstance(node, ast.Call):
            assert isinstance(node.func, ast.Name)  # guaranteed by `check`
            arguments = [self.run(argument) for argument in node.args]
            if node.func.id in SCOPE_FUNCTIONS:
                return SCOPE_FUNCTIONS[node.func.id](self.names, *arguments)
            return FUNCTIONS[node.func.id](*arguments)
        raise ExpressionError(f"{type(node).__name__} is not allowed", getattr(node, "col_offset", 0))

    def _subscript(self, node: ast.Subscript) -> Any:
        container = self.run(node.value)
        if isinstance(node.slice, ast.Slice):
            parts = [
                None if p is None else self.run(p)
                for p in (node.slice.lower, node.slice.upper, node.slice.step)
            ]
            if not all(p is None or isinstance(p, int) for p in parts):
                raise ExpressionError("slice bounds must be integers", node.col_offset)
            if not isinstance(container, list | tuple | str):
                raise ExpressionError(f"cannot slice a {type(container).__name__}", node.col_offset)
            return container[slice(*parts)]
        key = self.run(node.slice)
        if isinstance(container, Mapping):
            if not isinstance(key, str):
                raise ExpressionError("mapping keys are text", node.col_offset)
            return _field(container, key, node.col_offset)
        if isinstance(container, list | tuple | str) and isinstance(key, int) and not isinstance(key, bool):
            return container[key]
        raise ExpressionError(
            f"cannot index a {type(container).__name__} with {type(key).__name__}", node.col_offset
        )


def _field(container: Any, name: str, column: int) -> Any:
    # Only mappings have fields: an expression never reaches a Python object's attributes or methods.
    if name.startswith("_"):
        raise ExpressionError(f"field {name!r} is not allowed", column, unsafe=True)
    if not isinstance(container, Mapping):
        raise ExpressionError(f"cannot read field {name!r} of a {type(container).__name__}", column)
    if name not in container:
        known = ", ".join(sorted(map(str, container))[:20])
        raise ExpressionError(f"no field {name!r} (has: {known})", column)
    return container[name]


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _bounded(value: Any, column: int) -> Any:
    if isinstance(value, str | list | tuple) and len(value) > MAX_SIZE:
        raise ExpressionError(f"value grew past {MAX_SIZE} elements", column)
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INT:
        raise ExpressionError("number too large", column)
    return value
