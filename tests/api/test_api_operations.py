"""Operations over HTTP: health, metrics, OpenAPI, body limits and `serve`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import redis
from api_feed import MakeClient, TestClient, count, enrolment, vitals
from click.testing import CliRunner
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.orm import Session, sessionmaker

from crsmon.api.app import app_from_environment, create_app
from crsmon.api.cli import serve
from crsmon.api.limits import declared_length
from crsmon.db.models import ClinicalRecord, Patient, QuarantinedRecord
from crsmon.settings import SHIPPED_MODELS, Settings

pytest_plugins = ("api_fixtures",)

JSON = {"content-type": "application/json"}
NDJSON = {"content-type": "application/x-ndjson"}
FEVER: dict[str, Any] = {"temperature_c": 38.9, "sbp_mmhg": 100, "dbp_mmhg": 58}


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition, by name and sorted labels."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_live_answers_without_touching_dependencies(client: TestClient) -> None:
    """Liveness is the process only."""
    assert client.get("/health/live").json() == {"status": "ok"}


def test_ready_checks_the_database_and_no_broker_by_default(client: TestClient) -> None:
    """Ready: SELECT 1 answered; no broker configured is not a failure; the
    shipped risk model (models/) is loaded, verified, and named with its
    threshold."""
    reply = client.get("/health/ready")
    assert reply.status_code == 200
    body = reply.json()
    risk = body["checks"].pop("risk_model")
    assert body == {
        "status": "ready",
        "checks": {"database": "ok", "broker": "not configured"},
    }
    shipped = json.loads((SHIPPED_MODELS / "dynamic_48h.json").read_text())
    digest = shipped["sha256"][:12]
    threshold = shipped["default_threshold"]
    assert risk == f"ok (dynamic_48h@{digest}, threshold {threshold:.3f})"


def test_ready_names_a_broker_that_does_not_answer(make_client: MakeClient) -> None:
    """503 with the broker named (and no URL in the body)."""
    client = make_client(broker_url="redis://:s3cret@127.0.0.1:1/0")
    reply = client.get("/health/ready")
    assert reply.status_code == 503
    body = reply.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["broker"].startswith("unavailable")
    assert "s3cret" not in reply.text


def test_ready_refuses_a_broker_it_cannot_check(make_client: MakeClient) -> None:
    """Only Redis is a supported broker: anything else is reported, not assumed."""
    reply = make_client(broker_url="amqp://127.0.0.1:1//").get("/health/ready")
    assert reply.status_code == 503
    assert reply.json()["checks"]["broker"] == "unavailable (not a Redis URL)"


def test_ready_pings_a_configured_broker(
    make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A broker that answers PING is ready."""
    pinged: list[str] = []

    def ping(self: redis.Redis, **_options: Any) -> bool:
        pinged.append(str(self.connection_pool.connection_kwargs["port"]))
        return True

    monkeypatch.setattr(redis.Redis, "ping", ping)
    client = make_client(broker_url="redis://127.0.0.1:6390/0")
    reply = client.get("/health/ready")
    assert reply.status_code == 200
    assert reply.json()["checks"]["broker"] == "ok"
    assert pinged == ["6390"]


def test_ready_names_a_database_that_does_not_answer(tmp_path: Path) -> None:
    """503 naming the database; live still answers.

    /metrics needs an admin key, which cannot be checked without the
    database: it answers 503 with Retry-After, never 500 and never unchecked.
    """
    url = f"sqlite:///{tmp_path / 'missing' / 'crsmon.sqlite3'}"
    with TestClient(create_app(Settings(database_url=url, broker_url=None))) as client:
        reply = client.get("/health/ready")
        assert reply.status_code == 503
        assert reply.json()["checks"]["database"].startswith("unavailable")
        assert reply.json()["checks"]["broker"] == "not configured"
        assert client.get("/health/live").status_code == 200
        metrics = client.get("/metrics", headers={"Authorization": "Bearer x"})
    assert metrics.status_code == 503
    assert metrics.headers["Retry-After"]


def test_metrics_report_intake_grading_alerts_and_quarantine(
    client: TestClient,
) -> None:
    """Counts from the database at scrape time, plus this app's intake counter."""
    client.post("/v1/records", json=enrolment())
    client.post("/v1/records", json=vitals(1, 20, **FEVER))
    client.post("/v1/records", json=vitals(1, 20, **FEVER))
    client.post("/v1/records", json=vitals(2, 21, temperature_c=50.7))
    reply = client.get("/metrics")
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/plain")
    found = samples(reply.text)
    intake = "crsmon_api_intake_records_total"
    assert found[(intake, (("status", "stored"),))] == 2
    assert found[(intake, (("status", "duplicate"),))] == 1
    assert found[(intake, (("status", "refused"),))] == 1
    assert found[(intake, (("status", "conflict"),))] == 0
    assert found[("crsmon_database_up", ())] == 1
    assert found[("crsmon_records", (("grading_state", "graded"),))] == 3
    assert found[("crsmon_records", (("grading_state", "pending"),))] == 0
    assert found[("crsmon_oldest_pending_record_age_seconds", ())] == 0
    assert found[("crsmon_open_alerts", (("kind", "crs_onset"),))] == 1
    assert found[("crsmon_open_alerts", (("kind", "severe_crs"),))] == 0
    assert found[("crsmon_quarantined_records", ())] == 1
    assert found[("crsmon_api_dispatch_seconds_count", ())] == 2


def test_each_app_has_its_own_registry(make_client: MakeClient) -> None:
    """Two apps in one process neither clash nor share counters."""
    first, second = make_client(), make_client()
    first.post("/v1/records", json=enrolment())
    stored = ("crsmon_api_intake_records_total", (("status", "stored"),))
    assert samples(first.get("/metrics").text)[stored] == 1
    assert samples(second.get("/metrics").text)[stored] == 0


