"""T3 (reliability spec, CI size): the database goes away under a running API.

PostgreSQL: a throwaway cluster of our own (``pg_cluster``; never the machine's
shared server) is stopped with ``pg_ctl stop -m immediate`` while the app runs.
Every request then answers fast, and with 503 (``Retry-After``, the shared error
body, no host, port or password) rather than a 500 or a hang; readiness names the
database. After a restart the record that got 503 is sent again with the same key
and is stored (and graded) exactly once.

SQLite: another connection holds ``BEGIN EXCLUSIVE`` on the file for a while; a
record posted meanwhile waits (busy timeout) and is stored after the lock goes,
or is refused with 503, never a 500.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from api_feed import AuthClient, role_keys
from pg_cluster import PASSWORD, PgCluster, throwaway_cluster
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session, sessionmaker

from crsmon.api.app import create_app
from crsmon.db.engine import make_engine, make_sessions
from crsmon.db.migrate import upgrade
from crsmon.db.models import ClinicalRecord, Grade, QuarantinedRecord
from crsmon.settings import Settings

PROMISED_S = 5.0
"""A request during an outage is answered within this (reliability spec T3)."""
HANG_BOUND_S = 10.0
"""What the test asserts: generous, so a slow CI machine does not flake, but a
request that hangs on a dead server (no connect timeout) still fails."""
SQLITE_LOCK_S = 2.0

PATIENT = "P-OUT-1"
INFUSION = (datetime.now(UTC) - timedelta(days=3)).replace(microsecond=0)


def at(hours: float) -> str:
    return (INFUSION + timedelta(hours=hours)).isoformat()


def enrolment() -> dict[str, Any]:
    return {
        "kind": "patient",
        "source_system": "ehr",
        "source_record_id": f"enrol-{PATIENT}",
        "patient": PATIENT,
        "age_years": 9.0,
        "care_unit": "PICU",
        "infusion_at": at(0),
    }


def temperature(key: str, hours: float, celsius: float) -> dict[str, Any]:
    """A vitals set holding one value: it is stored as one row, ``<key>#...``."""
    return {
        "kind": "vitals",
        "source_system": "monitor",
        "source_record_id": key,
        "patient": PATIENT,
        "observed_at": at(hours),
        "temperature_c": celsius,
    }


def timed(call: Any, *args: Any, **kwargs: Any) -> tuple[httpx.Response, float]:
    """The response of ``call`` and the seconds it took."""
    begun = time.monotonic()
    response: httpx.Response = call(*args, **kwargs)
    return response, time.monotonic() - begun


def report(what: str, response: httpx.Response, elapsed: float) -> None:
    """Print what answered how fast (shown with ``-s``, ``-rP`` or on failure)."""
    print(f"{what}: {response.status_code} in {elapsed:.3f} s")  # noqa: T201


def assert_unavailable(
    response: httpx.Response, elapsed: float, what: str, secrets: list[str]
) -> None:
    """503 in time, with ``Retry-After`` and the shared error body, nothing leaked."""
    report(what, response, elapsed)
    assert response.status_code == 503, (what, response.status_code, response.text)
    assert elapsed < HANG_BOUND_S, f"{what} took {elapsed:.1f} s (a hang?)"
    assert int(response.headers["retry-after"]) > 0
    detail = response.json()["detail"]
    assert isinstance(detail, list)
    assert len(detail) == 1
    assert detail[0]["field"] == "$"
    assert detail[0]["reason"]
    assert set(detail[0]) == {"field", "reason"}
    for secret in secrets:
        assert secret not in response.text, (what, secret)


def rows_of(sessions: sessionmaker[Session], key: str) -> list[ClinicalRecord]:
    """The stored rows of one feed record (``key`` or ``key#quantity``)."""
    key_is = or_(
        ClinicalRecord.source_record_id == key,
        ClinicalRecord.source_record_id.startswith(f"{key}#"),
    )
    with sessions() as session:
        return list(session.scalars(select(ClinicalRecord).where(key_is)))


def count(sessions: sessionmaker[Session], model: type[Any]) -> int:
    with sessions() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def assert_stored_and_graded_once(
    sessions: sessionmaker[Session], key: str, record_ids: list[int]
) -> None:
    """One row for the record, graded, with its grade row; nothing quarantined."""
    rows = rows_of(sessions, key)
    assert [r.id for r in rows] == record_ids
    assert len(rows) == 1
    (row,) = rows
    assert row.grading_state == "graded"
    with sessions() as session:
        graded_at = session.scalars(
            select(Grade).where(
                Grade.patient_id == row.patient_id,
                Grade.evaluated_at == row.occurred_at,
            )
        ).all()
    assert len(graded_at) == 1
    assert count(sessions, QuarantinedRecord) == 0


@pytest.fixture
def pg_cluster(tmp_path: Path) -> Iterator[PgCluster]:
    """A throwaway PostgreSQL cluster, migrated; stopped and deleted afterwards."""
    with throwaway_cluster(tmp_path) as cluster:
        upgrade(cluster.url)
        yield cluster


@pytest.fixture
def pg_sessions(pg_cluster: PgCluster) -> Iterator[sessionmaker[Session]]:
    """Sessions on the throwaway cluster, to look behind the API."""
    engine = make_engine(pg_cluster.url)
    try:
        yield make_sessions(engine)
    finally:
        engine.dispose()


