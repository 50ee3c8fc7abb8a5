"""``/v1/patients``: enrolled patients and their grade timelines (read only).

Enrolment itself is a feed record (``kind: patient``) sent to ``/v1/records``.
Grades are read under the live rule set (``CRSMON_RULE_SET``) unless
``rule_set`` names another key the patient was graded under.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query
from sqlalchemy.orm import Session

from crsmon.api.deps import NO_NUL, OFFSET_MAX, ContextDep, SessionDep
from crsmon.api.errors import ApiError
from crsmon.api.queries import grade_timeline, list_patients, patient_view
from crsmon.api.schemas import (
    ErrorBody,
    GradeOut,
    GradeTimeline,
    PatientOut,
    PatientPage,
)
from crsmon.db.models import Patient
from crsmon.db.repository import UnknownPatientError, patient_by_pseudonym, unit_stays

router = APIRouter(prefix="/v1/patients", tags=["patients"])

Pseudonym = Annotated[str, Path(pattern=r"^[A-Za-z0-9._-]{1,64}$")]
Limit = Annotated[int, Query(ge=1, le=500)]
Offset = Annotated[int, Query(ge=0, le=OFFSET_MAX)]
_NOT_FOUND: dict[int | str, dict[str, object]] = {
    404: {"model": ErrorBody, "description": "No patient with this pseudonym."}
}


def _patient(session: Session, pseudonym: str) -> Patient:
    try:
        return patient_by_pseudonym(session, pseudonym)
    except UnknownPatientError as exc:
        raise ApiError(404, "pseudonym", "no patient is enrolled under it") from exc


@router.get("", response_model=PatientPage)
def get_patients(
    session: SessionDep, context: ContextDep, limit: Limit = 50, offset: Offset = 0
) -> PatientPage:
    """Enrolled patients in enrolment order, one page at a time."""
    views, total = list_patients(session, context.rules.key, limit=limit, offset=offset)
    stays = unit_stays(session, [v.patient.id for v in views])
    items = [PatientOut.of(v, stays[v.patient.id]) for v in views]
    return PatientPage(items=items, total=total, limit=limit, offset=offset)


@router.get("/{pseudonym}", response_model=PatientOut, responses=_NOT_FOUND)
def get_patient(
    pseudonym: Pseudonym, session: SessionDep, context: ContextDep
) -> PatientOut:
    """Baseline, product, unit stays, current and maximum grade, alerts, vitals."""
    patient = _patient(session, pseudonym)
    view = patient_view(session, patient, context.rules.key)
    return PatientOut.of(view, unit_stays(session, [patient.id])[patient.id])


@router.get("/{pseudonym}/grades", response_model=GradeTimeline, responses=_NOT_FOUND)
def get_grades(
    pseudonym: Pseudonym,
    session: SessionDep,
    context: ContextDep,
    include_all: Annotated[
        bool, Query(alias="all", description="Include superseded re-derivations.")
    ] = False,
    rule_set: Annotated[
        str | None,
        Query(
            max_length=200, pattern=NO_NUL, description="Default: the live rule set."
        ),
    ] = None,
) -> GradeTimeline:
    """The grade timeline: the current row per time (``all=true``: every row)."""
    patient = _patient(session, pseudonym)
    key = rule_set or context.rules.key
    rows = grade_timeline(session, patient.id, key, include_superseded=include_all)
    items = [GradeOut.of(g, superseded) for g, superseded in rows]
    return GradeTimeline(patient=patient.pseudonym, rule_set=key, items=items)
