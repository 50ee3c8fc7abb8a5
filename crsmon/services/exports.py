"""The biostatistician's tables: the grade table, ``efs_long`` and ADTTE.

One row per patient (:data:`GRADE_TABLE`), built by grading each patient's
current records with the pure core exactly as a grading run does (the same
snapshot times as the stored grades, under the live rule set), then summarising
with :mod:`crsmon.domain.summary`. ``grade_matches_stored`` says, per row,
whether the maximum equals the maximum of the stored current grade rows (it
does unless records are still waiting for grading: ``records_pending_grading``).

Every table is described column by column (name, type, unit, derivation) in
:data:`GRADE_TABLE`, :data:`EFS_LONG` and :data:`ADTTE`; the writers put that
dictionary and the research-data notice beside the file (``FILE.dictionary.json``)
and, for Parquet, into the file's own metadata. Identifiers are the enrolment
pseudonyms; nothing else that could identify a patient is exported.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from statistics import median
from typing import Any, Literal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from crsmon import __version__
from crsmon.db.engine import make_engine, make_sessions
from crsmon.db.models import ClinicalRecord, Grade, Patient, UnitStay
from crsmon.db.repository import timeline_from
from crsmon.domain.catalog import resolve_rule_set
from crsmon.domain.episodes import grade_episode
from crsmon.domain.features import BASELINE_LOOKBACK, m_easix
from crsmon.domain.records import PatientTimeline, Quantity
from crsmon.domain.rules import RuleSet
from crsmon.domain.state import StateSettings, episode_until
from crsmon.domain.summary import (
    LANDMARK_DAYS,
    CrsSummary,
    efs_intervals,
    summarise_crs,
    summarise_outcomes,
    summarise_support,
)
from crsmon.services.review import AdjudicationRow, latest_adjudications
from crsmon.settings import Settings

NOTICE = (
    "crsmon research data. crsmon is research software for monitoring and "
    "analysis, not a medical device; these tables are for research analysis, "
    "not for clinical decisions. Patients are identified by pseudonym only."
)

Format = Literal["csv", "parquet"]
TableName = Literal["grade-table", "efs-long", "adtte"]
ColumnType = Literal["string", "int", "float", "bool", "timestamp", "date"]

CONTACT_KINDS = frozenset(
    {
        "measurement",
        "oxygen",
        "vasopressor_start",
        "vasopressor_stop",
        "fluid_bolus",
        "treatment",
        "transfer",
        "discharge",
        "outcome",
    }
)
"""Records that show the patient was seen then (follow-up). Retractions and
attributions are dated by whoever cleaned or judged the data: they do not
extend follow-up."""

BATCH = 25
"""Patients read and graded per database round (memory stays flat: about
460 records a patient over 28 days)."""


@dataclass(frozen=True, slots=True)
class Column:
    """One exported column: its name, type, unit and how it is derived."""

    name: str
    type: ColumnType
    unit: str
    derivation: str


def _c(name: str, type_: ColumnType, unit: str, derivation: str) -> Column:
    return Column(name, type_, unit, derivation)


GRADE_TABLE: tuple[Column, ...] = (
    _c("patient_id", "string", "", "the enrolment pseudonym"),
    _c("care_unit_at_infusion", "string", "", "the care unit given at enrolment"),
    _c("infusion_at", "timestamp", "UTC", "the infusion time (day 0, time zero)"),
    _c("infusion_date", "date", "UTC", "the UTC date of infusion_at"),
    _c("grading_rule_set", "string", "", "the rule-set key every grade was made under"),
    _c("grading_rule_set_version", "string", "", "that rule set's version"),
    _c("age_years", "float", "years", "age at infusion (from birth_date if sent)"),
    _c("weight_kg", "float", "kg", "enrolment weight"),
    _c("disease_status", "string", "", "hematologic or isolated_extramedullary"),
    _c("extramedullary", "bool", "", "disease_status == isolated_extramedullary"),
    _c(
        "marrow_blast_pct_preinfusion",
        "float",
        "%",
        "marrow blasts at enrolment",
    ),
    _c("ldh_u_l", "float", "U/L", "enrolment LDH, else the latest lab <= infusion"),
    *(
        _c(name, "float", unit, f"latest {what} in the 14 days up to infusion")
        for name, unit, what in (
            ("platelets_10e9_l", "10*9/L", "platelet count"),
            ("crp_mg_l", "mg/L", "CRP"),
            ("ferritin_ug_l", "ug/L", "ferritin"),
            ("creatinine_mg_dl", "mg/dL", "creatinine"),
        )
    ),
    _c("easix", "float", "", "LDH x creatinine / platelets at baseline"),
    _c("m_easix", "float", "", "LDH x CRP (mg/dL) / platelets at baseline"),
    _c("product_name", "string", "", "the CAR T product name"),
    _c("dose_cells_per_kg", "float", "cells/kg", "the dose as enrolled"),
    _c("product_viability_pct", "float", "%", "product viability as enrolled"),
    _c("records_pending_grading", "int", "", "records not yet taken in by grading"),
    _c(
        "grade_matches_stored",
        "bool",
        "",
        "crs_max_grade_astct equals the maximum of the stored current grade rows",
    ),
    _c("crs_any", "bool", "", "a grade >= 1 at any graded moment"),
    _c(
        "crs_onset_h",
        "float",
        "h",
        "first moment with grade >= 1 (grading.md §5.1)",
    ),
    _c("crs_max_grade_astct", "int", "grade", "highest computed ASTCT grade (0-5)"),
    _c("crs_group", "string", "", "0, 1-2, 3-4, or 5 (death from CRS)"),
    _c(
        "crs_max_grade_adjudicated",
        "int",
        "grade",
        "a reviewer's latest adjudication of the maximum; empty: none",
    ),
    _c("adjudication_decision", "string", "", "confirm or override; empty: none"),
    _c(
        "adjudication_stale",
        "bool",
        "",
        "the computed maximum, or the grade row it rests on, changed since the "
        "adjudication",
    ),
    _c("time_to_max_grade_h", "float", "h", "first moment at the maximum (§5.2)"),
    _c(
        "crs_resolution_h",
        "float",
        "h",
        "first grade-0 moment followed by >= 24 h of grade 0 (§5.4); empty: "
        "unresolved within the data",
    ),
    _c("crs_duration_h", "float", "h", "crs_resolution_h - crs_onset_h"),
    _c("crs_courses", "int", "", "courses of CRS (a recurrence starts a new one)"),
    _c(
        "crs_driver",
        "string",
        "",
        "none, fever_only, hypotension, hypoxia or both: the organ findings that "
        "carried a grade >= 2 at any moment",
    ),
    *(
        _c(
            f"first_grade_ge{k}_day",
            "float",
            "d",
            f"first moment with grade >= {k}; empty: never",
        )
        for k in (1, 2, 3, 4)
    ),
    _c("grade5_day", "float", "d", "the death from CRS (grade 5); empty: none"),
    _c(
        "missing_input_moments",
        "int",
        "",
        "graded moments with an input the grade needed and did not have",
    ),
    _c(
        "max_vasopressor_count",
        "int",
        "",
        "most distinct vasopressors running at once after infusion, "
        "vasopressin-like agents not counted (R5, A9)",
    ),
    _c(
        "vasopressin_used",
        "bool",
        "",
        "a vasopressin-like agent was infused after infusion",
    ),
    _c(
        "max_o2_device",
        "string",
        "",
        "the device of the highest oxygen level (comfort oxygen not counted)",
    ),
    _c(
        "max_o2_level",
        "int",
        "grade",
        "the ASTCT hypoxia grade that support alone carries (0 room air)",
    ),
    _c(
        "max_o2_flow_l_min",
        "float",
        "L/min",
        "highest oxygen flow recorded after infusion (comfort oxygen not counted)",
    ),
    _c("positive_pressure_ventilation", "bool", "", "CPAP or BiPAP recorded"),
    _c("intubation", "bool", "", "invasive mechanical ventilation recorded"),
    _c(
        "icu_level_support",
        "bool",
        "",
        "a vasopressor (vasopressin included), high-flow nasal cannula, CPAP, "
        "BiPAP or invasive ventilation after infusion; care-unit names are not "
        "read",
    ),
    _c("tocilizumab_doses", "int", "", "tocilizumab doses after infusion"),
    _c("first_tocilizumab_h", "float", "h", "first tocilizumab dose"),
    _c("steroids_any", "bool", "", "a corticosteroid after infusion"),
    _c("first_steroid_h", "float", "h", "first corticosteroid dose"),
    _c(
        "other_anticytokine",
        "string",
        "",
        "siltuximab, anakinra, other_anticytokine given (comma-separated)",
    ),
    _c("antipyretics_any", "bool", "", "an antipyretic after infusion"),
    _c("peak_crp_mg_l", "float", "mg/L", "highest CRP after infusion"),
    _c("peak_ferritin_ug_l", "float", "ug/L", "highest ferritin after infusion"),
    _c("peak_il6_pg_ml", "float", "pg/mL", "highest IL-6 after infusion"),
    _c("first_fever_h", "float", "h", "first temperature >= 38.0 C after infusion"),
    _c("tmax_first_36h_c", "float", "Cel", "highest temperature in the first 36 h"),
    _c(
        "fever_ge_38_9_within_36h",
        "bool",
        "",
        "tmax_first_36h_c >= 38.9; empty: no temperature in the first 36 h",
    ),
    _c(
        "response_d28",
        "string",
        "",
        "response, no_response or not_recorded (outcome records)",
    ),
    _c("mrd_negative_d28", "bool", "", "as recorded with the response"),
    _c("hsct_consolidation", "bool", "", "an hsct outcome was recorded"),
    _c("hsct_day", "float", "d", "first HSCT"),
    _c("relapse", "bool", "", "a relapse outcome was recorded"),
    _c("relapse_day", "float", "d", "first relapse"),
    _c("death", "bool", "", "a death outcome was recorded"),
    _c("death_day", "float", "d", "first death"),
    _c("death_attributable_to_crs", "bool", "", "as recorded with the death"),
    _c("new_therapy_day", "float", "d", "first new therapy in remission"),
    _c(
        "last_contact_day",
        "float",
        "d",
        "the latest outcome or bedside record held (not retractions or "
        "attributions; the death, if records follow it)",
    ),
    _c(
        "follow_up_source",
        "string",
        "",
        "last_follow_up (recorded) or last_record (inferred from the data)",
    ),
    _c(
        "efs_time_days",
        "float",
        "d",
        "first of: no response (day 28), relapse, death; else last_contact_day",
    ),
    _c("efs_event", "bool", "", "an EFS event occurred"),
    _c("efs_event_type", "string", "", "none, nr, relapse or death"),
    _c(
        "efs_censored_at_hsct_time",
        "float",
        "d",
        "ELIANA-style: EFS censored at HSCT or new therapy in remission (after a "
        "recorded response, never for a non-responder) if that came first",
    ),
    _c("efs_censored_at_hsct_event", "bool", "", "the event under that censoring"),
    _c("os_time_days", "float", "d", "death, else last_contact_day"),
    _c("os_event", "bool", "", "a death was recorded"),
    _c(
        "landmark28_eligible",
        "bool",
        "",
        "event-free and followed beyond day 28 (efs_time_days > 28)",
    ),
    _c(
        "outcome_flags",
        "string",
        "",
        "doubts about the outcome data (;-separated): no_day28_assessment_recorded, "
        "records_after_death, relapse_without_recorded_response, "
        "response_and_no_response, more_than_one_death",
    ),
)

EFS_LONG: tuple[Column, ...] = (
    _c("patient_id", "string", "", "the enrolment pseudonym"),
    _c("start_day", "float", "d", "interval start (days since infusion)"),
    _c("stop_day", "float", "d", "interval end"),
    _c("event", "bool", "", "the EFS event, on a patient's last interval only"),
    _c("hsct_tv", "bool", "", "HSCT happened at or before start_day"),
    _c("severe_crs_tv", "bool", "", "grade >= 3 first reached at or before start_day"),
    _c("age_years", "float", "years", "fixed covariate: age at infusion"),
    _c(
        "marrow_blast_pct_preinfusion",
        "float",
        "%",
        "fixed covariate: marrow blasts at enrolment",
    ),
    _c("extramedullary", "bool", "", "fixed covariate: isolated EMD relapse"),
    _c("crs_group", "string", "", "fixed: the CRS group of the maximum grade"),
    _c("grading_rule_set", "string", "", "the rule-set key of the grades"),
    _c("grading_rule_set_version", "string", "", "that rule set's version"),
)

ADTTE: tuple[Column, ...] = (
    _c("STUDYID", "string", "", "crsmon"),
    _c("USUBJID", "string", "", "the enrolment pseudonym"),
    _c("PARAMCD", "string", "", "EFS, EFSHSCT (censored at HSCT/new therapy), OS"),
    _c("PARAM", "string", "", "the parameter in words"),
    _c("STARTDT", "date", "UTC", "infusion date (time zero)"),
    _c("ADT", "date", "UTC", "date of the event or censoring"),
    _c("AVAL", "float", "d", "days from infusion to ADT"),
    _c("AVALU", "string", "", "DAYS"),
    _c("CNSR", "int", "", "0 event, 1 censored (admiral convention)"),
    _c("EVNTDESC", "string", "", "the event or the censoring reason"),
    _c("SRCDOM", "string", "", "the source of the date: OUTCOME or DATA"),
    _c("SRCVAR", "string", "", "the outcome event (or the record) behind the date"),
    _c("CRSMAXGR", "int", "grade", "crs_max_grade_astct"),
    _c("CRSGRP", "string", "", "crs_group"),
    _c("GRADING", "string", "", "rule-set key and version"),
)

TABLES: dict[str, tuple[Column, ...]] = {
    "grade-table": GRADE_TABLE,
    "efs-long": EFS_LONG,
    "adtte": ADTTE,
}


def dictionary(table: TableName) -> dict[str, Any]:
    """The sidecar of an export: the notice and each column's meaning."""
    return {
        "notice": NOTICE,
        "table": table,
        "producer": f"crsmon {__version__}",
        "time_zero": "the CAR T infusion",
        "columns": [asdict(c) for c in TABLES[table]],
    }


