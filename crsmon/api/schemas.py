"""Request and response bodies of the HTTP API (they document /openapi.json).

Feed records themselves are the intake's strict models
(:mod:`crsmon.intake.schemas`); the app adds their JSON Schema to the OpenAPI
document, so nothing is described twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from typing import Annotated, Any, Literal, cast, get_args

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from crsmon.api.deps import NO_NUL
from crsmon.api.errors import problems
from crsmon.api.intake import Line
from crsmon.api.queries import PatientView
from crsmon.db.models import Alert, Grade, UnitStay
from crsmon.db.repository import current_unit
from crsmon.services.ingest import Outcome

Status = Literal["stored", "duplicate", "refused", "conflict"]


class Problem(BaseModel):
    """Why something was refused: the field (``$`` for the whole body) and the rule."""

    field: str
    reason: str


class ErrorBody(BaseModel):
    """Every 4xx/5xx refusal of the API."""

    detail: list[Problem]


UNREADABLE_BODY: dict[int | str, dict[str, Any]] = {
    400: {
        "model": ErrorBody,
        "description": "The JSON body is not readable text (e.g. not UTF-8).",
    }
}
"""What FastAPI answers, before any other check, for a body model it cannot read."""


class RecordResult(BaseModel):
    """A stored (201) or already received (200) record and the rows it maps to."""

    status: Literal["stored", "duplicate"]
    record_ids: list[int] = Field(
        description="Stored row ids (a vitals set is one row per value; "
        "empty for an enrolment)."
    )
    patient_id: int | None

    @classmethod
    def of(cls, outcome: Outcome) -> RecordResult:
        """The reply for an accepted outcome."""
        status: Literal["stored", "duplicate"] = (
            "stored" if outcome.status == "stored" else "duplicate"
        )
        return cls(
            status=status,
            record_ids=list(outcome.record_ids),
            patient_id=outcome.patient_id,
        )


class BatchItem(BaseModel):
    """The result of one batch line, in the order sent."""

    index: int = Field(description="0-based position among the batch's records.")
    line: int = Field(description="1-based line number in the request body.")
    status: Status
    record_ids: list[int]
    patient_id: int | None
    errors: list[Problem] = Field(description="Why it was refused (else empty).")

    @classmethod
    def of(cls, index: int, line: int, outcome: Outcome) -> BatchItem:
        """One line's outcome as the reply."""
        return cls(
            index=index,
            line=line,
            status=cast(Status, outcome.status),
            record_ids=list(outcome.record_ids),
            patient_id=outcome.patient_id,
            errors=[Problem(**p) for p in problems(outcome.error)]
            if outcome.error
            else [],
        )


class BatchResult(BaseModel):
    """Per-record results of a batch, and how many ended each way."""

    items: list[BatchItem]
    counts: dict[str, int] = Field(description="Records by status.")

    @classmethod
    def of(cls, lines: Sequence[Line]) -> BatchResult:
        """A batch's outcomes as the reply."""
        items = [BatchItem.of(i, d.line, d.outcome) for i, d in enumerate(lines)]
        counts = dict.fromkeys(get_args(Status), 0)
        for item in items:
            counts[item.status] += 1
        return cls(items=items, counts=counts)


class Product(BaseModel):
    """The CAR T product given at infusion."""

    name: str
    dose_cells_per_kg: float | None
    viability_pct: float | None


class Baseline(BaseModel):
    """What was known at enrolment."""

    birth_date: date | None
    age_years_at_infusion: float | None
    weight_kg: float | None
    disease_status: str | None
    marrow_blast_pct: float | None
    ldh_u_l: float | None


class UnitStayOut(BaseModel):
    """Where the patient was cared for, from when until when (null: still there)."""

    care_unit: str
    from_at: datetime
    to_at: datetime | None

    @classmethod
    def of(cls, stay: UnitStay) -> UnitStayOut:
        """A stored unit stay as the reply."""
        return cls(care_unit=stay.care_unit, from_at=stay.from_at, to_at=stay.to_at)


