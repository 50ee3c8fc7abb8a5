"""Reading and writing clinical records: idempotent, append-only, nothing lost.

- The same record again (same sender, same id, same content) stores nothing new
  and returns the original rows; the same key with other content is a conflict.
- A correction is a new row that names the row it supersedes; an
  entered-in-error retraction marks its target retracted (a status, never a
  change to the clinical value). The current view skips both.
- A refused record is kept in quarantine with its reason.
- New clinical rows are committed as ``pending`` in the same transaction: the
  row is the outbox the workers and the sweeper read.
- The unit stays are a projection, never edited by hand: whenever a transfer or
  discharge, or a correction or retraction of one, is stored, they are rebuilt
  from the enrolment unit and the patient's current transfers and discharges
  (:func:`rebuild_unit_stays`), so the order records arrive in does not matter.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, or_, select, update
from sqlalchemy.orm import Session, aliased
from sqlalchemy.sql.elements import ColumnElement

from crsmon.db.models import ClinicalRecord, Patient, QuarantinedRecord, UnitStay
from crsmon.db.scope import UNSCOPED
from crsmon.domain.records import (
    AttributionRecord,
    BolusRecord,
    DeathRecord,
    Finding,
    InfusionRecord,
    Measurement,
    OutcomeRecord,
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
    patient = Patient(**fields, scope_unit=row.care_unit)
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
    # Unscoped: a sender's keys are unique across every unit, so a key already
    # used for another unit's patient must be a conflict (409), never an
    # insert that breaks the unique constraint, nor a silent miss.
    return session.scalars(
        select(ClinicalRecord)
        .where(
            ClinicalRecord.source_system == system,
            ClinicalRecord.source_record_id == key,
        )
        .execution_options(**{UNSCOPED: True})
    ).one_or_none()


def store_records(
    session: Session,
    patient: Patient,
    source_system: str,
    rows: list[RecordRow],
    digest: str,
) -> Stored:
    """Store a record's rows as pending, once.

    A transfer or discharge, or a correction or retraction of one, rebuilds the
    unit stays of the patient it belongs to, in the same transaction.

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
    for row in rows:
        _refuse_other_patients_records(session, patient, source_system, row)
    if any(_may_move(row) for row in rows):
        # Before the insert, so the patient's lock is never upgraded from the
        # foreign key's weaker one (concurrent stays rebuild one at a time).
        _lock(session, patient.id)
    ids = []
    moved: set[int] = set()
    for row in rows:
        record = _new_record(session, patient, source_system, row, digest)
        session.add(record)
        session.flush()
        ids.append(record.id)
        if _moves(session, record):
            moved.add(record.patient_id)
        moved |= _apply_retraction(session, source_system, row)
    if moved:  # only ever this patient: see _refuse_other_patients_records
        rebuild_unit_stays(session, patient)
    return Stored(tuple(ids), duplicate=False)


def existing_keys(
    session: Session, keys: list[tuple[str, str]]
) -> dict[tuple[str, str], tuple[int, str]]:
    """Which of ``(source_system, source_record_id)`` are stored: their row id
    and content hash. Unscoped, like :func:`_by_key` (keys are unique across
    every unit).

    One statement per source system (and :data:`MAX_BOUND` ids),
    ``source_system = s AND source_record_id IN (...)``: PostgreSQL plans that
    as one scan of the unique index in a fraction of a millisecond, where a
    row-value ``(system, id) IN (...)`` of 500 pairs took it 50-60 ms to plan
    (an OR of 500 index scans), on every intake batch.
    """
    found: dict[tuple[str, str], tuple[int, str]] = {}
    by_system: dict[str, list[str]] = {}
    for system, key in sorted(set(keys)):
        by_system.setdefault(system, []).append(key)
    for system, ids in by_system.items():
        for start in range(0, len(ids), MAX_BOUND):
            for key, row_id, digest in session.execute(
                select(
                    ClinicalRecord.source_record_id,
                    ClinicalRecord.id,
                    ClinicalRecord.content_hash,
                )
                .where(
                    ClinicalRecord.source_system == system,
                    ClinicalRecord.source_record_id.in_(ids[start : start + MAX_BOUND]),
                )
                .execution_options(**{UNSCOPED: True})
            ):
                found[(system, key)] = (row_id, digest)
    return found


