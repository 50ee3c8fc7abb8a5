"""Atheris harness (T10a): raw bytes -> JSON -> intake model -> unit normalization.

The bytes are a request body of ``POST /v1/records``: decoded as UTF-8 (the
API refuses anything else unread), read by the strict JSON reader, validated
by the feed models (:func:`crsmon.intake.parse.parse_record`) and, when
accepted, turned into stored rows (:meth:`rows`, :meth:`patient_row`), which
convert every value to its canonical UCUM unit.

Declared outcomes: a :class:`~crsmon.intake.parse.Refused` (the intake never
raises for bad input) or, before that, :class:`UnicodeDecodeError`. Anything
else raised is a finding, and so is an accepted value that is not finite,
outside its §4.4 reject bounds or outside the time window, a stored key too
long for its column, or a refusal without a field path.

Run: ``python fuzz/intake_fuzz.py [corpus dirs] -max_total_time=60 -timeout=1``
(see fuzz/README.md).
"""

from __future__ import annotations

import math
import re
import sys
from datetime import UTC, datetime
from typing import Any
from unicodedata import category

from crsmon.domain.plausibility import LIMITS
from crsmon.intake.parse import Refused, parse_record
from crsmon.intake.schemas import (
    EARLIEST_TIME,
    FUTURE_TOLERANCE,
    KEY_MAX_CHARS,
    KEY_PATTERN,
    SYSTEM_PATTERN,
    PatientIn,
)

NOW = datetime(2026, 3, 2, 12, tzinfo=UTC)
"""The server clock of every run (the seeds are timed before it)."""
DECLARED: tuple[type[Exception], ...] = (UnicodeDecodeError,)
_PATH = re.compile(r"^[$A-Za-z_][A-Za-z0-9_.\[\]-]*: ")


class Finding(AssertionError):
    """An invariant of the intake does not hold for this input."""


def check(holds: bool, what: str) -> None:
    """Raise a :class:`Finding` unless ``holds``."""
    if not holds:
        raise Finding(what)


def _leaves(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [leaf for item in value.values() for leaf in _leaves(item)]
    if isinstance(value, list | tuple):
        return [leaf for item in value for leaf in _leaves(item)]
    return [value]


def check_accepted(record: Any) -> None:
    """What the intake accepts is finite, in bounds and storable."""
    for leaf in _leaves(record.model_dump()):
        if isinstance(leaf, float):
            check(math.isfinite(leaf), "a non-finite number was accepted")
        elif isinstance(leaf, datetime):
            check(leaf.tzinfo is not None, "a naive time was accepted")
            check(leaf >= EARLIEST_TIME, "a time before the earliest was accepted")
            check(leaf <= NOW + FUTURE_TOLERANCE, "a future time was accepted")
        elif isinstance(leaf, str):
            check(
                all(c in "\t\n\r" or category(c) != "Cc" for c in leaf),
                "a control character was accepted",
            )
    if isinstance(record, PatientIn):
        row = record.patient_row()
        for name in ("age_years", "weight_kg", "ldh_u_l"):
            value = getattr(record, name)
            check(value is None or not LIMITS[name].rejects(value), name)
        if row.birth_date is not None:
            check(row.birth_date <= row.infusion_at.date(), "born after infusion")
        return
    for row in record.rows():
        check(len(row.key) <= KEY_MAX_CHARS, "a stored key is longer than its column")
        if row.value is not None:
            check(row.quantity is not None, "a value without its quantity")
            check(math.isfinite(row.value), "a non-finite canonical value")
            limit = LIMITS[str(row.quantity)]
            check(not limit.rejects(row.value), "a canonical value out of bounds")
            check(row.unit == limit.unit, "a value not in its canonical unit")


def check_refused(refused: Refused) -> None:
    """A refusal names a field (or ``$``) and keeps only well-formed keys."""
    check(bool(_PATH.match(refused.error)), "a refusal without a field path")
    for value, pattern in (
        (refused.source_system, SYSTEM_PATTERN),
        (refused.source_record_id, KEY_PATTERN),
    ):
        check(value is None or re.fullmatch(pattern, value) is not None, "bad key")


def test_one_input(data: bytes) -> None:
    """One body through the intake; raises only on a finding."""
    try:
        text = data.decode("utf-8")
    except DECLARED:
        return  # refused (and kept in quarantine) before any parsing
    result = parse_record(text, NOW)
    if isinstance(result, Refused):
        check_refused(result)
    else:
        check_accepted(result)


def main(argv: list[str]) -> None:
    """Fuzz this harness (fuzz_main.run: Atheris on crsmon's code only)."""
    from fuzz_main import run

    run(argv, __file__)


if __name__ == "__main__":
    main(sys.argv)
