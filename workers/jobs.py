"""The work a grading message stands for, as plain functions over a session factory.

No Celery here: :mod:`workers.tasks` wraps these functions in thin tasks, and the
tests call them directly. The database is the queue of record
(reliability.md §0, §1.4): a record is committed ``pending`` with its insert, a
message only says "look at patient N", and everything a task needs is re-read.

One delivery of "grade patient N" runs two transactions:

1. **Claim** (short, committed at once): under the patient's row lock, count
   this attempt on each of the patient's pending records (``attempts += 1``)
   and lease them to this delivery (its Celery task id) for a task time limit.
   A record leased to *another* live delivery is not counted again: that
   delivery is about to grade it (otherwise six deliveries queued on one
   patient would use up a budget of five with nothing failing, reliability.md
   §1.4.4). A delivery that holds nothing does not grade, so every grading
   that runs has counted an attempt. A redelivery of the same message (a
   killed worker, a retry) carries the same task id and does count, and an
   expired lease counts for anyone (leases run on the database clock on
   PostgreSQL).
   A record whose count now exceeds ``max_attempts`` has already been tried that
   many times and never finished (a poison record, or a worker killed each time,
   where Celery's ``task_reject_on_worker_lost`` would requeue it forever): it is
   marked ``failed`` with ``last_error`` and is not graded again. Failed records
   stay visible ("not graded: needs review"); they are never read as "no CRS".
2. **Grade** (one transaction): :func:`crsmon.services.grading.grade_patient`
   grades every pending record of the patient at once and marks them graded.
   If it raises, the transaction rolls back (nothing half-written), the error is
   recorded in ``last_error``, records that have used their last attempt are
   marked ``failed`` at once, and the exception propagates.

Serialization per patient: there is no Celery-side lock. Two deliveries for the
same patient (a duplicate from the sweeper, a redelivery after a visibility
timeout, two workers) are serialized by the database: on PostgreSQL the claim
and ``grade_patient`` both take the patient row ``FOR NO KEY UPDATE`` first, so the
second waits for the first to commit and then finds nothing pending; on SQLite
every transaction is ``BEGIN IMMEDIATE`` (one writer). Behind the locks, the
unique natural keys on grades and alerts make a re-run write nothing twice, so
even a locking bug could not produce a duplicate alert.
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, func, literal, or_, select, update
from sqlalchemy.exc import StatementError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql.elements import ColumnElement

from crsmon.db.models import ClinicalRecord, Patient
from crsmon.domain.rules import RuleSet
from crsmon.services.grading import GradingRun, grade_patient, grade_patients
from crsmon.services.monitoring import (
    AlertPolicy,
    patients_gone_quiet,
    patients_pending_since,
)
from crsmon.services.webhooks import WebhookPolicy

PENDING = "pending"
GRADED = "graded"
FAILED = "failed"

logger = logging.getLogger(__name__)

MAX_ERROR_CHARS = 500
DEFAULT_LEASE_S = 75.0
"""The default task time limit (60 s) and a margin."""
NO_ERROR_RECORDED = "none recorded (the worker was lost or hit the time limit)"


@dataclass(frozen=True, slots=True)
class GradingContext:
    """What a grading job needs: a session factory and the grading settings."""

    sessions: sessionmaker[Session]
    rules: RuleSet
    max_attempts: int
    policy: AlertPolicy
    webhooks: WebhookPolicy | None = None
    lease_s: float = DEFAULT_LEASE_S
    """How long a claim is live: the task's hard time limit and a margin."""


@dataclass(frozen=True, slots=True)
class Claim:
    """One counted attempt: records still to grade, and records given up now."""

    pending: int
    gave_up: int
    retried: bool = False
    """Some record this delivery holds was tried before (a redelivery, a
    retry, a lease taken over): a batch then splits into single messages."""


