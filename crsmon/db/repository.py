"""Reading and writing clinical records: idempotent, append-only, nothing lost.

- The same record again (same sender, same id, same content) stores nothing new
  and returns the original rows; the same key with other content is a conflict.
- A correction is a new row that names the row it supersedes; an
  entered-in-error retraction marks its target retracted (a status, never a
  change to the clinical value). The current view skips both.
- A refused record is kept in quarantine with its reason.
- New clinical rows are committed as ``pending`` in the same transaction: the
  row is the outbox the workers and the sweeper read.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from crsmon.db.models import ClinicalRecord, Patient, QuarantinedRecord, UnitStay
from crsmon.domain.records import (
    AttributionRecord,
    BolusRecord,
    DeathRecord,
    Finding,
    InfusionRecord,
    Measurement,
    OxygenRecord,
    PatientTimeline,
    Quantity,
    TreatmentRecord,
)
from crsmon.domain.vocab import (
    OxygenDevice,
    TreatmentDrug,
    VasoactiveDrug,
    VasopressorDoseUnit,
)
from crsmon.intake.rows import PatientRow, RecordRow

MAX_QUARANTINED_PAYLOAD = 64 * 1024


class ConflictError(ValueError):
    """The same record key was sent before with different content."""


class UnknownPatientError(LookupError):
    """A clinical record names a patient that is not enrolled."""


@dataclass(frozen=True, slots=True)
class Stored:
    """The rows a record maps to, and whether they were new."""

    record_ids: tuple[int, ...]
    duplicate: bool


def content_hash(content: dict[str, Any]) -> str:
    """SHA-256 of a record's canonical JSON (what decides "same content")."""
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def enroll(session: Session, row: PatientRow) -> tuple[Patient, bool]:
    """Enrol a patient (idempotent by pseudonym); True when newly created.

    Raises:
        ConflictError: the pseudonym is enrolled with different details.
    """
    fields = {k: v for k, v in asdict(row).items() if k != "care_unit"}
    existing = session.scalars(
        select(Patient).where(Patient.pseudonym == row.pseudonym)
    ).one_or_none()
    if existing is not None:
        if any(getattr(existing, k) != v for k, v in fields.items()):
            raise ConflictError("patient: already enrolled with different details")
        return existing, False
    patient = Patient(**fields)
    session.add(patient)
    session.flush()
    session.add(
        UnitStay(
            patient_id=patient.id, care_unit=row.care_unit, from_at=row.infusion_at
        )
    )
    return patient, True


def patient_by_pseudonym(session: Session, pseudonym: str) -> Patient:
    """The enrolled patient with ``pseudonym``.

    Raises:
        UnknownPatientError: no such patient.
    """
    patient = session.scalars(
        select(Patient).where(Patient.pseudonym == pseudonym)
    ).one_or_none()
    if patient is None:
        raise UnknownPatientError("patient: not enrolled")
    return patient


def _by_key(session: Session, system: str, key: str) -> ClinicalRecord | None:
    return session.scalars(
        select(ClinicalRecord).where(
            ClinicalRecord.source_system == system,
            ClinicalRecord.source_record_id == key,
        )
    ).one_or_none()


def store_records(
    session: Session,
    patient: Patient,
    source_system: str,
    rows: list[RecordRow],
    digest: str,
) -> Stored:
    """Store a record's rows as pending, once.

    Raises:
        ConflictError: a key was stored before with a different content hash.
    """
    found = [_by_key(session, source_system, row.key) for row in rows]
    if any(f is not None for f in found):
        if any(f is None or f.content_hash != digest for f in found):
            raise ConflictError(
                "source_record_id: already received with different content"
            )
        return Stored(tuple(f.id for f in found if f is not None), duplicate=True)
    ids = []
    for row in rows:
        record = _new_record(session, patient, source_system, row, digest)
        session.add(record)
        session.flush()
        ids.append(record.id)
        _apply_retraction(session, source_system, row)
    return Stored(tuple(ids), duplicate=False)


def _new_record(
    session: Session, patient: Patient, system: str, row: RecordRow, digest: str
) -> ClinicalRecord:
    supersedes = None
    if row.supersedes is not None:
        # A corrected vitals set replaces the values it carries, one row each.
        old_key = row.supersedes
        if row.key_suffix is not None:
            old_key = f"{old_key}#{row.key_suffix}"
        target = _by_key(session, system, old_key)
        supersedes = None if target is None else target.id
    return ClinicalRecord(
        patient_id=patient.id,
        kind=row.kind,
        source_system=system,
        source_record_id=row.key,
        content_hash=digest,
        occurred_at=row.occurred_at,
        quantity=row.quantity,
        value=row.value,
        unit=row.unit,
        loinc=row.loinc,
        details={**row.details, "correction_reason": row.correction_reason}
        if row.correction_reason
        else row.details,
        quality_flags=row.quality_flags,
        supersedes_id=supersedes,
    )