def _baseline(timeline: PatientTimeline, quantity: Quantity) -> float | None:
    start = timeline.infusion_at - BASELINE_LOOKBACK
    found = [
        m
        for m in timeline.measurements
        if m.quantity is quantity and start <= m.observed_at <= timeline.infusion_at
    ]
    found.sort(key=lambda m: (m.observed_at, m.record_id))
    return found[-1].value if found else None


def _easix(
    ldh: float | None, creatinine: float | None, platelets: float | None
) -> float | None:
    if ldh is None or creatinine is None or not platelets:
        return None
    return ldh * creatinine / platelets


def grade_rows(
    session: Session,
    rules: RuleSet,
    *,
    now: datetime,
    batch: int = BATCH,
) -> Iterator[dict[str, Any]]:
    """The grade table, one dict per patient in pseudonym order (streamed)."""
    last = ""
    while True:
        patients = session.scalars(
            select(Patient)
            .where(Patient.pseudonym > last)
            .order_by(Patient.pseudonym)
            .limit(batch)
        ).all()
        if not patients:
            return
        yield from _batch_rows(session, rules, list(patients), now)
        last = patients[-1].pseudonym
        session.expunge_all()


def _batch_rows(
    session: Session,
    rules: RuleSet,
    patients: list[Patient],
    now: datetime,
) -> Iterator[dict[str, Any]]:
    ids = [p.id for p in patients]
    records: dict[int, list[ClinicalRecord]] = {i: [] for i in ids}
    for row in session.scalars(
        select(ClinicalRecord)
        .where(
            ClinicalRecord.patient_id.in_(ids), ClinicalRecord.retracted_at.is_(None)
        )
        .order_by(ClinicalRecord.occurred_at, ClinicalRecord.id)
    ):
        records[row.patient_id].append(row)
    graded: dict[int, list[tuple[datetime, int, int]]] = {i: [] for i in ids}
    for pid, at, gid, grade in session.execute(
        select(Grade.patient_id, Grade.evaluated_at, Grade.id, Grade.grade).where(
            Grade.patient_id.in_(ids), Grade.rule_set == rules.key
        )
    ):
        graded[pid].append((at, gid, grade))
    pending = dict(
        session.execute(
            select(ClinicalRecord.patient_id, func.count())
            .where(
                ClinicalRecord.patient_id.in_(ids),
                ClinicalRecord.grading_state == "pending",
            )
            .group_by(ClinicalRecord.patient_id)
        ).all()
    )
    first_units: dict[int, str] = {}
    for stay in session.scalars(
        select(UnitStay)
        .where(UnitStay.patient_id.in_(ids))
        .order_by(UnitStay.from_at.desc(), UnitStay.id.desc())
    ):
        first_units[stay.patient_id] = stay.care_unit
    adjudicated = latest_adjudications(session, ids, rule_set=rules.key)
    for patient in patients:
        yield patient_row(
            patient,
            _current(records[patient.id]),
            graded[patient.id],
            rules,
            now=now,
            pending=pending.get(patient.id, 0),
            care_unit=first_units.get(patient.id),
            adjudication=adjudicated.get(patient.id),
        )


