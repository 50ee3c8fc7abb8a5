"""Real Celery worker processes on the real PostgreSQL and a private Redis.

Each test starts its own ``redis-server`` (free loopback port, no persistence),
a fresh PostgreSQL schema, and workers launched the documented way
(``python -m celery -A workers.celery_app worker --pool=prefork -c 1``). The
feed is committed first, then one message per patient is published with the
:class:`CeleryDispatcher`. After the faults (a killed prefork child, a killed
worker process group, a flushed broker) every record must be graded exactly
once: the grade and alert rows, by natural key, equal those of the same feed
graded once in process (the oracle), with no duplicate and nothing missing.
Every process and the redis-server are killed afterwards, even on failure.
"""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from worker_harness import (
    Effects,
    Processes,
    RedisServer,
    assert_no_duplicates,
    ingest_all,
    oracle,
    patient_feed,
    service_env,
    service_settings,
    start_beat,
    start_worker,
    wait_until,
)

from crsmon.db.models import ClinicalRecord
from workers.celery_app import QUEUE, make_celery
from workers.jobs import FAILED, GRADED
from workers.tasks import TEST_DELAY_ENV, CeleryDispatcher

pytest_plugins = ["worker_fixtures"]

PATIENTS = ("P-1", "P-2", "P-3")
HOOK = re.compile(
    r"TEST ONLY \S+: pid (\d+) sleeps [\d.]+ s before committing patient (\d+)"
)
RECEIVED = re.compile(r"Task crsmon\.grade_patient\[[0-9a-f-]+\] received")
GRADE_WAIT_S = 60


def feed() -> list[str]:
    return [line for p in PATIENTS for line in patient_feed(p, extra_vitals=6)]


def ungraded(sessions: sessionmaker[Session]) -> int:
    with sessions() as session:
        count = session.scalar(
            select(func.count())
            .select_from(ClinicalRecord)
            .where(ClinicalRecord.grading_state != GRADED)
        )
        return count or 0


def ingest_and_notify(
    sessions: sessionmaker[Session],
    lines: list[str],
    database_url: str,
    broker: RedisServer,
) -> set[int]:
    """Commit every record first, then one message per touched patient."""
    touched = ingest_all(sessions, lines)
    app = make_celery(service_settings(database_url, broker.url))
    try:
        dispatcher = CeleryDispatcher(app)
        dispatcher.notify(touched)
    finally:
        app.close()
    assert dispatcher.published == len(touched)
    return touched


def record_states(sessions: sessionmaker[Session]) -> str:
    """The records not yet graded, for a failure message (ids and states only)."""
    columns = (
        ClinicalRecord.id,
        ClinicalRecord.patient_id,
        ClinicalRecord.grading_state,
        ClinicalRecord.attempts,
        ClinicalRecord.lease_token,
        ClinicalRecord.lease_until,
        ClinicalRecord.last_error,
    )
    with sessions() as session:
        rows = session.execute(
            select(*columns).where(ClinicalRecord.grading_state != GRADED)
        ).all()
    return "records not graded:\n" + "\n".join(str(tuple(row)) for row in rows)


def wait_all_graded(sessions: sessionmaker[Session], procs: Processes) -> float:
    return wait_until(
        lambda: ungraded(sessions) == 0,
        GRADE_WAIT_S,
        "all graded",
        detail=lambda: f"{record_states(sessions)}\n{procs.tails()}",
    )


def attempts_by_patient(effects: Effects) -> dict[str, set[int]]:
    found: dict[str, set[int]] = {}
    for record_id, attempts in effects.attempts.items():
        patient = record_id.rsplit("-", 1)[0]
        found.setdefault(patient, set()).add(attempts)
    return found


def assert_graded_exactly_once(observed: Effects, expected: Effects) -> None:
    assert observed.states == {GRADED: sum(expected.states.values())}
    assert_no_duplicates(observed)
    assert observed.grades == expected.grades
    assert observed.alerts == expected.alerts


def test_a_worker_grades_each_patient_from_one_message(
    worker_pg_url: str,
    worker_pg_sessions: sessionmaker[Session],
    worker_redis: RedisServer,
    worker_procs: Processes,
    tmp_path: Path,
) -> None:
    """Ids in, one message per patient, grades and alerts out, once."""
    lines = feed()
    expected = oracle(lines, tmp_path)
    worker = start_worker(worker_procs, service_env(worker_pg_url, worker_redis.url))
    ingest_and_notify(worker_pg_sessions, lines, worker_pg_url, worker_redis)
    wait_all_graded(worker_pg_sessions, worker_procs)
    observed = Effects.read(worker_pg_sessions)
    assert_graded_exactly_once(observed, expected)
    assert {a[1] for a in observed.alerts} >= {"crs_onset", "severe_crs"}
    assert attempts_by_patient(observed) == {p: {1} for p in PATIENTS}
    assert len(RECEIVED.findall(worker.text())) == len(PATIENTS)  # not per record


def test_a_prefork_child_killed_mid_batch_is_requeued_and_graded_once(
    worker_pg_url: str,
    worker_pg_sessions: sessionmaker[Session],
    worker_redis: RedisServer,
    worker_procs: Processes,
    tmp_path: Path,
) -> None:
    """SIGKILL of the child inside the grading transaction: reject_on_worker_lost."""
    lines = feed()
    expected = oracle(lines, tmp_path)
    env = service_env(worker_pg_url, worker_redis.url, **{TEST_DELAY_ENV: "2"})
    worker = start_worker(
        worker_procs, env, via_cli=True
    )  # the `crsmon worker` command
    ingest_and_notify(worker_pg_sessions, lines, worker_pg_url, worker_redis)
    hooked = worker.wait_for_log(HOOK.pattern, timeout=30)
    child = int(hooked[1])
    assert child != worker.pid
    os.kill(child, signal.SIGKILL)  # the recorded pid of our worker's child
    wait_all_graded(worker_pg_sessions, worker_procs)
    observed = Effects.read(worker_pg_sessions)
    assert_graded_exactly_once(observed, expected)
    attempts = attempts_by_patient(observed)
    assert sorted(attempts.values(), key=sorted) == [{1}, {1}, {2}]
    assert "WorkerLostError" in worker.text()


