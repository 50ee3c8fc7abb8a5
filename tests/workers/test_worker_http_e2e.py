"""End to end: HTTP in to a running `crsmon serve`, a real `crsmon worker` on the
real PostgreSQL and a private Redis, grade and alert rows out."""

from __future__ import annotations

import sys

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

from crsmon.db.models import Alert, ClinicalRecord, Grade

pytest_plugins = ["worker_fixtures"]


def test_an_observation_posted_over_http_is_graded_by_the_worker(
    worker_pg_url: str,
    worker_pg_sessions: sessionmaker[Session],
    worker_redis: RedisServer,
    worker_procs: Processes,
) -> None:
    """POST /v1/records to `crsmon serve`; the worker writes grades and alerts."""
    env = service_env(worker_pg_url, worker_redis.url)
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