def test_postgres_outage_is_503_and_the_resend_is_stored_once(
    pg_cluster: PgCluster, pg_sessions: sessionmaker[Session]
) -> None:
    """Stopped server: fast 503s, readiness names the database; restarted: once."""
    settings = Settings(database_url=pg_cluster.url, broker_url=None)
    secrets = [PASSWORD, str(pg_cluster.port), "127.0.0.1", str(pg_cluster.base)]
    keys = role_keys(pg_cluster.url, settings.pepper())
    with AuthClient(create_app(settings), keys) as client:
        assert client.post("/v1/records", json=enrolment()).status_code == 201
        for n, (hours, celsius) in enumerate([(4, 37.1), (20, 38.9)], start=1):
            stored = client.post(
                "/v1/records", json=temperature(f"m-{n}", hours, celsius)
            )
            assert stored.status_code == 201, stored.text
        assert client.get("/health/ready").status_code == 200
        before = count(pg_sessions, ClinicalRecord)
        late = temperature("m-3", 26, 39.4)

        pg_cluster.stop_immediate()
        assert not pg_cluster.accepts_connections()

        response, elapsed = timed(client.post, "/v1/records", json=late)
        assert_unavailable(response, elapsed, "POST /v1/records", secrets)
        refused = {**late, "source_record_id": "m-bad", "bed_note": "x"}
        response, elapsed = timed(client.post, "/v1/records", json=refused)
        assert_unavailable(response, elapsed, "POST (to quarantine)", secrets)
        ack = {"by": "nurse on shift"}
        response, elapsed = timed(client.post, "/v1/alerts/1/acknowledge", json=ack)
        assert_unavailable(response, elapsed, "POST acknowledge", secrets)
        headers = {"content-type": "application/x-ndjson"}
        batch = (json.dumps(late) + "\n").encode()  # the same record, as NDJSON
        response, elapsed = timed(
            client.post, "/v1/records/batch", content=batch, headers=headers
        )
        assert_unavailable(response, elapsed, "POST /v1/records/batch", secrets)
        for path in (
            "/v1/patients",
            f"/v1/patients/{PATIENT}",
            f"/v1/patients/{PATIENT}/grades",
            "/v1/alerts",
        ):
            response, elapsed = timed(client.get, path)
            assert_unavailable(response, elapsed, f"GET {path}", secrets)

        ready, elapsed = timed(client.get, "/health/ready")
        report("GET /health/ready", ready, elapsed)
        assert ready.status_code == 503
        assert elapsed < HANG_BOUND_S
        assert ready.json()["status"] == "unavailable"
        assert ready.json()["checks"]["database"].startswith("unavailable")
        for secret in secrets:
            assert secret not in ready.text
        # /metrics needs an admin key, which cannot be checked right now.
        metrics, elapsed = timed(client.get, "/metrics")
        assert_unavailable(metrics, elapsed, "GET /metrics", secrets)
        assert client.get("/health/live").status_code == 200

        restarted_in = pg_cluster.start()
        print(f"cluster restarted and answering in {restarted_in:.2f} s")  # noqa: T201
        assert count(pg_sessions, ClinicalRecord) == before  # the 503s stored nothing
        assert client.get("/health/ready").status_code == 200

        resent = client.post("/v1/records", json=late)
        assert resent.status_code == 201, resent.text
        assert resent.json()["status"] == "stored"
        again = client.post("/v1/records", json=late)
        assert again.status_code == 200, again.text
        assert again.json() == {**resent.json(), "status": "duplicate"}
        grades = client.get(f"/v1/patients/{PATIENT}/grades").json()["items"]
        assert (26.0, 1) in [(g["t_hours"], g["grade"]) for g in grades]

    assert count(pg_sessions, ClinicalRecord) == before + 1
    assert_stored_and_graded_once(pg_sessions, "m-3", resent.json()["record_ids"])


def test_sqlite_locked_by_another_writer_waits_or_is_503(tmp_path: Path) -> None:
    """A record posted while another connection holds the write lock: no 500."""
    path = tmp_path / "crsmon.sqlite3"
    url = f"sqlite:///{path}"
    upgrade(url)
    locked, release_at = threading.Event(), [0.0]

    def hold_lock() -> None:
        holder = sqlite3.connect(path, isolation_level=None)
        try:
            holder.execute("BEGIN EXCLUSIVE")
            locked.set()
            time.sleep(SQLITE_LOCK_S)
            release_at[0] = time.monotonic()
            holder.execute("ROLLBACK")
        finally:
            holder.close()

    settings = Settings(database_url=url, broker_url=None)
    with AuthClient(create_app(settings), role_keys(url, settings.pepper())) as client:
        assert client.post("/v1/records", json=enrolment()).status_code == 201
        record = temperature("m-1", 20, 38.9)
        holder = threading.Thread(target=hold_lock, name="sqlite-lock-holder")
        holder.start()
        try:
            assert locked.wait(timeout=10), "the lock holder did not get the lock"
            response, elapsed = timed(client.post, "/v1/records", json=record)
            done_at = time.monotonic()
        finally:
            holder.join(timeout=30)
        report(f"POST under a {SQLITE_LOCK_S} s lock", response, elapsed)
        assert response.status_code in (201, 503), response.text
        assert elapsed < HANG_BOUND_S + SQLITE_LOCK_S
        if response.status_code == 503:
            assert_unavailable(response, elapsed, "POST (locked)", [str(tmp_path)])
            response = client.post("/v1/records", json=record)
            assert response.status_code == 201, response.text
        else:  # it waited for the lock: answered only after the holder let go
            assert done_at >= release_at[0] > 0
        again = client.post("/v1/records", json=record)
        assert again.status_code == 200
        assert again.json() == {**response.json(), "status": "duplicate"}

    engine = make_engine(url)
    try:
        assert_stored_and_graded_once(
            make_sessions(engine), "m-1", response.json()["record_ids"]
        )
    finally:
        engine.dispose()
