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

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from crsmon.db.audit import (
    QUARANTINE,
    SYSTEM,
    Actor,
    EventSpec,
    patient_chain,
    record_event,
    record_events,
)
from crsmon.db.models import Patient
from crsmon.db.repository import (
    ConflictError,
    UnknownPatientError,
    content_hash,
    enroll,
    existing_keys,
    insert_records,
    patient_by_pseudonym,
    quarantine,
    store_records,
)
from crsmon.db.scope import UNSCOPED, session_units
from crsmon.intake.parse import Refused, parse_record
from crsmon.intake.rows import RecordRow
from crsmon.intake.schemas import (
    DischargeIn,
    FeedRecord,
    PatientIn,
    RetractionIn,
    TransferIn,
)
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
    return _store_one(sessions, parsed, text, channel, line_no, actor, now)


def ingest_many(
    sessions: sessionmaker[Session],
    lines: Sequence[tuple[int | None, str]],
    *,
    now: datetime,
    channel: str,
    actor: Actor = SYSTEM,
) -> list[Outcome]:
    """Many records, each taken exactly as :func:`ingest_text` would take it.

    ``lines``: ``(line_no, text)`` in order. Runs of consecutive *plain*
    records (a measurement, oxygen, a drug, a lab, an outcome: anything but an
    enrolment, a correction, a retraction, a transfer or a discharge) are
    stored together in one transaction with one audit event per patient, so a
    batch costs a few statements instead of a few per record. The other
    records, and any record of a run that cannot be stored there (a patient
    not enrolled, a key used before with other content, a time far from the
    infusion), are taken one at a time, in order, with their own refusals.
    """
    outcomes: list[Outcome | None] = [None] * len(lines)
    run: list[tuple[int, FeedRecord]] = []

    def flush() -> None:
        for i, outcome in _store_run(sessions, run, actor, now, channel, lines):
            outcomes[i] = outcome
        run.clear()

    for i, (line_no, text) in enumerate(lines):
        parsed = parse_record(text, now)
        if isinstance(parsed, Refused):
            outcomes[i] = _refuse(sessions, parsed, text, channel, line_no, actor, now)
        elif _plain(parsed):
            run.append((i, parsed))
        else:
            flush()
            outcomes[i] = _store_one(
                sessions, parsed, text, channel, line_no, actor, now
            )
    flush()
    return [o for o in outcomes if o is not None]


def _plain(record: FeedRecord) -> bool:
    """Stored alone, touching nothing else: the grouped path takes it."""
    return (
        not isinstance(record, PatientIn | RetractionIn | TransferIn | DischargeIn)
        and getattr(record, "supersedes", None) is None
    )


def _store_one(
    sessions: sessionmaker[Session],
    parsed: FeedRecord,
    text: str,
    channel: str,
    line_no: int | None,
    actor: Actor,
    now: datetime,
) -> Outcome:
    try:
        with sessions.begin() as session:
            return _store(session, parsed, actor, now, channel)
    except (ConflictError, UnknownPatientError, RecordRefused) as exc:
        refused = Refused(str(exc), parsed.source_system, parsed.source_record_id)
        status = "conflict" if isinstance(exc, ConflictError) else "refused"
        outcome = _refuse(sessions, refused, text, channel, line_no, actor, now)
        return Outcome(status, error=outcome.error)


def _store_run(
    sessions: sessionmaker[Session],
    run: list[tuple[int, FeedRecord]],
    actor: Actor,
    now: datetime,
    channel: str,
    lines: Sequence[tuple[int | None, str]],
) -> list[tuple[int, Outcome]]:
    """Store a run of plain records in one transaction; the records it could
    not take go one at a time afterwards (their refusal, or their store)."""
    if not run:
        return []
    done: list[tuple[int, Outcome]] = []
    alone: list[tuple[int, FeedRecord]] = []
    with sessions.begin() as session:
        pseudonyms = sorted({getattr(r, "patient", "") for _, r in run})
        patients = {
            p.pseudonym: p
            for p in session.scalars(
                select(Patient).where(Patient.pseudonym.in_(pseudonyms))
            )
        }
        Planned = tuple[int, FeedRecord, Patient, list[RecordRow], str]
        planned: list[Planned] = []
        for i, record in run:
            patient = patients.get(getattr(record, "patient", ""))
            if (
                isinstance(record, PatientIn)  # never plain: for mypy
                or patient is None
                or not _in_course(record, patient)
            ):
                alone.append((i, record))  # refused there, with its reason
                continue
            digest = content_hash(record.model_dump(mode="json"))
            planned.append((i, record, patient, record.rows(), digest))
        found = existing_keys(
            session,
            [
                (r.source_system, row.key)
                for _, r, _, rows, _ in planned
                for row in rows
            ],
        )
        new: list[tuple[int, FeedRecord, Patient, list[RecordRow], str]] = []
        claimed: set[tuple[str, str]] = set()
        for entry in planned:
            i, record, patient, rows, digest = entry
            keys = [(record.source_system, row.key) for row in rows]
            if any(k in found or k in claimed for k in keys):
                same = [found.get(k) for k in keys]
                if all(f is not None and f[1] == digest for f in same):
                    known = tuple(f[0] for f in same if f is not None)
                    done.append((i, Outcome("duplicate", patient.id, known)))
                else:
                    alone.append((i, record))  # a conflict, or a repeat in this run
                continue
            claimed.update(keys)
            new.append(entry)
        ids = insert_records(
            session,
            [
                (patient, record.source_system, row, digest)
                for _, record, patient, rows, digest in new
                for row in rows
            ],
        )
        events: dict[int, dict[str, Any]] = {}
        at = 0
        for i, record, patient, rows, digest in new:
            record_ids: list[int] = ids[at : at + len(rows)]
            at += len(rows)
            done.append((i, Outcome("stored", patient.id, tuple(record_ids))))
            event = events.setdefault(
                patient.id,
                {"kind": "batch", "record_ids": [], "records": [], "channel": channel},
            )
            event["record_ids"] += record_ids
            event["records"].append(
                {"kind": record.kind, "record_ids": record_ids, "content_hash": digest}
            )
        record_events(
            session,
            [
                EventSpec(
                    chain=patient_chain(pid),
                    action="create",
                    entity="clinical_record",
                    entity_id=details["record_ids"][0],
                    patient_id=pid,
                    details=details,
                )
                for pid, details in sorted(events.items())
            ],
            actor=actor,
            now=now,
        )
    for i, record in alone:
        line_no, text = lines[i]
        done.append(
            (i, _store_one(sessions, record, text, channel, line_no, actor, now))
        )
    return done


def _in_course(record: FeedRecord, patient: Patient) -> bool:
    try:
        _within_course(record, patient)
    except RecordRefused:
        return False
    return True


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