class PatientOut(BaseModel):
    """An enrolled patient (pseudonym only) and where their monitoring stands."""

    pseudonym: str
    infusion_at: datetime
    enrolled_at: datetime
    baseline: Baseline
    product: Product | None
    care_unit: str | None = Field(
        description="The open unit stay's unit (null after a discharge)."
    )
    discharged_at: datetime | None = Field(
        description="When the patient was discharged, if the last stay ended so "
        "and no readmission followed."
    )
    unit_stays: list[UnitStayOut] = Field(
        description="Every unit stay in time order: the enrolment unit from the "
        "infusion, then each transfer, discharge and readmission."
    )
    current_grade: int | None = Field(
        description="ASTCT grade at the latest graded time (live rule set)."
    )
    current_grade_at: datetime | None
    max_grade: int | None = Field(description="Highest current (not superseded) grade.")
    open_alerts: int
    last_vitals_at: datetime | None = Field(
        description="Latest vital sign that is not retracted."
    )

    @classmethod
    def of(cls, view: PatientView, stays: Sequence[UnitStay]) -> PatientOut:
        """A patient's view and unit stays (in time order) as the reply."""
        p = view.patient
        where = current_unit(stays)
        product = None
        if p.product_name is not None:
            product = Product(
                name=p.product_name,
                dose_cells_per_kg=p.dose_cells_per_kg,
                viability_pct=p.viability_pct,
            )
        return cls(
            pseudonym=p.pseudonym,
            infusion_at=p.infusion_at,
            enrolled_at=p.recorded_at,
            baseline=Baseline.model_validate(p, from_attributes=True),
            product=product,
            care_unit=where.care_unit,
            discharged_at=where.discharged_at,
            unit_stays=[UnitStayOut.of(s) for s in stays],
            current_grade=view.current_grade,
            current_grade_at=view.current_grade_at,
            max_grade=view.max_grade,
            open_alerts=view.open_alerts,
            last_vitals_at=view.last_vitals_at,
        )


class PatientPage(BaseModel):
    """One page of patients, in enrolment order."""

    items: list[PatientOut]
    total: int
    limit: int
    offset: int


class FlagOut(BaseModel):
    """A data-quality or monitoring flag of one grade."""

    code: str
    kind: str
    field: str | None
    message: str


class GradeOut(BaseModel):
    """The grade at one time, with its explanation and the rule set it used."""

    id: int
    evaluated_at: datetime
    t_hours: float = Field(description="Hours since infusion.")
    grade: int
    reasons: list[str]
    missing_inputs: list[str]
    flags: list[FlagOut]
    rule_set: str
    rule_set_version: str
    recorded_at: datetime
    superseded: bool = Field(
        description="A later re-derivation at the same time replaced this row "
        "(only listed with all=true)."
    )

    @classmethod
    def of(cls, grade: Grade, superseded: bool) -> GradeOut:
        """A stored grade row as the reply."""
        return cls.model_validate({**_columns(grade), "superseded": superseded})


class GradeTimeline(BaseModel):
    """A patient's grades in time order under one rule set."""

    patient: str
    rule_set: str
    items: list[GradeOut]


class AlertOut(BaseModel):
    """An alert, raised once per condition, and its acknowledgement."""

    id: int
    patient: str
    kind: str
    severity: str
    status: str
    grade: int | None
    rule_set: str
    reasons: list[str]
    dedup_key: str
    triggered_at: datetime = Field(description="When the condition occurred.")
    raised_at: datetime = Field(description="When the alert was stored.")
    acknowledged_by: str | None
    acknowledged_at: datetime | None
    acknowledgement_note: str | None

    @classmethod
    def of(cls, alert: Alert, pseudonym: str) -> AlertOut:
        """A stored alert row as the reply."""
        return cls.model_validate({**_columns(alert), "patient": pseudonym})


class AlertPage(BaseModel):
    """One page of alerts, newest condition first."""

    items: list[AlertOut]
    total: int
    limit: int
    offset: int


class AcknowledgeIn(BaseModel):
    """Who acknowledges an alert, and an optional note."""

    model_config = ConfigDict(extra="forbid")

    by: Annotated[
        str,
        StringConstraints(
            strip_whitespace=True, min_length=1, max_length=120, pattern=NO_NUL
        ),
    ]
    note: Annotated[str, StringConstraints(max_length=2000, pattern=NO_NUL)] | None = (
        None
    )


class Liveness(BaseModel):
    """The process is up."""

    status: Literal["ok"]


class Readiness(BaseModel):
    """Whether the dependencies answer; ``checks`` names each and its state."""

    status: Literal["ready", "unavailable"]
    checks: dict[str, str]


def _columns(row: Grade | Alert) -> dict[str, Any]:
    return {c.key: getattr(row, c.key) for c in row.__table__.columns}


class DeliveryOut(BaseModel):
    """One webhook push of an alert to one URL, and its attempts so far."""

    target: str = Field(
        description="The receiver's scheme, host and port (the path and query of "
        "a webhook URL may hold a token, so they are not shown)."
    )
    status: Literal["pending", "delivered", "failed"]
    attempts: int
    last_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    next_attempt_at: datetime | None = Field(
        description="When a pending push is tried next (null once settled)."
    )
    delivered_at: datetime | None


class AlertDetailOut(AlertOut):
    """An alert with its webhook deliveries (severe kinds, when configured)."""

    deliveries: list[DeliveryOut]
