"""What the API reads (patients, grade timelines, alerts, metrics) and the one
thing it changes besides intake: acknowledging an alert.

Plain SQLAlchemy over the tables, portable across SQLite and PostgreSQL; the
routes only parse parameters, call these and shape the reply.

"Current" grades skip superseded rows: grading writes a re-derived row beside
the old one when a retraction or correction changes a snapshot, so the current
grade at a time is the newest row (highest id) at that ``evaluated_at``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, Select, func, select, update
from sqlalchemy.orm import Session

from crsmon.db.audit import SYSTEM, Actor, patient_chain, record_event
from crsmon.db.models import (
    Alert,
    ClinicalRecord,
    Grade,
    Patient,
    QuarantinedRecord,
    UnitStay,
    WebhookDelivery,
)
from crsmon.domain.records import Quantity
from crsmon.services.review import current_grades

VITALS = (
    Quantity.TEMPERATURE_C,
    Quantity.SBP_MMHG,
    Quantity.DBP_MMHG,
    Quantity.MAP_MMHG,
    Quantity.HEART_RATE_PER_MIN,
    Quantity.RESPIRATORY_RATE_PER_MIN,
    Quantity.SPO2_PCT,
)
"""The quantities of a vitals record (``last_vitals_at``)."""


class UnknownAlertError(LookupError):
    """No alert has this id."""


class AlertNotOpenError(ValueError):
    """The alert was acknowledged before (an acknowledgement is never rewritten)."""


@dataclass(frozen=True, slots=True)
class PatientView:
    """A patient and where their monitoring stands."""

    patient: Patient
    care_unit: str | None
    current_grade: int | None
    current_grade_at: datetime | None
    max_grade: int | None
    open_alerts: int
    last_vitals_at: datetime | None


@dataclass(frozen=True, slots=True)
class AlertFilter:
    """Which alerts to list; ``None`` means any. ``since`` inclusive, ``until`` not."""

    status: str | None = None
    kind: str | None = None
    patient: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    min_grade: int | None = None


@dataclass(frozen=True, slots=True)
class MetricsSnapshot:
    """What /metrics reports from the database at scrape time."""

    records_by_state: dict[str, int]
    oldest_pending_at: datetime | None
    open_alerts_by_kind: dict[str, int]
    quarantined: int
    grading_lags_s: list[float]
    """Seconds from storage to grading of the records graded in the lag window."""
    deliveries_by_status: dict[str, int]


LAG_WINDOW = timedelta(minutes=15)
LAG_SAMPLE = 10_000


def _latest_ids(rule_set: str, patient_ids: Sequence[int]) -> Select[int]:
    """The current grade row ids: the newest row per patient and time."""
    return (
        select(func.max(Grade.id))
        .where(Grade.rule_set == rule_set, Grade.patient_id.in_(patient_ids))
        .group_by(Grade.patient_id, Grade.evaluated_at)
    )


def list_patients(
    session: Session, rule_set: str, *, limit: int, offset: int
) -> tuple[list[PatientView], int]:
    """One page of patients in enrolment order, and how many there are."""
    total = session.scalar(select(func.count()).select_from(Patient)) or 0
    page = session.scalars(
        select(Patient).order_by(Patient.id).limit(limit).offset(offset)
    ).all()
    return _views(session, rule_set, page), total


def patient_view(session: Session, patient: Patient, rule_set: str) -> PatientView:
    """One patient's view."""
    return _views(session, rule_set, [patient])[0]


def _views(
    session: Session, rule_set: str, patients: Sequence[Patient]
) -> list[PatientView]:
    ids = [p.id for p in patients]
    if not ids:
        return []
    current = current_grades(session, rule_set, ids)
    maxima = dict(
        session.execute(
            select(Grade.patient_id, func.max(Grade.grade))
            .where(Grade.id.in_(_latest_ids(rule_set, ids)))
            .group_by(Grade.patient_id)
        ).all()
    )
    units = {
        stay.patient_id: stay.care_unit
        for stay in session.scalars(
            select(UnitStay)
            .where(UnitStay.patient_id.in_(ids))
            .order_by(UnitStay.from_at, UnitStay.id)
        )
    }
    alerts = dict(
        session.execute(
            select(Alert.patient_id, func.count())
            .where(Alert.patient_id.in_(ids), Alert.status == "open")
            .group_by(Alert.patient_id)
        ).all()
    )
    vitals = dict(
        session.execute(
            select(ClinicalRecord.patient_id, func.max(ClinicalRecord.occurred_at))
            .where(
                ClinicalRecord.patient_id.in_(ids),
                ClinicalRecord.kind == "measurement",
                ClinicalRecord.quantity.in_([str(q) for q in VITALS]),
                ClinicalRecord.retracted_at.is_(None),
            )
            .group_by(ClinicalRecord.patient_id)
        ).all()
    )
    return [
        PatientView(
            patient=p,
            care_unit=units.get(p.id),
            current_grade=current.get(p.id, (None, None))[0],
            current_grade_at=current.get(p.id, (None, None))[1],
            max_grade=maxima.get(p.id),
            open_alerts=alerts.get(p.id, 0),
            last_vitals_at=vitals.get(p.id),
        )
        for p in patients
    ]


