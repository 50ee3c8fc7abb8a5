"""Atheris harness (T10): the NDJSON batch reader, line by line.

The bytes are a body of ``POST /v1/records/batch`` (or a feed file of
``crsmon ingest``, or a JSON-lines file of ``crsmon grade``). They are split
into lines exactly as the API's batch intake does (on ``\\n``, a trailing
``\\r`` dropped, blank lines skipped); each line is decoded as UTF-8, read by
the strict JSON-lines reader (:func:`crsmon.schemas.jsonl.read_object`), then
parsed as a feed record and graded as a ``crsmon grade`` line.

Declared outcomes: :class:`UnicodeDecodeError` for a line that is not UTF-8
(refused unread), a problem text from the reader, a refusal from the intake or
an ``error`` reply from the grade CLI. Anything raised is a finding, and so is
an object read with a non-finite number, an intake that disagrees with the
reader, or a problem without a field path.
"""

from __future__ import annotations

import math
import re
import sys
from datetime import UTC, datetime
from typing import Any

from crsmon.domain.catalog import resolve_rule_set
from crsmon.gradelines import grade_line
from crsmon.intake.parse import Refused, parse_record
from crsmon.schemas.jsonl import read_object

NOW = datetime(2026, 3, 2, 12, tzinfo=UTC)
RULES = resolve_rule_set("astct-2019")
MAX_LINES = 1000
"""The API's default ``max_batch_records``: a longer batch is refused unread."""
DECLARED: tuple[type[Exception], ...] = (UnicodeDecodeError,)
_PATH = re.compile(r"^[$A-Za-z_][A-Za-z0-9_.\[\]-]*: ")


class Finding(AssertionError):
    """An invariant of the reader does not hold for this input."""


def check(holds: bool, what: str) -> None:
    """Raise a :class:`Finding` unless ``holds``."""
    if not holds:
        raise Finding(what)


def batch_lines(raw: bytes) -> list[tuple[int, bytes]]:
    """The batch's non-blank lines with their 1-based numbers (as the API)."""
    return [
        (n, line.rstrip(b"\r"))
        for n, line in enumerate(raw.split(b"\n"), start=1)
        if line.strip()
    ]


def _finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    if isinstance(value, list):
        return all(_finite(v) for v in value)
    return True


def check_line(text: str, line_no: int) -> None:
    """One decoded line through the reader, the intake and the grade CLI."""
    obj, problem = read_object(text)
    if problem is None:
        check(isinstance(obj, dict), "no object and no problem")
        check(_finite(obj), "a non-finite number was read")
    else:
        check(bool(_PATH.match(problem)), "a problem without a field path")
    parsed = parse_record(text, NOW)
    if problem is not None:
        check(isinstance(parsed, Refused), "the intake took what the reader refused")
        if isinstance(parsed, Refused):
            check(parsed.error == problem, "the intake changed the reader's reason")
    reply = grade_line(text, line_no, RULES)
    check(isinstance(reply, dict), "the grade CLI gave no reply")
    if problem is not None:
        check(reply.get("error") == problem, "the grade CLI changed the reason")


def test_one_input(data: bytes) -> None:
    """One batch body, every line in order; raises only on a finding."""
    lines = batch_lines(data)
    if len(lines) > MAX_LINES:
        return  # refused whole with 413, unread
    for line_no, raw in lines:
        try:
            text = raw.decode("utf-8")
        except DECLARED:
            continue  # refused (and kept in quarantine) unread
        check_line(text, line_no)


def main(argv: list[str]) -> None:
    """Fuzz this harness (fuzz_main.run: Atheris on crsmon's code only)."""
    from fuzz_main import run

    run(argv, __file__)


if __name__ == "__main__":
    main(sys.argv)