def test_a_body_over_the_limit_is_413_unread(
    make_client: MakeClient, db_sessions: sessionmaker[Session]
) -> None:
    """By Content-Length, and by counting a chunked body as it streams in."""
    client = make_client(max_body_bytes=1024)
    big = json.dumps({**enrolment(), "padding": "x" * 2000}).encode()
    declared = client.post("/v1/records", content=big, headers=JSON)
    assert declared.status_code == 413
    assert declared.json()["detail"][0]["field"] == "$"
    chunked = client.post(
        "/v1/records", content=iter([big[:900], big[900:]]), headers=JSON
    )
    assert chunked.status_code == 413
    batch = client.post("/v1/records/batch", content=iter([big]), headers=NDJSON)
    assert batch.status_code == 413
    ack = client.post("/v1/alerts/1/acknowledge", content=iter([big]), headers=JSON)
    assert ack.status_code == 413
    assert count(db_sessions, QuarantinedRecord) == 0
    assert client.post("/v1/records", json=enrolment()).status_code == 201


def test_a_malformed_content_length_is_left_to_the_stream_count() -> None:
    """Only a valid declared length is trusted; otherwise the body is counted."""
    assert declared_length({"headers": [(b"content-length", b"12")]}) == 12
    assert declared_length({"headers": [(b"content-length", b"x")]}) is None
    assert declared_length({"headers": []}) is None


def test_a_batch_over_the_record_limit_is_413_and_stores_nothing(
    make_client: MakeClient, db_sessions: sessionmaker[Session]
) -> None:
    """The count is checked before anything is stored."""
    client = make_client(max_batch_records=2)
    lines = [enrolment(), vitals(1, 20, **FEVER), vitals(2, 21, **FEVER)]
    body = "\n".join(json.dumps(line) for line in lines).encode()
    reply = client.post("/v1/records/batch", content=body, headers=NDJSON)
    assert reply.status_code == 413
    assert "2 records" in reply.json()["detail"][0]["reason"]
    assert count(db_sessions, Patient) == count(db_sessions, ClinicalRecord) == 0
    two = "\n".join(json.dumps(line) for line in lines[:2]).encode()
    assert client.post("/v1/records/batch", content=two, headers=NDJSON).is_success


def test_openapi_documents_every_route(client: TestClient) -> None:
    """/openapi.json lists the routes and the feed record schema; /docs serves."""
    document = client.get("/openapi.json").json()
    paths = document["paths"]
    assert {
        "/v1/records": {"post"},
        "/v1/records/batch": {"post"},
        "/v1/patients": {"get"},
        "/v1/patients/{pseudonym}": {"get"},
        "/v1/patients/{pseudonym}/grades": {"get"},
        "/v1/alerts": {"get"},
        "/v1/alerts/{alert_id}": {"get"},
        "/v1/alerts/{alert_id}/acknowledge": {"post"},
        "/v1/review/patients": {"get"},
        "/v1/review/alerts": {"get"},
        "/v1/review/cohort": {"get"},
        "/v1/patients/{pseudonym}/timeline": {"get"},
        "/v1/patients/{pseudonym}/timeline.png": {"get"},
        "/v1/patients/{pseudonym}/adjudications": {"get", "post"},
        "/v1/exports/{table}": {"get"},
        "/v1/exports/{table}/dictionary": {"get"},
        "/health/live": {"get"},
        "/health/ready": {"get"},
        "/metrics": {"get"},
        "/v1/admin/keys": {"get", "post"},
        "/v1/admin/keys/{key_id}/revoke": {"post"},
        "/v1/admin/audit/verify": {"get"},
        "/fhir/Observation": {"post"},
        "/fhir/MedicationAdministration": {"post"},
        "/fhir": {"post"},
        "/cds-services": {"get"},
        "/cds-services/crsmon-crs": {"post"},
        "/cds-services/crsmon-crs/feedback": {"post"},
    } == {path: set(item) for path, item in paths.items()}
    schemas = document["components"]["schemas"]
    assert {"FeedRecord", "VitalsIn", "PatientIn", "ErrorBody", "GradeOut"} <= set(
        schemas
    )
    body = paths["/v1/records"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"] == {"$ref": "#/components/schemas/FeedRecord"}
    refs = json.dumps(document).split('"$ref": "#/components/schemas/')[1:]
    assert {ref.split('"')[0] for ref in refs} <= set(schemas)
    assert set(paths["/v1/records"]["post"]["responses"]) >= {"201", "409", "422"}
    docs = client.get("/docs")
    assert docs.status_code == 200
    assert "swagger" in docs.text.lower()


def test_serve_runs_uvicorn_with_the_app(
    api_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`crsmon serve` builds the app from CRSMON_* and hands it to uvicorn."""
    served: list[tuple[Any, dict[str, Any]]] = []
    monkeypatch.setattr(
        "crsmon.api.cli.uvicorn.run", lambda app, **kw: served.append((app, kw))
    )
    monkeypatch.setenv("CRSMON_DATABASE_URL", api_database_url)
    result = CliRunner().invoke(serve, ["--port", "8123"])
    assert result.exit_code == 0, result.output
    ((app, options),) = served
    assert isinstance(app, FastAPI)
    # uvicorn's access log is off (crsmon.api.access logs route templates) and
    # its log config is not installed over crsmon's JSON logging.
    assert options == {
        "host": "127.0.0.1",
        "port": 8123,
        "log_level": "info",
        "access_log": False,
        "log_config": None,
    }
    factory_app = app_from_environment()
    assert factory_app.state.crsmon.settings.database_url == api_database_url
    factory_app.state.crsmon.engine.dispose()
    app.state.crsmon.engine.dispose()
