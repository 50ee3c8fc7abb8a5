"""Turn validation failures into one actionable line: ``<field path>: <reason>``.

Error texts name the field and the rule that refused it and never echo the
submitted value (a rejected value may be a mistyped identifier).
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import ValidationError

_MESSAGES = {
    "extra_forbidden": "unknown field (not part of the schema; nothing is ignored)",
    "missing": "required field is missing",
    "finite_number": "must be a finite number (NaN and infinity are not accepted)",
}


def field_path(loc: Sequence[int | str]) -> str:
    """``("vasopressors", 0, "drug")`` -> ``vasopressors[0].drug``."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else part
    return path


def describe(error: ValidationError, prefix: Sequence[int | str] = ()) -> str:
    """All errors of ``error`` as ``path: reason`` joined by ``; ``."""
    lines = []
    for item in error.errors(include_input=False, include_url=False):
        message = _MESSAGES.get(item["type"], item["msg"])
        message = message.removeprefix("Value error, ")
        path = field_path((*prefix, *item["loc"])) or "$"
        lines.append(f"{path}: {message}")
    return "; ".join(dict.fromkeys(lines))
