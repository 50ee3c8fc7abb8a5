"""``/v1/alerts``: list alerts with filters, and acknowledge one (once)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Literal
from urllib.parse import urlsplit

from fastapi import APIRouter, Path, Query
from pydantic import AwareDatetime, BeforeValidator

from crsmon.api.deps import (
    NO_NUL,
    OFFSET_MAX,
    ROW_ID_MAX,
    ActorDep,
    SessionDep,
    SessionsDep,
)
from crsmon.api.errors import ApiError
from crsmon.api.queries import (
    AlertFilter,
    AlertNotOpenError,
    UnknownAlertError,
    acknowledge_alert,
    alert_with_deliveries,
    list_alerts,
)
from crsmon.api.schemas import (
    UNREADABLE_BODY,
    AcknowledgeIn,
    AlertDetailOut,
    AlertOut,
    AlertPage,
    DeliveryOut,
    ErrorBody,
)
from crsmon.domain.alerts import AlertKind

router = APIRouter(prefix="/v1/alerts", tags=["alerts"])

_NUMBER = re.compile(r"[+-]?[0-9.]+")


def _date_time_text(value: object) -> object:
    """Only an ISO 8601 date-time, as documented: Pydantic would also read a
    bare number as Unix time (``since=0`` is 1970-01-01)."""
    if isinstance(value, str) and _NUMBER.fullmatch(value):
        raise ValueError("must be an ISO 8601 date-time with a time zone")
    return value


QueryTime = Annotated[AwareDatetime | None, BeforeValidator(_date_time_text)]


def _origin(url: str) -> str:
    """``scheme://host[:port]`` of a URL, without credentials, path or query."""
    parts = urlsplit(url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname}{port}"


@router.get("", response_model=AlertPage)
def get_alerts(
    session: SessionDep,
    status: Literal["open", "acknowledged"] | None = None,
    kind: AlertKind | None = None,
    patient: Annotated[str | None, Query(max_length=64, pattern=NO_NUL)] = None,
    since: Annotated[QueryTime, Query(description="triggered_at >= since")] = None,
    until: Annotated[QueryTime, Query(description="triggered_at < until")] = None,
    min_grade: Annotated[
        int | None,
        Query(ge=0, le=5, description="Alerts without a grade are left out."),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=OFFSET_MAX)] = 0,
) -> AlertPage:
    """Alerts, newest condition first, filtered by every parameter given."""
    where = AlertFilter(status, kind, patient, since, until, min_grade)
    rows, total = list_alerts(session, where, limit=limit, offset=offset)
    items = [AlertOut.of(alert, pseudonym) for alert, pseudonym in rows]
    return AlertPage(items=items, total=total, limit=limit, offset=offset)


@router.get(
    "/{alert_id}",
    response_model=AlertDetailOut,
    responses={404: {"model": ErrorBody, "description": "No alert with this id."}},
)
def get_alert(
    alert_id: Annotated[int, Path(ge=1, le=ROW_ID_MAX)], session: SessionDep
) -> AlertDetailOut:
    """One alert, with the record of its webhook pushes."""
    try:
        alert, pseudonym, deliveries = alert_with_deliveries(session, alert_id)
    except UnknownAlertError as exc:
        raise ApiError(404, "alert_id", "no such alert") from exc
    settled = [
        DeliveryOut.model_validate(
            {
                **{k: getattr(d, k) for k in DeliveryOut.model_fields if k != "target"},
                "target": _origin(d.url),
                "next_attempt_at": d.next_attempt_at if d.status == "pending" else None,
            }
        )
        for d in deliveries
    ]
    base = AlertOut.of(alert, pseudonym).model_dump()
    return AlertDetailOut(**base, deliveries=settled)


@router.post(
    "/{alert_id}/acknowledge",
    response_model=AlertOut,
    responses={
        **UNREADABLE_BODY,
        404: {"model": ErrorBody, "description": "No alert with this id."},
        409: {"model": ErrorBody, "description": "Already acknowledged."},
    },
)
def acknowledge(
    alert_id: Annotated[int, Path(ge=1, le=ROW_ID_MAX)],
    body: AcknowledgeIn,
    sessions: SessionsDep,
    actor: ActorDep,
) -> AlertOut:
    """Acknowledge an open alert: who, when (server UTC) and an optional note."""
    now = datetime.now(UTC)
    try:
        with sessions.begin() as session:
            alert, pseudonym = acknowledge_alert(
                session, alert_id, by=body.by, note=body.note, now=now, actor=actor
            )
    except UnknownAlertError as exc:
        raise ApiError(404, "alert_id", "no such alert") from exc
    except AlertNotOpenError as exc:
        raise ApiError(409, "status", "the alert is already acknowledged") from exc
    return AlertOut.of(alert, pseudonym)
