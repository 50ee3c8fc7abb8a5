"""The safety reviewer's routes: who is on monitoring now, open alerts by age,
one patient's timeline (JSON and PNG), and adjudication of the maximum grade.

- ``GET /v1/review/patients``: patients under monitoring at the server's now.
- ``GET /v1/review/alerts``: open alerts counted by kind and severity, oldest first.
- ``GET /v1/patients/{pseudonym}/timeline`` and ``.../timeline.png``.
- ``POST|GET /v1/patients/{pseudonym}/adjudications``: confirm or override.

The SQL lives in :mod:`crsmon.services.review` (shared with ``crsmon review``);
these routes parse parameters, call it and shape the reply. See docs/review.md.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Response
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from sqlalchemy.orm import Session

from crsmon.api.deps import (
    NO_NUL,
    OFFSET_MAX,
    ActorDep,
    ContextDep,
    SessionDep,
    SessionsDep,
)
from crsmon.api.errors import ApiError
from crsmon.api.schemas import UNREADABLE_BODY, ErrorBody
from crsmon.db.models import Patient
from crsmon.db.repository import UnknownPatientError, patient_by_pseudonym
from crsmon.domain.alerts import AlertKind, Severity
from crsmon.domain.catalog import resolve_rule_set
from crsmon.domain.rules import RuleSet
from crsmon.services.review import (
    MAX_BY_CHARS,
    MAX_REASON_CHARS,
    AdjudicationConflictError,
    AdjudicationRow,
    AlertReviewFilter,
    EventKind,
    InvalidAdjudicationError,
    NoComputedGradeError,
    PatientFilter,
    adjudicate,
    computed_max_grade,
    latest_adjudications,
    list_adjudications,
    open_alerts_review,
    patient_timeline,
    patients_now,
    timeline_png,
)

router = APIRouter(tags=["review"])

Pseudonym = Annotated[str, Path(pattern=r"^[A-Za-z0-9._-]{1,64}$")]
Limit = Annotated[int, Query(ge=1, le=500)]
Offset = Annotated[int, Query(ge=0, le=OFFSET_MAX)]
RuleSetKey = Annotated[
    str | None,
    Query(max_length=200, pattern=NO_NUL, description="Default: the live rule set."),
]

_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "No patient with this pseudonym."}
}


class OpenAlertOut(BaseModel):
    """An open (unacknowledged) alert and its age."""

    id: int
    kind: str
    severity: str
    grade: int | None
    triggered_at: datetime = Field(description="When the condition occurred.")
    raised_at: datetime
    age_h: float = Field(description="Hours from triggered_at to now.")
    reasons: list[str]


class ReviewPatientOut(BaseModel):
    """A patient and where their monitoring stands now."""

    pseudonym: str
    infusion_at: datetime
    days_since_infusion: float
    day: int = Field(description="Day N: floor(days_since_infusion), day 0 first.")
    monitored: bool = Field(
        description="Inside the monitoring window, in a unit stay and alive."
    )
    care_unit: str | None
    discharged_at: datetime | None
    died_at: datetime | None
    current_grade: int | None
    current_grade_at: datetime | None
    max_grade: int | None
    open_alert_count: int
    open_alert_kinds: list[str]
    open_alerts: list[OpenAlertOut] = Field(description="Oldest first.")
    last_vitals_at: datetime | None
    last_vitals_age_h: float | None


class ReviewPatientPage(BaseModel):
    """Patients by current grade, maximum grade (highest first), then pseudonym."""

    as_of: datetime
    rule_set: str
    monitoring_days: float
    items: list[ReviewPatientOut]
    total: int
    limit: int
    offset: int


class AlertGroupOut(BaseModel):
    """Open alerts of one kind and severity."""

    kind: str
    severity: str
    count: int
    oldest_triggered_at: datetime
    oldest_age_h: float


class ReviewAlertOut(BaseModel):
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
    reasons: list[str]


class ReviewAlertPage(BaseModel):
    """Counts by kind and severity (most severe first), and open alerts oldest first.

    ``groups`` and ``total`` count every open alert the filters keep.
    """

    as_of: datetime
    groups: list[AlertGroupOut]
    items: list[ReviewAlertOut]
    total: int
    limit: int
    offset: int


class AdjudicationOut(BaseModel):
    """A reviewer's verdict on the computed maximum grade."""

    id: int
    patient: str
    decision: Literal["confirm", "override"]
    adjudicated_grade: int
    computed_grade: int = Field(description="The computed maximum at the time.")
    computed_grade_id: int = Field(description="The peak grade row.")
    computed_grade_at: datetime
    rule_set: str
    reason: str
    by: str
    adjudicated_at: datetime
    latest: bool = Field(description="The verdict that counts (the newest).")
    stale: bool = Field(
        description="The computed maximum has changed since (regrading or new data)."
    )

    @classmethod
    def of(
        cls, row: AdjudicationRow, *, latest: bool, max_now: int | None
    ) -> AdjudicationOut:
        """A stored adjudication as the reply."""
        return cls.model_validate(
            {
                **{k: getattr(row, k) for k in cls.model_fields if hasattr(row, k)},
                "latest": latest,
                "stale": row.stale(max_now),
            }
        )


