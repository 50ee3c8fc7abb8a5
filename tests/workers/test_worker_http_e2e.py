"""End to end: HTTP in to a running `crsmon serve`, a real `crsmon worker` on the
real PostgreSQL and a private Redis, grade, risk-score and alert rows out, and
the pushed alerts received, signed."""

from __future__ import annotations

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
from api_feed import role_keys
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from worker_harness import (
    Processes,
    RedisServer,
    free_port,
    patient_feed,
    service_env,
    start_worker,
    wait_until,
)

from crsmon.db.models import Alert, ClinicalRecord, Grade, WebhookDelivery
from crsmon.services.webhooks import SIGNATURE_HEADER, verify_signature
from crsmon.settings import SHIPPED_MODELS, Settings

SECRET = "test-only-e2e-secret"

pytest_plugins = ["worker_fixtures"]


def test_an_observation_posted_over_http_is_graded_by_the_worker(
    worker_pg_url: str,
    worker_pg_sessions: sessionmaker[Session],
    worker_redis: RedisServer,
    worker_procs: Processes,
) -> None:
    """POST /v1/records to `crsmon serve`; the worker writes grades with the
    shipped model's risk scores and alerts, and pushes the severe and the
    high-risk ones to a webhook receiver, signed."""
    received: list[tuple[str, bytes]] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((self.headers[SIGNATURE_HEADER], body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *_: object) -> None:
            return

    hook = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    hook_url = f"http://127.0.0.1:{hook.server_address[1]}/crs"
    env = service_env(
        worker_pg_url,
        worker_redis.url,
        CRSMON_WEBHOOK_URLS=json.dumps([hook_url]),
        CRSMON_WEBHOOK_SECRET=SECRET,
        # The shipped model scores this patient 0.007, 0.017, then 0.081 at
        # grade 2 (26 h): a configured threshold of 0.05 is crossed there once.
        CRSMON_RISK_THRESHOLD="0.05",
    )
    try:
        _post_and_check(env, worker_pg_sessions, worker_procs)
        wait_until(lambda: len(received) >= 2, 60, "the two alerts pushed")
    finally:
        hook.shutdown()
        hook.server_close()
    now = int(time.time())
    kinds = []
    for signature, body in received:
        assert verify_signature(SECRET.encode(), signature, body, now=now)
        kinds.append(json.loads(body)["alert"]["kind"])
    assert sorted(kinds) == ["high_risk", "severe_crs"]
    with worker_pg_sessions() as session:
        deliveries = session.scalars(select(WebhookDelivery)).all()
    assert [(d.status, d.attempts, d.last_status_code) for d in deliveries] == [
        ("delivered", 1, 204)
    ] * 2


def _post_and_check(
    env: dict[str, str],
    worker_pg_sessions: sessionmaker[Session],
    worker_procs: Processes,
) -> None:
    start_worker(worker_procs, env, via_cli=True)
    port = free_port()
    argv = [sys.executable, "-m", "crsmon", "serve", "--port", str(port)]
    worker_procs.start("api", argv, env)
    base = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            return httpx.get(f"{base}/health/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(ready, 60, "API ready")
    lines = patient_feed("P-HTTP")
    keys = role_keys(env["CRSMON_DATABASE_URL"], Settings().pepper())
    bedside = keys["bedside"]
    for line in lines:
        reply = httpx.post(
            f"{base}/v1/records",
            content=line,
            headers={
                "content-type": "application/json",
                "authorization": f"Bearer {bedside}",
            },
            timeout=10,
        )
        assert reply.status_code in (200, 201), reply.text

    def graded() -> bool:
        with worker_pg_sessions() as session:
            states = set(session.scalars(select(ClinicalRecord.grading_state)))
        return states == {"graded"}

    wait_until(graded, 60, "records graded by the worker")
    with worker_pg_sessions() as session:
        grades = session.scalars(select(Grade)).all()
        alerts = session.scalars(select(Alert)).all()
    assert grades
    assert all(g.reasons and g.rule_set == "astct-2019" for g in grades)
    assert {a.kind for a in alerts} >= {"crs_onset", "severe_crs", "high_risk"}
    # The shipped model scored every grade from infusion to the first grade 3.
    shipped = json.loads((SHIPPED_MODELS / "dynamic_48h.json").read_text())
    key = f"dynamic_48h@{shipped['sha256'][:12]}"
    severe_at = min(g.t_hours for g in grades if g.grade >= 3)
    scored = [g for g in grades if 0 <= g.t_hours < severe_at]
    assert scored
    for g in scored:
        assert g.risk_model == key
        assert g.risk_probability is not None
        assert 0 <= g.risk_probability <= 1
        assert g.risk_features
    assert all(g.risk_probability is None for g in grades if g.t_hours >= severe_at)
    (risky,) = [a for a in alerts if a.kind == "high_risk"]
    assert risky.reasons[0].startswith(f"risk model {key}: probability")
    assert "threshold 0.05 within 48.0 h" in risky.reasons[0]
    first_high = min(
        g.t_hours for g in scored if g.risk_probability and g.risk_probability >= 0.05
    )
    assert risky.triggered_at == min(
        g.evaluated_at for g in scored if g.t_hours == first_high
    )
    assert all(a.reasons for a in alerts)
    listed = httpx.get(
        f"{base}/v1/alerts",
        params={"patient": "P-HTTP"},
        headers={"authorization": f"Bearer {keys['reviewer']}"},
        timeout=10,
    )
    assert listed.status_code == 200
    assert len(listed.json()["items"]) == len(alerts)
