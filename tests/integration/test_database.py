"""Integration: the schema migrates and behaves the same on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, StatementError
from sqlalchemy.orm import Session, sessionmaker

from crsmon.db.migrate import check, upgrade
from crsmon.db.models import Alert, ClinicalRecord, Patient


def _patient(pseudonym: str = "P-0001") -> Patient:
    return Patient(
        pseudonym=pseudonym,
        age_years_at_infusion=7.5,
        infusion_at=datetime(2026, 3, 1, 8, tzinfo=UTC),
    )


def test_migrations_reach_head_and_match_the_models(database_url: str) -> None:
    """`upgrade head` builds the schema and `alembic check` finds no drift."""
    upgrade(database_url)
    check(database_url)
    upgrade(database_url)  # idempotent


def test_timestamps_are_utc_aware_both_ways(sessions: sessionmaker[Session]) -> None:
    """An aware time comes back as the same instant in UTC; server times are aware."""
    plus_two = timezone(timedelta(hours=2))
    with sessions.begin() as session:
        patient = _patient()
        patient.infusion_at = datetime(2026, 3, 1, 10, tzinfo=plus_two)
        session.add(patient)
    with sessions() as session:
        stored = session.scalars(select(Patient)).one()
    assert stored.infusion_at == datetime(2026, 3, 1, 8, tzinfo=UTC)
    assert stored.infusion_at.tzinfo is not None
    assert stored.recorded_at.tzinfo is not None


def test_naive_timestamps_are_refused(sessions: sessionmaker[Session]) -> None:
    """A naive datetime never reaches the database."""
    patient = _patient()
    patient.infusion_at = datetime(2026, 3, 1, 8)  # noqa: DTZ001
    with pytest.raises(StatementError, match="naive datetime"), sessions.begin() as s:
        s.add(patient)


def test_natural_keys_are_unique(sessions: sessionmaker[Session]) -> None:
    """The same source record, or the same alert key, cannot be stored twice."""
    with sessions.begin() as session:
        patient = _patient()
        session.add(patient)
    when = datetime(2026, 3, 2, tzinfo=UTC)
    record = {
        "patient_id": patient.id,
        "kind": "measurement",
        "source_system": "monitor-a",
        "source_record_id": "42",
        "content_hash": "x",
        "occurred_at": when,
    }
    with sessions.begin() as session:
        session.add(ClinicalRecord(**record))
    with pytest.raises(IntegrityError), sessions.begin() as session:
        session.add(ClinicalRecord(**record))
    alert = {
        "patient_id": patient.id,
        "kind": "crs_onset",
        "severity": "warning",
        "dedup_key": "course@20",
        "triggered_at": when,
        "rule_set": "astct-2019",
        "reasons": [],
    }
    with sessions.begin() as session:
        session.add(Alert(**alert))
    with pytest.raises(IntegrityError), sessions.begin() as session:
        session.add(Alert(**alert))


def test_cli_upgrades_the_configured_database(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`crsmon db upgrade` then `crsmon db check` on CRSMON_DATABASE_URL."""
    from click.testing import CliRunner

    from crsmon.cli import main

    monkeypatch.setenv("CRSMON_DATABASE_URL", database_url)
    runner = CliRunner()
    assert runner.invoke(main, ["db", "upgrade"]).exit_code == 0
    result = runner.invoke(main, ["db", "check"])
    assert result.exit_code == 0, result.output


def test_migrations_downgrade_to_base_and_up_again(database_url: str) -> None:
    """Every migration can be undone and redone on both backends."""
    from alembic import command

    from crsmon.db.migrate import alembic_config

    upgrade(database_url)
    command.downgrade(alembic_config(database_url), "base")
    upgrade(database_url)
    check(database_url)


def test_upgrading_a_0001_database_keeps_its_records(database_url: str) -> None:
    """A database of the first release, with data, upgrades to head intact.

    Records stored before 0002 have no grading time (``graded_at`` is null);
    they are neither re-graded nor lost.
    """
    from sqlalchemy import create_engine, text

    upgrade(database_url, "0001")
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
                    "INSERT INTO clinical_records (patient_id, kind, source_system, "
                    "source_record_id, content_hash, occurred_at, quantity, value, "
                    "details, quality_flags, grading_state, attempts) "
                    "SELECT id, 'measurement', 'm', 'r1', 'h', "
                    "'2026-03-01 10:00:00+00:00', 'temperature_c', 38.4, '{}', '[]', "
                    "'graded', 1 FROM patients"
                )
            )
    finally:
        engine.dispose()
    upgrade(database_url)
    check(database_url)
    from crsmon.db.engine import make_engine, make_sessions

    engine = make_engine(database_url)
    try:
        with make_sessions(engine)() as session:
            (row,) = session.scalars(select(ClinicalRecord)).all()
    finally:
        engine.dispose()
    assert (row.value, row.grading_state, row.graded_at) == (38.4, "graded", None)


def test_utc_columns_render_as_plain_timestamps_in_migrations() -> None:
    """Autogenerate writes UtcDateTime as sa.DateTime(timezone=True), not a import."""
    from crsmon.db.migrate import render_item
    from crsmon.db.models import UtcDateTime

    assert render_item("type", UtcDateTime(), None) == "sa.DateTime(timezone=True)"  # type: ignore[arg-type]
    assert render_item("type", object(), None) is False  # type: ignore[arg-type]