def _apply_retraction(session: Session, system: str, row: RecordRow) -> None:
    if row.kind != "retraction":
        return
    target = row.details["target_record_id"]
    # A vitals set is stored as one row per value (``<id>#<quantity>``).
    same_record = or_(
        ClinicalRecord.source_record_id == target,
        ClinicalRecord.source_record_id.startswith(f"{target}#", autoescape=True),
    )
    session.execute(
        update(ClinicalRecord)
        .where(
            ClinicalRecord.source_system == system,
            same_record,
            ClinicalRecord.retracted_at.is_(None),
        )
        .values(retracted_at=row.occurred_at, retraction_reason=row.details["reason"])
    )


def quarantine(
    session: Session,
    *,
    channel: str,
    error: str,
    payload: str,
    source_system: str | None = None,
    source_record_id: str | None = None,
    line_no: int | None = None,
) -> None:
    """Keep a refused record, with its reason, for review."""
    session.add(
        QuarantinedRecord(
            channel=channel,
            error=error,
            payload=payload[:MAX_QUARANTINED_PAYLOAD],
            source_system=source_system,
            source_record_id=source_record_id,
            line_no=line_no,
        )
    )


def current_records(session: Session, patient_id: int) -> list[ClinicalRecord]:
    """A patient's records as they stand: not retracted, not superseded."""
    rows = session.scalars(
        select(ClinicalRecord)
        .where(
            ClinicalRecord.patient_id == patient_id,
            ClinicalRecord.retracted_at.is_(None),
        )
        .order_by(ClinicalRecord.occurred_at, ClinicalRecord.id)
    ).all()
    superseded = {r.supersedes_id for r in rows if r.supersedes_id is not None}
    return [r for r in rows if r.id not in superseded]


def load_timeline(session: Session, patient: Patient) -> PatientTimeline:
    """The patient's current records as the pure core's timeline."""
    return timeline_from(patient, current_records(session, patient.id))


def timeline_from(patient: Patient, rows: list[ClinicalRecord]) -> PatientTimeline:
    """Map stored rows onto domain records (the inverse of the intake's rows)."""
    kinds: dict[str, list[ClinicalRecord]] = {}
    for row in rows:
        kinds.setdefault(row.kind, []).append(row)
    stops = {
        (r.source_system, r.details["start_record_id"]): r.occurred_at
        for r in kinds.get("vasopressor_stop", [])
    }
    deaths = [r for r in kinds.get("outcome", []) if r.details.get("event") == "death"]
    return PatientTimeline(
        infusion_at=patient.infusion_at,
        birth_date=patient.birth_date,
        age_years_at_infusion=patient.age_years_at_infusion,
        weight_kg=patient.weight_kg,
        measurements=tuple(_measurement(r) for r in kinds.get("measurement", [])),
        oxygen=tuple(_oxygen(r) for r in kinds.get("oxygen", [])),
        infusions=tuple(
            _infusion(r, stops.get((r.source_system, r.source_record_id)))
            for r in kinds.get("vasopressor_start", [])
        ),
        boluses=tuple(
            BolusRecord(
                _rid(r),
                r.occurred_at,
                bool(r.details["for_hypotension"]),
                r.details.get("volume_ml"),
            )
            for r in kinds.get("fluid_bolus", [])
        ),
        treatments=tuple(
            TreatmentRecord(_rid(r), r.occurred_at, TreatmentDrug(r.details["drug"]))
            for r in kinds.get("treatment", [])
        ),
        attributions=tuple(_attribution(r) for r in kinds.get("attribution", [])),
        death=(
            None
            if not deaths
            else DeathRecord(
                _rid(deaths[-1]),
                deaths[-1].occurred_at,
                deaths[-1].details.get("death_attributable_to_crs"),
            )
        ),
    )


def _rid(row: ClinicalRecord) -> str:
    return str(row.id)


def _measurement(row: ClinicalRecord) -> Measurement:
    if row.quantity is None or row.value is None:
        raise ValueError(f"measurement row {row.id} has no quantity or value")
    return Measurement(_rid(row), row.occurred_at, Quantity(row.quantity), row.value)


def _oxygen(row: ClinicalRecord) -> OxygenRecord:
    d = row.details
    return OxygenRecord(
        _rid(row),
        row.occurred_at,
        OxygenDevice(d["device"]),
        d.get("flow_l_min"),
        d.get("fio2"),
        bool(d.get("for_comfort_only", False)),
    )


def _infusion(row: ClinicalRecord, stopped_at: datetime | None) -> InfusionRecord:
    d = row.details
    return InfusionRecord(
        _rid(row),
        VasoactiveDrug(d["drug"]),
        float(d["dose"]),
        VasopressorDoseUnit(d["unit"]),
        row.occurred_at,
        stopped_at,
    )


def _attribution(row: ClinicalRecord) -> AttributionRecord:
    end = row.details.get("end_at")
    return AttributionRecord(
        _rid(row),
        Finding(row.details["finding"]),
        row.occurred_at,
        None if end is None else datetime.fromisoformat(end),
    )
