"""Spec: the course of an episode (grading.md §5, A6, A16).

Each case is a table of observations (``t`` in hours since infusion, the input
columns of ``spec_tables`` and the expected ``grade`` of that observation) plus
the treatments given and the expected onset, maximum and resolution.
"""

from dataclasses import replace

import pytest
from spec_tables import build_assessment, parse_table

from crsmon.domain import Episode, Treatment, grade_episode, resolve_rule_set
from crsmon.domain.results import EpisodeResult
from crsmon.domain.vocab import TreatmentDrug


def run(
    table: str,
    treatments: dict[float, str] | None = None,
    settings: str = "",
    *,
    shuffle: bool = False,
) -> EpisodeResult:
    """Grade an episode table and check each observation's expected grade."""
    rows = parse_table(table)
    if shuffle:
        rows.reverse()
    observations = [replace(build_assessment(r), t_hours=float(r["t"])) for r in rows]
    episode = Episode(
        age_years=34.0,
        observations=tuple(observations),
        treatments=tuple(
            Treatment(t, TreatmentDrug(d)) for t, d in (treatments or {}).items()
        ),
    )
    rules = resolve_rule_set("astct-2019" + (f"+{settings}" if settings else ""))
    result = grade_episode(episode, rules)
    expected = [int(rows[o.input_index]["grade"]) for o in result.observations]
    why = "\n".join(
        f"{o.t_hours}: " + "; ".join(r.text for r in o.result.reasons)
        for o in result.observations
    )
    assert list(result.per_observation_grades) == expected, why
    times = [o.t_hours for o in result.observations]
    assert times == sorted(times)
    assert result.grade == max(expected)
    assert result.rule_set == rules.key
    return result


COURSE = """
| t   | temp | o2            | flow | pressors       | grade |
| 12  | 37.4 |               |      |                | 0     |
| 24  | 38.3 |               |      |                | 1     |
| 30  | 39.1 | nasal_cannula | 2    |                | 2     |
| 36  | 37.0 | nasal_cannula | 2    | norepinephrine | 3     |
| 48  | 36.9 | nasal_cannula | 1    |                | 2     |
| 72  | 36.8 |               |      |                | 0     |
| 100 | 36.7 |               |      |                | 0     |
"""


def test_onset_waiver_maximum_and_resolution() -> None:
    """Tocilizumab after onset waives fever; resolution is 72 h, 28 h of grade 0 on."""
    result = run(COURSE, {31: "tocilizumab"})
    assert result.onset_t_hours == 24
    assert result.max_grade_t_hours == 36
    assert result.resolution_t_hours == 72
    assert result.duration_hours == 48
    fired = {p for r in result.reasons for p in r.rule.split(", ")}
    assert {"§5.1", "§5.2", "§5.3", "§5.4", "R3"} <= fired


def test_input_order_does_not_matter() -> None:
    """Observations are graded in time order whatever order they arrive in."""
    result = run(COURSE, {31: "tocilizumab"}, shuffle=True)
    assert [o.t_hours for o in result.observations] == sorted(
        o.t_hours for o in result.observations
    )
    assert result.observations[0].input_index == 6


PREMEDICATION = """
| t  | temp | sbp | bolus | grade |
| 2  | 37.3 | 84  | y     | 0     |
| 20 | 38.6 |     |       | 1     |
| 26 | 37.9 | 86  | y     | 0     |
"""


def test_premedication_before_onset_does_not_waive_fever() -> None:
    """A3/§5.3: acetaminophen before onset leaves fever required; it is flagged."""
    result = run(PREMEDICATION, {0: "acetaminophen"})
    assert result.onset_t_hours == 20
    assert result.max_grade_t_hours == 20
    first, _, last = result.observations
    assert "possible_masked_crs" in first.result.flag_codes
    assert "afebrile_support_after_onset" in last.result.flag_codes
    assert "possible_masked_crs" in result.flag_codes


PREMEDICATION_LENIENT = """
| t  | temp | sbp | bolus | grade |
| 2  | 37.3 | 84  | y     | 2     |
| 20 | 38.6 |     |       | 1     |
| 26 | 37.9 | 86  | y     | 2     |
"""


def test_premedication_waives_under_the_lenient_reading() -> None:
    """masked_fever=lenient lets a pre-onset drug waive fever (A3 alternative)."""
    result = run(PREMEDICATION_LENIENT, {0: "acetaminophen"}, "masked_fever=lenient")
    assert result.onset_t_hours == 2
    assert result.rule_set == "astct-2019+masked_fever=lenient"


