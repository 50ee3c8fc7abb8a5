"""End to end: an EHR calls the CDS Hooks service and sees one card per open
alert; its feedback on a card acknowledges the alert, in the audit trail."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from api_feed import TestClient, escalating
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from crsmon.auth.keys import EMBEDDED_PEPPER
from crsmon.db.audit import Actor
from crsmon.db.models import Alert, AuditEvent
from crsmon.interfaces.cds import SOURCE_LABEL, alert_of_card, card_uuid, indicator
from crsmon.services.interfaces import link_patient

pytest_plugins = ("api_fixtures",)

PATIENT = "P-0001"
HOOK = "/cds-services/crsmon-crs"


def call(client: TestClient, patient_id: str) -> Any:
    body = {
        "hook": "patient-view",
        "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
        "fhirServer": "https://ehr.example/fhir",
        "context": {"patientId": patient_id, "userId": "Practitioner/123"},
    }
    return client.post(HOOK, json=body)


def setup_patient(client: TestClient, sessions: sessionmaker[Session]) -> None:
    for record in escalating(PATIENT):
        assert client.post("/v1/records", json=record).status_code == 201
    with sessions.begin() as session:
        link_patient(
            session, kind="reference", ref="Patient/ehr-123", pseudonym=PATIENT,
            pepper=EMBEDDED_PEPPER, actor=Actor("test", "admin"),
            now=datetime.now(UTC),
        )  # fmt: skip


def open_alerts(sessions: sessionmaker[Session]) -> list[Alert]:
    with sessions() as session:
        return list(
            session.scalars(
                select(Alert).where(Alert.status == "open").order_by(Alert.id)
            )
        )


def test_discovery_lists_the_patient_view_service(client: TestClient) -> None:
    services = client.get("/cds-services").json()["services"]
    assert [(s["hook"], s["id"]) for s in services] == [("patient-view", "crsmon-crs")]
    assert all(s["title"] and s["description"] for s in services)


def test_a_card_per_open_alert_then_feedback_acknowledges(
    client: TestClient, db_sessions: sessionmaker[Session]
) -> None:
    setup_patient(client, db_sessions)
    alerts = open_alerts(db_sessions)
    assert len(alerts) >= 2  # the escalating feed: onset, escalation, severe CRS
    reply = call(client, "ehr-123")
    assert reply.status_code == 200
    cards = reply.json()["cards"]
    assert sorted(c["uuid"] for c in cards) == sorted(card_uuid(a.id) for a in alerts)
    by_alert = {alert_of_card(c["uuid"]): c for c in cards}
    for alert in alerts:
        shown = by_alert[alert.id]
        assert len(shown["summary"]) <= 140
        assert shown["indicator"] == indicator(alert.kind, alert.grade, alert.severity)
        assert shown["source"] == {"label": SOURCE_LABEL}
        assert all(reason in shown["detail"] for reason in alert.reasons)
        assert "as of" in shown["detail"]
        assert shown["links"][0]["url"].endswith(f"/v1/patients/{PATIENT}/timeline")
        assert shown["links"][0]["type"] == "absolute"
    severe = next(a for a in alerts if a.grade is not None and a.grade >= 3)
    assert by_alert[severe.id]["indicator"] == "critical"
    first, second = alerts[0], alerts[1]
    feedback = {
        "feedback": [
            {"card": card_uuid(first.id), "outcome": "accepted",
             "outcomeTimestamp": "2026-11-25T08:00:00Z"},
            {"card": card_uuid(second.id), "outcome": "overridden",
             "overrideReason": {"reason": {"code": "not-crs",
                                           "display": "Fever from line infection"},
                                "userComment": "cultures pending"}},
        ]
    }  # fmt: skip
    answered = client.post(f"{HOOK}/feedback", json=feedback)
    assert answered.status_code == 200, answered.text
    assert [f["result"] for f in answered.json()["feedback"]] == ["acknowledged"] * 2
    with db_sessions() as session:
        done = {a.id: a for a in session.scalars(select(Alert))}
        events = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "acknowledge")
        ).all()
    assert done[first.id].status == "acknowledged"
    assert done[second.id].acknowledgement_note == (
        "CDS Hooks card overridden: Fever from line infection; cultures pending"
    )
    assert len(events) == 2
    left = {alert_of_card(c["uuid"]) for c in call(client, "ehr-123").json()["cards"]}
    assert first.id not in left
    assert second.id not in left
    again = client.post(f"{HOOK}/feedback", json=feedback)
    assert [f["result"] for f in again.json()["feedback"]] == [
        "already acknowledged"
    ] * 2
    stranger = {"feedback": [{"card": "7f0d9a7c-1111-4222-8333-444455556666",
                              "outcome": "accepted"}]}  # fmt: skip
    assert client.post(f"{HOOK}/feedback", json=stranger).status_code == 404


def test_an_unlinked_patient_gets_no_cards_and_bad_calls_are_refused(
    client: TestClient, db_sessions: sessionmaker[Session]
) -> None:
    setup_patient(client, db_sessions)
    assert call(client, "someone-else").json() == {"cards": []}
    wrong_hook = {"hook": "order-sign", "hookInstance": "x",
                  "context": {"patientId": "ehr-123"}}  # fmt: skip
    assert client.post(HOOK, json=wrong_hook).status_code == 422
    bystander = client.post(
        HOOK,
        json={"hook": "patient-view", "hookInstance": "x",
              "context": {"patientId": "ehr-123"}},
        headers={"Authorization": f"Bearer {client.keys['bedside']}"},
    )  # fmt: skip
    assert bystander.status_code == 403


def test_only_grade_alerts_take_their_indicator_from_the_grade() -> None:
    """A data-quality alert raised at a grade-4 moment is still information."""
    assert indicator("severe_crs", 4, "critical") == "critical"
    assert indicator("crs_onset", 1, "warning") == "info"
    assert indicator("crs_escalation", 2, "warning") == "warning"
    assert indicator("data_quality", 4, "info") == "info"
    assert indicator("stale_monitoring", 3, "warning") == "warning"
    assert indicator("high_risk", None, "critical") == "critical"


def test_feedback_is_all_or_nothing(
    client: TestClient, db_sessions: sessionmaker[Session]
) -> None:
    """A feedback call naming an unknown card acknowledges none of its cards."""
    setup_patient(client, db_sessions)
    first = open_alerts(db_sessions)[0]
    feedback = {"feedback": [
        {"card": card_uuid(first.id), "outcome": "accepted"},
        {"card": card_uuid(999_999), "outcome": "accepted"},
    ]}  # fmt: skip
    answer = client.post(f"{HOOK}/feedback", json=feedback)
    assert answer.status_code == 404
    assert answer.json()["detail"][0]["field"] == "feedback[1].card"
    assert first.id in {a.id for a in open_alerts(db_sessions)}
