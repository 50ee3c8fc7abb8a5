"""The worker's jobs and tasks called in process, on SQLite and on PostgreSQL.

No broker and no worker process: the functions and the Celery tasks are called
directly (Celery's ``memory://`` transport stands in where a task publishes).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import conftest
import pytest
from conftest import guards_off
from sqlalchemy import delete, event, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker
from worker_harness import (
    Effects,
    RedisServer,
    assert_no_duplicates,
    ingest_all,
    patient_feed,
    service_settings,
)

import workers.celery_app
import workers.jobs
from crsmon.db.models import Alert, ClinicalRecord, Grade, Patient, WebhookDelivery
from crsmon.domain.catalog import resolve_rule_set
from crsmon.services.dispatch import Dispatcher
from crsmon.services.monitoring import AlertPolicy
from crsmon.settings import Settings
from workers.celery_app import (
    CHECK_TASK,
    DELIVER_TASK,
    GRADE_MANY_TASK,
    GRADE_TASK,
    QUEUE,
    SWEEP_TASK,
    CrsmonCelery,
    celery_config,
    make_celery,
)
from workers.jobs import (
    FAILED,
    GRADED,
    PENDING,
    GradingContext,
    grade_pending,
    grade_pending_many,
)
from workers.tasks import (
    MAX_TRANSIENT_RETRIES,
    CeleryDispatcher,
    GradingFailed,
    _started,
    deliveries_per_task,
    is_transient,
    queued_key,
)

pytest_plugins = ["worker_fixtures"]


def context(
    sessions: sessionmaker[Session],
    max_attempts: int = 3,
    policy: AlertPolicy | None = None,
) -> GradingContext:
    return GradingContext(
        sessions=sessions,
        rules=resolve_rule_set("astct-2019"),
        max_attempts=max_attempts,
        policy=AlertPolicy() if policy is None else policy,
    )


def scored(sessions: sessionmaker[Session]) -> tuple[list[Any], list[Any]]:
    """What :class:`Effects` leaves out: each grade row's revision, reasons and
    risk score, and each alert's webhook deliveries (by natural key)."""
    with sessions() as session:
        grades = sorted(
            (
                pseudonym,
                g.evaluated_at,
                g.revision,
                g.risk_model,
                g.risk_probability,
                json.dumps(g.risk_features, sort_keys=True),
                json.dumps(g.reasons, sort_keys=True),
            )
            for g, pseudonym in session.execute(
                select(Grade, Patient.pseudonym).join(Patient)
            )
        )
        deliveries = sorted(
            (pseudonym, kind, key, url)
            for pseudonym, kind, key, url in session.execute(
                select(
                    Patient.pseudonym, Alert.kind, Alert.dedup_key, WebhookDelivery.url
                )
                .join(Alert, Alert.patient_id == Patient.id)
                .join(WebhookDelivery, WebhookDelivery.alert_id == Alert.id)
            )
        )
    return grades, deliveries


@pytest.fixture
def app(
    worker_database_url: str, worker_sessions: sessionmaker[Session]
) -> Iterator[CrsmonCelery]:
    """An app on the test database and Celery's in-memory transport (no Redis)."""
    del worker_sessions  # requested for its migration
    settings = Settings(
        database_url=worker_database_url,
        broker_url="memory://",
        max_grading_attempts=10,
    )
    celery = make_celery(settings)
    try:
        yield celery
    finally:
        celery.close()


def records(sessions: sessionmaker[Session], pseudonym: str) -> list[ClinicalRecord]:
    with sessions() as session:
        return list(
            session.scalars(
                select(ClinicalRecord)
                .join(Patient, Patient.id == ClinicalRecord.patient_id)
                .where(Patient.pseudonym == pseudonym)
                .order_by(ClinicalRecord.id)
            )
        )


def fail_grading(
    monkeypatch: pytest.MonkeyPatch, exc: Exception, calls: list[int]
) -> None:
    def broken(session: Session, patient_id: int, *args: Any, **kwargs: Any) -> Any:
        del session, args, kwargs
        calls.append(patient_id)
        raise exc

    monkeypatch.setattr(workers.jobs, "grade_patient", broken)


