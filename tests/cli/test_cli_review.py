"""``crsmon review`` in process (click's runner) on each database.

The patients are loaded with ``crsmon ingest`` (the real intake, graded in
process) into ``CRSMON_DATABASE_URL``; the review commands then read it.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import select

from crsmon.cli import main
from crsmon.db.engine import make_engine, make_sessions
from crsmon.db.models import Adjudication, Alert, Grade, Patient

INFUSION = (datetime.now(UTC) - timedelta(days=3)).replace(microsecond=0)
HIGH = "P-HIGH"
LOW = "P-LOW"
BARE = "P-BARE"


def at(hours: float) -> str:
    return (INFUSION + timedelta(hours=hours)).isoformat()


def enrol(patient: str, unit: str = "PICU") -> dict[str, Any]:
    return {
        "kind": "patient",
        "source_system": "ehr",
        "source_record_id": f"enrol-{patient}",
        "patient": patient,
        "age_years": 9.0,
        "weight_kg": 30.0,
        "care_unit": unit,
        "infusion_at": at(0),
    }


def clinical(kind: str, key: str, patient: str, **fields: Any) -> dict[str, Any]:
    return {
        "kind": kind,
        "source_system": "monitor",
        "source_record_id": key,
        "patient": patient,
        **fields,
    }


def feed() -> list[dict[str, Any]]:
    """HIGH: fever, hypotension, then a pressor at 32 h (grade 3); LOW: fever
    on the ward (grade 1); BARE: enrolled, nothing graded."""
    return [
        enrol(HIGH),
        clinical("vitals", "h1", HIGH, observed_at=at(20), temperature_c=38.9),
        clinical(
            "vitals",
            "h2",
            HIGH,
            observed_at=at(26),
            temperature_c=39.4,
            sbp_mmhg=84,
            dbp_mmhg=40,
        ),
        clinical(
            "vasopressor_start",
            "h3",
            HIGH,
            started_at=at(32),
            drug="norepinephrine",
            dose=0.05,
            unit="ug/kg/min",
        ),
        clinical("treatment", "h4", HIGH, given_at=at(33), drug="tocilizumab"),
        clinical("oxygen", "h5", HIGH, observed_at=at(34), device="nasal_cannula"),
        enrol(LOW, unit="WARD"),
        clinical("vitals", "l1", LOW, observed_at=at(20), temperature_c=38.4),
        enrol(BARE),
    ]


@pytest.fixture
def loaded(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The configured database, migrated and loaded through `crsmon ingest`."""
    monkeypatch.setenv("CRSMON_DATABASE_URL", database_url)
    monkeypatch.delenv("CRSMON_BROKER_URL", raising=False)
    monkeypatch.delenv("CRSMON_RULE_SET", raising=False)
    path = tmp_path / "feed.ndjson"
    path.write_text("\n".join(json.dumps(r) for r in feed()) + "\n")
    result = CliRunner().invoke(main, ["ingest", str(path)])
    assert result.exit_code == 0, result.output
    return database_url


def run(*args: str) -> Result:
    return CliRunner().invoke(main, ["review", *args])


