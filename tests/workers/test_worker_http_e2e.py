"""End to end: HTTP in to a running `crsmon serve`, a real `crsmon worker` on the
real PostgreSQL and a private Redis, grade and alert rows out."""

from __future__ import annotations

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
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

SECRET = "test-only-e2e-secret"

pytest_plugins = ["worker_fixtures"]


def test_an_observation_posted_over_http_is_graded_by_the_worker(
    worker_pg_url: str,
    worker_pg_sessions: sessionmaker[Session],
    worker_redis: RedisServer,
    worker_procs: Processes,
) -> None:
    """POST /v1/records to `crsmon serve`; the worker writes grades and alerts,
    and pushes the severe one to a webhook receiver, signed."""
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
    )
    try:
        _post_and_check(env, worker_pg_sessions, worker_procs)
        wait_until(lambda: bool(received), 60, "the severe alert pushed")
    finally:
        hook.shutdown()
        hook.server_close()
    ((signature, body),) = received
    now = int(time.time())
    assert verify_signature(SECRET.encode(), signature, body, now=now)
    assert json.loads(body)["alert"]["kind"] == "severe_crs"
    with worker_pg_sessions() as session:
        (delivery,) = session.scalars(select(WebhookDelivery)).all()
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == (
        "delivered",
        1,
        204,
    )


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
    for line in lines:
        reply = httpx.post(
            f"{base}/v1/records",
            content=line,
            headers={"content-type": "application/json"},
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
    assert {a.kind for a in alerts} >= {"crs_onset"}
    assert all(a.reasons for a in alerts)
    listed = httpx.get(f"{base}/v1/alerts", params={"patient": "P-HTTP"}, timeout=10)
    assert listed.status_code == 200
    assert len(listed.json()["items"]) == len(alerts)