def _current(rows: list[ClinicalRecord]) -> list[ClinicalRecord]:
    superseded = {r.supersedes_id for r in rows if r.supersedes_id is not None}
    return [r for r in rows if r.id not in superseded]


def _current_rows(
    graded: Sequence[tuple[datetime, int, int]],
) -> dict[datetime, tuple[int, int]]:
    """The current stored row (id, grade) at each time: the newest."""
    newest: dict[datetime, tuple[int, int]] = {}
    for at, gid, grade in graded:
        if at not in newest or gid > newest[at][0]:
            newest[at] = (gid, grade)
    return newest


def patient_row(
    patient: Patient,
    records: list[ClinicalRecord],
    graded: Sequence[tuple[datetime, int, int]],
    rules: RuleSet,
    *,
    now: datetime,
    pending: int,
    care_unit: str | None,
    adjudication: AdjudicationRow | None,
) -> dict[str, Any]:
    """One grade-table row: the patient's current records graded and summarised."""
    timeline = timeline_from(patient, records)
    until = max([now, *(r.occurred_at for r in records)])
    episode, _ = episode_until(
        timeline, until, StateSettings(), extra_times=[at for at, _, _ in graded]
    )
    result = grade_episode(episode, rules)
    crs = summarise_crs(result)
    support = summarise_support(timeline, rules)
    outcome = summarise_outcomes(
        timeline, [r.occurred_at for r in records if r.kind in CONTACT_KINDS]
    )
    ldh = (
        patient.ldh_u_l
        if patient.ldh_u_l is not None
        else _baseline(timeline, Quantity.LDH_U_L)
    )
    platelets = _baseline(timeline, Quantity.PLATELETS_10E9_L)
    crp = _baseline(timeline, Quantity.CRP_MG_L)
    creatinine = _baseline(timeline, Quantity.CREATININE_MG_DL)
    current = _current_rows(graded)
    stored = max((grade for _, grade in current.values()), default=None)
    current_ids = {gid for gid, _ in current.values()}
    row: dict[str, Any] = {
        "patient_id": patient.pseudonym,
        "care_unit_at_infusion": care_unit,
        "infusion_at": patient.infusion_at,
        "infusion_date": patient.infusion_at.date(),
        "grading_rule_set": rules.key,
        "grading_rule_set_version": rules.version,
        "age_years": episode.age_years,
        "weight_kg": patient.weight_kg,
        "disease_status": patient.disease_status,
        "extramedullary": None
        if patient.disease_status is None
        else patient.disease_status == "isolated_extramedullary",
        "marrow_blast_pct_preinfusion": patient.marrow_blast_pct,
        "ldh_u_l": ldh,
        "platelets_10e9_l": platelets,
        "crp_mg_l": crp,
        "ferritin_ug_l": _baseline(timeline, Quantity.FERRITIN_UG_L),
        "creatinine_mg_dl": creatinine,
        "easix": _easix(ldh, creatinine, platelets),
        "m_easix": m_easix(ldh, crp, platelets),
        "product_name": patient.product_name,
        "dose_cells_per_kg": patient.dose_cells_per_kg,
        "product_viability_pct": patient.viability_pct,
        "records_pending_grading": pending,
        "grade_matches_stored": stored is not None
        and stored == crs.crs_max_grade_astct,
        **asdict(crs),
        **_in_days(crs),
        "crs_max_grade_adjudicated": None
        if adjudication is None
        else adjudication.adjudicated_grade,
        "adjudication_decision": None
        if adjudication is None
        else adjudication.decision,
        "adjudication_stale": None
        if adjudication is None
        else adjudication.stale(crs.crs_max_grade_astct)
        or adjudication.computed_grade_id not in current_ids,
        **asdict(support),
        **{k: v for k, v in asdict(outcome).items() if k != "outcome_flags"},
        "outcome_flags": ";".join(outcome.outcome_flags) or None,
    }
    return {c.name: row[c.name] for c in GRADE_TABLE}