def as_json(*args: str) -> Any:
    result = run(*args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_now_min_grade_3_shows_the_patient_and_its_open_alerts(loaded: str) -> None:
    """Who is grade >= 3 now and which alerts are unacknowledged: one command."""
    result = run("now", "--min-grade", "3")
    assert result.exit_code == 0, result.output
    text = result.output
    assert HIGH in text
    assert LOW not in text
    assert BARE not in text
    for needle in ("severe_crs", "(critical)", "crs_onset", "h ago", "PICU"):
        assert needle in text
    assert "not a medical device" in text

    page = as_json("now", "--min-grade", "3")
    assert page["total"] == 1
    (high,) = page["items"]
    assert (high["pseudonym"], high["current_grade"], high["max_grade"]) == (
        HIGH,
        3,
        3,
    )
    assert high["day"] == 3
    kinds = [a["kind"] for a in high["open_alerts"]]
    assert "severe_crs" in kinds
    assert high["open_alert_count"] == len(kinds)
    (severe,) = [a for a in high["open_alerts"] if a["kind"] == "severe_crs"]
    assert severe["severity"] == "critical"
    assert datetime.fromisoformat(severe["triggered_at"]) == datetime.fromisoformat(
        at(32)
    )
    assert severe["age_h"] == pytest.approx(40, abs=0.2)

    # Acknowledged alerts leave the list.
    engine = make_engine(loaded)
    try:
        with make_sessions(engine).begin() as session:
            alert = session.get_one(Alert, severe["id"])
            alert.status = "acknowledged"
            alert.acknowledged_by = "dr-lee"
            alert.acknowledged_at = datetime.now(UTC)
    finally:
        engine.dispose()
    after = as_json("now", "--min-grade", "3")["items"][0]
    assert "severe_crs" not in [a["kind"] for a in after["open_alerts"]]
    assert after["open_alert_count"] == len(kinds) - 1


@pytest.mark.usefixtures("loaded")
def test_now_lists_everyone_monitored_by_grade() -> None:
    """Highest grade first; the unit filter; --all; paging."""
    page = as_json("now")
    assert [p["pseudonym"] for p in page["items"]] == [HIGH, LOW, BARE]
    assert page["total"] == 3
    assert [p["current_grade"] for p in page["items"]] == [3, 1, None]
    assert page["items"][1]["care_unit"] == "WARD"
    ward = as_json("now", "--care-unit", "WARD")
    assert [p["pseudonym"] for p in ward["items"]] == [LOW]
    second = as_json("now", "--limit", "1", "--offset", "1")
    assert ([p["pseudonym"] for p in second["items"]], second["total"]) == ([LOW], 3)
    quiet = as_json("now", "--no-open-alerts")
    assert HIGH not in [p["pseudonym"] for p in quiet["items"]]
    assert as_json("now", "--all")["total"] == 3
    assert run("now", "--min-grade", "9").exit_code == 2


@pytest.mark.usefixtures("loaded")
def test_alerts_by_kind_and_age() -> None:
    """Counts per kind and severity; the list oldest first; filters."""
    body = as_json("alerts")
    assert body["total"] == sum(g["count"] for g in body["groups"]) > 2
    ages = [a["age_h"] for a in body["items"]]
    assert ages == sorted(ages, reverse=True)
    assert body["groups"][0]["severity"] == "critical"
    severe = as_json("alerts", "--kind", "severe_crs")
    assert [(a["patient"], a["care_unit"]) for a in severe["items"]] == [(HIGH, "PICU")]
    ward = as_json("alerts", "--care-unit", "WARD")
    assert {a["patient"] for a in ward["items"]} == {LOW}
    old = as_json("alerts", "--min-age-h", "45")
    assert old["items"]
    assert all(a["age_h"] >= 45 for a in old["items"])
    assert old["total"] < body["total"]
    table = run("alerts")
    assert table.exit_code == 0, table.output
    assert "severe_crs" in table.output
    assert "oldest first" in table.output
    assert run("alerts", "--kind", "zz").exit_code == 2


@pytest.mark.usefixtures("loaded")
def test_timeline_json_table_and_png(tmp_path: Path) -> None:
    """The course in time order; --png writes a PNG matplotlib reads back."""
    from matplotlib.image import imread

    timeline = as_json("timeline", HIGH)
    assert timeline["patient"] == HIGH
    events = timeline["events"]
    times = [e["t_hours"] for e in events]
    assert times == sorted(times)
    kinds = [e["kind"] for e in events]
    for kind in ("vitals", "grade", "alert", "vasopressor_start", "treatment"):
        assert kind in kinds
    (oxygen,) = [e for e in events if e["kind"] == "oxygen"]
    assert oxygen["data"]["astct_level"] == 2  # nasal cannula, flow unknown
    only = as_json("timeline", HIGH, "--kind", "treatment")
    assert [e["data"]["drug"] for e in only["events"]] == ["tocilizumab"]

    table = run("timeline", HIGH)
    assert table.exit_code == 0, table.output
    assert "norepinephrine started" in table.output
    assert "T 39.4 °C" in table.output

    path = tmp_path / "course.png"
    drawn = run("timeline", HIGH, "--png", str(path), "--x-unit", "days")
    assert drawn.exit_code == 0, drawn.output
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 20_000
    assert imread(io.BytesIO(data), format="png").shape[:2] == (900, 900)

    missing = run("timeline", "P-NOBODY")
    assert missing.exit_code == 1
    assert "no patient is enrolled" in missing.output


def test_adjudicate_confirm_and_override(loaded: str) -> None:
    """Verdicts are new rows; grades never change; the latest counts."""
    engine = make_engine(loaded)
    try:
        sessions = make_sessions(engine)
        with sessions() as session:
            grades_before = session.scalars(select(Grade.id, Grade.grade)).all()
        result = run(
            "adjudicate", HIGH, "--confirm", "--reason", "chart agrees", "--by", "dr"
        )
        assert result.exit_code == 0, result.output
        assert "confirm maximum grade 3 (computed 3" in result.output
        stored = as_json(
            "adjudicate",
            HIGH,
            "--override-grade",
            "4",
            "--reason",
            "intubated, not charted",
            "--by",
            "dr-kim",
        )
        assert (stored["decision"], stored["adjudicated_grade"]) == ("override", 4)
        assert (stored["computed_grade"], stored["by"]) == (3, "dr-kim")

        listed = as_json("adjudications", HIGH)
        assert listed["total"] == 2
        assert listed["computed_max_grade"] == 3
        assert [i["decision"] for i in listed["items"]] == ["override", "confirm"]
        assert [i["latest"] for i in listed["items"]] == [True, False]
        text = run("adjudications", HIGH)
        assert "[latest]" in text.output
        assert "reason: intubated, not charted" in text.output

        refusals = [
            (("--override-grade", "3"), 1, "confirm it instead"),
            (("--confirm", "--override-grade", "2"), 2, "exactly one"),
            ((), 2, "exactly one"),
            (("--confirm", "--reason", " "), 2, "1 to 500"),
        ]
        for extra, code, needle in refusals:
            args = ["adjudicate", HIGH, "--reason", "r", "--by", "b", *extra]
            refused = run(*args)
            assert refused.exit_code == code, (extra, refused.output)
            assert needle in refused.output, extra
        bare = run("adjudicate", BARE, "--confirm", "--reason", "r", "--by", "b")
        assert bare.exit_code == 1
        assert "no computed grade" in bare.output
        nobody = run(
            "adjudicate", "P-NOBODY", "--confirm", "--reason", "r", "--by", "b"
        )
        assert nobody.exit_code == 1

        with sessions() as session:
            assert session.scalars(select(Grade.id, Grade.grade)).all() == grades_before
            rows = session.scalars(select(Adjudication).order_by(Adjudication.id)).all()
            assert [(r.decision, r.adjudicated_grade) for r in rows] == [
                ("confirm", 3),
                ("override", 4),
            ]
            high = session.scalars(select(Patient).where(Patient.pseudonym == HIGH))
            assert {r.patient_id for r in rows} == {high.one().id}
    finally:
        engine.dispose()


@pytest.mark.usefixtures("loaded")
def test_cohort_summary_table_and_json() -> None:
    """CRS incidence and the grade distribution of the three patients."""
    summary = as_json("cohort")
    assert summary["patients"] == 3
    assert summary["crs_incidence"] == {"n": 2, "of": 3, "pct": 200 / 3}
    assert summary["grade_distribution"] == {
        "0": 1,
        "1": 1,
        "2": 0,
        "3": 1,
        "4": 0,
        "5": 0,
    }
    assert summary["tocilizumab"]["n"] == 1
    assert summary["icu_level_support"]["n"] == 1
    assert summary["median_onset_h"] == 20.0
    table = run("cohort")
    assert table.exit_code == 0, table.output
    for needle in (
        "2 of 3 (66.7 %)",
        "1 / 1 / 0 / 1 / 0 / 0",
        "20.0 h",
        "medical device",
    ):
        assert needle in table.output


def test_the_cli_starts_without_fastapi_or_matplotlib() -> None:
    """`crsmon review` keeps start-up cheap: the heavy imports wait for use."""
    code = (
        "import sys, crsmon.cli.review, crsmon.cli; "
        "print(sorted(m for m in ('fastapi', 'matplotlib') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert done.stdout.strip() == "[]"
