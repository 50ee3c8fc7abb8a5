"""End to end on each database: a feed file in, grade rows and alerts out, once."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import guards_off, reset_schema
from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

import crsmon.services.regrade as regrade_service
from crsmon.cli import main
from crsmon.db.engine import make_engine, make_sessions
from crsmon.db.models import (
    Alert,
    AuditEvent,
    ClinicalRecord,
    Grade,
    QuarantinedRecord,
)
from crsmon.domain.catalog import resolve_rule_set
from crsmon.settings import load_settings

INFUSION = (datetime.now(UTC) - timedelta(days=3)).replace(microsecond=0)


def at(hours: float) -> str:
    return (INFUSION + timedelta(hours=hours)).isoformat()


def record(n: int, kind: str, **fields: Any) -> str:
    envelope = {"kind": kind, "source_system": "monitor", "source_record_id": f"m-{n}"}
    return json.dumps({**envelope, "patient": "P-0007", **fields})


FEED = [
    json.dumps(
        {
            "kind": "patient",
            "source_system": "ehr",
            "source_record_id": "e-1",
            "patient": "P-0007",
            "age_years": 9.0,
            "care_unit": "PICU",
            "infusion_at": at(0),
        }
    ),
    record(
        1, "vitals", observed_at=at(4), temperature_c=37.1, sbp_mmhg=104, dbp_mmhg=60
    ),
    record(2, "oxygen", observed_at=at(4), device="room_air"),
    record(
        3, "vitals", observed_at=at(20), temperature_c=38.9, sbp_mmhg=100, dbp_mmhg=58
    ),
    record(
        4, "vitals", observed_at=at(26), temperature_c=39.4, sbp_mmhg=84, dbp_mmhg=40
    ),
    record(5, "fluid_bolus", given_at=at(26), for_hypotension=True, volume_ml=400),
    record(6, "treatment", given_at=at(30), drug="tocilizumab"),
    record(
        7,
        "vasopressor_start",
        started_at=at(32),
        drug="norepinephrine",
        dose=0.05,
        unit="ug/kg/min",
    ),
    record(
        8, "vitals", observed_at=at(33), temperature_c=37.2, sbp_mmhg=92, dbp_mmhg=50
    ),
    record(9, "vitals", observed_at=at(34), temperature_c=51.0),
]


@pytest.fixture
def feed(tmp_path: Path) -> Path:
    path = tmp_path / "feed.ndjson"
    path.write_text("\n".join(FEED) + "\n", encoding="utf-8")
    return path


def ingest(path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("CRSMON_DATABASE_URL", database_url)
    return CliRunner().invoke(main, ["ingest", str(path)])


def rows(database_url: str, model: type[Any]) -> list[Any]:
    engine = make_engine(database_url)
    try:
        sessions: sessionmaker[Session] = make_sessions(engine)
        with sessions() as session:
            return list(session.scalars(select(model)).all())
    finally:
        engine.dispose()


def test_feed_in_grades_and_alerts_out_exactly_once(
    feed: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ingest grades every record time, raises each alert once, and is idempotent."""
    first = ingest(feed, database_url, monkeypatch)
    assert first.exit_code == 1, first.output  # line 10 is refused
    assert "line 10: temperature_c: must be >= 25" in first.output
    grades = rows(database_url, Grade)
    by_time = {g.t_hours: g for g in grades}
    assert by_time[20].grade == 1
    assert by_time[26].grade == 2
    assert by_time[32].grade == 3  # the 26-h fever is within 24 h, plus a pressor
    assert all(g.rule_set == "astct-2019" and g.reasons for g in grades)
    assert by_time[26].snapshot["sources"]["iv_fluid_bolus_for_hypotension"]
    kinds = sorted(a.kind for a in rows(database_url, Alert))
    assert kinds.count("crs_onset") == 1
    assert kinds.count("severe_crs") == 1
    quarantined = rows(database_url, QuarantinedRecord)
    assert [q.line_no for q in quarantined] == [10]
    assert {r.grading_state for r in rows(database_url, ClinicalRecord)} == {"graded"}

    again = ingest(feed, database_url, monkeypatch)
    assert "0 patients graded" in again.output
    assert len(rows(database_url, Grade)) == len(grades)
    assert sorted(a.kind for a in rows(database_url, Alert)) == kinds