def insert_records(
    session: Session, rows: list[tuple[Patient, str, RecordRow, str]]
) -> list[int]:
    """Insert plain rows (no correction, retraction or move) as pending, in one
    statement batch; their ids, in order. The caller checked their keys."""
    if not rows:
        return []
    params = [
        {
            "patient_id": patient.id,
            "kind": row.kind,
            "source_system": system,
            "source_record_id": row.key,
            "content_hash": digest,
            "occurred_at": row.occurred_at,
            "quantity": row.quantity,
            "value": row.value,
            "unit": row.unit,
            "loinc": row.loinc,
            "details": row.details,
            "quality_flags": row.quality_flags,
            "supersedes_id": None,
        }
        for patient, system, row, digest in rows
    ]
    if session.get_bind().dialect.name == "postgresql":
        # Ids from the sequence first, then a plain executemany (psycopg's
        # pipeline): a multi-row INSERT ... RETURNING is parsed anew by the
        # driver for every batch, which cost more than the insert itself.
        ids = list(
            session.scalars(
                select(
                    func.nextval(func.pg_get_serial_sequence("clinical_records", "id"))
                ).select_from(func.generate_series(1, len(params)))
            )
        )
        for row_id, param in zip(ids, params, strict=True):
            param["id"] = row_id
        session.execute(insert(ClinicalRecord), params)
        return ids
    result = session.execute(
        insert(ClinicalRecord).returning(
            ClinicalRecord.id, sort_by_parameter_order=True
        ),
        params,
    )
    return [row_id for (row_id,) in result]


def same_record(target: str) -> ColumnElement[bool]:
    """The stored rows of one sent record (a vitals set: ``<id>#<quantity>``)."""
    return or_(
        ClinicalRecord.source_record_id == target,
        ClinicalRecord.source_record_id.startswith(f"{target}#", autoescape=True),
    )


def _refuse_other_patients_records(
    session: Session, patient: Patient, system: str, row: RecordRow
) -> None:
    """A correction or retraction may only touch records of the patient it names.

    Raises:
        ConflictError: its target was stored for another patient (a mix-up that
            would otherwise silently change someone else's record).
    """
    checks = []
    if row.kind == "retraction":
        checks.append(("target_record_id", row.details["target_record_id"]))
    if row.supersedes is not None:
        checks.append(("supersedes", row.supersedes))
    for field, target in checks:
        owners = session.scalars(
            select(ClinicalRecord.patient_id)
            .where(ClinicalRecord.source_system == system, same_record(target))
            .execution_options(**{UNSCOPED: True})  # other units' records too
        ).all()
        if any(owner != patient.id for owner in owners):
            raise ConflictError(f"{field}: names a record of another patient")


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


def _apply_retraction(session: Session, system: str, row: RecordRow) -> set[int]:
    """Mark the target retracted; the patients whose unit stays it moves."""
    if row.kind != "retraction":
        return set()
    targeted = same_record(row.details["target_record_id"])
    where = (
        ClinicalRecord.source_system == system,
        targeted,
        ClinicalRecord.retracted_at.is_(None),
    )
    targets = session.scalars(select(ClinicalRecord).where(*where)).all()
    session.execute(
        update(ClinicalRecord)
        .where(*where)
        .values(retracted_at=row.occurred_at, retraction_reason=row.details["reason"])
    )
    return {t.patient_id for t in targets if _moves(session, t)}


STAY_KINDS = frozenset({"transfer", "discharge"})
"""The record kinds the unit stays are built from."""


def _may_move(row: RecordRow) -> bool:
    """Whether storing ``row`` may change unit stays (decided before storing it)."""
    return row.kind in STAY_KINDS | {"retraction"} or row.supersedes is not None


def _moves(session: Session, record: ClinicalRecord) -> bool:
    """Whether ``record`` (or the record it corrects) is a transfer or discharge."""
    if record.kind in STAY_KINDS:
        return True
    if record.supersedes_id is None:
        return False
    return session.get_one(ClinicalRecord, record.supersedes_id).kind in STAY_KINDS


def _lock(session: Session, patient_id: int) -> None:
    """The patient's row lock (PostgreSQL; SQLite's writer lock is already held)."""
    session.execute(
        select(Patient.id)
        .where(Patient.id == patient_id)
        .with_for_update(key_share=True)
    )


@dataclass(frozen=True, slots=True)
class PlannedStay:
    """One unit stay as the records give it (``to_at`` None: still open)."""

    care_unit: str
    from_at: datetime
    to_at: datetime | None


def _stay_events(session: Session, patient_id: int) -> list[ClinicalRecord]:
    """The patient's current transfers and discharges (as ``current_records``)."""
    newer = aliased(ClinicalRecord)
    superseded = (
        select(newer.id)
        .where(
            newer.patient_id == patient_id,
            newer.supersedes_id == ClinicalRecord.id,
            newer.retracted_at.is_(None),
        )
        .exists()
    )
    return list(
        session.scalars(
            select(ClinicalRecord).where(
                ClinicalRecord.patient_id == patient_id,
                ClinicalRecord.kind.in_(sorted(STAY_KINDS)),
                ClinicalRecord.retracted_at.is_(None),
                ~superseded,
            )
        )
    )