@dataclass(frozen=True, slots=True)
class JobResult:
    """What one delivery did. ``run`` is None when nothing was pending."""

    patient_id: int
    claim: Claim
    run: GradingRun | None

    def summary(self) -> dict[str, int]:
        """Counts only (ids, no clinical values): safe for logs and results."""
        run = self.run
        return {
            "patient_id": self.patient_id,
            "pending": self.claim.pending,
            "gave_up": self.claim.gave_up,
            "records_graded": 0 if run is None else run.records_graded,
            "grades_written": 0 if run is None else run.grades_written,
            "alerts_raised": 0 if run is None else len(run.alerts_raised),
        }


def _pending_of(patient_id: int) -> ColumnElement[bool]:
    return (ClinicalRecord.patient_id == patient_id) & (
        ClinicalRecord.grading_state == PENDING
    )


def _rowcount(result: Any) -> int:
    # session.execute(update(...)) returns a cursor result with a row count.
    return cast(CursorResult[Any], result).rowcount


def _gave_up(max_attempts: int, error: str) -> str:
    plural = "" if max_attempts == 1 else "s"
    return f"gave up after {max_attempts} attempt{plural}; last: {error}"


def claim(
    sessions: sessionmaker[Session],
    patient_id: int,
    max_attempts: int,
    *,
    token: str | None = None,
    now: datetime | None = None,
    lease_s: float = DEFAULT_LEASE_S,
) -> Claim:
    """Count one attempt on the patient's pending records that no other live
    delivery holds, and lease them to ``token``; give up on exhausted ones.

    ``pending`` in the answer is what this delivery now holds: when every
    pending record is leased to another live delivery it is 0, and the
    delivery does not grade (the holder will, or the lease runs out and a
    later delivery counts and grades). So every grading that runs has counted
    an attempt, and a poison record is tried at most ``max_attempts`` times
    per record group. ``token`` names the delivery (the Celery task id, the
    same for every redelivery of one message); None is a delivery of its own.
    ``now`` defaults to the database clock on PostgreSQL (workers on several
    hosts share it), Python's on SQLite (one host).
    Committed on return, so the count survives a worker killed mid-grading.
    """
    token = token or f"local-{uuid.uuid4().hex}"
    return claim_many(
        sessions, [patient_id], max_attempts, token=token, now=now, lease_s=lease_s
    )[patient_id]


def claim_many(
    sessions: sessionmaker[Session],
    patient_ids: list[int],
    max_attempts: int,
    *,
    token: str,
    now: datetime | None = None,
    lease_s: float = DEFAULT_LEASE_S,
) -> dict[int, Claim]:
    """:func:`claim` for several patients in one transaction (their locks in
    id order, so two batches never deadlock)."""
    token = token[:64]
    ids = sorted(set(patient_ids))
    claims = {pid: Claim(pending=0, gave_up=0) for pid in ids}
    with sessions.begin() as session:
        found = list(
            session.scalars(
                select(Patient.id)
                .where(Patient.id.in_(ids))
                .order_by(Patient.id)
                .with_for_update(key_share=True)
            )
        )
        if not found:
            return claims
        if now is None:
            now = _clock(session)
        pending = (ClinicalRecord.patient_id.in_(found)) & (
            ClinicalRecord.grading_state == PENDING
        )
        free = or_(
            ClinicalRecord.lease_until.is_(None),
            ClinicalRecord.lease_until <= now,
            ClinicalRecord.lease_token == token,
        )
        session.execute(
            update(ClinicalRecord)
            .where(pending, free)
            .values(
                attempts=ClinicalRecord.attempts + 1,
                lease_token=token,
                lease_until=now + timedelta(seconds=lease_s),
            )
            .execution_options(synchronize_session=False)
        )
        gave_up = Counter(
            session.scalars(
                update(ClinicalRecord)
                .where(pending, ClinicalRecord.attempts > max_attempts)
                .values(
                    grading_state=FAILED,
                    last_error=literal(_gave_up(max_attempts, ""))
                    + func.coalesce(ClinicalRecord.last_error, NO_ERROR_RECORDED),
                )
                .returning(ClinicalRecord.patient_id)
                .execution_options(synchronize_session=False)
            )
        )
        held = session.execute(
            select(
                ClinicalRecord.patient_id,
                func.count(),
                func.max(ClinicalRecord.attempts),
            )
            .where(pending, ClinicalRecord.lease_token == token)
            .group_by(ClinicalRecord.patient_id)
        )
        counts = {pid: (n, most) for pid, n, most in held}
    for pid in found:
        n, most = counts.get(pid, (0, 0))
        claims[pid] = Claim(pending=n, gave_up=gave_up[pid], retried=(most or 0) > 1)
    return claims


