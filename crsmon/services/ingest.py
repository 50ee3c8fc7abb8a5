"""Take one feed record in: validate, store once (or quarantine), mark it pending.

Thin over the intake schemas and the repository. Each record is its own
transaction, so one bad record never costs the good ones around it, and every
refused record is kept in quarantine with its reason: nothing is silently lost.

Each stored record appends an audit event (who, what, when, why) to its
patient's chain in the same transaction; each refusal one to the
``quarantine`` chain. A duplicate (same key, same content) writes nothing.

With a unit-scoped session (an API key for some care units), a patient of
another unit is not found, exactly like one that is not enrolled, and an
enrolment may only name one of the key's units.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from crsmon.db.audit import QUARANTINE, SYSTEM, Actor, patient_chain, record_event
from crsmon.db.models import Patient
from crsmon.db.repository import (
    ConflictError,
    UnknownPatientError,
    content_hash,
    enroll,
    patient_by_pseudonym,
    quarantine,
    store_records,
)
from crsmon.db.scope import UNSCOPED, session_units
from crsmon.intake.parse import Refused, parse_record
from crsmon.intake.schemas import FeedRecord, PatientIn, RetractionIn, TransferIn
from crsmon.schemas.snapshot import MAX_T_HOURS


class RecordRefused(ValueError):
    """A valid record that cannot be taken for this patient or this caller."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one record: stored, a duplicate, or refused (with why)."""

    status: str  # "stored" | "duplicate" | "refused" | "conflict"
    patient_id: int | None = None
    record_ids: tuple[int, ...] = ()
    error: str | None = None


def ingest_text(
    sessions: sessionmaker[Session],
    text: str,
    *,
    now: datetime,
    channel: str,
    line_no: int | None = None,
    actor: Actor = SYSTEM,
) -> Outcome:
    """Validate and store one JSON record; refusals go to quarantine."""
    parsed = parse_record(text, now)
    if isinstance(parsed, Refused):
        return _refuse(sessions, parsed, text, channel, line_no, actor, now)
    try:
        with sessions.begin() as session:
            return _store(session, parsed, actor, now, channel)
    except (ConflictError, UnknownPatientError, RecordRefused) as exc:
        refused = Refused(str(exc), parsed.source_system, parsed.source_record_id)
        status = "conflict" if isinstance(exc, ConflictError) else "refused"
        outcome = _refuse(sessions, refused, text, channel, line_no, actor, now)
        return Outcome(status, error=outcome.error)


def _enrol(session: Session, record: PatientIn) -> tuple[Patient, bool]:
    units = session_units(session)
    if units is not None:
        if record.care_unit not in units:
            raise RecordRefused("care_unit: not a unit this key may write for")
        taken = session.scalar(
            select(Patient.id)
            .where(Patient.pseudonym == record.patient)
            .execution_options(**{UNSCOPED: True})
        )
        visible = session.scalar(
            select(Patient.id).where(Patient.pseudonym == record.patient)
        )
        if taken is not None and visible is None:
            # Enrolled in another unit: never a second patient, never its details.
            raise ConflictError("patient: already enrolled with different details")
    return enroll(session, record.patient_row())


def _action(record: FeedRecord) -> str:
    if isinstance(record, RetractionIn):
        return "retract"
    if getattr(record, "supersedes", None) is not None:
        return "correct"
    return "create"


def _reason(record: FeedRecord) -> str | None:
    if isinstance(record, RetractionIn):
        return record.reason
    reason: str | None = getattr(record, "correction_reason", None)
    return reason


MAX_FROM_INFUSION = timedelta(hours=MAX_T_HOURS)
"""How far from its patient's infusion a record may lie (the grader's bound)."""


def _time_fields(record: FeedRecord) -> list[tuple[str, datetime]]:
    return [
        (name, value)
        for name in type(record).model_fields
        if isinstance(value := getattr(record, name), datetime)
    ]


def _within_course(record: FeedRecord, patient: Patient) -> None:
    """A time years away from the infusion is an entry error, never graded.

    Raises:
        RecordRefused: naming the field.
    """
    for name, value in _time_fields(record):
        if abs(value - patient.infusion_at) > MAX_FROM_INFUSION:
            raise RecordRefused(
                f"{name}: more than {MAX_T_HOURS:g} h from the patient's infusion"
            )


def _store(
    session: Session, record: FeedRecord, actor: Actor, now: datetime, channel: str
) -> Outcome:
    digest = content_hash(record.model_dump(mode="json"))
    if isinstance(record, PatientIn):
        patient, created = _enrol(session, record)
        if created:
            record_event(
                session,
                chain=patient_chain(patient.id),
                actor=actor,
                action="enrol",
                entity="patient",
                entity_id=patient.id,
                patient_id=patient.id,
                now=now,
                details={"content_hash": digest, "channel": channel},
            )
        return Outcome("stored" if created else "duplicate", patient.id)
    patient = patient_by_pseudonym(session, record.patient)
    _within_course(record, patient)
    units = session_units(session)
    if (
        isinstance(record, TransferIn)
        and units is not None
        and record.care_unit not in units
    ):
        # A unit-bound key may not hand its patient to a unit it cannot see
        # (ADT feeds that move patients between units use '*' keys).
        raise RecordRefused("care_unit: not a unit this key may write for")
    stored = store_records(
        session, patient, record.source_system, record.rows(), digest
    )
    if stored.duplicate:
        return Outcome("duplicate", patient.id, stored.record_ids)
    record_event(
        session,
        chain=patient_chain(patient.id),
        actor=actor,
        action=_action(record),
        entity="clinical_record",
        entity_id=stored.record_ids[0],
        patient_id=patient.id,
        now=now,
        reason=_reason(record),
        details={
            "kind": record.kind,
            "record_ids": list(stored.record_ids),
            "content_hash": digest,
            "channel": channel,
        },
    )
    return Outcome("stored", patient.id, stored.record_ids)


def _refuse(
    sessions: sessionmaker[Session],
    refused: Refused,
    text: str,
    channel: str,
    line_no: int | None,
    actor: Actor,
    now: datetime,
) -> Outcome:
    with sessions.begin() as session:
        row = quarantine(
            session,
            channel=channel,
            error=refused.error,
            payload=text,
            source_system=refused.source_system,
            source_record_id=refused.source_record_id,
            line_no=line_no,
        )
        record_event(
            session,
            chain=QUARANTINE,
            actor=actor,
            action="refuse",
            entity="quarantine",
            entity_id=row.id,
            now=now,
            reason=refused.error,
            details={"channel": channel},
        )
    return Outcome("refused", error=refused.error)
