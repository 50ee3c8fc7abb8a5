"""risk.md §3.7.4, the grader round trip, without a database.

Each feed line is read by the intake's own parser (``parse_record``) and turned
into rows (``rows()``); corrections replace what they supersede; the rows become
the pure core's timeline as ``crsmon.db.repository.timeline_from`` builds it;
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
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest

from crsmon.domain.catalog import resolve_rule_set
from crsmon.domain.episodes import grade_episode
from crsmon.domain.records import (
    AttributionRecord,
    BolusRecord,
    DeathRecord,
    Finding,
    InfusionRecord,
    Measurement,
    OxygenRecord,
    PatientTimeline,
    Quantity,
    TreatmentRecord,
)
from crsmon.domain.results import EpisodeResult
from crsmon.domain.state import StateSettings, episode_until, hours_since_infusion
from crsmon.domain.vocab import (
    OxygenDevice,
    TreatmentDrug,
    VasoactiveDrug,
    VasopressorDoseUnit,
)
from crsmon.intake.parse import Refused, parse_record
from crsmon.intake.rows import RecordRow
from crsmon.intake.schemas import PatientIn
from crsmon.synth import CohortDesign, FeedLine, Study, StudySpec

RULES = resolve_rule_set("astct-2019")


@dataclass
class Graded:
    truth: dict[str, Any]
    timeline: PatientTimeline
    result: EpisodeResult
    attributed_fever_times: set[float]


def measurement(row: RecordRow) -> Measurement:
    assert row.quantity is not None
    assert row.value is not None
    return Measurement(row.key, row.occurred_at, Quantity(row.quantity), row.value)


def timeline(enrolment: PatientIn, rows: list[RecordRow]) -> PatientTimeline:
    """The rows as the repository maps stored records onto the pure core."""
    superseded = {r.supersedes for r in rows if r.supersedes is not None}
    current = [r for r in rows if r.source_record_id not in superseded]
    kinds: dict[str, list[RecordRow]] = defaultdict(list)
    for r in current:
        kinds[r.kind].append(r)
    stops = {
        r.details["start_record_id"]: r.occurred_at for r in kinds["vasopressor_stop"]
    }
    deaths = [r for r in kinds["outcome"] if r.details["event"] == "death"]
    return PatientTimeline(
        infusion_at=enrolment.infusion_at,
        age_years_at_infusion=enrolment.age_years,
        weight_kg=enrolment.weight_kg,
        measurements=tuple(measurement(r) for r in kinds["measurement"]),
        oxygen=tuple(
            OxygenRecord(
                r.key,
                r.occurred_at,
                OxygenDevice(r.details["device"]),
                r.details.get("flow_l_min"),
                r.details.get("fio2"),
            )
            for r in kinds["oxygen"]
        ),
        infusions=tuple(
            InfusionRecord(
                r.key,
                VasoactiveDrug(r.details["drug"]),
                float(r.details["dose"]),
                VasopressorDoseUnit(r.details["unit"]),
                r.occurred_at,
                stops.get(r.source_record_id),
            )
            for r in kinds["vasopressor_start"]
        ),
        boluses=tuple(
            BolusRecord(r.key, r.occurred_at, bool(r.details["for_hypotension"]))
            for r in kinds["fluid_bolus"]
        ),
        treatments=tuple(
            TreatmentRecord(r.key, r.occurred_at, TreatmentDrug(r.details["drug"]))
            for r in kinds["treatment"]
        ),
        attributions=tuple(
            AttributionRecord(
                r.key,
                Finding(r.details["finding"]),
                r.occurred_at,
                None
                if r.details.get("end_at") is None
                else datetime.fromisoformat(r.details["end_at"]),
            )
            for r in kinds["attribution"]
        ),
        death=None
        if not deaths
        else DeathRecord(
            deaths[-1].key,
            deaths[-1].occurred_at,
            deaths[-1].details["death_attributable_to_crs"],
        ),
    )


def grade_study(spec: StudySpec) -> list[Graded]:
    study = Study(spec)
    lines: list[FeedLine] = list(study.lines())
    enrolments: dict[str, PatientIn] = {}
    rows: dict[str, list[RecordRow]] = defaultdict(list)
    for line in lines:
        record = parse_record(line.text, line.at)
        assert not isinstance(record, Refused), (line.text, record)
        if isinstance(record, PatientIn):
            enrolments[record.patient] = record
        else:
            rows[record.patient] += record.rows()
    truth = {t["pseudonym"]: t for t in study.truth()[1:]}
    graded = []
    for name, enrolment in enrolments.items():
        tl = timeline(enrolment, rows[name])
        until = max(r.occurred_at for r in rows[name])
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
