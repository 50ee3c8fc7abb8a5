"""risk.md §3.7.4, the grader round trip, without a database.

Each feed line is read by the intake's own parser and turned into rows, and the
rows become the pure core's timeline by the repository's own mapping
(``crsmon.risk.dataset.read_feed`` and ``timeline_of``: corrections replace
what they supersede, as in the database);
the service's state builder and episode grader grade it. The service's grade is
then compared with the hidden truth wherever the course defines it:

- the maximum grade, the onset (the first febrile vitals) and the time the
  maximum is first charted, for every patient;
- the grade at every vitals time, except within 6 h after a change of support
  level, where the graded state legitimately lags (a bolus counts for 6 h).
  Rows with a fever attributed to another cause are included.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Any

import pytest

from crsmon.domain.catalog import resolve_rule_set
from crsmon.domain.episodes import grade_episode
from crsmon.domain.records import (
    PatientTimeline,
    Quantity,
)
from crsmon.domain.results import EpisodeResult
from crsmon.domain.state import StateSettings, episode_until, hours_since_infusion
from crsmon.risk.dataset import read_feed, timeline_of
from crsmon.synth import CohortDesign, FeedLine, Study, StudySpec

RULES = resolve_rule_set("astct-2019")


@dataclass
class Graded:
    truth: dict[str, Any]
    timeline: PatientTimeline
    result: EpisodeResult
    attributed_fever_times: set[float]


def grade_study(spec: StudySpec) -> list[Graded]:
    study = Study(spec)
    lines: list[FeedLine] = list(study.lines())
    now = max(line.at for line in lines)
    patients, refused = read_feed((line.text for line in lines), now=now)
    assert refused == []
    truth = {t["pseudonym"]: t for t in study.truth()[1:]}
    graded = []
    for name, collected in patients.items():
        tl = timeline_of(collected)
        until = max(row.occurred_at for _, row in collected.rows)
        episode, snapshots = episode_until(tl, until, StateSettings())
        attributed = {
            round(hours_since_infusion(tl, s.at), 4)
            for s in snapshots
            if s.assessment.fever_attributable_to_other_cause
            and (s.assessment.temperature_c or 0) >= 38.0
        }
        graded.append(
            Graded(truth[name], tl, grade_episode(episode, RULES), attributed)
        )
    return graded


def _close(a: float | None, b: float | None) -> bool:
    return (a is None) == (b is None) and (a is None or abs(a - (b or 0)) < 1e-3)


def check(graded: list[Graded]) -> tuple[int, int, int]:
    """Assert agreement; return (vitals times, defined, attributed-fever rows)."""
    total = defined = attributed = 0
    for g in graded:
        crs = g.truth["crs"]
        name = g.truth["pseudonym"]
        assert g.result.grade == g.truth["charted_max_grade"], name
        assert _close(g.result.onset_t_hours, crs["graded_onset_h"]), name
        assert _close(g.result.max_grade_t_hours, crs["charted_peak_h"]), name
        by_time: dict[float, int] = {}
        for obs in g.result.observations:
            t = round(obs.t_hours, 4)
            by_time[t] = max(by_time.get(t, 0), obs.result.grade)
        segments = g.truth["hidden_grade_segments"]
        starts = [s[0] for s in segments]
        vitals = sorted(
            {
                round(hours_since_infusion(g.timeline, m.observed_at), 4)
                for m in g.timeline.measurements
                if m.quantity is Quantity.TEMPERATURE_C
            }
        )
        for t in vitals:
            hidden = segments[bisect.bisect_right(starts, t) - 1][1]
            total += 1
            if hidden is None:
                continue
            defined += 1
            attributed += t in g.attributed_fever_times
            assert by_time[t] == hidden, (name, t)
    return total, defined, attributed


def test_the_service_grade_matches_the_hidden_grade() -> None:
    """30 patients × 28 days under the default design (latent grades)."""
    graded = grade_study(StudySpec(patients=30, seed=11))
    total, defined, attributed = check(graded)
    assert defined / total > 0.95
    assert attributed > 0  # fevers attributed to infection are in the check
    assert {g.truth["charted_max_grade"] for g in graded} >= {0, 1, 2, 3}


def test_the_round_trip_holds_when_tocilizumab_modifies_the_course() -> None:
    design = CohortDesign(toci_modifies_course=True, grade_mode="quota")
    graded = grade_study(StudySpec(patients=25, seed=12, design=design, days=21))
    check(graded)
    assert {g.truth["charted_max_grade"] for g in graded} == {0, 1, 2, 3, 4}


def test_a_death_from_crs_is_graded_5() -> None:
    """Potential grade 4 patients who all die on day 7–60 (half of CRS)."""
    design = CohortDesign(
        grade_mode="quota", grade_shares=(0, 0, 0, 0, 1), grade4_death_p=1.0
    )
    graded = grade_study(StudySpec(patients=6, seed=5, design=design, days=14))
    check(graded)
    grades = {g.truth["charted_max_grade"] for g in graded}
    assert 5 in grades
    for g in graded:
        died_of_crs = g.truth["outcomes"]["death_cause"] == "crs"
        assert (g.result.grade == 5) == died_of_crs


@pytest.mark.parametrize("seed", [21, 22])
def test_the_round_trip_on_more_seeds(seed: int) -> None:
    check(grade_study(StudySpec(patients=15, seed=seed)))