def _clock(session: Session) -> datetime:
    """The database clock on PostgreSQL (one clock for every worker host)."""
    if session.get_bind().dialect.name == "postgresql":
        found = session.scalar(select(func.clock_timestamp()))
        if isinstance(found, datetime):
            return found
    return datetime.now(UTC)


def describe_error(exc: BaseException) -> str:
    """A short error text for ``last_error``: class and message, no SQL parameters.

    SQLAlchemy statement errors carry the statement's parameters (clinical
    values) in their text; only the driver's own message is kept.
    """
    if isinstance(exc, StatementError) and exc.orig is not None:
        text = f"{type(exc).__name__}: {type(exc.orig).__name__}: {exc.orig}"
    else:
        text = f"{type(exc).__name__}: {exc}"
    return text[:MAX_ERROR_CHARS]


def record_failure(
    sessions: sessionmaker[Session],
    patient_id: int,
    exc: BaseException,
    max_attempts: int,
) -> int:
    """Store the error on the patient's pending records and end their lease;
    fail those out of attempts.

    Returns the number of records marked ``failed``.
    """
    error = describe_error(exc)
    with sessions.begin() as session:
        # The failed delivery is no longer live: its lease ends, so the next
        # delivery (a retry, the sweeper's) counts its own attempt.
        session.execute(
            update(ClinicalRecord)
            .where(_pending_of(patient_id))
            .values(last_error=error, lease_until=None)
        )
        failed = session.execute(
            update(ClinicalRecord)
            .where(_pending_of(patient_id), ClinicalRecord.attempts >= max_attempts)
            .values(
                grading_state=FAILED,
                last_error=_gave_up(max_attempts, error),
            )
        )
    return _rowcount(failed)


def grade_pending(
    ctx: GradingContext,
    patient_id: int,
    *,
    now: datetime | None = None,
    before_commit: Callable[[int], None] | None = None,
    token: str | None = None,
) -> JobResult:
    """Grade all pending records of one patient, once (see the module docstring).

    ``before_commit(patient_id)`` runs inside the grading transaction after every
    row is written and before the commit; the worker uses it only for the
    test-only delay hook (:func:`workers.tasks.test_only_delay`). ``token``
    names the delivery (see :func:`claim`).

    Raises:
        Exception: whatever grading raised, after it was recorded in the database.
    """
    counted = claim(
        ctx.sessions, patient_id, ctx.max_attempts, token=token, lease_s=ctx.lease_s
    )
    if counted.pending == 0:
        # Nothing pending, or all of it held by another live delivery.
        return JobResult(patient_id, counted, None)
    try:
        with ctx.sessions.begin() as session:
            run = grade_patient(
                session,
                patient_id,
                ctx.rules,
                now=now or datetime.now(UTC),
                policy=ctx.policy,
            )
            if before_commit is not None:
                before_commit(patient_id)
    except Exception as exc:
        _record_failure_quietly(ctx, patient_id, exc)
        raise
    return JobResult(patient_id, counted, run)


@dataclass(frozen=True, slots=True)
class BatchResult:
    """What one delivery of several patients did; ``split``: the patients to
    grade one message each instead (the batch failed, or was tried before)."""

    claims: dict[int, Claim]
    runs: dict[int, GradingRun]
    split: tuple[int, ...] = ()


