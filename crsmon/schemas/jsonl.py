"""Strict JSON Lines reading: one object a line, no NaN, no duplicate keys.

Python's ``json`` accepts ``NaN``, reads ``1e999`` as infinity and silently keeps
the last of two equal keys; each would let a feed's value be changed without
anyone seeing it, so each is an error here, reported with the path of the value.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from crsmon.schemas.errors import field_path

MAX_LINE_BYTES = 1 << 20
"""A line longer than 1 MiB is refused unread."""

_JSON_TYPES = {
    dict: "object",
    list: "array",
    str: "string",
    int: "number",
    float: "number",
    bool: "boolean",
    type(None): "null",
}


class LineError(ValueError):
    """A line that cannot be read as one JSON object; ``str()`` is ``path: reason``."""


@dataclass(frozen=True)
class _NonFinite:
    """Stands in for ``NaN``/``Infinity`` while parsing, so its path can be named."""

    name: str


class _Object(dict[str, Any]):
    """A parsed JSON object that remembers the keys it was sent twice."""

    duplicates: tuple[str, ...] = ()


def _object(pairs: list[tuple[str, Any]]) -> _Object:
    obj = _Object()
    seen_twice = []
    for key, value in pairs:
        if key in obj:
            seen_twice.append(key)
        obj[key] = value
    obj.duplicates = tuple(seen_twice)
    return obj


def _first_problem(root: Any) -> str | None:
    """The first duplicate key or non-finite number, as ``path: reason``."""
    stack: list[tuple[tuple[int | str, ...], Any]] = [((), root)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, _NonFinite) or (
            isinstance(value, float) and not math.isfinite(value)
        ):
            where = field_path(path) or "$"
            return f"{where}: must be a finite number (NaN and infinity are not JSON)"
        if isinstance(value, _Object):
            if value.duplicates:
                key = field_path((*path, value.duplicates[0])) or "$"
                return f"{key}: duplicate key (a value must be sent once)"
            stack += [((*path, k), v) for k, v in reversed(value.items())]
        elif isinstance(value, list):
            stack += [((*path, i), v) for i, v in reversed(list(enumerate(value)))]
    return None


def read_object(text: str) -> tuple[dict[str, Any] | None, str | None]:
    """Parse one line as a JSON object.

    Returns:
        The object (``None`` if the line is not an object at all) and the first
        problem as ``path: reason`` (``None`` if the line is clean).
    """
    if len(text.encode("utf-8", "surrogatepass")) > MAX_LINE_BYTES:
        return None, f"$: line longer than {MAX_LINE_BYTES} bytes"
    try:
        value = json.loads(text, parse_constant=_NonFinite, object_pairs_hook=_object)
    except json.JSONDecodeError as exc:
        return None, f"$: not valid JSON ({exc.msg} at column {exc.colno})"
    except RecursionError:
        return None, "$: nested too deeply"
    except ValueError:
        # int() refuses a number of more than sys.get_int_max_str_digits() digits
        return None, "$: not valid JSON (a number with too many digits)"
    if not isinstance(value, dict):
        kind = _JSON_TYPES.get(type(value), "value")
        return None, f"$: must be a JSON object, not a JSON {kind}"
    return value, _first_problem(value)
