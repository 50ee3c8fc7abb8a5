"""The EFS analysis in process: cohort rules, sources, and small-sample guards."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
from efs_synthetic import make_long, make_patients
from lifelines import KaplanMeierFitter
from lifelines.statistics import logrank_test

from crsmon.analysis import analyze_efs, km_plot, markdown_table
from crsmon.analysis.efs import NOTICE, Options, build_cohort, logrank_trend
from crsmon.analysis.report import format_p, headline


@pytest.fixture(scope="module")
def patients() -> pd.DataFrame:
    return make_patients()


def _row(table: pd.DataFrame, patient: str) -> Any:
    return table.index[table["patient_id"] == patient][0]


def test_landmark_drops_early_events_and_groups_by_grade_at_day_28(
    patients: pd.DataFrame,
) -> None:
    """efs_time <= 28 is dropped; a grade 3 first reached on day 30 is 1–2."""
    table = patients.copy()
    late = _row(table, "P0000")
    table.loc[late, ["crs_max_grade_astct", "efs_time_days", "efs_event"]] = [3, 400, 0]
    table.loc[late, "first_grade_ge1_day"] = 2.0
    table.loc[late, "first_grade_ge2_day"] = 5.0
    table.loc[late, "first_grade_ge3_day"] = 30.0
    table.loc[late, ["first_grade_ge4_day", "grade5_day"]] = np.nan
    on_day = _row(table, "P0001")
    table.loc[on_day, ["efs_time_days", "efs_event"]] = [28.0, 1]

    landmark, counts = build_cohort(table, Options(landmark_days=28))
    ids = set(landmark["patient_id"])
    assert "P0001" not in ids
    assert ids == set(table.loc[table["efs_time_days"] > 28, "patient_id"])
    assert counts["excluded_by_landmark"] == int((table["efs_time_days"] <= 28).sum())
    chosen = landmark.set_index("patient_id")
    assert chosen.loc["P0000", "group"] == "1-2"
    assert chosen.loc["P0000", "time"] == pytest.approx(400 - 28)
    assert counts["regrouped_by_landmark"] >= 1

    everyone, _ = build_cohort(table, Options(landmark_days=None))
    assert everyone.set_index("patient_id").loc["P0000", "group"] == "3-4"
    assert len(everyone) == len(table)

    result = analyze_efs(table, None)
    assert result["cohort"]["analysed"] == len(ids)
    assert result["analysis"]["time_origin"].startswith("the landmark, day 28")


def test_no_landmark_counts_from_infusion_and_names_the_bias(
    patients: pd.DataFrame,
) -> None:
    result = analyze_efs(patients, None, landmark_days=None)
    assert result["cohort"]["analysed"] == len(patients)
    assert "guarantee-time bias" in result["analysis"]["guarantee_time_bias"]
    assert any("guarantee-time bias" in n for n in result["notes"])
    assert result["analysis"]["horizon_from_origin_days"] == 365
    assert result["groups"]["5"]["n"] == int(
        (patients["crs_max_grade_astct"] == 5).sum()
    )
    assert "Exposed to guarantee-time bias" in markdown_table(result)


def test_censor_at_hsct_reads_the_censored_columns(patients: pd.DataFrame) -> None:
    """With censor_at_hsct the efs_time/efs_event columns are not read at all."""
    result = analyze_efs(patients, None, censor_at_hsct=True)
    scrambled = patients.assign(efs_time_days=999.0, efs_event=0)
    assert analyze_efs(scrambled, None, censor_at_hsct=True) == result
    assert analyze_efs(patients, None) != result
    eligible = patients[patients["efs_censored_at_hsct_time"] > 28]
    assert result["cohort"]["analysed"] == len(eligible)
    assert result["cohort"]["events"] == int(
        eligible["efs_censored_at_hsct_event"].sum()
    )
    assert "ELIANA" in result["analysis"]["endpoint"]
    severe = eligible[eligible["first_grade_ge3_day"] <= 28]
    fitter = KaplanMeierFitter().fit(
        severe["efs_censored_at_hsct_time"] - 28, severe["efs_censored_at_hsct_event"]
    )
    expected = float(fitter.survival_function_at_times(337).iloc[0])
    assert result["groups"]["3-4"]["efs_at_horizon"] == pytest.approx(expected, 1e-9)


def test_adjudicated_grade_moves_the_patient(patients: pd.DataFrame) -> None:
    table = patients.copy()
    target = table[
        (table["crs_max_grade_astct"] == 1) & (table["efs_time_days"] > 28)
    ].iloc[0]["patient_id"]
    table.loc[_row(table, target), "crs_max_grade_adjudicated"] = 3
    computed, _ = build_cohort(table, Options())
    adjudicated, counts = build_cohort(table, Options(grade_source="adjudicated"))
    assert computed.set_index("patient_id").loc[target, "group"] == "1-2"
    assert adjudicated.set_index("patient_id").loc[target, "group"] == "3-4"
    assert counts["adjudicated_used"] == 1
    result = analyze_efs(table, None, grade_source="adjudicated")
    assert result["cohort"]["adjudicated_in_table"] == 1
    assert "adjudicated overall maximum" in result["analysis"]["grouping"]
    plain = analyze_efs(table, None)
    assert result["groups"]["3-4"]["n"] == plain["groups"]["3-4"]["n"] + 1


def _tiny(grades: list[int], events: list[int]) -> pd.DataFrame:
    n = len(grades)
    return pd.DataFrame(
        {
            "patient_id": [f"T{i}" for i in range(n)],
            "crs_max_grade_astct": grades,
            "crs_max_grade_adjudicated": [None] * n,
            "first_grade_ge1_day": [2.0 if g >= 1 else None for g in grades],
            "first_grade_ge2_day": [3.0 if g >= 2 else None for g in grades],
            "first_grade_ge3_day": [4.0 if g >= 3 else None for g in grades],
            "first_grade_ge4_day": [5.0 if g >= 4 else None for g in grades],
            "grade5_day": [None] * n,
            "efs_time_days": [100.0 + 60 * i for i in range(n)],
            "efs_event": events,
            "efs_censored_at_hsct_time": [100.0 + 60 * i for i in range(n)],
            "efs_censored_at_hsct_event": events,
            "age_years": [5.0 + i for i in range(n)],
            "disease_status": ["hematologic"] * n,
            "marrow_blast_pct_preinfusion": [10.0 + i for i in range(n)],
        }
    )


def _assert_json_ready(result: dict[str, Any]) -> None:
    json.dumps(result, allow_nan=False)


def test_one_group_gives_null_estimates_not_a_crash(tmp_path: Path) -> None:
    table = _tiny([1, 1, 2, 1, 2, 1, 1], [1, 0, 1, 0, 1, 0, 0])
    result = analyze_efs(table, None)
    _assert_json_ready(result)
    assert result["groups"]["1-2"]["efs_at_horizon"] is not None
    assert result["groups"]["3-4"]["reason"] == "fewer than 2 patients"
    assert result["logrank"]["grade_1_2_vs_3_4"]["p"] is None
    assert result["logrank"]["grade_1_2_vs_3_4"]["reason"]
    assert result["logrank"]["all_groups"]["reason"]
    assert result["logrank"]["trend"]["reason"]
    assert result["cox"]["adjusted"]["hr"] is None
    assert "3-4" in result["cox"]["adjusted"]["reason"]
    text = markdown_table(result)
    assert "not estimable" in text
    assert "not computed" in text
    png = km_plot(table, result, tmp_path / "km.png")
    assert matplotlib.image.imread(png).shape[2] in (3, 4)


def test_group_without_events_and_single_patient_are_guarded(tmp_path: Path) -> None:
    table = _tiny([1, 1, 2, 1, 3, 4, 3, 0], [1, 0, 1, 1, 0, 0, 0, 1])
    result = analyze_efs(table, None)
    _assert_json_ready(result)
    severe = result["groups"]["3-4"]
    assert severe["efs_at_horizon"] == 1.0
    assert severe["efs_ci95"] is None
    assert "no event" in severe["reason"]
    assert result["groups"]["0"]["reason"] == "fewer than 2 patients"
    assert result["cox"]["crude"]["hr"] is None
    assert result["cox"]["crude"]["reason"].startswith("no events in group 3-4")
    assert result["logrank"]["grade_1_2_vs_3_4"]["p"] is not None
    km_plot(table, result, tmp_path / "km.png")
    assert "3–4" in markdown_table(result)


def test_no_patient_followed_to_the_horizon() -> None:
    table = _tiny([1, 2, 3, 4], [0, 0, 0, 1])
    result = analyze_efs(table, None, horizon_days=2000)
    assert result["groups"]["1-2"]["efs_at_horizon"] is None
    assert result["groups"]["1-2"]["reason"] == "no patient followed up to the horizon"


def test_fit_warnings_are_caught_and_reported() -> None:
    """A covariate that separates events perfectly: lifelines warns, we report."""
    rng = np.random.default_rng(5)
    n = 60
    grades = [1 + (i % 4) for i in range(n)]
    events = [int(rng.random() < 0.6) for _ in range(n)]
    table = _tiny(grades, events)
    table["age_years"] = [30.0 if e else 2.0 for e in events]
    result = analyze_efs(table, None)
    _assert_json_ready(result)
    adjusted = result["cox"]["adjusted"]
    assert any(w.startswith("ConvergenceWarning") for w in adjusted["warnings"])
    assert any("fit warned" in note for note in adjusted["notes"])
    assert "fit warnings: ConvergenceWarning" in markdown_table(result)


def test_missing_columns_are_named(patients: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="first_grade_ge3_day"):
        analyze_efs(patients.drop(columns=["first_grade_ge3_day"]), None)
    analyze_efs(
        patients.drop(columns=["first_grade_ge3_day"]), None, landmark_days=None
    )
    with pytest.raises(ValueError, match="crs_max_grade_adjudicated"):
        analyze_efs(
            patients.drop(columns=["crs_max_grade_adjudicated"]),
            None,
            grade_source="adjudicated",
        )
    with pytest.raises(ValueError, match="horizon"):
        analyze_efs(patients, None, landmark_days=400)


def test_trend_test_of_two_groups_is_the_logrank_test(patients: pd.DataFrame) -> None:
    two = patients[patients["crs_max_grade_astct"].isin([1, 3])]
    score = (two["crs_max_grade_astct"] == 3).astype(float)
    computed = logrank_trend(two["efs_time_days"], two["efs_event"], score)
    assert computed is not None
    a, b = two[score == 0], two[score == 1]
    test = logrank_test(
        a["efs_time_days"], b["efs_time_days"], a["efs_event"], b["efs_event"]
    )
    assert computed[0] == pytest.approx(test.test_statistic, rel=1e-9)
    assert computed[1] == pytest.approx(test.p_value, rel=1e-9)
    assert logrank_trend([1.0, 2.0], [0, 0], [0.0, 1.0]) is None


def test_time_varying_needs_the_long_table(patients: pd.DataFrame) -> None:
    without = analyze_efs(patients, None)
    assert without["time_varying"]["status"].startswith("not run: ")
    with_long = analyze_efs(patients, make_long(patients), censor_at_hsct=True)
    models = with_long["time_varying"]["models"]
    assert set(models) == {"crude", "adjusted"}
    assert models["crude"]["hr"] > 1
    assert "censored at HSCT" in with_long["time_varying"]["method"]


def test_report_texts(patients: pd.DataFrame) -> None:
    assert format_p(0.0191) == ".0191"
    assert format_p(0.00001) == "< .0001"
    assert format_p(None) == "not computed"
    result = analyze_efs(patients, None)
    line = headline(result)
    assert line.startswith("1-year EFS: grade 1–2 ")
    assert " vs grade 3–4 " in line
    assert "log-rank P" in line
    text = markdown_table(result)
    assert NOTICE in text
    assert "80.9 % vs grade 3–4 69.9 %, P = .0191" in text
    assert "reference, not a target" in text
    other = analyze_efs(patients, None, horizon_days=730)
    assert headline(other).startswith("EFS at day 730: ")


def test_a_group_whose_every_patient_had_an_event_reaches_zero() -> None:
    """Past an event the curve is known (0 once all have had one); past a
    censored last time it is not."""
    from crsmon.analysis.efs import kaplan_meier

    events = pd.DataFrame({"time": [10.0, 20.0, 30.0], "event": [1, 1, 1]})
    found = kaplan_meier(events, 365.0)
    assert found["efs_at_horizon"] == 0.0
    assert found["reason"] == "EFS reached 0: its CI is undefined"
    censored = pd.DataFrame({"time": [10.0, 20.0, 30.0], "event": [1, 1, 0]})
    assert kaplan_meier(censored, 365.0)["efs_at_horizon"] is None


def test_time_varying_censoring_follows_the_grade_table() -> None:
    """--censor-at-hsct cuts each patient's start/stop rows where the grade
    table censors (HSCT or new therapy in remission), event kept only there."""
    from crsmon.analysis.efs import _long_frame

    long = pd.DataFrame(
        {
            "patient_id": ["A", "A", "B"],
            "start_day": [0.0, 5.0, 0.0],
            "stop_day": [5.0, 200.0, 150.0],
            "event": [0, 1, 1],
            "hsct_tv": [0, 0, 0],
            "severe_crs_tv": [0, 1, 0],
            "age_years": [8.0, 8.0, 9.0],
            "marrow_blast_pct_preinfusion": [10.0, 10.0, 20.0],
            "extramedullary": [0, 0, 0],
        }
    )
    patients = pd.DataFrame(
        {
            "patient_id": ["A", "B"],
            "efs_censored_at_hsct_time": [90.0, 150.0],
            "efs_censored_at_hsct_event": [0, 1],
        }
    )
    cut = _long_frame(long, True, patients)
    assert cut[["patient_id", "start", "stop", "event"]].values.tolist() == [
        ["A", 0.0, 5.0, 0.0],
        ["A", 5.0, 90.0, 0.0],
        ["B", 0.0, 150.0, 1.0],
    ]


def test_data_the_export_doubts_is_counted_and_shown(patients: pd.DataFrame) -> None:
    table = patients.copy()
    table["outcome_flags"] = None
    table.loc[0, "outcome_flags"] = "no_day28_assessment_recorded"
    table.loc[1, "outcome_flags"] = "no_day28_assessment_recorded;records_after_death"
    table["grade_matches_stored"] = True
    table.loc[2, "grade_matches_stored"] = False
    result = analyze_efs(table, None, landmark_days=28)
    quality = result["cohort"]["data_quality"]
    assert quality["outcome_flags"] == {
        "no_day28_assessment_recorded": 2,
        "records_after_death": 1,
    }
    assert quality["grade_not_matching_stored"] == 1
    text = markdown_table(result)
    assert "no_day28_assessment_recorded 2" in text
    assert "grade not matching stored 1" in text