def test_a_worker_group_killed_mid_batch_regrades_everything_exactly_once(
    worker_pg_url: str,
    worker_pg_sessions: sessionmaker[Session],
    worker_redis: RedisServer,
    worker_procs: Processes,
    tmp_path: Path,
) -> None:
    """SIGKILL the whole worker tree mid-commit; a new worker finishes the job."""
    lines = feed()
    expected = oracle(lines, tmp_path)
    env = service_env(worker_pg_url, worker_redis.url)
    first = start_worker(worker_procs, {**env, TEST_DELAY_ENV: "5"})
    ingest_and_notify(worker_pg_sessions, lines, worker_pg_url, worker_redis)
    first.wait_for_log(HOOK.pattern, timeout=30)
    first.kill_group()  # main process and child: nothing acked, nothing committed
    killed_at = time.monotonic()
    assert ungraded(worker_pg_sessions) == sum(expected.states.values())
    assert Effects.read(worker_pg_sessions).grades == []
    assert worker_redis.queue_length(QUEUE) == len(PATIENTS) - 1
    with worker_redis.client() as conn:
        assert conn.hlen("unacked") == 1  # the in-flight message, unacked

    second = start_worker(worker_procs, env)
    wait_all_graded(worker_pg_sessions, worker_procs)
    recovered_after = time.monotonic() - killed_at
    observed = Effects.read(worker_pg_sessions)
    assert_graded_exactly_once(observed, expected)
    attempts = attempts_by_patient(observed)
    assert sorted(attempts.values(), key=sorted) == [{1}, {1}, {2}]
    assert len(RECEIVED.findall(second.text())) == len(PATIENTS)
    assert recovered_after < GRADE_WAIT_S


def test_losing_every_broker_message_costs_latency_not_data(
    worker_pg_url: str,
    worker_pg_sessions: sessionmaker[Session],
    worker_redis: RedisServer,
    worker_procs: Processes,
    tmp_path: Path,
) -> None:
    """FLUSHALL on our own Redis after enqueueing; beat's sweeper re-enqueues."""
    lines = feed()
    expected = oracle(lines, tmp_path)
    ingest_and_notify(worker_pg_sessions, lines, worker_pg_url, worker_redis)
    assert worker_redis.queue_length(QUEUE) == len(PATIENTS)
    worker_redis.flushall()
    assert worker_redis.queue_length(QUEUE) == 0

    env = service_env(worker_pg_url, worker_redis.url)
    worker = start_worker(worker_procs, env)
    time.sleep(1.5)  # a worker with an empty queue: the messages are gone
    assert ungraded(worker_pg_sessions) == sum(expected.states.values())
    assert RECEIVED.findall(worker.text()) == []

    start_beat(worker_procs, env, tmp_path / "beat-schedule")  # via workers.cli
    wait_all_graded(worker_pg_sessions, worker_procs)
    observed = Effects.read(worker_pg_sessions)
    assert_graded_exactly_once(observed, expected)
    assert attempts_by_patient(observed) == {p: {1} for p in PATIENTS}
    assert "crsmon.sweep" in worker.text()


def test_a_patient_that_always_times_out_ends_failed_after_n_attempts(
    worker_pg_url: str,
    worker_pg_sessions: sessionmaker[Session],
    worker_redis: RedisServer,
    worker_procs: Processes,
    tmp_path: Path,
) -> None:
    """The soft time limit fires inside the grading transaction, twice; then failed.

    The sweeper (beat) re-enqueues the still-pending records after the first
    failure; the second failure uses the last of the two attempts, and the
    records stay visible as failed, with the error, and are not retried again.
    """
    lines = patient_feed("P-9")
    env = service_env(
        worker_pg_url,
        worker_redis.url,
        CRSMON_MAX_GRADING_ATTEMPTS="2",
        **{TEST_DELAY_ENV: "10"},  # beyond the 8 s hard and 6.4 s soft limits
    )
    worker = start_worker(worker_procs, env)
    start_beat(worker_procs, env, tmp_path / "beat-schedule")
    ingest_and_notify(worker_pg_sessions, lines, worker_pg_url, worker_redis)
    wait_until(
        lambda: Effects.read(worker_pg_sessions).states.keys() == {FAILED},
        GRADE_WAIT_S,
        "the records to be marked failed",
    )
    time.sleep(2)  # two more sweeps: nothing is re-enqueued any more
    observed = Effects.read(worker_pg_sessions)
    assert (observed.grades, observed.alerts) == ([], [])  # rolled back each time
    assert set(observed.attempts.values()) == {2}
    with worker_pg_sessions() as session:
        errors = set(session.scalars(select(ClinicalRecord.last_error)))
    assert errors == {
        "gave up after 2 attempts; last: SoftTimeLimitExceeded: SoftTimeLimitExceeded()"
    }
    assert "Soft time limit (6.4s) exceeded" in worker.text()
    assert "GradingFailed('grading patient 1 failed: SoftTimeLimitExceeded')" in (
        worker.text()
    )
