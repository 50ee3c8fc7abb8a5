"""End to end over HTTP: records in, the research tables and cohort summary out."""

from __future__ import annotations

import io
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import pytest
from api_feed import TestClient, at, enrolment, record, vitals

from crsmon.domain.catalog import DEFAULT_RULE_SET as RULES
from crsmon.services.exports import ADTTE, EFS_LONG, GRADE_TABLE, NOTICE

pytest_plugins = ("api_fixtures",)


def send(client: TestClient, *records: dict[str, Any]) -> None:
    for body in records:
        reply = client.post("/v1/records", json=body)
        assert reply.status_code == 201, reply.text


def two_patients(client: TestClient) -> None:
    """A grade-3 patient treated with tocilizumab, and a grade-1 patient."""
    send(
        client,
        enrolment("P-A", disease_status="hematologic", marrow_blast_pct=40.0),
        vitals(1, 20, patient="P-A", temperature_c=39.0, sbp_mmhg=100, dbp_mmhg=60),
        record("treatment", 2, patient="P-A", given_at=at(21), drug="tocilizumab"),
        record(
            "vasopressor_start",
            3,
            patient="P-A",
            started_at=at(30),
            drug="norepinephrine",
            dose=0.05,
            unit="ug/kg/min",
        ),
        vitals(4, 31, patient="P-A", temperature_c=37.0, sbp_mmhg=80, dbp_mmhg=40),
        record("outcome", 13, patient="P-A", at=at(38), event="response"),
        record("outcome", 5, patient="P-A", at=at(40), event="hsct"),
        vitals(8, 60, patient="P-A", temperature_c=36.8, sbp_mmhg=104, dbp_mmhg=62),
        enrolment("P-B"),
        vitals(6, 10, patient="P-B", temperature_c=38.4, sbp_mmhg=110, dbp_mmhg=70),
        vitals(7, 50, patient="P-B", temperature_c=36.9, sbp_mmhg=110, dbp_mmhg=70),
        record(
            "fluid_bolus", 11, patient="P-B", given_at=at(30), for_hypotension=False
        ),
        record(
            "retraction",
            12,
            patient="P-B",
            at=at(65),
            target_record_id="m-11",
            reason="SYNTHETIC: charted on the wrong patient",
        ),
    )


def test_the_grade_table_streams_as_csv_and_parquet(client: TestClient) -> None:
    two_patients(client)
    reply = client.get("/v1/exports/grade-table")
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/csv")
    assert reply.headers["x-crsmon-notice"] == NOTICE
    assert reply.headers["x-crsmon-rule-set"] == f"{RULES.key} v{RULES.version}"
    assert "grade-table.csv" in reply.headers["content-disposition"]
    table = pd.read_csv(io.StringIO(reply.text))
    assert list(table.columns) == [c.name for c in GRADE_TABLE]
    by_id = table.set_index("patient_id")
    assert by_id.loc["P-A", "crs_max_grade_astct"] == 3
    assert by_id.loc["P-A", "crs_group"] == "3-4"
    assert by_id.loc["P-A", "tocilizumab_doses"] == 1
    assert by_id.loc["P-A", "first_tocilizumab_h"] == 21.0
    assert by_id.loc["P-A", "crs_driver"] == "hypotension"
    assert by_id.loc["P-A", "hsct_day"] == 40 / 24
    assert by_id.loc["P-B", "crs_max_grade_astct"] == 1
    assert by_id.loc["P-B", "crs_driver"] == "fever_only"
    # A retraction is dated by whoever cleaned the data: no follow-up from it.
    assert by_id.loc["P-B", "last_contact_day"] == pytest.approx(50 / 24)
    assert by_id.loc["P-B", "follow_up_source"] == "last_record"
    assert set(table["grading_rule_set"]) == {RULES.key}
    assert by_id.loc["P-A", "response_d28"] == "response"
    assert by_id.loc["P-B", "response_d28"] == "not_recorded"

    parquet = client.get("/v1/exports/grade-table", params={"format": "parquet"})
    assert parquet.status_code == 200
    arrow = pq.read_table(io.BytesIO(parquet.content))
    assert arrow.num_rows == 2
    assert arrow.column("crs_max_grade_astct").to_pylist() == [3, 1]
    assert arrow.schema.metadata[b"crsmon.notice"].decode() == NOTICE