class AdjudicationPage(BaseModel):
    """A patient's adjudications, newest first."""

    patient: str
    computed_max_grade: int | None = Field(description="Under the live rule set now.")
    items: list[AdjudicationOut]
    total: int
    limit: int
    offset: int


class AdjudicationIn(BaseModel):
    """Confirm the computed maximum grade, or override it, with a reason.

    ``confirm``: ``grade`` may be omitted; if sent it must equal the computed
    maximum (else 409). ``override``: ``grade`` is required and must differ
    from it (else 409: confirm instead).
    """

    model_config = ConfigDict(extra="forbid")

    decision: Literal["confirm", "override"]
    grade: Annotated[int, Field(ge=0, le=5)] | None = None
    reason: Annotated[
        str,
        StringConstraints(
            strip_whitespace=True,
            min_length=1,
            max_length=MAX_REASON_CHARS,
            pattern=NO_NUL,
        ),
    ]
    by: Annotated[
        str,
        StringConstraints(
            strip_whitespace=True, min_length=1, max_length=MAX_BY_CHARS, pattern=NO_NUL
        ),
    ]


class TimelineEventOut(BaseModel):
    """One event: ``kind`` says which fields ``data`` holds (docs/review.md)."""

    at: datetime
    t_hours: float = Field(description="Hours since infusion.")
    kind: EventKind
    ref: int = Field(description="Id of the source row (record, grade, alert...).")
    summary: str
    data: dict[str, Any]


class TimelineOut(BaseModel):
    """A patient's current course in time order (one page of events)."""

    patient: str
    infusion_at: datetime
    rule_set: str
    computed_max_grade: int | None
    latest_adjudication: AdjudicationOut | None
    events: list[TimelineEventOut]
    total: int
    limit: int
    offset: int


def _patient(session: Session, pseudonym: str) -> Patient:
    try:
        return patient_by_pseudonym(session, pseudonym)
    except UnknownPatientError as exc:
        raise ApiError(404, "pseudonym", "no patient is enrolled under it") from exc


def _rules(context_rules: RuleSet, key: str | None) -> RuleSet:
    if key is None:
        return context_rules
    try:
        return resolve_rule_set(key)
    except ValueError as exc:
        raise ApiError(422, "rule_set", "names no released rule set") from exc