def test_grading_twice_writes_nothing_new(
    worker_sessions: sessionmaker[Session],
) -> None:
    """A re-delivered message finds nothing pending; a forced re-run writes no row."""
    (patient,) = ingest_all(worker_sessions, patient_feed("P-1"))
    n = len(records(worker_sessions, "P-1"))  # a vitals line stores one row per value
    first = grade_pending(context(worker_sessions), patient, token="delivery-1")
    assert first.run is not None
    assert first.run.records_graded == first.claim.pending == n
    assert first.run.grades_written > 0
    assert first.run.alerts_raised
    after_first = Effects.read(worker_sessions)
    assert after_first.states == {GRADED: n}

    again = grade_pending(context(worker_sessions), patient, token="delivery-2")
    assert again.run is None  # a duplicate: nothing pending, nothing read
    assert again.summary()["records_graded"] == 0

    with worker_sessions.begin() as session:  # as if the grading commit had been lost
        session.execute(update(ClinicalRecord).values(grading_state=PENDING))
    # The records are still leased to the delivery that lost its commit: its
    # redelivery (the same task id) grades them again.
    forced = grade_pending(context(worker_sessions), patient, token="delivery-1")
    assert forced.run is not None
    assert forced.run.records_graded == n
    assert forced.run.grades_written == 0
    assert forced.run.alerts_raised == ()
    after = Effects.read(worker_sessions)
    assert (after.grades, after.alerts) == (after_first.grades, after_first.alerts)
    assert_no_duplicates(after)


def test_the_celery_task_is_thin_and_idempotent(
    app: CrsmonCelery, worker_sessions: sessionmaker[Session]
) -> None:
    """The registered task grades a patient; calling it again changes nothing."""
    (patient,) = ingest_all(worker_sessions, patient_feed("P-2"))
    task = app.tasks[GRADE_TASK]
    first = task(patient)
    assert first["records_graded"] == len(records(worker_sessions, "P-2"))
    assert first["grades_written"] > 0
    effects = Effects.read(worker_sessions)
    assert task(patient) == {
        "patient_id": patient,
        "pending": 0,
        "gave_up": 0,
        "records_graded": 0,
        "grades_written": 0,
        "alerts_raised": 0,
    }
    assert Effects.read(worker_sessions) == effects


