"""Unit: the risk-model features (crsmon/domain/features.py), and that they leak
nothing from after the prediction time or from outcome-defining records."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crsmon.domain.features import (
    BASELINE_FEATURES,
    DYNAMIC_FEATURES,
    PatientBaseline,
    baseline_features,
    dynamic_features,
    m_easix,
)
from crsmon.domain.records import (
    AttributionRecord,
    BolusRecord,
    Finding,
    InfusionRecord,
    Measurement,
    OxygenRecord,
    PatientTimeline,
    Quantity,
    TreatmentRecord,
)
from crsmon.domain.vocab import (
    OxygenDevice,
    TreatmentDrug,
    VasoactiveDrug,
    VasopressorDoseUnit,
)

T0 = datetime(2026, 5, 1, 8, tzinfo=UTC)
PATIENT = PatientBaseline(
    age_years=9.0,
    marrow_blast_pct=40.0,
    isolated_extramedullary=False,
    ldh_u_l=300.0,
    viability_pct=88.0,
    dose_cells_per_kg=3e6,
)


def h(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def m(n: int, hours: float, quantity: Quantity, value: float) -> Measurement:
    return Measurement(f"r{n}", h(hours), quantity, value)


TIMELINE = PatientTimeline(
    infusion_at=T0,
    age_years_at_infusion=9.0,
    measurements=(
        m(1, -48, Quantity.PLATELETS_10E9_L, 50.0),
        m(2, -48, Quantity.CRP_MG_L, 20.0),
        m(3, -24 * 15, Quantity.FERRITIN_UG_L, 900.0),
        m(4, 4, Quantity.TEMPERATURE_C, 37.2),
        m(5, 12, Quantity.CRP_MG_L, 10.0),
        m(6, 20, Quantity.TEMPERATURE_C, 38.4),
        m(7, 30, Quantity.TEMPERATURE_C, 39.1),
        m(8, 36, Quantity.CRP_MG_L, 40.0),
        m(9, 36, Quantity.IL6_PG_ML, 250.0),
        m(10, 40, Quantity.PLATELETS_10E9_L, 20.0),
    ),
)


def test_the_baseline_reads_enrolment_and_pre_infusion_labs_only() -> None:
    """m-EASIX = 300 x (20 mg/L = 2 mg/dL) / 50 = 12; the day-40 platelets unread."""
    row = baseline_features(PATIENT, TIMELINE).as_dict()
    assert list(row) == list(BASELINE_FEATURES)
    assert row == pytest.approx(
        {
            "log_marrow_blast_pct": math.log1p(40),
            "isolated_extramedullary": 0.0,
            "log_ldh_u_l": math.log(300),
            "log_platelets_10e9_l": math.log(50),
            "log_crp_mg_l": math.log(20),
            "log_m_easix": math.log(12),
            "viability_pct": 88.0,
            "log_dose_cells_per_kg": math.log(3e6),
            "age_years": 9.0,
        }
    )
    assert m_easix(300, 20, 50) == pytest.approx(12)


def test_missing_baseline_values_stay_missing() -> None:
    """No default stands in: missing inputs give None, m-EASIX too."""
    bare = PatientBaseline(age_years=4.0, dose_cells_per_kg=0.0)
    row = baseline_features(bare, PatientTimeline(infusion_at=T0)).as_dict()
    assert row["age_years"] == 4.0
    assert all(v is None for k, v in row.items() if k != "age_years")
    assert m_easix(None, 20, 50) is None
    assert m_easix(300, 20, 0) is None


def test_ldh_comes_from_a_lab_when_enrolment_has_none() -> None:
    labs = replace(
        TIMELINE,
        measurements=(*TIMELINE.measurements, m(11, -30, Quantity.LDH_U_L, 500.0)),
    )
    row = baseline_features(replace(PATIENT, ldh_u_l=None), labs).as_dict()
    assert row["log_ldh_u_l"] == pytest.approx(math.log(500))


def test_dynamic_features_at_48_hours() -> None:
    """Fever first at 20 h, >= 38.9 at 30 h (within 36 h); CRP x4 in a day."""
    row = dynamic_features(PATIENT, TIMELINE, h(48), current_grade=1).as_dict()
    assert list(row) == list(DYNAMIC_FEATURES)
    assert row["hours_since_infusion"] == 48
    assert row["tmax_c"] == 39.1
    assert row["hours_to_first_fever"] == 20
    assert row["fever_ge_38_9_within_36h"] == 1.0
    assert row["current_grade"] == 1.0
    assert row["log_crp_now"] == pytest.approx(math.log(40))
    assert row["crp_log_slope_per_day"] == pytest.approx(math.log(4))
    assert row["log_il6_now"] == pytest.approx(math.log(250))
    assert row["il6_log_slope_per_day"] is None  # one IL-6 value only
    assert row["log_ferritin_now"] is None  # the only ferritin is 15 days old
    assert row["log_platelets_10e9_l"] == pytest.approx(math.log(50))  # baseline


def test_early_on_nothing_later_is_seen() -> None:
    """At 10 h: no fever yet, no lab since infusion, the 36 h window not over."""
    row = dynamic_features(PATIENT, TIMELINE, h(10), current_grade=0).as_dict()
    assert row["tmax_c"] == 37.2
    assert row["hours_to_first_fever"] is None
    assert row["fever_ge_38_9_within_36h"] == 0.0
    assert row["log_crp_now"] is None  # the baseline CRP is 58 h old: not current
    assert row["log_crp_mg_l"] == pytest.approx(math.log(20))  # but is the baseline


def test_a_high_fever_after_36_hours_is_not_an_early_one() -> None:
    late = replace(
        TIMELINE,
        measurements=(
            m(1, 4, Quantity.TEMPERATURE_C, 37.0),
            m(2, 40, Quantity.TEMPERATURE_C, 39.5),
            m(3, 44, Quantity.CRP_MG_L, 0.0),
        ),
    )
    row = dynamic_features(PATIENT, late, h(48), current_grade=1).as_dict()
    assert (row["fever_ge_38_9_within_36h"], row["hours_to_first_fever"]) == (0.0, 40)
    assert row["log_crp_now"] is None  # a zero CRP has no log: missing


@pytest.mark.parametrize("grade", [-1, 3, 4])
def test_the_dynamic_model_scores_grades_0_to_2_only(grade: int) -> None:
    with pytest.raises(ValueError, match="grades 0–2"):
        dynamic_features(PATIENT, TIMELINE, h(48), current_grade=grade)


def test_no_prediction_before_infusion() -> None:
    with pytest.raises(ValueError, match="after the infusion"):
        dynamic_features(PATIENT, TIMELINE, h(-1), current_grade=0)


OUTCOME_DEFINING = {
    "oxygen": (OxygenRecord("o1", h(30), OxygenDevice.NASAL_CANNULA, 2.0),),
    "infusions": (
        InfusionRecord(
            "v1", VasoactiveDrug.NOREPINEPHRINE, 0.1, VasopressorDoseUnit.UG_KG_MIN,
            h(31),
        ),
    ),
    "boluses": (BolusRecord("b1", h(29), True, 400.0),),
    "treatments": (TreatmentRecord("t1", h(32), TreatmentDrug.TOCILIZUMAB),),
    "attributions": (AttributionRecord("a1", Finding.FEVER, h(20)),),
}  # fmt: skip


def test_outcome_defining_and_post_decision_records_are_never_read() -> None:
    """Oxygen, vasopressors, boluses, tocilizumab and attributions change nothing."""
    treated = replace(TIMELINE, **OUTCOME_DEFINING)  # type: ignore[arg-type]
    for at in (h(24), h(48)):
        assert dynamic_features(PATIENT, treated, at, 1) == dynamic_features(
            PATIENT, TIMELINE, at, 1
        )
    assert baseline_features(PATIENT, treated) == baseline_features(PATIENT, TIMELINE)


measurement_after = st.builds(
    Measurement,
    record_id=st.text("abc", min_size=1, max_size=3),
    observed_at=st.floats(0.001, 500).map(lambda x: h(24) + timedelta(hours=x)),
    quantity=st.sampled_from(Quantity),
    value=st.floats(0.1, 50_000),
)


@settings(max_examples=200, derandomize=True, deadline=None)
@given(later=st.lists(measurement_after, max_size=20))
def test_nothing_observed_after_the_prediction_time_changes_the_features(
    later: list[Measurement],
) -> None:
    """Any measurement after ``at`` (24 h) leaves every feature as it was."""
    known = replace(
        TIMELINE,
        measurements=tuple(x for x in TIMELINE.measurements if x.observed_at <= h(24)),
    )
    future = replace(known, measurements=(*known.measurements, *later))
    assert dynamic_features(PATIENT, future, h(24), 0) == dynamic_features(
        PATIENT, known, h(24), 0
    )
    assert dynamic_features(PATIENT, TIMELINE, h(24), 0) == dynamic_features(
        PATIENT, known, h(24), 0
    )