def release(
    sessions: sessionmaker[Session],
    patient_ids: list[int],
    token: str,
    *,
    uncount: bool,
) -> None:
    """End this delivery's leases on these patients' pending records, so the
    single messages a batch splits into can claim them at once; ``uncount``
    takes back the attempt this delivery's claim counted when it graded
    nothing (a split before grading), so a split never uses up the budget."""
    values: dict[str, Any] = {"lease_until": None}
    if uncount:
        values["attempts"] = ClinicalRecord.attempts - 1
    with sessions.begin() as session:
        session.execute(
            update(ClinicalRecord)
            .where(
                ClinicalRecord.patient_id.in_(patient_ids),
                ClinicalRecord.grading_state == PENDING,
                ClinicalRecord.lease_token == token[:64],
            )
            .values(**values)
            .execution_options(synchronize_session=False)
        )


def grade_pending_many(
    ctx: GradingContext,
    patient_ids: list[int],
    *,
    token: str,
    now: datetime | None = None,
    before_commit: Callable[[int], None] | None = None,
) -> BatchResult:
    """Grade several patients in one transaction (one risk-model call).

    Each patient is claimed as in :func:`grade_pending`. A batch that was
    tried before (a held record already counted an attempt) or that fails is
    not retried as a batch: its leases are released and ``split`` names the
    patients to send one message each, so one poison record is isolated and
    given up alone, never taking its batch with it.
    """
    claims = claim_many(
        ctx.sessions, patient_ids, ctx.max_attempts, token=token, lease_s=ctx.lease_s
    )
    held = [pid for pid, c in claims.items() if c.pending > 0]
    if not held:
        return BatchResult(claims, {})
    if any(claims[pid].retried for pid in held):
        release(ctx.sessions, held, token, uncount=True)
        return BatchResult(claims, {}, tuple(held))
    try:
        with ctx.sessions.begin() as session:
            runs = grade_patients(
                session,
                held,
                ctx.rules,
                now=now or datetime.now(UTC),
                policy=ctx.policy,
            )
            if before_commit is not None:
                before_commit(held[0])
    except Exception as exc:  # split: each patient fails (or not) on its own
        logger.warning(
            "grading batch of %d patients failed (%s); split into single messages",
            len(held),
            type(exc).__name__,
        )
        release(ctx.sessions, held, token, uncount=False)  # it was tried
        return BatchResult(claims, {}, tuple(held))
    return BatchResult(claims, runs)


def check_patient(
    ctx: GradingContext, patient_id: int, *, now: datetime | None = None
) -> GradingRun:
    """Grade a patient as of ``now`` whether or not a record is pending.

    The sweep sends this for a patient who has gone quiet: no record arrives to
    trigger grading, yet the open gap's ``stale_monitoring`` alert is due.
    Idempotent like every grading run (unique keys on grades and alerts).

    Raises:
        Exception: whatever grading raised, after it was recorded in the database.
    """
    try:
        with ctx.sessions.begin() as session:
            return grade_patient(
                session,
                patient_id,
                ctx.rules,
                now=now or datetime.now(UTC),
                policy=ctx.policy,
            )
    except Exception as exc:
        _record_failure_quietly(ctx, patient_id, exc)
        raise


def quiet_patients(ctx: GradingContext, *, now: datetime, limit: int) -> list[int]:
    """Patients whose open stale-monitoring gap has no alert yet (bounded)."""
    with ctx.sessions() as session:
        return patients_gone_quiet(session, now=now, policy=ctx.policy, limit=limit)


def _record_failure_quietly(
    ctx: GradingContext, patient_id: int, exc: BaseException
) -> None:
    try:
        record_failure(ctx.sessions, patient_id, exc, ctx.max_attempts)
    except Exception:  # the database may be the thing that failed
        logger.warning("could not record the grading failure of patient %s", patient_id)


def stale_patients(
    sessions: sessionmaker[Session], *, older_than: datetime, limit: int
) -> list[int]:
    """Patients with a record still pending since before ``older_than`` (bounded)."""
    return patients_pending_since(sessions, older_than=older_than, limit=limit)