def test_after_n_failed_attempts_records_are_failed_and_visible(
    worker_sessions: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each failure is recorded; the Nth marks the records failed, never retried."""
    sick, healthy = sorted(
        ingest_all(worker_sessions, patient_feed("P-3") + patient_feed("P-4"))
    )
    calls: list[int] = []
    fail_grading(monkeypatch, RuntimeError("boom"), calls)
    for attempt in (1, 2):
        with pytest.raises(RuntimeError, match="boom"):
            grade_pending(context(worker_sessions), sick)
        rows = records(worker_sessions, "P-3")
        assert {(r.grading_state, r.attempts) for r in rows} == {(PENDING, attempt)}
        assert {r.last_error for r in rows} == {"RuntimeError: boom"}

    with pytest.raises(RuntimeError, match="boom"):
        grade_pending(context(worker_sessions), sick)
    rows = records(worker_sessions, "P-3")
    assert {(r.grading_state, r.attempts) for r in rows} == {(FAILED, 3)}
    assert {r.last_error for r in rows} == {
        "gave up after 3 attempts; last: RuntimeError: boom"
    }

    result = grade_pending(context(worker_sessions), sick)  # a later delivery
    assert result.run is None
    assert calls == [sick, sick, sick]  # not retried after the third failure
    assert {r.grading_state for r in records(worker_sessions, "P-4")} == {PENDING}

    monkeypatch.undo()
    assert grade_pending(context(worker_sessions), healthy).run is not None
    assert {r.grading_state for r in records(worker_sessions, "P-4")} == {GRADED}
    assert {r.grading_state for r in records(worker_sessions, "P-3")} == {FAILED}


def test_a_worker_lost_every_time_still_ends_in_failed(
    worker_sessions: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Kills leave no error behind; the attempt counter alone stops the loop."""
    (patient,) = ingest_all(worker_sessions, patient_feed("P-5"))
    with worker_sessions.begin() as session:  # three deliveries that died mid-grading
        session.execute(update(ClinicalRecord).values(attempts=3))
    calls: list[int] = []
    fail_grading(monkeypatch, AssertionError("must not be called"), calls)
    result = grade_pending(context(worker_sessions, max_attempts=3), patient)
    assert result.run is None
    assert result.claim.gave_up == len(records(worker_sessions, "P-5"))
    assert calls == []
    rows = records(worker_sessions, "P-5")
    assert {(r.grading_state, r.attempts) for r in rows} == {(FAILED, 4)}
    assert {r.last_error for r in rows} == {
        "gave up after 3 attempts; last: none recorded "
        "(the worker was lost or hit the time limit)"
    }


def test_transient_database_errors_are_retried_a_bounded_number_of_times(
    app: CrsmonCelery,
    worker_sessions: sessionmaker[Session],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """OperationalError: Celery retries, then gives up; the DB counts every try."""
    (patient,) = ingest_all(worker_sessions, patient_feed("P-6"))
    error = OperationalError("UPDATE ...", {}, Exception("database is locked"))
    assert is_transient(error)
    calls: list[int] = []
    fail_grading(monkeypatch, error, calls)
    outcome = app.tasks[GRADE_TASK].apply(args=(patient,))
    assert outcome.failed()
    assert isinstance(outcome.result, GradingFailed)
    assert str(outcome.result) == f"grading patient {patient} failed: OperationalError"
    assert len(calls) == 1 + MAX_TRANSIENT_RETRIES
    rows = records(worker_sessions, "P-6")
    assert {(r.grading_state, r.attempts) for r in rows} == {(PENDING, 4)}
    assert all("database is locked" in (r.last_error or "") for r in rows)
    assert all("UPDATE" not in (r.last_error or "") for r in rows)  # no SQL text


def test_other_errors_fail_the_task_at_once_without_clinical_detail(
    app: CrsmonCelery,
    worker_sessions: sessionmaker[Session],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A non-transient error is not retried by Celery; the sweeper decides later."""
    (patient,) = ingest_all(worker_sessions, patient_feed("P-7"))
    calls: list[int] = []
    fail_grading(monkeypatch, ValueError("temperature 39.4 is odd"), calls)
    with pytest.raises(GradingFailed) as raised:
        app.tasks[GRADE_TASK](patient)
    assert "39.4" not in str(raised.value)
    assert raised.value.__suppress_context__
    assert calls == [patient]
    rows = records(worker_sessions, "P-7")
    assert {r.last_error for r in rows} == {"ValueError: temperature 39.4 is odd"}


def test_the_sweeper_finds_old_pending_patients_oldest_first(
    app: CrsmonCelery, worker_sessions: sessionmaker[Session]
) -> None:
    """Only pending records older than the threshold; bounded; one per patient."""
    feed = [
        line for p in ("P-A", "P-B", "P-C", "P-D", "P-E") for line in patient_feed(p)
    ]
    a, b, _recent, d, e = sorted(ingest_all(worker_sessions, feed))
    now = datetime.now(UTC)
    # recorded_at is never rewritten by crsmon (a trigger refuses it); the test
    # lifts the guard to fabricate records received long ago.
    engine = worker_sessions.kw["bind"]
    with guards_off(engine, "clinical_records"), worker_sessions.begin() as session:
        for patient, age_min in ((a, 30), (b, 60), (d, 90), (e, 120)):
            session.execute(
                update(ClinicalRecord)
                .where(ClinicalRecord.patient_id == patient)
                .values(recorded_at=now - timedelta(minutes=age_min))
            )
        for patient, state in ((d, FAILED), (e, GRADED)):
            session.execute(
                update(ClinicalRecord)
                .where(ClinicalRecord.patient_id == patient)
                .values(grading_state=state)
            )
    cutoff = now - timedelta(seconds=30)
    stale = workers.jobs.stale_patients
    assert stale(worker_sessions, older_than=cutoff, limit=10) == [b, a]  # c is recent
    assert stale(worker_sessions, older_than=cutoff, limit=1) == [b]

    swept = app.tasks[SWEEP_TASK]()
    # Every feed has been silent since 33 h after an infusion 3 days ago, and no
    # stale alert exists yet; but a, b and c have records pending (their own runs
    # grade as of now) and d a failed one (needs review): only e is checked.
    assert swept == {
        "stale_patients": 2,
        "published": 2,
        "quiet_patients": 1,
        "checks_published": 1,
        "delivery_requested": 0,
    }


def test_the_check_task_alerts_a_quiet_patient_once(
    app: CrsmonCelery, worker_sessions: sessionmaker[Session]
) -> None:
    """Nothing pending, yet the open gap is due: one stale alert, then none."""
    (patient,) = ingest_all(worker_sessions, patient_feed("P-Q"))
    assert app.tasks[GRADE_TASK](patient)["alerts_raised"] > 0
    with worker_sessions.begin() as session:
        stale = select(Alert.dedup_key).where(Alert.kind == "stale_monitoring")
        keys = session.scalars(stale).all()
        session.execute(delete(Alert).where(Alert.kind == "stale_monitoring"))
    assert len(keys) == 2  # 4 h to 20 h, and the open gap since 33 h
    assert workers.jobs.quiet_patients(
        app.runtime().context, now=datetime.now(UTC), limit=10
    ) == [patient]
    first = app.tasks[CHECK_TASK](patient)
    assert first == {"patient_id": patient, "alerts_raised": 2}
    assert app.tasks[CHECK_TASK](patient)["alerts_raised"] == 0
    with worker_sessions() as session:
        assert session.scalars(stale).all() == keys


def test_a_failing_check_is_recorded_and_not_retried(
    app: CrsmonCelery,
    worker_sessions: sessionmaker[Session],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The check fails like a grading run: error stored, no clinical value raised."""
    (patient,) = ingest_all(worker_sessions, patient_feed("P-QF"))
    calls: list[int] = []
    fail_grading(monkeypatch, ValueError("sbp 84 is odd"), calls)
    with pytest.raises(GradingFailed) as raised:
        app.tasks[CHECK_TASK](patient)
    assert "84" not in str(raised.value)
    assert calls == [patient]
    assert {r.last_error for r in records(worker_sessions, "P-QF")} == {
        "ValueError: sbp 84 is odd"
    }


def test_severe_alerts_are_delivered_by_the_webhook_task(
    worker_database_url: str, worker_sessions: sessionmaker[Session]
) -> None:
    """A run that raises severe CRS asks for delivery; the task sends it, signed."""
    received: list[bytes] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    settings = Settings(
        database_url=worker_database_url,
        broker_url="memory://",
        webhook_urls=[url],
        webhook_secret="test-only",
    )
    celery = make_celery(settings)
    try:
        (patient,) = ingest_all(worker_sessions, patient_feed("P-W"))
        celery.tasks[GRADE_TASK](patient)
        assert deliveries_per_task(settings) == 8  # 48 s soft limit / (5 s + 1)
        report = celery.tasks[DELIVER_TASK]()
        assert (report["attempted"], report["delivered"]) == (1, 1)
        assert celery.tasks[SWEEP_TASK]()["delivery_requested"] == 1
    finally:
        celery.close()
        server.shutdown()
        server.server_close()
    (body,) = received
    assert json.loads(body)["alert"]["kind"] == "severe_crs"


def test_the_webhook_task_without_webhooks_does_nothing(app: CrsmonCelery) -> None:
    assert app.tasks[DELIVER_TASK]() == {"attempted": 0}


def test_the_dispatcher_sends_one_message_per_patient(app: CrsmonCelery) -> None:
    dispatcher = CeleryDispatcher(app)
    dispatcher.notify([3, 1, 3, 2, 1, 3])
    assert dispatcher.published == 3


def test_a_dead_broker_never_fails_or_blocks_the_caller(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Refused and unresponsive brokers: logged, swallowed, bounded in time."""
    with socket.socket() as black_hole:  # accepts connections, never answers
        black_hole.bind(("127.0.0.1", 0))
        black_hole.listen(16)
        hole = black_hole.getsockname()[1]
        with socket.socket() as closed:
            closed.bind(("127.0.0.1", 0))
            refused = closed.getsockname()[1]
        for port, budget in ((refused, 5.0), (hole, 15.0)):
            settings = Settings(broker_url=f"redis://127.0.0.1:{port}/0")
            celery = make_celery(settings)
            try:
                dispatcher = CeleryDispatcher(celery)
                start = time.monotonic()
                with caplog.at_level(logging.WARNING, logger="workers.tasks"):
                    dispatcher.notify([1, 2, 3])
                took = time.monotonic() - start
            finally:
                celery.close()
            assert dispatcher.published == 0
            assert took < budget, f"port {port}: notify blocked {took:.1f} s"
            assert "3 grading message(s) not sent" in caplog.text
            caplog.clear()


def test_the_celery_configuration_is_the_reliable_one() -> None:
    """reliability.md §1.2: the settings that narrow Celery's loss windows."""
    settings = Settings(
        broker_url="redis://127.0.0.1:1/0",
        visibility_timeout_s=300,
        task_time_limit_s=60,
        sweep_interval_s=15,
    )
    conf = celery_config(settings)
    assert conf["task_acks_late"] is True
    assert conf["task_reject_on_worker_lost"] is True
    assert conf["worker_prefetch_multiplier"] == 1
    assert conf["worker_cancel_long_running_tasks_on_connection_loss"] is True
    assert conf["accept_content"] == ["json"]
    assert conf["task_serializer"] == "json"
    assert conf["task_ignore_result"] is True
    assert conf["broker_connection_retry_on_startup"] is True
    assert conf["task_soft_time_limit"] < conf["task_time_limit"] == 60
    options = conf["broker_transport_options"]
    assert options["visibility_timeout"] == 300 > conf["task_time_limit"]
    assert options["socket_timeout"] == options["socket_connect_timeout"] == 2.0
    assert options["unacked_restore_interval"] == 10
    assert options["unacked_restore_throttle"] == 1
    sweep = conf["beat_schedule"]["crsmon-sweep"]
    assert (sweep["task"], sweep["schedule"]) == (SWEEP_TASK, 15)
    with pytest.raises(ValueError, match="CRSMON_BROKER_URL"):
        make_celery(Settings())


def test_the_module_app_reads_the_environment_only_when_asked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``celery -A workers.celery_app`` finds ``app``; importing reads nothing."""
    monkeypatch.setattr(workers.celery_app, "_app", None)
    monkeypatch.setenv("CRSMON_BROKER_URL", "memory://")
    monkeypatch.setenv("CRSMON_DATABASE_URL", "sqlite:///unused.sqlite3")
    built = workers.celery_app.app
    try:
        assert built is workers.celery_app.app  # built once
        assert built.crsmon_settings.broker_url == "memory://"
        assert set(built.tasks) >= {GRADE_TASK, SWEEP_TASK}
    finally:
        built.close()
    with pytest.raises(AttributeError):
        _ = workers.celery_app.not_there


def test_a_forked_child_drops_the_inherited_engine(app: CrsmonCelery) -> None:
    """worker_process_init: the child builds its own engine, never shares sockets."""
    inherited = app.runtime()
    assert app.runtime() is inherited
    app.on_worker_process_init()
    assert app.runtime() is not inherited
    app.on_worker_process_shutdown()


def test_the_dispatcher_is_a_dispatcher(app: CrsmonCelery) -> None:
    dispatcher: Dispatcher = CeleryDispatcher(app)  # checked by mypy
    dispatcher.notify([])


@pytest.mark.parametrize("in_ci", [True, False])
def test_missing_services_fail_under_ci_and_skip_elsewhere(
    in_ci: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(conftest, "IN_CI", in_ci)
    expected = pytest.fail.Exception if in_ci else pytest.skip.Exception
    with pytest.raises(expected, match="redis-server is not installed"):
        conftest.require(False, "redis-server is not installed")
    conftest.require(True, "present")


def test_a_patient_with_a_queued_message_gets_no_second_one(
    worker_redis: RedisServer, worker_database_url: str
) -> None:
    """dedup: one queued message per patient; the task clears the mark before
    it reads pending records, so the next record gets a message again; a
    publish that fails clears its marks (the sweeper's is not skipped)."""
    settings = Settings(database_url=worker_database_url, broker_url=worker_redis.url)
    celery = make_celery(settings)
    try:
        dispatcher = CeleryDispatcher(celery, dedup=True)
        dispatcher.notify([1, 2])
        dispatcher.notify([2, 3])
        assert (dispatcher.published, dispatcher.skipped) == (3, 1)
        assert worker_redis.queue_length(QUEUE) == 3
        with worker_redis.client() as redis_client:
            assert redis_client.ttl(queued_key(2)) > 0
            _started(celery, 2)  # what the task does first
            assert redis_client.exists(queued_key(2)) == 0
        dispatcher.notify([2])
        assert dispatcher.published == 4
        plain = CeleryDispatcher(celery)  # no dedup: every call publishes
        plain.notify([1, 1, 2])
        assert plain.published == 2
    finally:
        celery.close()
    broken = make_celery(Settings(broker_url=worker_redis.url))
    try:
        failing = CeleryDispatcher(broken, dedup=True)

        def refuse(*_: object, **__: object) -> None:
            raise ConnectionError("broker gone")

        broken.tasks[GRADE_TASK].delay = refuse  # type: ignore[method-assign,assignment]
        failing.notify([7])
        assert failing.published == 0
        with worker_redis.client() as redis_client:
            assert redis_client.exists(queued_key(7)) == 0
    finally:
        broken.close()


def later_records(feeds: list[list[str]]) -> list[str]:
    """A second round for four patients' feeds: a late fever for the first, a
    correction of the second's fever, a retraction of the third's hypotension,
    nothing for the fourth (so each patient's grading starts at another time)."""
    lines = []
    for n, feed_lines in enumerate(feeds[:3]):
        enrol = json.loads(feed_lines[0])
        p, infusion = enrol["patient"], datetime.fromisoformat(enrol["infusion_at"])

        def at(hours: float, infusion: datetime = infusion) -> str:
            return (infusion + timedelta(hours=hours)).isoformat()

        key = {"source_system": "monitor", "patient": p}
        rounds: list[dict[str, Any]] = [
            {"kind": "vitals", "source_record_id": f"{p}-late", "observed_at": at(40),
             "temperature_c": 38.2, "sbp_mmhg": 110, "dbp_mmhg": 70},
            {"kind": "vitals", "source_record_id": f"{p}-fix", "observed_at": at(20),
             "temperature_c": 37.2, "sbp_mmhg": 100, "dbp_mmhg": 58,
             "supersedes": f"{p}-3", "correction_reason": "probe error"},
            {"kind": "retraction", "source_record_id": f"{p}-undo", "at": at(27),
             "target_record_id": f"{p}-4", "reason": "entered in error"},
        ]  # fmt: skip
        lines.append(json.dumps({**key, **rounds[n]}))
    return lines


@pytest.mark.parametrize("chunking", ["one", "two", "each"])
def test_a_batch_grades_like_one_patient_at_a_time(
    worker_sessions: sessionmaker[Session],
    tmp_path: Any,
    monkeypatch: pytest.MonkeyPatch,
    chunking: str,
) -> None:
    """Several patients in one delivery: the same grade rows and alerts as
    grading each alone (compared with a second database graded singly), for
    a first grading and for a second round in which each patient's changes
    start at another time (a new record, a correction, a retraction, none);
    in one chunk (the default size), in chunks of a few patients, and one
    patient a chunk."""
    import crsmon.services.grading

    chunks: list[list[int]] = []
    chunked = crsmon.services.grading._chunks

    def observed(session: Session, ids: list[int]) -> list[list[int]]:
        chunks.extend(found := chunked(session, ids))
        return found

    monkeypatch.setattr(crsmon.services.grading, "_chunks", observed)
    policy = dataclasses.replace(  # the shipped risk model, and a webhook
        AlertPolicy.from_settings(service_settings("sqlite://", "redis://")),
        webhook_urls=("http://127.0.0.1:9/crs",),
    )
    assert policy.risk is not None
    feeds = [patient_feed(f"B-{n}", extra_vitals=n) for n in range(4)]
    ids = sorted(ingest_all(worker_sessions, [line for f in feeds for line in f]))
    with worker_sessions() as session:
        sizes = [
            len(
                session.scalars(select(ClinicalRecord.id).filter_by(patient_id=p)).all()
            )
            for p in ids
        ]
    limit = {"one": None, "two": sizes[0] + sizes[1], "each": 1}[chunking]
    if limit is not None:  # "two": the first two patients fill the first chunk
        monkeypatch.setattr(crsmon.services.grading, "CHUNK_RECORDS", limit)
    batch = grade_pending_many(
        context(worker_sessions, policy=policy), ids, token="batch-1"
    )
    assert set(batch.runs) == set(ids)
    assert batch.split == ()
    first = Effects.read(worker_sessions)
    assert first.states == {GRADED: sum(first.states.values())}
    later = later_records(feeds)
    assert ingest_all(worker_sessions, later) == set(ids[:3])
    again = grade_pending_many(
        context(worker_sessions, policy=policy), ids, token="batch-2"
    )
    assert sorted(again.runs) == ids[:3]  # the fourth had nothing pending
    together = Effects.read(worker_sessions)
    assert together.states == {GRADED: sum(together.states.values())}
    batched = list(chunks)
    assert len(together.grades) > len(first.grades)
    url = f"sqlite:///{tmp_path / 'single.sqlite3'}"
    from crsmon.db.engine import make_engine, make_sessions
    from crsmon.db.migrate import upgrade

    upgrade(url)
    engine = make_engine(url)
    single = make_sessions(engine)
    try:
        for feed_lines in feeds:
            (pid,) = ingest_all(single, feed_lines)
            grade_pending(context(single, policy=policy), pid)
        alone_first = Effects.read(single)
        for line in later:
            (pid,) = ingest_all(single, [line])
            grade_pending(context(single, policy=policy), pid)
        alone = Effects.read(single)
        alone_scored = scored(single)
    finally:
        engine.dispose()
    assert (first.grades, first.alerts) == (alone_first.grades, alone_first.alerts)
    assert (together.grades, together.alerts) == (alone.grades, alone.alerts)
    assert_no_duplicates(together)
    assert scored(worker_sessions) == alone_scored
    assert any(g[4] is not None for g in alone_scored[0]), "nothing was risk-scored"
    assert alone_scored[1], "no webhook delivery was written"
    first_delivery = {"one": [ids], "two": [ids[:2], ids[2:3], ids[3:]]}.get(
        chunking, [[pid] for pid in ids]
    )
    assert batched[: len(first_delivery)] == first_delivery


def test_a_batch_costs_the_same_statements_for_two_patients_or_six(
    worker_sessions: sessionmaker[Session],
) -> None:
    """Every read and write of a batch is one statement for all its patients
    (or a few, for corrections and retractions), never one per patient."""
    engine = worker_sessions.kw["bind"]
    statements: list[str] = []

    def count(*args: Any, **_: Any) -> None:
        statements.append(args[2])

    def cost(prefix: str, patients: int) -> int:
        feeds = [patient_feed(f"{prefix}-{n}") for n in range(patients)]
        ids = sorted(ingest_all(worker_sessions, [x for f in feeds for x in f]))
        statements.clear()
        event.listen(engine, "before_cursor_execute", count)
        try:
            batch = grade_pending_many(context(worker_sessions), ids, token=prefix)
        finally:
            event.remove(engine, "before_cursor_execute", count)
        assert sorted(batch.runs) == ids
        return len(statements)

    two, six = cost("S2", 2), cost("S6", 6)
    assert two == six, "\n".join(s.split("\n")[0][:90] for s in statements)


def test_a_batch_that_fails_or_was_tried_before_is_split(
    worker_sessions: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    """One failing patient takes no other down: the batch's leases are
    released and each patient goes on alone; a redelivered batch splits too."""
    ids = sorted(ingest_all(worker_sessions, patient_feed("S-1") + patient_feed("S-2")))

    def broken(*args: Any, **kwargs: Any) -> Any:
        del args, kwargs
        raise RuntimeError("boom")

    monkeypatch.setattr(workers.jobs, "grade_patients", broken)
    failed = grade_pending_many(context(worker_sessions), ids, token="batch-x")
    assert (failed.runs, failed.split) == ({}, tuple(ids))
    monkeypatch.undo()
    for pid in failed.split:  # the single messages the task publishes
        assert grade_pending(context(worker_sessions), pid).run is not None
    assert set(Effects.read(worker_sessions).states) == {GRADED}
    more = sorted(ingest_all(worker_sessions, patient_feed("S-3")))
    first = grade_pending_many(context(worker_sessions), more, token="batch-y")
    assert first.runs  # graded
    with worker_sessions.begin() as session:  # as if that commit had been lost
        session.execute(
            update(ClinicalRecord)
            .where(ClinicalRecord.patient_id.in_(more))
            .values(grading_state=PENDING)
        )
    again = grade_pending_many(context(worker_sessions), more, token="batch-y")
    assert (again.runs, again.split) == ({}, tuple(more))  # tried before: split


def test_the_batch_task_and_a_batching_dispatcher(
    app: CrsmonCelery, worker_sessions: sessionmaker[Session]
) -> None:
    ids = sorted(ingest_all(worker_sessions, patient_feed("T-1") + patient_feed("T-2")))
    summary = app.tasks[GRADE_MANY_TASK](ids)
    assert summary["graded"] == 2
    assert summary["split"] == 0
    assert set(Effects.read(worker_sessions).states) == {GRADED}
    dispatcher = CeleryDispatcher(app, batch=2)
    dispatcher.notify([5, 1, 3, 1, 4])
    assert dispatcher.published == 4  # patients, in 2 messages of up to 2


def test_the_api_publishes_batches_of_patients_once_queued(
    worker_redis: RedisServer, worker_database_url: str
) -> None:
    """The service's dispatcher: a publisher thread over a batching, deduping
    Celery dispatcher (CRSMON_GRADING_BATCH patients per message)."""
    from crsmon.api.app import default_dispatcher
    from crsmon.db.engine import make_engine, make_sessions
    from crsmon.services.dispatch import BackgroundDispatcher

    settings = Settings(
        database_url=worker_database_url, broker_url=worker_redis.url, grading_batch=7
    )
    engine = make_engine(worker_database_url)
    dispatcher = default_dispatcher(make_sessions(engine), settings)
    try:
        assert isinstance(dispatcher, BackgroundDispatcher)
        inner = dispatcher.inner
        assert isinstance(inner, CeleryDispatcher)
        assert inner.batch == 7
        dispatcher.notify(range(1, 16))
        assert dispatcher.flush(10)
        assert inner.published == 15
        assert worker_redis.queue_length(QUEUE) == 3  # 7 + 7 + 1
        dispatcher.notify([3])
        assert dispatcher.flush(10)
        assert inner.skipped == 1  # still queued: no second message
    finally:
        if isinstance(dispatcher, BackgroundDispatcher):
            dispatcher.close()
        engine.dispose()


WITHOUT_PANDAS = """
import sys
import numpy as np
from crsmon.settings import Settings
from workers.celery_app import make_celery

app = make_celery(Settings(database_url="sqlite://", broker_url="memory://"))
app.on_worker_init()
risk = app.grading_setup().policy.risk
assert risk is not None, "the risk model was not loaded"
rows = np.zeros((3, len(risk.model.features)))
probabilities = risk.model.estimator.predict_proba(rows)[:, 1]
assert "pandas" not in sys.modules, "pandas was imported"
assert "pyarrow" not in sys.modules, "pyarrow was imported"
print("scored", risk.key, *probabilities)
"""


def test_a_worker_loads_the_risk_model_without_pandas() -> None:
    """A worker's main process loads and can score the model, with pandas and
    pyarrow (80 MB a process, no task uses them) never imported."""
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_PANDAS],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("scored ")
    assert all(0 <= float(p) <= 1 for p in done.stdout.split()[2:])