ONSET_MOMENT = """
| t  | temp | pressors       | grade |
| 10 | 37.0 | norepinephrine | 0     |
| 10 | 38.5 |                | 1     |
| 11 | 37.0 | norepinephrine | 3     |
"""


def test_established_only_after_the_onset_time() -> None:
    """Observations at the onset time need fever; a drug at onset waives later ones."""
    result = run(ONSET_MOMENT, {10: "dexamethasone"})
    assert result.onset_t_hours == 10
    assert result.max_grade_t_hours == 11
    assert "possible_masked_crs" in result.observations[0].result.flag_codes


def test_simultaneous_observations_grade_the_same_in_any_order() -> None:
    """Input order of observations at the same time never changes a grade."""
    forward = run(ONSET_MOMENT, {10: "dexamethasone"})
    backward = run(ONSET_MOMENT, {10: "dexamethasone"}, shuffle=True)
    assert sorted(forward.per_observation_grades) == sorted(
        backward.per_observation_grades
    )
    assert forward.grade == backward.grade
    assert forward.onset_t_hours == backward.onset_t_hours


RESOLUTION_MOMENT = """
| t  | temp | o2            | flow | grade |
| 10 | 38.5 |               |      | 1     |
| 20 | 37.0 |               |      | 0     |
| 44 | 37.0 |               |      | 0     |
| 44 | 38.2 | nasal_cannula | 2    | 2     |
| 50 | 37.0 |               |      | 0     |
"""


def test_a_moment_is_grade_0_only_if_every_observation_is() -> None:
    """§5.4: a grade-2 observation at 44 h breaks the grade-0 run from 20 h."""
    for shuffle in (False, True):
        result = run(RESOLUTION_MOMENT, shuffle=shuffle)
        assert result.resolution_t_hours is None
        assert result.max_grade_t_hours == 44


AFEBRILE_BEFORE_ONSET = """
| t  | temp | pressors       | grade |
| 10 | 37.0 | norepinephrine | 0     |
| 20 | 38.5 | norepinephrine | 3     |
"""


def test_afebrile_findings_before_onset_are_not_back_dated() -> None:
    """§5.1: onset is the first fever, not earlier afebrile hypotension."""
    result = run(AFEBRILE_BEFORE_ONSET)
    assert result.onset_t_hours == 20


WINDOW = """
| t  | temp | pressors       | grade |
| 24 | 38.5 |                | 1     |
| 34 | 37.0 | norepinephrine | 3     |
| 40 | 37.0 | norepinephrine | 0     |
"""


def test_waiver_window_setting_limits_the_waiver() -> None:
    """A6: with waiver_window=6h a dose at 30 h waives fever until 36 h only."""
    result = run(WINDOW, {30: "acetaminophen"}, "waiver_window=6h")
    assert result.rule_set == "astct-2019+waiver_window=6h"
    assert "afebrile_support_after_onset" in result.observations[2].result.flag_codes


WHOLE_EPISODE = """
| t  | temp | pressors       | grade |
| 24 | 38.5 |                | 1     |
| 34 | 37.0 | norepinephrine | 3     |
| 90 | 37.0 | norepinephrine | 3     |
"""


def test_waiver_lasts_the_episode_by_default() -> None:
    """A6 default: the waiver holds for the whole episode after onset."""
    run(WHOLE_EPISODE, {30: "acetaminophen"})


NO_CRS = """
| t  | temp | grade |
| 8  | 37.5 | 0     |
| 16 | 37.9 | 0     |
| 24 | 37.8 | 0     |
"""


def test_no_onset_means_no_times() -> None:
    """Without a fever there is no onset, maximum time, resolution or duration."""
    result = run(NO_CRS)
    assert result.onset_t_hours is None
    assert result.max_grade_t_hours is None
    assert result.resolution_t_hours is None
    assert result.duration_hours is None


SHORT_RESPITE = """
| t   | temp | grade |
| 24  | 38.4 | 1     |
| 36  | 37.0 | 0     |
| 48  | 37.1 | 0     |
| 54  | 38.2 | 1     |
| 60  | 37.0 | 0     |
| 72  | 37.0 | 0     |
| 84  | 36.9 | 0     |
"""


def test_resolution_needs_24_hours_of_grade_0() -> None:
    """§5.4: 18 h of grade 0 is not resolution; the next 24-h run is."""
    result = run(SHORT_RESPITE)
    assert result.resolution_t_hours == 60
    assert result.duration_hours == 36