def plan_unit_stays(
    care_unit: str, infusion_at: datetime, events: Iterable[ClinicalRecord]
) -> tuple[list[PlannedStay], int]:
    """The stays the enrolment and ``events`` give, and which one holds the enrolment.

    Everything is taken in time order: the enrolment puts the patient in
    ``care_unit`` at ``infusion_at`` as a transfer would; a transfer closes the
    open stay and opens one in its unit (the same unit changes nothing; with no
    open stay it is a readmission); a discharge closes the open stay (with none
    open, it changes nothing). At the same time the enrolment comes first, then
    transfers, then discharges, each by sender and id, so the result never
    depends on the order the records arrived in.
    """
    moves: list[tuple[datetime, int, str, str, str | None]] = [
        (infusion_at, 0, "", "", care_unit)
    ]
    moves += [
        (
            r.occurred_at,
            1 if r.kind == "transfer" else 2,
            r.source_system,
            r.source_record_id,
            r.details.get("care_unit"),
        )
        for r in events
    ]
    stays: list[PlannedStay] = []
    enrolment = 0
    for at, rank, _, _, unit in sorted(moves, key=lambda move: move[:4]):
        current = stays[-1] if stays and stays[-1].to_at is None else None
        if current is not None and current.care_unit != unit:
            stays[-1] = replace(current, to_at=at)  # moved on, or discharged
        if unit is not None and (current is None or current.care_unit != unit):
            stays.append(PlannedStay(unit, at, None))
        if rank == 0:
            enrolment = len(stays) - 1
    return stays, enrolment


def rebuild_unit_stays(session: Session, patient: Patient) -> list[UnitStay]:
    """Rebuild the patient's unit stays from the enrolment and current records.

    The enrolment's stay (the patient's first ``UnitStay`` row, which keeps the
    enrolment unit) is updated in place; the other rows are replaced. Nothing is
    written when the stays are already right. Returns the stays in time order.

    Raises:
        LookupError: the patient has no enrolment stay.
    """
    _lock(session, patient.id)
    rows = list(
        session.scalars(
            select(UnitStay)
            .where(UnitStay.patient_id == patient.id)
            .order_by(UnitStay.id)
        )
    )
    if not rows:
        raise LookupError("unit_stays: the patient has no enrolment stay")
    enrolled, *others = rows
    plan, at = plan_unit_stays(
        enrolled.care_unit,
        patient.infusion_at,
        _stay_events(session, patient.id),
    )
    held = [_planned(r) for r in [enrolled, *others]]
    if held == [plan[at], *(s for i, s in enumerate(plan) if i != at)]:
        _set_scope(patient, ordered_stays(rows))
        return ordered_stays(rows)
    enrolled.from_at, enrolled.to_at = plan[at].from_at, plan[at].to_at
    for row in others:
        session.delete(row)
    stays = [
        enrolled
        if i == at
        else UnitStay(
            patient_id=patient.id,
            care_unit=s.care_unit,
            from_at=s.from_at,
            to_at=s.to_at,
        )
        for i, s in enumerate(plan)
    ]
    session.add_all(stays)
    session.flush()
    _set_scope(patient, ordered_stays(stays))
    return stays


def _set_scope(patient: Patient, stays: Sequence[UnitStay]) -> None:
    """The unit that owns the patient for access control: its latest stay's."""
    unit = stays[-1].care_unit if stays else None
    if patient.scope_unit != unit:
        patient.scope_unit = unit


def _planned(row: UnitStay) -> PlannedStay:
    return PlannedStay(row.care_unit, row.from_at, row.to_at)


def ordered_stays(stays: Iterable[UnitStay]) -> list[UnitStay]:
    """Stays in time order (a stay that ends as it begins comes before the next)."""
    return sorted(
        stays,
        key=lambda s: (s.from_at, s.to_at is None, s.to_at or s.from_at, s.id),
    )


def unit_stays(
    session: Session, patient_ids: Sequence[int]
) -> dict[int, list[UnitStay]]:
    """Each patient's unit stays, in time order."""
    found: dict[int, list[UnitStay]] = {pid: [] for pid in patient_ids}
    rows = session.scalars(select(UnitStay).where(UnitStay.patient_id.in_(patient_ids)))
    for row in rows:
        found[row.patient_id].append(row)
    return {pid: ordered_stays(stays) for pid, stays in found.items()}


@dataclass(frozen=True, slots=True)
class UnitStatus:
    """Where the patient is now: a unit, or discharged (and when)."""

    care_unit: str | None
    discharged_at: datetime | None


