"""Integration: the research tables from a synthetic study through the real
intake and grading, checked against the study's hidden truth (both databases).

The feed goes through ``ingest_text`` and the in-process dispatcher exactly as
``crsmon ingest`` sends it; the grade table must then hold, for every patient,
the truth's maximum grade, EFS and OS times, events and HSCT day, and the files
must reload in pandas and pyarrow with the documented columns and types.
"""

from __future__ import annotations

import json
from itertools import pairwise
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import guards_off
from lifelines import KaplanMeierFitter
from lifelines.statistics import logrank_test
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from crsmon.analysis.efs import analyze_efs
from crsmon.db.models import ClinicalRecord, Grade, Patient
from crsmon.domain.catalog import DEFAULT_RULE_SET as RULES
from crsmon.services.dispatch import InProcessDispatcher
from crsmon.services.exports import (
    ADTTE,
    EFS_LONG,
    GRADE_TABLE,
    NOTICE,
    TABLES,
    adtte_rows,
    cohort_summary,
    efs_long_rows,
    grade_rows,
    read_table,
    write_table,
)
from crsmon.services.ingest import ingest_text
from crsmon.services.monitoring import AlertPolicy
from crsmon.synth import Study, StudySpec

SPEC = StudySpec(patients=14, seed=9, days=7)
"""Seed 9 has relapses, a death, a non-response, HSCTs and grades 0 to 4."""
AS_OF = SPEC.cut


@pytest.fixture(scope="module")
def study() -> tuple[list[str], dict[str, dict[str, Any]]]:
    generated = Study(SPEC)
    lines = [line.text for line in generated.lines()]
    truth = {t["pseudonym"]: t for t in generated.truth()[1:]}
    return lines, truth


@pytest.fixture
def loaded(
    sessions: sessionmaker[Session], study: tuple[list[str], dict[str, Any]]
) -> sessionmaker[Session]:
    lines, _ = study
    touched = set()
    for n, text in enumerate(lines, start=1):
        outcome = ingest_text(sessions, text, now=AS_OF, channel="test", line_no=n)
        assert outcome.status == "stored", outcome.error
        if outcome.patient_id is not None:
            touched.add(outcome.patient_id)
    policy = AlertPolicy(risk=None)
    InProcessDispatcher(sessions, RULES, policy, clock=lambda: AS_OF).notify(touched)
    return sessions


def rows_of(sessions: sessionmaker[Session]) -> list[dict[str, Any]]:
    with sessions() as session:
        return list(grade_rows(session, RULES, now=AS_OF, batch=5))


def test_exports_of_a_study_through_intake_and_grading(
    loaded: sessionmaker[Session],
    study: tuple[list[str], dict[str, Any]],
    tmp_path: Path,
) -> None:
    """One study load (the slow part), every check of the tables on it."""
    rows = rows_of(loaded)
    holds_the_truth(rows, study[1])
    long_tables_follow_the_grade_table(rows)
    files_reload_with_the_documented_columns_and_types(rows, tmp_path)
    the_cohort_summary_counts_the_grade_table(rows)
    the_analysis_agrees_with_lifelines_on_the_exported_csv(rows, tmp_path)
    pending_records_and_a_stale_grade_are_reported(loaded)


