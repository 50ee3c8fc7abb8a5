"""Turn validation failures into one actionable line: ``<field path>: <reason>``.

Error texts name the field and the rule that refused it and never echo the
submitted value (a rejected value may be a mistyped identifier).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence

from pydantic import ValidationError

_MESSAGES = {
    "extra_forbidden": "unknown field (not part of the schema; nothing is ignored)",
    "missing": "required field is missing",
    "union_tag_not_found": "required field is missing",
    "finite_number": "must be a finite number (NaN and infinity are not accepted)",
}


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,63}")
"""A name a schema field can have. Any other key a sender used (a NUL, a
megabyte, a pasted value) is not repeated: the path stops at its parent."""


def field_path(loc: Sequence[int | str]) -> str:
    """``("vasopressors", 0, "drug")`` -> ``vasopressors[0].drug``.

    The path ends before the first key that is not a field name (``""`` if that
    is the first), so a sender's arbitrary key is never echoed.
    """
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif _NAME.fullmatch(part):
            path += f".{part}" if path else part
        else:
            break
    return path


_OWN_PATH = re.compile(r"^[a-z_][a-z0-9_.\[\]]*: ")
"""A cross-field check's message that already starts with the field it is about."""


def describe(error: ValidationError, union_tags: Collection[str] = ()) -> str:
    """All errors of ``error`` as ``path: reason`` joined by ``; ``.

    ``union_tags`` are the tags of a discriminated union, which Pydantic puts in
    the location; they are not part of the field path a sender sees.
    """
    lines = []
    for item in error.errors(include_input=False, include_url=False):
        loc = item["loc"]
        if loc and loc[0] in union_tags:
            loc = loc[1:]
        message = _MESSAGES.get(item["type"], item["msg"])
        message = message.removeprefix("Value error, ")
        if item["type"] in ("union_tag_invalid", "union_tag_not_found"):
            loc = ("kind",)
            message = f"must be one of {', '.join(sorted(union_tags))}"
        if not loc and _OWN_PATH.match(message):
            lines.append(message)
        else:
            lines.append(f"{field_path(loc) or '$'}: {message}")
    return "; ".join(dict.fromkeys(lines))
