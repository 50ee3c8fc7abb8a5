"""Unit scoping inside every ORM query of a scoped session (OWASP API1).

A session made by :func:`scoped_sessions` carries the care units its caller may
see. A ``do_orm_execute`` hook adds, to every ORM SELECT, UPDATE and DELETE it
runs, the criterion "the patient's ``scope_unit`` is one of those units", on
patients and on every table that belongs to a patient (records, unit stays,
grades, alerts, adjudications) - wherever they appear, joins and subqueries
included (``with_loader_criteria``, SQLAlchemy's documented way of adding a
global WHERE criterion). Nothing is fetched and filtered afterwards: an object
of another unit is simply not in the result, so it answers exactly like a
missing one.

Sessions from :func:`crsmon.db.engine.make_sessions` (workers, CLI, system
jobs) carry no units and are not scoped. One deliberate escape hatch,
``execution_options(crsmon_unscoped=True)``, lets enrolment see that a
pseudonym is already taken in another unit (a conflict, never a new patient).
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Engine, event, select
from sqlalchemy.orm import ORMExecuteState, Session, sessionmaker, with_loader_criteria

from crsmon.db.models import (
    Adjudication,
    Alert,
    ClinicalRecord,
    Grade,
    Patient,
    UnitStay,
)

UNITS = "crsmon_units"
"""``Session.info`` key: the tuple of units a scoped session may see."""
UNSCOPED = "crsmon_unscoped"
"""Execution option that skips scoping for one statement (enrolment only)."""
PATIENT_TABLES = (ClinicalRecord, UnitStay, Grade, Alert, Adjudication)
"""Tables whose rows belong to a patient (``patient_id``)."""


def scoped_sessions(engine: Engine, units: Iterable[str]) -> sessionmaker[Session]:
    """Sessions that see only patients whose ``scope_unit`` is in ``units``."""
    return sessionmaker(
        engine, expire_on_commit=False, info={UNITS: tuple(sorted(set(units)))}
    )


def session_units(session: Session) -> tuple[str, ...] | None:
    """The units a session is scoped to; None: not scoped."""
    units: tuple[str, ...] | None = session.info.get(UNITS)
    return units


@event.listens_for(Session, "do_orm_execute")
def _scope_by_unit(state: ORMExecuteState) -> None:
    units = session_units(state.session)
    if units is None or state.execution_options.get(UNSCOPED, False):
        return
    if not (state.is_select or state.is_update or state.is_delete):
        return
    visible = select(Patient.id).where(Patient.scope_unit.in_(units))
    options = [
        with_loader_criteria(
            Patient, Patient.scope_unit.in_(units), include_aliases=True
        ),
        *(
            with_loader_criteria(table, table.patient_id.in_(visible))
            for table in PATIENT_TABLES
        ),
    ]
    state.statement = state.statement.options(*options)
