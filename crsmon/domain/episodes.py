"""The episode engine: grades a course of observations (grading.md §0.2 and §5).

ASTCT grades a state; it does not say when CRS starts or ends (A16). The project
conventions applied here, each cited in the reasons:

- §5.1 onset is the first observation with grade >= 1 (so a qualifying fever);
- ``crs_established`` holds for every observation after the onset observation;
- §5.3 a fever-masking drug given at or after onset waives fever for later
  observations (R3; for the whole episode by default, A6); one given before
  onset does not (A3) but raises ``possible_masked_crs`` where it could hide CRS;
- §5.2 the maximum grade, timed at its first occurrence;
- §5.4 resolution is the first grade-0 observation after onset followed by at
  least 24 h of grade-0 observations; duration = resolution - onset.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from crsmon.domain.grading import grade_assessment, num
from crsmon.domain.results import (
    EpisodeResult,
    Flag,
    FlagKind,
    ObservationGrade,
    Reason,
)
from crsmon.domain.rules import MaskedFever, RuleSet
from crsmon.domain.snapshot import Assessment, Episode, Treatment


@dataclass(frozen=True, slots=True)
class _Resolution:
    t_hours: float
    grade_zero_span_h: float


def grade_episode(episode: Episode, rules: RuleSet) -> EpisodeResult:
    """Grade every observation of an episode in time order and summarise its course.

    Raises:
        ValueError: an observation has no ``t_hours``.
    """
    timed = [(_time_of(o, i), i, o) for i, o in enumerate(episode.observations)]
    timed.sort(key=lambda item: item[0])  # stable: ties keep their input order
    treatments = sorted(episode.treatments, key=lambda tr: tr.t_hours)
    onset: float | None = None
    graded: list[ObservationGrade] = []
    for t, index, observation in timed:
        snapshot = _derive(observation, t, onset, treatments, rules)
        result = grade_assessment(snapshot, rules)
        graded.append(ObservationGrade(t, index, result))
        if onset is None and result.grade >= 1:
            onset = t
    return _summarise(graded, onset, treatments, rules)


def _time_of(observation: Assessment, index: int) -> float:
    if observation.t_hours is None:
        raise ValueError(f"observations[{index}] has no t_hours")
    return observation.t_hours


def _in_window(treatment: Treatment, t: float, rules: RuleSet) -> bool:
    window = rules.conventions.waiver_window_h
    return treatment.t_hours <= t and (window is None or t - treatment.t_hours <= window)


def _derive(
    observation: Assessment,
    t: float,
    onset: float | None,
    treatments: list[Treatment],
    rules: RuleSet,
) -> Assessment:
    """Set the fields the engine owns: established CRS and the fever-masking drugs."""
    given = [tr for tr in treatments if _in_window(tr, t, rules)]
    after_onset = [tr for tr in given if onset is not None and tr.t_hours >= onset]
    before_onset = [tr for tr in given if onset is None or tr.t_hours < onset]
    lenient = rules.conventions.masked_fever is MaskedFever.LENIENT
    return replace(
        observation,
        crs_established=onset is not None,
        antipyretic_or_anticytokine_given=bool(after_onset or (lenient and given)),
        masking_drug_before_onset=bool(before_onset),
    )


def _summarise(
    graded: list[ObservationGrade],
    onset: float | None,
    treatments: list[Treatment],
    rules: RuleSet,
) -> EpisodeResult:
    grades = [g.result.grade for g in graded]
    top = max(grades, default=0)
    peak = next((g for g in graded if top and g.result.grade == top), None)
    resolution = _resolution(graded, onset, rules)
    reasons = [_onset_reason(onset)]
    reasons += _treatment_reasons(treatments, onset)
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
    flags = _collect_flags(graded)
    if onset is not None:
        reasons.append(_resolution_reason(resolution, onset, rules))
        flags += _recurrence(graded, resolution)
    missing = [
        f"observations[{g.input_index}].{path}"
        for g in graded
        for path in g.result.missing_inputs
    ]
    return EpisodeResult(
        grade=top,
        observations=tuple(graded),
        onset_t_hours=onset,
        max_grade_t_hours=None if peak is None else peak.t_hours,
        resolution_t_hours=None if resolution is None else resolution.t_hours,
        duration_hours=(
            None if resolution is None or onset is None else resolution.t_hours - onset
        ),
        reasons=tuple(reasons),
        missing_inputs=tuple(missing),
        flags=tuple(flags),
        rule_set=rules.key,
    )


def _resolution(
    graded: list[ObservationGrade], onset: float | None, rules: RuleSet
) -> _Resolution | None:
    """§5.4: first grade-0 observation after onset followed by >= 24 h of grade 0."""
    if onset is None:
        return None
    onset_pos = next(i for i, g in enumerate(graded) if g.result.grade >= 1)
    start: ObservationGrade | None = None
    for g in graded[onset_pos + 1 :]:
        if g.result.grade:
            start = None
            continue
        start = start or g
        span = g.t_hours - start.t_hours
        if span >= rules.resolution_window_h:
            return _Resolution(start.t_hours, span)
    return None


def _onset_reason(onset: float | None) -> Reason:
    if onset is None:
        return Reason(
            "§5.1", "onset", "no observation reached grade 1", "", "no CRS onset"
        )
    return Reason(
        "§5.1",
        "onset",
        f"first observation with grade >= 1 at {num(onset)} h",
        "",
        f"onset at {num(onset)} h",
    )


def _treatment_reasons(treatments: list[Treatment], onset: float | None) -> list[Reason]:
    reasons = []
    for tr in treatments:
        when = f"{tr.drug} at {num(tr.t_hours)} h"
        if onset is not None and tr.t_hours >= onset:
            reasons.append(
                Reason(
                    "§5.3, R3",
                    "fever waiver",
                    when,
                    f"at or after onset ({num(onset)} h)",
                    "fever not required for later observations",
                )
            )
        else:
            reasons.append(
                Reason(
                    "§5.3, A3",
                    "fever waiver",
                    when,
                    "before onset" if onset is not None else "no CRS onset",
                    "does not waive fever",
                )
            )
    return reasons


def _resolution_reason(
    resolution: _Resolution | None, onset: float, rules: RuleSet
) -> Reason:
    window = f">= {rules.resolution_window_h:g} h of grade-0 observations"
    if resolution is None:
        return Reason(
            "§5.4",
            "resolution",
            "no grade-0 run after onset lasting long enough within the data",
            window,
            "not resolved",
        )
    return Reason(
        "§5.4",
        "resolution",
        f"grade 0 from {num(resolution.t_hours)} h for "
        f"{num(resolution.grade_zero_span_h)} h",
        window,
        f"resolved at {num(resolution.t_hours)} h, duration "
        f"{num(resolution.t_hours - onset)} h",
    )


def _collect_flags(graded: list[ObservationGrade]) -> list[Flag]:
    return [
        replace(flag, message=f"at {num(g.t_hours)} h: {flag.message}")
        for g in graded
        for flag in g.result.flags
    ]


def _recurrence(
    graded: list[ObservationGrade], resolution: _Resolution | None
) -> list[Flag]:
    if resolution is None:
        return []
    later = next(
        (g for g in graded if g.t_hours > resolution.t_hours and g.result.grade), None
    )
    if later is None:
        return []
    return [
        Flag(
            "crs_recurred_after_resolution",
            FlagKind.MONITORING,
            f"grade {later.result.grade} at {num(later.t_hours)} h after resolution at "
            f"{num(resolution.t_hours)} h: a new episode by the §5.5 suggestion; "
            "onset, maximum and duration here describe the first course",
        )
    ]
