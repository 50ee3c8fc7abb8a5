"""Integration: the current grade at a time is the latest derivation (both databases).

A late vitals set changes the snapshot at a later time (A, then B); retracting
it brings back the earlier snapshot (A again). Grade rows are append-only and
the newest row at a time is current, so the return to A must be written as a
new row (a higher ``revision``), once, or B, which cites the retracted value,
would stay current.
"""

from __future__ import annotations

import gc
import json
import warnings
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import create_engine, func, select, text
from sqlalchemy.orm import Session, sessionmaker

from crsmon.api.queries import grade_timeline, patient_view
from crsmon.db.migrate import alembic_config, check, upgrade
from crsmon.db.models import Alert, Grade, Patient
from crsmon.db.repository import patient_by_pseudonym
from crsmon.domain.catalog import resolve_rule_set
from crsmon.services.grading import GradingRun, grade_patient
from crsmon.services.ingest import Outcome, ingest_text
from crsmon.services.monitoring import AlertPolicy

INFUSION = datetime(2026, 3, 1, 8, tzinfo=UTC)
NOW = INFUSION + timedelta(hours=48)
PATIENT = "P-0501"
RULES = resolve_rule_set("astct-2019")


def at(hours: float) -> str:
    return (INFUSION + timedelta(hours=hours)).isoformat()


def send(sessions: sessionmaker[Session], record: dict[str, Any]) -> Outcome:
    body = {"source_system": "monitor", "patient": PATIENT, **record}
    return ingest_text(sessions, json.dumps(body), now=NOW, channel="test")


def enrol(sessions: sessionmaker[Session]) -> None:
    outcome = send(
        sessions,
        {
            "kind": "patient",
            "source_system": "ehr",
            "source_record_id": "enrol",
            "age_years": 7.0,
            "care_unit": "PICU",
            "infusion_at": at(0),
        },
    )
    assert outcome.status == "stored"


def grade(sessions: sessionmaker[Session]) -> GradingRun:
    """One grading run for the patient, as a worker task runs it."""
    with sessions.begin() as session:
        patient_id = patient_by_pseudonym(session, PATIENT).id
        return grade_patient(session, patient_id, RULES, now=NOW, policy=AlertPolicy())


def rows_at(sessions: sessionmaker[Session], hours: float) -> list[Grade]:
    with sessions() as session:
        return list(
            session.scalars(
                select(Grade).where(Grade.t_hours == hours).order_by(Grade.id)
            )
        )


def counts(sessions: sessionmaker[Session]) -> tuple[int, int]:
    """How many grade rows and alerts there are."""
    with sessions() as session:
        grades = session.scalar(select(func.count()).select_from(Grade))
        alerts = session.scalar(select(func.count()).select_from(Alert))
    return grades or 0, alerts or 0


def current(sessions: sessionmaker[Session]) -> dict[float, Grade]:
    """The current grade row at each time, as the API reads them."""
    with sessions() as session:
        patient = session.scalars(select(Patient)).one()
        rows = grade_timeline(session, patient.id, RULES.key, include_superseded=False)
        return {g.t_hours: g for g, _ in rows}


def cites(row: Grade, value: str) -> bool:
    return value in json.dumps(row.snapshot) or any(value in r for r in row.reasons)


