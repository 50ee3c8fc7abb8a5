"""Celery tasks, thin over :mod:`workers.jobs`, and the Celery dispatcher.

- ``crsmon.grade_patient(patient_id)``: one message per *patient*, never per
  record; it grades every pending record of that patient (``jobs.grade_pending``).
  Messages carry the patient's surrogate id only: no clinical values in Redis
  or in Celery's logs.
- ``crsmon.check_patient(patient_id)``: grade a patient as of now though
  nothing is pending: the sweep sends it for a patient gone quiet, whose open
  stale-monitoring gap is due an alert.
- ``crsmon.deliver_webhooks()``: send the due webhook pushes of severe alerts
  (:mod:`crsmon.services.webhooks`); sent after a run that raised one, and by
  every sweep so retries happen on their backoff schedule.
- ``crsmon.sweep()``: run by beat every ``sweep_interval_s``; re-enqueues
  patients with records pending for longer than ``sweep_pending_after_s``, so
  losing every Redis message costs latency, never data; checks for patients
  gone quiet; and triggers webhook delivery.

Failures. A transient database error (connection lost, lock or serialization
conflict, SQLite busy) is retried up to :data:`MAX_TRANSIENT_RETRIES` times with
a short countdown, far below the visibility timeout. Anything else fails the
task (the message is acked); the error is already in ``last_error`` and the
sweeper tries again later, until the database's attempt counter marks the
records ``failed``. Failures leave the task as :class:`GradingFailed`, which
names the patient id and the error class only: the original message, which may
quote clinical values, stays in the database.

Per-patient serialization is the database's job, not Celery's: see
:mod:`workers.jobs`.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn

from celery import Celery, Task, shared_task
from sqlalchemy.exc import DBAPIError, OperationalError

from crsmon.domain.alerts import AlertDecision
from crsmon.services.webhooks import deliver_due
from crsmon.settings import Settings
from workers.celery_app import (
    BROKER_SOCKET_TIMEOUT_S,
    CHECK_TASK,
    DELIVER_TASK,
    GRADE_MANY_TASK,
    GRADE_TASK,
    NOOP_TASK,
    QUEUE,
    SWEEP_TASK,
    CrsmonCelery,
    soft_time_limit,
)
from workers.jobs import (
    GradingContext,
    check_patient,
    grade_pending,
    grade_pending_many,
    quiet_patients,
    stale_patients,
)

logger = logging.getLogger(__name__)

#: Bounded Celery retries for transient database errors (countdown 1, 2, 4 s).
MAX_TRANSIENT_RETRIES = 3
#: Patients re-enqueued by one sweep at most (oldest pending first).
SWEEP_BATCH_PATIENTS = 500

#: TEST ONLY. When this environment variable holds a number of seconds, the
#: grading task sleeps that long (capped at :data:`TEST_DELAY_CAP_S`) inside the
#: grading transaction, after every row is written and before the commit, and
#: logs its pid. The worker tests use it to kill a worker mid-batch. Never set
#: it in a deployment.
TEST_DELAY_ENV = "CRSMON_TEST_GRADE_DELAY_S"
TEST_DELAY_CAP_S = 30.0


class GradingFailed(RuntimeError):
    """Grading a patient failed; the detail is in the records' ``last_error``.

    Its one argument is a message (so Celery's JSON serializer can rebuild it).
    """

    @classmethod
    def of(cls, patient_id: int, error: BaseException) -> GradingFailed:
        """The patient id and the error class, nothing from the error's message."""
        return cls(f"grading patient {patient_id} failed: {type(error).__name__}")


def test_only_delay(patient_id: int) -> None:
    """TEST ONLY: sleep before the grading commit if :data:`TEST_DELAY_ENV` is set."""
    raw = os.environ.get(TEST_DELAY_ENV)
    if not raw:
        return
    seconds = min(float(raw), TEST_DELAY_CAP_S)
    # Numbers only as arguments: crsmon's JSON logs keep them (crsmon.logs).
    logger.warning(
        f"TEST ONLY {TEST_DELAY_ENV}: pid %d sleeps %.1f s "
        "before committing patient %d",
        os.getpid(),
        seconds,
        patient_id,
    )
    time.sleep(seconds)


def is_transient(exc: BaseException) -> bool:
    """A database error worth a quick retry (the next attempt may well succeed)."""
    return isinstance(exc, OperationalError) or (
        isinstance(exc, DBAPIError) and exc.connection_invalidated
    )


def crsmon_app(app: Celery) -> CrsmonCelery:
    """The task's app, which must come from :func:`workers.celery_app.make_celery`."""
    if not isinstance(app, CrsmonCelery):
        raise TypeError("crsmon tasks need an app built by make_celery(settings)")
    return app


@shared_task(bind=True, name=GRADE_TASK, max_retries=MAX_TRANSIENT_RETRIES)
def grade_patient_task(self: Task[Any, Any], patient_id: int) -> dict[str, int]:
    """Grade every pending record of one patient (idempotent; ids only)."""
    app = crsmon_app(self.app)
    context = app.runtime().context
    _started(app, patient_id)
    try:
        result = grade_pending(
            context,
            patient_id,
            before_commit=test_only_delay,
            token=self.request.id,
        )
    except Exception as exc:
        _retry_or_fail(self, patient_id, exc)
    if result.run is not None:
        _push_if_severe(app, context, result.run.alerts_raised)
    return result.summary()


@shared_task(bind=True, name=GRADE_MANY_TASK)
def grade_patients_task(self: Task[Any, Any], patient_ids: list[int]) -> dict[str, int]:
    """Grade several patients in one transaction (ids only); a batch that
    fails or was tried before is split into one message per patient."""
    app = crsmon_app(self.app)
    context = app.runtime().context
    for patient_id in patient_ids:
        _started(app, patient_id)
    token = self.request.id or f"local-{os.getpid()}-{time.monotonic_ns()}"
    result = grade_pending_many(
        context, patient_ids, token=token, before_commit=test_only_delay
    )
    for patient_id in result.split:
        _publish(app, GRADE_TASK, patient_id)
    for run in result.runs.values():
        _push_if_severe(app, context, run.alerts_raised)
    return {
        "patients": len(patient_ids),
        "graded": len(result.runs),
        "split": len(result.split),
        "records_graded": sum(r.records_graded for r in result.runs.values()),
        "grades_written": sum(r.grades_written for r in result.runs.values()),
    }


def _started(app: CrsmonCelery, patient_id: int) -> None:
    """Clear the patient's queued mark before looking for pending records (see
    :class:`CeleryDispatcher`): a record committed after this gets a message."""
    marks = app.queued_marks()
    if marks is None:
        return
    try:
        marks.delete(queued_key(patient_id))
    except Exception as exc:  # the mark expires on its own
        logger.warning("queued mark not cleared (%s)", type(exc).__name__)


def _retry_or_fail(task: Task[Any, Any], patient_id: int, exc: Exception) -> NoReturn:
    failure = GradingFailed.of(patient_id, exc)
    if is_transient(exc) and task.request.retries < MAX_TRANSIENT_RETRIES:
        countdown = 2**task.request.retries
        raise task.retry(exc=failure, countdown=countdown) from None
    raise failure from None


def _push_if_severe(
    app: Celery, context: GradingContext, raised: Iterable[AlertDecision]
) -> None:
    """Ask for webhook delivery now when a run raised a push alert."""
    if context.webhooks is not None and any(d.push for d in raised):
        _publish(app, DELIVER_TASK)


def _publish(app: Celery, name: str, *args: int) -> bool:
    """Send one message; a broker error is logged, never raised (the DB has it)."""
    try:
        app.tasks[name].delay(*args)
    except Exception as exc:
        logger.warning("broker unavailable (%s): %s not sent", type(exc).__name__, name)
        return False
    return True


@shared_task(bind=True, name=CHECK_TASK, max_retries=MAX_TRANSIENT_RETRIES)
def check_patient_task(self: Task[Any, Any], patient_id: int) -> dict[str, int]:
    """Grade a quiet patient as of now (raises a due stale-monitoring alert once)."""
    app = crsmon_app(self.app)
    context = app.runtime().context
    try:
        run = check_patient(context, patient_id)
    except Exception as exc:
        _retry_or_fail(self, patient_id, exc)
    _push_if_severe(app, context, run.alerts_raised)
    return {"patient_id": patient_id, "alerts_raised": len(run.alerts_raised)}


def deliveries_per_task(settings: Settings) -> int:
    """How many pushes one task may try: all of them fit in its soft time limit."""
    return max(1, int(soft_time_limit(settings) // (settings.webhook_timeout_s + 1)))


@shared_task(bind=True, name=DELIVER_TASK)
def deliver_webhooks_task(self: Task[Any, Any]) -> dict[str, int]:
    """Send the webhook pushes that are due, in bounded batches: a full batch
    asks for the next one at once (a failed push waits for its backoff, so
    this ends when nothing is due)."""
    app = crsmon_app(self.app)
    context = app.runtime().context
    if context.webhooks is None:
        return {"attempted": 0}
    limit = deliveries_per_task(app.crsmon_settings)
    report = deliver_due(
        context.sessions,
        context.webhooks,
        clock=lambda: datetime.now(UTC),
        limit=limit,
    )
    if report.attempted >= limit:  # more may be due: the next batch now, not
        _publish(app, DELIVER_TASK)  # at the next sweep
    return asdict(report)


@shared_task(name=NOOP_TASK)
def noop_task() -> None:
    """Nothing: the reference round trip of ``crsmon bench`` (publish, consume,
    ack) on the same broker and worker settings as grading."""


@shared_task(bind=True, name=SWEEP_TASK)
def sweep(self: Task[Any, Any]) -> dict[str, int]:
    """Re-enqueue waiting and quiet patients, and trigger webhook delivery."""
    app = crsmon_app(self.app)
    settings = app.crsmon_settings
    now = datetime.now(UTC)
    cutoff = now - timedelta(seconds=settings.sweep_pending_after_s)
    context = app.runtime().context
    patients = stale_patients(
        context.sessions, older_than=cutoff, limit=SWEEP_BATCH_PATIENTS
    )
    dispatcher = CeleryDispatcher(app, dedup=True, batch=settings.grading_batch)
    dispatcher.notify(patients)
    quiet = quiet_patients(context, now=now, limit=SWEEP_BATCH_PATIENTS)
    checks = sum(_publish(app, CHECK_TASK, pid) for pid in quiet)
    delivery = context.webhooks is not None and _publish(app, DELIVER_TASK)
    return {
        "stale_patients": len(patients),
        "published": dispatcher.published,
        "quiet_patients": len(quiet),
        "checks_published": checks,
        "delivery_requested": int(delivery),
    }


def queued_key(patient_id: int) -> str:
    """The broker key that says "a grading message for this patient is queued
    and not yet started" (``CeleryDispatcher(dedup=True)``)."""
    return f"{QUEUE}:queued:{patient_id}"


QUEUED_TTL_S = 60
"""How long a queued mark lives at most: a lost message or a long queue costs
a duplicate message after this, never a missed grading."""


class CeleryDispatcher:
    """The :class:`crsmon.services.dispatch.Dispatcher` that sends grading messages.

    Call :meth:`notify` after the records are committed. One message per patient
    (ids only). Publishing never blocks for long (the broker socket timeouts of
    :mod:`workers.celery_app`), and a failed publish is logged and swallowed: the
    records are already pending in the database and the sweeper will find them.
    After the first failure the rest of the batch is skipped, so a dead broker
    costs one timeout per call, not one per patient.

    With ``dedup``, a patient whose message is still queued gets no second one:
    each publish first sets the patient's queued mark on the broker (``SET NX``
    with a TTL, one round trip for the batch), and the task deletes the mark
    before it looks for pending records, so a record committed before a
    skipped publish is always seen by the queued message. The mark is only an
    economy: lost, expired or never set, it costs a duplicate message, which
    grades nothing twice.
    """

    def __init__(self, app: Celery, *, dedup: bool = False, batch: int = 1) -> None:
        self.app = app
        self.batch = batch
        """Patients per message (``crsmon.grade_patients`` when above 1)."""
        self.published = 0
        self.skipped = 0
        """Patients not published because their message was still queued."""
        url = str(app.conf.broker_url or "")
        self._marks: Any = None
        if dedup and url.startswith(("redis://", "rediss://")):
            import redis

            self._marks = redis.Redis.from_url(
                url,
                socket_timeout=BROKER_SOCKET_TIMEOUT_S,
                socket_connect_timeout=BROKER_SOCKET_TIMEOUT_S,
            )

    def close(self) -> None:
        """Release the app's broker connections (at shutdown)."""
        if self._marks is not None:
            self._marks.close()
        self.app.close()

    def _unqueued(self, todo: list[int]) -> list[int]:
        """The patients without a queued message (their marks now set)."""
        if self._marks is None or not todo:
            return todo
        try:
            pipe = self._marks.pipeline(transaction=False)
            for patient_id in todo:
                pipe.set(queued_key(patient_id), b"1", nx=True, ex=QUEUED_TTL_S)
            marked = pipe.execute()
        except Exception as exc:  # no marks: publish them all
            logger.warning("queued marks unavailable (%s)", type(exc).__name__)
            return todo
        fresh = [p for p, ok in zip(todo, marked, strict=True) if ok]
        self.skipped += len(todo) - len(fresh)
        return fresh

    def _unmark(self, patient_ids: list[int]) -> None:
        if self._marks is None or not patient_ids:
            return
        try:
            self._marks.delete(*(queued_key(p) for p in patient_ids))
        except Exception as exc:
            logger.warning("queued marks not cleared (%s)", type(exc).__name__)

    def notify(self, patient_ids: Iterable[int]) -> None:
        """Send a message per distinct patient (``crsmon.grade_patient``), or
        per ``batch`` of them (``crsmon.grade_patients``)."""
        todo = self._unqueued(sorted(set(patient_ids)))
        groups = [todo[i : i + self.batch] for i in range(0, len(todo), self.batch)]
        for done, group in enumerate(groups):
            try:
                if self.batch == 1:
                    self.app.tasks[GRADE_TASK].delay(group[0])
                else:
                    self.app.tasks[GRADE_MANY_TASK].delay(group)
            except Exception as exc:  # a broker error must never fail intake
                left = [p for g in groups[done:] for p in g]
                logger.warning(
                    "broker unavailable (%s): %d grading message(s) not sent; "
                    "the sweeper will re-enqueue them",
                    type(exc).__name__,
                    len(left),
                )
                self._unmark(left)  # so the sweeper's publish is not skipped
                return
            self.published += len(group)
