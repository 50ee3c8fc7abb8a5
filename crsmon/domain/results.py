"""What the grader returns: a grade that explains itself.

A :class:`GradeResult` names every finding it looked at, the value it saw, the
threshold or category that fired and the grade that finding supports (a
:class:`Reason`); the inputs it needed but did not have (``missing_inputs``);
data-quality and monitoring :class:`Flag` s; and the rule-set key it was graded
under.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class FlagKind(StrEnum):
    """Whether a flag questions the data or asks a clinician to look at the patient."""

    DATA_QUALITY = "data_quality"
    MONITORING = "monitoring"


@dataclass(frozen=True, slots=True)
class Reason:
    """One step of a grade's explanation.

    ``text`` renders it for people, e.g.
    ``hypoxia: nasal_cannula at 7.0 L/min > 6 L/min -> grade 3 [R6]``.
    ``grade`` is the grade this finding supports (``None`` for a step that
    supports no grade of its own, such as a note that organ toxicity is ignored).
    """

    rule: str
    finding: str
    value: str
    criterion: str
    outcome: str
    grade: int | None = None

    @property
    def text(self) -> str:
        """The reason as one line of text."""
        parts = [f"{self.finding}: {self.value}"]
        if self.criterion:
            parts.append(self.criterion)
        return f"{' '.join(parts)} -> {self.outcome} [{self.rule}]"


@dataclass(frozen=True, slots=True)
class Flag:
    """A data-quality question or a monitoring signal raised beside the grade."""

    code: str
    kind: FlagKind
    message: str
    field: str | None = None


def unique_codes(flags: tuple[Flag, ...]) -> tuple[str, ...]:
    """The flag codes in order, each once."""
    return tuple(dict.fromkeys(f.code for f in flags))


@dataclass(frozen=True, slots=True)
class GradeResult:
    """The ASTCT grade of one assessment and its explanation."""

    grade: int
    reasons: tuple[Reason, ...]
    missing_inputs: tuple[str, ...]
    flags: tuple[Flag, ...]
    rule_set: str

    @property
    def flag_codes(self) -> tuple[str, ...]:
        """The flag codes in order, each once."""
        return unique_codes(self.flags)


@dataclass(frozen=True, slots=True)
class ObservationGrade:
    """An episode observation's grade, with its time and its place in the input."""

    t_hours: float
    input_index: int
    result: GradeResult


@dataclass(frozen=True, slots=True)
class CrsCourse:
    """One course of CRS inside an episode: from a qualifying onset to resolution.

    A new qualifying grade after a resolution starts a new course (§5.5).
    """

    onset_t_hours: float
    max_grade: int
    max_grade_t_hours: float
    resolution_t_hours: float | None
    duration_hours: float | None


@dataclass(frozen=True, slots=True)
class EpisodeResult:
    """The course of one CRS episode (grading.md §5).

    ``observations`` are in time order. Times are hours since infusion; ``None``
    where undefined (no onset, grade 0, or not resolved within the data). With
    one course the summary is that course. With several (CRS recurred after a
    resolution), ``onset_t_hours`` is the first onset, ``grade`` and
    ``max_grade_t_hours`` the overall maximum, ``resolution_t_hours`` the last
    course's resolution and ``duration_hours`` = resolution - onset, so the
    §5.4 identity holds for the episode as a whole (both ``None`` while the last
    course is unresolved); ``courses`` has each course with its own duration.
    """

    grade: int
    observations: tuple[ObservationGrade, ...]
    courses: tuple[CrsCourse, ...]
    onset_t_hours: float | None
    max_grade_t_hours: float | None
    resolution_t_hours: float | None
    duration_hours: float | None
    reasons: tuple[Reason, ...]
    missing_inputs: tuple[str, ...]
    flags: tuple[Flag, ...]
    rule_set: str

    @property
    def per_observation_grades(self) -> tuple[int, ...]:
        """Per-observation grades in time order."""
        return tuple(o.result.grade for o in self.observations)

    @property
    def flag_codes(self) -> tuple[str, ...]:
        """The flag codes in order, each once."""
        return unique_codes(self.flags)
