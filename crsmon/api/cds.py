"""``/cds-services``: crsmon's open alerts as CDS Hooks cards (CDS Hooks 2.0).

- ``GET /cds-services``: discovery (one ``patient-view`` service);
- ``POST /cds-services/crsmon-crs``: the EHR calls with ``context.patientId``;
  the answer is one card per open alert of the linked patient (none when the
  patient is not linked, or is outside the key's units);
- ``POST /cds-services/crsmon-crs/feedback``: the EHR reports a card
  ``accepted`` or ``overridden`` (with its reason); an open alert is then
  acknowledged, in the audit trail like any acknowledgement.

The calling EHR authenticates with a configured crsmon key of role
``reviewer`` (the specification's signed JWT is not offered; see
docs/interfaces.md), scoped to its units like every reviewer key.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError
from sqlalchemy import select

from crsmon.api.deps import ActorDep, ContextDep, JsonBody, SessionsDep
from crsmon.api.errors import ApiError
from crsmon.api.queries import (
    AlertFilter,
    AlertNotOpenError,
    UnknownAlertError,
    acknowledge_alert,
    list_alerts,
)
from crsmon.api.schemas import ErrorBody
from crsmon.db.audit import patient_chain, record_event
from crsmon.db.models import Alert
from crsmon.interfaces.cds import (
    SERVICE_ID,
    OpenAlert,
    alert_of_card,
    card,
    discovery,
)
from crsmon.services.interfaces import find_patient

router = APIRouter(prefix="/cds-services", tags=["cds-hooks"])

Text = Annotated[str, StringConstraints(min_length=1, max_length=500)]
FhirId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9\-.]{1,64}$")]
MAX_CARDS = 100


class _Loose(BaseModel):
    """CDS Hooks bodies carry more than crsmon reads: extra keys are allowed."""

    model_config = ConfigDict(extra="allow")


class HookContext(_Loose):
    patientId: FhirId
    userId: Text | None = None


class HookRequest(_Loose):
    """A CDS Hooks call (``hook``, ``hookInstance`` and ``context``)."""

    hook: Literal["patient-view"]
    hookInstance: Text
    context: HookContext


class Coding(_Loose):
    code: Text | None = None
    display: Text | None = None


class OverrideReason(_Loose):
    reason: Coding | None = None
    userComment: Text | None = None


class Feedback(_Loose):
    card: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    outcome: Literal["accepted", "overridden"]
    overrideReason: OverrideReason | None = None
    outcomeTimestamp: datetime | None = None


class FeedbackRequest(_Loose):
    feedback: Annotated[list[Feedback], Field(min_length=1, max_length=100)]


M = TypeVar("M", bound=BaseModel)


def _inline(schema: Any, defs: dict[str, Any]) -> Any:
    """A JSON Schema with its local ``$ref``s replaced by their definitions
    (these models are not recursive), for the OpenAPI request bodies."""
    if isinstance(schema, dict):
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            return _inline(defs[ref.removeprefix("#/$defs/")], defs)
        return {k: _inline(v, defs) for k, v in schema.items() if k != "$defs"}
    if isinstance(schema, list):
        return [_inline(v, defs) for v in schema]
    return schema


def _body(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema()
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": _inline(schema, schema.get("$defs", {}))}
            },
        }
    }


def _parsed(model: type[M], body: bytes) -> M:
    """The body as ``model``, read after authorization (a raw body dependency,
    so a refused caller is answered 401/403 before its body is looked at).

    Raises:
        RequestValidationError: answered 422 naming each field, no values.
    """
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        errors = [e | {"loc": ("body", *e["loc"])} for e in exc.errors()]
        raise RequestValidationError(errors) from None


_REFUSED: dict[int | str, dict[str, Any]] = {
    415: {"model": ErrorBody, "description": "Wrong content type."},
    422: {"model": ErrorBody, "description": "Not a body of this hook: each field."},
}


@router.get("", responses={200: {"description": "The CDS Hooks discovery document."}})
def get_services() -> dict[str, Any]:
    """CDS Hooks discovery: crsmon's one patient-view service."""
    return discovery()


