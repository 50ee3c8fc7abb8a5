"""Outcomes (risk.md §3.6) as the truth and as feed records, one patient at a time."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest

from crsmon.synth import CohortDesign, Outcomes, build_feed, draw_cohort, simulate
from crsmon.synth.course import _outcome_events
from crsmon.synth.outcomes import PHENOTYPES, _pick, draw_outcomes, softplus2

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


def outcomes(**kw: object) -> Outcomes:
    values: dict[str, object] = {
        "frailty_v": 0.0,
        "p_nonresponse": 0.03,
        "response_d28": "CR",
        "relapse_day": None,
        "relapse_site": None,
        "relapse_phenotype": None,
        "hsct_day": None,
        "death_day": None,
        "death_cause": None,
    }
    values.update(kw)
    return Outcomes(**values)  # type: ignore[arg-type]


def test_follow_up_censors_what_comes_later() -> None:
    o = outcomes(
        relapse_day=200.0,
        relapse_site="marrow",
        relapse_phenotype="CD19-/CD22+",
        hsct_day=90.0,
        death_day=400.0,
        death_cause="relapse",
    )
    early = o.at_follow_up(20)
    assert early["response_d28"] == "not_yet"
    assert early["efs_event"] is False
    assert early["efs_time_days"] == 20
    assert early["hsct_day"] is None
    mid = o.at_follow_up(300)
    assert (mid["efs_event_type"], mid["efs_time_days"]) == ("relapse", 200.0)
    assert mid["relapse_phenotype"] == "CD19-/CD22+"
    assert mid["hsct_day"] == 90.0
    assert (mid["os_event"], mid["os_time_days"]) == (False, 300)
    late = o.at_follow_up(500)
    assert (late["os_event"], late["death_cause"]) == (True, "relapse")


def test_efs_event_types() -> None:
    nr = outcomes(response_d28="NR", death_day=100.0, death_cause="refractory")
    assert nr.at_follow_up(365)["efs_event_type"] == "nr"
    assert nr.efs_event_day == 28.0
    died = outcomes(death_day=50.0, death_cause="remission")
    assert died.at_follow_up(365)["efs_event_type"] == "death"
    assert outcomes().efs_event_day is None


def test_non_responders_and_early_deaths() -> None:
    """A non-responder's record trail: a no_response record at day 28 (the EFS
    event the export reads), and a note at follow-up."""
    nr = outcomes(response_d28="NR")
    events = _outcome_events(nr, 1000 * 24 * 60, last_follow_up=True)
    assert [e.fields["event"] for e in events] == ["no_response", "last_follow_up"]
    assert events[0].at_min == 28 * 24 * 60
    assert "no response at day 28" in events[1].fields["note"]
    crs = outcomes(response_d28="not_assessed", death_day=9.5, death_cause="crs")
    (death,) = _outcome_events(crs, 20 * 24 * 60, last_follow_up=True)
    assert death.fields["death_attributable_to_crs"] is True
    assert death.fields["note"].startswith("SYNTHETIC")


def test_draw_outcomes_needs_latent_values() -> None:
    b = dataclasses.replace(draw_cohort(1, 1, CohortDesign())[0], latent=None)
    with pytest.raises(ValueError, match="latent"):
        draw_outcomes(
            b,
            1,
            CohortDesign(),
            max_grade=1,
            early_death_day=None,
            early_death_crs=None,
        )


def test_an_early_death_before_day_28_ends_the_record() -> None:
    design = CohortDesign(
        grade_mode="quota", grade_shares=(0, 0, 0, 0, 1), grade4_death_p=1.0
    )
    patients = draw_cohort(12, 9, design)
    died = 0
    for b in patients:
        course = simulate(b, 9, 28 * 24 * 60, design, follow_min=40 * 24 * 60)
        day = course.outcomes.death_day
        assert day is not None
        assert 7 <= day <= 60
        if day < 28:
            died += 1
            assert course.outcomes.response_d28 == "not_assessed"
            assert all(
                e.at_min < day * 24 * 60 for e in course.events if e.kind != "outcome"
            )
    assert died


def test_phenotypes_and_softplus() -> None:
    assert _pick(PHENOTYPES, 0.0) == "CD19+/CD22+"
    assert _pick(PHENOTYPES, 0.9) == "CD19-/CD22+"
    assert _pick(PHENOTYPES, 0.94) == "CD19-/CD22-"
    assert _pick(PHENOTYPES, 1.5) == "unknown"  # past the last share
    assert softplus2(-0.5) < softplus2(0.5)


def test_the_demo_feed_can_leave_out_the_planted_lines() -> None:
    clean = build_feed(NOW, patients=3, days=3, seed=2, planted=False)
    assert clean.planted == ()
    with_faults = build_feed(NOW, patients=3, days=3, seed=2)
    assert len(with_faults.planted) == 6
    assert clean.patients[0].outcomes == with_faults.patients[0].outcomes
