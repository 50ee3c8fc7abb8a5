"""Take one feed record in: validate, store once (or quarantine), mark it pending.

Thin over the intake schemas and the repository. Each record is its own
transaction, so one bad record never costs the good ones around it, and every
refused record is kept in quarantine with its reason: nothing is silently lost.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session, sessionmaker

from crsmon.db.repository import (
    ConflictError,
    UnknownPatientError,
    content_hash,
    enroll,
    patient_by_pseudonym,
    quarantine,
    store_records,
)
from crsmon.intake.parse import Refused, parse_record
from crsmon.intake.schemas import FeedRecord, PatientIn


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
) -> Outcome:
    """Validate and store one JSON record; refusals go to quarantine."""
    parsed = parse_record(text, now)
    if isinstance(parsed, Refused):
        return _refuse(sessions, parsed, text, channel, line_no)
    try:
        with sessions.begin() as session:
            return _store(session, parsed)
    except (ConflictError, UnknownPatientError) as exc:
        refused = Refused(str(exc), parsed.source_system, parsed.source_record_id)
        status = "conflict" if isinstance(exc, ConflictError) else "refused"
        outcome = _refuse(sessions, refused, text, channel, line_no)
        return Outcome(status, error=outcome.error)


def _store(session: Session, record: FeedRecord) -> Outcome:
    digest = content_hash(record.model_dump(mode="json"))
    if isinstance(record, PatientIn):
        patient, created = enroll(session, record.patient_row())
        return Outcome("stored" if created else "duplicate", patient.id)
    patient = patient_by_pseudonym(session, record.patient)
    stored = store_records(
        session, patient, record.source_system, record.rows(), digest
    )
    status = "duplicate" if stored.duplicate else "stored"
    return Outcome(status, patient.id, stored.record_ids)


def _refuse(
    sessions: sessionmaker[Session],
    refused: Refused,
    text: str,
    channel: str,
    line_no: int | None,
) -> Outcome:
    with sessions.begin() as session:
        quarantine(
            session,
            channel=channel,
            error=refused.error,
            payload=text,
            source_system=refused.source_system,
            source_record_id=refused.source_record_id,
            line_no=line_no,
        )
    return Outcome("refused", error=refused.error)