def holds_the_truth(rows: list[dict[str, Any]], truth: dict[str, Any]) -> None:
    assert [r["patient_id"] for r in rows] == sorted(truth)
    for row in rows:
        known = truth[row["patient_id"]]
        out = known["outcomes"]
        name = row["patient_id"]
        assert row["crs_max_grade_astct"] == known["charted_max_grade"], name
        assert row["grade_matches_stored"] is True, name
        assert row["records_pending_grading"] == 0
        assert row["efs_event"] == out["efs_event"], name
        assert row["efs_time_days"] == pytest.approx(out["efs_time_days"], abs=1e-3)
        assert row["efs_event_type"] == (out["efs_event_type"] or "none"), name
        assert row["os_event"] == out["os_event"], name
        assert row["os_time_days"] == pytest.approx(out["os_time_days"], abs=1e-3)
        if out["hsct_day"] is None:
            assert row["hsct_day"] is None
        else:
            assert row["hsct_day"] == pytest.approx(out["hsct_day"], abs=1e-3)
        assert row["grading_rule_set"] == RULES.key
        assert row["grading_rule_set_version"] == RULES.version
        assert row["landmark28_eligible"] == (row["efs_time_days"] > 28)
        assert row["outcome_flags"] is None, name
    types = {r["efs_event_type"] for r in rows}
    assert types == {"none", "nr", "relapse", "death"}
    assert {r["crs_group"] for r in rows} == {"0", "1-2", "3-4"}


def long_tables_follow_the_grade_table(rows: list[dict[str, Any]]) -> None:
    long = list(efs_long_rows(rows))
    for row in rows:
        mine = [r for r in long if r["patient_id"] == row["patient_id"]]
        assert mine[0]["start_day"] == 0.0
        assert mine[-1]["stop_day"] == row["efs_time_days"]
        for earlier, later in pairwise(mine):
            assert earlier["stop_day"] == later["start_day"]
        assert sum(r["event"] for r in mine) == int(row["efs_event"])
        severe = row["first_grade_ge3_day"]
        assert any(r["severe_crs_tv"] for r in mine) == (
            severe is not None and severe < row["efs_time_days"]
        )
    adtte = list(adtte_rows(rows))
    assert len(adtte) == 3 * len(rows)
    for row in rows:
        params = {r["PARAMCD"]: r for r in adtte if r["USUBJID"] == row["patient_id"]}
        assert params["EFS"]["CNSR"] == (0 if row["efs_event"] else 1)
        assert params["EFS"]["AVAL"] == row["efs_time_days"]
        assert params["OS"]["CNSR"] == (0 if row["os_event"] else 1)
        assert params["EFSHSCT"]["AVAL"] == row["efs_censored_at_hsct_time"]
        if row["efs_event_type"] == "nr":
            assert params["EFS"]["EVNTDESC"] == "NO RESPONSE AT DAY 28"
        if row["hsct_day"] is not None and row["hsct_day"] < row["efs_time_days"]:
            assert params["EFSHSCT"]["EVNTDESC"] == "CENSORED AT HSCT"
            assert params["EFSHSCT"]["CNSR"] == 1


def files_reload_with_the_documented_columns_and_types(
    rows: list[dict[str, Any]], tmp_path: Path
) -> None:
    arrow_types = {
        "string": pa.string(),
        "int": pa.int64(),
        "float": pa.float64(),
        "bool": pa.bool_(),
        "timestamp": pa.timestamp("us", tz="UTC"),
        "date": pa.date32(),
    }
    tables: dict[str, Any] = {
        "grade-table": rows,
        "efs-long": list(efs_long_rows(rows)),
        "adtte": list(adtte_rows(rows)),
    }
    for table, columns in TABLES.items():
        csv_path = tmp_path / f"{table}.csv"
        parquet_path = tmp_path / f"{table}.parquet"
        assert write_table(table, tables[table], csv_path, "csv") == len(tables[table])  # type: ignore[arg-type]
        write_table(table, tables[table], parquet_path, "parquet")  # type: ignore[arg-type]
        names = [c.name for c in columns]
        plain = pd.read_csv(csv_path)
        assert list(plain.columns) == names
        assert len(plain) == len(tables[table])
        arrow = pq.read_table(parquet_path)
        assert arrow.schema.names == names
        for column in columns:
            assert arrow.schema.field(column.name).type == arrow_types[column.type]
        assert arrow.schema.metadata[b"crsmon.notice"].decode() == NOTICE
        sidecar = json.loads((tmp_path / f"{table}.csv.dictionary.json").read_text())
        assert sidecar["notice"] == NOTICE
        assert [c["name"] for c in sidecar["columns"]] == names
        typed_csv = read_table(csv_path)
        typed_parquet = read_table(parquet_path)
        pd.testing.assert_frame_equal(
            typed_csv, typed_parquet, check_dtype=False, check_exact=True
        )
        assert str(typed_csv[names[0]].dtype) == "string"
    grade = read_table(tmp_path / "grade-table.parquet")
    assert str(grade["crs_max_grade_astct"].dtype) == "Int64"
    assert str(grade["efs_event"].dtype) == "boolean"
    assert grade["crs_max_grade_astct"].tolist() == [
        r["crs_max_grade_astct"] for r in rows
    ]


