"""Grade JSON Lines: each line an assessment or an episode, each answered in order.

A thin shell over the core: read the line strictly, validate it at the edge,
grade it with the pure core, shape the reply. A bad line is answered with its
line number and the reason; it never stops the lines after it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from pydantic import ValidationError

from crsmon.domain.episodes import grade_episode
from crsmon.domain.grading import grade_assessment
from crsmon.domain.rules import RuleSet
from crsmon.presenters import assessment_json, episode_json, error_json
from crsmon.schemas.errors import describe
from crsmon.schemas.jsonl import read_object
from crsmon.schemas.snapshot import (
    AssessmentIn,
    EpisodeLineIn,
    LineIdValue,
    read_line_id,
)


def _readable_id(value: object) -> LineIdValue:
    """The id to echo on an error line: the line's id if valid, else null."""
    try:
        return read_line_id(value)
    except ValueError:
        return None


def grade_line(text: str, line_no: int, rules: RuleSet) -> dict[str, Any]:
    """Grade one JSON line; an ``error`` reply if it cannot be read or validated."""
    obj, problem = read_object(text)
    line_id = None if obj is None else _readable_id(obj.get("id"))
    if problem is not None:
        return error_json(line_id, line_no, problem)
    # The text is validated again in Pydantic's strict *JSON* mode: strict Python
    # mode would refuse enum values given as strings, lax mode would coerce types.
    try:
        if obj is not None and "episode" in obj:
            episode = EpisodeLineIn.model_validate_json(text)
            result = grade_episode(episode.episode.to_domain(), rules)
            return episode_json(episode.id, result, rules)
        assessment = AssessmentIn.model_validate_json(text)
        return assessment_json(
            assessment.id, grade_assessment(assessment.to_domain(), rules), rules
        )
    except ValidationError as exc:
        return error_json(line_id, line_no, describe(exc))


def grade_lines(lines: Iterable[str], rules: RuleSet) -> Iterator[dict[str, Any]]:
    """Grade each non-blank line in order (blank lines carry no record)."""
    for line_no, text in enumerate(lines, start=1):
        if text.strip():
            yield grade_line(text, line_no, rules)
