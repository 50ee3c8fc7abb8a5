"""The safety reviewer's queries, and the one thing a reviewer writes: a verdict.

Plain SQLAlchemy over a :class:`~sqlalchemy.orm.Session`, portable across
SQLite and PostgreSQL, shared by the API (``/v1/review``, the patient
timeline and adjudications) and the CLI (``crsmon review``); see
``docs/review.md``.

- :func:`patients_now`: who is under monitoring at ``now`` (inside the
  monitoring window, in a unit stay, alive; :func:`under_monitoring`), with
  the current and maximum grade, open alerts, last vitals and care unit.
- :func:`open_alerts_review`: open (unacknowledged) alerts by kind, severity
  and age, oldest first.
- :func:`patient_timeline`: one patient's current records, grades, alerts,
  acknowledgements and adjudications as one time-ordered list;
  :func:`timeline_png` draws it (matplotlib is imported only there).
- :func:`adjudicate`, :func:`list_adjudications`, :func:`latest_adjudications`:
  a reviewer confirms or overrides the computed maximum grade. Append-only:
  the grade rows are never changed and the latest verdict counts.

"Current" grades are the newest row (highest id) per ``evaluated_at`` under
one rule set, as everywhere else; "current" records are neither retracted
nor superseded (:func:`crsmon.db.repository.current_records`).
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Final, Literal, get_args

from sqlalchemy import ColumnElement, Select, and_, func, select
from sqlalchemy.orm import Session, aliased

from crsmon.db.audit import SYSTEM, Actor, patient_chain, record_event
from crsmon.db.models import (
    Adjudication,
    Alert,
    ClinicalRecord,
    Grade,
    Patient,
    UnitStay,
)
from crsmon.db.repository import current_records, current_unit, ordered_stays
from crsmon.domain.explain import num
from crsmon.domain.records import Quantity
from crsmon.domain.rules import RuleSet
from crsmon.domain.vocab import OxygenDevice, TreatmentDrug
from crsmon.services.monitoring import monitored_spans

_HOUR = timedelta(hours=1)
_DAY = timedelta(days=1)

VITALS: Final = (
    Quantity.TEMPERATURE_C,
    Quantity.SBP_MMHG,
    Quantity.DBP_MMHG,
    Quantity.MAP_MMHG,
    Quantity.HEART_RATE_PER_MIN,
    Quantity.RESPIRATORY_RATE_PER_MIN,
    Quantity.SPO2_PCT,
)
"""The quantities of a vitals set (what ``last_vitals_at`` looks at)."""

_VITAL_NAMES: Final = frozenset(str(q) for q in VITALS)
_VITAL_LABELS: Final = {
    "temperature_c": ("T", " °C"),
    "sbp_mmhg": ("SBP", ""),
    "dbp_mmhg": ("DBP", ""),
    "map_mmhg": ("MAP", ""),
    "heart_rate_per_min": ("HR", ""),
    "respiratory_rate_per_min": ("RR", ""),
    "spo2_pct": ("SpO2", " %"),
}

SEVERITY_ORDER: Final = ("critical", "warning", "info")
"""Most urgent first (the order of the alert groups)."""

Decision = Literal["confirm", "override"]
DECISIONS: Final = ("confirm", "override")
MAX_REASON_CHARS: Final = 500
MAX_BY_CHARS: Final = 120
MAX_GRADE: Final = 5

DRUG_CLASSES: Final[Mapping[TreatmentDrug, str]] = {
    TreatmentDrug.ACETAMINOPHEN: "antipyretic",
    TreatmentDrug.IBUPROFEN: "antipyretic",
    TreatmentDrug.KETOROLAC: "antipyretic",
    TreatmentDrug.METAMIZOLE: "antipyretic",
    TreatmentDrug.NAPROXEN: "antipyretic",
    TreatmentDrug.OTHER_ANTIPYRETIC: "antipyretic",
    TreatmentDrug.TOCILIZUMAB: "anti-cytokine",
    TreatmentDrug.SILTUXIMAB: "anti-cytokine",
    TreatmentDrug.ANAKINRA: "anti-cytokine",
    TreatmentDrug.OTHER_ANTICYTOKINE: "anti-cytokine",
    TreatmentDrug.DEXAMETHASONE: "corticosteroid",
    TreatmentDrug.METHYLPREDNISOLONE: "corticosteroid",
    TreatmentDrug.HYDROCORTISONE: "corticosteroid",
    TreatmentDrug.PREDNISONE: "corticosteroid",
    TreatmentDrug.PREDNISOLONE: "corticosteroid",
    TreatmentDrug.OTHER_CORTICOSTEROID: "corticosteroid",
}
"""The class of each treatment drug (how the timeline plot marks it)."""

OXYGEN_LEVELS: Final = {
    0: "room air",
    2: "low flow",
    3: "high flow / mask",
    4: "positive pressure",
}
"""The ASTCT hypoxia levels of oxygen support (R6): what each level means."""

EventKind = Literal[
    "vitals",
    "lab",
    "oxygen",
    "vasopressor_start",
    "vasopressor_stop",
    "fluid_bolus",
    "treatment",
    "attribution",
    "outcome",
    "transfer",
    "discharge",
    "grade",
    "alert",
    "acknowledgement",
    "adjudication",
]
"""The timeline's event kinds."""
EVENT_KINDS: Final[tuple[str, ...]] = get_args(EventKind)
"""The kinds of timeline events (docs/review.md describes each one's data)."""

_RANKS: Final = {"grade": 1, "alert": 2, "acknowledgement": 3, "adjudication": 4}
"""At one time: the records first, then the grade they give, its alerts, then
what reviewers did."""