_LEVEL_TIMES = (
    "first_grade_ge1",
    "first_grade_ge2",
    "first_grade_ge3",
    "first_grade_ge4",
    "grade5",
)


def _in_days(crs: CrsSummary) -> dict[str, float | None]:
    """The first time of each grade level in days, as the outcomes are."""
    hours = asdict(crs)
    return {
        f"{name}_day": None if hours[f"{name}_h"] is None else hours[f"{name}_h"] / 24
        for name in _LEVEL_TIMES
    }


def efs_long_rows(rows: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """``efs_long``: start/stop rows of each grade-table row (risk.md §5.5 b)."""
    for row in rows:
        for interval in efs_intervals(
            row["efs_time_days"],
            row["efs_event"],
            row["hsct_day"],
            row["first_grade_ge3_day"],
        ):
            yield {
                "patient_id": row["patient_id"],
                **asdict(interval),
                "age_years": row["age_years"],
                "marrow_blast_pct_preinfusion": row["marrow_blast_pct_preinfusion"],
                "extramedullary": row["extramedullary"],
                "crs_group": row["crs_group"],
                "grading_rule_set": row["grading_rule_set"],
                "grading_rule_set_version": row["grading_rule_set_version"],
            }


_EVENTS = {
    "nr": ("NO RESPONSE AT DAY 28", "no_response"),
    "relapse": ("RELAPSE", "relapse"),
    "death": ("DEATH", "death"),
}


def _censoring(row: dict[str, Any]) -> tuple[str, str, str]:
    if row["follow_up_source"] == "last_follow_up":
        return "LAST FOLLOW-UP", "OUTCOME", "last_follow_up"
    return "LAST RECORD HELD", "DATA", "occurred_at"


def adtte_rows(rows: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """An ADTTE-style long table (admiral): EFS, EFSHSCT and OS per patient."""
    for row in rows:
        start = row["infusion_date"]
        common = {
            "STUDYID": "crsmon",
            "USUBJID": row["patient_id"],
            "STARTDT": start,
            "AVALU": "DAYS",
            "CRSMAXGR": row["crs_max_grade_astct"],
            "CRSGRP": row["crs_group"],
            "GRADING": f"{row['grading_rule_set']} v{row['grading_rule_set_version']}",
        }
        efs_type = row["efs_event_type"]
        efs = (
            (*_EVENTS[efs_type][:1], "OUTCOME", _EVENTS[efs_type][1])
            if row["efs_event"]
            else _censoring(row)
        )
        if row["efs_censored_at_hsct_event"] or (
            row["efs_censored_at_hsct_time"] == row["efs_time_days"]
        ):
            hsct = efs
        else:
            which = (
                "hsct"
                if row["hsct_day"] == row["efs_censored_at_hsct_time"]
                else "new_therapy"
            )
            hsct = (f"CENSORED AT {which.upper().replace('_', ' ')}", "OUTCOME", which)
        os_ = ("DEATH", "OUTCOME", "death") if row["os_event"] else _censoring(row)
        for code, name, aval, event, (desc, dom, var) in (
            ("EFS", "Event-free survival", row["efs_time_days"], row["efs_event"], efs),
            (
                "EFSHSCT",
                "Event-free survival, censored at HSCT or new therapy",
                row["efs_censored_at_hsct_time"],
                row["efs_censored_at_hsct_event"],
                hsct,
            ),
            ("OS", "Overall survival", row["os_time_days"], row["os_event"], os_),
        ):
            yield {
                **common,
                "PARAMCD": code,
                "PARAM": name,
                "ADT": (row["infusion_at"] + timedelta(days=aval)).date(),
                "AVAL": aval,
                "CNSR": 0 if event else 1,
                "EVNTDESC": desc,
                "SRCDOM": dom,
                "SRCVAR": var,
            }


def table_rows(
    table: TableName, grade_table: Iterable[dict[str, Any]]
) -> Iterator[dict[str, Any]]:
    """The rows of ``table`` from the grade-table rows."""
    if table == "efs-long":
        return efs_long_rows(grade_table)
    if table == "adtte":
        return adtte_rows(grade_table)
    return iter(grade_table)


# ------------------------------------------------------------------ writers


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ""
    return value


def csv_chunks(
    table: TableName, rows: Iterable[dict[str, Any]], *, every: int = 200
) -> Iterator[str]:
    """CSV text in chunks: the header, then every ``every`` rows."""
    columns = [c.name for c in TABLES[table]]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for n, row in enumerate(rows, start=1):
        writer.writerow([_cell(row[c]) for c in columns])
        if n % every == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def arrow_schema(table: TableName) -> Any:
    """The Arrow schema of ``table``, with the notice and dictionary as metadata."""
    import pyarrow as pa

    types = {
        "string": pa.string(),
        "int": pa.int64(),
        "float": pa.float64(),
        "bool": pa.bool_(),
        "timestamp": pa.timestamp("us", tz="UTC"),
        "date": pa.date32(),
    }
    fields = [
        pa.field(
            c.name, types[c.type], metadata={"unit": c.unit, "derivation": c.derivation}
        )
        for c in TABLES[table]
    ]
    meta = {"crsmon.notice": NOTICE, "crsmon.dictionary": json.dumps(dictionary(table))}
    return pa.schema(fields, metadata=meta)


class _Drain(io.RawIOBase):
    """A write-only sink whose bytes are taken out as they are written."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self.parts.append(chunk)
        return len(chunk)

    def take(self) -> bytes:
        out = b"".join(self.parts)
        self.parts.clear()
        return out


def parquet_chunks(
    table: TableName, rows: Iterable[dict[str, Any]], *, every: int = 500
) -> Iterator[bytes]:
    """A Parquet file in chunks: one row group per ``every`` rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = arrow_schema(table)
    sink = _Drain()
    writer = pq.ParquetWriter(pa.PythonFile(sink, mode="w"), schema)
    batch: list[dict[str, Any]] = []

    def flush() -> bytes:
        writer.write_table(pa.Table.from_pylist(batch, schema=schema))
        batch.clear()
        return sink.take()

    for row in rows:
        batch.append(row)
        if len(batch) >= every:
            yield flush()
    if batch:
        yield flush()
    writer.close()
    yield sink.take()


def write_table(
    table: TableName, rows: Iterable[dict[str, Any]], out: Path, fmt: Format
) -> int:
    """Write ``table`` to ``out`` and its dictionary to ``out.dictionary.json``;
    the number of rows written.

    Both are written beside their place and renamed into it only once whole,
    so a failure half-way never leaves a file that looks complete.
    """
    counted = _Counter(rows)
    partial = out.with_name(out.name + ".partial")
    try:
        if fmt == "csv":
            with partial.open("w", encoding="utf-8", newline="") as handle:
                for text in csv_chunks(table, counted):
                    handle.write(text)
        else:
            with partial.open("wb") as binary:
                for data in parquet_chunks(table, counted):
                    binary.write(data)
        sidecar = out.with_name(out.name + ".dictionary.json")
        meta = {**dictionary(table), "rows": counted.n, "format": fmt}
        staged = sidecar.with_name(sidecar.name + ".partial")
        staged.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        staged.replace(sidecar)
        partial.replace(out)
    finally:
        partial.unlink(missing_ok=True)
    return counted.n


class _Counter:
    def __init__(self, rows: Iterable[dict[str, Any]]) -> None:
        self.rows = iter(rows)
        self.n = 0

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for row in self.rows:
            self.n += 1
            yield row


def read_table(path: Path) -> Any:
    """An exported CSV or Parquet file as a pandas DataFrame with the documented
    types (nullable integers and booleans, UTC timestamps, dates)."""
    import pandas as pd

    if path.suffix == ".parquet":
        return pd.read_parquet(path, dtype_backend="numpy_nullable")
    meta = json.loads(
        path.with_name(path.name + ".dictionary.json").read_text(encoding="utf-8")
    )
    dtypes = {
        "string": "string",
        "int": "Int64",
        "float": "Float64",
        "bool": "boolean",
    }
    columns = meta["columns"]
    frame = pd.read_csv(
        path,
        dtype={c["name"]: dtypes[c["type"]] for c in columns if c["type"] in dtypes},
        keep_default_na=False,
        na_values=[""],
    )
    for c in columns:
        if c["type"] == "timestamp":
            frame[c["name"]] = pd.to_datetime(frame[c["name"]], utc=True)
        elif c["type"] == "date":
            frame[c["name"]] = pd.to_datetime(frame[c["name"]]).dt.date
    return frame


# ------------------------------------------------------------------ cohort


def cohort_summary(rows: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """CRS incidence, grade distribution, onset and duration, treatments and
    ICU-level support over the grade-table rows (the reviewer's cohort view)."""
    rows = list(rows)
    n = len(rows)
    crs = [r for r in rows if r["crs_any"]]

    def share(count: int, of: int) -> dict[str, Any]:
        return {"n": count, "of": of, "pct": None if of == 0 else 100 * count / of}

    def middle(values: list[float]) -> float | None:
        return median(values) if values else None

    onset = [r["crs_onset_h"] for r in crs if r["crs_onset_h"] is not None]
    duration = [r["crs_duration_h"] for r in crs if r["crs_duration_h"] is not None]
    return {
        "notice": NOTICE,
        "patients": n,
        "crs_incidence": share(len(crs), n),
        "grade_distribution": {
            str(g): sum(1 for r in rows if r["crs_max_grade_astct"] == g)
            for g in range(6)
        },
        "grade_groups": {
            group: sum(1 for r in rows if r["crs_group"] == group)
            for group in ("0", "1-2", "3-4", "5")
        },
        "median_onset_h": middle(onset),
        "median_duration_h": middle(duration),
        "duration_known_for": share(len(duration), len(crs)),
        "unresolved": sum(1 for r in crs if r["crs_resolution_h"] is None),
        "tocilizumab": share(sum(1 for r in crs if r["tocilizumab_doses"]), len(crs)),
        "steroids": share(sum(1 for r in crs if r["steroids_any"]), len(crs)),
        "vasopressors": share(
            sum(1 for r in crs if r["max_vasopressor_count"]), len(crs)
        ),
        "icu_level_support": share(
            sum(1 for r in crs if r["icu_level_support"]), len(crs)
        ),
        "adjudicated": sum(
            1 for r in rows if r["crs_max_grade_adjudicated"] is not None
        ),
        "records_pending_grading": sum(r["records_pending_grading"] for r in rows),
        "rule_sets": sorted({r["grading_rule_set"] for r in rows}),
        "landmark_days": LANDMARK_DAYS,
    }


def grade_table_frames(
    settings: Settings, now: datetime | None = None
) -> tuple[Any, Any]:
    """The grade table and ``efs_long`` of the configured database as pandas
    DataFrames (what ``crsmon analyze efs`` reads when given no files)."""
    import pandas as pd

    rules = resolve_rule_set(settings.rule_set)
    engine = make_engine(settings.database_url)
    try:
        with make_sessions(engine)() as session:
            rows = list(grade_rows(session, rules, now=now or datetime.now(UTC)))
    finally:
        engine.dispose()
    patients = pd.DataFrame(rows, columns=[c.name for c in GRADE_TABLE])
    long = pd.DataFrame(list(efs_long_rows(rows)), columns=[c.name for c in EFS_LONG])
    return patients, long
