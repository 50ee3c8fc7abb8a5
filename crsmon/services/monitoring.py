"""Which patients have gone quiet: the stale-monitoring check a sweep runs.

A stale-monitoring gap between two measurements is found when the later one is
graded. A gap still open (nothing has arrived since) has no record to trigger a
grading run, so a periodic sweep (the Celery beat sweeper, or ``crsmon sweep``
on the embedded default) asks this module which patients have an open gap
without its alert yet, and grades them as of now; the pure core decides the
gap and its dedup key (:func:`crsmon.domain.alerts.stale_gaps`), exactly as a
grading run does, so the sweep never raises an alert grading would not.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from crsmon.db.models import Alert, ClinicalRecord, Patient, UnitStay
from crsmon.db.repository import current_records, timeline_from
from crsmon.domain.alerts import AlertKind, stale_gaps
from crsmon.domain.records import BLOOD_PRESSURE, Quantity
from crsmon.risk.scoring import RiskScorer, load_scorer
from crsmon.settings import Settings

_HOUR = timedelta(hours=1)
VITAL_QUANTITIES = tuple(str(q) for q in (Quantity.TEMPERATURE_C, *BLOOD_PRESSURE))
"""Measurements that end a stale-monitoring gap: temperature and blood pressure."""


@dataclass(frozen=True, slots=True)
class AlertPolicy:
    """How the service turns grades into alerts (``CRSMON_*`` settings)."""

    stale_after_h: float = 8.0
    monitoring_days: float = 14.0
    webhook_urls: tuple[str, ...] = ()
    risk: RiskScorer | None = None
    """The dynamic risk model that scores each grading (None: no model)."""

    @classmethod
    def from_settings(cls, settings: Settings) -> AlertPolicy:
        """The policy the settings configure."""
        scorer, _ = load_scorer(settings.risk_model_dir, settings.risk_threshold)
        return cls(
            stale_after_h=settings.stale_monitoring_h,
            monitoring_days=settings.monitoring_days,
            webhook_urls=tuple(settings.webhook_urls),
            risk=scorer,
        )


def monitored_spans(
    infusion_at: datetime, stays: Sequence[UnitStay], died_at: datetime | None
) -> tuple[tuple[float, float], ...] | None:
    """Hours since infusion under inpatient care: unit stays, ended by death.

    None when neither a stay nor a death is known (all time counts).
    """
    end_of_life = math.inf if died_at is None else (died_at - infusion_at) / _HOUR
    if not stays:
        return None if died_at is None else ((-math.inf, end_of_life),)
    spans = []
    for stay in sorted(stays, key=lambda s: s.from_at):
        start = (stay.from_at - infusion_at) / _HOUR
        end = math.inf if stay.to_at is None else (stay.to_at - infusion_at) / _HOUR
        end = min(end, end_of_life)
        if end > start:
            spans.append((start, end))
    return tuple(spans)


def _last_vitals(session: Session, patient_ids: list[int]) -> dict[int, datetime]:
    """A cheap first look: the latest temperature or BP time not retracted."""
    rows = session.execute(
        select(ClinicalRecord.patient_id, func.max(ClinicalRecord.occurred_at))
        .where(
            ClinicalRecord.patient_id.in_(patient_ids),
            ClinicalRecord.quantity.in_(VITAL_QUANTITIES),
            ClinicalRecord.retracted_at.is_(None),
        )
        .group_by(ClinicalRecord.patient_id)
    )
    return {row[0]: row[1] for row in rows}


def _not_settled(session: Session, patient_ids: list[int]) -> set[int]:
    """Patients with a record pending (its own run checks) or failed (needs review)."""
    return set(
        session.scalars(
            select(ClinicalRecord.patient_id)
            .where(
                ClinicalRecord.patient_id.in_(patient_ids),
                ClinicalRecord.grading_state.in_(("pending", "failed")),
            )
            .distinct()
        )
    )


def open_gap_unalerted(
    session: Session, patient: Patient, *, now: datetime, policy: AlertPolicy
) -> bool:
    """Whether the patient's current records leave a stale gap after the last
    vital sign that has no alert yet: the exact test a grading run would make.
    """
    timeline = timeline_from(patient, current_records(session, patient.id))
    infusion_at = patient.infusion_at
    vitals = [
        (m.observed_at - infusion_at) / _HOUR
        for m in timeline.measurements
        if m.quantity in VITAL_QUANTITIES
    ]
    stays = session.scalars(select(UnitStay).where(UnitStay.patient_id == patient.id))
    died_at = None if timeline.death is None else timeline.death.died_at
    gaps = stale_gaps(
        vitals,
        as_of_h=(now - infusion_at) / _HOUR,
        stale_after_h=policy.stale_after_h,
        monitoring_days=policy.monitoring_days,
        monitored_h=monitored_spans(infusion_at, list(stays), died_at),
    )
    last = max(vitals, default=-math.inf)
    due = {g.dedup_key for g in gaps if g.end_h > last}
    if not due:
        return False
    alerted = session.scalars(
        select(Alert.dedup_key).where(
            Alert.patient_id == patient.id,
            Alert.kind == AlertKind.STALE_MONITORING,
            Alert.dedup_key.in_(due),
        )
    ).all()
    return len(set(alerted)) < len(due)


def patients_gone_quiet(
    session: Session, *, now: datetime, policy: AlertPolicy, limit: int = 500
) -> list[int]:
    """Patients in their monitoring window with an open gap not yet alerted.

    Grading them as of ``now`` raises the gap's ``stale_monitoring`` alert once;
    a patient already alerted for the open gap is not returned again. Patients
    with a pending record are left to that record's grading run (it grades as
    of now too), and patients with a failed record to the person reviewing it:
    a run that is known to fail is not retried every sweep.
    """
    window = timedelta(days=policy.monitoring_days) + timedelta(
        hours=policy.stale_after_h
    )
    patients = session.scalars(
        select(Patient)
        .where(Patient.infusion_at <= now, Patient.infusion_at >= now - window)
        .order_by(Patient.infusion_at, Patient.id)
    ).all()
    ids = [p.id for p in patients]
    if not ids:
        return []
    last = _last_vitals(session, ids)
    busy = _not_settled(session, ids)
    quiet_since = now - timedelta(hours=policy.stale_after_h)
    due = []
    for patient in patients:
        latest = last.get(patient.id)
        if patient.id in busy or (latest is not None and latest >= quiet_since):
            continue  # recently measured: no gap can be open long enough
        if open_gap_unalerted(session, patient, now=now, policy=policy):
            due.append(patient.id)
            if len(due) >= limit:
                break
    return due


def patients_pending_since(
    sessions: sessionmaker[Session], *, older_than: datetime, limit: int
) -> list[int]:
    """Patients with a record still pending since before ``older_than``.

    Oldest first, at most ``limit`` patients, so one sweep stays bounded and the
    longest-waiting patients go first.
    """
    with sessions() as session:
        oldest = func.min(ClinicalRecord.recorded_at)
        return list(
            session.scalars(
                select(ClinicalRecord.patient_id)
                .where(
                    ClinicalRecord.grading_state == "pending",
                    ClinicalRecord.recorded_at < older_than,
                )
                .group_by(ClinicalRecord.patient_id)
                .order_by(oldest, ClinicalRecord.patient_id)
                .limit(limit)
            )
        )