# ------------------------------------------------------------------ errors


class ReviewRefusal(ValueError):
    """A refused reviewer request: the field and why (never the value sent)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class InvalidAdjudicationError(ReviewRefusal):
    """The adjudication itself is malformed (the API's 422)."""


class AdjudicationConflictError(ReviewRefusal):
    """The adjudication disagrees with the computed grade now (the API's 409)."""


class NoComputedGradeError(LookupError):
    """The patient has no grade yet under the rule set: nothing to adjudicate."""


# ------------------------------------------------------------------ rows


@dataclass(frozen=True, slots=True)
class OpenAlert:
    """An open (unacknowledged) alert and how long ago its condition occurred."""

    id: int
    kind: str
    severity: str
    grade: int | None
    triggered_at: datetime
    raised_at: datetime
    age_h: float
    """Hours from ``triggered_at`` to now."""
    reasons: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class MonitoredPatient:
    """One patient and where their monitoring stands at ``now``."""

    pseudonym: str
    infusion_at: datetime
    days_since_infusion: float
    day: int
    """``floor(days_since_infusion)``: day 0 is the first 24 h after infusion."""
    monitored: bool
    """Under monitoring now: window, unit stay, alive (:func:`under_monitoring`)."""
    care_unit: str | None
    discharged_at: datetime | None
    died_at: datetime | None
    current_grade: int | None
    current_grade_at: datetime | None
    max_grade: int | None
    open_alert_count: int
    open_alert_kinds: tuple[str, ...]
    open_alerts: tuple[OpenAlert, ...]
    """Oldest first (filled for the page returned)."""
    last_vitals_at: datetime | None
    last_vitals_age_h: float | None


@dataclass(frozen=True, slots=True)
class PatientFilter:
    """Which patients :func:`patients_now` lists; ``None`` means any."""

    include_all: bool = False
    """Also patients out of monitoring (ended window, discharged, dead)."""
    min_grade: int | None = None
    """Current grade >= this (patients without a grade are left out)."""
    care_unit: str | None = None
    has_open_alerts: bool | None = None


@dataclass(frozen=True, slots=True)
class AlertGroup:
    """Open alerts of one kind and severity: how many, and the oldest."""

    kind: str
    severity: str
    count: int
    oldest_triggered_at: datetime
    oldest_age_h: float


@dataclass(frozen=True, slots=True)
class ReviewAlert:
    """An open alert with its patient, the patient's unit and its age."""

    id: int
    patient: str
    care_unit: str | None
    kind: str
    severity: str
    grade: int | None
    triggered_at: datetime
    raised_at: datetime
    age_h: float
    reasons: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class AlertReviewFilter:
    """Which open alerts :func:`open_alerts_review` counts and lists."""

    kind: str | None = None
    severity: str | None = None
    min_age_h: float | None = None
    """Only alerts whose condition is at least this many hours old."""
    care_unit: str | None = None
    """Only alerts of patients whose open unit stay is in this unit."""
    patient: str | None = None


@dataclass(frozen=True, slots=True)
class AlertReview:
    """Open alert counts by kind and severity, and one page of the alerts."""

    groups: tuple[AlertGroup, ...]
    items: tuple[ReviewAlert, ...]
    total: int


@dataclass(frozen=True, slots=True)
class ComputedMax:
    """A patient's computed maximum grade and the row that first reached it."""

    grade: int
    grade_id: int
    evaluated_at: datetime
    t_hours: float
    rule_set: str


@dataclass(frozen=True, slots=True)
class AdjudicationRow:
    """One stored adjudication (what :func:`latest_adjudications` returns)."""

    id: int
    patient_id: int
    patient: str
    """The patient's pseudonym."""
    decision: str
    """``confirm`` or ``override``."""
    adjudicated_grade: int
    """The grade the reviewer holds (for ``confirm``: the computed one)."""
    computed_grade: int
    """The computed maximum grade when the verdict was given."""
    computed_grade_id: int
    computed_grade_at: datetime
    """``evaluated_at`` of the peak grade row ``computed_grade_id``."""
    rule_set: str
    reason: str
    by: str
    adjudicated_at: datetime

    def stale(self, computed_max_now: int | None) -> bool:
        """Whether the computed maximum has moved since the verdict."""
        return computed_max_now != self.computed_grade

    @classmethod
    def of(
        cls, row: Adjudication, pseudonym: str, computed_grade_at: datetime
    ) -> AdjudicationRow:
        """A stored row (with its patient's pseudonym and peak row time)."""
        return cls(
            id=row.id,
            patient_id=row.patient_id,
            patient=pseudonym,
            decision=row.decision,
            adjudicated_grade=row.adjudicated_grade,
            computed_grade=row.computed_grade,
            computed_grade_id=row.computed_grade_id,
            computed_grade_at=computed_grade_at,
            rule_set=row.rule_set,
            reason=row.reason,
            by=row.adjudicated_by,
            adjudicated_at=row.adjudicated_at,
        )


@dataclass(frozen=True, slots=True)
class TimelineEvent:
    """One event of a patient's timeline.

    ``ref`` is the id of the row it comes from (clinical record, grade, alert
    or adjudication); ``data`` holds the kind's fields (docs/review.md).
    """

    at: datetime
    t_hours: float
    kind: str
    ref: int
    summary: str
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ReviewTimeline:
    """A patient's course as one time-ordered list of events."""

    patient: str
    infusion_at: datetime
    rule_set: str
    fever_threshold_c: float
    computed_max_grade: int | None
    latest_adjudication: AdjudicationRow | None
    events: tuple[TimelineEvent, ...]


# ------------------------------------------------------------------ helpers


def _hours(later: datetime, earlier: datetime) -> float:
    return round((later - earlier) / _HOUR, 2)


def _is_current() -> ColumnElement[bool]:
    """A clinical record neither retracted nor superseded by a live correction."""
    newer = aliased(ClinicalRecord)
    superseded = (
        select(newer.id)
        .where(newer.supersedes_id == ClinicalRecord.id, newer.retracted_at.is_(None))
        .exists()
    )
    return and_(ClinicalRecord.retracted_at.is_(None), ~superseded)


def _current_grade_ids(rule_set: str, patients: Select[Any]) -> Select[Any]:
    """The current grade row ids: the newest row per patient and time."""
    return (
        select(func.max(Grade.id))
        .where(Grade.rule_set == rule_set, Grade.patient_id.in_(patients))
        .group_by(Grade.patient_id, Grade.evaluated_at)
    )


def _stays(session: Session, patients: Select[Any]) -> dict[int, list[UnitStay]]:
    found: dict[int, list[UnitStay]] = {}
    for stay in session.scalars(
        select(UnitStay).where(UnitStay.patient_id.in_(patients))
    ):
        found.setdefault(stay.patient_id, []).append(stay)
    return {pid: ordered_stays(stays) for pid, stays in found.items()}


def _deaths(session: Session, patients: Select[Any]) -> dict[int, datetime]:
    """Each patient's death time (the last current ``death`` outcome)."""
    rows = session.scalars(
        select(ClinicalRecord)
        .where(
            ClinicalRecord.patient_id.in_(patients),
            ClinicalRecord.kind == "outcome",
            _is_current(),
        )
        .order_by(ClinicalRecord.occurred_at, ClinicalRecord.id)
    )
    return {
        r.patient_id: r.occurred_at for r in rows if r.details.get("event") == "death"
    }


def under_monitoring(
    infusion_at: datetime,
    stays: Sequence[UnitStay],
    died_at: datetime | None,
    *,
    now: datetime,
    monitoring_days: float,
) -> bool:
    """Whether ``now`` is inside the monitoring window and a monitored span.

    The window is the first ``monitoring_days`` after infusion; the spans are
    the unit stays, ended by death (:func:`monitored_spans`, as the stale-data
    check uses them): a discharged or dead patient is not monitored.
    """
    now_h = (now - infusion_at) / _HOUR
    if not 0 <= now_h <= monitoring_days * 24:
        return False
    spans = monitored_spans(infusion_at, stays, died_at)
    if spans is None:
        return True
    return any(start <= now_h < end for start, end in spans)


def current_grades(
    session: Session, rule_set: str, patients: Select[Any] | Sequence[int]
) -> dict[int, tuple[int, datetime]]:
    """Each patient's grade at their latest graded time."""
    last = (
        select(Grade.patient_id, func.max(Grade.evaluated_at).label("at"))
        .where(Grade.rule_set == rule_set, Grade.patient_id.in_(patients))
        .group_by(Grade.patient_id)
        .subquery()
    )
    newest = (
        select(func.max(Grade.id))
        .join(
            last,
            and_(
                Grade.patient_id == last.c.patient_id, Grade.evaluated_at == last.c.at
            ),
        )
        .where(Grade.rule_set == rule_set)
        .group_by(Grade.patient_id)
    )
    rows = session.execute(
        select(Grade.patient_id, Grade.grade, Grade.evaluated_at).where(
            Grade.id.in_(newest)
        )
    )
    return {pid: (grade, at) for pid, grade, at in rows}


def _max_grades(
    session: Session, rule_set: str, patients: Select[Any]
) -> dict[int, int]:
    rows = session.execute(
        select(Grade.patient_id, func.max(Grade.grade))
        .where(Grade.id.in_(_current_grade_ids(rule_set, patients)))
        .group_by(Grade.patient_id)
    )
    return dict(rows.all())


def _last_vitals(session: Session, patients: Select[Any]) -> dict[int, datetime]:
    rows = session.execute(
        select(ClinicalRecord.patient_id, func.max(ClinicalRecord.occurred_at))
        .where(
            ClinicalRecord.patient_id.in_(patients),
            ClinicalRecord.kind == "measurement",
            ClinicalRecord.quantity.in_(sorted(_VITAL_NAMES)),
            _is_current(),
        )
        .group_by(ClinicalRecord.patient_id)
    )
    return dict(rows.all())


def _open_alert_kinds(
    session: Session, patients: Select[Any]
) -> dict[int, dict[str, int]]:
    rows = session.execute(
        select(Alert.patient_id, Alert.kind, func.count())
        .where(Alert.patient_id.in_(patients), Alert.status == "open")
        .group_by(Alert.patient_id, Alert.kind)
    )
    found: dict[int, dict[str, int]] = {}
    for pid, kind, count in rows:
        found.setdefault(pid, {})[kind] = count
    return found


def _open_alerts(
    session: Session, patient_ids: Sequence[int], now: datetime
) -> dict[int, list[OpenAlert]]:
    found: dict[int, list[OpenAlert]] = {pid: [] for pid in patient_ids}
    if not patient_ids:
        return found
    rows = session.scalars(
        select(Alert)
        .where(Alert.patient_id.in_(patient_ids), Alert.status == "open")
        .order_by(Alert.triggered_at, Alert.id)
    )
    for a in rows:
        found[a.patient_id].append(
            OpenAlert(
                id=a.id,
                kind=a.kind,
                severity=a.severity,
                grade=a.grade,
                triggered_at=a.triggered_at,
                raised_at=a.raised_at,
                age_h=_hours(now, a.triggered_at),
                reasons=tuple(str(r) for r in a.reasons),
            )
        )
    return found


def _sort_key(view: MonitoredPatient) -> tuple[int, int, str]:
    current = -1 if view.current_grade is None else view.current_grade
    peak = -1 if view.max_grade is None else view.max_grade
    return (-current, -peak, view.pseudonym)


def _keeps(view: MonitoredPatient, where: PatientFilter) -> bool:
    if not (where.include_all or view.monitored):
        return False
    if where.min_grade is not None and (
        view.current_grade is None or view.current_grade < where.min_grade
    ):
        return False
    if where.care_unit is not None and view.care_unit != where.care_unit:
        return False
    return where.has_open_alerts is None or (
        (view.open_alert_count > 0) == where.has_open_alerts
    )


# ------------------------------------------------------------------ queries


def patients_now(
    session: Session,
    *,
    rule_set: str,
    now: datetime,
    monitoring_days: float,
    where: PatientFilter,
    limit: int,
    offset: int,
) -> tuple[list[MonitoredPatient], int]:
    """One page of the patients under monitoring at ``now``, and how many match.

    Sorted by current grade, then maximum grade (both highest first, no grade
    last), then pseudonym. Grades are read under ``rule_set`` (the live key).
    """
    query = select(Patient).order_by(Patient.id)
    if not where.include_all:
        query = query.where(
            Patient.infusion_at <= now,
            Patient.infusion_at >= now - timedelta(days=monitoring_days),
        )
    patients = session.scalars(query).all()
    if not patients:
        return [], 0
    ids = query.with_only_columns(Patient.id).order_by(None)
    stays = _stays(session, ids)
    deaths = _deaths(session, ids)
    current = current_grades(session, rule_set, ids)
    maxima = _max_grades(session, rule_set, ids)
    vitals = _last_vitals(session, ids)
    alerts = _open_alert_kinds(session, ids)
    views = []
    for p in patients:
        patient_stays = stays.get(p.id, [])
        where_now = current_unit(patient_stays)
        grade, grade_at = current.get(p.id, (None, None))
        kinds = alerts.get(p.id, {})
        last = vitals.get(p.id)
        days = (now - p.infusion_at) / _DAY
        views.append(
            MonitoredPatient(
                pseudonym=p.pseudonym,
                infusion_at=p.infusion_at,
                days_since_infusion=round(days, 3),
                day=math.floor(days),
                monitored=under_monitoring(
                    p.infusion_at,
                    patient_stays,
                    deaths.get(p.id),
                    now=now,
                    monitoring_days=monitoring_days,
                ),
                care_unit=where_now.care_unit,
                discharged_at=where_now.discharged_at,
                died_at=deaths.get(p.id),
                current_grade=grade,
                current_grade_at=grade_at,
                max_grade=maxima.get(p.id),
                open_alert_count=sum(kinds.values()),
                open_alert_kinds=tuple(sorted(kinds)),
                open_alerts=(),
                last_vitals_at=last,
                last_vitals_age_h=None if last is None else _hours(now, last),
            )
        )
    kept = sorted((v for v in views if _keeps(v, where)), key=_sort_key)
    page = kept[offset : offset + limit]
    by_pseudonym = {p.pseudonym: p.id for p in patients}
    lists = _open_alerts(session, [by_pseudonym[v.pseudonym] for v in page], now)
    return [
        replace(v, open_alerts=tuple(lists[by_pseudonym[v.pseudonym]])) for v in page
    ], len(kept)


def _open_units(session: Session, patient_ids: Sequence[int]) -> dict[int, str]:
    if not patient_ids:
        return {}
    rows = session.execute(
        select(UnitStay.patient_id, UnitStay.care_unit).where(
            UnitStay.patient_id.in_(patient_ids), UnitStay.to_at.is_(None)
        )
    )
    return dict(rows.all())


def _severity_rank(severity: str) -> int:
    return (
        SEVERITY_ORDER.index(severity)
        if severity in SEVERITY_ORDER
        else len(SEVERITY_ORDER)
    )


def open_alerts_review(
    session: Session,
    *,
    now: datetime,
    where: AlertReviewFilter,
    limit: int,
    offset: int,
) -> AlertReview:
    """Open alerts grouped by kind and severity, and one page of them, oldest first.

    The groups and ``total`` count every open alert the filter keeps; groups
    come most severe first, then by kind.
    """
    conditions: list[ColumnElement[bool]] = [Alert.status == "open"]
    if where.kind is not None:
        conditions.append(Alert.kind == where.kind)
    if where.severity is not None:
        conditions.append(Alert.severity == where.severity)
    if where.min_age_h is not None:
        conditions.append(Alert.triggered_at <= now - timedelta(hours=where.min_age_h))
    if where.patient is not None:
        conditions.append(Patient.pseudonym == where.patient)
    if where.care_unit is not None:
        conditions.append(
            select(UnitStay.id)
            .where(
                UnitStay.patient_id == Alert.patient_id,
                UnitStay.to_at.is_(None),
                UnitStay.care_unit == where.care_unit,
            )
            .exists()
        )
    counted = session.execute(
        select(Alert.kind, Alert.severity, func.count(), func.min(Alert.triggered_at))
        .join(Patient, Patient.id == Alert.patient_id)
        .where(*conditions)
        .group_by(Alert.kind, Alert.severity)
    ).all()
    groups = sorted(
        (
            AlertGroup(kind, severity, count, oldest, _hours(now, oldest))
            for kind, severity, count, oldest in counted
        ),
        key=lambda g: (_severity_rank(g.severity), g.kind),
    )
    rows = session.execute(
        select(Alert, Patient.pseudonym)
        .join(Patient, Patient.id == Alert.patient_id)
        .where(*conditions)
        .order_by(Alert.triggered_at, Alert.id)
        .limit(limit)
        .offset(offset)
    ).all()
    units = _open_units(session, sorted({a.patient_id for a, _ in rows}))
    items = tuple(
        ReviewAlert(
            id=a.id,
            patient=pseudonym,
            care_unit=units.get(a.patient_id),
            kind=a.kind,
            severity=a.severity,
            grade=a.grade,
            triggered_at=a.triggered_at,
            raised_at=a.raised_at,
            age_h=_hours(now, a.triggered_at),
            reasons=tuple(str(r) for r in a.reasons),
        )
        for a, pseudonym in rows
    )
    return AlertReview(tuple(groups), items, sum(g.count for g in groups))


# ------------------------------------------------------------------ adjudication


def computed_max_grade(
    session: Session, patient_id: int, rule_set: str
) -> ComputedMax | None:
    """The highest current grade under ``rule_set`` and the first row to reach it."""
    patients = select(Patient.id).where(Patient.id == patient_id)
    peak = session.scalars(
        select(Grade)
        .where(Grade.id.in_(_current_grade_ids(rule_set, patients)))
        .order_by(Grade.grade.desc(), Grade.evaluated_at, Grade.id)
        .limit(1)
    ).first()
    if peak is None:
        return None
    return ComputedMax(
        peak.grade, peak.id, peak.evaluated_at, peak.t_hours, peak.rule_set
    )


def _adjudication_rows(
    *where: ColumnElement[bool],
) -> Select[Adjudication, str, datetime]:
    return (
        select(Adjudication, Patient.pseudonym, Grade.evaluated_at)
        .join(Patient, Patient.id == Adjudication.patient_id)
        .join(Grade, Grade.id == Adjudication.computed_grade_id)
        .where(*where)
    )


def _text(field: str, value: str, limit: int) -> str:
    text = value.strip()
    if not 1 <= len(text) <= limit:
        raise InvalidAdjudicationError(
            field, f"must be 1 to {limit} characters (not blank)"
        )
    return text


def adjudicate(
    session: Session,
    patient: Patient,
    *,
    decision: str,
    grade: int | None,
    reason: str,
    by: str,
    rule_set: str,
    now: datetime,
    actor: Actor = SYSTEM,
) -> AdjudicationRow:
    """Store a reviewer's verdict on the patient's computed maximum grade.

    ``confirm`` keeps the computed maximum: ``grade`` may be omitted, and when
    given must equal it (a check that the reviewer saw the current maximum).
    ``override`` needs a ``grade`` 0–5 that differs from it. A new row every
    time; no grade row is touched.

    Raises:
        InvalidAdjudicationError: bad decision, grade, reason or reviewer.
        NoComputedGradeError: the patient has no grade under ``rule_set``.
        AdjudicationConflictError: the grade disagrees with the decision and
            the computed maximum now.
    """
    if decision not in DECISIONS:
        raise InvalidAdjudicationError("decision", "must be confirm or override")
    if grade is not None and not 0 <= grade <= MAX_GRADE:
        raise InvalidAdjudicationError("grade", f"must be 0 to {MAX_GRADE}")
    if decision == "override" and grade is None:
        raise InvalidAdjudicationError("grade", "is required to override")
    reason = _text("reason", reason, MAX_REASON_CHARS)
    by = _text("by", by, MAX_BY_CHARS)
    # Under the patient's lock, as grading runs are: the maximum read here is
    # the one stored beside the verdict (PostgreSQL; SQLite locks the writer).
    session.execute(
        select(Patient.id)
        .where(Patient.id == patient.id)
        .with_for_update(key_share=True)
    )
    computed = computed_max_grade(session, patient.id, rule_set)
    if computed is None:
        raise NoComputedGradeError("patient: no computed grade to adjudicate yet")
    if decision == "confirm" and grade is not None and grade != computed.grade:
        raise AdjudicationConflictError(
            "grade",
            "differs from the computed maximum grade; review the current grades",
        )
    if decision == "override" and grade == computed.grade:
        raise AdjudicationConflictError(
            "grade", "equals the computed maximum grade: confirm it instead"
        )
    row = Adjudication(
        patient_id=patient.id,
        decision=decision,
        adjudicated_grade=computed.grade if grade is None else grade,
        computed_grade=computed.grade,
        computed_grade_id=computed.grade_id,
        rule_set=rule_set,
        reason=reason,
        adjudicated_by=by,
        adjudicated_at=now,
    )
    session.add(row)
    session.flush()
    record_event(
        session,
        chain=patient_chain(patient.id),
        actor=actor,
        action="adjudicate",
        entity="adjudication",
        entity_id=row.id,
        patient_id=patient.id,
        now=now,
        reason=reason,
        details={
            "decision": decision,
            "adjudicated_grade": row.adjudicated_grade,
            "computed_grade": computed.grade,
            "rule_set": rule_set,
            "by": by,
        },
    )
    return AdjudicationRow.of(row, patient.pseudonym, computed.evaluated_at)


def list_adjudications(
    session: Session, patient_id: int, *, limit: int, offset: int
) -> tuple[list[AdjudicationRow], int]:
    """One page of a patient's adjudications, newest first, and how many."""
    total = (
        session.scalar(
            select(func.count())
            .select_from(Adjudication)
            .where(Adjudication.patient_id == patient_id)
        )
        or 0
    )
    rows = session.execute(
        _adjudication_rows(Adjudication.patient_id == patient_id)
        .order_by(Adjudication.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return [AdjudicationRow.of(a, p, at) for a, p, at in rows], total


def latest_adjudications(
    session: Session, patient_ids: Sequence[int], *, rule_set: str | None = None
) -> dict[int, AdjudicationRow]:
    """Each patient's latest adjudication (highest id), by patient id.

    Patients never adjudicated are absent. With ``rule_set``, only verdicts
    given under that rule-set key count. The grade-table export reads the
    adjudicated grade and decision from these, and ``row.stale(max_now)``
    says whether the computed maximum has moved since.
    """
    if not patient_ids:
        return {}
    conditions: list[ColumnElement[bool]] = [Adjudication.patient_id.in_(patient_ids)]
    if rule_set is not None:
        conditions.append(Adjudication.rule_set == rule_set)
    latest = (
        select(func.max(Adjudication.id))
        .where(*conditions)
        .group_by(Adjudication.patient_id)
    )
    rows = session.execute(_adjudication_rows(Adjudication.id.in_(latest)))
    return {a.patient_id: AdjudicationRow.of(a, p, at) for a, p, at in rows}


# ------------------------------------------------------------------ timeline


def oxygen_level(rules: RuleSet, device: OxygenDevice, flow_l_min: float | None) -> int:
    """The ASTCT level of oxygen support (R6): room air 0, low flow 2, high flow
    or mask 3, positive pressure 4, as the rule set grades the device.

    A device graded by flow (nasal cannula) is low flow up to the rule set's
    limit (6 L/min) and high flow above it; without a flow, the device's own
    level (as grading does, with a data-quality flag there).
    """
    rule = rules.device_rule(device)
    if rule.by_flow and flow_l_min is not None:
        return 2 if flow_l_min <= rules.low_flow_max_l_min else 3
    return rule.grade


def _value(value: Any) -> str:
    return "?" if value is None else num(float(value))


def _vitals_summary(values: Mapping[str, float]) -> str:
    parts = []
    for name in _VITAL_LABELS:
        if name in values:
            label, unit = _VITAL_LABELS[name]
            parts.append(f"{label} {values[name]:g}{unit}")
    return ", ".join(parts)


def _record_events(
    rows: Sequence[ClinicalRecord], infusion_at: datetime, rules: RuleSet
) -> list[tuple[int, TimelineEvent]]:
    """The current clinical records as events (a vitals set is one event)."""
    starts = {
        (r.source_system, r.source_record_id): r
        for r in rows
        if r.kind == "vasopressor_start"
    }
    vitals: dict[tuple[datetime, str, str], list[ClinicalRecord]] = {}
    events: list[tuple[int, TimelineEvent]] = []

    def add(row: ClinicalRecord, kind: str, summary: str, data: dict[str, Any]) -> None:
        correction = row.details.get("correction_reason")
        if correction:
            data = {**data, "correction_reason": correction}
        t = round((row.occurred_at - infusion_at) / _HOUR, 4)
        events.append(
            (0, TimelineEvent(row.occurred_at, t, kind, row.id, summary, data))
        )

    for row in rows:
        d = row.details
        if row.kind == "measurement" and row.quantity in _VITAL_NAMES:
            base = row.source_record_id.split("#", 1)[0]
            vitals.setdefault((row.occurred_at, row.source_system, base), []).append(
                row
            )
        elif row.kind == "measurement":
            value = {"quantity": row.quantity, "value": row.value, "unit": row.unit}
            add(row, "lab", f"{row.quantity} {_value(row.value)} {row.unit}", value)
        elif row.kind == "oxygen":
            device = OxygenDevice(d["device"])
            flow = d.get("flow_l_min")
            level = oxygen_level(rules, device, flow)
            text = str(device) + ("" if flow is None else f" {num(flow)} L/min")
            if d.get("fio2") is not None:
                text += f", FiO2 {num(d['fio2'])}"
            if d.get("for_comfort_only"):
                text += ", for comfort only"
            add(
                row,
                "oxygen",
                f"{text} (ASTCT level {level})",
                {
                    "device": str(device),
                    "flow_l_min": flow,
                    "fio2": d.get("fio2"),
                    "for_comfort_only": bool(d.get("for_comfort_only", False)),
                    "astct_level": level,
                },
            )
        elif row.kind == "vasopressor_start":
            data = {"drug": d["drug"], "dose": d.get("dose"), "unit": d.get("unit")}
            rate = (
                "rate not recorded"
                if d.get("dose") is None
                else (f"{d['dose']} {d['unit']}")
            )
            add(row, row.kind, f"{d['drug']} started, {rate}", data)
        elif row.kind == "vasopressor_stop":
            start = starts.get((row.source_system, d["start_record_id"]))
            data = {"start_ref": None if start is None else start.id}
            if start is not None:
                s = start.details
                data |= {
                    "drug": s["drug"],
                    "dose": s.get("dose"),
                    "unit": s.get("unit"),
                }
            drug = "vasoactive infusion" if start is None else start.details["drug"]
            add(row, row.kind, f"{drug} stopped", data)
        elif row.kind == "fluid_bolus":
            volume = d.get("volume_ml")
            why = "for hypotension" if d.get("for_hypotension") else "not for BP"
            amount = "" if volume is None else f" {num(volume)} mL"
            data = {"for_hypotension": d.get("for_hypotension"), "volume_ml": volume}
            add(row, row.kind, f"fluid bolus{amount} ({why})", data)
        elif row.kind == "treatment":
            drug_class = DRUG_CLASSES.get(TreatmentDrug(d["drug"]), "other")
            data = {"drug": d["drug"], "drug_class": drug_class}
            add(row, row.kind, f"{d['drug']} ({drug_class})", data)
        elif row.kind == "attribution":
            data = {k: d.get(k) for k in ("finding", "end_at", "by", "reason")}
            add(row, row.kind, f"{d['finding']} attributed to another cause", data)
        elif row.kind == "outcome":
            keys = ("event", "death_attributable_to_crs", "mrd_negative", "note")
            add(row, row.kind, f"outcome: {d['event']}", {k: d.get(k) for k in keys})
        elif row.kind == "transfer":
            add(row, row.kind, f"to {d['care_unit']}", {"care_unit": d["care_unit"]})
        elif row.kind == "discharge":
            where = d.get("destination")
            text = "discharged" + ("" if where is None else f" ({where})")
            add(row, row.kind, text, {"destination": where})
        # Retractions and anything else are not events: their effect is.
    for (at, _, _), group in vitals.items():
        values = {str(r.quantity): r.value for r in group if r.value is not None}
        first = min(group, key=lambda r: r.id)
        t = round((at - infusion_at) / _HOUR, 4)
        events.append(
            (
                0,
                TimelineEvent(
                    at, t, "vitals", first.id, _vitals_summary(values), values
                ),
            )
        )
    return events


def patient_timeline(
    session: Session, patient: Patient, rules: RuleSet
) -> ReviewTimeline:
    """The patient's current records, current grades (under ``rules.key``),
    alerts, acknowledgements and adjudications in time order.

    Retracted and superseded records and superseded grade rows are left out.
    At one time: records first, then the grade, alerts, acknowledgements and
    adjudications; then by row id.
    """
    infusion_at = patient.infusion_at
    rule_set = rules.key
    events = _record_events(current_records(session, patient.id), infusion_at, rules)
    patients = select(Patient.id).where(Patient.id == patient.id)
    grades = session.scalars(
        select(Grade)
        .where(Grade.id.in_(_current_grade_ids(rule_set, patients)))
        .order_by(Grade.evaluated_at, Grade.id)
    )
    for g in grades:
        data = {
            "grade": g.grade,
            "rule_set": g.rule_set,
            "rule_set_version": g.rule_set_version,
            "reasons": [str(r) for r in g.reasons],
        }
        summary = f"grade {g.grade} ({g.rule_set} {g.rule_set_version})"
        if g.reasons:  # the last reason states how the grade was reached
            summary += f": {g.reasons[-1]}"
        events.append(
            (1, TimelineEvent(g.evaluated_at, g.t_hours, "grade", g.id, summary, data))
        )
    alerts = session.scalars(
        select(Alert).where(Alert.patient_id == patient.id).order_by(Alert.id)
    )
    for a in alerts:
        data = {
            "alert_kind": a.kind,
            "severity": a.severity,
            "grade": a.grade,
            "status": a.status,
            "reasons": [str(r) for r in a.reasons],
        }
        t = round((a.triggered_at - infusion_at) / _HOUR, 4)
        summary = f"{a.kind} ({a.severity}, {a.status})"
        events.append(
            (2, TimelineEvent(a.triggered_at, t, "alert", a.id, summary, data))
        )
        if a.acknowledged_at is not None:
            data = {
                "alert_kind": a.kind,
                "by": a.acknowledged_by,
                "note": a.acknowledgement_note,
            }
            t = round((a.acknowledged_at - infusion_at) / _HOUR, 4)
            summary = f"{a.kind} acknowledged by {a.acknowledged_by}"
            events.append(
                (
                    3,
                    TimelineEvent(
                        a.acknowledged_at, t, "acknowledgement", a.id, summary, data
                    ),
                )
            )
    computed = computed_max_grade(session, patient.id, rule_set)
    max_now = None if computed is None else computed.grade
    verdicts, _ = list_adjudications(session, patient.id, limit=10_000, offset=0)
    latest = verdicts[0] if verdicts else None
    for v in verdicts:
        data = {
            "decision": v.decision,
            "adjudicated_grade": v.adjudicated_grade,
            "computed_grade": v.computed_grade,
            "computed_grade_id": v.computed_grade_id,
            "computed_grade_t_hours": round(
                (v.computed_grade_at - infusion_at) / _HOUR, 4
            ),
            "rule_set": v.rule_set,
            "reason": v.reason,
            "by": v.by,
            "latest": v is latest,
            "stale": v.stale(max_now),
        }
        t = round((v.adjudicated_at - infusion_at) / _HOUR, 4)
        summary = (
            f"{v.decision} maximum grade {v.adjudicated_grade} "
            f"(computed {v.computed_grade}) by {v.by}"
        )
        events.append(
            (4, TimelineEvent(v.adjudicated_at, t, "adjudication", v.id, summary, data))
        )
    events.sort(key=lambda e: (e[1].at, _RANKS.get(e[1].kind, 0), e[1].ref))
    return ReviewTimeline(
        patient=patient.pseudonym,
        infusion_at=infusion_at,
        rule_set=rule_set,
        fever_threshold_c=rules.fever_threshold_c,
        computed_max_grade=max_now,
        latest_adjudication=latest,
        events=tuple(e for _, e in events),
    )


# ------------------------------------------------------------------ the plot

DISCLAIMER: Final = "Research software, not a medical device"
_REVIEW_KINDS: Final = frozenset({"alert", "acknowledgement", "adjudication"})
_CLASS_COLOURS: Final = {
    "anti-cytokine": "tab:purple",
    "corticosteroid": "tab:green",
    "antipyretic": "tab:orange",
    "other": "tab:gray",
}


def timeline_png(
    timeline: ReviewTimeline, *, x_unit: Literal["hours", "days"] = "hours"
) -> bytes:
    """Four panels over time since infusion, as PNG bytes.

    Temperature (with the fever line), SBP (vasoactive infusions shaded),
    oxygen support as its ASTCT level, and the grade as a step plot with the
    latest adjudication marked at the peak it judged. Treatments are vertical
    lines on every panel, labelled on the top one. The figure names the
    pseudonym only, and carries the disclaimer.
    """
    # matplotlib loads only here: the API and CLI start without it.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    scale = 24.0 if x_unit == "days" else 1.0

    def x(event: TimelineEvent) -> float:
        return event.t_hours / scale

    events = timeline.events
    vitals = [e for e in events if e.kind == "vitals"]
    temps = [
        (x(e), e.data["temperature_c"]) for e in vitals if "temperature_c" in e.data
    ]
    sbps = [(x(e), e.data["sbp_mmhg"]) for e in vitals if "sbp_mmhg" in e.data]
    oxygen = [(x(e), e.data["astct_level"]) for e in events if e.kind == "oxygen"]
    grades = [(x(e), e.data["grade"]) for e in events if e.kind == "grade"]
    treatments = [e for e in events if e.kind == "treatment"]
    starts = {e.ref: x(e) for e in events if e.kind == "vasopressor_start"}
    stops = {e.data["start_ref"]: x(e) for e in events if e.kind == "vasopressor_stop"}
    # The course: records and grades (not what reviewers did, days later).
    course = [x(e) for e in events if e.kind not in _REVIEW_KINDS]
    first, end = min([0.0, *course]), max([1.0 / scale, *course])

    figure = Figure(figsize=(9, 9), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.subplots(4, 1, sharex=True)
    temp_ax, sbp_ax, oxygen_ax, grade_ax = axes

    def series(ax: Any, points: list[tuple[float, Any]], step: bool, **kw: Any) -> None:
        if not points:
            ax.text(
                0.5,
                0.5,
                "no data",
                transform=ax.transAxes,
                ha="center",
                va="center",
                color="grey",
            )
            return
        xs, ys = zip(*points, strict=True)
        if step:  # the last level holds until the end of the record
            ax.step([*xs, max(end, xs[-1])], [*ys, ys[-1]], where="post", **kw)
        else:
            ax.plot(xs, ys, marker="o", markersize=3, **kw)

    series(temp_ax, temps, False, color="tab:red")
    temp_ax.axhline(
        timeline.fever_threshold_c, color="tab:red", linestyle="--", linewidth=0.8
    )
    temp_ax.set_ylabel("temperature (°C)")
    series(sbp_ax, sbps, False, color="tab:blue")
    for ref, start in starts.items():
        sbp_ax.axvspan(start, stops.get(ref, end), color="tab:blue", alpha=0.1)
    sbp_ax.set_ylabel("SBP (mmHg)")
    series(oxygen_ax, oxygen, True, color="tab:cyan")
    oxygen_ax.set_yticks(list(OXYGEN_LEVELS), list(OXYGEN_LEVELS.values()), fontsize=7)
    oxygen_ax.set_ylim(-0.5, 4.5)
    oxygen_ax.set_ylabel("oxygen (ASTCT)")
    series(grade_ax, grades, True, color="black")
    grade_ax.set_yticks(range(MAX_GRADE + 1))
    grade_ax.set_ylim(-0.5, MAX_GRADE + 0.7)
    grade_ax.set_ylabel("CRS grade")
    verdict = timeline.latest_adjudication
    if verdict is not None:
        at = (verdict.computed_grade_at - timeline.infusion_at) / _HOUR / scale
        grade_ax.plot(
            [at],
            [verdict.adjudicated_grade],
            marker="*",
            markersize=14,
            color="tab:red",
            linestyle="none",
        )
        stale = ", stale" if verdict.stale(timeline.computed_max_grade) else ""
        grade_ax.annotate(
            f"adjudicated: {verdict.decision} {verdict.adjudicated_grade}{stale}",
            (at, verdict.adjudicated_grade),
            textcoords="offset points",
            xytext=(8, 4),
            fontsize=8,
            color="tab:red",
        )
    for event in treatments:
        colour = _CLASS_COLOURS[event.data["drug_class"]]
        for ax in axes:
            ax.axvline(x(event), color=colour, linewidth=1, alpha=0.7)
        temp_ax.annotate(
            str(event.data["drug"]),
            (x(event), 1.0),
            xycoords=("data", "axes fraction"),
            textcoords="offset points",
            xytext=(2, -3),
            rotation=90,
            fontsize=7,
            va="top",
            ha="left",
            color=colour,
            bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.7, "pad": 1},
        )
    for ax in axes:
        ax.grid(True, alpha=0.3)
    grade_ax.set_xlim(first, end + 0.02 * (end - first))
    grade_ax.set_xlabel(f"{x_unit} since infusion")
    figure.suptitle(f"{timeline.patient}: CRS course ({timeline.rule_set})")
    figure.text(0.01, 0.005, DISCLAIMER, fontsize=8, color="grey")
    figure.subplots_adjust(left=0.13, right=0.97, top=0.94, bottom=0.07, hspace=0.1)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
