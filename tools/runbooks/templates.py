"""Argument templates: ``"{{ expression }}"`` inside a step's argument values.

A string that is exactly one template becomes the expression's value (a number stays a number); a
string mixing text and templates becomes text; lists and mappings are rendered inside.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tools.runbooks.expressions import ExpressionError, evaluate

TEMPLATE_OPEN, TEMPLATE_CLOSE = "{{", "}}"


def template_parts(text: str) -> list[tuple[bool, str, int]]:
    """Split ``"a {{ expr }} b"`` into ``(is_expression, text, offset)`` parts.

    Raises:
        ExpressionError: An unclosed ``{{``.
    """
    parts: list[tuple[bool, str, int]] = []
    position = 0
    while True:
        start = text.find(TEMPLATE_OPEN, position)
        if start < 0:
            if position < len(text):
                parts.append((False, text[position:], position))
            return parts
        end = text.find(TEMPLATE_CLOSE, start + 2)
        if end < 0:
            raise ExpressionError("'{{' without a closing '}}'", start)
        if start > position:
            parts.append((False, text[position:start], position))
        parts.append((True, text[start + 2 : end], start + 2))
        position = end + 2


def is_template(value: Any) -> bool:
    """Whether a value is (or contains, for lists and mappings) a ``{{ expression }}`` template."""
    if isinstance(value, str):
        return TEMPLATE_OPEN in value
    if isinstance(value, Mapping):
        return any(is_template(v) for v in value.values())
    if isinstance(value, list):
        return any(is_template(v) for v in value)
    return False


def render(value: Any, names: Mapping[str, Any]) -> Any:
    """Fill the templates in an argument value.

    A string that is exactly one ``{{ expression }}`` becomes the expression's value (a number stays a
    number); a string mixing text and templates becomes text. Lists and mappings are rendered inside.
    """
    if isinstance(value, Mapping):
        return {key: render(item, names) for key, item in value.items()}
    if isinstance(value, list):
        return [render(item, names) for item in value]
    if not isinstance(value, str) or TEMPLATE_OPEN not in value:
        return value
    parts = template_parts(value)
    if len(parts) == 1 and parts[0][0]:
        return evaluate(parts[0][1], names)
    return "".join(str(evaluate(text, names)) if is_expression else text for is_expression, text, _ in parts)


def template_expressions(value: Any) -> Sequence[tuple[str, int]]:
    """Every ``(expression, offset)`` inside a value's templates (offset within its own string)."""
    found: list[tuple[str, int]] = []
    if isinstance(value, Mapping):
        for item in value.values():
            found += template_expressions(item)
    elif isinstance(value, list):
        for item in value:
            found += template_expressions(item)
    elif isinstance(value, str) and TEMPLATE_OPEN in value:
        found += [(text, offset) for is_expression, text, offset in template_parts(value) if is_expression]
    return found