def test_a_retraction_back_to_an_earlier_snapshot_makes_it_current(
    sessions: sessionmaker[Session],
) -> None:
    """A (36 h), B (late 35-h fever), retraction: A again is written and current."""
    enrol(sessions)
    send(sessions, {"kind": "oxygen", "source_record_id": "o-1",
                    "observed_at": at(36), "device": "room_air"})  # fmt: skip
    assert grade(sessions).grades_written == 1
    send(sessions, {"kind": "vitals", "source_record_id": "v-1",
                    "observed_at": at(35), "temperature_c": 40.5})  # fmt: skip
    assert grade(sessions).grades_written == 2  # 35 h, and B at 36 h
    assert cites(current(sessions)[36], "40.5")
    alerts = counts(sessions)[1]

    retraction = {"kind": "retraction", "source_record_id": "r-1", "at": at(37),
                  "target_record_id": "v-1", "reason": "wrong patient"}  # fmt: skip
    assert send(sessions, retraction).status == "stored"
    run = grade(sessions)
    assert run.grades_written == 2  # 35 h without the fever, and A again at 36 h
    assert run.alerts_raised == ()

    a, b, again = rows_at(sessions, 36)
    assert [r.revision for r in (a, b, again)] == [0, 1, 2]
    assert again.snapshot_hash == a.snapshot_hash != b.snapshot_hash
    assert (again.snapshot, again.reasons, again.grade) == (a.snapshot, a.reasons, 0)
    assert cites(b, "40.5")
    assert not cites(again, "40.5")
    now_current = current(sessions)
    assert now_current[36].id == again.id
    assert not cites(now_current[35], "40.5")
    with sessions() as session:
        view = patient_view(session, session.scalars(select(Patient)).one(), RULES.key)
    assert (view.current_grade, view.max_grade) == (0, 0)

    settled = counts(sessions)
    assert settled[1] == alerts
    assert grade(sessions).grades_written == 0  # a re-delivered task
    assert send(sessions, retraction).status == "duplicate"  # a resent retraction
    assert grade(sessions).grades_written == 0
    assert counts(sessions) == settled
    assert [r.id for r in rows_at(sessions, 36)] == [a.id, b.id, again.id]


def test_a_retraction_that_changes_only_the_context_is_re_derived(
    sessions: sessionmaker[Session],
) -> None:
    """Fever at 10 h, tocilizumab at 12 h, nasal cannula at 40 h: grade 2 (the
    fever is waived after the drug). Retracting the 10-h fever leaves the 40-h
    snapshot unchanged but removes the onset and the waiver: grade 0 there."""
    enrol(sessions)
    send(sessions, {"kind": "vitals", "source_record_id": "v-1",
                    "observed_at": at(10), "temperature_c": 39.0})  # fmt: skip
    send(sessions, {"kind": "treatment", "source_record_id": "t-1",
                    "given_at": at(12), "drug": "tocilizumab"})  # fmt: skip
    send(sessions, {"kind": "oxygen", "source_record_id": "o-1", "observed_at": at(40),
                    "device": "nasal_cannula", "flow_l_min": 3.0})  # fmt: skip
    grade(sessions)
    assert current(sessions)[40].grade == 2
    send(sessions, {"kind": "retraction", "source_record_id": "r-1", "at": at(41),
                    "target_record_id": "v-1", "reason": "wrong patient"})  # fmt: skip
    grade(sessions)
    before, after = rows_at(sessions, 40)
    assert after.snapshot_hash == before.snapshot_hash
    assert (before.grade, after.grade, after.revision) == (2, 0, 1)
    assert current(sessions)[40].id == after.id
    assert grade(sessions).grades_written == 0


def test_a_retracted_correction_brings_the_original_value_back(
    sessions: sessionmaker[Session],
) -> None:
    """38.2, corrected to 40.5, the correction retracted: 38.2 is current again."""
    enrol(sessions)
    send(sessions, {"kind": "oxygen", "source_record_id": "o-1",
                    "observed_at": at(36), "device": "room_air"})  # fmt: skip
    grade(sessions)
    send(sessions, {"kind": "vitals", "source_record_id": "v-1",
                    "observed_at": at(35), "temperature_c": 38.2})  # fmt: skip
    grade(sessions)
    send(sessions, {"kind": "vitals", "source_record_id": "v-1-fix",
                    "observed_at": at(35), "temperature_c": 40.5,
                    "supersedes": "v-1", "correction_reason": "typo"})  # fmt: skip
    grade(sessions)
    assert cites(current(sessions)[36], "40.5")
    send(sessions, {"kind": "retraction", "source_record_id": "r-1", "at": at(37),
                    "target_record_id": "v-1-fix", "reason": "wrong fix"})  # fmt: skip
    assert grade(sessions).grades_written == 2  # 35 h and 36 h, back to 38.2

    none, fever, corrected, restored = rows_at(sessions, 36)
    assert [r.revision for r in rows_at(sessions, 36)] == [0, 1, 2, 3]
    assert restored.snapshot_hash == fever.snapshot_hash
    assert restored.snapshot_hash not in {none.snapshot_hash, corrected.snapshot_hash}
    assert current(sessions)[36].id == restored.id
    assert cites(restored, "38.2")
    assert not cites(restored, "40.5")
    assert grade(sessions).grades_written == 0


