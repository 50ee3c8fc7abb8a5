"""Strict JSON Lines reading: one object a line, no NaN, no duplicate keys.

Python's ``json`` accepts ``NaN`` and silently keeps the last of two equal keys;
either would let a feed's value be changed without anyone seeing it, so both are
errors here.
"""

from __future__ import annotations

import json
from typing import Any

MAX_LINE_BYTES = 1 << 20
"""A line longer than 1 MiB is refused unread."""


class LineError(ValueError):
    """A line that cannot be read as one JSON object; ``str()`` is ``path: reason``."""


def _reject_constant(name: str) -> Any:
    raise LineError(f"$: {name} is not valid JSON (numbers must be finite)")


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise LineError(f"{key}: duplicate key (a value must be sent once)")
        obj[key] = value
    return obj


def read_object(text: str) -> dict[str, Any]:
    """Parse one line as a JSON object.

    Raises:
        LineError: not JSON, not an object, too long, NaN/Infinity, or a key twice.
    """
    if len(text.encode("utf-8", "surrogatepass")) > MAX_LINE_BYTES:
        raise LineError(f"$: line longer than {MAX_LINE_BYTES} bytes")
    try:
        value = json.loads(
            text, parse_constant=_reject_constant, object_pairs_hook=_no_duplicate_keys
        )
    except json.JSONDecodeError as exc:
        raise LineError(f"$: not valid JSON ({exc.msg} at column {exc.colno})") from None
    except RecursionError:
        raise LineError("$: nested too deeply") from None
    if not isinstance(value, dict):
        raise LineError(f"$: must be a JSON object, not a {type(value).__name__}")
    return value
