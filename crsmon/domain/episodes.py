"""The episode engine: grades a course of observations (grading.md §0.2 and §5).

ASTCT grades a state; it does not say when CRS starts or ends (A16). The project
conventions applied here, each cited in the reasons:

- §5.1 onset is the first observation with grade >= 1 (so a qualifying fever);
- ``crs_established`` holds for observations *after* the onset time, until the
  course resolves;
- §5.3 a fever-masking drug given at or after onset waives fever for later
  observations (R3; for the rest of the course by default, A6); one given
  before onset does not (A3) but raises ``possible_masked_crs`` where it could
  hide CRS;
- §5.2 the maximum grade, timed at its first occurrence;
- §5.4 resolution is the first grade-0 time after onset followed by at least
  24 h of grade-0 observations; duration = resolution - onset;
- §5.5 a qualifying grade after resolution starts a new course, which needs its
  own qualifying fever and its own post-onset drug for the waiver.

Observations at the same time are one moment: they are graded with the same
derived state, so their order in the input never changes a grade, and a moment
counts as grade 0 only when every observation at it is grade 0.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from itertools import groupby, pairwise

from crsmon.domain.explain import num
from crsmon.domain.grading import grade_assessment
from crsmon.domain.results import (
    CrsCourse,
    EpisodeResult,
    Flag,
    FlagKind,
    ObservationGrade,
    Reason,
)
from crsmon.domain.rules import MaskedFever, RuleSet
from crsmon.domain.snapshot import Assessment, Episode, MaskingDrug, Treatment


@dataclass
class _OpenCourse:
    onset: float
    max_grade: int
    max_t: float
    zero_since: float | None = None
    resolution: float | None = None

    def close(self) -> CrsCourse:
        resolved = self.resolution
        return CrsCourse(
            onset_t_hours=self.onset,
            max_grade=self.max_grade,
            max_grade_t_hours=self.max_t,
            resolution_t_hours=resolved,
            duration_hours=None if resolved is None else resolved - self.onset,
        )


def grade_episode(episode: Episode, rules: RuleSet) -> EpisodeResult:
    """Grade every observation of an episode in time order and summarise its course.

    Raises:
        ValueError: an observation has no ``t_hours``.
    """
    timed = sorted(
        ((_time_of(o, i), i, o) for i, o in enumerate(episode.observations)),
        key=lambda item: item[0],
    )
    treatments = sorted(episode.treatments, key=lambda tr: tr.t_hours)
    graded: list[ObservationGrade] = []
    courses: list[_OpenCourse] = []
    current: _OpenCourse | None = None
    for t, moment in groupby(timed, key=lambda item: item[0]):
        onset = None if current is None else current.onset
        resolved = [c.resolution for c in courses if c.resolution is not None]
        drugs = _masking_drugs(t, onset, max(resolved, default=None), treatments, rules)
        for _, index, observation in moment:
            derived = replace(
                observation,
                crs_established=onset is not None and t > onset,
                masking_drugs=drugs,
            )
            graded.append(ObservationGrade(t, index, grade_assessment(derived, rules)))
        top = max(g.result.grade for g in graded if g.t_hours == t)
        if current is None:
            if top >= 1:
                current = _OpenCourse(onset=t, max_grade=top, max_t=t)
                courses.append(current)
        elif _advance(current, t, top, rules):
            current = None
    return _summarise(graded, [c.close() for c in courses], treatments, rules)


def _time_of(observation: Assessment, index: int) -> float:
    if observation.t_hours is None:
        raise ValueError(f"observations[{index}] has no t_hours")
    return observation.t_hours


def _advance(course: _OpenCourse, t: float, top: int, rules: RuleSet) -> bool:
    """Update an open course with the grade of the moment ``t``; True once resolved."""
    if top > course.max_grade:
        course.max_grade, course.max_t = top, t
    if top:
        course.zero_since = None
        return False
    if course.zero_since is None:
        course.zero_since = t
    span = t - course.zero_since
    if span < rules.resolution_window_h:
        return False
    course.resolution = course.zero_since
    return True


def dose_kind(
    dose_t: float,
    t: float,
    onset: float | None,
    last_resolution: float | None,
    rules: RuleSet,
) -> MaskingDrug | None:
    """How a dose given at ``dose_t`` bears on an observation at ``t`` (R3, A3, A6).

    ``onset`` is the current course's onset (``None`` between courses) and
    ``last_resolution`` the resolution of the latest resolved course. A dose
    given before that belongs to an earlier course's history. ``None``: the dose
    comes after ``t`` or, outside the current course, its window has run out.
    """
    if dose_t > t:
        return None
    window = rules.conventions.waiver_window_h
    in_window = window is None or t - dose_t <= window
    if onset is not None and dose_t >= onset:
        return MaskingDrug.SINCE_ONSET if in_window else MaskingDrug.EXPIRED
    if not in_window:
        return None
    if last_resolution is not None and dose_t < last_resolution:
        return MaskingDrug.EARLIER_COURSE
    return MaskingDrug.BEFORE_ONSET


def _masking_drugs(
    t: float,
    onset: float | None,
    last_resolution: float | None,
    treatments: list[Treatment],
    rules: RuleSet,
) -> frozenset[MaskingDrug]:
    kinds = (
        dose_kind(tr.t_hours, t, onset, last_resolution, rules) for tr in treatments
    )
    return frozenset(k for k in kinds if k is not None)


def _summarise(
    graded: list[ObservationGrade],
    courses: list[CrsCourse],
    treatments: list[Treatment],
    rules: RuleSet,
) -> EpisodeResult:
    top = max((g.result.grade for g in graded), default=0)
    peak = next((g for g in graded if top and g.result.grade == top), None)
    end = courses[-1].resolution_t_hours if courses else None
    reasons = [_onset_reason(courses)]
    reasons += _treatment_reasons(treatments, courses, rules)
    if peak is not None:
        reasons.append(
            Reason(
                "§5.2",
                "maximum",
                f"grade {top} first reached at {num(peak.t_hours)} h",
                "",
                f"grade {top}",
                top,
            )
        )
        reasons += peak.result.reasons
    reasons += [_resolution_reason(c, rules) for c in courses]
    flags = _collect_flags(graded) + _recurrences(courses)
    missing = [
        f"observations[{g.input_index}].{path}"
        for g in graded
        for path in g.result.missing_inputs
    ]
    return EpisodeResult(
        grade=top,
        observations=tuple(graded),
        courses=tuple(courses),
        onset_t_hours=courses[0].onset_t_hours if courses else None,
        max_grade_t_hours=None if peak is None else peak.t_hours,
        resolution_t_hours=end,
        duration_hours=None if end is None else end - courses[0].onset_t_hours,
        reasons=tuple(reasons),
        missing_inputs=tuple(missing),
        flags=tuple(flags),
        rule_set=rules.key,
    )


def _onset_reason(courses: list[CrsCourse]) -> Reason:
    if not courses:
        return Reason(
            "§5.1", "onset", "no observation reached grade 1", "", "no CRS onset"
        )
    onset = courses[0].onset_t_hours
    return Reason(
        "§5.1",
        "onset",
        f"first observation with grade >= 1 at {num(onset)} h",
        "",
        f"onset at {num(onset)} h",
    )


def _treatment_reasons(
    treatments: list[Treatment], courses: list[CrsCourse], rules: RuleSet
) -> list[Reason]:
    lenient = rules.conventions.masked_fever is MaskedFever.LENIENT
    reasons = []
    for tr in treatments:
        course = next(
            (
                c
                for c in courses
                if c.onset_t_hours <= tr.t_hours
                and (c.resolution_t_hours is None or tr.t_hours < c.resolution_t_hours)
            ),
            None,
        )
        if course is not None:
            rule = "§5.3, R3"
            criterion = f"at or after onset ({num(course.onset_t_hours)} h)"
            outcome = "fever not required for later observations of this course"
        elif lenient:
            rule, criterion = "§5.3, A3", "(before onset; masked_fever=lenient)"
            outcome = "fever not required for later observations, until CRS resolves"
        else:
            rule, criterion = "§5.3, A3", "(before onset)"
            outcome = "does not waive fever"
        when = f"{tr.drug} at {num(tr.t_hours)} h"
        reasons.append(Reason(rule, "fever waiver", when, criterion, outcome))
    return reasons


def _resolution_reason(course: CrsCourse, rules: RuleSet) -> Reason:
    window = f"(>= {rules.resolution_window_h:g} h of grade-0 observations)"
    onset = f"course from {num(course.onset_t_hours)} h"
    if course.resolution_t_hours is None:
        return Reason(
            "§5.4",
            "resolution",
            f"{onset}: no grade-0 run long enough within the data",
            window,
            "not resolved",
        )
    return Reason(
        "§5.4",
        "resolution",
        f"{onset}: grade 0 from {num(course.resolution_t_hours)} h on",
        window,
        f"resolved at {num(course.resolution_t_hours)} h, duration "
        f"{num(course.duration_hours or 0.0)} h",
    )


def _collect_flags(graded: list[ObservationGrade]) -> list[Flag]:
    return [
        replace(flag, message=f"at {num(g.t_hours)} h: {flag.message}")
        for g in graded
        for flag in g.result.flags
    ]


def _recurrences(courses: list[CrsCourse]) -> list[Flag]:
    return [
        Flag(
            "crs_recurred_after_resolution",
            FlagKind.MONITORING,
            f"CRS recurred: a new course began at {num(later.onset_t_hours)} h "
            f"after resolution at {num(earlier.resolution_t_hours or 0.0)} h "
            "(§5.5); the summary covers all courses, each is listed in courses",
        )
        for earlier, later in pairwise(courses)
    ]
