"""The grade-table derivations of the pure core (crsmon.domain.summary)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from crsmon.domain.catalog import DEFAULT_RULE_SET as RULES
from crsmon.domain.records import (
    InfusionRecord,
    Measurement,
    OutcomeRecord,
    OxygenRecord,
    PatientTimeline,
    Quantity,
    TreatmentRecord,
)
from crsmon.domain.results import (
    EpisodeResult,
    GradeResult,
    ObservationGrade,
    Reason,
)
from crsmon.domain.summary import (
    crs_group,
    efs_intervals,
    summarise_crs,
    summarise_outcomes,
    summarise_support,
)
from crsmon.domain.vocab import (
    OxygenDevice,
    TreatmentDrug,
    VasoactiveDrug,
    VasopressorDoseUnit,
)

T0 = datetime(2025, 3, 1, 8, tzinfo=UTC)


def at(days: float = 0, hours: float = 0) -> datetime:
    return T0 + timedelta(days=days, hours=hours)


def pressor(
    rid: str, drug: VasoactiveDrug, start: float, stop: float | None
) -> InfusionRecord:
    return InfusionRecord(
        rid,
        drug,
        0.05,
        VasopressorDoseUnit.UG_KG_MIN,
        at(hours=start),
        None if stop is None else at(hours=stop),
    )


def outcome(event: str, days: float, **extra: bool | None) -> OutcomeRecord:
    return OutcomeRecord(f"o-{event}-{days}", at(days), event, **extra)


def summary_of(*outcomes: OutcomeRecord, records: tuple[datetime, ...] = ()):  # type: ignore[no-untyped-def]
    timeline = PatientTimeline(infusion_at=T0, outcomes=outcomes)
    return summarise_outcomes(timeline, records)


# ------------------------------------------------------------------ outcomes


def test_no_response_is_an_event_at_day_28_whatever_the_record_time() -> None:
    s = summary_of(outcome("no_response", 31), outcome("last_follow_up", 200))
    assert (s.efs_time_days, s.efs_event, s.efs_event_type) == (28.0, True, "nr")
    assert s.response_d28 == "no_response"
    assert s.landmark28_eligible is False
    assert (s.os_time_days, s.os_event) == (200.0, False)
    assert s.follow_up_source == "last_follow_up"
    assert s.outcome_flags == ()


def test_relapse_then_death_takes_the_relapse_and_os_takes_the_death() -> None:
    s = summary_of(
        outcome("response", 28, mrd_negative=True),
        outcome("relapse", 150),
        outcome("death", 300, death_attributable_to_crs=False),
    )
    assert (s.efs_time_days, s.efs_event_type) == (150.0, "relapse")
    assert (s.os_time_days, s.os_event) == (300.0, True)
    assert s.mrd_negative_d28 is True
    assert s.death_attributable_to_crs is False
    assert s.relapse
    assert s.death
    assert s.relapse_day == 150.0
    assert s.landmark28_eligible is True


def test_early_death_is_an_event_without_a_missing_assessment_flag() -> None:
    s = summary_of(outcome("death", 9, death_attributable_to_crs=True))
    assert (s.efs_time_days, s.efs_event_type) == (9.0, "death")
    assert s.response_d28 == "not_recorded"
    assert s.outcome_flags == ()


def test_censored_at_the_latest_record_when_no_follow_up_is_recorded() -> None:
    s = summary_of(outcome("response", 28), records=(at(40), at(35)))
    assert (s.efs_time_days, s.efs_event) == (40.0, False)
    assert s.follow_up_source == "last_record"
    assert s.efs_event_type == "none"


def test_a_later_record_outlives_an_earlier_follow_up() -> None:
    s = summary_of(
        outcome("response", 28), outcome("last_follow_up", 50), records=(at(60),)
    )
    assert (s.last_contact_day, s.follow_up_source) == (60.0, "last_record")


def test_missing_day28_assessment_is_flagged_not_read_as_response() -> None:
    s = summary_of(outcome("last_follow_up", 90))
    assert s.response_d28 == "not_recorded"
    assert s.outcome_flags == ("no_day28_assessment_recorded",)
    assert s.efs_event is False
    short = summary_of(outcome("last_follow_up", 20))
    assert short.outcome_flags == ()


def test_doubtful_outcome_data_is_flagged() -> None:
    s = summary_of(
        outcome("response", 28),
        outcome("no_response", 28),
        outcome("relapse", 60),
        outcome("death", 70),
        outcome("death", 71),
        records=(at(80),),
    )
    assert set(s.outcome_flags) == {
        "response_and_no_response",
        "more_than_one_death",
        "records_after_death",
    }
    assert s.last_contact_day == 70.0
    assert (s.efs_time_days, s.efs_event_type) == (28.0, "nr")
    relapse_only = summary_of(outcome("relapse", 60))
    assert relapse_only.outcome_flags == (
        "relapse_without_recorded_response",
        "no_day28_assessment_recorded",
    )


def test_eliana_censoring_at_hsct_or_new_therapy_before_the_event() -> None:
    s = summary_of(
        outcome("response", 28), outcome("hsct", 90), outcome("relapse", 200)
    )
    assert (s.efs_time_days, s.efs_event) == (200.0, True)
    assert (s.efs_censored_at_hsct_time, s.efs_censored_at_hsct_event) == (90.0, False)
    assert s.hsct_consolidation
    assert s.hsct_day == 90.0
    therapy = summary_of(
        outcome("response", 28),
        outcome("new_therapy", 70),
        outcome("hsct", 90),
        outcome("last_follow_up", 300),
    )
    assert therapy.efs_censored_at_hsct_time == 70.0
    assert therapy.new_therapy_day == 70.0
    after = summary_of(outcome("relapse", 50), outcome("hsct", 90))
    assert (after.efs_censored_at_hsct_time, after.efs_censored_at_hsct_event) == (
        50.0,
        True,
    )


def test_landmark_needs_follow_up_beyond_day_28() -> None:
    assert not summary_of(outcome("last_follow_up", 28)).landmark28_eligible
    assert summary_of(outcome("last_follow_up", 28.01)).landmark28_eligible


# ------------------------------------------------------------------ intervals


def test_intervals_split_at_severe_crs_and_hsct_with_the_event_last() -> None:
    rows = efs_intervals(200.0, True, 90.0, 3.5)
    assert [(r.start_day, r.stop_day) for r in rows] == [
        (0.0, 3.5),
        (3.5, 90.0),
        (90.0, 200.0),
    ]
    assert [r.severe_crs_tv for r in rows] == [False, True, True]
    assert [r.hsct_tv for r in rows] == [False, False, True]
    assert [r.event for r in rows] == [False, False, True]


def test_intervals_ignore_changes_outside_follow_up() -> None:
    rows = efs_intervals(50.0, False, 90.0, 0.0)
    assert len(rows) == 1
    assert (rows[0].severe_crs_tv, rows[0].hsct_tv, rows[0].event) == (
        True,
        False,
        False,
    )
    assert efs_intervals(0.0, True, None, None) == ()


# ------------------------------------------------------------------ CRS


def reason(finding: str, grade: int | None) -> Reason:
    return Reason("R", finding, "v", "", "o", grade)


def moment(
    t: float, grade: int, *reasons: Reason, missing: bool = False
) -> ObservationGrade:
    result = GradeResult(grade, reasons, ("x",) if missing else (), (), RULES.key)
    return ObservationGrade(t, 0, result)


def episode(*moments: ObservationGrade, grade: int) -> EpisodeResult:
    onset = next((m.t_hours for m in moments if m.result.grade), None)
    return EpisodeResult(
        grade=grade,
        observations=moments,
        courses=(),
        onset_t_hours=onset,
        max_grade_t_hours=None,
        resolution_t_hours=None,
        duration_hours=None,
        reasons=(),
        missing_inputs=(),
        flags=(),
        rule_set=RULES.key,
    )


@pytest.mark.parametrize(
    ("moments", "grade", "driver"),
    [
        ((moment(1, 0),), 0, "none"),
        ((moment(1, 1, reason("fever", 1)),), 1, "fever_only"),
        (
            (moment(1, 2, reason("hypotension", 2), reason("hypoxia", 0)),),
            2,
            "hypotension",
        ),
        (
            (moment(1, 3, reason("hypoxia", 3), reason("hypotension", None)),),
            3,
            "hypoxia",
        ),
        (
            (
                moment(1, 2, reason("hypotension", 2)),
                moment(2, 3, reason("hypoxia", 3)),
            ),
            3,
            "both",
        ),
        ((moment(1, 5, reason("death", 5)),), 5, "death_without_organ_finding"),
    ],
)
def test_driver(moments: tuple[ObservationGrade, ...], grade: int, driver: str) -> None:
    assert summarise_crs(episode(*moments, grade=grade)).crs_driver == driver


def test_first_times_of_each_level_and_missing_moments() -> None:
    crs = summarise_crs(
        episode(
            moment(0, 0, missing=True),
            moment(4, 1),
            moment(8, 3, missing=True),
            moment(12, 2),
            moment(20, 4),
            grade=4,
        )
    )
    assert (crs.first_grade_ge1_h, crs.first_grade_ge2_h) == (4, 8)
    assert (crs.first_grade_ge3_h, crs.first_grade_ge4_h, crs.grade5_h) == (8, 20, None)
    assert crs.missing_input_moments == 2
    assert (crs.crs_any, crs.crs_group, crs.crs_onset_h) == (True, "3-4", 4)


@pytest.mark.parametrize(
    ("grade", "group"),
    [(0, "0"), (1, "1-2"), (2, "1-2"), (3, "3-4"), (4, "3-4"), (5, "5")],
)
def test_crs_group(grade: int, group: str) -> None:
    assert crs_group(grade) == group


# ------------------------------------------------------------------ support


def test_support_treatments_labs_and_fever() -> None:
    timeline = PatientTimeline(
        infusion_at=T0,
        measurements=(
            Measurement("m0", at(hours=-20), Quantity.CRP_MG_L, 500.0),
            Measurement("m1", at(hours=10), Quantity.TEMPERATURE_C, 37.5),
            Measurement("m2", at(hours=20), Quantity.TEMPERATURE_C, 39.1),
            Measurement("m3", at(hours=40), Quantity.TEMPERATURE_C, 40.0),
            Measurement("m4", at(hours=30), Quantity.CRP_MG_L, 120.0),
            Measurement("m5", at(hours=50), Quantity.CRP_MG_L, 90.0),
        ),
        oxygen=(
            OxygenRecord("o0", at(hours=-5), OxygenDevice.NON_REBREATHER_MASK),
            OxygenRecord("o1", at(hours=30), OxygenDevice.NASAL_CANNULA, 4.0),
            OxygenRecord("o2", at(hours=35), OxygenDevice.NASAL_CANNULA, 8.0),
            OxygenRecord("o3", at(hours=36), OxygenDevice.NASAL_CANNULA),
            OxygenRecord("o4", at(hours=37), OxygenDevice.CPAP, for_comfort_only=True),
            OxygenRecord("o5", at(hours=38), OxygenDevice.ROOM_AIR),
        ),
        infusions=(
            pressor("p1", VasoactiveDrug.NOREPINEPHRINE, 40, 60),
            pressor("p2", VasoactiveDrug.EPINEPHRINE, 50, None),
            pressor("p3", VasoactiveDrug.VASOPRESSIN, 45, 55),
            pressor("p4", VasoactiveDrug.PHENYLEPHRINE, 70, 80),
        ),
        treatments=(
            TreatmentRecord("t0", at(hours=-3), TreatmentDrug.TOCILIZUMAB),
            TreatmentRecord("t1", at(hours=26), TreatmentDrug.TOCILIZUMAB),
            TreatmentRecord("t2", at(hours=22), TreatmentDrug.ACETAMINOPHEN),
            TreatmentRecord("t3", at(hours=34), TreatmentDrug.TOCILIZUMAB),
            TreatmentRecord("t4", at(hours=44), TreatmentDrug.DEXAMETHASONE),
            TreatmentRecord("t5", at(hours=45), TreatmentDrug.ANAKINRA),
            TreatmentRecord("t6", at(hours=46), TreatmentDrug.SILTUXIMAB),
        ),
    )
    s = summarise_support(timeline, RULES)
    assert (s.max_vasopressor_count, s.vasopressin_used) == (2, True)
    assert (s.max_o2_device, s.max_o2_level, s.max_o2_flow_l_min) == (
        "nasal_cannula",
        3,
        8.0,
    )
    assert s.positive_pressure_ventilation is False
    assert s.intubation is False
    assert s.icu_level_support is True
    assert (s.tocilizumab_doses, s.first_tocilizumab_h) == (2, 26.0)
    assert (s.steroids_any, s.first_steroid_h) == (True, 44.0)
    assert s.other_anticytokine == "anakinra,siltuximab"
    assert s.antipyretics_any is True
    assert s.peak_crp_mg_l == 120.0
    assert (s.first_fever_h, s.tmax_first_36h_c, s.fever_ge_38_9_within_36h) == (
        20.0,
        39.1,
        True,
    )


def test_support_of_an_empty_course_reports_unknowns_as_none() -> None:
    s = summarise_support(
        PatientTimeline(
            infusion_at=T0,
            oxygen=(
                OxygenRecord("o", at(hours=2), OxygenDevice.BIPAP),
                OxygenRecord(
                    "i", at(hours=3), OxygenDevice.INVASIVE_MECHANICAL_VENTILATION
                ),
            ),
        ),
        RULES,
    )
    assert (s.max_o2_device, s.max_o2_level) == ("invasive_mechanical_ventilation", 4)
    assert s.positive_pressure_ventilation
    assert s.intubation
    assert s.icu_level_support
    assert s.fever_ge_38_9_within_36h is None
    assert s.tmax_first_36h_c is None
    assert s.first_fever_h is None
    assert s.first_tocilizumab_h is None
    assert s.first_steroid_h is None
    assert s.other_anticytokine is None
    assert s.peak_il6_pg_ml is None
    none = summarise_support(PatientTimeline(infusion_at=T0), RULES)
    assert (none.max_o2_device, none.max_o2_level, none.max_vasopressor_count) == (
        None,
        0,
        0,
    )
    assert none.icu_level_support is False


def test_eliana_censoring_only_in_remission() -> None:
    """Salvage therapy of a non-responder, or HSCT before any recorded
    response, is not censoring in remission: the EFS event stands."""
    nr = summary_of(outcome("no_response", 21), outcome("new_therapy", 24))
    assert (nr.efs_censored_at_hsct_time, nr.efs_censored_at_hsct_event) == (
        28.0,
        True,
    )
    early = summary_of(
        outcome("hsct", 20), outcome("response", 28), outcome("relapse", 90)
    )
    assert (early.efs_censored_at_hsct_time, early.efs_censored_at_hsct_event) == (
        90.0,
        True,
    )


def test_pressors_are_counted_as_agents_after_infusion() -> None:
    same_drug = PatientTimeline(
        infusion_at=T0,
        infusions=(
            pressor("a", VasoactiveDrug.NOREPINEPHRINE, 10, None),
            pressor("b", VasoactiveDrug.NOREPINEPHRINE, 12, None),
            pressor("c", VasoactiveDrug.EPINEPHRINE, -10, -2),
            pressor("d", VasoactiveDrug.VASOPRESSIN, -10, -1),
        ),
    )
    s = summarise_support(same_drug, RULES)
    assert (s.max_vasopressor_count, s.vasopressin_used) == (1, False)
    alone = PatientTimeline(
        infusion_at=T0,
        infusions=(pressor("v", VasoactiveDrug.VASOPRESSIN, 10, 20),),
    )
    v = summarise_support(alone, RULES)
    assert (v.max_vasopressor_count, v.vasopressin_used) == (0, True)
    assert v.icu_level_support is True


def test_icu_level_oxygen_and_comfort_flow() -> None:
    mask = PatientTimeline(
        infusion_at=T0,
        oxygen=(
            OxygenRecord("m", at(hours=5), OxygenDevice.NON_REBREATHER_MASK, 10.0),
            OxygenRecord(
                "c",
                at(hours=6),
                OxygenDevice.NASAL_CANNULA,
                15.0,
                for_comfort_only=True,
            ),
        ),
    )
    s = summarise_support(mask, RULES)
    assert (s.max_o2_level, s.max_o2_flow_l_min, s.icu_level_support) == (
        3,
        10.0,
        False,
    )
    hfnc = PatientTimeline(
        infusion_at=T0,
        oxygen=(OxygenRecord("h", at(hours=5), OxygenDevice.HIGH_FLOW_NASAL_CANNULA),),
    )
    assert summarise_support(hfnc, RULES).icu_level_support is True