def grade_timeline(
    session: Session, patient_id: int, rule_set: str, *, include_superseded: bool
) -> list[tuple[Grade, bool]]:
    """A patient's grades in time order, each with whether it was superseded."""
    latest = set(session.scalars(_latest_ids(rule_set, [patient_id])))
    query = select(Grade).where(
        Grade.patient_id == patient_id, Grade.rule_set == rule_set
    )
    if not include_superseded:
        query = query.where(Grade.id.in_(latest))
    rows = session.scalars(query.order_by(Grade.evaluated_at, Grade.id))
    return [(g, g.id not in latest) for g in rows]


def list_alerts(
    session: Session, where: AlertFilter, *, limit: int, offset: int
) -> tuple[list[tuple[Alert, str]], int]:
    """One page of alerts (newest condition first) with each patient's pseudonym."""
    conditions: list[Any] = []
    if where.status is not None:
        conditions.append(Alert.status == where.status)
    if where.kind is not None:
        conditions.append(Alert.kind == where.kind)
    if where.patient is not None:
        conditions.append(Patient.pseudonym == where.patient)
    if where.since is not None:
        conditions.append(Alert.triggered_at >= where.since)
    if where.until is not None:
        conditions.append(Alert.triggered_at < where.until)
    if where.min_grade is not None:
        conditions.append(Alert.grade >= where.min_grade)
    query = select(Alert, Patient.pseudonym).join(Patient).where(*conditions)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.execute(
        query.order_by(Alert.triggered_at.desc(), Alert.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return [(alert, pseudonym) for alert, pseudonym in rows], total


def acknowledge_alert(
    session: Session,
    alert_id: int,
    *,
    by: str,
    note: str | None,
    now: datetime,
    actor: Actor = SYSTEM,
) -> tuple[Alert, str]:
    """Mark an open alert acknowledged (once; a concurrent second call loses).

    Raises:
        UnknownAlertError: no such alert.
        AlertNotOpenError: it is not open any more.
    """
    result = session.execute(
        update(Alert)
        .where(Alert.id == alert_id, Alert.status == "open")
        .values(
            status="acknowledged",
            acknowledged_by=by,
            acknowledged_at=now,
            acknowledgement_note=note,
        )
    )
    changed = cast(CursorResult[Any], result).rowcount
    row = session.execute(
        select(Alert, Patient.pseudonym)
        .join(Patient)
        .where(Alert.id == alert_id)
        .execution_options(populate_existing=True)
    ).one_or_none()
    if row is None:
        raise UnknownAlertError("alert: no such alert")
    if not changed:
        raise AlertNotOpenError("status: the alert is already acknowledged")
    alert = row[0]
    record_event(
        session,
        chain=patient_chain(alert.patient_id),
        actor=actor,
        action="acknowledge",
        entity="alert",
        entity_id=alert.id,
        patient_id=alert.patient_id,
        now=now,
        reason=note,
        details={"kind": alert.kind, "by": by},
    )
    return alert, row[1]


def alert_with_deliveries(
    session: Session, alert_id: int
) -> tuple[Alert, str, list[WebhookDelivery]]:
    """An alert, its patient's pseudonym and its webhook deliveries (by URL).

    Raises:
        UnknownAlertError: no such alert.
    """
    row = session.execute(
        select(Alert, Patient.pseudonym).join(Patient).where(Alert.id == alert_id)
    ).one_or_none()
    if row is None:
        raise UnknownAlertError("alert: no such alert")
    deliveries = session.scalars(
        select(WebhookDelivery)
        .where(WebhookDelivery.alert_id == alert_id)
        .order_by(WebhookDelivery.url)
    ).all()
    return row[0], row[1], list(deliveries)


def metrics_snapshot(session: Session, now: datetime) -> MetricsSnapshot:
    """Counts and ages for /metrics, read in one short session."""
    states = session.execute(
        select(ClinicalRecord.grading_state, func.count()).group_by(
            ClinicalRecord.grading_state
        )
    ).all()
    oldest = session.scalar(
        select(func.min(ClinicalRecord.recorded_at)).where(
            ClinicalRecord.grading_state == "pending"
        )
    )
    alerts = session.execute(
        select(Alert.kind, func.count())
        .where(Alert.status == "open")
        .group_by(Alert.kind)
    ).all()
    quarantined = session.scalar(select(func.count()).select_from(QuarantinedRecord))
    graded = session.execute(
        select(ClinicalRecord.recorded_at, ClinicalRecord.graded_at)
        .where(ClinicalRecord.graded_at >= now - LAG_WINDOW)
        .order_by(ClinicalRecord.graded_at.desc())
        .limit(LAG_SAMPLE)
    ).all()
    lags = [
        max((graded_at - recorded_at).total_seconds(), 0.0)
        for recorded_at, graded_at in graded
        if graded_at is not None  # the query asks for graded_at >= now - window
    ]
    deliveries = session.execute(
        select(WebhookDelivery.status, func.count()).group_by(WebhookDelivery.status)
    ).all()
    return MetricsSnapshot(
        dict(states),
        oldest,
        dict(alerts),
        quarantined or 0,
        lags,
        dict(deliveries),
    )
