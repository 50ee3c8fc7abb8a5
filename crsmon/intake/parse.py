"""Read one feed record from JSON text: strictly, with errors naming the field."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import get_args

from pydantic import TypeAdapter, ValidationError

from crsmon.intake.schemas import (
    KEY_PATTERN,
    SYSTEM_PATTERN,
    ClinicalIn,
    FeedRecord,
    PatientIn,
)
from crsmon.schemas.errors import describe
from crsmon.schemas.jsonl import read_object

_FEED: TypeAdapter[FeedRecord] = TypeAdapter(FeedRecord)
_KINDS = frozenset(
    get_args(model.model_fields["kind"].annotation)[0]
    for model in get_args(PatientIn | ClinicalIn)
)
"""Every record kind (the discriminator's tags)."""


@dataclass(frozen=True, slots=True)
class Refused:
    """A record that was not accepted, with the reason and what could be read."""

    error: str
    source_system: str | None = None
    source_record_id: str | None = None


_SYSTEM = re.compile(SYSTEM_PATTERN)
_KEY = re.compile(KEY_PATTERN)


def _valid_or_none(pattern: re.Pattern[str], value: object) -> str | None:
    """The sender or key of a refused record, kept only if well formed (anything
    else, a NUL or a megabyte of it, stays in the kept payload alone)."""
    return value if isinstance(value, str) and pattern.fullmatch(value) else None


def parse_record(text: str, now: datetime) -> FeedRecord | Refused:
    """The record in ``text``, validated against the server time ``now``."""
    obj, problem = read_object(text)
    sender = None if obj is None else _valid_or_none(_SYSTEM, obj.get("source_system"))
    key = None if obj is None else _valid_or_none(_KEY, obj.get("source_record_id"))
    if problem is not None:
        return Refused(problem, sender, key)
    try:
        return _FEED.validate_json(text, strict=True, context={"now": now})
    except ValidationError as exc:
        return Refused(describe(exc, _KINDS), sender, key)