def test_long_tables_and_their_dictionaries(client: TestClient) -> None:
    two_patients(client)
    long = pd.read_csv(io.StringIO(client.get("/v1/exports/efs-long").text))
    assert list(long.columns) == [c.name for c in EFS_LONG]
    a = long[long["patient_id"] == "P-A"]
    assert a["start_day"].tolist() == [0.0, 30 / 24, 40 / 24]
    assert a["severe_crs_tv"].tolist() == [False, True, True]
    assert a["hsct_tv"].tolist() == [False, False, True]
    adtte = pd.read_csv(io.StringIO(client.get("/v1/exports/adtte").text))
    assert list(adtte.columns) == [c.name for c in ADTTE]
    assert sorted(adtte["PARAMCD"]) == sorted(["EFS", "EFSHSCT", "OS"] * 2)
    hsct = adtte[(adtte["USUBJID"] == "P-A") & (adtte["PARAMCD"] == "EFSHSCT")]
    assert hsct["EVNTDESC"].tolist() == ["CENSORED AT HSCT"]
    assert hsct["CNSR"].tolist() == [1]
    meta = client.get("/v1/exports/adtte/dictionary").json()
    assert meta["notice"] == NOTICE
    assert [c["name"] for c in meta["columns"]] == [c.name for c in ADTTE]


def test_cohort_summary(client: TestClient) -> None:
    two_patients(client)
    cohort = client.get("/v1/review/cohort").json()
    assert cohort["patients"] == 2
    assert cohort["crs_incidence"] == {"n": 2, "of": 2, "pct": 100.0}
    assert cohort["grade_distribution"] == {
        "0": 0,
        "1": 1,
        "2": 0,
        "3": 1,
        "4": 0,
        "5": 0,
    }
    assert cohort["tocilizumab"]["n"] == 1
    assert cohort["vasopressors"]["n"] == 1
    assert cohort["icu_level_support"]["n"] == 1
    assert cohort["median_onset_h"] == 15.0
    assert cohort["rule_set"] == RULES.key


def test_bad_export_parameters_are_422_without_echo(client: TestClient) -> None:
    for url, params in (
        ("/v1/exports/everything", {}),
        ("/v1/exports/grade-table", {"format": "xlsx"}),
    ):
        reply = client.get(url, params=params)
        assert reply.status_code == 422, url
        assert "xlsx" not in reply.text
        assert "everything" not in reply.text
        assert "yesterday" not in reply.text


def test_an_adjudication_is_exported_beside_the_computed_grade(
    client: TestClient,
) -> None:
    two_patients(client)
    reply = client.post(
        "/v1/patients/P-A/adjudications",
        json={
            "decision": "override",
            "grade": 2,
            "reason": "SYNTHETIC: pressor given for sedation, not CRS",
            "by": "reviewer-1",
        },
    )
    assert reply.status_code == 201, reply.text
    table = pd.read_csv(io.StringIO(client.get("/v1/exports/grade-table").text))
    a = table.set_index("patient_id").loc["P-A"]
    assert a["crs_max_grade_astct"] == 3
    assert a["crs_max_grade_adjudicated"] == 2
    assert a["adjudication_decision"] == "override"
    assert not a["adjudication_stale"]
    b = table.set_index("patient_id").loc["P-B"]
    assert pd.isna(b["crs_max_grade_adjudicated"])
    cohort = client.get("/v1/review/cohort").json()
    assert cohort["adjudicated"] == 1
    assert cohort["grade_distribution"]["3"] == 1
    # A late, higher temperature re-derives the peak moment at the same grade:
    # the verdict rests on a row that is no longer current.
    send(client, vitals(14, 29.5, patient="P-A", temperature_c=39.5))
    moved = pd.read_csv(io.StringIO(client.get("/v1/exports/grade-table").text))
    a = moved.set_index("patient_id").loc["P-A"]
    assert a["crs_max_grade_astct"] == 3
    assert a["adjudication_stale"]
    send(
        client,
        record(
            "vasopressor_start",
            9,
            patient="P-A",
            started_at=at(61),
            drug="epinephrine",
            dose=0.05,
            unit="ug/kg/min",
        ),
        vitals(10, 62, patient="P-A", temperature_c=37.0, sbp_mmhg=78, dbp_mmhg=40),
    )
    later = pd.read_csv(io.StringIO(client.get("/v1/exports/grade-table").text))
    a = later.set_index("patient_id").loc["P-A"]
    assert a["crs_max_grade_astct"] == 4
    assert a["adjudication_stale"]
