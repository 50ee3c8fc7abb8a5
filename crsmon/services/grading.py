"""Grade one patient: rebuild the snapshots, grade the episode, write rows once.

A grading run re-reads the patient's current records (tasks carry ids only),
builds a snapshot at every record time (the state builder), grades the episode
with the pure core, and writes, in one transaction under the patient's lock:

- a grade row per snapshot that is new (unique on time, rule set and snapshot
  hash, so a re-delivered task writes nothing twice and a retraction that
  changes a snapshot writes a re-derived row beside the old one);
- the alerts the core decides, unique on their dedup key;
- the patient's pending records marked graded.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from enum import Enum
from typing import Any, cast

from sqlalchemy import CursorResult, select, update
from sqlalchemy.orm import Session

from crsmon.db.models import Alert, ClinicalRecord, Grade, Patient
from crsmon.db.repository import content_hash, load_timeline
from crsmon.domain.alerts import AlertDecision, decide_alerts
from crsmon.domain.episodes import grade_episode
from crsmon.domain.records import BLOOD_PRESSURE, PatientTimeline, Quantity
from crsmon.domain.results import ObservationGrade
from crsmon.domain.rules import RuleSet
from crsmon.domain.state import (
    Snapshot,
    StateSettings,
    episode_until,
    hours_since_infusion,
)
from crsmon.presenters import flag_details


@dataclass(frozen=True, slots=True)
class GradingRun:
    """What one run wrote: new grade rows, new alerts, records marked graded."""

    grades_written: int
    alerts_raised: tuple[AlertDecision, ...]
    records_graded: int


def _plain(value: Any) -> Any:
    """A domain value as JSON-ready data (enums as strings, sets sorted)."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, frozenset):
        return sorted(_plain(v) for v in value)
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def snapshot_json(snapshot: Snapshot) -> dict[str, Any]:
    """The snapshot a grade was computed from, with the record behind each value."""
    return {
        "at": snapshot.at.isoformat(),
        "assessment": _plain(asdict(snapshot.assessment)),
        "sources": dict(snapshot.sources),
    }


def vital_times_h(timeline: PatientTimeline) -> list[float]:
    """Hours since infusion of every temperature or blood-pressure measurement."""
    vitals = (Quantity.TEMPERATURE_C, *BLOOD_PRESSURE)
    return sorted(
        hours_since_infusion(timeline, m.observed_at)
        for m in timeline.measurements
        if m.quantity in vitals
    )


def grade_patient(
    session: Session,
    patient_id: int,
    rules: RuleSet,
    *,
    now: datetime,
    stale_after_h: float,
    state: StateSettings | None = None,
    live: bool = True,
) -> GradingRun:
    """Grade a patient's history up to ``now`` and write what is new (idempotent).

    ``live=False`` regrades under another rule set: grade rows only, beside the
    live ones; no alerts and no change to the records' grading state.
    """
    patient = session.get(Patient, patient_id, with_for_update=True)
    if patient is None:
        raise LookupError(f"patient {patient_id} does not exist")
    timeline = load_timeline(session, patient)
    latest = max((r.occurred_at for r in _pending(session, patient_id)), default=now)
    until = max(now, latest)  # a record a few minutes ahead of the server clock
    graded_before = session.scalars(
        select(Grade.evaluated_at)
        .where(Grade.patient_id == patient_id, Grade.rule_set == rules.key)
        .distinct()
    )
    episode, snapshots = episode_until(
        timeline, until, state or StateSettings(), extra_times=graded_before
    )
    result = grade_episode(episode, rules)
    written = _write_grades(session, patient_id, rules, result.observations, snapshots)
    decisions = decide_alerts(
        result,
        field_sources={i: dict(s.sources) for i, s in enumerate(snapshots)},
        vital_times_h=vital_times_h(timeline),
        as_of_h=hours_since_infusion(timeline, now),
        stale_after_h=stale_after_h,
    )
    if not live:
        return GradingRun(written, (), 0)
    raised = _raise_alerts(session, patient, decisions)
    graded = session.execute(  # an UPDATE: a cursor result with a row count
        update(ClinicalRecord)
        .where(
            ClinicalRecord.patient_id == patient_id,
            ClinicalRecord.grading_state == "pending",
        )
        .values(grading_state="graded")
    )
    return GradingRun(written, raised, cast(CursorResult[Any], graded).rowcount)


def _pending(session: Session, patient_id: int) -> Iterable[ClinicalRecord]:
    return session.scalars(
        select(ClinicalRecord).where(
            ClinicalRecord.patient_id == patient_id,
            ClinicalRecord.grading_state == "pending",
        )
    )


def _write_grades(
    session: Session,
    patient_id: int,
    rules: RuleSet,
    observations: tuple[ObservationGrade, ...],
    snapshots: tuple[Snapshot, ...],
) -> int:
    known = {
        (at, digest)
        for at, digest in session.execute(
            select(Grade.evaluated_at, Grade.snapshot_hash).where(
                Grade.patient_id == patient_id, Grade.rule_set == rules.key
            )
        )
    }
    written = 0
    for obs in observations:
        snapshot = snapshots[obs.input_index]
        payload = snapshot_json(snapshot)
        digest = content_hash(payload)
        if (snapshot.at, digest) in known:
            continue
        known.add((snapshot.at, digest))
        result = obs.result
        session.add(
            Grade(
                patient_id=patient_id,
                evaluated_at=snapshot.at,
                t_hours=obs.t_hours,
                rule_set=result.rule_set,
                rule_set_version=rules.version,
                grade=result.grade,
                reasons=[r.text for r in result.reasons],
                missing_inputs=list(result.missing_inputs),
                flags=flag_details(result.flags),
                snapshot=payload,
                snapshot_hash=digest,
            )
        )
        written += 1
    return written


def _raise_alerts(
    session: Session, patient: Patient, decisions: tuple[AlertDecision, ...]
) -> tuple[AlertDecision, ...]:
    known = {
        (kind, key)
        for kind, key in session.execute(
            select(Alert.kind, Alert.dedup_key).where(Alert.patient_id == patient.id)
        )
    }
    raised = []
    for d in decisions:
        if (str(d.kind), d.dedup_key) in known:
            continue
        known.add((str(d.kind), d.dedup_key))
        session.add(
            Alert(
                patient_id=patient.id,
                kind=str(d.kind),
                severity=str(d.severity),
                dedup_key=d.dedup_key,
                triggered_at=_at(patient, d.t_hours),
                grade=d.grade,
                rule_set=d.rule_set,
                reasons=list(d.reasons),
            )
        )
        raised.append(d)
    return tuple(raised)


def _at(patient: Patient, t_hours: float) -> datetime:
    return patient.infusion_at + timedelta(hours=t_hours)
