"""T11: planted identifiers never reach logs, the broker, error replies or exports.

A real `crsmon serve` and `crsmon worker` (JSON logs at DEBUG) on PostgreSQL and
a private Redis whose every command is captured with MONITOR. Synthetic canary
identifiers go into every free-text and identifier field the feed and the API
take: record ids, a clinician's name and reason, correction and retraction
reasons, unknown fields (``mrn``, ``name``) of a refused record, an
unparseable body, an acknowledgement note, an adjudication, an export's
purpose. Then: zero occurrences in the API's and the worker's logs, in the
Redis traffic, in any 4xx reply, and in the exported research tables; the
export's pseudonyms are stable between runs and no mapping table is exported.
"""

from __future__ import annotations

import csv
import io
import json
import socket
import sys
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from api_feed import role_keys
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from worker_harness import (
    Processes,
    RedisServer,
    free_port,
    service_env,
    start_worker,
    wait_until,
)

from crsmon.db.models import ClinicalRecord
from crsmon.settings import Settings

pytest_plugins = ["worker_fixtures"]

MRN = "ZZCANARY8841"
NAME = "Canaryname Testpatient"
CANARIES = (MRN, NAME, "zzcanary8841", "Canaryname")
PATIENT = "P-CAN"


def _monitor(server: RedisServer, seen: list[str], stop: threading.Event) -> None:
    """Every command the server executes (MONITOR), as raw text."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=0.5) as sock:
        sock.sendall(b"MONITOR\r\n")
        while not stop.is_set():
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                return
            seen.append(chunk.decode("utf-8", "replace"))


def _feed() -> list[dict[str, Any]]:
    infusion = (datetime.now(UTC) - timedelta(days=2)).replace(microsecond=0)

    def at(hours: float) -> str:
        return (infusion + timedelta(hours=hours)).isoformat()

    base = {"source_system": "monitor", "patient": PATIENT}
    return [
        {
            "kind": "patient",
            "source_system": "ehr",
            "source_record_id": f"enrol-{MRN}",
            "patient": PATIENT,
            "age_years": 9.0,
            "weight_kg": 30.0,
            "care_unit": "PICU",
            "infusion_at": at(0),
        },
        {**base, "kind": "vitals", "source_record_id": f"{MRN}-1",
         "observed_at": at(20), "temperature_c": 39.1, "sbp_mmhg": 84,
         "dbp_mmhg": 40},
        {**base, "kind": "vitals", "source_record_id": f"{MRN}-2",
         "observed_at": at(21), "temperature_c": 38.8,
         "supersedes": f"{MRN}-1", "correction_reason": f"typo for {NAME}"},
        {**base, "kind": "attribution", "source_record_id": f"{MRN}-3",
         "finding": "fever", "start_at": at(20), "by": NAME,
         "reason": f"line infection, MRN {MRN}"},
        {**base, "kind": "vitals", "source_record_id": f"{MRN}-4",
         "observed_at": at(22), "sbp_mmhg": 80, "dbp_mmhg": 38},
        {**base, "kind": "retraction", "source_record_id": f"{MRN}-5",
         "at": at(23), "target_record_id": f"{MRN}-4",
         "reason": f"belongs to {NAME}"},
    ]  # fmt: skip


def _hostile() -> list[tuple[bytes, str]]:
    """Refused inputs that carry the canaries (body, content type)."""
    refused = {
        "kind": "vitals",
        "source_system": "monitor",
        "source_record_id": f"{MRN}-9",
        "patient": PATIENT,
        "observed_at": datetime.now(UTC).isoformat(),
        "temperature_c": 38.0,
        "mrn": MRN,
        "name": NAME,
    }
    wrong_type = {**refused, "temperature_c": MRN}
    del wrong_type["mrn"], wrong_type["name"]
    unknown = {**wrong_type, "temperature_c": 38.0, "patient": MRN}
    return [
        (json.dumps(refused).encode(), "application/json"),
        (json.dumps(wrong_type).encode(), "application/json"),
        (json.dumps(unknown).encode(), "application/json"),
        (f'{{"kind": "vitals", "note": "{NAME}"'.encode(), "application/json"),
        (f"{MRN}\n{NAME}\n".encode(), "application/x-ndjson"),
    ]


def test_no_planted_identifier_leaks(
    worker_pg_url: str,
    worker_pg_sessions: sessionmaker[Session],
    worker_redis: RedisServer,
    worker_procs: Processes,
) -> None:
    traffic: list[str] = []
    stop = threading.Event()
    spy = threading.Thread(
        target=_monitor, args=(worker_redis, traffic, stop), daemon=True
    )
    spy.start()
    env = service_env(worker_pg_url, worker_redis.url)
    worker = start_worker(worker_procs, env, via_cli=True)
    port = free_port()
    argv = [
        sys.executable, "-m", "crsmon", "serve", "--port", str(port),
        "--log-level", "debug",
    ]  # fmt: skip
    api = worker_procs.start("api", argv, env)
    base = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            return httpx.get(f"{base}/health/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(ready, 60, "API ready")
    keys = role_keys(worker_pg_url, Settings().pepper())

    def call(method: str, path: str, role: str, **kwargs: Any) -> httpx.Response:
        headers = {"authorization": f"Bearer {keys[role]}", **kwargs.pop("headers", {})}
        return httpx.request(
            method, f"{base}{path}", headers=headers, timeout=30, **kwargs
        )

    refusals: list[httpx.Response] = []
    for record in _feed():
        reply = call("POST", "/v1/records", "bedside", json=record)
        assert reply.status_code == 201, reply.text
    for body, media in _hostile():
        path = "/v1/records/batch" if "ndjson" in media else "/v1/records"
        reply = call(
            "POST", path, "bedside", content=body, headers={"content-type": media}
        )
        refusals.append(reply)
    refusals.append(call("GET", f"/v1/patients/{MRN}", "reviewer"))
    refusals.append(
        httpx.get(f"{base}/v1/patients", headers={"authorization": f"Bearer {MRN}"})
    )

    def graded() -> bool:
        with worker_pg_sessions() as session:
            states = set(session.scalars(select(ClinicalRecord.grading_state)))
        return states == {"graded"}

    wait_until(graded, 60, "records graded by the worker")
    alerts = call("GET", "/v1/alerts", "reviewer", params={"patient": PATIENT})
    first = alerts.json()["items"][0]["id"]
    ack = call(
        "POST", f"/v1/alerts/{first}/acknowledge", "reviewer",
        json={"by": NAME, "note": f"called {NAME}, MRN {MRN}"},
    )  # fmt: skip
    assert ack.status_code == 200
    verdict = call(
        "POST", f"/v1/patients/{PATIENT}/adjudications", "reviewer",
        json={"decision": "confirm", "reason": f"chart {MRN}", "by": NAME},
    )  # fmt: skip
    assert verdict.status_code == 201, verdict.text
    refusals.append(
        call(
            "POST",
            f"/v1/alerts/{first}/acknowledge",
            "reviewer",
            json={"by": NAME, "note": MRN},
        )
    )
    exports = {}
    for table in ("grade-table", "efs-long", "adtte"):
        reply = call(
            "GET", f"/v1/exports/{table}", "analyst", params={"purpose": f"DSMB {MRN}"}
        )
        assert reply.status_code == 200
        exports[table] = reply.text
    again = call("GET", "/v1/exports/grade-table", "analyst").text

    stop.set()
    spy.join(timeout=5)
    api_log, worker_log = api.text(), worker.text()
    assert traffic, "MONITOR saw the broker traffic"
    assert any("grade" in line for line in traffic)
    for reply in refusals:
        if reply.url.path.endswith("/batch"):  # 200: each line answered on its own
            assert {i["status"] for i in reply.json()["items"]} == {"refused"}
        else:
            assert 400 <= reply.status_code < 500, reply.status_code
    places = {
        "API log": api_log,
        "worker log": worker_log,
        "Redis traffic": "\n".join(traffic),
        "error replies": "\n".join(r.text for r in refusals),
        **{f"export {t}": text for t, text in exports.items()},
    }
    leaks = [
        f"{canary!r} in {place}"
        for place, text in places.items()
        for canary in CANARIES
        if canary.lower() in text.lower()
    ]
    assert not leaks, leaks
    # The logs are the structured ones, and say what happened without values.
    access = [
        json.loads(line) for line in api_log.splitlines() if '"crsmon.access"' in line
    ]
    assert {a["route"] for a in access} >= {
        "/v1/records",
        "/v1/alerts/{alert_id}/acknowledge",
    }
    assert all(a["request_id"] for a in access if a["route"] != "(no route)")
    # Exports: pseudonyms only, the same on every run; no mapping table.
    rows = list(csv.DictReader(io.StringIO(exports["grade-table"])))
    assert [r["patient_id"] for r in rows] == [PATIENT]
    assert again == exports["grade-table"]
    assert "ehr" not in exports["grade-table"]
