"""Shape domain results as JSON-ready dicts (the ``crsmon grade`` output contract).

Keys of a graded line: ``id``, ``astct_grade``, ``reasons`` (one sentence each),
``missing_inputs``, ``flags`` (codes), ``rule_set``; plus ``flag_details`` (code,
kind, field, message) and ``rule_set_version``. Episodes add
``per_observation_astct_grades``, ``onset_t_hours``, ``max_grade_t_hours``,
``resolution_t_hours``, ``duration_hours``, ``courses`` (each CRS course when
CRS recurred after resolution) and ``observations`` (each observation's grade
with its own reasons). An unreadable line is
``{"id", "line", "error"}``.
"""

from __future__ import annotations

from typing import Any

from crsmon.domain.results import EpisodeResult, Flag, GradeResult, Reason
from crsmon.domain.rules import RuleSet

LineId = str | int | None
"""A line's ``id`` as sent (validated at the edge), or ``None``."""


def _reasons(reasons: tuple[Reason, ...]) -> list[str]:
    return [r.text for r in reasons]


def _explained(
    line_id: LineId, result: GradeResult | EpisodeResult, rules: RuleSet
) -> dict[str, Any]:
    """The keys every graded line has."""
    return {
        "id": line_id,
        "astct_grade": result.grade,
        "reasons": _reasons(result.reasons),
        "missing_inputs": list(result.missing_inputs),
        "flags": list(result.flag_codes),
        "rule_set": result.rule_set,
        "rule_set_version": rules.version,
        "flag_details": flag_details(result.flags),
    }


def flag_details(flags: tuple[Flag, ...]) -> list[dict[str, Any]]:
    """Flags as JSON objects: code, kind, field and message."""
    return [
        {"code": f.code, "kind": str(f.kind), "field": f.field, "message": f.message}
        for f in flags
    ]


def assessment_json(
    line_id: LineId, result: GradeResult, rules: RuleSet
) -> dict[str, Any]:
    """One graded assessment line."""
    return _explained(line_id, result, rules)


def episode_json(
    line_id: LineId, result: EpisodeResult, rules: RuleSet
) -> dict[str, Any]:
    """One graded episode line."""
    return {
        **_explained(line_id, result, rules),
        "per_observation_astct_grades": list(result.per_observation_grades),
        "onset_t_hours": result.onset_t_hours,
        "max_grade_t_hours": result.max_grade_t_hours,
        "resolution_t_hours": result.resolution_t_hours,
        "duration_hours": result.duration_hours,
        "courses": [
            {
                "onset_t_hours": c.onset_t_hours,
                "max_grade": c.max_grade,
                "max_grade_t_hours": c.max_grade_t_hours,
                "resolution_t_hours": c.resolution_t_hours,
                "duration_hours": c.duration_hours,
            }
            for c in result.courses
        ],
        "observations": [
            {
                "t_hours": o.t_hours,
                "input_index": o.input_index,
                "astct_grade": o.result.grade,
                "reasons": _reasons(o.result.reasons),
                "missing_inputs": list(o.result.missing_inputs),
                "flags": list(o.result.flag_codes),
            }
            for o in result.observations
        ],
    }


def error_json(line_id: LineId, line_no: int, error: str) -> dict[str, Any]:
    """A line that could not be graded, and why."""
    return {"id": line_id, "line": line_no, "error": error}
