"""The audit trail: every write audited, append-only in the database, hash-chained.

On SQLite and PostgreSQL: each kind of write (enrolment, record, correction,
retraction, attribution, acknowledgement, adjudication, key creation and
revocation, export, refusal) appends one event with who, what, when and why in
its chain; the database refuses to update or delete audit rows, grades and
adjudications and to rewrite a clinical value; the verifier finds a tampered,
a deleted and an inserted row. On PostgreSQL the application role's grants
refuse the same writes with "permission denied".
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from api_feed import MakeClient, TestClient, at, escalating, record, vitals
from click.testing import CliRunner
from sqlalchemy import Engine, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from crsmon.cli import main
from crsmon.db.audit import ADMIN, QUARANTINE, events, patient_chain, verify
from crsmon.db.engine import make_engine, make_sessions
from crsmon.db.grants import grant_app_role
from crsmon.db.models import Alert, AuditEvent, ClinicalRecord, Patient
from crsmon.services.ingest import ingest_text

pytest_plugins = ("api_fixtures",)


@pytest.fixture
def client(make_client: MakeClient) -> TestClient:
    """The app without risk scoring (the trail does not depend on it; faster)."""
    return make_client(risk_model_dir=None)


PATIENT = "P-AUD"


def _feed(client: TestClient) -> dict[str, Any]:
    for body in escalating(PATIENT):
        reply = client.post("/v1/records", json=body)
        assert reply.status_code == 201, reply.text
    corrected = {
        **vitals(5, 34, patient=PATIENT, temperature_c=37.4),
        "supersedes": "m-4",
        "correction_reason": "probe re-seated",
    }
    assert client.post("/v1/records", json=corrected).status_code == 201
    retraction = record(
        "retraction",
        6,
        patient=PATIENT,
        target_record_id="m-5",
        reason="wrong patient's monitor",
        at=at(35),
    )
    reply = client.post("/v1/records", json=retraction)
    assert reply.status_code == 201, reply.text
    attribution = record(
        "attribution",
        7,
        patient=PATIENT,
        finding="fever",
        start_at=at(20),
        by="Dr Example",
        reason="line infection",
    )
    reply = client.post("/v1/records", json=attribution)
    assert reply.status_code == 201, reply.text
    refused = {**vitals(8, 36, patient=PATIENT), "bed_note": "x"}
    assert client.post("/v1/records", json=refused).status_code == 422
    again = client.post("/v1/records", json=escalating(PATIENT)[1])
    assert again.status_code == 200  # a duplicate writes nothing, audits nothing
    alerts = client.get("/v1/alerts", params={"patient": PATIENT}).json()["items"]
    ack = client.post(
        f"/v1/alerts/{alerts[0]['id']}/acknowledge",
        json={"by": "nurse", "note": "seen"},
    )
    assert ack.status_code == 200
    verdict = client.post(
        f"/v1/patients/{PATIENT}/adjudications",
        json={"decision": "confirm", "reason": "chart review", "by": "Dr R"},
    )
    assert verdict.status_code == 201, verdict.text
    export = client.get("/v1/exports/grade-table", params={"purpose": "DSMB"})
    assert export.status_code == 200
    return {"alert": alerts[0]["id"]}


def test_every_write_is_audited_once_with_who_what_when_why(
    client: TestClient, db_sessions: sessionmaker[Session]
) -> None:
    started = datetime.now(UTC)
    seen = _feed(client)
    with db_sessions() as session:
        patient = session.scalars(
            select(Patient).where(Patient.pseudonym == PATIENT)
        ).one()
        trail = events(session, chain=patient_chain(patient.id), limit=1000)
        admin = events(session, chain=ADMIN, limit=1000)
        refused = events(session, chain=QUARANTINE, limit=1000)
        records = session.scalar(
            select(ClinicalRecord.id).order_by(ClinicalRecord.id.desc())
        )
        result = verify(session)
    actions = [e.action for e in trail]
    assert actions == [
        "enrol",
        "create",
        "create",
        "create",
        "create",
        "correct",
        "retract",
        "create",
        "acknowledge",
        "adjudicate",
    ]
    assert [e.seq for e in trail] == list(range(1, len(trail) + 1))
    assert all(e.actor.startswith("key:") for e in trail)
    assert {e.actor_role for e in trail} == {"bedside", "reviewer"}
    assert all(e.request_id for e in trail)
    assert all(started <= e.occurred_at <= datetime.now(UTC) for e in trail)
    by_action = {e.action: e for e in trail}
    assert by_action["correct"].reason == "probe re-seated"
    assert by_action["retract"].reason == "wrong patient's monitor"
    assert by_action["acknowledge"].entity_id == str(seen["alert"])
    assert by_action["acknowledge"].reason == "seen"
    assert by_action["adjudicate"].reason == "chart review"
    assert max(max(e.details.get("record_ids", [0])) for e in trail) == records
    assert [e.action for e in admin] == ["create"] * 4 + ["export"]
    assert admin[-1].reason == "DSMB"
    assert admin[-1].entity_id == "grade-table"
    assert [e.action for e in refused] == ["refuse"]
    assert "bed_note" in (refused[0].reason or "")
    assert result.ok
    assert result.events == len(trail) + len(admin) + len(refused)


def test_the_database_refuses_to_rewrite_history(
    client: TestClient, db_sessions: sessionmaker[Session], api_database_url: str
) -> None:
    _feed(client)
    engine = make_engine(api_database_url)
    refused = [
        "UPDATE audit_events SET reason = 'nothing happened'",
        "DELETE FROM audit_events",
        "UPDATE grades SET grade = 0",
        "DELETE FROM grades",
        "DELETE FROM adjudications",
        "UPDATE clinical_records SET value = 36.6",
        "UPDATE clinical_records SET occurred_at = recorded_at",
        "UPDATE patients SET weight_kg = 1",
    ]
    try:
        for statement in refused:
            with pytest.raises(DBAPIError), engine.begin() as connection:
                connection.execute(text(statement))
        if engine.dialect.name == "postgresql":
            with pytest.raises(DBAPIError), engine.begin() as connection:
                connection.execute(text("TRUNCATE audit_events"))
        # State columns stay updatable (grading state, retraction mark).
        with engine.begin() as connection:
            connection.execute(text("UPDATE clinical_records SET attempts = attempts"))
    finally:
        engine.dispose()
    with db_sessions() as session:
        assert verify(session).ok


def _tamper(url: str, statement: str) -> None:
    """What an attacker with the owner's powers would do: drop the guard first."""
    engine = make_engine(url)
    try:
        with engine.begin() as connection:
            if engine.dialect.name == "sqlite":
                connection.execute(text("DROP TRIGGER audit_events_no_update"))
                connection.execute(text("DROP TRIGGER audit_events_no_delete"))
            else:
                connection.execute(
                    text("ALTER TABLE audit_events DISABLE TRIGGER USER")
                )
            connection.execute(text(statement))
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    ("statement", "problem"),
    [
        (
            "UPDATE audit_events SET reason = 'nothing to see' "
            "WHERE action = 'retract'",
            "altered",
        ),
        ("DELETE FROM audit_events WHERE action = 'correct'", "sequence jumps"),
        (
            "UPDATE audit_events SET details = '{}' WHERE action = 'acknowledge'",
            "altered",
        ),
    ],
)
def test_the_verifier_finds_a_tampered_row(
    client: TestClient,
    db_sessions: sessionmaker[Session],
    api_database_url: str,
    statement: str,
    problem: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _feed(client)
    with db_sessions() as session:
        assert verify(session).ok
        patient_id = session.scalar(
            select(Patient.id).where(Patient.pseudonym == PATIENT)
        )
        target = session.scalar(
            select(AuditEvent.seq).where(
                AuditEvent.action == statement.split("action = '")[1].split("'")[0]
            )
        )
    _tamper(api_database_url, statement)
    with db_sessions() as session:
        result = verify(session)
    assert not result.ok
    (found,) = result.breaks
    assert found.chain == patient_chain(patient_id or 0)
    assert found.seq == (target or 0) + (1 if problem == "sequence jumps" else 0)
    assert problem in found.problem
    monkeypatch.setenv("CRSMON_DATABASE_URL", api_database_url)
    cli = CliRunner().invoke(main, ["audit", "verify"])
    assert cli.exit_code == 1
    assert f"BROKEN {found.chain} at seq {found.seq}" in cli.output


def test_an_event_inserted_into_a_chain_breaks_it(
    client: TestClient, db_sessions: sessionmaker[Session]
) -> None:
    _feed(client)
    with db_sessions.begin() as session:
        head = session.scalars(
            select(AuditEvent)
            .where(AuditEvent.chain == ADMIN)
            .order_by(AuditEvent.seq.desc())
        ).first()
        assert head is not None
        # A forged event with the right seq and prev_hash but a made-up hash.
        session.add(
            AuditEvent(
                chain=ADMIN,
                seq=head.seq + 1,
                occurred_at=datetime.now(UTC),
                actor="key:forged",
                actor_role="admin",
                action="create",
                entity="api_key",
                details={},
                prev_hash=head.hash,
                hash="f" * 64,
            )
        )
    with db_sessions() as session:
        result = verify(session)
    assert [(b.chain, b.problem) for b in result.breaks] == [
        (ADMIN, "content does not match its hash (altered)")
    ]


def test_audit_show_lists_a_patients_events(
    client: TestClient, api_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _feed(client)
    monkeypatch.setenv("CRSMON_DATABASE_URL", api_database_url)
    shown = CliRunner().invoke(main, ["audit", "show", "--patient", PATIENT, "--json"])
    assert shown.exit_code == 0, shown.output
    lines = [json.loads(line) for line in shown.output.splitlines()]
    assert [line["action"] for line in lines][:2] == ["enrol", "create"]
    verified = CliRunner().invoke(main, ["audit", "verify", "--json"])
    assert verified.exit_code == 0
    assert json.loads(verified.output)["ok"] is True
    missing = CliRunner().invoke(main, ["audit", "show", "--patient", "P-NONE"])
    assert missing.exit_code == 2


@pytest.fixture
def app_role(api_database_url: str) -> Iterator[tuple[str, Engine]]:
    """A throwaway login role with the application's grants (PostgreSQL only)."""
    if not api_database_url.startswith("postgresql"):
        pytest.skip("roles and grants are PostgreSQL's; SQLite relies on triggers")
    role = f"crsmon_app_{uuid.uuid4().hex[:10]}"
    admin_url = api_database_url.replace("postgresql+psycopg", "postgresql")
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE ROLE "{role}" LOGIN')
    owner = make_engine(api_database_url)
    app = make_engine(api_database_url.replace("//postgres@", f"//{role}@"))
    try:
        grant_app_role(owner, role)
        yield role, app
    finally:
        app.dispose()
        owner.dispose()
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP OWNED BY "{role}"')
            conn.execute(f'DROP ROLE "{role}"')


def test_the_application_role_cannot_rewrite_history(
    client: TestClient, app_role: tuple[str, Engine]
) -> None:
    _feed(client)
    _, app = app_role
    sessions = make_sessions(app)
    # The role does its job: a new record is stored and audited.
    now = datetime.now(UTC)
    line = json.dumps(vitals(40, 50, patient=PATIENT, temperature_c=38.2))
    assert ingest_text(sessions, line, now=now, channel="test").status == "stored"
    with sessions.begin() as session:
        session.execute(
            text("UPDATE alerts SET status = 'acknowledged' WHERE id = :i"),
            {"i": session.scalar(select(Alert.id))},
        )
    for statement in (
        "UPDATE audit_events SET reason = 'x'",
        "DELETE FROM audit_events",
        "TRUNCATE audit_events",
        "DELETE FROM grades",
        "UPDATE clinical_records SET value = 36.6",
        "DELETE FROM clinical_records",
    ):
        with pytest.raises(DBAPIError, match="permission denied"), app.begin() as c:
            c.execute(text(statement))


def test_grant_app_role_refuses_sqlite_and_odd_names(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'x.sqlite3'}")
    try:
        with pytest.raises(ValueError, match="PostgreSQL"):
            grant_app_role(engine, "crsmon_app")
    finally:
        engine.dispose()
