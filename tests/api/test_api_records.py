"""Intake over HTTP on each database: stored once, refused with reasons, graded."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import pytest
from api_feed import (
    PATIENT,
    MakeClient,
    TestClient,
    at,
    count,
    enrolment,
    record,
    vitals,
)
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from crsmon.db.models import Alert, ClinicalRecord, Grade, Patient, QuarantinedRecord
from crsmon.services.dispatch import Dispatcher
from crsmon.settings import Settings

pytest_plugins = ("api_fixtures",)

FEVER: dict[str, Any] = {"temperature_c": 38.9, "sbp_mmhg": 100, "dbp_mmhg": 58}


def post(client: TestClient, body: dict[str, Any]) -> Any:
    return client.post("/v1/records", json=body)


def ndjson(*lines: dict[str, Any] | str) -> bytes:
    text = [line if isinstance(line, str) else json.dumps(line) for line in lines]
    return ("\n".join(text) + "\n").encode()


def post_batch(client: TestClient, body: bytes) -> Any:
    headers = {"content-type": "application/x-ndjson"}
    return client.post("/v1/records/batch", content=body, headers=headers)


def test_enrolment_and_vitals_are_stored_graded_and_alerted(
    client: TestClient,
) -> None:
    """201 for new records; the grade and the onset alert are readable at once."""
    enrolled = post(client, enrolment())
    assert enrolled.status_code == 201
    assert enrolled.json()["status"] == "stored"
    assert enrolled.json()["record_ids"] == []
    stored = post(client, vitals(1, 20, **FEVER))
    assert stored.status_code == 201
    body = stored.json()
    assert body["status"] == "stored"
    assert len(body["record_ids"]) == 3  # one row per vital sign
    assert body["patient_id"] == enrolled.json()["patient_id"]

    grades = client.get(f"/v1/patients/{PATIENT}/grades").json()["items"]
    assert [(g["t_hours"], g["grade"]) for g in grades] == [(20.0, 1)]
    assert grades[0]["rule_set"] == "astct-2019"
    assert grades[0]["reasons"]
    onset = client.get("/v1/alerts", params={"kind": "crs_onset"}).json()["items"]
    assert [(a["patient"], a["grade"], a["status"]) for a in onset] == [
        (PATIENT, 1, "open")
    ]


def test_the_same_record_again_returns_the_original_ids(
    client: TestClient, db_sessions: sessionmaker[Session]
) -> None:
    """A resent record (same key, same content) is 200 and stores nothing new."""
    assert post(client, enrolment()).status_code == 201
    assert post(client, enrolment()).status_code == 200
    first = post(client, vitals(1, 20, **FEVER))
    rows, grades = count(db_sessions, ClinicalRecord), count(db_sessions, Grade)
    again = post(client, vitals(1, 20, **FEVER))
    assert again.status_code == 200
    assert again.json() == {**first.json(), "status": "duplicate"}
    assert count(db_sessions, ClinicalRecord) == rows
    assert count(db_sessions, Grade) == grades
    assert count(db_sessions, Patient) == 1


def test_the_same_key_with_other_content_is_a_conflict(
    client: TestClient, db_sessions: sessionmaker[Session]
) -> None:
    """409 naming the key; the first value stands and the resend is quarantined."""
    post(client, enrolment())
    post(client, vitals(1, 20, temperature_c=38.5))
    conflict = post(client, vitals(1, 20, temperature_c=39.5))
    assert conflict.status_code == 409
    assert conflict.json()["detail"][0]["field"] == "source_record_id"
    assert "39.5" not in conflict.text
    assert count(db_sessions, ClinicalRecord) == 1
    assert count(db_sessions, QuarantinedRecord) == 1
    changed = post(client, enrolment(age_years=10.0))
    assert changed.status_code == 409
    assert changed.json()["detail"][0]["field"] == "patient"


@pytest.mark.parametrize(
    ("fields", "field", "secret"),
    [
        pytest.param(
            {"temperature_c": 50.7}, "temperature_c", "50.7", id="implausible"
        ),
        pytest.param(
            {"observed_at": "2026-03-02T10:00:00.123456", "temperature_c": 38.3},
            "observed_at",
            "10:00:00.123456",
            id="naive-time",
        ),
        pytest.param(
            {"temperature_c": 38.1, "bed_note": "zz-secret-zz"},
            "bed_note",
            "zz-secret-zz",
            id="unknown-field",
        ),
        pytest.param(
            {"temperature_c": "38.7"}, "temperature_c", "38.7", id="wrong-type"
        ),
        pytest.param(
            {"temperature_c": 38.2, "patient": "P-zz-secret"},
            "patient",
            "P-zz-secret",
            id="unknown-patient",
        ),
    ],
)
def test_a_refused_record_is_422_naming_the_field_and_quarantined(
    client: TestClient,
    db_sessions: sessionmaker[Session],
    fields: dict[str, Any],
    field: str,
    secret: str,
) -> None:
    """Nothing clinical is stored, the record is kept for review, no value echoed."""
    post(client, enrolment())
    refused = post(client, {**vitals(1, 20), **fields})
    assert refused.status_code == 422
    detail = refused.json()["detail"]
    assert [d["field"] for d in detail] == [field]
    assert detail[0]["reason"]
    assert secret not in refused.text
    assert count(db_sessions, ClinicalRecord) == 0
    with db_sessions() as session:
        (kept,) = session.scalars(select(QuarantinedRecord)).all()
    assert kept.error.startswith(f"{field}: ")
    assert kept.channel == "api"
    assert kept.source_record_id == "m-1"
    assert secret in kept.payload  # kept as sent, for review


@pytest.mark.parametrize(
    "body",
    [b"{not json", b"[1, 2]", b"", b'{"kind": "\xff"}'],
    ids=["malformed", "array", "empty", "not-utf8"],
)
def test_an_unreadable_body_is_422_and_quarantined(
    client: TestClient, db_sessions: sessionmaker[Session], body: bytes
) -> None:
    """Even a body that is not a JSON object (or not text) is kept for review."""
    headers = {"content-type": "application/json"}
    refused = client.post("/v1/records", content=body, headers=headers)
    assert refused.status_code == 422
    assert refused.json()["detail"][0]["field"] == "$"
    assert count(db_sessions, QuarantinedRecord) == 1


def test_a_flagged_value_is_stored_and_raises_a_data_quality_alert(
    client: TestClient,
) -> None:
    """An extreme but possible value (§4.4 flag column) is kept, graded and flagged."""
    post(client, enrolment())
    assert post(client, vitals(1, 20, temperature_c=41.8)).status_code == 201
    alerts = client.get("/v1/alerts", params={"kind": "data_quality"}).json()
    assert alerts["total"] == 1
    assert "temperature_c" in alerts["items"][0]["reasons"][0]


def test_a_record_body_must_be_json(client: TestClient) -> None:
    """415 for another content type (a form post is not a feed record)."""
    refused = client.post("/v1/records", content=b"a=b", headers=FORM)
    assert refused.status_code == 415
    assert refused.json()["detail"][0]["field"] == "content-type"
    batch = client.post("/v1/records/batch", json=[enrolment()])
    assert batch.status_code == 415


FORM = {"content-type": "application/x-www-form-urlencoded"}


def test_a_batch_stores_the_good_records_and_reports_each(
    client: TestClient, db_sessions: sessionmaker[Session]
) -> None:
    """Per-line results in order; bad lines are refused without blocking others."""
    body = ndjson(
        enrolment(),
        vitals(1, 20, **FEVER),
        "{broken",
        vitals(2, 21, temperature_c=50.7),
        vitals(1, 20, **FEVER),  # the same record again
        "",
        vitals(1, 20, temperature_c=39.9),  # same key, other content
        record("treatment", 3, given_at=at(22), drug="tocilizumab"),
    )
    reply = post_batch(client, body)
    assert reply.status_code == 200
    items = reply.json()["items"]
    assert [(i["index"], i["line"], i["status"]) for i in items] == [
        (0, 1, "stored"),
        (1, 2, "stored"),
        (2, 3, "refused"),
        (3, 4, "refused"),
        (4, 5, "duplicate"),
        (5, 7, "conflict"),
        (6, 8, "stored"),
    ]
    assert items[3]["errors"][0]["field"] == "temperature_c"
    assert items[4]["record_ids"] == items[1]["record_ids"]
    assert reply.json()["counts"] == {
        "stored": 3,
        "duplicate": 1,
        "refused": 2,
        "conflict": 1,
    }
    assert "50.7" not in reply.text
    assert count(db_sessions, ClinicalRecord) == 4
    assert count(db_sessions, ClinicalRecord, ClinicalRecord.grading_state == "graded")
    with db_sessions() as session:
        lines = [
            q.line_no or 0 for q in session.scalars(select(QuarantinedRecord)).all()
        ]
    assert sorted(lines) == [3, 4, 7]
    assert count(db_sessions, Alert, Alert.kind == "crs_onset") == 1


def test_a_line_that_is_not_utf8_is_refused_alone(
    client: TestClient, db_sessions: sessionmaker[Session]
) -> None:
    """Undecodable bytes on one line cost that line only."""
    body = ndjson(enrolment()) + b'{"kind": "\xff"}\n' + ndjson(vitals(1, 20, **FEVER))
    items = post_batch(client, body).json()["items"]
    assert [i["status"] for i in items] == ["stored", "refused", "stored"]
    assert items[1]["errors"] == [{"field": "$", "reason": "not valid UTF-8 text"}]
    assert count(db_sessions, QuarantinedRecord) == 1


def test_an_empty_batch_is_refused(client: TestClient) -> None:
    """A batch with no record is a client error, not an empty success."""
    assert post_batch(client, b"\n\n").status_code == 422


class Recorder:
    """A dispatcher that remembers whom it was asked to grade (nothing is graded)."""

    def __init__(self) -> None:
        self.calls: list[set[int]] = []

    def notify(self, patient_ids: Iterable[int]) -> None:
        self.calls.append(set(patient_ids))


def test_the_dispatcher_hears_of_stored_records_only(make_client: MakeClient) -> None:
    """Notified once per request, after commit, with the patients that changed."""
    recorder = Recorder()

    def factory(_sessions: sessionmaker[Session], _settings: Settings) -> Dispatcher:
        return recorder

    client = make_client(dispatcher_factory=factory)
    patient_id = post(client, enrolment()).json()["patient_id"]
    post(client, vitals(1, 20, **FEVER))
    post(client, vitals(1, 20, **FEVER))  # duplicate: nothing to grade
    post_batch(client, ndjson(vitals(2, 21, **FEVER), vitals(3, 22, **FEVER)))
    assert recorder.calls == [{patient_id}, {patient_id}, {patient_id}]


class Broken:
    """A dispatcher whose broker is down."""

    def notify(self, patient_ids: Iterable[int]) -> None:
        raise ConnectionError(f"broker down; {len(set(patient_ids))} not sent")


def test_a_failed_notification_keeps_the_record_pending(
    make_client: MakeClient, db_sessions: sessionmaker[Session]
) -> None:
    """The record is stored (201) and waits, pending, for the sweeper."""
    client = make_client(dispatcher_factory=lambda _s, _c: Broken())
    post(client, enrolment())
    assert post(client, vitals(1, 20, **FEVER)).status_code == 201
    pending = ClinicalRecord.grading_state == "pending"
    assert count(db_sessions, ClinicalRecord, pending) == 3
    metrics = client.get("/metrics").text
    assert "crsmon_api_dispatch_failures_total 2.0" in metrics
    assert 'crsmon_records{grading_state="pending"} 3.0' in metrics