@router.get("/v1/review/patients", response_model=ReviewPatientPage)
def get_review_patients(
    session: SessionDep,
    context: ContextDep,
    include_all: Annotated[
        bool,
        Query(
            alias="all",
            description="Also patients out of monitoring (window over, "
            "discharged, dead).",
        ),
    ] = False,
    min_grade: Annotated[
        int | None, Query(ge=0, le=5, description="Current grade >= min_grade.")
    ] = None,
    care_unit: Annotated[
        str | None, Query(min_length=1, max_length=64, pattern=NO_NUL)
    ] = None,
    has_open_alerts: bool | None = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> ReviewPatientPage:
    """Who is under monitoring now, with grades, open alerts and last vitals."""
    now = datetime.now(UTC)
    where = PatientFilter(include_all, min_grade, care_unit, has_open_alerts)
    days = context.settings.monitoring_days
    views, total = patients_now(
        session,
        rule_set=context.rules.key,
        now=now,
        monitoring_days=days,
        where=where,
        limit=limit,
        offset=offset,
    )
    items = [ReviewPatientOut.model_validate(v, from_attributes=True) for v in views]
    return ReviewPatientPage(
        as_of=now,
        rule_set=context.rules.key,
        monitoring_days=days,
        items=items,
        total=total,
        limit=limit,
        offset=offset,
    )


@router.get("/v1/review/alerts", response_model=ReviewAlertPage)
def get_review_alerts(
    session: SessionDep,
    kind: AlertKind | None = None,
    severity: Severity | None = None,
    min_age_h: Annotated[
        float | None,
        Query(ge=0, le=100_000, description="Condition at least this many hours old."),
    ] = None,
    care_unit: Annotated[
        str | None, Query(min_length=1, max_length=64, pattern=NO_NUL)
    ] = None,
    patient: Annotated[str | None, Query(max_length=64, pattern=NO_NUL)] = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> ReviewAlertPage:
    """Open (unacknowledged) alerts by kind, severity and age, oldest first."""
    now = datetime.now(UTC)
    where = AlertReviewFilter(kind, severity, min_age_h, care_unit, patient)
    review = open_alerts_review(
        session, now=now, where=where, limit=limit, offset=offset
    )
    return ReviewAlertPage(
        as_of=now,
        groups=[
            AlertGroupOut.model_validate(g, from_attributes=True) for g in review.groups
        ],
        items=[
            ReviewAlertOut.model_validate(a, from_attributes=True) for a in review.items
        ],
        total=review.total,
        limit=limit,
        offset=offset,
    )


@router.get(
    "/v1/patients/{pseudonym}/timeline",
    response_model=TimelineOut,
    responses=_NOT_FOUND,
)
def get_timeline(
    pseudonym: Pseudonym,
    session: SessionDep,
    context: ContextDep,
    kind: Annotated[
        list[EventKind] | None, Query(description="Only these event kinds.")
    ] = None,
    rule_set: RuleSetKey = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 1000,
    offset: Offset = 0,
) -> TimelineOut:
    """Records, grades, alerts, acknowledgements, adjudications in time order.

    Current records only: retracted and superseded ones are left out, as are
    superseded grade rows.
    """
    rules = _rules(context.rules, rule_set)
    patient = _patient(session, pseudonym)
    timeline = patient_timeline(session, patient, rules)
    events = [e for e in timeline.events if kind is None or e.kind in kind]
    latest = timeline.latest_adjudication
    return TimelineOut(
        patient=timeline.patient,
        infusion_at=timeline.infusion_at,
        rule_set=timeline.rule_set,
        computed_max_grade=timeline.computed_max_grade,
        latest_adjudication=None
        if latest is None
        else AdjudicationOut.of(
            latest, latest=True, max_now=timeline.computed_max_grade
        ),
        events=[
            TimelineEventOut.model_validate(e, from_attributes=True)
            for e in events[offset : offset + limit]
        ],
        total=len(events),
        limit=limit,
        offset=offset,
    )


@router.get(
    "/v1/patients/{pseudonym}/timeline.png",
    response_class=Response,
    responses={
        200: {"content": {"image/png": {}}, "description": "The course as a PNG."},
        **_NOT_FOUND,
    },
)
def get_timeline_png(
    pseudonym: Pseudonym,
    session: SessionDep,
    context: ContextDep,
    rule_set: RuleSetKey = None,
    x_unit: Literal["hours", "days"] = "hours",
) -> Response:
    """Temperature, SBP, oxygen support (ASTCT level) and grade over time.

    Treatments are marked; the latest adjudication is starred on the grade
    panel. Only the pseudonym identifies the patient.
    """
    rules = _rules(context.rules, rule_set)
    patient = _patient(session, pseudonym)
    timeline = patient_timeline(session, patient, rules)
    return Response(timeline_png(timeline, x_unit=x_unit), media_type="image/png")


@router.post(
    "/v1/patients/{pseudonym}/adjudications",
    response_model=AdjudicationOut,
    status_code=201,
    responses={
        **UNREADABLE_BODY,
        **_NOT_FOUND,
        409: {
            "model": ErrorBody,
            "description": "No computed grade yet, or the grade disagrees with "
            "the decision and the computed maximum.",
        },
    },
)
def post_adjudication(
    pseudonym: Pseudonym,
    body: AdjudicationIn,
    sessions: SessionsDep,
    context: ContextDep,
    actor: ActorDep,
) -> AdjudicationOut:
    """Confirm or override the computed maximum grade (a new row every time)."""
    now = datetime.now(UTC)
    try:
        with sessions.begin() as session:
            patient = _patient(session, pseudonym)
            row = adjudicate(
                session,
                patient,
                decision=body.decision,
                grade=body.grade,
                reason=body.reason,
                by=body.by,
                rule_set=context.rules.key,
                now=now,
                actor=actor,
            )
    except InvalidAdjudicationError as exc:
        raise ApiError(422, exc.field, exc.reason) from exc
    except AdjudicationConflictError as exc:
        raise ApiError(409, exc.field, exc.reason) from exc
    except NoComputedGradeError as exc:
        raise ApiError(
            409, "pseudonym", "the patient has no computed grade yet"
        ) from exc
    return AdjudicationOut.of(row, latest=True, max_now=row.computed_grade)


@router.get(
    "/v1/patients/{pseudonym}/adjudications",
    response_model=AdjudicationPage,
    responses=_NOT_FOUND,
)
def get_adjudications(
    pseudonym: Pseudonym,
    session: SessionDep,
    context: ContextDep,
    limit: Limit = 100,
    offset: Offset = 0,
) -> AdjudicationPage:
    """The patient's adjudications, newest first; the latest one counts."""
    patient = _patient(session, pseudonym)
    rows, total = list_adjudications(session, patient.id, limit=limit, offset=offset)
    latest = latest_adjudications(session, [patient.id]).get(patient.id)
    computed = computed_max_grade(session, patient.id, context.rules.key)
    max_now = None if computed is None else computed.grade
    return AdjudicationPage(
        patient=patient.pseudonym,
        computed_max_grade=max_now,
        items=[
            AdjudicationOut.of(
                r, latest=latest is not None and r.id == latest.id, max_now=max_now
            )
            for r in rows
        ],
        total=total,
        limit=limit,
        offset=offset,
    )