def the_analysis_agrees_with_lifelines_on_the_exported_csv(
    rows: list[dict[str, Any]], tmp_path: Path
) -> None:
    """``analyze_efs`` on the exported CSV, against lifelines called directly."""
    path = tmp_path / "analysis.csv"
    write_table("grade-table", rows, path, "csv")
    result = analyze_efs(pd.read_csv(path), None, landmark_days=None, horizon_days=90)
    table = pd.read_csv(path)
    assert result["cohort"]["analysed"] == len(table)
    for group in ("1-2", "3-4"):
        mine = table[table["crs_group"] == group]
        km = KaplanMeierFitter().fit(mine["efs_time_days"], mine["efs_event"])
        expected = float(km.survival_function_at_times(90.0).iloc[0])
        assert result["groups"][group]["n"] == len(mine)
        assert result["groups"][group]["efs_at_horizon"] == pytest.approx(
            expected, rel=1e-9
        )
    low = table[table["crs_group"] == "1-2"]
    high = table[table["crs_group"] == "3-4"]
    test = logrank_test(
        low["efs_time_days"],
        high["efs_time_days"],
        low["efs_event"],
        high["efs_event"],
    )
    assert result["logrank"]["grade_1_2_vs_3_4"]["p"] == pytest.approx(
        test.p_value, rel=1e-9
    )


def pending_records_and_a_stale_grade_are_reported(
    loaded: sessionmaker[Session],
) -> None:
    with loaded.begin() as session:
        first = session.scalars(select(Patient).order_by(Patient.pseudonym)).first()
        assert first is not None
        session.execute(
            update(ClinicalRecord)
            .where(ClinicalRecord.patient_id == first.id)
            .values(grading_state="pending")
        )
    with guards_off(loaded.kw["bind"], "grades"), loaded.begin() as session:
        session.execute(
            update(Grade).where(Grade.patient_id == first.id).values(grade=5)
        )
    row = rows_of(loaded)[0]
    assert row["records_pending_grading"] > 0
    assert row["grade_matches_stored"] is False


def the_cohort_summary_counts_the_grade_table(rows: list[dict[str, Any]]) -> None:
    summary = cohort_summary(rows)
    crs = [r for r in rows if r["crs_any"]]
    assert summary["patients"] == len(rows)
    assert summary["crs_incidence"]["n"] == len(crs)
    assert sum(summary["grade_distribution"].values()) == len(rows)
    assert summary["grade_distribution"]["3"] == sum(
        1 for r in rows if r["crs_max_grade_astct"] == 3
    )
    assert summary["tocilizumab"]["n"] == sum(1 for r in crs if r["tocilizumab_doses"])
    onsets = sorted(r["crs_onset_h"] for r in crs)
    assert summary["median_onset_h"] == pd.Series(onsets).median()
    assert summary["notice"] == NOTICE
    empty = cohort_summary([])
    assert empty["crs_incidence"]["pct"] is None
    assert empty["median_onset_h"] is None


def test_columns_are_documented_once() -> None:
    for columns in (GRADE_TABLE, EFS_LONG, ADTTE):
        names = [c.name for c in columns]
        assert len(names) == len(set(names))
        assert all(c.derivation for c in columns)