UNRESOLVED = """
| t  | temp | grade |
| 24 | 38.4 | 1     |
| 36 | 37.0 | 0     |
| 48 | 37.1 | 0     |
"""


def test_not_resolved_when_the_data_ends_too_soon() -> None:
    """§5.4: a grade-0 run shorter than 24 h at the end of the data is not resolution."""
    result = run(UNRESOLVED)
    assert result.resolution_t_hours is None
    assert result.duration_hours is None


RECURRENCE = """
| t   | temp | pressors       | grade |
| 24  | 38.4 |                | 1     |
| 36  | 37.0 |                | 0     |
| 72  | 37.0 |                | 0     |
| 100 | 38.9 | norepinephrine | 3     |
| 110 | 37.0 |                | 0     |
| 140 | 37.0 |                | 0     |
"""


def test_recurrence_after_resolution_starts_a_new_course() -> None:
    """§5.5: a fever after resolution is a new course, reported beside the first."""
    result = run(RECURRENCE)
    first, second = result.courses
    assert (first.onset_t_hours, first.resolution_t_hours, first.max_grade) == (
        24,
        36,
        1,
    )
    assert (second.onset_t_hours, second.resolution_t_hours, second.max_grade) == (
        100,
        110,
        3,
    )
    assert result.onset_t_hours == 24
    assert result.max_grade_t_hours == 100
    assert result.resolution_t_hours == 110
    assert result.duration_hours == 110 - 24
    assert (first.duration_hours, second.duration_hours) == (12, 10)
    assert "crs_recurred_after_resolution" in result.flag_codes


STILL_RECURRING = """
| t   | temp | grade |
| 24  | 38.4 | 1     |
| 36  | 37.0 | 0     |
| 72  | 37.0 | 0     |
| 100 | 38.9 | 1     |
"""


def test_unresolved_last_course_leaves_the_episode_unresolved() -> None:
    """While the latest course is active the episode has no resolution."""
    result = run(STILL_RECURRING)
    assert result.courses[0].resolution_t_hours == 36
    assert result.resolution_t_hours is None
    assert result.duration_hours is None


WAIVER_AFTER_RESOLUTION = """
| t   | temp | pressors       | grade |
| 10  | 38.5 |                | 1     |
| 20  | 37.0 |                | 0     |
| 44  | 37.0 |                | 0     |
| 200 | 37.0 | norepinephrine | 0     |
"""


def test_waiver_ends_with_the_course() -> None:
    """After resolution, a new course needs its own fever (R2, §5.5)."""
    result = run(WAIVER_AFTER_RESOLUTION, {11: "acetaminophen"})
    assert len(result.courses) == 1
    assert "possible_masked_crs" in result.observations[3].result.flag_codes


DEATH = """
| t  | temp | o2            | flow | death | grade |
| 24 | 38.4 | nasal_cannula | 2    |       | 2     |
| 30 | 36.5 | bipap         |      | crs   | 5     |
"""


def test_crs_death_is_the_maximum() -> None:
    """R9: a death attributed to CRS is grade 5 and the episode's maximum."""
    result = run(DEATH)
    assert result.grade == 5
    assert result.max_grade_t_hours == 30


def test_missing_inputs_name_the_observation() -> None:
    """Missing inputs of an episode name the observation by its input index."""
    result = run(NO_CRS)
    assert "observations[0].sbp_mmhg" in result.missing_inputs


def test_observation_without_time_is_refused() -> None:
    """The engine needs t_hours on every observation."""
    episode = Episode(age_years=5.0, observations=(build_assessment({"temp": "38.5"}),))
    with pytest.raises(ValueError, match="t_hours"):
        grade_episode(episode, resolve_rule_set("astct-2019"))


LENIENT_TWO_COURSES = """
| t   | temp | pressors       | grade |
| 2   | 38.5 |                | 1     |
| 10  | 37.0 |                | 0     |
| 40  | 37.0 |                | 0     |
| 100 | 37.0 | norepinephrine | 0     |
"""


def test_a_dose_from_an_earlier_course_never_waives_a_new_one() -> None:
    """§5.5: even leniently, a premedication before course 1 cannot start course 2."""
    result = run(LENIENT_TWO_COURSES, {0: "acetaminophen"}, "masked_fever=lenient")
    assert len(result.courses) == 1
    last = result.observations[-1].result
    assert "possible_masked_crs" in last.flag_codes
    assert any("earlier, resolved CRS course" in f.message for f in last.flags)