def test_a_retraction_re_derives_the_grades(
    feed: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Retracting the pressor writes new grade rows beside the old, never over them."""
    ingest(feed, database_url, monkeypatch)
    before = len(rows(database_url, Grade))
    feed.write_text(
        record(10, "retraction", at=at(40), target_record_id="m-7", reason="wrong bed")
        + "\n",
        encoding="utf-8",
    )
    assert ingest(feed, database_url, monkeypatch).exit_code == 0
    grades = rows(database_url, Grade)
    assert len(grades) > before
    at_32 = sorted((g for g in grades if g.t_hours == 32), key=lambda g: g.id)
    assert [g.grade for g in at_32][-1] < 3


def test_regrade_writes_rows_beside_the_live_ones(
    feed: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`crsmon regrade --rule-set` adds rows under the new key, changing none."""
    ingest(feed, database_url, monkeypatch)
    live = {(g.id, g.grade) for g in rows(database_url, Grade)}
    alerts = len(rows(database_url, Alert))
    key = "astct-2019+hypotension=treatment_only"
    result = CliRunner().invoke(main, ["regrade", "--rule-set", key])
    assert result.exit_code == 0, result.output
    grades = rows(database_url, Grade)
    assert {(g.id, g.grade) for g in grades if g.rule_set == "astct-2019"} == live
    assert {g.rule_set for g in grades} == {"astct-2019", key}
    assert len(rows(database_url, Alert)) == alerts
    again = CliRunner().invoke(main, ["regrade", "--rule-set", key])
    assert "0 grade rows written" in again.output


def graded_content(database_url: str, key: str) -> list[tuple[Any, ...]]:
    """Every grade row of ``key`` by what it says (not its id or write time)."""
    return sorted(
        (
            g.patient_id,
            g.t_hours,
            g.evaluated_at,
            g.grade,
            json.dumps(g.reasons, sort_keys=True),
            json.dumps(g.missing_inputs, sort_keys=True),
            json.dumps(g.flags, sort_keys=True),
            g.snapshot_hash,
            g.risk_probability,
        )
        for g in rows(database_url, Grade)
        if g.rule_set == key
    )


def five_patients(tmp_path: Path, database_url: str, mp: pytest.MonkeyPatch) -> None:
    """The feed for five patients, stored (one refused line each)."""
    lines = [
        line.replace("P-0007", f"P-01{n:02d}")
        .replace('"m-', f'"m{n}-')
        .replace('"e-1"', f'"e{n}-1"')
        for n in range(5)
        for line in FEED
    ]
    path = tmp_path / "five.ndjson"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    stored = ingest(path, database_url, mp)
    assert stored.output.count("must be >= 25") == 5, stored.output


def regrade_events(database_url: str) -> list[dict[str, Any]]:
    return [e.details for e in rows(database_url, AuditEvent) if e.action == "regrade"]


def test_a_parallel_regrade_writes_what_a_serial_one_does(
    tmp_path: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`crsmon regrade --jobs 2` (PostgreSQL), batches of two patients shared
    by two child processes, writes the rows a serial regrade writes, once, in
    one audit event."""
    database_url = reset_schema(postgres_url)
    five_patients(tmp_path, database_url, monkeypatch)
    monkeypatch.setattr(regrade_service, "REGRADE_BATCH", 2)  # 3 batches of 5
    key = "astct-2019+hypotension=treatment_only"

    serial = CliRunner().invoke(main, ["regrade", "--rule-set", key])
    assert serial.exit_code == 0, serial.output
    expected = graded_content(database_url, key)
    assert len({row[0] for row in expected}) == 5
    engine = make_engine(database_url)
    try:
        with guards_off(engine, "grades"), engine.begin() as connection:
            connection.execute(delete(Grade).where(Grade.rule_set == key))
    finally:
        engine.dispose()

    parallel = CliRunner().invoke(main, ["regrade", "--rule-set", key, "--jobs", "2"])
    assert parallel.exit_code == 0, parallel.output
    assert f"regraded 5 patients under {key}: {len(expected)} grade rows" in (
        parallel.output
    )
    assert graded_content(database_url, key) == expected
    assert [
        (e["jobs"], e["grade_rows_written"], e["complete"])
        for e in regrade_events(database_url)
    ] == [(1, len(expected), True), (2, len(expected), True)]
    assert 1 <= regrade_events(database_url)[1]["processes"] <= 2
    # The batches ran in child processes, not in this one (nothing is missing,
    # so this run writes nothing).
    settings = load_settings()
    again = regrade_service.regrade_all(settings, resolve_rule_set(key), jobs=2)
    assert (again.grade_rows_written, again.failure) == (0, None)
    assert again.pids
    assert os.getpid() not in again.pids
    assert len(again.pids) <= 2


def test_a_parallel_regrade_is_refused_on_sqlite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite has one writer: `--jobs 2` is refused, naming the option."""
    database_url = f"sqlite:///{tmp_path / 'one.sqlite3'}"
    five_patients(tmp_path, database_url, monkeypatch)
    refused = CliRunner().invoke(
        main, ["regrade", "--rule-set", "astct-2019+hypotension=haque", "--jobs", "2"]
    )
    assert refused.exit_code == 2, refused.output
    assert "--jobs" in refused.output
    assert "PostgreSQL" in refused.output
    assert regrade_events(database_url) == []


def test_a_regrade_stopped_by_a_failed_batch_is_audited_and_can_be_finished(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch that fails stops the run with its error; the audit event says
    the run is incomplete and what the committed batches wrote; running again
    writes exactly what is missing."""
    stopped_then_finished(tmp_path, database_url, monkeypatch, jobs=1)


def test_a_parallel_regrade_stopped_by_a_failed_batch_too(
    tmp_path: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same with `--jobs 2` (a child's error reaches the parent)."""
    stopped_then_finished(tmp_path, reset_schema(postgres_url), monkeypatch, jobs=2)


def stopped_then_finished(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch, *, jobs: int
) -> None:
    five_patients(tmp_path, database_url, monkeypatch)
    monkeypatch.setattr(regrade_service, "REGRADE_BATCH", 1)
    key = "astct-2019+hypotension=treatment_only"
    engine = make_engine(database_url)
    try:
        with make_sessions(engine)() as session:
            doomed = max(session.scalars(select(ClinicalRecord.patient_id)))
    finally:
        engine.dispose()
    from crsmon.services.grading import grade_patients as real

    def failing(session: Session, ids: list[int], *args: Any, **kwargs: Any) -> Any:
        if doomed in ids:
            raise RuntimeError("a failing batch")
        return real(session, ids, *args, **kwargs)

    monkeypatch.setattr(regrade_service, "grade_patients", failing)
    stopped = CliRunner().invoke(
        main, ["regrade", "--rule-set", key, "--jobs", str(jobs)]
    )
    assert isinstance(stopped.exception, RuntimeError), stopped.output
    assert "stopped by a failed batch" in stopped.output
    (event,) = regrade_events(database_url)
    assert (event["complete"], event["failure"]) == (False, "RuntimeError")
    partial = graded_content(database_url, key)
    assert event["grade_rows_written"] == len(partial)
    assert doomed not in {row[0] for row in partial}

    monkeypatch.setattr(regrade_service, "grade_patients", real)
    finished = CliRunner().invoke(main, ["regrade", "--rule-set", key])
    assert finished.exit_code == 0, finished.output
    whole = graded_content(database_url, key)
    assert set(partial) < set(whole)
    assert {row[0] for row in whole} >= {doomed}
    assert regrade_events(database_url)[1]["grade_rows_written"] == len(whole) - len(
        partial
    )