def test_a_0004_database_with_adjudications_upgrades_and_downgrades(
    database_url: str,
) -> None:
    """Grades cited by an adjudication survive 0005 (SQLite rebuilds the table)."""
    from alembic import command

    upgrade(database_url, "0004")
    engine = create_engine(database_url)
    try:
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO patients (pseudonym, infusion_at) "
                    "VALUES ('P-OLD', '2026-03-01 08:00:00+00:00')"
                )
            )
            connection.execute(
                text(
                    "INSERT INTO grades (patient_id, evaluated_at, t_hours, rule_set, "
                    "rule_set_version, grade, reasons, missing_inputs, flags, "
                    "snapshot, snapshot_hash) "
                    "SELECT id, '2026-03-01 10:00:00+00:00', 2.0, 'astct-2019', "
                    "'1', 1, '[]', '[]', '[]', '{}', 'h' FROM patients"
                )
            )
            connection.execute(
                text(
                    "INSERT INTO adjudications (patient_id, decision, "
                    "adjudicated_grade, computed_grade, computed_grade_id, rule_set, "
                    "reason, adjudicated_by, adjudicated_at) "
                    "SELECT patient_id, 'confirm', 1, 1, id, 'astct-2019', 'ok', "
                    "'dr-lee', '2026-03-02 10:00:00+00:00' FROM grades"
                )
            )

        def stored() -> list[tuple[Any, ...]]:
            with engine.connect() as connection:
                return [
                    *connection.execute(text("SELECT id, grade FROM grades")).all(),
                    *connection.execute(
                        text("SELECT id, computed_grade_id, reason FROM adjudications")
                    ).all(),
                ]

        before = stored()
        upgrade(database_url)
        check(database_url)
        assert stored() == before
        with engine.connect() as connection:
            assert connection.scalar(text("SELECT revision FROM grades")) == 0
        command.downgrade(alembic_config(database_url), "0004")
        assert stored() == before
        upgrade(database_url)
        check(database_url)
        assert stored() == before
    finally:
        engine.dispose()


def test_a_downgrade_that_would_drop_a_revert_is_refused(
    database_url: str, sessions: sessionmaker[Session]
) -> None:
    """The 0004 key cannot hold A twice at one time: nothing is changed or lost."""
    from alembic import command

    enrol(sessions)
    send(sessions, {"kind": "oxygen", "source_record_id": "o-1",
                    "observed_at": at(36), "device": "room_air"})  # fmt: skip
    grade(sessions)
    send(sessions, {"kind": "vitals", "source_record_id": "v-1",
                    "observed_at": at(35), "temperature_c": 40.5})  # fmt: skip
    grade(sessions)
    send(sessions, {"kind": "retraction", "source_record_id": "r-1", "at": at(37),
                    "target_record_id": "v-1", "reason": "wrong patient"})  # fmt: skip
    grade(sessions)
    rows = counts(sessions)
    refused = ""
    # When a migration raises, env.py skips disposing of its engine and
    # alembic.op keeps the failed context (so its engine) until the next run.
    # The next run (the upgrade) lets go of it, and it is collected here,
    # where its unclosed connection may warn, rather than in a later test.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            command.downgrade(alembic_config(database_url), "0004")
        except RuntimeError as exc:
            refused = str(exc)
        upgrade(database_url)  # still at head: nothing to do
        gc.collect()
    assert "cannot downgrade below 0005" in refused
    check(database_url)
    assert counts(sessions) == rows
    assert [r.revision for r in rows_at(sessions, 36)] == [0, 1, 2]