def current_unit(stays: Sequence[UnitStay]) -> UnitStatus:
    """The open stay's unit, or the discharge time when the last stay is closed.

    Only a discharge closes a stay without opening the next, so a closed last
    stay means the patient was discharged and not readmitted.
    """
    if not stays:
        return UnitStatus(None, None)
    last = stays[-1]
    if last.to_at is None:
        return UnitStatus(last.care_unit, None)
    return UnitStatus(None, last.to_at)


def quarantine(
    session: Session,
    *,
    channel: str,
    error: str,
    payload: str,
    source_system: str | None = None,
    source_record_id: str | None = None,
    line_no: int | None = None,
) -> QuarantinedRecord:
    """Keep a refused record, with its reason, for review."""
    row = QuarantinedRecord(
        channel=channel,
        error=error,
        # PostgreSQL text cannot hold NUL: kept visibly escaped, as \x00.
        payload=payload[:MAX_QUARANTINED_PAYLOAD].replace("\x00", "\\x00"),
        source_system=source_system,
        source_record_id=source_record_id,
        line_no=line_no,
    )
    session.add(row)
    session.flush()
    return row


MAX_BOUND = 5000
"""Values bound in one IN (...) list: SQLite's default limit is 32,766 bound
parameters per statement; longer lists are sent in chunks of this size."""


@dataclass(frozen=True, slots=True)
class StoredRecord:
    """A stored record's columns as grading reads them: a plain value, not an
    ORM object (loading hundreds of those per grading run cost more than the
    grading itself)."""

    id: int
    kind: str
    source_system: str
    source_record_id: str
    occurred_at: datetime
    quantity: str | None
    value: float | None
    unit: str | None
    details: dict[str, Any]
    quality_flags: list[Any]
    supersedes_id: int | None


Row = ClinicalRecord | StoredRecord
"""What :func:`timeline_from` reads: an ORM record or its plain columns."""

STORED_COLUMNS = tuple(getattr(ClinicalRecord, f) for f in StoredRecord.__slots__)


def current_stored(
    session: Session, patient_ids: Sequence[int]
) -> dict[int, list[StoredRecord]]:
    """:func:`current_records` of several patients as plain values, in one
    statement (grading's read): each patient's list in time order."""
    found: dict[int, list[StoredRecord]] = {pid: [] for pid in patient_ids}
    superseded: set[int] = set()
    for start in range(0, len(patient_ids), MAX_BOUND):
        for pid, *columns in session.execute(
            select(ClinicalRecord.patient_id, *STORED_COLUMNS)
            .where(
                ClinicalRecord.patient_id.in_(patient_ids[start : start + MAX_BOUND]),
                ClinicalRecord.retracted_at.is_(None),
            )
            .order_by(ClinicalRecord.occurred_at, ClinicalRecord.id)
        ):
            record = StoredRecord(*columns)
            found[pid].append(record)
            if record.supersedes_id is not None:
                superseded.add(record.supersedes_id)
    if not superseded:
        return found
    return {
        pid: [r for r in rows if r.id not in superseded] for pid, rows in found.items()
    }


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


def timeline_from(patient: Patient, rows: Sequence[Row]) -> PatientTimeline:
    """Map stored rows onto domain records (the inverse of the intake's rows)."""
    kinds: dict[str, list[Row]] = {}
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
        outcomes=tuple(
            OutcomeRecord(
                _rid(r),
                r.occurred_at,
                str(r.details["event"]),
                r.details.get("death_attributable_to_crs"),
                r.details.get("mrd_negative"),
            )
            for r in kinds.get("outcome", [])
        ),
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


def _rid(row: Row) -> str:
    return str(row.id)


def _measurement(row: Row) -> Measurement:
    if row.quantity is None or row.value is None:
        raise ValueError(f"measurement row {row.id} has no quantity or value")
    return Measurement(_rid(row), row.occurred_at, Quantity(row.quantity), row.value)


def _oxygen(row: Row) -> OxygenRecord:
    d = row.details
    return OxygenRecord(
        _rid(row),
        row.occurred_at,
        OxygenDevice(d["device"]),
        d.get("flow_l_min"),
        d.get("fio2"),
        bool(d.get("for_comfort_only", False)),
    )


def _infusion(row: Row, stopped_at: datetime | None) -> InfusionRecord:
    d = row.details
    return InfusionRecord(
        _rid(row),
        VasoactiveDrug(d["drug"]),
        None if d.get("dose") is None else float(d["dose"]),
        None if d.get("unit") is None else VasopressorDoseUnit(d["unit"]),
        row.occurred_at,
        stopped_at,
    )


def _attribution(row: Row) -> AttributionRecord:
    end = row.details.get("end_at")
    return AttributionRecord(
        _rid(row),
        Finding(row.details["finding"]),
        row.occurred_at,
        None if end is None else datetime.fromisoformat(end),
    )