def _open_alert(alert: Alert) -> OpenAlert:
    return OpenAlert(
        alert.id,
        alert.kind,
        alert.severity,
        alert.grade,
        alert.rule_set,
        tuple(str(r) for r in alert.reasons),
        alert.triggered_at,
    )


@router.post(
    f"/{SERVICE_ID}",
    responses={
        200: {"description": "One card per open alert of the patient."},
        **_REFUSED,
    },
    openapi_extra=_body(HookRequest),
)
def call_service(
    raw: JsonBody,
    sessions: SessionsDep,
    context: ContextDep,
    request: Request,
) -> dict[str, Any]:
    """patient-view: one card per open CRS alert of the linked patient."""
    body = _parsed(HookRequest, raw)
    now = datetime.now(UTC)
    ref = [("reference", f"Patient/{body.context.patientId}")]
    with sessions() as session:
        patient = find_patient(session, ref, context.settings.pepper())
        if patient is None:
            return {"cards": []}
        rows, _ = list_alerts(
            session,
            AlertFilter(status="open", patient=patient.pseudonym),
            limit=MAX_CARDS,
            offset=0,
        )
    base = str(request.base_url).rstrip("/")
    timeline = f"{base}/v1/patients/{patient.pseudonym}/timeline"
    return {
        "cards": [
            card(
                _open_alert(alert), patient=pseudonym, timeline_url=timeline, as_of=now
            )
            for alert, pseudonym in rows
        ]
    }


@router.post(
    f"/{SERVICE_ID}/feedback",
    responses={
        200: {"description": "Each card's feedback, and what it did."},
        404: {"model": ErrorBody, "description": "A card crsmon did not issue."},
        **_REFUSED,
    },
    openapi_extra=_body(FeedbackRequest),
)
def post_feedback(
    raw: JsonBody, sessions: SessionsDep, actor: ActorDep
) -> dict[str, Any]:
    """Accepted or overridden cards acknowledge their open alerts (audited)."""
    body = _parsed(FeedbackRequest, raw)
    now = datetime.now(UTC)
    done = []
    ids = [alert_of_card(feedback.card) for feedback in body.feedback]
    with sessions() as session:  # every card first: all or nothing
        for n, alert_id in enumerate(ids):
            if alert_id is None:
                raise ApiError(404, f"feedback[{n}].card", "not a card crsmon issued")
            if session.scalar(select(Alert.id).where(Alert.id == alert_id)) is None:
                raise ApiError(404, f"feedback[{n}].card", "no such alert")
    for n, feedback in enumerate(body.feedback):
        alert_id = ids[n]
        assert alert_id is not None  # noqa: S101 - checked above
        note = f"CDS Hooks card {feedback.outcome}"
        reason = feedback.overrideReason
        if reason is not None:
            said = [
                reason.reason.display or reason.reason.code
                if reason.reason is not None
                else None,
                reason.userComment,
            ]
            note += ": " + "; ".join(s for s in said if s)
        try:
            with sessions.begin() as session:
                acknowledge_alert(
                    session, alert_id, by="EHR user (CDS Hooks)", note=note,
                    now=now, actor=actor,
                )  # fmt: skip
            done.append(
                {"card": feedback.card, "alert": alert_id, "result": "acknowledged"}
            )
        except UnknownAlertError:
            raise ApiError(404, f"feedback[{n}].card", "no such alert") from None
        except AlertNotOpenError:
            with sessions.begin() as session:
                alert = session.get_one(Alert, alert_id)
                record_event(
                    session,
                    chain=patient_chain(alert.patient_id),
                    actor=actor,
                    action="card_feedback",
                    entity="alert",
                    entity_id=alert_id,
                    patient_id=alert.patient_id,
                    now=now,
                    reason=note,
                    details={"outcome": feedback.outcome},
                )
            done.append(
                {
                    "card": feedback.card,
                    "alert": alert_id,
                    "result": "already acknowledged",
                }
            )
    return {"feedback": done}
